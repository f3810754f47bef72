"""Where an agent runs and how its work is judged: sandboxes, agent launchers, tasks, grading, the episode.

sandbox/ (bubblewrap, Docker; the gate reached only through a relayed unix socket) -> agents/ (how each CLI is
started against its rollout endpoint) -> episode (sandbox, agent, exit or budget, kill, grade, destroy) ->
grading (the agent's diff applied to a pristine tree, the task's tests, a typed `GradeResult`); tasks/ loads them.

Never imports `rollout_worker.serving` (token-exact serving): the two halves meet only in the worker.
"""
