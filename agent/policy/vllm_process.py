"""vLLM's processes die with the Lineage process that started them, even by `kill -9`.

vLLM runs its engine core (and, on a CPU, its worker) in child processes that do not notice
their parent's death: after a `kill -9` of a run they would keep the model and its KV cache
(gigabytes) until someone kills them. `VllmBackend.from_config` names its own process in
`LINEAGE_VLLM_PARENT`; every process vLLM then starts inherits it and, through this project's
general plugin (loaded by vLLM in each of its processes), asks the kernel for SIGKILL when its
parent exits (`PR_SET_PDEATHSIG`, Linux). Processes of a vLLM that Lineage did not start, and
the Lineage process itself, are left alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT = "LINEAGE_VLLM_PARENT"
PR_SET_PDEATHSIG = 1


def mark_parent() -> None:
    """Called by the process about to start an engine: its children will die with it."""
    os.environ[PARENT] = str(os.getpid())


def die_with_parent() -> None:
    """In a process vLLM started for Lineage: be killed when the parent exits."""
    if PARENT not in os.environ or not sys.platform.startswith("linux"):
        return
    if os.environ[PARENT] == str(os.getpid()):
        return  # the process that starts the engine
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not fatal: the process only outlives a killed parent
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)
