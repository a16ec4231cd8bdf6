"""Reading model files, which are untrusted input, without letting them decide how much memory we spend.

A model file declares its architecture in attributes (``d_model``,
``n_layers``, ...) and stores the weights as arrays. Before any array is read
or any layer is built, :func:`load`

* checks every declared size against :data:`LIMITS` and the parameter count
  against ``max_parameters`` (default :data:`MAX_PARAMETERS`), raising
  :class:`~probmod.errors.LimitError`;
* checks that the stored arrays have exactly the shapes that architecture
  implies, raising :class:`~probmod.errors.FormatError` otherwise (a file
  declaring ``d_model=30000`` beside small arrays is refused in milliseconds
  instead of allocating tens of gigabytes);
* checks that the task settings (``task_config``) build the named task and
  agree with the network's dimensions.

The arrays are then read through :func:`probmod.io.load`, which refuses links,
external storage, FIFOs and declared-size bombs, with a byte budget equal to
what the checked architecture needs.

Example:
    >>> import amortized
    >>> model = load(amortized.MODELS / "lti_filter_k4.h5")
    >>> model.d_model, task_of(model).name
    (48, 'lti_filter')
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from probmod import io
from probmod.errors import FormatError, LimitError, UsageError

from .tasks import TASKS, Task, make_task

if TYPE_CHECKING:
    from .transformer import DistributionTransformer

__all__ = [
    "LIMITS",
    "MAX_PARAMETERS",
    "load",
    "architecture",
    "state_shapes",
    "count_parameters",
    "check_state",
    "task_config",
    "task_of",
]

#: the largest value a model file may declare for each architecture setting
LIMITS: dict[str, int] = {
    "dim": 64,
    "n_components": 4096,
    "obs_dim": 4096,
    "d_model": 8192,
    "n_layers": 256,
    "n_heads": 256,
    "d_ff": 65536,
}
#: the most weights a model file may declare (200 MB as float32); ``max_parameters`` raises it
MAX_PARAMETERS = 50_000_000
#: the architecture attributes, in constructor order
ARCHITECTURE = tuple(LIMITS)
_KIND = "DistributionTransformer"


def architecture(attrs: Mapping[str, Any], where: str = "model file") -> dict[str, int]:
    """The declared architecture as ints, each positive and within :data:`LIMITS`.

    Raises:
        FormatError: a setting is missing, not an integer, not positive, or ``n_heads`` does not divide ``d_model``.
        LimitError: a setting exceeds its limit.

    Example:
        >>> architecture(dict(dim=2, n_components=4, obs_dim=2, d_model=64, n_layers=3, n_heads=4, d_ff=256))["d_ff"]
        256
        >>> architecture(dict(dim=2, n_components=4, obs_dim=2, d_model=30000, n_layers=3, n_heads=4, d_ff=256))
        Traceback (most recent call last):
        ...
        probmod.errors.LimitError: model file: d_model=30000 exceeds the limit of 8192 (amortized.modelfile.LIMITS)
    """
    cfg = {}
    for key in ARCHITECTURE:
        value = attrs.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FormatError(f"{where}: architecture setting {key} must be an integer, got {value!r}")
        if value < 1:
            raise FormatError(f"{where}: architecture setting {key} must be positive, got {value}")
        if value > LIMITS[key]:
            raise LimitError(f"{where}: {key}={value} exceeds the limit of {LIMITS[key]} (amortized.modelfile.LIMITS)")
        cfg[key] = value
    if cfg["d_model"] % cfg["n_heads"]:
        raise FormatError(f"{where}: n_heads={cfg['n_heads']} does not divide d_model={cfg['d_model']}")
    return cfg


def state_shapes(cfg: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The shape of every weight a :class:`DistributionTransformer` with this architecture holds, by name.

    Computed from the settings alone, so a declared architecture can be
    checked against a file's arrays without building anything.

    Example:
        >>> cfg = dict(dim=2, n_components=3, obs_dim=5, d_model=8, n_layers=1, n_heads=2, d_ff=12)
        >>> state_shapes(cfg)["head.weight"], len(state_shapes(cfg))
        ((6, 8), 31)
    """
    d, ff, dim = cfg["d_model"], cfg["d_ff"], cfg["dim"]
    n_token = 1 + 2 * dim + dim * (dim - 1) // 2
    shapes: dict[str, tuple[int, ...]] = {"null_observation": (1, 1, d)}
    for name, n_in in (("embed_component", n_token), ("embed_observation", cfg["obs_dim"])):
        shapes |= _linear(f"{name}.0", d, n_in) | _linear(f"{name}.2", d, d)
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}"
        for attn in ("self_attn", "multihead_attn"):
            shapes |= {f"{p}.{attn}.in_proj_weight": (3 * d, d), f"{p}.{attn}.in_proj_bias": (3 * d,)}
            shapes |= _linear(f"{p}.{attn}.out_proj", d, d)
        shapes |= _linear(f"{p}.linear1", ff, d) | _linear(f"{p}.linear2", d, ff)
        for norm in ("norm1", "norm2", "norm3"):
            shapes |= _linear(f"{p}.{norm}", d, None)
    return shapes | _linear("norm", d, None) | _linear("head", n_token, d)


def _linear(prefix: str, n_out: int, n_in: int | None) -> dict[str, tuple[int, ...]]:
    """A linear layer's weight and bias shapes (``n_in=None``: a layer norm's per-feature weight)."""
    return {f"{prefix}.weight": (n_out,) if n_in is None else (n_out, n_in), f"{prefix}.bias": (n_out,)}


