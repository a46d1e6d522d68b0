"""The LLM gateway end to end: the real client over the real Unix socket, the real batched
transformers backend on the tiny random model (and SmolLM2-135M for one greedy check), budgets,
transcripts, auth, malformed input, the external route against a local fake server, shutdown."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from populations import random_population

from agent.gateway import (
    Budget,
    ExternalEndpoint,
    Gateway,
    GatewayConfig,
    tokenizer_chat_template,
)
from agent.policy.backend import GenerationConfig
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
from agent.scaffold import llm_client
from agent.scaffold.llm_client import LLM, LLMBudgetExhausted, LLMError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: a tiny model, one thread

PROMPTS = ["def f(x):\n", "hello", "a longer prompt than the others", "x", "ab", "zz top"]
MAX_ROWS = 64  # GatewayConfig's default, which is also the batch size the gateway asks for


class RecordingBackend:
    """The real backend, with every `generate` call's arguments recorded."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.inner = backend
        self.tokenizer = backend.tokenizer
        self.calls: list[dict] = []

    def generate(self, prompts, config, perturbation=None, member_of_row=None, on_done=None):
        self.calls.append(
            {
                "prompts": list(prompts),
                "config": config,
                "perturbation": perturbation,
                "member_of_row": None if member_of_row is None else list(member_of_row),
            }
        )
        return self.inner.generate(prompts, config, perturbation, member_of_row, on_done)


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    return TransformersBackend(model, tokenizer)


@pytest.fixture
def recording(backend: TransformersBackend) -> RecordingBackend:
    return RecordingBackend(backend)


def direct(backend, prompts: Sequence[str], max_tokens: int, **kwargs) -> list[str]:
    """What the backend generates for these prompts without the gateway."""
    config = GenerationConfig(max_new_tokens=max_tokens, batch_size=MAX_ROWS)
    return [g.text for g in backend.generate(list(prompts), config, **kwargs)]


def raw_request(gateway: Gateway, method: str, path: str, body: bytes | None, token: str | None):
    """(status, parsed JSON) of one hand-made request over the socket."""
    connection = llm_client._UnixConnection(gateway.socket_path, 30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    answer = (response.status, json.loads(response.read()))
    connection.close()
    return answer


def run_together(calls: list) -> list:
    """Run the callables in threads released at once; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# -- configuration -----------------------------------------------------------------------------
def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="batch_window_s"):
        GatewayConfig(batch_window_s=-1)
    with pytest.raises(ValueError, match="max_batch_rows"):
        GatewayConfig(max_batch_rows=0)
    with pytest.raises(ValueError, match="default_max_tokens"):
        GatewayConfig(max_tokens_cap=10, default_max_tokens=20)
    with pytest.raises(ValueError, match="Budget.tokens"):
        Budget(tokens=-1)
    with pytest.raises(ValueError, match="base_url"):
        ExternalEndpoint("localhost:8000", "m")


def test_socket_path_over_the_unix_limit_is_refused(recording: RecordingBackend) -> None:
    long_dir = "/tmp/" + "d" * 120
    with pytest.raises(ValueError, match="Unix socket limit"):
        Gateway(recording, GatewayConfig(socket_dir=long_dir))
    assert not os.path.exists(long_dir)


def test_a_given_socket_dir_is_shared_safely(recording: RecordingBackend) -> None:
    """A live gateway's socket is never taken over; a dead one's stale socket is replaced; the
    caller's folder outlives the gateway."""
    folder = tempfile.mkdtemp(prefix="lineage-gw-test-")
    try:
        with Gateway(recording, GatewayConfig(socket_dir=folder)) as gateway:
            with pytest.raises(FileExistsError, match="another gateway"):
                Gateway(recording, GatewayConfig(socket_dir=folder))
            assert os.path.exists(gateway.socket_path)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(gateway.socket_path)  # bound, never listening: what a killed gateway leaves
        stale.close()
        with Gateway(recording, GatewayConfig(socket_dir=folder)) as again:
            token = again.open_session("a", Budget())
            assert LLM(again.socket_path, token).models() == ["lineage-policy"]
        assert os.path.isdir(folder) and not os.listdir(folder)
    finally:
        shutil.rmtree(folder)


# -- generation through the socket -------------------------------------------------------------
def test_completion_through_the_socket_equals_the_backend(
    backend: TransformersBackend, recording: RecordingBackend
) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("one", Budget()))
        assert llm.complete(PROMPTS[0], max_tokens=10) == direct(backend, PROMPTS[:1], 10)
        assert llm.last_usage["prompt_tokens"] == len(backend.tokenizer(PROMPTS[0])["input_ids"])
        # A list of prompts with n=2: n rows per prompt, prompt-major, like OpenAI's choices.
        texts = llm.complete(PROMPTS[1:3], max_tokens=6, n=2)
        expected = direct(backend, PROMPTS[1:3], 6)
        assert texts == [expected[0], expected[0], expected[1], expected[1]]
        assert recording.calls[-1]["prompts"] == [PROMPTS[1], PROMPTS[1], PROMPTS[2], PROMPTS[2]]
        assert llm.models() == ["lineage-policy"]


