"""Message normalization and semantic equality (rollout_worker/serving/messages.py), on the dialects agents really send."""

from __future__ import annotations

import pytest

from rollout_worker.serving.messages import (
    MessageFormatError,
    count_unparsed_arguments,
    messages_equivalent,
    normalize_message,
    normalize_messages,
    tools_equivalent,
)

OUR_REPLY = {
    "role": "assistant",
    "content": None,
    "reasoning_content": "check the tests",
    "tool_calls": [{"id": "call_ab12", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}],
}


def test_pi_user_parts_and_null_content_become_strings():
    user = {"role": "user", "content": [{"type": "text", "text": "Fix it."}, {"type": "text", "text": "Quickly."}]}
    assert normalize_message(user) == {"role": "user", "content": "Fix it.\nQuickly."}
    normalized = normalize_message(OUR_REPLY)
    assert normalized["content"] == ""
    assert normalized["tool_calls"] == [
        {"type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}, "id": "call_ab12"}
    ]
    assert normalized["reasoning_content"] == "check the tests"


def test_extra_keys_dropped_and_known_ones_kept():
    mini = {
        "role": "assistant",
        "content": "running",
        "provider_specific_fields": {"refusal": None},
        "function_call": None,
        "annotations": [],
        "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": "{}"}, "index": 0}],
    }
    assert normalize_message(mini) == {
        "role": "assistant",
        "content": "running",
        "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": {}}}],
    }
    tool = {"role": "tool", "tool_call_id": "call_1", "name": "bash", "content": "ok", "cache_control": {"x": 1}}
    assert normalize_message(tool) == {"role": "tool", "content": "ok", "tool_call_id": "call_1", "name": "bash"}
    assert normalize_message({"role": "developer", "content": "rules"}) == {"role": "system", "content": "rules"}


def test_arguments_json_to_dict_invalid_kept_and_counted():
    calls = [
        {"function": {"name": "a", "arguments": '{"x": [1, 2]}'}},
        {"function": {"name": "b", "arguments": '{"x": '}},  # invalid JSON
        {"function": {"name": "c", "arguments": '"just a string"'}},  # JSON, but not an object
        {"function": {"name": "d", "arguments": ""}},
        {"name": "e", "arguments": {"y": 1}},  # flat shape, dict already
    ]
    [message] = normalize_messages([{"role": "assistant", "content": "", "tool_calls": calls}])
    args = [call["function"]["arguments"] for call in message["tool_calls"]]
    assert args == [{"x": [1, 2]}, '{"x": ', '"just a string"', {}, {"y": 1}]
    assert count_unparsed_arguments([message]) == 2


def test_think_inside_content_is_split_like_the_template():
    echoed = {"role": "assistant", "content": "<think>\nplan it\n</think>\n\nHere you go."}
    assert normalize_message(echoed) == {"role": "assistant", "content": "Here you go.", "reasoning_content": "plan it"}
    via_alias = {"role": "assistant", "content": "Here you go.", "reasoning": "plan it"}
    assert normalize_message(via_alias) == normalize_message(echoed)


def test_normalization_is_idempotent():
    for message in (OUR_REPLY, {"role": "user", "content": [{"type": "text", "text": "a"}]}):
        once = normalize_message(message)
        assert normalize_message(once) == once


@pytest.mark.parametrize(
    "echo",
    [
        {**OUR_REPLY, "content": ""},
        {**OUR_REPLY, "reasoning_content": None},  # reasoning dropped by the agent
        {k: v for k, v in OUR_REPLY.items() if k != "reasoning_content"},
        {**OUR_REPLY, "provider_specific_fields": {}},
        {**OUR_REPLY, "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": '{\n  "command":"ls"\n}'}}]},
        {**OUR_REPLY, "tool_calls": [{"id": "other", "function": {"name": "bash", "arguments": {"command": "ls"}}}]},
    ],
    ids=["empty-content", "null-reasoning", "no-reasoning", "extra-key", "reserialized-args", "dict-args-new-id"],
)
def test_equivalent_echoes(echo):
    assert messages_equivalent(OUR_REPLY, echo)
    assert messages_equivalent(echo, OUR_REPLY)


@pytest.mark.parametrize(
    "other",
    [
        {**OUR_REPLY, "content": "something else"},
        {**OUR_REPLY, "reasoning_content": "a different thought"},
        {**OUR_REPLY, "tool_calls": [{"function": {"name": "bash", "arguments": '{"command": "ls -l"}'}}]},
        {**OUR_REPLY, "tool_calls": [{"function": {"name": "sh", "arguments": '{"command": "ls"}'}}]},
        {**OUR_REPLY, "tool_calls": OUR_REPLY["tool_calls"] * 2},
        {**OUR_REPLY, "role": "user"},
    ],
    ids=["content", "reasoning", "args", "name", "count", "role"],
)
def test_different_messages(other):
    assert not messages_equivalent(OUR_REPLY, other)


def test_content_parts_and_whitespace_are_equal_text():
    parts = {"role": "user", "content": [{"type": "text", "text": "Fix  the\tbug "}]}
    assert messages_equivalent(parts, {"role": "user", "content": "Fix the bug"})
    assert not messages_equivalent(parts, {"role": "user", "content": "Fix the bugs"})


def test_tools_equivalence_ignores_key_order():
    tool = {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
    reordered = {"function": {"parameters": {"type": "object"}, "name": "bash"}, "type": "function"}
    assert tools_equivalent([tool], [reordered])
    assert tools_equivalent(None, [])
    assert not tools_equivalent([tool], [tool, tool])


@pytest.mark.parametrize(
    "bad, match",
    [
        ("not a list", "non-empty list"),
        ([], "non-empty list"),
        (["text"], r"messages\[0\] must be an object"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}], "only text content"),
        ([{"role": "user", "content": 42}], "must be a string, null or a list"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}], "function.name"),
        ([{"role": "assistant", "content": "", "tool_calls": {"function": {}}}], "tool_calls must be a list"),
    ],
)
def test_malformed_messages_raise_clear_errors(bad, match):
    with pytest.raises(MessageFormatError, match=match):
        normalize_messages(bad)
