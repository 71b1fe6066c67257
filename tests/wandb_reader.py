"""The tests' reader of an offline W&B run folder (no W&B server needed).

wandb 0.31's Python package no longer ships a `.wandb` reader (the log is written by the Go
`wandb-core` service), so this small record-log reader parses it.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

# `.wandb` files are a LevelDB-style log: a 7-byte file header (":W&B", magic 0xBEE1, version 0)
# then 32 KiB blocks of chunks, each with a 7-byte header <crc32 u32, length u16, type u8>.
_FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
_BLOCK = 32768
_CHUNK = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    """Reassemble the serialized Record protos of a `.wandb` log; a torn tail is dropped."""
    data = path.read_bytes()
    if data[:7] != _FILE_HEADER:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    out: list[bytes] = []
    pending: list[bytes] = []
    pos = 7
    while pos + _CHUNK.size <= len(data):
        if _BLOCK - pos % _BLOCK < _CHUNK.size:  # a header never straddles blocks: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        body = data[pos + _CHUNK.size : pos + _CHUNK.size + length]
        if len(body) < length or (crc == length == kind == 0):
            break  # still being written, or zero fill after a crash
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {pos}")
        pos += _CHUNK.size + length
        if kind == _FULL:
            out.append(body)
        elif kind == _FIRST:
            pending = [body]
        elif kind in (_MIDDLE, _LAST) and pending:
            pending.append(body)
            if kind == _LAST:
                out.append(b"".join(pending))
                pending = []
        else:
            raise ValueError(f"{path}: bad chunk type {kind} before byte {pos}")
    return out


def _set_path(tree: dict[str, Any], item: Any) -> None:
    """Items carry a `key` or a `nested_key` path (0.31 flattens logged dicts and media)."""
    keys = list(item.nested_key) or [item.key]
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def _flatten(tree: dict[str, Any], row: dict[str, Any], images: list[str], pre: str = "") -> None:
    """Scalars get wandb's dotted names; media (dicts with `_type`) only yield image paths."""
    for key, value in tree.items():
        if not isinstance(value, dict):
            row[pre + key] = value
        elif value.get("_type") == "image-file":
            images.append(f"files/{value['path']}")
        elif value.get("_type") == "images/separated":
            images.extend(f"files/{name}" for name in value.get("filenames", []))
        elif "_type" not in value:
            _flatten(value, row, images, f"{pre}{key}.")


def read_offline_run(run_folder: str | Path) -> dict[str, Any]:
    """Parse an offline run folder's `run-<id>.wandb` into id, config, history, images, the
    run's names (`run`: project, entity, name, group, tags, notes) and logged artifact names.

    Lets tests check what a run logged without a W&B server. `history` has one dict per
    committed step (scalars under wandb's dotted names, `_step`, `_runtime`, `_timestamp`;
    media left out; commit=False calls merge into the next row) and
    `images` the image files it logged, relative to the run folder
    (e.g. `files/media/images/samples_3_ab12.png`). wandb's own `_wandb` config is dropped.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    folder = Path(run_folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if len(logs) != 1:
        raise FileNotFoundError(f"{folder}: expected one run-*.wandb file, found {len(logs)}")
    run_id = logs[0].stem.removeprefix("run-")
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    images: list[str] = []
    run: dict[str, Any] = {}
    artifacts: list[str] = []
    for raw in _records(logs[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "artifact":
            artifacts.append(record.artifact.name)
        if kind == "run":
            run_id = record.run.run_id or run_id
            r = record.run
            run = {
                "project": r.project,
                "entity": r.entity,
                "name": r.display_name,
                "group": r.run_group,
                "tags": list(r.tags),
                "notes": r.notes,
            }
            for item in record.run.config.update:
                _set_path(config, item)
        elif kind == "config":
            for item in record.config.update:
                _set_path(config, item)
            for item in record.config.remove:
                config.pop(item.key, None)
        elif kind == "history":
            tree: dict[str, Any] = {}
            for item in record.history.item:
                _set_path(tree, item)
            history.append({})
            _flatten(tree, history[-1], images)
    config.pop("_wandb", None)
    return {
        "id": run_id,
        "config": config,
        "history": history,
        "images": images,
        "run": run,
        "artifacts": artifacts,
    }
