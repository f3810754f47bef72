"""One set of grading knobs for every grader: `ContainerGradingConfig` has the `GradingConfig` (issue #23). A user's
`grading:` section reaches the SWE-bench and Harbor container graders through the real parsers and the real factory;
the container limits have their own `container_grading:` section. No Docker daemon is needed: graders connect lazily."""

from __future__ import annotations

import dataclasses

import pytest

from intercept_common.config_tree import parse_config_tree
from intercept_common.errors import ConfigError
from rollout_worker.cli import build_parser
from rollout_worker.config_views import EXTRA_KEYS, build_rollout_side
from rollout_worker.environment.grading.container_common import ContainerGradingConfig
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.environment.grading.swebench_container import ImageAwareGrader
from rollout_worker.factory import EpisodeOptions, build_episode_runner

CONFIG = ("sandbox: {backend: docker}\nagent: {name: oracle}\n"
          "grading: {git_timeout_s: 60, test_timeout_s: 77, reward_mode: fraction, max_patch_bytes: 4096, "
          "keep_patch_chars: 100}\n"
          "container_grading: {container_mem_limit: 2g, container_pids_limit: 256, container_cpus: 1.5, "
          "docker_timeout_s: 30, keep_log_chars: 500}\n")


def _assert_reaches_container_grading(grader) -> None:
    assert isinstance(grader, ImageAwareGrader)
    for container_grader in (grader.container_grader, grader.harbor_grader):
        config = container_grader.config
        assert (config.git_timeout_s, config.timeout_s, config.reward_mode) == (60, 77, "fraction")
        assert (config.max_patch_bytes, config.keep_patch_chars) == (4096, 100)
        assert (config.mem_limit, config.pids_limit, config.cpus, config.keep_log_chars) == ("2g", 256, 1.5, 500)
        assert config.docker_timeout_s == 30 and container_grader.docker._timeout_s == 30
    assert grader.host_grader.config.git_timeout_s == 60  # the host grader reads the very same config
    assert grader.container_grader.config.grading is grader.host_grader.config


def test_a_users_grading_section_reaches_container_grading_in_rollouts(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG)
    (_, *parsed), extras = parse_config_tree(build_parser(), ["--config", str(path)], extra_keys=EXTRA_KEYS)
    side = build_rollout_side(parsed, extras)
    runner = build_episode_runner(side.episode_options, side.episode, side.grading, side.container_grading)
    _assert_reaches_container_grading(runner.grader)


def test_a_users_grading_section_reaches_container_grading_in_train(tmp_path):
    from trainer.config import parse_train_args

    path = tmp_path / "run.yaml"
    path.write_text("preset: cpu-demo\n" + CONFIG)
    script, _ = parse_train_args(["--config", str(path), "--output-dir", str(tmp_path / "out")])
    runner = build_episode_runner(script.episode_options, script.episode, script.grading, script.container_grading)
    _assert_reaches_container_grading(runner.grader)


def test_flags_reach_container_grading_too():
    (_, *parsed), extras = parse_config_tree(build_parser(), ["--sandbox", "docker", "--git-timeout-s", "42",
                                                              "--test-timeout-s", "43", "--container-mem-limit", "1g"])
    side = build_rollout_side(parsed, extras)
    runner = build_episode_runner(side.episode_options, None, side.grading, side.container_grading)
    assert (runner.grader.container_grader.config.git_timeout_s, runner.grader.harbor_grader.config.timeout_s,
            runner.grader.container_grader.config.mem_limit) == (42, 43, "1g")


def test_shared_knobs_live_once_with_one_default():
    """The container config has no field of its own for a knob the grading config has."""
    shared = {f.name for f in dataclasses.fields(GradingConfig)}
    own = {f.name for f in dataclasses.fields(ContainerGradingConfig)} - {"grading"}
    assert not shared & own
    default = ContainerGradingConfig()
    assert (default.timeout_s, default.git_timeout_s) == (GradingConfig().test_timeout_s, GradingConfig().git_timeout_s)
    runner = build_episode_runner(EpisodeOptions(sandbox="docker"))
    assert runner.grader.container_grader.config.timeout_s == GradingConfig().test_timeout_s


def test_bad_grading_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="git_timeout_s must be > 0"):
        GradingConfig(git_timeout_s=0)
    with pytest.raises(ConfigError, match="docker_timeout_s > 0"):
        ContainerGradingConfig(docker_timeout_s=0)
    with pytest.raises(ConfigError, match="container_pids_limit must be >= 1"):
        ContainerGradingConfig(container_pids_limit=0)
    (tmp_path / "x.yaml").write_text("grading: {container_mem_limit: 1g}\n")
    with pytest.raises(ConfigError, match="'container_mem_limit' does not belong in section 'grading'; it belongs in "
                       "section 'container_grading'"):
        parse_config_tree(build_parser(), ["--config", str(tmp_path / "x.yaml")])


def test_the_docker_sandbox_names_its_docker_api_timeout_docker_timeout_s():
    """`engine_timeout_s` is the worker's engine call; the Docker backend's API timeout is `docker_timeout_s`, and a
    config file that still gives the old name is told the new one."""
    from rollout_worker.environment.sandbox import sandbox_config

    assert sandbox_config("docker", docker_timeout_s=7).docker_timeout_s == 7
    with pytest.raises(ConfigError, match="'engine_timeout_s' .* is now 'docker_timeout_s'"):
        sandbox_config("docker", engine_timeout_s=7)
