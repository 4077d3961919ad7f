"""``AsyncRegistry``: the same client for asyncio applications.

Its fetches run on the shared core's worker threads and are awaited, so a
cold fetch never blocks the event loop and one refresh serves every task
and thread that asks; a cache hit is answered without leaving the task.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ._core import Metrics, selector
from ._errors import RegistryError
from ._prompt import FallbackArg, Prompt
from ._runs import RunTimer
from ._split import bucket
from ._sync import Registry


class AsyncRegistry:
    """The asyncio twin of :class:`Registry`: the same arguments, the same
    methods (``get_prompt``, ``prefetch``, ``flush`` and ``close`` awaited;
    ``log_run`` and ``trace`` as they are, since they never wait)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        self._sync = Registry(base_url, api_key, **options)
        self._core = self._sync._core
        self._cache = self._core.cache
        self._timeout = self._sync._policy.timeout

    async def get_prompt(
        self,
        name: str,
        *,
        label: str | None = None,
        version: int | None = None,
        subject: str | None = None,
        fallback: FallbackArg | None = None,
        cache_ttl_seconds: float | None = None,
    ) -> Prompt:
        """As :meth:`Registry.get_prompt`."""
        if version is None and label is not None and label != "active":
            sel: str | int = label
        else:
            sel = selector(label, version)
        slot = self._cache.get((name, sel))
        if slot is not None:
            entry = slot.base
            if slot.split and subject is not None and isinstance(sel, str):
                entry = slot.arms.get(bucket(name, sel, subject))
            if entry is not None and entry.fresh_until > time.monotonic():
                return entry.prompt
        deadline = time.monotonic() + self._timeout
        while True:
            planned = self._core.plan(name, sel, subject, cache_ttl_seconds)
            if isinstance(planned, Prompt):
                return planned
            try:
                remaining = max(deadline - time.monotonic(), 0.0)
                # shield: a caller's timeout must not cancel a fetch others share.
                fetched = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(planned)), remaining)
            # Before 3.11 asyncio.TimeoutError is not the built-in one.
            except (asyncio.TimeoutError, RegistryError) as e:  # noqa: UP041
                settled = self._core.settle(name, sel, subject, None, e, fallback)
            else:
                settled = self._core.settle(name, sel, subject, fetched, None, fallback)
            if settled is not None:
                return settled

    async def prefetch(
        self, prompts: Iterable[str | tuple[str, str] | Mapping[str, Any]]
    ) -> list[Prompt | RegistryError]:
        """As :meth:`Registry.prefetch`."""
        items = list(prompts)
        return await asyncio.to_thread(self._sync.prefetch, items)

    def log_run(
        self,
        prompt: Prompt | str,
        *,
        version: int | None = None,
        label: str | None = None,
        status: str = "success",
        latency_ms: float = 0.0,
        input: Mapping[str, Any] | None = None,
        output: Any = None,
        error: str | None = None,
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cost_usd: str | float | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        started_at: float | dt.datetime | None = None,
        run_id: str | None = None,
    ) -> None:
        """As :meth:`Registry.log_run` (it only appends to a buffer)."""
        self._sync.log_run(
            prompt,
            version=version,
            label=label,
            status=status,
            latency_ms=latency_ms,
            input=input,
            output=output,
            error=error,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
            metadata=metadata,
            tags=tags,
            started_at=started_at,
            run_id=run_id,
        )

    def trace(
        self,
        prompt: Prompt | str,
        *,
        label: str | None = None,
        version: int | None = None,
        subject: str | None = None,
        input: Mapping[str, Any] | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> RunTimer:
        """As :meth:`Registry.trace`, with ``async with`` and async functions."""

        async def resolve() -> Prompt | None:
            if isinstance(prompt, Prompt):
                return prompt
            return await self.get_prompt(prompt, label=label, version=version, subject=subject)

        timer = self._sync.trace(
            prompt,
            label=label,
            version=version,
            subject=subject,
            input=input,
            model=model,
            metadata=metadata,
            tags=tags,
        )
        timer._resolve_async = resolve
        return timer

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """As :meth:`Registry.flush`, without blocking the event loop."""
        return await asyncio.to_thread(self._sync.flush, timeout)

    def metrics(self) -> Metrics:
        return self._sync.metrics()

    @property
    def push_connected(self) -> bool:
        return self._sync.push_connected

    async def wait_for_push(self, timeout: float = 5.0) -> bool:
        return await asyncio.to_thread(self._sync.wait_for_push, timeout)

    async def close(self, timeout: float | None = 10.0) -> None:
        await asyncio.to_thread(self._sync.close, timeout)

    async def __aenter__(self) -> AsyncRegistry:  # noqa: PYI034 (typing.Self is 3.11+)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
