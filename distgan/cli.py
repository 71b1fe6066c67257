"""The ``distgan`` command line: train | config | shards | sample | export | colorize |
translate | latent | eval | bench.

Every user mistake ends in one line on stderr that names the file, key or value and what to do,
and a non-zero exit (2 for configuration mistakes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

DEFAULT_RECIPE = "digits-cdcgan"
COUNTS = ("eval/images", "eval/n")  # logged with the figures, not figures themselves


def _fail(message: str, code: int) -> int:
    print(f"distgan: error: {message}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from distgan.engine.trainer import train
    from distgan.recipe import load_recipe

    recipe, overrides = _split_recipe(args.recipe, args.overrides)
    cfg = load_recipe(recipe, overrides)
    run_dir = train(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(f"distgan: finished; run folder: {run_dir}", file=sys.stderr)
        final = _last_evaluation(run_dir / "metrics.jsonl")
        if final:
            figures = "  ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in final.items())
            print(f"distgan: evaluation at the end: {figures}", file=sys.stderr)
    return 0


def _last_evaluation(path: Path) -> dict[str, float]:
    """The last ``eval/…`` figures a run logged (for the closing line)."""
    if not path.is_file():
        return {}
    for line in reversed(path.read_text().splitlines()):
        row = json.loads(line)
        figures = {k: v for k, v in row.items() if k.startswith("eval/") and k not in COUNTS}
        if figures:
            return figures
    return {}


def cmd_config(args: argparse.Namespace) -> int:
    from distgan.config import to_yaml
    from distgan.recipe import load_recipe

    recipe, overrides = _split_recipe(args.recipe, args.overrides)
    if args.list:
        from distgan.config import recipe_names

        print("\n".join(recipe_names()))
        return 0
    print(to_yaml(load_recipe(recipe, overrides)), end="")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from distgan.data.sources import SOURCES

    if args.source == "inspect":
        from distgan.data.inspect import inspect

        inspect(args.dir, args.out, n=args.n, seed=args.seed, force=args.force)
        return 0
    from distgan.data.shard_folder import check_replaceable

    check_replaceable(Path(args.out), args.overwrite)  # early; checked again under the lock
    manifest = SOURCES[args.source].convert(args)
    counts = [s["count"] for s in manifest["shards"]]
    print(
        f"distgan: wrote {manifest['total']} samples in {len(counts)} shards "
        f"({min(counts)}–{max(counts)} each) to {args.out}",
        file=sys.stderr,
    )
    skipped = manifest.get("skipped_sources", [])
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; …" if len(skipped) > 3 else "")
        print(
            f"distgan: skipped {len(skipped)} source file(s), all listed in the manifest's "
            f"skipped_sources: {shown}",
            file=sys.stderr,
        )
    return 0


def handler(module: str, name: str):
    """The command handler ``name`` of ``module``, imported when the command runs (so parsing
    stays light and each handler lives next to its code)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


def cmd_bench(args: argparse.Namespace) -> int:
    from distgan.bench import get_bench
    from distgan.bench._common import describe_machine, machine

    info = machine()  # every speed figure names the CPU it was taken on
    print(f"distgan bench {args.bench} on {describe_machine(info)}", file=sys.stderr)
    result = get_bench(args.bench).run(args)
    if args.json:
        print(json.dumps({**result, "machine": info}, indent=2))
    return 0


# ----------------------------------------------------------------------------- parsing


