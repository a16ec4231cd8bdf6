"""``python -m sparsecoding``: train, make data, plot, and check bars recovery.

Examples::

    python -m sparsecoding data bars --out bars.h5
    mpirun -n 4 python -m sparsecoding train --model bsc --data bars.h5 --H 10 \\
        --Hprime 8 --gamma 5 --steps 60 --anneal 2:1@0.6 --out run/
    mpirun -n 4 python -m sparsecoding train --out run/ --resume   # after a crash
    python -m sparsecoding plot run/
    python -m sparsecoding match run/ --truth bars.h5

Bad input ends with a one-line ``sparsecoding: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["main"]

DEFAULTS = {"Hprime": None, "gamma": None, "steps": 100, "anneal": "2:1@0.6", "Ncut_factor": 0.0, "W_noise": 0.0,
            "seed": 0, "restarts": 1,
            "chunk_size": 256, "checkpoint_every": 10, "key": "y", "values": "0,1", "psi_full": False}
#: options that define a run; on --resume any that is given must match the checkpoint
RUN_KEYS = ("model", "data", "key", "H", "Hprime", "gamma", "steps", "anneal", "Ncut_factor", "W_noise", "seed",
            "restarts", "chunk_size", "values", "psi_full")
OUR_FILES = ("results.h5", "checkpoint.h5", "config.json", "dictionary.png", "curves.png")
RESTARTS = "restarts"  # folder of the candidate runs of --restarts


class CLIError(Exception):
    """Bad input: reported as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsecoding", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="learn a dictionary with truncated EM (run it under mpirun for MPI)")
    t.add_argument("--model", choices=["bsc", "tsc", "dsc", "mca", "mmca", "gsc"], default=None)
    t.add_argument("--data", default=None, help="HDF5 file with a 2-D dataset (N, D)")
    t.add_argument("--key", default=None, help="dataset name in the file (default: y)")
    t.add_argument("--H", type=int, default=None, help="number of dictionary elements")
    t.add_argument("--Hprime", type=int, default=None, help="candidates per data point (default: min(H, 8))")
    t.add_argument("--gamma", type=int, default=None, help="max active causes per state (default: min(Hprime, 5))")
    t.add_argument("--steps", type=int, default=None, help="EM steps (default: 100)")
    t.add_argument("--anneal", default=None, help="temperature schedule T0:T1@fraction (default: 2:1@0.6)")
    t.add_argument("--Ncut-factor", dest="Ncut_factor", type=float, default=None, help="data truncation in [0, 1]")
    t.add_argument("--W-noise", dest="W_noise", type=float, default=None,
                   help="std of noise added to W while annealing, falling to 0 (default 0)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--restarts", type=int, default=None,
                   help="run EM from this many initialisations (seeds seed, seed+1, ...) and keep the one with the "
                        "highest final log-likelihood (default 1; each candidate checkpoints under OUT/restarts/)")
    t.add_argument("--chunk-size", dest="chunk_size", type=int, default=None, help="rows per reduction chunk (256)")
    t.add_argument("--values", default=None, help="DSC state values, comma-separated, starting with 0 (e.g. 0,1,2)")
    t.add_argument("--psi-full", dest="psi_full", action="store_true", default=None, help="GSC: learn a full Psi")
    t.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=None, help="steps (default 10)")
    t.add_argument("--out", required=True, help="run folder")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--force", "--overwrite", dest="force", action="store_true", help="replace an existing run folder")
    t.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw dictionary.png at the end")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("data", help="write a data set to HDF5")
    dsub = d.add_subparsers(dest="kind", required=True)
    for name, parser in (("bars", dsub.add_parser("bars", help="the bars test")),
                         ("bars_alias", sub.add_parser("bars", help="same as `data bars`"))):
        parser.add_argument("--out", required=True)
        parser.add_argument("--N", type=int, default=1000)
        parser.add_argument("--size", type=int, default=5, help="grid side; H = 2 * size bars")
        parser.add_argument("--pi", type=float, default=0.2)
        parser.add_argument("--sigma", type=float, default=2.0)
        parser.add_argument("--amplitude", type=float, default=10.0)
        parser.add_argument("--model", choices=["bsc", "tsc", "dsc", "mca", "mmca", "gsc"], default="bsc",
                            help="generative model that draws the data")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--force", "--overwrite", dest="force", action="store_true")
    pp = dsub.add_parser("patches", help="whitened natural-image patches (needs scikit-image)")
    pp.add_argument("--out", required=True)
    pp.add_argument("--N", type=int, default=50000)
    pp.add_argument("--size", type=int, default=12)
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--no-whiten", dest="whiten", action="store_false")
    pp.add_argument("--force", "--overwrite", dest="force", action="store_true")

    pl = sub.add_parser("plot", help="draw dictionary.png and curves.png for a run folder")
    pl.add_argument("run")
    pl.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")

    m = sub.add_parser("match", help="compare a run's dictionary with the true bars (greedy matching)")
    m.add_argument("run")
    m.add_argument("--truth", required=True, help="the data file written by `data bars`")
    m.add_argument("--tol", type=float, default=0.5, help="mean absolute error below which a bar counts as found")
    return p


