"""Token-exact prompt assembly with the real Qwen3 tokenizer and TRL's qwen3_training template.

The "engine" is synthetic: its sampled ids are the tokenization of assistant text we choose (compact tool-call JSON,
think blocks, truncated output) and its log-probs are distinct numbers, so every test can check that each sampled id
and its log-prob sit where they were sampled, with mask 1, and nothing else does.
"""

from __future__ import annotations

import json

import pytest

from rollout_worker.outcomes import ForkReason
from rollout_worker.serving.assembly import PromptAssembler
from rollout_worker.serving.chat_template import resolve_training_template
from rollout_worker.serving.messages import MessageFormatError, normalize_messages
from rollout_worker.serving.parsing import parse_completion

BASH_TOOL = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}
READ_TOOL = {
    "type": "function",
    "function": {
        "name": "read",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
}
IM_END = 151645


@pytest.fixture(scope="module")
def template(tokenizer):
    return resolve_training_template(tokenizer)


@pytest.fixture(scope="module")
def assembler(tokenizer, template):
    return PromptAssembler(tokenizer, template)


class FakeEngine:
    """Synthetic sampling: ids of a chosen text, each with its own log-prob (so misplacement is detectable)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.counter = 0

    def sample(self, text: str) -> tuple[list[int], list[float]]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        logprobs = [-(self.counter + i + 1) / 1000.0 for i in range(len(ids))]
        self.counter += len(ids)
        return ids, logprobs


def run_turn(conv, tokenizer, engine, messages, tools, text, version=0, finish="stop"):
    """prepare → sample → parse → commit, like the worker's turn server; returns what the test needs."""
    plan = conv.prepare(messages, tools)
    ids, logprobs = engine.sample(text)
    reply = parse_completion(tokenizer, ids, plan.prompt_ids, tools)
    conv.commit(plan, ids, logprobs, reply.message, finish, version)
    return plan, ids, logprobs, reply.message


def echo_like_pi(reply: dict) -> dict:
    """How pi sends our reply back: content null on tool-call-only turns, arguments re-serialized, no reasoning."""
    echoed = {"role": "assistant", "content": reply["content"]}
    if reply.get("tool_calls"):
        echoed["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": json.dumps(json.loads(call["function"]["arguments"]), indent=1),
                },
            }
            for call in reply["tool_calls"]
        ]
    return echoed


