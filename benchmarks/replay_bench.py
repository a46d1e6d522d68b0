"""Setting a deep node's weights: replay from the base model against a materialized checkpoint.

Builds a chain of `--depth` ES records on the model (synthetic rewards: replay cost does not
depend on them), writes a checkpoint after `--depth - 1` of them, then times `ChainReplayer.set`
(the loop's way of setting weights), each time from the base model's weights:
- base: the whole chain replayed from the base weights;
- checkpoint: the checkpoint read, and the one record after it applied.
Both must give the same bits, which the run checks. Figures: seconds per replayed record, the
checkpoint's write time and size, and `base_vs_checkpoint` (how many times faster the set is).

    python benchmarks/replay_bench.py [--model default] [--dtype float32] [--depth 6] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from figures import print_figures
from rich.console import Console


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if args.depth < 2:
        parser.error("--depth must be at least 2 (a checkpoint, then a record after it)")

    import torch

    from agent.es import EsConfig
    from agent.es.chain_replayer import ChainReplayer
    from agent.es.checkpoint import Checkpoint, save_checkpoint
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

    console = Console()
    backend = TransformersBackend.from_config(
        TransformersBackendConfig(model=args.model, dtype=args.dtype)
    )
    config = EsConfig(population=args.population, seed=0)
    weights = ChainReplayer(backend.model, config.target_modules)
    weights.set([])
    chain: list[dict] = []
    tell_s = 0.0
    with console.status(f"making {args.depth} ES records"):
        for step in range(args.depth):
            es = weights.strategy(config, step=step)
            started = time.perf_counter()
            record = es.tell(es.ask(), [float(i % 5) for i in range(args.population)])
            tell_s += time.perf_counter() - started
            chain.append(asdict(record))
    folder = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    try:
        with console.status("checkpoint after all records but the last"):
            weights.set(chain[:-1])
            path = folder / "ckpt.safetensors"
            started = time.perf_counter()
            save_checkpoint(path, weights.master, weights.state)
            write_s = time.perf_counter() - started
        with console.status(f"replaying {args.depth} records from the base"):
            weights.set([])  # back to the base (untimed)
            started = time.perf_counter()
            weights.set(chain)
            base_s = time.perf_counter() - started
            expected = {n: w.clone() for n, w in weights.master.items()}
        with console.status("from the checkpoint, one record"):
            weights.set([])
            started = time.perf_counter()
            replayed = weights.set(chain, Checkpoint(path, len(chain) - 1))
            checkpoint_s = time.perf_counter() - started
        if replayed != 1:
            raise SystemExit(f"the checkpoint was not used: {replayed} records replayed, not 1")
        if not all(torch.equal(weights.master[n], w) for n, w in expected.items()):
            raise SystemExit("the checkpoint path gave other weights than replay from the base")
        figures = {
            "depth": args.depth,
            "tell_s_per_step": tell_s / args.depth,
            "base_set_s": base_s,
            "base_s_per_record": base_s / args.depth,
            "checkpoint_write_s": write_s,
            "checkpoint_mb": path.stat().st_size / 2**20,
            "checkpoint_set_s": checkpoint_s,
            "base_vs_checkpoint": base_s / checkpoint_s,
        }
    finally:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    print_figures(
        f"Setting a depth-{args.depth} node, {args.model} {args.dtype}", figures, console=console
    )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({**figures, "config": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
