"""Latent-space arithmetic, independent of any file format: interpolation, attribute vectors
(two routes) and the labelled images they are computed from.

* **VAE route** (the source material's): the attribute vector is the mean μ of images with the
  attribute minus the mean μ of images without it, made unit length (its length is kept: adding
  ``norm`` · v moves the mean "without" encoding onto the mean "with" one).
* **GAN route** (no encoder): a small CNN learns the attribute on the real labelled images, labels
  generated images, and a logistic regression on their latents gives the direction (its normal),
  as in InterFaceGAN (Shen et al., 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distgan.errors import ConfigError

Decode = Callable[[torch.Tensor], torch.Tensor]  # latents → images in [0, 1]


# ----------------------------------------------------------------------------- interpolation


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a if t == 0 else b if t == 1 else (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Along the great circle from a to b, the lengths interpolated linearly: the path keeps
    the typical norm of Gaussian latents (White, 2016). Exactly a at t = 0 and b at t = 1."""
    if t in (0, 1):
        return a if t == 0 else b
    a64, b64 = a.double(), b.double()
    cos = (a64 / a64.norm()).dot(b64 / b64.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:
        return lerp(a, b, t)
    mix = (torch.sin((1 - t) * omega) * a64 + torch.sin(t * omega) * b64) / torch.sin(omega)
    return mix.to(a.dtype)


INTERPOLATIONS = {"lerp": lerp, "slerp": slerp}


def path(a: torch.Tensor, b: torch.Tensor, steps: int, mode: str) -> torch.Tensor:
    """``steps`` latents from a to b (both included)."""
    if steps < 2:
        raise ConfigError(f"--steps {steps}: a strip needs at least 2 images")
    mix = INTERPOLATIONS[mode]
    return torch.stack([mix(a, b, k / (steps - 1)) for k in range(steps)])


# ----------------------------------------------------------------------------- labelled data


@dataclass
class Labelled:
    """Images in [0, 1] (N×C×H×W, CPU) and whether each has the attribute (bool [N])."""

    images: torch.Tensor
    has: torch.Tensor
    name: str  # e.g. "Smiling" or "label 3"


def target_of(info, attr: str | None, label: int | None) -> tuple[str, Callable]:
    """(name, batch → bool tensor) for ``--attr NAME`` or ``--label K`` on shards with ``info``."""
    if (attr is None) == (label is None):
        raise ConfigError("give one of --attr NAME or --label K")
    if attr is not None:
        if attr not in info.attribute_names:
            known = ", ".join(info.attribute_names) or "none (use --label K)"
            raise ConfigError(f"--attr {attr}: the shards' attributes are {known}")
        index = info.attribute_names.index(attr)
        return attr, lambda batch: batch["attrs"][:, index] > 0.5
    if not 0 <= label < info.num_classes:
        top = f"0–{info.num_classes - 1}" if info.num_classes else "none: unlabelled shards"
        raise ConfigError(f"--label {label}: the shards' labels are {top}")
    return f"label {label}", lambda batch: batch["label"] == label


def read_labelled(
    batches: Iterator[dict], target: Callable, name: str, limit: int | None = None
) -> Labelled:
    images, has = [], []
    for batch in batches:
        images.append((batch["image"].float() + 1) / 2)
        has.append(target(batch))
        if limit and sum(len(h) for h in has) >= limit:
            break
    if not images:
        raise ConfigError("the shards hold no readable images")
    labelled = Labelled(torch.cat(images)[:limit], torch.cat(has)[:limit], name)
    count = int(labelled.has.sum())
    if count in (0, len(labelled.has)):
        raise ConfigError(f"{name}: {count} of {len(labelled.has)} images have it; need both")
    return labelled


# ----------------------------------------------------------------------------- attribute vectors


def unit(vector: torch.Tensor) -> tuple[torch.Tensor, float]:
    norm = float(vector.norm())
    if not norm > 0:
        raise ConfigError("the attribute vector is zero: the two groups encode alike")
    return vector / norm, norm


def vae_direction(mu: torch.Tensor, has: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(unit vector, length) of mean μ with − mean μ without."""
    mu = mu.double()
    return unit((mu[has].mean(0) - mu[~has].mean(0)).float())


class AttributeClassifier(nn.Module):
    """A small CNN: images in [0, 1] → the logit of "has the attribute"."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1).squeeze(1)


def train_classifier(data: Labelled, steps: int = 600, seed: int = 0) -> AttributeClassifier:
    """Fit an :class:`AttributeClassifier` on the real labelled images (classes balanced by
    the loss weight), seeded; returns it in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AttributeClassifier(data.images.shape[1])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    positives = float(data.has.float().mean())
    weight = torch.tensor((1 - positives) / positives)
    for _ in range(steps):
        index = torch.randint(len(data.images), (64,), generator=generator)
        logits = model(data.images[index])
        loss = F.binary_cross_entropy_with_logits(
            logits, data.has[index].float(), pos_weight=weight
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


def gan_direction(
    decode: Decode,
    latent_dim: int,
    classifier: nn.Module,
    samples: int = 4000,
    seed: int = 0,
    chunk: int = 256,
) -> tuple[torch.Tensor, float, float]:
    """(unit vector, logistic fit accuracy, fraction of samples with the attribute): latents
    labelled by ``classifier`` on their decoded images, then a linear separation of the latents."""
    from sklearn.linear_model import LogisticRegression

    z = torch.randn(samples, latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        has = torch.cat([classifier(decode(part)) > 0 for part in z.split(chunk)])
    fraction = float(has.float().mean())
    if fraction in (0.0, 1.0):
        raise ConfigError(
            f"the attribute classifier says {'all' if fraction else 'none'} of {samples} samples "
            "have the attribute; train longer or choose another attribute"
        )
    fit = LogisticRegression(max_iter=2000).fit(z.numpy(), has.numpy())
    vector, _ = unit(torch.from_numpy(fit.coef_[0]).float())
    return vector, float(fit.score(z.numpy(), has.numpy())), fraction


def save_vector(path: Path, vector: torch.Tensor, **meta) -> None:
    """V.npz: the unit ``vector`` and what it was computed from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.asarray(value) for key, value in meta.items()}
    with open(path, "wb") as file:  # (a name: np.savez would append .npz to V.NPZ)
        np.savez(file, vector=vector.numpy().astype(np.float32), **arrays)


def load_vector(path: Path, latent_dim: int) -> tuple[torch.Tensor, dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        raise ConfigError(f"--vector {path}: not a readable .npz ({err})") from None
    if "vector" not in data or data["vector"].shape != (latent_dim,):
        raise ConfigError(f"--vector {path}: needs 'vector' of {latent_dim} values (this model)")
    return torch.from_numpy(data.pop("vector")).float(), data