# -- helpers ---------------------------------------------------------------------------
def _bcast_message(msg: str, comm) -> str:
    """Rank 0's message to every rank, as a fixed-size byte buffer (no pickle)."""
    if comm.size == 1:
        return msg
    buf = np.zeros(4096, dtype=np.uint8)
    if comm.rank == 0:
        raw = msg.encode()[:4095]
        buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    buf = comm.bcast(buf)
    return bytes(buf[: int(np.argmax(buf == 0)) if (buf == 0).any() else len(buf)]).decode(errors="replace")


def _parse_values(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise CLIError(f"--values must be comma-separated numbers like 0,1,2; got {text!r}") from None


def make_model(config: dict[str, Any]):
    """The model object a run configuration describes."""
    from .models import MODELS

    kwargs = dict(steps=config["steps"], anneal=config["anneal"], Ncut_factor=config["Ncut_factor"],
                  W_noise=config.get("W_noise", 0.0), chunk_size=config["chunk_size"], seed=config["seed"])
    name = config["model"]
    if name == "dsc":
        kwargs["values"] = _parse_values(config["values"])
    if name == "gsc":
        kwargs["psi_full"] = bool(config["psi_full"])
    return MODELS[name](config["H"], config["Hprime"], config["gamma"], **kwargs)


def _train_config(args) -> tuple[dict[str, Any], bool]:
    """Validate on rank 0; return (config, resume)."""
    from .io import DataError, inspect_data, load_checkpoint

    out = Path(args.out)
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k, None) is not None}
    if "data" in given:
        given["data"] = str(Path(given["data"]).resolve())
    if args.resume:
        if not out.exists():
            raise CLIError(f"run folder {out} does not exist; drop --resume to start a new run")
        config = _restarting_config(out)
        if config is None:
            try:
                config = load_checkpoint(out)[0]
            except DataError as err:
                raise CLIError(str(err)) from None
        stored = {**config, "seed": config.get("restart_seed", config.get("seed"))}  # --seed names the first restart
        diff = [f"--{k}={given[k]} (run has {stored.get(k)}{', the first of its restarts' * (k == 'seed' and 'restart_seed' in config)})"
                for k in given if given[k] != stored.get(k)]
        if diff:
            raise CLIError("--resume continues the stored run; these options differ from it: " + ", ".join(diff))
        return config, True
    if out.exists() and any(out.iterdir()) and not args.force:
        raise CLIError(f"run folder {out} already exists; pass --resume to continue it or --force to overwrite it")
    for k in ("model", "data", "H"):
        if k not in given:
            raise CLIError(f"--{k} is required to start a new run")
    config = {**DEFAULTS, **given}
    config["checkpoint_every"] = args.checkpoint_every or DEFAULTS["checkpoint_every"]
    if config["checkpoint_every"] < 1:
        raise CLIError(f"--checkpoint-every must be at least 1, got {config['checkpoint_every']}")
    try:
        N, D, attrs = inspect_data(config["data"], config["key"])
    except DataError as err:
        raise CLIError(str(err)) from None
    model = make_model(config)
    try:
        model.check_hyper()
    except ValueError as err:
        msg = str(err)
        for name in ("Hprime", "gamma", "steps", "chunk_size", "Ncut_factor", "W_noise"):  # speak in option names
            msg = msg.replace(f"choose {name}", f"choose --{name.replace('_', '-')}")
        raise CLIError(msg) from None
    config["Hprime"], config["gamma"] = model._Hprime, model._gamma
    config.update(N=N, D=D, patch_shape=attrs.get("patch_shape"))
    if config["chunk_size"] < 1:
        raise CLIError("--chunk-size must be at least 1")
    if config["restarts"] < 1:
        raise CLIError(f"--restarts must be at least 1, got {config['restarts']}")
    return config, False


