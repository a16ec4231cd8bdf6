"""``probcirc train-codec | compress | decompress | info``.

Exit codes: 0 success, 1 internal error, 2 usage, 3 unreadable or unsupported
input, 4 corrupt/truncated/foreign file, 5 model mismatch, 6 output exists
(pass ``--force``).
"""

from __future__ import annotations

import io as _io
import os
import sys
from pathlib import Path

import numpy as np

EXIT_INPUT, EXIT_FORMAT, EXIT_MISMATCH, EXIT_EXISTS = 3, 4, 5, 6
IMAGE_EXTS = {".png", ".pgm", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
ARRAY_EXTS = (".npy", ".gz", ".idx", "-ubyte")


def _err(msg: str, code: int):
    from ..cli import CliError

    return CliError(msg, code)


# ------------------------------------------------------------------ reading
def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("L", "RGB"):
                return np.asarray(im.convert(mode)).copy()
            if mode == "P":
                raise _err(f"{path}: palette image; convert it to RGB or L first (e.g. PIL: im.convert('RGB'))", EXIT_INPUT)
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise _err(f"{path}: {mode} ({'16-bit' if '16' in mode else '32-bit'}) images are not supported; only 8-bit L and RGB", EXIT_INPUT)
            raise _err(f"{path}: image mode {mode} is not supported; only 8-bit L (grey) and RGB", EXIT_INPUT)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _err(f"{path}: unreadable image ({e})", EXIT_INPUT) from None


def _read_array(path: Path) -> np.ndarray:
    from ..datasets import read_idx

    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        else:
            a = read_idx(path)
    except (OSError, ValueError, EOFError) as e:
        raise _err(f"{path}: unreadable array ({e})", EXIT_INPUT) from None
    if a.dtype != np.uint8:
        if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)
        else:
            raise _err(f"{path}: arrays must hold 8-bit values (uint8), got {a.dtype}", EXIT_INPUT)
    if a.ndim == 2:
        a = a[None]
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3):
        raise _err(f"{path}: arrays must be (N, H, W) grey or (N, H, W, 3) RGB, got shape {a.shape}", EXIT_INPUT)
    return a


def _is_array(path: Path) -> bool:
    return path.suffix == ".npy" or path.name.endswith(ARRAY_EXTS)


def collect(paths: list[str]) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Images, their names and sources (0 image file, 1 array element) from files and folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and (f.suffix.lower() in IMAGE_EXTS or _is_array(f)))
            if not found:
                raise _err(f"{p}: no images (PNG, PGM, BMP, ...) or arrays (.npy, idx) in this folder", EXIT_INPUT)
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise _err(f"{p}: no such file or folder", EXIT_INPUT)
    images, names, sources = [], [], []
    for f in files:
        if _is_array(f):
            arr = _read_array(f)
            stem = f.name.removesuffix(".gz").removesuffix(".npy")
            images.extend(list(arr))
            names.extend([stem] * len(arr))
            sources.extend([1] * len(arr))
        else:
            images.append(_read_image(f))
            names.append(f.stem)
            sources.append(0)
    return images, names, sources


def _png_bytes(img: np.ndarray) -> int:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.tell()


def _parse_patch(text: str) -> tuple[int, int]:
    import argparse

    try:
        h, w = (int(t) for t in text.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"patch must look like 28x28, got {text!r}") from None


def _check_out(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise _err(f"{path} exists; pass --force to replace it", EXIT_EXISTS)


def _write_bytes(path: Path, data: bytes, force: bool) -> None:
    from ..io import atomic_path

    with atomic_path(path, overwrite=force) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _load_codec(model_path: str, patch, batch_size: int, threads):
    from .. import io
    from ..circuit import TensorCircuit
    from .codec import Codec, CodecModel
    from .program import UnsupportedCircuit

    try:
        model = io.load(model_path)
    except FileNotFoundError:
        raise _err(f"{model_path}: no such model file", EXIT_INPUT) from None
    except io.FormatError as e:
        raise _err(f"{model_path}: not a codec model ({e})", EXIT_FORMAT) from None
    if not isinstance(model, (CodecModel, TensorCircuit)):
        raise _err(f"{model_path}: holds a {type(model).__name__}, not a circuit or codec model", EXIT_FORMAT)
    try:
        return Codec(model, patch=patch, batch_size=batch_size, threads=threads)
    except (ValueError, UnsupportedCircuit) as e:
        raise _err(f"{model_path}: {e}", EXIT_INPUT) from None


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="patch", disable=None, file=sys.stderr)


