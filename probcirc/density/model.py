"""A trained density model: the circuit, the run that made it, and how far that run has gone.

The file a training run writes after every epoch is its checkpoint: the
circuit's parameters, the run's options, the epochs done with their bits per
dimension, and the data's fingerprint. Nothing else is needed to continue,
because every random draw of the run comes from ``seed``: the train/validation
split, the structure and initial parameters, each epoch's shuffle (a
generator seeded from ``(seed, epoch)``, see :func:`epoch_seed`) and the noise
of a ``--prune-grow`` step (:meth:`DensityModel.restructure`), whose schedule
the file keeps so that a resumed run replays it.

Example:
    >>> import numpy as np, torch
    >>> x = np.random.default_rng(0).integers(0, 2, (40, 4))
    >>> run = RunOptions("hclt", latents=2, batch_size=16, step_size=0.5, pseudocount=0.1, valid_fraction=0.25, seed=0)
    >>> model = DensityModel.start(run, x, image_shape=(2, 2))
    >>> len(model.train_rows), len(model.valid_rows), model.epochs_done
    (30, 10, 0)
    >>> bpd, nats = model.bits_per_dim(x)
    >>> bool(abs(bpd - nats / (4 * np.log(2))) < 1e-9)
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from probmod import io
from probmod.errors import FormatError, ModelMismatchError, UsageError

from ..backend import PRECISIONS
from ..circuit import TensorCircuit, compile
from ..inputs import Categorical
from ..learn.distributed import CHUNK_SIZE
from ..learn.prune import grow, prune
from ..structures import HCLT, PD, RAT_SPN

__all__ = [
    "DensityModel",
    "PruneGrowStep",
    "RunOptions",
    "STRUCTURES",
    "epoch_seed",
    "fingerprint",
    "parse_prune_grow",
    "split",
]

STRUCTURES = ("hclt", "pd", "rat")
#: RAT-SPN region-tree depth (capped at log2 D) and repetitions
RAT_DEPTH, RAT_REPETITIONS = 4, 8
_HISTORY = ("train_bpd", "valid_bpd", "full", "seconds")
#: run options that files written by earlier versions lack (they were trained with the default)
_LATER_OPTIONS = ("chunk_size", "precision", "sum_pseudocount")


@dataclass(frozen=True)
class RunOptions:
    """The options that define a training run; a resumed run must give the same ones."""

    structure: str
    latents: int
    batch_size: int
    step_size: float
    pseudocount: float
    valid_fraction: float
    seed: int
    #: rows per chunk (:mod:`probcirc.learn.distributed`): EM's sums, so its bytes, depend on it
    chunk_size: int = CHUNK_SIZE
    #: the sum layers' matrix products during EM (:func:`probcirc.backend.approximate`); queries stay exact
    precision: str = "ieee"
    #: the sum layers' own EM pseudocount (None: ``pseudocount``)
    sum_pseudocount: float | None = None

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise UsageError(f"structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        if not 0 <= self.valid_fraction < 1:
            raise UsageError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if not 0 < self.step_size <= 1:
            raise UsageError(f"--step-size must be in (0, 1], got {self.step_size}")
        for name, alpha in (("pseudocount", self.pseudocount), ("sum-pseudocount", self.sum_pseudocount)):
            if alpha is not None and not alpha >= 0:
                raise UsageError(f"--{name} must be >= 0, got {alpha}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
        if self.chunk_size < 1:
            raise UsageError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def differences(self, other: RunOptions) -> list[str]:
        """``--name: this vs other`` for every option that differs."""
        return [
            f"--{f.name.replace('_', '-')} {getattr(other, f.name)} (the run used {getattr(self, f.name)})"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True)
class PruneGrowStep:
    """After ``at`` epochs, prune ``fraction`` of the sum edges by flow, then copy every node ``factor`` times."""

    at: int
    fraction: float
    factor: int
    noise: float


def parse_prune_grow(text: str | None) -> tuple[PruneGrowStep, ...]:
    """The steps of a ``--prune-grow`` value: ``AT:FRACTION:FACTOR[:NOISE]``, comma-separated.

    Example:
        >>> first, second = parse_prune_grow("4:0.5:1:0, 2:0.75:2")
        >>> first
        PruneGrowStep(at=2, fraction=0.75, factor=2, noise=0.1)
        >>> second.noise
        0.0
    """
    steps = []
    for part in filter(None, (text or "").replace(" ", "").split(",")):
        fields = part.split(":")
        try:
            if len(fields) not in (3, 4):
                raise ValueError
            at, fraction, factor = int(fields[0]), float(fields[1]), int(fields[2])
            noise = float(fields[3]) if len(fields) == 4 else 0.1
        except ValueError:
            raise UsageError(
                f"--prune-grow {part!r}: write AT:FRACTION:FACTOR[:NOISE], e.g. 2:0.75:2 (after 2 epochs, "
                "prune 75% of the sum edges, grow every node 2x with noise 0.1)"
            ) from None
        if at < 0 or not 0 <= fraction < 1 or factor < 1 or not 0 <= noise < math.inf:
            raise UsageError(f"--prune-grow {part!r}: AT must be >= 0, FRACTION in [0, 1), FACTOR >= 1 and NOISE >= 0")
        steps.append(PruneGrowStep(at, fraction, factor, noise))
    if len({st.at for st in steps}) != len(steps):
        raise UsageError(f"--prune-grow {text!r}: two steps at the same epoch")
    return tuple(sorted(steps, key=lambda st: st.at))


def _schedule_text(steps: tuple[PruneGrowStep, ...]) -> str:
    return ",".join(f"{st.at}:{st.fraction!r}:{st.factor}:{st.noise!r}" for st in steps)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of epoch ``epoch`` (0-based) of a run with ``seed``: the same whether resumed or not."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def split(run: RunOptions, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted training and validation rows of ``n`` samples, drawn from ``run.seed``."""
    order = np.random.default_rng(run.seed).permutation(n)
    n_valid = math.ceil(run.valid_fraction * n)
    if n - n_valid < 2:
        raise UsageError(f"--valid-fraction {run.valid_fraction} leaves {n - n_valid} training samples of {n}")
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def fingerprint(x: np.ndarray) -> str:
    """SHA-256 of an integer data set's shape and its values as int64 (whatever their dtype).

    The values go through the hash a block of rows at a time, so no int64 copy of the whole set is made.
    """
    digest = hashlib.sha256(repr(x.shape).encode())
    step = max(1, (1 << 22) // max(1, math.prod(x.shape[1:])))  # about 32 MB of int64 a block
    for s in range(0, len(x), step):
        digest.update(np.ascontiguousarray(x[s : s + step], dtype=np.int64).tobytes())
    return digest.hexdigest()


@io.register
class DensityModel:
    """A circuit over ``num_vars`` categorical variables with ``num_values`` values, and its training run."""

    def __init__(
        self,
        circuit: TensorCircuit,
        run: RunOptions,
        num_values: int,
        image_shape: tuple[int, int] | None,
        data_sha256: str,
        num_samples: int,
        history: dict[str, np.ndarray] | None = None,
        prune_grow: str | None = None,
    ):
        self.circuit, self.run, self.num_values = circuit, run, int(num_values)
        #: the run's --prune-grow schedule (normalised text); None until a new run's first epoch fixes it
        self.prune_grow = prune_grow
        self.image_shape = image_shape
        self.data_sha256, self.num_samples = data_sha256, int(num_samples)
        self.history = {k: np.asarray((history or {}).get(k, []), dtype=float) for k in _HISTORY}

    @classmethod
    def start(cls, run: RunOptions, x: np.ndarray, image_shape: tuple[int, int] | None = None) -> DensityModel:
        """A new run on ``x`` ``(N, D)``: the split, then the structure and parameters, all drawn from ``run.seed``."""
        num_values = max(2, int(x.max()) + 1)
        train = x[split(run, len(x))[0]]
        circuit = compile(_structure(run, train, num_values, image_shape), seed=run.seed)
        return cls(circuit, run, num_values, image_shape, fingerprint(x), len(x))

    @property
    def train_rows(self) -> np.ndarray:
        """The rows of the data this run trains on (sorted)."""
        return split(self.run, self.num_samples)[0]

    @property
    def valid_rows(self) -> np.ndarray:
        """The rows of the data this run validates on (sorted)."""
        return split(self.run, self.num_samples)[1]

    @property
    def epochs_done(self) -> int:
        return len(self.history["train_bpd"])

    @property
    def full_epochs_done(self) -> int:
        return int(self.history["full"].sum())

    def check_data(self, x: np.ndarray, what: str = "DATA") -> None:
        """Refuse data of another width or with values the leaves cannot hold."""
        if x.shape[1] != self.circuit.num_vars:
            raise ModelMismatchError(f"{what} has {x.shape[1]} variables but the model has {self.circuit.num_vars}")
        if int(x.max()) >= self.num_values:
            raise ModelMismatchError(f"{what} holds the value {int(x.max())}; the model knows 0..{self.num_values - 1}")

    def bits_per_dim(self, x: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
        """``(bits per dimension, nats per sample)`` of ``x`` ``(N, D)``, summed in float64."""
        self.check_data(x)
        total = 0.0
        with torch.no_grad():
            for s in range(0, len(x), batch_size):
                total += float(self.circuit.log_prob(torch.from_numpy(x[s : s + batch_size])).double().sum())
        nats = -total / len(x)
        return nats / (x.shape[1] * math.log(2)), nats

    def restructure(self, epoch: int, train: torch.Tensor | np.ndarray, schedule: str | None) -> None:
        """Before ``epoch`` (0-based), apply the ``--prune-grow`` step due then, if any, on the training rows.

        The first call of a run fixes its schedule; a resumed run must give the same one. The
        growing noise is drawn from ``(seed, epoch)``, so a resumed run repeats the step exactly.
        """
        steps = parse_prune_grow(schedule)
        text = _schedule_text(steps)
        if self.prune_grow is None:
            self.prune_grow = text
        elif self.prune_grow != text:
            raise UsageError(
                f"--resume: the run used --prune-grow {self.prune_grow or '(none)'}, not {text or '(none)'}"
            )
        for st in steps:
            if st.at == epoch:
                gen = torch.Generator().manual_seed(epoch_seed(self.run.seed, epoch))
                pruned = prune(self.circuit, torch.as_tensor(train), st.fraction, self.run.batch_size, check=False)
                self.circuit = grow(pruned, st.factor, st.noise, generator=gen)

    def record(self, train_bpd: float, valid_bpd: float, full: bool, seconds: float) -> None:
        """Append one finished epoch to the history."""
        for k, v in zip(_HISTORY, (train_bpd, valid_bpd, float(full), seconds)):
            self.history[k] = np.append(self.history[k], v)

    # ------------------------------------------------------------------ io
    def _state(self) -> tuple[dict, dict]:
        attrs, arrays = self.circuit._state()
        h, w = self.image_shape or (0, 0)
        attrs.update(num_values=self.num_values, image_h=h, image_w=w)
        attrs.update(data_sha256=self.data_sha256, num_samples=self.num_samples)
        attrs.update(prune_grow=self.prune_grow or "")
        # HDF5 has no None: an option left at None is not written, and reads back as None.
        attrs.update({f"run_{k}": v for k, v in dataclasses.asdict(self.run).items() if v is not None})
        arrays.update({f"history/{k}": v for k, v in self.history.items()})
        return attrs, arrays

    @classmethod
    def _from_state(cls, attrs: dict, arrays: dict) -> DensityModel:
        fields = {f.name: str(f.type) for f in dataclasses.fields(RunOptions)}
        try:
            # A file written before an option was stored was trained with its default.
            stored = {k: attrs[f"run_{k}"] for k in fields if k not in _LATER_OPTIONS or f"run_{k}" in attrs}
            run = RunOptions(**{k: _cast(fields[k], v) for k, v in stored.items()})
        except UsageError as e:
            raise FormatError(f"bad run options in the density model ({e})") from None
        circuit = TensorCircuit._from_state(attrs, {k: v for k, v in arrays.items() if k.startswith("layers/")})
        h, w = int(attrs["image_h"]), int(attrs["image_w"])
        num_values, n = int(attrs["num_values"]), int(attrs["num_samples"])
        categories = _categories(circuit)
        if h < 0 or w < 0 or n < 1 or not 2 <= num_values <= categories:
            raise FormatError(
                f"the density model's attributes do not fit its circuit (image {h}x{w}, {n} samples, "
                f"{num_values} values for leaves of {categories} categories)"
            )
        history = {k: arrays.get(f"history/{k}", []) for k in _HISTORY}
        if len({len(v) for v in history.values()}) != 1:
            raise FormatError("the density model's history arrays differ in length")
        image = (h, w) if h * w else None
        if image is not None and h * w != circuit.num_vars:
            raise FormatError(f"image shape {h}x{w} does not match the circuit's {circuit.num_vars} variables")
        try:
            schedule = _schedule_text(parse_prune_grow(str(attrs.get("prune_grow", ""))))
        except UsageError as e:
            raise FormatError(f"bad prune-grow schedule in the density model ({e})") from None
        return cls(circuit, run, num_values, image, str(attrs["data_sha256"]), n, history, schedule)


def _categories(circuit: TensorCircuit) -> int:
    """The fewest categories any leaf of the circuit takes (a Bernoulli leaf takes 2)."""
    return min(int(group.dist.num_values or 2) for group in circuit.graph().leaves)


def _cast(kind: str, value):
    return {"str": str, "int": int, "float": float, "float | None": float}[kind](value)


def _structure(run: RunOptions, train: np.ndarray, num_values: int, image_shape: tuple[int, int] | None):
    leaves = Categorical(num_values)
    d = train.shape[1]
    if run.structure == "hclt":
        return HCLT(torch.from_numpy(train), run.latents, input_dist=leaves, seed=run.seed)
    if run.structure == "pd":
        return PD(image_shape or (1, d), run.latents, input_dist=leaves)
    depth = min(RAT_DEPTH, int(math.log2(d)))
    return RAT_SPN(d, run.latents, depth, RAT_REPETITIONS, input_dist=leaves, seed=run.seed)
