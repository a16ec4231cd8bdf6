"""``sparsecoding`` (also ``python -m sparsecoding``): make data, train, plot, and check bars recovery.

Examples::

    sparsecoding data bars -o bars.h5
    sparsecoding data patches --images my_photos/ --size 8 -o patches.h5
    mpirun -n 4 sparsecoding train --model bsc --data bars.h5 --H 10 \\
        --Hprime 8 --gamma 5 --steps 60 --anneal 2:1@0.6 -o run/
    mpirun -n 4 sparsecoding train -o run/ --resume   # after a crash
    sparsecoding plot run/
    sparsecoding match run/ --truth bars.h5

Every error ends in one line ``sparsecoding CMD: error: ...`` on stderr and
the exit status of its kind (the table at the end of every ``--help``). Under
MPI no rank is left waiting: errors found before training are decided on rank
0 and reported by every rank; a rank that fails during training prints its
line and calls ``MPI_Abort``, which ends all ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probmod.cli import (
    add_force,
    add_output,
    add_quiet,
    add_threads,
    make_parser,
    run,
    set_threads,
    subparser,
)
from probmod.errors import (
    CHECK_FAILED,
    InputError,
    LimitError,
    ModelMismatchError,
    NumericalError,
    OutputError,
    OutputExistsError,
    ProbmodError,
    UsageError,
    exit_code,
)

__all__ = ["MARKER", "main", "make_model"]

PROG = "sparsecoding"
MODEL_NAMES = ("bsc", "tsc", "dsc", "mca", "mmca", "gsc")
DEFAULTS = {
    "Hprime": None,
    "gamma": None,
    "steps": 100,
    "anneal": "2:1@0.6",
    "Ncut_factor": 0.0,
    "W_noise": 0.0,
    "init": "noise",
    "seed": 0,
    "restarts": 1,
    "chunk_size": 256,
    "checkpoint_every": 10,
    "key": "y",
    "values": "0,1",
    "psi_full": False,
}
#: options that define a run; on --resume any that is given must match the checkpoint
RUN_KEYS = (
    "model",
    "data",
    "key",
    "H",
    "Hprime",
    "gamma",
    "steps",
    "anneal",
    "Ncut_factor",
    "W_noise",
    "init",
    "seed",
    "restarts",
    "chunk_size",
    "values",
    "psi_full",
)
#: the marker file that makes a folder a run folder: ``--force`` clears only folders that hold it
MARKER = ".sparsecoding-run"
OUR_FILES = ("results.h5", "checkpoint.h5", "config.json", "dictionary.png", "curves.png")
RESTARTS = "restarts"  # folder of the candidate runs of --restarts
#: bytes that `data bars` and `data patches` may plan to hold unless --max-memory says otherwise
MAX_MEMORY = 8 << 30
#: config.json larger than this is not a run configuration
_MAX_JSON = 1 << 20


class CLIError(UsageError):
    """Bad input: reported as one line, exit status 2 (kept for older callers; new code raises probmod errors)."""


class _Relayed(ProbmodError):
    """An error decided on another rank, re-raised here with that rank's exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code


def _collective(err: ProbmodError) -> ProbmodError:
    """Mark ``err`` as raised on every rank alike: rank 0 reports it, the others just exit with its status."""
    err.collective = True  # type: ignore[attr-defined]
    return err


# -- the parser -------------------------------------------------------------------------
def _size(text: str) -> float:
    from .models.checks import parse_size

    try:
        return parse_size(text, "--max-memory")
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _max_memory(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-memory",
        dest="max_memory",
        type=_size,
        default=None,
        metavar="SIZE",
        help="refuse to start work whose estimated memory per process exceeds SIZE (bytes, or 512M, 8GiB, "
        "...; default: 8GiB)",
    )


