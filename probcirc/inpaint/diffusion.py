"""A small pixel-space DDPM for MNIST built from ``diffusers`` parts: config, training, save and load.

Weights are stored as safetensors and the architecture as JSON (``config.json``
in diffusers' own format), so a folder written here loads with
``UNet2DModel.from_pretrained`` too; nothing is pickled and nothing is downloaded.

Example:
    >>> import torch
    >>> unet = small_unet(channels=(8, 8, 8), seed=0)
    >>> unet(torch.zeros(2, 1, 28, 28), torch.tensor([3, 5])).sample.shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: every model here is local

import numpy as np
import torch

from probmod.errors import FormatError, InputError
from probmod.io import atomic_path, check_output, new_file_mode
from probmod.progress import Progress

__all__ = [
    "SHIPPED",
    "Diffusion",
    "load_diffusion",
    "save_diffusion",
    "small_unet",
    "to_unit",
    "train_ddpm",
]

#: the DDPM trained by ``python -m probcirc.inpaint train-diffusion``, shipped with the package
SHIPPED = Path(__file__).with_name("mnist_ddpm")
#: diffusion-side file names inside a model folder
WEIGHTS, SCHEDULER = "diffusion_pytorch_model.safetensors", "scheduler_config.json"
TRAIN_STEPS = 1000


def _diffusers():
    """Import diffusers lazily: it is an optional extra (``pip install probmod[inpaint]``)."""
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError("diffusion models need the 'inpaint' extra: pip install 'probmod[inpaint]'") from err
    return diffusers


class Diffusion:
    """A diffusers ``UNet2DModel`` with its noise scheduler (DDPM or DDIM), in pixel space scaled to [-1, 1]."""

    def __init__(self, unet, scheduler) -> None:
        self.unet = unet.eval()
        self.scheduler = scheduler

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size)


def small_unet(channels: tuple[int, ...] = (32, 64, 64), size: int = 28, seed: int | None = None):
    """A small ``UNet2DModel`` for one-channel ``size x size`` images (attention only at the coarsest level)."""
    diffusers = _diffusers()
    if seed is not None:
        torch.manual_seed(seed)  # diffusers initialises from torch's global generator
    n = len(channels)
    return diffusers.UNet2DModel(
        sample_size=size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        norm_num_groups=min(8, min(channels)),
    )


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8-range pixels ``(N, H, W)`` as ``(N, 1, H, W)`` float32 in [-1, 1], the diffusion model's scale."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    return (x / 127.5 - 1.0).unsqueeze(1)


def train_ddpm(
    images: np.ndarray,
    seconds: float = 1800.0,
    max_steps: int = 100_000,
    batch_size: int = 32,
    lr: float = 3e-3,
    channels: tuple[int, ...] = (8, 16, 16),
    seed: int = 0,
    progress: bool = False,
    log=None,
) -> Diffusion:
    """Fit a DDPM (epsilon prediction, linear betas, 1000 steps) to ``images`` for ``seconds`` or ``max_steps``.

    The learning rate warms up over 200 steps and then follows a cosine to 0 over
    the time budget, so a run cut short by the clock still ends at a small rate.
    """
    diffusers = _diffusers()
    gen = torch.Generator().manual_seed(seed)
    unet = small_unet(channels, size=images.shape[-1], seed=seed).train()
    sched = diffusers.DDPMScheduler(num_train_timesteps=TRAIN_STEPS, beta_schedule="linear")
    data = to_unit(images)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in unet.parameters()]
    start, step, avg = time.monotonic(), 0, None
    bar = Progress(total=max_steps, desc="train-diffusion", enabled=progress)
    while step < max_steps:
        frac = (time.monotonic() - start) / seconds
        if frac >= 1:
            break
        rate = lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = rate
        x0 = data[torch.randint(len(data), (batch_size,), generator=gen)]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(TRAIN_STEPS, (batch_size,), generator=gen)
        loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, unet.parameters()):
                e.lerp_(p.detach(), 1 - decay)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        step += 1
        bar.update(1)
        if log and step % 50 == 0:
            log(f"step {step} loss {avg:.4f} lr {rate:.2e} {time.monotonic() - start:.0f}s")
    bar.close()
    with torch.no_grad():
        for e, p in zip(ema, unet.parameters()):
            p.copy_(e)
    return Diffusion(unet, sched)


def save_diffusion(
    model: Diffusion, folder: str | os.PathLike, overwrite: bool = False, meta: dict | None = None
) -> None:
    """Write ``config.json``, the safetensors weights and ``scheduler_config.json`` into ``folder``, each atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", WEIGHTS, SCHEDULER):
        check_output(folder / name, overwrite)
    config = dict(model.unet.config) | {"_class_name": "UNet2DModel", "probmod": meta or {}}
    state = {k: v.detach().contiguous() for k, v in model.unet.state_dict().items()}
    with atomic_path(folder / WEIGHTS, overwrite=overwrite) as tmp:
        save_file(state, tmp)
        os.chmod(tmp, new_file_mode())  # safetensors writes a fresh 0600 file over the prepared one
    _write_json(folder / "config.json", config, overwrite)
    _write_json(
        folder / SCHEDULER, dict(model.scheduler.config) | {"_class_name": type(model.scheduler).__name__}, overwrite
    )


def _write_json(path: Path, obj: dict, overwrite: bool) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=list) + "\n", encoding="utf-8")


def load_diffusion(folder: str | os.PathLike | None = None, scheduler: str = "ddim") -> Diffusion:
    """Load a model folder written by :func:`save_diffusion` (default: the shipped MNIST DDPM).

    ``scheduler`` is ``"ddim"`` or ``"ddpm"``; both read the stored training
    schedule, so either samples from the same model.
    """
    diffusers = _diffusers()
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else SHIPPED
    for name in ("config.json", WEIGHTS):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: not a diffusion model folder (no {name}); train one with train-diffusion")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        sched_cfg = (
            json.loads((folder / SCHEDULER).read_text(encoding="utf-8")) if (folder / SCHEDULER).is_file() else {}
        )
    except (ValueError, UnicodeDecodeError) as err:
        raise FormatError(f"{folder}: unreadable model config: {err}") from err
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "probmod"}
    try:
        unet = diffusers.UNet2DModel.from_config(config)
        unet.load_state_dict(load_file(folder / WEIGHTS))
    except (RuntimeError, ValueError, TypeError, OSError) as err:
        raise FormatError(f"{folder}: weights do not match the config: {str(err).splitlines()[0]}") from err
    kinds = {"ddim": diffusers.DDIMScheduler, "ddpm": diffusers.DDPMScheduler}
    if scheduler not in kinds:
        raise InputError(f"scheduler must be one of {', '.join(kinds)}, got {scheduler!r}")
    sched_cfg = {k: v for k, v in sched_cfg.items() if not k.startswith("_")}
    return Diffusion(unet, kinds[scheduler].from_config(sched_cfg or {"num_train_timesteps": TRAIN_STEPS}))
