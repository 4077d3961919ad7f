"""A fake OpenAI-compatible server on a local port, for the end-to-end tests.

`POST /v1/chat/completions` answers after `DELAY_S`, deterministically:
the text `answer(user)`, a `usage` block computed from the messages, and
the requested model with a dated suffix (`gpt-4o-mini` →
`gpt-4o-mini-2024-07-18`), as the real API does. `"stream": true` is
answered as server-sent events, with a last chunk carrying `usage` when
`stream_options.include_usage` asks for it. A user message containing
`FAIL` is answered 500 with an OpenAI-style error body.

Run as a script, it serves until interrupted and prints its base URL.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DELAY_S = 0.03
MODEL_SUFFIX = "-2024-07-18"
CREATED = 1_780_000_000
ERROR_MESSAGE = "The server had an error while processing your request."


def answer(user: str) -> str:
    """The assistant's reply to the user message `user`."""
    return f"Noted: {user}"


def usage(messages: list[dict[str, Any]], reply: str) -> dict[str, int]:
    """About four characters a token, as OpenAI's rule of thumb has it: counts
    that differ from call to call, so a run cannot pass with another's."""
    prompt = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 3 * len(messages)
    completion = len(reply) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def user_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")


class FakeOpenAI:
    def __init__(self, delay_s: float = DELAY_S) -> None:
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake.lock:
                    fake.requests.append(body)
                    n = len(fake.requests)
                time.sleep(fake.delay_s)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self.reply(
                        404, {"error": {"message": f"Unknown path {self.path}", "type": "invalid_request_error"}}
                    )
                    return
                messages = body.get("messages", [])
                user = user_text(messages)
                if "FAIL" in user:
                    error = {"message": ERROR_MESSAGE, "type": "server_error", "param": None, "code": None}
                    self.reply(500, {"error": error})
                    return
                reply = answer(user)
                completion = {
                    "id": f"chatcmpl-fake{n:04d}",
                    "created": CREATED + n,
                    "model": body.get("model", "gpt-4o-mini") + MODEL_SUFFIX,
                    "system_fingerprint": "fp_fake",
                }
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self.stream(completion, reply, usage(messages, reply) if include_usage else None)
                    return
                message = {"role": "assistant", "content": reply, "refusal": None}
                self.reply(
                    200,
                    {
                        **completion,
                        "object": "chat.completion",
                        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                        "usage": usage(messages, reply),
                    },
                )

            def reply(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.send_header("x-request-id", f"req_fake{len(fake.requests):04d}")
                self.end_headers()
                self.wfile.write(raw)

            def stream(self, completion: dict[str, Any], reply: str, usage: dict[str, int] | None) -> None:
                """The reply one word at a time, then `finish_reason`, then `usage`, then `[DONE]`."""

                def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
                    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    return {**completion, "object": "chat.completion.chunk", "choices": [choice], "usage": None}

                pieces = reply.split(" ")
                chunks = [chunk({"role": "assistant", "content": ""}, None)]
                chunks += [chunk({"content": p if i == 0 else f" {p}"}, None) for i, p in enumerate(pieces)]
                chunks.append(chunk({}, "stop"))
                if usage is not None:
                    chunks.append({**completion, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for c in chunks:
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    fake = FakeOpenAI()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.close()