def test_stop_and_sampling_settings_reach_the_backend(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("s", Budget()))
        a = llm.complete("hello", max_tokens=12, temperature=0.9, top_p=0.8, seed=5, stop=("q",))
        b = llm.complete("hello", max_tokens=12, temperature=0.9, top_p=0.8, seed=5, stop=("q",))
        assert a == b  # a seed makes sampling reproducible
        config = recording.calls[-1]["config"]
        assert (config.temperature, config.top_p, config.seed, config.stop) == (0.9, 0.8, 5, ("q",))
        assert all("q" not in text for text in a)


def test_chat_is_rendered_by_the_template(
    backend: TransformersBackend, recording: RecordingBackend
) -> None:
    def template(messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with Gateway(recording, GatewayConfig(batch_window_s=0.0), chat_template=template) as gateway:
        token = gateway.open_session("chat", Budget())
        reply = LLM(gateway.socket_path, token).chat(messages, max_tokens=8)
        record = gateway.close_session(token)
    assert reply == direct(backend, [template(messages)], 8)
    assert record.calls[0].prompts == [template(messages)]
    assert record.calls[0].request["messages"] == messages


def test_chat_continues_the_final_assistant_message(
    backend: TransformersBackend, recording: RecordingBackend
) -> None:
    def template(messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    question = [{"role": "user", "content": "add two numbers"}]
    opening = {"role": "assistant", "content": "```python\ndef add("}
    with Gateway(recording, GatewayConfig(batch_window_s=0.0), chat_template=template) as gateway:
        token = gateway.open_session("chat", Budget())
        llm = LLM(gateway.socket_path, token)
        reply = llm.chat([*question, opening], max_tokens=8, continue_final=True)
        record = gateway.close_session(token)
    expected_prompt = template(question) + opening["content"]
    assert record.calls[0].prompts == [expected_prompt]
    assert reply == direct(backend, [expected_prompt], 8)  # the continuation, without the opening


def test_chat_without_a_template_is_a_400(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("chat", Budget()))
        with pytest.raises(LLMError, match="no chat template") as error:
            llm.chat([{"role": "user", "content": "hi"}])
    assert error.value.status == 400
    assert recording.calls == []


# -- batching across sessions ------------------------------------------------------------------
def test_calls_of_many_sessions_share_one_generate_call(
    backend: TransformersBackend, recording: RecordingBackend
) -> None:
    """Six containers' sessions calling at once are served by a single batched `generate`, and
    each gets its own prompt's output (what the backend gives that prompt alone)."""
    with Gateway(recording, GatewayConfig(batch_window_s=1.0)) as gateway:
        clients = [
            LLM(gateway.socket_path, gateway.open_session(f"task-{i}", Budget()))
            for i in range(len(PROMPTS))
        ]
        results = run_together(
            [
                lambda c=c, p=p: c.complete(p, max_tokens=8)
                for c, p in zip(clients, PROMPTS, strict=True)
            ]
        )
        usage = gateway.usage()
    assert len(recording.calls) == 1
    assert sorted(recording.calls[0]["prompts"]) == sorted(PROMPTS)
    assert usage["batches"] == 1 and usage["rows"] == len(PROMPTS)
    assert usage["calls"] == len(PROMPTS)
    alone = [direct(backend, [p], 8) for p in PROMPTS]
    assert results == alone


def test_a_population_of_containers_connecting_at_once_is_served(
    recording: RecordingBackend,
) -> None:
    """200 clients connect in the same instant (an ES population's containers, 8 threads each):
    none is refused, although the kernel's Unix-socket backlog refuses connects beyond it at once
    (EAGAIN) instead of queueing them."""
    with Gateway(recording, GatewayConfig(batch_window_s=0.2)) as gateway:
        token = gateway.open_session("population", Budget())
        results = run_together(
            [lambda: LLM(gateway.socket_path, token).complete("x", max_tokens=1)] * 200
        )
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]


def test_different_decoding_settings_get_separate_calls(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=1.0)) as gateway:
        clients = [
            LLM(gateway.socket_path, gateway.open_session(f"s{i}", Budget())) for i in range(3)
        ]
        run_together(
            [
                lambda: clients[0].complete("a", max_tokens=4),
                lambda: clients[1].complete("b", max_tokens=4, top_p=0.5),  # greedy: top_p moot
                lambda: clients[2].complete("c", max_tokens=5),
            ]
        )
    assert sorted(len(call["prompts"]) for call in recording.calls) == [1, 2]


