"""Serving one rollout's agent calls: messages → exact prompt ids → engine → parsed reply.

One coroutine per rollout answers its calls in order. Everything that ends a rollout early (a budget, an overlong
prompt, a stale policy, a dead engine) answers the pending call with an OpenAI-style error and sets `stop`, so the
episode runner kills the agent; nothing here waits without a bound. The one exception is the reply that spends the
completion-token budget: the agent still gets `budget_grace_s` to act on it (stopping it at once would race its
last action, e.g. writing its answer, and grade an unfinished tree: reward noise the policy cannot explain).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from control_plane import InterceptedRequest, RolloutClosed, RolloutHandle

from ..config import WorkerConfig
from ..outcomes import TurnEnd
from ..protocols import EngineError, PromptTooLongError
from .messages import MessageFormatError
from .parsing import parse_completion

if TYPE_CHECKING:
    from ..protocols import Engine
    from .assembly import Conversation

logger = logging.getLogger(__name__)


@dataclass
class TurnState:
    """What the serving loop learned about its rollout; read by the worker when the episode ends."""

    turns: int = 0
    completion_tokens: int = 0
    first_model_version: int | None = None
    ended_by: TurnEnd | None = None
    engine_error: str | None = None
    parse_failures: int = 0
    discarded_replies: int = 0  # sampled, but the agent had gone: not trained
    engine_latency_s: list[float] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)  # our time per turn, engine excluded
    last_activity: float = field(default_factory=time.monotonic)
    budget_timer: asyncio.TimerHandle | None = None  # sets `stop` once the grace after the last reply is over


class RolloutEnded(Exception):
    """Raised by a guard of `_answer`: the call is answered with this error and the rollout ends for `reason`."""

    def __init__(self, reason: TurnEnd, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.status, self.code, self.message = reason, status, code, message


class TurnServer:
    """Answers the calls of one rollout through its engine (the replica it is pinned to, or the one engine) and the
    rollout's own conversation."""

    def __init__(
        self,
        *,
        config: WorkerConfig,
        engine: Engine,
        tokenizer,
        max_model_len: int,
        model_version: Callable[[], int],
        adapter_for_version: Callable[[int], str | None] = lambda version: None,
    ):
        """`adapter_for_version(v)`: the engine model to sample policy version `v` from when the trainer publishes
        each version as a LoRA adapter (None: the served model, whose weights the trainer replaces in place)."""
        self.config = config
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.model_version = model_version
        self.adapter_for_version = adapter_for_version

    async def serve(self, handle: RolloutHandle, conversation: Conversation, state: TurnState,
                    stop: asyncio.Event, engine: Engine | None = None) -> None:
        """Answer calls until the rollout is closed (the worker closes it when the episode ends). `engine`: the
        replica this rollout is pinned to (default: the server's engine)."""
        try:
            await self._serve(handle, conversation, state, stop, engine or self.engine)
        finally:
            if state.budget_timer is not None:
                state.budget_timer.cancel()

    async def _serve(self, handle: RolloutHandle, conversation: Conversation, state: TurnState,
                     stop: asyncio.Event, engine: Engine) -> None:
        while True:
            try:
                request = await handle.next_request(timeout=self.config.next_call_poll_s)
            except asyncio.TimeoutError:
                continue  # an agent thinking for a long time is not an error; the episode budget bounds it
            except RolloutClosed:
                return
            try:
                await self._answer(request, conversation, state, stop, engine)
            except RolloutEnded as end:  # the one place a guard's verdict is applied
                state.ended_by = state.ended_by or end.reason
                stop.set()
                await request.fail(end.status, end.message, code=end.code)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not hang the agent: answer, end the rollout, report
                logger.exception("turn failed")
                state.ended_by = state.ended_by or TurnEnd.ENGINE_ERROR
                state.engine_error = state.engine_error or f"{type(exc).__name__}: {exc}"
                stop.set()
                await request.fail(500, "internal error while serving this call", code="internal_error")
            state.last_activity = time.monotonic()

    async def _answer(self, request: InterceptedRequest, conversation: Conversation, state: TurnState,
                      stop: asyncio.Event, engine: Engine) -> None:
        """Answer one call, or raise `RolloutEnded` when a guard ends the rollout."""
        cfg = self.config
        t0 = time.perf_counter()
        if stop.is_set():
            await request.fail(409, "this rollout has ended", code="rollout_ended")
            return
        if state.ended_by is TurnEnd.TOKENS:  # a call after the budget-spending reply
            raise RolloutEnded(TurnEnd.TOKENS, 400, "budget_exceeded",
                               f"completion token budget of {cfg.max_completion_tokens} tokens is exhausted")
        version = self.model_version()  # stamped at request time, not at rollout end
        if state.first_model_version is None:
            state.first_model_version = version
        if cfg.max_staleness is not None and version - state.first_model_version > cfg.max_staleness:
            raise RolloutEnded(TurnEnd.STALE, 409, "stale_rollout",
                               f"policy moved {version - state.first_model_version} versions since this rollout began")
        if state.turns >= cfg.max_turns:
            raise RolloutEnded(TurnEnd.TURNS, 400, "budget_exceeded",
                               f"turn budget of {cfg.max_turns} calls is exhausted")

        try:
            plan = conversation.prepare(request.messages, request.tools)
        except MessageFormatError as exc:  # the agent's messages cannot be rendered: its error, not ours
            await request.fail(400, str(exc), code="invalid_messages")
            return
        prompt_len = len(plan.prompt_ids)
        if prompt_len >= self.max_model_len:
            raise self._overlong(prompt_len)
        max_tokens = min(cfg.max_tokens_per_turn, self.max_model_len - prompt_len)
        asked = request.params.get("max_completion_tokens") or request.params.get("max_tokens")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
            max_tokens = min(max_tokens, asked)
        if cfg.max_completion_tokens is not None:
            max_tokens = min(max_tokens, max(1, cfg.max_completion_tokens - state.completion_tokens))

        adapter = self.adapter_for_version(version)
        t1 = time.perf_counter()
        try:
            completion = await engine.complete(
                plan.prompt_ids,
                max_tokens=max_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=cfg.top_k,
                **({"model": adapter} if adapter else {}),
            )
        except PromptTooLongError:
            raise self._overlong(prompt_len) from None
        except EngineError as exc:
            state.engine_error = str(exc)
            raise RolloutEnded(TurnEnd.ENGINE_ERROR, 502, "engine_error", "the inference engine failed") from exc
        t2 = time.perf_counter()
        state.engine_latency_s.append(t2 - t1)
        if request.disconnected.is_set():
            # The agent never saw this reply; training on it would teach a context the agent did not continue.
            state.discarded_replies += 1
            return

        parsed = parse_completion(self.tokenizer, completion.token_ids, plan.prompt_ids, request.tools)
        if not parsed.ok:
            state.parse_failures += 1
        conversation.commit(plan, completion.token_ids, completion.logprobs, parsed.message,
                            completion.finish_reason, version)
        state.turns += 1
        state.completion_tokens += len(completion.token_ids)
        # The gate speaks OpenAI's finish reasons only; an engine's own ("abort", …) reads as a plain stop.
        finish = "tool_calls" if parsed.message.get("tool_calls") else (
            "length" if completion.finish_reason == "length" else "stop")
        n_out = len(completion.token_ids)
        await request.reply(
            parsed.message,
            finish_reason=finish,
            usage={"prompt_tokens": prompt_len, "completion_tokens": n_out, "total_tokens": prompt_len + n_out},
        )
        state.overhead_s.append((t1 - t0) + (time.perf_counter() - t2))
        if cfg.max_completion_tokens is not None and state.completion_tokens >= cfg.max_completion_tokens:
            state.ended_by = state.ended_by or TurnEnd.TOKENS
            if cfg.budget_grace_s > 0:
                state.budget_timer = asyncio.get_running_loop().call_later(cfg.budget_grace_s, stop.set)
            else:
                stop.set()

    def _overlong(self, prompt_len: int) -> RolloutEnded:
        return RolloutEnded(TurnEnd.OVERLONG, 400, "context_length_exceeded",
                            f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                            f"messages resulted in {prompt_len} tokens. Please reduce the length of the messages.")
