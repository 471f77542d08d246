"""What counts as a host that said nothing (``BackendError.no_answer``), which rests the
host's other models for the cooldown (app.router.cloud_step): a transport timeout before
any reply. Not a 408 or an error event (the host answered: a review found each rested
every model of the host, its line saying it never answered), nor a wait for this
process's own connection pool, nor a timeout mid-stream."""

from __future__ import annotations

import httpx
import httpx2
import openai

from app.backends.openai_compat import _SDK_ERRORS
from app.backends.provider_errors import ErrorMapper
from app.clock import SystemClock

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
MAPPER = ErrorMapper(
    _SDK_ERRORS,
    label="m (deepseek)",
    base_url="http://127.0.0.1:9",
    api_key=None,
    clock=SystemClock(),
)


def _wrapped(cause: BaseException) -> openai.APITimeoutError:
    err = openai.APITimeoutError(request=REQUEST)
    err.__cause__ = cause
    return err


def test_a_read_timeout_before_any_reply_is_no_answer() -> None:
    err = MAPPER.map(_wrapped(httpx.ReadTimeout("read", request=REQUEST)), started=False)
    assert err.kind == "timeout" and err.no_answer
    raw = MAPPER.map(httpx.ConnectTimeout("connect", request=REQUEST), started=False)
    assert raw.kind == "timeout" and raw.no_answer


def test_what_a_host_answered_or_our_own_pool_is_not_no_answer() -> None:
    mid = MAPPER.map(_wrapped(httpx.ReadTimeout("read", request=REQUEST)), started=True)
    assert mid.kind == "timeout" and not mid.no_answer
    pool = MAPPER.map(_wrapped(httpx.PoolTimeout("pool", request=REQUEST)), started=False)
    assert pool.kind == "timeout" and not pool.no_answer
    late = MAPPER.status_error(408, {"error": {"message": "request timeout"}}, None)
    assert late.kind == "timeout" and not late.no_answer


def test_a_timeout_after_the_request_went_out_is_accepted_one_before_is_not() -> None:
    """``accepted``: the provider took the request (sent whole, then no reply in time, or
    its stream went quiet), so it may process and bill it: the cloud step settles such a
    try at its estimate. A time-out to connect, to write it, or for a pooled connection
    sent nothing it would process; nor did a 408 (the host did not take it)."""
    taken = [
        MAPPER.map(_wrapped(httpx.ReadTimeout("read", request=REQUEST)), started=False),
        MAPPER.map(httpx2.ReadTimeout("read"), started=False),  # (aiohttp's, translated)
        MAPPER.map(_wrapped(httpx.ReadTimeout("read", request=REQUEST)), started=True),
        MAPPER.map(httpx.ConnectTimeout("connect", request=REQUEST), started=True),
    ]
    assert [(e.kind, e.accepted) for e in taken] == [("timeout", True)] * 4
    not_sent = [
        MAPPER.map(_wrapped(httpx.ConnectTimeout("connect", request=REQUEST)), started=False),
        MAPPER.map(_wrapped(httpx.WriteTimeout("write", request=REQUEST)), started=False),
        MAPPER.map(_wrapped(httpx.PoolTimeout("pool", request=REQUEST)), started=False),
        MAPPER.map(httpx.ConnectError("refused", request=REQUEST), started=False),
        MAPPER.status_error(408, {"error": {"message": "request timeout"}}, None),
    ]
    assert [e.accepted for e in not_sent] == [False] * 5
