"""Which backend object serves a (model, runtime) pair, and what is reachable now.

This is the router's :class:`~app.router.service.BackendResolver`. It builds every HTTP
client through the guarded factory (GR-009), reads API keys from the usual variables by
name only, and probes local runtimes with a short, cached health check.

Making a backend the first time imports its SDK (``anthropic`` takes seconds, ``openai``
one), and the shared HTTP client imports the HTTP stack: the router makes a pair's
backend on a worker thread the first time (``Router.call``), and the probes make the
client and read the embedded model off the loop, so a gateway serving others never
stalls on an import. :meth:`backend` may thus run on a worker thread while the loop asks
for other pairs: a made backend is read without a lock, and making one (or the client)
holds a lock the loop never waits on for a pair that is made already.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from app.audit.types import AuditSink
from app.backends.base import Backend, BackendError
from app.backends.pool import EndpointPool, PooledBackend
from app.backends.runtimes import api_root, not_served_keys, resolve_url, resolve_urls
from app.clock import Clock, SystemClock
from app.counted import counted
from app.policy.schema import Policy

if TYPE_CHECKING:
    import httpx2

    from app.backends.http import LocalOnly

# A refused port fails at once; the timeout only bites on a server that accepts and
# stalls. 0.5 s marked a busy vLLM (and a loaded CI box's loopback fake) down and
# sent the turn to the fallback model, so the bound is 2 s for both requests together.
PROBE_TIMEOUT_S = 2.0
PROBE_TTL_S = 5.0
#: how long closing waits for a backend (or the client) a worker thread is making
CLOSE_WAIT_S = 10.0

log = logging.getLogger(__name__)


def _closed_error(what: str) -> BackendError:
    why = "the backends are closed (Switchyard is shutting down)"
    return BackendError("cancelled", f"{what}: {why}")


class BackendRegistry:
    def __init__(
        self,
        policy: Policy,
        *,
        local_only: LocalOnly,
        audit: AuditSink | None = None,
        session: str = "",
        n_threads: int | None = None,
        #: runtime id → URL that beats the policy's (``runtimes.url_overrides(settings)``)
        runtime_urls: dict[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock or SystemClock()
        self._n_threads = n_threads
        self._urls = {
            rid: resolve_url(policy, rid, runtime_urls or {}) or "" for rid in policy.runtimes
        }
        # runtimes with several endpoints (two GPU boxes): spread, with failover (pool.py)
        self._audit, self._session = audit, session
        self._pools: dict[str, EndpointPool] = {}
        for rid in policy.runtimes:
            urls = resolve_urls(policy, rid, runtime_urls or {})
            if len(urls) > 1:
                self._urls[rid] = urls[0]
                self._pools[rid] = EndpointPool(rid, urls, self._clock, _cooldown(policy))
        # One guarded client for every HTTP backend: the SDKs take httpx2 clients. Made on
        # first use: the HTTP stack (and its TLS context) costs a start-up that serves no
        # HTTP backend, e.g. the workbench's first frame, a third of a second.
        self._local_only = local_only
        self._http: httpx2.AsyncClient | None = None
        self._backends: dict[tuple[str, str], Backend] = {}
        # held while a backend is made (on a worker thread: an SDK import) and while the
        # client is made: each made once, whichever thread asks first
        self._making = threading.Lock()
        #: set by aclose(): nothing is made or handed out after it (a backend made while
        #: it closed the others would never be closed)
        self._closed = False
        self._making_client = threading.Lock()
        self._probes: dict[str, tuple[float, bool]] = {}
        self._windows: dict[str, int] = {}
        #: per local runtime up, ``runtime:<id>:<model>`` for each catalog model its
        #: server does not list (a llama.cpp server answers every request with the one
        #: model it loaded, whatever the request names: an audit found qwen2.5-coder-32b
        #: recorded for replies SmolLM2 wrote); decide() skips that step as not served
        self._not_served: dict[str, dict[str, bool]] = {}
        self._not_served_view: dict[str, bool] | None = None
        self.last_probe_ms = 0.0
        #: the key variables of the policy's providers; and unavailable()'s answer, with
        #: the policy and the variables' values it was worked out for
        self._key_names: tuple[Policy, tuple[str, ...], tuple[bytes, ...]] | None = None
        self._unavailable: tuple[Policy, tuple[object, ...], dict[str, str]] | None = None

    def url(self, runtime: str) -> str:
        return self._urls.get(runtime, "")

    # ── BackendResolver ──────────────────────────────────────────────────────────────

    def backend(self, model_id: str, runtime: str) -> Backend:
        if self._closed:  # (a made one is closed, or about to be)
            raise _closed_error(f"{model_id} on {runtime}")
        key = (model_id, runtime)
        made = self._backends.get(key)
        if made is None:
            with self._making:
                made = self._backends.get(key)
                if made is None:
                    if self._closed:
                        raise _closed_error(f"{model_id} on {runtime}")
                    made = self._backends[key] = self._make(model_id, runtime)
        return made

    def unavailable(self) -> dict[str, str]:
        """The cloud models whose key variable is not set, with why. Asked on every cloud
        step: worked out again only when the policy or a key variable has changed."""
        policy = self.policy
        names = self._key_names
        if names is None or names[0] is not policy:
            envs = sorted({p.api_key_env for p in policy.providers.values() if p.api_key_env})
            names = self._key_names = (policy, tuple(envs), tuple(map(os.fsencode, envs)))
        # What the variables hold now, as the environment's own dict holds them (what
        # os.environ.get reads, without its encoding and decoding: 2.9 -> 0.3 us for four
        # variables, on every cloud step); only compared with what was seen last.
        raw = getattr(os.environ, "_data", None)
        if isinstance(raw, dict):
            keys: tuple[object, ...] = tuple(map(raw.get, names[2]))
        else:
            keys = tuple(os.environ.get(name) for name in names[1])
        seen = self._unavailable
        if seen is None or seen[0] is not policy or seen[1] != keys:
            out: dict[str, str] = {}
            for mid, model in policy.models.items():
                if model.provider == "local":
                    continue
                env = policy.providers[model.provider].api_key_env
                if env and not os.environ.get(env):
                    out[mid] = f"unavailable: no key ({env} not set)"
            seen = self._unavailable = (policy, keys, out)
        return dict(seen[2])

    async def runtime_up(self, runtime: str) -> bool:
        now = self._clock.monotonic()
        cached = self._probes.get(runtime)
        if cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
        up = await self._probe(runtime)
        self._probes[runtime] = (now, up)
        self._not_served_view = None
        return up

    def context_windows(self) -> dict[str, int]:
        return dict(self._windows)

    def not_served(self) -> dict[str, bool]:
        """``runtime:<id>:<model>`` → False for each model a runtime that answered its last
        probe does not list (nothing when every server lists what it is asked for). Made
        once per probe, not per request (read, never changed, by the caller)."""
        view = self._not_served_view
        if view is None:
            view = {}
            for runtime, keys in self._not_served.items():
                probed = self._probes.get(runtime)
                if probed is not None and probed[1]:
                    view.update(keys)
            self._not_served_view = view
        return view

    async def aclose(self) -> None:
        """Close every backend made, and the shared client. Nothing is handed out or made
        after it begins: :meth:`backend` raises a ``cancelled`` :class:`BackendError`
        (never retried; the router audits the step as failed) and a probe answers down.
        A backend or the client being made on a worker thread (an SDK import) is waited
        for, the loop serving on, up to :data:`CLOSE_WAIT_S`, and closed with the rest."""
        self._closed = True  # (makers look at it under their lock)
        try:
            deadline = time.monotonic() + CLOSE_WAIT_S
            while not self._none_being_made():
                if time.monotonic() > deadline:
                    log.warning(
                        "a backend or the HTTP client still being made after %.0f s: left unclosed",
                        CLOSE_WAIT_S,
                    )
                    break
                await asyncio.sleep(0.01)
        finally:
            for backend in list(self._backends.values()):
                await backend.aclose()
            if self._http is not None:
                await self._http.aclose()

    def _none_being_made(self) -> bool:
        """Neither making lock is held (once closed, neither is taken to make anything)."""
        for lock in (self._making, self._making_client):
            if not lock.acquire(blocking=False):
                return False
            lock.release()
        return True

    @property
    def _client(self) -> httpx2.AsyncClient:
        client = self._http
        if client is None:
            with self._making_client:
                client = self._http
                if client is None:
                    if self._closed:
                        raise _closed_error("the HTTP client")
                    from app.backends.http import make_async_client_httpx2

                    client = self._http = make_async_client_httpx2(
                        local_only=self._local_only,
                        audit=self._audit,
                        session=self._session,
                        named=self.policy.named_local_hosts(),
                    )
        return client

    async def _client_off_loop(self) -> httpx2.AsyncClient:
        """The client, made on a worker thread the first time (the HTTP stack's import
        and its TLS context: a third of a second the loop would not serve anyone)."""
        client = self._http
        if client is None:
            client = await asyncio.to_thread(lambda: self._client)
        return client

    # ── internals ────────────────────────────────────────────────────────────────────

    async def _probe(self, runtime: str) -> bool:
        spec = self.policy.runtimes.get(runtime)
        if spec is None:
            return False
        if spec.kind == "llamacpp_inprocess":
            # off the loop: the backend module's import, a search of the installed
            # packages and the GGUF header's read
            ok, window = await asyncio.to_thread(_embedded)
            if window and spec.model:
                self._windows[self.policy.resolve(spec.model)] = window
            return ok
        pool = self._pools.get(runtime)
        if pool is None:
            return await self._probe_url(self.url(runtime), runtime)
        for url in pool.healthy():  # up when any endpoint not in cooldown answers
            if await self._probe_url(url, runtime):
                return True
        return False

    async def _probe_url(self, base: str, runtime: str = "") -> bool:
        if not base:
            return False
        try:
            client = await self._client_off_loop()
        except BackendError:  # closed: Switchyard is shutting down
            return False
        started = time.perf_counter()
        try:
            # httpx's timeout bounds each read: a server dripping its headers a byte at a
            # time held `ask` for ever; the probe as a whole gets the probe's time
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                health, models = await asyncio.gather(
                    client.get(f"{api_root(base)}/health", timeout=PROBE_TIMEOUT_S),
                    client.get(f"{base}/models", timeout=PROBE_TIMEOUT_S),
                    return_exceptions=True,  # both settle; neither is left to fail unobserved
                )
            if isinstance(health, BaseException):
                raise health
            if isinstance(models, BaseException):
                raise models
            # llama.cpp's server has no /health: /v1/models answering is enough
            ok = models.status_code == 200 and health.status_code in (200, 404)
            if ok:
                body = models.json()
                self._learn_windows(body)
                if runtime:
                    self._learn_served(runtime, body)
        except Exception:  # any transport failure (refused, timeout, local_only) = down
            ok = False
        self.last_probe_ms = (time.perf_counter() - started) * 1000
        return ok

    def _learn_windows(self, body: Any) -> None:
        """vLLM reports each served model's max_model_len: the window that really serves."""
        served = {m.served_name: mid for mid, m in self.policy.models.items()}
        served.update({mid: mid for mid in self.policy.models})
        data = body.get("data", []) if isinstance(body, dict) else []
        for entry in data if isinstance(data, list) else []:
            if not isinstance(entry, dict):
                continue
            mid = served.get(str(entry.get("id", "")))
            window = entry.get("max_model_len")
            if mid and isinstance(window, int) and window > 0:
                self._windows[mid] = window

    def _learn_served(self, runtime: str, body: Any) -> None:
        """Which catalog models ``runtime``'s server does not list (by the name each is
        asked for there, vLLM's served name or the launcher's catalog id). A server that
        lists nothing is taken at its word on nothing."""
        data = body.get("data", []) if isinstance(body, dict) else []
        listed = (
            {str(entry.get("id", "")) for entry in data if isinstance(entry, dict)}
            if isinstance(data, list)
            else set()
        )
        if not listed:
            self._not_served.pop(runtime, None)
            return
        self._not_served[runtime] = not_served_keys(self.policy, runtime, listed)

    def _make(self, model_id: str, runtime: str) -> Backend:
        model = self.policy.model(model_id)
        if runtime == "llamacpp_inprocess":
            from app.backends.llamacpp import LlamaCppBackend

            return LlamaCppBackend(model_id=model_id, n_threads=self._n_threads)
        from app.backends.openai_compat import OpenAICompatBackend, flavor_for

        if runtime != "cloud":
            spec = self.policy.runtimes[runtime]
            pool = self._pools.get(runtime)
            made = {
                url: OpenAICompatBackend(
                    model_id=model_id,
                    # the launcher serves llama.cpp models under their catalog id
                    served_name=model.served_name if spec.kind == "vllm" else model_id,
                    runtime=runtime,
                    flavor=flavor_for(runtime=spec.kind, provider=model.provider),
                    base_url=url,
                    api_key=None,
                    client=self._client,
                )
                for url in (pool.urls if pool else [self.url(runtime)])
            }
            if pool is None:
                return made[self.url(runtime)]
            return PooledBackend(pool, made, partial(self._endpoint_down, pool, model_id))
        provider = self.policy.providers[model.provider]
        key_env = provider.api_key_env
        api_key = os.environ.get(key_env) if key_env else None
        if provider.protocol == "anthropic":
            from app.backends.anthropic_backend import AnthropicBackend

            return AnthropicBackend(
                model_id=model_id,
                served_name=model.served_name,
                base_url=provider.base_url or "",
                api_key=api_key,
                key_env=key_env,
                client=self._client,
            )
        kwargs: dict[str, Any] = {}
        if model.reasoning_effort:
            kwargs["reasoning_effort"] = model.reasoning_effort
            kwargs["reasoning_tokens"] = self.policy.generation.reasoning_tokens(
                model.reasoning_effort
            )
        return OpenAICompatBackend(
            model_id=model_id,
            served_name=model.served_name,
            runtime="cloud",
            flavor=flavor_for(runtime=None, provider=model.provider),
            base_url=provider.base_url or "",
            api_key=api_key,
            key_env=key_env,
            client=self._client,
            **kwargs,
        )

    async def _endpoint_down(
        self, pool: EndpointPool, model_id: str, url: str, exc: BackendError, left: int
    ) -> None:
        """GR-005: one endpoint of a runtime failed and is marked down; said before the
        request moves to the next (the router says it when the whole runtime is down)."""
        if self._audit is None:
            return
        where = f"{pool.runtime} endpoint {url}"
        await self._audit.append(
            "degradation",
            session=self._session,
            from_=f"{model_id}@{pool.runtime}",
            to=None,
            reason_codes=["ENDPOINT_DOWN", f"ERR_{exc.kind.upper()}"],
            values={
                "runtime": pool.runtime,
                "endpoint": url,
                "error": exc.kind,
                "cooldown_s": pool.cooldown_s,
                "endpoints_up": left,
            },
            detail=f"{model_id} on {where} failed ({exc}); marked down for {pool.cooldown_s:g}s"
            + (f"; {counted(left, 'other endpoint')} up" if left else "; no other endpoint is up"),
        )


def _embedded() -> tuple[bool, int | None]:
    """Whether the embedded model can serve in process, and its window (blocking)."""
    from app.backends.llamacpp import embedded_window, find_embedded_gguf, llama_cpp_available

    ok = find_embedded_gguf() is not None and llama_cpp_available()
    return ok, embedded_window() if ok else None


def _cooldown(policy: Policy) -> float:
    rule = policy.retries.get("connect")
    return rule.cooldown_s if rule is not None else 30.0
