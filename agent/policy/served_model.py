"""A model (a registry name, an HF id or a folder) served on this machine over vLLM's
OpenAI-compatible server, for as long as a run holds it.

Why: a stronger proposer than the policy (`[edit] proposer_model = "coder-1.5b"`) should need no
server started by hand. The run starts one on 127.0.0.1 with a random bearer key, and the gateway
forwards proposer sessions to it as to any external endpoint (`ExternalEndpoint`), so budgets,
bounds and transcripts stay the gateway's. Sandboxes have no network: only the host reaches it.
The server and its engine processes die with the run, even by `kill -9` (`vllm_process`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agent.gateway.config import ExternalEndpoint
from agent.policy.cpu_bind import cpu_binding
from agent.policy.vllm_process import mark_parent
from agent.scale.local_cluster import free_port

KEY_ENV = "LINEAGE_SERVED_MODEL_KEY"  # ExternalEndpoint reads the key from the environment


@dataclass(frozen=True)
class ServedModelConfig:
    """- `memory_fraction`: of this machine's memory (CPU) or the GPU's, for weights and KV cache
    (on a CPU vLLM counts its worker's whole footprint in it: coder-1.5b in bf16 needs about 4 GB
    before any cache, 0.25 of 24 GB leaves it 2 GB); the policy's engine holds its own beside it.
    - `max_model_len`: a proposer's prompt holds a scaffold file and a diagnosis; 8192 is ample.
    """

    model: str
    dtype: str = "auto"
    seed: int = 0
    memory_fraction: float = 0.25
    max_model_len: int = 8192
    cpu_bind: str = "auto"
    start_timeout_s: float = 900.0


def server_command(config: ServedModelConfig, port: int) -> list[str]:
    """vLLM's server for the model as the run's own engine would load it (same path, dtype)."""
    from agent.policy.vllm_backend import VllmBackendConfig, engine_args

    args = engine_args(
        VllmBackendConfig(
            model=config.model,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            seed=config.seed,
            gpu_memory_utilization=config.memory_fraction,
        )
    )
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        args["model"],
        "--served-model-name",
        config.model,
        "--dtype",
        args["dtype"],
        "--max-model-len",
        str(config.max_model_len),
        "--gpu-memory-utilization",
        str(args["gpu_memory_utilization"]),
        *(
            ["--kv-cache-memory-bytes", str(args["kv_cache_memory_bytes"])]
            if "kv_cache_memory_bytes" in args
            else []
        ),
        "--seed",
        str(config.seed),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--uvicorn-log-level",
        "warning",
    ]


class ServedModel:
    """Start with `open`; `endpoint` is what proposer sessions are forwarded to; `close` stops it."""

    def __init__(self, config: ServedModelConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.endpoint: ExternalEndpoint | None = None

    def open(self) -> ServedModel:
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"serving {self.config.model!r} on this machine needs vLLM "
                "(pip install 'lineage[vllm]'), or name a running server with [edit] "
                "proposer_base_url"
            ) from exc
        port = free_port()
        key = secrets.token_hex(16)
        os.environ[KEY_ENV] = key
        mark_parent()  # the server and its engine die with this process
        env = {**os.environ, **cpu_binding(self.config.cpu_bind), "VLLM_API_KEY": key}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                server_command(self.config, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            self._wait_ready(base_url, key)
        except BaseException:
            self.close()
            raise
        self.endpoint = ExternalEndpoint(base_url, self.config.model, KEY_ENV)
        return self

    def _wait_ready(self, base_url: str, key: str) -> None:
        """Until the server lists the model; its log's tail is the error if it exits first."""
        deadline = time.monotonic() + self.config.start_timeout_s
        request = urllib.request.Request(
            f"{base_url}/models", headers={"Authorization": f"Bearer {key}"}
        )
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(
                    f"the server for {self.config.model!r} exited while starting; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    served = [m.get("id") for m in json.load(reply).get("data", [])]
                if self.config.model in served:
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # not listening yet
            time.sleep(1.0)
        raise TimeoutError(
            f"the server for {self.config.model!r} was not ready in "
            f"{self.config.start_timeout_s:.0f} s; see {self.log_path}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        """SIGTERM (vLLM stops its engine), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> ServedModel:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()
