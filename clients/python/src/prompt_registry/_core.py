"""The cache, the fetches behind it and the event stream that invalidates it.

Both registries share one ``Core``. Network I/O runs on the core's worker
threads (a small pool and one event-stream thread), so a refresh is one
job however many threads or tasks ask for it, and the async registry never
blocks its event loop; the only thing the application's own thread does
on a cache hit is two dictionary lookups and a clock read.

Cache keys are ``(name, label or version)``; a split label keeps one entry
per point of the split rule (``_split.bucket``), so every subject in a
point shares an entry and the server's choice for one subject is right for
all of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any, TypeAlias

import httpx

from . import _http
from ._errors import ApiError, PromptNotFound, RegistryError, RegistryUnavailable
from ._prompt import FallbackArg, Prompt, fallback_prompt
from ._split import bucket
from ._sse import SseParser

log = logging.getLogger("prompt_registry")

Selector: TypeAlias = str | int
#: (name, label or version): where a slot lives.
Key: TypeAlias = tuple[str, Selector]
#: (name, label or version, split point or None): one fetch.
FetchKey = tuple[str, Selector, int | None]

#: The events that change what a label, `latest` or a prompt serves.
WATCHED = "label.moved,label.removed,version.created,prompt.deleted"


@dataclass
class Metrics:
    """Counters since the registry was made (read with ``registry.metrics()``)."""

    fetches: int = 0
    not_modified: int = 0
    refresh_failures: int = 0
    stale_served: int = 0
    fallbacks_served: int = 0
    events: int = 0
    invalidations: int = 0
    runs_logged: int = 0
    runs_sent: int = 0
    runs_dropped: int = 0
    runs_rejected: int = 0
    runs_failed: int = 0

    def snapshot(self) -> Metrics:
        return Metrics(**{f.name: getattr(self, f.name) for f in fields(self)})


class Entry:
    """One cached prompt. Replaced whole when it changes, so a reader
    without the lock sees an old entry or a new one, never half of each."""

    __slots__ = ("etag", "fresh_until", "invalid", "prompt", "subject")

    def __init__(self, prompt: Prompt, etag: str | None, fresh_until: float, subject: str | None) -> None:
        self.prompt = prompt
        self.etag = etag
        self.fresh_until = fresh_until
        self.subject = subject
        # Set by an event: the server has moved on, so this entry is served
        # again only if the registry cannot be reached.
        self.invalid = False


class Slot:
    """What one (name, selector) holds: its entry, and a split label's arms."""

    __slots__ = ("arms", "base", "split")

    def __init__(self) -> None:
        self.base: Entry | None = None
        self.split = False
        self.arms: dict[int, Entry] = {}


def selector(label: str | None, version: int | None) -> Selector:
    if version is not None:
        if label is not None:
            raise ValueError("give `label` or `version`, not both")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"a version is a number from 1, not {version!r}")
        return version
    if label is None or label == "active":
        return "production"
    return label


