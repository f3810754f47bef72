"""`max_model_len` has one meaning and one default everywhere (issue #23): unset = the model's own max positions.

The local engine, `rollouts`, `train` and the `vllm serve` line agree; a number is resolved from the model's config
where one is needed (the trainer's token budget without vLLM); the Space's cap is its own, deliberate default."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from intercept_common.config_tree import parse_config_tree
from intercept_common.context_length import MAX_MODEL_LEN_HELP, check_max_model_len, resolve_max_model_len
from intercept_common.errors import ConfigError
from tests.paths import REPO


def _model_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", **config}))
    return str(tmp_path)


def test_every_command_defaults_to_the_models_max_positions():
    from local_engine.server import EngineConfig
    from rollout_worker.cli import RolloutsArguments
    from trainer.config import SweTrainArguments

    for config in (EngineConfig, RolloutsArguments, SweTrainArguments):
        field = {f.name: f for f in dataclasses.fields(config)}["max_model_len"]
        assert (field.default, field.metadata["help"]) == (None, MAX_MODEL_LEN_HELP), config.__name__


def test_unset_resolves_from_the_models_config_with_a_clear_error_without_one(tmp_path):
    no_positions = tmp_path / "no-positions"
    no_positions.mkdir()
    assert resolve_max_model_len(None, _model_dir(tmp_path, max_position_embeddings=1234)) == 1234
    assert resolve_max_model_len(77, _model_dir(tmp_path, max_position_embeddings=1234)) == 77
    with pytest.raises(ConfigError, match="^max_model_len is unset and model .* gives no max_position_embeddings; "
                                          "set --max-model-len$"):
        resolve_max_model_len(None, _model_dir(no_positions, model_type="bert", max_position_embeddings=0))
    with pytest.raises(ConfigError, match="max_model_len must be >= 2, got 1"):
        check_max_model_len(1)


def test_the_trainer_resolves_its_token_budget_from_the_model_when_unset(tmp_path):
    from trainer.config import parse_train_args, resolve_token_budget

    model = _model_dir(tmp_path, max_position_embeddings=3000)
    script, training = parse_train_args(["--model-name-or-path", model, "--max-steps", "1"])
    assert script.max_model_len is None and training.token_budget is None  # not a made-up 4096
    resolve_token_budget(script, training, model)
    assert training.token_budget == 3000
    with pytest.raises(ValueError, match="max_model_len must be >= 2"):
        parse_train_args(["--model-name-or-path", model, "--max-steps", "1", "--max-model-len", "1"])


def test_the_vllm_serve_line_omits_max_model_len_when_unset():
    from trainer.vllm_weight_sync import vllm_serve_command

    assert "--max-model-len" not in vllm_serve_command("m", "policy", None, "bfloat16")
    assert "--max-model-len 2048" in vllm_serve_command("m", "policy", 2048, "bfloat16")


def test_the_space_keeps_one_deliberate_cap():
    from space_app.deploy import SPACE_MAX_MODEL_LEN, DeployOptions

    assert DeployOptions(space_id="o/n").max_model_len == SPACE_MAX_MODEL_LEN
    start = (REPO / "space_app" / "start.sh").read_text()
    assert re.search(r'MAX_MODEL_LEN="\$\{INTERCEPT_RL_MAX_MODEL_LEN:-(\d+)\}"', start).group(1) == \
        str(SPACE_MAX_MODEL_LEN)
    from space_app.cli import build_deploy_parser  # the flag's default is the same constant

    (options, _run), _ = parse_config_tree(build_deploy_parser(), ["--space-id", "o/n"])
    assert options.max_model_len == SPACE_MAX_MODEL_LEN
