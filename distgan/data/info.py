"""What a recipe needs to know about its data: the shape of a shard folder's samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distgan.data.transforms import Transforms


@dataclass(frozen=True)
class DatasetInfo:
    """What a recipe needs to know about the data to build its networks."""

    resolution: int
    channels: int
    class_names: list[str]
    total: int
    attribute_names: list[str] = field(default_factory=list)
    paired: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def dataset_info(manifest: dict[str, Any], transforms: Transforms | None = None) -> DatasetInfo:
    channels = int(manifest["channels"])
    return DatasetInfo(
        resolution=int(manifest["resolution"]),
        channels=transforms.channels(channels) if transforms else channels,
        class_names=list(manifest.get("class_names") or []),
        total=int(manifest.get("total", sum(s["count"] for s in manifest["shards"]))),
        attribute_names=list(manifest.get("attribute_names") or []),
        paired=bool(manifest.get("paired", False)),
    )
