#!/usr/bin/env python3
"""Screenshots of the web console's main pages, for the README and docs/console.md.

Starts the binary on a scratch SQLite database with a random admin key,
seeds a demo registry through the REST API (prompts in folders, versions,
labels with history, a week of runs), signs in with headless Chromium and
saves 1280x800 PNGs:

    docs/screenshots/console-prompts.png   the prompt list
    docs/screenshots/console-prompt.png    one prompt: labels, versions, template, try it
    docs/screenshots/console-diff.png      two versions side by side, with the breaking reasons
    docs/screenshots/console-promote.png   the promote confirmation and its breaking-change gate
    docs/screenshots/console-runs.png      requests, error rate, latency and cost charts

Usage: target/e2e-venv/bin/python scripts/screenshots.py [--out DIR]
  (or `just screenshots`; the venv is the end-to-end tests' one, made by
  scripts/e2e.sh, with Playwright). The binary is PROMPT_REGISTRY_BIN, by
  default target/release/prompt-registry; the browser is CHROMIUM, by
  default /usr/bin/chromium (Debian's package: Playwright cannot download one).

The stats bucket runs by the time they were logged (`created_at`). The API
stamps that as now, so after seeding, the demo database's runs are dated
back to their `started_at` (a direct UPDATE of this scratch file only), for
a week of history to chart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import random
import secrets
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / "target/e2e-venv/bin/python"

# Playwright lives in the end-to-end tests' venv: run there whatever python started us.
if pathlib.Path(sys.prefix).resolve() != (ROOT / "target/e2e-venv").resolve():
    if not VENV_PYTHON.exists():
        sys.exit("screenshots.py: no target/e2e-venv; create it with scripts/e2e.sh --collect-only -q")
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])

import httpx
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}

TRIAGE = "support/triage"
ESCALATION = "support/escalation"
SUBJECT = "marketing/subject-line"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("PROMPT_REGISTRY_BIN", ROOT / "target/release/prompt-registry"))
    if not path.is_absolute():
        path = ROOT / path
    if not os.access(path, os.X_OK):
        sys.exit(f"screenshots.py: no binary at {path}; build it with cargo build --release -p prompt-registry")
    return path


class Registry:
    """The binary on a scratch database, and its REST API."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))
        self.base_url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("APP_") and k not in ("DATABASE_URL", "RUST_LOG")}
        env.update(
            {
                "APP_ENV": "dev",
                "APP__DATABASE__URL": f"sqlite://{workdir / 'demo.db'}",
                "APP__SERVER__HOST": "127.0.0.1",
                "APP__SERVER__PORT": self.base_url.rsplit(":", 1)[1],
                "APP__AUTH__ADMIN_KEY": self.key,
                "APP__LOG__LEVEL": "warn",
            }
        )
        self.log = (workdir / "server.log").open("wb")
        self.process = subprocess.Popen(
            [str(binary())], env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"screenshots.py: the server exited with {self.process.returncode}; see {workdir}/server.log")
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit("screenshots.py: the server was not ready within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        self.log.close()

    def call(self, method: str, path: str, body: object = None) -> dict:
        res = self.http.request(method, path, json=body)
        if res.status_code >= 300:
            raise RuntimeError(f"{method} {path} answered {res.status_code}: {res.text}")
        return res.json() if res.content else {}

    @staticmethod
    def prompt(name: str) -> str:
        return f"/v1/prompts/{urllib.parse.quote(name, safe='')}"

    def new_prompt(self, name: str, description: str, tags: list[str], versions: list[dict]) -> None:
        self.call("POST", "/v1/prompts", {"name": name, "description": description, "tags": tags})
        for v in versions:
            self.call("POST", f"{self.prompt(name)}/versions", {"activate": False, **v})

    def move(self, name: str, label: str, version: int, reason: str | None = None) -> None:
        body: dict = {"version": version, "allow_breaking": True}
        if reason:
            body["reason"] = reason
        self.call("PUT", f"{self.prompt(name)}/labels/{label}", body)

    def protect(self, name: str, label: str, protected: bool) -> None:
        self.call("PATCH", f"{self.prompt(name)}/labels/{label}", {"protected": protected})


def s(description: str = "", default: object = None) -> dict:
    spec: dict = {"type": "string"}
    if description:
        spec["description"] = description
    if default is not None:
        spec["default"] = default
    return spec


def seed(reg: Registry) -> None:
    triage_system = "You triage incoming support tickets for Acme Cloud. Answer with a queue and a priority."
    reg.new_prompt(
        TRIAGE,
        "Sorts every new support ticket into a queue, with a priority",
        ["support", "routing"],
        [
            {
                "template": [
                    {"role": "system", "content": triage_system},
                    {"role": "user", "content": "Ticket from {{customer}}:\n{{ticket}}"},
                ],
                "variables": {"customer": s("Who wrote in"), "ticket": s("The ticket's text")},
                "config": {"model": "gpt-4o-mini", "temperature": 0.0},
                "commit_message": "First triage prompt",
            },
            {
                "template": [
                    {"role": "system", "content": triage_system + "\nQueues: billing, outage, account, other."},
                    {"role": "user", "content": "Ticket from {{customer}} about {{product}}:\n{{ticket}}"},
                ],
                "variables": {
                    "customer": s("Who wrote in"),
                    "ticket": s("The ticket's text"),
                    "product": s("Which product", "Acme Cloud"),
                },
                "config": {"model": "gpt-4o-mini", "temperature": 0.0},
                "commit_message": "Name the queues; say which product",
            },
            {
                "template": [
                    {"role": "system", "content": triage_system + "\nQueues: billing, outage, account, other.\n"
                     "Customers on the {{plan}} plan get one priority level higher."},
                    {"role": "user", "content": "Ticket from {{customer}} about {{product}}:\n{{ticket}}"},
                ],
                "variables": {
                    "customer": s("Who wrote in"),
                    "ticket": s("The ticket's text"),
                    "product": s("Which product", "Acme Cloud"),
                    "plan": s("The customer's plan: free, team or enterprise"),
                },
                "config": {"model": "gpt-4o-mini", "temperature": 0.0, "max_tokens": 200},
                "commit_message": "Priority by plan",
            },
            {
                "template": [
                    {"role": "system", "content": triage_system + "\nQueues: billing, outage, account, security, other.\n"
                     "Customers on the {{plan}} plan get one priority level higher."},
                    {"role": "user", "content": "Ticket from {{customer}} about {{product}}:\n{{ticket}}"},
                ],
                "variables": {
                    "customer": s("Who wrote in"),
                    "ticket": s("The ticket's text"),
                    "product": s("Which product", "Acme Cloud"),
                    "plan": s("The customer's plan: free, team or enterprise"),
                },
                "config": {"model": "gpt-4o", "temperature": 0.0, "max_tokens": 200},
                "commit_message": "A security queue; gpt-4o",
            },
        ],
    )
    reg.move(TRIAGE, "production", 1)  # protected from the start: production is protected by default
    reg.move(TRIAGE, "production", 2, "Queues named; checked on 200 tickets from last week")
    reg.move(TRIAGE, "staging", 3, "Try priority by plan")
    reg.move(TRIAGE, "staging", 4, "Security queue for the pen-test findings")

    reg.new_prompt(
        ESCALATION,
        "Decides whether a conversation goes to a human, and to whom",
        ["support"],
        [
            {
                "template": "Should this conversation go to a human? Answer yes or no.\n\n{{conversation}}",
                "variables": {"conversation": s("The whole conversation")},
                "commit_message": "Yes or no",
            },
            {
                "template": "Should this conversation go to a human? Answer yes or no, and why in one line.\n\n"
                "{{conversation}}",
                "variables": {"conversation": s("The whole conversation")},
                "commit_message": "Say why",
            },
            {
                "template": "Should this conversation go to a human? Answer no, tier1 or tier2, and why in one line.\n"
                "Sentiment so far: {{sentiment}}\n\n{{conversation}}",
                "variables": {"conversation": s("The whole conversation"), "sentiment": s("", "neutral")},
                "config": {"model": "gpt-4o-mini"},
                "commit_message": "Escalate by tier",
            },
        ],
    )
    reg.move(ESCALATION, "production", 2)
    reg.protect(ESCALATION, "production", False)
    reg.move(ESCALATION, "staging", 3)

    subject_system = "You write email subject lines for Acme Cloud's marketing team."
    reg.new_prompt(
        SUBJECT,
        "Subject lines for campaign emails",
        ["marketing", "email"],
        [
            {
                "template": [
                    {"role": "system", "content": subject_system},
                    {"role": "user", "content": "Three subject lines for: {{topic}}"},
                ],
                "variables": {"topic": s("What the email is about")},
                "config": {"model": "gpt-4o-mini", "temperature": 0.9},
            },
            {
                "template": [
                    {"role": "system", "content": subject_system + " At most 50 characters, no emoji."},
                    {"role": "user", "content": "Three subject lines for: {{topic}}"},
                ],
                "variables": {"topic": s("What the email is about")},
                "config": {"model": "gpt-4o-mini", "temperature": 0.9},
                "commit_message": "Shorter, no emoji",
            },
        ],
    )
    reg.move(SUBJECT, "production", 1)
    reg.protect(SUBJECT, "production", False)
    reg.move(SUBJECT, "staging", 2)

    reg.new_prompt(
        "marketing/newsletter-intro",
        "The opening paragraph of the monthly newsletter",
        ["marketing"],
        [
            {"template": "Write the opening paragraph of the {{month}} newsletter.", "variables": {"month": s()}},
            {
                "template": "Write the opening paragraph of the {{month}} newsletter, in a warm tone, under 80 words.",
                "variables": {"month": s()},
                "commit_message": "Warmer, shorter",
            },
        ],
    )
    reg.new_prompt(
        "onboarding/welcome-email",
        "The first email a new customer gets",
        ["onboarding", "email"],
        [{"template": "Welcome {{name}} to Acme Cloud, in two sentences.", "variables": {"name": s()}}],
    )
    reg.move("onboarding/welcome-email", "production", 1)
    seed_runs(reg)


def seed_runs(reg: Registry) -> None:
    """A week of runs of the triage prompt: v1 early on, then v2 in production
    and v3/v4 on staging, with a few timeouts and rate limits."""
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    customers = ["Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries"]
    tickets = ["I was charged twice this month", "The dashboard is down", "How do I rotate my API key?",
               "Our pods cannot reach the database", "Please close my account"]
    arms = [(1, "production", 0.35, 620, 0.00018), (2, "production", 0.45, 540, 0.00021),
            (3, "staging", 0.08, 700, 0.00026), (4, "staging", 0.12, 910, 0.00140)]
    runs = []
    for _ in range(420):
        version, label, _, median_ms, cost = rng.choices(arms, weights=[a[2] for a in arms])[0]
        hours_ago = rng.uniform(0, 24 * 7) if version != 1 else rng.uniform(24 * 3, 24 * 7)
        failed = rng.random() < (0.02 if version != 4 else 0.06)
        latency = round(median_ms * rng.lognormvariate(0, 0.35), 1)
        run = {
            "prompt": TRIAGE,
            "version": version,
            "label": label,
            "input": {"customer": rng.choice(customers), "ticket": rng.choice(tickets), "plan": "team"},
            "status": "error" if failed else "success",
            "latency_ms": 30000.0 if failed and rng.random() < 0.5 else latency,
            "cost_usd": "0" if failed else f"{cost * rng.uniform(0.7, 1.4):.6f}",
            "model": "gpt-4o" if version == 4 else "gpt-4o-mini",
            "prompt_tokens": rng.randint(180, 420),
            "completion_tokens": 0 if failed else rng.randint(12, 60),
            "started_at": (now - dt.timedelta(hours=hours_ago)).isoformat(),
        }
        if version >= 3:
            run["input"]["plan"] = rng.choice(["free", "team", "enterprise"])
        if failed:
            run["error"] = rng.choice(["timeout after 30 s", "429 rate limited"])
        else:
            run["output"] = {"queue": rng.choice(["billing", "outage", "account", "other"]), "priority": rng.randint(1, 4)}
        runs.append(run)
    runs.sort(key=lambda r: r["started_at"])
    reg.call("POST", "/v1/runs/batch", {"runs": runs})
    # Logged as they ran: a week of history rather than one hour of it.
    with sqlite3.connect(reg.workdir / "demo.db") as db:
        db.execute("UPDATE prompt_runs SET created_at = started_at WHERE started_at IS NOT NULL")
    for version, label in [(1, "production"), (2, "production")]:
        reg.call("POST", "/v1/runs", {"prompt": SUBJECT, "version": version, "label": label, "status": "success",
                                      "latency_ms": 480.0, "cost_usd": "0.00012", "input": {"topic": "spring sale"}})


def ui(name: str) -> str:
    return f"/ui/prompts/{urllib.parse.quote(name, safe='')}"


def shoot(page: Page, out: pathlib.Path, name: str) -> None:
    path = out / f"console-{name}.png"
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs/screenshots")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-screenshots-") as tmp:
        reg = Registry(pathlib.Path(tmp))
        try:
            seed(reg)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                context = browser.new_context(base_url=reg.base_url, viewport=VIEWPORT, device_scale_factor=1,
                                              timezone_id="UTC", locale="en-GB")
                page = context.new_page()
                page.goto("/ui/sign-in")
                page.get_by_label("API key").fill(reg.key)
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("a.prompt-link").first).to_be_visible()
                shoot(page, out, "prompts")

                page.goto(ui(TRIAGE))
                page.locator("#label-production summary").click()
                shoot(page, out, "prompt")

                page.goto(f"{ui(TRIAGE)}/diff?from=2&to=3")
                shoot(page, out, "diff")

                page.goto(f"{ui(TRIAGE)}/labels/production/promote?to=4")
                page.locator("#reason").fill("Priority by plan, and the security queue")
                page.locator("#reason").blur()
                page.mouse.wheel(0, -10_000)
                expect(page.locator("h1")).to_be_in_viewport()
                shoot(page, out, "promote")

                page.goto(f"{ui(TRIAGE)}/runs?range=7d&by=version")
                expect(page.locator("#charts")).to_have_attribute("data-drawn", "true")
                page.locator("h1").scroll_into_view_if_needed()
                shoot(page, out, "runs")
                browser.close()
        finally:
            reg.stop()


if __name__ == "__main__":
    main()
