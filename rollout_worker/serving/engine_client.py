"""One asynchronous client for `/v1/completions` on vLLM and on the local engine, with token ids in and out.

The worker sends exact prompt token ids and needs back the sampled ids and their (processed) logprobs; anything
less would silently break token exactness or the PPO ratio, so every response is checked and a malformed one is an
`EngineResponseError` with a message saying what was missing, never a `KeyError` or a `None` deep in the trainer.

Retry rule: only transport failures are retried (connection refused or reset, the connection dropped mid-answer,
HTTP 502/503), with exponential backoff. 4xx answers are the request's fault and are never retried; a timeout is not
retried either (the engine may still be generating; retrying would double its load).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time

import aiohttp
import orjson

from ..protocols import EngineError, EngineResponseError, EngineUnreachableError, PromptTooLongError
from ..types import Completion

RETRYABLE_STATUSES = frozenset({502, 503})
# Wordings of "the prompt does not fit the context": vLLM's old and new messages, OpenAI's code, ours (= vLLM's).
_CONTEXT_PATTERNS = re.compile(
    r"maximum context length|context length is only|maximum input length|context_length_exceeded", re.IGNORECASE
)


def _error_message(body: object, fallback: str) -> str:
    """The message of an OpenAI/vLLM error body (`{"error": {"message"}}`, or vLLM's older flat form)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return fallback


def _int_after(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else None


def parse_completion(body: object, prompt_ids: list[int], latency_s: float) -> Completion:
    """Check a `/v1/completions` answer and extract the sampled ids and logprobs; raise `EngineResponseError`."""
    if not isinstance(body, dict):
        raise EngineResponseError(f"the engine answered {type(body).__name__}, not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EngineResponseError("the engine's answer has no choices[0]")
    choice = choices[0]
    token_ids = choice.get("token_ids")
    if not isinstance(token_ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in token_ids):
        raise EngineResponseError(
            "choices[0].token_ids is missing or not a list of ints: the engine must support `return_token_ids` "
            "(vLLM >= 0.10.2 or the local engine)"
        )
    logprobs_block = choice.get("logprobs")
    logprobs = logprobs_block.get("token_logprobs") if isinstance(logprobs_block, dict) else None
    if not isinstance(logprobs, list):
        raise EngineResponseError("choices[0].logprobs.token_logprobs is missing: the request must ask for logprobs=0")
    for index, value in enumerate(logprobs):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EngineResponseError(f"choices[0].logprobs.token_logprobs[{index}] is {value!r}, not a finite number")
    if len(logprobs) != len(token_ids):
        raise EngineResponseError(
            f"the engine returned {len(token_ids)} token ids but {len(logprobs)} logprobs; they must align"
        )
    echoed = choice.get("prompt_token_ids")
    if echoed is not None and echoed != list(prompt_ids):
        raise EngineResponseError("the engine's prompt_token_ids differ from the prompt ids sent (re-tokenized?)")
    finish_reason = choice.get("finish_reason")
    if not isinstance(finish_reason, str):
        raise EngineResponseError(f"choices[0].finish_reason is {finish_reason!r}, not a string")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens")
    if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool):
        prompt_tokens = len(prompt_ids)
    return Completion(list(token_ids), [float(v) for v in logprobs], finish_reason, prompt_tokens, latency_s)


class EngineClient:
    """`/v1/completions` with token ids against vLLM or the local engine. Use as `async with EngineClient(...)`."""

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 600.0, max_retries: int = 3,
                 backoff_s: float = 0.5):
        url = base_url.rstrip("/")
        self.base_url = url[: -len("/v1")] if url.endswith("/v1") else url  # accept the OpenAI-style base URL too
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._session: aiohttp.ClientSession | None = None
        self._max_model_len: int | None = None

    async def __aenter__(self) -> "EngineClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # created lazily: it must belong to the running loop
            # No pool limit (aiohttp's default is 100 connections): past it, calls would queue in this client, unseen
            # by the engine's scheduler. The worker bounds the calls in flight (max_inflight); the client must not.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def _request(self, method: str, path: str, payload: dict | None = None) -> object:
        """One call with the retry rule above; returns the decoded JSON body of a 200."""
        url = f"{self.base_url}{path}"
        last_problem = ""
        unreachable = False  # the last attempt failed at the transport level (nothing answered)
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                # orjson: the prompt is the whole context as ids, sent every turn; the stdlib encoder took 30 ms at
                # 160k ids (orjson 2.5 ms), more than the rest of the turn (bench/gate_overhead.py, docs/benchmarks.md).
                data = None if payload is None else orjson.dumps(payload)
                headers = None if payload is None else {"Content-Type": "application/json"}
                async with self._http().request(method, url, data=data, headers=headers) as response:
                    text = await response.text()
                    status = response.status
            except asyncio.TimeoutError:
                raise EngineError(f"{method} {url} timed out after {self.timeout_s:.0f}s") from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                last_problem, unreachable = f"{type(error).__name__}: {error}", True
                continue
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            if status in RETRYABLE_STATUSES:
                last_problem, unreachable = f"HTTP {status}: {_error_message(body, text[:300])}", False
                continue
            if status != 200:
                message = _error_message(body, text[:500])
                if status == 400 and _CONTEXT_PATTERNS.search(message):
                    raise PromptTooLongError(
                        message,
                        status,
                        prompt_tokens=_int_after(r"(?:You passed|contains(?: at least)?|resulted in) (\d+)", message),
                        max_model_len=_int_after(r"context length is (?:only )?(\d+)", message),
                    )
                raise EngineError(f"{method} {url} failed with HTTP {status}: {message}", status)
            if body is None:
                raise EngineResponseError(f"{method} {url} answered 200 with a body that is not JSON: {text[:200]!r}")
            return body
        error = EngineUnreachableError if unreachable else EngineError
        raise error(f"{method} {url} failed after {self.max_retries + 1} attempts; last: {last_problem}")

    async def complete(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        seed: int | None = None,
        stop_token_ids: list[int] | None = None,
        model: str | None = None,
    ) -> Completion:
        """Sample a continuation of exactly `prompt_ids`; `top_k` -1 or 0 means off; `model` overrides the served
        model for this call (a LoRA adapter)."""
        payload = {
            "model": model or self.model,
            "prompt": list(prompt_ids),
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
            "top_p": float(top_p),
            "top_k": -1 if top_k in (0, -1, None) else int(top_k),
            "n": 1,
            "logprobs": 0,
            "return_token_ids": True,
            "stream": False,
        }
        if seed is not None:
            payload["seed"] = int(seed)
        if stop_token_ids:
            payload["stop_token_ids"] = list(stop_token_ids)
        started = time.perf_counter()
        body = await self._request("POST", "/v1/completions", payload)
        return parse_completion(body, prompt_ids, time.perf_counter() - started)

    async def healthy(self, timeout_s: float = 5.0) -> bool:
        """Whether the server answers `GET /health` with 200 within `timeout_s` (one try, no retries)."""
        try:
            async with self._http().get(f"{self.base_url}/health",
                                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def max_model_len(self) -> int:
        """The served model's `max_model_len` from `/v1/models` (cached after the first call)."""
        if self._max_model_len is None:
            body = await self._request("GET", "/v1/models")
            cards = body.get("data") if isinstance(body, dict) else None
            if not isinstance(cards, list):
                raise EngineResponseError("/v1/models answered without a `data` list")
            names = [card.get("id") for card in cards if isinstance(card, dict)]
            card = next((c for c in cards if isinstance(c, dict) and c.get("id") == self.model), None)
            if card is None:
                raise EngineError(f"the engine does not serve model {self.model!r}; it serves {names}")
            value = card.get("max_model_len")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise EngineResponseError(f"/v1/models gives max_model_len={value!r} for {self.model!r}")
            self._max_model_len = value
        return self._max_model_len

