"""The loop's vLLM path on a real engine (SmolLM2-135M, CPU): node weights pushed into the running
engine generate exactly what `lineage export` of the node generates on an engine of its own; rows
of different settings decode in the same engine steps; a call whose session closes is aborted;
ES members' rows through the gateway equal the backend's own population rows. One engine start
(plus one for the exported node) serves the module: tests/vllm_loop_runner.py runs it all in its
own process and writes JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("vllm-loop")
    with open(folder / "log.txt", "w") as log:
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "vllm_loop_runner.py"), str(folder / "out.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            timeout=900,
        )
    assert done.returncode == 0, (folder / "log.txt").read_text()[-4000:]
    return json.loads((folder / "out.json").read_text())


def test_the_gateway_streams_on_the_engine(out) -> None:
    assert out["streaming"]


def test_node_weights_in_the_running_engine_equal_its_export_on_raw_vllm(out) -> None:
    w = out["weights"]
    assert w["pushes_at_base"] == 0  # the engine starts at the base: nothing to push
    assert w["pushes_at_node"] == 1
    changed = sum(a != b for a, b in zip(w["node"], w["base"], strict=True))
    print(f"rows the ES step changed: {changed}/{len(w['base'])}; push {w['push_s']:.2f} s")
    assert changed >= 2  # the check means something only if the node differs from the base
    assert w["raw_engine_node"] == w["node"]
    assert w["base_again"] == w["base"]
    # The transformers backend (other kernels) agrees with the engine on the node about as well
    # as it does on the base.
    on_base = sum(a == b for a, b in zip(w["transformers_base"], w["base"], strict=True))
    on_node = sum(a == b for a, b in zip(w["transformers_node"], w["node"], strict=True))
    print(f"transformers vs the engine, identical rows: base {on_base}/8, node {on_node}/8")
    assert on_node >= on_base - 1


def test_rows_of_different_settings_decode_in_the_same_steps(out) -> None:
    s = out["stream"]
    r = s["results"]
    assert len(r["long"]) == 2 and len(r["stopped"]) == 2 and len(r["n2"]) == 2
    assert len(r["sampled"]) == 1
    assert not any("\n" in text for text in r["stopped"])
    assert r["n2"][0] == r["n2"][1]  # greedy rows of one prompt
    # One generate per setting would take about 48 + 24 + 40 + 16 steps; together, the longest.
    print(f"engine steps for jobs of 48, 24, 40 and 16 tokens at once: {s['steps']}")
    assert s["steps"] < 48 + 24


def test_a_call_whose_session_closes_is_aborted(out) -> None:
    a = out["abort"]
    assert a["idle"] is True
    print(f"engine idle {a['idle_after_s']:.2f} s after the session closed")
    assert a["idle_after_s"] < 5  # 2,000 tokens would take far longer
    assert "503" in a["error"] and "session was closed" in a["error"]


def test_member_rows_through_the_gateway_equal_the_backends_population(out) -> None:
    p = out["population"]
    direct = p["direct"]
    assert p["gateway"]["0"] == direct[0:4]
    assert p["gateway"]["1"] == direct[4:8]
    assert p["gateway"]["-1"] == direct[8:12]
    assert p["gateway"]["-1"] == out["weights"]["base"][:4]
    assert p["gateway"]["0"] != p["gateway"]["-1"]