def _parser() -> argparse.ArgumentParser:
    p = make_parser(
        PROG,
        "Sparse coding with truncated EM (BSC, TSC, DSC, MCA, MMCA, GSC): make data, train "
        "(under mpirun for MPI), plot, match.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    d = subparser(sub, "data", "write a data set to HDF5")
    dsub = d.add_subparsers(dest="kind", required=True, metavar="KIND")
    _bars_options(subparser(dsub, "bars", "the bars test: data drawn from a model with bars as its dictionary"))
    _bars_options(subparser(sub, "bars", "same as `data bars`"))
    _patches_parser(dsub)

    pl = subparser(sub, "plot", "draw dictionary.png (sorted by usage) and curves.png for a run folder")
    pl.add_argument("run", help="the run folder")
    add_output(pl, help="folder for the PNGs (default: the run folder)", required=False)
    add_force(pl, help="replace PNGs in a folder that is not a run folder")
    pl.add_argument(
        "--max-points",
        dest="max_points",
        type=int,
        default=2000,
        help="data points used to measure each element's usage (mean posterior activation)",
    )

    m = subparser(
        sub,
        "match",
        "compare a run's dictionary with the true bars (greedy matching); "
        f"exit 0 when every bar is recovered, {CHECK_FAILED} when one is not",
    )
    m.add_argument("run", help="the run folder")
    m.add_argument("--truth", required=True, help="the data file written by `data bars`")
    m.add_argument("--tol", type=float, default=0.5, help="mean absolute error below which a bar counts as found")
    return p


def _train_parser(sub) -> None:
    t = subparser(
        sub,
        "train",
        "learn a dictionary with truncated EM (run it under mpirun for MPI)",
        description="Learn a dictionary with truncated EM. Options left out take their default on a new "
        "run and the stored value on --resume.",
    )
    t.add_argument("--model", choices=MODEL_NAMES, default=None, help="generative model (required for a new run)")
    t.add_argument("--data", default=None, help="HDF5 file with a 2-D dataset (N, D) (required for a new run)")
    t.add_argument("--key", default=None, help="dataset name in the file (default: y)")
    t.add_argument("--H", type=int, default=None, help="number of dictionary elements (required for a new run)")
    t.add_argument("--Hprime", type=int, default=None, help="candidates per data point (default: min(H, 8))")
    t.add_argument("--gamma", type=int, default=None, help="max active causes per state (default: min(Hprime, 5))")
    t.add_argument("--steps", type=int, default=None, help="EM steps (default: 100)")
    t.add_argument("--anneal", default=None, help="temperature schedule T0:T1@fraction (default: 2:1@0.6)")
    t.add_argument(
        "--Ncut-factor", dest="Ncut_factor", type=float, default=None, help="data truncation in [0, 1] (default: 0)"
    )
    t.add_argument(
        "--W-noise",
        dest="W_noise",
        type=float,
        default=None,
        help="std of noise added to W while annealing, falling to 0 (default: 0)",
    )
    t.add_argument(
        "--init",
        choices=("noise", "data"),
        default=None,
        help="start W from the data mean plus small noise, or from data points drawn at random (default: noise)",
    )
    t.add_argument("--seed", type=int, default=None, help="seed of the initialisation (default: 0)")
    t.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="run EM from this many initialisations (seeds seed, seed+1, ...) and keep the one with the "
        "highest final log-likelihood; each candidate checkpoints under OUTPUT/restarts/ (default: 1)",
    )
    t.add_argument(
        "--chunk-size", dest="chunk_size", type=int, default=None, help="rows per reduction chunk (default: 256)"
    )
    t.add_argument("--values", default=None, help="DSC state values, comma-separated, starting with 0 (default: 0,1)")
    t.add_argument(
        "--psi-full",
        dest="psi_full",
        action="store_true",
        default=None,
        help="GSC: learn a full Psi (default: diagonal)",
    )
    t.add_argument(
        "--checkpoint-every",
        dest="checkpoint_every",
        type=int,
        default=None,
        help="steps between checkpoints (default: 10)",
    )
    add_output(t, help="run folder")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its last checkpoint")
    add_force(
        t, target=g, help=f"start over in a run folder (one holding {MARKER}): clears only the files this tool wrote"
    )
    t.add_argument(
        "--no-plot",
        dest="plot",
        action="store_false",
        help="do not draw dictionary.png and curves.png at the end (default: draw them)",
    )
    _max_memory(t)
    add_quiet(t)
    add_threads(t)


def _bars_options(p: argparse.ArgumentParser) -> None:
    add_output(p, help="data file to write (HDF5)")
    p.add_argument("--N", type=int, default=1000, help="number of data points")
    p.add_argument("--size", type=int, default=5, help="grid side; H = 2 * size bars")
    p.add_argument("--pi", type=float, default=0.2, help="probability that a bar is active")
    p.add_argument("--sigma", type=float, default=2.0, help="noise standard deviation")
    p.add_argument("--amplitude", type=float, default=10.0, help="value of a bar's pixels")
    p.add_argument("--model", choices=MODEL_NAMES, default="bsc", help="generative model that draws the data")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_force(p)


