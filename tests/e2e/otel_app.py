"""An application that calls OpenAI through the official client, traced by
an OpenAI instrumentation and exported to the registry over OTLP/HTTP.

    python otel_app.py {openllmetry|openinference} REGISTRY_URL API_KEY OPENAI_URL PROMPT OUT_JSON

Each instrumentation patches the `openai` module for the whole process, so
one process runs one of them. The calls' expected runs (model, tokens, wall
time, status, texts) are written to OUT_JSON for the test to compare.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import openai
from openai import OpenAI
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SYSTEM = "You answer in one short sentence."


class PromptAttributes(SpanProcessor):
    """Names the registered prompt (and the label it was fetched by) on every
    span, so the registry files each LLM call as a run of that prompt."""

    def __init__(self, name: str, label: str = "production") -> None:
        self.name = name
        self.label = label

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        span.set_attribute("prompt_registry.prompt.name", self.name)
        span.set_attribute("prompt_registry.prompt.label", self.label)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def tracer_provider(registry_url: str, api_key: str, prompt: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-app"}))
    provider.add_span_processor(PromptAttributes(prompt))
    exporter = OTLPSpanExporter(
        endpoint=f"{registry_url}/v1/traces",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument(instrumentation: str, provider: TracerProvider) -> None:
    if instrumentation == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    elif instrumentation == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        raise SystemExit(f"unknown instrumentation {instrumentation!r}: openllmetry or openinference")
    OpenAIInstrumentor().instrument(tracer_provider=provider)


def chat(client: OpenAI, model: str, user: str, stream: bool = False) -> dict[str, Any]:
    """One chat completion, and the run it should become."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    expected: dict[str, Any] = {"user": user, "stream": stream, "model": model}
    started = time.perf_counter()
    try:
        if stream:
            chunks = client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            text, usage = "", None
            for chunk in chunks:
                expected["model"] = chunk.model
                text += "".join(c.delta.content or "" for c in chunk.choices)
                usage = chunk.usage or usage
        else:
            response = client.chat.completions.create(model=model, messages=messages)
            expected["model"] = response.model
            text, usage = response.choices[0].message.content, response.usage
    except openai.APIError as e:
        expected["wall_ms"] = (time.perf_counter() - started) * 1000
        expected.update(status="error", error=str(e), output=None, prompt_tokens=None, completion_tokens=None)
        return expected
    expected["wall_ms"] = (time.perf_counter() - started) * 1000
    expected.update(
        status="success",
        output=text,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
    )
    return expected


def main(instrumentation: str, registry_url: str, api_key: str, openai_url: str, prompt: str, out: str) -> None:
    provider = tracer_provider(registry_url, api_key, prompt)
    instrument(instrumentation, provider)
    client = OpenAI(base_url=openai_url, api_key="x", max_retries=0)
    calls = [
        chat(client, "gpt-4o-mini", "What is the capital of France?"),
        chat(client, "gpt-4o", "Summarise the plot of Hamlet in a line."),
        chat(client, "gpt-4o-mini", "Name three primary colours, please."),
        chat(client, "gpt-4o-mini", "Count from one to five.", stream=True),
        chat(client, "gpt-4o-mini", "FAIL this one on purpose."),
    ]
    provider.force_flush()
    provider.shutdown()
    with open(out, "w") as f:
        json.dump(calls, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) != 7:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
