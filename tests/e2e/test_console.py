"""The web console (`/ui/`) in a real browser: Playwright driving Debian's
Chromium against the binary, with axe-core for accessibility.

One server per module, seeded once through the REST API; each test opens
its own browser context (its own cookies), so tests that sign out or
revoke keys do not disturb the others. Tests that change data each have a
prompt of their own.

Chromium is Debian's (/usr/bin/chromium, or CHROMIUM): Playwright cannot
download its own here. Without it these tests are skipped, saying why,
unless E2E_REQUIRE_BROWSER is set (as .ci/run does): then they fail.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pathlib
import re
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import Server, free_port, random_key
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from registry import prompt_path

CHROMIUM = pathlib.Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 10_000

TRIAGE = "support/triage"  # read-only views: prompt page, diff, try it
ESCALATION = "support/escalation"  # the breaking-change gate on a protected label
REFUNDS = "support/refunds"  # roll back
SUBJECT = "marketing/subject-line"  # runs and charts
NEWSLETTER = "marketing/newsletter"
GREETING = "greeting"

SUPPORT = {TRIAGE, ESCALATION, REFUNDS}
ALL_PROMPTS = SUPPORT | {SUBJECT, NEWSLETTER, GREETING}

TRIAGE_V1 = "Triage this ticket from {{customer}}:\n{{ticket}}"
TRIAGE_V2 = "You sort support tickets.\nTriage this ticket from {{customer}} for the {{team}} team:\n{{ticket}}"
TRIAGE_V3 = "You sort support tickets, politely.\nTriage this ticket from {{customer}} for the {{team}} team:\n{{ticket}}"

if os.environ.get("E2E_REQUIRE_BROWSER") and not os.access(CHROMIUM, os.X_OK):
    raise RuntimeError(f"E2E_REQUIRE_BROWSER is set and there is no Chromium at {CHROMIUM}")

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)",
)


# REST helpers.


def ui_path(name: str) -> str:
    return f"/ui/prompts/{urllib.parse.quote(name, safe='')}"


def api(server: Server, method: str, path: str, body: Any = None, key: str | None = None, expected=(200, 201)) -> Any:
    headers = {"Authorization": f"Bearer {key or server.admin_key}"}
    res = httpx.request(method, server.base_url + path, json=body, headers=headers, timeout=10.0)
    if res.status_code not in expected:
        raise AssertionError(f"{method} {path} answered {res.status_code}: {res.text}")
    return res.json() if res.content else None


def new_prompt(server: Server, name: str, tags: list[str], versions: list[dict]) -> None:
    api(server, "POST", "/v1/prompts", {"name": name, "tags": tags, "description": f"The {name} prompt"})
    for v in versions:
        api(server, "POST", f"{prompt_path(name)}/versions", {"activate": False, **v})


def put_label(server: Server, name: str, label: str, version: int, reason: str | None = None) -> dict:
    body: dict[str, Any] = {"version": version, "allow_breaking": True}
    if reason:
        body["reason"] = reason
    return api(server, "PUT", f"{prompt_path(name)}/labels/{label}", body)


def get_label(server: Server, name: str, label: str) -> dict:
    return api(server, "GET", f"{prompt_path(name)}/labels/{label}")


def create_key(server: Server, name: str, scopes: list[str]) -> dict:
    return api(server, "POST", "/v1/api-keys", {"name": name, "scopes": scopes})


def string_var() -> dict:
    return {"type": "string"}


def seed(server: Server) -> dict[str, Any]:
    """Prompts in two folders and at the top level, labels, runs, a webhook."""
    new_prompt(
        server,
        TRIAGE,
        ["support", "routing"],
        [
            {
                "template": TRIAGE_V1,
                "variables": {"customer": string_var(), "ticket": string_var()},
                "commit_message": "First triage prompt",
            },
            {
                "template": TRIAGE_V2,
                "variables": {"customer": string_var(), "ticket": string_var(), "team": string_var()},
                "commit_message": "Route to a team",
            },
            {
                "template": TRIAGE_V3,
                "variables": {
                    "customer": string_var(),
                    "ticket": string_var(),
                    "team": {"type": "string", "default": "billing"},
                },
                "config": {"model": "gpt-4o-mini", "temperature": 0.2},
                "commit_message": "Politer; team defaults to billing",
            },
        ],
    )
    put_label(server, TRIAGE, "production", 1)  # protected by default
    put_label(server, TRIAGE, "staging", 3)

    new_prompt(
        server,
        ESCALATION,
        ["support"],
        [
            {"template": "Escalate {{ticket}} to a human.", "variables": {"ticket": string_var()}},
            {
                "template": "Escalate {{ticket}} to the {{tier}} tier.",
                "variables": {"ticket": string_var(), "tier": string_var()},
                "commit_message": "Escalate by tier",
            },
        ],
    )
    put_label(server, ESCALATION, "production", 1)

    new_prompt(
        server,
        REFUNDS,
        ["support", "billing"],
        [
            {"template": "Decide on the refund for order {{order}}.", "variables": {"order": string_var()}},
            {"template": "Decide, kindly, on the refund for order {{order}}.", "variables": {"order": string_var()}},
        ],
    )
    put_label(server, REFUNDS, "staging", 1)
    put_label(server, REFUNDS, "staging", 2, reason="try the kinder wording")

    new_prompt(
        server,
        SUBJECT,
        ["marketing"],
        [
            {
                "template": [
                    {"role": "system", "content": "You write email subject lines."},
                    {"role": "user", "content": "A subject line for: {{topic}}"},
                ],
                "variables": {"topic": string_var()},
            },
            {
                "template": [
                    {"role": "system", "content": "You write short, catchy email subject lines."},
                    {"role": "user", "content": "A subject line for: {{topic}}"},
                ],
                "variables": {"topic": string_var()},
            },
        ],
    )
    put_label(server, SUBJECT, "production", 1)
    put_label(server, SUBJECT, "staging", 2)
    new_prompt(server, NEWSLETTER, ["marketing"], [{"template": "Write the {{month}} newsletter.", "variables": {"month": string_var()}}])
    new_prompt(server, GREETING, [], [{"template": "Hello {{name}}!", "variables": {"name": string_var()}}])

    run_ids = seed_runs(server)
    api(server, "POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "enabled": False, "description": "CI hook"})
    return {"run_ids": run_ids}


def seed_runs(server: Server) -> list[str]:
    """Runs of SUBJECT over the last days, by `started_at` (the stats bucket
    by `created_at`, so they all land in the current hour): v1 on
    production and unlabelled, v2 on staging and, after a move, on
    production too, with errors and costs that differ."""
    now = dt.datetime.now(dt.UTC)
    runs = []
    plan = [(1, "production", 12, 2), (1, None, 3, 0), (2, "staging", 8, 1), (2, "production", 5, 1)]
    i = 0
    for version, label, count, errors in plan:
        for n in range(count):
            i += 1
            failed = n < errors
            run: dict[str, Any] = {
                "prompt": SUBJECT,
                "version": version,
                "input": {"topic": f"spring sale #{i}"},
                "status": "error" if failed else "success",
                "latency_ms": round(80 + (i * 37) % 400 + version * 15.5, 1),
                "cost_usd": f"0.000{(i * 7) % 90 + 10}",
                "model": "gpt-4o-mini",
                "started_at": (now - dt.timedelta(hours=(i * 5) % 140)).isoformat(),
            }
            if label:
                run["label"] = label
            if failed:
                run["error"] = "rate limited"
            else:
                run["output"] = {"text": f"Spring sale: {i}0% off"}
            runs.append(run)
    return api(server, "POST", "/v1/runs/batch", {"runs": runs})["ids"]


# Fixtures.


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("console")
    env = {
        "APP_ENV": "dev",
        "APP__DATABASE__URL": f"sqlite://{tmp / 'registry.db'}",
        "APP__SERVER__HOST": "127.0.0.1",
        "APP__SERVER__PORT": str(free_port()),
        "APP__AUTH__ADMIN_KEY": random_key(),
        "APP__LOG__LEVEL": "info",
        "APP__WEBHOOKS__ALLOW_PRIVATE_TARGETS": "true",
    }
    server = Server(env, tmp / "server.log", cwd=tmp)
    server.start()
    try:
        seeded = seed(server)
        yield {"server": server, **seeded}
    finally:
        server.kill()


@pytest.fixture(scope="module")
def server(console: dict[str, Any]) -> Server:
    return console["server"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        expect.set_options(timeout=TIMEOUT_MS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def admin_state(browser: Browser, server: Server) -> dict:
    """Cookies of one admin session, for the tests that only look."""
    context = browser.new_context(base_url=server.base_url)
    page = context.new_page()
    sign_in(page, server.admin_key)
    expect(page).to_have_url(re.compile(r"/ui/prompts$"))
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def new_context(browser: Browser, server: Server) -> Iterator[Callable[..., BrowserContext]]:
    contexts: list[BrowserContext] = []

    def make(**kwargs: Any) -> BrowserContext:
        c = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900}, **kwargs)
        c.set_default_timeout(TIMEOUT_MS)
        contexts.append(c)
        return c

    yield make
    for c in contexts:
        c.close()


@pytest.fixture
def admin_page(new_context: Callable[..., BrowserContext], admin_state: dict) -> Page:
    return new_context(storage_state=admin_state).new_page()


def sign_in(page: Page, key: str, path: str = "/ui/sign-in") -> None:
    page.goto(path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def signed_in_page(new_context: Callable[..., BrowserContext], key: str) -> Page:
    page = new_context().new_page()
    sign_in(page, key)
    expect(page).to_have_url(re.compile(r"/ui/prompts$"))
    return page


def eventually(check: Callable[[], Any], timeout_s: float = TIMEOUT_MS / 1000, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s} s")
        time.sleep(0.05)


def link_names(page: Page) -> set[str]:
    return set(page.locator("a.prompt-link").all_inner_texts())


# Signing in.


def test_console_sign_in_with_a_good_key_opens_the_prompt_list(new_context, server: Server) -> None:
    context = new_context()
    page = context.new_page()
    page.goto("/ui/prompts")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=%2Fui%2Fprompts$"))
    page.get_by_label("API key").fill(server.admin_key)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/ui/sign-in")) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 303
    expect(page).to_have_url(re.compile(r"/ui/prompts$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Prompts")
    expect(page.locator(".who")).to_have_text("admin key (configuration)")
    [cookie] = [c for c in context.cookies() if c["name"] == "pr_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert server.admin_key not in cookie["value"]


def test_console_sign_in_goes_back_to_the_page_asked_for(new_context, server: Server) -> None:
    page = new_context().new_page()
    page.goto(ui_path(TRIAGE))
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
    page.get_by_label("API key").fill(server.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(ui_path(TRIAGE)) + "$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(TRIAGE)


def test_console_sign_in_with_a_bad_key_shows_an_error(new_context) -> None:
    context = new_context()
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.get_by_label("API key").fill("pr_deadbeef_0000000000000000000000000000000000000000")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/ui/sign-in")) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.locator("#sign-in-error")).to_be_visible()
    expect(page.get_by_role("alert")).not_to_be_empty()
    expect(page.get_by_label("API key")).to_be_visible()
    assert not [c for c in context.cookies() if c["name"] == "pr_session"]
    page.goto("/ui/prompts")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))


# The prompt list.


def test_console_search_shows_only_prompts_starting_with_the_prefix(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/prompts")
    assert link_names(page) == ALL_PROMPTS
    expect(page.locator("section.folder h2")).to_have_text(["(top level)", "marketing/", "support/"])

    # htmx searches as one types, without a page load.
    page.evaluate("window.__still_here = true")
    page.locator("#q").press_sequentially("support/", delay=30)
    eventually(lambda: link_names(page) == SUPPORT, what=f"the results being {sorted(SUPPORT)}")
    expect(page.locator("section.folder h2")).to_have_text(["support/"])
    expect(page.locator("#results .count")).to_have_text("3 prompts on this page")
    assert page.evaluate("window.__still_here === true"), "the search reloaded the page"
    expect(page).to_have_url(re.compile(r"q=support%2F"))

    page.locator("#q").fill("")
    page.locator("#q").press_sequentially("marketing/sub", delay=30)
    eventually(lambda: link_names(page) == {SUBJECT}, what="only the subject-line prompt")

    page.locator("#q").fill("nothing-like-this")
    eventually(lambda: link_names(page) == set(), what="no results")
    expect(page.locator("#results .count")).to_have_text("0 prompts on this page")


def test_console_tag_search_and_folder_links(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/prompts?tag=billing")
    assert link_names(page) == {REFUNDS}
    page.goto("/ui/prompts")
    page.get_by_role("navigation", name="Folders").get_by_role("link", name="marketing/").click()
    expect(page).to_have_url(re.compile(r"q=marketing%2F"))
    assert link_names(page) == {SUBJECT, NEWSLETTER}


def test_console_opens_a_prompt(admin_page: Page) -> None:
    page = admin_page
    page.goto("/ui/prompts")
    page.get_by_role("link", name=TRIAGE, exact=True).click()
    expect(page).to_have_url(re.compile(re.escape(ui_path(TRIAGE)) + "$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(TRIAGE)
    production = page.locator("article.label-card#label-production")
    expect(production.locator("h3")).to_contain_text("production → version 1")
    expect(production.locator(".badge")).to_have_text("protected")
    expect(page.locator("article.label-card#label-staging h3")).to_contain_text("staging → version 3")
    expect(page.locator("table.versions tbody tr td:first-child")).to_have_text(["v3", "v2", "v1"])
    # Without ?version, the page shows production's version.
    expect(page.locator("#version-h")).to_contain_text("Version 1")
    expect(page.locator("pre.template")).to_have_text(TRIAGE_V1)
    expect(page.locator("table.versions tr.selected")).to_contain_text("v1")

    page.locator("table.versions").get_by_role("link", name="v3").click()
    expect(page.locator("#version-h")).to_contain_text("Version 3")
    expect(page.locator("pre.template")).to_have_text(TRIAGE_V3)
    expect(page.locator("pre.config")).to_contain_text('"temperature": 0.2')
    variables = page.locator("section[aria-labelledby=version-h] table tbody tr")
    expect(variables).to_have_count(3)
    expect(variables.filter(has_text="team")).to_contain_text("billing")


# Diffs.


def test_console_diffs_two_versions_side_by_side_and_unified(admin_page: Page) -> None:
    page = admin_page
    page.goto(ui_path(TRIAGE))
    page.locator("#diff-from").select_option("1")
    page.locator("#diff-to").select_option("2")
    page.get_by_role("button", name="Diff").click()
    expect(page).to_have_url(re.compile(r"/diff\?from=1&to=2$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("v1 → v2")
    expect(page.locator("div.breaking")).to_contain_text("team")

    side = page.locator("table.diff.side")
    expect(side).to_have_count(1)
    deleted = side.locator("td.del").all_inner_texts()
    added = side.locator("td.add").all_inner_texts()
    assert "Triage this ticket from {{customer}}:" in deleted
    assert "You sort support tickets." in added
    assert "Triage this ticket from {{customer}} for the {{team}} team:" in added
    # The unchanged last line is context on both sides, neither added nor removed.
    assert "{{ticket}}" not in deleted + added
    expect(page.locator("pre.diff.unified")).to_have_count(0)

    page.locator("#diff-view").select_option("unified")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"view=unified"))
    unified = page.locator("pre.diff.unified")
    expect(unified).to_have_count(1)
    expect(page.locator("table.diff.side")).to_have_count(0)
    expect(unified.locator("span.del")).to_have_text(["-Triage this ticket from {{customer}}:"])
    expect(unified.locator("span.add")).to_have_text(
        ["+You sort support tickets.", "+Triage this ticket from {{customer}} for the {{team}} team:"]
    )
    expect(unified.locator("span.ctx")).to_contain_text([" {{ticket}}"])


def test_console_diff_without_a_breaking_change_says_so(admin_page: Page) -> None:
    page = admin_page
    page.goto(f"{ui_path(TRIAGE)}/diff?from=2&to=3")
    expect(page.locator("div.breaking")).to_have_count(0)
    expect(page.locator("p.ok")).to_have_text("No breaking change for callers.")
    expect(page.get_by_text("Config (JSON Patch)")).to_be_visible()


def test_console_diff_pairs_a_changed_last_line(admin_page: Page) -> None:
    # A one-line template without a final newline: the unified diff from the
    # API marks both sides with "\ No newline at end of file".
    page = admin_page
    page.goto(f"{ui_path(ESCALATION)}/diff?from=1&to=2")
    expect(page.locator("table.diff.side")).to_have_count(1)
    rows = [
        [(td.get_attribute("class"), td.inner_text()) for td in tr.locator("td").all()]
        for tr in page.locator("table.diff.side tbody tr").all()
    ]
    assert rows == [
        [("hunk", "@@ -1 +1 @@"), ("hunk", "@@ -1 +1 @@")],
        [("del", "Escalate {{ticket}} to a human."), ("add", "Escalate {{ticket}} to the {{tier}} tier.")],
    ], rows


# Try it.


def test_console_try_it_renders_and_shows_strict_variable_errors_inline(admin_page: Page) -> None:
    page = admin_page
    page.goto(ui_path(TRIAGE))
    url = page.url
    textarea = page.locator("#variables")
    assert json.loads(textarea.input_value()) == {"customer": "", "ticket": ""}
    page.evaluate("window.__still_here = true")

    textarea.fill(json.dumps({"customer": "Ann", "ticket": "My invoice is wrong"}))
    page.get_by_role("button", name="Render v1").click()
    expect(page.locator("#try-result pre.rendered")).to_have_text("Triage this ticket from Ann:\nMy invoice is wrong")
    expect(page.locator("#try-result [role=alert]")).to_have_count(0)

    # An undeclared variable is refused (strict variables), next to the form.
    textarea.fill(json.dumps({"customer": "Ann", "ticket": "x", "priority": "high"}))
    page.get_by_role("button", name="Render v1").click()
    alert = page.locator("#try-result [role=alert]")
    expect(alert).to_contain_text("The render failed.")
    expect(alert).to_contain_text("variable `priority` is not declared by this version")
    expect(page.locator("#try-result pre.rendered")).to_have_count(0)

    # A missing required one and JSON that is not an object, likewise.
    textarea.fill(json.dumps({"customer": "Ann"}))
    page.get_by_role("button", name="Render v1").click()
    expect(alert).to_contain_text("variable `ticket` is required")
    textarea.fill("[1, 2]")
    page.get_by_role("button", name="Render v1").click()
    expect(alert).to_contain_text("not a JSON object")

    assert page.url == url
    assert page.evaluate("window.__still_here === true"), "trying it reloaded the page"


# Labels: promote and roll back.


def test_console_promote_to_a_breaking_version_on_a_protected_label_needs_the_checkbox(
    admin_page: Page, server: Server
) -> None:
    page = admin_page
    page.goto(ui_path(ESCALATION))
    card = page.locator("article.label-card#label-production")
    expect(card.locator(".badge")).to_have_text("protected")
    card.get_by_label("Move production to").select_option("2")
    card.get_by_role("button", name="Review…").click()
    expect(page).to_have_url(re.compile(r"/labels/production/promote\?to=2$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Move production to v2")
    expect(page.locator("div.breaking")).to_contain_text("tier")
    expect(page.locator("table.diff.side td.add")).to_contain_text(["Escalate {{ticket}} to the {{tier}} tier."])
    checkbox = page.get_by_label("I know this breaks callers; move it anyway")
    expect(checkbox).not_to_be_checked()

    reason = "Tiered escalation is live in every client"
    page.locator("#reason").fill(reason)
    with page.expect_response(lambda r: r.request.method == "POST" and "/promote" in r.url) as answer:
        page.get_by_role("button", name="Move production to v2").click()
    assert answer.value.status == 409
    expect(page.locator("#change-error")).to_contain_text("breaking")
    expect(page.locator("#change-error")).to_contain_text("tier")
    assert get_label(server, ESCALATION, "production")["target"] == {"version": 1}

    # The refused form keeps the reason; ticking the box moves the label.
    expect(page.locator("#reason")).to_have_value(reason)
    page.get_by_label("I know this breaks callers; move it anyway").check()
    page.get_by_role("button", name="Move production to v2").click()
    expect(page).to_have_url(re.compile(re.escape(ui_path(ESCALATION)) + r"\?notice=promoted$"))
    expect(page.get_by_role("status")).to_have_text("The label was moved.")
    expect(card.locator("h3")).to_contain_text("production → version 2")
    assert get_label(server, ESCALATION, "production")["target"] == {"version": 2}

    card.locator("summary", has_text="History of production").click()
    first = card.locator("table.history tbody tr").first
    expect(first.locator("td").nth(2)).to_have_text("version 1")
    expect(first.locator("td").nth(3)).to_have_text("version 2")
    expect(first.locator("td").nth(4)).to_have_text(reason)
    expect(first.locator("td").nth(1)).to_have_text("admin key (configuration)")


def test_console_rolls_back_a_label(admin_page: Page, server: Server) -> None:
    page = admin_page
    page.goto(ui_path(REFUNDS))
    card = page.locator("article.label-card#label-staging")
    expect(card.locator("h3")).to_contain_text("staging → version 2")
    card.get_by_role("link", name="Roll back…").click()
    expect(page).to_have_url(re.compile(r"/labels/staging/rollback$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Roll back staging to v1")
    expect(page.locator("#allow_breaking")).to_have_count(0)
    page.locator("#reason").fill("The kinder wording confused customers")
    page.get_by_role("button", name="Roll back staging").click()
    expect(page).to_have_url(re.compile(r"\?notice=rolled-back$"))
    expect(page.get_by_role("status")).to_have_text("The label was rolled back.")
    expect(card.locator("h3")).to_contain_text("staging → version 1")
    assert get_label(server, REFUNDS, "staging")["target"] == {"version": 1}
    card.locator("summary").click()
    expect(card.locator("table.history tbody tr").first.locator("td").nth(4)).to_have_text(
        "The kinder wording confused customers"
    )


# Runs and charts.


def bucket_start(t: dt.datetime, bucket: str) -> dt.datetime:
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if bucket == "day" else t


RANGES = {"24h": (dt.timedelta(hours=24), "hour"), "7d": (dt.timedelta(days=7), "hour"),
          "30d": (dt.timedelta(days=30), "day"), "90d": (dt.timedelta(days=90), "day")}


def expected_chart(server: Server, range_: str, by: str) -> tuple[list[int], dict[str, dict[int, dict]], list[dict], str]:
    """What the chart should hold, from GET /v1/prompts/{name}/stats with the
    page's bucket and start: {series: {bucket: figures}}; split by label,
    one series per label and version (the arms of a rollout side by side),
    as the API groups them."""
    span, bucket = RANGES[range_]
    start = bucket_start(dt.datetime.now(dt.UTC) - span, bucket)
    start_s = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    query = {"bucket": bucket, "from": start_s, "group_by": by}
    items = api(server, "GET", f"{prompt_path(SUBJECT)}/stats?{urllib.parse.urlencode(query)}")["items"]
    series: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        name = f"{item.get('label') or '(no label)'} · v{item['version']}" if by == "label" else f"v{item['version']}"
        when = int(dt.datetime.fromisoformat(item["bucket_start"]).timestamp())
        series[name][when].append(item)
    x = sorted({b for points in series.values() for b in points})
    figures: dict[str, dict[int, dict]] = {}
    for name, points in series.items():
        figures[name] = {}
        for b, parts in points.items():
            count = sum(p["count"] for p in parts)
            figures[name][b] = {
                "requests": count,
                "error_rate": sum(p["error_count"] for p in parts) / count,
                "cost": sum(float(p["cost_usd"]["total"]) for p in parts),
                # Percentiles cannot be summed: only checked where one version makes the point.
                **({m: parts[0]["latency_ms"][m] for m in ("p50", "p95", "p99")} if len(parts) == 1 else {}),
                "versions": len(parts),
            }
    return x, figures, items, start_s


@pytest.mark.parametrize(
    ("range_", "by"),
    [
        ("24h", "version"),
        ("7d", "version"),
        ("30d", "version"),
        ("90d", "version"),
        ("7d", "label"),
        ("30d", "label"),
    ],
)
def test_console_chart_points_match_the_stats_api(admin_page: Page, server: Server, range_: str, by: str) -> None:
    page = admin_page
    for _attempt in range(2):  # once more if an hour ended between the page and the API call
        before = dt.datetime.now(dt.UTC)
        page.goto(f"{ui_path(SUBJECT)}/runs?range={range_}&by={by}")
        charts = page.locator("#charts")
        expect(charts).to_have_attribute("data-drawn", "true")
        data = json.loads(charts.get_attribute("data-chart") or "null")
        x, figures, items, _ = expected_chart(server, range_, by)
        if bucket_start(before, "hour") == bucket_start(dt.datetime.now(dt.UTC), "hour"):
            break

    assert data["x"] == x and len(x) >= 1
    names = [s["name"] for s in data["series"]]
    assert sorted(names) == sorted(figures), f"series {names}, the API has {sorted(figures)}"
    mismatches = []
    for s in data["series"]:
        for i, b in enumerate(x):
            want = figures[s["name"]].get(b)
            got = {m: s[m][i] for m in ("requests", "error_rate", "p50", "p95", "p99", "cost")}
            if want is None:
                if any(v is not None for v in got.values()):
                    mismatches.append(f"{s['name']} @ {b}: a point where the API has none: {got}")
                continue
            for metric in ("requests", "error_rate", "cost", "p50", "p95", "p99"):
                if metric in want and (got[metric] is None or not math.isclose(got[metric], want[metric], rel_tol=1e-6, abs_tol=1e-9)):
                    mismatches.append(f"{s['name']} @ {b}: {metric} is {got[metric]}, the API says {want[metric]}"
                                      f" (over {want['versions']} version(s))")
    assert not mismatches, "\n".join(mismatches)

    # One chart per metric, drawn by uPlot with every bucket.
    for metric in ("requests", "error_rate", "p50", "p95", "p99", "cost"):
        chart = page.locator(f"div.chart[data-metric={metric}]")
        expect(chart).to_have_attribute("data-points", str(len(x)))
        expect(chart.locator("canvas").first).to_be_attached()
        expect(chart.locator(".u-legend")).to_contain_text(names[0])

    # The table under the charts: one row per API entry, with its count.
    rows = page.locator("#stats-table tbody tr")
    expect(rows).to_have_count(len(items))
    table = sorted((r[0], int(r[2])) for r in (row.locator("td").all_text_contents() for row in rows.all()))
    api_rows = sorted(
        ((f"{i.get('label') or '(no label)'} · v{i['version']}" if by == "label" else f"v{i['version']}"), i["count"])
        for i in items
    )
    assert table == api_rows


@pytest.mark.parametrize("range_", ["24h", "90d"])
def test_console_chart_time_axis_stays_within_the_range(admin_page: Page, range_: str) -> None:
    span, bucket = RANGES[range_]
    page = admin_page
    page.goto(f"{ui_path(SUBJECT)}/runs?range={range_}")
    expect(page.locator("#charts")).to_have_attribute("data-drawn", "true")
    scales = page.evaluate(
        "() => [...document.querySelectorAll('div.chart')].map(el => [el.plot.scales.x.min, el.plot.scales.x.max])"
    )
    now = time.time()
    earliest = bucket_start(dt.datetime.now(dt.UTC) - span, bucket).timestamp()
    step = 3600 if bucket == "hour" else 86400
    for lo, hi in scales:
        assert earliest - step <= lo <= hi <= now + step, (
            f"the x axis runs from {dt.datetime.fromtimestamp(lo, dt.UTC)} to {dt.datetime.fromtimestamp(hi, dt.UTC)}"
        )


def test_console_runs_table_links_to_a_run(admin_page: Page, console: dict) -> None:
    page = admin_page
    page.goto(f"{ui_path(SUBJECT)}/runs")
    rows = page.locator("#runs-table tbody tr")
    expect(rows).to_have_count(len(console["run_ids"]))
    page.goto(f"{ui_path(SUBJECT)}/runs?status=error")
    expect(rows).to_have_count(4)
    expect(page.locator("#runs-table td.status-error")).to_have_count(4)
    rows.first.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Run ")
    expect(page.locator("p.error")).to_have_text("rate limited")
    expect(page.locator("main pre").first).to_contain_text("spring sale")


# Scopes and sessions.


def test_console_read_only_key_sees_no_promote_controls_and_no_admin_pages(new_context, server: Server) -> None:
    key = create_key(server, "console-reader", ["read"])
    page = signed_in_page(new_context, key["secret"])
    expect(page.locator(".who")).to_contain_text("console-reader")
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link", name="Prompts")).to_be_visible()
    expect(nav.get_by_role("link", name="Keys")).to_have_count(0)

    page.goto(ui_path(TRIAGE))
    expect(page.locator("article.label-card")).to_have_count(2)
    expect(page.get_by_role("button", name="Review…")).to_have_count(0)
    expect(page.get_by_label(re.compile("^Move .* to$"))).to_have_count(0)
    expect(page.get_by_role("link", name="Roll back…")).to_have_count(0)
    # Reading and trying still work.
    page.locator("#variables").fill(json.dumps({"customer": "Bo", "ticket": "Where is my parcel?"}))
    page.get_by_role("button", name="Render v1").click()
    expect(page.locator("#try-result pre.rendered")).to_contain_text("from Bo:")

    for path in ("/ui/keys", "/ui/webhooks", "/ui/audit"):
        res = page.goto(path)
        assert res is not None and res.status == 403, path
        expect(page.get_by_role("alert")).to_contain_text("lacks the `admin` scope")

    # The confirmation pages are refused too.
    for path in (f"{ui_path(TRIAGE)}/labels/staging/promote?to=1", f"{ui_path(REFUNDS)}/labels/staging/rollback"):
        res = page.goto(path)
        assert res is not None and res.status == 403, path
        expect(page.get_by_role("alert")).to_contain_text("lacks the `write` scope")
        expect(page.locator("form.confirm")).to_have_count(0)


def test_console_write_key_without_release_cannot_move_a_protected_label(new_context, server: Server) -> None:
    key = create_key(server, "console-writer", ["read", "write"])
    page = signed_in_page(new_context, key["secret"])
    page.goto(ui_path(TRIAGE))
    production = page.locator("article.label-card#label-production")
    expect(production.get_by_role("button", name="Review…")).to_have_count(0)
    expect(production).to_contain_text("Protected: moving it needs the release scope.")
    expect(page.locator("article.label-card#label-staging").get_by_role("button", name="Review…")).to_have_count(1)


def test_console_sign_out_ends_the_session(new_context, server: Server) -> None:
    context = new_context()
    page = context.new_page()
    sign_in(page, server.admin_key)
    expect(page).to_have_url(re.compile(r"/ui/prompts$"))
    [cookie] = [c for c in context.cookies() if c["name"] == "pr_session"]

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))
    assert not [c for c in context.cookies() if c["name"] == "pr_session"]
    page.goto("/ui/prompts")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))

    # The old cookie, replayed, is no session any more.
    replay = new_context()
    replay.add_cookies([cookie])
    other = replay.new_page()
    other.goto(ui_path(TRIAGE))
    expect(other).to_have_url(re.compile(r"/ui/sign-in\?next="))


def test_console_session_of_a_revoked_key_ends(new_context, server: Server) -> None:
    key = create_key(server, "soon-revoked", ["read", "write"])
    page = signed_in_page(new_context, key["secret"])
    page.goto(ui_path(TRIAGE))
    expect(page.get_by_role("heading", level=1)).to_have_text(TRIAGE)

    api(server, "DELETE", f"/v1/api-keys/{key['id']}", expected=(204,))
    page.goto(ui_path(TRIAGE))
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
    sign_in(page, key["secret"])
    expect(page.locator("#sign-in-error")).to_be_visible()


# Content-Security-Policy.


def _interact_prompts(page: Page) -> None:
    page.locator("#q").press_sequentially("support/", delay=20)
    eventually(lambda: link_names(page) == SUPPORT, what="the htmx search")


def _interact_prompt(page: Page) -> None:
    page.locator("#variables").fill(json.dumps({"customer": "Ann", "ticket": "Hi"}))
    page.get_by_role("button", name="Render v1").click()
    expect(page.locator("#try-result pre.rendered")).to_be_visible()
    page.locator("#variables").fill("{}")
    page.get_by_role("button", name="Render v1").click()
    expect(page.locator("#try-result [role=alert]")).to_be_visible()


def _interact_runs(page: Page) -> None:
    expect(page.locator("#charts")).to_have_attribute("data-drawn", "true")
    # Hovering a chart fills its legend with the figures under the cursor.
    page.locator("div.chart[data-metric=requests] .u-over").hover()


def console_pages(console: dict) -> list[tuple[str, str, Callable[[Page], None] | None]]:
    return [
        ("sign-in", "/ui/sign-in", None),
        ("prompts", "/ui/prompts", _interact_prompts),
        ("prompt", ui_path(TRIAGE), _interact_prompt),
        ("diff", f"{ui_path(TRIAGE)}/diff?from=1&to=2", None),
        ("diff-unified", f"{ui_path(TRIAGE)}/diff?from=1&to=2&view=unified", None),
        ("promote", f"{ui_path(TRIAGE)}/labels/production/promote?to=2", None),
        ("rollback", f"{ui_path(REFUNDS)}/labels/staging/rollback", None),
        ("runs", f"{ui_path(SUBJECT)}/runs?range=7d&by=version", _interact_runs),
        ("run", f"/ui/runs/{console['run_ids'][0]}", None),
        ("keys", "/ui/keys", None),
        ("webhooks", "/ui/webhooks", None),
        ("audit", "/ui/audit", None),
        ("not-found", "/ui/nowhere", None),
    ]


PAGE_NAMES = ["sign-in", "prompts", "prompt", "diff", "diff-unified", "promote", "rollback", "runs", "run", "keys",
              "webhooks", "audit", "not-found"]

CSP_LISTENER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_console_csp_header_and_no_violations(new_context, admin_state: dict, console: dict, name: str) -> None:
    [(_, path, interact)] = [p for p in console_pages(console) if p[0] == name]
    context = new_context(storage_state=admin_state)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text} ({m.location.get('url')})"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    res = page.goto(path)
    assert res is not None
    csp = res.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp, csp
    assert res.headers.get("x-frame-options") == "DENY"
    page.wait_for_load_state("load")
    if interact:
        interact(page)
    page.wait_for_timeout(200)
    violations = page.evaluate("window.__csp")
    csp_messages = [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    errors = [m for m in messages if m.startswith(("error", "pageerror"))]
    if errors:
        print(f"console errors on {name}: {errors}")
    assert not violations and not csp_messages, f"CSP violations on {path}: {violations} {csp_messages}"
    assert not [m for m in messages if m.startswith("pageerror")], f"script errors on {path}: {messages}"


def test_console_pages_log_no_console_errors(new_context, admin_state: dict) -> None:
    page = new_context(storage_state=admin_state).new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(f"{m.text} ({m.location.get('url')})"))
    for path in ("/ui/prompts", ui_path(TRIAGE), f"{ui_path(SUBJECT)}/runs"):
        page.goto(path)
        page.wait_for_load_state("load")
    page.wait_for_timeout(300)
    assert not errors, errors


# Accessibility.


def test_console_pages_have_no_serious_accessibility_violations(new_context, admin_state: dict, console: dict) -> None:
    axe = Axe()
    found: list[tuple[str, str, str, int, str]] = []
    for name, path, _ in console_pages(console):
        context = new_context(storage_state=admin_state)
        page = context.new_page()
        page.goto(path)
        page.wait_for_load_state("load")
        if name == "runs":
            expect(page.locator("#charts")).to_have_attribute("data-drawn", "true")
        if name == "prompt":
            # With a render error shown too.
            page.locator("#variables").fill("{}")
            page.get_by_role("button", name="Render v1").click()
            expect(page.locator("#try-result [role=alert]")).to_be_visible()
        results = axe.run(page)
        for v in results.response["violations"]:
            targets = "; ".join(",".join(n["target"]) if isinstance(n["target"], list) else str(n["target"])
                                for n in v["nodes"][:3])
            found.append((name, v["id"], v["impact"] or "?", len(v["nodes"]), targets))
        context.close()
    print("\naxe-core violations by page (page, rule, impact, nodes, first targets):")
    for row in found:
        print("  " + " | ".join(str(c) for c in row))
    if not found:
        print("  none")
    serious = [row for row in found if row[2] in ("serious", "critical")]
    assert not serious, "serious or critical accessibility violations:\n" + "\n".join(map(str, serious))
