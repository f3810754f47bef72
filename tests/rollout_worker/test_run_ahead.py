"""Bounded run-ahead (rollout_worker/run_ahead.py): the admission rule by hand, the trainer feed's counts and metrics
with real TRL RolloutSamples, and the worker config that turns it on."""

from __future__ import annotations

import numpy as np
import pytest

from intercept_common.errors import ConfigError
from rollout_worker.config import WorkerConfig
from rollout_worker.groups import GroupScheduler
from rollout_worker.run_ahead import RunAheadBound, TrainerFeed, token_staleness_metrics
from rollout_worker.types import Task


def test_staleness_zero_admits_exactly_one_version_of_samples():
    bound = RunAheadBound(max_staleness=0, samples_per_version=8)
    assert bound.capacity == 8
    assert bound.admits(pending=7, taken_this_version=0)  # the 8th rollout of version 0
    assert not bound.admits(pending=8, taken_this_version=0)
    # the trainer took the 8 to train at this version: nothing more may start until the weights move
    assert not bound.admits(pending=0, taken_this_version=8)


def test_a_rollout_expected_to_fork_past_the_batch_still_starts_when_the_trainer_waits():
    """Found by the multi-turn training test: mini-swe-agent's forks gave 3 samples per rollout on a batch of 2, so
    `pending + 3 <= 2` refused every launch after the first step and the run hung; likewise a batch one sample short
    with a mean above 1 per rollout."""
    bound = RunAheadBound(max_staleness=0, samples_per_version=2)
    assert bound.admits(pending=0, taken_this_version=0, per_rollout=3.0)
    # one is on its way (its 3 samples an estimate): wait for it
    assert not bound.admits(pending=3, taken_this_version=0, per_rollout=3.0, in_flight=1)
    assert not bound.admits(pending=0, taken_this_version=2, per_rollout=3.0)  # the version's batch is complete
    # a group of 4 gave 7 samples for a batch of 8, none in flight: one more rollout, though it may give 2
    bound = RunAheadBound(max_staleness=0, samples_per_version=8)
    assert bound.admits(pending=7, taken_this_version=0, per_rollout=1.9)
    assert not bound.admits(pending=7.6, taken_this_version=0, per_rollout=1.9, in_flight=2)


def test_staleness_two_runs_ahead_two_versions():
    bound = RunAheadBound(max_staleness=2, samples_per_version=8)
    assert bound.capacity == 24
    assert bound.admits(pending=20, taken_this_version=3)  # 20 + 1 <= 24 - 3
    assert not bound.admits(pending=21, taken_this_version=3)


def test_a_started_group_is_always_completed():
    bound = RunAheadBound(max_staleness=0, samples_per_version=4)
    assert not bound.admits(pending=4, taken_this_version=0)
    assert bound.admits(pending=4, taken_this_version=0, group_partly_launched=True)
    task = Task(instance_id="t", repo="r", base_commit="c", problem_statement="x")
    scheduler = GroupScheduler([task], num_generations=3)
    assert not scheduler.group_partly_launched
    slot = scheduler.next_slot()
    assert scheduler.group_partly_launched
    scheduler.finish(slot, "done")
    assert scheduler.held_results == 1
    scheduler.next_slot(), scheduler.next_slot()
    assert not scheduler.group_partly_launched  # all three launched


def test_token_staleness_histogram_counts_tokens_per_turn_version():
    # turns sampled at versions 5 (3 tokens), 4 (2 tokens), 0 (1 token); the trainer is at version 5
    metrics = token_staleness_metrics([(5, 3), (4, 2), (0, 1)], trainer_version=5)
    assert metrics["off_policy/token_staleness_0"] == (3.0, 6.0)
    assert metrics["off_policy/token_staleness_1"] == (2.0, 6.0)
    assert metrics["off_policy/token_staleness_2"] == (0.0, 6.0)
    assert metrics["off_policy/token_staleness_4plus"] == (1.0, 6.0)
    assert metrics["off_policy/token_staleness_mean"] == (0 * 3 + 1 * 2 + 5 * 1, 6.0)


