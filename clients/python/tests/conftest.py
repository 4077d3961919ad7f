"""The real server, started by the suite: a release binary on a free port
with a SQLite database of its own (``PROMPT_REGISTRY_BIN``)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prompt_registry import Registry

BIN = os.environ.get("PROMPT_REGISTRY_BIN", "/work/main/target/release/prompt-registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server process, and an admin client to arrange what tests read."""

    def __init__(self, workdir: Path) -> None:
        if not Path(BIN).is_file():
            pytest.fail(f"no server binary at {BIN}: build it or set PROMPT_REGISTRY_BIN")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = "test-admin-" + secrets.token_hex(24)
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )
        self.start()

    def start(self) -> None:
        env = {
            **os.environ,
            "APP__SERVER__PORT": str(self.port),
            "APP__DATABASE__URL": f"sqlite://{self.workdir}/db.sqlite",
            "APP__AUTH__ADMIN_KEY": self.key,
            "APP__LOG__LEVEL": "warn",
        }
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen([BIN], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the server exited with {self.process.returncode}; see {self.workdir}/server.log"
                )
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail("the server was not ready within 60 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    # -- arranging -------------------------------------------------------

    def call(
        self, method: str, path: str, body: Any = None, expect: int | tuple[int, ...] = (200, 201)
    ) -> Any:
        response = self.admin.request(method, path, json=body)
        wanted = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in wanted, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def create_prompt(self, name: str) -> None:
        self.call("POST", "/v1/prompts", {"name": name}, 201)

    def create_version(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/v1/prompts/{quote(name, safe='')}/versions", body, 201)
        return result

    def move_label(self, name: str, label: str, target: dict[str, Any]) -> None:
        body = {**target, "allow_breaking": True}
        self.call("PUT", f"/v1/prompts/{quote(name, safe='')}/labels/{label}", body, (200, 201))

    def remove_label(self, name: str, label: str) -> None:
        self.call("DELETE", f"/v1/prompts/{quote(name, safe='')}/labels/{label}", None, (200, 204))

    def prompt_with_versions(self, name: str, n: int, *, labels: tuple[str, ...] = ()) -> None:
        """A prompt with versions 1..n, ``Version i: {{who}}``; production on 1."""
        self.create_prompt(name)
        for i in range(1, n + 1):
            self.create_version(
                name,
                {
                    "template": f"Version {i}: {{{{who}}}}",
                    "variables": {"who": {"type": "string"}},
                    "activate": i == 1,
                    "labels": list(labels) if i == 1 else [],
                },
            )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server"))
    yield s
    s.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server this test may stop and start."""
    s = Server(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def name() -> str:
    """A prompt name of this test's own, with a `/` as real names have."""
    return f"tests/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def registry(server: Server) -> Iterator[Registry]:
    r = Registry(server.url, server.key, timeout=2.0)
    assert r.wait_for_push(10), "the event stream did not connect"
    yield r
    r.close()


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def events_seen(registry: Any, n: int) -> None:
    """Waits until the registry has received ``n`` events, so that events of
    the test's own setup cannot invalidate entries in the middle of what it
    counts."""
    assert wait_until(lambda: registry.metrics().events >= n), registry.metrics()
