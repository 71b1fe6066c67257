"""Projection of an image into a StyleGAN2 generator's W space (``distgan latent project``), as
stylegan2-ada-pytorch's ``projector.py`` does it: one w, broadcast to every layer, starts at the
mean w of 10,000 mapped z; Adam (β 0.9, 0.999) at lr 0.1 with a 5 % cosine ramp-up and a 25 %
ramp-down; Gaussian noise of 0.05 × the spread of w added to w, decaying quadratically to 0 at
75 % of the steps; the per-layer noise maps are optimised too, held to white noise by the
multi-scale autocorrelation penalty (weight 1e5) and renormalised after every step.

The distance to the target differs from the reference's (LPIPS with a VGG16 it downloads):

* default, nothing to download: pixel MSE (images in [-1, 1]) plus the distance between the
  activations of the run's own discriminator, block by block — each position's feature vector
  normalised to unit length (as LPIPS normalises), the squared differences summed over channels,
  averaged over positions and over blocks;
* both compare the synthesis as it will be written: clamped to the target's black or white where
  the target is black or white (:func:`as_written`), else left free;
* ``--lpips FILE``: LPIPS-VGG (the ``lpips`` package's linear layers, ``lpips`` alone as the
  reference) on torchvision's VGG16 weights from a local ``vgg16-397923af.pth`` whose sha256 is
  checked first; nothing is fetched.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distgan.errors import ConfigError

# the reference's defaults (projector.py)
W_AVG_SAMPLES = 10_000
LEARNING_RATE = 0.1
NOISE_FACTOR = 0.05
LR_RAMPDOWN = 0.25
LR_RAMPUP = 0.05
NOISE_RAMP = 0.75
NOISE_REGULARIZATION = 1e5

# torchvision's ImageNet VGG16 (download.pytorch.org/models/vgg16-397923af.pth, 553,433,881
# bytes; the name carries the first 8 hex digits of its sha256)
VGG16_FILE = "vgg16-397923af.pth"
VGG16_SHA256 = "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0"
VGG16_WHERE = "torchvision's https://download.pytorch.org/models/vgg16-397923af.pth"

Distance = Callable[[torch.Tensor], torch.Tensor]  # synthesised image [1, C, H, W] → loss


def learning_rate(t: float) -> float:
    """The reference's lr at fraction ``t`` of the steps: cosine ramp-down over the last 25 %,
    times a linear ramp-up over the first 5 %."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return LEARNING_RATE * ramp * min(1.0, t / LR_RAMPUP)


def w_noise_scale(t: float, w_std: float) -> float:
    """The spread of the noise added to w at fraction ``t`` of the steps."""
    return w_std * NOISE_FACTOR * max(0.0, 1.0 - t / NOISE_RAMP) ** 2


@torch.no_grad()
def w_stats(
    G: nn.Module, label: int | None, samples: int = W_AVG_SAMPLES, seed: int = 123
) -> tuple[torch.Tensor, float]:
    """(mean w [1, w_dim], spread √(E‖w − mean‖²)) of ``samples`` mapped z: of class ``label``,
    or of all classes in turn when a conditional model is given ``None``."""
    device = next(G.parameters()).device
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    labels = None
    if G.num_classes:
        labels = (
            torch.arange(samples) % G.num_classes
            if label is None
            else torch.full((samples,), label)
        )
    ws = []
    for start in range(0, samples, 1000):
        part = None if labels is None else labels[start : start + 1000].to(device)
        ws.append(G.mapping(z[start : start + 1000].to(device), part).float())
    w = torch.cat(ws)
    w_avg = w.mean(0, keepdim=True)
    return w_avg, float((w - w_avg).square().sum(1).mean().sqrt())


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map with its one-pixel shifts, at every scale
    down to 8×8 (2×2 average pools): zero for white noise."""
    total = torch.zeros((), device=noises[0].device)
    for noise in noises:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean() ** 2
            total = total + (noise * noise.roll(1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return total


@dataclass
class Projection:
    w: torch.Tensor  # [1, w_dim]
    noise: list[torch.Tensor]  # one [1, 1, r, r] per synthesis layer
    image: torch.Tensor  # [1, C, H, W] in [-1, 1]


def project(
    G: nn.Module,
    distance: Distance,
    steps: int,
    w_avg: torch.Tensor,
    w_std: float,
    seed: int = 0,
    on_step: Callable[[], object] | None = None,
) -> Projection:
    """Optimise one w (and the noise maps) so that ``G.synthesis`` of it is close to the
    target by ``distance``; the reference's schedule over ``steps`` (``on_step`` after each:
    a progress bar)."""
    device = w_avg.device
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    w = w_avg.clone().float().requires_grad_(True)
    noise = [randn(1, 1, r, r).requires_grad_(True) for r in G.synthesis.noise_shapes()]
    optimizer = torch.optim.Adam([w, *noise], lr=LEARNING_RATE, betas=(0.9, 0.999))
    with torch.enable_grad():
        for step in range(steps):
            t = step / steps
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(t)
            jittered = w + randn(*w.shape) * w_noise_scale(t, w_std)
            image = G.synthesis(_broadcast(G, jittered), noise_mode="random", noise=noise)
            loss = distance(image) + noise_regularization(noise) * NOISE_REGULARIZATION
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # back to zero mean, unit variance
                for n in noise:
                    n -= n.mean()
                    n *= n.square().mean().rsqrt()
            if on_step is not None:
                on_step()
    w, noise = w.detach(), [n.detach() for n in noise]
    with torch.no_grad():
        image = G.synthesis(_broadcast(G, w), noise_mode="random", noise=noise)
    return Projection(w, noise, image.float())


def _broadcast(G: nn.Module, w: torch.Tensor) -> torch.Tensor:
    return w.unsqueeze(1).expand(-1, G.num_ws, -1)


# ----------------------------------------------------------------------------- distances


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / (features.square().sum(1, keepdim=True).sqrt() + 1e-10)


def discriminator_features(D: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The activations after each of D's blocks (no label needed: D's blocks do not see it)."""
    features, x = [], None
    for block in D.blocks:
        x = block(x, images)
        features.append(x.float())
    return features


