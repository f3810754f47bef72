"""Off-policy correction for TRL 1.16's AsyncGRPOTrainer, on top of its own loss (design §13, docs/benchmarks.md).

TRL's loss is PPO-clip on `r = π_θ / μ`, with μ the behaviour policy (the engine's log-probs of the sampled tokens):
a trust region around μ and nothing that corrects for the policy having moved since μ sampled. The corrections here
follow verl / slime / AReaL: the trainer re-scores each micro-batch with its current weights BEFORE the update (one
extra forward without gradient: `π_old`, AReaL's "proximal" policy, verl's recomputed `old_log_prob`), the PPO term
is taken against `π_old`, and a per-token behaviour weight `w` built from `ρ = π_old / μ` corrects for the lag:

    loss_t = -w_t · min(r_t · A, clip(r_t, 1-ε_low, 1+ε_high) · A),   r_t = π_θ(t) / π_old(t),   ρ_t = π_old(t) / μ(t)

    none       TRL unchanged: w = 1 and r_t = π_θ(t) / μ(t) (no extra forward)
    tis        truncated IS (Yao et al. 2025, verl `rollout_is`):   w_t = min(ρ_t, C)
    mis-token  masked IS, token level (icepop):                       w_t = ρ_t if L <= ρ_t <= C else 0
    mis-seq    masked IS, sequence level:  ρ_s = exp(mean_{t in s} log ρ_t);  w_t = ρ_s if L <= ρ_s <= C else 0
    decoupled  decoupled PPO (AReaL), behaviour-weight cap:         w_t = ρ_t if ρ_t <= C else 0

`C` is `off_policy_is_cap`, `L` `off_policy_is_floor`, `w` is never differentiated. Since TRL's AsyncGRPO takes ONE
optimizer step per batch, `π_old` equals `π_θ` at the forward: `r = 1`, the clip never binds, and each correction is
its weighted policy gradient `-w·A·∇log π_θ`. Decoupled PPO's clip around the proximal policy would only matter with
several optimizer steps per batch, so here it differs from `mis-token` only by having no floor.

Implementation: `install_off_policy_correction(trainer, mode, ...)` wraps `trainer.compute_loss` on the instance (as
`trainer/on_demand_batches.py` wraps the loader): it computes `π_old` with the same forward TRL's `compute_loss` runs
(`_scored_log_probs`, pinned against TRL by tests/trainer/test_off_policy.py), then hands TRL's own `compute_loss`
`old_log_probs := log π_old` and `advantages := w · A`. Since `w >= 0`, `w·min(rA, clip(r)A) = min(r·wA, clip(r)·wA)`,
so TRL's unmodified loss computes exactly the formula above; TRL's `ratio`/`kl`/`clip_ratio` then measure π_θ against
π_old, and the `off_policy/*` metrics measure the behaviour side (ρ, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.modes import OffPolicyCorrection, parse_choice


def parse_correction(value: object) -> OffPolicyCorrection:
    return parse_choice(OffPolicyCorrection, value, "off_policy_correction")


@dataclass
class BehaviourWeights:
    """Per-token weights `w` and what the metrics need."""

    weights: torch.Tensor  # (tokens,), >= 0, no gradient
    ratio: torch.Tensor  # ρ per token
    cut: torch.Tensor  # bool per token: truncated (tis) or masked (the others)


def behaviour_weights(mode: OffPolicyCorrection, old_log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor,
                      segment_id: torch.Tensor, cap: float, floor: float) -> BehaviourWeights:
    """`w` of the module docstring for flat per-token tensors; `segment_id` numbers each token's completion."""
    log_ratio = (old_log_probs - behaviour_log_probs).detach().float()
    ratio = torch.exp(log_ratio)
    if mode is OffPolicyCorrection.TIS:
        cut = ratio > cap
        weights = torch.clamp(ratio, max=cap)
    elif mode is OffPolicyCorrection.MIS_TOKEN:
        cut = (ratio < floor) | (ratio > cap)
        weights = torch.where(cut, torch.zeros_like(ratio), ratio)
    elif mode is OffPolicyCorrection.MIS_SEQ:
        count = int(segment_id.max()) + 1 if segment_id.numel() else 0
        sums = torch.zeros(count, dtype=log_ratio.dtype, device=log_ratio.device).index_add_(0, segment_id, log_ratio)
        sizes = torch.zeros(count, dtype=log_ratio.dtype, device=log_ratio.device).index_add_(
            0, segment_id, torch.ones_like(log_ratio))
        seq_ratio = torch.exp(sums / sizes.clamp(min=1.0))[segment_id]
        cut = (seq_ratio < floor) | (seq_ratio > cap)
        weights = torch.where(cut, torch.zeros_like(seq_ratio), seq_ratio)
    elif mode is OffPolicyCorrection.DECOUPLED:
        cut = ratio > cap
        weights = torch.where(cut, torch.zeros_like(ratio), ratio)
    else:
        raise ValueError(f"no behaviour weights for {mode}")
    return BehaviourWeights(weights=weights, ratio=ratio, cut=cut)


