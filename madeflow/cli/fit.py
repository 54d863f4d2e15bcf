"""``madeflow fit``: build the run config, train with checkpoints, report and save the run.

Split from :mod:`madeflow.cli` (which parses arguments and maps errors to exit codes). The run
folder layout is described in :mod:`madeflow.runs`.

Under ``torchrun`` every process runs this command and trains data-parallel
(:mod:`madeflow.train.distributed`). Rank 0 alone decides the run folder, takes its lock, reads the
checkpoint to resume from, writes every file and prints; it sends the others the config and the
folder, or the exit code of an error it met before training, so no rank is left waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from madeflow.cli.data import data_config, is_binary, prepare
from madeflow.cli.resume import read_state, resume_conflicts
from madeflow.data.files import DataError, path_problem
from madeflow.data.rows import num_columns, to_device
from madeflow.runs.folder import build_from_config, read_config
from madeflow.runs.integrity import check_model_file, data_drift, data_path, fingerprint
from madeflow.runs.safe_io import (
    FORMAT_VERSION,
    CheckpointError,
    RunLock,
    finite_or_none,
    save_json,
    save_tensors,
)
from madeflow.train import distributed
from madeflow.train.evaluation import NumericalError, mean_and_stderr
from madeflow.train.loop import evaluate_log_prob, fit
from madeflow.train.state import TrainingStateError

__all__ = [
    "EXIT_CODES",
    "FIT_DEFAULTS",
    "PeerFailure",
    "UsageError",
    "cmd_fit",
    "device_from",
    "error_kind",
]

EXIT_CODES = {
    "usage": 2,
    "data": 3,
    "checkpoint": 4,
    "numerical": 5,
    "distributed": 6,
    "interrupted": 130,
}
"""Exit codes of the command line (documented in :mod:`madeflow.cli`)."""


class UsageError(ValueError):
    """Bad command-line usage detected after parsing."""


class PeerFailure(RuntimeError):
    """Another process of a distributed run died, hung or could not be reached."""


def error_kind(err: BaseException) -> str | None:
    """The key of :data:`EXIT_CODES` for an error, ``None`` for an unexpected one."""
    kinds = (
        (UsageError, "usage"),
        (DataError, "data"),
        (CheckpointError, "checkpoint"),
        (NumericalError, "numerical"),
        (PeerFailure, "distributed"),
    )
    return next((kind for cls, kind in kinds if isinstance(err, cls)), None)


# Defaults of `madeflow fit`: the no-argument run (MAF-MoG, 5 layers of [256, 256], on logit
# digits with fresh dequantization noise per batch) early-stops after ~65 epochs, about 1 minute
# on one busy CPU core, at about -52 nats/image on test. Kept out of argparse so --resume can
# tell what was given.
FIT_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "hidden": [256, 256],
    "num_transforms": 5,
    "num_components": 10,
    "num_masks": 1,
    "max_epochs": 300,
    "batch_size": 100,
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "patience": 30,
    "clip_grad": 10.0,
    "seed": 0,
    "toy_size": 10000,
}


def device_from(name: str) -> torch.device:
    """``auto``/``cpu``/``cuda`` -> a device (``auto`` picks CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is available")
    return torch.device(name)


def say(quiet: bool, *msg: object) -> None:
    """Print to stderr unless ``quiet``."""
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


def _fit_settings(args: argparse.Namespace) -> dict[str, Any]:
    s = {k: getattr(args, k, None) for k in FIT_DEFAULTS}
    s["hidden"] = args.hidden
    return {k: (FIT_DEFAULTS[k] if v is None else v) for k, v in s.items()}


def _check_settings(s: dict[str, Any]) -> None:
    """Refuse impossible training numbers before anything is written."""
    for key, low in (("max_epochs", 0), ("batch_size", 1), ("patience", 0), ("toy_size", 3)):
        if s[key] < low:
            raise UsageError(f"--{key.replace('_', '-')} must be >= {low}, got {s[key]}")
    for key in ("lr", "weight_decay", "clip_grad"):
        if not s[key] >= 0 or (key == "lr" and s[key] == 0):
            raise UsageError(f"--{key.replace('_', '-')} must be a positive number, got {s[key]}")


def _new_config(args: argparse.Namespace) -> dict[str, Any]:
    s = _fit_settings(args)
    _check_settings(s)
    data = data_config(
        s["data"],
        seed=s["seed"],
        toy_size=s["toy_size"],
        standardize=not args.no_standardize,
        mmap=bool(getattr(args, "mmap", False)),
    )
    name = args.model or ("made-bernoulli" if data["kind"] == "digits-binary" else "maf-mog")
    if name == "made-bernoulli" and data["kind"] not in ("digits-binary", "file"):
        raise UsageError("made-bernoulli models binary data: use digits-binary or a 0/1 file")
    if name == "made-bernoulli":
        data["standardize"] = False
    if data["kind"] == "digits-binary" and name != "made-bernoulli":
        raise UsageError(f"digits-binary is binary: use --model made-bernoulli, not {name}")
    training = {
        k: s[k] for k in ("max_epochs", "batch_size", "lr", "weight_decay", "patience", "clip_grad")
    }
    training["seed"] = s["seed"]
    training["dequantize"] = data["kind"] == "digits" and not args.no_dequantize
    model = {
        "hidden_dims": s["hidden"],
        "num_transforms": s["num_transforms"],
        "num_components": s["num_components"],
        "num_masks": s["num_masks"],
        "batch_norm": bool(args.batch_norm),
        "seed": s["seed"],
    }
    return {
        "format_version": FORMAT_VERSION,
        "data": data,
        "model": {"name": name, "input_dim": 0, "options": model},
        "training": training,
    }


def _out_folder(args: argparse.Namespace, config: dict[str, Any]) -> Path:
    if args.out:
        return Path(args.out)
    if args.resume:
        raise UsageError("--resume needs --out RUN_FOLDER")
    src = (
        Path(config["data"]["source"]).stem
        if config["data"]["kind"] == "file"
        else (config["data"]["source"])
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config['model']['name']}-{src}-{stamp}"


def cmd_fit(args: argparse.Namespace) -> int:
    """``madeflow fit``: train, report validation/test log-likelihoods, save the run."""
    device = device_from(args.device)
    if not distributed.launched():
        return _fit_main(args, device)
    device = distributed.init(device)
    out = args.out
    try:
        if distributed.is_main():
            return _fit_main(args, device, tell=distributed.broadcast_object)
        setup = distributed.broadcast_object(None)
        if "error" in setup:
            return setup["error"]  # rank 0 met it, and says so
        out = setup["out"]
        return _fit_locked(args, setup["config"], Path(out), device)
    except Exception as err:
        if error_kind(err) is None and distributed.is_peer_failure(err):
            resume = f"; resume with: madeflow fit --resume --out {out}" if out else ""
            raise PeerFailure(
                f"lost contact with another rank, which failed or did not answer (see its "
                f"messages): {distributed.gist(err)}{resume}"
            ) from err
        raise
    finally:
        distributed.destroy()


def _resolve(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The run's config and folder: read back with ``--resume``, else new (folder unused)."""
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out RUN_FOLDER")
        out = Path(args.out)
        if not (out / "config.json").is_file():
            raise CheckpointError(f"cannot resume: {out} is not a madeflow run (no config.json)")
        config = read_config(out)
        check_model_file(out, config, args.force, action="resuming, which overwrites it")
        conflicts = resume_conflicts(args, config)
        if conflicts:
            raise UsageError(
                f"--resume continues {out} with the settings in its config.json, but "
                f"{', '.join(conflicts)} differ; drop them (only --max-epochs may change), or "
                "start a new run with another --out"
            )
        drift = data_drift(config)  # before any other rank is told to start
        if drift is not None and not args.force:
            raise DataError(
                f"{drift}; resuming would train on other data. Restore it, or pass --force to "
                "go on with its new contents"
            )
        if drift is not None:
            say(False, f"madeflow: warning: {drift}; going on with its new contents (--force)")
            config["fingerprints"].pop("data")  # recorded anew once the data are read
        if args.max_epochs is not None:
            config["training"]["max_epochs"] = args.max_epochs
        return config, out
    if args.force:
        raise UsageError("--force only applies with --resume (to go on after a data change)")
    config = _new_config(args)
    out = _out_folder(args, config)
    problem = path_problem(out, "run folder")
    if problem is not None and "symbolic link" in problem:
        raise CheckpointError(problem)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a run folder; choose another --out")
    # A stale ``.lock`` alone (a run killed before writing anything) does not count.
    if out.exists() and any(p.name != ".lock" for p in out.iterdir()):
        raise UsageError(
            f"{out} already exists and is not empty; use --resume to continue it or "
            "choose another --out"
        )
    return config, out


def _fit_main(
    args: argparse.Namespace, device: torch.device, tell: Callable[[Any], Any] | None = None
) -> int:
    """The only process, or rank 0: resolve the run, lock its folder and train.

    ``tell`` (rank 0) sends the other ranks ``{"config", "out"}`` once the folder is locked, or
    ``{"error": exit code}`` if anything failed before.
    """
    told = False
    try:
        config, out = _resolve(args)
        created = not out.exists()
        fresh = not args.resume  # a new run: `out` was absent or empty
        try:
            with RunLock(out):
                if tell is not None:
                    tell({"config": config, "out": str(out)})
                    told = True
                return _fit_locked(args, config, out, device)
        except Exception:
            # A new run that failed before its first checkpoint leaves nothing half-written.
            # Cleanup that fails (a read-only folder) must not hide the error that ended the run.
            with contextlib.suppress(OSError):
                if fresh and out.is_dir() and not (out / "train_state.pt").exists():
                    (out / "config.json").unlink(missing_ok=True)
                    if created:
                        out.rmdir()  # only if empty: never delete anything we did not write
            raise
    except BaseException as err:
        if tell is not None and not told:
            kind = error_kind(err) if isinstance(err, Exception) else "interrupted"
            tell({"error": EXIT_CODES.get(kind or "", 1)})
        raise


def _fit_locked(
    args: argparse.Namespace, config: dict[str, Any], out: Path, device: torch.device
) -> int:
    main = distributed.is_main()
    quiet = args.quiet or not main
    data = prepare(config["data"])
    d = num_columns(data.train)
    bernoulli = config["model"]["name"] == "made-bernoulli"
    if bernoulli and not is_binary(data.train, data.val, data.test):
        raise DataError("made-bernoulli needs binary data (every value 0 or 1)")
    batch_norm = (
        config["model"]["name"].startswith("maf") and config["model"]["options"]["batch_norm"]
    )
    if batch_norm and len(data.train) < 2:
        raise DataError(
            f"{config['data']['source']} leaves {len(data.train)} training row after the split; "
            "batch norm needs at least 2: give more data or drop --batch-norm"
        )
    config["model"]["input_dim"] = d
    source = data_path(config["data"])
    prints = config.setdefault("fingerprints", {})
    if main and source is not None and "data" not in prints:
        rows = len(data.train) + len(data.val) + len(data.test)
        prints["data"] = {**fingerprint(source), "shape": [rows, d]}
    model = build_from_config(config, device, error=UsageError)
    num_params = sum(p.numel() for p in model.parameters())
    state = None
    state_path = out / "train_state.pt"
    if main:  # the other ranks get the state from rank 0 inside fit
        if args.resume and state_path.is_file():
            state = read_state(state_path, config, model)
            say(quiet, f"resuming {out} after epoch {state['epoch'] + 1}")
        elif args.resume:
            say(quiet, f"{out} has no completed epoch; starting from scratch")
        save_json(config, out / "config.json")  # after the state passed its checks

    t = config["training"]
    ranks = distributed.world_size()
    say(
        quiet,
        f"fitting {config['model']['name']} (D={d}, {num_params}"
        f" parameters) on {config['data']['source']}: {len(data.train)} train / "
        f"{len(data.val)} val / {len(data.test)} test, on {device}"
        + (f", data-parallel over {ranks} processes" if ranks > 1 else ""),
    )
    last_save = [time.monotonic()]

    log_lines = not quiet and not sys.stderr.isatty()  # no bar: a line every 10 epochs

    def checkpoint(event: Any) -> None:
        if not main:
            return
        if log_lines and ((event.epoch + 1) % 10 == 0 or event.last):
            h = event.history
            say(
                False,
                f"epoch {event.epoch + 1}: train {event.train_log_lik:.3f}, val "
                f"{event.val_log_lik:.3f} (best {h.best_val_log_lik:.3f} at epoch "
                f"{h.best_epoch + 1})",
            )
        now = time.monotonic()
        if now - last_save[0] >= args.save_every or event.last:
            payload = {"model_name": config["model"]["name"], "state": event.state()}
            _save(lambda: save_tensors(payload, state_path), out)
            last_save[0] = now

    try:
        history = fit(
            model,
            to_device(data.train, device),
            to_device(data.val, device),
            max_epochs=t["max_epochs"],
            batch_size=t["batch_size"],
            lr=t["lr"],
            weight_decay=t["weight_decay"],
            patience=t["patience"],
            clip_grad_norm=t["clip_grad"] or None,
            seed=t["seed"],
            progress=False if quiet else None,
            callback=checkpoint,
            state=state,
            augment=data.space.augmenter() if t.get("dequantize") else None,
            compile=getattr(args, "compile", False),
        )
    except KeyboardInterrupt:
        if main:
            print(
                f"madeflow: interrupted; continue with: madeflow fit --resume --out {out}",
                file=sys.stderr,
            )
        return EXIT_CODES["interrupted"]
    except TrainingStateError as err:
        raise CheckpointError(
            f"{state_path} is damaged: {err}; delete it to start the run again from scratch"
        ) from err

    if main:
        weights = {
            "model_name": config["model"]["name"],
            "model": model.state_dict(),
            "data_space": data.space.state(),
        }
        _save(lambda: save_tensors(weights, out / "model.pt"), out)
        prints["model"] = fingerprint(out / "model.pt")
        _save(lambda: save_json(config, out / "config.json"), out)
    scores, lines = _final_scores(model, data, config, device)
    if not main:
        return 0
    # Strict JSON: a standard error of one row is not defined, and is written as null.
    metrics = finite_or_none({"history": history.to_dict(), **scores, "seconds": history.seconds})
    _save(lambda: save_json(metrics, out / "metrics.json"), out)
    try:
        from madeflow.cli.plots import plot_run

        plot_run(out, model, data.space, data.test, config, seed=0)
    except Exception as err:  # a plot must not lose a trained model
        say(quiet, f"madeflow: warning: could not draw samples.png: {err}")
    print(
        f"stopped after {history.epochs} epochs ({history.stopped}); best epoch "
        f"{history.best_epoch + 1}; {history.seconds:.1f} s"
    )
    for line in lines:
        print(line)
    print(f"run saved to {out}")
    return 0


def _save(write: Callable[[], None], out: Path) -> None:
    """Run ``write``; a failure after the first checkpoint says how to continue the run."""
    try:
        write()
    except CheckpointError as err:
        if (out / "train_state.pt").is_file():
            raise CheckpointError(
                f"{err}; the last checkpoint is kept: then continue with madeflow fit --resume "
                f"--out {out}"
            ) from err
        raise


def _final_scores(
    model: torch.nn.Module, data: Any, config: dict[str, Any], device: torch.device
) -> tuple[dict[str, Any], list[str]]:
    """Validation and test log-likelihoods (each rank scores its shard) and the lines to print."""
    metrics: dict[str, Any] = {}
    lines = []
    for split_name, x in (("val", data.val), ("test", data.test)):
        x = distributed.shard(to_device(x, device))
        ll = evaluate_log_prob(model, x)
        m, se = mean_and_stderr(ll, all_ranks=True)
        metrics[f"{split_name}_log_lik"] = m
        metrics[f"{split_name}_log_lik_stderr"] = se
        line = f"{split_name} log-likelihood: {m:.3f} ± {se:.3f} nats"
        if config["data"]["kind"] != "digits-binary" and (
            data.space.kind == "digits" or data.space.standardizer is not None
        ):
            ll_data = ll + data.space.log_jacobian(x).to(ll.device)
            md, sed = mean_and_stderr(ll_data, all_ranks=True)
            metrics[f"{split_name}_log_lik_data_space"] = md
            metrics[f"{split_name}_log_lik_data_space_stderr"] = sed
            where = "pixel space" if data.space.kind == "digits" else "data units"
            line += f"  ({md:.3f} ± {sed:.3f} in {where})"
        lines.append(line)
    return metrics, lines