def echo_like_mini(reply: dict) -> dict:
    """How mini-swe-agent (litellm) sends it back: extra keys, reasoning kept, ids dropped, spaced JSON."""
    echoed = {**reply, "provider_specific_fields": {"refusal": None}, "function_call": None}
    if reply.get("tool_calls"):
        echoed["tool_calls"] = [
            {"type": "function", "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
            for c in reply["tool_calls"]
        ]
    return echoed


def segments(mask: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs (start, end, value) of a 0/1 mask."""
    runs, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            runs.append((start, i, mask[start]))
            start = i
    return runs


def assert_sampled_in_place(row, sampled: list[tuple[int, list[int], list[float]]]):
    """Every sampled turn sits at its offset with mask 1 and its log-probs; mask is 1 nowhere else."""
    expected_mask = [0] * len(row.input_ids)
    for offset, ids, logprobs in sampled:
        assert row.input_ids[offset : offset + len(ids)] == ids
        assert row.old_log_probs[offset : offset + len(ids)] == logprobs
        expected_mask[offset : offset + len(ids)] = [1] * len(ids)
    assert row.completion_mask == expected_mask
    assert all(lp == 0.0 for lp, m in zip(row.old_log_probs, row.completion_mask) if m == 0)
    assert len(row.input_ids) == len(row.completion_mask) == len(row.old_log_probs)


COMPACT_CALL = '<tool_call>\n{"name":"bash","arguments":{"command":"ls"}}\n</tool_call><|im_end|>'
THINK_CALL = '<think>\nLook at the test first.\n</think>\n\n<tool_call>\n{"name":"bash","arguments":{"command":"cat test_x.py"}}\n</tool_call><|im_end|>'
TWO_CALLS = (
    'Reading both.\n<tool_call>\n{"name":"bash","arguments":{"command":"cat a.py"}}\n</tool_call>\n'
    '<tool_call>\n{"name":"bash","arguments":{"command":"cat b.py"}}\n</tool_call><|im_end|>'
)
FINAL = "<think>\nDone.\n</think>\n\nThe bug is fixed.<|im_end|>"


def test_first_prompt_is_the_full_training_render(tokenizer, template, assembler):
    messages = [{"role": "system", "content": "You are a coder."}, {"role": "user", "content": "Fix the bug."}]
    plan = assembler.new_conversation().prepare(messages, [BASH_TOOL])
    expected = tokenizer.apply_chat_template(
        messages, tools=[BASH_TOOL], add_generation_prompt=True, tokenize=False, chat_template=template
    )
    assert plan.prompt_ids == tokenizer.encode(expected, add_special_tokens=False)
    assert tokenizer.decode(plan.prompt_ids).endswith("<|im_start|>assistant\n")
    assert (plan.forked, plan.reason) == (False, None)


@pytest.mark.parametrize("echo", [echo_like_pi, echo_like_mini], ids=["pi", "mini"])
def test_multi_turn_rollout_is_token_exact(tokenizer, template, assembler, echo):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    tools = [BASH_TOOL]
    messages = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test."}, {"type": "text", "text": "Be brief."}]},
    ]
    sampled, plans, texts = [], [], [COMPACT_CALL, THINK_CALL, TWO_CALLS, FINAL]
    tool_results = [
        [{"role": "tool", "tool_call_id": "t0", "content": "a.py\nb.py\ntest_x.py"}],
        [{"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "def test_x():\n    assert f() == 2"}]}],
        [
            {"role": "tool", "tool_call_id": "t2", "content": "def f():\n    return 1"},
            {"role": "tool", "tool_call_id": "t3", "content": "# empty"},
            {"role": "user", "content": "Hurry up."},
        ],
    ]
    for turn, text in enumerate(texts):
        plan, ids, logprobs, reply = run_turn(conv, tokenizer, engine, messages, tools, text, version=turn)
        if plans:  # prompt = exactly the held ids (previous prompt + sampled ids) + a bridge
            previous_plan, (previous_offset, previous_ids, _) = plans[-1], sampled[-1]
            held = previous_plan.prompt_ids + previous_ids
            assert not plan.forked, plan.detail
            assert plan.prompt_ids[: len(held)] == held
            assert (plan.forked, plan.reason) == (False, None)
        sampled.append((len(plan.prompt_ids), ids, logprobs))
        plans.append(plan)
        messages = messages + [echo(reply)] + (tool_results[turn] if turn < len(tool_results) else [])

    assert conv.stats["forks"] == 0 and conv.stats["turns"] == 4
    assert conv.stats["sampled_tokens"] == conv.stats["trained_tokens"] == sum(len(ids) for _, ids, _ in sampled)
    [row] = conv.rows()
    assert_sampled_in_place(row, sampled)
    assert row.model_versions == [0, 1, 2, 3]
    assert len(row.prompt_messages) == 2 and len(row.completion_messages) == 4 + 1 + 1 + 3
    assert row.completion_messages[0]["tool_calls"][0]["function"]["arguments"] == {"command": "ls"}

    # The non-assistant parts of the row are exactly those of a full training-template render of the conversation;
    # the assistant parts are the sampled ids, which differ from the template's canonical re-render.
    final_messages = normalize_messages(messages)
    full = tokenizer.apply_chat_template(
        final_messages, tools=tools, chat_template=template, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True,
    )
    full_ids, full_mask = full["input_ids"], full["assistant_masks"]
    full_runs = [full_ids[a:b] for a, b, v in segments(full_mask)]
    row_runs = [row.input_ids[a:b] for a, b, v in segments(row.completion_mask)]
    assert len(full_runs) == len(row_runs) == 8  # prompt, (sampled, bridge) × 3, sampled
    assert row_runs[0] == full_runs[0]  # the first prompt
    for k in range(2, 8, 2):
        # A bridge starts with the "\n" the template puts after <|im_end|> (inside its assistant span), then the
        # new messages and the generation prompt, identical to the full render.
        assert row_runs[k][0] == full_runs[k - 1][-1] == tokenizer.encode("\n")[0]
        assert row_runs[k][1:] == full_runs[k]
    for k in range(1, 8, 2):
        assert row_runs[k][-1] == IM_END
    # Compact JSON as sampled is kept, not replaced by the template's `{"name": "bash", ...}` re-render.
    assert row_runs[1] != full_runs[1][:-1]
    assert tokenizer.decode(row_runs[1]) == COMPACT_CALL


def test_completion_cut_by_max_tokens_is_closed_by_the_bridge(tokenizer, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    messages = [{"role": "user", "content": "Explain."}]
    plan, ids, logprobs, reply = run_turn(conv, tokenizer, engine, messages, None, "It is a long sto", finish="length")
    assert ids[-1] != IM_END and reply["content"] == "It is a long sto"
    messages = messages + [reply, {"role": "user", "content": "Go on."}]
    plan2 = conv.prepare(messages, None)
    held = plan.prompt_ids + ids
    bridge = plan2.prompt_ids[len(held) :]
    assert plan2.prompt_ids[: len(held)] == held and not plan2.forked
    assert bridge[0] == IM_END  # the turn is closed, un-sampled
    assert tokenizer.decode(bridge) == "<|im_end|>\n<|im_start|>user\nGo on.<|im_end|>\n<|im_start|>assistant\n"
    ids2, logprobs2 = engine.sample("Sure.<|im_end|>")
    conv.commit(plan2, ids2, logprobs2, {"role": "assistant", "content": "Sure."}, "stop", 1)
    [row] = conv.rows()
    assert_sampled_in_place(row, [(len(plan.prompt_ids), ids, logprobs), (len(plan2.prompt_ids), ids2, logprobs2)])
    assert conv.stats["unclosed_turns"] == 1


def test_think_echoed_inside_content_or_dropped_does_not_fork(tokenizer, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    messages = [{"role": "user", "content": "Hi"}]
    _, _, _, reply = run_turn(conv, tokenizer, engine, messages, None, "<think>\nGreet.\n</think>\n\nHello!<|im_end|>")
    assert reply["reasoning_content"] == "Greet." and reply["content"] == "Hello!"
    inline = {"role": "assistant", "content": "<think>\nGreet.\n</think>\n\nHello!"}
    dropped = {"role": "assistant", "content": "Hello!"}
    for echoed in (inline, dropped, reply):
        plan = conv.prepare(messages + [echoed, {"role": "user", "content": "Bye"}], None)
        assert (plan.forked, plan.reason) == (False, None), echoed


def test_edited_history_forks_from_a_full_render(tokenizer, template, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    tools = [BASH_TOOL]
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Task"}]
    _, ids0, lps0, reply = run_turn(conv, tokenizer, engine, messages, tools, COMPACT_CALL)
    messages += [echo_like_pi(reply), {"role": "tool", "content": "out " * 50}]
    plan1, ids1, lps1, reply1 = run_turn(conv, tokenizer, engine, messages, tools, THINK_CALL)
    rows_before = conv.rows()

    # The agent shortens an old tool result (context management): the history no longer matches.
    edited = [dict(m) for m in messages] + [echo_like_pi(reply1), {"role": "tool", "content": "x"}]
    edited[3] = {"role": "tool", "content": "[output truncated]"}
    plan = conv.prepare(edited, tools)
    assert plan.forked and plan.reason == ForkReason.HISTORY_EDITED and "message 3" in plan.detail
    expected = tokenizer.apply_chat_template(
        normalize_messages(edited), tools=tools, add_generation_prompt=True, tokenize=False, chat_template=template
    )
    assert plan.prompt_ids == tokenizer.encode(expected, add_special_tokens=False)
    ids2, lps2 = engine.sample(FINAL)
    conv.commit(plan, ids2, lps2, {"role": "assistant", "content": "The bug is fixed."}, "stop", 2)
    assert conv.stats["forks"] == 1 and conv.stats["rows"] == 2

    old, new = conv.rows()
    assert old.input_ids == rows_before[0].input_ids  # the first row is untouched
    assert_sampled_in_place(new, [(len(plan.prompt_ids), ids2, lps2)])
    assert conv.stats["sampled_tokens"] == conv.stats["trained_tokens"] == len(ids0) + len(ids1) + len(ids2)

    # The agent continues the forked conversation: that extends the new row, no further fork.
    plan3 = conv.prepare(edited + [{"role": "assistant", "content": "The bug is fixed."}, {"role": "user", "content": "Thanks"}], tools)
    assert not plan3.forked and plan3.prompt_ids[: len(new.input_ids)] == new.input_ids


def test_changed_tools_or_args_fork(tokenizer, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    messages = [{"role": "user", "content": "Task"}]
    _, _, _, reply = run_turn(conv, tokenizer, engine, messages, [BASH_TOOL], COMPACT_CALL)
    nxt = messages + [echo_like_pi(reply), {"role": "tool", "content": "a.py"}]
    assert not conv.prepare(nxt, [BASH_TOOL]).forked
    # Same tools with another key order are the same tools.
    reordered = {"function": dict(reversed(list(BASH_TOOL["function"].items()))), "type": "function"}
    assert not conv.prepare(nxt, [reordered]).forked
    plan = conv.prepare(nxt, [BASH_TOOL, READ_TOOL])
    assert plan.forked and plan.reason == ForkReason.TOOLS_CHANGED
    rewritten = echo_like_pi(reply)
    rewritten["tool_calls"][0]["function"]["arguments"] = '{"command": "ls -la"}'
    plan = conv.prepare(messages + [rewritten, {"role": "tool", "content": "a.py"}], [BASH_TOOL])
    assert plan.forked and plan.reason == ForkReason.HISTORY_EDITED
    assert conv.stats["forks"] == 0  # planning alone counts nothing: only committed turns do


def test_sub_agent_branch_forks_once_and_main_conversation_resumes(tokenizer, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    main = [{"role": "system", "content": "Main agent"}, {"role": "user", "content": "Task"}]
    main_plan, main_ids, main_lps, reply = run_turn(conv, tokenizer, engine, main, None, "Delegating.<|im_end|>")
    sub = [{"role": "system", "content": "Sub agent"}, {"role": "user", "content": "Subtask"}]
    sub_plan, sub_ids, sub_lps, sub_reply = run_turn(conv, tokenizer, engine, sub, None, "Sub done.<|im_end|>")
    assert sub_plan.forked and sub_plan.reason == ForkReason.HISTORY_EDITED
    main = main + [reply, {"role": "user", "content": "Sub said: done"}]
    plan, ids, lps, _ = run_turn(conv, tokenizer, engine, main, None, "Finished.<|im_end|>")
    assert not plan.forked
    assert plan.prompt_ids[: len(main_plan.prompt_ids) + len(main_ids)] == main_plan.prompt_ids + main_ids
    # A retry of the sub-agent's first request (its reply never reached it) is a branch inside a held conversation.
    retry = conv.prepare(sub, None)
    assert retry.forked and retry.reason == ForkReason.HISTORY_SHORTENED
    assert conv.stats["forks"] == 1 and conv.stats["rows"] == 2
    first, second = conv.rows()
    assert_sampled_in_place(first, [(len(main_plan.prompt_ids), main_ids, main_lps), (len(plan.prompt_ids), ids, lps)])
    assert_sampled_in_place(second, [(len(sub_plan.prompt_ids), sub_ids, sub_lps)])


def test_two_concurrent_extensions_become_a_counted_branch(tokenizer, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    messages = [{"role": "user", "content": "Task"}]
    first_plan, first_ids, first_lps, reply = run_turn(conv, tokenizer, engine, messages, None, "Ok.<|im_end|>")
    a = conv.prepare(messages + [reply, {"role": "user", "content": "A"}], None)
    b = conv.prepare(messages + [reply, {"role": "user", "content": "B"}], None)
    assert not a.forked and not b.forked
    ids_a, lps_a = engine.sample("A done.<|im_end|>")
    ids_b, lps_b = engine.sample("B done.<|im_end|>")
    conv.commit(a, ids_a, lps_a, {"role": "assistant", "content": "A done."}, "stop", 1)
    conv.commit(b, ids_b, lps_b, {"role": "assistant", "content": "B done."}, "stop", 1)
    assert b.forked and b.reason == ForkReason.CONCURRENT_BRANCH
    assert conv.stats["forks"] == 1
    row_a, row_b = conv.rows()
    assert_sampled_in_place(row_a, [(len(first_plan.prompt_ids), first_ids, first_lps), (len(a.prompt_ids), ids_a, lps_a)])
    # The branch row carries b's exact prompt (shared prefix as prompt, mask 0): each sampled id is trained once.
    assert row_b.input_ids == b.prompt_ids + ids_b
    assert_sampled_in_place(row_b, [(len(b.prompt_ids), ids_b, lps_b)])
    with pytest.raises(ValueError, match="already committed"):
        conv.commit(b, ids_b, lps_b, {"role": "assistant", "content": "B done."}, "stop", 1)


def test_prepare_changes_nothing_until_commit(tokenizer, assembler):
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    messages = [{"role": "user", "content": "Task"}]
    _, _, _, reply = run_turn(conv, tokenizer, engine, messages, None, "Ok.<|im_end|>")
    stats, rows = conv.stats, conv.rows()
    nxt = messages + [reply, {"role": "user", "content": "more"}]
    first = conv.prepare(nxt, None)
    second = conv.prepare(nxt, None)
    assert first.prompt_ids == second.prompt_ids
    assert conv.stats == stats and conv.rows() == rows


def test_bad_input_raises_clear_errors(tokenizer, assembler):
    conv = assembler.new_conversation()
    with pytest.raises(MessageFormatError, match="non-empty list"):
        conv.prepare([], None)
    with pytest.raises(MessageFormatError, match="role"):
        conv.prepare([{"role": "wizard", "content": "x"}], None)
    with pytest.raises(MessageFormatError, match="image_url"):
        conv.prepare([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], None)
    plan = conv.prepare([{"role": "user", "content": "x"}], None)
    with pytest.raises(ValueError, match="align"):
        conv.commit(plan, [1, 2], [-0.1], {"role": "assistant", "content": "x"}, "stop", 0)
    with pytest.raises(ValueError, match="null log-prob"):
        conv.commit(plan, [1], [None], {"role": "assistant", "content": "x"}, "stop", 0)
    with pytest.raises(ValueError, match="another conversation"):
        assembler.new_conversation().commit(plan, [1], [-0.1], {"role": "assistant", "content": "x"}, "stop", 0)
    assert conv.stats["turns"] == 0 and conv.rows() == []


def test_template_without_special_turn_end_is_refused(tokenizer):
    plain = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    with pytest.raises(ValueError, match="not with a special token"):
        PromptAssembler(tokenizer, plain)


def test_template_whose_messages_depend_on_tools_gets_bridges_rendered_with_them(tokenizer, template):
    """Qwen3 renders tools only in the system header, so bridges skip them; a template that does not is still exact."""
    marker = "{{- '\\n<tool_response>\\n' }}"
    assert marker in template
    variant = template.replace(marker, "{{- '\\n<tool_response>' + ('[with tools]' if tools else '') + '\\n' }}")
    assembler = PromptAssembler(tokenizer, variant)
    engine = FakeEngine(tokenizer)
    conv = assembler.new_conversation()
    messages = [{"role": "user", "content": "Task"}]
    plan, ids, lps, reply = run_turn(conv, tokenizer, engine, messages, [BASH_TOOL], COMPACT_CALL)
    messages += [echo_like_pi(reply), {"role": "tool", "content": "a.py"}]
    plan2 = conv.prepare(messages, [BASH_TOOL])
    assert not plan2.forked and plan2.prompt_ids[: len(plan.prompt_ids) + len(ids)] == plan.prompt_ids + ids
    bridge = tokenizer.decode(plan2.prompt_ids[len(plan.prompt_ids) + len(ids) :])
    assert bridge == "\n<|im_start|>user\n<tool_response>[with tools]\na.py\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def test_template_errors_and_bad_tools_are_message_errors(tokenizer, template):
    strict = "{% if messages[0].role == 'tool' %}{{ raise_exception('a conversation cannot start with a tool result') }}{% endif %}" + template
    conv = PromptAssembler(tokenizer, strict).new_conversation()
    with pytest.raises(MessageFormatError, match="cannot start with a tool result"):
        conv.prepare([{"role": "tool", "content": "x"}], None)
    with pytest.raises(MessageFormatError, match="tools must be a list"):
        conv.prepare([{"role": "user", "content": "x"}], {"type": "function"})
