"""Reused greedy replies (`agent/gateway/reuse.py`): through the real gateway and socket, on the
real batched backend and the tiny random model. A reply is reused only for the same weights,
prompt, token limit and stops, greedy and unperturbed; never across a move of the weights."""

from __future__ import annotations

import pytest
from populations import random_population

from agent.gateway import Budget, Gateway, GatewayConfig
from agent.gateway.reuse import GreedyReplies
from agent.loop.runtime import WeightsName
from agent.policy.backend import Generation
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.scaffold.llm_client import LLM

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: a tiny model, one thread

PROMPT = "def f(x):\n"


class Counting:
    """The real backend, counting the rows it generated; `during` runs inside each call."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.inner, self.tokenizer, self.model = backend, backend.tokenizer, backend.model
        self.rows = 0
        self.during = lambda: None

    def generate(self, prompts, config, perturbation=None, member_of_row=None, on_done=None):
        self.rows += len(prompts)
        self.during()
        return self.inner.generate(prompts, config, perturbation, member_of_row, on_done)


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    return TransformersBackend(model, tokenizer)


@pytest.fixture
def counting(backend: TransformersBackend) -> Counting:
    return Counting(backend)


def session(gateway: Gateway, member: int = -1) -> tuple[LLM, str]:
    token = gateway.open_session("s", Budget(tokens=10_000), member=member)
    return LLM(gateway.socket_path, token), token


def test_the_same_greedy_call_to_the_same_weights_is_answered_without_generating(counting):
    weights = WeightsName()
    weights.settled([])
    with Gateway(counting, GatewayConfig(batch_window_s=0.0), weights_key=weights.key) as g:
        first_llm, first_token = session(g)
        first = first_llm.complete(PROMPT, max_tokens=12)
        again_llm, again_token = session(g)  # another agent, same question
        assert again_llm.complete(PROMPT, max_tokens=12) == first
        assert counting.rows == 1
        usage = g.usage()
        assert usage["reused_calls"] == 1 and usage["reused_tokens"] > 0
        assert usage["tokens"] == usage["reused_tokens"]  # generated once, answered twice
        # the agent is charged what the reply holds, as if it had been generated for it
        a, b = g.close_session(first_token), g.close_session(again_token)
        assert a.tokens_used == b.tokens_used == usage["tokens"]
        assert b.calls[0].texts == a.calls[0].texts

        llm, _ = session(g)
        for kwargs in ({"max_tokens": 11}, {"max_tokens": 12, "stop": ("x",)}):
            before = counting.rows
            llm.complete(PROMPT, **kwargs)  # another token limit or stop: another question
            assert counting.rows == before + 1, kwargs
        before = counting.rows
        llm.complete("another prompt", max_tokens=12)
        llm.complete(PROMPT, max_tokens=12, temperature=0.8, seed=1)
        llm.complete(PROMPT, max_tokens=12, temperature=0.8, seed=1)  # sampled: never kept
        assert counting.rows == before + 3

        weights.settled(["a record"])  # other weights: the first reply is not theirs
        before = counting.rows
        llm.complete(PROMPT, max_tokens=12)
        assert counting.rows == before + 1
        weights.settled([])  # back to the first weights, by name
        llm.complete(PROMPT, max_tokens=12)
        assert counting.rows == before + 1

        weights.moving()  # while the weights move nothing is reused
        llm.complete(PROMPT, max_tokens=12)
        llm.complete(PROMPT, max_tokens=12)
        assert counting.rows == before + 3


def test_an_es_member_is_always_generated_for(counting):
    weights = WeightsName()
    weights.settled([])
    with Gateway(counting, GatewayConfig(batch_window_s=0.0), weights_key=weights.key) as g:
        g.set_population(random_population(counting.model, members=2, sigma=0.5, rank=2))
        llm, _ = session(g)
        member, _ = session(g, member=0)
        llm.complete(PROMPT, max_tokens=8)
        member.complete(PROMPT, max_tokens=8)
        member.complete(PROMPT, max_tokens=8)
        assert counting.rows == 3 and g.usage()["reused_calls"] == 0


def test_a_reply_generated_while_the_weights_moved_is_not_kept(counting):
    weights = WeightsName()
    weights.settled([])

    def move_and_come_back() -> None:
        weights.moving()
        weights.settled([])

    counting.during = move_and_come_back
    with Gateway(counting, GatewayConfig(batch_window_s=0.0), weights_key=weights.key) as g:
        llm, _ = session(g)
        llm.complete(PROMPT, max_tokens=8)
        counting.during = lambda: None
        llm.complete(PROMPT, max_tokens=8)  # the first reply's weights were not one set
        llm.complete(PROMPT, max_tokens=8)
        assert counting.rows == 2 and g.usage()["reused_calls"] == 1


def test_a_gateway_not_told_the_weights_reuses_nothing(counting):
    with Gateway(counting, GatewayConfig(batch_window_s=0.0)) as g:
        llm, _ = session(g)
        assert llm.complete(PROMPT, max_tokens=8) == llm.complete(PROMPT, max_tokens=8)
        assert counting.rows == 2 and g.usage()["reused_calls"] == 0
    weights = WeightsName()
    weights.settled([])
    off = GatewayConfig(batch_window_s=0.0, reuse_greedy_mb=0)
    with Gateway(counting, off, weights_key=weights.key) as g:
        llm, _ = session(g)
        llm.complete(PROMPT, max_tokens=8)
        llm.complete(PROMPT, max_tokens=8)
        assert counting.rows == 4
    with pytest.raises(ValueError, match="reuse_greedy_mb"):
        GatewayConfig(reuse_greedy_mb=-1)


def test_kept_replies_are_bounded_by_their_bytes_oldest_unused_dropped_first():
    replies = GreedyReplies(max_bytes=3000)
    reply = [Generation("x" * 200, 50, "stop")]  # 200 chars are counted as 800 bytes, + 512
    for k in ("a", "b"):
        replies.put((k, "", 1, ()), reply)
    assert replies.get(("a", "", 1, ())) is not None  # "a" used: "b" is now the oldest
    replies.put(("c", "", 1, ()), reply)
    assert replies.get(("b", "", 1, ())) is None
    assert replies.get(("a", "", 1, ())) is not None and replies.get(("c", "", 1, ()))
    replies.put(("huge", "", 1, ()), [Generation("y" * 5000, 9, "length")])  # over the bound
    assert replies.get(("huge", "", 1, ())) is None and len(replies) == 2
    assert replies.hits == 3 and replies.tokens == 150
