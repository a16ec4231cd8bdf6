"""One Distribution contract across circuits and mixtures (issue #15, section 3)."""

import inspect

import numpy as np
import pytest
import torch
from scipy import stats

import probcirc
from probcirc import GaussianMixture
from probcirc.inputs import Bernoulli, Gaussian
from probcirc.learn import em, sgd
from probmod.distribution import Conditional

from .circuits import compiled, dag


def _gmm():
    a = torch.randn(3, 3, 3, dtype=torch.float64)
    return GaussianMixture(
        torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
        3 * torch.randn(3, 3, dtype=torch.float64),
        a @ a.mT + torch.eye(3, dtype=torch.float64),
    )


def _models():
    pc = compiled(dag(Bernoulli()), seed=1)
    gauss = compiled(dag(Gaussian()), seed=1)
    return {"circuit": pc, "gaussian circuit": gauss, "marginal": pc.marginal([2, 0]), "mixture": _gmm()}


def _conditionals():
    pc = compiled(dag(Bernoulli()), seed=1)
    x = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]])
    mask = torch.tensor([[False, True, False, True], [True, True, False, False]])
    xg = torch.randn(2, 3, dtype=torch.float64)
    return {"circuit": pc.condition(x, mask), "mixture": _gmm().condition(xg, mask[:, :3])}


@pytest.mark.parametrize("name", ["circuit", "gaussian circuit", "marginal", "mixture"])
def test_sample_uses_only_the_given_generator(name):
    model = _models()[name]
    state = torch.get_rng_state()
    a = model.sample((4, 5), generator=torch.Generator().manual_seed(7))
    b = model.sample((4, 5), generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state), "the global generator was used"
    assert torch.equal(a, b) and a.shape == (4, 5, *model.event_shape)
    assert model.sample().shape == model.event_shape


@pytest.mark.parametrize("name", ["circuit", "mixture"])
def test_conditional_follows_the_protocol(name):
    post = _conditionals()[name]
    assert isinstance(post, Conditional)
    assert isinstance(inspect.getattr_static(type(post), "mean"), property)
    assert isinstance(inspect.getattr_static(type(post), "variance"), property)
    assert post.mean.shape == post.variance.shape == (len(post), post.mask.shape[1])
    state = torch.get_rng_state()
    a, b = (post.sample(generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(a, b)
    assert inspect.signature(post.mpe).parameters == {}
    assert torch.isfinite(post.log_prob(post.mpe())).all()


def test_discrete_circuit_samples_are_integers():
    pc = compiled(dag(Bernoulli()))
    assert pc.sample(3).dtype == torch.long
    assert pc.marginal([1]).sample(3).dtype == torch.long
    assert pc.mpe(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool)).dtype == torch.long
    assert compiled(dag(Gaussian())).sample(3).dtype == torch.float64


def test_mpe_has_one_signature():
    for model in (probcirc.TensorCircuit, probcirc.circuit.MarginalCircuit, GaussianMixture):
        params = list(inspect.signature(model.mpe).parameters.values())
        assert [p.name for p in params] == ["self", "x", "mask"] and params[2].default is None, model


def test_mixture_mpe_maximises_the_joint_with_the_component():
    """Brute force over a grid of the missing value and every component."""
    gmm = _gmm()
    x = torch.tensor([[0.3, 0.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, False]])
    post = gmm.condition(x, mask)
    grid = np.linspace(-20, 20, 400001)
    best = max(
        np.log(w) + stats.norm(m, np.sqrt(c)).logpdf(grid).max()
        for w, m, c in zip(post.weights[0].numpy(), post.means[0, :, 1].numpy(), post.covariances[0, :, 1, 1].numpy())
    )
    mode = gmm.mpe(x, mask)
    at = max(
        np.log(w) + stats.norm(m, np.sqrt(c)).logpdf(float(mode[0, 1]))
        for w, m, c in zip(post.weights[0].numpy(), post.means[0, :, 1].numpy(), post.covariances[0, :, 1, 1].numpy())
    )
    assert at >= best - 1e-9 and mode[0, 0] == x[0, 0] and mode[0, 2] == x[0, 2]
    assert torch.equal(gmm.mpe(x), x)


def test_mixture_mean_and_variance_match_draws():
    gmm = _gmm()
    draws = gmm.sample(200000, generator=torch.Generator().manual_seed(0))
    sd = gmm.variance.sqrt()
    assert ((draws.mean(0) - gmm.mean).abs() < 5 * sd / 200000**0.5).all()
    torch.testing.assert_close(draws.var(0), gmm.variance, rtol=0.03, atol=0)
    everything = gmm.condition(torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(everything.mean[0], gmm.mean)
    torch.testing.assert_close(everything.variance[0], gmm.variance)


def test_library_progress_is_off_by_default(capsys):
    for fn in (em, sgd, GaussianMixture.fit):
        assert inspect.signature(fn).parameters["progress"].default is False
    pc = compiled(dag(Bernoulli()))
    data = pc.sample(64, generator=torch.Generator().manual_seed(0))
    em(pc, data, epochs=1, full_batch_epochs=1, batch_size=16)
    sgd(pc, data, epochs=1, batch_size=16)
    GaussianMixture.fit(_gmm().sample(50, generator=torch.Generator().manual_seed(0)), 2, max_iter=3)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
