"""The warm pool against the real Docker engine: harness semantics, limits, faults, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sandbox import Job, Limits, SandboxConfig, SandboxPool, Status
from sandbox.config import LABEL
from sandbox.engine import docker_client

pytestmark = pytest.mark.docker
FAST = Limits(wall_s=5, cpu_s=5, memory_mb=256)


def job(
    program: str, *checks: str, entry: str = "f", setup: str = "", limits: Limits = FAST
) -> Job:
    return Job(
        textwrap.dedent(program),
        checks,
        setup=textwrap.dedent(setup),
        entry_point=entry,
        limits=limits,
    )


def test_verdicts_come_back_in_order_and_as_they_finish(one_worker_pool):
    jobs = [
        job(f"def f():\n    return {i}\n", f"assert candidate() == {i if i % 3 else -1}")
        for i in range(12)
    ]
    verdicts = one_worker_pool.run(jobs)
    assert [v.passed for v in verdicts] == [i % 3 != 0 for i in range(12)]
    assert sorted(i for i, _ in one_worker_pool.run_iter(jobs)) == list(range(12))


def test_per_check_results_give_a_dense_reward(one_worker_pool):
    v = one_worker_pool.run(
        [
            job(
                "def f(x):\n    return x * 2 if x < 3 else 0\n",
                "assert candidate(1) == 2",
                "assert candidate(2) == 4",
                "assert candidate(3) == 6",
            )
        ]
    )[0]
    assert v.status is Status.FAILED
    assert [c.outcome.value for c in v.checks] == ["passed", "passed", "failed"]
    assert v.fraction_passed == pytest.approx(2 / 3)
    assert "candidate(3) == 6" in v.detail


def test_program_exceptions_cross_as_builtin_types(one_worker_pool):
    program = """
        class Custom(Exception):
            pass
        def f(x):
            if x < 0:
                raise ValueError("negative")
            raise Custom("mine")
        """
    checks = (
        "try:\n    candidate(-1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert 'negative' in str(e)",
        "try:\n    candidate(1)\n    raise AssertionError('no error')\nexcept ValueError:\n    raise\nexcept Exception as e:\n    assert 'Custom' in str(e)",
    )
    assert one_worker_pool.run([job(program, *checks)])[0].status is Status.PASSED


ASYNC_COLLECT = """
import asyncio
class Each:
    def __init__(self):
        self.i = 0
    def __aiter__(self):
        return self
    async def __anext__(self):
        self.i += 1
        if self.i > 3:
            raise StopAsyncIteration
        return candidate(self.i)
async def collect():
    return [x async for x in Each()]