class Core:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        policy: _http.RetryPolicy,
        cache_ttl_seconds: float,
        push: bool,
        stale_log_interval: float,
        stale_retry_seconds: float,
    ) -> None:
        headers = {"User-Agent": "prompt-registry-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.ttl = cache_ttl_seconds
        self.stale_log_interval = stale_log_interval
        self.stale_retry = stale_retry_seconds
        self.http = httpx.Client(base_url=self.base_url, headers=headers)
        self.cache: dict[Key, Slot] = {}
        self.metrics = Metrics()
        self._headers = headers
        self._lock = threading.Lock()
        self._inflight: dict[FetchKey, Future[tuple[Prompt, str | None]]] = {}
        # Bumped by each event about a key: a fetch that started before it
        # stores what it got as already invalid.
        self._generation: dict[Key, int] = {}
        self._stale_logged: dict[Key, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prompt-registry")
        self._closed = threading.Event()
        self.push_connected = threading.Event()
        self.push_supported: bool | None = None
        self._listener: threading.Thread | None = None
        self._stream_socket: socket.socket | None = None
        if push:
            self._listener = threading.Thread(target=self._listen, name="prompt-registry-events", daemon=True)
            self._listener.start()

    # -- lookups ---------------------------------------------------------

    def find(self, name: str, sel: Selector, subject: str | None) -> Entry | None:
        slot = self.cache.get((name, sel))
        if slot is None:
            return None
        if slot.split and subject is not None and isinstance(sel, str):
            return slot.arms.get(bucket(name, sel, subject))
        return slot.base

    def point(self, name: str, sel: Selector, subject: str | None) -> int | None:
        slot = self.cache.get((name, sel))
        if slot is not None and slot.split and subject is not None and isinstance(sel, str):
            return bucket(name, sel, subject)
        return None

    # -- fetching --------------------------------------------------------

    def start(
        self, name: str, sel: Selector, subject: str | None, ttl: float | None
    ) -> Future[tuple[Prompt, str | None]]:
        """A fetch of (name, sel) for subject: the one already running, or a new one."""
        point = self.point(name, sel, subject)
        key: FetchKey = (name, sel, point)
        with self._lock:
            running = self._inflight.get(key)
            if running is not None:
                return running
            entry = self.find(name, sel, subject)
            generation = self._generation.get((name, sel), 0)
            future = self._pool.submit(
                self._fetch,
                name,
                sel,
                point,
                subject,
                entry.etag if entry is not None else None,
                self.ttl if ttl is None else ttl,
                generation,
            )
            self._inflight[key] = future

        def done(f: Future[tuple[Prompt, str | None]]) -> None:
            with self._lock:
                if self._inflight.get(key) is f:
                    del self._inflight[key]

        future.add_done_callback(done)
        return future

    def plan(
        self, name: str, sel: Selector, subject: str | None, ttl: float | None
    ) -> Prompt | Future[tuple[Prompt, str | None]]:
        """The cached prompt to serve now, or the fetch to wait for.

        An entry past its TTL is served at once while one background fetch
        revalidates it; an entry an event invalidated, or none, is waited for.
        """
        entry = self.find(name, sel, subject)
        if entry is not None and not entry.invalid:
            if entry.fresh_until <= time.monotonic():
                self.start(name, sel, subject, ttl).add_done_callback(_consume)
            return entry.prompt
        return self.start(name, sel, subject, ttl)

    def settle(
        self,
        name: str,
        sel: Selector,
        subject: str | None,
        fetched: tuple[Prompt, str | None] | None,
        error: BaseException | None,
        fallback: FallbackArg | None,
    ) -> Prompt | None:
        """What a finished (or timed-out) fetch means for the caller; ``None``
        to fetch again (another subject's split arm was fetched)."""
        if fetched is not None:
            prompt, fetched_for = fetched
            if (
                subject is None
                or not prompt.split
                or not isinstance(sel, str)
                or (fetched_for is not None and bucket(name, sel, fetched_for) == bucket(name, sel, subject))
            ):
                return prompt
            return None
        if isinstance(error, ApiError):
            raise error
        why = str(error) or type(error).__name__
        entry = self.find(name, sel, subject)
        if entry is not None:
            self.note_stale(name, sel, why)
            return entry.prompt.stale()
        if fallback is not None:
            self.metrics.fallbacks_served += 1
            log.warning("serving the fallback of %s@%s: %s", name, sel, why)
            return fallback_prompt(fallback, name, sel if isinstance(sel, str) else None)
        if isinstance(error, RegistryUnavailable):
            raise error
        raise RegistryUnavailable(f"{name}@{sel}: {why}") from error

    def _fetch(
        self,
        name: str,
        sel: Selector,
        point: int | None,
        subject: str | None,
        etag: str | None,
        ttl: float,
        generation: int,
    ) -> tuple[Prompt, str | None]:
        path = f"{_http.prompt_path(name)}/versions/{sel}"
        try:
            response = _http.send(
                self.http,
                self.policy,
                "GET",
                path,
                params={"subject": subject} if subject is not None else None,
                headers={"If-None-Match": etag} if etag else None,
            )
        except RegistryUnavailable as e:
            self._keep_stale(name, sel, point, str(e))
            raise
        self.metrics.fetches += 1
        if response.status_code == 404:
            self._forget(name, sel, point)
        if response.status_code not in (200, 304):
            raise _http.problem(response)
        with self._lock:
            current = self._entry_at(name, sel, point)
            stale_generation = self._generation.get((name, sel), 0) != generation
            fresh_until = math.inf if isinstance(sel, int) else time.monotonic() + ttl
            if response.status_code == 304 and current is not None:
                self.metrics.not_modified += 1
                prompt = current.prompt
                if prompt.is_stale:
                    prompt = replace(prompt, is_stale=False)
                new_etag = current.etag
            elif response.status_code == 304:
                # Nothing to revalidate any more (invalidated meanwhile): fetch it whole.
                raise RegistryUnavailable(f"GET {path}: 304 for an entry no longer cached")
            else:
                split = response.headers.get("x-prompt-split") == "true"
                label = response.headers.get("x-prompt-label") or (sel if isinstance(sel, str) else None)
                if sel == "latest":
                    label = None
                prompt = Prompt.from_version(response.json(), label=label, split=split)
                new_etag = response.headers.get("etag")
            entry = Entry(prompt, new_etag, 0.0 if stale_generation else fresh_until, subject)
            entry.invalid = stale_generation
            self._store(name, sel, point, entry)
        return prompt, subject

    def _entry_at(self, name: str, sel: Selector, point: int | None) -> Entry | None:
        slot = self.cache.get((name, sel))
        if slot is None:
            return None
        return slot.base if point is None else slot.arms.get(point)

    def _store(self, name: str, sel: Selector, point: int | None, entry: Entry) -> None:
        """Under the lock."""
        slot = self.cache.get((name, sel)) or Slot()
        prompt = entry.prompt
        if point is None:
            slot.base = entry
            slot.split = prompt.split
            if not prompt.split:
                slot.arms.clear()
            elif entry.subject is not None and isinstance(sel, str):
                slot.arms[bucket(name, sel, entry.subject)] = entry
        else:
            slot.arms[point] = entry
            if slot.base is None:
                slot.base, slot.split = entry, True
        self.cache[(name, sel)] = slot

    def store_resolved(self, name: str, sel: Selector, subject: str | None, prompt: Prompt) -> None:
        """A prompt from a batch resolve (no ETag: its first revalidation is a full fetch)."""
        fresh_until = math.inf if isinstance(sel, int) else time.monotonic() + self.ttl
        with self._lock:
            self._store(name, sel, None, Entry(prompt, None, fresh_until, subject))

    def _forget(self, name: str, sel: Selector, point: int | None) -> None:
        """The server says it does not exist (a removed label, a deleted prompt)."""
        with self._lock:
            slot = self.cache.get((name, sel))
            if slot is None:
                return
            if point is None:
                del self.cache[(name, sel)]
            else:
                slot.arms.pop(point, None)

    def _keep_stale(self, name: str, sel: Selector, point: int | None, why: str) -> None:
        """The registry is unreachable: keep serving the cached copy, marked stale,
        and try again after ``stale_retry_seconds`` rather than on every call."""
        self.metrics.refresh_failures += 1
        with self._lock:
            current = self._entry_at(name, sel, point)
            if current is None:
                return
            entry = Entry(
                current.prompt.stale(), current.etag, time.monotonic() + self.stale_retry, current.subject
            )
            self._store(name, sel, point, entry)
        self.note_stale(name, sel, why)

    def note_stale(self, name: str, sel: Selector, why: str) -> None:
        self.metrics.stale_served += 1
        now = time.monotonic()
        last = self._stale_logged.get((name, sel))
        if last is None or now - last >= self.stale_log_interval:
            self._stale_logged[(name, sel)] = now
            log.warning("serving a stale copy of %s@%s: %s", name, sel, why)

    def resolve_batch(self, items: Sequence[Mapping[str, Any]]) -> list[Prompt | RegistryError]:
        """``POST /v1/prompts:resolve`` in chunks of 100; each answer cached."""
        results: list[Prompt | RegistryError] = []
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]
            response = _http.send(
                self.http, self.policy, "POST", "/v1/prompts:resolve", json={"items": chunk}
            )
            if response.status_code != 200:
                raise _http.problem(response)
            for asked, item in zip(chunk, response.json()["items"], strict=True):
                if item["status"] != 200:
                    err = item.get("error") or {}
                    cls = PromptNotFound if item["status"] == 404 else ApiError
                    results.append(cls(item["status"], err.get("title", ""), err.get("detail", "")))
                    continue
                sel: Selector = asked.get("version") or asked.get("label") or "production"
                prompt = Prompt.from_version(
                    item["version"],
                    label=item.get("label"),
                    split=bool(item.get("split")),
                )
                self.store_resolved(asked["name"], sel, asked.get("subject"), prompt)
                results.append(prompt)
        return results

    # -- push invalidation -----------------------------------------------

    def invalidate(self, name: str, sel: Selector) -> None:
        """Marks every entry of (name, sel) invalid and refetches its base."""
        key = (name, sel)
        with self._lock:
            self._generation[key] = self._generation.get(key, 0) + 1
            for k in [k for k in self._inflight if k[0] == name and k[1] == sel]:
                del self._inflight[k]
            slot = self.cache.get(key)
            if slot is None:
                return
            for entry in [slot.base, *slot.arms.values()]:
                if entry is not None:
                    entry.invalid = True
                    entry.fresh_until = 0.0
            subject = slot.base.subject if slot.base is not None else None
        self.metrics.invalidations += 1
        future = self.start(name, sel, subject, None)
        future.add_done_callback(_consume)

    def apply(self, raw: str) -> None:
        try:
            event = json.loads(raw)
            kind, name, data = event["type"], event["prompt"], event.get("data") or {}
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an event that does not parse: %.200s", raw)
            return
        self.metrics.events += 1
        if kind in ("label.moved", "label.removed"):
            self.invalidate(name, str(data.get("label")))
        elif kind == "version.created":
            self.invalidate(name, "latest")
        elif kind == "prompt.deleted":
            for key in [k for k in self.cache if k[0] == name]:
                self.invalidate(*key)

    def _listen(self) -> None:
        """Follows the event stream until closed, resuming after the last id."""
        last_id: str | None = None
        delay = 0.25
        stream = httpx.Client(base_url=self.base_url, headers=self._headers)
        timeout = httpx.Timeout(connect=self.policy.timeout, read=60.0, write=5.0, pool=5.0)
        while not self._closed.is_set():
            try:
                headers = {"Last-Event-ID": last_id} if last_id is not None else {}
                with stream.stream(
                    "GET", "/v1/events/stream", params={"types": WATCHED}, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code in (404, 405, 501):
                        self.push_supported = False
                        log.info("the registry has no event stream; entries expire by TTL only")
                        return
                    if response.status_code != 200:
                        raise RegistryUnavailable(f"event stream answered {response.status_code}")
                    self.push_supported = True
                    self._stream_socket = _socket_of(response)
                    if self._closed.is_set():
                        return
                    if last_id is None:
                        # Events before this connection were not seen: revalidate
                        # what is cached (a 304 each when nothing moved).
                        self._expire_all()
                    parser = SseParser()
                    for line in response.iter_lines():
                        self.push_connected.set()
                        delay = 0.25
                        if self._closed.is_set():
                            return
                        event = parser.feed(line)
                        if event is not None:
                            if event.id is not None:
                                last_id = event.id
                            self.apply(event.data)
            except (httpx.HTTPError, RegistryError) as e:
                log.debug("event stream interrupted: %s", e)
            finally:
                self.push_connected.clear()
            self._closed.wait(delay)
            delay = min(delay * 2, 5.0)
        stream.close()

    def _expire_all(self) -> None:
        with self._lock:
            for slot in self.cache.values():
                for entry in [slot.base, *slot.arms.values()]:
                    if entry is not None and entry.fresh_until != math.inf:
                        entry.fresh_until = 0.0

    def close(self) -> None:
        self._closed.set()
        # Wake the listener out of its read, so the server does not hold the
        # connection open for its shutdown (closing from here would not).
        if self._stream_socket is not None:
            with contextlib.suppress(OSError):
                self._stream_socket.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    found = stream.get_extra_info("socket") if stream is not None else None
    return found if isinstance(found, socket.socket) else None


def _consume(future: Future[Any]) -> None:
    """Background refreshes report through metrics and the log, not here."""
    if not future.cancelled():
        future.exception()


def iter_items(
    items: Iterable[str | tuple[str, str] | Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """``prefetch``'s arguments as resolve items."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            out.append({"name": item})
        elif isinstance(item, tuple):
            name, label = item
            out.append({"name": name, "label": label})
        else:
            out.append({k: v for k, v in item.items() if v is not None})
    for item in out:
        if item.get("label") == "active":
            item["label"] = "production"
    return out
