"""A model folder with seeded random weights of a given architecture, for machines that cannot
download weights (benchmarks/gpu_check.sh): decoding cost and the equality checks of
tests/test_vllm_loop.py depend on shapes, not on what the weights know.

    python benchmarks/random_model.py CONFIG_AND_TOKENIZER_FOLDER OUT_FOLDER [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(args.source)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(args.source).save_pretrained(args.out)
    print(f"{args.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M random parameters")


if __name__ == "__main__":
    main()
