"""The Darwin-Goedel loop: select a parent, make a child (a registered operator: an ES step, a
scaffold edit, both, or one of a user's), evaluate it in stages, store it. Everything that
matters is in the archive before the next step, so a run killed at any moment resumes where it
stopped (`lineage resume`).

Iteration i is driven by `Random(f"{seed}:{i}")` and creates node `n{i:04d}`: a resumed run
repeats an interrupted iteration exactly and can never store a child twice.
"""

from __future__ import annotations

import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.loop.config import ConfigError
from agent.loop.evaluation import (
    GatewayDown,
    InfraError,
    NoProgram,
    evaluate,
    run_tasks,
)
from agent.loop.events import EventLog
from agent.loop.frontier import HELDOUT_KEY, ROOT_ID, frontier, results
from agent.loop.operators import Child, choose_operator, get_operator
from agent.loop.runtime import Runtime, model_hash
from agent.scaffold.repo import ScaffoldError, seed_files
from archive import Archive, Score, Status, UnsafeScaffoldError
from evaluators.stats import PairedDifference, paired_on_shared
from lineage_files import write_atomically

INFRA_STREAK_MAX = 3  # children in a row lost to sandbox failures: the sandbox is broken, stop


class SeedScaffoldError(RuntimeError):
    """The base node's agent produced no program at all. The seed scaffold is Lineage's own code,
    so this is a broken install or a bug of ours, never a score of 0: the run stops."""

    def __init__(self, cause: NoProgram) -> None:
        super().__init__(
            f"the base node's agent (the seed scaffold) produced {cause}. Its code is Lineage's "
            f"own, so this is not a score: {likely_fix(cause.error)} The base node is kept "
            "pending."
        )


def likely_fix(error: str) -> str:
    """A hint for the errors a broken install gives (the seed itself is tested)."""
    if "ModuleNotFoundError" in error or "ImportError" in error:
        return (
            "the scaffold's files did not reach the agent container, or it lacks a module "
            "they import; check that `lineage sandbox selftest` passes and that the run "
            "directory's scaffolds.git is readable."
        )
    if "LLM" in error or "gateway" in error or "Connection" in error:
        return (
            "the agent could not use the LLM gateway; check that the gateway's socket folder "
            "can be bind-mounted into containers (Docker must see this machine's /tmp)."
        )
    if "timeout" in error.lower() or "timed out" in error.lower():
        return "the agent ran out of time; raise [solve] wall_s or lower the tasks per job."
    return "see the error above; `lineage sandbox selftest` checks the sandbox itself."


def best_by_dev(archive: Archive, alpha: float = 0.05) -> str:
    """The run's answer: the dev frontier (agent/loop/frontier.py), i.e. the base unless a node
    beat it, or the node that beat it, with a paired significant difference on dev."""
    return frontier(archive, alpha)[0]


def node_id_for(iteration: int) -> str:
    return f"n{iteration:04d}"


@dataclass
class Spent:
    """Budget spent so far, across every session of the run (kept in spent.json)."""

    wall_s: float = 0.0
    generated_tokens: int = 0
    sandbox_s: float = 0.0

    @classmethod
    def read(cls, path: Path) -> Spent:
        if not path.exists():
            return cls()
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            return cls()  # a torn file is impossible (atomic writes), but never block a resume

    def write(self, path: Path) -> None:
        write_atomically(path, json.dumps(self.__dict__))


@dataclass
class RunSummary:
    iterations: int
    stopped: str
    base_id: str
    best_id: str
    table: list[dict[str, Any]] = field(default_factory=list)
    heldout_difference: PairedDifference | None = None  # best minus base, task by task


class RichMeter:
    """The loop's progress bars for agent jobs and scoring (one bar per phase, reset per use)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, Any] = {}

    def begin(self, what: str, total: int) -> None:
        if what in self.bars:
            self.progress.reset(self.bars[what], total=total)
        else:
            self.bars[what] = self.progress.add_task(what, total=total, phase="")

    def step(self, what: str) -> None:
        self.progress.advance(self.bars[what])


class Loop:
    def __init__(self, rt: Runtime, console: Console | None = None) -> None:
        self.rt = rt
        self.console = console or Console(stderr=True)
        self.events = EventLog(rt.run_dir / "events.jsonl")
        self.spent_path = rt.run_dir / "spent.json"
        self.spent = Spent.read(self.spent_path)
        self.session_start = time.time()
        self.session_base = self.spent.wall_s
        self.stop: str | None = None
        self.gains: dict[str, list[float]] = {}
        self.infra_streak = 0  # children lost to sandbox failures in a row
        self.heldout_difference: PairedDifference | None = None  # best minus base, if reported
        self._writer = None
        if rt.config.report.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError(
                    "[report] tensorboard = true needs the tensorboard package "
                    "(pip install 'lineage[tensorboard]')"
                ) from exc
            self._writer = SummaryWriter(str(rt.run_dir / "tensorboard"))

    # ---- signals -----------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        previous = {}

        def handler(signum: int, _frame: Any) -> None:
            if self.stop:  # second signal: stop now; the child in flight stays pending
                raise KeyboardInterrupt
            self.stop = signal.Signals(signum).name
            self.events.emit("stop_requested", signal=self.stop)
            self.console.print(
                f"[yellow]{self.stop}: finishing the child in flight, then stopping "
                "(again to stop at once; `lineage resume` continues)[/yellow]"
            )

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # ---- budgets -----------------------------------------------------------------------------
    def _account(self) -> None:
        archive = self.rt.archive
        tokens = sandbox = 0.0
        for node in archive.nodes():
            tokens += node.cost.generated_tokens
            sandbox += node.cost.sandbox_s
        self.spent.generated_tokens = int(tokens)
        self.spent.sandbox_s = sandbox
        self.spent.wall_s = self.session_base + (time.time() - self.session_start)
        self.spent.write(self.spent_path)

    def _exhausted(self, done: int) -> str | None:
        b = self.rt.config.budget
        s = self.spent
        if b.iterations is not None and done >= b.iterations:
            return "iterations"
        if b.wall_clock_s is not None and s.wall_s + self._still_needed_s() >= b.wall_clock_s:
            return "wall_clock_s"
        if b.generated_tokens is not None and s.generated_tokens >= b.generated_tokens:
            return "generated_tokens"
        if b.sandbox_s is not None and s.sandbox_s >= b.sandbox_s:
            return "sandbox_s"
        return None

    def _still_needed_s(self) -> float:
        """Seconds one more child and the held-out report would take, from what this run's nodes
        cost so far: a child is not started when the budget cannot also pay for the report,
        so a run ends near its `wall_clock_s` with its table, not a report's length past it."""
        if not self.rt.config.budget.reserve_report:
            return 0.0
        nodes = self.rt.archive.nodes()
        base = next((n for n in nodes if n.id == ROOT_ID), None)
        if base is None or base.status is not Status.EVALUATED:
            return 0.0  # nothing measured yet
        children = [n.cost.wall_s for n in nodes if n.id != ROOT_ID and n.cost.wall_s > 0]
        child_s = sum(children) / len(children) if children else base.cost.wall_s
        judged = sum(score.n for split, score in base.scores.items() if split != "heldout")
        per_task_s = base.cost.wall_s / judged if judged else 0.0
        # the base's report, unless stored, and the best's (a later child may become the best)
        reports = 1 + ("heldout" not in base.scores)
        return child_s + reports * per_task_s * len(self.rt.tasks.heldout)

    def _say_why_stopped(self, reason: str) -> None:
        """A stop before the clock ran out says what it held back, and for what."""
        budget = self.rt.config.budget.wall_clock_s
        if reason == "wall_clock_s" and budget is not None and self.spent.wall_s < budget:
            needed = self._still_needed_s()
            self.events.emit("budget_reserved", wall_s=self.spent.wall_s, needed_s=needed)
            self.console.print(
                f"{budget - self.spent.wall_s:.0f} s of wall_clock_s left, about {needed:.0f} s "
                "needed for one more child and the held-out report: reporting now"
            )

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        previous = self._install_signals()
        iterations = self.rt.config.budget.iterations
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[phase]}"),
            console=self.console,
            transient=False,
        )
        self.events.emit(
            "run_started", run_dir=str(self.rt.run_dir), config=json.loads(self.rt.config.to_json())
        )
        try:
            with progress:
                self.bar = progress.add_task(
                    "lineage", total=iterations, phase="", completed=self._done()
                )
                self.progress = progress
                self.rt.meter = RichMeter(progress)
                self._ensure_root()
                self._drain_pending()
                while True:
                    self._account()
                    reason = self.stop or self._exhausted(self._done())
                    if reason:
                        self._say_why_stopped(reason)
                        break
                    iteration = self._done() + 1
                    self._iterate(iteration)
                    every = self.rt.config.report.heldout_every
                    if every and iteration % every == 0:
                        self._report_heldout()
                table = [] if self.stop else self._report_heldout()
            self._account()
            best = self._best_by_dev()
            self.events.emit("run_stopped", reason=reason, spent=self.spent.__dict__)
            return RunSummary(self._done(), reason, ROOT_ID, best, table, self.heldout_difference)
        except KeyboardInterrupt:
            self._account()
            self.events.emit("run_interrupted", spent=self.spent.__dict__)
            raise
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            self.events.close()
            if self._writer is not None:
                self._writer.close()

    def _phase(self, text: str) -> None:
        tokens = self.rt.gateway.usage()["tokens"]
        self.progress.update(self.bar, phase=f"{text} ({tokens} tokens this session)")

    def _done(self) -> int:
        """Iterations finished: the highest child number in the archive."""
        numbers = [
            int(i[1:]) for i in self.rt.archive.ids() if i.startswith("n") and i[1:].isdigit()
        ]
        return max(numbers, default=0)

    def _ensure_root(self) -> None:
        archive = self.rt.archive
        if ROOT_ID in archive.ids():
            return
        self._phase("adding the base node")
        archive.add_root(
            self.rt.config.model.name,
            model_hash(self.rt.backend),
            files=seed_files(),
            node_id=ROOT_ID,
            message="seed scaffold",
            metadata={"iteration": 0},
        )
        self.events.emit("node_added", node=ROOT_ID, operator="root")

    def _drain_pending(self) -> None:
        """Evaluate nodes stored before a stop or kill but not yet judged (oldest first)."""
        for node_id in self.rt.archive.pending():
            self._evaluate(node_id)

    def _evaluate(self, node_id: str) -> None:
        archive = self.rt.archive
        node = archive.get(node_id)
        parent_train = None
        if node.parent_ids:
            parent = archive.get(node.parent_ids[0])
            parent_train = parent.scores["train"].score if "train" in parent.scores else None
        self._phase(f"evaluating {node_id}")
        self.events.emit("evaluation_started", node=node_id)
        try:
            result = evaluate(self.rt, node_id, parent_train)
        except NoProgram as exc:
            if node_id == ROOT_ID:
                self.events.emit("agent_error", node=node_id, error=str(exc))
                raise SeedScaffoldError(exc) from exc
            self._fail(node_id, "agent_error", f"agent error: {exc}")
            return
        except InfraError as exc:
            self.infra_streak += 1
            self.events.emit("infra_error", node=node_id, error=str(exc))
            if isinstance(exc, GatewayDown) or node_id == ROOT_ID:
                raise
            if self.infra_streak >= INFRA_STREAK_MAX:
                raise InfraError(
                    f"{self.infra_streak} children in a row hit sandbox infrastructure errors; "
                    f"the last: {exc}"
                ) from exc
            self._fail(node_id, "infra", f"infrastructure error (no score): {exc}")
            return
        except (ScaffoldError, UnsafeScaffoldError) as exc:  # fails the same way every time
            self._fail(node_id, "unreadable", f"cannot be evaluated: {exc}")
            return
        self.infra_streak = 0
        archive.update_metadata(node_id, result.metadata)
        archive.record_scores(node_id, result.scores, cost=result.cost)
        outcomes = result.metadata.get("outcomes", {})
        self.events.emit(
            "node_evaluated",
            node=node_id,
            scores={k: v.to_json() for k, v in result.scores.items()},
            outcomes=outcomes,
            tokens=result.cost.generated_tokens,  # generated; the agents also got reused ones
            reused_tokens=result.reused_tokens,
        )
        errors = {split: o["agent_error"] for split, o in outcomes.items() if o["agent_error"]}
        if errors:
            first = next(
                (f["detail"] for f in result.metadata["failures"] if not f["program"].strip()), ""
            )
            self.events.emit("agent_error", node=node_id, tasks=errors, error=first)
        if self._writer is not None:
            self._write_scalars(int(node.metadata.get("iteration", 0)), result.scores)
        if parent_train is not None and "train" in result.scores:
            gain = result.scores["train"].score - parent_train
            self.gains.setdefault(node.operator, []).append(gain)

    def _fail(self, node_id: str, kind: str, reason: str) -> None:
        """A child that cannot be scored: failed with its reason (never a score of 0)."""
        self.rt.archive.set_status(node_id, Status.FAILED, reason=reason[:2000])
        self.events.emit("node_failed", node=node_id, kind=kind, reason=reason[:2000])

    def _write_scalars(self, step: int, scores: dict[str, Score]) -> None:
        """TensorBoard: this node's scores, the best so far per split, and the budget spent."""
        for split, value in scores.items():
            self._writer.add_scalar(f"score/{split}", value.score, step)
        best: dict[str, float] = {}
        for node in self.rt.archive.nodes():
            for split, value in node.scores.items():
                best[split] = max(best.get(split, 0.0), value.score)
        for split, value in best.items():
            self._writer.add_scalar(f"best/{split}", value, step)
        self._account()
        self._writer.add_scalar("spent/generated_tokens", self.spent.generated_tokens, step)
        self._writer.add_scalar("spent/sandbox_s", self.spent.sandbox_s, step)
        self._writer.add_scalar("spent/wall_s", self.spent.wall_s, step)
        self._writer.flush()

    def _iterate(self, iteration: int) -> None:
        rt = self.rt
        rng = random.Random(f"{rt.config.seed}:{iteration}")
        selection = rt.config.selection
        parent_id = rt.archive.select_parent(
            selection.strategy, rng, split=selection.split, **selection.params
        )
        operator = choose_operator(rt, rng, self.gains, iteration)
        node_id = node_id_for(iteration)
        self._phase(f"{operator} from {parent_id}")
        self.events.emit(
            "iteration_started", iteration=iteration, parent=parent_id, operator=operator
        )
        child = get_operator(operator).make(rt, parent_id, iteration, rng)
        self._store(node_id, parent_id, iteration, child)
        if not child.failure:
            self._evaluate(node_id)
        self.progress.advance(self.bar)

    def _store(self, node_id: str, parent_id: str, iteration: int, child: Child) -> None:
        metadata = child.metadata | {"iteration": iteration}

        def add(child: Child) -> None:
            status = Status.FAILED if child.failure else Status.PENDING
            self.rt.archive.add_child(
                parent_id,
                child.operator,
                es_record=child.es_record if not child.failure else None,
                files=child.changes if child.changes and not child.failure else None,
                checkpoint=child.checkpoint if not child.failure else None,
                node_id=node_id,
                status=status,
                failure_reason=child.failure,
                cost=child.cost,
                metadata=metadata,
                message=f"{child.operator} {node_id} from {parent_id}",
            )

        try:
            try:
                add(child)
            except UnsafeScaffoldError as exc:  # the archive's own check of the files: no child
                child.failure = f"scaffold refused by the archive: {exc}"[:2000]
                add(child)
        finally:
            if child.checkpoint is not None:  # the archive keeps its own copy
                child.checkpoint.unlink(missing_ok=True)
        self.events.emit(
            "node_added",
            node=node_id,
            parent=parent_id,
            operator=child.operator,
            status=str(Status.FAILED if child.failure else Status.PENDING),
            failure=child.failure,
            checkpoint=child.checkpoint is not None and not child.failure,
        )

    # ---- reporting ---------------------------------------------------------------------------
    def _best_by_dev(self) -> str:
        return best_by_dev(self.rt.archive, self.rt.config.selection.frontier_alpha)

    def _report_heldout(self) -> list[dict[str, Any]]:
        """Base and best-by-dev on the held-out split (reporting only: never read by selection),
        and how sure their difference is, task by task (`self.heldout_difference`)."""
        archive = self.rt.archive
        rows = []
        for label, node_id in (("base", ROOT_ID), ("best", self._best_by_dev())):
            node = archive.get(node_id)
            if "heldout" not in node.scores and node.status is Status.EVALUATED:
                self._phase(f"held-out: {node_id}")
                files = archive.scaffold_files(node_id)
                reused = self.rt.reused_since()
                judged = run_tasks(self.rt, node_id, files, self.rt.tasks.heldout, "heldout")
                archive.update_metadata(node_id, {HELDOUT_KEY: judged.per_task})
                archive.record_scores(node_id, {"heldout": judged.score}, status=None)
                reused_tokens = reused()
                self.events.emit(
                    "heldout",
                    node=node_id,
                    score=judged.score.to_json(),
                    tokens=judged.tokens - reused_tokens,
                    reused_tokens=reused_tokens,
                )
                node = archive.get(node_id)
            rows.append(
                {
                    "node": label,
                    "id": node_id,
                    "operator": node.operator,
                    **{k: v.score for k, v in node.scores.items()},
                }
            )
        base, best = (archive.get(row["id"]) for row in rows)
        mine, theirs = results(best, "heldout"), results(base, "heldout")
        self.heldout_difference = paired_on_shared(theirs, mine) if mine and theirs else None
        if self.heldout_difference is not None:
            self.events.emit(
                "heldout_difference",
                base=base.id,
                best=best.id,
                difference=self.heldout_difference.to_json(),
            )
        return rows
