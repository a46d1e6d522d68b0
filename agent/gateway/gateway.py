"""The LLM gateway: scaffolds in sandbox containers reach the node's policy model only through it.

A host-side HTTP server on a Unix socket (mounted into containers) speaks a subset of the OpenAI
API. Each container holds a bearer token for one session (label, budget, ES member, and optionally
an external endpoint). Local calls from every session go to one batcher thread, so calls from many
containers share `generate` calls; a session of ES member m generates with m's low-rank
perturbation. A session with an external endpoint (an edit's proposer) is answered there,
except for calls naming the local policy (`/v1/models` lists it after the endpoint's model), so
an edit's `improve` can check its proposals on the model the child runs with, under the same
budget. Everything a session asked and got is kept for its `SessionRecord`.

Greedy outputs are what the backend gives a prompt alone (as far as its batching keeps them so:
exactly in fp32). Sampled ones with a `seed` repeat only for the same batch (the backend draws
one random stream per batch); without a seed each batch gets a fresh one. Given `weights_key`
(the loop's), a greedy unperturbed call equal to an earlier one on the same weights is answered
with that call's reply (`agent/gateway/reuse.py`). The time budget is checked when a call is
admitted, not during it.

A request is judged by its head before its body is read: route, token, size, and the session's
requests in flight (`GatewayConfig`'s bounds; the server bounds connections and waits). Its
prompts are then counted (`PromptMeter`), capped by the model's context and charged to the
session's prompt budget before anything generates.

    with Gateway(backend, GatewayConfig(), chat_template) as gateway:
        token = gateway.open_session("task-17", Budget(tokens=20_000, calls=50), member=3)
        ...  # run the scaffold in a container with gateway.socket_path's folder mounted
        record = gateway.close_session(token)
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

from agent.gateway.batcher import Batcher, GatewayClosed, resolve
from agent.gateway.chat import ChatTemplate
from agent.gateway.config import Budget, ExternalEndpoint, GatewayConfig
from agent.gateway.external import forward
from agent.gateway.meter import PromptMeter
from agent.gateway.protocol import (
    ApiError,
    Outcome,
    Request,
    models_body,
    parse_chat,
    parse_completion,
    parse_json,
    response_body,
)
from agent.gateway.reuse import GreedyReplies, WeightsKey, reply_key
from agent.gateway.server import Answer, Call, Head, UnixHTTPServer, overloaded
from agent.gateway.session import CallRecord, Session, SessionRecord
from agent.policy.backend import Generation, PolicyBackend
from agent.policy.lowrank import PopulationPerturbation

SOCKET_NAME = "llm.sock"
ROUTES = {
    "/v1/completions": "POST",
    "/v1/chat/completions": "POST",
    "/v1/models": "GET",
}
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, NUL included


def outcome_of(generations: list[Generation], prompt_tokens: int) -> Outcome:
    """OpenAI finish reasons (an EOS is a "stop") and token counts of local generations."""
    return Outcome(
        texts=[g.text for g in generations],
        finish_reasons=["length" if g.finish_reason == "length" else "stop" for g in generations],
        prompt_tokens=prompt_tokens,
        completion_tokens=sum(g.num_tokens for g in generations),
    )


class Gateway:
    """See the module docstring. Serves from construction until `close()` (or the `with` exit)."""

    def __init__(
        self,
        backend: PolicyBackend,
        config: GatewayConfig | None = None,
        chat_template: ChatTemplate | None = None,
        meter: PromptMeter | None = None,
        weights_key: Callable[[], WeightsKey | None] | None = None,
    ) -> None:
        """`meter` counts prompt tokens and knows the context; by default the backend's own
        (pass the model's where the backend is remote, e.g. Ray replicas). `weights_key` names
        the weights unperturbed rows generate with now (None: unknown); with it, greedy replies
        are reused (`agent.gateway.reuse`), without it none are."""
        self.config = config or GatewayConfig()
        self.backend = backend
        self.chat_template = chat_template
        self.meter = meter or PromptMeter.of(backend)
        self._weights_key = weights_key
        self.replies = GreedyReplies(self.config.reuse_greedy_mb << 20 if weights_key else 0)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._external: set[Future] = set()
        self._local: dict[int, set[Future]] = {}  # id(session) -> its calls being generated
        self._calls = 0
        self._tokens = 0
        self._closed = False
        self._own_dir = self.config.socket_dir is None
        socket_dir = self.config.socket_dir
        folder = Path(socket_dir) if socket_dir else Path(tempfile.mkdtemp(prefix="lineage-gw-"))
        self.socket_path = str(folder / SOCKET_NAME)
        try:
            self._listen(folder)
        except BaseException:
            if self._own_dir:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _listen(self, folder: Path) -> None:
        """Make the folder reachable by any uid, bind the socket, start the threads."""
        if len(self.socket_path.encode()) > SOCKET_PATH_MAX:
            raise ValueError(
                f"socket path {self.socket_path!r} is over {SOCKET_PATH_MAX} bytes, the Unix "
                "socket limit: choose a shorter GatewayConfig.socket_dir"
            )
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # containers run candidates as arbitrary uids
        self._remove_stale_socket()
        self._batcher = Batcher(
            self.backend, self.config.batch_window_s, self.config.max_batch_rows
        )
        self._batcher.start()
        try:
            self._server = UnixHTTPServer(self.socket_path, self._begin, self.config)
        except BaseException:
            self._batcher.stop()
            raise

    def _remove_stale_socket(self) -> None:
        path = Path(self.socket_path)
        if path.is_socket():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(self.socket_path) == 0:
                    raise FileExistsError(f"another gateway is serving on {path}")
            path.unlink()  # left by a gateway that died; binding needs the name free
        elif path.exists():
            raise FileExistsError(f"{path} exists and is not a socket; not overwriting it")

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving: queued and in-flight external requests are answered 503, a running
        `generate` finishes, every thread is joined, the socket (and a temp folder) removed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            external = list(self._external)
        self._server.begin_close()
        closed = GatewayClosed("the gateway shut down before the external endpoint answered")
        for future in external:
            resolve(future, error=closed)
        self._batcher.stop()
        self._server.finish_close()
        Path(self.socket_path).unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(Path(self.socket_path).parent, ignore_errors=True)

    # -- sessions --------------------------------------------------------------------------
    def open_session(
        self,
        label: str,
        budget: Budget,
        member: int = -1,
        external: ExternalEndpoint | None = None,
    ) -> str:
        """A new session; returns its bearer token (what the container gets)."""
        if not isinstance(budget, Budget):
            raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
        if isinstance(member, bool) or not isinstance(member, int) or member < -1:
            raise ValueError(f"member must be an int >= -1 (-1: unperturbed), got {member!r}")
        if external is not None and member >= 0:
            raise ValueError("an external endpoint cannot serve an ES member's perturbed weights")
        population = self._batcher.population
        if member >= 0 and population is not None and member >= population.members:
            raise ValueError(f"member {member} is outside the population of {population.members}")
        api_key = None
        if external is not None and external.api_key_env is not None:
            api_key = os.environ.get(external.api_key_env)
            if not api_key:
                raise ValueError(
                    f"external endpoint {external.base_url} needs an API key in the environment "
                    f"variable {external.api_key_env}, which is unset or empty"
                )
        token = secrets.token_hex(16)
        with self._lock:
            if self._closed:
                raise RuntimeError("the gateway is closed")
            self._sessions[token] = Session(
                label, budget, member, external, api_key, self.config.max_refusal_records
            )
        return token

    def close_session(self, token: str) -> SessionRecord:
        """End a session (its token stops working) and return its record. A call still running
        finishes, but is not in the record."""
        with self._lock:
            session = self._sessions.pop(token, None)
            running = self._local.pop(id(session), set())
        if session is None:
            raise KeyError("no open session has this token")
        for future in running:  # nobody will read them: the batcher aborts their rows
            future.cancel()
        return session.snapshot()

    def set_population(self, perturbation: PopulationPerturbation | None) -> None:
        """The ES population whose member m serves sessions opened with member=m (None: none)."""
        self._batcher.set_population(perturbation)

    def run_exclusive(self, fn):
        """`fn()` while no local row decodes (new weights for the backend; see
        `Batcher.run_exclusive`)."""
        return self._batcher.run_exclusive(fn)

    def usage(self) -> dict[str, int]:
        """Totals since start: generating calls answered, tokens generated, backend batches,
        the connections open now and cut off or refused at the cap, `busy_s`, the seconds
        the backend spent generating, and the calls and tokens answered with reused greedy
        replies (`reused_calls`, `reused_tokens`; not in `tokens`, which the backend made)."""
        with self._lock:
            calls, tokens, sessions = self._calls, self._tokens, len(self._sessions)
        return {
            "calls": calls,
            "tokens": tokens,
            "batches": self._batcher.batches,
            "rows": self._batcher.rows,
            "open_sessions": sessions,
            "connections": self._server.connections(),
            "connections_evicted": self._server.evicted,
            "connections_refused": self._server.refused,
            "busy_s": self._batcher.busy_s,
            "reused_calls": self.replies.hits,
            "reused_tokens": self.replies.tokens,
        }

    # -- requests --------------------------------------------------------------------------
    def ask(self, token: str, path: str, body: dict[str, Any]) -> Answer:
        """A call from this process under a session (the host's own: an edit's diagnosis), as a
        container's call would go but without the socket: the same route, token, size, budget
        and in-flight checks, the same record. Returns (HTTP status, JSON body)."""
        raw = json.dumps(body).encode()
        begun = self._begin(Head("POST", path, f"Bearer {token}", len(raw)))
        return begun if isinstance(begun, tuple) else begun(raw)

    def _begin(self, head: Head) -> Answer | Call:
        """The app behind the HTTP server, shown a request's head: an answer at once (an error,
        or the models list), or the call that takes its body."""
        try:
            allowed = ROUTES.get(head.path)
            if allowed is None:
                raise ApiError(
                    404, f"no endpoint {head.path}; this gateway serves {', '.join(ROUTES)}"
                )
            if head.method != allowed:
                raise ApiError(405, f"{head.path} takes {allowed}, not {head.method}")
            session = self._authenticate(head.authorization)
        except ApiError as exc:
            return exc.status, exc.body()
        if head.path == "/v1/models":
            return 200, models_body(*self._models(session))
        endpoint = head.path.removeprefix("/v1/")
        limit = self.config.max_body_bytes
        if head.length > limit:
            reason = f"body of {head.length} bytes is over this gateway's limit of {limit}"
            session.refuse(CallRecord(endpoint, {}, error=reason, body_bytes=head.length))
            return 413, ApiError(413, reason).body()
        if not session.enter(self.config.max_session_calls):
            reason = (
                f"this session has {self.config.max_session_calls} requests in flight, the "
                "most it may; retry when one is answered"
            )
            session.refuse(CallRecord(endpoint, {}, error=reason, body_bytes=head.length))
            return overloaded(reason)
        return _SessionCall(self, session, endpoint, head.length)

    def _models(self, session: Session) -> list[str]:
        """What a session reaches: the model that answers its calls first; where that is a
        proposer's endpoint, the local policy after it (a call whose `model` names it)."""
        policy = self.config.model_name
        return [policy] if session.external is None else [session.external.model, policy]

    def _endpoint(self, session: Session, request: Request) -> ExternalEndpoint | None:
        """Where a call goes: the session's proposer, unless the call names the local policy (an
        edit's `improve` checks its proposals on the policy the child will run with)."""
        if session.external is None or request.body.get("model") == self.config.model_name:
            return None
        return session.external

    def _call(self, session: Session, endpoint: str, raw: bytes) -> dict[str, Any]:
        """One generating call: parse, count the prompts, admit against the budget, generate,
        record, answer. A refused call is recorded by its size and reason only."""
        started = time.monotonic()
        try:
            body = parse_json(raw)
            parse = parse_completion if endpoint == "completions" else parse_chat
            request = parse(body, self.config.default_max_tokens)
            if request.rows > self.config.max_batch_rows:
                raise ApiError(
                    400,
                    f"n: {request.rows} rows (prompts x n) is over this gateway's limit of "
                    f"{self.config.max_batch_rows}",
                    param="n",
                )
            external = self._endpoint(session, request)
            prompts = self._prompts(request, external)
            prompt_tokens, room = self._measure(request, session, external, prompts)
            max_tokens = session.admit(
                request.rows,
                request.decoding.max_tokens,
                min(self.config.max_tokens_cap, room),
                prompt_tokens,
            )
        except ApiError as exc:
            session.refuse(
                CallRecord(
                    endpoint,
                    {},
                    error=exc.message,
                    seconds=time.monotonic() - started,
                    body_bytes=len(raw),
                )
            )
            raise

        def record(outcome: Outcome | None = None, error: str | None = None) -> CallRecord:
            texts, tokens = (outcome.texts, outcome.completion_tokens) if outcome else ([], 0)
            seconds = time.monotonic() - started
            return CallRecord(
                endpoint, body, prompts, texts, tokens, seconds, error, len(raw), prompt_tokens
            )

        done = record(error="interrupted")
        reused = False
        try:
            outcome, reused = self._generate(
                session, external, request, prompts, max_tokens, prompt_tokens
            )
            done = record(outcome)
        except GatewayClosed as exc:
            done = record(error=str(exc))
            raise ApiError(503, str(exc), type="server_error") from None
        except ApiError as exc:
            done = record(error=exc.message)
            raise
        except Exception as exc:
            done = record(error=f"generation failed: {exc!r}")
            raise ApiError(500, f"generation failed: {exc}", type="server_error") from None
        finally:
            session.settle(request.rows * max_tokens, done)
        with self._lock:
            self._calls += 1
            self._tokens += 0 if reused else outcome.completion_tokens
        model = self.config.model_name if external is None else external.model
        return response_body(request, outcome, model)

    def _measure(
        self,
        request: Request,
        session: Session,
        external: ExternalEndpoint | None,
        prompts: list[str],
    ) -> tuple[int, int]:
        """(prompt tokens of all rows, tokens each row may still generate in the context). A
        prompt over the context is a 400; over the prompt budget, `admit` refuses it. A prompt
        whose length alone shows it is over either is not tokenized (see `PromptMeter`)."""
        # An external chat is rendered by the endpoint: its messages stand in for the prompt,
        # and the endpoint (its own context unknown here) enforces its context itself.
        texts = prompts or ["".join(m["content"] for m in request.messages)]
        context = None if external else self.meter.context_tokens
        budget = session.prompt_tokens_left()
        per_row = None if budget is None else budget // request.n
        limit = min((x for x in (per_row, context and context - 1) if x is not None), default=None)
        try:
            counts = [self.meter.count(text, limit) for text in texts]
        except Exception as exc:  # e.g. a lone surrogate the tokenizer cannot encode
            param = "prompt" if request.kind == "completion" else "messages"
            raise ApiError(400, f"the tokenizer rejected the prompt: {exc}", param=param) from None
        longest = max(counts)
        if context is not None and longest >= context:
            raise ApiError(
                400,
                f"the prompt needs at least {longest} tokens; the model's context is {context} "
                "tokens, prompt and completion together",
                param="prompt" if request.kind == "completion" else "messages",
                code="context_length_exceeded",
            )
        room = self.config.max_tokens_cap if context is None else context - longest
        return sum(counts) * request.n, room

    def _authenticate(self, authorization: str | None) -> Session:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            session = self._sessions.get(token.strip()) if scheme.lower() == "bearer" else None
        if session is None:
            raise ApiError(
                401,
                "missing or unknown bearer token (Authorization: Bearer <token>)",
                type="authentication_error",
                code="invalid_api_key",
            )
        return session

    def _prompts(self, request: Request, external: ExternalEndpoint | None) -> list[str]:
        """What the model sees, one per distinct prompt: a chat rendered by the template (an
        external endpoint renders its own chats, so its prompts stay the messages)."""
        if request.kind == "completion":
            return list(request.prompts)
        if external is not None:
            return []
        if self.chat_template is None:
            raise ApiError(
                400,
                "this gateway has no chat template for its model: use /v1/completions",
                param="messages",
            )
        messages = [dict(m) for m in request.messages]
        # Continuing the final message: the template renders the turns before it and opens the
        # assistant's turn; the message's start follows verbatim, as the model's own words.
        opening = messages.pop()["content"] if request.continue_final else ""
        try:
            prompt = self.chat_template(messages) + opening
        except Exception as exc:
            raise ApiError(
                400, f"the chat template rejected the messages: {exc}", param="messages"
            ) from None
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(500, "the chat template returned no text", type="server_error")
        return [prompt]

    def _generate(
        self,
        session: Session,
        external: ExternalEndpoint | None,
        request: Request,
        prompts: list[str],
        max_tokens: int,
        prompt_tokens: int,
    ) -> tuple[Outcome, bool]:
        """The call's outcome, and whether it was a reused greedy reply."""
        if external is not None:
            return self._forward(session, external, request, max_tokens), False
        decoding = dataclasses.replace(request.decoding, max_tokens=max_tokens)
        rows = [p for p in prompts for _ in range(request.n)]
        weights = self._weights(session)
        key = None if weights is None else reply_key(weights[0], rows, decoding)
        if key is not None:
            kept = self.replies.get(key)
            if kept is not None:
                return outcome_of(kept, prompt_tokens), True
        future = self._batcher.submit(rows, decoding, session.member)
        with self._lock:
            self._local.setdefault(id(session), set()).add(future)
        try:
            result = future.result()
        except CancelledError:
            raise GatewayClosed("the session was closed while this call was generating") from None
        finally:
            with self._lock:
                self._local.get(id(session), set()).discard(future)
        if key is not None and self._weights(session) == weights:
            self.replies.put(key, result)  # the weights did not move while it generated
        return outcome_of(result, prompt_tokens), False

    def _weights(self, session: Session) -> WeightsKey | None:
        """The weights this session's rows generate with, if replies may be reused for it: an
        unperturbed session, weights the run can name."""
        if session.member >= 0 or self._weights_key is None or not self.replies.max_bytes:
            return None
        return self._weights_key()

    def _forward(
        self, session: Session, endpoint: ExternalEndpoint, request: Request, max_tokens: int
    ) -> Outcome:
        """Run the external call in its own thread, so that `close()` can answer it 503 at once;
        the thread ends when the endpoint answers or its timeout passes."""
        left = session.seconds_left()
        timeout = endpoint.timeout_s if left is None else max(0.1, min(endpoint.timeout_s, left))
        future: Future = Future()

        def call() -> None:
            try:
                resolve(future, forward(endpoint, session.api_key, request, max_tokens, timeout))
            except BaseException as exc:
                resolve(future, error=exc)

        with self._lock:
            if self._closed:
                raise GatewayClosed("the gateway is shutting down")
            self._external.add(future)
        try:
            threading.Thread(target=call, name="lineage-gateway-external", daemon=True).start()
            return future.result()
        finally:
            with self._lock:
                self._external.discard(future)


class _SessionCall:
    """A request admitted from its head: it holds one of its session's places in flight until
    its body is answered or abandoned (the server calls exactly one of the two)."""

    def __init__(self, gateway: Gateway, session: Session, endpoint: str, length: int) -> None:
        self.gateway, self.session, self.endpoint = gateway, session, endpoint
        self.length = length

    def __call__(self, body: bytes) -> Answer:
        try:
            return 200, self.gateway._call(self.session, self.endpoint, body)
        except ApiError as exc:
            return exc.status, exc.body()
        except Exception as exc:  # a bug here must not kill the handler thread silently
            return 500, ApiError(500, f"gateway error: {exc!r}", type="server_error").body()
        finally:
            self.session.leave()

    def abandon(self, reason: str) -> None:
        self.session.refuse(CallRecord(self.endpoint, {}, error=reason, body_bytes=self.length))
        self.session.leave()
