"""The dashboard at /ui, in a real headless Chromium (Debian's, driven by Playwright) against the real stack.

One browser for the module; each test signs in (admin or viewer) in a fresh set of cookies. Screenshots of
each page go to the session's temp dir (``dashboard-screenshots``), as artifacts to look at.
"""

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[BrowserContext]:
    # One browser for every test here. Playwright's sync API runs an event loop in this thread while it is
    # open, so the stack (whose fixtures use asyncio.run) starts before it, and it closes with this module,
    # before other modules' asyncio tests run.
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
    watch_console(page)
    page.goto(f"{stack.api_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/runs$"))
    return page


def watch_console(page: Page) -> None:
    """Fail the test on any error the page's console reports (a script error, a refused policy...)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    setattr(page, "console_errors", errors)  # noqa: B010 - read back by the fixture


@pytest.fixture
def admin_page(browser_context: BrowserContext, stack: Stack) -> Iterator[Page]:
    page = sign_in(browser_context, stack, stack.token)
    yield page
    # Refusals the tests provoke are logged too, by the browser and by htmx: those are not errors of the page.
    expected = ("status of 4", "Response Status Error Code 4")
    errors = [e for e in getattr(page, "console_errors", []) if not any(x in e for x in expected)]
    page.close()
    assert errors == [], f"the page's console reported errors: {errors}"


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
    policy = admin_page.request.get(admin_page.url).headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
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


def test_signing_out_revokes_the_login_so_that_its_cookies_no_longer_work(
    admin_page: Page, browser_context: BrowserContext, stack: Stack, screenshots: Path
) -> None:
    signed_in = {c["name"]: c["value"] for c in browser_context.cookies()}
    admin_page.get_by_role("button", name="Sign out").click()
    expect(admin_page).to_have_url(re.compile(r"/ui/signin$"))
    expect(admin_page.get_by_label("API key")).to_be_visible()
    admin_page.screenshot(path=str(screenshots / "signed-out.png"))
    assert not {c["name"] for c in browser_context.cookies()} & {"af_ui_access", "af_ui_refresh"}
    # A copy of the cookies is worth nothing now: the API refuses the refresh token and the access token
    # (from an address of its own: a refused refresh counts against its source, as a guess would) ...
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.32"), timeout=30) as copy:
        refused = copy.post(f"{stack.api_url}/v1/auth/refresh", json={"refresh_token": signed_in["af_ui_refresh"]})
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"], refused.text
        bearer = {"Authorization": f"Bearer {signed_in['af_ui_access']}"}
        assert copy.get(f"{stack.api_url}/v1/runs", headers=bearer).status_code == 401
    # ... and the dashboard, given them back, sends the browser to sign in again.
    browser_context.add_cookies(
        [{"name": name, "value": value, "url": f"{stack.api_url}/ui/"} for name, value in signed_in.items()]
    )
    admin_page.goto(f"{stack.api_url}/ui/runs")
    expect(admin_page).to_have_url(re.compile(r"/ui/signin$"))


COUNT = {
    "name": "dash-count",
    "version": "1.0.0",
    "kind": "dag",
    "steps": [{"name": "count", "tool": "text-stats@1.0.0", "input": {"text": "$.input.text"}}],
}


@pytest.fixture(scope="session")
def count_workflow(client: Client, examples_registered: None) -> str:
    client.apply_workflow(COUNT)
    return "dash-count"


def test_the_runs_list_filters_searches_and_pages(
    admin_page: Page, client: Client, stack: Stack, count_workflow: str, screenshots: Path
) -> None:
    counted = [client.start_run(workflow=count_workflow, input={"text": f"run {i}."})["id"] for i in range(3)]
    for run_id in counted:
        _wait_state(client, run_id, "succeeded")
    admin_page.goto(f"{stack.api_url}/ui/runs")
    admin_page.get_by_label("Workflow").select_option(count_workflow)
    expect(admin_page.locator(f"tr[data-run='{counted[-1]}']")).to_be_visible()
    rows = admin_page.locator("#runs-table tbody tr")
    assert all(count_workflow in text for text in rows.all_inner_texts())
    admin_page.get_by_label("State", exact=True).select_option("failed")
    expect(admin_page.locator(f"tr[data-run='{counted[-1]}']")).to_have_count(0)
    admin_page.screenshot(path=screenshots / "runs-filtered.png", full_page=True)

    admin_page.goto(f"{stack.api_url}/ui/runs?q={counted[0]}")
    expect(admin_page.locator("#runs-table tbody tr")).to_have_count(1)
    expect(admin_page.locator(f"tr[data-run='{counted[0]}']")).to_be_visible()
    admin_page.get_by_label("Run id").fill("zz-not-an-id")
    admin_page.get_by_role("button", name="Search").click()
    expect(admin_page.locator("#runs-table [role=alert]")).to_contain_text("hexadecimal")

    admin_page.goto(f"{stack.api_url}/ui/runs?workflow={count_workflow}&since=2000-01-01T00:00:00")
    first = admin_page.locator("#runs-table tbody tr").first.get_attribute("data-run")
    assert first == counted[-1]
    admin_page.goto(f"{stack.api_url}/ui/runs?workflow={count_workflow}&until=2000-01-01T00:00:00")
    expect(admin_page.locator("#runs-table tbody")).to_contain_text("No runs match")


def test_the_runs_list_pages_with_a_cursor(admin_page: Page, client: Client, stack: Stack, count_workflow: str) -> None:
    ids = [client.start_run(workflow=count_workflow, input={"text": "page."})["id"] for _ in range(27)]
    admin_page.goto(f"{stack.api_url}/ui/runs?workflow={count_workflow}")
    expect(admin_page.locator("#runs-table tbody tr")).to_have_count(25)
    expect(admin_page.locator(f"tr[data-run='{ids[0]}']")).to_have_count(0)
    admin_page.get_by_role("link", name="Older runs").click()
    expect(admin_page.locator(f"tr[data-run='{ids[0]}']")).to_be_visible()
    expect(admin_page).to_have_url(re.compile(r"cursor="))


def test_bulk_cancel_asks_first_then_cancels_and_says_so(
    admin_page: Page, client: Client, stack: Stack, sleeper_registered: None, screenshots: Path
) -> None:
    runs = [client.start_run(tool="dash-sleeper", input={})["id"] for _ in range(2)]
    admin_page.goto(f"{stack.api_url}/ui/runs")
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
    page.goto(f"{stack.api_url}/ui/runs")
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


NAP = {
    "name": "dash-nap",
    "version": "1.0.0",
    "runtime": {"command": ["python3", "-c", "import time; time.sleep(1.5); print('{\"slept\": 1.5}')"]},
}
LIVE_DAG = {
    "name": "dash-live",
    "version": "1.0.0",
    "kind": "dag",
    "steps": [
        {"name": "nap", "tool": "dash-nap@1.0.0"},
        {"name": "count", "tool": "text-stats@1.0.0", "needs": ["nap"], "input": {"text": "One two three."}},
    ],
}


@pytest.fixture(scope="session")
def live_workflow(client: Client, examples_registered: None) -> str:
    client.register_tool(NAP)
    client.apply_workflow(LIVE_DAG)
    return "dash-live"


def _node(page: Page, name: str) -> Any:
    return page.locator(f"#run-live g.node[data-node='{name}']")


def test_a_run_page_shows_its_nodes_change_state_live(
    admin_page: Page, client: Client, stack: Stack, live_workflow: str, screenshots: Path
) -> None:
    run_id = client.start_run(workflow=live_workflow, input={})["id"]
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.evaluate("window.notReloaded = true")
    expect(_node(admin_page, "nap")).to_have_attribute("data-state", "running")
    expect(_node(admin_page, "count")).to_have_attribute("data-state", "pending")
    admin_page.get_by_role("link", name="nap: running").click()
    expect(admin_page.locator("#node .task .state")).to_have_text("running")
    admin_page.screenshot(path=screenshots / "run-live-running.png", full_page=True)
    expect(admin_page.locator("#node .task-output")).to_contain_text('"slept": 1.5')  # the open node follows
    expect(_node(admin_page, "nap")).to_have_attribute("data-state", "succeeded")
    expect(_node(admin_page, "count")).to_have_attribute("data-state", "succeeded")
    expect(admin_page.locator("#run-state")).to_have_text("succeeded")
    expect(admin_page.locator("#timeline li").last).to_contain_text("run.succeeded")
    assert admin_page.evaluate("window.notReloaded") is True, "the page changed without being loaded again"
    admin_page.screenshot(path=screenshots / "run-live-succeeded.png", full_page=True)


def test_opening_a_node_shows_its_output_and_its_sandbox(
    admin_page: Page, client: Client, stack: Stack, live_workflow: str, screenshots: Path
) -> None:
    run_id = client.start_run(workflow=live_workflow, input={})["id"]
    _wait_state(client, run_id, "succeeded")
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.get_by_role("link", name="count: succeeded").click()
    panel = admin_page.locator("#node")
    expect(panel.locator(".task-output")).to_contain_text('"words": 3')
    expect(panel).to_contain_text("Sandbox")
    expect(panel).to_contain_text("Memory")
    admin_page.get_by_role("link", name="nap: succeeded").focus()
    admin_page.keyboard.press("Enter")
    expect(panel.locator(".task-output")).to_contain_text('"slept": 1.5')
    admin_page.screenshot(path=screenshots / "run-node.png", full_page=True)


def test_a_waiting_state_machine_is_signalled_from_its_page(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None, screenshots: Path
) -> None:
    run_id = client.start_run(workflow="approval", input={"text": "We ship on Friday."})["id"]
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    expect(_node(admin_page, "await_approval")).to_have_attribute("data-state", re.compile("queued|running"))
    admin_page.get_by_label("Signal").fill("approve")
    admin_page.get_by_label("Data (JSON)").fill('{"by": "ana"}')
    admin_page.get_by_role("button", name="Send the signal").click()
    expect(admin_page.locator("#flash")).to_contain_text("Sent signal approve.")
    expect(admin_page.locator("#run-state")).to_have_text("succeeded")
    expect(_node(admin_page, "published")).to_have_attribute("data-state", "succeeded")
    expect(_node(admin_page, "rejected")).to_have_attribute("data-state", "pending")
    expect(admin_page.locator("#run-output")).to_contain_text('"approved_by": "ana"')
    admin_page.screenshot(path=screenshots / "run-fsm-signalled.png", full_page=True)


def test_a_signal_with_data_that_is_not_json_is_refused_in_the_page(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None
) -> None:
    run_id = client.start_run(workflow="approval", input={"text": "Later."})["id"]
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.get_by_label("Data (JSON)").fill("{not json")
    admin_page.get_by_role("button", name="Send the signal").click()
    expect(admin_page.locator("#flash [role=alert]")).to_contain_text("not JSON")
    client.cancel_run(run_id)


def test_a_run_is_cancelled_from_its_page(
    admin_page: Page, client: Client, stack: Stack, sleeper_registered: None
) -> None:
    run_id = client.start_run(tool="dash-sleeper", input={})["id"]
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.get_by_role("button", name="Cancel the run").click()
    expect(admin_page.locator("#flash")).to_contain_text("Cancelled the run.")
    expect(admin_page.locator("#run-state")).to_have_text("cancelled")
    assert client.get_run(run_id)["state"] == "cancelled"


def test_re_run_starts_the_same_workflow_with_the_same_input(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None
) -> None:
    run_id = client.start_run(tool="text-stats@1.0.0", input={"text": "Same input here."})["id"]
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.get_by_role("button", name="Re-run with the same input").click()
    expect(admin_page).not_to_have_url(re.compile(f"{run_id}$"))
    new_id = admin_page.url.rsplit("/", 1)[-1]
    again = _wait_state(client, new_id, "succeeded")
    assert again["input"] == {"text": "Same input here."} and again["tool"] == "text-stats@1.0.0"


def test_a_behavior_tree_run_is_drawn_with_its_composites_and_leaves(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None, screenshots: Path
) -> None:
    run_id = client.start_run(workflow="research", input={"topic": "gVisor"})["id"]
    _wait_state(client, run_id, "succeeded")
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    expect(_node(admin_page, "primary")).to_have_attribute("data-state", "failed")
    expect(_node(admin_page, "backup")).to_have_attribute("data-state", "succeeded")
    expect(_node(admin_page, "summarize")).to_have_attribute("data-state", "succeeded")
    expect(admin_page.locator("#run-live g.node.composite")).to_have_count(3)  # sequence, selector, condition
    admin_page.screenshot(path=screenshots / "run-bt.png", full_page=True)


def test_a_viewer_sees_a_run_without_its_actions(
    browser_context: BrowserContext, client: Client, stack: Stack, viewer_key: str, sleeper_registered: None
) -> None:
    run_id = client.start_run(tool="dash-sleeper", input={})["id"]
    page = sign_in(browser_context, stack, viewer_key)
    page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    expect(page.locator("#run-state")).to_be_visible()
    expect(page.get_by_role("button")).to_have_text(["Sign out"])
    cookies = {c["name"]: c["value"] for c in browser_context.cookies()}
    for action, body in (("cancel", {}), ("signal", {"name": "go"}), ("rerun", {})):
        forged = httpx.post(f"{stack.api_url}/ui/runs/{run_id}/{action}", data=body, cookies=cookies)
        assert forged.status_code == 403, action
    client.cancel_run(run_id)
    page.close()


def test_workflows_tools_and_agents_list_their_versions_and_documents(
    admin_page: Page, client: Client, stack: Stack, examples_registered: None, screenshots: Path
) -> None:
    client.register_tool(NAP)
    client.register_tool({**NAP, "version": "1.1.0"})
    admin_page.get_by_role("link", name="Workflows").click()
    expect(admin_page.locator("tr[data-entry='approval']")).to_contain_text("fsm")
    admin_page.get_by_role("link", name="approval").click()
    expect(admin_page.locator("#document")).to_contain_text("await_approval:")
    expect(admin_page.locator("g.node[data-node='published']")).to_be_visible()
    admin_page.screenshot(path=screenshots / "workflow.png", full_page=True)
    admin_page.goto(f"{stack.api_url}/ui/workflows/bug-resolution")  # a state machine with a loop back
    expect(admin_page.locator("g.node[data-node='resolved']")).to_be_visible()
    admin_page.screenshot(path=screenshots / "workflow-loop.png", full_page=True)

    admin_page.get_by_role("link", name="Tools").click()
    expect(admin_page.locator("tr[data-entry='dash-nap']")).to_contain_text("1.1.0")
    admin_page.get_by_role("link", name="dash-nap").click()
    versions = admin_page.get_by_role("navigation", name="Versions")
    expect(versions.get_by_role("link")).to_have_text(["1.1.0", "1.0.0"])
    versions.get_by_role("link", name="1.0.0").click()
    expect(admin_page.get_by_role("heading", name="dash-nap@1.0.0")).to_be_visible()
    expect(admin_page.locator("#document")).to_contain_text("time.sleep(1.5)")

    admin_page.get_by_role("link", name="Agents").click()
    expect(admin_page.get_by_role("heading", name="Agents")).to_be_visible()
    admin_page.screenshot(path=screenshots / "agents.png", full_page=True)


def test_workers_and_queues_show_the_live_fleet(admin_page: Page, stack: Stack, screenshots: Path) -> None:
    admin_page.get_by_role("link", name="Workers and queues").click()
    worker = admin_page.locator("tr[data-worker^='test-default']")
    expect(worker).to_contain_text("default")
    expect(worker).to_contain_text("of 8")
    expect(admin_page.get_by_role("heading", name="Queues", exact=True)).to_be_visible()
    admin_page.screenshot(path=screenshots / "workers.png", full_page=True)


def test_models_usage_and_audit_show_the_gateway_and_the_trail(
    admin_page: Page, client: Client, stack: Stack, screenshots: Path
) -> None:
    headers = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers) as http:
        assert http.post("/v1/models", json={"name": "dash-mock", "provider": "mock", "tier": "tier4"}).is_success
        chat = {"model": "dash-mock", "messages": [{"role": "user", "content": "Hello there."}]}
        assert http.post("/v1/llm/chat/completions", json=chat).is_success
    admin_page.get_by_role("link", name="Models").click()
    expect(admin_page.locator("tr[data-model='dash-mock']")).to_contain_text("healthy")
    admin_page.screenshot(path=screenshots / "models.png", full_page=True)

    admin_page.get_by_role("link", name="Usage").click()
    admin_page.get_by_label("Sum by").select_option("model")
    admin_page.get_by_role("button", name="Show").click()
    expect(admin_page.locator("tr[data-key='dash-mock'] td").nth(1)).to_have_text(re.compile(r"[1-9]\d*"))
    admin_page.screenshot(path=screenshots / "usage.png", full_page=True)

    admin_page.get_by_role("link", name="Audit").click()
    expect(admin_page.locator("tbody")).to_contain_text("auth.token")
    admin_page.screenshot(path=screenshots / "audit.png", full_page=True)


def test_a_viewer_is_told_what_its_role_may_not_read(
    browser_context: BrowserContext, stack: Stack, viewer_key: str
) -> None:
    page = sign_in(browser_context, stack, viewer_key)
    page.goto(f"{stack.api_url}/ui/audit")
    expect(page.get_by_role("alert")).to_contain_text("lacks audit:read")
    page.close()


# Every control a user can reach names itself: by a <label>, aria-label, or its own text.
UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]')]
  .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label') || el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 120))"""


