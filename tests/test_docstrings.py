"""Every public function, method and class of src/digitlab has a docstring (STYLE.md: "docstrings on
every module and public function"), and every module says in its first lines what it is.

Public: a name without a leading underscore, at module level or in a public class; nested functions
and dunder methods are not counted. `python tests/test_docstrings.py` prints the count per folder
and each name still missing one.

The classroom's modules are left out for now (LEFT_OUT): they are being rewritten beside this test, and
their missing docstrings are the coordinator's to finish; then LEFT_OUT is emptied.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "digitlab"
# Paths under src/digitlab, or the start of one ("serve/class_" leaves out every serve/class_*.py).
LEFT_OUT = ("serve/classroom.py", "serve/class_")


def left_out(relative: Path, modules=LEFT_OUT) -> bool:
    """Whether the module at `relative` (a path under src/digitlab) is one that `modules` leaves out."""
    return relative.as_posix().startswith(tuple(modules))


def public_definitions(path: Path):
    """(name, has_docstring) for each public function, method and class of the module at `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if not isinstance(node, kinds) or node.name.startswith("_"):
            continue
        yield node.name, ast.get_docstring(node) is not None
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, kinds) and not member.name.startswith("_"):
                    yield f"{node.name}.{member.name}", ast.get_docstring(member) is not None


def missing_docstrings(modules=LEFT_OUT) -> tuple[int, list[str]]:
    """How many public definitions src/digitlab has outside `modules`, and those without a docstring."""
    total, missing = 0, []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if left_out(relative, modules):
            continue
        for name, documented in public_definitions(path):
            total += 1
            if not documented:
                missing.append(f"{relative}: {name}")
    return total, missing


def test_every_public_function_has_a_docstring():
    total, missing = missing_docstrings()
    assert total > 300  # The walk found the package.
    assert not missing, f"{len(missing)} of {total} public definitions have no docstring:\n" + "\n".join(missing)


def test_every_module_opens_with_a_docstring():
    bare = [
        str(path.relative_to(SOURCE))
        for path in sorted(SOURCE.rglob("*.py"))
        if not left_out(path.relative_to(SOURCE)) and ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert not bare, f"modules without a docstring: {bare}"


if __name__ == "__main__":
    for modules, what in ((LEFT_OUT, "outside " + ", ".join(LEFT_OUT)), ((), "all of src/digitlab")):
        total, missing = missing_docstrings(modules)
        print(f"{what}: {len(missing)} of {total} public definitions without a docstring")
    print("\n".join(missing_docstrings(())[1]))
    sys.exit(0)
