"""Weighted rollouts: the client's split rule against the server's over
10,000 subjects, and the cache serving each subject its own arm."""

from __future__ import annotations

from collections import Counter

from prompt_registry import Registry
from prompt_registry._split import bucket, choose

from .conftest import Server, events_seen

ARMS = [(1, 50), (2, 30), (3, 20)]


def test_the_client_and_the_server_pick_the_same_arm_for_10000_subjects(server: Server, name: str) -> None:
    server.prompt_with_versions(name, 3)
    server.move_label(name, "rollout", {"split": [{"version": v, "weight": w} for v, w in ARMS]})
    subjects = [f"user-{i}" for i in range(10_000)]
    served: list[int] = []
    for start in range(0, len(subjects), 100):
        items = [{"name": name, "label": "rollout", "subject": s} for s in subjects[start : start + 100]]
        answer = server.call("POST", "/v1/prompts:resolve", {"items": items}, 200)
        served.extend(item["version"]["version"] for item in answer["items"])
    local = [choose(ARMS, bucket(name, "rollout", s)) for s in subjects]
    disagreements = [s for s, a, b in zip(subjects, served, local, strict=True) if a != b]
    assert disagreements == []
    # And the arms have about their weights, so the check was not trivial.
    counts = Counter(served)
    assert all(abs(counts[v] / 100 - w) < 2.5 for v, w in ARMS), counts


def test_the_cache_serves_each_subject_the_arm_the_server_chose(
    server: Server, registry: Registry, name: str
) -> None:
    server.prompt_with_versions(name, 3)
    server.move_label(name, "production", {"split": [{"version": v, "weight": w} for v, w in ARMS]})
    # 3 x version.created, production to 1, production to the split.
    events_seen(registry, 5)
    subjects = [f"s-{i}" for i in range(60)]
    for s in subjects:
        prompt = registry.get_prompt(name, subject=s)
        assert prompt.split
        assert prompt.version == choose(ARMS, bucket(name, "production", s)), s
    fetched = registry.metrics().fetches
    # Served again from the cache, each still its own arm.
    for s in subjects:
        assert registry.get_prompt(name, subject=s).version == choose(ARMS, bucket(name, "production", s))
    assert registry.metrics().fetches == fetched
