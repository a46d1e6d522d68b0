"""The gateway against a hostile agent: every bound of `GatewayConfig` (body and head sizes, head
and body deadlines, connections in all and per session, refusal records) and the prompt bounds
(the model's context, the session's prompt budget), each on a real gateway over its real socket,
with hand-made requests where a well-behaved client could not send them. A fake backend stands in
for the model where generation is beside the point; the tiny random model where it is not."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from agent.gateway import Budget, Gateway, GatewayConfig
from agent.gateway.meter import PromptMeter
from agent.policy.backend import Generation
from agent.policy.tiny import TinyModelConfig, byte_tokenizer, tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.scaffold.llm_client import LLM, LLMBudgetExhausted, LLMError

FAST = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "batch_window_s": 0.0}


class FakeBackend:
    """Answers "ok" (one token) per row at once, except rows starting with "block", which wait
    for `release`. No tokenizer: prompts are counted by bytes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = threading.Semaphore(0)  # one release per blocked generate entered
        self.calls: list[list[str]] = []

    def generate(self, prompts: Sequence[str], config, perturbation=None, member_of_row=None):
        self.calls.append(list(prompts))
        if any(p.startswith("block") for p in prompts):
            self.blocked.release()
            assert self.release.wait(30)
        return [Generation("ok", 1, "length") for _ in prompts]


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    backend = FakeBackend()
    yield backend
    backend.release.set()


def connect(gateway: Gateway) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(gateway.socket_path)
    return sock


