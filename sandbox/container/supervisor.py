"""In-container supervisor: takes jobs on stdin, answers verdicts on stdout (JSON lines).

Runs as root with only the capabilities it needs (setuid/setgid to drop into the job users, kill,
and file-ownership overrides to wipe scratch areas). Each job gets two users of its own container:
- the candidate user runs the untrusted program in a fresh interpreter, made before the job
  arrives: a fork of a pristine `python3 -I` zygote (default) or a new exec (see stub.py);
- the referee user runs the trusted tests (a fork of this process, no exec).
The wall-clock deadline lives here, outside both. After every job all processes of both users are
killed (`kill(-1)` from a process of that user), their SysV IPC objects removed and /tmp, /dev/shm
and /dev/mqueue wiped (scratch.py), so nothing passes from one job to the next. The verdict is
decided before that reset and never changed by it: a reset that fails in any way still kills what
it can, answers the verdict, and marks the container unclean, so the host replaces it.

Single-threaded on purpose: one `select` loop, and forks never race a thread.
"""

from __future__ import annotations

import argparse
import ast  # noqa: F401  (loaded before forking, so the referee's first parse costs nothing)
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import referee  # noqa: E402
import scratch  # noqa: E402

# Every place a job user can write to (the root file system is read-only); the selftest's
# "finding a writable place outside the scratch areas" attack checks that this list is complete.
SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")
# MALLOC_ARENA_MAX: glibc reserves a 64 MiB arena per thread, up to 8 per core; under the address
# space limit (RLIMIT_AS) that let a 1 GiB job start only ~20 threads.
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "MALLOC_ARENA_MAX": "2",
}
IPC_RMID = 0


class HostGone(Exception):
    """Our stdin closed: the process that owns this container has exited."""


class OutputTail:
    """The last `keep` bytes of what the candidate printed, and how many came before them."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.keep:  # trim in batches, not on every chunk
            excess = len(self.data) - self.keep
            self.dropped += excess
            del self.data[:excess]

    def text(self) -> str:
        excess = max(0, len(self.data) - self.keep)
        tail = bytes(self.data[excess:]).decode("utf-8", "replace")
        if self.dropped + excess:
            tail = f"[... {self.dropped + excess} bytes dropped ...]\n" + tail
        return tail


class CandidateProcess:
    """One job's candidate: its pid, a pidfd to wait on, and our ends of its three pipes."""

    def __init__(self, pid: int, requests: int, replies: int, output: int, popen=None) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.requests, self.replies, self.output = requests, replies, output
        self._popen = popen  # exec mode: our own child, reaped by us

    def kill(self) -> None:
        """Kill it and close our ends of its call pipes; safe to call again (error paths do)."""
        if self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        select.select([self.pidfd], [], [], 5.0)  # readable once the process has exited
        if self._popen is not None:
            self._popen.wait()
        for fd in (self.pidfd, self.requests, self.replies):
            _close(fd)
        self.pidfd = self.requests = self.replies = -1

    def close_output(self) -> None:
        _close(self.output)
        self.output = -1


class Zygote:
    """Client of the fork server in stub.py (see there for why)."""

    def __init__(self, python: list[str], uid: int) -> None:
        import socket

        self._socket_module = socket
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [*python, os.path.join(HERE, "stub.py"), "--zygote", str(theirs.fileno()), str(uid)],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
            env=ENV,
        )
        theirs.close()
        self.sock = ours

    def fork(self) -> CandidateProcess:
        self.sock.sendall(b"F")
        message, fds, _, _ = self._socket_module.recv_fds(self.sock, 64, 3)
        if len(fds) != 3:
            raise RuntimeError("the zygote is gone")
        return CandidateProcess(int(message), *fds)


