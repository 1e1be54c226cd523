"""Flags asserts that cannot fail: `assert x` (or `assert not x`) where `x` is an object that
is always true (an instance of one of our classes with neither `__bool__` nor `__len__`, such
as a dataclass or an Enum): a call returning one, or a name bound from such a call in the same
function.

`assert job` after `[job] = await queue.claim(...)` passes whatever the job holds; the test
meant `assert job.held` or `assert job == ...`. mypy's `truthy-bool` catches this only where
the types are known, and test fixtures are untyped, so this reads the annotations of our own
code by name instead: a call to `claim` is judged by every `def claim` in the tree, and
flagged only when all of them return such an object (or a list/tuple of them, for unpacking).
A return that may be `None` is not flagged: there `assert x` is a real check.

Usage: python scripts/check_asserts.py [PATH ...]   (default: tests). Exit 1 when any found.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("relay", "quota", "reputation", "tests")
# Bases that add no __bool__/__len__: instances of a class built on these alone are true.
_PLAIN_BASES = {"object", "Enum", "Exception", "Protocol", "ABC", "Generic"}
_CONTAINERS = {"list", "tuple", "Sequence", "Iterable", "Iterator", "set", "frozenset"}


def _python_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*.py") if ".venv" not in p.parts)


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Subscript):
        return _base_name(node.value)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return "?"


class Index:
    """Classes whose instances are always true, and the return annotation of every def."""

    def __init__(self, files: list[Path]) -> None:
        bases: dict[str, list[str]] = {}
        truthiness: set[str] = set()
        self.returns: dict[str, list[ast.expr | None]] = defaultdict(list)
        self.local: dict[tuple[Path, str], list[ast.expr | None]] = defaultdict(list)
        for path in files:
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    bases[node.name] = [_base_name(b) for b in node.bases]
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name in (
                            "__bool__",
                            "__len__",
                        ):
                            truthiness.add(node.name)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.returns[node.name].append(node.returns)
                    self.local[path.resolve(), node.name].append(node.returns)
        self.always_true: set[str] = set()
        changed = True
        while changed:  # a class is always true when all its bases are plain or always true
            changed = False
            for name, its_bases in bases.items():
                if name in self.always_true or name in truthiness:
                    continue
                if all(b in _PLAIN_BASES or b in self.always_true for b in its_bases):
                    self.always_true.add(name)
                    changed = True

    def _object(self, annotation: ast.expr | None, element: bool) -> str | None:
        """The always-true class this annotation names (its element's, when unpacked)."""
        if annotation is None:
            return None
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            annotation = ast.parse(annotation.value, mode="eval").body
        if element:
            if isinstance(annotation, ast.Subscript) and _base_name(annotation) in _CONTAINERS:
                inner = annotation.slice
                if isinstance(inner, ast.Tuple):  # tuple[A, ...] or tuple[A, B]: all alike
                    names = {self._object(e, False) for e in inner.elts if not _is_ellipsis(e)}
                    return names.pop() if len(names) == 1 else None
                return self._object(inner, False)
            return None
        if isinstance(annotation, ast.Name | ast.Attribute):
            name = _base_name(annotation)
            return name if name in self.always_true else None
        return None  # unions (X | None), subscripts, anything else: may be false

    def result_of(self, call: ast.expr, element: bool, path: Path) -> str | None:
        if isinstance(call, ast.Await):
            call = call.value
        if isinstance(call, ast.GeneratorExp | ast.ListComp) and element:
            return self.result_of(call.elt, False, path)
        if not isinstance(call, ast.Call):
            return None
        callee = _base_name(call.func)
        if not element and callee in self.always_true:
            return callee  # a constructor
        # A helper of the same file answers for its name; else every def of that name does.
        returns = self.local.get((path.resolve(), callee)) or self.returns.get(callee)
        if not returns:
            return None
        if element:  # only a container can be unpacked: other defs of the name are not it
            returns = [r for r in returns if _is_container(r)]
        kinds = {self._object(r, element) for r in returns}
        return kinds.pop() if len(kinds) == 1 else None


def _is_container(annotation: ast.expr | None) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    return isinstance(annotation, ast.Subscript) and _base_name(annotation) in _CONTAINERS


def _is_ellipsis(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def _bindings(
    target: ast.expr, value: ast.expr, index: Index, path: Path
) -> Iterator[tuple[str, str]]:
    if isinstance(target, ast.Name):
        kind = index.result_of(value, False, path)
        if kind:
            yield target.id, kind
    elif isinstance(target, ast.Tuple | ast.List):
        kind = index.result_of(value, True, path)
        for elt in target.elts:
            if isinstance(elt, ast.Name) and kind:
                yield elt.id, kind


def find(paths: list[Path], index: Index) -> list[str]:
    found = []
    for path in _python_files(paths):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            bound: dict[str, str] = {}
            for node in _in_order(func):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        for name in _names(target):
                            bound.pop(name, None)
                        bound.update(_bindings(target, node.value, index, path))
                elif isinstance(node, ast.Assert):
                    test, verdict = node.test, "cannot fail"
                    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                        test, verdict = test.operand, "cannot pass"
                    if isinstance(test, ast.Name):
                        kind = bound.get(test.id)
                    else:
                        kind = index.result_of(test, False, path)
                    if kind:
                        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                        found.append(
                            f"{where}:{node.lineno}: `assert {ast.unparse(node.test)}` {verdict}:"
                            f" it is a {kind}, which is always true; assert what it should hold"
                        )
    return found


def _names(target: ast.expr) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


def _in_order(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """The function's statements in source order, nested functions excluded."""
    out: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            out.append(child)
            visit(child)

    visit(func)
    return out


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [ROOT / "tests"]
    index = Index(
        sorted({p.resolve() for p in _python_files([*(ROOT / s for s in SOURCES), *paths])})
    )
    found = find(paths, index)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