def test_a_batch_never_exceeds_max_batch_rows(recording: RecordingBackend) -> None:
    """Two 3-row calls with a 4-row limit: the one that does not fit goes in the next batch."""
    with Gateway(recording, GatewayConfig(batch_window_s=1.0, max_batch_rows=4)) as gateway:
        clients = [
            LLM(gateway.socket_path, gateway.open_session(f"s{i}", Budget())) for i in range(2)
        ]
        results = run_together([lambda c=c: c.complete("ab", max_tokens=3, n=3) for c in clients])
    assert [len(call["prompts"]) for call in recording.calls] == [3, 3]
    assert all(call["config"].batch_size == 4 for call in recording.calls)
    assert [len(r) for r in results] == [3, 3]


def test_member_sessions_generate_with_their_perturbation(
    backend: TransformersBackend, recording: RecordingBackend
) -> None:
    perturbation = random_population(backend.model, members=3, sigma=0.5, rank=2)
    prompt = PROMPTS[0]
    with Gateway(recording, GatewayConfig(batch_window_s=1.0)) as gateway:
        gateway.set_population(perturbation)
        member = LLM(gateway.socket_path, gateway.open_session("m2", Budget(), member=2))
        base = LLM(gateway.socket_path, gateway.open_session("base", Budget()))
        got_member, got_base = run_together(
            [
                lambda: member.complete(prompt, max_tokens=10),
                lambda: base.complete(prompt, max_tokens=10),
            ]
        )
        with pytest.raises(ValueError, match="outside the population"):
            gateway.open_session("m3", Budget(), member=3)
    assert len(recording.calls) == 1  # both members rode in one batch, one row each
    assert sorted(recording.calls[0]["member_of_row"]) == [-1, 2]
    assert recording.calls[0]["perturbation"] is perturbation
    assert got_member == direct(backend, [prompt], 10, perturbation=perturbation, member_of_row=[2])
    assert got_base == direct(backend, [prompt], 10)
    assert got_member != got_base


def test_member_session_without_a_population_fails_clearly(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("m0", Budget(), member=0))
        with pytest.raises(LLMError, match="no population is set") as error:
            llm.complete("x", max_tokens=3)
    assert error.value.status == 500


# -- budgets -----------------------------------------------------------------------------------
def test_token_budget_clips_max_tokens_then_refuses(recording: RecordingBackend) -> None:
    budget = 20
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("tokens", Budget(tokens=budget))
        llm = LLM(gateway.socket_path, token)
        spent = []
        with pytest.raises(LLMBudgetExhausted, match="token budget"):
            for _ in range(budget + 1):  # at least one token per call: it must run out
                llm.complete("hello", max_tokens=8)
                spent.append(llm.last_usage["completion_tokens"])
        record = gateway.close_session(token)
    asked = [call["config"].max_new_tokens for call in recording.calls]
    left = [budget - sum(spent[:i]) for i in range(len(spent))]
    assert asked == [min(8, remaining) for remaining in left]  # clipped to what was left
    assert record.tokens_used == sum(spent) <= budget
    assert record.exhausted
    assert record.calls_used == len(spent)
    assert "token budget" in record.calls[-1].error


