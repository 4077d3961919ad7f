"""``Prompt.compile`` against the render table shared with the server's
test (``crates/server/tests/api/render_cases.rs``), and the fallback's rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from prompt_registry import (
    Fallback,
    Prompt,
    PromptTooLarge,
    VariablesError,
    VariableSpec,
)
from prompt_registry._prompt import fallback_prompt

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "render_cases.json").read_text(encoding="utf-8")
)["cases"]


def prompt_of(case: dict[str, Any]) -> Prompt:
    template = case["template"]
    return Prompt(
        name="case",
        version=1,
        label="production",
        kind="text" if isinstance(template, str) else "chat",
        template=template,
        variables={k: VariableSpec.from_json(v) for k, v in case["variables"].items()},
        config={},
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_compile_agrees_with_the_shared_render_table(case: dict[str, Any]) -> None:
    prompt = prompt_of(case)
    expect = case["expect"]
    if "errors" in expect:
        with pytest.raises(VariablesError) as raised:
            prompt.compile(**case["values"])
        got = sorted((p.name, p.kind, p.message) for p in raised.value.problems)
        assert got == sorted((e["name"], e["kind"], e["message"]) for e in expect["errors"])
    elif "messages" in expect:
        assert prompt.compile(**case["values"]) == expect["messages"]
    else:
        assert prompt.compile(**case["values"]) == expect["text"]


def test_the_table_covers_every_kind_of_refusal_and_both_template_kinds() -> None:
    kinds = {e["kind"] for c in CASES for e in c["expect"].get("errors", [])}
    assert kinds == {"missing", "extra", "wrong_type"}
    assert any(isinstance(c["template"], list) for c in CASES)


def test_one_exception_names_every_offending_variable() -> None:
    prompt = prompt_of(
        {"template": "{{a}} {{b}} {{c}}", "variables": {"a": {}, "b": {"type": "number"}, "c": {}}}
    )
    with pytest.raises(VariablesError) as raised:
        prompt.compile(b="2", c="ok", d=1)
    err = raised.value
    assert (err.missing, err.extra, err.wrong_type) == (["a"], ["d"], ["b"])
    assert str(err).startswith("3 variable error(s): ")


def test_a_python_value_without_a_json_form_is_refused() -> None:
    prompt = prompt_of({"template": "{{when}} {{x}}", "variables": {"when": {}, "x": {"type": "number"}}})
    with pytest.raises(VariablesError) as raised:
        prompt.compile(when=dt.date(2026, 1, 1), x=float("nan"))
    assert sorted(p.message for p in raised.value.problems) == [
        "variable `when` must be a JSON value, got date",
        "variable `x` must be a number, got non-finite number",
    ]


def test_tuples_render_as_arrays_and_keys_sort() -> None:
    prompt = prompt_of({"template": "{{j}}", "variables": {"j": {"type": "json"}}})
    assert prompt.compile(j={"b": (1, 2.0), "a": None}) == '{"a":null,"b":[1,2.0]}'


def test_a_render_larger_than_the_server_allows_is_refused() -> None:
    prompt = prompt_of({"template": "{{a}}{{a}}", "variables": {"a": {}}})
    assert len(prompt.compile(a="é" * 1_048_576)) == 2_097_152
    with pytest.raises(PromptTooLarge):
        prompt.compile(a="é" * 1_048_577)


def test_a_fallback_template_declares_its_placeholders_as_required() -> None:
    prompt = fallback_prompt("Hi {{ name }}, about {{topic}}", "greeting", "production")
    assert prompt.is_fallback
    assert prompt.version is None
    assert prompt.compile(name="Ada", topic="tea") == "Hi Ada, about tea"
    with pytest.raises(VariablesError) as raised:
        prompt.compile(name="Ada", extra=1)
    assert (raised.value.missing, raised.value.extra) == (["topic"], ["extra"])


def test_a_fallback_may_declare_variables_and_be_made_by_a_callable() -> None:
    made = fallback_prompt(
        lambda: Fallback(
            [{"role": "user", "content": "{{q}} in {{city}}"}], {"q": {}, "city": {"default": "Paris"}}
        ),
        "chat",
        None,
    )
    assert made.kind == "chat"
    assert made.compile(q="Weather") == [{"role": "user", "content": "Weather in Paris"}]
