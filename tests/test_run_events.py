"""A run's event stream as browsers and the SDK follow it: against the real control plane, a finished run's
stream ends for good (a browser's EventSource stops reconnecting), and a live one sends keep-alives that
neither a browser nor the SDK takes for events."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from agentflow import Client, ValidationFailed, WaitTimeout

from tests.conftest import Stack

pytestmark = pytest.mark.usefixtures("examples_registered")

NOBODY_PULLS = "nobody-pulls-this"
HANG = 10.0
"""Seconds a connection may send nothing before the test calls it a hang (keep-alives here come faster)."""


@dataclass
class BrowserEventSource:
    """What a browser's EventSource does (HTML Living Standard, §9.2): it connects with the last event id it
    saw as ``Last-Event-ID``, reads events, and reconnects whenever the server closes the stream; it stops
    for good only when an answer is not a 200 event stream (204 No Content is the server's way to say so).
    Besides events it records each connection's status and the comments it ignored."""

    url: str
    token: str
    last_event_id: str = ""
    statuses: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    refusal: dict[str, Any] | None = None
    """The problem document of the answer that stopped it, when it had one."""
    data: list[str] = field(default_factory=list)
    """The data lines of the event being read."""

    def follow(self, most_connections: int = 8) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        with httpx.Client(headers=headers, timeout=HANG) as http:
            while len(self.statuses) < most_connections:
                resumed = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
                with http.stream("GET", self.url, headers=resumed) as response:
                    self.statuses.append(response.status_code)
                    media = response.headers.get("content-type", "").partition(";")[0]
                    if response.status_code != 200 or media != "text/event-stream":
                        response.read()
                        if media == "application/problem+json":
                            self.refusal = response.json()
                        return
                    self.read(response.iter_lines())
                time.sleep(0.05)  # the reconnection time, shortened
        raise AssertionError(f"still reconnecting after {most_connections} connections: {self.statuses}")

    def read(self, lines: Iterator[str]) -> None:
        for line in lines:
            if not line:
                if self.data:
                    self.events.append(json.loads("\n".join(self.data)))
                self.data = []
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self.data.append(value)
                elif name == "id":
                    self.last_event_id = value


def events_url(api_url: str, run_id: str) -> str:
    return f"{api_url}/v1/runs/{run_id}/events"


@pytest.fixture(scope="module")
def finished_run(client: Client) -> dict[str, Any]:
    run = client.start_run(tool="noop", input={"for": "the event stream"})
    final: dict[str, Any] = client.wait_run(run["id"], timeout=60)
    assert final["state"] == "succeeded", final
    return final


def last_seq(client: Client, run_id: str) -> int:
    return int(list(client.events(run_id))[-1]["seq"])


def test_a_browser_reading_a_finished_run_gets_every_event_once_and_then_stops_reconnecting(
    stack: Stack, client: Client, finished_run: dict[str, Any]
) -> None:
    browser = BrowserEventSource(events_url(stack.api_url, finished_run["id"]), stack.token)
    browser.follow()
    seqs = [event["seq"] for event in browser.events]
    assert seqs == list(range(1, last_seq(client, finished_run["id"]) + 1))
    assert browser.events[-1]["type"] == "run.succeeded"
    # It reconnected once, after the final event, with that event's id, and was told there is no more.
    assert browser.statuses == [200, 204]
    assert browser.last_event_id == str(seqs[-1])


def test_resuming_a_finished_run_at_its_last_event_ends_at_once_and_before_it_sends_the_rest(
    stack: Stack, client: Client, finished_run: dict[str, Any]
) -> None:
    last = last_seq(client, finished_run["id"])
    at_end = BrowserEventSource(events_url(stack.api_url, finished_run["id"]), stack.token, str(last))
    at_end.follow()
    assert (at_end.statuses, at_end.events) == ([204], [])

    one_before = BrowserEventSource(events_url(stack.api_url, finished_run["id"]), stack.token, str(last - 1))
    one_before.follow()
    assert [event["seq"] for event in one_before.events] == [last]
    assert one_before.statuses == [200, 204]


def test_an_event_id_past_the_end_of_the_run_is_refused_naming_the_header(
    stack: Stack, client: Client, finished_run: dict[str, Any]
) -> None:
    browser = BrowserEventSource(events_url(stack.api_url, finished_run["id"]), stack.token, "999")
    browser.follow()
    assert browser.statuses == [422]
    assert browser.refusal is not None
    assert browser.refusal["type"] == "urn:agentflow:problem:validation-error"
    assert browser.refusal["field"] == "Last-Event-ID"
    assert str(last_seq(client, finished_run["id"])) in browser.refusal["detail"]


@pytest.mark.parametrize("last_event_id", ["x", "-1", "1.5", "9" * 5000])
def test_an_event_id_that_is_not_a_whole_number_is_refused_naming_the_header(
    stack: Stack, finished_run: dict[str, Any], last_event_id: str
) -> None:
    browser = BrowserEventSource(events_url(stack.api_url, finished_run["id"]), stack.token, last_event_id)
    browser.follow()
    assert browser.statuses == [422]
    assert browser.refusal is not None and browser.refusal["field"] == "Last-Event-ID"


def test_the_sdk_resuming_a_finished_run_at_its_end_gets_nothing_and_past_it_a_validation_error(
    client: Client, finished_run: dict[str, Any]
) -> None:
    last = last_seq(client, finished_run["id"])
    assert list(client.events(finished_run["id"], last_event_id=str(last))) == []
    assert [e["seq"] for e in client.events(finished_run["id"], last_event_id=str(last - 1))] == [last]
    with pytest.raises(ValidationFailed, match="Last-Event-ID"):
        list(client.events(finished_run["id"], last_event_id=str(last + 1)))


@pytest.fixture(scope="module")
def chatty_api(stack: Stack) -> Iterator[str]:
    """A second control plane of the stack whose streams send a keep-alive after a fifth of a second."""
    with stack.extra_control_plane(AF_SSE_KEEPALIVE_SECONDS="0.2") as url:
        yield url


def test_a_live_stream_sends_keep_alives_which_are_no_events_until_the_run_ends(
    stack: Stack, client: Client, chatty_api: str
) -> None:
    run = client.start_run(tool="noop", input={}, queue=NOBODY_PULLS)
    headers = {"Authorization": f"Bearer {stack.token}", "Accept": "text/event-stream"}
    with (
        httpx.Client(headers=headers, timeout=HANG) as http,
        http.stream("GET", events_url(chatty_api, run["id"])) as response,
    ):
        assert response.status_code == 200
        browser = BrowserEventSource(events_url(chatty_api, run["id"]), stack.token)
        lines = response.iter_lines()
        for line in lines:
            browser.read(iter([line]))
            if len(browser.comments) == 2:
                break
        client.cancel_run(run["id"])
        browser.read(lines)
    assert set(browser.comments) == {"keep-alive"}
    types = [event["type"] for event in browser.events]
    assert types[0] == "run.created" and types[-2:] == ["task.cancelled", "run.cancelled"]
    assert [event["seq"] for event in browser.events] == list(range(1, len(types) + 1))

    # The next reconnection of a browser is told that the run is over.
    after = BrowserEventSource(events_url(chatty_api, run["id"]), stack.token, browser.last_event_id)
    after.follow()
    assert after.statuses == [204]


def test_the_sdk_skips_keep_alives_and_still_gives_up_on_a_quiet_run(
    stack: Stack, client: Client, chatty_api: str
) -> None:
    run = client.start_run(tool="noop", input={}, queue=NOBODY_PULLS)
    try:
        with Client(api_url=chatty_api, token=stack.token) as chatty:
            events = list(chatty.events(run["id"], idle_timeout=1.0))
            assert [event["type"] for event in events][:1] == ["run.created"]
            assert list(chatty.events(run["id"], str(events[-1]["seq"]), idle_timeout=1.0)) == []
            with pytest.raises(WaitTimeout):
                chatty.wait_run(run["id"], timeout=1.0)
    finally:
        client.cancel_run(run["id"])