def as_written(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``image`` clamped where the target is black (−1) or white (1), to that bound: written
    files clamp to [−1, 1], so beyond the bound is as good as at it. A generator's background
    often lies far below −1; without this the distance pulls it up to −1 and away from the
    target's own w. Elsewhere the image is left as it is (its gradient intact)."""
    image = torch.where(target <= -1, image.clamp(min=-1), image)
    return torch.where(target >= 1, image.clamp(max=1), image)


def pixel_and_discriminator(D: nn.Module, target: torch.Tensor) -> Distance:
    """The default distance: MSE in [-1, 1] plus the mean over D's blocks of the squared
    distance of unit-normalised feature vectors, averaged over positions (both on
    :func:`as_written`)."""
    with torch.no_grad():
        wanted = [_unit(f) for f in discriminator_features(D, target)]

    def distance(image: torch.Tensor) -> torch.Tensor:
        image = as_written(image.float(), target)
        got = [_unit(f) for f in discriminator_features(D, image)]
        features = sum((a - b).square().sum(1).mean() for a, b in zip(got, wanted, strict=True))
        return F.mse_loss(image, target) + features / len(wanted)

    return distance


def check_vgg16(path: str) -> Path:
    """``path`` as the known VGG16 file (its sha256 checked), never fetched."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--lpips {file} does not exist: give {VGG16_FILE} ({VGG16_WHERE})")
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != VGG16_SHA256:
        raise ConfigError(
            f"--lpips {file} is not {VGG16_FILE}: its sha256 is {digest.hexdigest()[:16]}…, "
            f"expected {VGG16_SHA256[:16]}… ({VGG16_WHERE})"
        )
    return file


def lpips_vgg(path: str, device: torch.device) -> nn.Module:
    """LPIPS-VGG v0.1: the package's linear layers, VGG16's convolutions from the checked file;
    built with both downloads off."""
    try:
        import lpips
    except ImportError:
        raise ConfigError("--lpips needs the lpips package: pip install 'distgan[lpips]'") from None
    file = check_vgg16(path)
    with warnings.catch_warnings():  # lpips asks torchvision for vgg16(pretrained=False)
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    net.load_state_dict(torch.load(linear, map_location="cpu", weights_only=True), strict=False)
    vgg = torch.load(file, map_location="cpu", weights_only=True)
    # torchvision's features.i → the package's slices (1: 0–3, 2: 4–8, 3: 9–15, 4: 16–22, 5: 23–29)
    bounds = (4, 9, 16, 23, 30)
    trunk = {}
    for key, value in vgg.items():
        if key.startswith("features."):
            index = int(key.split(".")[1])
            piece = next(s for s, end in enumerate(bounds, 1) if index < end)
            trunk[f"slice{piece}.{key.removeprefix('features.')}"] = value
    net.net.load_state_dict(trunk)
    return net.eval().requires_grad_(False).to(device)


def lpips_distance(net: nn.Module, target: torch.Tensor) -> Distance:
    """LPIPS to ``target`` (of :func:`as_written`; gray repeated to RGB; above 256 px both are
    area-resized to 256, as the reference does for its VGG)."""

    def prepare(images: torch.Tensor) -> torch.Tensor:
        images = images.float().expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if images.shape[2] > 256:
            images = F.interpolate(images, size=(256, 256), mode="area")
        return images

    wanted = prepare(target)
    return lambda image: net(prepare(as_written(image.float(), target)), wanted).sum()
