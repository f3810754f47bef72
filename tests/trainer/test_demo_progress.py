"""The terminal side of a run, without running one: the step line, the per-step warning summary, the chart."""

from __future__ import annotations

import logging

from intercept_common.run_logging import RunLogging
from trainer.progress import ProgressReporter, make_progress_callback, read_step_metrics, reward_chart, reward_summary


def test_step_line_has_every_column_and_the_steps_events():
    logs = {"loss": 0.1, "reward": 0.75, "ratio": 1.0, "kl": 1e-9, "rollout/rollouts_per_s": 2.5,
            "batch/trained_tokens_per_step": 32.0, "sample/staleness_mean": 0.0, "perf/step_s": 8.4,
            "off_policy/generation_utilisation": 0.97, "sample/dropped_stale_total": 16.0,
            "rollout/aborted_stale_total": 1.0, "rollout/forks_total": 0.0, "rollout/unscorable_total": 2.0,
            "rollout/turns": 3.25, "rollout/resolved": 0.5, "rollout/parse_failures_total": 3.0}
    line = ProgressReporter().format_line(3, 30, logs)
    assert line.startswith("[intercept-rl] step 3/30 reward=0.750 ratio=1.000 kl=1e-09 rollouts/s=2.50 tokens=32 "
                           "stale=0.0 util=0.97 step_s=8.4 turns=3.2 solved=0.50")
    assert line.endswith("| stale dropped 16, stale aborted 1, unscorable 2, parse failures 3")  # zero counts are left out


def test_warnings_are_counted_per_step_not_printed(capsys, tmp_path):
    run_logging = RunLogging().start()
    try:
        run_logging.attach_file(tmp_path)
        log = logging.getLogger("intercept_rl.test")
        for _ in range(3):
            log.warning("sandbox creation failed: %s", "boom")
        log.warning("`gradient_checkpointing` is deprecated and will be removed in v6")  # library noise
        log.info("Weight sync: done")
        line = ProgressReporter(run_logging.summary, tmp_path / "train.log").format_line(1, 2, {"loss": 0.0})
        assert "| 3 warnings (3x sandbox creation failed: boom; see train.log)" in line
        assert ProgressReporter(run_logging.summary).format_line(2, 2, {"loss": 0.0}).count("warnings") == 0
        assert capsys.readouterr().err == ""
        text = (tmp_path / "train.log").read_text()
        assert "Weight sync: done" in text and "gradient_checkpointing" in text and text.count("boom") == 3
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()


def test_the_metrics_line_in_train_log_reads_back_as_the_step_dict(tmp_path):
    """What the reporter writes to the run's log file (the real handler and format) is what benchmarks read."""
    import time

    run_logging = RunLogging().start()
    try:
        run_logging.attach_file(tmp_path)
        reporter = make_progress_callback(show_bar=False)
        state = type("State", (), {"is_world_process_zero": True, "global_step": 2, "max_steps": 3})()
        logs = {"loss": 0.5, "reward": 0.25, "rollout/turns": 3.5, "flag": True}
        before = time.time()
        reporter.on_log(None, state, None, logs=logs)
        logging.getLogger("intercept_rl.test").info("not a metrics line {\"loss\": 1}")
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
    (line,) = read_step_metrics((tmp_path / "train.log").read_text())
    assert (line.step, line.metrics) == (2, logs)
    assert before - 1 <= line.logged_at <= time.time() + 1


def test_reward_chart():
    rewards = {i: r for i, r in enumerate([0.6, 0.65, 0.5, 0.75, 0.6] + [0.8] * 5, 1)}
    chart = reward_chart(rewards).splitlines()
    assert len(chart) == 10 and chart[0].startswith(" 0.80 ┤") and chart[-2].startswith(" 0.50 ┼")
    assert chart[-1].split() == ["1", "10", "(step)"]
    assert all(len(row.split("┤")[1]) == 10 for row in chart[:8])  # one column per step
    assert reward_summary(rewards) == "mean reward, steps 1-5: 0.620  ->  steps 6-10: 0.800  (+0.180)"
