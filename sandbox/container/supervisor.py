"""In-container supervisor: takes jobs on stdin, answers verdicts on stdout (JSON lines).

Runs as root with only the capabilities it needs (setuid/setgid to drop into the job users, kill,
and file-ownership overrides to wipe scratch areas). Each job gets two users of its own container:
- the candidate user runs the untrusted program in a fresh `python3 -I` (prespawned between jobs);
- the referee user runs the trusted tests (a fork of this process, no exec).
The wall-clock deadline lives here, outside both. After every job all processes of both users are
killed (`kill(-1)` from a process of that user), their SysV IPC objects removed and /tmp, /dev/shm
and /dev/mqueue wiped, so nothing passes from one job to the next.

Single-threaded on purpose: one `select` loop, and forks never race a thread.
"""

from __future__ import annotations

import argparse
import ast  # noqa: F401  (loaded before forking, so the referee's first parse costs nothing)
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import referee  # noqa: E402

SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
IPC_RMID = 0


class Supervisor:
    def __init__(self, candidate_uid: int, referee_uid: int, python: list[str]) -> None:
        self.candidate_uid = candidate_uid
        self.referee_uid = referee_uid
        self.python = python
        self.candidate: subprocess.Popen | None = None
        self.reply_r = -1
        self.out = os.fdopen(os.dup(1), "wb")
        # Nothing else in this process may write to the host channel.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.close(devnull)

    # -- the candidate interpreter -------------------------------------------------------------
    def spawn_candidate(self) -> None:
        """Start the next job's interpreter now, so its start-up is off the job's critical path."""
        reply_r, reply_w = os.pipe()
        uid = self.candidate_uid
        self.candidate = subprocess.Popen(
            [*self.python, os.path.join(HERE, "stub.py"), str(reply_w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(reply_w,),
            cwd="/tmp",
            env=ENV,
            user=uid,
            group=uid,
            extra_groups=[],
            start_new_session=True,
            bufsize=0,
        )
        os.close(reply_w)
        self.reply_r = reply_r

    # -- one job ---------------------------------------------------------------------------------
    def run_job(self, job: dict) -> dict:
        started = time.monotonic()
        limits = job["limits"]
        deadline = started + float(limits["wall_s"])
        keep = int(limits["output_kb"]) * 1024
        cand = self.candidate
        assert cand is not None and cand.stdin is not None and cand.stdout is not None
        report_r, report_w = os.pipe()
        referee_pid = self._fork_referee(job, cand.stdin.fileno(), self.reply_r, report_w)
        os.close(report_w)

        output = bytearray()
        dropped = 0
        reports: list[dict] = []
        pending = b""
        open_fds = {report_r: "report", cand.stdout.fileno(): "output"}
        timed_out = False
        while "report" in open_fds.values():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if open_fds[fd] == "output":
                    if not chunk:
                        del open_fds[fd]
                        continue
                    output += chunk
                    if len(output) > 2 * keep:
                        dropped += len(output) - keep
                        del output[: len(output) - keep]
                    continue
                if not chunk:
                    del open_fds[fd]
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                reports.extend(json.loads(line) for line in lines if line)

        self._end_job(referee_pid)
        self._drain(cand.stdout.fileno(), output, keep)
        os.close(report_r)
        verdict = judge(reports, len(job["checks"]), timed_out, float(limits["wall_s"]))
        tail = bytes(output[-keep:]).decode("utf-8", "replace")
        if dropped or len(output) > keep:
            tail = f"[... {dropped + max(0, len(output) - keep)} bytes dropped ...]\n" + tail
        verdict["output_tail"] = tail
        verdict["duration_s"] = round(time.monotonic() - started, 4)
        return verdict

    def _fork_referee(
        self, job: dict, to_candidate: int, from_candidate: int, report_w: int
    ) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 0
        try:
            keep = {to_candidate, from_candidate, report_w}
            for fd in _open_fds():
                if fd > 2 and fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):
                os.dup2(devnull, fd)
            os.setsid()
            _become(self.referee_uid)
            import resource

            gib = 1024**3
            resource.setrlimit(resource.RLIMIT_AS, (2 * gib, 2 * gib))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            referee.run(job, to_candidate, from_candidate, report_w)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _end_job(self, referee_pid: int) -> None:
        kill_user(self.referee_uid)
        kill_user(self.candidate_uid)
        _reap(referee_pid)
        if self.candidate is not None:
            self.candidate.wait()
            assert self.candidate.stdin is not None
            try:
                self.candidate.stdin.close()
            except OSError:
                pass
        os.close(self.reply_r)
        self.reply_r = -1
        wipe_scratch()

    def _drain(self, fd: int, output: bytearray, keep: int) -> None:
        """Collect what the candidate printed just before it was killed (bounded, non-blocking)."""
        while True:
            ready, _, _ = select.select([fd], [], [], 0)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk
            if len(output) > 2 * keep:
                del output[: len(output) - keep]
        if self.candidate is not None and self.candidate.stdout is not None:
            self.candidate.stdout.close()

    # -- the loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        kill_user(self.candidate_uid)
        kill_user(self.referee_uid)
        wipe_scratch()
        self.spawn_candidate()
        self.send({"ready": True, "python": sys.version.split()[0]})
        for line in sys.stdin.buffer:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
                job_id = message.get("id")
                verdict = self.run_job(message["job"])
            except Exception as exc:  # a malformed job from the host is answered, not fatal
                verdict = {
                    "status": "infra_error",
                    "detail": f"supervisor: {type(exc).__name__}: {exc}",
                }
                job_id = None
                try:
                    job_id = json.loads(line).get("id")
                except Exception:
                    pass
                self._reset()
            verdict["id"] = job_id
            clean = (
                scratch_is_clean()
                and not live_pids(self.candidate_uid)
                and not live_pids(self.referee_uid)
            )
            verdict["clean"] = clean
            self.spawn_candidate()
            self.send(verdict)
            if not clean:  # the host replaces a container that could not be cleaned
                sys.exit(3)

    def _reset(self) -> None:
        kill_user(self.referee_uid)
        kill_user(self.candidate_uid)
        if self.candidate is not None:
            self.candidate.wait()
        if self.reply_r >= 0:
            os.close(self.reply_r)
            self.reply_r = -1
        wipe_scratch()

    def send(self, message: dict) -> None:
        self.out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.out.flush()


def judge(reports: list[dict], n_checks: int, timed_out: bool, wall_s: float) -> dict:
    """Decide the verdict from the referee's reports alone (never from the candidate's process)."""
    checks = [["not_run", ""] for _ in range(n_checks)]
    load = None
    setup_error = None
    died = False
    done = False
    for r in reports:
        if "setup_error" in r:
            setup_error = str(r["setup_error"])
        elif "load" in r:
            load = r
        elif "check" in r and isinstance(r["check"], int) and 0 <= r["check"] < n_checks:
            checks[r["check"]] = [str(r["outcome"]), str(r.get("detail", ""))]
            died = died or bool(r.get("died"))
        elif r.get("done"):
            done = True
    first_bad = next((d for o, d in checks if o not in ("passed", "not_run")), "")
    if setup_error is not None:
        status, detail = "error", f"test setup failed: {setup_error}"
    elif timed_out:
        status, detail = "timeout", f"timed out after {wall_s:g} s"
    elif load is None:
        status, detail = "error", "the referee ended before the program loaded"
    elif load.get("load") != "ok":
        status, detail = "error", str(load.get("detail", "the program did not load"))
    elif died:
        status, detail = "error", first_bad or "the program's process died"
    elif not done:
        status, detail = "error", "the referee ended before the checks finished"
    elif all(o == "passed" for o, _ in checks):
        status, detail = "passed", ""
    else:
        status, detail = "failed", first_bad
    return {"status": status, "detail": detail, "checks": checks}


# -- users, processes, scratch -----------------------------------------------------------------
def _become(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _open_fds() -> list[int]:
    return [int(fd) for fd in os.listdir("/proc/self/fd")]


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def live_pids(uid: int) -> list[int]:
    """Processes of `uid` in this container that still run (zombies do not count)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            found.append(int(name))
    return found


def kill_user(uid: int) -> bool:
    """Kill every process of `uid` (also daemons after setsid and fork bombs) and its IPC objects."""
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            try:
                _become(uid)
                for _ in range(3):
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except ProcessLookupError:
                        break
                _remove_ipc(uid)
            finally:
                os._exit(0)
        _reap(pid)
        _reap_all()
        if not live_pids(uid):
            return True
        time.sleep(0.002)
    return False


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _remove_ipc(uid: int) -> None:
    """SysV shared memory, semaphores and message queues outlive their creator: remove them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    for kind, remove in (
        ("shm", lambda i: libc.shmctl(i, IPC_RMID, None)),
        ("sem", lambda i: libc.semctl(i, 0, IPC_RMID)),
        ("msg", lambda i: libc.msgctl(i, IPC_RMID, None)),
    ):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                header = f.readline().split()
                rows = [line.split() for line in f]
        except OSError:
            continue
        id_col = header.index({"shm": "shmid", "sem": "semid", "msg": "msqid"}[kind])
        uid_col = header.index("uid")
        for row in rows:
            if int(row[uid_col]) == uid:
                remove(int(row[id_col]))


def wipe_scratch() -> None:
    for root in SCRATCH:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, onerror=_force)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _force(func, path, _exc) -> None:
    try:
        os.chmod(os.path.dirname(path), 0o700)
        func(path)
    except OSError:
        pass


def scratch_is_clean() -> bool:
    for root in SCRATCH:
        try:
            if os.listdir(root):
                return False
        except OSError:
            continue
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidate-uid", type=int, required=True)
    parser.add_argument("--referee-uid", type=int, required=True)
    parser.add_argument("--python", default="python3 -I", help="interpreter command for candidates")
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    Supervisor(args.candidate_uid, args.referee_uid, args.python.split()).serve()


if __name__ == "__main__":
    main()
