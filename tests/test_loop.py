"""The loop end to end on a tiny random model saved as a local folder (fast, garbage answers):
run, status, graph, SIGTERM, and kill -9 at random moments followed by resume."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.loop.config import ConfigError, from_dict, load_config
from archive import Archive, Status

LINEAGE = [sys.executable, "-m", "agent.cli"]
ROOT = Path(__file__).resolve().parents[1]


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"\[es\] bogus: unknown key"):
        from_dict({"es": {"bogus": 1}}, "x.toml")
    with pytest.raises(
        ConfigError, match=r"\[budget\] iterations: Input should be a valid integer"
    ):
        from_dict({"budget": {"iterations": "many"}}, "x.toml")
    with pytest.raises(ConfigError, match="population must be even"):
        from_dict({"es": {"population": 3}}, "x.toml")
    with pytest.raises(ConfigError, match="ray_address is for executor"):
        from_dict({"ray_address": "head:6379"}, "x.toml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = 1\n[model\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: .*line 2"):
        load_config(bad)
    assert load_config(None).budget.iterations == 6  # every key has a default


def is_float(annotation: object) -> bool:
    """float or float | None (a dict or tuple of floats gets another error first)."""
    text = str(annotation)
    return "float" in text and "dict" not in text and "tuple" not in text


def float_keys() -> list[tuple[str, str]]:
    """(section, key) of every float setting of a run config, nested sections included."""
    from pydantic import BaseModel

    from agent.loop.config import RunConfig

    keys = []
    for section, info in RunConfig.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            fields = kind.model_fields
            keys += [(section, k) for k, f in fields.items() if is_float(f.annotation)]
        elif dataclasses.is_dataclass(kind):  # a subsystem's own settings ([gateway], ...)
            keys += [(section, f.name) for f in dataclasses.fields(kind) if is_float(f.type)]
        elif is_float(kind):
            keys.append(("", section))
    keys += [("operators", name) for name in RunConfig().operators.weights]  # weights by name
    return keys


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_floats_are_refused_at_load_naming_the_key(tmp_path, value):
    """`wall_s = inf` used to pass and fail later with an OverflowError; every float key of
    every section is refused at load, in the file/key format."""
    keys = float_keys()
    assert {
        ("solve", "wall_s"),
        ("budget", "wall_clock_s"),
        ("operators", "both"),
        ("gateway", "batch_window_s"),
        ("timeouts", "ceiling_s"),
    } <= set(keys)
    for section, key in keys:
        path = tmp_path / "c.toml"
        path.write_text(f"[{section}]\n{key} = {value}\n" if section else f"{key} = {value}\n")
        where = rf"\[{section}\] {key}" if section else key
        with pytest.raises(ConfigError, match=rf"c.toml: {where}: .*finite"):
            load_config(path)


def test_the_subsystems_settings_are_sections_of_their_own():
    """[gateway], [reward] and [timeouts] are the gateway's, the ES reward's and the scoring
    timeouts' own settings objects, checked by them, in the file/key error format."""
    config = from_dict(
        {"gateway": {"max_batch_rows": 32}, "reward": {"pass_weight": 1.0}, "timeouts": {}}, "t"
    )
    assert config.gateway.max_batch_rows == 32 and config.reward.pass_weight == 1.0
    assert from_dict(json.loads(config.to_json()), "config.json") == config  # resume reads it
    with pytest.raises(ConfigError, match=r"run.toml: \[gateway\] bogus: unknown key"):
        from_dict({"gateway": {"bogus": 1}}, "run.toml")
    with pytest.raises(ConfigError, match=r"run.toml: \[reward\]: .*weights must be >= 0"):
        from_dict({"reward": {"format_weight": -1.0}}, "run.toml")
    with pytest.raises(ConfigError, match=r"run.toml: \[timeouts\]: .*must not exceed"):
        from_dict({"timeouts": {"floor_s": 90.0}}, "run.toml")


