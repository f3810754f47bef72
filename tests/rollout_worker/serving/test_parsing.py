"""Sampled ids → OpenAI assistant message (rollout_worker/serving/parsing.py), with the real Qwen3 tokenizer and TRL's parser."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionMessage
from trl.chat_template_utils import parse_response

from rollout_worker.serving.assembly import PromptAssembler
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.messages import messages_equivalent
from rollout_worker.serving.parsing import PREFIX_TAIL_TOKENS, parse_completion, parsing_tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["path"],
            },
        },
    },
]


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    assembler = PromptAssembler(tokenizer, resolve_training_template(tokenizer))
    return assembler.new_conversation().prepare([{"role": "user", "content": "List the files."}], TOOLS).prompt_ids


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def assert_openai_shape(message: dict):
    """The reply validates as the openai SDK's ChatCompletionMessage and survives its round trip."""
    model = ChatCompletionMessage.model_validate(message)
    assert model.role == "assistant"
    for call in model.tool_calls or ():
        assert call.id.startswith("call_") and call.type == "function"
        assert isinstance(json.loads(call.function.arguments), dict)


def test_compact_tool_call_round_trip(tokenizer, prompt_ids):
    ids = encode(tokenizer, '<tool_call>\n{"name":"bash","arguments":{"command":"ls -la"}}\n</tool_call><|im_end|>')
    reply = parse_completion(tokenizer, ids, prompt_ids, TOOLS)
    assert reply.ok and reply.error is None
    message = reply.message
    assert message["content"] is None and "reasoning_content" not in message
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "bash"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"command": "ls -la"}
    assert_openai_shape(message)


def test_without_prefix_and_tools_trl_returns_tool_calls_as_text(tokenizer, prompt_ids):
    """The design §3 trap our parse avoids: the bare call loses the tool call into `content`."""
    ids = encode(tokenizer, '<tool_call>\n{"name":"bash","arguments":{"command":"ls"}}\n</tool_call><|im_end|>')
    bare = parse_response(parsing_tokenizer(tokenizer), ids)
    assert "tool_calls" not in bare and "<tool_call>" in bare["content"]
    assert parse_completion(tokenizer, ids, prompt_ids, TOOLS).message["tool_calls"]


