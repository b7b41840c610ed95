"""Answers from any OpenAI-compatible chat-completions API (vLLM, Ollama, llama.cpp's server,
`folio-llm serve`, OpenAI), through the official ``openai`` SDK.

Greedy (temperature 0), the JSON schema of the targets as a structured-output response format
when the server takes one (plain prompting when it refuses it), a bounded number of requests in
flight, and the SDK's retries with backoff on 429, 5xx, timeouts and dropped connections. The key
comes from ``OPENAI_API_KEY`` only and is never written anywhere, messages included.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from tqdm import tqdm

MISSING = "the openai backend needs the openai SDK: pip install 'folio-llm[serve]'"


class ChatApiError(ValueError):
    """A request the server would not answer; the message names the URL and the status. ``answers``
    holds the answers received before it (None where none came)."""

    def __init__(self, message: str, answers: list[str | None]):
        super().__init__(message)
        self.answers = answers


@dataclass
class ChatApi:
    """A served model that answers conversations, like ``predict.Generator``."""

    base_url: str
    model: str
    schema: dict | None = None  # the answer's JSON shape, sent as a json_schema response format
    max_new_tokens: int = 768
    concurrency: int = 4
    attempts: int = 5  # the SDK's max_retries + 1: backoff from 0.5 s, doubling, honouring Retry-After
    timeout: float = 300.0
    usage: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    structured: bool | None = None  # None until the server has accepted or refused the response format
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self):
        try:
            import openai
        except ImportError:
            raise ValueError(MISSING) from None
        # the SDK insists on a key; local servers take any
        return openai.OpenAI(base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
                             max_retries=max(0, self.attempts - 1), timeout=self.timeout)

    def response_format(self) -> dict | None:
        if self.schema is None or self.structured is False:
            return None
        return {"type": "json_schema", "json_schema": {"name": "folio_instance", "schema": self.schema, "strict": False}}

    def _ask(self, client, messages: Sequence[dict]) -> str:
        import openai

        request = {"model": self.model, "messages": list(messages), "temperature": 0.0,
                   "max_tokens": self.max_new_tokens}
        response_format = self.response_format()
        try:
            reply = client.chat.completions.create(**request, **(
                {"response_format": response_format} if response_format else {}))
        except openai.BadRequestError as exc:
            if not response_format or "response_format" not in str(exc).lower() and "schema" not in str(exc).lower():
                raise
            with self._lock:
                self.structured = False  # the server takes no JSON schema: plain prompting from here on
            reply = client.chat.completions.create(**request)
        else:
            if response_format and self.structured is None:
                with self._lock:
                    self.structured = True
        if reply.usage:
            with self._lock:
                self.usage["prompt_tokens"] += reply.usage.prompt_tokens or 0
                self.usage["completion_tokens"] += reply.usage.completion_tokens or 0
        return (reply.choices[0].message.content or "").strip()

    def answer(self, conversations: Sequence[Sequence[dict]], progress: bool = True) -> list[str]:
        """One answer per conversation (its assistant message, if any, left out), in order."""
        import openai

        client = self.client()
        conversations = [[m for m in c if m["role"] != "assistant"] for c in conversations]
        answers: list[str | None] = [None] * len(conversations)
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool, \
                tqdm(total=len(conversations), desc="generate", unit="prompt", disable=None if progress else True,
                     leave=False) as bar:
            futures = [pool.submit(self._ask, client, c) for c in conversations]
            try:
                for index, future in enumerate(futures):
                    answers[index] = future.result()
                    bar.update()
            except openai.AuthenticationError:
                self._cancel(futures)
                raise ChatApiError(f"{self.base_url}: the server refused the key (HTTP 401): set OPENAI_API_KEY "
                                   "to a key it accepts", answers) from None
            except openai.APIStatusError as exc:
                self._cancel(futures)
                raise ChatApiError(f"{self.base_url}: HTTP {exc.status_code} after {self.attempts} tries: "
                                   f"{_one_line(exc)}", answers) from None
            except openai.APITimeoutError:
                self._cancel(futures)
                raise ChatApiError(f"{self.base_url}: no answer within {self.timeout:g} s after {self.attempts} tries",
                                   answers) from None
            except openai.APIConnectionError as exc:
                self._cancel(futures)
                raise ChatApiError(f"{self.base_url}: cannot connect ({_one_line(exc)})", answers) from None
        return answers  # type: ignore[return-value]

    @staticmethod
    def _cancel(futures) -> None:
        for future in futures:
            future.cancel()

    def close(self) -> None:
        pass


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        text = text.replace(key, "***")
    return text[:200]
