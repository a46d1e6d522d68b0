"""The loop on each backend: one short run (base + ES steps and edits, fixed seed) per backend, one
after the other on this machine, against raw vLLM's batched rate.

Each run is a child process (`--child`) that opens the run as `lineage run` does (`Runtime`,
`Loop`) with timers around the parts of a run, and reports:

- generated tokens (the gateway's count: agents, ES populations, evaluations, edits) per second
  of the whole run's wall clock (`loop_tok_s_*`; also without the start-up);
- the run's time split, each second counted once, in this order of precedence: engine start,
  container starts (pools, calibration, replacements), setting weights (replaying a chain, and
  for vLLM pushing it into the engine), ES update (`tell`), generation (the backend decoding
  rows), scoring (judging jobs while nothing above runs), idle (none of these: containers
  starting agent jobs, Python between steps, waiting);
- every node's scores, so reruns can be compared node for node (`--repeat`: the first backend
  runs twice; greedy decoding must give the same scores).

Raw vLLM (`LLM.generate` on the first `--raw-limit` HumanEval prompts, greedy, completion stops,
384 new tokens) runs with each `--raw-binds` core binding; the best is the baseline of
`loop_vs_raw_vllm`. `--cpu-binds` runs the vLLM loop once per binding (the whole run's best split
of the cores between the engine and the sandboxes). `--spin` adds a run of the first binding with
vLLM's own waiting (its processes spin on each other's replies, `LINEAGE_VLLM_SPIN=1`; see
`agent/policy/vllm_spin.py`) as the baseline of `parked_vs_spinning_loop`.

    python benchmarks/loop_bench.py [--backends vllm,transformers] [--iterations 3]
        [--cpu-binds all] [--spin] [--raw-binds auto,all] [--repeat] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.policy.vllm_spin import KEEP_SPINNING

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = (
    "engine_start",
    "container_starts",
    "setting_weights",
    "es_update",
    "generation",
    "scoring",
)


def bench_config(iterations: int, backend: str, cpu_bind: str, model: str = "default") -> dict:
    """The demo's shape (MBPP, ES steps and edits in turn), small enough to run several times."""
    return {
        "seed": 0,
        "model": {"name": model, "backend": backend, "cpu_bind": cpu_bind},
        "tasks": {
            "train": "mbpp:train",
            "dev": "mbpp:dev",
            "heldout": "mbpp:test",
            "stage1_tasks": 6,
            "stage1_margin": 0.17,
            "dev_tasks": 8,
            "heldout_tasks": 8,
        },
        "budget": {"iterations": iterations},
        "operators": {"es_step": 0.5, "scaffold_edit": 0.5, "order": "cycle"},
        "es": {"population": 8, "tasks_per_step": 3, "sigma": 0.001, "alpha": 2e-6},
        "edit": {"improve_tokens": 768, "improve_wall_s": 300},
        "solve": {"tasks_per_job": 8, "threads": 8, "wall_s": 600, "max_tokens_per_call": 192},
        "sandbox": {"agent_workers": 8},
    }


# -- the child: one run, timed -------------------------------------------------------------------
class Timeline:
    """Labelled wall-clock intervals, and the split they make of a span (each second once)."""

    def __init__(self) -> None:
        self.intervals: list[tuple[str, float, float]] = []

    def wrap(self, owner: object, name: str, label: str) -> None:
        """Time every call of `owner.name` (a class or module attribute) as `label`."""
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return inner(*args, **kwargs)
            finally:
                self.intervals.append((label, started, time.monotonic()))

        setattr(owner, name, timed)

    def split(self, start: float, end: float) -> dict[str, float]:
        """Seconds of [start, end] per category, by precedence (`CATEGORIES` order), + idle."""
        edges = sorted(
            (t, delta, label)
            for label, a, b in self.intervals
            for t, delta in ((max(a, start), 1), (min(b, end), -1))
            if a < b and b > start and a < end
        )
        active = dict.fromkeys(CATEGORIES, 0)
        out = dict.fromkeys((*CATEGORIES, "idle"), 0.0)
        now = start
        for t, delta, label in edges:
            top = next((c for c in CATEGORIES if active[c] > 0), "idle")
            out[top] += t - now
            now = t
            active[label] += delta
        out["idle"] += end - now
        return out


