"""Emptying a scratch area whatever a job left in it: a wipe that cannot recurse, follow or raise.

A candidate controls everything under /tmp, /dev/shm and /dev/mqueue: names (newlines, bytes that
are not UTF-8), file types (fifos, sockets, symlinks, hard links), permissions (mode 000, sticky
directories without write permission), counts, and depth (a chain of `mkdir d; cd d` far past
PATH_MAX and Python's recursion limit). So every step here is relative to one open directory
descriptor (no path grows with depth), the walk keeps its own stack of names instead of recursing,
only one descriptor is open at a time (it climbs back through ".."), nothing is ever followed
(O_NOFOLLOW, no symlink is a directory here), and the walk never leaves the root's file system.
An entry that still cannot go is skipped, never raised: the caller asks `is_empty` afterwards and
replaces the container rather than let the next job see it.

Runs after every process of the job users is dead, so nothing changes the tree while it is walked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OWNER_ONLY = 0o700  # what a directory gets when its mode stops us (only without CAP_DAC_OVERRIDE)


def wipe(roots: Iterable[str]) -> None:
    """Empty each root directory (the roots themselves stay, with their own mode)."""
    for root in roots:
        try:
            fd = os.open(root, DIR_FLAGS)
        except OSError:
            continue
        try:
            _empty(fd)
        except OSError:
            pass  # left for is_empty to see
        finally:
            os.close(fd)


def is_empty(roots: Iterable[str]) -> bool:
    for root in roots:
        try:
            with os.scandir(root) as entries:
                if next(entries, None) is not None:
                    return False
        except OSError:
            continue
    return True


def _empty(root_fd: int) -> None:
    """Depth first with an explicit stack: `names` is the path from the root to `fd`, and
    `pending[i]` the subdirectories of level i not yet emptied."""
    device = os.fstat(root_fd).st_dev
    fd = os.dup(root_fd)
    names: list[str] = []
    pending: list[list[str]] = [_remove_files(fd, is_root=True)]
    try:
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                child = _enter(fd, name, device)
                if child is None:
                    continue
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(_remove_files(fd, is_root=False))
                continue
            pending.pop()
            if not names:
                return
            parent = os.open("..", DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            name = names.pop()
            _rmdir(fd, name, is_root=not names)
    finally:
        os.close(fd)


def _remove_files(fd: int, is_root: bool) -> list[str]:
    """Unlink every entry of `fd` that is not a directory; return the subdirectories' names.

    Passes repeat until one removes nothing, since a directory read while it shrinks may skip
    entries."""
    subdirs: dict[str, None] = {}
    while True:
        removed = 0
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.name in subdirs:
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        subdirs[entry.name] = None
                    elif _unlink(fd, entry.name, is_root):
                        removed += 1
        except OSError:
            break
        if not removed:
            break
    return list(subdirs)


def _unlink(fd: int, name: str, is_root: bool) -> bool:
    try:
        os.unlink(name, dir_fd=fd)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    if is_root or not _open_up(fd):  # never touch the mode of a scratch root itself
        return False
    try:
        os.unlink(name, dir_fd=fd)
        return True
    except OSError:
        return False


def _enter(fd: int, name: str, device: int) -> int | None:
    """Open subdirectory `name` of `fd`, making it readable first if its mode stops us; None when
    it cannot be opened or lies on another file system."""
    try:
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
    except PermissionError:
        try:
            os.chmod(name, OWNER_ONLY, dir_fd=fd, follow_symlinks=False)
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
        except (OSError, NotImplementedError, ValueError):  # ValueError: a symlink (3.11)
            return None
    except OSError:
        return None
    try:
        if os.fstat(child).st_dev == device:
            return child
    except OSError:
        pass
    os.close(child)
    return None


def _rmdir(fd: int, name: str, is_root: bool) -> None:
    try:
        os.rmdir(name, dir_fd=fd)
        return
    except OSError:
        pass
    if not is_root and _open_up(fd):
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            pass


def _open_up(fd: int) -> bool:
    """Give directory `fd` to its owner in full (clears a sticky bit too)."""
    try:
        os.fchmod(fd, OWNER_ONLY)
        return True
    except OSError:
        return False
