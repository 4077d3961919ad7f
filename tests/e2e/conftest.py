"""Fixtures for the end-to-end tests: the release binary as a child process.

`start_server(env=None, database_url=None, port=None)` starts one and waits
until `GET /ready` answers 200; `server` is one default server; `pg_url` is a
fresh PostgreSQL database. Every server started is killed at teardown.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 40


def binary() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PROMPT_REGISTRY_BIN", ROOT / "target/release/prompt-registry"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_key(length: int = 48) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class Server:
    """A running release binary."""

    base_url: str
    admin_key: str
    env: dict[str, str]
    log_path: pathlib.Path

    def __init__(self, env: dict[str, str], log_path: pathlib.Path, cwd: pathlib.Path) -> None:
        self.env = env
        self.admin_key = env["APP__AUTH__ADMIN_KEY"]
        self.base_url = f"http://127.0.0.1:{env['APP__SERVER__PORT']}"
        self.log_path = log_path
        self._cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Starts (again) with the same env and database; waits for `/ready`."""
        if self._running():
            raise RuntimeError(f"the server at {self.base_url} is already running")
        # Only what this server is given: nothing from the caller's APP_… or
        # the conventional DATABASE_URL / REDIS_URL / RUST_LOG.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("APP_") and k not in ("DATABASE_URL", "REDIS_URL", "RUST_LOG")
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(binary())],
                env={**inherited, **self.env},
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"the server exited with {code} before it was ready:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, and wait for the process to end."""
        if self._running():
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"the server did not stop within {STOP_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, and wait for the process to end."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server was never started")
        return self._process.pid


@pytest.fixture
def start_server(tmp_path: pathlib.Path) -> Iterator[Callable[..., Server]]:
    """`start_server(env=None, database_url=None, port=None) -> Server`."""
    started: list[Server] = []
    numbers = itertools.count(1)

    def start(
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        port: int | None = None,
    ) -> Server:
        n = next(numbers)
        server_env = {
            "APP_ENV": "dev",
            "APP__DATABASE__URL": database_url or f"sqlite://{tmp_path / f'registry-{n}.db'}",
            "APP__SERVER__HOST": "127.0.0.1",
            "APP__SERVER__PORT": str(port or free_port()),
            "APP__AUTH__ADMIN_KEY": random_key(),
            "APP__LOG__LEVEL": "info",
            "APP__WEBHOOKS__ALLOW_PRIVATE_TARGETS": "true",
        }
        server_env.update(env or {})
        server = Server(server_env, tmp_path / f"server-{n}.log", cwd=tmp_path)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _psql(url: str, sql: str) -> None:
    subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on TEST_DATABASE_URL's server, dropped afterwards."""
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to test against")
    if shutil.which("psql") is None:
        pytest.skip("the psql command is not installed: cannot create a PostgreSQL test database")
    name = f"e2e_{uuid.uuid4().hex}"
    _psql(admin, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin, name)
    finally:
        _psql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
