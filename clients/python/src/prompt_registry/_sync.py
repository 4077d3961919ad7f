"""``Registry``: the blocking client."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from . import _http
from ._core import Core, Metrics, iter_items, selector
from ._errors import RegistryError
from ._otel import annotate
from ._prompt import FallbackArg, Prompt
from ._runs import RunQueue, RunTimer
from ._split import bucket


class Registry:
    """A client of one Prompt Registry server.

    Args:
        base_url: the server, ``http://127.0.0.1:8080``; ``PROMPT_REGISTRY_URL`` by default.
        api_key: a key with the ``read`` scope (and ``write`` to log runs);
            ``PROMPT_REGISTRY_API_KEY`` by default.
        timeout: the longest one fetch or batch send may take, retries included.
        max_retries: retries of a failed request within ``timeout``.
        backoff: the first pause between retries (then doubled).
        cache_ttl_seconds: how long a label's entry is served without asking;
            after that it is served while one background request revalidates it.
        push: follow the server's event stream, so a label move reaches the
            cache as soon as it commits (off when the server has no stream).
        stale_log_interval: at most one "serving stale" log line per prompt per interval.
        stale_retry_seconds: after a failed refresh, how long the stale copy is
            served before the next attempt.
        run_buffer: most runs held for sending; a full buffer drops the oldest.
        run_batch_size: runs per batch request (at most 1,000).
        run_flush_interval: seconds between batch sends when the buffer is not full.
        run_max_attempts: sends of one batch before its runs are counted as failed.
        flush_at_exit_seconds: how long the interpreter's exit waits for buffered runs.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 3.0,
        max_retries: int = 2,
        backoff: float = 0.1,
        cache_ttl_seconds: float = 60.0,
        push: bool = True,
        stale_log_interval: float = 60.0,
        stale_retry_seconds: float = 5.0,
        run_buffer: int = 100_000,
        run_batch_size: int = 500,
        run_flush_interval: float = 1.0,
        run_max_attempts: int = 6,
        flush_at_exit_seconds: float = 5.0,
    ) -> None:
        url = base_url or os.environ.get("PROMPT_REGISTRY_URL") or "http://127.0.0.1:8080"
        key = api_key if api_key is not None else os.environ.get("PROMPT_REGISTRY_API_KEY")
        self._policy = _http.RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        self._core = Core(
            url,
            key,
            policy=self._policy,
            cache_ttl_seconds=cache_ttl_seconds,
            push=push,
            stale_log_interval=stale_log_interval,
            stale_retry_seconds=stale_retry_seconds,
        )
        self._cache = self._core.cache
        self._runs = RunQueue(
            self._core.http,
            self._policy,
            self._core.metrics,
            capacity=run_buffer,
            batch_size=run_batch_size,
            flush_interval=run_flush_interval,
            max_attempts=run_max_attempts,
            flush_at_exit_seconds=flush_at_exit_seconds,
        )

    # -- prompts ---------------------------------------------------------

    def get_prompt(
        self,
        name: str,
        *,
        label: str | None = None,
        version: int | None = None,
        subject: str | None = None,
        fallback: FallbackArg | None = None,
        cache_ttl_seconds: float | None = None,
    ) -> Prompt:
        """The version ``label`` (default ``production``) or ``version`` points at.

        A fresh cached entry is returned without I/O. ``subject`` picks a
        split label's arm, as the server does.

        Raises:
            PromptNotFound: no such prompt, label (a removed one included) or version.
            RegistryUnavailable: unreachable, with nothing cached and no ``fallback``.
            AuthenticationError: the key was refused.
        """
        # The hot path: two dictionary lookups and a clock read.
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
        return self._get_slow(name, sel, subject, fallback, cache_ttl_seconds)

    def _get_slow(
        self,
        name: str,
        sel: str | int,
        subject: str | None,
        fallback: FallbackArg | None,
        ttl: float | None,
    ) -> Prompt:
        deadline = time.monotonic() + self._policy.timeout
        while True:
            planned = self._core.plan(name, sel, subject, ttl)
            if isinstance(planned, Prompt):
                return planned
            try:
                fetched = planned.result(timeout=max(deadline - time.monotonic(), 0.0))
            except (FutureTimeout, RegistryError) as e:
                settled = self._core.settle(name, sel, subject, None, e, fallback)
            else:
                settled = self._core.settle(name, sel, subject, fetched, None, fallback)
            if settled is not None:
                return settled

    def prefetch(
        self, prompts: Iterable[str | tuple[str, str] | Mapping[str, Any]]
    ) -> list[Prompt | RegistryError]:
        """Loads many prompts in batch calls (100 per request) and caches them.

        Each item is a name (its ``production``), ``(name, label)``, or
        ``{"name", "label" | "version", "subject"}``. Returns, in order, each
        prompt or the error it met.
        """
        return self._core.resolve_batch(iter_items(prompts))

    # -- runs ------------------------------------------------------------

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
        """Buffers one run for the background sender; never blocks on the network.

        With a :class:`Prompt`, the run is tied to the version and label it
        was served under (a fallback prompt has none, and is not logged).
        """
        # Built here rather than through a helper: this is the call an
        # application makes per request, and each layer costs a microsecond.
        if isinstance(prompt, Prompt):
            if prompt.is_fallback:
                return
            run: dict[str, Any] = {"prompt": prompt.name, "version": prompt.version}
            if prompt.label is not None:
                run["label"] = prompt.label
            annotate(prompt.name, prompt.version, prompt.label)
        else:
            run = {"prompt": prompt}
            if version is not None:
                run["version"] = version
            if label is not None:
                run["label"] = label
        run["status"] = status
        run["latency_ms"] = latency_ms
        if input is not None:
            run["input"] = dict(input)
        if output is not None:
            run["output"] = output
        if error is not None:
            run["error"] = error
        if model is not None:
            run["model"] = model
        if prompt_tokens is not None:
            run["prompt_tokens"] = prompt_tokens
        if completion_tokens is not None:
            run["completion_tokens"] = completion_tokens
        if cost_usd is not None:
            run["cost_usd"] = str(cost_usd)
        if metadata is not None:
            run["metadata"] = dict(metadata)
        if tags is not None:
            run["tags"] = list(tags)
        if started_at is not None:
            run["started_at"] = started_at.isoformat() if isinstance(started_at, dt.datetime) else started_at
        if run_id is not None:
            run["id"] = run_id
        self._runs.put(run)

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
        """Times a block (``with registry.trace(prompt) as run:``) or each call
        of a function (``@registry.trace("name")``) and logs it as a run; an
        exception is logged as an ``error`` run and raised on. Given a name,
        the prompt is looked up (from the cache) at the start of each run."""

        def resolve() -> Prompt | None:
            if isinstance(prompt, Prompt):
                return prompt
            return self.get_prompt(prompt, label=label, version=version, subject=subject)

        fields = {"input": input, "model": model, "metadata": metadata, "tags": tags}
        return RunTimer(resolve, None, self.log_run, fields)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Sends every buffered run now; ``True`` when none is left."""
        return self._runs.flush(timeout)

    # -- the rest --------------------------------------------------------

    def metrics(self) -> Metrics:
        return self._core.metrics.snapshot()

    @property
    def push_connected(self) -> bool:
        """Whether the event stream is connected now."""
        return self._core.push_connected.is_set()

    def wait_for_push(self, timeout: float = 5.0) -> bool:
        """Waits until the event stream is connected; ``False`` if it is not within ``timeout``."""
        return self._core.push_connected.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flushes the runs, stops the background threads and closes connections."""
        self._runs.close(timeout)
        self._core.close()

    def __enter__(self) -> Registry:  # noqa: PYI034 (typing.Self is 3.11+)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
