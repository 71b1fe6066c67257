"""Latent-space tools and the Python API: interpolation endpoints are the samples bit for bit,
attribute vectors recover a planted direction (VAE and GAN routes), a trained digits VAE's class
vectors turn other digits into that class (judged by an independent classifier), EigenGAN's
orthogonality penalty and traversals, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARDS, STEPS, launch_cmd, run

import distgan
from distgan.cli import main
from distgan.errors import ConfigError
from distgan.models.eigengan import EigenGenerator, Subspace
from distgan.trained.latent import space


def ckpt(trained, name: str) -> str:
    return str(trained[0] / name / "checkpoints" / f"step-{STEPS:08d}.pt")


def test_orthogonality_penalty_is_zero_when_orthogonal_and_matches_by_hand() -> None:
    subspace = Subspace((2, 3, 3), dims=4)  # U: 18 × 4, initialised orthogonal
    assert subspace.orthogonality().item() == pytest.approx(0, abs=1e-10)
    U = torch.arange(18 * 4, dtype=torch.float32).reshape(18, 4).sin()
    with torch.no_grad():
        subspace.U.copy_(U)
    gram = [[sum(U[r, i].item() * U[r, j].item() for r in range(18)) for j in range(4)]
            for i in range(4)]  # fmt: skip
    by_hand = sum((gram[i][j] - (i == j)) ** 2 for i in range(4) for j in range(4))
    assert subspace.orthogonality().item() == pytest.approx(by_hand, rel=1e-5)
    G = EigenGenerator(resolution=16, channels=1, eps_dim=4, layer_dims=3, width=0.25)
    assert [list(b.subspace.L.tolist()) for b in G.blocks] == [[9.0, 6.0, 3.0]] * 2
    assert G.orthogonality().item() == pytest.approx(0, abs=1e-8)  # the engine's init kept U


def planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear "generator" z (8) → 1×8×8 images, and an attribute planted along v: z·v > 0."""
    rng = torch.Generator().manual_seed(0)
    W = torch.randn(64, 8, generator=rng) / 4
    v = torch.nn.functional.normalize(torch.randn(8, generator=rng), dim=0)
    z = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return z, W, v, z @ v > 0


def render(z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(z @ W.t()) + 1).div(2).view(-1, 1, 8, 8)  # images in [0, 1]


@pytest.mark.parametrize("route", ["vae", "gan"])
def test_attribute_recovers_a_planted_direction(route: str) -> None:
    z, W, v, has = planted(3000, seed=1)
    images = render(z, W)
    if route == "vae":  # an encoder that inverts the generator: μ = W⁺ atanh(2x − 1)
        mu = (images.flatten(1) * 2 - 1).clamp(-0.999, 0.999).atanh() @ torch.linalg.pinv(W).t()
        vector, norm = space.vae_direction(mu, has)
        assert norm > 1  # E[z | z·v > 0] − E[z | z·v < 0] = 2·√(2/π)·v
    else:  # a classifier on the real images labels generated ones; a linear fit on their z
        data = space.Labelled(images, has, "planted")
        classifier = space.train_classifier(data, steps=400, seed=0)
        vector, accuracy, fraction = space.gan_direction(
            lambda latents: render(latents, W), 8, classifier, samples=3000, seed=2
        )
        assert accuracy > 0.9 and 0.3 < fraction < 0.7
    cosine = float(vector @ v)
    assert cosine > 0.9, cosine


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits-vae", "digits-eigengan", "digits-cdcgan"])
def test_interpolation_endpoints_are_the_samples_bit_for_bit(
    name: str, trained, tmp_path: Path
) -> None:
    model = distgan.load(ckpt(trained, name))
    for mode in ("lerp", "slerp"):
        out = tmp_path / f"{mode}.npz"
        argv = ["latent", "interpolate", "--ckpt", ckpt(trained, name), "--out", str(out)]
        assert main([*argv, "--seeds", "5,9", "--steps", "5", "--mode", mode]) == 0
        strip = np.load(out)["images"]
        assert strip.shape[0] == 5
        for index, seed in ((0, 5), (4, 9)):
            sample = tmp_path / f"seed{seed}.npz"
            argv = ["sample", "--ckpt", ckpt(trained, name), "--n", "1", "--seed", str(seed)]
            assert main([*argv, "--out", str(sample)]) == 0
            assert np.array_equal(strip[index], np.load(sample)["images"][0]), (mode, seed)
        ends = model.latents(1, seed=5)[0], model.latents(1, seed=9)[0]
        path = space.path(*ends, 5, mode)
        labels = 0 if model.num_classes else None
        for z, seed in ((path[0], 5), (path[-1], 9)):
            assert torch.equal(model.decode(z[None], labels), model.sample(1, seed=seed))
        assert not torch.equal(path[2], ends[0]) and not torch.equal(path[2], ends[1])
    if name == "digits-vae":  # between encoded images: the ends are their reconstructions
        out = tmp_path / "images.npz"
        argv = ["latent", "interpolate", "--ckpt", ckpt(trained, name), "--images", "0,3"]
        assert main([*argv, "--steps", "4", "--out", str(out), "--shards", str(SHARDS)]) == 0
        latents = torch.from_numpy(np.load(out)["latents"])
        assert latents.shape == (4, model.latent_dim)