def _sample(version, tokens):
    from trl.experimental.async_grpo.async_rollout_worker import RolloutSample

    mask = np.array([0, 0] + [1] * tokens, dtype=np.int64)
    return RolloutSample(prompt=[], completion=[], input_ids=np.arange(len(mask)), completion_mask=mask,
                         old_log_probs=np.zeros(len(mask), dtype=np.float32), advantage=1.0, model_version=version,
                         group_id=0, metrics={})


def test_trainer_feed_counts_what_the_trainer_takes_to_train_and_reports_utilisation():
    published = []
    version = {"now": 0}
    feed = TrainerFeed(16, lambda: version["now"], max_staleness=1, publish=published.append)
    fresh, stale = _sample(0, 3), _sample(0, 5)
    feed.note_turns(fresh, [(0, 3)])
    feed.note_turns(stale, [(0, 5)])
    feed.generated_tokens = 10
    feed.put(fresh)
    feed.put(stale)
    version["now"] = 1
    assert feed.get_nowait() is fresh  # staleness 1 <= 1: trained
    version["now"] = 2
    assert feed.get_nowait() is stale  # staleness 2 > 1: TRL drops it, it fills no slot
    assert feed.taken_fresh == 1 and feed.trained_tokens == 3
    assert len(published) == 1
    assert published[0]["off_policy/token_staleness_1"] == (3.0, 3.0)
    assert published[0]["off_policy/generation_utilisation"] == (3.0, 10.0)  # a rate: Σ trained ÷ Σ generated


def test_worker_config_validates_the_run_ahead_knobs():
    with pytest.raises(ConfigError, match="samples_per_version"):
        WorkerConfig(samples_per_version=0)
    with pytest.raises(ConfigError, match="max_staleness"):
        WorkerConfig(max_staleness=-1)
    assert WorkerConfig().bound_run_ahead


def test_train_sets_samples_per_version_from_the_batch_and_sync_interval():
    from trainer.components import samples_per_version
    from trainer.config import parse_train_args

    _, training = parse_train_args(["--preset", "learning-demo", "--gradient-accumulation-steps", "2",
                                    "--weight-sync-steps", "3"])
    assert samples_per_version(training) == 8 * 2 * 3
    _, training = parse_train_args(["--preset", "cpu-demo", "--token-budget", "512"])
    assert samples_per_version(training) is None  # a token budget: the count per step varies


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_real_worker_launches_only_what_the_trainer_can_train_fresh(engine):
    """Real worker, gate, engine and scripted openai-SDK agents (4 turns, one fork: 2 samples per rollout). A stand-in
    trainer takes 4 samples per version at `max_staleness 0`, as TRL's fixed-count batcher would: every sample it takes
    is of its current version (nothing would be dropped), and the worker never ran ahead of it."""
    from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer
    from rollout_worker.serving.chat_template import resolve_training_template
    from rollout_worker.worker import RolloutWorker
    from tests.rollout_worker.test_worker import ScriptedAgentRunner

    tokenizer = load_qwen3_tokenizer()
    tasks = [Task(instance_id=f"task{i}", repo="demo/repo", base_commit="0" * 40, problem_statement="fix it")
             for i in range(2)]
    config = WorkerConfig(num_generations=2, max_inflight=4, temperature=0.9, max_tokens_per_turn=16, seed=0,
                          max_staleness=0, samples_per_version=4, drop_zero_variance_groups=False)
    worker = RolloutWorker(config, tasks=tasks, episode_runner=ScriptedAgentRunner(), tokenizer=tokenizer,
                           chat_template=resolve_training_template(tokenizer), engine_url=engine.url)
    worker.start()
    taken, started = [], []
    try:
        for version in range(3):
            for _ in range(4):
                taken.append((version, worker.rollout_buffer.get(timeout=120)))
            started.append(worker.scheduler.groups_started)  # before the weights move
            worker.update_model_version(version + 1)
    finally:
        worker.stop()
    assert [sample.model_version for _, sample in taken] == [version for version, _ in taken]
    assert worker.rollout_buffer.taken_fresh == 12
    # one group (two rollouts of 2 samples) fills a version, and none started before the version it trains at (the
    # first group ran alone until its samples per rollout were known). (A peak of queued + running, sampled from
    # another thread, raced the consumer under load: 4 once on a busy machine.)
    assert started == [1, 2, 3]
