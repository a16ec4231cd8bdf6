"""``probcirc train-codec | compress | decompress | info``.

Exit codes follow :data:`probmod.errors.EXIT_CODES`: 2 usage, 3 an input
cannot be read or is unsupported, 4 a corrupt, truncated or foreign file, 5 a
model that does not match the file, 6 the output exists (pass ``--force``),
7 a declared size over ``--max-values``, 9 an output cannot be written.

Inputs are untrusted: declared image sizes are checked against
``--max-values`` before any pixel is read, stored names are reduced to plain
file names, and every output is checked before the work starts and written
atomically.
"""

from __future__ import annotations

import argparse
import io as _io
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from probmod.cli import (
    add_common,
    add_force,
    add_output,
    add_quiet,
    add_threads,
    int_at_least,
    set_threads,
    subparser,
)
from probmod.errors import (
    FormatError,
    InputError,
    LimitError,
    ModelMismatchError,
    OutputError,
    ProbmodError,
    UsageError,
)
from probmod.io import atomic_path, check_output, check_regular_file, expand_inputs
from probmod.progress import Progress

from .container import MAX_RATIO, MAX_VALUES, MODEL, Entry, escape_name, safe_name

IMAGE_EXTS = {".png", ".pgm", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
ARRAY_EXTS = (".npy", ".gz", ".idx", "-ubyte")


# ------------------------------------------------------------------ reading
def _read_image(path: Path, max_values: int = MAX_VALUES) -> np.ndarray:
    """An 8-bit L or RGB image, after checking its declared size against ``max_values`` (Pillow reads headers first)."""
    from PIL import Image

    check_regular_file(path, "image")
    old = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max(max_values, 1)  # our limit, in values, is the stricter one
            with Image.open(path) as im:
                w, h = im.size
                if w * h * len(im.getbands()) > max_values:
                    raise LimitError(
                        f"{path}: declares {w}x{h} pixels x {len(im.getbands())} channels, over the "
                        f"limit of {max_values} values; raise --max-values if the file is trusted"
                    )
                return _as_l_or_rgb(im, path)
    except ProbmodError:
        raise
    except Image.DecompressionBombError as e:
        raise LimitError(f"{path}: {e}; raise --max-values if the file is trusted") from None
    except MemoryError:
        raise LimitError(f"{path}: out of memory while decoding the image") from None
    except Exception as e:  # noqa: BLE001 - any failure of the image parser means an unreadable input file
        raise InputError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _as_l_or_rgb(im, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "RGB"):
        return np.asarray(im.convert(mode)).copy()
    if mode == "P":
        raise InputError(f"{path}: palette image; convert it to RGB or L first (e.g. PIL: im.convert('RGB'))")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise InputError(
            f"{path}: {mode} ({'16-bit' if '16' in mode else '32-bit'}) images are not supported; only 8-bit L and RGB"
        )
    raise InputError(f"{path}: image mode {mode} is not supported; only 8-bit L (grey) and RGB")


def _read_array(path: Path, max_values: int = MAX_VALUES) -> np.ndarray:
    """Images ``(N, H, W)`` or ``(N, H, W, 3)`` from a .npy or idx(.gz) file, size checked before reading."""
    from ..datasets import read_idx

    check_regular_file(path, "array file")
    try:
        if path.suffix == ".npy":
            a = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only; the bytes must be there
            if a.size > max_values:
                raise LimitError(
                    f"{path}: declares shape {a.shape}, over the limit of {max_values} values; "
                    "raise --max-values if the file is trusted"
                )
            a = np.array(a)
        else:
            a = read_idx(path, max_bytes=max_values)
    except ProbmodError:
        raise
    except MemoryError:
        raise LimitError(f"{path}: out of memory while reading the array") from None
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises tokenize and syntax errors on damaged files
        raise InputError(f"{path}: unreadable array ({type(e).__name__}: {e})") from None
    if a.dtype != np.uint8:
        if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)
        else:
            raise InputError(f"{path}: arrays must hold 8-bit values (uint8), got {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3) or 0 in a.shape:
        raise InputError(f"{path}: arrays must be non-empty (N, H, W) grey or (N, H, W, 3) RGB, got shape {a.shape}")
    return a


def _is_array(path: Path) -> bool:
    return path.suffix == ".npy" or path.name.endswith(ARRAY_EXTS)


def _unique(base: str, ext: str, taken: set[str]) -> str:
    """``base + ext``, or ``base-N + ext`` with the smallest free N;
    case-insensitive, so it is safe on any file system."""
    name, n = base + ext, 0
    while name.casefold() in taken:
        n += 1
        name = f"{base}-{n}{ext}"
    taken.add(name.casefold())
    return name


def _input_files(paths: list[str]) -> list[Path]:
    def accept(f: Path) -> bool:
        return f.suffix.lower() in IMAGE_EXTS or _is_array(f)

    kinds = "images (PNG, PGM, BMP, ...) or arrays (.npy, idx)"
    return expand_inputs(paths, accept, kinds, "image, array or folder")


def collect(paths: list[str], max_values: int = MAX_VALUES) -> tuple[list[np.ndarray], list[str], list[int], list[str]]:
    """Images, their names, sources (0 image file, 1 array element) and renaming notes, from files and folders.

    Array files with the same stem (``a/x.npy``, ``b/x.npy``) get distinct names
    (``x``, ``x-1``), so decompressing restores each as its own file.

    Raises:
        InputError: a missing, unreadable or unsupported input.
        LimitError: the inputs declare more than ``max_values`` values in all.
    """
    images, names, sources, notes = [], [], [], []
    array_stems: set[str] = set()
    total = 0
    for f in _input_files(paths):
        if _is_array(f):
            arr = _read_array(f, max_values - total)
            stem = f.name.removesuffix(".gz").removesuffix(".npy")
            name = _unique(stem, "", array_stems)
            if name != stem:
                notes.append(f"{f}: another array is named {stem!r}; stored as {name!r}")
            images.extend(list(arr))
            names.extend([name] * len(arr))
            sources.extend([1] * len(arr))
            total += arr.size
        else:
            img = _read_image(f, max_values - total)
            images.append(img)
            names.append(f.stem)
            sources.append(0)
            total += img.size
    if not images:
        raise InputError("no images given")
    return images, names, sources, notes


def _png_bytes(img: np.ndarray) -> int:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.tell()


def _parse_patch(text: str) -> tuple[int, int]:
    try:
        h, w = (int(t) for t in text.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"patch must look like 28x28, got {text!r}") from None


def _load_codec(args, file_patch: tuple[int, int] | None = None):
    """The codec of ``args.model``; with ``file_patch`` (decoding), a model of another patch shape is a mismatch."""
    from .. import io
    from ..circuit import TensorCircuit
    from .codec import Codec, CodecModel
    from .program import UnsupportedCircuit

    try:
        model = io.load(args.model)
    except (ProbmodError, FileNotFoundError, MemoryError):
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        # h5py reports damaged attribute tables and chunk indexes with these; probmod.io.load lets some escape
        raise FormatError(f"{args.model}: not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(model, (CodecModel, TensorCircuit)):
        raise ModelMismatchError(f"{args.model}: holds a {type(model).__name__}, not a circuit or codec model")
    patch = getattr(args, "patch", None)
    if file_patch is not None:
        circuit = model.circuit if isinstance(model, CodecModel) else model
        has = model.patch if isinstance(model, CodecModel) else None
        if (has is not None and has != file_patch) or circuit.num_vars != file_patch[0] * file_patch[1]:
            shown = f"{has[0]}x{has[1]} patches" if has else f"{circuit.num_vars} variables"
            raise ModelMismatchError(
                f"{args.input} was made with {file_patch[0]}x{file_patch[1]} patches but "
                f"{args.model} codes {shown}; pass the model it was compressed with (-m)"
            )
        patch = file_patch
    try:
        return Codec(
            model,
            patch=patch,
            batch_size=args.batch_size,
            threads=args.threads,
            max_values=args.max_values,
            max_ratio=getattr(args, "max_ratio", MAX_RATIO),
        )
    except (ValueError, UnsupportedCircuit) as e:
        raise ModelMismatchError(f"{args.model}: cannot code images: {e}") from None


def _num_patches(entries: list[Entry], patch: tuple[int, int]) -> int:
    ph, pw = patch
    return sum((3 if e.mode == 1 else 1) * -(-e.height // ph) * -(-e.width // pw) for e in entries)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _note(args, text: str) -> None:
    print(f"probcirc {args.command}: {text}", file=sys.stderr)


# ------------------------------------------------------------------ commands
def cmd_train(args) -> int:
    from .. import io
    from .codec import file_fingerprint
    from .images import ImageModeError
    from .train import train_codec

    set_threads(args.threads)
    out = check_output(args.output, args.force)
    images, _, _, _ = collect(args.images, args.max_values)
    try:
        model = train_codec(
            images,
            patch=args.patch,
            latents=args.latents,
            epochs=args.epochs,
            full_batch_epochs=args.full_epochs,
            batch_size=args.batch_size,
            max_patches=args.max_patches,
            seed=args.seed,
            progress=not args.quiet,
            predictor=args.predictor,
            augment={"auto": None, "yes": True, "no": False}[args.augment],
            colour=args.colour,
            pseudocount=args.pseudocount,
        )
    except ProbmodError:
        raise
    except (ImageModeError, ValueError) as e:
        raise InputError(str(e)) from None
    io.save(model, out, overwrite=args.force)
    fingerprint = file_fingerprint(model.circuit, model.predictor, model.colour).hex()[:12]
    print(
        f"trained codec model: {len(images)} images, patch {model.patch[0]}x{model.patch[1]}, {args.latents} latents, "
        f"predictor {model.predictor}, "
        f"colour {model.colour}, fingerprint {fingerprint} -> {out}"
    )
    return 0


def cmd_compress(args) -> int:
    from .codec import HeavyFileWarning, PoorFitWarning
    from .images import ImageModeError, check_image

    set_threads(args.threads)
    out = check_output(args.output, args.force)
    model_file = check_regular_file(args.model, "model file")
    if _same_file(out, model_file) or any(_same_file(out, Path(p)) for p in args.images):
        raise UsageError(f"-o {out} names the model or an input; refusing to replace a file needed to decode")
    images, names, sources, notes = collect(args.images, args.max_values)
    codec = _load_codec(args)
    try:
        entries = [Entry(a.shape[0], a.shape[1], int(m == "RGB")) for a, m in map(check_image, images)]
    except ImageModeError as e:
        raise InputError(str(e)) from None
    with (
        Progress(_num_patches(entries, codec.patch), "compress", "patch", enabled=not args.quiet) as bar,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", PoorFitWarning)
        warnings.simplefilter("always", HeavyFileWarning)
        blob = codec.encode(images, names, sources, progress=bar.update)
    with atomic_path(out, overwrite=args.force) as tmp:
        Path(tmp).write_bytes(blob)
    for text in notes + [str(w.message) for w in caught if issubclass(w.category, (PoorFitWarning, HeavyFileWarning))]:
        _note(args, f"warning: {text}")
    dims = sum(a.size for a in images)
    png = sum(_png_bytes(a) for a in images)
    print(
        f"{len(images)} images, {dims} values: {len(blob)} bytes, {8 * len(blob) / dims:.4f} bits/dim "
        f"(PNG {8 * png / dims:.4f} bits/dim, {png / len(blob):.2f}x smaller than PNG) -> {out}"
    )
    return 0


def _read_pcz(path: str) -> bytes:
    return check_regular_file(path, ".pcz file").read_bytes()


def plan_outputs(entries: list[Entry]) -> tuple[list[tuple[str, list[int]]], list[str]]:
    """File names for decoded entries and notes on every renaming; deterministic, never two alike.

    Images become ``NAME.png``; consecutive elements of one array (same name,
    same shape) become ``NAME.npy``. Stored names are reduced by
    :func:`~probcirc.compress.container.safe_name`; a taken name gets ``-1``, ``-2``, ...

    Example:
        >>> plan, notes = plan_outputs([Entry(2, 2, 0, 0, "a"), Entry(2, 2, 0, 0, "a"), Entry(2, 2, 0, 0, "../x")])
        >>> [name for name, _ in plan]
        ['a.png', 'a-1.png', 'x.png']
    """
    plan: list[tuple[str, list[int]]] = []
    notes: list[str] = []
    taken: set[str] = set()
    i = 0
    while i < len(entries):
        e, run = entries[i], [i]
        if e.source == 1:
            while run[-1] + 1 < len(entries) and _same_array(entries[run[-1] + 1], e):
                run.append(run[-1] + 1)
        base = safe_name(e.name) or f"image{i:05d}"
        fname = _unique(base, ".npy" if e.source == 1 else ".png", taken)
        if base != e.name and e.name:
            notes.append(f"stored name '{escape_name(e.name)}' is not a plain file name; written as {fname}")
        elif fname.rsplit(".", 1)[0] != base:
            notes.append(f"{base}{fname[-4:]} is taken by an earlier image; written as {fname}")
        plan.append((fname, run))
        i = run[-1] + 1
    return plan, notes


def _same_array(e: Entry, first: Entry) -> bool:
    return (
        e.source == 1
        and e.name == first.name
        and (e.height, e.width, e.mode) == (first.height, first.width, first.mode)
    )


def cmd_decompress(args) -> int:
    from PIL import Image

    from .container import unpack

    set_threads(args.threads)
    data = _read_pcz(args.input)
    first, _ = unpack(data, verify_payload=False, max_values=args.max_values)
    codec = _load_codec(args, (first.patch_h, first.patch_w))
    header, payload = codec.read_header(data)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir} is not a folder; -o names the folder to write the images into")
    plan, notes = plan_outputs(header.entries)
    for fname, _ in plan:  # refuse before decoding anything
        check_output(outdir / fname, args.force)
    coded = [e for e in header.entries if e.coding == MODEL]
    with Progress(_num_patches(coded, codec.patch), "decompress", "patch", enabled=not args.quiet) as bar:
        try:
            images = codec.decode_entries(header, payload, range(len(header.entries)), progress=bar.update)
        except (RuntimeError, ValueError) as e:
            if isinstance(e, ProbmodError):
                raise
            raise FormatError(f"{args.input}: corrupt stream ({e})") from None
    for fname, idx in plan:
        with atomic_path(outdir / fname, overwrite=args.force) as tmp:
            if fname.endswith(".npy"):
                with open(tmp, "wb") as f:
                    np.save(f, np.stack([images[i] for i in idx]))
            else:
                Image.fromarray(images[idx[0]]).save(tmp, format="PNG")
    for text in notes:
        _note(args, f"renamed: {text}")
    dims = sum(a.size for a in images)
    print(
        f"{len(images)} images, {dims} values, {8 * len(data) / max(dims, 1):.4f} bits/dim "
        f"-> {outdir}/ ({len(plan)} files)"
    )
    return 0


def cmd_info(args) -> int:
    from .container import RAW, unpack
    from .images import MODE_NAMES

    data = _read_pcz(args.input)
    header, _ = unpack(data, max_values=None)  # describing allocates nothing, so no size limit
    print(f"{args.input}: .pcz version {header.version}, {len(data)} bytes, {len(header.entries)} images")
    print(
        f"model fingerprint {header.fingerprint.hex()}, patch {header.patch_h}x{header.patch_w}, "
        f"{header.num_values} values, {header.precision}-bit PMFs, {header.block} patches per block"
    )
    show = header.entries if args.all else header.entries[:20]
    for i, e in enumerate(show):
        coding = "raw" if e.coding == RAW else "model"
        if e.pack == 0:
            size = f"in the stream of image {header.lead(i)}"
        else:  # a stream of several images: its bits spread over all of them
            size = f"{e.stream_len} bytes, {8 * e.stream_len / (e.pack * e.values):.4f} bits/dim"
            size += f" (the stream of images {i}-{i + e.pack - 1})" if e.pack > 1 else ""
        print(f"  [{i}] {escape_name(e.name) or '-'} {e.width}x{e.height} {MODE_NAMES[e.mode]} {coding}: {size}")
    if len(show) < len(header.entries):
        print(f"  ... {len(header.entries) - len(show)} more (--all)")
    dims = sum(e.values for e in header.entries)
    print(
        f"total: {dims} values, streams {8 * header.payload_len / max(dims, 1):.4f} bits/dim, "
        f"file {8 * len(data) / max(dims, 1):.4f} bits/dim"
    )
    return 0


def _add_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-values",
        type=int_at_least(1),
        default=MAX_VALUES,
        help="refuse inputs that declare more values (pixels x channels) in all; raise it for trusted files",
    )


def _add_codec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, help="codec model file (.h5, from train-codec)")
    p.add_argument(
        "--batch-size", type=int_at_least(1), default=64, help="patches evaluated together (bytes never depend on it)"
    )
    add_threads(p)
    add_quiet(p)
    _add_limits(p)


def register(sub) -> None:
    """Add ``train-codec``, ``compress``, ``decompress`` and ``info`` to the ``probcirc`` subparsers."""
    p = subparser(sub, "train-codec", "train a lossless image codec (HCLT on patches)")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="PNG/PGM/BMP files, folders, .npy or idx(.gz) arrays")
    p.add_argument(
        "--patch",
        type=_parse_patch,
        default=None,
        help="patch shape HxW (default: the images' size when all share one up to 32x32, else 8x8)",
    )
    p.add_argument("--latents", type=int_at_least(1), default=16, help="HCLT latent states per pixel")
    p.add_argument("--epochs", type=int_at_least(0), default=3, help="mini-batch EM epochs")
    p.add_argument("--full-epochs", type=int_at_least(0), default=1, help="full-batch EM epochs")
    p.add_argument("--batch-size", type=int_at_least(1), default=512, help="patches per mini-batch")
    p.add_argument(
        "--pseudocount",
        type=float,
        default=None,
        help="EM pseudocount (default: 0.03 for residuals, i.e. photographs, 0.1 for pixels)",
    )
    p.add_argument(
        "--max-patches", type=int_at_least(2), default=None, help="train on at most this many patches (default: all)"
    )
    p.add_argument(
        "--predictor",
        choices=("auto", "none", "med", "blend", "guided"),
        default="auto",
        help="model pixels (none), JPEG-LS prediction residuals (med) or adaptive blended-prediction "
        "residuals (blend; guided: blend whose chroma planes also follow the first plane's errors, best on "
        "photographs); auto picks by the training images' entropy (guided where blend wins)",
    )
    p.add_argument(
        "--augment",
        choices=("auto", "yes", "no"),
        default="auto",
        help="also train on each image's 8 rotations and mirror images; auto: yes with a spatial "
        "predictor (photographs), no when modelling pixels (digits)",
    )
    p.add_argument(
        "--colour",
        choices=("green", "ycocg"),
        default="green",
        help="RGB as G, R-G, B-(R+G)/2 (green) or as modular YCoCg-R (ycocg, what models had before)",
    )
    add_common(p, "model file (.h5)")
    _add_limits(p)
    p.set_defaults(func=cmd_train)

    p = subparser(sub, "compress", "compress images into a .pcz file")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="PNG/PGM/BMP files, folders, .npy or idx(.gz) arrays")
    add_output(p, help=".pcz file to write")
    p.add_argument(
        "--patch", type=_parse_patch, default=None, help="only for a bare circuit file without a patch shape"
    )
    _add_codec_options(p)
    add_force(p)
    p.set_defaults(func=cmd_compress)

    p = subparser(sub, "decompress", "restore the images of a .pcz file (PNG, or .npy for arrays)")
    p.add_argument("input", help=".pcz file")
    add_output(p, help="output folder")
    _add_codec_options(p)
    p.add_argument(
        "--max-work",
        "--max-ratio",
        dest="max_ratio",
        type=int_at_least(1),
        default=MAX_RATIO,
        help="refuse files whose model-coded streams ask for more decoding work per byte, in values of a "
        "model costing 1,024 units per value (the model's cost: edges plus leaf-table entries per value; "
        "any file may ask for 2^28 units): decoding time grows with the values and the model; "
        "raise it for trusted files (--max-ratio: the old name)",
    )
    add_force(p, help="replace existing files in the output folder")
    p.set_defaults(func=cmd_decompress)

    p = subparser(sub, "info", "describe a .pcz file")
    p.add_argument("input", help=".pcz file")
    p.add_argument("--all", action="store_true", help="list every image")
    p.set_defaults(func=cmd_info)
