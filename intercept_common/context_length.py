"""`max_model_len`, the one knob for how many tokens (prompt + completion) the engine serves: one meaning, one default.

Unset (None) means the model's own max positions (`max_position_embeddings` in its config.json), for every command
that starts an engine: the local engine uses it, and the `vllm serve` line omits `--max-model-len` so vLLM does the
same. Where a number is needed up front (the trainer's `token_budget` without vLLM), `resolve_max_model_len` reads it
from the model's config once the model is known. The Space alone keeps a cap (space_app.deploy.SPACE_MAX_MODEL_LEN).
"""

from __future__ import annotations

from intercept_common.errors import ConfigError

MAX_MODEL_LEN_HELP = ("Context length (prompt + completion tokens) of the engine; default: the model's own max "
                      "positions (max_position_embeddings in its config.json).")


def check_max_model_len(value: int | None) -> None:
    """A set `max_model_len` must hold a prompt token and a completion token."""
    if value is not None and value < 2:
        raise ConfigError(f"max_model_len must be >= 2, got {value}")


def model_max_positions(model: str) -> int | None:
    """`max_position_embeddings` of the model's config (a local directory, or a Hub id: its config.json only)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise ConfigError(f"max_model_len is unset and the config of model {model!r} cannot be read ({error}); "
                          "set --max-model-len") from None
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def resolve_max_model_len(max_model_len: int | None, model: str) -> int:
    """`max_model_len` when set, else the model's max positions; a one-line error naming the option if neither is."""
    if max_model_len is not None:
        return max_model_len
    positions = model_max_positions(model)
    if positions is None:
        raise ConfigError(f"max_model_len is unset and model {model!r} gives no max_position_embeddings; "
                          "set --max-model-len")
    return positions
