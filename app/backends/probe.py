"""One synchronous health probe of an OpenAI-compatible endpoint, for ``switchyard local
status`` and for waiting on a server the launcher started.

vLLM answers ``/health``; llama.cpp's server has none, so ``/v1/models`` answering is
enough. The client comes from the guarded factory, so under local_only a remote
endpoint is reported ``refused`` without a packet leaving (GR-009).
"""

from __future__ import annotations

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
            r = http.get(f"{root}/health")
            latency = (time.perf_counter() - started) * 1000
            health_ok = r.status_code == 200
            models_r = http.get(f"{base_url}/models")
            code = r.status_code if health_ok else models_r.status_code
            if not health_ok and models_r.status_code != 200:
                return EndpointStatus(
                    runtime=runtime,
                    base_url=base_url,
                    state="error",
                    latency_ms=round(latency, 1),
                    status_code=code,
                    detail=f"/health {r.status_code}, /v1/models {models_r.status_code}",
                )
            return EndpointStatus(
                runtime=runtime,
                base_url=base_url,
                state="up",
                latency_ms=round(latency, 1),
                status_code=code,
                models=_model_ids(models_r),
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
                runtime=runtime, base_url=base_url, state="error", detail=type(exc).__name__
            )
    finally:
        if own:
            http.close()


def _model_ids(r: httpx.Response) -> list[str]:
    if r.status_code != 200:
        return []
    try:
        data = r.json().get("data", [])
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError, TypeError):
        return []