def test_cli_rejects_a_bad_config_before_loading_anything(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[tasks]\nstage1_tasks = 0\n")
    out = subprocess.run(
        [*LINEAGE, "run", str(cfg), "--run-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "[tasks] stage1_tasks" in out.stderr
    assert not (tmp_path / "r").exists()


def write_config(path: Path, model: Path, iterations: int, extra: str = "") -> Path:
    path.write_text(
        f"""seed = 3
{extra}[model]
name = "{model}"
backend = "transformers"
threads = 1
[tasks]
stage1_tasks = 2
dev_tasks = 2
heldout_tasks = 2
stage1_margin = 1.0
[budget]
iterations = {iterations}
[operators]
es_step = 1
scaffold_edit = 1
[es]
population = 2
tasks_per_step = 2
checkpoint_every = 1
skip_tied = false  # tiny tests tie often; they need ES children to judge
[solve]
tasks_per_job = 4
threads = 4
wall_s = 120
tokens_per_task = 64
max_tokens_per_call = 16
[edit]
improve_tokens = 64
improve_wall_s = 60
[sandbox]
agent_workers = 1
scoring_workers = 1
"""
    )
    return path


def snapshot(run_dir: Path) -> dict[str, tuple[str, dict]]:
    """Completed nodes (evaluated or failed) and their selection scores, read-only (held-out
    scores are added by the final report, so they are left out)."""
    if not (run_dir / "archive.sqlite").exists():
        return {}
    try:
        with Archive(run_dir, readonly=True) as archive:
            return {
                n.id: (
                    str(n.status),
                    {k: v.to_json() for k, v in n.scores.items() if k != "heldout"},
                )
                for n in archive.nodes()
                if n.status in (Status.EVALUATED, Status.FAILED)
            }
    except Exception:  # a database not yet created by the first start
        return {}


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard log folder, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.docker
@pytest.mark.slow
def test_run_status_graph_and_sigterm(tiny_dir, tmp_path):
    cfg = write_config(
        tmp_path / "c.toml", tiny_dir, iterations=2, extra="[report]\ntensorboard = true\n"
    )
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [*LINEAGE, "run", str(cfg), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "base vs best node" in out.stdout
    with Archive(run_dir, readonly=True) as archive:
        nodes = {n.id: n for n in archive.nodes()}
    assert set(nodes) == {"n0000", "n0001", "n0002"}
    assert nodes["n0000"].operator == "root" and "heldout" in nodes["n0000"].scores
    assert all(n.status in (Status.EVALUATED, Status.FAILED) for n in nodes.values())
    events = (run_dir / "events.jsonl").read_text()
    assert '"event":"run_stopped"' in events and '"reason":"iterations"' in events
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    evaluated = [n for n in nodes.values() if "train" in n.scores]
    assert sorted(step for step, _ in scalars["score/train"]) == sorted(
        int(n.metadata["iteration"]) for n in evaluated
    )
    for step, value in scalars["score/train"]:
        node = next(n for n in evaluated if int(n.metadata["iteration"]) == step)
        assert value == pytest.approx(node.scores["train"].score)
    best = [v for _, v in sorted(scalars["best/train"])]
    assert best == sorted(best)  # best so far never goes down
    assert {"spent/generated_tokens", "spent/sandbox_s", "spent/wall_s"} <= set(scalars)

    status = subprocess.run(
        [*LINEAGE, "status", str(run_dir)], capture_output=True, text=True, cwd=ROOT
    )
    assert status.returncode == 0 and "root" in status.stdout and "iterations" in status.stdout
    graph = subprocess.run(
        [
            *LINEAGE,
            "graph",
            str(run_dir),
            "--html",
            str(tmp_path / "g.html"),
            "--png",
            str(tmp_path / "g.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert graph.returncode == 0, graph.stderr
    assert "n0002" in (tmp_path / "g.html").read_text()

    # SIGTERM: the child in flight is finished (or left pending), the run exits, resume completes
    proc = subprocess.Popen(
        [*LINEAGE, "resume", str(run_dir), "--iterations", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(snapshot(run_dir)) < 4:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM" in err
    done = subprocess.run(
        [*LINEAGE, "resume", str(run_dir), "--iterations", "4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(snapshot(run_dir)) == {f"n{i:04d}" for i in range(5)}
    assert_checkpoints(run_dir)
    assert_export(run_dir, tiny_dir, tmp_path)


def assert_export(run_dir: Path, tiny_dir: Path, tmp_path: Path) -> None:
    """`lineage export` of a real run: an ES node's weights as a model folder any tool loads, bit
    for bit the chain replayed on the base model as the run loads it, and its scaffold; bad
    requests are one clear error."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    from agent.es.chain_replayer import ChainReplayer
    from agent.loop.config import EsSection
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

    with Archive(run_dir, readonly=True) as archive:
        node = next(n for n in archive.nodes() if n.es_record and n.status != Status.FAILED)
        records = archive.weights_chain(node.id).records
        archive.checkout(node.id, tmp_path / "expected-scaffold")
    out = tmp_path / "export"
    export = [*LINEAGE, "export", str(run_dir), node.id, "--out", str(out)]
    done = subprocess.run(export, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    exported = AutoModelForCausalLM.from_pretrained(out / "model", dtype="auto").state_dict()

    def as_the_run_loads_it() -> torch.nn.Module:  # the run's [model], dtype "auto" included
        config = TransformersBackendConfig(model=str(tiny_dir), dtype="auto")
        return TransformersBackend.from_config(config).model

    expected = as_the_run_loads_it()
    ChainReplayer(expected, EsSection().target_modules).set(records)
    assert exported.keys() == expected.state_dict().keys()
    assert all(torch.equal(v, exported[k]) for k, v in expected.state_dict().items())
    # (whether the records moved the weights depends on the run's rewards: tests/test_export.py
    # checks that with a record that does)
    scaffold = sorted(p.relative_to(out / "scaffold") for p in (out / "scaffold").rglob("*"))
    assert scaffold == sorted(
        p.relative_to(tmp_path / "expected-scaffold")
        for p in (tmp_path / "expected-scaffold").rglob("*")
    )
    info = json.loads((out / "node.json").read_text())
    assert info["node"] == node.id and info["es_records"] == len(records)
    again = subprocess.run(export, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = [*LINEAGE, "export", str(run_dir), "n9999", "--out", str(tmp_path / "x")]
    unknown = subprocess.run(missing, capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "n9999" in unknown.stderr, unknown.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.docker
@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tiny_dir, tmp_path):
    iterations = 12  # raised by 6 whenever a life finishes the budget before its kill
    cfg = write_config(tmp_path / "c.toml", tiny_dir, iterations=iterations)
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    completed: dict[str, tuple[str, dict]] = {}
    kills = 0

    def life() -> list[str]:
        """`run` until the run has its config.json (a life killed before writing it left no
        run behind, and `run` starts it again), then `resume`."""
        if not (run_dir / "config.json").exists():
            return ["run", str(cfg), "--run-dir", str(run_dir)]
        return ["resume", str(run_dir), "--iterations", str(iterations)]

    while kills < 10:
        args = life()
        proc = subprocess.Popen(
            [*LINEAGE, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=rng.uniform(3.0, 14.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            now = snapshot(run_dir)
            for node_id, state in completed.items():  # nothing completed is ever lost or changed
                assert now.get(node_id) == state, (node_id, now.get(node_id), state)
            completed.update(now)
            continue
        assert proc.returncode == 0, proc.stderr.read()[-3000:]
        iterations += 6  # a fast machine finished the budget: raise it, keep killing
    if kills >= 10 or not (run_dir / "archive.sqlite").exists():
        out = subprocess.run(
            [*LINEAGE, *life()],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=1200,
        )
        assert out.returncode == 0, out.stderr[-3000:]
    final = snapshot(run_dir)
    for node_id, state in completed.items():
        assert final.get(node_id) == state
    assert set(final) == {f"n{i:04d}" for i in range(iterations + 1)}
    with Archive(run_dir, readonly=True) as archive:
        ids = archive.ids()
        assert len(ids) == len(set(ids)) == iterations + 1
        assert archive.pending() == []
    assert kills == 10
    assert_checkpoints(run_dir)


def assert_checkpoints(run_dir: Path) -> None:
    """`checkpoint_every = 1`: every stored ES child has its weights materialized, and no scratch
    file outlives a write (a killed one is removed when the run reopens)."""
    from agent.es.checkpoint import load_checkpoint

    with Archive(run_dir, readonly=True) as archive:
        es_children = [n for n in archive.nodes() if n.es_record and n.status != Status.FAILED]
        assert es_children, "the run made no ES child"
        for node in es_children:
            path = archive.checkpoint_path(node.id)
            assert path is not None and path.exists(), node.id
            weights, state = load_checkpoint(path)
            assert state.steps == len(archive.weights_chain(node.id).records), node.id
            assert set(node.es_record["modules"]) <= set(weights), node.id
            weights.close()
    assert not list(run_dir.glob("es-checkpoint*"))
