"""The dashboard at /ui, in a real headless Chromium (Debian's, driven by Playwright) against the real stack.

One browser for the session; each test signs in (admin or viewer) in a fresh set of cookies. Screenshots of
each page go to the session's temp dir (``dashboard-screenshots``), as artifacts to look at.
"""

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow import Client
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.conftest import Stack

CHROMIUM = "/usr/bin/chromium"
# No background traffic of the browser's own (this machine reaches no other host), no GPU, no sandbox (root).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)

SLEEPER = {
    "name": "dash-sleeper",
    "version": "1.0.0",
    "runtime": {"command": ["python3", "-c", "import time; time.sleep(60); print('{}')"]},
}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[BrowserContext]:
    # Playwright's sync API runs an event loop in this thread from here on: the stack, whose fixtures use
    # asyncio.run, starts before it.
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def viewer_key(client: Client) -> str:
    return str(client.create_key("default", "viewer")["key"])


@pytest.fixture(scope="session")
def sleeper_registered(client: Client) -> None:
    client.register_tool(SLEEPER)


def sign_in(context: BrowserContext, stack: Stack, key: str) -> Page:
    context.clear_cookies()
    page = context.new_page()
    page.goto(f"{stack.api_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/runs$"))
    return page


@pytest.fixture
def admin_page(browser_context: BrowserContext, stack: Stack) -> Iterator[Page]:
    page = sign_in(browser_context, stack, stack.token)
    yield page
    page.close()


def _wait_state(client: Client, run_id: str, state: str) -> Any:
    deadline = time.monotonic() + 30
    while (run := client.get_run(run_id))["state"] != state:
        assert time.monotonic() < deadline, f"run {run_id} stayed {run['state']}, never {state}"
        time.sleep(0.1)
    return run


