"""A tiny random Llama and a byte-level tokenizer, built in-process: fast tests, no download.

Its outputs are gibberish, but deterministic for a seed, which is all the backend and population
tests need (batching, padding, stop sequences, per-row perturbations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|eos|>"
PAD = "<|pad|>"


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny model; defaults give ~0.2M parameters."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    seed: int = 0


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (GPT-2's byte alphabet, no merges) plus EOS and PAD: exactly reversible."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens({"eos_token": EOS, "pad_token": PAD})
    return tokenizer


def tiny_model(
    config: TinyModelConfig | None = None,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A seeded random Llama (fp32, eval mode) with its byte tokenizer."""
    config = config or TinyModelConfig()
    tokenizer = byte_tokenizer()
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer
