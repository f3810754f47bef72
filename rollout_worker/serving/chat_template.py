"""The choice of the training chat template the worker renders prompts with.

`resolve_training_template(tokenizer, chat_template)`: token exactness (design §3) needs a template that renders
earlier messages identically whatever follows them. (The embedded Qwen3 tokenizer itself is loaded by
`intercept_common.qwen3_tokenizer`.)
"""

from __future__ import annotations

import copy
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from intercept_common.trl_api import get_training_chat_template, is_chat_template_prefix_preserving


def _read_explicit_template(chat_template: str) -> str:
    """An explicit template is either jinja text or the path of a file holding it."""
    if "{{" in chat_template or "{%" in chat_template:
        return chat_template
    path = Path(chat_template).expanduser()
    if not path.is_file():
        raise ValueError(f"--chat-template {chat_template!r} is neither a readable file nor jinja template text")
    return path.read_text(encoding="utf-8")


def _prefix_preserving(tokenizer: PreTrainedTokenizerBase, template: str) -> bool:
    """Whether `template` renders earlier messages identically whatever follows them (TRL's own check)."""
    # A shallow copy carries the template, so the shared (cached) tokenizer is never mutated, even briefly.
    probe = copy.copy(tokenizer)
    probe.chat_template = template
    try:
        return is_chat_template_prefix_preserving(probe)
    except Exception:  # a template that cannot even render a tool call cannot serve tool-calling agents
        return False


def resolve_training_template(tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None) -> str:
    """The chat template the worker renders prompts with.

    Order: an explicit `chat_template` (a path or the jinja text) wins and is trusted as given; else the tokenizer's
    own template when it is prefix-preserving; else TRL's training variant of it (`get_training_chat_template`).
    Raises `ValueError` when none of these yields a prefix-preserving template.
    """
    if chat_template is not None:
        return _read_explicit_template(chat_template)
    own = tokenizer.chat_template
    if isinstance(own, dict):  # templates shipped as named variants load as a dict; `default` is the one used
        own = own.get("default")
    if not own:
        raise ValueError(
            "The tokenizer has no chat template; pass --chat-template PATH with a prefix-preserving training template."
        )
    if _prefix_preserving(tokenizer, own):
        return own
    try:
        training = get_training_chat_template(tokenizer)
    except ValueError as error:
        raise ValueError(
            "The tokenizer's chat template is not prefix-preserving (it re-renders earlier turns differently once "
            "later messages follow) and TRL ships no training variant of it. Pass --chat-template PATH with a "
            f"prefix-preserving training template. (TRL: {error})"
        ) from error
    if training is None or not _prefix_preserving(tokenizer, training):
        raise ValueError(
            "No prefix-preserving chat template found for this tokenizer; pass --chat-template PATH with a "
            "prefix-preserving training template."
        )
    return training
