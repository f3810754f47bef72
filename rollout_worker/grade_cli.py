"""`intercept-rl grade`: grade a saved SWE-bench test log offline, through the code path the container grader uses.

    intercept-rl grade --instance ROW.json --log LOG [--json]

ROW.json is one row in SWE-bench's schema: at least `instance_id`, `repo`, `version`, `FAIL_TO_PASS`, `PASS_TO_PASS`
(lists or JSON strings); `log_parser` (`parse_log_django` or `django`) and `eval_type` are optional. A JSONL file of
one row, or a rollout record whose `task` holds the row, is accepted too. LOG is the eval script's output as the
harness saves it (`test_output.txt`), or a rollout record (JSON) whose `details.eval_log` holds it.

Exit status: 0 resolved, 1 not resolved, 3 unscorable, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rollout_worker.environment.tasks import swebench as swb

EXIT_RESOLVED, EXIT_NOT_RESOLVED, EXIT_BAD_INPUT, EXIT_UNSCORABLE = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        print(f"intercept-rl grade: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="intercept-rl grade", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instance", type=Path, help="the row (JSON object, or a JSONL file of one row)")
    p.add_argument("--log", type=Path, help="the eval log (test_output.txt), or a rollout record holding it")
    p.add_argument("--json", action="store_true", help="print one JSON object: resolved, reason, tests")
    p.add_argument("--list-parsers", action="store_true", help="list swebench's parsers and the repositories "
                   "graded by default, then exit")
    return p


def _bad(message: str) -> int:
    print(f"intercept-rl grade: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _read_row(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        row = json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) != 1:
            raise swb.RowError(f"{path} is neither a JSON object nor a JSONL file of one row "
                               f"({len(lines)} non-empty lines)") from None
        row = json.loads(lines[0])
    if isinstance(row, dict) and isinstance(row.get("task"), dict):  # a rollout record: its task is the row
        row = row["task"]
    if not isinstance(row, dict):
        raise swb.RowError(f"{path} must hold one JSON object, got {type(row).__name__}")
    return row


def _read_log(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:1] == b"{":  # a rollout record keeps the log it was graded on
        try:
            record = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return data
        log = (record.get("details") or {}).get("eval_log") if isinstance(record, dict) else None
        if not isinstance(log, str):
            raise swb.RowError(f"{path} is JSON but holds no details.eval_log (a record graded in a container)")
        return log.encode("utf-8")
    return data


def _list_parsers() -> int:
    print("parsers (a row's log_parser, either spelling):", ", ".join(swb.parser_names()))
    print("repositories graded by default:")
    for repo, parser in sorted(swb.repositories_with_a_parser().items()):
        print(f"  {repo}: {parser}")
    print("any other repository: parse_log_pytest (SWE-Gym's repositories log pytest's -rA summary)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_parsers:
        return _list_parsers()
    if args.instance is None or args.log is None:
        return _bad("--instance ROW.json and --log LOG are both required (see --help)")
    for what, path in (("--instance", args.instance), ("--log", args.log)):
        if not path.is_file():
            return _bad(f"{what} {path}: no such file")
    try:
        row = swb.HarnessRow.from_row(_read_row(args.instance))
    except (swb.RowError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _bad(f"row {args.instance}: {exc}")
    try:
        log = _read_log(args.log)
    except swb.RowError as exc:
        return _bad(f"log {args.log}: {exc}")
    graded = swb.grade_log(log, row)
    if args.json:
        print(json.dumps(graded.as_json()))
    else:
        verdict = {True: "RESOLVED", False: "NOT RESOLVED", None: "UNSCORABLE"}[graded.resolved]
        print(f"{row.instance_id}: {verdict}" + (f" ({graded.reason})" if graded.reason else "")
              + f" [parser {row.log_parser}, {row.log_parser_source}]")
        for test, status in graded.tests.items():
            print(f"  {status:8} {test}")
    if graded.resolved is None:
        return EXIT_UNSCORABLE
    return EXIT_RESOLVED if graded.resolved else EXIT_NOT_RESOLVED
