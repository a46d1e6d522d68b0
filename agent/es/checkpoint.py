"""Materialized checkpoints: a node's fp32 targeted weights and optimizer state, in one file.

They bound the cost of replay at depth: `ChainReplayer.set` starts from the deepest checkpoint on a
chain and applies only the records after it (the loop writes one every `[es] checkpoint_every`
ES steps of depth). The file is safetensors, so any safetensors tool opens it, but it is written
and read here one module at a time: the weights may be a spilled store of gigabytes, and neither
saving nor loading may hold them all in memory (nor map them: mapped pages count in RSS).

Keys: `w/<module>` the weights, `m1/<module>` and `m2/<module>` Adam's moments (absent for SGD);
the metadata's `optimizer_steps` is the optimizer's step count.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from agent.es.eggroll import OptimizerState
from agent.es.weight_store import SpilledWeights, Weights, f32_bytes, read_f32, write_all

_PREFIXES = ("w", "m1", "m2")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file that holds the first `records` records of a chain applied."""

    path: Path
    records: int


def save_checkpoint(path: Path, weights: Mapping[str, torch.Tensor], state: OptimizerState) -> None:
    """Atomic: a temp file in the same folder, fsync, rename. A kill leaves the old file or none."""
    parts = [("w", weights), ("m1", state.first or {}), ("m2", state.second or {})]
    header: dict[str, object] = {}
    order = []
    end = 0
    for prefix, tensors in parts:
        for name in tensors:
            shape = list(_shape(tensors, name))
            size = 4 * math.prod(shape)
            header[f"{prefix}/{name}"] = {
                "dtype": "F32",
                "shape": shape,
                "data_offsets": [end, end + size],
            }
            order.append((tensors, name, end))
            end += size
    header["__metadata__"] = {"optimizer_steps": json.dumps(state.steps)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
    start = 8 + len(encoded)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        write_all(fd, struct.pack("<Q", len(encoded)) + encoded, 0)
        for tensors, name, offset in order:
            write_all(fd, f32_bytes(tensors[name]), start + offset)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, spilled: bool = False) -> tuple[CheckpointWeights, OptimizerState]:
    """The weights (read one module at a time, on use) and the optimizer state: Adam's moments
    in memory, or `spilled` (copied one module at a time into spilled stores)."""
    weights = CheckpointWeights(path)
    moments: list[Weights | None] = []
    for prefix in ("m1", "m2"):
        names = weights.names(prefix)
        pairs = ((name, weights.read(prefix, name)) for name in names)
        moments.append((SpilledWeights.of(pairs) if spilled else dict(pairs)) if names else None)
    return weights, OptimizerState(weights.optimizer_steps, *moments, spilled=spilled)


class CheckpointWeights(Mapping[str, torch.Tensor]):
    """A checkpoint file's weights by module; each read is a fresh fp32 tensor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 (lives with the mapping)
        try:
            self._index, self.optimizer_steps = self._parse()
        except BaseException:
            self._file.close()
            raise

    def _parse(self) -> tuple[dict[str, tuple[int, list[int]]], int]:
        def bad(why: str) -> ValueError:
            return ValueError(f"{self.path}: not an ES checkpoint ({why})")

        raw = self._file.read(8)
        if len(raw) != 8:
            raise bad("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        size = os.fstat(self._file.fileno()).st_size
        if length > size - 8:
            raise bad(f"header length {length} exceeds the file's {size} bytes")
        try:
            header = json.loads(self._file.read(length))
            steps = int(json.loads(header.pop("__metadata__", {}).get("optimizer_steps", "0")))
        except (ValueError, TypeError, AttributeError) as exc:
            raise bad(f"unreadable header: {exc}") from exc
        index = {}
        for key, entry in header.items():
            prefix, _, name = key.partition("/")
            if prefix not in _PREFIXES or not name:
                raise bad(f"unexpected tensor {key!r}")
            if not isinstance(entry, dict) or entry.get("dtype") != "F32":
                raise bad(f"tensor {key!r} is not F32")
            begin, end = entry["data_offsets"]
            if 8 + length + end > size or end - begin != 4 * math.prod(entry["shape"]):
                raise bad(f"tensor {key!r} lies outside the file or has the wrong size")
            index[key] = (8 + length + begin, entry["shape"])
        return index, steps

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._index[f"w/{name}"][1])

    def names(self, prefix: str = "w") -> list[str]:
        return [k.partition("/")[2] for k in self._index if k.startswith(prefix + "/")]

    def read(self, prefix: str, name: str) -> torch.Tensor:
        offset, shape = self._index[f"{prefix}/{name}"]
        return read_f32(self._file.fileno(), offset, shape, f"{self.path} {prefix}/{name}")

    def __getitem__(self, name: str) -> torch.Tensor:
        if f"w/{name}" not in self._index:
            raise KeyError(name)
        return self.read("w", name)

    def __contains__(self, name: object) -> bool:
        return f"w/{name}" in self._index  # (Mapping's default would read the module)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names("w"))

    def __len__(self) -> int:
        return len(self.names("w"))

    def close(self) -> None:
        self._file.close()


def _shape(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Size:
    """A module's shape without reading a spilled store's data."""
    if isinstance(tensors, SpilledWeights):
        return tensors.shape(name)
    return tensors[name].shape
