"""The agent's one way out of its sandbox: an LLM client talking to Lineage's gateway.

Standalone on purpose (standard library only, no Lineage imports): it is copied into the container
as a single file. It speaks HTTP/1.1 over the gateway's Unix socket, OpenAI-style:

    llm = LLM("/run/lineage/llm.sock", token)
    texts = llm.complete("def add(a, b):\\n", max_tokens=64, stop=["\\ndef"], n=4)
    reply = llm.chat([{"role": "user", "content": "Write a haiku."}])[0]

Every method returns a list of strings, one per sample (`n`). A spent budget raises
`LLMBudgetExhausted` (further calls will fail too); any other failure raises `LLMError` carrying
the gateway's message. A gateway at its limits answers 503 `overloaded`: the call is retried with
backoff until `timeout_s` has passed.
"""

import http.client
import json
import random
import socket
import time

__all__ = ["LLM", "LLMBudgetExhausted", "LLMError"]


class LLMError(Exception):
    """The gateway refused or failed a call; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message, status=0):
        super().__init__(message)
        self.status = status


class LLMBudgetExhausted(LLMError):
    """This session's token, time or call budget is spent."""


CONNECT_TRIES = 12  # about 7 s of backoff in all


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over an AF_UNIX socket: the host part of the URL is ignored."""

    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        # A full listen backlog refuses a Unix-socket connect at once (EAGAIN) rather than
        # making it wait: retry for a while, as a TCP client's SYN retransmits would.
        for attempt in range(CONNECT_TRIES):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except (BlockingIOError, ConnectionRefusedError, InterruptedError):
                sock.close()
                if attempt == CONNECT_TRIES - 1:
                    raise
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            except OSError:
                sock.close()
                raise
            self.sock = sock
            return


class LLM:
    """A client of one gateway session. Safe to share between threads (one connection per call),
    and calls from several threads are batched together by the gateway."""

    def __init__(self, socket_path, token, timeout_s=600, model=None):
        self.socket_path = socket_path
        self.token = token
        self.timeout_s = timeout_s
        self.model = model  # named in every call (None: whatever answers the session by default)
        self.last_usage = None  # the `usage` of the latest successful call

    def using(self, model):
        """The same session, every call naming `model` (one of `models()`)."""
        return LLM(self.socket_path, self.token, self.timeout_s, model)

    def complete(
        self, prompt, *, max_tokens=384, temperature=0.0, top_p=1.0, stop=None, n=1, seed=None
    ):
        """Continue `prompt` (a string; a list of strings gives n texts per prompt, in order)."""
        body = {"prompt": prompt}
        body.update(_decoding(max_tokens, temperature, top_p, stop, n, seed))
        answer = self._post("/v1/completions", body)
        return [choice["text"] for choice in _choices(answer)]

    def chat(
        self,
        messages,
        *,
        max_tokens=384,
        temperature=0.0,
        top_p=1.0,
        stop=None,
        n=1,
        seed=None,
        continue_final=False,
    ):
        """Reply to `messages` ([{"role": "system"|"user"|"assistant", "content": str}, ...]).

        With `continue_final`, the last message is the assistant's and the reply continues it
        (returned without it), e.g. after an opening "```python\n"."""
        body = {"messages": list(messages)}
        if continue_final:
            body["continue_final_message"] = True
        body.update(_decoding(max_tokens, temperature, top_p, stop, n, seed))
        answer = self._post("/v1/chat/completions", body)
        return [choice["message"]["content"] or "" for choice in _choices(answer)]

    def models(self):
        """Names of the models this session reaches: the one answering by default first; where
        that is a proposer model, the policy (the agent's own model) after it."""
        return [m["id"] for m in self._request("GET", "/v1/models", None)["data"]]

    def _post(self, path, body):
        if self.model is not None:
            body["model"] = self.model
        answer = self._request("POST", path, body)
        self.last_usage = answer.get("usage")
        return answer

    def _request(self, method, path, body):
        headers = {"Authorization": "Bearer " + self.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            status, raw, answer = self._exchange(method, path, data, headers)
            pause = 0.05 * 2 ** min(attempt, 4) * (0.5 + random.random())
            if not _overloaded(status, answer) or time.monotonic() + pause > deadline:
                break
            time.sleep(pause)  # the gateway is at its limits: try again shortly
            attempt += 1
        if status == 200 and isinstance(answer, dict):
            return answer
        message = _error_message(answer, raw)
        if status == 429:
            raise LLMBudgetExhausted(f"LLM budget exhausted: {message}", status)
        raise LLMError(f"LLM gateway answered {status}: {message}", status)

    def _exchange(self, method, path, data, headers):
        """(status, raw body, parsed JSON or None) of one request on a fresh connection."""
        connection = _UnixConnection(self.socket_path, self.timeout_s)
        try:
            try:
                connection.request(method, path, body=data, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the whole body was read: its answer says why
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LLMError(
                f"no answer from the LLM gateway at {self.socket_path}: {exc!r}"
            ) from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        return status, raw, answer


def _decoding(max_tokens, temperature, top_p, stop, n, seed):
    fields = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "n": n}
    if stop is not None:
        fields["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if seed is not None:
        fields["seed"] = seed
    return fields


def _choices(answer):
    choices = answer.get("choices")
    if not isinstance(choices, list):
        raise LLMError(f"LLM gateway answered without choices: {str(answer)[:500]}", 200)
    return sorted(choices, key=lambda c: c.get("index", 0))


def _overloaded(status, answer):
    error = answer.get("error") if isinstance(answer, dict) else None
    return status == 503 and isinstance(error, dict) and error.get("code") == "overloaded"


def _error_message(answer, raw):
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("message"))
    return raw[:500].decode("utf-8", "replace")
