"""``Codec``: lossless image coding with a probabilistic circuit and a range coder."""

from __future__ import annotations

import copy
import hashlib
import math
import struct
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from probmod import errors

from .. import io
from . import container, fastpath, kernels, rangecoder
from .container import (
    MAX_RATIO,
    MAX_VALUES,
    MODEL,
    RAW,
    Entry,
    Header,
    PczFormatError,
    _read_varint,
    _varint,
)
from .engine import PRECISION, PmfEngine
from .images import (
    COLOURS,
    MODE_NAMES,
    MODES,
    ImageModeError,
    check_image,
    from_planes,
    pack_raw,
    tile,
    to_planes,
    unpack_raw,
    untile,
)
from .predict import PREDICTORS, check_predictor, image_residuals, image_restore
from .program import build_program

#: patches per range-coded block; fixed by the format so that batching never changes a stream
BLOCK = 64
#: patches that :meth:`Codec.encode` codes in one stream by packing small images of one size together: a
#: worker's lanes (``fastpath.LANES``), so a pack is coded in lockstep as one image's patches were
PACK_ROWS = fastpath.LANES


class CodecError(ValueError):
    """Base class of the codec's errors (all have one-line messages)."""


class ModelMismatchError(CodecError, errors.ModelMismatchError):
    """The file was made with another model (the fingerprints or patch shapes differ); exit status 5."""


class PoorFitWarning(UserWarning):
    """Some images cost fewer bytes stored raw than coded with the model: it fits them poorly."""


class HeavyFileWarning(UserWarning):
    """The file asks for more decoding work per byte than a decoder allows by default (``--max-work``)."""


def file_fingerprint(circuit, predictor: str = "none", colour: str = "ycocg") -> bytes:
    """The model fingerprint written in every ``.pcz`` file: the circuit's, mixed with the predictor's name
    when there is one and the colour transform's when it is not YCoCg-R (the one models had before it was a
    choice), so a file decodes only with the transforms it was coded with."""
    fp = bytes.fromhex(circuit.fingerprint())
    if predictor != "none":
        fp = hashlib.sha256(fp + f"predictor={predictor}".encode()).digest()
    return fp if colour == "ycocg" else hashlib.sha256(fp + f"colour={colour}".encode()).digest()


@io.register
class CodecModel:
    """A circuit with the patch shape and the spatial predictor it was trained on; saved with :func:`probcirc.io.save`.

    ``predictor`` (:mod:`probcirc.compress.predict`): ``"none"`` (the circuit
    models pixels), ``"med"`` or ``"blend"`` (it models prediction residuals).
    ``colour``: how RGB becomes three planes (:data:`~probcirc.compress.images.COLOURS`): ``"green"``
    (what :func:`~probcirc.compress.train.train_codec` picks) or ``"ycocg"`` (models saved before the choice).
    """

    def __init__(self, circuit, patch: tuple[int, int], predictor: str = "none", colour: str = "ycocg"):
        ph, pw = int(patch[0]), int(patch[1])
        if ph * pw != circuit.num_vars:
            raise ValueError(f"patch {ph}x{pw} has {ph * pw} pixels but the circuit has {circuit.num_vars} variables")
        self.circuit = circuit
        self.patch = (ph, pw)
        self.predictor = check_predictor(predictor)
        self.colour = check_colour(colour)

    def _state(self):
        attrs, arrays = self.circuit._state()
        attrs = dict(attrs, patch_h=self.patch[0], patch_w=self.patch[1], predictor=self.predictor, colour=self.colour)
        return attrs, arrays

    @classmethod
    def _from_state(cls, attrs, arrays):
        from ..circuit import TensorCircuit

        predictor = str(attrs.get("predictor", "none"))  # models saved before predictors existed model pixels
        if predictor not in PREDICTORS:
            raise io.FormatError(f"unknown predictor {predictor!r} in the codec model (known: {', '.join(PREDICTORS)})")
        colour = str(attrs.get("colour", "ycocg"))  # models saved before the choice used YCoCg-R
        if colour not in COLOURS:
            raise io.FormatError(
                f"unknown colour transform {colour!r} in the codec model (known: {', '.join(COLOURS)})"
            )
        circuit = TensorCircuit._from_state(
            {k: v for k, v in attrs.items() if k not in ("predictor", "colour")}, arrays
        )
        return cls(circuit, (int(attrs["patch_h"]), int(attrs["patch_w"])), predictor, colour)


