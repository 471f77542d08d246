"""Errors in each protocol's own shape and status code.

A client library reads errors its own way: the openai SDK wants ``{"error": {"message",
"type", "code"}}``, the anthropic SDK ``{"type": "error", "error": {"type", "message"}}``.
The gateway raises :class:`GatewayError` with an HTTP status and a kind; the face renders
it for the protocol the request came in on.
"""

from __future__ import annotations

from typing import Any, Literal

Protocol = Literal["chat", "responses", "messages"]
Kind = Literal[
    "invalid_request",
    "authentication",
    "not_found",
    "too_large",
    "rate_limit",
    "budget",
    "refused",
    "upstream",
    "unavailable",
]

#: kind → (OpenAI ``type``, Anthropic ``error.type``)
_TYPES: dict[str, tuple[str, str]] = {
    "invalid_request": ("invalid_request_error", "invalid_request_error"),
    "authentication": ("authentication_error", "authentication_error"),
    "not_found": ("not_found_error", "not_found_error"),
    "too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit": ("rate_limit_error", "rate_limit_error"),
    "budget": ("insufficient_quota", "rate_limit_error"),
    "refused": ("invalid_request_error", "permission_error"),
    "upstream": ("server_error", "api_error"),
    "unavailable": ("server_error", "overloaded_error"),
}


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        kind: Kind,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind: Kind = kind
        self.message = message
        self.code = code
        #: the request field at fault, when the gateway's own check knows it (OpenAI's
        #: ``param``: ``max_tokens``, ``messages[0].content``); the Anthropic shape has none
        self.param = param
        #: the request's own audit lines already say how it ended
        self.audited = False


def error_body(protocol: Protocol, err: GatewayError) -> dict[str, Any]:
    openai_type, anthropic_type = _TYPES[err.kind]
    if protocol == "messages":
        return {"type": "error", "error": {"type": anthropic_type, "message": err.message}}
    return {
        "error": {
            "message": err.message,
            "type": openai_type,
            "param": err.param,
            "code": err.code or err.kind,
        }
    }


#: the kinds a client must not repeat unchanged: each would be refused again (a wrong
#: token, bad input, a spent budget). Said with ``x-should-retry: false``, which both
#: SDKs read: Claude Code retried a 401 for minutes, printing nothing.
_FINAL = frozenset({"invalid_request", "authentication", "not_found", "too_large", "budget"})


def error_headers(err: GatewayError) -> dict[str, str]:
    """The headers an error answer carries."""
    return {"x-should-retry": "false"} if err.kind in _FINAL else {}
