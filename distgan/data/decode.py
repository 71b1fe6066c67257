"""Decoding one raw sample of a shard: its image(s) checked against the manifest's size from the
header (before decoding: no decompression bombs), decoded, transformed, labelled."""

from __future__ import annotations

import contextlib
import io
import json
import struct
from typing import Any

import numpy as np
import torch
from PIL import Image

try:  # deprecated since torchvision 0.29 (for TorchCodec, which needs a system FFmpeg)
    from torchvision.io import decode_image
except ImportError:  # a torchvision without it: Pillow decodes everything
    decode_image = None

from distgan.data.info import DatasetInfo
from distgan.data.transforms import Transforms

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image's header, without decoding its pixels."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    with Image.open(io.BytesIO(data)) as pil:  # reads the header only
        return pil.size


def _pixels(data: bytes, channels: int, resolution: int | None = None) -> torch.Tensor:
    """Encoded image → uint8 [C,H,W] (decoding fully, so truncation is caught here). With
    ``resolution``, an image of another size is refused from its header, before decoding (a
    20000×20000 PNG of a few hundred KB would otherwise take GBs).

    torchvision's libpng/libjpeg decoders straight into a tensor are faster than Pillow for
    shard-sized images (README, "Speed"), with identical pixels; Pillow handles the rest
    (a colour conversion, e.g. RGB shards read as grayscale, or a format torchvision lacks) and
    raises for an image that is really broken."""
    if resolution is not None:
        width, height = image_size(data)
        if (width, height) != (resolution, resolution):
            raise ValueError(f"image is {width}×{height} px, the shards are {resolution} px")
    if decode_image is not None:
        with contextlib.suppress(RuntimeError):
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            if image.shape[0] == channels and image.dtype == torch.uint8:  # (16-bit PNG: no)
                return image
    with Image.open(io.BytesIO(data)) as pil:
        mode = "L" if channels == 1 else "RGB"
        array = np.array(pil if pil.mode == mode else pil.convert(mode), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)


def decode_sample(
    sample: dict[str, Any],
    channels: int,
    transforms: Transforms | None = None,
    seed: int = 0,
    epoch: int = 0,
    resolution: int | None = None,
) -> dict[str, Any]:
    """Raw tar members → ``{"image": uint8 [C,H,W], "key"}`` plus ``label`` / ``attrs`` /
    ``target`` if present, after the random crop/flip (colour comes per batch in ``collate``);
    images of another size than ``resolution`` are refused."""
    key = sample["__key__"]
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        raise ValueError(f"no image member (one of {', '.join(IMAGE_KEYS)})")
    images = [_pixels(data, channels, resolution)]
    target = next((sample[f"target.{k}"] for k in IMAGE_KEYS if f"target.{k}" in sample), None)
    if target is not None:
        images.append(_pixels(target, channels, resolution))
    images = (transforms or Transforms()).geometry(images, seed, epoch, key)
    out: dict[str, Any] = {"image": images[0], "key": key}
    if target is not None:
        out["target"] = images[1]
    if "cls" in sample:
        out["label"] = int(sample["cls"])
    if "json" in sample:
        extra = json.loads(sample["json"])
        if "attrs" in extra:
            out["attrs"] = torch.tensor(extra["attrs"], dtype=torch.float32)
    return out


def _check_against(item: dict[str, Any], info: DatasetInfo) -> None:
    """What the manifest promises of every sample: a label in range, the attributes, the pair."""
    classes = info.num_classes
    if classes:
        if "label" not in item:
            raise ValueError(f"no .cls label (the shards have {classes} classes)")
        if not 0 <= item["label"] < classes:
            raise ValueError(f"label {item['label']} is outside 0–{classes - 1}")
    attributes = len(info.attribute_names)
    if attributes and ("attrs" not in item or item["attrs"].shape != (attributes,)):
        raise ValueError(f"no .json attrs list of {attributes} values")
    if info.paired and "target" not in item:
        raise ValueError("no .target image (the shards hold pairs)")