def test_every_control_of_every_page_has_a_label(
    admin_page: Page, client: Client, stack: Stack, live_workflow: str
) -> None:
    run_id = client.start_run(workflow="approval", input={"text": "Labels."})["id"]
    paths = ["/ui/runs", f"/ui/runs/{run_id}", "/ui/workflows", "/ui/workflows/approval", "/ui/tools"]
    paths += ["/ui/agents", "/ui/workers", "/ui/models", "/ui/usage", "/ui/audit"]
    for path in paths:
        admin_page.goto(f"{stack.api_url}{path}")
        assert admin_page.evaluate(UNLABELLED) == [], path
    admin_page.goto(f"{stack.api_url}/ui/runs")
    admin_page.keyboard.press("Tab")
    assert admin_page.evaluate("document.activeElement.textContent") == "Skip to the content"
    client.cancel_run(run_id)


def test_pages_loaded_at_once_after_the_access_token_ran_out_share_one_refresh(
    admin_page: Page, browser_context: BrowserContext, stack: Stack
) -> None:
    refresh = next(c["value"] for c in browser_context.cookies() if c["name"] == "af_ui_refresh")
    with (
        httpx.Client(base_url=stack.api_url, cookies={"af_ui_refresh": refresh}) as http,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = list(pool.map(lambda path: http.get(path), ["/ui/runs", "/ui/workers", "/ui/tools", "/ui/models"]))
    assert [a.status_code for a in answers] == [200] * 4
    renewed = {a.cookies.get("af_ui_refresh") for a in answers}
    assert len(renewed) == 1 and None not in renewed, "one rotation, the same new pair for all four"
    # The login is intact: the rotated refresh token works once more, as a refresh used once should.
    with httpx.Client(base_url=stack.api_url, cookies={"af_ui_refresh": renewed.pop() or ""}) as http:
        assert http.get("/ui/runs").status_code == 200


CHATTY = {
    "name": "dash-chatty",
    "version": "1.0.0",
    "runtime": {
        "command": [
            "python3",
            "-c",
            "import sys, time\n"
            "for i in range(3): print(f'step {i} done', file=sys.stderr, flush=True); time.sleep(0.2)\n"
            "time.sleep(4); print('{}')",
        ]
    },
}


def test_an_opened_node_shows_what_its_tool_writes_to_stderr_while_it_runs(
    admin_page: Page, client: Client, stack: Stack
) -> None:
    client.register_tool(CHATTY)
    run_id = client.start_run(tool="dash-chatty", input={})["id"]
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.get_by_role("link", name="dash-chatty: running").click()
    expect(admin_page.locator("#node .task-live-logs")).to_contain_text("step 2 done")
    expect(admin_page.locator("#timeline")).not_to_contain_text("log")  # pieces of stderr are not events
    expect(admin_page.locator("#node .task-logs")).to_contain_text("step 2 done")  # the tail, once finished


DASH_LOOKUP = {
    "name": "dash-lookup",
    "version": "1",
    "runtime": {
        "command": [
            "python3",
            "-c",
            "import json, sys; q = json.load(sys.stdin)['query']; print(json.dumps({'found': q.upper()}))",
        ]
    },
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.fixture(scope="module")
def careful_agent(stack: Stack) -> str:
    """Agent ``dash-careful`` (scripted by the mock model): its first turn looks "tides" up, a call that needs
    approval, its second answers; and workflow ``dash-careful-dag``, whose one step is that agent."""
    turns = [{"tool_calls": [{"name": "dash-lookup", "arguments": {"query": "tides"}}]}, {"content": "They are TIDES."}]
    documents = [
        ("/v1/tools", DASH_LOOKUP),
        ("/v1/models", {"name": "dash-script", "provider": "mock", "options": {"turns": turns}}),
        (
            "/v1/agents",
            {
                "name": "dash-careful",
                "version": "1",
                "instructions": "Answer {{$.input.question}}",
                "model": "dash-script",
                "tools": ["dash-lookup"],
                "approval": ["dash-lookup"],
            },
        ),
        (
            "/v1/workflows",
            {
                "name": "dash-careful-dag",
                "version": "1",
                "kind": "dag",
                "steps": [{"name": "research", "agent": "dash-careful", "input": {"question": "$.input.q"}}],
            },
        ),
    ]
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}) as http:
        for path, document in documents:
            answer = http.post(path, json=document)
            assert answer.status_code in (200, 201, 409), answer.text
    return "dash-careful"


