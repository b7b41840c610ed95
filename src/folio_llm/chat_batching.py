"""Concurrent API clients answered together: greedy, structured chat completions batched.

llama-cpp-python's server answers one request at a time. The requests `folio-llm serve` gets
from catalogers' tools are nearly all alike (greedy, the targets' JSON schema as the response
format), and llama.cpp advances many rows for little more than one (``decoding.llamacpp``,
``LlamaRows``). So such a request waits in :class:`ChatBatcher`; the next generation takes every
waiting request with the same schema and token limit, up to the generator's batch size, and each
gets an OpenAI chat-completion object. Anything else (streaming, sampling, tools, no schema)
goes on to llama-cpp-python's server as before (:func:`batchable` decides).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future

GATHER_SECONDS = 0.02  # after a request arrives alone, how long to wait for others to join it
ROLES = ("system", "user", "assistant")
# request keys whose meaning the batched path does not give: such a request goes to llama-cpp-python
NOT_BATCHED = ("stream", "tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "stop",
               "grammar", "logit_bias", "logits_processor")


def batchable(body, default_max_tokens: int) -> dict | None:
    """The request the batched path answers, from a chat-completions body as ``serve.openai_defaults``
    shaped it (its schema in ``response_format.schema``): {"messages", "schema", "max_tokens"};
    None when it asks for anything that path does not do."""
    if not isinstance(body, dict) or any(body.get(key) for key in NOT_BATCHED):
        return None
    if body.get("temperature") != 0 or body.get("n", 1) != 1 or body.get("repeat_penalty", 1.0) != 1.0:
        return None
    if any(body.get(key) for key in ("presence_penalty", "frequency_penalty")):
        return None
    response_format = body.get("response_format")
    schema = response_format.get("schema") if isinstance(response_format, dict) else None
    messages = body.get("messages")
    if not isinstance(schema, dict) or not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages):
        return None
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or default_max_tokens
    if not isinstance(limit, int) or limit < 1:
        return None
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages], "schema": schema,
            "max_tokens": limit}


def completion(model: str, text: str, prompt_tokens: int, completion_tokens: int, finish_reason: str) -> dict:
    """An OpenAI chat-completion object."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class ChatBatcher:
    """Answers :func:`batchable` requests on ``generator`` (``predict.Generator``, llama.cpp),
    several a generation, under ``lock`` (shared with the page's proposals)."""

    def __init__(self, generator, lock, model_name: str):
        self.generator, self.lock, self.model_name = generator, lock, model_name
        self.waiting: queue.Queue = queue.Queue()
        self.factories: dict[str, object] = {}
        threading.Thread(target=self._run, daemon=True, name="api-batches").start()

    def answer(self, request: dict) -> tuple[dict, int]:
        """The chat-completion object for ``request``, and how many requests its generation
        answered (blocks until it is done; ValueError for a request the model cannot take)."""
        done: Future = Future()
        self.waiting.put((request, done))
        return done.result()

    def _run(self) -> None:
        pending: list[tuple[dict, Future]] = []
        while True:
            if not pending:
                pending.append(self.waiting.get())
                time.sleep(GATHER_SECONDS)
            while not self.waiting.empty():
                pending.append(self.waiting.get_nowait())
            key = _group(pending[0][0])
            group = [item for item in pending if _group(item[0]) == key][:self.generator.batch_size]
            pending = [item for item in pending if all(item is not taken for taken in group)]
            try:
                replies = self._answer([request for request, _ in group])
            except Exception as exc:  # each client gets the reason; the batcher goes on
                for _, done in group:
                    done.set_exception(exc)
                continue
            for (_, done), reply in zip(group, replies):
                done.set_result((reply, len(group)))

    def _answer(self, requests: list[dict]) -> list[dict]:
        from folio_llm.decoding.constraints import schema_processor_factory
        from folio_llm.decoding.llamacpp import generate_batched
        from folio_llm.models import prompt_text

        tokenizer = self.generator.tokenizer
        key, limit = _group(requests[0])
        if key not in self.factories:
            self.factories[key] = schema_processor_factory(tokenizer, requests[0]["schema"])
        conversations = [request["messages"] for request in requests]
        with self.lock:
            answers = generate_batched(self.generator.model, tokenizer, conversations, self.generator.batch_size,
                                       limit, self.factories[key], progress=False,
                                       draft_tokens=self.generator.draft_tokens,
                                       answered=self.generator.answered_so_far())
        replies = []
        for conversation, answer in zip(conversations, answers):
            prompt = len(tokenizer(prompt_text(tokenizer, conversation), add_special_tokens=False)["input_ids"])
            written = len(tokenizer(answer.text, add_special_tokens=False)["input_ids"])
            replies.append(completion(self.model_name, answer.text, prompt, written,
                                      "length" if written >= limit else "stop"))
        return replies


def _group(request: dict) -> tuple:
    """Requests answered in one generation share these."""
    return json.dumps(request["schema"], sort_keys=True), request["max_tokens"]