def _patches_parser(dsub) -> None:
    from .data import MAX_PIXELS

    pp = subparser(
        dsub,
        "patches",
        "grey-scale image patches, each with its mean removed, optionally "
        "whitened (ZCA or DoG): from your own images, or scikit-image's photographs",
    )
    add_output(pp, help="data file to write (HDF5)")
    pp.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="DIR|FILE",
        help="image files, or folders whose image files (png, jpg, tif, bmp, gif, webp, pnm) are all "
        "used; colour is turned to grey-scale (default: scikit-image's bundled photographs, "
        "which need `pip install probmod[bench]`)",
    )
    pp.add_argument("--N", type=int, default=50000, help="number of patches")
    pp.add_argument("--size", type=int, default=12, help="patch side in pixels (D = size^2)")
    pp.add_argument(
        "--whiten",
        nargs="?",
        const="zca",
        default="zca",
        choices=("zca", "dog", "none"),
        help="flatten the spectrum: zca (decorrelates the patches' pixels; --whiten alone means zca), "
        "dog (each image filtered by a difference of Gaussians, sigma 0.5 and 1 pixel, as the retina does) "
        "or none",
    )
    pp.add_argument("--no-whiten", dest="whiten", action="store_const", const="none", help="same as --whiten none")
    pp.add_argument(
        "--eps",
        type=float,
        default=1e-2,
        help="whitening regulariser: eps * largest eigenvalue is added to every eigenvalue",
    )
    pp.add_argument(
        "--keep",
        type=float,
        default=0.5,
        help="draw N/keep patches and keep the N of highest variance (0.5 drops flat sky and walls; 1 keeps all)",
    )
    pp.add_argument(
        "--channels",
        choices=("signed", "onoff"),
        default="signed",
        help="signed patches (BSC, TSC, DSC, MMCA, GSC) or their positive and negative parts side by side, "
        "D = 2 size^2 (ON/OFF cells, for MCA, whose causes are non-negative)",
    )
    pp.add_argument(
        "--max-pixels",
        dest="max_pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse an image declaring more pixels (decompression bombs); raise it for huge photos",
    )
    pp.add_argument("--seed", type=int, default=0, help="random seed of the patch positions")
    _max_memory(pp)
    add_force(pp)
    add_quiet(pp)
    add_threads(pp)


# -- helpers ---------------------------------------------------------------------------
def _bcast_error(err: BaseException | None, comm) -> None:
    """Rank 0's error (or None) on every rank, as a fixed-size byte buffer (no pickle); raises it everywhere."""
    if comm.size > 1:
        buf = np.zeros(4096, dtype=np.uint8)
        if comm.rank == 0 and err is not None:
            raw = str(err).encode()[:4000]
            buf[0] = exit_code(err) or 1
            buf[1 : 1 + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        buf = comm.bcast(buf)
        if comm.rank != 0 and buf[0]:
            text = bytes(buf[1:]).split(b"\0", 1)[0].decode(errors="replace")
            raise _collective(_Relayed(text, int(buf[0])))
    if err is not None:
        err.collective = True  # type: ignore[attr-defined]
        raise err


def _parse_values(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise CLIError(f"--values must be comma-separated numbers like 0,1,2; got {text!r}") from None


def make_model(config: dict[str, Any]):
    """The model object a run configuration describes.

    Hyperparameters missing from ``config`` (or None there) keep the estimator's
    defaults, the one source of them; the config's ``seed`` is ``random_state``.
    """
    from .models import MODELS

    cls = MODELS[config["model"]]
    given = {**config, "random_state": config.get("seed")}
    kwargs = {k: given[k] for k in cls._param_names() if given.get(k) is not None}
    if "values" in kwargs:
        kwargs["values"] = _parse_values(kwargs["values"]) if isinstance(kwargs["values"], str) else kwargs["values"]
    if "psi_full" in kwargs:
        kwargs["psi_full"] = bool(kwargs["psi_full"])
    return cls(**kwargs)


def _check_memory(model, N: int, D: int, ranks: int, limit) -> None:
    """The estimator's own memory estimate against ``--max-memory`` (None: the estimator's default)."""
    if limit is not None:
        model.max_memory = limit
    model.check_memory(N, D, ranks)


def _train_config(args, ranks: int = 1) -> tuple[dict[str, Any], bool]:
    """Validate on rank 0, before anything is written; return (config, resume)."""
    from .io import inspect_data

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; -o/--output names a run folder")
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k, None) is not None}
    if "data" in given:
        given["data"] = str(Path(given["data"]).resolve())
    if args.resume:
        if not out.exists():
            raise InputError(f"run folder {out} does not exist; drop --resume to start a new run")
        config = _resume_config(out)
        stored = {**config, "seed": config.get("restart_seed", config.get("seed"))}  # --seed names the first restart
        first = ", the first of its restarts" if "restart_seed" in config else ""
        diff = [
            f"--{k}={given[k]} (run has {stored.get(k)}{first * (k == 'seed')})"
            for k in given
            if given[k] != stored.get(k)
        ]
        if diff:
            raise UsageError("--resume continues the stored run; these options differ from it: " + ", ".join(diff))
        model = make_model(config)
        _check_hyper(model)
        _check_memory(model, int(config["N"]), int(config["D"]), ranks, args.max_memory)
        return config, True
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise OutputExistsError(
                f"run folder {out} already exists; pass --resume to continue it or --force to start over"
            )
        if not (out / MARKER).is_file():
            raise OutputExistsError(
                f"{out} is not empty and is not a sparsecoding run folder (it has no {MARKER}); "
                "--force only clears folders this tool made: choose a new or empty folder"
            )
    for k in ("model", "data", "H"):
        if k not in given:
            raise UsageError(f"--{k} is required to start a new run")
    config = {**DEFAULTS, **given}
    config["checkpoint_every"] = args.checkpoint_every or DEFAULTS["checkpoint_every"]
    if config["checkpoint_every"] < 1:
        raise UsageError(f"--checkpoint-every must be at least 1, got {config['checkpoint_every']}")
    N, D, attrs = inspect_data(config["data"], config["key"])
    model = make_model(config)
    _check_hyper(model)
    config["Hprime"], config["gamma"] = model._Hprime, model._gamma
    config.update(N=N, D=D, patch_shape=attrs.get("patch_shape"))
    if config["chunk_size"] < 1:
        raise UsageError("--chunk-size must be at least 1")
    if config["restarts"] < 1:
        raise UsageError(f"--restarts must be at least 1, got {config['restarts']}")
    _check_memory(model, N, D, ranks, args.max_memory)
    return config, False