def _still_restarting(config: dict, out: Path) -> bool:
    """A run with --restarts that has not chosen its candidate yet; it has no checkpoint of its own until then."""
    from .io import CHECKPOINT

    return int(config.get("restarts", 1)) > 1 and "restart_seed" not in config and not (out / CHECKPOINT).exists()


def _restarting_config(out: Path) -> dict | None:
    """The configuration of the run in ``out`` when it is still running its restarts, else None."""
    from .io import CHECKPOINT, DataError, load_checkpoint

    if not (out / "config.json").exists():
        return None
    try:
        config = _read_json(out / "config.json")
        if not (isinstance(config, dict) and _still_restarting(config, out)):
            return None
    except (ValueError, TypeError):
        raise CLIError(f"{out / 'config.json'} is not a run configuration; start a new run with --force") from None
    for r in range(int(config["restarts"])):  # a damaged candidate is reported here, not mid-run on every rank
        folder = out / RESTARTS / f"seed-{int(config['seed']) + r}"
        if (folder / CHECKPOINT).exists():
            try:
                load_checkpoint(folder)
            except DataError as err:
                raise CLIError(str(err)) from None
    return config


def _bcast_flag(flag: bool, comm) -> bool:
    """Rank 0's decision on every rank, so that no rank takes a branch of its own."""
    if comm.size == 1:
        return bool(flag)
    return bool(comm.bcast(np.array([1 if flag else 0], dtype=np.int64))[0])


def cmd_train(args) -> int:
    from .io import RESULTS, ResultsWriter, read_rows, save_checkpoint
    from .parallel import get_comm, local_chunks_from_array, rank_rows

    comm = get_comm()
    msg, config, resume, restarting = "", None, False, False
    if comm.rank == 0:
        try:
            config, resume = _train_config(args)
            out = Path(args.out)
            if args.force and out.exists() and not resume:
                for name in OUR_FILES:
                    (out / name).unlink(missing_ok=True)
                shutil.rmtree(out / RESTARTS, ignore_errors=True)
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "config.json", config)
            restarting = _still_restarting(config, out)
        except CLIError as err:
            msg = str(err)
    msg = _bcast_message(msg, comm)
    if msg:
        if comm.rank == 0:
            print(f"sparsecoding: error: {msg}", file=sys.stderr)
        return 2
    out = Path(args.out)
    config = _read_json(out / "config.json")  # every rank runs what rank 0 validated and wrote
    restarting = _bcast_flag(restarting, comm)
    model = make_model(config)
    N, D, key = int(config["N"]), int(config["D"]), config["key"]
    a, b = rank_rows(N, int(config["chunk_size"]), comm.rank, comm.size)
    Y = read_rows(config["data"], key, a, b) if b > a else np.zeros((0, D))
    bad = np.array([0.0 if np.all(np.isfinite(Y)) else 1.0])
    bad = comm.allreduce_sum(bad) if comm.size > 1 else bad
    if bad[0] > 0:
        if comm.rank == 0:
            print(f"sparsecoding: error: dataset {key!r} in {config['data']} contains NaN or inf; clean it first",
                  file=sys.stderr)
        return 2
    chunks = local_chunks_from_array(Y, int(config["chunk_size"]), comm.rank, comm.size, row_offset=a, N=N)

    em_args = dict(N=N, D=D, steps=int(config["steps"]), anneal=config["anneal"],
                   Ncut_factor=float(config["Ncut_factor"]), W_noise=float(config.get("W_noise", 0.0)), comm=comm,
                   progress=not args.quiet)
    if restarting:
        result, config = _best_of_restarts(model, chunks, config, out, em_args, comm, args.resume)
        if comm.rank == 0:  # the winner's run, written as if it had been the only one
            ResultsWriter(out / RESULTS, config, result.history)
            save_checkpoint(out, config, result.params, {k: list(v) for k, v in result.history.items()},
                            int(config["steps"]) - 1)
            _write_json(out / "config.json", config)
    else:
        result = _checkpointed_run(model, chunks, config, out, em_args, comm, args.resume)
    if comm.rank == 0:
        p = result.params
        if args.plot:
            from .plot import plot_run

            try:
                plot_run(out)
            except ImportError as err:  # matplotlib missing: the run itself is fine
                print(f"sparsecoding: warning: no plot ({err})", file=sys.stderr)
        ll = float(result.history["loglik"][-1]) if len(result.history.get("loglik", [])) else float("nan")
        print(f"done: {config['model']} H={config['H']} steps={config['steps']} ranks={comm.size} "
              f"pi={float(p['pi']):.4f} sigma={float(p['sigma']):.4f} loglik={ll:.4f} -> {out / RESULTS}")
    return 0


