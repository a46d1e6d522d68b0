"""Is there an ES signal at all? One population, two disjoint task batches, same step.

An ES step estimates a direction from how members' fitness differs. That estimate is worth
following only if a member that does well on some tasks also does well on others: otherwise the
step fits the minibatch's noise. So for each sigma, one EGGROLL population (antithetic pairs)
is scored on batch A and on batch B (disjoint MBPP train tasks, greedy, dense reward), and:

- `changed`: the share of rows whose output differs from the unperturbed model's (sigma too small
  and every member answers alike);
- `corr_members`: Pearson correlation across members of mean fitness on A vs on B;
- `corr_pairs`: the same for the antithetic differences f(+e) - f(-e), which is what the update
  is made of; with its permutation p-value (`p_pairs`, one-sided: is it above chance?).

    python benchmarks/es_signal.py [--population 16] [--tasks 16] [--sigmas 1e-3,3e-3]
        [--dtype bfloat16] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from figures import print_figures

from agent.es import EggRoll, EsConfig
from agent.policy.backend import GenerationConfig
from agent.policy.prompts import COMPLETION_STOPS, completion_prompt
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
from evaluators.rewards import fitness, reward
from evaluators.scoring import Candidate, score
from evaluators.splits import load_split
from sandbox import SandboxConfig, SandboxPool


def pearson(x: list[float], y: list[float]) -> float:
    if len(x) < 2 or statistics.pstdev(x) == 0 or statistics.pstdev(y) == 0:
        return 0.0
    return statistics.correlation(x, y)


def permutation_p(x: list[float], y: list[float], trials: int = 5000, seed: int = 0) -> float:
    """One-sided: the share of shuffles of y whose correlation with x is at least the observed."""
    observed = pearson(x, y)
    rng = random.Random(seed)
    shuffled = list(y)
    hits = 0
    for _ in range(trials):
        rng.shuffle(shuffled)
        hits += pearson(x, shuffled) >= observed
    return (hits + 1) / (trials + 1)


def member_fitness(verdicts, members: int, tasks: int) -> list[float]:
    scores = [fitness(reward(v)) for v in verdicts]
    return [statistics.fmean(scores[m * tasks : (m + 1) * tasks]) for m in range(members)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=16, help="tasks in each of the two batches")
    parser.add_argument("--sigmas", default="1e-3,3e-3")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    backend = TransformersBackend.from_config(
        TransformersBackendConfig(model=args.model, dtype=args.dtype)
    )
    train = load_split("mbpp:train")
    picked = random.Random(args.seed).sample(train, 2 * args.tasks)  # batch A, then batch B
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens, stop=COMPLETION_STOPS, batch_size=args.batch_size
    )
    figures: dict[str, float] = {"population": args.population, "tasks_per_batch": args.tasks}
    with SandboxPool(SandboxConfig()) as pool:
        base_texts = [
            g.text for g in backend.generate([completion_prompt(t.prompt) for t in picked], gen)
        ]
        for sigma in [float(s) for s in args.sigmas.split(",")]:
            es = EggRoll(
                EsConfig(population=args.population, sigma=sigma, seed=args.seed), backend.model
            )
            population = es.ask()
            n, t = population.size, len(picked)
            started = time.perf_counter()
            rows = backend.generate(
                [completion_prompt(task.prompt) for _ in range(n) for task in picked],
                gen,
                population.perturbation,
                [m for m in range(n) for _ in range(t)],
            )
            verdicts = score(
                [
                    Candidate.from_completion(task, g.text)
                    for g, task in zip(rows, picked * n, strict=True)
                ],
                pool,
            )
            fit_a = member_fitness(
                [verdicts[m * t + j] for m in range(n) for j in range(args.tasks)], n, args.tasks
            )
            fit_b = member_fitness(
                [verdicts[m * t + j] for m in range(n) for j in range(args.tasks, t)],
                n,
                args.tasks,
            )
            # antithetic pairs are members (2i, 2i+1): +e and -e
            diff_a = [fit_a[i] - fit_a[i + 1] for i in range(0, n, 2)]
            diff_b = [fit_b[i] - fit_b[i + 1] for i in range(0, n, 2)]
            changed = sum(rows[m * t + j].text != base_texts[j] for m in range(n) for j in range(t))
            key = f"sigma_{sigma:g}"
            figures[f"{key}_changed"] = changed / (n * t)
            figures[f"{key}_fitness_spread"] = statistics.pstdev(
                [(a + b) / 2 for a, b in zip(fit_a, fit_b, strict=True)]
            )
            figures[f"{key}_corr_members"] = pearson(fit_a, fit_b)
            figures[f"{key}_corr_pairs"] = pearson(diff_a, diff_b)
            figures[f"{key}_p_pairs"] = permutation_p(diff_a, diff_b, seed=args.seed)
            figures[f"{key}_seconds"] = time.perf_counter() - started
    print_figures("ES signal: one population on two disjoint task batches", figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
