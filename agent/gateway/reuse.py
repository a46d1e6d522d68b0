"""Greedy replies kept for reuse: the same weights, prompt and decoding give the same reply.

A run asks its own weights the same greedy questions again and again: a self-edit's child keeps
its parent's weights, so its agent's first (greedy) call on every task is its parent's; the
held-out report asks the best node the base's questions when both share weights. Generating
them again costs most of a child's evaluation and tells nothing new. So the gateway keeps the
replies of greedy, unperturbed rows under a key naming the weights that produced them, and
answers an equal request from here.

The key must name the weights exactly, or a reply of one node would be scored as another's:
whoever moves the weights supplies it (`Runtime.weights_name`), returns None while it cannot
vouch for them, and the gateway asks again when a generation ends and keeps the reply only if
the answer did not change meanwhile (`WeightsKey` counts every move, so weights that moved and
came back do not pass for unmoved). Sampled rows, ES members' rows and external endpoints are
never kept. Only replies the host's own engine generated are stored, so an agent can make the
cache answer nothing it would not have been answered anyway (a fast answer tells it only that
someone asked these weights the same question before). Replies of a batched engine may differ
from a lone prompt's in the last bits; a reused one is what these weights did answer.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

from agent.gateway.protocol import Decoding
from agent.policy.backend import Generation

ReplyKey = tuple[str, str, int, tuple[str, ...]]
# The weights' name, and how many times they were set: a reply generated while they moved is not
# kept, even when they came back to the same name.
WeightsKey = tuple[str, int]


def reply_key(weights: str, rows: Sequence[str], decoding: Decoding) -> ReplyKey | None:
    """What an equal request must share: the weights, every row's prompt, and the decoding a
    greedy row depends on (its token limit and stops). None: the rows are sampled."""
    if decoding.temperature != 0:
        return None
    digest = hashlib.sha256()
    for row in rows:
        data = row.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return (weights, digest.hexdigest(), decoding.max_tokens, tuple(decoding.stop))


class GreedyReplies:
    """A map from `reply_key` to the generations of those rows, bounded by the bytes of their
    texts (what agents could otherwise make the host hold), least recently used dropped first;
    `max_bytes` = 0 keeps nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._replies: OrderedDict[ReplyKey, tuple[tuple[Generation, ...], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.tokens = 0  # tokens answered from here instead of generated

    def get(self, key: ReplyKey) -> list[Generation] | None:
        with self._lock:
            found = self._replies.get(key)
            if found is None:
                return None
            self._replies.move_to_end(key)
            self.hits += 1
            self.tokens += sum(g.num_tokens for g in found[0])
            return list(found[0])

    def put(self, key: ReplyKey, generations: Sequence[Generation]) -> None:
        size = sum(len(g.text) * 4 for g in generations) + 256 * (len(generations) + 1)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._replies.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._replies[key] = (tuple(generations), size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._replies.popitem(last=False)
                self._bytes -= dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._replies)
