"""Off-policy corrections (trainer/off_policy.py): each formula against a hand-computed example, and the wrapped loss
through TRL's real AsyncGRPOTrainer (its collator, its forward, its loss, a real optimizer step) on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from intercept_common.errors import ConfigError
from trainer.off_policy import OffPolicyCorrection, behaviour_weights, parse_correction

# Two completions: tokens 0-2 belong to completion 0, tokens 3-4 to completion 1. The behaviour log-probs are chosen
# so that ρ = π_old/μ is, per token: e^0.0=1, e^1.0=2.718, e^-1.0=0.368, e^0.5=1.649, e^-0.3=0.741.
OLD = torch.tensor([-1.0, -1.0, -1.0, -2.0, -2.0])
LOG_RHO = torch.tensor([0.0, 1.0, -1.0, 0.5, -0.3])
BEHAVIOUR = OLD - LOG_RHO
SEGMENT = torch.tensor([0, 0, 0, 1, 1])
CAP, FLOOR = 2.0, 0.5
E = math.e


def weights(mode):
    return behaviour_weights(OffPolicyCorrection(mode), OLD, BEHAVIOUR, SEGMENT, cap=CAP, floor=FLOOR)


def test_truncated_is_clips_the_weight_at_the_cap():
    w = weights("tis")
    # min(ρ, 2): 1, 2 (e > 2 truncated), 1/e, e^0.5, e^-0.3
    assert torch.allclose(w.weights, torch.tensor([1.0, 2.0, 1 / E, E ** 0.5, E ** -0.3]))
    assert w.cut.tolist() == [False, True, False, False, False]


def test_masked_is_per_token_zeroes_tokens_outside_floor_and_cap():
    w = weights("mis-token")
    # ρ kept in [0.5, 2]: e (> 2) and 1/e (< 0.5) are masked
    assert torch.allclose(w.weights, torch.tensor([1.0, 0.0, 0.0, E ** 0.5, E ** -0.3]))
    assert w.cut.tolist() == [False, True, True, False, False]


def test_masked_is_per_sequence_uses_the_geometric_mean_ratio():
    w = weights("mis-seq")
    # completion 0: exp((0 + 1 - 1)/3) = 1 -> kept, every token weighted 1
    # completion 1: exp((0.5 - 0.3)/2) = e^0.1 = 1.105 -> kept, weighted e^0.1
    assert torch.allclose(w.weights, torch.tensor([1.0, 1.0, 1.0, E ** 0.1, E ** 0.1]))
    assert not w.cut.any()
    tight = behaviour_weights(OffPolicyCorrection.MIS_SEQ, OLD, BEHAVIOUR, SEGMENT, cap=1.05, floor=0.5)
    assert torch.allclose(tight.weights, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))  # e^0.1 > 1.05: masked


def test_decoupled_ppo_masks_behaviour_weights_above_the_cap_only():
    w = weights("decoupled")
    # AReaL's behaviour-weight cap: ρ > 2 masked, no floor (1/e is kept)
    assert torch.allclose(w.weights, torch.tensor([1.0, 0.0, 1 / E, E ** 0.5, E ** -0.3]))
    assert w.cut.tolist() == [False, True, False, False, False]


def test_an_unknown_correction_is_a_config_error():
    with pytest.raises(ConfigError, match="tis"):
        parse_correction("icepop2")


def test_bad_bounds_fail_at_parse_time():
    from trainer.config import parse_train_args

    with pytest.raises(ConfigError, match="off_policy_is_floor"):
        parse_train_args(["--preset", "learning-demo", "--off-policy-is-cap", "0.4"])


# ---------------------------------------------------------------------------------------------------------------------
# Through TRL: its collator builds the batch, the wrapped compute_loss runs its forward and loss, the optimizer steps.
# ---------------------------------------------------------------------------------------------------------------------


class QueueOnlyWorker:
    """TRL's RolloutWorkerProtocol with nothing behind it: the test puts samples into `rollout_buffer` itself."""

    def __init__(self):
        import queue

        self.rollout_buffer = queue.Queue()
        self.metrics_queue = queue.Queue()

    def start(self):
        pass

    def stop(self):
        pass

    def update_model_version(self, version):
        pass

    def check_health(self, stale_after_s):
        pass


class NoTransfer:
    def init_weight_transfer(self):
        pass

    def pause(self):
        pass

    def send_weights(self, iterator):
        for _ in iterator:
            pass

    def resume(self):
        pass

    def destroy(self):
        pass