def _num_patches(images, patch) -> int:
    ph, pw = patch
    n = 0
    for a in images:
        planes = 3 if a.ndim == 3 else 1
        n += planes * (-(-a.shape[0] // ph)) * (-(-a.shape[1] // pw))
    return n


# ------------------------------------------------------------------ commands
def cmd_train(args) -> int:
    from .. import io
    from .train import train_codec

    out = Path(args.output)
    _check_out(out, args.force)
    images, _, _ = collect(args.images)
    if not images:
        raise _err("no images given", EXIT_INPUT)
    from .images import ImageModeError

    try:
        model = train_codec(images, patch=args.patch, latents=args.latents, epochs=args.epochs,
                            full_batch_epochs=args.full_epochs, batch_size=args.batch_size,
                            max_patches=args.max_patches, seed=args.seed, progress=True, predictor=args.predictor)
    except ImageModeError as e:
        raise _err(str(e), EXIT_INPUT) from None
    except ValueError as e:
        raise _err(str(e), EXIT_INPUT) from None
    try:
        io.save(model, out, overwrite=args.force)
    except FileExistsError:
        raise _err(f"{out} exists; pass --force to replace it", EXIT_EXISTS) from None
    from .codec import file_fingerprint

    print(f"trained codec model: {len(images)} images, patch {model.patch[0]}x{model.patch[1]}, {args.latents} latents, "
          f"predictor {model.predictor}, fingerprint {file_fingerprint(model.circuit, model.predictor).hex()[:12]} -> {out}")
    return 0


def cmd_compress(args) -> int:
    from .images import ImageModeError

    out = Path(args.output)
    _check_out(out, args.force)
    images, names, sources = collect(args.images)
    if not images:
        raise _err("no images given", EXIT_INPUT)
    codec = _load_codec(args.model, args.patch, args.batch_size, args.threads)
    bar = _bar(_num_patches(images, codec.patch), "compress")
    try:
        blob = codec.encode(images, names, sources, progress=bar.update)
    except ImageModeError as e:
        raise _err(str(e), EXIT_INPUT) from None
    finally:
        bar.close()
    _write_bytes(out, blob, args.force)
    dims = sum(a.size for a in images)
    png = sum(_png_bytes(a) for a in images)
    print(f"{len(images)} images, {dims} values: {len(blob)} bytes, {8 * len(blob) / dims:.4f} bits/dim "
          f"(PNG {8 * png / dims:.4f} bits/dim, {png / len(blob):.2f}x smaller than PNG) -> {out}")
    return 0


def _read_pcz(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise _err(f"{p}: no such file", EXIT_INPUT)
    return p.read_bytes()


def cmd_decompress(args) -> int:
    from PIL import Image

    from ..io import atomic_path
    from .codec import ModelMismatchError
    from .container import PczFormatError

    from .container import unpack

    data = _read_pcz(args.input)
    try:
        first, _ = unpack(data, verify_payload=False)
    except PczFormatError as e:
        raise _err(f"{args.input}: {e}", EXIT_FORMAT) from None
    codec = _load_codec(args.model, (first.patch_h, first.patch_w), args.batch_size, args.threads)
    try:
        header, payload = codec.read_header(data)
    except PczFormatError as e:
        raise _err(f"{args.input}: {e}", EXIT_FORMAT) from None
    except ModelMismatchError as e:
        raise _err(f"{args.input}: {e}; pass the model it was compressed with (-m)", EXIT_MISMATCH) from None
    outdir = Path(args.output)
    # plan the names first, refuse before decoding anything
    plan: list[tuple[str, list[int]]] = []
    used: dict[str, int] = {}
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(header.entries):
        base = e.name or f"image{i:05d}"
        if e.source == 1:
            groups.setdefault(base, []).append(i)
            continue
        n = used.get(base, 0)
        used[base] = n + 1
        plan.append((f"{base}.png" if n == 0 else f"{base}-{n}.png", [i]))
    for base, idx in groups.items():
        plan.append((f"{base}.npy", idx))
    for fname, _ in plan:
        _check_out(outdir / fname, args.force)
    bar = _bar(sum(_num_patches([np.zeros((e.height, e.width) if e.mode == 0 else (e.height, e.width, 3))], codec.patch)
                   for e in header.entries), "decompress")
    try:
        images = codec.decode_entries(header, payload, range(len(header.entries)), progress=bar.update)
    except PczFormatError as e:
        raise _err(f"{args.input}: {e}", EXIT_FORMAT) from None
    except (RuntimeError, ValueError) as e:
        raise _err(f"{args.input}: corrupt stream ({e})", EXIT_FORMAT) from None
    finally:
        bar.close()
    outdir.mkdir(parents=True, exist_ok=True)
    for fname, idx in plan:
        with atomic_path(outdir / fname, overwrite=args.force) as tmp:
            if fname.endswith(".npy"):
                arrs = [images[i] for i in idx]
                if len({a.shape for a in arrs}) != 1:
                    raise _err(f"{fname}: images of one array have different shapes", EXIT_FORMAT)
                with open(tmp, "wb") as f:
                    np.save(f, np.stack(arrs))
            else:
                Image.fromarray(images[idx[0]]).save(tmp, format="PNG")
    dims = sum(a.size for a in images)
    print(f"{len(images)} images, {dims} values, {8 * len(data) / max(dims, 1):.4f} bits/dim -> {outdir}/ ({len(plan)} files)")
    return 0


def cmd_info(args) -> int:
    from .container import PczFormatError, unpack
    from .images import MODE_NAMES

    data = _read_pcz(args.input)
    try:
        header, _ = unpack(data)
    except PczFormatError as e:
        raise _err(f"{args.input}: {e}", EXIT_FORMAT) from None
    dims = 0
    print(f"{args.input}: .pcz version 1, {len(data)} bytes, {len(header.entries)} images")
    print(f"model fingerprint {header.fingerprint.hex()}, patch {header.patch_h}x{header.patch_w}, "
          f"{header.num_values} values, {header.precision}-bit PMFs, {header.block} patches per block")
    show = header.entries if args.all else header.entries[:20]
    for i, e in enumerate(show):
        d = e.height * e.width * (3 if e.mode == 1 else 1)
        print(f"  [{i}] {e.name or '-'} {e.width}x{e.height} {MODE_NAMES[e.mode]}: {e.stream_len} bytes, {8 * e.stream_len / d:.4f} bits/dim")
    if len(show) < len(header.entries):
        print(f"  ... {len(header.entries) - len(show)} more (--all)")
    for e in header.entries:
        dims += e.height * e.width * (3 if e.mode == 1 else 1)
    print(f"total: {dims} values, streams {8 * header.payload_len / max(dims, 1):.4f} bits/dim, "
          f"file {8 * len(data) / max(dims, 1):.4f} bits/dim")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train-codec", help="train a lossless image codec (HCLT on patches)")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="PNG/PGM/BMP files, folders, .npy or idx(.gz) arrays")
    p.add_argument("--patch", type=_parse_patch, default=None,
                   help="patch shape HxW (default: the images' size when all share one up to 32x32, else 8x8)")
    p.add_argument("--latents", type=int, default=32, help="HCLT latent states per pixel (default 32)")
    p.add_argument("--epochs", type=int, default=2, help="mini-batch EM epochs (default 2)")
    p.add_argument("--full-epochs", type=int, default=1, help="full-batch EM epochs (default 1)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--max-patches", type=int, default=None, help="train on at most this many patches")
    p.add_argument("--predictor", choices=("auto", "none", "med"), default="auto",
                   help="model pixels (none) or JPEG-LS prediction residuals (med, better on photographs); "
                        "auto picks by the training images' entropy (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="model file (.h5)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="compress images into a .pcz file")
    p.add_argument("images", nargs="+", metavar="IMAGES")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--patch", type=_parse_patch, default=None, help="only for a bare circuit file without a patch shape")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: every core; results never depend on it)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="restore the images of a .pcz file (PNG, or .npy for arrays)")
    p.add_argument("input")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: every core; results never depend on it)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="describe a .pcz file")
    p.add_argument("input")
    p.add_argument("--all", action="store_true", help="list every image")
    p.set_defaults(func=cmd_info)
