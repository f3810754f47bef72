"""The mutation operators of task synthesis (issue #24), one by one on a small module: each makes the edit it
names and nothing else, the result parses, docstrings / annotations / `__main__` guards are never touched; the
sampling is reproducible from its seed and combinations never overlap."""

from __future__ import annotations

import ast
import difflib
import random

from rollout_worker.environment.tasks.synth import mutate

SOURCE = '''\
"""Module docstring: 1 < 2 and True."""
import sys


def clamp(x: int, lo: int = 0, hi: int = 10) -> int:
    """Limit x to [lo, hi]."""
    if x < lo and lo <= hi:
        return lo
    if x > hi:
        return hi
    return x


def window(xs, n):
    out = []
    for i in range(len(xs) - n + 1):
        out.append(xs[i:i + n])
    total = sum(len(w) for w in out) * 2
    flag = True
    return out if flag else total


def pair(a, b):
    return divmod(a, b)


if __name__ == "__main__":
    print(clamp(int(sys.argv[1])))
'''


def _edits(operator: str) -> list[tuple[str, str]]:
    """(original line(s), mutated line(s)) of every candidate of `operator`."""
    out = []
    for m in mutate.candidates("m.py", SOURCE):
        if m.operator != operator:
            continue
        mutated = mutate.apply(SOURCE, [m])
        ast.parse(mutated)  # every mutant parses
        assert mutated != SOURCE
        old = "".join(SOURCE.splitlines(keepends=True)[m.start - 1:m.end])
        out.append((old.strip(), "".join(m.new_lines).strip()))
    return out


def test_every_operator_finds_something_and_makes_its_own_edit():
    found = {m.operator for m in mutate.candidates("m.py", SOURCE)}
    assert found == set(mutate.OPERATORS)
    assert ("if x > hi:", "if x >= hi:") in _edits("comparison")
    assert ("if x > hi:", "if x < hi:") in _edits("comparison")
    assert ("total = sum(len(w) for w in out) * 2", "total = sum(len(w) for w in out) // 2") in _edits("operator")
    assert ("if x < lo and lo <= hi:", "if x < lo or lo <= hi:") in _edits("boolean")
    assert ("if x < lo and lo <= hi:", "if x < lo:") in _edits("drop_condition")
    assert ("if x > hi:", "if not x > hi:") in _edits("invert_condition")
    assert ("return out if flag else total", "return out if (not flag) else total") in _edits("invert_condition")
    assert ("out.append(xs[i:i + n])", "out.append(xs[i + 1:i + n])") in _edits("off_by_one")
    assert ("if x > hi:", "if x > (hi + 1):") in _edits("off_by_one")
    assert ("flag = True", "flag = False") in _edits("constant")
    assert ("total = sum(len(w) for w in out) * 2", "total = sum(len(w) for w in out) * 4") in _edits("constant")
    assert ("return divmod(a, b)", "return divmod(b, a)") in _edits("swap_args")
    assert ("return hi", "return None") in _edits("remove_return")
    assert ("flag = True", "") in _edits("drop_statement")
    assert ("out.append(xs[i:i + n])", "pass") in _edits("drop_statement")  # an emptied body keeps `pass`
    assert ("if x > hi:\n        return hi", "") in _edits("drop_branch")


def test_docstrings_annotations_and_guards_are_never_touched():
    for m in mutate.candidates("m.py", SOURCE):
        touched = range(m.start, m.end + 1)
        assert 1 not in touched and 6 not in touched  # the docstrings
        assert not any(n >= 27 for n in touched)  # the `if __name__ == "__main__":` block
        if m.start == 5:  # the def line: a default may change, its annotations never
            assert m.operator == "constant" and "x: int" in m.new_lines[0] and "-> int:" in m.new_lines[0], m


def test_sampling_is_reproducible_and_spread_over_operators():
    pool = mutate.candidates("m.py", SOURCE)
    first = mutate.sample(pool, 11, random.Random(7))
    assert first == mutate.sample(pool, 11, random.Random(7))
    assert {m.operator for m in first} == set(mutate.OPERATORS)  # round-robin: one of each first
    assert mutate.sample(pool, 11, random.Random(8)) != first


def test_combinations_are_two_or_three_non_overlapping_edits_in_different_functions():
    pool = [m for m in mutate.candidates("m.py", SOURCE) if m.function in ("clamp", "window", "pair")]
    groups = list(mutate.combine(pool, 20, random.Random(3)))
    assert groups and all(2 <= len(g) <= 3 for g in groups)
    for group in groups:
        assert len({m.function for m in group}) == len(group)
        assert not any(mutate.overlaps(a, b) for i, a in enumerate(group) for b in group[i + 1:])
        mutated = mutate.apply(SOURCE, group)
        ast.parse(mutated)
        assert sum(1 for a, b in zip(SOURCE.splitlines(), mutated.splitlines()) if a != b) >= 1


def test_line_numbers_hold_after_form_feeds_and_unicode_line_separators():
    source = 'x = 1\n\x0c\n"""a\u2028b"""\nif x > 0:\n    y = x + 1\n'
    assert mutate.lines_of(source)[3] == "if x > 0:\n" and mutate.lines_of("a\nb") == ["a\n", "b"]
    for m in mutate.candidates("m.py", source):  # each edit touches its own statement's lines, nothing else
        diff = [d for d in difflib.ndiff(source.split("\n"), mutate.apply(source, [m]).split("\n")) if d[:1] in "+-"]
        assert 1 <= len(diff) <= 4 and all("a\u2028b" not in d for d in diff), (m, diff)
