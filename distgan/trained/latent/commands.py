"""``distgan latent interpolate|attribute|arithmetic|traverse|histogram|tsne`` (and StyleGAN2's
``mix|project``, distgan/trained/latent/styles.py): PNG figures
(and .npz arrays) from a checkpoint or a run folder, built on the Python API
(distgan/trained/model.py); real images are read in the evaluation protocol's held-out order
(distgan/evaluation/protocol.py). With ``--wandb`` each figure is also logged to the run's W&B
run (offline unless logged in)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from distgan.errors import ConfigError
from distgan.evaluation import protocol
from distgan.trained.latent import figures, space, styles
from distgan.trained.model import Model, load
from distgan.trained.outputs import check_fits, check_out, save_npz

GRIDS = (".png", ".jpg", ".jpeg")
# what each tool writes (checked before the model is loaded)
OUT_SUFFIXES = {
    "interpolate": (*GRIDS, ".npz"),
    "attribute": (".npz",),
    "arithmetic": (*GRIDS, ".npz"),
    "traverse": (".png",),
    "histogram": (".png", ".pdf", ".svg"),
    "tsne": (".png", ".pdf", ".svg"),
}


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integers") from None


def add_parser(sub) -> None:
    p = sub.add_parser("latent", help="latent-space figures: interpolate, attribute, …")
    tools = p.add_subparsers(dest="tool", required=True)

    def tool(name: str, help: str, out: str = ".png file") -> argparse.ArgumentParser:
        t = tools.add_parser(name, help=help)
        t.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
        t.add_argument("--out", required=True, help=out)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--weights", choices=["ema", "raw"], default=None)
        t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
        t.add_argument("--wandb", action="store_true", help="also log to the run's W&B")
        t.set_defaults(func=TOOLS[name])
        return t

    def shards(t: argparse.ArgumentParser, n: int | None) -> None:
        t.add_argument("--shards", default=None, help="shard folder (default: the run's)")
        t.add_argument("--n", type=int, default=n, help=f"images to read ({n or 'all'})")

    t = tool("interpolate", "lerp/slerp strips between two seeds or encoded images", ".png/.npz")
    t.add_argument("--steps", type=int, default=8, help="images a strip (8)")
    t.add_argument("--mode", choices=list(space.INTERPOLATIONS), default="slerp")
    t.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3], help="pairs, a strip each")
    t.add_argument("--label", type=int, default=None, help="class (conditional models; 0)")
    t.add_argument("--images", type=_ints, default=None, help="VAE: pairs of --shards images")
    t.add_argument("--shards", default=None, help="shard folder for --images")

    t = tool("attribute", "an attribute's direction in latent space", "V.npz")
    shards(t, None)
    t.add_argument("--attr", default=None, help="attribute name (e.g. Smiling)")
    t.add_argument("--label", type=int, default=None, help="class index")
    t.add_argument("--samples", type=int, default=4000, help="GANs: generated latents (4000)")
    t.add_argument("--classifier-steps", type=int, default=600, help="GANs: classifier steps")

    t = tool("arithmetic", "z + α·v grids (VAE: on encoded images)", ".png grid or .npz")
    shards(t, 8)
    t.add_argument("--vector", required=True, help="V.npz of `distgan latent attribute`")
    t.add_argument("--alpha", type=float, default=3.0, help="α (grids span −|α| … |α|)")
    t.add_argument("--columns", type=int, default=9)

    t = tool("traverse", "EigenGAN: each layer's dimensions over [−r, r]")
    t.add_argument("--range", type=float, default=4.5)
    t.add_argument("--columns", type=int, default=9)
    t.add_argument("--layer", type=int, default=None, help="one layer (1-based); default all")

    t = tool("histogram", "histograms of encoded latents against N(0, 1) (VAE)")
    shards(t, 1000)

    t = tool("tsne", "a 2-D t-SNE of encodings coloured by label or attribute (VAE)")
    shards(t, 1000)
    t.add_argument("--attr", default=None, help="colour by this attribute (default: label)")
    t.add_argument("--perplexity", type=float, default=30.0)

    styles.add_parsers(tools)  # StyleGAN2: mix, project


def _model(args: argparse.Namespace) -> Model:
    """The model of ``--ckpt``, once ``--out`` is known to be a file name the tool writes."""
    suffixes = OUT_SUFFIXES[args.tool]
    check_out(Path(args.out), suffixes, "/".join(suffixes))
    model = load(args.ckpt, args.device, args.weights)
    label = getattr(args, "label", None)
    if label is not None and model.num_classes and not 0 <= label < model.num_classes:
        raise ConfigError(f"--label {label}: this model's classes are 0–{model.num_classes - 1}")
    return model


class Shards:
    """``--shards`` (default: the run's ``eval.shards``, else ``data.shards``) read in the
    evaluation protocol's held-out order, with the run's transforms and seed."""

    def __init__(self, model: Model, args) -> None:
        from distgan.data.info import dataset_info
        from distgan.data.shards import read_manifest

        self.cfg = model.cfg
        self.folder = protocol.shards_of(model.cfg, args.shards)
        if isinstance(self.folder, dict):
            raise ConfigError("give --shards: this run reads several shard folders")
        self.info = dataset_info(read_manifest(self.folder), protocol.transforms_of(model.cfg))

    def batches(self, n: int | None) -> list[dict]:
        """The first ``n`` (default: all) held-out samples, in batches of 256."""
        count = min(n or self.info.total, self.info.total)
        return list(protocol.held_out(self.cfg, count, 256, shards=self.folder))

    @staticmethod
    def images(batches: list[dict]) -> torch.Tensor:
        """Their images in [0, 1]."""
        return torch.cat([(b["image"].float() + 1) / 2 for b in batches])


def _labelled(model: Model, args, attr: str | None, label: int | None, n: int | None):
    """The images of ``--shards`` and whether each has the attribute/label."""
    shards = Shards(model, args)
    name, target = space.target_of(shards.info, attr, label)
    return space.read_labelled(iter(shards.batches(n)), target, name)


def _encode(model: Model, images: torch.Tensor, chunk: int = 256):
    parts = [model.encode(part, log_var=True) for part in images.split(chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _decode(model: Model, z: torch.Tensor, labels=None, chunk: int = 256) -> torch.Tensor:
    return torch.cat([model.decode(part, labels) for part in z.split(chunk)])


def _done(args, model: Model, paths: list[Path], what: str) -> int:
    for path in paths:
        print(f"distgan: wrote {what} to {path}", file=sys.stderr)
    if args.wandb:
        figures.log_to_wandb(model, args.tool, paths)
    return 0


def _uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [0, 1] → uint8 N×H×W×C."""
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------- tools


def cmd_interpolate(args: argparse.Namespace) -> int:
    model, out = _model(args), Path(args.out)
    pairs = args.images if args.images is not None else args.seeds
    if len(pairs) % 2 or not pairs or min(pairs) < 0:
        raise ConfigError("--seeds/--images: give pairs of numbers ≥ 0 (A,B or A,B,C,D …)")
    if args.label is not None and not model.num_classes:
        raise ConfigError(f"--label: recipe {model.cfg.name} is not class-conditional")
    labels = (args.label or 0) if model.num_classes else None
    count, data = len(pairs) // 2 * args.steps, model.family.data
    image = data.channels * data.resolution**2
    grid = out.suffix.lower() != ".npz"
    memory = count * (4 * image * (1 + 6 * grid) + 4 * model.latent_dim)
    pixels = count * (data.resolution + 2) ** 2 if grid else 0
    check_fits(f"--steps {args.steps}", f"{count:,} images", out, memory, image * count, pixels)
    if args.images is not None:  # VAE: between encoded real images
        ends = model.encode(_images(model, args, max(pairs) + 1)[pairs])
    else:
        ends = torch.cat([model.latents(1, seed=s) for s in pairs])
    strips = [
        space.path(ends[i], ends[i + 1], args.steps, args.mode) for i in range(0, len(pairs), 2)
    ]
    latents = torch.cat(strips)
    # one image at a time: the endpoints are exactly what sample(1, seed)/decode(μ) give
    images = torch.cat([model.decode(z[None], labels) for z in latents])
    if out.suffix.lower() == ".npz":
        save_npz(out, images=_uint8(images), latents=latents.numpy())
    else:
        figures.save_grid(images, out, args.steps)
    return _done(args, model, [out], f"{len(strips)} {args.mode} strips")


def _images(model: Model, args, n: int) -> torch.Tensor:
    """The first ``n`` images of ``--shards`` (default: the run's data), in [0, 1]."""
    shards = Shards(model, args)
    images = shards.images(shards.batches(n))
    if len(images) < n:
        raise ConfigError(f"--shards {shards.folder}: {len(images)} images, fewer than {n}")
    return images


def cmd_attribute(args: argparse.Namespace) -> int:
    model, out = _model(args), Path(args.out)
    if model.num_classes and args.label is not None:
        raise ConfigError(
            f"recipe {model.cfg.name} takes the class as an input (distgan sample --label K), "
            "not as a direction; use --attr or an unconditional model"
        )
    data = _labelled(model, args, args.attr, args.label, args.n)
    meta = {"attr": args.attr or "", "label": -1 if args.label is None else args.label}
    try:
        mu, _ = _encode(model, data.images)
        route = "vae"
    except ConfigError:  # no encoder: the classifier route
        mu, route = None, "gan"
    if mu is not None:
        vector, norm = space.vae_direction(mu, data.has)
        meta.update(route=route, norm=norm, with_count=int(data.has.sum()), n=len(data.has))
        summary = f"|mean μ with − without| = {norm:.3f}"
    else:
        classifier = space.train_classifier(data, args.classifier_steps, args.seed)
        labels = None
        if model.num_classes:  # conditional: random classes, the latent carries the rest
            labels = torch.arange(args.samples) % model.num_classes

        def decode(z: torch.Tensor, _labels=labels) -> torch.Tensor:
            part = None if _labels is None else _labels[: len(z)]
            return model.decode(z, part)

        vector, accuracy, fraction = space.gan_direction(
            decode, model.latent_dim, classifier, args.samples, args.seed
        )
        meta.update(route=route, fit_accuracy=accuracy, fraction=fraction, n=args.samples)
        summary = f"{fraction:.0%} of samples have it; linear fit accuracy {accuracy:.3f}"
    space.save_vector(out, vector, **meta)
    print(f"distgan: {data.name} ({route} route): {summary}", file=sys.stderr)
    return _done(args, model, [out], "the unit vector")


def cmd_arithmetic(args: argparse.Namespace) -> int:
    model, out = _model(args), Path(args.out)
    vector, meta = space.load_vector(Path(args.vector), model.latent_dim)
    labels, originals = None, None
    if args.shards:  # VAE: encode → add → decode, on images that lack the attribute
        attr = str(meta.get("attr", "")) or None
        label = int(meta.get("label", -1))
        data = _labelled(model, args, attr, None if attr else label, None)
        originals = data.images[~data.has][: args.n]
        z = model.encode(originals)
    else:
        z = model.latents(args.n, args.seed)
        if model.num_classes:
            labels = torch.arange(args.n) % model.num_classes
    if out.suffix.lower() == ".npz":
        images = _decode(model, z + args.alpha * vector, labels)
        save_npz(out, images=_uint8(images), alpha=args.alpha)
        return _done(args, model, [out], f"{len(images)} images with α = {args.alpha:g}")
    alphas = np.linspace(-abs(args.alpha), abs(args.alpha), args.columns)
    columns = [_decode(model, z + float(a) * vector, labels) for a in alphas]
    if originals is not None:
        columns.insert(0, originals)
    grid = torch.stack(columns, 1).flatten(0, 1)
    figures.save_grid(grid, out, len(columns))
    return _done(args, model, [out], f"a grid of α from {alphas[0]:g} to {alphas[-1]:g}")


def cmd_traverse(args: argparse.Namespace) -> int:
    model, out = _model(args), Path(args.out)
    layers = model.latent_layers()
    chosen = range(len(layers))
    if args.layer is not None:
        if not 1 <= args.layer <= len(layers):
            raise ConfigError(f"--layer {args.layer}: this model has layers 1–{len(layers)}")
        chosen = [args.layer - 1]
    values = np.linspace(-args.range, args.range, args.columns).tolist()
    base = model.latents(1, args.seed)[0]
    labels = 0 if model.num_classes else None
    paths = []
    for i in chosen:
        layer = layers[i]
        order = torch.argsort(layer.importance, descending=True).tolist()
        rows = []
        for j in order:
            z = base.repeat(len(values), 1)
            z[:, layer.dims.start + j] = torch.tensor(values)
            rows.append(model.decode(z, labels))
        names = [f"dim {j + 1}  |L| {layer.importance[j]:.2f}" for j in order]
        path = out if args.layer is not None else out.with_name(f"{out.stem}-layer{i + 1}.png")
        title = f"{layer.name} (seed {args.seed})"
        figures.traversal(torch.stack(rows), values, names, title, path)
        paths.append(path)
    return _done(args, model, paths, "a traversal grid")


def cmd_histogram(args: argparse.Namespace) -> int:
    model, out = _model(args), Path(args.out)
    shards = Shards(model, args)
    images = shards.images(shards.batches(args.n))
    mu, log_var = _encode(model, images)
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(args.seed))
    z = (mu + (0.5 * log_var).exp() * noise).numpy()  # z ~ q(z | x), as the encoder samples
    title = f"{model.cfg.name}: z of {len(z)} encoded images vs N(0, 1) (red)"
    figures.histograms(z, out, title)
    return _done(args, model, [out], "latent histograms")