def head(token: str, length: int | str, path: str = "/v1/completions", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode("latin-1")  # what http.server decodes headers as


def answer(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def completion(prompt: str, **fields) -> bytes:
    return json.dumps({"prompt": prompt, "max_tokens": 4, **fields}).encode()


def dropped_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the gateway closes `sock` (None: still open after `seconds`)."""
    sock.settimeout(seconds)
    started = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def settled_threads(seconds: float = 2.0) -> int:
    """Handler threads once the ones finishing their answers have ended."""
    deadline = time.monotonic() + seconds
    while handler_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    return handler_threads()


# -- sizes ------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_a_413_before_it_is_read(fake: FakeBackend) -> None:
    """A 10 MB Content-Length is answered at once, with 100 bytes of the body sent."""
    with Gateway(fake, GatewayConfig(max_body_bytes=100_000, **FAST)) as gateway:
        token = gateway.open_session("big", Budget())
        sock = connect(gateway)
        sock.sendall(head(token, 10_000_000) + b"x" * 100)
        sock.settimeout(2)
        status, body = answer(sock)
        record = gateway.close_session(token)
    assert status == 413 and "over this gateway's limit of 100000" in body["error"]["message"]
    (refused,) = record.calls
    assert refused.body_bytes == 10_000_000 and refused.request == {} and refused.prompts == []
    assert fake.calls == []


def test_the_client_gets_the_413_of_a_body_it_could_not_finish_sending(fake: FakeBackend) -> None:
    with Gateway(fake, GatewayConfig(max_body_bytes=100_000, **FAST)) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("big", Budget()))
        with pytest.raises(LLMError, match="over this gateway's limit") as error:
            llm.complete("x" * 4_000_000, max_tokens=2)
    assert error.value.status == 413


def test_a_head_over_the_limit_is_a_431(fake: FakeBackend) -> None:
    with Gateway(fake, GatewayConfig(max_header_bytes=2048, **FAST)) as gateway:
        token = gateway.open_session("head", Budget())
        sock = connect(gateway)
        sock.sendall(head(token, 2, extra="X-Pad: " + "p" * 4000 + "\r\n") + b"{}")
        status, body = answer(sock)
        assert status == 431 and "2048" in body["error"]["message"]
        assert LLM(gateway.socket_path, token).complete("fine", max_tokens=1) == ["ok"]


@pytest.mark.parametrize(
    ("length", "status"),
    [
        ("²", 400),
        ("¹²", 400),
        ("-1", 400),
        ("1e3", 400),
        ("9" * 5000, 413),
        ("10\r\nContent-Length: 11", 400),
    ],
)
def test_a_malformed_content_length_is_answered_never_a_traceback(
    fake: FakeBackend, capfd: pytest.CaptureFixture, length: str, status: int
) -> None:
    """`²` is a digit to `str.isdigit`, not to `int`; 5000 digits are over `int()`'s limit;
    two different lengths make the body's end ambiguous."""
    with Gateway(fake, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("cl", Budget())
        sock = connect(gateway)
        sock.sendall(head(token, length) + b"{}")
        sock.settimeout(5)
        got, body = answer(sock)
        assert LLM(gateway.socket_path, token).complete("still served", max_tokens=1) == ["ok"]
    assert got == status and "error" in body
    assert "Traceback" not in capfd.readouterr().err


def test_json_nested_past_the_parser_is_a_400(fake: FakeBackend) -> None:
    with Gateway(fake, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("deep", Budget())
        sock = connect(gateway)
        raw = b"[" * 100_000
        sock.sendall(head(token, len(raw)) + raw)
        status, body = answer(sock)
    assert status == 400 and "nested too deeply" in body["error"]["message"]


# -- deadlines --------------------------------------------------------------------------------
def test_a_half_sent_head_is_dropped_at_the_head_deadline(fake: FakeBackend) -> None:
    """Also when it trickles in a byte at a time (each byte would reset a socket timeout)."""
    with Gateway(fake, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("slow", Budget())
        stalled = connect(gateway)
        stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nAuthor")
        trickling = connect(gateway)
        started = time.monotonic()
        closed = False
        for byte in head(token, 2).decode():
            try:
                trickling.sendall(byte.encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        assert closed and time.monotonic() - started < 2
        assert dropped_within(stalled, 3) is not None
        assert LLM(gateway.socket_path, token).complete("fine", max_tokens=1) == ["ok"]


def test_a_half_sent_body_is_dropped_at_the_body_deadline_and_recorded(
    fake: FakeBackend,
) -> None:
    with Gateway(fake, GatewayConfig(max_session_calls=1, **FAST)) as gateway:
        token = gateway.open_session("slow", Budget())
        sock = connect(gateway)
        sock.sendall(head(token, 1000) + b'{"prompt": "')
        assert dropped_within(sock, 3) is not None
        # its place in flight is given back (the client retries until it is): the session's
        # one call goes through
        assert LLM(gateway.socket_path, token).complete("fine", max_tokens=1) == ["ok"]
        record = gateway.close_session(token)
    (refused,) = [c for c in record.calls if c.error and "did not arrive" in c.error]
    assert "did not arrive: 12 of 1000 bytes within 0.5s" in refused.error
    assert refused.body_bytes == 1000 and refused.request == {}


def test_an_idle_keep_alive_connection_is_dropped_at_the_head_deadline(
    fake: FakeBackend,
) -> None:
    with Gateway(fake, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("idle", Budget())
        sock = connect(gateway)
        sock.sendall(head(token, len(completion("a"))) + completion("a"))
        assert answer(sock)[0] == 200
        assert dropped_within(sock, 3) is not None


# -- connections ------------------------------------------------------------------------------
def test_at_the_connection_cap_the_oldest_half_sent_head_is_evicted(fake: FakeBackend) -> None:
    """Twenty half-sent heads against a cap of eight: the handler threads never pass the cap
    (each newcomer evicts the oldest stalled connection), and a real call still gets in."""
    config = GatewayConfig(max_connections=8, header_timeout_s=30, batch_window_s=0.0)
    with Gateway(fake, config) as gateway:
        token = gateway.open_session("s", Budget())
        before = handler_threads()
        stalled = [connect(gateway) for _ in range(20)]
        for sock in stalled:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\n")
        time.sleep(0.3)
        assert handler_threads() - before <= 8
        assert LLM(gateway.socket_path, token).complete("in", max_tokens=1) == ["ok"]
        assert gateway.usage()["connections_evicted"] >= 1
        assert dropped_within(stalled[0], 3) is not None  # the oldest went first
        assert dropped_within(stalled[-1], 0.5) is None  # the newest still waits
        assert handler_threads() - before <= 8


def test_at_the_connection_cap_with_every_call_busy_a_new_one_is_a_fast_503(
    fake: FakeBackend,
) -> None:
    config = GatewayConfig(max_connections=3, batch_window_s=0.0, header_timeout_s=5)
    with Gateway(fake, config) as gateway:
        busy = [gateway.open_session(f"busy{i}", Budget()) for i in range(3)]
        socks = [connect(gateway) for _ in busy]
        for sock, token in zip(socks, busy, strict=True):
            sock.sendall(head(token, len(completion("block"))) + completion("block"))
        assert fake.blocked.acquire(timeout=10)  # one generating, the others queued behind it
        time.sleep(0.3)
        threads = handler_threads()
        extra = connect(gateway)
        started = time.monotonic()
        try:  # the answer may come (and the socket close) before the request is sent
            extra.sendall(head(busy[0], len(completion("x"))) + completion("x"))
        except BrokenPipeError:
            pass  # as the agents' client does: the answer already sent says why
        status, body = answer(extra)
        assert time.monotonic() - started < 1 and handler_threads() == threads
        assert status == 503 and body["error"]["code"] == "overloaded"
        fake.release.set()
        assert [answer(sock)[0] for sock in socks] == [200, 200, 200]


def test_a_session_past_its_calls_in_flight_is_a_503_and_the_client_retries(
    fake: FakeBackend,
) -> None:
    with Gateway(fake, GatewayConfig(max_session_calls=2, **FAST)) as gateway:
        token = gateway.open_session("greedy", Budget())
        other = gateway.open_session("other", Budget())
        socks = [connect(gateway) for _ in range(2)]
        for sock in socks:
            sock.sendall(head(token, len(completion("block"))) + completion("block"))
        assert fake.blocked.acquire(timeout=10)  # one generating, the other queued behind it
        time.sleep(0.3)
        third = connect(gateway)
        third.sendall(head(token, len(completion("x"))) + completion("x"))
        status, body = answer(third)
        assert status == 503 and body["error"]["code"] == "overloaded"
        others = connect(gateway)  # another session is admitted (and queued behind the block)
        others.sendall(head(other, len(completion("other"))) + completion("other"))
        late = []
        retrying = threading.Thread(
            target=lambda: late.append(LLM(gateway.socket_path, token).complete("x"))
        )
        retrying.start()
        time.sleep(0.5)
        assert not late  # still retrying: both places are held
        fake.release.set()
        retrying.join(10)
        assert late == [["ok"]]
        assert answer(others)[0] == 200 and [answer(s)[0] for s in socks] == [200, 200]
        record = gateway.close_session(token)
    assert "requests in flight" in record.calls[0].error


# -- records ----------------------------------------------------------------------------------
def test_refused_calls_are_recorded_without_their_bodies_and_bounded(fake: FakeBackend) -> None:
    """A spent session's refused calls used to keep their whole bodies (ten 4 MB prompts: 400 MB
    of host memory); now a size and a reason each, and only the first few."""
    config = GatewayConfig(max_refusal_records=3, **FAST)
    with Gateway(fake, config) as gateway:
        token = gateway.open_session("spent", Budget(calls=1))
        llm = LLM(gateway.socket_path, token)
        llm.complete("first", max_tokens=1)
        big = "p" * 200_000
        for _ in range(5):
            with pytest.raises(LLMBudgetExhausted):
                llm.complete(big, max_tokens=1)
        record = gateway.close_session(token)
    first, *refused = record.calls
    assert first.error is None and first.prompts == ["first"]
    assert len(refused) == 3 and record.refused_calls == 5
    for call in refused:
        assert call.request == {} and call.prompts == [] and call.texts == []
        assert call.body_bytes > 200_000 and "budget" in call.error


# -- prompts ----------------------------------------------------------------------------------
class CountingTokenizer:
    """The byte tokenizer, counting the characters it was asked to tokenize."""

    def __init__(self) -> None:
        self.inner = byte_tokenizer()
        self.characters = 0

    def get_vocab(self) -> dict[str, int]:
        return self.inner.get_vocab()

    def __call__(self, text: str):
        self.characters += len(text)
        return self.inner(text)


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0, max_position_embeddings=64))
    return TransformersBackend(model, tokenizer)


def test_prompts_are_capped_by_the_model_context(tiny: TransformersBackend) -> None:
    """The tiny model has 64 positions: a longer prompt is a 400 (it used to be generated from,
    past the model's positions), and one that fits has max_tokens cut to what is left."""
    with Gateway(tiny, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("long", Budget(tokens=8))
        llm = LLM(gateway.socket_path, token)
        with pytest.raises(LLMError, match="at least 100 tokens; the model's context is 64"):
            llm.complete("x" * 100, max_tokens=1)
        with pytest.raises(LLMError, match="at least 64 tokens") as error:
            llm.complete("y" * 64, max_tokens=1)  # exactly the context: no room to generate
        assert error.value.status == 400
        texts = llm.complete("z" * 60, max_tokens=8)
        record = gateway.close_session(token)
    assert llm.last_usage["prompt_tokens"] == 60
    assert llm.last_usage["completion_tokens"] <= 4  # 64 - 60 left in the context
    assert len(texts) == 1 and record.calls[-1].prompt_tokens == 60
    assert [c.error is None for c in record.calls] == [False, False, True]


def test_a_huge_prompt_is_refused_from_its_length_without_tokenizing(
    tiny: TransformersBackend,
) -> None:
    """A 4,000,000-character prompt under a budget of 8 tokens used to be admitted."""
    counting = CountingTokenizer()
    meter = PromptMeter(counting, PromptMeter.of(tiny).context_tokens)
    assert meter.context_tokens == 64
    config = GatewayConfig(max_body_bytes=8_000_000, **FAST)
    with Gateway(tiny, config, meter=meter) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("huge", Budget(tokens=8)))
        started = time.monotonic()
        with pytest.raises(LLMError, match="context is 64 tokens") as error:
            llm.complete("x" * 4_000_000, max_tokens=8)
    assert error.value.status == 400 and time.monotonic() - started < 5
    assert counting.characters == 0


def test_the_meter_knows_the_context_only_with_a_tokenizer(tiny: TransformersBackend) -> None:
    """Bytes over-count tokens, so a backend without a tokenizer is counted by bytes (for the
    prompt budget) but never refused for its context."""
    assert (PromptMeter.of(tiny).context_tokens, PromptMeter.of(tiny).count("hello")) == (64, 5)
    bytes_meter = PromptMeter.of(FakeBackend())
    assert bytes_meter.context_tokens is None and bytes_meter.count("héllo") == 7
    assert bytes_meter.count("x" * 100, limit=10) > 10


def test_prompt_tokens_are_charged_to_the_session_budget(tiny: TransformersBackend) -> None:
    with Gateway(tiny, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("p", Budget(prompt_tokens=20))
        llm = LLM(gateway.socket_path, token)
        llm.complete("hello", max_tokens=1, n=2)  # 5 tokens, two rows: 10
        with pytest.raises(LLMBudgetExhausted, match="prompt token budget exhausted: 10 of 20"):
            llm.complete("eleven char", max_tokens=1)
        record = gateway.close_session(token)
    assert record.prompt_tokens_used == 10 and record.exhausted


# -- the whole attack -------------------------------------------------------------------------
def test_a_hostile_session_leaves_the_host_and_the_other_sessions_unharmed(
    tiny: TransformersBackend,
) -> None:
    """One session opens 50 half-sent uploads, sends ten 4 MB bodies, huge prompts and bad
    Content-Lengths; another session's calls meanwhile complete within a bound, the handler
    threads stay within the session's cap, and after the deadlines everything is gone."""
    config = GatewayConfig(header_timeout_s=1.0, body_timeout_s=1.0, batch_window_s=0.0)
    with Gateway(tiny, config) as gateway:
        hostile = gateway.open_session("hostile", Budget(tokens=8))
        victim = LLM(gateway.socket_path, gateway.open_session("victim", Budget()))
        victim.complete("warm up", max_tokens=2)
        before = settled_threads()
        uploads = [connect(gateway) for _ in range(50)]
        for sock in uploads:  # under the body limit, so that they are read, and never finished
            sock.sendall(head(hostile, 900_000) + b'{"prompt": "')
        big = completion("x" * 4_000_000)
        flood = [
            threading.Thread(target=_send_quietly, args=(gateway, head(hostile, len(big)) + big))
            for _ in range(10)
        ]
        huge = completion("y" * 900_000)
        flood += [
            threading.Thread(target=_send_quietly, args=(gateway, head(hostile, len(huge)) + huge))
            for _ in range(10)
        ]
        flood += [
            threading.Thread(target=_send_quietly, args=(gateway, head(hostile, bad) + b"{}"))
            for bad in ("²", "-5", "9" * 5000)
        ]
        for thread in flood:
            thread.start()
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            assert len(victim.complete("def f(x):", max_tokens=4)) == 1
            latencies.append(time.monotonic() - started)
        for thread in flood:
            thread.join(30)
        # the session's places in flight (uploads not yet past their deadline), and a thread
        # that may be writing some answer at this instant
        held = handler_threads() - before
        time.sleep(config.body_timeout_s)
        after = settled_threads() - before
        record = gateway.close_session(hostile)
    assert max(latencies) < 5, latencies
    assert held <= config.max_session_calls + 1, held
    assert after == 0 and all(dropped_within(sock, 1) is not None for sock in uploads)
    assert record.calls_used == 0 and all(c.request == {} for c in record.calls)


def _send_quietly(gateway: Gateway, data: bytes) -> None:
    """Send a whole request and read its answer, whatever the gateway does with it."""
    try:
        sock = connect(gateway)
        try:
            sock.sendall(data)
        except OSError:
            pass
        answer(sock)
    except (OSError, http.client.HTTPException, ValueError):
        pass


def test_a_refused_request_s_body_is_read_before_the_answer(fake: FakeBackend) -> None:
    """A refusal known from the head alone (an unknown path) waits for a body within the size
    cap: a client whose body is still on its way reads the answer instead of a broken pipe."""
    with Gateway(fake, GatewayConfig(**FAST)) as gateway:
        token = gateway.open_session("late-body", Budget())
        sock = connect(gateway)
        sock.sendall(head(token, 2000, path="/v1/embeddings"))
        time.sleep(0.2)  # the server has the head; the body is still coming
        sock.sendall(b"{" + b" " * 1998 + b"}")
        status = sock.recv(4096).split(b"\r\n", 1)[0]
        sock.close()
    assert status == b"HTTP/1.1 404 Not Found"