def child(args: argparse.Namespace) -> None:
    from rich.console import Console

    import agent.loop.runtime as runtime_module
    import agent.scaffold.solving as solving
    import sandbox.pool as pool_module
    from agent.es.eggroll import EggRoll
    from agent.loop.config import from_dict
    from agent.loop.loop import Loop
    from agent.loop.runtime import Runtime
    from agent.policy.transformers_backend import TransformersBackend
    from agent.policy.vllm_spin import vllm_cpu_seconds
    from archive import Archive

    timeline = Timeline()
    timeline.wrap(runtime_module, "open_policy", "engine_start")
    timeline.wrap(pool_module, "start_container", "container_starts")
    timeline.wrap(runtime_module, "calibrate", "container_starts")
    timeline.wrap(Runtime, "set_weights", "setting_weights")
    timeline.wrap(EggRoll, "tell", "es_update")
    timeline.wrap(TransformersBackend, "generate", "generation")
    timeline.wrap(solving, "score", "scoring")
    try:
        from agent.policy.vllm_stream import VllmStream

        timeline.wrap(VllmStream, "step", "generation")
    except ImportError:
        pass
    config = from_dict(
        bench_config(args.iterations, args.backend, args.cpu_bind, args.model), "loop_bench"
    )
    run_dir = Path(args.run_dir)
    started = time.monotonic()
    with Runtime(config, run_dir) as rt:
        opened = time.monotonic()
        summary = Loop(rt, Console(stderr=True)).run()
        usage = rt.gateway.usage()
        kind = rt.policy.kind
        push_s = getattr(rt.policy.generator, "push_s", 0.0)
        done = time.monotonic()
        replacements = rt.agent_pool.replacements + getattr(rt.scoring_pool, "replacements", 0)
        engine_cpu_s = vllm_cpu_seconds()
    with Archive(run_dir, readonly=True) as archive:
        nodes = {
            n.id: {
                "operator": n.operator,
                "status": str(n.status),
                "scores": {k: v.to_json() for k, v in n.scores.items()},
            }
            for n in archive.nodes()
        }
    out = {
        "backend": kind,
        "cpu_bind": args.cpu_bind,
        "wall_s": done - started,
        "startup_s": opened - started,
        "tokens": usage["tokens"],
        "calls": usage["calls"],
        "reused_calls": usage["reused_calls"],
        "reused_tokens": usage["reused_tokens"],
        "engine_busy_s": usage["busy_s"],
        "push_s": push_s,
        "container_replacements": replacements,
        "vllm_cpu_s": engine_cpu_s,
        "split_s": timeline.split(started, done),
        "iterations": summary.iterations,
        "stopped": summary.stopped,
        "nodes": nodes,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))


def raw_child(args: argparse.Namespace) -> None:
    """Raw vLLM's batched greedy rate with one core binding (the issue's baseline)."""
    from vllm import LLM, SamplingParams

    from agent.policy.cpu_bind import cpu_binding
    from agent.policy.prompts import COMPLETION_STOPS
    from agent.policy.vllm_backend import VllmBackendConfig, engine_args
    from evaluators.datasets import load_humaneval

    os.environ.update(cpu_binding(args.cpu_bind))
    engine = engine_args(VllmBackendConfig(model=args.model))
    engine.pop("worker_extension_cls")
    llm = LLM(**engine)
    prompts = [t.prompt for t in load_humaneval()][: args.raw_limit]
    params = SamplingParams(temperature=0.0, max_tokens=384, stop=list(COMPLETION_STOPS))
    llm.generate(prompts[:4], params, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    Path(args.out).write_text(
        json.dumps({"cpu_bind": args.cpu_bind, "tokens": tokens, "tok_s": tokens / seconds})
    )


# -- the parent ----------------------------------------------------------------------------------
def run_child(argv: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="loop-bench-")) / "out.json"
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, __file__, *argv, "--out", str(out)],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            check=True,
        )
    return json.loads(out.read_text())


def same_scores(a: dict, b: dict) -> tuple[int, int]:
    """Nodes with identical scores (every split), of the nodes both runs have."""
    common = sorted(set(a["nodes"]) & set(b["nodes"]))
    same = sum(a["nodes"][n]["scores"] == b["nodes"][n]["scores"] for n in common)
    return same, len(common)


