"""The digits classifier shipped with distgan (``weights/digits-classifier.safetensors``): judges
class-conditional samples of the embedded digits (class accuracy) and gives a feature space for
a Fréchet distance on a fresh clone, with no download.

A small CNN on 32×32 gray digits: three 3×3 conv + ReLU + 2×2 max-pool stages (32, 64, 128),
a 128-d ReLU layer (the features) and 10 logits. Trained by distgan on the embedded shards with
random shifts of up to 3 px and ±10 % zoom, seeded and deterministic. Rebuild it with::

    python -m distgan.features.digits --out distgan/features/weights/digits-classifier.safetensors

It prints its accuracy on the fifth of the shards it did not train on.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).parent / "weights" / "digits-classifier.safetensors"


class DigitsClassifier(nn.Module):
    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((1, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2)]
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.features = nn.Sequential(nn.Linear(128 * 4 * 4, 128), nn.ReLU())
        self.logits = nn.Linear(128, 10)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1], 1×32×32 → (features [N, 128], logits [N, 10])."""
        features = self.features(self.convs(images))
        return features, self.logits(features)


def load_classifier(path: Path = WEIGHTS) -> tuple[DigitsClassifier, str]:
    """The shipped classifier in eval mode, and the sha256 of its weights file."""
    from safetensors.torch import load_file

    model = DigitsClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False), hashlib.sha256(path.read_bytes()).hexdigest()


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts (≤ 3 px) and zooms (±10 %) by one affine grid per image."""
    n = images.shape[0]
    scale = 1 + (torch.rand(n, generator=generator) * 0.2 - 0.1)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (3 / 16)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1


def train(shards: str, steps: int = 3000, seed: int = 0) -> tuple[DigitsClassifier, float]:
    """Train on four fifths of ``shards`` (seeded); returns the model and its accuracy on the
    other fifth."""
    from distgan.data.stream import held_out_batches

    batches = list(held_out_batches(shards, n=10**9, batch_size=512, seed=seed))
    images = torch.cat([b["image"] for b in batches]).float()
    labels = torch.cat([b["label"] for b in batches])
    held = len(images) // 5
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        index = held + torch.randint(len(images) - held, (64,), generator=generator)
        logits = model(_augment(images[index], generator))[1]
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[:held])[1].argmax(1) == labels[:held]).float().mean().item()
    return model.requires_grad_(False), accuracy


def main() -> None:
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="shards/digits")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(WEIGHTS))
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    model, accuracy = train(args.shards, args.steps, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"held-out accuracy {accuracy:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
