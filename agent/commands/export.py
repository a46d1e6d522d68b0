"""`lineage export RUN_DIR [NODE] --out DIR`: a node as files that outlive the run.

A node's weights live in the archive as ES records (seeds and fitness, a few KB each), which
only Lineage can replay. Export replays them onto the run's base model (from the chain's
deepest checkpoint, if any) and writes what any tool can load:

    DIR/model/      the weights and tokenizer (Hugging Face `save_pretrained`: transformers,
                    vLLM, `lineage eval --model DIR/model`)
    DIR/scaffold/   the agent's own code at that node (its git tree, checked out)
    DIR/node.json   where it came from: run, node, scores, base model, chain length, and how
                    many records were replayed (the rest came from a checkpoint)

DIR is built beside itself and renamed into place at the end, so an export that fails or is
killed leaves no half-written DIR.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent.commands.errors import fail
from agent.commands.paths import absolute


def export(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory made by `lineage run`.", callback=absolute)
    ],
    node: Annotated[
        str | None, typer.Argument(help="Node id (default: the best by dev score).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Where to write (must not exist).", callback=absolute)
    ] = Path("export"),
) -> None:
    """Write a node's weights (a Hugging Face model folder) and scaffold code to --out."""
    from agent.es.chain_replayer import ChainReplayer
    from agent.loop.config import ConfigError, load_saved
    from agent.loop.loop import best_by_dev
    from agent.loop.runtime import checkpoint_of, model_hash
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from archive import Archive, ArchiveError

    console = Console(stderr=True)
    if out.exists():
        raise fail(f"{out} already exists: choose another --out, or remove it")
    try:
        cfg = load_saved(run_dir)
        archive = Archive(run_dir, readonly=True)
    except (ConfigError, ArchiveError) as exc:
        raise fail(str(exc)) from None
    with archive:
        node_id = node or best_by_dev(archive)
        try:
            chain = archive.weights_chain(node_id)
            entry = archive.get(node_id)
        except ArchiveError as exc:
            raise fail(f"{run_dir}: {exc}") from None
        m = cfg.model
        with console.status(f"loading the base model {m.name}"):
            backend = TransformersBackend.from_config(
                TransformersBackendConfig(model=m.name, device=m.device, dtype=m.dtype)
            )
        if model_hash(backend) != chain.base_hash:
            raise fail(
                f"the model {m.name!r} is not the run's base (hash {model_hash(backend)}, the "
                f"archive has {chain.base_hash}): was it replaced since the run?"
            )
        start = checkpoint_of(chain)
        with console.status(f"replaying {len(chain.records)} ES records onto the base"):
            replayed = ChainReplayer(backend.model, cfg.es.target_modules).set(chain.records, start)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            with console.status(f"writing {out}"):
                backend.model.save_pretrained(staging / "model")
                backend.tokenizer.save_pretrained(staging / "model")
                archive.checkout(node_id, staging / "scaffold")
                info = {
                    "run_dir": str(run_dir.resolve()),
                    "node": node_id,
                    "operator": entry.operator,
                    "scores": {k: v.to_json() for k, v in entry.scores.items()},
                    "base_model": chain.base_model,
                    "base_hash": chain.base_hash,
                    "es_records": len(chain.records),
                    "replayed_records": replayed,  # the rest came from a checkpoint
                }
                (staging / "node.json").write_text(json.dumps(info, indent=2) + "\n")
            staging.rename(out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    console.print(f"exported {node_id} ({len(chain.records)} ES records) to {out}")
