"""Scale-out on a REAL Ray cluster on this machine: two `ray start` node processes (not local mode),
real Docker sandboxes on each, the tiny model on replicas. Faults are real: an actor killed with
`ray.kill`, a node's process group killed with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict

import pytest
import torch

from agent.es.chain_replayer import ChainReplayer, as_record
from agent.es.checkpoint import Checkpoint, save_checkpoint
from agent.es.config import EsConfig
from agent.es.eggroll import EggRoll
from agent.policy.backend import GenerationConfig
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.scale.backend_source import TinyBackendFactory
from agent.scale.executor import make_executor
from agent.scale.job_runner import RayJobRunner
from agent.scale.local_cluster import LocalRayCluster
from agent.scale.ray_policy import RayPolicy, deal_rows
from sandbox import Job, Limits, SandboxConfig, Status

FAST = Limits(wall_s=5, cpu_s=5, memory_mb=256)
PROMPTS = ["def f(x):\n", "hello", "a longer prompt than the others", "x", "import os\n"]
GENERATION = GenerationConfig(max_new_tokens=10, batch_size=3)
ES = EsConfig(population=4, sigma=0.05, alpha=0.01, seed=7)


def job(program: str, check: str, limits: Limits = FAST, tag: str = "") -> Job:
    return Job(textwrap.dedent(program), (check,), entry_point="f", limits=limits, tag=tag)


def mixed_jobs(copies: int) -> list[Job]:
    """Passed, failed, load error and (once) a timeout: every verdict kind but infra_error."""
    jobs = []
    for i in range(copies):
        jobs += [
            job(f"def f(x):\n    return x + {i}\n", f"assert f(1) == {1 + i}", tag=f"pass{i}"),
            job("def f(x):\n    return -x\n", f"assert f({i}) == {i + 1}", tag=f"fail{i}"),
            job("def f(x) return x\n", "assert f(1) == 1", tag=f"syntax{i}"),
        ]
    jobs.append(job("def f():\n    while True: pass\n", "f()", Limits(wall_s=1, cpu_s=2), "loop"))
    return jobs


def slow_jobs(count: int) -> list[Job]:
    """Jobs that take a while, so a fault lands while many are in flight."""
    program = "import time\ndef f(i):\n    time.sleep(0.25)\n    return i\n"
    return [job(program, f"assert f({i}) == {i}", tag=str(i)) for i in range(count)]


def comparable(verdict) -> tuple:
    return verdict.status, verdict.checks, verdict.detail, verdict.tag


# -- pure logic: no cluster ------------------------------------------------------------------------


def test_make_executor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="address is for executor 'ray'"):
        make_executor("local", address="127.0.0.1:6379")
    with pytest.raises(ValueError, match="replicas >= 1"):
        make_executor("ray", replicas=0)
    with pytest.raises(ValueError, match="workers_per_node"):
        RayJobRunner(workers_per_node=-1)


def test_ray_is_imported_only_when_a_ray_object_is_made() -> None:
    code = (
        "import sys\n"
        "from agent.scale import make_executor\n"
        "make_executor('local'); make_executor('ray')\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rows_are_dealt_once_each_with_mixed_lengths() -> None:
    prompts = [str(i) * (i % 7 + 1) for i in range(23)]
    shards = deal_rows(prompts, 4)
    assert sorted(i for s in shards for i in s) == list(range(23))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert deal_rows(prompts[:2], 4) == [[0], [1]]  # no empty shard


def test_bad_records_are_named() -> None:
    with pytest.raises(ValueError, match="not an ES record"):
        as_record({"step": 0, "weights": []})
    with pytest.raises(TypeError, match="EsRecord or a dict"):
        as_record("step 0")
    model, _ = tiny_model()
    record = asdict(es_record(EggRoll(ES, model))[0])
    record["modules"] = ["model.no_such_layer"]
    with pytest.raises(KeyError, match="no_such_layer"):
        ChainReplayer(tiny_model()[0]).set([record])


def es_record(es: EggRoll):
    """One ES step with fixed rewards (so the record is the same in every run)."""
    population = es.ask()
    return es.tell(population, [1.0, -1.0, 0.5, 0.0]), es.ask()


def test_chain_weights_equal_the_es_step_and_reset_to_base() -> None:
    trained, _ = tiny_model(TinyModelConfig(seed=0))
    record, _ = es_record(EggRoll(ES, trained))
    model, _ = tiny_model(TinyModelConfig(seed=0))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    weights = ChainReplayer(model)
    weights.set([asdict(record)])
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, base[k]) for k, v in model.state_dict().items())
    weights.set([])
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())


# -- on the cluster --------------------------------------------------------------------------------


def test_a_stopped_cluster_leaves_no_driver_connected_to_it() -> None:
    """A driver left joined to a stopped cluster `_exit(1)`s its process a minute later: the
    suite once ended that way mid-run, with no summary."""
    import ray

    from agent.scale.connect import connect

    with LocalRayCluster(nodes=1, cpus_per_node=1, object_store_mb=100) as local:
        connect(local.address)
        assert ray.is_initialized()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with LocalRayCluster(nodes=2, cpus_per_node=1, object_store_mb=100) as local:
        yield local


@pytest.fixture(scope="module")
def sandbox_config(sandbox_image) -> SandboxConfig:
    return SandboxConfig(image=sandbox_image, workers=1)


@pytest.mark.docker
@pytest.mark.slow
def test_cluster_verdicts_equal_local_pool_and_use_both_nodes(cluster, sandbox_config) -> None:
    jobs = mixed_jobs(copies=4)
    local = make_executor("local", sandbox_config=sandbox_config)
    remote = make_executor("ray", cluster.address, sandbox_config=sandbox_config)
    with local.job_runner() as pool:
        expected = pool.run(jobs)
    with remote.job_runner() as runner:
        assert len(runner.nodes) == 2
        seen = [index for index, _ in runner.run_iter(jobs)]
        got = runner.run(jobs)
        per_node = dict(runner.jobs_per_node)
    assert sorted(seen) == list(range(len(jobs)))
    assert [comparable(v) for v in got] == [comparable(v) for v in expected]
    assert {v.status for v in got} == {Status.PASSED, Status.FAILED, Status.ERROR, Status.TIMEOUT}
    assert len(per_node) == 2 and all(count > 0 for count in per_node.values()), per_node


@pytest.mark.docker
@pytest.mark.slow
def test_killed_actor_mid_run_loses_and_duplicates_nothing(cluster, sandbox_config) -> None:
    import ray

    jobs = slow_jobs(24)
    with RayJobRunner(cluster.address, workers_per_node=1, sandbox_config=sandbox_config) as runner:
        victim = runner.nodes[1]
        seen = []
        for index, verdict in runner.run_iter(jobs):
            seen.append((index, verdict))
            if len(seen) == 3:
                ray.kill(runner.actor_on(victim))
        assert victim not in runner.nodes
        assert runner.resubmitted > 0  # the kill hit jobs in flight
        assert sorted(i for i, _ in seen) == list(range(len(jobs)))
        assert all(v.passed and v.tag == str(i) for i, v in seen)
        # The node itself lives on: the next run gives it a fresh actor.
        assert all(v.passed for v in runner.run(jobs[:4]))
        assert victim in runner.nodes


@pytest.mark.slow
def test_ray_policy_equals_the_local_backend(cluster, one_thread, tmp_path) -> None:
    trained, tokenizer = tiny_model(TinyModelConfig(seed=0))
    record, population = es_record(EggRoll(ES, trained))
    base = TransformersBackend(*tiny_model(TinyModelConfig(seed=0)))
    local = TransformersBackend(trained, tokenizer)  # the weights the ES step left in place
    prompts = PROMPTS * 3
    member_of_row = [m for m in (-1, 0, 1, 2, 3) for _ in range(3)]

    with RayPolicy(TinyBackendFactory(), replicas=2, address=cluster.address) as policy:
        assert len(set(policy.replica_nodes)) == 2
        done = []
        assert policy.generate(PROMPTS, GENERATION, on_done=done.append) == base.generate(
            PROMPTS, GENERATION
        )
        assert sum(done) == len(PROMPTS)
        policy.set_weights([asdict(record)])
        stepped = policy.generate(PROMPTS, GENERATION)
        assert stepped == local.generate(PROMPTS, GENERATION)
        assert stepped != base.generate(PROMPTS, GENERATION)  # the ES step changed the outputs

        # From the chain's checkpoint each replica replays nothing, to the same weights; given a
        # checkpoint that no node can read, each replays the chain from the base instead.
        saved = ChainReplayer(tiny_model(TinyModelConfig(seed=0))[0])
        saved.set([asdict(record)])
        save_checkpoint(tmp_path / "one.safetensors", saved.master, saved.state)
        for path, replayed in (("one.safetensors", [0, 0]), ("absent.safetensors", [1, 1])):
            policy.set_weights([])
            checkpoint = Checkpoint(tmp_path / path, records=1)
            assert policy.set_weights([asdict(record)], checkpoint) == replayed
            assert policy.generate(PROMPTS, GENERATION) == stepped

        expected = local.generate(prompts, GENERATION, population.perturbation, member_of_row)
        from_seeds = policy.generate(prompts, GENERATION, population, member_of_row)
        from_tensors = policy.generate(prompts, GENERATION, population.perturbation, member_of_row)
        assert from_seeds == expected and from_tensors == expected
        assert expected[3:] != expected[:3] * 4  # members really generate differently
        with pytest.raises(ValueError, match="member_of_row"):
            policy.generate(prompts, GENERATION, population, member_of_row[:-1])

        import ray

        victim = policy.replicas[1]
        ray.kill(victim)  # asynchronous: wait until it is really gone (a busy machine is slow)
        deadline = time.monotonic() + 120
        while True:
            try:
                ray.get(victim.set_weights.remote([]), timeout=60)
            except ray.exceptions.RayActorError:
                break
            assert time.monotonic() < deadline, "the killed replica still answers"
            time.sleep(0.2)
        # its shard is generated again on the survivor
        assert policy.generate(prompts, GENERATION, population, member_of_row) == expected
        assert len(policy.replicas) == 1


@pytest.mark.slow
def test_same_seeds_same_generations_local_and_ray(cluster, one_thread) -> None:
    trained, _ = tiny_model(TinyModelConfig(seed=0))
    record, population = es_record(EggRoll(ES, trained))
    prompts = PROMPTS * 4
    rows = [m % population.size for m in range(len(prompts))]
    outputs = []
    for executor in (
        make_executor("local"),
        make_executor("ray", cluster.address, replicas=2),
    ):
        policy = executor.policy(TinyBackendFactory(TinyModelConfig(seed=0)))
        try:
            policy.set_weights([record])
            outputs.append(policy.generate(prompts, GENERATION, population, rows))
        finally:
            policy.close()
    assert outputs[0] == outputs[1]


@pytest.mark.docker
@pytest.mark.slow
def test_killed_node_mid_run_loses_and_duplicates_nothing(cluster, sandbox_config) -> None:
    jobs = slow_jobs(64)  # ~8 s of work: the kill lands early, its detection well before the end
    with RayJobRunner(cluster.address, workers_per_node=1, sandbox_config=sandbox_config) as runner:
        assert len(runner.nodes) == 2
        seen = []
        for index, verdict in runner.run_iter(jobs):
            seen.append((index, verdict))
            if len(seen) == 3:
                # SIGKILL the worker node's raylet, store and workers, here and now: done in a
                # thread, a loaded machine could start it after the last batch had come back.
                cluster.kill_node(1)
        assert len(runner.nodes) == 1
        assert runner.resubmitted > 0
        assert sorted(i for i, _ in seen) == list(range(len(jobs)))
        assert all(v.passed and v.tag == str(i) for i, v in seen)
    cluster.add_node()  # leave two nodes for anything after this
