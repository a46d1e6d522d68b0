"""The adversarial suite against the real engine: every attack ends as a non-pass (or contained),
then a canary on the same container passes, with no process left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandbox import SandboxConfig, SandboxPool
from sandbox.engine import docker_client
from sandbox.selftest import ATTACKS, run_attacks

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", params=["fork", "exec"])
def attack_pool(request, sandbox_image):
    """One container per candidate start mode, so attack and canary provably share it."""
    config = SandboxConfig(workers=1, candidate_start=request.param)
    with SandboxPool(config, image=sandbox_image) as pool:
        args = docker_client().api.inspect_container(pool.container_ids[0])["Args"]
        assert args[args.index("--start") + 1] == request.param
        yield pool


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(attack_pool, attack):
    result = run_attacks(attack_pool, [attack])[0]
    assert result.ok, f"{attack.name}: {result.problem} (verdict {result.verdict})"


def test_selftest_command_exits_zero_on_a_sound_sandbox(sandbox_image):
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "sandbox", "selftest"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"all {len(ATTACKS)} attacks contained" in done.stdout
