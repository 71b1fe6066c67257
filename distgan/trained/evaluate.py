"""``distgan eval``: the evaluators of a checkpoint, outside training, on one or several
processes (``accelerate launch … -m distgan eval …``); ``distgan eval ref``: the reference
statistics of a shard folder, computed once and cached next to it (evaluation/_reference.py).

Both follow the evaluation protocol of training (distgan/evaluation/protocol.py: the same
held-out samples, the same noise for each sample on any number of processes) with the run's
precision and memory format, so they reproduce the figures the run logged at that step. The
figures, with their protocol (extractor and its sha256, N, resize, reference shards, seeding), are
printed as a table (``--json``: JSON) and then written to ``<run>/eval/step-N.json``, where <run>
is the folder of the checkpoint given (``<run>/checkpoints/step-N.pt``), never the ``run.dir``
recorded in it: a moved or copied run is evaluated into itself, the original left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from distgan.errors import ConfigError, DistganError, EvaluationFailed
from distgan.evaluation import build_evaluators, protocol
from distgan.families import build_family
from distgan.trained.model import load


def evaluate_checkpoint(
    ckpt: str,
    metrics: list[str] | None,
    n: int | None,
    shards: str | None,
    inception: str | None,
    batch_size: int | None = None,
    extractor: str | None = None,
) -> tuple[dict[str, float], dict[str, Any], Path | None]:
    """(figures keyed fid, kid, …, the protocol, the JSON file written on rank 0)."""
    from distgan.data.info import DatasetInfo
    from distgan.engine.build import evaluating, to_device
    from distgan.engine.runtime import Precision, resolve_settings

    state = _open()
    device = state.device
    model = load(ckpt, device)
    updates = {"metrics": metrics or model.cfg.eval.metrics, "n": n or model.cfg.eval.n}
    given = dict(shards=shards, weights=inception, batch_size=batch_size, extractor=extractor)
    updates.update({key: value for key, value in given.items() if value})
    cfg = model.cfg.model_copy(update={"eval": model.cfg.eval.model_copy(update=updates)})
    if not cfg.eval.metrics:
        raise ConfigError("--metrics: name at least one metric")
    # the family under this evaluation's config (its evaluators read cfg.eval)
    data = {name: DatasetInfo(**info) for name, info in model.state["data_info"].items()}
    family = build_family(cfg, data)
    settings = resolve_settings(cfg, device)
    settings.apply([model.nets[name] for name in model.nets])
    precision = Precision(settings.precision, device, [])
    rank, world = state.process_index, state.num_processes
    evaluators = build_evaluators(cfg, family, device)
    try:
        with evaluating(model.nets) as nets:
            values = protocol.run(
                cfg,
                evaluators,
                family,
                nets,
                device,
                rank,
                world,
                prepare=lambda batch: settings.batch(to_device(batch, device)),
                autocast=precision.autocast,
            )
    except EvaluationFailed as err:  # every rank raises it: close the group, then one line
        _close(state)
        raise EvaluationFailed(f"evaluating {ckpt} failed: {err}") from None
    n = int(values.pop("eval/n"))  # the samples evaluated (eval.n or fewer)
    figures = {key.removeprefix("eval/"): value for key, value in values.items()}
    extractors = [e.extractor.protocol() for e in evaluators if hasattr(e, "extractor")]
    recorded = {
        "checkpoint_step": model.step,
        "recipe": cfg.name,
        **protocol.describe(cfg, world, n),
        "extractors": extractors,
    }
    out = run_folder_of(ckpt) / "eval" / f"step-{model.step:08d}.json"
    _close(state)
    return figures, recorded, out if state.is_main_process else None


def run_folder_of(ckpt: str | Path) -> Path:
    """The run folder holding the checkpoint ``ckpt`` names: ``RUN`` for ``RUN/checkpoints/
    step-N.pt``, ``RUN/checkpoints`` or ``RUN``; a loose file's own folder."""
    path = Path(ckpt)
    if path.is_dir():
        return path.parent if path.name == "checkpoints" else path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def write_figures(out: Path, figures: dict[str, float], recorded: dict[str, Any]) -> bool:
    """``out`` as JSON; a folder that cannot be written is warned about once (the figures are
    already printed)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"figures": figures, "protocol": recorded}, indent=1) + "\n")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        print(
            f"distgan: warning: could not write {out} ({reason}); the figures are above",
            file=sys.stderr,
        )
        return False
    return True


def _open():
    """This process's Accelerator (several under ``accelerate launch``), refusing the
    one-process ``--cpu`` trap as training does."""
    from distgan.engine.runtime import CPU_TRAP, fell_into_cpu_trap, process_accelerator
    from distgan.errors import LaunchError

    if fell_into_cpu_trap():
        raise LaunchError(CPU_TRAP)
    return process_accelerator(collective_timeout=600)


def _close(state) -> None:
    """All ranks done, then the process group closed (a rank that exits with the group open
    can abort in gloo's threads: "terminate called without an active exception")."""
    state.wait_for_everyone()
    state.end_training()


def table(figures: dict[str, float], recorded: dict[str, Any]) -> str:
    width = max(len(k) for k in figures)
    lines = [f"{key:<{width}}  {value:.6g}" for key, value in figures.items()]
    for extractor in recorded["extractors"]:
        lines.append(
            f"({extractor['extractor']} {extractor['sha256'][:12]}…, {extractor['resize']})"
        )
    lines.append(
        f"(N = {recorded['n']}: {recorded['reference']}; {recorded['processes']} process(es))"
    )
    return "\n".join(lines)


def reference_statistics(
    shards: str,
    n: int,
    extractor: str,
    inception: str | None,
    ckpt: str | None = None,
    batch_size: int = 100,
) -> Path:
    """Cache the features of the first ``n`` held-out images of ``shards`` for ``extractor``
    (the transforms and seed of the run of ``ckpt``, else the default recipe's); rank 0's path."""
    from distgan.data.info import dataset_info
    from distgan.data.shards import read_manifest
    from distgan.engine.build import to_device
    from distgan.engine.runtime import resolve_settings
    from distgan.evaluation.base import all_reduce_sum
    from distgan.evaluation.fidelity import Reference
    from distgan.features import get_extractor
    from distgan.recipe import load_recipe

    state = _open()
    base = load(ckpt).cfg if ckpt else load_recipe("digits-cdcgan")
    eval_cfg = base.eval.model_copy(
        update={"shards": shards, "n": n, "extractor": extractor, "weights": inception,
                "batch_size": batch_size, "metrics": ["fid", "kid", "pr"], "best": None}
    )  # fmt: skip
    cfg = base.model_copy(update={"eval": eval_cfg})
    channels = dataset_info(read_manifest(shards), protocol.transforms_of(cfg)).channels
    features = get_extractor(extractor, state.device, channels, inception)
    real = Reference(cfg, features, keep_features=True, read_cache=False)
    if real.cache_file is None:
        raise ConfigError(f"--shards {shards}: no manifest.json there")
    rank, world = state.process_index, state.num_processes
    settings = resolve_settings(cfg, state.device)  # the memory format `distgan eval` reads in
    for batch in protocol.held_out(cfg, n, batch_size, rank, world):
        real.add(settings.batch(to_device(batch, state.device))["image"].float(), batch["index"])
    real.statistics(all_reduce_sum)
    _close(state)
    if state.is_main_process and not real.saved:  # (the warning above says why)
        raise DistganError(f"could not write the reference statistics {real.cache_file}")
    return real.cache_file


def eval_command(args: argparse.Namespace) -> int:
    """``distgan eval --ckpt RUN …`` and ``distgan eval ref --shards DIR …``."""
    main_process = os.environ.get("RANK", "0") == "0"
    if args.what == "ref":
        if not args.shards:
            raise ConfigError("distgan eval ref: give --shards DIR")
        path = reference_statistics(
            args.shards, args.n or 1000, args.extractor or "inception", args.inception, args.ckpt,
            args.batch_size or 100,
        )  # fmt: skip
        if main_process:
            print(f"distgan: cached the reference statistics in {path}", file=sys.stderr)
        return 0
    if not args.ckpt:
        raise ConfigError("distgan eval: give --ckpt (a checkpoint file or run folder)")
    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    figures, recorded, out = evaluate_checkpoint(
        args.ckpt, metrics, args.n, args.shards, args.inception, args.batch_size, args.extractor
    )
    if main_process:
        shown = {**figures, "protocol": recorded}
        print(json.dumps(shown, indent=1) if args.json else table(figures, recorded), flush=True)
        if write_figures(out, figures, recorded):
            print(f"distgan: wrote {out}", file=sys.stderr)
    return 0
