"""Rows in SWE-bench's schema for synthesized tasks (issue #24): the gold `patch` is the revert of the mutation (a
git-style diff from the mutated file to the original), `test_patch` is empty, FAIL_TO_PASS are the kept tests the
mutant breaks, PASS_TO_PASS the rest of the kept set, and the `problem_statement` is written from what a user sees
when running the tests (test names and pytest's one-line failure messages), never from the diff."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from rollout_worker.environment.tasks.synth.manifest import PackageSpec

MAX_LISTED_FAILURES = 5
MAX_MESSAGE_CHARS = 240


def revert_patch(mutated: dict[str, str], original: dict[str, str]) -> str:
    """A `git apply`-able diff turning the mutated files back into the originals (paths relative to /testbed)."""
    out = []
    for path in sorted(original):
        before, after = mutated[path].splitlines(keepends=True), original[path].splitlines(keepends=True)
        if before == after:
            continue
        out.append(f"diff --git a/{path} b/{path}\n")
        out.extend(difflib.unified_diff(before, after, f"a/{path}", f"b/{path}", n=3))
    return "".join(out)


def lines_changed(patch: str) -> int:
    return sum(1 for line in patch.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++ ", "--- ")))


def _function_name(test_id: str) -> str:
    return test_id.split("::")[-1]


def _clean(message: str, spec: PackageSpec) -> str:
    """A failure message as a user reads it, without paths into the source tree (line numbers point at the break)."""
    message = re.sub(r"(/testbed/)?[\w./-]+\.py:\d+(: in \w+)?", "<source>", message)
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def problem_statement(spec: PackageSpec, failing: list[str], messages: dict[str, str]) -> str:
    """The issue a user would file after running the package's tests against this state of the code."""
    listed = failing[:MAX_LISTED_FAILURES]
    lines = [f"Something is broken in {spec.name} {spec.version}: "
             f"{len(failing)} test{'s' if len(failing) != 1 else ''} of its own suite fail{'s' if len(failing) == 1 else ''}"
             " that passed in the release.", "", "What I see when I run the tests:"]
    for test in listed:
        message = messages.get(test)
        lines.append(f"- `{test}` fails" + (f": `{_clean(message, spec)}`" if message else ""))
    if len(failing) > len(listed):
        lines.append(f"- … and {len(failing) - len(listed)} more, e.g. "
                     + ", ".join(f"`{_function_name(t)}`" for t in failing[len(listed):len(listed) + 5]))
    lines += ["", f"Please fix {spec.name}'s code so that these tests pass again, without changing the tests."]
    return "\n".join(lines)


def make_row(spec: PackageSpec, *, instance_id: str, image: str, base_commit: str, patch: str,
             fail_to_pass: list[str], pass_to_pass: list[str], messages: dict[str, str], test_cmd: str,
             operators: list[str], seed: int) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "repo": f"pypi/{spec.name}",
        "version": spec.version,
        "base_commit": base_commit,
        "environment_setup_commit": base_commit,
        "image": image,
        "workdir": "/testbed",
        "patch": patch,
        "test_patch": "",
        "problem_statement": problem_statement(spec, fail_to_pass, messages),
        "hints_text": "",
        "created_at": "2026-12-07T00:00:00Z",
        "FAIL_TO_PASS": json.dumps(sorted(fail_to_pass)),
        "PASS_TO_PASS": json.dumps(sorted(pass_to_pass)),
        "test_cmd": test_cmd,
        "log_parser": "parse_log_pytest",
        "synth": {"operators": operators, "mutations": len(operators), "lines_changed": lines_changed(patch),
                  "seed": seed, "package": spec.name},
    }
