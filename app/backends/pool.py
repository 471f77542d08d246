"""Several endpoints of one local runtime (two GPU boxes serving the same model).

:class:`EndpointPool` keeps which endpoints are in cooldown and how many requests each
has in flight; a request goes to the healthy one with the fewest (ties in turn).
:class:`PooledBackend` serves a model over the pool: when its endpoint fails, that
endpoint is marked down (a ``degradation`` audit line says so, before the next one is
tried) and the request moves to the next healthy endpoint of the same runtime. Only when
none is left does the error reach the router, which marks the runtime down and walks the
runtime chain, as for a runtime with one endpoint: never to the cloud.

A failure after some of the reply was streamed moves the request too, as the runtime
fallback does: the caller sees the reply start again from the next endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from app.backends.base import Backend, BackendError, ChatRequest, ChatResult, Delta, Health
from app.clock import Clock

#: errors that say nothing about the endpoint's health: the request's own (too long for
#: the window, refused as invalid: the next endpoint refuses it too), or a cancel
NOT_THE_ENDPOINT = frozenset({"context_length", "bad_request", "cancelled"})
#: ``on_down(url, error, endpoints still up)``: the audit line, written before moving on
OnDown = Callable[[str, BackendError, int], Awaitable[None]]


class EndpointPool:
    def __init__(self, runtime: str, urls: list[str], clock: Clock, cooldown_s: float) -> None:
        self.runtime = runtime
        self.urls = list(urls)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._turn = 0

    def is_up(self, url: str) -> bool:
        return self._clock.monotonic() >= self._down_until[url]

    def healthy(self) -> list[str]:
        return [u for u in self.urls if self.is_up(u)]

    def pick(self, exclude: set[str] | None = None) -> str | None:
        """The healthy endpoint with the fewest requests in flight (ties: in turn)."""
        ready = [u for u in self.healthy() if u not in (exclude or ())]
        if not ready:
            return None
        self._turn += 1
        n = len(self.urls)
        order = {u: (self.urls.index(u) - self._turn) % n for u in ready}
        return min(ready, key=lambda u: (self._in_flight[u], order[u]))

    def mark_down(self, url: str) -> None:
        self._down_until[url] = self._clock.monotonic() + self.cooldown_s

    def begin(self, url: str) -> None:
        self._in_flight[url] += 1

    def end(self, url: str) -> None:
        self._in_flight[url] -= 1


class PooledBackend:
    """One model served by every endpoint of a runtime (a :class:`Backend`)."""

    def __init__(self, pool: EndpointPool, backends: Mapping[str, Backend], on_down: OnDown):
        self.pool = pool
        self._backends = dict(backends)
        self._on_down = on_down
        first = next(iter(self._backends.values()))
        self.model_id: str = first.model_id
        self.runtime: str = first.runtime

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        tried: set[str] = set()
        while True:
            url = self.pool.pick(tried)
            if url is None:
                raise BackendError("connect", f"every {self.pool.runtime} endpoint is down")
            tried.add(url)
            self.pool.begin(url)
            try:
                async for item in self._backends[url].stream(request):
                    yield item
                return
            except BackendError as exc:
                if exc.kind in NOT_THE_ENDPOINT:
                    raise
                self.pool.mark_down(url)
                left = len([u for u in self.pool.healthy() if u not in tried])
                await self._on_down(url, exc, left)
                if not left:
                    raise
            finally:
                self.pool.end(url)

    async def health(self) -> Health:
        for url in self.pool.healthy():
            health = await self._backends[url].health()
            if health.ok:
                return health
        return Health(ok=False, detail=f"no {self.pool.runtime} endpoint answers")

    async def context_window(self) -> int | None:
        for url in self.pool.healthy():
            window = await self._backends[url].context_window()
            if window:
                return window
        return None

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