def test_call_budget_refuses_the_extra_call(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("calls", Budget(calls=2))
        llm = LLM(gateway.socket_path, token)
        llm.complete("a", max_tokens=2)
        llm.complete("b", max_tokens=2)
        with pytest.raises(LLMBudgetExhausted) as error:
            llm.complete("c", max_tokens=2)
        record = gateway.close_session(token)
    assert error.value.status == 429 and "call budget" in str(error.value)
    assert record.exhausted and record.calls_used == 2 and len(recording.calls) == 2
    assert [c.error is None for c in record.calls] == [True, True, False]


def test_the_host_asks_in_process_as_a_container_would(
    recording: RecordingBackend, backend: TransformersBackend
) -> None:
    """An edit's diagnosis is the host's own call: no socket, the same checks and record."""
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("host", Budget(calls=1))
        status, body = gateway.ask(
            token, "/v1/completions", {"prompt": "def add(a, b):", "max_tokens": 8}
        )
        spent = gateway.ask(token, "/v1/completions", {"prompt": "x", "max_tokens": 1})
        unknown = gateway.ask("nope", "/v1/completions", {"prompt": "x"})
        nowhere = gateway.ask(token, "/v1/embeddings", {"input": "x"})
        record = gateway.close_session(token)
    assert status == 200
    assert [c["text"] for c in body["choices"]] == direct(backend, ["def add(a, b):"], 8)
    assert spent[0] == 429 and "call budget" in spent[1]["error"]["message"]
    assert unknown[0] == 401 and nowhere[0] == 404
    assert record.calls_used == 1 and len(recording.calls) == 1
    assert [c.error is None for c in record.calls] == [True, False]


def test_time_budget_counts_from_the_first_call(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("time", Budget(seconds=0.5))
        time.sleep(0.6)  # before the first call: does not count
        llm = LLM(gateway.socket_path, token)
        llm.complete("a", max_tokens=2)
        time.sleep(0.6)
        with pytest.raises(LLMBudgetExhausted, match="time budget"):
            llm.complete("b", max_tokens=2)
        assert gateway.close_session(token).exhausted


def test_rows_over_the_batch_limit_are_a_400(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0, max_batch_rows=4)) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("n", Budget()))
        with pytest.raises(LLMError, match="n: 6 rows") as error:
            llm.complete(["a", "b"], max_tokens=2, n=3)
    assert error.value.status == 400


# -- auth, malformed input, transcripts --------------------------------------------------------
def test_unknown_or_missing_token_is_a_401(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("a", Budget())
        with pytest.raises(LLMError) as error:
            LLM(gateway.socket_path, "0" * 32).complete("x", max_tokens=2)
        assert error.value.status == 401
        status, body = raw_request(gateway, "GET", "/v1/models", None, None)
        assert status == 401 and body["error"]["type"] == "authentication_error"
        gateway.close_session(token)
        with pytest.raises(LLMError) as error:
            LLM(gateway.socket_path, token).complete("x", max_tokens=2)
        assert error.value.status == 401  # a closed session's token is dead
        with pytest.raises(KeyError):
            gateway.close_session(token)
    assert recording.calls == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/completions", b"{not json", "JSON"),
        ("/v1/completions", b"[1, 2]", "JSON object"),
        ("/v1/completions", b'{"prompt": 5}', "prompt"),
        ("/v1/completions", b'{"prompt": ""}', "prompt"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": "ten"}', "max_tokens"),
        ("/v1/completions", b'{"prompt": "x", "max_tokens": true}', "max_tokens"),
        ("/v1/completions", b'{"prompt": "x", "temperature": -1}', "temperature"),
        ("/v1/completions", b'{"prompt": "x", "top_p": 0}', "top_p"),
        ("/v1/completions", b'{"prompt": "x", "stop": [""]}', "stop"),
        ("/v1/completions", b'{"prompt": "x", "n": 0}', "n"),
        ("/v1/completions", b'{"prompt": "x", "seed": 1.5}', "seed"),
        ("/v1/completions", b'{"prompt": "x", "stream": true}', "stream"),
        ("/v1/chat/completions", b'{"messages": "hi"}', "messages"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "bob", "content": "x"}]}',
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": 3}]}',
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "continue_final_message": true}',
            "continue_final_message",
        ),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "assistant", "content": "x"}], '
            b'"continue_final_message": "yes"}',
            "continue_final_message",
        ),
    ],
)
def test_malformed_requests_are_a_400_naming_the_field(
    recording: RecordingBackend, path: str, body: bytes, field: str
) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0), chat_template=str) as gateway:
        token = gateway.open_session("bad", Budget(calls=5))
        status, answer = raw_request(gateway, "POST", path, body, token)
        record = gateway.close_session(token)
    assert status == 400
    assert field in answer["error"]["message"]
    assert answer["error"]["type"] == "invalid_request_error"
    assert record.calls_used == 0 and field in record.calls[0].error  # recorded, not charged
    assert recording.calls == []


