"""Every public function, method and class of src/digitlab has a docstring (STYLE.md: "docstrings on
every module and public function"), and every module says in its first lines what it is.

Public: a name without a leading underscore, at module level or in a public class; nested functions
and dunder methods are not counted. `python tests/test_docstrings.py` prints the count and each name
still missing one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "digitlab"


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


def missing_docstrings() -> tuple[int, list[str]]:
    """How many public definitions src/digitlab has, and those without a docstring."""
    total, missing = 0, []
    for path in sorted(SOURCE.rglob("*.py")):
        for name, documented in public_definitions(path):
            total += 1
            if not documented:
                missing.append(f"{path.relative_to(SOURCE)}: {name}")
    return total, missing


def test_every_public_function_has_a_docstring():
    total, missing = missing_docstrings()
    assert total > 300  # The walk found the package.
    assert not missing, f"{len(missing)} of {total} public definitions have no docstring:\n" + "\n".join(missing)


def test_every_module_opens_with_a_docstring():
    bare = [
        str(path.relative_to(SOURCE))
        for path in sorted(SOURCE.rglob("*.py"))
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert not bare, f"modules without a docstring: {bare}"


if __name__ == "__main__":
    total, missing = missing_docstrings()
    print(f"src/digitlab: {len(missing)} of {total} public definitions without a docstring")
    print("\n".join(missing))
    sys.exit(0)
