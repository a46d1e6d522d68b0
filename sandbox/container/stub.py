"""Candidate side: load the untrusted program, then answer the referee's calls.

Two ways to get a fresh candidate interpreter, chosen by the supervisor:
- fork (default): `stub.py --zygote SOCK UID` runs once per container as a pristine `python3 -I`
  that never sees a job. For each job it forks a child, which drops to the candidate user before
  it reads anything, and hands the parent ends of the child's pipes to the supervisor over the
  socket. A fork costs about a millisecond; an interpreter start costs fifteen.
- exec: `stub.py REPLY_FD`, started per job by the supervisor already as the candidate user.

Either way the process is new for each job and never used again. Everything before `exec` of the
program is ours; after it the candidate owns this process, so nothing that decides the verdict
lives here. Protocol (frames, see codec): requests come in on one pipe (the job first, then calls);
the load report and one reply per call go out on another. Imports are builtins only.
"""

import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import codec  # noqa: E402

sys.path.remove(HERE)


def _limit(kind: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(kind, (soft, soft if hard is None else hard))


def apply_limits(limits: dict) -> None:
    mb = 1024 * 1024
    _limit(resource.RLIMIT_AS, limits["memory_mb"] * mb)
    _limit(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)  # SIGXCPU, then SIGKILL
    _limit(resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb)
    _limit(resource.RLIMIT_NPROC, limits["processes"])
    _limit(resource.RLIMIT_NOFILE, 256)
    _limit(resource.RLIMIT_CORE, 0)
    try:  # when the container runs short of memory, the OOM killer takes the candidate first
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def serve(requests_fd: int, replies_fd: int) -> None:
    """The candidate's whole life: receive the job, load the program, answer calls until EOF."""
    # Move the protocol off the standard descriptors so `input()` and `print()` cannot touch it.
    requests = os.fdopen(os.dup(requests_fd), "rb")
    replies = os.fdopen(os.dup(replies_fd), "wb")
    os.close(replies_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if requests_fd != 0:
        os.close(requests_fd)

    def send(message: dict) -> None:
        codec.write_frame(replies, codec.pack_untrusted(message))

    def receive() -> dict | None:
        payload = codec.read_frame(requests, 1 << 30)
        return None if payload is None else codec.unpack_trusted(payload)

    job = receive()
    if job is None:
        return
    apply_limits(job["limits"])

    namespace: dict = {}
    try:
        exec(compile(job["program"], "<candidate>", "exec"), namespace)  # noqa: S102 (sandboxed)
    except BaseException as exc:  # SystemExit at load is a load failure too
        send({"load": "error", "detail": f"{type(exc).__name__}: {exc}"[:2000]})
        return
    names = [k for k, v in list(namespace.items()) if type(k) is str and callable(v)][:10_000]
    send({"load": "ok", "names": names})

    mutable = (list, dict, set)
    while (request := receive()) is not None:
        try:
            function = namespace[request["call"]]
            args = [codec.decode(a) for a in request["args"]]
            kwargs = {k: codec.decode(v) for k, v in request["kwargs"].items()}
            result = function(*args, **kwargs)
            # Arguments cross by value; send back the final state of mutable ones so in-place
            # semantics (e.g. a function that sorts its argument) match a same-process harness.
            after = [[i, codec.encode(a)] for i, a in enumerate(args) if type(a) in mutable]
            reply = {"ret": codec.encode(result), "after": after}
        except BaseException as exc:  # the referee decides what a raised exception means
            reply = {"raise": type(exc).__name__, "msg": str(exc)[:2000]}
        sys.stdout.flush()
        send(reply)


def _become_candidate(uid: int, output_fd: int) -> None:
    os.setsid()
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to a plain user: every capability is gone now
    os.chdir("/tmp")


def zygote(sock_fd: int, uid: int) -> None:
    """Fork one fresh candidate per request byte; send back its pid and pipe ends."""
    import signal
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    sock = socket.socket(fileno=sock_fd)
    while sock.recv(1):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sock.close()
                for fd in (req_w, rep_r, out_r):
                    os.close(fd)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _become_candidate(uid, out_w)
                serve(req_r, rep_w)
                sys.stdout.flush()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        for fd in (req_r, rep_w, out_w):
            os.close(fd)
        socket.send_fds(sock, [str(pid).encode()], [req_w, rep_r, out_r])
        for fd in (req_w, rep_r, out_r):
            os.close(fd)


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote(int(sys.argv[2]), int(sys.argv[3]))
    else:
        serve(0, int(sys.argv[1]))
