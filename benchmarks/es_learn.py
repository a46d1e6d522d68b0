"""Does ES move the default model on code? A fixed budget of EGGROLL steps on MBPP train tasks.

Per step: the population's fitness on its training minibatch (correctness and full-pass share over
all members), the parent's greedy pass rate on the same minibatch (minibatches differ in
difficulty), and the updated model's greedy pass@1 on a dev split, printed as a table, saved as
JSON and as a PNG curve. Reports what happened, whatever it is.

    python benchmarks/es_learn.py [--steps 6] [--population 8] [--dtype bfloat16] [--out out/es_learn]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.es import EggRoll, EsConfig
from agent.es.trainer import EsTrainer, EsTrainerConfig
from agent.policy.backend import GenerationConfig
from agent.policy.prompts import COMPLETION_STOPS
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
from evaluators.scoring import Candidate, score
from evaluators.splits import load_split
from sandbox import SandboxConfig, SandboxPool


def greedy_pass_rate(backend, tasks, pool, gen: GenerationConfig) -> float:
    generations = backend.generate([t.prompt for t in tasks], gen)
    verdicts = score(
        [Candidate.from_completion(t, g.text) for t, g in zip(tasks, generations, strict=True)],
        pool,
    )
    return sum(v.passed for v in verdicts) / len(verdicts)


def save_curve(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["dev_pass_at_1"] for r in rows], marker="o", label="dev pass@1 (greedy)")
    train = [r for r in rows if r["train_correctness"] is not None]
    train_steps = [r["step"] for r in train]
    ax.plot(
        train_steps,
        [r["train_pass_rate"] for r in train],
        marker="s",
        label="train minibatch pass rate (population)",
    )
    ax.plot(
        train_steps,
        [r["train_parent_pass_rate"] for r in train],
        marker="^",
        linestyle="--",
        label="same minibatch, the parent (greedy)",
    )
    ax.set_xlabel("ES step")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("EGGROLL on MBPP train, default model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--sigma", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=5e-7)
    parser.add_argument("--dev-limit", type=int, default=40, help="dev tasks used for pass@1")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/es_learn")
    parser.add_argument("--json", help="also write the headline figures here")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console()

    backend = TransformersBackend.from_config(
        TransformersBackendConfig(model=args.model, dtype=args.dtype)
    )
    train = load_split("mbpp:train")
    dev = load_split("mbpp:dev")[: args.dev_limit]
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens, stop=COMPLETION_STOPS, batch_size=args.batch_size
    )
    es = EggRoll(
        EsConfig(population=args.population, sigma=args.sigma, alpha=args.alpha, seed=args.seed),
        backend.model,
    )
    rows: list[dict] = []
    with SandboxPool(SandboxConfig()) as pool:
        trainer = EsTrainer(
            es, backend, pool, train, EsTrainerConfig(args.tasks_per_step, gen, seed=args.seed)
        )
        started = time.perf_counter()
        with console.status("step 0: dev pass@1 of the base model"):
            rows.append(
                {
                    "step": 0,
                    "dev_pass_at_1": greedy_pass_rate(backend, dev, pool, gen),
                    "train_correctness": None,
                    "train_pass_rate": None,
                    "train_parent_pass_rate": None,
                    "cosine": None,
                    "seconds": 0.0,
                }
            )
        for step in range(1, args.steps + 1):
            with console.status(f"step {step}/{args.steps}: the parent on this minibatch"):
                # The minibatch changes every step: the parent's own greedy pass rate on it tells
                # a harder minibatch apart from a worse population.
                parent_pass = greedy_pass_rate(backend, trainer.minibatch(es.step), pool, gen)
            with console.status(f"step {step}/{args.steps}: population generate, score, update"):
                result = trainer.step()
            with console.status(f"step {step}/{args.steps}: dev pass@1"):
                dev_score = greedy_pass_rate(backend, dev, pool, gen)
            rows.append(
                {
                    "step": step,
                    "dev_pass_at_1": dev_score,
                    "train_correctness": result.correctness,
                    "train_pass_rate": result.pass_rate,
                    "train_parent_pass_rate": parent_pass,
                    "cosine": result.record.metrics["cosine_realized_intended"],
                    "model_fraction_changed": result.record.metrics["model_fraction_changed"],
                    "tokens": result.tokens,
                    "seconds": time.perf_counter() - started,
                }
            )
            console.print(
                f"step {step}: train correctness {result.correctness:.3f} (population pass "
                f"{result.pass_rate:.3f}, parent pass {parent_pass:.3f}), dev pass@1 {dev_score:.3f}"
            )
    table = Table(
        title=f"EGGROLL on MBPP train: N={args.population}, {args.tasks_per_step} tasks/step, "
        f"sigma={args.sigma}, alpha={args.alpha}, dev = {len(dev)} MBPP dev tasks"
    )
    for col in (
        "step",
        "train correctness",
        "train pass",
        "parent pass",
        "dev pass@1",
        "cosine",
        "model changed",
        "elapsed s",
    ):
        table.add_column(col, justify="right")

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    for r in rows:
        table.add_row(
            str(r["step"]),
            fmt(r["train_correctness"]),
            fmt(r["train_pass_rate"]),
            fmt(r["train_parent_pass_rate"]),
            fmt(r["dev_pass_at_1"]),
            fmt(r["cosine"]),
            fmt(r.get("model_fraction_changed")),
            f"{r['seconds']:.0f}",
        )
    console.print(table)
    moved = rows[-1]["dev_pass_at_1"] - rows[0]["dev_pass_at_1"]
    console.print(
        f"dev pass@1 moved by {moved:+.3f} over {args.steps} steps "
        f"({len(dev)} tasks: one task is {1 / len(dev):.3f})"
    )
    (out / "es_learn.json").write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2))
    save_curve(rows, out / "es_learn.png")
    console.print(f"wrote {out / 'es_learn.json'} and {out / 'es_learn.png'}")
    if args.json:
        trained = [r for r in rows if r["train_correctness"] is not None]
        figures = {
            "dev_tasks": len(dev),
            "dev_pass_at_1_start": rows[0]["dev_pass_at_1"],
            "dev_pass_at_1_end": rows[-1]["dev_pass_at_1"],
            "dev_pass_at_1_moved": moved,
            "train_correctness_first": trained[0]["train_correctness"] if trained else None,
            "train_correctness_last": trained[-1]["train_correctness"] if trained else None,
            "seconds": rows[-1]["seconds"],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
