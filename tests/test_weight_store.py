"""The spilled fp32 stores ES keeps beside the model: exact, private, and gone with the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from agent.es.weight_store import ModelWeights, SpilledWeights


def test_spilled_weights_round_trip_exactly_and_reads_are_copies(tmp_path):
    store = SpilledWeights(tmp_path)
    a = torch.randn(33, 17)
    b = torch.randn(5, 3, dtype=torch.bfloat16)
    store["a"], store["b"] = a, b
    assert torch.equal(store["a"], a) and store["a"].dtype == torch.float32
    assert torch.equal(store["b"], b.float())
    store["a"].add_(1.0)  # a read is the caller's own tensor
    assert torch.equal(store["a"], a)
    store["a"] = a * 2  # rewritten in place, the other module untouched
    assert torch.equal(store["a"], a * 2) and torch.equal(store["b"], b.float())
    assert list(store) == ["a", "b"] and len(store) == 2
    with pytest.MonkeyPatch.context() as patch:  # membership is the index's, no read
        patch.setattr(os, "preadv", None)
        assert "a" in store and "c" not in store
    with pytest.raises(ValueError, match="'a' has shape"):
        store["a"] = torch.zeros(3, 3)
    assert os.listdir(tmp_path) == []  # anonymous: nothing named on disk


def test_the_spill_file_is_freed_when_the_process_is_killed(tmp_path):
    """kill -9 runs no cleanup: the file must be one only the process holds open."""
    code = (
        "import os, signal, torch\n"
        "from pathlib import Path\n"
        "from agent.es.weight_store import SpilledWeights\n"
        f"s = SpilledWeights(Path({str(tmp_path)!r}))\n"
        "s['w'] = torch.ones(1024, 1024)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()
    assert os.listdir(tmp_path) == []


def test_model_weights_are_the_live_fp32_tensors():
    layer = torch.nn.Linear(4, 3)
    store = ModelWeights({"l": layer})
    before = layer.weight.detach().clone()
    store["l"].add_(1.0)  # in place: the model moved
    assert torch.equal(layer.weight.data, before + 1.0)
    store["l"] = torch.zeros(3, 4)
    assert torch.equal(layer.weight.data, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="fp32"):
        ModelWeights({"l": torch.nn.Linear(4, 3).to(torch.bfloat16)})


def test_a_full_disk_names_the_spill_folder(tmp_path, monkeypatch):
    import errno

    store = SpilledWeights(tmp_path)

    def no_space(*args):  # noqa: ANN002, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(OSError, match=f"spilling ES weights to {tmp_path}.*No space left"):
        store["w"] = torch.ones(4, 4)
    assert "w" not in store
