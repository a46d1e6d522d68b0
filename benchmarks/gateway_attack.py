"""The gateway under a hostile session: host memory and threads before, during and after the
attack, and another session's call latency meanwhile.

A real `Gateway` in this process, serving the tiny random model (1024 positions, byte tokenizer)
with its default bounds. One agent's token attacks it with raw sockets (no thread of ours per
connection): uploads whose body never finishes, whole bodies of several MB to a session whose
budget is spent, prompts far over the model's context under a budget of 8 tokens, and malformed
`Content-Length`s. A victim session calls `complete` in a loop all along. "after" is measured
once the gateway's deadlines have passed, with the attacker still holding its sockets open: what
it holds then is what the gateway kept by itself.

    python benchmarks/gateway_attack.py [--json PATH] [--phases half_sent,big_bodies,...]

RSS is this process's VmRSS (/proc/self/status); threads exclude the benchmark's own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import torch
from figures import print_figures

from agent.gateway import Budget, Gateway, GatewayConfig
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.scaffold.llm_client import LLM, LLMError

PHASES = ("half_sent", "big_bodies", "huge_prompts", "bad_length")
OURS = "bench-"  # name prefix of the benchmark's threads


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gateway_threads() -> int:
    return sum(not t.name.startswith(OURS) for t in threading.enumerate())


def head(token: str, length: int | str) -> bytes:
    return (
        f"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode("latin-1")


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(120)
    sock.connect(path)
    return sock


def exchange(path: str, data: bytes) -> int:
    """Send a whole request (as far as the gateway reads it) and return its status (0: none)."""
    try:
        sock = connect(path)
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused before the body was read: the answer is waiting
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        sock.close()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0


class Sampler:
    """Peak RSS and thread count, every 20 ms, while running."""

    def __init__(self) -> None:
        self.peak_rss, self.peak_threads = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=OURS + "sampler")

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_rss = max(self.peak_rss, rss_mb())
            self.peak_threads = max(self.peak_threads, gateway_threads())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Victim:
    """Another session calling `complete` in a loop; its latencies."""

    def __init__(self, llm: LLM) -> None:
        self.llm, self.latencies, self.errors = llm, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=OURS + "victim")

    def call(self) -> float:
        started = time.monotonic()
        self.llm.complete("def f(x):\n", max_tokens=4)
        return time.monotonic() - started

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.latencies.append(self.call())
            except LLMError as exc:
                self.errors.append(str(exc))
            time.sleep(0.02)

    def __enter__(self) -> Victim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def attack(gateway: Gateway, phases: list[str], args: argparse.Namespace) -> dict:
    """Run the phases at once; returns the statuses and the sockets held open (half-sent)."""
    path = gateway.socket_path
    # One token per phase, so that each phase meets its own bound rather than the session's
    # cap on requests in flight, which the uploads fill.
    uploads = gateway.open_session("hostile:uploads", Budget())
    spent = gateway.open_session("hostile:spent", Budget(calls=1))
    LLM(path, spent).complete("spend it", max_tokens=1)
    small = gateway.open_session("hostile:small", Budget(tokens=8))
    held: list[socket.socket] = []
    requests: list[tuple[str, bytes]] = []
    if "half_sent" in phases:
        for _ in range(args.uploads):  # under the default body limit: these are read, slowly
            sock = connect(path)
            sock.sendall(head(uploads, 900_000) + b'{"prompt": "')
            held.append(sock)
    if "big_bodies" in phases:
        body = json.dumps({"prompt": "x" * args.body_bytes, "max_tokens": 1}).encode()
        requests += [("big_bodies", head(spent, len(body)) + body)] * args.bodies
    if "huge_prompts" in phases:
        body = json.dumps({"prompt": "y" * 900_000, "max_tokens": 8}).encode()
        requests += [("huge_prompts", head(small, len(body)) + body)] * args.bodies
    if "bad_length" in phases:
        requests += [("bad_length", head(small, bad) + b"{}") for bad in ("²", "-5", "9" * 5000)]
    statuses: dict[str, Counter] = {}
    lock = threading.Lock()

    def send(phase: str, data: bytes) -> None:
        status = exchange(path, data)
        with lock:
            statuses.setdefault(phase, Counter())[status] += 1

    threads = [
        threading.Thread(target=send, args=request, name=f"{OURS}attack-{i}")
        for i, request in enumerate(requests)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"statuses": statuses, "held": held, "sessions": (uploads, spent, small)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"of {', '.join(PHASES)}")
    parser.add_argument("--uploads", type=int, default=50, help="half-sent uploads held open")
    parser.add_argument("--bodies", type=int, default=10, help="requests per body phase")
    parser.add_argument("--body-bytes", type=int, default=4_000_000, help="big bodies' prompt")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    torch.set_num_threads(1)
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    backend = TransformersBackend(model, tokenizer)
    config = GatewayConfig(batch_window_s=0.0)
    wait_s = getattr(config, "body_timeout_s", 10.0) + 1.5  # absent before the bounds
    with Gateway(backend, config) as gateway:
        victim = Victim(LLM(gateway.socket_path, gateway.open_session("victim", Budget())))
        baseline = [victim.call() for _ in range(5)]
        rss_before, threads_before = rss_mb(), gateway_threads()
        with Sampler() as sampler, victim:
            started = time.monotonic()
            result = attack(gateway, phases, args)
            attack_s = time.monotonic() - started
            time.sleep(1.0)  # the victim keeps calling while the uploads are held
        during = list(victim.latencies)
        time.sleep(wait_s)  # past the gateway's deadlines; the attacker still holds its sockets
        rss_after, threads_after = rss_mb(), gateway_threads()
        records = [gateway.close_session(token) for token in result["sessions"]]
        for sock in result["held"]:
            sock.close()
    kept = sum(
        len(json.dumps(c.request)) + sum(map(len, c.prompts)) for r in records for c in r.calls
    )
    figures = {
        "phases": ",".join(phases),
        "RSS before (MB)": round(rss_before, 1),
        "RSS peak during (MB)": round(sampler.peak_rss, 1),
        "RSS after (MB)": round(rss_after, 1),
        "threads before": threads_before,
        "threads peak during": sampler.peak_threads,
        "threads after": threads_after,
        "victim latency before, median (s)": round(statistics.median(baseline), 3),
        "victim latency during, median (s)": round(statistics.median(during), 3)
        if during
        else None,
        "victim latency during, max (s)": round(max(during), 3) if during else None,
        "victim calls during": len(during),
        "victim errors during": len(victim.errors),
        "attack seconds": round(attack_s, 2),
        "hostile calls refused": sum(getattr(r, "refused_calls", 0) for r in records),
        "hostile records kept": sum(len(r.calls) for r in records),
        "hostile record bytes (bodies + prompts)": kept,
    }
    for phase, counts in result["statuses"].items():
        figures[f"{phase} statuses"] = " ".join(f"{s}x{n}" for s, n in sorted(counts.items()))
    print_figures("gateway under a hostile session", figures, digits=None)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