class Supervisor:
    def __init__(self, candidate_uid: int, referee_uid: int, python: list[str], start: str) -> None:
        self.candidate_uid = candidate_uid
        self.referee_uid = referee_uid
        self.python = python
        self.zygote = Zygote(python, candidate_uid) if start == "fork" else None
        self.candidate: CandidateProcess | None = None
        self.inbox = b""  # bytes from the host not yet taken as a job line
        self.out = os.fdopen(os.dup(1), "wb")
        # Nothing else in this process may write to the host channel.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.close(devnull)

    # -- the candidate interpreter -------------------------------------------------------------
    def spawn_candidate(self) -> None:
        """Make the next job's candidate now, so its start-up is off the job's critical path."""
        if self.zygote is not None:
            self.candidate = self.zygote.fork()
            return
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        uid = self.candidate_uid
        popen = subprocess.Popen(
            [*self.python, os.path.join(HERE, "stub.py"), str(rep_w)],
            stdin=req_r,
            stdout=out_w,
            stderr=out_w,
            pass_fds=(rep_w,),
            cwd="/tmp",
            env=ENV,
            user=uid,
            group=uid,
            extra_groups=[],
            start_new_session=True,
        )
        for fd in (req_r, rep_w, out_w):
            os.close(fd)
        self.candidate = CandidateProcess(popen.pid, req_w, rep_r, out_r, popen)

    # -- one job ---------------------------------------------------------------------------------
    def run_job(self, job: dict) -> dict:
        started = time.monotonic()
        limits = job["limits"]
        deadline = started + float(limits["wall_s"])
        keep = int(limits["output_kb"]) * 1024
        cand = self.candidate
        assert cand is not None
        report_r, report_w = os.pipe()
        try:
            referee_pid = self._fork_referee(job, cand.requests, cand.replies, report_w)
        except BaseException:
            os.close(report_r)
            raise
        finally:
            os.close(report_w)

        output = OutputTail(keep)
        reports: list[dict] = []
        try:
            timed_out = self._collect(report_r, cand.output, deadline, output, reports)
        finally:  # also when the host is gone or a report is garbled
            self._stop_job(referee_pid)
            os.close(report_r)
        self._drain(cand, output)
        verdict = judge(reports, len(job["checks"]), timed_out, float(limits["wall_s"]))
        verdict["output_tail"] = output.text()
        return verdict

    def _collect(
        self, report_r: int, output_fd: int, deadline: float, output: OutputTail, reports: list
    ) -> bool:
        """Read the referee's reports and the candidate's output until the referee is done or
        the deadline passes (returns True then); host bytes that arrive meanwhile are kept."""
        pending = b""
        open_fds = {report_r: "report", output_fd: "output", 0: "host"}
        while "report" in open_fds.values():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            ready, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if open_fds[fd] == "host":
                    if not chunk:  # the host is gone: nobody wants this verdict
                        raise HostGone
                    self.inbox += chunk
                    continue
                if not chunk:
                    del open_fds[fd]
                    continue
                if open_fds[fd] == "output":
                    output.add(chunk)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                reports.extend(json.loads(line) for line in lines if line)
        return False

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

    def _stop_job(self, referee_pid: int) -> None:
        """Kill the job's two processes: from here on nothing can add to the referee's reports.

        Root may kill the candidate (usually one process) and the referee (usually exited, a
        zombie until reaped) directly; whatever else they started goes in `_reset`."""
        if self.candidate is not None:
            self.candidate.kill()
        try:
            os.kill(referee_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(referee_pid)

    def _drain(self, cand: CandidateProcess, output: OutputTail) -> None:
        """Collect what the candidate printed just before it was killed (bounded, non-blocking)."""
        fd = cand.output
        while True:
            ready, _, _ = select.select([fd], [], [], 0)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output.add(chunk)
        cand.close_output()

    # -- the loop ----------------------------------------------------------------------------
    def serve(self) -> None:
        kill_user(self.candidate_uid)
        kill_user(self.referee_uid)
        scratch.wipe(SCRATCH)
        self.spawn_candidate()
        self.send({"ready": True, "python": sys.version.split()[0]})
        while (line := self._next_line()) is not None:
            if not line.strip():
                continue
            started = time.monotonic()
            try:
                message = json.loads(line)
                job_id = message.get("id")
                verdict = self.run_job(message["job"])
            except HostGone:
                return
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
            verdict["id"] = job_id
            verdict["clean"] = clean = self._reset() and self._respawn()
            verdict["duration_s"] = round(time.monotonic() - started, 4)  # the reset included
            self.send(verdict)
            if not clean:  # the host replaces a container that could not be cleaned
                sys.exit(3)

    def _next_line(self) -> bytes | None:
        while b"\n" not in self.inbox:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                return None
            self.inbox += chunk
        line, self.inbox = self.inbox.split(b"\n", 1)
        return line

    def _reset(self) -> bool:
        """Leave no process, IPC object or file of either job user behind; never raises. True
        when the container is as fresh as before the job.

        One /proc scan tells whether anything of either user lives (anything alive during the
        scan is seen, and only a live process can fork), and only then does the slower
        `kill(-1)`-as-that-user loop run. Should any step fail, every job process is killed
        once more and the container reported unclean."""
        users = (self.referee_uid, self.candidate_uid)
        try:
            if self.candidate is not None:
                self.candidate.kill()
                self.candidate.close_output()
            for uid in running_users(users) | set(ipc_owners(users)):
                kill_user(uid)
            scratch.wipe(SCRATCH)
            return scratch.is_empty(SCRATCH) and not running_users(users)
        except Exception as exc:
            _log(f"reset failed, the container will be replaced: {type(exc).__name__}: {exc}")
        for uid in users:
            try:
                kill_user(uid)
            except Exception as exc:
                _log(f"killing uid {uid} failed: {type(exc).__name__}: {exc}")
        return False

    def _respawn(self) -> bool:
        """The next job's candidate; False (replace the container) when it cannot be made."""
        try:
            self.spawn_candidate()
            return True
        except Exception as exc:
            _log(f"no next candidate: {type(exc).__name__}: {exc}")
            self.candidate = None
            return False

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
    kept: list = []
    for r in reports:
        if "setup_error" in r:
            setup_error = str(r["setup_error"])
        elif "load" in r:
            load = r
        elif "check" in r and isinstance(r["check"], int) and 0 <= r["check"] < n_checks:
            checks[r["check"]] = [str(r["outcome"]), str(r.get("detail", ""))]
            died = died or bool(r.get("died"))
        elif "kept" in r:
            kept.append(r["kept"])
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
    return {"status": status, "detail": detail, "checks": checks, "kept": kept}


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


def running_users(uids: tuple[int, ...]) -> set[int]:
    """Which of `uids` still own a running process in this container (one /proc scan)."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        uid = int(fields.get("Uid", "-1").split()[0])
        if uid in uids and not fields.get("State", "").strip().startswith("Z"):
            found.add(uid)
    return found


def sysv_ipc_objects() -> list[tuple[str, int, int]]:
    """(kind, id, owner uid) of every SysV IPC object in this container's IPC namespace."""
    found = []
    for kind, id_name in (("shm", "shmid"), ("sem", "semid"), ("msg", "msqid")):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                header = f.readline().split()
                id_col, uid_col = header.index(id_name), header.index("uid")
                found += [(kind, int(row[id_col]), int(row[uid_col])) for row in map(str.split, f)]
        except (OSError, ValueError):
            continue
    return found


def ipc_owners(uids: tuple[int, ...]) -> list[int]:
    """Which of `uids` own SysV IPC objects (they outlive their creator)."""
    owners = {uid for _, _, uid in sysv_ipc_objects()}
    return [uid for uid in uids if uid in owners]


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
        if not running_users((uid,)):
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
    """Remove `uid`'s SysV shared memory, semaphores and message queues (run as that user)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    remove = {
        "shm": lambda i: libc.shmctl(i, IPC_RMID, None),
        "sem": lambda i: libc.semctl(i, 0, IPC_RMID),
        "msg": lambda i: libc.msgctl(i, IPC_RMID, None),
    }
    for kind, ipc_id, owner in sysv_ipc_objects():
        if owner == uid:
            remove[kind](ipc_id)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _log(message: str) -> None:
    """A line on stderr: the host keeps its tail and shows it when a container is replaced."""
    try:
        sys.stderr.write(f"supervisor: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidate-uid", type=int, required=True)
    parser.add_argument("--referee-uid", type=int, required=True)
    parser.add_argument("--python", default="python3 -I", help="interpreter command for candidates")
    parser.add_argument(
        "--start",
        choices=("fork", "exec"),
        default="fork",
        help="fork each candidate from a pristine zygote, or exec a new interpreter",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    Supervisor(args.candidate_uid, args.referee_uid, args.python.split(), args.start).serve()


if __name__ == "__main__":
    main()
