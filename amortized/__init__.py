"""Amortised inference: Distribution Transformers map a GMM prior and data to a GMM posterior.

Example:
    >>> import torch
    >>> from amortized import DistributionTransformer
    >>> from amortized.tasks import LinearGaussian
    >>> task = LinearGaussian(dim=2, n_components=4)
    >>> model = DistributionTransformer(2, 4, task.obs_dim, d_model=32, n_layers=1, n_heads=2)
    >>> p = task.sample(16, torch.Generator().manual_seed(0)).to(torch.float32)
    >>> post = model(p.prior, p.observations, p.obs_mask)
    >>> post.log_prob(p.latent).shape
    torch.Size([16])
"""

from pathlib import Path

from . import modelfile
from .modelfile import MAX_PARAMETERS
from .rollout import roll_forward
from .tasks import TASKS, make_task
from .transformer import DistributionTransformer

__all__ = ["DistributionTransformer", "roll_forward", "TASKS", "make_task", "load", "MODELS"]

#: Folder of the small trained models shipped with the package (see its README.md).
MODELS = Path(__file__).parent / "models"


def load(path: str | Path, max_parameters: int = MAX_PARAMETERS) -> DistributionTransformer:
    """Load a model saved with ``probmod.io.save`` (or by ``amortized train``), checking it first.

    Model files are untrusted input: declared sizes are checked against
    :data:`amortized.modelfile.LIMITS` and ``max_parameters``, and the stored
    arrays against the declared architecture, before anything is read or built
    (see :mod:`amortized.modelfile`). Importing :mod:`amortized` registers
    :class:`DistributionTransformer` with :mod:`probmod.io`; ``probmod.io.load``
    works too once that import has run, with the same shape and settings checks.

    Raises:
        FormatError: a corrupt file, weights that do not match the declared architecture, or a bad ``task_config``.
        LimitError: a declared size beyond the limits.
        ModelMismatchError: the file holds another kind of object.

    Example:
        >>> model = load(MODELS / "linear_gaussian_d2_k4.h5")
        >>> model.task, model.dim, model.n_components
        ('linear_gaussian', 2, 4)
    """
    return modelfile.load(path, max_parameters)