def _scored_log_probs(model, inputs: dict) -> torch.Tensor:
    """The trainer's log-probs of the trained tokens, computed exactly as TRL 1.16's `AsyncGRPOTrainer.compute_loss`
    does before its loss (packed tree rows, fused LM head at the trainer's temperature), flat in `token_index` order."""
    mask_bool = inputs["attention_mask"].bool()
    selected = inputs["token_index"] >= 0
    tree_kwargs = {key: inputs[key][inputs[key] >= 0] for key in ("tree_kv_index", "tree_cu_seqlens_q",
                                                                  "tree_cu_seqlens_k")}
    tree_kwargs["tree_max_seqlen_q"], tree_kwargs["tree_max_seqlen_k"] = inputs["tree_max_seqlens"][0].tolist()
    outputs = model(
        input_ids=inputs["input_ids"][mask_bool].unsqueeze(0),
        position_ids=inputs["position_ids"][mask_bool].unsqueeze(0),
        shift_labels=inputs["shift_labels"][mask_bool].unsqueeze(0),
        fused_lm_head=True,
        **tree_kwargs,
    )
    return outputs.log_probs.flatten()[inputs["token_index"][selected]]


def corrected_inputs(inputs: dict, old_log_probs: torch.Tensor, weights: torch.Tensor) -> dict:
    """A copy of TRL's batch with `old_log_probs := log π_old` and `advantages := w·A` on the trained tokens."""
    selected = inputs["token_index"] >= 0
    old = inputs["old_log_probs"].clone()
    old[selected] = old_log_probs.to(old.dtype)
    advantages = inputs["advantages"].clone()
    advantages[selected] = advantages[selected] * weights.to(advantages.dtype)
    return {**inputs, "old_log_probs": old, "advantages": advantages}


def install_off_policy_correction(trainer, mode: OffPolicyCorrection | str, cap: float, floor: float) -> bool:
    """Wrap `trainer.compute_loss` (TRL's AsyncGRPOTrainer) with the correction `mode`; False (nothing done) for
    `none`. Idempotent per trainer."""
    mode = parse_correction(str(mode))
    if mode is OffPolicyCorrection.NONE or getattr(trainer.compute_loss, "_off_policy", None) is not None:
        return False
    trl_compute_loss = trainer.compute_loss
    metrics = trainer._metrics["train"]  # TRL's metric sink (reduced by key words: max, total, (num, den) rates)

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        selected = inputs["token_index"] >= 0
        with torch.no_grad():
            old_log_probs = _scored_log_probs(model, inputs)
        w = behaviour_weights(mode, old_log_probs, inputs["old_log_probs"][selected], inputs["segment_id"][selected],
                              cap, floor)
        n = float(w.weights.numel())
        if n:
            metrics["off_policy/is_weight_mean"].append((float(w.weights.sum()), n))
            metrics["off_policy/is_weight_max"].append(float(w.weights.max()))
            metrics["off_policy/behaviour_ratio_mean"].append((float(w.ratio.sum()), n))
            metrics["off_policy/behaviour_ratio_max"].append(float(w.ratio.max()))
            key = "off_policy/is_truncated_frac" if mode is OffPolicyCorrection.TIS else "off_policy/is_masked_frac"
            metrics[key].append((float(w.cut.sum()), n))
        return trl_compute_loss(model, corrected_inputs(inputs, old_log_probs, w.weights),
                                return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    compute_loss._off_policy = mode
    trainer.compute_loss = compute_loss
    return True
