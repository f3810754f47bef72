"""Token-exact prompt assembly: what the engine generates under is exactly what TRL trains on (design §3).

Per rollout a `Conversation` holds the exact token ids it sent and sampled, and the messages it returned. When the
agent's next request repeats that conversation (compared semantically, `messages.py`) and adds messages, the next
prompt is the held ids followed by a *bridge*: the ids of only the new messages and the generation prompt, cut out of
a render of a two-message stub plus the new messages. The held context is never re-rendered nor re-tokenized, so
sampled ids are never replaced by their canonical re-render and the cost per turn does not grow with the context.
A request that does not extend any held conversation (history truncated, summarized or edited, tools changed, a
sub-agent) starts a new training row from a full render: a fork, counted.

Why a stub: the Qwen3 training template closes a history assistant turn with `<|im_end|>` + "\n", while the engine's
sampled ids stop at `<|im_end|>`. Cutting the stub render right after the stub assistant's turn-end token yields a
bridge that starts with that "\n", which is what a full render would have there.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import jinja2

from ..outcomes import ForkReason
from .messages import (
    MessageFormatError,
    count_unparsed_arguments,
    normalize_message,
    normalize_messages,
    normalized_equivalent,
    tools_equivalent,
)

# The stub conversation the bridge is rendered after. Its assistant text only has to be findable in the render.
_STUB_REPLY = "intercept-rl stub reply 0x5eed"
_STUB = ({"role": "user", "content": "."}, {"role": "assistant", "content": _STUB_REPLY})
# What probes the template with: every kind of message that can follow a held assistant turn.
_PROBE_TOOL = {"type": "function", "function": {"name": "probe", "parameters": {"type": "object", "properties": {}}}}
_PROBE_MESSAGES = (
    {"role": "tool", "content": "result one"},
    {"role": "tool", "content": "result two <|im_end|> ünïcode"},
    {"role": "user", "content": "next"},
    {"role": "assistant", "content": "prefilled",
     "tool_calls": [{"type": "function", "function": {"name": "probe", "arguments": {"a": 1}}}]},
    {"role": "system", "content": "mid-conversation system"},
)



@dataclass
class TrainingRow:
    """One token sequence to train on, aligned position by position.

    `completion_mask` is 1 exactly on sampled ids, whose `old_log_probs` are the engine's; prompt, tool results and
    template glue have mask 0 and log-prob 0. `model_versions` holds the policy version of each sampled turn and
    `turn_tokens` how many tokens that turn sampled.
    """

    input_ids: list[int]
    completion_mask: list[int]
    old_log_probs: list[float]
    prompt_messages: list[dict]
    completion_messages: list[dict]
    model_versions: list[int]
    turn_tokens: list[int] = field(default_factory=list)


@dataclass
class PlanCommitState:
    """What `Conversation.prepare` records for `Conversation.commit` to file the reply: opaque to everyone else."""

    conversation: Any = None  # the Conversation that planned it (a plan is committed only there, once)
    row: Any = None  # the _Row extended, None for a new row
    base_len: int = 0  # len(row ids) when planned; the bridge starts there
    messages: list[dict] = field(default_factory=list)  # normalized request messages
    raw: list[Any] = field(default_factory=list)  # the agent's raw messages (for fast re-matching)
    tools: list[dict] | None = None
    unparsed_arguments: int = 0
    committed: bool = False


@dataclass
class PromptPlan:
    """The prompt for one agent call, and what `Conversation.commit` needs to file the sampled reply.

    `forked` is True when the request did not extend a held conversation and a new training row starts from a full
    render; `reason` then says why (one of the module's fork reasons). Planning changes nothing: a plan whose
    engine call failed is simply dropped.
    """

    prompt_ids: list[int]
    forked: bool
    reason: ForkReason | None
    detail: str | None = None  # human-readable explanation of the fork
    rendered_tokens: int = 0  # ids this plan tokenized (the bridge, or the whole prompt on a new row)
    commit_state: PlanCommitState = field(default_factory=PlanCommitState, repr=False)


class PromptAssembler:
    """Renders and tokenizes with one tokenizer and one prefix-preserving training chat template (one per worker).

    At construction it learns, from a probe render, which special token(s) end an assistant turn in this template
    (`<|im_end|>` for Qwen3) and how many characters of template glue follow them ("\\n"): a template without a
    special turn-end token cannot be assembled token-exactly and is refused.
    """

    def __init__(self, tokenizer, chat_template: str):
        if not isinstance(chat_template, str) or not chat_template:
            raise ValueError("PromptAssembler needs the training chat template as jinja text")
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self._special_ids = set(tokenizer.all_special_ids) | {
            i for i, added in tokenizer.added_tokens_decoder.items() if added.special
        }
        probe = self.render(list(_STUB), None, add_generation_prompt=False)
        at = probe.rfind(_STUB_REPLY)
        if at < 0:
            raise ValueError("the chat template does not render assistant content; cannot assemble prompts")
        tail = probe[at + len(_STUB_REPLY) :]
        tail_ids = self.encode(tail)
        close = []
        for token_id in tail_ids:
            if token_id not in self._special_ids:
                break
            close.append(token_id)
        close_text = "".join(tokenizer.convert_ids_to_tokens(close))
        if not close or not tail.startswith(close_text):
            raise ValueError(
                f"the chat template ends assistant turns with {tail!r}, not with a special token: the turn end the "
                "engine samples cannot be told apart from template text, so token-exact assembly is impossible"
            )
        self.turn_end_ids: list[int] = close
        # Characters of template glue after the turn-end token(s) in a render ("\n" for Qwen3).
        self._glue_chars = len(tail) - len(close_text)
        self._fast_encoder = self._probe_fast_encoder()
        self._bridge_needs_tools = self._probe_bridge_needs_tools()
        self._stub_renders: dict[str, str] = {}

    def _probe_fast_encoder(self):
        """The Rust tokenizer itself, when it encodes exactly like `tokenizer.encode` (skips ~0.2 ms of wrapper)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if not getattr(self.tokenizer, "is_fast", False) or backend is None:
            return None
        if backend.truncation is not None or backend.padding is not None:
            return None
        if getattr(backend, "encode_special_tokens", False):
            return None
        text = self.render([*_STUB, *_PROBE_MESSAGES], [_PROBE_TOOL], add_generation_prompt=True)
        slow = self.tokenizer.encode(text, add_special_tokens=False)
        return backend if backend.encode(text, add_special_tokens=False).ids == slow else None

    def _probe_bridge_needs_tools(self) -> bool:
        """Whether tools change how messages after the system part render (not for Qwen3: only the header)."""
        try:
            parts = []
            for tools in ([_PROBE_TOOL], None):
                stub = self.render(list(_STUB), tools, add_generation_prompt=False)
                text = self.render([*_STUB, *_PROBE_MESSAGES], tools, add_generation_prompt=True)
                if not text.startswith(stub):
                    return True
                parts.append(text[len(stub) :])
        except Exception:  # a template that cannot render the probe: keep rendering bridges with the real tools
            return True
        return parts[0] != parts[1]

    def render(self, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool) -> str:
        """The training template's text for normalized `messages`; a template error is a `MessageFormatError`."""
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                tools=tools or None,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                chat_template=self.chat_template,
            )
        except jinja2.TemplateError as error:  # e.g. `raise_exception` on a role order the template rejects
            raise MessageFormatError(f"the chat template cannot render these messages: {error}") from error

    def encode(self, text: str) -> list[int]:
        """Token ids of template text (special tokens recognised, nothing added)."""
        fast = getattr(self, "_fast_encoder", None)
        if fast is not None:
            return fast.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def full_prompt_ids(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        """A whole prompt: normalized `messages` rendered with the generation prompt, then tokenized."""
        return self.encode(self.render(messages, tools, add_generation_prompt=True))

    def bridge_ids(self, new_messages: list[dict], tools: list[dict] | None, closed: bool) -> list[int]:
        """Ids that follow a held assistant turn: its glue, `new_messages` and the generation prompt.

        `closed` says whether the held turn's sampled ids end with the turn-end token; if not (the completion hit
        `max_tokens`), the bridge closes it first. Raises `_NotPrefixPreserving` when the template renders the stub
        differently once messages follow it.
        """
        tools = tools if self._bridge_needs_tools else None
        key = json.dumps(tools, sort_keys=True) if tools else ""
        stub = self._stub_renders.get(key)
        if stub is None:
            stub = self.render(list(_STUB), tools, add_generation_prompt=False)
            if len(self._stub_renders) < 64:
                self._stub_renders[key] = stub
        text = self.render([*_STUB, *new_messages], tools, add_generation_prompt=True)
        if not text.startswith(stub):
            raise _NotPrefixPreserving
        ids = self.encode(text[len(stub) - self._glue_chars :])
        return ids if closed else [*self.turn_end_ids, *ids]

    def new_conversation(self) -> Conversation:
        """Empty per-rollout state."""
        return Conversation(self)


class _NotPrefixPreserving(Exception):
    pass


@dataclass(eq=False)  # identity semantics: rows are looked up in lists, never compared by content
class _Row:
    """A training row under construction and the conversation it holds."""

    ids: list[int]
    mask: list[int]
    logprobs: list[float]
    tools: list[dict] | None
    n_prompt_messages: int
    messages: list[dict] = field(default_factory=list)  # normalized, ending with our last reply
    raw: list[Any] = field(default_factory=list)  # last raw form the agent sent per message; None: not yet echoed
    model_versions: list[int] = field(default_factory=list)
    turn_tokens: list[int] = field(default_factory=list)
    closed: bool = True


class Conversation:
    """The token-exact state of one rollout: its training rows and the conversations they hold.

    Call `prepare` for each agent request and `commit` once the engine has sampled for that plan. Not thread-safe:
    use it from one thread (the worker's event loop); concurrent plans on one conversation are handled (the later
    commit becomes a fork) but must not run in parallel threads.
    """

    def __init__(self, assembler: PromptAssembler):
        self._assembler = assembler
        self._rows: list[_Row] = []
        self._recent: list[_Row] = []  # rows by last commit, most recent first
        self._counts = {
            "turns": 0,
            "forks": 0,
            "sampled_tokens": 0,
            "prompt_tokens_rendered": 0,
            "unparsed_tool_arguments": 0,
            "unclosed_turns": 0,
        }

    # -- planning -----------------------------------------------------------------------------------------------

    def prepare(self, messages: list[dict], tools: list[dict] | None = None) -> PromptPlan:
        """The prompt ids for a request: held ids + bridge when it extends a held conversation, else a full render.

        Raises `MessageFormatError` (a `ValueError`) for messages the template cannot render.
        """
        if not isinstance(messages, list) or not messages:
            normalize_messages(messages)  # raises the uniform error
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise MessageFormatError("tools must be a list of objects")
        tools = tools or None
        best, best_refreshed, mismatch = None, None, None
        for row in self._recent:
            verdict = self._divergence(row, messages, tools)
            if isinstance(verdict, dict):
                if best is None or len(row.messages) > len(best.messages):
                    best, best_refreshed = row, verdict
            elif mismatch is None or verdict[2] > mismatch[2]:
                mismatch = verdict  # explained against the row that agrees longest (ties: the most recent)
        if best is not None:
            try:
                return self._extend(best, messages, best_refreshed)
            except _NotPrefixPreserving:
                mismatch = (ForkReason.NOT_PREFIX_PRESERVING,
                            "the template renders the stub differently after new messages", 0)
        return self._new_row_plan(messages, tools, mismatch)

    def _divergence(self, row: _Row, messages: list[dict], tools) -> dict[int, Any] | tuple[ForkReason, str, int]:
        """How `messages` relate to what `row` holds.

        When they extend it: {index: raw message} for held messages the agent re-sent in another form (an echo of our
        reply) — the held form stays, the raw one is remembered for a fast exact match next time. Otherwise:
        (fork reason, detail, number of messages that agree).
        """
        if not tools_equivalent(row.tools, tools):
            return ForkReason.TOOLS_CHANGED, "the request's tools differ from the held conversation's", 0
        held, seen = row.messages, row.raw
        refreshed: dict[int, Any] = {}
        for i in range(min(len(messages), len(held))):
            raw = messages[i]
            if raw == seen[i]:  # re-sent unchanged (the common case): a C-level comparison, no normalizing
                continue
            if not normalized_equivalent(held[i], normalize_message(raw, i)):
                detail = f"message {i} ({held[i]['role']}) differs from the held conversation"
                return ForkReason.HISTORY_EDITED, detail, i
            refreshed[i] = raw
        if len(messages) < len(held):
            detail = f"the request has {len(messages)} messages, the held conversation {len(held)}"
            return ForkReason.HISTORY_SHORTENED, detail, len(messages)
        return refreshed

    def _extend(self, row: _Row, messages: list[dict], refreshed: dict[int, Any]) -> PromptPlan:
        n_held = len(row.messages)
        new = [normalize_message(m, i) for i, m in enumerate(messages[n_held:], start=n_held)]
        # The held tools, not the request's: equivalent, but possibly serialized in another key order.
        bridge = self._assembler.bridge_ids(new, row.tools, row.closed)
        raw = list(row.raw)
        for i, message in refreshed.items():
            raw[i] = copy.deepcopy(message)
        raw.extend(copy.deepcopy(messages[n_held:]))
        return PromptPlan(
            prompt_ids=row.ids + bridge,
            forked=False,
            reason=None,
            rendered_tokens=len(bridge),
            commit_state=PlanCommitState(conversation=self, row=row, base_len=len(row.ids),
                                         messages=[*row.messages, *new], raw=raw, tools=row.tools,
                                         unparsed_arguments=count_unparsed_arguments(new)),
        )

    def _new_row_plan(self, messages: list[dict], tools, mismatch: tuple[ForkReason, str, int] | None) -> PromptPlan:
        normalized = normalize_messages(messages)
        prompt_ids = self._assembler.full_prompt_ids(normalized, tools)
        reason, detail = mismatch[:2] if self._rows else (None, None)
        return PromptPlan(
            prompt_ids=prompt_ids,
            forked=bool(self._rows),
            reason=reason,
            detail=detail,
            rendered_tokens=len(prompt_ids),
            commit_state=PlanCommitState(conversation=self, messages=normalized, raw=copy.deepcopy(messages),
                                         tools=copy.deepcopy(tools),
                                         unparsed_arguments=count_unparsed_arguments(normalized)),
        )

    # -- filing the sampled reply -------------------------------------------------------------------------------

    def commit(
        self,
        plan: PromptPlan,
        completion_ids: list[int],
        completion_logprobs: list[float],
        reply_message: dict,
        finish_reason: str,
        model_version: int,
    ) -> None:
        """File the engine's sampled ids (mask 1, their log-probs) after the plan's prompt, and the reply we sent.

        `finish_reason` is informational: whether the turn is closed is read from the ids (a completion cut by
        `max_tokens` lacks the turn-end token, and the next bridge adds it, un-sampled).
        """
        if plan.commit_state.conversation is not self:
            raise ValueError("this plan was prepared by another conversation")
        if plan.commit_state.committed:
            raise ValueError("this plan was already committed")
        if len(completion_ids) != len(completion_logprobs):
            raise ValueError(
                f"{len(completion_ids)} completion ids but {len(completion_logprobs)} log-probs: they must align"
            )
        if any(lp is None for lp in completion_logprobs):
            raise ValueError("the engine returned a null log-prob for a sampled token")
        reply = normalize_message(reply_message)
        if reply["role"] != "assistant":
            raise ValueError("the reply must be an assistant message")

        row = plan.commit_state.row
        if row is not None and len(row.ids) == plan.commit_state.base_len:
            bridge = plan.prompt_ids[plan.commit_state.base_len :]
            row.ids.extend(bridge)
            row.mask.extend([0] * len(bridge))
            row.logprobs.extend([0.0] * len(bridge))
        else:
            # A new row: first turn, fork, or a second extension of a row another commit already extended.
            if not plan.forked and self._rows:  # planned before a concurrent request's commit changed the state
                plan.forked, plan.reason = True, ForkReason.CONCURRENT_BRANCH
                plan.detail = "another request extended or started this conversation after this one was planned"
            n = len(plan.prompt_ids)
            row = _Row(
                ids=list(plan.prompt_ids),
                mask=[0] * n,
                logprobs=[0.0] * n,
                tools=plan.commit_state.tools,
                n_prompt_messages=len(plan.commit_state.messages),
            )
            self._rows.append(row)
            if plan.forked:
                self._counts["forks"] += 1
        row.ids.extend(int(t) for t in completion_ids)
        row.mask.extend([1] * len(completion_ids))
        row.logprobs.extend(float(lp) for lp in completion_logprobs)
        row.messages = [*plan.commit_state.messages, reply]
        row.raw = [*plan.commit_state.raw, None]
        row.model_versions.append(int(model_version))
        row.turn_tokens.append(len(completion_ids))
        row.closed = bool(completion_ids) and list(completion_ids[-len(self._assembler.turn_end_ids) :]) == (
            self._assembler.turn_end_ids
        )
        if row in self._recent:
            self._recent.remove(row)
        self._recent.insert(0, row)
        plan.commit_state.committed = True

        counts = self._counts
        counts["turns"] += 1
        counts["sampled_tokens"] += len(completion_ids)
        counts["prompt_tokens_rendered"] += plan.rendered_tokens
        counts["unparsed_tool_arguments"] += plan.commit_state.unparsed_arguments
        counts["unclosed_turns"] += not row.closed

    # -- results ------------------------------------------------------------------------------------------------

    def rows(self) -> list[TrainingRow]:
        """Copies of every row with at least one sampled turn, in creation order."""
        return [
            TrainingRow(
                input_ids=list(row.ids),
                completion_mask=list(row.mask),
                old_log_probs=list(row.logprobs),
                prompt_messages=copy.deepcopy(row.messages[: row.n_prompt_messages]),
                completion_messages=copy.deepcopy(row.messages[row.n_prompt_messages :]),
                model_versions=list(row.model_versions),
                turn_tokens=list(row.turn_tokens),
            )
            for row in self._rows
        ]

    @property
    def stats(self) -> dict[str, int]:
        """Drift counters: turns, forks, sampled vs trained tokens, rows, tokens rendered, unparsed arguments."""
        return {
            **self._counts,
            "rows": len(self._rows),
            "trained_tokens": sum(sum(row.mask) for row in self._rows),
        }
