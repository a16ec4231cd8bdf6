"""Sequential filtering: 1-D state ``x_{t+1} = 0.95 x_t + N(0, 1)`` read by two sensors.

Sensor 0 has noise variance 0.1, sensor 1 variance 4. A model is trained on
single measurement updates (prior + this step's readings -> posterior) and
rolled forward with the exact prediction step (:func:`amortized.roll_forward`).
The reference is the Gaussian-sum Kalman filter, exact for a GMM prior.
"""

from __future__ import annotations

from typing import Any

import torch

from probcirc import GaussianMixture
from probmod.errors import UsageError

from .base import Task, random_prior
from .linear import _mvn_log_prob, linear_gaussian_update, linear_predict


class LTIFilter(Task, name="lti_filter", obs_dim=3, max_obs=2):
    """One measurement step of the two-sensor linear filter.

    Observation tokens are ``(z, is_sensor_0, is_sensor_1)`` (``obs_dim = 3``).
    For training, a step has ``min_obs..max_obs`` readings, each from a sensor
    drawn at random; :meth:`simulate_sequence` draws whole trajectories where
    each sensor reports with probability ``p_report`` per step.

    Example:
        >>> import torch
        >>> task = LTIFilter(n_components=2)
        >>> seq = task.simulate_sequence(10, 3, torch.Generator().manual_seed(0))
        >>> posts = task.reference_filter(seq["prior"], seq["observations"], seq["obs_mask"])
        >>> len(posts), tuple(posts[-1].batch_shape)
        (10, (3,))
    """

    def __init__(
        self,
        *,
        a: float = 0.95,
        q: float = 1.0,
        sensor_var: tuple[float, float] = (0.1, 4.0),
        p_report: float = 0.8,
        **common: Any,
    ):
        super().__init__(**common)
        self.a, self.q, self.p_report = float(a), float(q), float(p_report)
        self.sensor_var = tuple(map(float, sensor_var))
        inf = float("inf")
        ok = (
            len(self.sensor_var) == 2
            and all(0 < v < inf for v in self.sensor_var)
            and 0 < self.q < inf
            and abs(self.a) < inf
            and 0 <= self.p_report <= 1
        )
        if not ok:  # written as one test so that NaN fails it too
            raise UsageError(
                f"need finite a, q > 0, two positive sensor variances and 0 <= p_report <= 1; got "
                f"a={a}, q={q}, sensor_var={sensor_var}, p_report={p_report}"
            )

    def sample_prior(self, batch, generator=None) -> GaussianMixture:
        return random_prior(batch, self.n_components, 1, 3.0, (0.2, 4.0), 0.0, 1.5, generator)

    def _readings(self, latent: torch.Tensor, sensor: torch.Tensor, generator) -> torch.Tensor:
        var = torch.tensor(self.sensor_var, dtype=torch.float64)[sensor]
        z = latent.double() + var.sqrt() * torch.randn(sensor.shape, generator=generator, dtype=torch.float64)
        return torch.cat([z[..., None], torch.nn.functional.one_hot(sensor, 2).double()], -1)

    def simulate(self, latent, generator=None):
        b = latent.shape[0]
        sensor = torch.randint(0, 2, (b, self.max_obs), generator=generator)
        return self._readings(latent, sensor, generator), self._n_obs_mask(b, generator)

    def _decode(self, observations: torch.Tensor):
        """Measurement matrices, values and noise variances from tokens."""
        self.check_observations(observations)
        var = observations[..., 1:].double() @ torch.tensor(self.sensor_var, dtype=torch.float64)
        b, n = observations.shape[:2]
        return torch.ones(b, n, 1, 1, dtype=torch.float64), observations[..., :1].double(), var[..., None, None]

    def log_likelihood(self, x, observations, obs_mask):
        _, z, var = self._decode(observations)
        lp = _mvn_log_prob(z[None], x.double()[:, :, None], var.sqrt()[None])
        return (lp * (~obs_mask).double()).sum(-1)

    def posterior(self, prior, observations, obs_mask):
        A, z, var = self._decode(observations)
        return linear_gaussian_update(prior, A, z, var, obs_mask)

    def predict(self, posterior: GaussianMixture) -> GaussianMixture:
        """The exact prediction step: next prior from this posterior."""
        return linear_predict(posterior, self.a, self.q)

    def simulate_sequence(
        self, steps: int, batch: int, generator: torch.Generator | None = None, prior: GaussianMixture | None = None
    ) -> dict[str, Any]:
        """Trajectories of length ``steps``; both sensors report, each with probability ``p_report``.

        Returns a dict with ``prior`` (batch ``(B,)``), ``latents`` ``(T, B, 1)``,
        ``observations`` ``(T, B, 2, 3)`` and ``obs_mask`` ``(T, B, 2)``.
        """
        from .. import _gmm

        prior = self.sample_prior(batch, generator) if prior is None else prior
        x = _gmm.sample(prior, 1, generator)[0]
        xs, obs, masks = [], [], []
        sensor = torch.tensor([0, 1]).expand(batch, 2)
        for _ in range(steps):
            xs.append(x)
            obs.append(self._readings(x, sensor, generator))
            masks.append(torch.rand(batch, 2, generator=generator, dtype=torch.float64) >= self.p_report)
            x = self.a * x + self.q**0.5 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return dict(prior=prior, latents=torch.stack(xs), observations=torch.stack(obs), obs_mask=torch.stack(masks))

    def reference_filter(self, prior: GaussianMixture, observations: torch.Tensor, obs_mask: torch.Tensor):
        """Gaussian-sum Kalman filter: the exact filtering posterior at every step (a list of T mixtures)."""
        out = []
        for t in range(observations.shape[0]):
            post = self.posterior(prior, observations[t], obs_mask[t])
            out.append(post)
            prior = self.predict(post)
        return out
