"""`lineage export` on a hand-built run directory whose ES records really move the weights (a
real run's tiny model often ties its members' rewards, and a zero step moves nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from agent.es import EsConfig
from agent.es.chain_replayer import ChainReplayer
from agent.es.checkpoint import save_checkpoint
from agent.loop.config import from_dict
from agent.loop.runtime import model_hash
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
from archive import Archive

LINEAGE = [sys.executable, "-m", "agent.cli"]
ROOT = Path(__file__).resolve().parents[1]


def load(tiny_dir: Path) -> TransformersBackend:
    """The base model as a run with `[model] name = tiny_dir` loads it (dtype auto: bf16)."""
    return TransformersBackend.from_config(TransformersBackendConfig(model=str(tiny_dir)))


def make_run(tiny_dir: Path, run_dir: Path) -> tuple[list[dict], str]:
    """A run directory: config, root, and a chain of three ES children, the second of which
    carries a checkpoint; the records come from real tells with spread-out rewards."""
    config = from_dict({"model": {"name": str(tiny_dir)}, "es": {"alpha": 0.05}}, "test")
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config.to_json())
    backend = load(tiny_dir)
    es_config = EsConfig(population=4, alpha=0.05, seed=3)
    weights = ChainReplayer(backend.model, es_config.target_modules)
    weights.set([])
    records = []
    with Archive(run_dir, create=True) as archive:
        parent = archive.add_root(str(tiny_dir), model_hash(backend), files={"agent.py": "0"}).id
        for step in range(3):
            es = weights.strategy(es_config, step=step)
            records.append(asdict(es.tell(es.ask(), [3.0, 0.0, 1.0, 2.0 + step])))
            checkpoint = None
            if step == 1:
                checkpoint = run_dir / "ckpt"
                save_checkpoint(checkpoint, weights.master, weights.state)
            parent = archive.add_child(
                parent, es_record=records[-1], checkpoint=checkpoint, files={"agent.py": str(step)}
            ).id
    (run_dir / "ckpt").unlink()
    return records, parent


def test_export_writes_the_replayed_weights_and_the_scaffold(tiny_dir, tmp_path):
    records, leaf = make_run(tiny_dir, tmp_path / "run")
    out = tmp_path / "out"
    done = subprocess.run(
        [*LINEAGE, "export", str(tmp_path / "run"), leaf, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    exported = AutoModelForCausalLM.from_pretrained(out / "model", dtype="auto").state_dict()
    expected = load(tiny_dir).model
    ChainReplayer(expected, EsConfig().target_modules).set(records)  # from the base, no shortcut
    assert all(torch.equal(v, exported[k]) for k, v in expected.state_dict().items())
    base = load(tiny_dir).model.state_dict()
    assert not all(torch.equal(v, base[k]) for k, v in exported.items())  # the records moved it
    assert (out / "scaffold" / "agent.py").read_text() == "2"
    info = json.loads((out / "node.json").read_text())
    assert info["node"] == leaf and info["es_records"] == 3
    assert info["replayed_records"] == 1  # the second child's checkpoint held the other two
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out-")] == []


def test_export_refuses_a_replaced_base_model(tiny_dir, tmp_path):
    _, leaf = make_run(tiny_dir, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    other = tmp_path / "other-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    model.config.rms_norm_eps = 1e-3  # another model under the run's name would hash otherwise
    model.save_pretrained(other)
    load(tiny_dir).tokenizer.save_pretrained(other)
    config["model"]["name"] = str(other)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [*LINEAGE, "export", str(tmp_path / "run"), leaf, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and "is not the run's base" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
