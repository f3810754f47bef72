"""Procedural mutations of a package's source (issue #24, SWE-smith style): one AST node at a time, applied as a
minimal text edit (only the node's own span is rewritten, so the diff is the break and nothing else).

Operators (`OPERATORS`): `operator` (arithmetic/bitwise swaps), `comparison` (< ↔ <=, == ↔ !=, in ↔ not in, ...),
`boolean` (and ↔ or), `off_by_one` (an integer in an index, slice, range or comparison ± 1), `constant` (True ↔
False, other numbers changed), `invert_condition` (`if c` → `if not (c)`), `drop_condition` (one operand of an
and/or dropped), `drop_statement` (an assignment or call statement removed), `drop_branch` (an `if` block without
else removed), `swap_args` (the first two positional arguments of a call swapped), `remove_return` (`return x` →
`return None`). Docstrings, annotations, `if __name__ == ...` and `TYPE_CHECKING` blocks are never touched.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

OPERATORS = ("operator", "comparison", "boolean", "off_by_one", "constant", "invert_condition", "drop_condition",
             "drop_statement", "drop_branch", "swap_args", "remove_return")

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
               ast.Div: ast.Mult, ast.Mod: ast.FloorDiv, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
               ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.Pow: ast.Mult, ast.BitXor: ast.BitOr}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/", ast.Mod: "%",
           ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.Pow: "**", ast.BitXor: "^",
           ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
           ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}


@dataclass(frozen=True)
class Mutation:
    """One edit of one file: the lines `start..end` (1-based, inclusive) replaced by `new_lines`."""

    path: str
    operator: str
    start: int
    end: int
    new_lines: tuple[str, ...]
    function: str  # the enclosing def/class path, for spreading combined mutations

    @property
    def key(self) -> str:
        return f"{self.path}:{self.start}-{self.end}:{self.operator}:{hash(self.new_lines) & 0xFFFFFFFF:08x}"


def lines_of(source: str) -> list[str]:
    """The lines as the AST numbers them: split at '\n' only (`str.splitlines` also splits at form feeds and
    Unicode line separators, which would shift every line number after one)."""
    parts = source.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def apply(source: str, mutations: list[Mutation]) -> str:
    """`source` with the mutations (of one file, non-overlapping) applied, bottom-up so line numbers hold."""
    lines = lines_of(source)
    for m in sorted(mutations, key=lambda m: m.start, reverse=True):
        lines[m.start - 1:m.end] = list(m.new_lines)
    return "".join(lines)


def overlaps(a: Mutation, b: Mutation) -> bool:
    return a.path == b.path and not (a.end < b.start or b.end < a.start)


class _Walker(ast.NodeVisitor):
    """Collects candidate mutations of one module; `scope` tracks the enclosing def/class for `Mutation.function`."""

    def __init__(self, path: str, source: str, check: bool = True):
        self.path, self.source, self.check = path, source, check
        self.lines = lines_of(source)
        self.scope: list[str] = []
        self.found: list[Mutation] = []
        self.skip: set[int] = set()  # ids of nodes never mutated (docstrings, annotations)
        self.base_dump = ast.dump(ast.parse(source)) if check else ""

    # -- text edits ------------------------------------------------------------------------------------------------
    def _replace_expr(self, node: ast.AST, new: ast.AST, operator: str) -> None:
        """Rewrite the span of a one-line expression `node` with `new` unparsed."""
        if getattr(node, "lineno", None) is None or node.lineno != node.end_lineno:
            return
        line = self.lines[node.lineno - 1]
        raw = line.encode("utf-8")
        head, tail = raw[:node.col_offset].decode("utf-8"), raw[node.end_col_offset:].decode("utf-8")
        text = ast.unparse(new)
        if isinstance(new, (ast.BoolOp, ast.BinOp, ast.Compare, ast.IfExp, ast.UnaryOp)) and not _stands_alone(
                head, tail):
            text = f"({text})"  # parentheses never change an expression's meaning where it stands
        new_line = head + text + tail
        if new_line != line:
            self._add(operator, node.lineno, node.lineno, (new_line,))

    def _swap_between(self, a: ast.AST, b: ast.AST, old: str, new: str, operator: str) -> None:
        """Swap the operator token between the operands `a` and `b` (one line), leaving every other character."""
        if a.end_lineno != b.lineno or a.lineno != b.lineno:
            return
        line = self.lines[a.lineno - 1]
        raw = line.encode("utf-8")
        segment = raw[a.end_col_offset:b.col_offset].decode("utf-8")
        if " ".join(segment.strip(" ()\t").split()) != old:
            return
        core = segment.strip(" ()\t")
        new_line = (raw[:a.end_col_offset].decode("utf-8") + segment.replace(core, new, 1)
                    + raw[b.col_offset:].decode("utf-8"))
        self._add(operator, a.lineno, a.lineno, (new_line,))

    def _drop_lines(self, stmt: ast.stmt, body: list[ast.stmt], operator: str) -> None:
        """Remove a statement that owns its lines; `pass` keeps a body that would be empty valid."""
        first, last = self.lines[stmt.lineno - 1], self.lines[stmt.end_lineno - 1]
        raw_first = first.encode("utf-8")
        if raw_first[:stmt.col_offset].strip() or last.encode("utf-8")[stmt.end_col_offset:].strip() not in (b"",):
            if not last.encode("utf-8")[stmt.end_col_offset:].strip().startswith(b"#"):
                return
        indent = raw_first[:stmt.col_offset].decode("utf-8")
        keep = () if len(body) > 1 else (f"{indent}pass\n",)
        self._add(operator, stmt.lineno, stmt.end_lineno, keep)

    def _add(self, operator: str, start: int, end: int, new_lines: tuple[str, ...]) -> None:
        if self.check and not changes_code(self.source, self.base_dump,
                                           Mutation(self.path, operator, start, end, new_lines, "")):
            return
        self.found.append(Mutation(self.path, operator, start, end, new_lines, ".".join(self.scope) or "<module>"))

    # -- scopes and things never touched ---------------------------------------------------------------------------
    def _scoped(self, node: ast.AST, name: str) -> None:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.skip.add(id(body[0].value))
        for arg in ast.walk(getattr(node, "args", ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                                                               kw_defaults=[], defaults=[]))):
            if isinstance(arg, ast.arg) and arg.annotation is not None:
                self.skip.update(id(n) for n in ast.walk(arg.annotation))
        if getattr(node, "returns", None) is not None:
            self.skip.update(id(n) for n in ast.walk(node.returns))
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.skip.update(id(n) for n in ast.walk(node.annotation))
        self.generic_visit(node)

    def visit_Module(self, node: ast.Module) -> None:
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            self.skip.add(id(node.body[0].value))
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        if id(node) in self.skip:
            return
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                self._statements(body)
        super().generic_visit(node)

    # -- statements --------------------------------------------------------------------------------------------------
    def _statements(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Assign, ast.AugAssign)) or (
                    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
                self._drop_lines(stmt, body, "drop_statement")
            elif isinstance(stmt, ast.If) and not stmt.orelse and not _guard(stmt.test):
                self._drop_lines(stmt, body, "drop_branch")

    def visit_If(self, node: ast.If) -> None:
        if _guard(node.test):
            return
        self._condition(node.test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self._condition(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._condition(node.test)
        self.generic_visit(node)

    def _condition(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            self._replace_expr(test, test.operand, "invert_condition")
        else:
            self._replace_expr(test, ast.UnaryOp(op=ast.Not(), operand=test), "invert_condition")

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            line = self.lines[node.lineno - 1].encode("utf-8")
            if node.lineno == node.end_lineno and not line[:node.col_offset].strip():
                indent = line[:node.col_offset].decode("utf-8")
                self._add("remove_return", node.lineno, node.lineno, (f"{indent}return None\n",))
        self.generic_visit(node)

    # -- expressions ---------------------------------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BINOP_SWAP.get(type(node.op))
        if swap and not _is_string_format(node):
            self._swap_between(node.left, node.right, _SYMBOL[type(node.op)], _SYMBOL[swap], "operator")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            swaps = [_CMP_SWAP.get(type(op))] + ([ast.Gt if isinstance(op, ast.Lt) else ast.Lt]
                                                 if isinstance(op, (ast.Lt, ast.Gt)) else [])
            for swap in swaps:
                if swap:
                    self._swap_between(operands[i], operands[i + 1], _SYMBOL[type(op)], _SYMBOL[swap], "comparison")
        for comparator in [node.left, *node.comparators]:
            self._off_by_one(comparator)
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        for a, b in zip(node.values, node.values[1:]):
            self._swap_between(a, b, old, new, "boolean")
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1:]
            new = rest[0] if len(rest) == 1 else ast.BoolOp(op=node.op, values=rest)
            self._replace_expr(node, new, "drop_condition")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if id(node) not in self.skip:
            index = node.slice
            for part in (index.lower, index.upper) if isinstance(index, ast.Slice) else (index,):
                if part is not None:
                    self._off_by_one(part)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name in ("range", "islice", "enumerate"):
            for arg in node.args:
                self._off_by_one(arg)
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) == len(node.args) >= 2 and ast.dump(node.args[0]) != ast.dump(node.args[1]) and \
                name not in ("isinstance", "issubclass", "getattr", "setattr", "hasattr", "print", "super"):
            args = [node.args[1], node.args[0], *node.args[2:]]
            self._replace_expr(node, ast.Call(func=node.func, args=args, keywords=node.keywords), "swap_args")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) in self.skip:
            return
        value = node.value
        if isinstance(value, bool):
            self._replace_expr(node, ast.Constant(not value), "constant")
        elif isinstance(value, int) and value not in (0, 1) and abs(value) < 10**6:
            self._replace_expr(node, ast.Constant(value * 2), "constant")
        elif isinstance(value, float) and value not in (0.0,):
            self._replace_expr(node, ast.Constant(value / 2), "constant")

    def _off_by_one(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            for delta in (1, -1):
                self._replace_expr(node, ast.Constant(node.value + delta), "off_by_one")
        elif isinstance(node, (ast.Name, ast.Attribute, ast.Call)) and node.lineno == node.end_lineno:
            self._replace_expr(node, ast.BinOp(left=node, op=ast.Add(), right=ast.Constant(1)), "off_by_one")


def changes_code(source: str, base_dump: str, mutation: Mutation) -> bool:
    """Whether the mutation parses and changes the module's AST (`base_dump`: `ast.dump` of the original)."""
    try:
        return ast.dump(ast.parse(apply(source, [mutation]))) != base_dump
    except SyntaxError:
        return False