def test_think_block_becomes_reasoning_content_with_text_and_two_calls(tokenizer, prompt_ids):
    text = (
        "<think>\nI should look around first.\n</think>\n\nLet me look.\n"
        '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "read", "arguments": {"path": "a.py", "limit": "20"}}\n</tool_call><|im_end|>'
    )
    reply = parse_completion(tokenizer, encode(tokenizer, text), prompt_ids, TOOLS)
    assert reply.ok
    message = reply.message
    assert message["reasoning_content"] == "I should look around first."
    assert message["content"].strip() == "Let me look."
    calls = message["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["bash", "read"]
    # Arguments are typed by the tool's schema ("20" for an integer parameter becomes 20).
    assert json.loads(calls[1]["function"]["arguments"]) == {"path": "a.py", "limit": 20}
    assert calls[0]["id"] != calls[1]["id"]
    assert_openai_shape(message)


def test_plain_answer_without_think(tokenizer, prompt_ids):
    reply = parse_completion(tokenizer, encode(tokenizer, "All tests pass now.<|im_end|>"), prompt_ids, TOOLS)
    assert reply.ok
    assert reply.message == {"role": "assistant", "content": "All tests pass now."}


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name":"bash","argum',  # cut by max_tokens
        '<tool_call>\n{"name":"bash","arguments":{"command":"ls"}\n</tool_call><|im_end|>',  # missing brace
        '<tool_call>\n{"name":"bash","arguments":{"command":"ls"}}\n</tool_call>\n<tool_call>\n{"name":"re',
    ],
    ids=["truncated", "bad-json", "second-call-truncated"],
)
def test_broken_tool_call_falls_back_to_text(tokenizer, prompt_ids, text):
    ids = encode(tokenizer, text)
    reply = parse_completion(tokenizer, ids, prompt_ids, TOOLS)
    assert not reply.ok and "tool call" in reply.error
    assert "tool_calls" not in reply.message
    assert reply.message["content"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert_openai_shape(reply.message)


def test_trailing_endoftext_is_not_content(tokenizer, prompt_ids):
    reply = parse_completion(tokenizer, encode(tokenizer, "Done.<|endoftext|>"), prompt_ids, TOOLS)
    assert reply.ok and reply.message["content"] == "Done."


def test_long_prompt_parses_like_a_short_one(tokenizer, prompt_ids):
    """Only a tail of the prompt is decoded for the parser's prefix; a long context must not change the result."""
    long_prompt = encode(tokenizer, "<|im_start|>user\n" + "word " * 5000 + "<|im_end|>\n") + prompt_ids
    assert len(long_prompt) > 10 * PREFIX_TAIL_TOKENS
    ids = encode(tokenizer, '<think>\nok\n</think>\n\n<tool_call>\n{"name":"bash","arguments":{"command":"pwd"}}\n</tool_call><|im_end|>')
    short, long = parse_completion(tokenizer, ids, prompt_ids, TOOLS), parse_completion(tokenizer, ids, long_prompt, TOOLS)
    for reply in (short, long):
        reply.message["tool_calls"][0]["id"] = "call_x"
    assert short == long and short.message["reasoning_content"] == "ok"


def test_shared_tokenizer_is_not_mutated_and_parser_is_cached(tokenizer):
    assert getattr(tokenizer, "response_template", None) is None
    first = parsing_tokenizer(tokenizer)
    assert first is not tokenizer and first.response_template is not None
    assert parsing_tokenizer(tokenizer) is first
    assert parsing_tokenizer(first) is first


def test_echo_of_parsed_reply_matches_what_assembly_holds(tokenizer, prompt_ids):
    """What the agent gets back, re-sent through the openai SDK's model, compares equal to the reply we hold."""
    ids = encode(tokenizer, '<think>\nhm\n</think>\n\n<tool_call>\n{"name":"bash","arguments":{"command":"ls"}}\n</tool_call><|im_end|>')
    message = parse_completion(tokenizer, ids, prompt_ids, TOOLS).message
    echoed = ChatCompletionMessage.model_validate(message).model_dump(exclude_none=True)
    assert messages_equivalent(message, echoed)
    without_reasoning = {k: v for k, v in echoed.items() if k != "reasoning_content"}
    assert messages_equivalent(message, without_reasoning)


def test_empty_completion_and_lone_turn_end(tokenizer, prompt_ids):
    for ids in ([], [tokenizer.convert_tokens_to_ids("<|im_end|>")]):
        reply = parse_completion(tokenizer, ids, prompt_ids, TOOLS)
        assert reply.ok and reply.message == {"role": "assistant", "content": ""}


def test_unknown_template_is_a_clear_error(tokenizer, prompt_ids):
    import copy

    other = copy.copy(tokenizer)
    other.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(ValueError, match="no response template"):
        parse_completion(other, encode(tokenizer, "hi"), prompt_ids, TOOLS)


def test_a_crashing_parser_falls_back_to_text(tokenizer, prompt_ids):
    import copy

    class Exploding(dict):
        def get(self, *args):
            raise RuntimeError("parser bug")

        __getitem__ = get

    broken = copy.copy(tokenizer)
    broken.response_template = Exploding(start_anchor="x")
    ids = encode(tokenizer, '<tool_call>\n{"name":"bash","arguments":{"command":"ls"}}\n</tool_call><|im_end|>')
    reply = parse_completion(broken, ids, prompt_ids, TOOLS)
    assert not reply.ok and "parser bug" in reply.error
    assert reply.message == {"role": "assistant", "content": tokenizer.decode(ids[:-1])}
