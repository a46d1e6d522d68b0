"""Where the fp32 copies of the targeted weights live: in an anonymous file, one module at a time.

ES needs fp32 values of every targeted weight beside the model: the base that every chain is
rebuilt from, the master of a model that runs in bf16/fp16 (bf16 rounds away steps of 1e-5), the
restore copy of the full-rank mode, Adam's two moments. Each is as large as the targeted part of
an fp32 model, so held in memory they made the loop's ES step peak at about 2x the RSS of
inference alone. Here they are read and written one module at a time: a step holds one
module-sized buffer beyond the model, and the rest sits in the kernel's page cache, which it
gives back under pressure.

The file is anonymous (O_TMPFILE, or unlinked at once), so the kernel frees it when the process
ends, kill -9 included: no crash leaves gigabytes behind. It is made under $LINEAGE_CACHE/spill
(default ~/.cache/lineage/spill), on disk, not in /tmp, which is often tmpfs (RAM).

When the model itself runs in fp32 its own tensors are the master (`ModelWeights`): no copy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path

import torch
from torch import nn

from agent.policy.assets import cache_root

Weights = MutableMapping[str, torch.Tensor]  # fp32, by module: a dict, or one of the stores here


def host_fp32(weight: torch.Tensor) -> torch.Tensor:
    """An fp32 copy of a weight in host memory (one module's worth, on its way to a store)."""
    return weight.detach().to("cpu", torch.float32, copy=True)


def spill_dir() -> Path:
    """$LINEAGE_CACHE/spill, else ~/.cache/lineage/spill (beside the models' cache)."""
    return cache_root() / "spill"


def read_f32(fd: int, offset: int, shape: Sequence[int], what: str) -> torch.Tensor:
    """A fresh fp32 CPU tensor from `fd`'s bytes at `offset` (no mapping: RSS grows by it only)."""
    tensor = torch.empty(tuple(shape), dtype=torch.float32)
    view = memoryview(tensor.numpy()).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise OSError(f"{what}: the file ends before its data does")
        done += n
    return tensor


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def f32_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous fp32 CPU copy of `tensor` (no copy when it already is one)."""
    on_host = tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    data = (tensor if on_host else host_fp32(tensor)).detach().contiguous()
    return memoryview(data.numpy()).cast("B")


class SpilledWeights(MutableMapping[str, torch.Tensor]):
    """fp32 tensors by module name, kept in one anonymous file.

    Reading gives a fresh CPU tensor (changing it changes nothing stored); writing stores a copy.
    A module keeps its shape once written; the file only grows."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or spill_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 (lives with the store)
        self._index: dict[str, tuple[int, torch.Size]] = {}  # name -> (byte offset, shape)
        self._end = 0

    @classmethod
    def of(
        cls, tensors: Iterable[tuple[str, torch.Tensor]], directory: Path | None = None
    ) -> SpilledWeights:
        """A store holding `tensors`, taken one at a time (a generator never holds them all)."""
        store = cls(directory)
        for name, tensor in tensors:
            store[name] = tensor
        return store

    def __getitem__(self, name: str) -> torch.Tensor:
        offset, shape = self._index[name]
        return read_f32(self._file.fileno(), offset, shape, f"spilled module {name!r}")

    def __setitem__(self, name: str, tensor: torch.Tensor) -> None:
        data = f32_bytes(tensor)
        if name in self._index:
            offset, shape = self._index[name]
            if tensor.shape != shape:
                raise ValueError(
                    f"module {name!r} has shape {tuple(shape)}, not {tuple(tensor.shape)}"
                )
        else:
            offset, shape = self._end, tensor.shape
            self._end += len(data)
        try:
            write_all(self._file.fileno(), data, offset)
        except OSError as exc:  # a full disk, most likely: say where
            raise OSError(
                exc.errno,
                f"spilling ES weights to {self.directory} (set $LINEAGE_CACHE to move "
                f"it): {exc.strerror}",
            ) from exc
        self._index[name] = (offset, shape)

    def __delitem__(self, name: str) -> None:
        del self._index[name]  # its bytes stay until the file is closed

    def __contains__(self, name: object) -> bool:
        return name in self._index  # (Mapping's default would read the module)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def shape(self, name: str) -> torch.Size:
        return self._index[name][1]

    def close(self) -> None:
        self._file.close()


class ModelWeights(MutableMapping[str, torch.Tensor]):
    """An fp32 model's own Linear weights, as a master: reading gives the live tensor, so an
    update in place moves the model; writing copies into it."""

    def __init__(self, layers: Mapping[str, nn.Linear]) -> None:
        bad = [n for n, layer in layers.items() if layer.weight.dtype != torch.float32]
        if bad:
            raise ValueError(f"ModelWeights needs fp32 weights; not fp32: {bad[:5]}")
        self.layers = dict(layers)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.layers[name].weight.data

    def __setitem__(self, name: str, tensor: torch.Tensor) -> None:
        live = self.layers[name].weight.data
        if tensor.data_ptr() != live.data_ptr():  # not the live tensor read back
            with torch.no_grad():
                live.copy_(tensor)

    def __delitem__(self, name: str) -> None:
        raise TypeError("a model's weights cannot be removed from it")

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)


def all_fp32(layers: Mapping[str, nn.Linear]) -> bool:
    return all(layer.weight.dtype == torch.float32 for layer in layers.values())