def _checkpointed_run(model, chunks, config: dict, folder: Path, em_args: dict, comm, resume: bool):
    """EM for ``config["seed"]`` that keeps ``results.h5`` and ``checkpoint.h5`` in ``folder`` up to date.

    With ``resume`` it continues from ``folder``'s checkpoint when there is one (a finished run just loads).
    Every rank reads the checkpoint, so resumed runs are bit-identical to uninterrupted ones.
    """
    from .em import run_em
    from .io import CHECKPOINT, RESULTS, ResultsWriter, load_checkpoint, save_checkpoint

    params = history = None
    start = 0
    if _bcast_flag(resume and (folder / CHECKPOINT).exists(), comm):
        _, params, history, start = load_checkpoint(folder)
    steps, every = int(config["steps"]), int(config["checkpoint_every"])
    hist_lists: dict[str, list] = {k: list(v) for k, v in (history or {}).items()}
    writer = None
    if comm.rank == 0:  # on resume, results.h5 is rewritten from the checkpoint's history
        folder.mkdir(parents=True, exist_ok=True)
        writer = ResultsWriter(folder / RESULTS, config, history)
    kill_after = os.environ.get("SPARSECODING_KILL_AFTER_STEP")  # test hook: simulate a crash

    def on_step(t: int, p: dict, row: dict) -> None:
        if comm.rank != 0:
            return
        writer.append(row)
        for k, v in row.items():
            hist_lists.setdefault(k, []).append(np.asarray(v))
        if (t + 1) % every == 0 or t + 1 == steps:
            save_checkpoint(folder, config, p, hist_lists, t)
        if kill_after is not None and t + 1 == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)

    return run_em(model, chunks, seed=int(config["seed"]), params=params, start_step=start, history=history,
                  on_step=on_step, **em_args)


def _best_of_restarts(model, chunks, config: dict, out: Path, em_args: dict, comm, resume: bool):
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
        res = _checkpointed_run(model, chunks, candidate, out / RESTARTS / f"seed-{seed}", em_args, comm, resume)
        logliks.append(float(res.history["loglik"][-1]))
        if comm.rank == 0:
            print(f"restart {r + 1}/{config['restarts']} (seed {seed}): final loglik {logliks[-1]:.4f}", flush=True)
        if best is None or logliks[-1] > logliks[best[0]]:
            best = (r, res)
    chosen = {**config, "seed": base + best[0], "restart_seed": base, "restart_logliks": logliks}
    return best[1], chosen


def _write_json(path: Path, obj: dict) -> None:
    import json

    from probcirc.io import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(obj, sort_keys=True, indent=1))


