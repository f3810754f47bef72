"""A scripted multi-turn agent: the real `openai` SDK against the gate, sending what real agents send.

It echoes the policy's replies back the way agents do (re-serialized tool-call arguments, `content: null` on
tool-call turns, content as lists of text parts, extra keys), then rewrites its history once (a fork).
Environment: OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL, SCRIPTED_TURNS (default 3), SCRIPTED_STREAM (0/1).
"""

import json
import os
import sys

import openai
from openai import OpenAI

TOOLS = [{"type": "function", "function": {"name": "bash", "description": "run a shell command",
          "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]


def echo(message) -> dict:
    """The assistant message as an agent sends it back next turn."""
    out = {"role": "assistant", "content": message.content if message.content else None,
           "provider_specific_fields": {"refusal": None}}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             # agents re-serialize arguments: parse and dump with spaces
             "function": {"name": c.function.name, "arguments": json.dumps(json.loads(c.function.arguments))}}
            for c in message.tool_calls
        ]
    return out


def call(client, messages, stream):
    kwargs = dict(model=os.environ["OPENAI_MODEL"], messages=messages, tools=TOOLS, max_tokens=24,
                  temperature=0.2)  # the worker ignores the agent's temperature
    if not stream:
        return client.chat.completions.create(**kwargs).choices[0].message
    content, calls = "", {}
    for chunk in client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
                entry["name"] += tc.function.name or ""
                entry["arguments"] += tc.function.arguments or ""

    class _Msg:  # the shape `echo` reads
        pass

    msg = _Msg()
    msg.content = content or None
    msg.tool_calls = None
    if calls:
        class _Fn:
            def __init__(self, d):
                self.name, self.arguments = d["name"], d["arguments"]

        class _Call:
            def __init__(self, d):
                self.id, self.function = d["id"], _Fn(d)

        msg.tool_calls = [_Call(calls[i]) for i in sorted(calls)]
    return msg


def main() -> int:
    client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"], timeout=120,
                    max_retries=0)
    stream = os.environ.get("SCRIPTED_STREAM", "0") == "1"
    turns = int(os.environ.get("SCRIPTED_TURNS", "3"))
    messages = [
        {"role": "system", "content": "You are a coding agent. Use the bash tool."},
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test "}, {"type": "text", "text": "in repo/."}]},
    ]
    for turn in range(turns):
        reply = call(client, messages, stream)
        messages.append(echo(reply))
        if reply.tool_calls:
            for c in reply.tool_calls:
                messages.append({"role": "tool", "tool_call_id": c.id, "content": f"ran turn {turn}"})
        else:
            messages.append({"role": "user", "content": [{"type": "text", "text": f"Observation {turn}: ok"}]})
    # A context-management step: drop the oldest exchange (the worker must fork, not mis-train).
    truncated = messages[:2] + messages[4:]
    call(client, truncated, stream)
    print("scripted agent done", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIStatusError as exc:  # show what the agent was told, then fail like a real agent would
        print(f"agent got HTTP {exc.status_code} code={exc.code}", flush=True)
        sys.exit(3)
