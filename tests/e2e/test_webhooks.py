"""Webhooks end to end: deliveries from the release binary, verified with
the `standardwebhooks` package; retries, a SIGKILL mid-delivery, and two
replicas sharing one PostgreSQL database."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
from receiver import Receiver
from registry import create_prompt, create_version, move_label


def register(server, receiver: Receiver, **extra) -> dict:
    res = httpx.post(
        f"{server.base_url}/v1/webhooks",
        json={"url": receiver.url, **extra},
        headers=server.headers(),
        timeout=10,
    )
    assert res.status_code == 201, res.text
    hook = res.json()
    receiver.secret = hook["secret"]
    return hook


def test_a_label_move_arrives_signed_and_failures_are_retried_until_it_does(server):
    receiver = Receiver(answer=lambda n: 500 if n < 2 else 204)
    hook = register(server, receiver, events=["label.moved"])
    create_prompt(server, "e2e/greeting")
    create_version(server, "e2e/greeting", {"template": "Hello {{name}}", "variables": {"name": {}}, "activate": False})
    move_label(server, "e2e/greeting", "production", 1)
    done = receiver.wait_for(1)
    time.sleep(1.0)
    assert len(receiver.succeeded()) == 1, "delivered once, not again after the success"
    assert len(receiver.deliveries) == 3, "two failed attempts, then the success"
    assert all(d.verified for d in receiver.deliveries), "every attempt verifies with standardwebhooks"
    assert len({d.webhook_id for d in receiver.deliveries}) == 1, "retries keep the message id"
    event = done[0].body
    assert event["type"] == "label.moved"
    assert event["data"]["prompt"] == "e2e/greeting"
    assert event["data"]["label"] == "production"
    assert event["data"]["to"] == {"version": 1}
    page = httpx.get(
        f"{server.base_url}/v1/webhooks/{hook['id']}/deliveries", headers=server.headers(), timeout=10
    ).json()
    codes = [a["status_code"] for a in page["items"][0]["attempts"]]
    assert codes == [500, 500, 204]
    receiver.close()


def test_a_delivery_in_flight_when_the_server_is_killed_arrives_after_restart(start_server):
    release = threading.Event()
    first_seen = threading.Event()

    def answer(n: int) -> int:
        if n == 0:
            first_seen.set()
            release.wait(20)  # held open until the server is dead
            return 503
        return 204

    receiver = Receiver(answer=answer)
    server = start_server(
        env={
            "APP__WEBHOOKS__TIMEOUT_MS": "5000",
            "APP__WEBHOOKS__LEASE_MS": "6000",
            "APP__WEBHOOKS__RETRY_BASE_MS": "200",
        }
    )
    register(server, receiver, events=["label.moved"])
    create_prompt(server, "killed")
    create_version(server, "killed", {"template": "t", "activate": False})
    move_label(server, "killed", "production", 1)
    assert first_seen.wait(10), "the first attempt started"
    server.kill()
    release.set()
    server.start()
    done = receiver.wait_for(1, timeout=30)
    assert done[0].body["type"] == "label.moved"
    assert done[0].webhook_id == receiver.deliveries[0].webhook_id, "the same message, delivered after the restart"
    assert all(d.verified for d in receiver.deliveries)
    receiver.close()


def test_two_replicas_deliver_each_event_once(start_server, pg_url):
    receiver = Receiver(answer=lambda n: (time.sleep(0.02), 204)[1])
    first = start_server(database_url=pg_url)
    second = start_server(database_url=pg_url)
    register(first, receiver)
    events = 0
    for i in range(20):
        via = first if i % 2 == 0 else second
        create_prompt(via, f"pair/{i}")  # prompt.created
        create_version(via, f"pair/{i}", {"template": f"v{i}"})  # version.created + label.moved
        events += 3
    receiver.wait_for(events, timeout=60)
    time.sleep(1.5)
    ids = Counter(d.webhook_id for d in receiver.succeeded())
    assert len(ids) == events, f"{len(ids)} distinct events of {events}"
    duplicates = {k: v for k, v in ids.items() if v > 1}
    assert not duplicates, f"delivered more than once: {duplicates}"
    assert all(d.verified for d in receiver.deliveries)
    receiver.close()
