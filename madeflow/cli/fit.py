"""``madeflow fit``: resolve the run, train with checkpoints, report and save the run.

The path of the data, one way from the command line down to the library: :func:`prepare`
(:mod:`madeflow.cli.data`) reads the source the run's config names into model-space splits and
their :class:`~madeflow.data.DataSpace`; the splits move to the training device once;
:func:`madeflow.fit` trains on them (each rank taking its rows of every mini-batch); the
validation and test splits are scored in model space and, through the space's log-Jacobian, in
data space (:mod:`madeflow.train.evaluation`, means over all ranks); the run folder is written by
:mod:`madeflow.runs.folder` and the pictures drawn by :mod:`madeflow.cli.plots`.

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

from madeflow.cli.data import Prepared, is_binary, prepare
from madeflow.cli.errors import EXIT_CODES, PeerFailure, UsageError, error_kind, say
from madeflow.cli.resume import resume_config
from madeflow.cli.settings import device_from, new_config, out_folder, size_to_data
from madeflow.data.csv_reader import read_csv_header
from madeflow.data.files import DataError, path_problem
from madeflow.data.rows import num_columns
from madeflow.runs.folder import (
    CONFIG,
    STATE,
    build_from_config,
    read_state,
    record_data_fingerprint,
    write_config,
    write_metrics,
    write_model,
    write_state,
)
from madeflow.runs.safe_io import CheckpointError, RunLock
from madeflow.train import distributed
from madeflow.train.evaluation import evaluate_log_prob, mean_and_stderr
from madeflow.train.loop import fit
from madeflow.train.state import EpochEnd, History, TrainingStateError

__all__ = ["cmd_fit"]


def cmd_fit(args: argparse.Namespace) -> int:
    """``madeflow fit``: train, report validation/test log-likelihoods, save the run."""
    device = device_from(args.device)
    if not distributed.launched():
        return _fit_main(args, device)
    device = distributed.init(device)  # the one place the process group is joined
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


def _new_run(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The config and folder of a new run (the folder absent or empty)."""
    if args.force:
        raise UsageError("--force only applies with --resume (to go on after a data change)")
    config = new_config(args)
    out = out_folder(args, config)
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
        config, out = resume_config(args) if args.resume else _new_run(args)
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
                if fresh and out.is_dir() and not (out / STATE).exists():
                    (out / CONFIG).unlink(missing_ok=True)
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
    """Train the run in ``out`` (locked by rank 0), then score and save it."""
    main = distributed.is_main()
    quiet = args.quiet or not main
    data = _load_data(config, device, record=main)
    model = build_from_config(config, device, error=UsageError)
    state = _resume_state(args, config, out, model, quiet) if main else None
    _announce(config, data, model, device, quiet)
    history = _train(args, config, out, model, data, state, quiet)
    if history is None:
        return EXIT_CODES["interrupted"]
    if main:
        _save(lambda: write_model(out, config, model, data.space), out)
        _save(lambda: write_config(out, config), out)
    scores, lines = _final_scores(model, data, config)
    if not main:
        return 0
    metrics = {"history": history.to_dict(), **scores, "seconds": history.seconds}
    _save(lambda: write_metrics(out, metrics), out)
    _plot(out, model, data, config, quiet)
    print(
        f"stopped after {history.epochs} epochs ({history.stopped}); best epoch "
        f"{history.best_epoch}; {history.seconds:.1f} s"
    )
    for line in lines:
        print(line)
    print(f"run saved to {out}")
    return 0


def _load_data(config: dict[str, Any], device: torch.device, record: bool) -> Prepared:
    """The run's splits, checked against its model, on ``device``.

    Sets ``input_dim`` in config, and the settings a new run leaves to the data
    (:func:`~madeflow.cli.settings.size_to_data`).

    With ``record`` (rank 0) the data file's fingerprint goes into the config.
    """
    data = prepare(config["data"])
    d = num_columns(data.train)
    name, options = config["model"]["name"], config["model"]["options"]
    if name == "made-bernoulli" and not is_binary(data.train, data.val, data.test):
        raise DataError("made-bernoulli needs binary data (every value 0 or 1)")
    if name.startswith("maf") and options["batch_norm"] and len(data.train) < 2:
        raise DataError(
            f"{config['data']['source']} leaves {len(data.train)} training row after the split; "
            "batch norm needs at least 2: give more data or drop --batch-norm"
        )
    config["model"]["input_dim"] = d
    size_to_data(config, d, len(data.train))
    _record_columns(config["data"])
    if record:
        record_data_fingerprint(config, (len(data.train) + len(data.val) + len(data.test), d))
    return data.to(device)


def _record_columns(data: dict[str, Any]) -> None:
    """Record a CSV file's header in the data section, so ``madeflow sample`` can write it."""
    source = Path(data["source"])
    if data["kind"] == "file" and source.suffix.lower() == ".csv" and "columns" not in data:
        columns = read_csv_header(source)
        if columns is not None:
            data["columns"] = columns


