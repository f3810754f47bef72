"""The embedded Qwen3 tokenizer and the training-template choice, with the real tokenizer and TRL's templates."""

from __future__ import annotations

import copy

import pytest
from trl.chat_template_utils import (
    is_chat_template_prefix_preserving,
    qwen3_chat_template,
    qwen3_training_chat_template,
)

from intercept_common.qwen3_tokenizer import load_qwen3_tokenizer, qwen3_tokenizer_dir
from rollout_worker.serving.chat_template import resolve_training_template


def _with_template(tokenizer, template):
    clone = copy.copy(tokenizer)
    clone.chat_template = template
    return clone


def test_tokenizer_is_real_qwen3_with_trl_template_and_cached(tokenizer):
    assert load_qwen3_tokenizer() is tokenizer
    assert (qwen3_tokenizer_dir() / "tokenizer.json").is_file()
    assert tokenizer.chat_template == qwen3_chat_template
    assert len(tokenizer) == 151669
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]) == [151644, 151645, 151643]
    # Real BPE merges: a common word is one token, and decoding round-trips.
    ids = tokenizer.encode("def hello_world():\n    return 42", add_special_tokens=False)
    assert tokenizer.decode(ids) == "def hello_world():\n    return 42"
    assert len(tokenizer.encode(" hello", add_special_tokens=False)) == 1


def test_shipped_qwen3_template_resolves_to_trl_training_template(tokenizer):
    assert not is_chat_template_prefix_preserving(tokenizer)  # the reason a training template is needed at all
    template = resolve_training_template(tokenizer)
    assert template == qwen3_training_chat_template
    assert tokenizer.chat_template == qwen3_chat_template  # the shared tokenizer was not modified
    # The resolved template really is prefix-preserving on a tool-calling conversation.
    history = [
        {"role": "user", "content": "fix the bug"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}}],
        },
    ]
    short = tokenizer.apply_chat_template(history, chat_template=template, tokenize=False)
    longer = tokenizer.apply_chat_template(
        history + [{"role": "tool", "content": "a.py"}],
        chat_template=template,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert longer.startswith(short) and longer.endswith("<|im_start|>assistant\n")


def test_prefix_preserving_own_template_is_used_as_is(tokenizer):
    clone = _with_template(tokenizer, qwen3_training_chat_template)
    assert resolve_training_template(clone) is clone.chat_template


def test_explicit_template_wins_as_text_and_as_path(tokenizer, tmp_path):
    text = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert resolve_training_template(tokenizer, text) == text
    path = tmp_path / "mine.jinja"
    path.write_text(text, encoding="utf-8")
    assert resolve_training_template(tokenizer, str(path)) == text
    with pytest.raises(ValueError, match="neither a readable file nor jinja"):
        resolve_training_template(tokenizer, str(tmp_path / "missing.jinja"))


def test_unknown_non_prefix_preserving_template_asks_for_chat_template_flag(tokenizer):
    # One extra comment makes the shipped template unknown to TRL (it matches templates by exact string equality).
    unknown = _with_template(tokenizer, qwen3_chat_template + "{#- local edit #}")
    with pytest.raises(ValueError, match=r"--chat-template PATH") as caught:
        resolve_training_template(unknown)
    assert "prefix-preserving" in str(caught.value)


def test_tokenizer_without_template_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="no chat template"):
        resolve_training_template(_with_template(tokenizer, None))
