"""The LLM gateway: the one channel from sandboxed scaffolds to the policy model (OpenAI-style
HTTP on a Unix socket, batched across sessions, per-session budgets and transcripts)."""

from agent.gateway.batcher import GatewayClosed
from agent.gateway.chat import ChatTemplate, tokenizer_chat_template
from agent.gateway.config import Budget, ExternalEndpoint, GatewayConfig
from agent.gateway.gateway import SOCKET_NAME, Gateway
from agent.gateway.meter import PromptMeter
from agent.gateway.session import CallRecord, SessionRecord

__all__ = [
    "SOCKET_NAME",
    "Budget",
    "CallRecord",
    "ChatTemplate",
    "ExternalEndpoint",
    "Gateway",
    "GatewayClosed",
    "GatewayConfig",
    "PromptMeter",
    "SessionRecord",
    "tokenizer_chat_template",
]
