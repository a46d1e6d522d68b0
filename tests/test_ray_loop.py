"""The loop on a real two-node Ray cluster gives the same archive as the local executor."""

from __future__ import annotations

import subprocess

import pytest
from test_loop import LINEAGE, ROOT, write_config

from archive import Archive

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def lineage_of(run_dir):
    with Archive(run_dir, readonly=True) as archive:
        return {
            n.id: (
                n.parent_ids,
                n.operator,
                str(n.status),
                n.failure_reason,
                {k: v.to_json() for k, v in n.scores.items()},
                (n.es_record or {}).get("coefficients"),
                n.metadata.get("failures"),  # the agent's programs: generated on the replicas
                n.scaffold,
            )
            for n in archive.nodes()
        }


def test_same_seeds_same_archive_with_local_and_ray_executors(tiny_dir, tmp_path):
    from agent.scale.local_cluster import LocalRayCluster

    archives = {}
    with LocalRayCluster(nodes=2, cpus_per_node=1, object_store_mb=100) as cluster:
        for kind, extra in (
            ("local", ""),
            ("ray", f'executor = "ray"\nray_address = "{cluster.address}"\n'),
        ):
            cfg = write_config(tmp_path / f"{kind}.toml", tiny_dir, iterations=3, extra=extra)
            out = subprocess.run(
                [*LINEAGE, "run", str(cfg), "--run-dir", str(tmp_path / kind)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=900,
            )
            assert out.returncode == 0, out.stderr[-3000:]
            archives[kind] = lineage_of(tmp_path / kind)
    assert set(archives["local"]) == {"n0000", "n0001", "n0002", "n0003"}
    for node_id, local in archives["local"].items():
        ray_node = archives["ray"][node_id]
        assert local[:7] == ray_node[:7], node_id
    programs = [f["program"] for n in archives["local"].values() for f in n[6] or []]
    assert programs and all(programs)  # the comparison covers real generations
