"""Task families: a prior sampler, a simulator and an exact or reference posterior each."""

from __future__ import annotations

from typing import Any

from probmod.errors import ProbmodError, UsageError

from .base import MAX_OBS, Problems, Task
from .gp_hyperprior import GPHyperprior
from .grid import GridPosterior
from .linear import linear_gaussian_update, linear_predict
from .linear_gaussian import LinearGaussian
from .lti_filter import LTIFilter
from .two_level_quantum import TwoLevelQuantum

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (LinearGaussian, LTIFilter, GPHyperprior, TwoLevelQuantum)}

__all__ = [
    "TASKS",
    "MAX_OBS",
    "Task",
    "Problems",
    "GridPosterior",
    "LinearGaussian",
    "LTIFilter",
    "GPHyperprior",
    "TwoLevelQuantum",
    "make_task",
    "linear_gaussian_update",
    "linear_predict",
]


def make_task(name: str, **config: Any) -> Task:
    """The task family ``name`` with the given settings (as stored by a trained model).

    Raises:
        UsageError: an unknown task, or settings it does not accept (a ``ValueError``).
        LimitError: a setting exceeds the task's documented limit.

    Example:
        >>> make_task("linear_gaussian", dim=2, n_components=4).obs_dim
        2
    """
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    try:
        return TASKS[name](**config)
    except ProbmodError:
        raise
    except (TypeError, ValueError, OverflowError) as err:
        raise UsageError(f"bad settings for task {name}: {err}") from None
