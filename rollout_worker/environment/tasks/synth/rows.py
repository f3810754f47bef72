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
from rollout_worker.environment.tasks.synth.mutate import lines_of

MAX_LISTED_FAILURES = 5
MAX_MESSAGE_CHARS = 240


def _range(start: int, stop: int) -> str:
    length = stop - start
    return f"{start + 1}" if length == 1 else f"{start + (length > 0)},{length}"


def _line(mark: str, line: str) -> str:
    return mark + line if line.endswith("\n") else f"{mark}{line}\n\\ No newline at end of file\n"


def revert_patch(mutated: dict[str, str], original: dict[str, str]) -> str:
    """A `git apply`-able diff turning the mutated files back into the originals (paths relative to /testbed).
    Lines split at '\n' only, and no junk heuristic (`difflib.unified_diff`'s can make a one-token change a
    300-line hunk in a long file)."""
    out = []
    for path in sorted(original):
        a, b = lines_of(mutated[path]), lines_of(original[path])
        if a == b:
            continue
        out += [f"diff --git a/{path} b/{path}\n", f"--- a/{path}\n", f"+++ b/{path}\n"]
        for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3):
            out.append(f"@@ -{_range(group[0][1], group[-1][2])} +{_range(group[0][3], group[-1][4])} @@\n")
            for tag, i1, i2, j1, j2 in group:
                if tag == "equal":
                    out += [_line(" ", line) for line in a[i1:i2]]
                    continue
                out += [_line("-", line) for line in a[i1:i2]] if tag in ("replace", "delete") else []
                out += [_line("+", line) for line in b[j1:j2]] if tag in ("replace", "insert") else []
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