@pytest.mark.slow
def test_traverse_histogram_tsne_and_refusals(
    trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ("celeba64-eigengan", "digits-vae", "cifar10-dcgan")
    eigen, vae, gan = (ckpt(trained, name) for name in names)
    out = tmp_path / "traverse.png"
    assert main(["latent", "traverse", "--ckpt", eigen, "--out", str(out), "--columns", "5"]) == 0
    grids = sorted(p.name for p in tmp_path.glob("traverse-layer*.png"))
    assert grids == ["traverse-layer1.png", "traverse-layer2.png", "traverse-layer3.png"]  # 32 px
    for tool, extra in (("histogram", []), ("tsne", ["--perplexity", "5"])):
        out = tmp_path / f"{tool}.png"
        argv = ["latent", tool, "--ckpt", vae, "--n", "60", "--out", str(out), *extra]
        assert main(argv) == 0 and out.stat().st_size > 10_000
    capsys.readouterr()
    for argv, needle in (
        (["traverse", "--ckpt", vae], "has no layer-wise latent dimensions"),
        (["histogram", "--ckpt", gan], "has no encoder"),
        (["attribute", "--ckpt", vae, "--attr", "Smiling"], "the shards' attributes are none"),
        (["traverse", "--ckpt", eigen, "--layer", "4"], "this model has layers 1–3"),
    ):
        out = tmp_path / ("x.npz" if argv[0] == "attribute" else "x.png")  # (its --out: a vector)
        assert main(["latent", *argv, "--out", str(out)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert needle in line, line


@pytest.mark.slow
def test_python_api_on_trained_runs(trained, tmp_path: Path) -> None:
    cgan = distgan.load(trained[0] / "digits-cdcgan")  # a run folder: its newest checkpoint
    assert cgan.step == STEPS and cgan.weights == "ema" and cgan.num_classes == 10
    out = tmp_path / "seven.npz"
    argv = ["sample", "--ckpt", ckpt(trained, "digits-cdcgan"), "--n", "3", "--label", "7"]
    assert main([*argv, "--seed", "4", "--out", str(out)]) == 0
    images = cgan.sample(3, labels=7, seed=4)
    assert np.array_equal((images * 255).round().byte().permute(0, 2, 3, 1).numpy(),
                          np.load(out)["images"])  # fmt: skip
    vae = distgan.load(ckpt(trained, "celeba128-vae"))
    x = vae.sample(4, seed=1)
    mu, log_var = vae.encode(x, log_var=True)
    assert mu.shape == log_var.shape == (4, vae.latent_dim)
    assert vae.decode(mu).shape == x.shape == (4, 3, 32, 32)
    pix2pix = distgan.load(ckpt(trained, "facades-pix2pix"))
    photo = torch.rand(2, 3, 64, 64)
    assert pix2pix.translate(photo).shape == photo.shape
    with pytest.raises(ConfigError, match="has no latent space; use translate"):
        pix2pix.sample(1)


@pytest.mark.slow
def test_class_vectors_turn_digits_into_that_class(tmp_path: Path) -> None:
    """The real digits-vae recipe (700 steps, 1 process): encodings of other digits plus α = 4
    times the class-k vector decode to k, as judged by a pixel classifier of the test's own."""
    from sklearn.linear_model import LogisticRegression

    from distgan.data.stream import held_out_batches

    run_dir = tmp_path / "run"
    args = ["train", "digits-vae", "train.steps=700", f"run.dir={run_dir}", "log.wandb=offline"]
    run(launch_cmd(1, *args), timeout=600)
    batches = list(held_out_batches(SHARDS, n=1797, batch_size=512, seed=0))
    pixels = torch.cat([b["image"] for b in batches]).flatten(1).numpy()
    labels = torch.cat([b["label"] for b in batches]).numpy()
    judge = LogisticRegression(max_iter=3000, C=0.05).fit(pixels[:1300], labels[:1300])
    assert judge.score(pixels[1300:], labels[1300:]) > 0.9
    turned = {}
    for k in (3, 7):
        vector = tmp_path / f"v{k}.npz"
        base = ["latent", "attribute", "--ckpt", str(run_dir), "--label", str(k)]
        assert main([*base, "--shards", str(SHARDS), "--out", str(vector)]) == 0
        with np.load(vector) as v:
            assert v["route"] == "vae" and abs(np.linalg.norm(v["vector"]) - 1) < 1e-5
        out = tmp_path / f"to{k}.npz"
        argv = ["latent", "arithmetic", "--ckpt", str(run_dir), "--vector", str(vector)]
        argv += ["--alpha", "4", "--shards", str(SHARDS), "--n", "100", "--out", str(out)]
        assert main(argv) == 0
        images = np.load(out)["images"]  # uint8 N×H×W×C of digits other than k, plus 4·v
        assert images.shape == (100, 32, 32, 1)
        decoded = images.reshape(100, -1).astype(np.float32) / 127.5 - 1
        turned[k] = float((judge.predict(decoded) == k).mean())
    print(f"class vectors at α = 4 turn {turned} of other digits into the class")
    assert min(turned.values()) > 0.6, turned
    # --wandb logs the figure into the run's (offline) W&B run
    figure = tmp_path / "hist.png"
    argv = ["latent", "histogram", "--ckpt", str(run_dir), "--n", "200", "--out", str(figure)]
    assert main([*argv, "--wandb"]) == 0
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2  # training, then the figure, under the same run id
    ids = {json.dumps(p.name.rsplit("-", 1)[-1]) for p in wandb_runs}
    assert len(ids) == 1