def cmd_tsne(args: argparse.Namespace) -> int:
    from sklearn.manifold import TSNE

    model, out = _model(args), Path(args.out)
    images, colours, names = _coloured(model, args)
    mu, _ = _encode(model, images)
    perplexity = min(args.perplexity, (len(mu) - 1) / 3)
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=args.seed).fit_transform(
        mu.numpy()
    )
    figures.scatter(points, colours, names, out, f"{model.cfg.name}: t-SNE of μ ({len(mu)})")
    return _done(args, model, [out], "a t-SNE map")


def _coloured(model: Model, args) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Images and a colour index per image: the ``--attr`` (no/yes) or the class label."""
    shards = Shards(model, args)
    if args.attr is None and not shards.info.num_classes:
        raise ConfigError(f"--shards {shards.folder} has no labels: colour by --attr NAME")
    batches = shards.batches(args.n)
    images = shards.images(batches)
    if args.attr is None:
        return images, torch.cat([b["label"] for b in batches]).numpy(), shards.info.class_names
    name, target = space.target_of(shards.info, args.attr, None)
    has = torch.cat([target(b) for b in batches]).long().numpy()
    return images, has, [f"not {name}", name]


TOOLS = {
    "interpolate": cmd_interpolate,
    "attribute": cmd_attribute,
    "arithmetic": cmd_arithmetic,
    "traverse": cmd_traverse,
    "histogram": cmd_histogram,
    "tsne": cmd_tsne,
}
