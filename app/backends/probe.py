"""One synchronous health probe of an OpenAI-compatible endpoint, for ``switchyard local
status`` and for waiting on a server the launcher started.

vLLM answers ``/health``; llama.cpp's server has none, so ``/v1/models`` answering is
enough. The client comes from the guarded factory, so under local_only a remote
endpoint is reported ``refused`` without a packet leaving (GR-009).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Literal

import httpx
from pydantic import Field

from app.backends.base import Frozen
from app.backends.http import make_client
from app.backends.runtimes import api_root
from app.errors import LocalOnlyViolation

PROBE_TIMEOUT_S = 1.0


class EndpointStatus(Frozen):
    runtime: str
    base_url: str
    state: Literal["up", "down", "refused", "error"]
    latency_ms: float | None = None
    status_code: int | None = None
    models: list[str] = Field(default_factory=list)
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == "up"


def probe_endpoint(
    runtime: str,
    base_url: str,
    *,
    local_only: bool = False,
    timeout: float = PROBE_TIMEOUT_S,
    client: httpx.Client | None = None,
) -> EndpointStatus:
    """GET /health (vLLM), else /v1/models (llama.cpp's server has no /health)."""
    own = client is None
    http = client or make_client(local_only=local_only, timeout=timeout)
    root = api_root(base_url)
    started = time.perf_counter()
    try:
        try:
            health, _ = _fetch(http, f"{root}/health", timeout)
            latency = (time.perf_counter() - started) * 1000
            health_ok = health == 200
            models_code, models_body = _fetch(http, f"{base_url}/models", timeout)
            code = health if health_ok else models_code
            if not health_ok and models_code != 200:
                return EndpointStatus(
                    runtime=runtime,
                    base_url=base_url,
                    state="error",
                    latency_ms=round(latency, 1),
                    status_code=code,
                    detail=f"/health {health}, /v1/models {models_code}",
                )
            return EndpointStatus(
                runtime=runtime,
                base_url=base_url,
                state="up",
                latency_ms=round(latency, 1),
                status_code=code,
                models=_model_ids(models_code, models_body),
            )
        except httpx.InvalidURL as exc:  # a setting's typo: not an HTTPError
            return EndpointStatus(
                runtime=runtime, base_url=base_url, state="error", detail=f"not a URL: {exc}"
            )
        except httpx.ConnectError as exc:
            if isinstance(exc, LocalOnlyViolation):
                return EndpointStatus(
                    runtime=runtime, base_url=base_url, state="refused", detail=str(exc)
                )
            return EndpointStatus(
                runtime=runtime, base_url=base_url, state="down", detail="connection refused"
            )
        except httpx.TimeoutException:
            return EndpointStatus(
                runtime=runtime,
                base_url=base_url,
                state="down",
                detail=f"no answer in {timeout:g}s",
            )
        except httpx.HTTPError as exc:
            return EndpointStatus(
                runtime=runtime, base_url=base_url, state="error", detail=_describe(exc)
            )
    finally:
        if own:
            http.close()


def _describe(exc: httpx.HTTPError) -> str:
    """What went wrong, in words: the detail was the bare class name
    (``UnsupportedProtocol`` for ``SWITCHYARD_VLLM_URL=notaurl``)."""
    if isinstance(exc, httpx.UnsupportedProtocol):  # httpx's words say the same again
        return "not an http:// or https:// URL"
    if isinstance(exc, httpx.ProxyError):
        what = "the proxy failed"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = "the answer is not HTTP"
    elif isinstance(exc, httpx.NetworkError):
        what = "the connection failed"
    elif isinstance(exc, httpx.TooManyRedirects):
        what = "too many redirects"
    elif isinstance(exc, httpx.DecodingError):
        what = "the answer could not be decoded"
    else:
        what = "the request failed"
    said = " ".join(str(exc).split())
    return f"{what}: {said}" if said else what


#: the most of a probe's answer that is read (a model list is a few kilobytes)
PROBE_MAX_BYTES = 1 << 20


def _fetch(http: httpx.Client, url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url``: its status and body, the whole of it within ``timeout``.

    httpx's timeout bounds each read, the wait for the headers too, so a server that
    sends a byte every half second kept `local status` (and `ask`, through the same
    probe) waiting for ever. The request runs on a thread of its own and is waited for
    ``timeout``: past it the probe answers ``down`` and the thread is left to its read (a
    daemon, which never holds the process; closing the client ends it)."""
    box: list[tuple[int, bytes] | BaseException] = []

    def work() -> None:
        try:
            box.append(_read(http, url, timeout))
        except BaseException as exc:  # handed to the caller, never printed by the thread
            box.append(exc)

    worker = threading.Thread(target=work, name="switchyard-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        raise httpx.ReadTimeout(f"no whole answer in {timeout:g}s")
    got = box[0]
    if isinstance(got, BaseException):
        raise got
    return got


def _read(http: httpx.Client, url: str, timeout: float) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    body = bytearray()
    with http.stream("GET", url) as r:
        for chunk in r.iter_bytes():
            body += chunk
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"no whole answer in {timeout:g}s")
            if len(body) > PROBE_MAX_BYTES:
                break  # enough to know it answers; the list is not that long
        return r.status_code, bytes(body)


def _model_ids(status: int, body: bytes) -> list[str]:
    if status != 200:
        return []
    try:
        data = json.loads(body).get("data", [])
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError, TypeError):
        return []