assert asyncio.run(collect()) == []
"""


@pytest.mark.parametrize(
    ("raised", "check"),
    [
        ("StopIteration", "assert all(map(candidate, [1, 2, 3]))"),
        ("StopIteration", "assert list(map(candidate, [1, 2])) == []"),
        ("StopAsyncIteration", ASYNC_COLLECT),
    ],
    ids=["all-map", "list-map", "async-for"],
)
def test_a_candidate_cannot_end_the_tests_own_iteration(one_worker_pool, raised, check):
    """Rebuilt as itself, the candidate's StopIteration would end `map` early (and its
    StopAsyncIteration an `async for`): the assert would pass on what was never checked."""
    program = f"def f(x):\n    raise {raised}('done early')\n"
    v = one_worker_pool.run([job(program, check)])[0]
    assert v.status is Status.FAILED
    assert v.checks[0].outcome.value == "error" and f"{raised}: done early" in v.checks[0].detail


def test_in_place_changes_to_arguments_are_seen_by_the_tests(one_worker_pool):
    program = "def f(items, table):\n    items.sort()\n    table['seen'] = True\n"
    check = (
        "xs, t = [3, 1, 2], {}\ncandidate(xs, t)\nassert xs == [1, 2, 3] and t == {'seen': True}"
    )
    assert one_worker_pool.run([job(program, check)])[0].passed


def test_setup_helpers_are_trusted_and_other_program_functions_resolve(one_worker_pool):
    # The program redefines the prompt's helper; the tests must still use the trusted one.
    setup = "def helper(x):\n    return 2 * x\n"
    program = "def helper(x):\n    return 0\ndef extra(x):\n    return x + 1\ndef f(x):\n    return helper(x)\n"
    checks = ("assert helper(2) == 4", "assert extra(1) == 2", "assert candidate(5) == 0")
    assert one_worker_pool.run([job(program, *checks, setup=setup)])[0].passed


def test_rich_values_cross_exactly(one_worker_pool):
    program = (
        "def f():\n    return (1, [2.5, 'é'], {'k': {3}}, b'\\x00', 1j, None, frozenset([1]))\n"
    )
    check = "r = candidate()\nassert r == (1, [2.5, 'é'], {'k': {3}}, b'\\x00', 1j, None, frozenset([1]))\nassert type(r[1]) is list"
    assert one_worker_pool.run([job(program, check)])[0].passed


def test_output_is_captured_with_a_cap(one_worker_pool):
    limits = Limits(wall_s=10, cpu_s=10, output_kb=64)
    v = one_worker_pool.run(
        [
            job(
                "def f():\n    for _ in range(5000):\n        print('y' * 1000)\n    print('END')\n    return 1\n",
                "assert candidate() == 1",
                limits=limits,
            )
        ]
    )[0]
    assert v.passed
    assert v.output_tail.rstrip().endswith("END")
    assert "bytes dropped" in v.output_tail
    assert len(v.output_tail) < 64 * 1024 + 200


@pytest.mark.parametrize(
    ("program", "needle"),
    [
        ("def f(:\n", "SyntaxError"),
        ("import nonexistent_module_xyz\n", "ModuleNotFoundError"),
        ("def g():\n    pass\n", "'f'"),
    ],
)
def test_programs_that_do_not_load_are_errors(one_worker_pool, program, needle):
    v = one_worker_pool.run([job(program, "assert candidate() == 1")])[0]
    assert v.status is Status.ERROR
    assert needle in v.detail


def test_a_broken_test_setup_is_reported_not_passed(one_worker_pool):
    v = one_worker_pool.run(
        [job("def f():\n    return 1\n", "assert candidate() == 1", setup="undefined_name\n")]
    )[0]
    assert v.status is Status.ERROR and "setup" in v.detail


def test_jobs_and_limits_are_validated():
    with pytest.raises(ValueError, match="at least one check"):
        Job("def f(): pass", ())
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)


def _kill_when_busy(pool: SandboxPool, times: int, stop: threading.Event) -> None:
    """Kill the container under a running job, `times` times (as OOM or an operator would).

    A job is in flight when the supervisor has forked its referee (two supervisor.py processes)."""
    client = docker_client()
    killed: set[str] = set()
    while len(killed) < times and not stop.is_set():
        for cid in pool.container_ids:
            if cid in killed:
                continue
            try:
                rows = client.api.top(cid, ps_args="-eo pid,args").get("Processes") or []
                if sum("supervisor.py" in row[-1] for row in rows) >= 2:
                    time.sleep(0.2)
                    client.api.kill(cid)
                    killed.add(cid)
            except Exception:
                pass  # the container went away between listing and inspecting it
        time.sleep(0.05)


SLOW = job("import time\ndef f():\n    time.sleep(1.5)\n    return 7\n", "assert candidate() == 7")
TRIVIAL = job("def f():\n    return 1\n", "assert candidate() == 1")


def _run_while_killing(pool: SandboxPool, kills: int):
    """Run SLOW while its container is killed `kills` times; then the pool must still work."""
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_busy, args=(pool, kills, stop))
    killer.start()
    try:
        verdict = pool.run([SLOW])[0]
    finally:
        stop.set()
        killer.join()
    assert pool.run([TRIVIAL])[0].passed
    return verdict


def test_a_container_killed_mid_job_is_replaced_and_the_job_retried(sandbox_image):
    with SandboxPool(SandboxConfig(workers=1, retries=1), image=sandbox_image) as pool:
        first = pool.container_ids[0]
        v = _run_while_killing(pool, kills=1)
        assert v.status is Status.PASSED and v.attempts == 2
        assert pool.replacements == 1 and pool.container_ids[0] != first


def test_a_job_whose_container_always_dies_is_an_infra_error(sandbox_image):
    with SandboxPool(SandboxConfig(workers=1, retries=1), image=sandbox_image) as pool:
        v = _run_while_killing(pool, kills=2)
        assert v.status is Status.INFRA_ERROR and v.attempts == 2
        assert "sandbox failed 2 time(s)" in v.detail


def test_no_docker_engine_gives_an_error_naming_the_fix():
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "sandbox", "clean"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no Docker engine answers" in done.stderr and "start the Docker engine" in done.stderr


POOL_SCRIPT = """
import sys
from sandbox import Job, Limits, SandboxConfig, SandboxPool
with SandboxPool(SandboxConfig(workers=2)) as pool:
    print(" ".join(pool.container_ids), flush=True)
    pool.run([Job("import time\\ndef f():\\n    time.sleep(60)\\n", ("candidate()",), entry_point="f",
                  limits=Limits(wall_s=60, cpu_s=60))] * 2)