def _resume_state(
    args: argparse.Namespace,
    config: dict[str, Any],
    out: Path,
    model: torch.nn.Module,
    quiet: bool,
) -> dict[str, Any] | None:
    """Rank 0: the checked state to resume from (``None``: from scratch); writes config.json."""
    state = None
    if args.resume and (out / STATE).is_file():
        state = read_state(out, config, model)
        say(quiet, f"resuming {out} after epoch {state['epoch']}")
    elif args.resume:
        say(quiet, f"{out} has no completed epoch; starting from scratch")
    write_config(out, config)  # after the state passed its checks
    return state


def _announce(
    config: dict[str, Any],
    data: Prepared,
    model: torch.nn.Module,
    device: torch.device,
    quiet: bool,
) -> None:
    num_params = sum(p.numel() for p in model.parameters())
    ranks = distributed.world_size()
    say(
        quiet,
        f"fitting {config['model']['name']} (D={config['model']['input_dim']}, {num_params}"
        f" parameters) on {config['data']['source']}: {len(data.train)} train / "
        f"{len(data.val)} val / {len(data.test)} test, on {device}"
        + (f", data-parallel over {ranks} processes" if ranks > 1 else ""),
    )


class _Checkpoints:
    """fit's callback: ``train_state.pt`` every ``save_every`` seconds and at the end (rank 0).

    Without a progress bar (stderr not a terminal) it also prints a line every 10 epochs.
    """

    def __init__(self, out: Path, model_name: str, save_every: float, quiet: bool) -> None:
        self.out, self.model_name, self.save_every = out, model_name, save_every
        self.main = distributed.is_main()
        self.log_lines = not quiet and not sys.stderr.isatty()
        self.last_save = time.monotonic()

    def __call__(self, event: EpochEnd) -> None:
        if not self.main:
            return
        if self.log_lines and (event.epoch % 10 == 0 or event.last):
            h = event.history
            say(
                False,
                f"epoch {event.epoch}: train {event.train_log_lik:.3f}, val "
                f"{event.val_log_lik:.3f} (best {h.best_val_log_lik:.3f} at epoch "
                f"{h.best_epoch})",
            )
        now = time.monotonic()
        if now - self.last_save >= self.save_every or event.last:
            state = event.state()
            _save(lambda: write_state(self.out, self.model_name, state), self.out)
            self.last_save = now


def _train(
    args: argparse.Namespace,
    config: dict[str, Any],
    out: Path,
    model: torch.nn.Module,
    data: Prepared,
    state: dict[str, Any] | None,
    quiet: bool,
) -> History | None:
    """:func:`madeflow.fit` with the run's settings; ``None`` if interrupted (Ctrl-C)."""
    t = config["training"]
    try:
        return fit(
            model,
            data.train,
            data.val,
            max_epochs=t["max_epochs"],
            batch_size=t["batch_size"],
            lr=t["lr"],
            weight_decay=t["weight_decay"],
            patience=t["patience"],
            clip_grad_norm=t["clip_grad"] or None,
            seed=t["seed"],
            progress=False if quiet else None,
            callback=_Checkpoints(out, config["model"]["name"], args.save_every, quiet),
            state=state,
            augment=data.space.augmenter() if t.get("dequantize") else None,
            compile=getattr(args, "compile", False),
        )
    except KeyboardInterrupt:
        if distributed.is_main():
            print(
                f"madeflow: interrupted; continue with: madeflow fit --resume --out {out}",
                file=sys.stderr,
            )
        return None
    except TrainingStateError as err:
        raise CheckpointError(
            f"{out / STATE} is damaged: {err}; delete it to start the run again from scratch"
        ) from err


def _plot(
    out: Path, model: torch.nn.Module, data: Prepared, config: dict[str, Any], quiet: bool
) -> None:
    """Draw the run's pictures; a failure is a warning line (it must not lose a trained model)."""
    try:
        from madeflow.cli import plots

        plots.plot_run(out, model, data.space, data.test, config, seed=0)
    except Exception as err:
        say(quiet, f"madeflow: warning: could not draw samples.png: {err}")


def _save(write: Callable[[], None], out: Path) -> None:
    """Run ``write``; a failure after the first checkpoint says how to continue the run."""
    try:
        write()
    except CheckpointError as err:
        if (out / STATE).is_file():
            raise CheckpointError(
                f"{err}; the last checkpoint is kept: then continue with madeflow fit --resume "
                f"--out {out}"
            ) from err
        raise


def _final_scores(
    model: torch.nn.Module, data: Prepared, config: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Validation and test log-likelihoods (each rank scores its shard) and the lines to print."""
    metrics: dict[str, Any] = {}
    lines = []
    for split_name, x in (("val", data.val), ("test", data.test)):
        x = distributed.shard(x)
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
