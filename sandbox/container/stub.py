"""Candidate-side main: load the untrusted program, then answer the referee's calls.

Started by the supervisor as the candidate user in a fresh `python3 -I` before its job arrives
(so interpreter start-up overlaps the previous verdict's round trip). Everything before `exec` of
the program is ours; after it, the candidate owns this process, which is why nothing that decides
the verdict lives here.

Protocol (frames, see codec): fd 0 brings the job, then call requests; the fd named by argv[1]
takes the load report, then one reply per call. Imports are builtins only: start-up is per job. The program's stdout/stderr go to the supervisor's capture pipe.
"""

import os
import resource
import sys


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


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import codec

    sys.path.remove(here)

    # Move the protocol off the standard descriptors so `input()` and `print()` cannot touch it.
    requests = os.fdopen(os.dup(0), "rb")
    reply_fd = int(sys.argv[1])
    replies = os.fdopen(os.dup(reply_fd), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.close(reply_fd)

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


if __name__ == "__main__":
    main()
