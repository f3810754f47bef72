"""Synthesized SWE-bench-format tasks from real Python packages, SWE-smith style (issue #24, docs/synth_tasks.md).

manifest (what to build) → sdist (pip download) → images (environment image from wheels; task image: /testbed, one
commit, the mutated state) → screen (the suite twice for the reliable set, then each mutant) → mutate (the AST
operators) → rows (SWE-bench's schema, the revert as gold patch, a statement from the failing tests' output) →
validate (the container grader: gold 1.0, no change 0.0) — pipeline runs them per package; cli is
`intercept-rl tasks synth`. Nothing here is imported by the rest of the worker.
"""