def _check_hyper(model) -> None:
    """The model's own check, in option names (a LimitError keeps its code)."""
    try:
        model.check_hyper()
    except (UsageError, ValueError) as err:
        if isinstance(err, ProbmodError) and not isinstance(err, UsageError):
            raise
        msg = str(err)
        for name in ("Hprime", "gamma", "steps", "chunk_size", "Ncut_factor", "W_noise"):  # speak in option names
            msg = msg.replace(f"choose {name}", f"choose --{name.replace('_', '-')}")
        raise UsageError(msg) from None


def _resume_config(out: Path) -> dict:
    """The stored configuration: config.json while restarts are still running, else the checkpoint's."""
    from .io import CHECKPOINT, DataError, load_checkpoint

    why = None
    try:
        config = _read_json(out / "config.json") if (out / "config.json").exists() else None
    except DataError as err:
        config, why = None, str(err)
    if config is not None and _still_restarting(config, out):
        for r in range(int(config["restarts"])):  # a damaged candidate is reported here, not mid-run on every rank
            folder = out / RESTARTS / f"seed-{int(config['seed']) + r}"
            if (folder / CHECKPOINT).exists():
                load_checkpoint(folder)
        return config
    if why is not None and not (out / CHECKPOINT).exists():
        raise DataError(f"{why}; and {out} has no {CHECKPOINT} to resume from: start a new run with --force")
    return load_checkpoint(out)[0]


def _still_restarting(config: dict, out: Path) -> bool:
    """A run with --restarts that has not chosen its candidate yet; it has no checkpoint of its own until then."""
    from .io import CHECKPOINT

    return int(config.get("restarts", 1)) > 1 and "restart_seed" not in config and not (out / CHECKPOINT).exists()


def _prepare_folder(out: Path, clear: bool) -> None:
    """Make ``out`` a run folder that can be written, before any work: clear it first when ``clear``."""
    from probmod.io import atomic_path, check_output

    from .io import CHECKPOINT, RESULTS

    for name in (RESULTS, CHECKPOINT, "config.json", MARKER):
        check_output(out / name, overwrite=True)
    if clear and (out / MARKER).is_file():  # only what this tool wrote; anything else stays
        for name in OUR_FILES:
            for path in [out / name, *out.glob(f".{name}.*.tmp")]:
                if path.is_file() or path.is_symlink():
                    path.unlink()
        shutil.rmtree(out / RESTARTS, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / MARKER, overwrite=True) as tmp:
            Path(tmp).write_text(
                "A sparsecoding run folder: `sparsecoding train --force` clears only the files the tool wrote here.\n"
            )
    except ProbmodError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write the run folder {out}: {err.strerror or err}") from None


def _bcast_flag(flag: bool, comm) -> bool:
    """Rank 0's decision on every rank, so that no rank takes a branch of its own."""
    if comm.size == 1:
        return bool(flag)
    return bool(comm.bcast(np.array([1 if flag else 0], dtype=np.int64))[0])


def _one_line(err: BaseException) -> tuple[str, int]:
    """The message and exit status :func:`probmod.cli.run` would give ``err``."""
    code = exit_code(err)
    if isinstance(err, ProbmodError) or code != 1:
        text = (
            str(err)
            if not isinstance(err, OSError) or isinstance(err, ProbmodError)
            else f"{err.filename}: {err.strerror}"
            if err.filename and err.strerror
            else str(err)
        )
        return f"error: {text or type(err).__name__}", code
    return f"internal error: {type(err).__name__}: {err}", 1