def _read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def cmd_bars(args) -> int:
    from .data import bars_data
    from .io import write_data

    if args.N < 1 or args.size < 1:
        raise CLIError("--N and --size must be positive")
    if not 0 < args.pi < 1 or args.sigma <= 0:
        raise CLIError("--pi must lie in (0, 1) and --sigma must be positive")
    if Path(args.out).exists() and not args.force:
        raise CLIError(f"{args.out} exists; pass --force to overwrite it")
    d = bars_data(args.N, args.size, args.pi, args.sigma, args.amplitude, args.model, args.seed)
    truth = {f"truth/{k}": v for k, v in d.items() if k not in ("Y",)}
    write_data(args.out, d["Y"], overwrite=args.force,
               attrs={"patch_shape": (args.size, args.size), "model": args.model}, extra=truth)
    print(f"wrote {args.N} bars samples ({args.size}x{args.size}, H={2 * args.size}, model {args.model}) to {args.out}")
    return 0


def cmd_patches(args) -> int:
    from .data import image_patches
    from .io import write_data

    if args.N < 1 or args.size < 2:
        raise CLIError("--N must be positive and --size at least 2")
    if Path(args.out).exists() and not args.force:
        raise CLIError(f"{args.out} exists; pass --force to overwrite it")
    try:
        P = image_patches(args.N, args.size, args.seed, whiten=args.whiten)
    except ImportError as err:
        raise CLIError(str(err)) from None
    write_data(args.out, P, overwrite=args.force, attrs={"patch_shape": (args.size, args.size)})
    print(f"wrote {args.N} {'whitened ' if args.whiten else ''}{args.size}x{args.size} patches to {args.out}")
    return 0


def cmd_plot(args) -> int:
    from .io import DataError
    from .plot import plot_run

    try:
        paths = plot_run(args.run, args.out)
    except DataError as err:
        raise CLIError(str(err)) from None
    print("wrote " + " ".join(str(p) for p in paths))
    return 0


def cmd_match(args) -> int:
    import h5py

    from .data import greedy_match
    from .io import DataError, load_results

    try:
        res = load_results(args.run)
    except DataError as err:
        raise CLIError(str(err)) from None
    if not Path(args.truth).exists():
        raise CLIError(f"truth file {args.truth} does not exist")
    with h5py.File(args.truth, "r") as f:
        if "truth" not in f:
            raise CLIError(f"{args.truth} holds no true parameters (write it with `data bars`)")
        truth = {k: np.asarray(v[()]) for k, v in f["truth"].items()}
    model = res["config"]["model"]
    W, Wt = res["W"][-1], truth["W"]
    if model == "gsc":
        W, Wt = W * res["mu"][-1], Wt * truth.get("mu", 1.0)
    if W.shape[0] != Wt.shape[0]:
        raise CLIError(f"the run's W has {W.shape[0]} rows but the truth has {Wt.shape[0]}")
    match, mae = greedy_match(W, Wt, up_to_sign=(model == "tsc"))
    found = int(np.sum(mae < args.tol))
    pi, sigma = float(res["pi"][-1]), float(res["sigma"][-1])
    print(" ".join(f"bar{j}<-W[:,{i}] mae={e:.3f}" for j, (i, e) in enumerate(zip(match, mae))))
    print(f"recovered {found}/{Wt.shape[1]} bars (max MAE {np.max(mae):.3f}, tol {args.tol}); "
          f"pi={pi:.3f} (true {float(truth['pi']):.3f}), sigma={sigma:.3f} (true {float(truth['sigma']):.3f})")
    return 0 if found == Wt.shape[1] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "train":
            return cmd_train(args)
        if args.cmd == "bars" or (args.cmd == "data" and args.kind == "bars"):
            return cmd_bars(args)
        if args.cmd == "data" and args.kind == "patches":
            return cmd_patches(args)
        if args.cmd == "plot":
            return cmd_plot(args)
        if args.cmd == "match":
            return cmd_match(args)
    except CLIError as err:
        print(f"sparsecoding: error: {err}", file=sys.stderr)
        return 2
    return 2
