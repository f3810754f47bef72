"""`rollouts` and `train` parse the rollout side through one set of views and build it back in one place
(rollout_worker.config_views), so an option, a section or a refusal cannot differ between the two commands."""

from __future__ import annotations

import pytest

from intercept_common.errors import ConfigError
from rollout_worker import cli
from rollout_worker.config_views import build_rollout_side, rollout_side_views


def test_both_commands_parse_the_same_rollout_side_views():
    from trainer import config

    assert list(cli.build_parser().dataclass_types[1:]) == list(rollout_side_views(cli.WorkerOptions))
    assert list(config.OUR_DATACLASSES[1:]) == list(rollout_side_views(config.WorkerOptions))


def test_agent_options_are_refused_in_one_place():
    views = [view() for view in rollout_side_views(cli.WorkerOptions)]
    with pytest.raises(ConfigError, match=r"^agent options \['flavour'\] in section 'agent' are not supported"):
        build_rollout_side(views, {"agent_options": {"flavour": 1}})
    side = build_rollout_side(views, {"sandbox_options": {}, "agent_options": {}})
    assert side.grading is side.container_grading.grading  # one grading config, shared by both graders