def cmd_train(args) -> int:
    from .parallel import get_comm

    comm = get_comm()
    previous = _catch_stop_signals()
    try:
        return _train(args, comm)
    except BaseException as err:  # noqa: BLE001 - every rank must end, whatever happened
        if getattr(err, "collective", False):
            if comm.rank != 0:
                return exit_code(err)
            raise
        if comm.size > 1 and not (isinstance(err, SystemExit) and err.code in (0, None)):
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                text, code = "interrupted", 130 if isinstance(err, KeyboardInterrupt) else int(err.code or 1)
            else:
                text, code = _one_line(err)
            print(
                f"{PROG} train: {text} (rank {comm.rank} of {comm.size}; ending all ranks)", file=sys.stderr, flush=True
            )
            # mpiexec forwards a rank's stderr asynchronously, and an abort right after the print
            # has killed the forwarder before the line got out (once in the test suite).
            time.sleep(0.5)
            comm.abort(code)
            os._exit(code)  # MPICH's Abort may return to the caller once the other ranks are told
        raise
    finally:
        for sig, handler in previous.items():
            if sig == "unraisablehook":
                sys.unraisablehook = handler
            else:
                signal.signal(sig, handler)


#: signals received during training; EM stops at the next step even if the first exception was swallowed
_STOPPED: list[int] = []


def _catch_stop_signals() -> dict:
    """SIGINT and SIGTERM end training: raise now, and again at the next step boundary.

    The exception the handler raises can land inside a library callback that swallows it (h5py, numba),
    and the run would go on; the flag makes the next step end it for sure.
    """
    import threading

    _STOPPED.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        _STOPPED.append(signum)
        _raise_stop()

    def quiet_unraisable(info) -> None:  # a swallowed stop is no news: the flag ends the run at the next step
        if not isinstance(info.exc_value, (KeyboardInterrupt, SystemExit)):
            hook(info)

    hook = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    return {**previous, "unraisablehook": hook}


def _raise_stop() -> None:
    if _STOPPED:
        if _STOPPED[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + _STOPPED[0])


