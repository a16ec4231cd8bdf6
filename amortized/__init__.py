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

from .rollout import roll_forward
from .tasks import TASKS, make_task
from .transformer import DistributionTransformer

__all__ = ["DistributionTransformer", "roll_forward", "TASKS", "make_task", "load", "MODELS"]

#: Folder of the small trained models shipped with the package (see its README.md).
MODELS = Path(__file__).parent / "models"


def load(path: str | Path) -> DistributionTransformer:
    """Load a model saved with ``probcirc.io.save`` (or by ``python -m amortized train``).

    Importing :mod:`amortized` registers :class:`DistributionTransformer` with
    :mod:`probcirc.io`; ``probcirc.io.load`` works too once that import has run.

    Example:
        >>> model = load(MODELS / "linear_gaussian_d2_k4.h5")
        >>> model.task, model.dim, model.n_components
        ('linear_gaussian', 2, 4)
    """
    from probcirc import io

    return io.load(path, kind=DistributionTransformer)
