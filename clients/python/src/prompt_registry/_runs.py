"""Run logging: a bounded buffer the application appends to, and one
thread that sends it in batches through ``POST /v1/runs/batch``.

``log_run`` only appends a small dict: ids, timestamps and JSON are made on
the sender thread. A full buffer drops its oldest run and counts it, so the
application never waits for the registry. Each run gets its id before its
first send, so a retry after a lost answer is stored once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import inspect
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from . import _http, _otel
from ._core import Metrics
from ._errors import ApiError, RegistryUnavailable
from ._prompt import Prompt


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): the first 48 bits are the time in milliseconds,
    so the registry files the run under the month it was made."""
    value = (time.time_ns() // 1_000_000 & (1 << 48) - 1) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC 4122 variant
    return str(uuid.UUID(int=value))


log = logging.getLogger("prompt_registry")

_INDEX = re.compile(r"^runs\[(\d+)\]")

F = TypeVar("F", bound=Callable[..., Any])


class RunQueue:
    def __init__(
        self,
        http: httpx.Client,
        policy: _http.RetryPolicy,
        metrics: Metrics,
        *,
        capacity: int,
        batch_size: int,
        flush_interval: float,
        max_attempts: int,
        flush_at_exit_seconds: float,
    ) -> None:
        self._http = http
        self._policy = policy
        self._metrics = metrics
        self._capacity = capacity
        self._batch_size = min(batch_size, 1000)
        self._interval = flush_interval
        self._max_attempts = max_attempts
        self._exit_timeout = flush_at_exit_seconds
        self._queue: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._sending = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        atexit.register(self._at_exit)

    def put(self, run: dict[str, Any]) -> None:
        queue = self._queue
        if len(queue) >= self._capacity:
            # deque(maxlen) drops the oldest on append.
            self._metrics.runs_dropped += 1
        queue.append(run)
        self._metrics.runs_logged += 1
        if self._thread is None:
            self._start()
        if len(queue) >= self._batch_size:
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="prompt-registry-runs", daemon=True)
                self._thread.start()

    def pending(self) -> int:
        return len(self._queue) + self._sending

    def flush(self, timeout: float | None = None) -> bool:
        """Sends everything buffered; ``True`` when nothing is left."""
        if self._thread is None:
            return not self._queue
        self._wake.set()
        with self._idle:
            return self._idle.wait_for(lambda: self.pending() == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        drained = self.flush(timeout)
        self._closed = True
        self._wake.set()
        atexit.unregister(self._at_exit)
        return drained

    def _at_exit(self) -> None:
        if self.pending() and not self.flush(self._exit_timeout):
            log.warning("%d runs were not sent before exit", self.pending())

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            while self._queue:
                batch = self._take()
                try:
                    self._send(batch)
                except Exception:  # the sender must outlive any bug in one batch
                    log.exception("could not send %d runs", len(batch))
                    self._metrics.runs_failed += len(batch)
                finally:
                    self._sending = 0
            with self._idle:
                self._idle.notify_all()
            if self._closed:
                return

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        queue = self._queue
        # _sending is set before the buffer shrinks, so `pending()` never
        # reads zero while runs are in hand.
        self._sending = min(len(queue), self._batch_size)
        while queue and len(batch) < self._batch_size:
            try:
                batch.append(queue.popleft())
            except IndexError:
                break
        self._sending = len(batch)
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> None:
        for run in batch:
            run.setdefault("id", uuid7())
            started = run.get("started_at")
            if isinstance(started, float):
                run["started_at"] = dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat()  # noqa: UP017
        attempt = 0
        while batch:
            try:
                response = _http.send(
                    self._http, self._policy, "POST", "/v1/runs/batch", json={"runs": batch}
                )
            except RegistryUnavailable as e:
                attempt += 1
                if attempt >= self._max_attempts:
                    log.warning("dropping %d runs after %d attempts: %s", len(batch), attempt, e)
                    self._metrics.runs_failed += len(batch)
                    return
                time.sleep(min(self._policy.backoff * 2**attempt, 10.0))
                continue
            if response.status_code in (200, 201):
                self._metrics.runs_sent += len(batch)
                return
            error = _http.problem(response)
            bad = _bad_indices(error) if response.status_code == 422 else set()
            if not bad or len(bad) >= len(batch):
                log.warning("the registry refused %d runs: %s", len(batch), error)
                self._metrics.runs_rejected += len(batch)
                return
            # One invalid run refuses the whole batch: drop it, send the rest.
            log.warning("the registry refused %d runs: %s", len(bad), error)
            self._metrics.runs_rejected += len(bad)
            batch = [run for i, run in enumerate(batch) if i not in bad]


def _bad_indices(error: ApiError) -> set[int]:
    found = set()
    for e in error.errors:
        m = _INDEX.match(str(e.get("field", "")))
        if m:
            found.add(int(m.group(1)))
    return found


class Run:
    """A call being timed; set ``output``, ``model``, tokens or ``metadata``
    on it before the block ends."""

    def __init__(
        self,
        resolve: Callable[[], Prompt | None],
        log_run: Callable[..., None],
        fields: dict[str, Any],
    ) -> None:
        self._resolve = resolve
        self._log_run = log_run
        self.prompt: Prompt | None = None
        self.input: Mapping[str, Any] | None = fields.pop("input", None)
        self.output: Any = None
        self.model: str | None = fields.pop("model", None)
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cost_usd: str | float | None = None
        self.metadata: dict[str, Any] | None = fields.pop("metadata", None)
        self.tags: Sequence[str] | None = fields.pop("tags", None)
        self._started = 0.0
        self._wall = 0.0

    def _enter(self, prompt: Prompt | None) -> None:
        self.prompt = prompt
        if prompt is not None:
            _otel.annotate(prompt.name, prompt.version, prompt.label)
        self._wall = time.time()
        self._started = time.perf_counter()

    def _exit(self, exc: BaseException | None) -> None:
        latency_ms = (time.perf_counter() - self._started) * 1000.0
        if self.prompt is None:
            return
        self._log_run(
            self.prompt,
            status="error" if exc is not None else "success",
            error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
            latency_ms=latency_ms,
            input=self.input,
            output=self.output,
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
            metadata=self.metadata,
            tags=self.tags,
            started_at=self._wall,
        )


class RunTimer:
    """``with``, ``async with``, or a decorator: times a call and logs it as
    a run of the prompt version and label it was served under."""

    def __init__(
        self,
        resolve: Callable[[], Prompt | None],
        resolve_async: Callable[[], Awaitable[Prompt | None]] | None,
        log_run: Callable[..., None],
        fields: dict[str, Any],
    ) -> None:
        self._resolve = resolve
        self._resolve_async = resolve_async
        self._log_run = log_run
        self._fields = fields
        self._local = threading.local()

    def _new(self) -> Run:
        return Run(self._resolve, self._log_run, dict(self._fields))

    def __enter__(self) -> Run:
        run = self._new()
        self._stack().append(run)
        run._enter(self._resolve())
        return run

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack().pop()._exit(exc)

    async def __aenter__(self) -> Run:
        run = self._new()
        self._stack().append(run)
        prompt = await self._resolve_async() if self._resolve_async is not None else self._resolve()
        run._enter(prompt)
        return run

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack().pop()._exit(exc)

    def _stack(self) -> list[Run]:
        stack: list[Run] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def __call__(self, func: F) -> F:
        """As a decorator: each call is one run; its return value is the output
        when it is JSON (a string, number, list or dict)."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                run = self._new()
                prompt = await self._resolve_async() if self._resolve_async is not None else self._resolve()
                run._enter(prompt)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as e:
                    run._exit(e)
                    raise
                run.output = _json_output(result)
                run._exit(None)
                return result

            return cast(F, timed_async)

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            run = self._new()
            run._enter(self._resolve())
            try:
                result = func(*args, **kwargs)
            except BaseException as e:
                run._exit(e)
                raise
            run.output = _json_output(result)
            run._exit(None)
            return result

        return cast(F, timed)


def _json_output(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, list, dict)) and not isinstance(value, bool) else None
