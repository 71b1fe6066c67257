"""Helpers shared by the benchmarks."""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from distgan.data.stream import DatasetInfo


def synthetic_batch(info: DatasetInfo, batch_size: int, device: torch.device) -> dict[str, Any]:
    """A batch shaped like the recipe's data (images in [-1, 1], labels when there are classes)."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, info.channels, info.resolution, info.resolution)
    batch: dict[str, Any] = {"image": (torch.rand(shape, generator=generator) * 2 - 1).to(device)}
    if info.num_classes:
        labels = torch.randint(info.num_classes, (batch_size,), generator=generator)
        batch["label"] = labels.to(device)
    return batch


def print_table(title: str, figures: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in figures.items():
        table.add_row(key, str(value))
    Console().print(table)