def figures_of(runs: dict[str, dict], raw: dict[str, dict]) -> dict[str, object]:
    figures: dict[str, object] = {}
    for name, r in runs.items():
        figures[f"loop_tok_s_{name}"] = r["tokens"] / r["wall_s"]
        figures[f"loop_tok_s_{name}_after_start"] = r["tokens"] / (r["wall_s"] - r["startup_s"])
        figures[f"tokens_{name}"] = r["tokens"]  # generated; reused greedy replies apart
        figures[f"reused_tokens_{name}"] = r.get("reused_tokens", 0)
        figures[f"wall_s_{name}"] = r["wall_s"]
        for category, seconds in r["split_s"].items():
            figures[f"split_{name}_{category}_s"] = seconds
        for role, seconds in r.get("vllm_cpu_s", {}).items():
            figures[f"cpu_share_{name}_{role}"] = seconds / r["wall_s"]
    if "vllm" in runs and "transformers" in runs:
        figures["vllm_vs_transformers_loop"] = (
            figures["loop_tok_s_vllm"] / figures["loop_tok_s_transformers"]  # type: ignore[operator]
        )
        same, common = same_scores(runs["vllm"], runs["transformers"])
        figures["vllm_vs_transformers_same_node_scores"] = f"{same}/{common}"
    for bind, r in raw.items():
        figures[f"raw_vllm_tok_s_bind_{bind}"] = r["tok_s"]
    if raw and "vllm" in runs:
        best = max(r["tok_s"] for r in raw.values())
        figures["loop_vs_raw_vllm"] = figures["loop_tok_s_vllm"] / best  # type: ignore[operator]
    if "vllm" in runs and "vllm_spinning" in runs:
        figures["parked_vs_spinning_loop"] = (
            figures["loop_tok_s_vllm"] / figures["loop_tok_s_vllm_spinning"]  # type: ignore[operator]
        )
    if "vllm_rerun" in runs:
        same, common = same_scores(runs["vllm"], runs["vllm_rerun"])
        figures["vllm_rerun_same_node_scores"] = f"{same}/{common}"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="vllm,transformers")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--model", default="default", help="the policy (a registry name, folder)")
    parser.add_argument("--cpu-binds", default="all", help="vLLM loop runs, one per binding")
    parser.add_argument("--raw-binds", default="auto,all")
    parser.add_argument("--raw-limit", type=int, default=164)
    parser.add_argument("--repeat", action="store_true", help="run the vLLM loop a second time")
    parser.add_argument("--spin", action="store_true", help="also a run with vLLM's spinning")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="keep run directories and logs here")
    # child modes
    parser.add_argument("--child", choices=("loop", "raw"))
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--cpu-bind", default="all")
    parser.add_argument("--run-dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child == "loop":
        return child(args)
    if args.child == "raw":
        return raw_child(args)

    work = args.keep or Path(tempfile.mkdtemp(prefix="loop-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    raw: dict[str, dict] = {}

    def loop(name: str, backend: str, bind: str, env: dict[str, str] | None = None) -> None:
        print(f"loop run {name} ({backend}, cpu_bind {bind}) ...", file=sys.stderr, flush=True)
        runs[name] = run_child(
            [
                "--child=loop",
                f"--backend={backend}",
                f"--cpu-bind={bind}",
                f"--iterations={args.iterations}",
                f"--model={args.model}",
                f"--run-dir={work / name}",
            ],
            work / f"{name}.log",
            env,
        )

    binds = args.cpu_binds.split(",")
    for backend in args.backends.split(","):
        if backend == "vllm":
            for i, bind in enumerate(binds):
                loop("vllm" if i == 0 else f"vllm_bind_{bind}", "vllm", bind)
            if args.spin:
                loop("vllm_spinning", "vllm", binds[0], {KEEP_SPINNING: "1"})
            if args.repeat:
                loop("vllm_rerun", "vllm", binds[0])
        else:
            loop(backend, backend, "auto")
    if "vllm" in args.backends:
        for bind in filter(None, args.raw_binds.split(",")):
            print(f"raw vLLM (cpu_bind {bind}) ...", file=sys.stderr, flush=True)
            raw[bind] = run_child(
                [
                    "--child=raw",
                    f"--cpu-bind={bind}",
                    f"--raw-limit={args.raw_limit}",
                    f"--model={args.model}",
                ],
                work / f"raw-{bind}.log",
            )
    figures = figures_of(runs, raw)
    show(figures)
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "runs": runs, "raw": raw}, indent=1))


def show(figures: dict[str, object]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from figures import print_figures

    print_figures(
        "the loop on each backend",
        figures,
        targets={
            "vllm_vs_transformers_loop": ">= 1.6",
            "loop_vs_raw_vllm": ">= 0.5",
            "parked_vs_spinning_loop": "> 1",
        },
    )


if __name__ == "__main__":
    main()
