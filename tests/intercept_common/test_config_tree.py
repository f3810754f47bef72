"""`intercept_common.config_tree`: each YAML section fills only its own dataclass, and every rejection is one line that
names the key and the section. Real parsers over the real config dataclasses `rollouts` composes."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import HfArgumentParser

from control_plane import GateConfig
from intercept_common.config_tree import (
    ConfigFileError,
    cli_view,
    config_sections,
    load_config_file,
    parse_config_tree,
)
from intercept_common.errors import ConfigError, UserError
from rollout_worker.config import WorkerConfig
from rollout_worker.environment.episode import EpisodeConfig
from rollout_worker.environment.grading.host import GradingConfig
from rollout_worker.factory import EpisodeOptions

WorkerOptions = cli_view(WorkerConfig)
EpisodeSelection = cli_view(EpisodeOptions)
EXTRAS = ("sandbox_options", "agent_options")


def _parse(tmp_path, text: str, *flags: str, defaults=None):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    parser = HfArgumentParser((EpisodeSelection, WorkerOptions, EpisodeConfig, cli_view(GradingConfig),
                               cli_view(GateConfig)))
    parser.prog = "intercept-rl test"
    return parse_config_tree(parser, ["--config", str(path), *flags], defaults=defaults, extra_keys=EXTRAS)


def test_each_section_fills_its_own_dataclass_and_flags_win(tmp_path):
    (selection, worker, episode, grading, gate), extras = _parse(
        tmp_path, "worker: {max_turns: 5, max_inflight: 3}\nepisode: {agent_wall_time_s: 77}\n"
        "grading: {git_timeout_s: 60}\ngate: {stream_chunk_chars: 9}\nsandbox: {backend: docker, mem_limit: 4g}\n"
        "agent: {name: pi}\nnum_generations: 4\n", "--max-inflight", "1", defaults={"max_turns": 2, "top_k": 7})
    assert (worker.max_turns, worker.max_inflight, worker.num_generations, worker.top_k) == (5, 1, 4, 7)
    assert episode.agent_wall_time_s == 77 and grading.git_timeout_s == 60 and gate.stream_chunk_chars == 9
    assert (selection.sandbox, selection.agent) == ("docker", "pi")
    assert extras == {"sandbox_options": {"mem_limit": "4g"}, "agent_options": {}}


def test_a_key_of_another_section_fails_naming_the_key_and_both_sections(tmp_path):
    """The bug of issue #23: `episode: {max_turns: 3}` silently set the worker's max_turns."""
    with pytest.raises(ConfigFileError) as refused:
        _parse(tmp_path, "episode: {max_turns: 3}\n")
    message = str(refused.value)
    assert "'max_turns'" in message and "section 'episode'" in message and "section 'worker'" in message
    assert "\n" not in message
    with pytest.raises(ConfigFileError, match="option 'stream_chunk_chars' does not belong in section 'grading'; "
                       "it belongs in section 'gate'"):
        _parse(tmp_path, "grading: {stream_chunk_chars: 3}\n")


def test_an_unknown_section_fails_naming_the_section_and_its_key(tmp_path):
    with pytest.raises(ConfigFileError) as refused:
        _parse(tmp_path, "foo: {max_turns: 3}\n")
    message = str(refused.value)
    assert "unknown section 'foo'" in message and "'max_turns'" in message and "worker" in message
    assert "\n" not in message


def test_unknown_keys_and_malformed_sections_are_named(tmp_path):
    with pytest.raises(ConfigFileError, match="unknown option 'max_turnz' in section 'worker'"):
        _parse(tmp_path, "worker: {max_turnz: 3}\n")
    with pytest.raises(ConfigFileError, match="unknown option 'max_turnz' at the top level"):
        _parse(tmp_path, "max_turnz: 3\n")
    with pytest.raises(ConfigFileError, match="section 'worker' must hold a mapping"):
        _parse(tmp_path, "worker: 3\n")


def test_options_of_a_top_level_dataclass_are_not_a_section_of_their_own(tmp_path):
    """EpisodeOptions has no section: its `agent` is top-level (or the `agent:` selector), never inside `worker:`."""
    with pytest.raises(ConfigFileError, match="option 'agent' does not belong in section 'worker'; it belongs in "
                       "the top level"):
        _parse(tmp_path, "worker: {agent: pi}\n")
    (selection, *_), _ = _parse(tmp_path, "agent: oracle\nsandbox: local\n")
    assert (selection.agent, selection.sandbox) == ("oracle", "local")


def test_a_value_a_config_rejects_fails_while_parsing(tmp_path):
    """A `cli_view` validates as its config does, so a bad value fails before a command starts anything."""
    with pytest.raises(ConfigError, match="num_generations must be >= 1"):
        _parse(tmp_path, "worker: {num_generations: 0}\n")
    with pytest.raises(ConfigError, match="stream_chunk_chars must be at least 1"):
        _parse(tmp_path, "", "--stream-chunk-chars", "0")
    with pytest.raises(ConfigError, match="unknown sandbox backend 'nope'"):
        _parse(tmp_path, "sandbox: nope\n")


def test_what_argparse_refuses_is_one_line_not_the_usage_block(tmp_path):
    for flags, needle in ((("--max-turns", "many"), "argument --max_turns"), (("--no-such-flag",), "--no-such-flag"),
                          (("--reward-mode", "half"), "invalid choice: 'half'")):
        with pytest.raises(ConfigError) as refused:
            _parse(tmp_path, "", *flags)
        assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_config_errors_are_user_errors_and_value_errors(tmp_path):
    assert issubclass(ConfigFileError, ConfigError) and issubclass(ConfigError, UserError)
    assert issubclass(ConfigError, ValueError)  # what a dataclass's validation raises by convention
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigFileError, match="must hold a mapping"):
        load_config_file(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("worker: {max_turns: [\n")
    with pytest.raises(ConfigFileError, match="not readable YAML"):
        load_config_file(tmp_path / "bad.yaml")


def test_sections_come_from_the_dataclasses_and_views_keep_theirs():
    known, sections = config_sections((WorkerOptions, EpisodeConfig, EpisodeSelection))
    assert sections == {"worker": {f.name for f in dataclasses.fields(WorkerConfig)},
                        "episode": {f.name for f in dataclasses.fields(EpisodeConfig)}}
    assert {"agent", "sandbox", "max_turns", "agent_wall_time_s"} <= known
    assert cli_view(WorkerConfig, exclude=("num_generations",))._config_section == "worker"
