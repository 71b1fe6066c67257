"""``distgan eval``: the evaluators of a checkpoint, outside training, on one or several
processes (``accelerate launch … -m distgan eval …``); ``distgan eval ref``: the reference
statistics of a shard folder, computed once and cached next to it (evaluation/_reference.py).

It repeats the engine's evaluation exactly — the same held-out samples, the same noise seeds per
rank, the run's precision and memory format — so on the same number of processes it reproduces
the figures the run logged at that step. The figures, with their protocol (extractor and its
sha256, N, resize, reference shards), are printed as a table (``--json``: JSON) and written to
``<run>/eval/step-N.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from distgan import inference
from distgan.errors import ConfigError


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
    from distgan.engine.actions import evaluation_seed, held_out_of
    from distgan.engine.build import evaluating
    from distgan.engine.runtime import Precision, resolve_settings
    from distgan.evaluation import build_evaluators, evaluate

    state = _open()
    device = state.device
    trained = inference.load_trained(ckpt, device)
    cfg = trained.cfg
    updates = {"metrics": metrics or cfg.eval.metrics, "n": n or cfg.eval.n}
    if shards:
        updates["shards"] = shards
    if inception:
        updates["weights"] = inception
    if batch_size:
        updates["batch_size"] = batch_size
    if extractor:
        updates["extractor"] = extractor
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update=updates)})
    if not cfg.eval.metrics:
        raise ConfigError("--metrics: name at least one metric")
    settings = resolve_settings(cfg, device)
    nets = trained.nets(trained.weights_choice(None, trained.family.inference))
    settings.apply([nets[name] for name in nets])
    precision = Precision(settings.precision, device, [])
    rank, world = state.process_index, state.num_processes
    evaluators = build_evaluators(cfg, trained.family, device)
    e = cfg.eval
    with evaluating(nets) as eval_nets:
        values = evaluate(
            evaluators,
            trained.family,
            eval_nets,
            held_out_of(cfg, device, settings, e.n, e.batch_size, rank, world),
            torch.Generator(device).manual_seed(evaluation_seed(cfg, rank)),
            precision.autocast,
        )
    figures = {key.removeprefix("eval/"): value for key, value in values.items()}
    protocol = _protocol(cfg, evaluators, trained, world)
    out = None
    if state.is_main_process:
        out = cfg.run_dir / "eval" / f"step-{trained.step:08d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"figures": figures, "protocol": protocol}, indent=1) + "\n")
    _close(state)
    return figures, protocol, out


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


def _protocol(cfg, evaluators, trained, world: int) -> dict[str, Any]:
    extractors = [e.extractor.protocol() for e in evaluators if hasattr(e, "extractor")]
    shards = cfg.eval.shards or cfg.data.shards
    return {
        "checkpoint_step": trained.step,
        "recipe": cfg.name,
        "n": cfg.eval.n,
        "reference": f"the first {cfg.eval.n} held-out samples of {shards} (seed {cfg.train.seed})",
        "extractors": extractors,
        "processes": world,
        "metrics": cfg.eval.metrics,
    }


def table(figures: dict[str, float], protocol: dict[str, Any]) -> str:
    width = max(len(k) for k in figures)
    lines = [f"{key:<{width}}  {value:.6g}" for key, value in figures.items()]
    for extractor in protocol["extractors"]:
        lines.append(
            f"({extractor['extractor']} {extractor['sha256'][:12]}…, {extractor['resize']})"
        )
    lines.append(
        f"(N = {protocol['n']}: {protocol['reference']}; {protocol['processes']} process(es))"
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
    from types import SimpleNamespace

    from distgan.data.shards import read_manifest
    from distgan.data.stream import dataset_info
    from distgan.engine.actions import held_out_of
    from distgan.engine.build import transforms_of
    from distgan.engine.runtime import resolve_settings
    from distgan.evaluation.base import all_reduce_sum
    from distgan.evaluation.fidelity import Fidelity
    from distgan.recipe import load_recipe

    state = _open()
    base = inference.load_trained(ckpt).cfg if ckpt else load_recipe("digits-cdcgan")
    eval_cfg = base.eval.model_copy(
        update={"shards": shards, "n": n, "extractor": extractor, "weights": inception,
                "batch_size": batch_size, "metrics": ["fid", "kid", "pr"], "best": None}
    )  # fmt: skip
    cfg = base.model_copy(update={"eval": eval_cfg})
    info = dataset_info(read_manifest(shards), transforms_of(cfg))
    family = SimpleNamespace(cfg=cfg, data=info)
    device = state.device
    fidelity = Fidelity(cfg, family, device, ["fid", "kid", "pr"])
    if fidelity.cache_file is None:
        raise ConfigError(f"--shards {shards}: no manifest.json there")
    rank, world = state.process_index, state.num_processes
    settings = resolve_settings(cfg, device)
    for batch in held_out_of(cfg, device, settings, n, batch_size, rank, world):
        fidelity.add_reference(batch["image"].float())
    fidelity.cached = None
    fidelity.reference(all_reduce_sum)
    _close(state)
    return fidelity.cache_file
