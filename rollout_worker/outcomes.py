"""How rollouts end, as types only (no logic; `final_status.decide_outcome` folds them into a result).

Two parts of the system see a rollout end, each for its own reasons:
- the turn server (`serving/turns.py`) ends it from the gate's side: a budget, an overlong prompt, a stale policy, a
  failing engine (`TurnEnd`);
- the episode (`environment/episode.py`) sees the agent's process end: it exited, the worker stopped it, or its wall
  time ran out (`AgentEnd`).
`final_status.decide_outcome` folds both into one `EpisodeStatus` and reward; the record keeps both reasons
(`details["turn_end"]`, `details["agent_end"]`) so nothing about why a rollout ended is lost.
"""

from __future__ import annotations

import enum


class EpisodeStatus(enum.StrEnum):
    """A rollout's final status. Only COMPLETED and BUDGET episodes are graded normally; OVERLONG follows the
    worker's overlong policy; everything else is unscorable (excluded from the group baseline, never trained)."""

    COMPLETED = "completed"  # the agent exited on its own
    BUDGET = "budget"  # a turn/token/wall-time budget ended the agent; its work is still graded
    OVERLONG = "overlong"  # the prompt outgrew the engine's max_model_len
    AGENT_ERROR = "agent_error"  # the agent crashed or could not start
    INFRA_ERROR = "infra_error"  # sandbox / grading / engine infrastructure failed
    CANCELLED = "cancelled"  # the worker stopped or the rollout went stale


class TurnEnd(enum.StrEnum):
    """Why the turn server ended a rollout from the gate's side."""

    TURNS = "turns"  # the turn budget (max_turns calls) is spent
    TOKENS = "tokens"  # the completion-token budget is spent
    OVERLONG = "overlong"  # the prompt does not fit the engine's context
    STALE = "stale"  # the policy moved more than max_staleness versions since the rollout began
    ENGINE_ERROR = "engine_error"  # the engine failed (or serving the call raised)


class AgentEnd(enum.StrEnum):
    """How the agent's process ended, as the episode saw it."""

    EXIT = "exit"  # it exited on its own
    STOP = "stop"  # the worker's stop event (a turn end, shutdown) ended it
    WALL_TIME = "wall_time"  # its wall-time budget ran out


class ForkReason(enum.StrEnum):
    """Why a request did not extend the held conversation, so a new training row starts (design §3)."""

    TOOLS_CHANGED = "tools_changed"
    HISTORY_EDITED = "history_edited"  # a held message differs: truncated middle, summary, edit
    HISTORY_SHORTENED = "history_shortened"  # the request stops inside the held conversation: retry or branch
    CONCURRENT_BRANCH = "concurrent_branch"  # two requests extended the same conversation at once
    NOT_PREFIX_PRESERVING = "template_not_prefix_preserving"


class OverlongPolicy(enum.StrEnum):
    """What an OVERLONG rollout counts as (`WorkerConfig.overlong_policy`)."""

    EXCLUDE = "exclude"  # unscorable: neither trained nor part of the group baseline
    ZERO = "zero"  # scored 0