def _start(stack: Stack, document: dict[str, Any]) -> str:
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}) as http:
        answer = http.post("/v1/runs", json=document)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def test_an_agent_runs_page_shows_its_turns_live_and_its_conversation_and_an_approval_is_given_from_it(
    admin_page: Page, stack: Stack, careful_agent: str, screenshots: Path
) -> None:
    run_id = _start(stack, {"agent": careful_agent, "input": {"question": "what are tides?"}})
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    admin_page.evaluate("window.notReloaded = true")
    expect(_node(admin_page, "turn-1")).to_have_attribute("data-state", "succeeded")
    expect(_node(admin_page, "turn-1/approve-0")).to_have_attribute("data-state", re.compile("queued|running"))
    conversation = admin_page.get_by_role("region", name="Conversation")
    expect(conversation.locator(".turn[data-turn='1']")).to_contain_text("Answer what are tides?")
    expect(conversation.locator(".tool-call")).to_contain_text("calls dash-lookup")
    expect(conversation.locator(".tool-call")).to_contain_text("approval: queued")
    admin_page.screenshot(path=screenshots / "agent-run-waiting.png", full_page=True)
    admin_page.get_by_label("Signal").fill("approve")
    admin_page.get_by_label("Data (JSON)").fill('{"call": "turn-1/call-0", "approved": true, "note": "ok"}')
    admin_page.get_by_role("button", name="Send the signal").click()
    expect(admin_page.locator("#flash")).to_contain_text("Sent signal approve.")
    expect(admin_page.locator("#run-state")).to_have_text("succeeded")
    expect(_node(admin_page, "turn-1/call-0")).to_have_attribute("data-state", "succeeded")
    expect(_node(admin_page, "turn-2")).to_have_attribute("data-state", "succeeded")
    expect(conversation.locator(".tool-call .result")).to_contain_text('"found": "TIDES"')
    expect(conversation.locator(".turn[data-turn='2'] .answer")).to_have_text("They are TIDES.")
    expect(conversation).to_contain_text("2 turn(s), 2 model call(s)")
    assert admin_page.evaluate("window.notReloaded") is True, "the page changed without being loaded again"
    admin_page.screenshot(path=screenshots / "agent-run-conversation.png", full_page=True)