def _stands_alone(head: str, tail: str) -> bool:
    """Whether an expression between `head` and `tail` on its line is a whole clause (needs no parentheses)."""
    before, after = head.rstrip(), tail.lstrip()
    opens = before.endswith(("(", "[", ",", "{")) or before.split()[-1:] in (["if"], ["elif"], ["while"],
                                                                          ["return"], ["assert"], ["yield"])
    opens = opens or (before.endswith("=") and not before.endswith(("==", "!=", "<=", ">=")))
    return opens and (after == "" or after[0] in ":)],#")


def _guard(test: ast.expr) -> bool:
    """`if __name__ == '__main__'`, `if TYPE_CHECKING`, version checks: never mutated."""
    text = ast.unparse(test)
    return any(word in text for word in ("__name__", "TYPE_CHECKING", "sys.version_info", "PY2", "PY3", "sys.platform"))


def _is_string_format(node: ast.BinOp) -> bool:
    return isinstance(node.op, ast.Mod) and isinstance(node.left, (ast.Constant, ast.JoinedStr)) and \
        isinstance(getattr(node.left, "value", None), str)


def candidates(path: str, source: str, check: bool = True) -> list[Mutation]:
    """Every single mutation of one module, in source order (deduplicated by their edit). `check=False` leaves the
    parse check to the caller (`changes_code`, for the ones it uses: a large module has thousands of candidates)."""
    walker = _Walker(path, source, check)
    walker.visit(ast.parse(source))
    seen, out = set(), []
    for m in sorted(walker.found, key=lambda m: (m.start, m.end, m.operator, m.new_lines)):
        if (m.start, m.end, m.new_lines) not in seen:
            seen.add((m.start, m.end, m.new_lines))
            out.append(m)
    return out