def test_unknown_paths_and_methods(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("a", Budget())
        assert raw_request(gateway, "POST", "/v1/embeddings", b"{}", token)[0] == 404
        assert raw_request(gateway, "GET", "/v1/completions", None, token)[0] == 405


def test_transcripts_keep_prompts_outputs_and_spending(recording: RecordingBackend) -> None:
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("task-9", Budget(), member=-1)
        llm = LLM(gateway.socket_path, token)
        first = llm.complete("def f(x):\n", max_tokens=5, n=2)
        second = llm.complete("hello", max_tokens=3)
        record = gateway.close_session(token)
    assert (record.label, record.member, record.exhausted) == ("task-9", -1, False)
    assert [c.prompts for c in record.calls] == [["def f(x):\n"], ["hello"]]
    assert [c.texts for c in record.calls] == [first, second]
    assert [c.request["max_tokens"] for c in record.calls] == [5, 3]
    assert record.tokens_used == sum(c.tokens for c in record.calls) > 0
    assert all(c.seconds > 0 and c.error is None for c in record.calls)
    assert record.seconds_used >= sum(c.seconds for c in record.calls)


# -- the external route ------------------------------------------------------------------------
class FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: records each request, answers canned choices."""

    seen: list[dict] = []
    fail_with: int | None = None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if FakeOpenAI.fail_with:
            self._send(FakeOpenAI.fail_with, {"error": {"message": "remote is on fire"}})
            return
        rows = body["n"] * (len(body["prompt"]) if isinstance(body.get("prompt"), list) else 1)
        if self.path.endswith("/chat/completions"):
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": f"chat {i}"},
                    "finish_reason": "stop",
                }
                for i in range(rows)
            ]
        else:
            choices = [
                {"index": i, "text": f"remote {i}", "finish_reason": "length"} for i in range(rows)
            ]
        usage = {"prompt_tokens": 3, "completion_tokens": 7 * rows, "total_tokens": 3 + 7 * rows}
        self._send(200, {"choices": choices[::-1], "usage": usage})  # any order: index rules

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_openai() -> Iterator[str]:
    FakeOpenAI.seen, FakeOpenAI.fail_with = [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def test_external_sessions_are_forwarded_with_budgets_and_transcripts(
    recording: RecordingBackend, fake_openai: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_TEST_KEY", "sk-test-123")
    endpoint = ExternalEndpoint(fake_openai, "remote-coder", api_key_env="LINEAGE_TEST_KEY")
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("ext", Budget(tokens=30), external=endpoint)
        llm = LLM(gateway.socket_path, token)
        assert llm.models() == ["remote-coder", "lineage-policy"]  # the proposer first
        texts = llm.complete("def f():", max_tokens=100, n=2, stop=["\n"], seed=3, temperature=0.5)
        reply = llm.chat([{"role": "user", "content": "hi"}], max_tokens=100)
        with pytest.raises(LLMBudgetExhausted):
            llm.complete("again", max_tokens=100, n=10)  # 9 left, 10 rows
        record = gateway.close_session(token)
    assert texts == ["remote 0", "remote 1"] and reply == ["chat 0"]
    first, second = FakeOpenAI.seen
    assert first["path"] == "/v1/completions" and second["path"] == "/v1/chat/completions"
    assert first["auth"] == "Bearer sk-test-123"
    assert first["body"] == {
        "model": "remote-coder",
        "prompt": "def f():",
        "max_tokens": 15,  # 30 tokens left over 2 rows
        "temperature": 0.5,
        "top_p": 1.0,
        "n": 2,
        "stop": ["\n"],
        "seed": 3,
    }
    assert second["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert second["body"]["max_tokens"] == 16  # 30 - 14 used
    assert record.tokens_used == 14 + 7  # the remote's usage
    assert record.exhausted and [c.texts for c in record.calls[:2]] == [texts, reply]
    assert recording.calls == []  # nothing touched the local model


def test_an_external_session_reaches_the_policy_by_naming_it(
    recording: RecordingBackend, backend: TransformersBackend, fake_openai: str
) -> None:
    """An edit's `improve` writes proposals with the proposer and checks them on the policy the
    child runs with: a call naming the policy is served here, under the same session's budget."""
    endpoint = ExternalEndpoint(fake_openai, "remote-coder")
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        token = gateway.open_session("ext", Budget(tokens=40), external=endpoint)
        llm = LLM(gateway.socket_path, token)
        policy = llm.using(llm.models()[-1])
        local = policy.complete("def add(a, b):", max_tokens=8)
        answer = policy.last_usage
        remote = llm.using("anything-else").complete("def f():", max_tokens=8)
        record = gateway.close_session(token)
    assert local == direct(backend, ["def add(a, b):"], 8)
    assert len(recording.calls) == 1 and remote == ["remote 0"]
    (seen,) = FakeOpenAI.seen  # only the call that did not name the policy went out
    assert seen["body"]["model"] == "remote-coder" and seen["body"]["prompt"] == "def f():"
    assert record.tokens_used == answer["completion_tokens"] + 7  # one budget for both


def test_external_failures_are_clear(
    recording: RecordingBackend, fake_openai: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINEAGE_TEST_MISSING", raising=False)
    missing = ExternalEndpoint(fake_openai, "m", api_key_env="LINEAGE_TEST_MISSING")
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        with pytest.raises(ValueError, match="LINEAGE_TEST_MISSING"):
            gateway.open_session("ext", Budget(), external=missing)
        llm = LLM(
            gateway.socket_path,
            gateway.open_session("ext", Budget(), external=ExternalEndpoint(fake_openai, "m")),
        )
        FakeOpenAI.fail_with = 500
        with pytest.raises(LLMError, match="remote is on fire") as error:
            llm.complete("x", max_tokens=4)
        assert error.value.status == 502
        FakeOpenAI.fail_with = 400  # the request's own fault (e.g. too long): the agent's 400
        with pytest.raises(LLMError) as error:
            llm.complete("x", max_tokens=4)
        assert error.value.status == 400
        dead = ExternalEndpoint("http://127.0.0.1:9/v1", "m")  # discard port: nothing listens
        llm = LLM(gateway.socket_path, gateway.open_session("dead", Budget(), external=dead))
        with pytest.raises(LLMError, match="unreachable") as error:
            llm.complete("x", max_tokens=4)
        assert error.value.status == 502


# -- the socket and the client file ------------------------------------------------------------
def _python_for(uid: int) -> str | None:
    """An interpreter that `uid` may run (the venv's may live under root's home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-I", "-c", "pass"],
                user=uid,
                group=uid,
                extra_groups=[],
                capture_output=True,
            )
        except PermissionError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


def test_socket_is_usable_by_another_uid_with_the_standalone_client(
    backend: TransformersBackend, recording: RecordingBackend
) -> None:
    """Containers run candidates as arbitrary uids: the folder is 0o755 and the socket 0o666,
    and the client file alone (copied out, `python -I`) completes through it as `nobody`."""
    with Gateway(recording, GatewayConfig(batch_window_s=0.0)) as gateway:
        folder = os.path.dirname(gateway.socket_path)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
        mode = os.stat(gateway.socket_path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
        if os.geteuid() != 0:
            pytest.skip("switching to another uid needs root; mode bits checked above")
        nobody = 65534
        python = _python_for(nobody)
        if python is None:
            pytest.skip("no interpreter that uid 65534 may run")
        client_dir = tempfile.mkdtemp(prefix="lineage-client-")
        try:
            os.chmod(client_dir, 0o755)
            shutil.copy(llm_client.__file__, os.path.join(client_dir, "lineage_llm.py"))
            os.chmod(os.path.join(client_dir, "lineage_llm.py"), 0o644)
            token = gateway.open_session("nobody", Budget())
            code = (
                f"import sys, json; sys.path.insert(0, {client_dir!r}); import lineage_llm; "
                f"print(json.dumps(lineage_llm.LLM({gateway.socket_path!r}, {token!r})"
                ".complete('hello', max_tokens=6)))"
            )
            run = subprocess.run(
                [python, "-I", "-c", code],
                user=nobody,
                group=nobody,
                extra_groups=[],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            shutil.rmtree(client_dir)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == direct(backend, ["hello"], 6)


def test_client_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(llm_client.__file__).read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules and modules <= set(sys.stdlib_module_names), modules - set(
        sys.stdlib_module_names
    )


def test_client_without_a_gateway_raises_llm_error(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="no answer from the LLM gateway"):
        LLM(str(tmp_path / "absent.sock"), "t").complete("x")


# -- shutdown ----------------------------------------------------------------------------------
class BlockingBackend(RecordingBackend):
    """Holds its first `generate` until released, so requests can be queued behind it."""

    def __init__(self, backend: TransformersBackend) -> None:
        super().__init__(backend)
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(30)
        return super().generate(*args, **kwargs)


def test_close_answers_pending_requests_503_and_joins_every_thread(
    backend: TransformersBackend,
) -> None:
    blocking = BlockingBackend(backend)
    gateway = Gateway(blocking, GatewayConfig(batch_window_s=0.0))
    folder = os.path.dirname(gateway.socket_path)
    llm = LLM(gateway.socket_path, gateway.open_session("a", Budget()))
    outcomes: dict[str, object] = {}

    def call(name: str, max_tokens: int) -> None:
        try:
            outcomes[name] = llm.complete("hello", max_tokens=max_tokens)
        except LLMError as exc:
            outcomes[name] = exc

    running = threading.Thread(target=call, args=("running", 4))
    running.start()
    assert blocking.entered.wait(30)
    queued = threading.Thread(target=call, args=("queued", 5))
    queued.start()
    deadline = time.monotonic() + 30
    while gateway._batcher._queue.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    idle = llm_client._UnixConnection(gateway.socket_path, 30)  # a keep-alive connection, idle
    idle.request("GET", "/v1/models", headers={"Authorization": "Bearer nope"})
    idle.getresponse().read()

    closer = threading.Thread(target=gateway.close)
    closer.start()
    queued.join(30)
    assert isinstance(outcomes["queued"], LLMError) and outcomes["queued"].status == 503
    assert "running" not in outcomes  # still generating, not answered early
    blocking.release.set()
    closer.join(30)
    running.join(30)
    assert not closer.is_alive()
    assert outcomes["running"] == direct(backend, ["hello"], 4)  # the running batch finished
    idle.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("lineage-gateway")]
    assert not os.path.exists(folder)  # the temp folder and its socket are gone
    with pytest.raises(LLMError):
        llm.complete("x", max_tokens=2)


# -- the real small model ----------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_greedy_completion_and_chat_through_the_gateway() -> None:
    threads = torch.get_num_threads()
    smollm2 = TransformersBackend.from_config(
        TransformersBackendConfig(model="smollm2-135m", dtype="float32", threads=1)
    )
    torch.set_num_threads(threads)
    prompt = "The capital of France is"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    template = tokenizer_chat_template(smollm2.tokenizer)
    with Gateway(smollm2, GatewayConfig(batch_window_s=0.0), chat_template=template) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("smol", Budget()))
        text = llm.complete(prompt, max_tokens=24)
        reply = llm.chat(messages, max_tokens=12)
    assert text == direct(smollm2, [prompt], 24)
    assert "Paris" in text[0]  # the real model, not gibberish
    assert reply == direct(smollm2, [template(messages)], 12)
    # continuing a final message renders as HF's own continue_final_message does
    opening = [*messages, {"role": "assistant", "content": "The capital of France is"}]
    hf = smollm2.tokenizer.apply_chat_template(
        opening, tokenize=False, add_generation_prompt=False, continue_final_message=True
    )
    assert template(messages) + opening[-1]["content"] == hf