def test_a_wrong_key_is_refused_on_the_sign_in_page(browser_context: BrowserContext, stack: Stack) -> None:
    browser_context.clear_cookies()
    page = browser_context.new_page()
    page.goto(f"{stack.api_url}/ui/runs")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    page.get_by_label("API key").fill("af_000000000000_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    cookies = {c["name"] for c in browser_context.cookies()}
    assert not cookies & {"af_ui_access", "af_ui_refresh"}
    page.close()


def test_signing_in_keeps_the_tokens_in_http_only_cookies(admin_page: Page, browser_context: BrowserContext) -> None:
    cookies = {c["name"]: c for c in browser_context.cookies()}
    for name in ("af_ui_access", "af_ui_refresh"):
        assert cookies[name]["httpOnly"] and cookies[name]["sameSite"] == "Strict"
    assert admin_page.evaluate("document.cookie") == ""
    expect(
        admin_page.get_by_role("navigation", name="Dashboard pages").get_by_role("link", name="Runs")
    ).to_be_visible()


def test_an_expired_access_token_is_refreshed_without_signing_in_again(
    admin_page: Page, browser_context: BrowserContext, stack: Stack
) -> None:
    refresh = next(c for c in browser_context.cookies() if c["name"] == "af_ui_refresh")
    browser_context.clear_cookies()
    browser_context.add_cookies(
        [{"name": refresh["name"], "value": refresh["value"], "url": f"{stack.api_url}/ui/"}]
    )  # as if the access cookie had run out
    admin_page.goto(f"{stack.api_url}/ui/runs")
    expect(admin_page).to_have_url(re.compile(r"/ui/runs$"))
    renewed = {c["name"]: c["value"] for c in browser_context.cookies()}
    assert "af_ui_access" in renewed and renewed["af_ui_refresh"] != refresh["value"]


def test_the_runs_list_filters_searches_and_pages(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None, screenshots: Path
) -> None:
    stats = [client.start_run(tool="text-stats@1.0.0", input={"text": f"run {i}."})["id"] for i in range(3)]
    for run_id in stats:
        _wait_state(client, run_id, "succeeded")
    admin_page.goto(f"{stack.api_url}/ui/runs")
    admin_page.get_by_label("Workflow or tool").select_option("text-stats")
    expect(admin_page.locator(f"tr[data-run='{stats[-1]}']")).to_be_visible()
    rows = admin_page.locator("#runs-table tbody tr")
    expect(rows.first).to_contain_text("text-stats")
    assert all("text-stats" in text for text in rows.all_inner_texts())
    admin_page.get_by_label("State", exact=True).select_option("failed")
    expect(admin_page.locator(f"tr[data-run='{stats[-1]}']")).to_have_count(0)
    admin_page.screenshot(path=screenshots / "runs-filtered.png", full_page=True)

    admin_page.goto(f"{stack.api_url}/ui/runs?q={stats[0]}")
    expect(admin_page.locator("#runs-table tbody tr")).to_have_count(1)
    expect(admin_page.locator(f"tr[data-run='{stats[0]}']")).to_be_visible()

    admin_page.goto(f"{stack.api_url}/ui/runs?workflow=text-stats&since=2000-01-01T00:00:00")
    first = admin_page.locator("#runs-table tbody tr").first.get_attribute("data-run")
    assert first == stats[-1]
    admin_page.goto(f"{stack.api_url}/ui/runs?workflow=text-stats&until=2000-01-01T00:00:00")
    expect(admin_page.locator("#runs-table tbody")).to_contain_text("No runs match")


def test_the_runs_list_pages_with_a_cursor(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None
) -> None:
    ids = [client.start_run(tool="text-stats@1.0.0", input={"text": "page."})["id"] for _ in range(27)]
    admin_page.goto(f"{stack.api_url}/ui/runs?workflow=text-stats")
    expect(admin_page.locator("#runs-table tbody tr")).to_have_count(25)
    admin_page.get_by_role("link", name="Older runs").click()
    expect(admin_page.locator(f"tr[data-run='{ids[0]}']")).to_be_visible()
    expect(admin_page).to_have_url(re.compile(r"cursor="))


def test_bulk_cancel_asks_first_then_cancels_and_says_so(
    admin_page: Page, client: Client, stack: Stack, sleeper_registered: None, screenshots: Path
) -> None:
    runs = [client.start_run(tool="dash-sleeper", input={})["id"] for _ in range(2)]
    admin_page.goto(f"{stack.api_url}/ui/runs?workflow=dash-sleeper")
    for run_id in runs:
        admin_page.get_by_label(f"Select run {run_id}").check()
    admin_page.get_by_role("button", name="Cancel selected runs").click()
    confirmation = admin_page.get_by_role("alertdialog")
    expect(confirmation).to_contain_text("Cancel 2 runs?")
    admin_page.screenshot(path=screenshots / "bulk-cancel-confirmation.png", full_page=True)
    assert all(client.get_run(r)["state"] != "cancelled" for r in runs), "nothing is cancelled before the yes"
    confirmation.get_by_role("button", name="Yes, cancel 2 runs").click()
    expect(admin_page.locator("#flash")).to_contain_text("Cancelled 2 runs.")
    for run_id in runs:
        expect(admin_page.locator(f"tr[data-run='{run_id}'] .state")).to_have_text("cancelled")
        assert client.get_run(run_id)["state"] == "cancelled"
    admin_page.screenshot(path=screenshots / "bulk-cancel-done.png", full_page=True)


def test_a_viewer_sees_no_action_buttons_and_a_forged_post_is_refused(
    browser_context: BrowserContext,
    client: Client,
    stack: Stack,
    viewer_key: str,
    sleeper_registered: None,
    screenshots: Path,
) -> None:
    run_id = client.start_run(tool="dash-sleeper", input={})["id"]
    page = sign_in(browser_context, stack, viewer_key)
    page.goto(f"{stack.api_url}/ui/runs?workflow=dash-sleeper")
    expect(page.locator(f"tr[data-run='{run_id}']")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel selected runs")).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    nav = page.get_by_role("navigation", name="Dashboard pages")
    expect(nav.get_by_role("link", name="Audit")).to_have_count(0)
    page.screenshot(path=screenshots / "viewer-runs.png", full_page=True)

    cookies = {c["name"]: c["value"] for c in browser_context.cookies()}
    forged = httpx.post(
        f"{stack.api_url}/ui/runs/cancel",
        data={"run": run_id},
        cookies={"af_ui_access": cookies["af_ui_access"]},
        headers={"HX-Request": "true"},
    )
    assert forged.status_code == 403
    assert client.get_run(run_id)["state"] != "cancelled"
    client.cancel_run(run_id)
    page.close()


def test_a_post_from_another_site_is_refused(admin_page: Page, browser_context: BrowserContext, stack: Stack) -> None:
    cookies = {c["name"]: c["value"] for c in browser_context.cookies()}
    answer = httpx.post(
        f"{stack.api_url}/ui/runs/cancel",
        data={"run": "00000000-0000-0000-0000-000000000000"},
        cookies=cookies,
        headers={"Origin": "http://elsewhere.example"},
    )
    assert answer.status_code == 403
