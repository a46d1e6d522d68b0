"""The program of a scaffold's sandbox job (it runs in the container, never on the host).

`agent.scaffold.jobs.bootstrap` sends this file's text followed by one `_start(...)` line with
the scaffold's files and the job's settings as literals. `_start` writes the scaffold, the LLM
client and the reply sanitizer into the scratch area; the trusted check then calls one of the
three entry functions and hands its plain-data answer back with `keep(...)`. Importing this file
does nothing, so it is linted and read as the Python it is.
"""

import importlib
import os
import stat
import sys
import threading
import traceback

_FILES: dict[str, str] = {}  # the scaffold as it was sent: what `improve` is compared against
_SETTINGS: dict = {}


def _start(files, ours, agent_root, workspace, client_module, socket, call_timeout_s, note_chars):
    """Write the scaffold, then our own modules last (an edit may not shadow them)."""
    _FILES.update(files)
    _SETTINGS.update(
        agent_root=agent_root,
        workspace=workspace,
        client_module=client_module,
        socket=socket,
        call_timeout_s=call_timeout_s,
        note_chars=note_chars,
    )
    sys.dont_write_bytecode = True
    _write(agent_root, files)
    _write(agent_root, ours)
    sys.path.insert(0, agent_root)


def _write(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)


def _llm(token):
    client = importlib.import_module(_SETTINGS["client_module"])
    return client.LLM(_SETTINGS["socket"], token, timeout_s=_SETTINGS["call_timeout_s"])


def lineage_solve(tasks, token, threads):
    """[{"program": str, "error": str|None}] per task; tasks run in threads so calls batch."""
    import scaffold

    llm = _llm(token)
    answers = [None] * len(tasks)

    def work(i):
        try:
            program = scaffold.solve(tasks[i], llm)
            if not isinstance(program, str):
                raise TypeError(f"solve returned {type(program).__name__}, not str")
            answers[i] = {"program": program, "error": None}
        except BaseException as exc:
            answers[i] = {"program": "", "error": f"{type(exc).__name__}: {exc}"[:2000]}

    pending = list(range(len(tasks)))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                i = pending.pop(0)
            work(i)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, threads))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return answers


def lineage_improve(problem_statement, token):
    """The workspace's changes after the agent's own `improve`, {path: text or None (deleted)},
    and what improve said it did (its return value, if a string, cut)."""
    import scaffold

    workspace = _SETTINGS["workspace"]
    _write(workspace, _FILES)
    note = scaffold.improve(workspace, problem_statement, _llm(token))
    note = note[: _SETTINGS["note_chars"]] if isinstance(note, str) else ""
    changes = {}
    seen = set()
    for root, dirs, names in os.walk(workspace):  # links are listed, never followed
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        for name in dirs + names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, workspace)
            if rel.endswith(".pyc") or (name in dirs and not os.path.islink(path)):
                continue
            if not stat.S_ISREG(os.lstat(path).st_mode):  # a link, FIFO, socket, device
                raise ValueError(f"improve left something that is not a regular file: {rel!a}")
            seen.add(rel)
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    text = f.read()
            except UnicodeDecodeError:
                raise ValueError(f"improve wrote a non-text file: {rel!a}") from None
            if _FILES.get(rel) != text:
                changes[rel] = text
    for rel in _FILES:
        if rel not in seen:
            changes[rel] = None
    return {"changes": changes, "note": note}


def lineage_selftest():
    """Import the package and run every test_* function under tests/:
    {"passed": n, "failures": [...]}."""
    failures = []
    passed = 0
    try:
        importlib.import_module("scaffold")
    except BaseException:
        return {
            "passed": 0,
            "failures": ["import scaffold: " + traceback.format_exc(limit=3)[-1500:]],
        }
    tests_dir = os.path.join(_SETTINGS["agent_root"], "tests")
    listed = os.listdir(tests_dir) if os.path.isdir(tests_dir) else []
    names = sorted(n for n in listed if n.startswith("test_") and n.endswith(".py"))
    for name in names:
        try:
            module = importlib.import_module("tests." + name[:-3])
        except BaseException:
            failures.append(f"{name}: " + traceback.format_exc(limit=3)[-1500:])
            continue
        for attr in sorted(dir(module)):
            if attr.startswith("test_") and callable(getattr(module, attr)):
                try:
                    getattr(module, attr)()
                    passed += 1
                except BaseException:
                    failures.append(f"{name}::{attr}: " + traceback.format_exc(limit=3)[-1500:])
    return {"passed": passed, "failures": failures}
