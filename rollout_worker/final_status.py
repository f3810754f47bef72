"""The one place a rollout's final status and reward are decided, once its episode has ended.

The episode runner reports what it saw (`EpisodeResult`: the agent's end, the grade); the turn server knows why the
gate ended the rollout (`TurnEnd`). The worker folds the two here, so the rule "the gate's reason wins, overlong
follows the overlong policy, stale and engine failures are unscorable" lives in one function (design §2, §7).
"""

from __future__ import annotations

from .outcomes import EpisodeStatus, OverlongPolicy, TurnEnd
from .types import EpisodeResult


def decide_outcome(result: EpisodeResult, turn_end: TurnEnd | None, overlong_policy: OverlongPolicy,
                   engine_error: str | None = None) -> EpisodeResult:
    """Fold the turn server's reason into the episode's result: the one place a rollout's final status is decided.

    The turn server's reason wins over the agent's (the agent usually stops *because* the gate ended the rollout).
    """
    result.details["turn_end"] = turn_end.value if turn_end is not None else None
    if turn_end is TurnEnd.OVERLONG:
        result.status = EpisodeStatus.OVERLONG
        if overlong_policy is OverlongPolicy.ZERO:
            result.reward, result.resolved, result.scorable = 0.0, False, True
        else:
            result.reward, result.scorable = None, False
    elif turn_end in (TurnEnd.STALE, TurnEnd.ENGINE_ERROR):
        result.status = EpisodeStatus.CANCELLED if turn_end is TurnEnd.STALE else EpisodeStatus.INFRA_ERROR
        result.reward, result.scorable = None, False
        result.details.setdefault("error", engine_error or "rollout went stale")
    elif turn_end in (TurnEnd.TURNS, TurnEnd.TOKENS) and result.scorable:
        result.status = EpisodeStatus.BUDGET
    return result