"""


def _our_containers(ids: list[str]) -> list[str]:
    alive = {c["Id"] for c in docker_client().api.containers(all=True, filters={"label": LABEL})}
    return [i for i in ids if i in alive]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_stopping_the_owner_removes_its_containers(sandbox_image, sig):
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], stdout=subprocess.PIPE, text=True)
    ids = proc.stdout.readline().split()
    assert len(ids) == 2 and len(_our_containers(ids)) == 2
    time.sleep(1.0)  # the sleeping jobs are running now
    proc.send_signal(sig)
    proc.wait(timeout=120)  # generous: on a loaded machine (CI beside a benchmark) it took > 30 s
    deadline = time.monotonic() + 60
    while _our_containers(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _our_containers(ids) == []


def test_clean_removes_leftovers_of_dead_owners_only(sandbox_image, one_worker_pool):
    from sandbox.containers import OWNER_LABEL, remove_leftovers

    api = docker_client().api
    orphan = api.create_container(
        sandbox_image,
        command=["sleep", "60"],
        labels={LABEL: "1", OWNER_LABEL: f"{os.uname().nodename}:999999999:0"},
    )["Id"]
    foreign = api.create_container(
        sandbox_image, command=["sleep", "60"], labels={"someone.else": "1"}
    )["Id"]
    try:
        assert remove_leftovers() >= 1
        assert _our_containers([orphan]) == []
        assert one_worker_pool.container_ids and _our_containers(
            one_worker_pool.container_ids
        )  # live pool kept
        assert api.inspect_container(foreign)["Id"] == foreign  # not ours: untouched
    finally:
        api.remove_container(foreign, force=True)


def test_host_disk_growth_per_job_is_under_1_mib(one_worker_pool):
    api = docker_client().api
    cid = one_worker_pool.container_ids[0]

    def disk() -> int:
        rw = api.containers(all=True, filters={"id": cid}, size=True)[0].get("SizeRw") or 0
        log_dir = f"/var/lib/docker/containers/{cid}"
        logs = (
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(log_dir) for f in fs)
            if os.path.isdir(log_dir)
            else 0
        )
        return rw + logs

    before = disk()
    noisy = [
        job(
            "def f():\n    while True:\n        print('z' * 4096)\n",
            "candidate()",
            limits=Limits(wall_s=1, cpu_s=2),
        ),
        job(
            "def f():\n    open('/tmp/x', 'wb').write(b'0' * (8 << 20))\n    return 1\n",
            "assert candidate() == 1",
        ),
    ] * 5
    one_worker_pool.run(noisy)
    growth_per_job = (disk() - before) / len(noisy)
    assert growth_per_job < 1 << 20, growth_per_job
