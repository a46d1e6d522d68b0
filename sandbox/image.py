"""Building the sandbox image: a base with python3, plus our in-container code.

Two layers of recipe, each labelled with the hash of what made it, so each is rebuilt only when its
recipe changes: the base (pulled `python:3.11-slim` where a registry answers, else a debootstrapped
minimal Debian imported with `docker import`) and the final image (base + supervisor files). A
user's own image (for benchmarks that need numpy etc.) takes the base's place.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from docker.errors import APIError, ImageNotFound

from sandbox.config import DEFAULT_IMAGE, LABEL
from sandbox.engine import docker_client
from sandbox.errors import ImageBuildError

CONTAINER_DIR = Path(__file__).parent / "container"
INSTALL_DIR = "/opt/lineage"
REGISTRY_BASE = "python:3.11-slim"
DEBOOTSTRAP = ("bookworm", "minbase", "python3")  # suite, variant, packages
BASE_REPO = "lineage-sandbox-base"
RECIPE_LABEL = "lineage.recipe"


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def container_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(CONTAINER_DIR.glob("*.py"))}


def dockerfile(base: str) -> str:
    return (
        f"FROM {base}\n"
        f"COPY *.py {INSTALL_DIR}/\n"
        f"RUN python3 -m compileall -q {INSTALL_DIR} && chmod -R a+rX {INSTALL_DIR}\n"
        'CMD ["python3", "-I", "/opt/lineage/supervisor.py"]\n'
    )


def _exists(tag: str) -> bool:
    """By exact tag: the tag encodes the recipe hash (labels alone would not do, since an image
    inherits its parent's labels)."""
    try:
        docker_client().images.get(tag)
        return True
    except ImageNotFound:
        return False


def _log(message: str) -> None:
    print(f"[lineage sandbox] {message}", flush=True)


def ensure_base(force: bool = False) -> str:
    """A local image with python3: pulled when a registry answers, else debootstrapped."""
    recipe = _hash("base", *DEBOOTSTRAP)
    tag = f"{BASE_REPO}:{recipe}"
    if not force and _exists(tag):
        return tag
    client = docker_client()
    try:
        client.images.pull(REGISTRY_BASE)
        image = client.images.get(REGISTRY_BASE)
        image.tag(BASE_REPO, recipe)
        _log(f"base image: pulled {REGISTRY_BASE}")
        # Label it by building a trivial layer, so `clean` sees it as ours.
        _build(f"FROM {REGISTRY_BASE}\n", {}, tag, recipe)
        return tag
    except APIError:
        pass  # no registry here: build the base ourselves
    _debootstrap_import(tag, recipe)
    return tag


def _debootstrap_import(tag: str, recipe: str) -> None:
    suite, variant, packages = DEBOOTSTRAP
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "no registry answers and debootstrap is not installed: install it "
            "(`apt-get install debootstrap`, as root) or make a registry reachable"
        )
    if os.geteuid() != 0:
        raise ImageBuildError("building the base image with debootstrap needs root")
    started = time.monotonic()
    _log(f"no registry: debootstrapping Debian {suite} with {packages} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="lineage-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", f"--variant={variant}", f"--include={packages}", suite, str(rootfs)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageBuildError(f"debootstrap failed ({done.returncode}): {done.stderr[-2000:]}")
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        repo, version = tag.split(":")
        docker_client().api.import_image_from_file(
            str(archive),
            repository=repo,
            tag=version,
            changes=[f"LABEL {LABEL}=1 {RECIPE_LABEL}={recipe}"],
        )
    _log(f"base image {tag} built in {time.monotonic() - started:.0f} s")


def _build(text: str, files: dict[str, bytes], tag: str, recipe: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in {"Dockerfile": text.encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    try:
        docker_client().images.build(
            fileobj=buffer,
            custom_context=True,
            tag=tag,
            labels={LABEL: "1", RECIPE_LABEL: recipe},
            pull=False,
            rm=True,
            forcerm=True,
        )
    except APIError as exc:
        raise ImageBuildError(f"building {tag} failed: {exc}") from None
    except Exception as exc:  # docker's BuildError carries the build log
        raise ImageBuildError(f"building {tag} failed: {exc}") from None


def ensure_image(base_image: str | None = None, force: bool = False) -> str:
    """The tag of a ready sandbox image: ours, or `base_image` with our supervisor added."""
    if base_image in (None, "", DEFAULT_IMAGE):
        base = ensure_base(force=force)
        base_identity = base  # the base tag already carries its recipe hash
        repo = DEFAULT_IMAGE
    else:
        try:
            given = docker_client().images.get(base_image)
        except ImageNotFound:
            raise ImageBuildError(
                f"image {base_image!r} not found locally (pull or build it first)"
            ) from None
        if given.labels.get(LABEL) and base_image.startswith(f"{DEFAULT_IMAGE}:"):
            return base_image  # already a sandbox image of ours (e.g. a tag ensure_image returned)
        base_identity = given.id
        base = base_image
        repo = f"{DEFAULT_IMAGE}-custom"
    files = container_files()
    text = dockerfile(base)
    recipe = _hash(
        text, base_identity, *(name.encode() + b"\0" + data for name, data in files.items())
    )
    tag = f"{repo}:{recipe}"
    if not force and _exists(tag):
        return tag
    _log(f"building {tag}")
    _build(text, files, tag, recipe)
    return tag


def remove_stale_images() -> int:
    """Remove our images (by label) that the current recipes no longer produce and nothing runs."""
    client = docker_client()
    current = {ensure_base(), ensure_image()}
    in_use = {c["ImageID"] for c in client.api.containers(all=True)}
    removed = 0
    for image in client.images.list(filters={"label": LABEL}):
        if set(image.tags) & current or image.id in in_use:
            continue
        try:
            client.images.remove(image.id, force=False, noprune=False)
            removed += 1
        except APIError:
            pass  # a child image or a container still needs it
    return removed
