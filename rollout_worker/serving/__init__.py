"""Token-exact serving of one rollout's agent calls (design §3).

messages (normalize what agents send) -> assembly (held ids + rendered suffix with the training chat template)
-> engine_client (/v1/completions on token ids: exact ids + logprobs) -> parsing (TRL's parse_response: content,
tool calls, reasoning) -> turns (one coroutine per rollout answering its calls, every budget and guard).
replicas: which engine replica a rollout is pinned to (least loaded at its start), and dropping one that went away.

Never imports `rollout_worker.environment` (sandboxes, agents, grading): the two halves meet only in the worker.
"""
