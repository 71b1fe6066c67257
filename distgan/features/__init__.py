"""Feature extractors for evaluation: uint8 images [N, C, H, W] in → float64 features out,
each with a name and the sha256 of its weights (recorded next to every figure). Nothing is ever
downloaded.

* ``inception``: Inception-v3 of the original FID (the TF 2015-12-05 graph) as torch-fidelity
  ports it, from a local weights file (``--inception PATH``, ``eval.weights``, or the environment
  variable ``DISTGAN_INCEPTION``) whose sha256 must be the known one. Images are resized to
  299×299 inside the network with torch-fidelity's TF-compatible bilinear interpolation (the
  FID convention); gray images are repeated to 3 channels. Features: the 2048-d pool; logits:
  the 1008 unbiased logits (for IS).
* ``digits``: the classifier distgan ships for the embedded digits (distgan/features/digits.py):
  128-d features and 10 logits, for 32×32 gray images.
* ``random``: a seeded random convolutional network (Kaiming-initialised, never trained), the
  weights-free fallback used in the literature to compare models without a pretrained network;
  its numbers are only comparable with the same seed, resolution and protocol.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from distgan.errors import ConfigError

INCEPTION_ENV = "DISTGAN_INCEPTION"
# torch-fidelity's port of the FID Inception (the same file pytorch-fid ships as
# pt_inception-2015-12-05-6726825d.pth; the name carries the first 8 hex digits of its sha256).
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_WHERE = (
    "torch-fidelity's release v0.2.0 on GitHub (or pytorch-fid's 'fid_weights' release, "
    "pt_inception-2015-12-05-6726825d.pth); copy it to the machine and pass --inception PATH "
    f"or set {INCEPTION_ENV}"
)


class Extractor:
    name: str
    sha256: str
    resize: str  # how images reach the network's input size
    dim: int  # features per image
    has_logits: bool = False
    logits: int = 0  # class logits per image, where it has them

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [N, C, H, W] → {"features": float64 [N, D]} (+ "logits")."""
        raise NotImplementedError

    def protocol(self) -> dict[str, str]:
        return {"extractor": self.name, "sha256": self.sha256, "resize": self.resize}


def _signed(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


class DigitsExtractor(Extractor):
    name, resize, has_logits = "digits", "none (32×32 gray digits)", True
    dim, logits = 128, 10

    def __init__(self, device: torch.device) -> None:
        from distgan.features.digits import load_classifier

        self.model, self.sha256 = load_classifier()
        self.model.to(device)
        self.device = device

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(images.shape[1:]) != (1, 32, 32):
            raise ConfigError(
                f"the digits classifier judges 32×32 gray digits, not {tuple(images.shape[1:])}"
            )
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            features, logits = self.model(_signed(images.to(self.device)))
        return {"features": features.double(), "logits": logits.double()}


class RandomExtractor(Extractor):
    """Four stride-2 3×3 convs (64 → 512 channels) with ReLU, then a global average pool."""

    name, resize, dim = "random", "none (native resolution)", 512

    def __init__(self, device: torch.device, channels: int, seed: int = 0) -> None:
        layers: list[nn.Module] = []
        for cin, cout in ((channels, 64), (64, 128), (128, 256), (256, 512)):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.ReLU()]
        self.model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        generator = torch.Generator().manual_seed(seed)
        for m in self.model:
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=generator))
                    m.weight.mul_((2 / fan_in) ** 0.5)
                    m.bias.zero_()
        digest = hashlib.sha256()
        for tensor in self.model.state_dict().values():
            digest.update(tensor.double().numpy().tobytes())
        self.sha256 = digest.hexdigest()
        # float64: the features of an image do not depend on the batch it came in (float32
        # kernels block by batch size), so any split over ranks gives the same figures
        self.model.eval().requires_grad_(False).to(device, torch.float64)
        self.device = device

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return {"features": self.model(_signed(images.to(self.device)).double())}


def inception_path(given: str | None) -> Path:
    """The Inception weights file: ``given``, else $DISTGAN_INCEPTION; checked, never fetched."""
    path = given or os.environ.get(INCEPTION_ENV)
    if not path:
        raise ConfigError(
            f"FID/KID/IS with Inception need its weights file {INCEPTION_FILE} "
            f"(sha256 {INCEPTION_SHA256[:16]}…), never downloaded: get it from {INCEPTION_WHERE}"
        )
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Inception weights '{file}' do not exist: {INCEPTION_WHERE}")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if digest != INCEPTION_SHA256:
        raise ConfigError(
            f"'{file}' is not {INCEPTION_FILE}: its sha256 is {digest[:16]}…, expected "
            f"{INCEPTION_SHA256[:16]}…; get the file from {INCEPTION_WHERE}"
        )
    return file


class InceptionExtractor(Extractor):
    name, resize, has_logits = "inception", "TF-compatible bilinear to 299×299", True
    dim, logits = 2048, 1008

    def __init__(self, device: torch.device, weights: str | None) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = inception_path(weights)  # checked: the known bytes, so loading it is safe
        self.sha256 = INCEPTION_SHA256
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(path),
        )
        self.model.eval().requires_grad_(False).to(device)
        self.device = device

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            features, logits = self.model(images.to(self.device).contiguous())
        return {"features": features.double(), "logits": logits.double()}


def get_extractor(
    name: str, device: torch.device, channels: int, weights: str | None = None
) -> Extractor:
    if name == "inception":
        return InceptionExtractor(device, weights)
    if name == "digits":
        return DigitsExtractor(device)
    if name == "random":
        return RandomExtractor(device, channels)
    raise ConfigError(f"eval.extractor {name!r}: use inception, random or digits")