def check_colour(name: str) -> str:
    if name not in COLOURS:
        raise ValueError(f"colour must be one of {tuple(COLOURS)}, got {name!r}")
    return name


def _bytes_to_words(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<u4").astype(np.uint32)


def _trim(b: bytes) -> bytes:
    """Drop up to 3 trailing zero bytes (inside the last 32-bit word); :func:`_untrim` restores them."""
    n = len(b)
    while n > len(b) - 3 and n > 0 and b[n - 1] == 0:
        n -= 1
    return b[:n]


def _untrim(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class Codec:
    """Lossless coder for 8-bit grey and RGB images of any size.

    RGB goes through modular YCoCg-R and each plane is coded like a grey
    image; with a spatial predictor (``predictor="med"``) the plane is first
    replaced by its prediction residuals, a bijection undone after decoding.
    Planes are cut into the model's patch shape (edge patches padded; padded
    pixels are treated as missing and never coded). Each patch's pixels are
    coded in the model's order (depth-first from the circuit's root); pixel i uses the circuit's exact conditional
    ``P(X_i | x_<i)``, computed by :class:`~probcirc.compress.engine.PmfEngine`
    in a fixed order of IEEE operations, quantised to integers that sum to
    2**24, and range-coded with ``constriction``. The encoder and the decoder
    call the same function, so the decoder rebuilds the same integers whatever
    the batch size or thread count.

    Args:
        circuit: a compiled :class:`~probcirc.TensorCircuit` with Categorical leaves, or a
            :class:`CodecModel` (which carries its patch shape).
        patch: ``(height, width)`` with ``height * width == num_vars``; default square.
        mode: ``"incremental"`` (lazy caching, default), ``"ancestors"`` or ``"naive"``
            (whole circuit per pixel); see :class:`PmfEngine`. The bytes do not depend on it.
        batch_size: patches evaluated together (memory grows with it; results do not change).
        threads: numba threads to use (results do not change).
        predictor: ``"none"``, ``"med"`` or ``"blend"``; taken from a :class:`CodecModel`, else ``"none"``.
            It is part of the fingerprint written in each file.
        colour: ``"ycocg"`` or ``"green"`` (:data:`~probcirc.compress.images.COLOURS`); taken from a
            :class:`CodecModel`, else ``"ycocg"``. Part of the fingerprint unless ``"ycocg"``.
        max_values: the most values (pixels x channels) a file to decode may declare in all
            (:data:`~probcirc.compress.container.MAX_VALUES`; None: no limit). Raise it for trusted files only.
        max_ratio: the decoding work a file's model-coded streams may ask for per byte, in values of
            :data:`~probcirc.compress.container.WORK_UNIT` units (32; None: no limit; the work of a value
            is ``program.work_per_value``, :func:`~probcirc.compress.container.check_work`): decoding
            time grows with the values and the model, so a small crafted file cannot ask for minutes.

    Each image is stored with the cheaper of the model's stream and a raw one
    (at most 8 bits per value plus 2 bytes, :func:`~probcirc.compress.images.pack_raw`),
    so coding never expands an image; :class:`PoorFitWarning` says when the raw one won.

    Example:
        >>> import numpy as np, torch, probcirc
        >>> from probcirc.structures import HCLT
        >>> from probcirc.inputs import Categorical
        >>> data = np.random.default_rng(0).integers(0, 256, (50, 16))
        >>> pc = probcirc.compile(HCLT(data, 4, Categorical(256), num_bins=4))
        >>> codec = Codec(pc)
        >>> img = np.arange(30, dtype=np.uint8).reshape(5, 6)
        >>> blob = codec.encode([img])
        >>> bool((codec.decode(blob)[0] == img).all())
        True
    """

    def __init__(
        self,
        circuit,
        patch: tuple[int, int] | None = None,
        mode: str = "incremental",
        batch_size: int = 64,
        threads: int | None = None,
        predictor: str | None = None,
        max_values: int | None = MAX_VALUES,
        max_ratio: float | None = MAX_RATIO,
        colour: str | None = None,
    ):
        if isinstance(circuit, CodecModel):
            for name, given, own in (("predictor", predictor, circuit.predictor), ("colour", colour, circuit.colour)):
                if given is not None and given != own:
                    raise ValueError(f"the model was trained with {name} {own!r}, not {given!r}")
            patch = patch or circuit.patch
            predictor, colour = circuit.predictor, circuit.colour
            circuit = circuit.circuit
        self.predictor = check_predictor(predictor or "none")
        self.colour = check_colour(colour or "ycocg")
        d = int(circuit.num_vars)
        if patch is None:
            s = math.isqrt(d)
            if s * s != d:
                raise ValueError(f"the circuit has {d} variables, not a square; pass patch=(h, w)")
            patch = (s, s)
        if int(patch[0]) * int(patch[1]) != d:
            raise ValueError(f"patch {patch[0]}x{patch[1]} does not match the circuit's {d} variables")
        if mode not in PmfEngine.MODES:
            raise ValueError(f"mode must be one of {sorted(PmfEngine.MODES)}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.circuit = circuit
        self.patch = (int(patch[0]), int(patch[1]))
        self.mode = mode
        self.batch_size = int(batch_size)
        self.threads = threads
        self.max_values = max_values
        self.max_ratio = max_ratio
        self.program = build_program(circuit)
        if self.program.num_values < 256:
            raise ValueError(
                f"the circuit's leaves have {self.program.num_values} values; 8-bit images need 256 "
                "(train with input_dist=Categorical(256))"
            )
        self.fingerprint = file_fingerprint(circuit, self.predictor, self.colour)
        self._arrays = kernels.arrays(self.program)
        self._nc = fastpath.nc_ancestors(self.program)
        self._init = None  # inside values with nothing observed (_initial_inside)

    # ------------------------------------------------------------------ units
    def _planes(self, img: np.ndarray, mode: str) -> list[np.ndarray]:
        """The planes the circuit codes: grey, or the colour transform's three, each through the predictor."""
        return image_residuals(to_planes(img, mode, self.colour), self.predictor)

    def _rows(self, planes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """An image's patches, plane after plane: (values, valid mask), one row per patch."""
        ph, pw = self.patch
        if len(planes) == 1 and planes[0].shape == (ph, pw):  # one whole-image patch (an MNIST digit): no padding
            return planes[0].reshape(1, ph * pw).astype(np.int64), np.ones((1, ph * pw), dtype=bool)
        tiles = [tile(plane, ph, pw) for plane in planes]
        return np.concatenate([v for v, _ in tiles]), np.concatenate([m for _, m in tiles])

    @staticmethod
    def _stream_blocks(rows: list[tuple[np.ndarray, np.ndarray]]):
        """The blocks of one stream holding the images of ``rows`` in turn: (patch values, valid mask) of at
        most BLOCK patches each."""
        vals, valid = np.concatenate([v for v, _ in rows]), np.concatenate([m for _, m in rows])
        return [(vals[s : s + BLOCK], valid[s : s + BLOCK]) for s in range(0, len(vals), BLOCK)]

    @staticmethod
    def _packs(entries: list[Entry], rows) -> list[list[int]]:
        """The model-coded images grouped into streams: consecutive images of one run (container's), as many
        as fill PACK_ROWS patches (at least one)."""
        out = []
        for run in container.runs(entries):
            if entries[run.start].coding == MODEL:
                size = max(1, min(container.MAX_PACK, PACK_ROWS // len(rows[run.start][0])))
                out += [list(run[j : j + size]) for j in range(0, len(run), size)]
        return out

    def _initial_inside(self):
        """Inside values with nothing observed: the same for every patch, so computed once and copied per block."""
        if self._init is None:
            S, D = self.program.num_slots, self.program.num_vars
            M, E = np.zeros((1, S)), np.zeros((1, S), dtype=np.int64)
            kernels.init_state(self._arrays, M, E, np.zeros((1, D), np.int64), np.zeros((1, D), np.bool_))
            self._init = (M[0], E[0])
        return self._init

    def _slices(self, flat, blocks, threads):
        """Consecutive runs of (image, block) pairs, at least 4,096 patches each unless the last: one compiled
        call each (progress and interrupts are seen between calls; the bytes never depend on the slicing)."""
        limit = max(4096, 4 * self.batch_size * max(1, threads))
        start, rows = 0, 0
        for end, (img, k) in enumerate(flat):
            rows += len(blocks[img][k][0])
            if rows >= limit:
                yield flat[start : end + 1]
                start, rows = end + 1, 0
        if start < len(flat):
            yield flat[start:]

    def _code(self, blocks, encode: bool, words=None, progress=None, labels=None):
        """Range-code every block (:func:`fastpath.code_blocks`, the engine's code path and constriction's coder).

        Encoding returns ``{(stream, block): uint32 words}`` and ``{(stream, block): ideal bits per patch}``;
        decoding reads ``words`` (the same keys) and fills the blocks' patch values (a damaged stream is named
        by ``labels[stream]``).
        """
        import numba

        M0, E0 = self._initial_inside()
        flat = [(i, k) for i, bl in enumerate(blocks) for k in range(len(bl))]
        out, costs = {}, {}
        with self._with_threads():
            threads = numba.get_num_threads()
            for part in self._slices(flat, blocks, threads):
                X = np.concatenate([blocks[i][k][0] for i, k in part]).astype(np.int64)
                VALID = np.ascontiguousarray(np.concatenate([blocks[i][k][1] for i, k in part]))
                blk_ptr = np.zeros(len(part) + 1, dtype=np.int64)
                blk_ptr[1:] = np.cumsum([len(blocks[i][k][0]) for i, k in part])
                if encode:  # room for one word per symbol, held-back words and the seal
                    sizes = [int(blocks[i][k][1].sum()) + 4 for i, k in part]
                    buf = np.zeros(sum(sizes), dtype=np.uint32)
                else:
                    sizes = [len(words[key]) for key in part]
                    buf = np.concatenate([words[key] for key in part] + [np.zeros(0, np.uint32)])
                word_ptr = np.zeros(len(part) + 1, dtype=np.int64)
                word_ptr[1:] = np.cumsum(sizes)
                nwords = np.zeros(len(part), dtype=np.int64)
                cost = np.zeros(len(X))
                fastpath.code_blocks(
                    encode,
                    self._arrays,
                    *self._nc,
                    self.program.order,
                    kernels.LAZY if self.mode == "incremental" else PmfEngine.MODES[self.mode],
                    PRECISION,
                    M0,
                    E0,
                    X,
                    VALID,
                    blk_ptr,
                    buf,
                    word_ptr,
                    nwords,
                    max(1, min(threads, len(part))),
                    fastpath.LANES,
                    cost,
                )
                for j, (img, k) in enumerate(part):
                    if encode:
                        out[(img, k)] = buf[word_ptr[j] : word_ptr[j] + nwords[j]]
                        costs[(img, k)] = cost[blk_ptr[j] : blk_ptr[j + 1]]
                    elif nwords[j]:
                        name = labels[img] if labels is not None else f"image {img}'s stream"
                        raise PczFormatError(f"corrupt .pcz file ({name} cannot be decoded)")
                    else:
                        blocks[img][k] = (X[blk_ptr[j] : blk_ptr[j + 1]], blocks[img][k][1])
                if progress is not None:
                    progress(len(X))
        return out, costs

    def _with_threads(self):
        import numba

        class _Ctx:
            def __enter__(ctx):
                ctx.old = numba.get_num_threads()
                if self.threads:
                    numba.set_num_threads(max(1, min(int(self.threads), numba.config.NUMBA_NUM_THREADS)))

            def __exit__(ctx, *exc):
                numba.set_num_threads(ctx.old)

        return _Ctx()

    # ----------------------------------------------------------------- public
    def encode_streams(
        self, images: Sequence[np.ndarray], progress=None
    ) -> tuple[list[tuple[int, int, int]], list[bytes]]:
        """Per image ``(height, width, mode code)`` and its independent stream,
        as the model codes it (no raw fallback)."""
        checked = [check_image(img) for img in images]
        rows = [self._rows(self._planes(a, m)) for a, m in checked]
        streams, _ = self._encode_packs(rows, [[i] for i in range(len(rows))], progress)
        return [(a.shape[0], a.shape[1], MODES[m]) for a, m in checked], streams

    def _encode_packs(self, rows, packs: list[list[int]], progress=None) -> tuple[list[bytes], dict[int, float]]:
        """One stream per pack of images (``rows``: :meth:`_rows` per image), and each image's ideal bits."""
        blocks = [self._stream_blocks([rows[i] for i in pack]) for pack in packs]
        words, costs = self._code(blocks, True, progress=progress)
        streams, bits = [], {}
        for j, (pack, bl) in enumerate(zip(packs, blocks)):
            parts = [_trim(words[(j, k)].astype("<u4").tobytes()) for k in range(len(bl))]
            streams.append(b"".join(_varint(len(p)) for p in parts[:-1]) + b"".join(parts))
            cost = np.concatenate([costs[(j, k)] for k in range(len(bl))])
            start = 0
            for i in pack:
                bits[i] = float(cost[start : start + len(rows[i][0])].sum())
                start += len(rows[i][0])
        return streams, bits

    def encode(
        self,
        images: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        sources: Sequence[int] | None = None,
        progress=None,
        raw_fallback: bool = True,
    ) -> bytes:
        """Compress a sequence of 8-bit grey ``(H, W)`` or RGB ``(H, W, 3)`` uint8 arrays into ``.pcz`` bytes.

        Consecutive small images of one size share a stream (up to :data:`PACK_ROWS` patches: 16
        MNIST digits), so the range coder is terminated once per pack, not once per image.
        Each image is stored raw instead when that is shorter (``raw_fallback``, with a
        :class:`PoorFitWarning`; in a pack, shorter than its ideal code length); ``raw_fallback=False``
        always uses the model.

        Raises:
            ImageModeError: for other dtypes or shapes (16-bit, palette, alpha: convert first).
        """
        checked = [check_image(img) for img in images]
        names = list(names) if names is not None else [""] * len(checked)
        sources = list(sources) if sources is not None else [0] * len(checked)
        entries = [Entry(a.shape[0], a.shape[1], MODES[m], s, n) for (a, m), s, n in zip(checked, sources, names)]
        rows = [self._rows(self._planes(a, m)) for a, m in checked]
        packs = self._packs(entries, rows)
        streams, bits = self._encode_packs(rows, packs, progress)
        coded = {tuple(p): s for p, s in zip(packs, streams)}
        raws = {}
        if raw_fallback:
            for pack, st in zip(packs, streams):
                for i in pack:
                    raws[i] = pack_raw(checked[i][0])
                    entries[i].coding = RAW if len(raws[i]) < (len(st) if len(pack) == 1 else bits[i] / 8) else MODEL
            packs = self._packs(entries, rows)  # the images left to the model, packed again
            todo = [p for p in packs if tuple(p) not in coded]
            if todo:
                coded.update(zip(map(tuple, todo), self._encode_packs(rows, todo)[0]))
        out = [b""] * len(checked)
        for pack in packs:
            out[pack[0]] = coded[tuple(pack)]
            for i in pack:
                entries[i].pack = 0 if i != pack[0] else len(pack)
        codings = [e.coding for e in entries]
        for i, e in enumerate(entries):
            if e.coding == RAW:
                out[i] = raws[i]
        streams = out
        if RAW in codings:
            bpd = (
                8
                * sum(len(s) for s, c in zip(streams, codings) if c == RAW)
                / sum(a.size for (a, _), c in zip(checked, codings) if c == RAW)
            )
            warnings.warn(
                f"{codings.count(RAW)} of {len(codings)} images are stored raw ({bpd:.2f} bits/dim): "
                "the model codes them in more bits; it fits them poorly (train it on similar images)",
                PoorFitWarning,
                stacklevel=2,
            )
        header = Header(
            self.fingerprint, self.patch[0], self.patch[1], self.program.num_values, PRECISION, BLOCK, entries
        )
        blob = container.pack(header, streams)  # fills in the entries' stream lengths
        # Said now, while the writer can still act, not first by the reader (blank pages code to a few bytes).
        try:
            container.check_work(header, self.program.work_per_value, self.max_ratio)
        except errors.LimitError as err:
            warnings.warn(f"decoders refuse this file unless their limit is raised: {err}", HeavyFileWarning, 2)
        return blob

    def read_header(self, data: bytes, verify_payload: bool = True) -> tuple[Header, memoryview]:
        """Parse ``data`` and check it was made with this codec's model.

        Raises:
            PczFormatError: foreign, truncated or corrupt file.
            ModelMismatchError: another model made the file.
            LimitError: the file declares more values than ``max_values``, or asks for more
                decoding work than ``max_ratio`` allows (:func:`container.check_work`).
        """
        header, payload = container.unpack(data, verify_payload, self.max_values)
        container.check_work(header, self.program.work_per_value, self.max_ratio)
        self.check_header(header)
        return header, payload

    def check_header(self, header: Header) -> None:
        """Refuse a file made with another model, patch shape, alphabet, precision or block size.

        Raises:
            ModelMismatchError: another model or patch shape made the file.
            PczFormatError: the alphabet, precision or block size differs.
        """
        if (header.patch_h, header.patch_w) != self.patch:
            raise ModelMismatchError(
                f"the file was made with {header.patch_h}x{header.patch_w} patches, this model "
                f"codes {self.patch[0]}x{self.patch[1]} patches"
            )
        if header.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"the file was made with another model (fingerprint {header.fingerprint.hex()[:12]}..., "
                f"this model is {self.fingerprint.hex()[:12]}... with predictor {self.predictor!r} and colour "
                f"{self.colour!r}; both are part of the fingerprint)"
            )
        if header.num_values != self.program.num_values or header.precision != PRECISION or header.block != BLOCK:
            raise PczFormatError("the file's alphabet, precision or block size does not match this codec")

    def decode(self, data: bytes, index: int | Sequence[int] | None = None, progress=None) -> list[np.ndarray]:
        """Decompress ``.pcz`` bytes: every image, or only those at ``index`` (decoded alone)."""
        header, payload = self.read_header(data, verify_payload=index is None)
        indices = range(len(header.entries)) if index is None else ([index] if isinstance(index, int) else list(index))
        return self.decode_entries(header, payload, indices, progress)

    def decode_entries(self, header: Header, payload, indices, progress=None) -> list[np.ndarray]:
        """Decode the images at ``indices`` of a checked header (:meth:`read_header`) and its payload."""
        indices = list(indices)
        out: list = [None] * len(indices)
        coded = []
        for j, idx in enumerate(indices):
            e = header.entries[idx]
            if e.coding == RAW:
                shape = (e.height, e.width) if MODE_NAMES[e.mode] == "L" else (e.height, e.width, 3)
                try:
                    out[j] = unpack_raw(container.stream(header, payload, idx), shape)
                except ValueError as err:
                    raise PczFormatError(f"corrupt .pcz file (image {idx}: {err})") from None
            else:
                coded.append(j)
        for j, img in zip(coded, self._decode_model(header, payload, [indices[j] for j in coded], progress)):
            out[j] = img
        return out

    def _decode_model(self, header: Header, payload, indices, progress=None) -> list[np.ndarray]:
        """Decode the streams holding ``indices`` (each whole: a pack's images come out together)."""
        ph, pw = self.patch
        entries = header.entries
        leads = list(dict.fromkeys(header.lead(i) for i in indices))
        packs = [range(lead, lead + entries[lead].pack) for lead in leads]
        shapes = {}
        for pack in packs:
            for i in pack:
                e = entries[i]
                shapes[i] = [np.zeros((e.height, e.width), np.uint8)] * (1 if MODE_NAMES[e.mode] == "L" else 3)
        rows = {i: self._rows(planes) for i, planes in shapes.items()}
        blocks = [self._stream_blocks([rows[i] for i in pack]) for pack in packs]
        labels = [f"image {p[0]}'s stream" if len(p) == 1 else f"the stream of images {p[0]}-{p[-1]}" for p in packs]
        words = {}
        for j, pack in enumerate(packs):
            s = container.stream(header, payload, pack[0])
            n_blocks = len(blocks[j])
            pos, lengths = 0, []
            try:
                for _ in range(n_blocks - 1):
                    ln, pos = _read_varint(s, pos)
                    lengths.append(ln)
            except struct.error:
                raise PczFormatError(f"corrupt .pcz file ({labels[j]}: its block table is cut off)") from None
            lengths.append(len(s) - pos - sum(lengths))
            if lengths[-1] < 0:
                raise PczFormatError(f"corrupt .pcz file ({labels[j]}: its block table is inconsistent)")
            for k in range(n_blocks):
                words[(j, k)] = _bytes_to_words(_untrim(s[pos : pos + lengths[k]]))
                if header.version >= 4:  # its last word was written byte-swapped (rangecoder.seal_short)
                    rangecoder.unswap(words[(j, k)])
                pos += lengths[k]
        self._code(blocks, False, words, progress, labels=labels)
        images = {}
        for j, pack in enumerate(packs):
            vals = np.concatenate([v for v, _ in blocks[j]])
            start = 0
            for i in pack:
                e, nplanes, n = entries[i], len(shapes[i]), len(rows[i][0])
                mine, start = vals[start : start + n], start + n
                per = n // nplanes
                planes = [untile(mine[p * per : (p + 1) * per], e.height, e.width, ph, pw) for p in range(nplanes)]
                images[i] = from_planes(image_restore(planes, self.predictor), MODE_NAMES[e.mode], self.colour)
        return [images[i] for i in indices]

    # ------------------------------------------------------------- analysis
    def model_bits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The model's ideal code length ``-log2 p`` per image (float64 engine query), in bits."""
        planes = [self._planes(*check_image(img)) for img in images]
        bits = np.zeros(len(planes))
        ph, pw = self.patch
        c64 = copy.deepcopy(self.circuit).to(torch.float64)
        for j, pl in enumerate(planes):
            for plane in pl:
                v, m = tile(plane, ph, pw)
                lp = c64.log_prob(torch.from_numpy(v), torch.from_numpy(~m))
                bits[j] += float(-lp.sum()) / math.log(2)
        return bits


__all__ = [
    "BLOCK",
    "Codec",
    "CodecError",
    "CodecModel",
    "ImageModeError",
    "ModelMismatchError",
    "PczFormatError",
    "PoorFitWarning",
    "HeavyFileWarning",
    "file_fingerprint",
]