def count_parameters(
    cfg: Mapping[str, int], where: str = "model file", max_parameters: int | None = MAX_PARAMETERS
) -> int:
    """The number of weights the architecture declares, refused beyond ``max_parameters`` (None: no limit).

    Raises:
        LimitError: more than ``max_parameters`` weights.

    Example:
        >>> count_parameters(dict(dim=1, n_components=2, obs_dim=1, d_model=4, n_layers=1, n_heads=1, d_ff=4))
        315
    """
    n = sum(_numel(s) for s in state_shapes(cfg).values())
    if max_parameters is not None and n > max_parameters:
        raise LimitError(
            f"{where}: the architecture declares {n} parameters, more than the limit of "
            f"{max_parameters}; raise max_parameters (--max-params) if this file is trusted"
        )
    return n


def check_state(cfg: Mapping[str, int], shapes: Mapping[str, tuple[int, ...]], where: str = "model file") -> None:
    """Check stored array shapes (names without the ``state/`` prefix) against the architecture.

    Raises:
        FormatError: an array is missing, unexpected or of another shape.
    """
    expected = state_shapes(cfg)
    missing = sorted(expected.keys() - shapes.keys())
    extra = sorted(shapes.keys() - expected.keys())
    if missing or extra:
        raise FormatError(
            f"{where}: weights do not match the declared architecture (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise FormatError(
                f"{where}: weight {key} has shape {tuple(shapes[key])}, but the declared architecture implies {shape}"
            )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def task_config(attrs: Mapping[str, Any], where: str = "model file") -> tuple[str | None, dict[str, Any]]:
    """The task name and settings a file declares, checked: a known task must build and match the network.

    Raises:
        FormatError: ``task_config`` is not a JSON object, or does not build the named task, or that
            task's dimensions differ from the network's.
        LimitError: the task settings exceed a task's documented limit.
    """
    name = attrs.get("task") or None
    try:
        config = json.loads(attrs.get("task_config", "{}"))
    except (TypeError, ValueError) as err:
        raise FormatError(f"{where}: task_config is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise FormatError(f"{where}: task_config must be a JSON object, got {type(config).__name__}")
    if name is not None and not isinstance(name, str):
        raise FormatError(f"{where}: task must be a name, got {name!r}")
    if name in TASKS:
        _task(name, config, {k: attrs.get(k) for k in ("dim", "n_components", "obs_dim")}, where)
    return name, config


def _task(name: str, config: dict[str, Any], dims: Mapping[str, Any], where: str) -> Task:
    try:
        task = make_task(name, **config)
    except LimitError as err:
        raise LimitError(f"{where}: {err}") from None
    except UsageError as err:
        raise FormatError(f"{where}: bad task_config: {err}") from None
    for key, value in dims.items():
        if getattr(task, key) != value:
            raise FormatError(
                f"{where}: task_config gives {name} {key}={getattr(task, key)}, but the network "
                f"was built for {key}={value}"
            )
    return task


def task_of(model: DistributionTransformer, where: str = "model") -> Task:
    """The task family ``model`` was trained on, rebuilt from its stored settings.

    Raises:
        FormatError: the model names no known task, or its settings do not build it.
    """
    if model.task not in TASKS:
        raise FormatError(
            f"{where}: the model names no known task (got {model.task!r}; known: {', '.join(sorted(TASKS))})"
        )
    dims = dict(dim=model.dim, n_components=model.n_components, obs_dim=model.obs_dim)
    return _task(model.task, dict(model.task_config), dims, where)


def load(path: str | os.PathLike, max_parameters: int = MAX_PARAMETERS) -> DistributionTransformer:
    """Load a model file after checking its declared sizes, array shapes and task settings (see the module notes).

    Raises:
        InputError: ``path`` is missing or not a regular file (a missing file also is a ``FileNotFoundError``).
        FormatError: not a model file, corrupt, inconsistent, or with a bad ``task_config``.
        ModelMismatchError: the file holds another kind of object.
        LimitError: a declared size exceeds :data:`LIMITS` or ``max_parameters``.
    """
    from .transformer import DistributionTransformer

    where = os.fspath(path)
    budget = 8 * max_parameters
    if os.path.lexists(where):
        with io.open_hdf5(path, "model file") as f:
            try:
                budget = _check_header(f, where, max_parameters)
            except (OSError, RuntimeError, KeyError) as err:  # h5py's answers to a damaged header
                raise FormatError(f"{where}: truncated or corrupt ({err})") from None
    return io.load(path, kind=DistributionTransformer, max_bytes=budget)


def _check_header(f: Any, where: str, max_parameters: int) -> int:
    """Check an open file's declarations (nothing is read but attributes and shapes); the byte budget of its arrays."""
    if _plain(f.attrs.get("kind")) != _KIND or _plain(f.attrs.get("format")) != io.FORMAT:
        return 8 * max_parameters  # other kinds and foreign files get their errors from probmod.io.load
    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    cfg = architecture(attrs, where)
    budget = 8 * count_parameters(cfg, where, max_parameters)  # float64 weights take 8 bytes; nothing else is stored
    check_state(cfg, {k.removeprefix("state/"): ds.shape for k, ds in io.safe_datasets(f, budget).items()}, where)
    task_config(attrs, where)
    return budget


def _plain(value: Any) -> Any:
    """An attribute as a plain Python value (numpy scalars and bytes are what h5py hands back)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