def _split_recipe(recipe: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """``distgan train train.steps=5`` means the default recipe with an override."""
    if recipe is not None and "=" in recipe:
        return DEFAULT_RECIPE, [recipe, *overrides]
    return recipe or DEFAULT_RECIPE, overrides


def _first_line(doc: str | None) -> str:
    """A module docstring's first line as argparse help (which treats % as a format)."""
    return (doc or "").strip().splitlines()[0].replace("%", "%%") if doc else ""


def build_parser() -> argparse.ArgumentParser:
    from distgan import __version__

    parser = argparse.ArgumentParser(
        prog="distgan", description="Train GANs on one CPU or across many GPUs and nodes."
    )
    parser.add_argument("--version", action="version", version=f"distgan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recipe (default: digits-cdcgan)")
    p.add_argument("recipe", nargs="?", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.steps=100 run.dir=runs/x")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("config", help="print a recipe's resolved config as YAML")
    p.add_argument("recipe", nargs="?", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--list", action="store_true", help="list the shipped recipes")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("shards", help="convert a data set into WebDataset shards")
    shard_sub = p.add_subparsers(dest="source", required=True)
    from distgan.data.sources import SOURCES

    for name, module in SOURCES.items():
        sp = shard_sub.add_parser(name, help=_first_line(module.__doc__))
        sp.add_argument("--out", required=True, help="output folder")
        sp.add_argument(
            "--overwrite", action="store_true", help="replace the shards --out already holds"
        )
        module.add_arguments(sp)
    sp = shard_sub.add_parser(
        "inspect", help="print a shard folder's summary, draw a contact sheet"
    )
    sp.add_argument("dir", help="shard folder")
    sp.add_argument(
        "--out", default=None, help="contact sheet PNG (./<DIR's name>-contact-sheet.png)"
    )
    sp.add_argument("--force", action="store_true", help="replace an existing --out file")
    sp.add_argument("--n", type=int, default=32, help="samples on the sheet (32)")
    sp.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("sample", help="draw samples from a checkpoint")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--label", type=int, default=None, help="class index (conditional models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--weights",
        choices=["ema", "raw"],
        default=None,
        help="EMA copies or trained weights (default: EMA where the family keeps it)",
    )
    p.add_argument("--shards", default=None, help="input images (families that translate data)")
    p.add_argument(
        "--truncation",
        type=float,
        default=None,
        metavar="PSI",
        help="truncation trick (StyleGAN2): w = lerp(w_avg, w, PSI); 1 = none, 0 = the average",
    )
    p.add_argument("--out", required=True, help=".png grid or .npz uint8 arrays")
    p.set_defaults(func=handler("distgan.trained.sample", "sample_command"))

    p = sub.add_parser("export", help="write networks as safetensors")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True, help="FILE.safetensors")
    p.add_argument("--nets", default=None, help="comma-separated (default: what sampling needs)")
    p.add_argument(
        "--weights",
        choices=["ema", "raw", "both"],
        default="both",
        help="trained weights, EMA copies, or both (default; EMA where the family keeps it)",
    )
    p.set_defaults(func=handler("distgan.trained.export", "export_command"))

    p = sub.add_parser("colorize", help="colorize photos with a colorization checkpoint")
    p.add_argument("--ckpt", required=True)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files of any size and mode")
    p.add_argument("--out", required=True, help="folder for OUT/<input stem>.png")
    p.add_argument("--force", action="store_true", help="replace existing OUT/<stem>.png files")
    p.set_defaults(func=handler("distgan.trained.files", "colorize_command"))

    p = sub.add_parser("translate", help="translate images with a pix2pix/CycleGAN checkpoint")
    p.add_argument("--ckpt", required=True)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files of any size and mode")
    p.add_argument("--out", required=True, help="folder for OUT/<input stem>.png")
    p.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    p.add_argument("--force", action="store_true", help="replace existing OUT/<stem>.png files")
    p.set_defaults(func=handler("distgan.trained.files", "translate_command"))

    p = sub.add_parser("eval", help="evaluate a checkpoint: FID, KID, IS, PR, digits")
    p.add_argument("what", nargs="?", choices=["ref"], help="ref: cache --shards' statistics")
    p.add_argument("--ckpt", default=None, help="checkpoint file or run folder")
    p.add_argument(
        "--extractor",
        choices=["inception", "random"],
        default=None,
        help="features of fid/kid/is/pr (default: eval.extractor; ref: inception)",
    )
    p.add_argument("--metrics", default=None, help="fid,kid,is,pr,digits (default: eval.metrics)")
    p.add_argument("--n", type=int, default=None, help="samples (default: the run's eval.n)")
    p.add_argument("--shards", default=None, help="reference shards (default: the run's)")
    p.add_argument("--inception", default=None, help="Inception weights (or $DISTGAN_INCEPTION)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="per process (sets the noise blocks)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=handler("distgan.trained.evaluate", "eval_command"))

    from distgan.trained.latent.commands import add_parser as add_latent_parser

    add_latent_parser(sub)

    p = sub.add_parser(
        "launch",
        help="accelerate launch -m distgan COMMAND …, ending in one line and distgan's exit "
        "codes (75: stopped cleanly, resume with the same command)",
        usage="distgan launch [accelerate launch options] COMMAND [ARGS ...]",
    )

    from distgan.bench import bench_names, get_bench

    names = bench_names()
    if names:
        p = sub.add_parser("bench", help="measure speed (tables; --json for JSON)")
        bench_sub = p.add_subparsers(dest="bench", required=True)
        for name in names:
            module = get_bench(name)
            bp = bench_sub.add_parser(name, help=_first_line(module.__doc__))
            bp.add_argument("--json", action="store_true", help="also print the figures as JSON")
            module.add_arguments(bp)
        p.set_defaults(func=cmd_bench)
    parser.distgan_commands = [name for name in sub.choices if name != "launch"]
    return parser


def main(argv: list[str] | None = None) -> int:
    code = run_command(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_before_finalizing(code)
    return code


def exit_before_finalizing(code: int) -> NoReturn:
    """End a process of a multi-process run without Python's interpreter finalization.

    A gloo worker thread may still hold the last reference to a finished collective's tensor
    (ours, DeepSpeed's) when the interpreter shuts down; dropping it needs the GIL, and taking
    the GIL during finalization aborts the process ("terminate called without an active
    exception", exit −6, pytorch/pytorch#190489), which the launcher reports as a failed run
    after everything was saved. Everything that must outlive the process is written and
    closed by now (checkpoints, metrics, the W&B run): flush the streams and leave."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_command(argv: list[str] | None = None) -> int:
    from distgan.engine.signals import EXIT_REQUEUE, StopTraining
    from distgan.errors import DistganError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:  # accelerate's options, then a command: not argparse's grammar
        from distgan.launching import launch

        return launch(argv[1:], commands=set(parser.distgan_commands))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DistganError as err:
        return _fail(str(err), err.exit_code)
    except StopTraining as stop:  # (the trainer has logged it)
        marker = os.environ.get("DISTGAN_STOPPED")  # read by slurm/requeue.sh
        if marker:
            Path(marker).write_text(f"{stop.reason} {stop.step}\n")
        return EXIT_REQUEUE
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
