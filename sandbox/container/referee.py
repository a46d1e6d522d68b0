"""The referee: runs the trusted tests against the candidate, in a process the candidate cannot touch.

Forked from the supervisor and switched to its own user, so the candidate (another user) can neither
signal it, read its memory, nor see the test code. The tests call the program's functions through
`CandidateFunction` proxies; values come back as plain data rebuilt here from built-in types, so
`__eq__` tricks, patched builtins and fake output in the candidate have nothing to act on.

Reports go to the supervisor as JSON lines on a pipe only the referee holds:
{"load": ...}, then {"check": i, "outcome": ..., "detail": ...} per check, then {"done": true}.
A check may call `keep(value)` to send plain data back with the verdict ({"kept": value}): how an
agent's scaffold hands its answer to the host without the host ever running the agent's code.
"""

from __future__ import annotations

import builtins
import json
import os
import traceback

import codec

REPLY_LIMIT = 16 * 1024 * 1024  # bytes in one reply from the candidate


class CandidateDied(BaseException):
    """The candidate process is gone. BaseException so a test's `except Exception` cannot hide it."""


class CandidateProtocolError(BaseException):
    """The candidate broke the call protocol (garbage, oversized reply)."""


class CandidateException(Exception):
    """An exception the candidate raised whose type is not a builtin one."""


# Exceptions that steer the caller's control flow rather than report an error: rebuilt as
# themselves, a StopIteration raised by the candidate inside `all(map(candidate, xs))` would end the
# test's own iteration early and the assert would pass on what was never checked.
CONTROL_FLOW = (StopIteration, StopAsyncIteration)


def _rebuild_exception(name: str, message: str) -> BaseException:
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, CONTROL_FLOW):
        try:
            return cls(message)
        except Exception:
            pass
    # SystemExit, KeyboardInterrupt, StopIteration and custom classes all become an ordinary
    # exception here.
    return CandidateException(f"{name}: {message}")


class Channel:
    """The referee's end of the call pipes to the candidate."""

    def __init__(self, to_candidate: int, from_candidate: int) -> None:
        self._out = os.fdopen(to_candidate, "wb")
        self._in = os.fdopen(from_candidate, "rb")

    def send(self, message: dict) -> None:
        try:
            codec.write_frame(self._out, codec.pack_trusted(message))
        except (BrokenPipeError, OSError) as exc:
            raise CandidateDied("the program's process has exited") from exc

    def receive(self) -> dict:
        try:
            payload = codec.read_frame(self._in, REPLY_LIMIT)
            if payload is None:
                raise CandidateDied("the program's process has exited")
            return codec.unpack_untrusted(payload)
        except codec.CodecError as exc:
            raise CandidateProtocolError(str(exc)) from None


class CandidateFunction:
    """Calls a top-level function of the program in the candidate process, by value."""

    __slots__ = ("_channel", "_name")

    def __init__(self, channel: Channel, name: str) -> None:
        self._channel = channel
        self._name = name

    def __repr__(self) -> str:
        return f"<candidate function {self._name}>"

    def __call__(self, *args: object, **kwargs: object) -> object:
        request = {
            "call": self._name,
            "args": [codec.encode(a) for a in args],
            "kwargs": {str(k): codec.encode(v) for k, v in kwargs.items()},
        }
        self._channel.send(request)
        reply = self._channel.receive()
        if "raise" in reply:
            raise _rebuild_exception(str(reply["raise"])[:200], str(reply.get("msg", ""))[:2000])
        try:
            result = codec.decode(reply["ret"])
            for index, state in reply.get("after") or ():
                _update_in_place(args[index], codec.decode(state))
        except (KeyError, TypeError, IndexError, codec.CodecError) as exc:
            raise CandidateProtocolError(f"malformed reply: {exc}") from None
        return result


def _update_in_place(target: object, state: object) -> None:
    if type(target) is not type(state):
        raise codec.CodecError("argument changed type")
    if type(target) is list:
        target[:] = state
    elif type(target) is dict or type(target) is set:
        target.clear()
        target.update(state)


def _describe(exc: BaseException, source: str) -> str:
    if isinstance(exc, AssertionError):
        tb = traceback.extract_tb(exc.__traceback__)
        lines = source.splitlines()
        for frame in reversed(tb):
            if frame.filename.startswith("<check") and frame.lineno and frame.lineno <= len(lines):
                where = lines[frame.lineno - 1].strip()
                return f"AssertionError: {where}"[:500]
        return f"AssertionError: {exc}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def run(job: dict, to_candidate: int, from_candidate: int, report_fd: int) -> None:
    report = os.fdopen(report_fd, "wb")

    def say(message: dict) -> None:
        report.write(json.dumps(message).encode() + b"\n")
        report.flush()

    channel = Channel(to_candidate, from_candidate)
    # The program starts loading in the candidate while we run setup here.
    try:
        channel.send({"program": job["program"], "limits": job["limits"]})
    except CandidateDied:
        pass

    def keep(value: object) -> None:
        """Hand a plain-data value back to the host with the verdict (e.g. an agent's answer)."""
        try:
            say({"kept": value})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"keep() takes JSON-serializable data: {exc}") from None

    namespace: dict = {"__name__": "__referee__", "keep": keep}
    try:
        exec(compile(job["setup"], "<setup>", "exec"), namespace)
    except BaseException as exc:
        say({"setup_error": f"{type(exc).__name__}: {exc}"[:2000]})
        return
    try:
        loaded = channel.receive()
    except (CandidateDied, CandidateProtocolError) as exc:
        say({"load": "error", "detail": f"no load report from the program ({exc})"})
        return
    if loaded.get("load") != "ok":
        say(
            {
                "load": "error",
                "detail": str(loaded.get("detail", "the program did not load"))[:2000],
            }
        )
        return
    names = loaded.get("names")
    names = [n for n in names if type(n) is str] if type(names) is list else []
    entry = job.get("entry_point")
    if entry and entry not in names:
        say({"load": "error", "detail": f"the program defines no function {entry!r}"})
        return
    for name in names:
        if name not in namespace and not hasattr(builtins, name):
            namespace[name] = CandidateFunction(channel, name)
    if entry:
        namespace[entry] = namespace["candidate"] = CandidateFunction(channel, entry)
    say({"load": "ok"})

    for index, source in enumerate(job["checks"]):
        try:
            exec(compile(source, f"<check {index}>", "exec"), namespace)
            outcome, detail = "passed", ""
        except AssertionError as exc:
            outcome, detail = "failed", _describe(exc, source)
        except CandidateDied as exc:
            say(
                {
                    "check": index,
                    "outcome": "error",
                    "detail": f"CandidateDied: {exc}",
                    "died": True,
                }
            )
            return
        except BaseException as exc:  # the program's exceptions, protocol errors, test errors
            outcome, detail = "error", _describe(exc, source)
        say({"check": index, "outcome": outcome, "detail": detail})
    say({"done": True})