@pytest.fixture(scope="module")
def tiny_trainer(tmp_path_factory):
    from local_engine.embedded import ensure_tiny_model
    from trainer.config import parse_train_args
    from trainer.train_swe_async_grpo import TrainArgs, build_trainer

    model_dir = ensure_tiny_model()
    out = tmp_path_factory.mktemp("off-policy")
    script, training = parse_train_args([
        "--model-name-or-path", str(model_dir), "--output-dir", str(out), "--report-to", "none",
        "--save-strategy", "no", "--token-budget", "0", "--per-device-train-batch-size", "2", "--num-generations", "2",
        "--max-steps", "1", "--learning-rate", "1e-3", "--dtype", "float32", "--bf16", "false", "--seed", "0",
        "--off-policy-correction", "tis", "--off-policy-is-cap", "2.0",
    ])
    worker = QueueOnlyWorker()
    trainer = build_trainer(TrainArgs(script, training), worker, NoTransfer())
    return trainer, worker


def _sample(input_ids, completion_from, behaviour, advantage, group_id):
    from trl.experimental.async_grpo.async_rollout_worker import RolloutSample

    mask = np.zeros(len(input_ids), dtype=np.int64)
    mask[completion_from:] = 1
    return RolloutSample(prompt=[], completion=[], input_ids=np.asarray(input_ids, dtype=np.int64),
                         completion_mask=mask, old_log_probs=np.asarray(behaviour, dtype=np.float32),
                         advantage=float(advantage), model_version=0, group_id=group_id, metrics={"reward": 0.0})


@pytest.mark.timeout(300)
def test_truncated_is_through_trls_loss_weights_each_tokens_gradient(tiny_trainer):
    """With behaviour log-probs shifted by a known log ρ per token from the trainer's own, the wrapped loss equals
    -Σ w·A / n with w = min(ρ, 2) (r = π_θ/π_old = 1 at the forward), its gradient is that of Σ -w·A·log π_θ / n, and
    TRL's optimizer takes a real step."""
    from tests.trainer.test_trainer_helpers import trainer_logprobs

    trainer, worker = tiny_trainer
    model = trainer.model
    ids = [[151644, 872, 198, 9707, 11, 1879, 0, 13],  [151644, 872, 198, 9707, 11, 2, 3, 4]]
    start = 5
    log_rho = [np.array([0.0, 1.0, -1.0], dtype=np.float32), np.array([0.5, -0.3, 0.2], dtype=np.float32)]
    advantages = [1.0, -1.0]
    # the trainer's log-prob of each token given the ones before it (the first token has none: 0)
    own = [np.concatenate([[0.0], trainer_logprobs(model, seq).numpy()]) for seq in ids]
    for seq, lp, shift, adv in zip(ids, own, log_rho, advantages, strict=True):
        behaviour = np.zeros(len(seq), dtype=np.float32)
        behaviour[start:] = lp[start:] - shift  # log μ = log π_old - log ρ
        worker.rollout_buffer.put(_sample(seq, start, behaviour, adv, group_id=0))

    loader = trainer.get_train_dataloader()
    batch = next(iter(loader))
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before each micro-batch
    loss = trainer.compute_loss(model, batch)
    w = [np.minimum(np.exp(s), 2.0) for s in log_rho]
    expected = -sum(float((wi * a).sum()) for wi, a in zip(w, advantages, strict=True)) / 6
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-4, abs_tol=1e-6), (float(loss.detach()), expected)
    metrics = trainer._metrics["train"]
    assert math.isclose(metrics["ratio"][-1], 1.0, abs_tol=1e-5)  # TRL's own ratio: π_θ / π_old
    assert metrics["off_policy/is_truncated_frac"][-1] == (1.0, 6.0)  # only ρ = e > 2 is truncated
    assert math.isclose(metrics["off_policy/is_weight_max"][-1], 2.0, rel_tol=1e-5)

    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    trainer.optimizer = trainer.optimizer or trainer.create_optimizer()
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_the_forward_matches_trls_own_scoring(tiny_trainer):
    """`_scored_log_probs` replays the forward of TRL's compute_loss: pinned against the trainer's log-probs of the
    same tokens through TRL's scoring path (a TRL upgrade that changes the forward's inputs fails here)."""
    from tests.trainer.test_trainer_helpers import trainer_logprobs
    from trainer.off_policy import _scored_log_probs

    trainer, worker = tiny_trainer
    seqs = [[151644, 872, 198, 9707, 11, 1879, 0, 13], [151644, 872, 198, 9707, 11, 1879, 5, 6]]
    expected = np.concatenate([trainer_logprobs(trainer.model, seq).numpy()[3:] for seq in seqs])  # tokens 4..7
    for seq, advantage in zip(seqs, (1.0, -1.0), strict=True):
        worker.rollout_buffer.put(_sample(seq, 4, np.zeros(8, dtype=np.float32), advantage, 1))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        scored = _scored_log_probs(trainer.model, batch).numpy()
    assert scored.shape == expected.shape
    assert np.allclose(np.sort(scored), np.sort(expected), atol=1e-5)
