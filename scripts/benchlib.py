"""What the benchmark scripts share: running commands, reading wrk's output,
and a scratch PostgreSQL database for a release build to run against.

Not run on its own: bench_fetch.py and bench_ingest.py import it.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = os.environ.get("PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/test")
# The admin key the benchmarked server accepts; every request carries it, so
# the measured path includes authentication.
KEY = f"bench-admin-{uuid.uuid4().hex}"
SERVER = os.path.join(ROOT, "target/release/prompt-registry")


def run(*args, **kw):
    """Runs a command and returns its stdout; exits with its stderr if it fails."""
    done = subprocess.run(args, check=False, text=True, capture_output=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def psql(url, sql):
    return run("psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql).strip()


def non_2xx(out):
    """wrk's own count of answers that were not 2xx or 3xx (absent when none)."""
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(found.group(1)) if found else 0


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_args(script, url, connections, duration, *options):
    return ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency", *options, "-s", script, url]


def wrk(script, url, connections, duration, *options):
    """Drives `url` with wrk and a Lua script; returns its figures."""
    return wrk_figures(run(*wrk_args(script, url, connections, duration, *options)))


def wrk_figures(out):
    """The figures of one wrk run's output."""
    lat = {p: to_ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)}
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": lat.get("50"),
        "p99": lat.get("99"),
        "total": int(re.search(r"(\d+) requests in", out).group(1)),
        "bad": non_2xx(out),
        "socket_errors": errors.group(1) if errors else "",
    }


def prepare(no_build):
    """Checks the tools, and builds the release binary unless told not to."""
    for tool in ("wrk", "psql"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install wrk postgresql-client)")
    if not no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "prompt-registry"],
                       cwd=ROOT, check=True)


@contextlib.contextmanager
def scratch_database(prefix):
    """A new PostgreSQL database and a temporary directory, both removed on exit."""
    db = f"{prefix}_{os.getpid()}"
    psql(ADMIN, f"CREATE DATABASE {db}")
    tmp = tempfile.mkdtemp()
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + db, tmp
    finally:
        psql(ADMIN, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)
