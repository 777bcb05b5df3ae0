"""Import rules of the layers, read from every module's syntax tree (nothing is imported).

- Only ``provenafs/fuse_ops.py`` imports pyfuse3.
- In the mount, only ``provenafs/s3.py`` imports boto3/botocore and only ``provenafs/api/``
  imports httpx (the local data store under ``provenafs/server/`` is the other half and picks
  its own libraries, pyfuse3 excepted).
- Nothing under ``provenafs/server/`` imports a mount module, and nothing outside it imports
  ``provenafs.server``, except ``provenafs/cli.py`` (the dispatcher), and only lazily inside a
  function.
- Every module starts with a docstring.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "provenafs"
MODULES = sorted(PACKAGE_ROOT.rglob("*.py"))


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int
    top_level: bool  # at module level (not inside a function or class body)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    top_level_nodes = {id(statement) for statement in tree.body}
    for statement in tree.body:  # imports under module-level if/try count as top level
        if isinstance(statement, ast.If | ast.Try):
            top_level_nodes.update(id(child) for child in ast.walk(statement))
    found: list[Import] = []
    for node in ast.walk(tree):
        top = id(node) in top_level_nodes
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.append(Import(target, node.lineno, top))
            # ``from provenafs import server`` names a submodule.
            found += [Import(f"{target}.{alias.name}", node.lineno, top) for alias in node.names]
    return found


def is_under(module: str, root: str) -> bool:
    return module == root or module.startswith(root + ".")


def relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE_ROOT.parent))


def _broken(rule: str, name: str, imported: Import) -> bool:
    """Whether module *name* importing *imported* breaks *rule*."""
    module = imported.module
    in_server = is_under(name, "provenafs.server")
    if rule == "pyfuse3":
        return is_under(module, "pyfuse3") and name != "provenafs.fuse_ops"
    if rule == "boto3":
        uses_boto = is_under(module, "boto3") or is_under(module, "botocore")
        return uses_boto and not in_server and name != "provenafs.storage.s3"
    if rule == "httpx":
        return is_under(module, "httpx") and not in_server and not is_under(name, "provenafs.api")
    if rule == "server" and in_server:
        return is_under(module, "provenafs") and not (
            is_under(module, "provenafs.server") or module == "provenafs"
        )
    if rule == "server":
        lazy_dispatch = name == "provenafs.cli" and not imported.top_level
        return is_under(module, "provenafs.server") and not lazy_dispatch
    raise AssertionError(rule)


def violations(rule: str) -> list[str]:
    found = set()
    for path in MODULES:
        name = module_name(path)
        for imported in imports_of(path):
            if _broken(rule, name, imported):
                found.add(f"{relative(path)}:{imported.line} imports {imported.module}")
    return sorted(found)


@pytest.mark.parametrize("rule", ["pyfuse3", "boto3", "httpx", "server"])
def test_import_rule(rule: str) -> None:
    assert violations(rule) == []


def test_the_rules_see_imports() -> None:
    """The walker finds what it must police (else every rule would pass vacuously)."""
    fuse_ops = PACKAGE_ROOT / "fuse_ops.py"
    assert any(imp.module == "pyfuse3" for imp in imports_of(fuse_ops))
    cli = [imp for imp in imports_of(PACKAGE_ROOT / "cli.py") if "server" in imp.module]
    assert cli and not any(imp.top_level for imp in cli)
    assert module_name(PACKAGE_ROOT / "api" / "__init__.py") == "provenafs.api"


def test_relative_imports_resolve() -> None:
    sample = PACKAGE_ROOT / "api" / "client.py"
    modules = {imp.module for imp in imports_of(sample)}
    assert "httpx" in modules
    assert any(is_under(m, "provenafs.api") for m in modules)


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_every_module_has_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstring = ast.get_docstring(tree)
    assert docstring and docstring.strip(), f"{relative(path)} has no module docstring"