def sample(pool: list[Mutation], count: int, rng: random.Random,
           ok: Callable[[Mutation], bool] | None = None) -> list[Mutation]:
    """`count` mutations spread over the operators: round-robin over operator buckets, each shuffled by `rng`; those
    `ok` refuses are skipped."""
    buckets: dict[str, list[Mutation]] = {}
    for m in pool:
        buckets.setdefault(m.operator, []).append(m)
    for name in sorted(buckets):
        rng.shuffle(buckets[name])
    order, chosen = sorted(buckets), []
    while len(chosen) < count and any(buckets.values()):
        for name in order:
            if buckets[name] and len(chosen) < count:
                m = buckets[name].pop()
                if ok is None or ok(m):
                    chosen.append(m)
    return chosen


def combine(kept: list[Mutation], count: int, rng: random.Random) -> Iterator[list[Mutation]]:
    """Up to `count` groups of 2-3 already-kept mutations in different functions, never overlapping."""
    tries = 0
    while count > 0 and tries < count * 20 and len(kept) >= 2:
        tries += 1
        size = rng.choice((2, 2, 3)) if len(kept) >= 3 else 2
        group = rng.sample(kept, size)
        if len({m.function for m in group}) < size or any(
                overlaps(a, b) for i, a in enumerate(group) for b in group[i + 1:]):
            continue
        count -= 1
        yield sorted(group, key=lambda m: (m.path, m.start))
