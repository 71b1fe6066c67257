"""The ``distgan`` command line: train | config | shards | sample | export | colorize |
translate | latent | eval | bench.

Every user mistake ends in one line on stderr that names the file, key or value and what to do,
and a non-zero exit (2 for configuration mistakes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_RECIPE = "digits-cdcgan"


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
        figures = {k: v for k, v in row.items() if k.startswith("eval/") and k != "eval/images"}
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


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz")


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    from torchvision.utils import save_image

    from distgan import inference

    out = Path(args.out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        return _fail(f"--out {out}: use a .png/.jpg (grid) or .npz (arrays) file name", 2)
    if args.n < 1:
        return _fail(f"--n {args.n}: draw at least 1 sample", 2)
    trained = inference.load_trained(args.ckpt)
    batch, labels = inference.conditioning(trained, args.n, args.label, args.shards)
    images = inference.sample(trained, args.n, args.weights, args.seed, batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy().astype(np.int64)
        np.savez_compressed(out, **arrays)
    else:
        classes = len(labels.unique()) if labels is not None and args.label is None else 0
        nrow = classes or max(1, int(len(images) ** 0.5))
        save_image(images.float() / 255, out, nrow=nrow)
    print(f"distgan: wrote {len(images)} samples to {out}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from distgan import inference

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        return _fail(f"--out {out}: use a .safetensors file name", 2)
    trained = inference.load_trained(args.ckpt)
    names = args.nets.split(",") if args.nets else list(trained.family.inference)
    tensors, metadata = inference.export_tensors(trained, names, args.weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    print(
        f"distgan: exported {metadata['networks']} ({len(tensors)} tensors) to {out}",
        file=sys.stderr,
    )
    return 0


def _apply(args: argparse.Namespace, family: str, convert_with) -> int:
    """Run ``convert_with(trained)`` over the input files (colorize, translate)."""
    from distgan import apply, inference
    from distgan.errors import ConfigError

    trained = inference.load_trained(args.ckpt)
    if family and trained.cfg.family != family:
        raise ConfigError(
            f"--ckpt {args.ckpt} is a '{trained.cfg.family}' model; `distgan {args.command}` "
            f"takes a '{family}' one"
        )
    failed = apply.apply_to_files(args.images, Path(args.out), convert_with(trained), args.command)
    for line in failed:
        print(f"distgan: {line}", file=sys.stderr)
    done = len(args.images) - len(failed)
    print(f"distgan: wrote {done} images to {args.out}", file=sys.stderr)
    return 1 if failed else 0


def cmd_colorize(args: argparse.Namespace) -> int:
    from distgan import apply

    return _apply(args, "colorize", lambda trained: lambda rgb: apply.colorize(trained, rgb))


def cmd_translate(args: argparse.Namespace) -> int:
    from distgan import apply

    def convert_with(trained):
        return lambda rgb: apply.translate(trained, rgb, args.direction)

    return _apply(args, "", convert_with)


def cmd_eval(args: argparse.Namespace) -> int:
    from distgan.offline_eval import evaluate_checkpoint, reference_statistics, table

    if args.what == "ref":
        if not args.shards:
            return _fail("distgan eval ref: give --shards DIR", 2)
        path = reference_statistics(
            args.shards, args.n or 1000, args.extractor or "inception", args.inception, args.ckpt,
            args.batch_size or 100,
        )  # fmt: skip
        if os.environ.get("RANK", "0") == "0":
            print(f"distgan: cached the reference statistics in {path}", file=sys.stderr)
        return 0
    if not args.ckpt:
        return _fail("distgan eval: give --ckpt (a checkpoint file or run folder)", 2)

    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    figures, protocol, out = evaluate_checkpoint(
        args.ckpt, metrics, args.n, args.shards, args.inception, args.batch_size, args.extractor
    )
    if os.environ.get("RANK", "0") == "0":
        if args.json:
            print(json.dumps({**figures, "protocol": protocol}, indent=1))
        else:
            print(table(figures, protocol))
        print(f"distgan: wrote {out}", file=sys.stderr)
    return 0


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
    p.add_argument("--out", required=True, help=".png grid or .npz uint8 arrays")
    p.set_defaults(func=cmd_sample)

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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("colorize", help="colorize photos with a colorization checkpoint")
    p.add_argument("--ckpt", required=True)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files of any size and mode")
    p.add_argument("--out", required=True, help="folder for OUT/<input stem>.png")
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("translate", help="translate images with a pix2pix/CycleGAN checkpoint")
    p.add_argument("--ckpt", required=True)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files of any size and mode")
    p.add_argument("--out", required=True, help="folder for OUT/<input stem>.png")
    p.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    p.set_defaults(func=cmd_translate)

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
    p.add_argument("--batch-size", type=int, default=None, help="per process")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_eval)

    from distgan.latent.commands import add_parser as add_latent_parser

    add_latent_parser(sub)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    from distgan.engine.signals import EXIT_REQUEUE, StopTraining
    from distgan.errors import DistganError

    args = build_parser().parse_args(argv)
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