def test_an_agent_step_of_a_workflow_shows_its_conversation_in_its_node(
    admin_page: Page, stack: Stack, careful_agent: str, screenshots: Path
) -> None:
    run_id = _start(stack, {"workflow": "dash-careful-dag", "input": {"q": "tides?"}})
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}")
    expect(_node(admin_page, "research")).to_have_attribute("data-state", re.compile("queued|running|succeeded"))
    expect(admin_page.locator("#run-live g.node[data-node='research'] .sub")).to_contain_text("agent")
    admin_page.locator("#run-live g.node[data-node='research'] a").click()
    panel = admin_page.locator("#node")
    expect(panel.get_by_role("region", name="Conversation")).to_contain_text("dash-careful@1")
    expect(panel.locator(".tool-call")).to_contain_text("approval: queued")
    admin_page.get_by_label("Signal").fill("approve")
    admin_page.get_by_label("Data (JSON)").fill('{"call": "research/turn-1/call-0", "approved": true}')
    admin_page.get_by_role("button", name="Send the signal").click()
    expect(admin_page.locator("#flash")).to_contain_text("Sent signal approve.")
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}) as http:
        deadline = time.monotonic() + 30
        while http.get(f"/v1/runs/{run_id}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, f"run {run_id} never succeeded"
            time.sleep(0.2)
    admin_page.goto(f"{stack.api_url}/ui/runs/{run_id}?node=research")
    expect(admin_page.locator("#run-state")).to_have_text("succeeded")
    expect(panel.locator(".turn[data-turn='2'] .answer")).to_have_text("They are TIDES.")
    expect(panel.locator(".tool-call .result")).to_contain_text('"found": "TIDES"')
    admin_page.screenshot(path=screenshots / "agent-step-node.png", full_page=True)
