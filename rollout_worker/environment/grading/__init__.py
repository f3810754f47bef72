"""Grading an episode once its agent is dead, never inside the agent's sandbox (design §7). One module per grader:

- `host`: `FailPassGrader` on the host (a fresh base tree, the agent's source changes, the task's tests through a
  `TestExecutor`) and `GradingConfig`, the knobs every grader shares.
- `swebench_container`: `SweBenchContainerGrader`, SWE-bench / SWE-Gym image tasks graded by the `swebench` harness
  in a fresh container of the task's image; `ImageAwareGrader` picks the grader a task needs.
- `harbor_container`: `HarborContainerGrader`, a Harbor task's verifier in a fresh container.
- `container_common`: what the grading containers share (`ContainerGradingConfig`, labels, bounded start/exec/remove).
"""