def _one_thread_per_rank() -> None:
    """One thread for torch, BLAS/OpenMP and numba: ranks that share cores must not each start a pool.

    numba is told through its environment variable, read when it is first imported (only MCA and
    MMCA use it), so that ranks of other models do not import it at all; run_em keeps BLAS at one
    thread in any case.
    """
    import torch
    from threadpoolctl import threadpool_limits

    os.environ["NUMBA_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    threadpool_limits(1)


def _train(args, comm) -> int:
    from .em import CollapseWarning, TruncationWarning
    from .io import RESULTS, DataError, read_rows
    from .parallel import local_chunks_from_array, rank_rows

    if args.threads is None and comm.size > 1:
        _one_thread_per_rank()
    else:
        set_threads(args.threads)
    out = Path(args.output)
    err, config, resume, restarting = None, None, False, False
    if comm.rank == 0:
        try:
            config, resume = _train_config(args, comm.size)
            _prepare_folder(out, clear=bool(args.force) and not resume)
            _write_json(out / "config.json", config)
            restarting = _still_restarting(config, out)
        except Exception as e:  # noqa: BLE001 - reported by every rank below
            err = e
    _bcast_error(err, comm)
    config = _read_json(out / "config.json")  # every rank runs what rank 0 validated and wrote
    restarting = _bcast_flag(restarting, comm)
    model = make_model(config)
    if args.max_memory is not None:  # run_em checks the estimate again on every rank
        model.max_memory = args.max_memory
    N, D, key = int(config["N"]), int(config["D"]), config["key"]
    a, b = rank_rows(N, int(config["chunk_size"]), comm.rank, comm.size)
    Y = read_rows(config["data"], key, a, b) if b > a else np.zeros((0, D))
    if Y.shape != (b - a, D):
        raise DataError(
            f"dataset {key!r} in {config['data']} changed since the run started (rows {a}..{b} of "
            f"width {D} expected, got {Y.shape})"
        )
    with np.errstate(over="ignore"):
        bad = np.array([0.0 if np.all(np.isfinite(Y)) else 1.0, 0.0 if np.isfinite(np.sum(Y * Y)) else 1.0])
    bad = comm.allreduce_sum(bad) if comm.size > 1 else bad
    if bad[0] > 0:
        raise _collective(NumericalError(f"dataset {key!r} in {config['data']} contains NaN or inf; clean it first"))
    if bad[1] > 0:
        raise _collective(
            NumericalError(
                f"dataset {key!r} in {config['data']} holds values so large that their "
                "squares overflow; rescale it (e.g. to unit variance) first"
            )
        )
    chunks = local_chunks_from_array(Y, int(config["chunk_size"]), comm.rank, comm.size, row_offset=a, N=N)

    em_args = {
        "N": N,
        "D": D,
        "steps": int(config["steps"]),
        "anneal": config["anneal"],
        "Ncut_factor": float(config["Ncut_factor"]),
        "W_noise": float(config.get("W_noise", 0.0)),
        "comm": comm,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CollapseWarning)
        warnings.simplefilter("always", TruncationWarning)
        result, config = _run_training(model, chunks, config, out, em_args, comm, args, restarting)
    for w in caught:  # a collapse is one line, like the errors (none with -q); other warnings as Python shows them
        if issubclass(w.category, (CollapseWarning, TruncationWarning)):
            if not args.quiet:
                print(f"{PROG} train: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if comm.rank == 0:
        p = result.params
        if args.plot:
            from .plot import plot_run

            try:
                plot_run(out)
            except ImportError as e:  # matplotlib missing: the run itself is fine
                print(f"{PROG} train: warning: no plot ({e})", file=sys.stderr)
            else:
                from .io import load_quality
                from .plot import quality_line

                quality = load_quality(out)
                if quality is not None:
                    print(quality_line(quality))
        ll = float(result.history["loglik"][-1]) if len(result.history.get("loglik", [])) else float("nan")
        print(
            f"done: {config['model']} H={config['H']} steps={config['steps']} ranks={comm.size} "
            f"pi={float(p['pi']):.4f} sigma={float(p['sigma']):.4f} loglik={ll:.4f} -> {out / RESULTS}"
        )
    return 0


def _run_training(model, chunks, config: dict, out: Path, em_args: dict, comm, args, restarting: bool):
    """The EM run (or the best of its restarts) with the run folder kept up to date; returns (result, config)."""
    from .io import RESULTS, ResultsWriter, save_checkpoint

    quiet = bool(args.quiet)
    try:
        if restarting:
            result, config = _best_of_restarts(model, chunks, config, out, em_args, comm, args.resume, quiet)
            if comm.rank == 0:  # the winner's run, written as if it had been the only one
                ResultsWriter(out / RESULTS, config, result.history).seal()
                save_checkpoint(
                    out,
                    config,
                    result.params,
                    {k: list(v) for k, v in result.history.items()},
                    int(config["steps"]) - 1,
                )
                _write_json(out / "config.json", config)
        else:
            result = _checkpointed_run(model, chunks, config, out, em_args, comm, args.resume, quiet)
    except NumericalError as e:  # from broadcast parameters or reduced statistics: alike on every rank
        raise _collective(e) from None
    except np.linalg.LinAlgError as e:  # the M-step runs alike on every rank
        raise _collective(
            NumericalError(f"the M-step failed ({e}); the data may be badly scaled or degenerate")
        ) from None
    return result, config


def _checkpointed_run(model, chunks, config: dict, folder: Path, em_args: dict, comm, resume: bool, quiet: bool):
    """EM for ``config["seed"]`` that keeps ``results.h5`` and ``checkpoint.h5`` in ``folder`` up to date.

    With ``resume`` it continues from ``folder``'s checkpoint when there is one (a finished run just loads).
    Every rank reads the checkpoint, so resumed runs are bit-identical to uninterrupted ones. ``run_em`` stops
    on every rank alike, before ``on_step``, when parameters turn NaN or infinite, so nothing non-finite is saved.
    """
    from probmod.progress import Progress

    from .em import run_em
    from .io import CHECKPOINT, RESULTS, ResultsWriter, load_checkpoint, save_checkpoint

    params = history = None
    start = 0
    if _bcast_flag(resume and (folder / CHECKPOINT).exists(), comm):
        _, params, history, start = load_checkpoint(folder)
    steps, every = int(config["steps"]), int(config["checkpoint_every"])
    hist_lists: dict[str, list] = {k: list(v) for k, v in (history or {}).items()}
    writer = None
    bar = Progress(
        total=steps, desc=f"{model.name} EM (seed {config['seed']})", unit="step", enabled=comm.rank == 0 and not quiet
    )
    bar.update(start)
    if comm.rank == 0:  # on resume, results.h5 is rewritten from the checkpoint's history
        folder.mkdir(parents=True, exist_ok=True)
        writer = ResultsWriter(folder / RESULTS, config, history)
    kill_after = os.environ.get("SPARSECODING_KILL_AFTER_STEP")  # test-only hook: simulate a crash

    def on_step(t: int, p: dict, row: dict) -> None:
        _raise_stop()
        if writer is None:  # ranks other than 0
            return
        writer.append(row)
        for k, v in row.items():
            hist_lists.setdefault(k, []).append(np.asarray(v))
        if (t + 1) % every == 0 or t + 1 == steps:
            writer.flush()
            save_checkpoint(folder, config, p, hist_lists, t)
        bar.set_postfix(
            f"T={row['T']:.2f} ll={row['loglik']:.3f} pi={float(np.mean(p['pi'])):.3f} sigma={float(p['sigma']):.3f}"
        )
        bar.update(1)
        if kill_after is not None and t + 1 == int(kill_after):
            writer.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    with bar, contextlib.ExitStack() as stack:
        if writer is not None:  # rows of a failed run's last steps are kept too
            stack.callback(writer.flush)
        result = run_em(
            model,
            chunks,
            seed=int(config["seed"]),
            params=params,
            start_step=start,
            history=history,
            on_step=on_step,
            progress=False,
            **em_args,
        )
    if writer is not None:
        writer.seal()  # the run's rows are complete
    return result


def _best_of_restarts(model, chunks, config: dict, out: Path, em_args: dict, comm, resume: bool, quiet: bool):
    """Full EM runs from seeds seed .. seed+restarts-1; the highest final log-likelihood wins (the first on ties).

    EM for these models can settle with two causes sharing one component; such runs end with a clearly lower
    likelihood, so keeping the best of a few restarts recovers the dictionary far more often. The log-likelihood
    is summed over all ranks, so every rank picks the same run. Each candidate checkpoints in
    ``out/restarts/seed-S/`` (kept afterwards), so ``--resume`` skips finished candidates and continues the
    interrupted one.
    """
    base, best, logliks = int(config.get("restart_seed", config["seed"])), None, []
    for r in range(int(config["restarts"])):
        seed = base + r
        candidate = {**config, "seed": seed, "restarts": 1}
        res = _checkpointed_run(model, chunks, candidate, out / RESTARTS / f"seed-{seed}", em_args, comm, resume, quiet)
        logliks.append(float(res.history["loglik"][-1]))
        if comm.rank == 0:
            print(f"restart {r + 1}/{config['restarts']} (seed {seed}): final loglik {logliks[-1]:.4f}", flush=True)
        if best is None or logliks[-1] > logliks[best[0]]:
            best = (r, res)
    assert best is not None  # restarts >= 1 (checked with the options)
    chosen = {**config, "seed": base + best[0], "restart_seed": base, "restart_logliks": logliks}
    return best[1], chosen


def _write_json(path: Path, obj: dict) -> None:
    import json

    from probmod.io import atomic_path

    try:
        with atomic_path(path, overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(obj, sort_keys=True, indent=1))
    except ProbmodError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _read_json(path: Path) -> dict:
    """A run configuration from ``path``, checked (a bad one is a one-line DataError, exit status 4)."""
    import json

    from probmod.io import check_regular_file

    from .io import DataError, check_config

    path = check_regular_file(path, "run configuration")
    if path.stat().st_size > _MAX_JSON:
        raise DataError(f"{path}: {path.stat().st_size} bytes is too large for a run configuration")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a run configuration (not JSON: {err})") from None
    return check_config(config, str(path))


def cmd_bars(args) -> int:
    from probmod.io import check_output

    from .data import bars_data
    from .io import write_data

    if args.N < 1 or args.size < 1:
        raise UsageError("--N and --size must be positive")
    if not 0 < args.pi < 1 or args.sigma <= 0:
        raise UsageError("--pi must lie in (0, 1) and --sigma must be positive")
    if args.N * args.size**2 * 8 * 3 > MAX_MEMORY:
        raise LimitError(f"--N {args.N} with --size {args.size} needs more than {MAX_MEMORY >> 30} GiB")
    check_output(args.output, args.force)
    d = bars_data(args.N, args.size, args.pi, args.sigma, args.amplitude, args.model, args.seed)
    truth = {f"truth/{k}": v for k, v in d.items() if k not in ("Y",)}
    write_data(
        args.output,
        d["Y"],
        overwrite=args.force,
        attrs={"patch_shape": (args.size, args.size), "model": args.model},
        extra=truth,
    )
    print(
        f"wrote {args.N} bars samples ({args.size}x{args.size}, H={2 * args.size}, model {args.model}) to {args.output}"
    )
    return 0


def cmd_patches(args) -> int:
    from probmod.io import check_output

    from .data import image_files, image_patches
    from .io import write_data

    if args.N < 1 or args.size < 2:
        raise UsageError("--N must be positive and --size at least 2")
    if not 0 < args.keep <= 1:
        raise UsageError(f"--keep must lie in (0, 1], got {args.keep}")
    if args.eps <= 0 or args.max_pixels < 1:
        raise UsageError("--eps and --max-pixels must be positive")
    need, limit = 8 * math.ceil(args.N / args.keep) * args.size**2 * 4, args.max_memory or MAX_MEMORY
    if need > limit:
        raise LimitError(
            f"{args.N} patches of {args.size}x{args.size} (keep {args.keep}) need about "
            f"{need / 2**30:.1f} GiB, over --max-memory {limit / 2**30:.1f} GiB"
        )
    check_output(args.output, args.force)
    set_threads(args.threads)
    files = image_files(args.images) if args.images else None
    try:
        P = image_patches(
            args.N,
            args.size,
            args.seed,
            whiten=args.whiten,
            eps=args.eps,
            files=files,
            keep=args.keep,
            max_pixels=args.max_pixels,
            progress=not args.quiet,
            channels=args.channels,
        )
    except ImportError as err:
        raise UsageError(str(err)) from None
    source = f"{len(files)} image(s)" if files else "scikit-image's photographs"
    write_data(
        args.output,
        P,
        overwrite=args.force,
        attrs={
            "patch_shape": (args.size, args.size),
            "whitened": args.whiten != "none",
            "whitening": args.whiten,
            "keep": args.keep,
            "channels": args.channels,
        },
    )
    print(
        f"wrote {args.N} {'' if args.whiten == 'none' else args.whiten.upper() + '-whitened '}{args.size}x{args.size} "
        f"{'on/off ' if args.channels == 'onoff' else ''}patches from {source} "
        f"to {args.output}"
    )
    return 0


def cmd_plot(args) -> int:
    from .io import load_quality
    from .plot import plot_run, quality_line

    out = Path(args.output or args.run)
    if args.output and not args.force and not (out / MARKER).is_file():
        taken = [n for n in ("dictionary.png", "curves.png") if (out / n).exists()]
        if taken:
            raise OutputExistsError(f"{out} already holds {', '.join(taken)}; pass --force to replace them")
    if args.max_points < 1:
        raise UsageError(f"--max-points must be at least 1, got {args.max_points}")
    paths = plot_run(args.run, out, max_points=args.max_points)
    print("wrote " + " ".join(str(p) for p in paths))
    quality = load_quality(args.run)
    if quality is not None:
        print(quality_line(quality) + f" -> {Path(args.run) / 'results.h5'}:quality/")
    return 0


def _truth(path: str) -> dict[str, np.ndarray]:
    """The true parameters stored by `data bars`, checked."""
    from probmod.io import open_hdf5, safe_datasets

    from .io import DataError

    with open_hdf5(path, "truth file (written by `data bars`)") as f:
        try:
            truth = {k[6:]: np.asarray(v[()]) for k, v in safe_datasets(f).items() if k.startswith("truth/")}
        except (OSError, RuntimeError) as err:
            raise DataError(f"{path}: unreadable ({err})") from None
    if not {"W", "pi", "sigma"} <= set(truth):
        raise DataError(f"{path} holds no true parameters truth/W, truth/pi, truth/sigma (write it with `data bars`)")
    W = truth["W"]
    if W.ndim != 2 or W.size == 0 or not np.issubdtype(W.dtype, np.number) or not np.all(np.isfinite(W)):
        raise DataError(f"{path}: truth/W has shape {W.shape} and dtype {W.dtype}; expected a finite (D, H) array")
    for k in ("pi", "sigma", "mu"):
        if k in truth and (not np.issubdtype(truth[k].dtype, np.number) or not np.all(np.isfinite(truth[k]))):
            raise DataError(f"{path}: truth/{k} is not a finite number")
    return truth


def cmd_match(args) -> int:
    from .data import greedy_match
    from .io import load_results

    res = load_results(args.run)
    truth = _truth(args.truth)
    model = res["config"]["model"]
    W, Wt = res["W"][-1], truth["W"]
    if model == "gsc" and "mu" in res:
        W, Wt = W * res["mu"][-1], Wt * truth.get("mu", 1.0)
    if W.shape[0] != Wt.shape[0]:
        raise ModelMismatchError(
            f"the run's W has {W.shape[0]} rows but the truth in {args.truth} has "
            f"{Wt.shape[0]}: they describe different data"
        )
    match, mae = greedy_match(W, Wt, up_to_sign=(model == "tsc"))
    found = int(np.sum(mae < args.tol))
    pi, sigma = float(np.mean(res["pi"][-1])), float(np.mean(res["sigma"][-1]))
    print(" ".join(f"bar{j}<-W[:,{i}] mae={e:.3f}" for j, (i, e) in enumerate(zip(match, mae))))
    print(
        f"recovered {found}/{Wt.shape[1]} bars (max MAE {np.max(mae):.3f}, tol {args.tol}); "
        f"pi={pi:.3f} (true {float(np.mean(truth['pi'])):.3f}), "
        f"sigma={sigma:.3f} (true {float(np.mean(truth['sigma'])):.3f})"
    )
    return 0 if found == Wt.shape[1] else CHECK_FAILED


def _dispatch(args) -> int:
    if args.command == "train":
        return cmd_train(args)
    if args.command == "bars" or (args.command == "data" and args.kind == "bars"):
        return cmd_bars(args)
    if args.command == "data" and args.kind == "patches":
        return cmd_patches(args)
    if args.command == "plot":
        return cmd_plot(args)
    return cmd_match(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sparsecoding`` and ``python -m sparsecoding``; returns the exit status.

    Example:
        >>> import tempfile, os
        >>> main(["data", "bars", "-o", os.path.join(tempfile.mkdtemp(), "bars.h5"), "--N", "10"])  # doctest: +ELLIPSIS
        wrote 10 bars samples (5x5, H=10, model bsc) to .../bars.h5
        0
    """
    return run(PROG, _dispatch, _parser(), argv)
