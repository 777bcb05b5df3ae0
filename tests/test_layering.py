"""Import rules of the layers, read from every module's syntax tree (nothing is imported).

- Each layer of the mount (one package, or one top-level module) imports only the layers
  ``MAY_IMPORT`` lists for it (and itself, and ``provenafs`` for its version): so ``read`` and
  ``write`` never import each other, nothing below ``process`` imports the FUSE adapter, and
  every module belongs to a layer (a new one must be placed here on purpose).
- Only ``provenafs/fuse_ops.py`` imports pyfuse3. In the mount, only ``provenafs/storage/s3.py``
  imports boto3/botocore and only ``provenafs/api/`` imports httpx (the local data store under
  ``provenafs/server/`` is the other half and picks its own libraries, pyfuse3 excepted).
- Nothing under ``provenafs/server/`` imports a mount module, and nothing outside it imports
  ``provenafs.server``, except ``provenafs/cli.py`` (the dispatcher), and only lazily inside a
  function.
- Every module starts with a docstring.

Imports inside functions and under ``if TYPE_CHECKING`` count like any other.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "provenafs"
MODULES = sorted(PACKAGE_ROOT.rglob("*.py"))

# Layer -> the other layers it may import. Bottom to top.
_MOUNT_BELOW_PROCESS = (
    "provenafs.fuse_ops",
    "provenafs.core",
    "provenafs.read",
    "provenafs.write",
    "provenafs.cache",
    "provenafs.storage",
    "provenafs.api",
    "provenafs.errors",
    "provenafs.mount_options",
)
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "provenafs.api": frozenset(),
    "provenafs.cache": frozenset(),
    "provenafs.mount_options": frozenset(),
    "provenafs.storage": frozenset({"provenafs.api", "provenafs.cache"}),
    "provenafs.errors": frozenset({"provenafs.api", "provenafs.storage"}),
    "provenafs.read": frozenset(
        {"provenafs.cache", "provenafs.storage", "provenafs.api", "provenafs.errors"}
    ),
    "provenafs.write": frozenset(
        {"provenafs.cache", "provenafs.storage", "provenafs.api", "provenafs.errors"}
    ),
    "provenafs.core": frozenset(
        {
            "provenafs.read",
            "provenafs.write",
            "provenafs.cache",
            "provenafs.storage",
            "provenafs.api",
            "provenafs.errors",
            "provenafs.mount_options",
        }
    ),
    "provenafs.fuse_ops": frozenset({"provenafs.core", "provenafs.errors"}),
    "provenafs.process": frozenset(_MOUNT_BELOW_PROCESS),
    "provenafs.cli": frozenset({"provenafs.process", "provenafs.server"}),
    "provenafs.__main__": frozenset({"provenafs.cli"}),
    "provenafs.server": frozenset(),
    # the mount harness of tests, benchmarks and the demo: it drives the mount from outside
    "provenafs.testing": frozenset(),
}
_ALWAYS = "provenafs"  # the root package: its docstring and __version__
_ROOT_NAMES = frozenset({_ALWAYS, "provenafs.__version__"})


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int
    top_level: bool  # at module level (not inside a function or class body)


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE_ROOT) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root)
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


def layer_of(module: str) -> str | None:
    """The layer *module* belongs to (the longest matching name), or None."""
    matches = [layer for layer in MAY_IMPORT if is_under(module, layer)]
    return max(matches, key=len) if matches else None


def layer_violations(graph: Mapping[str, Iterable[Import]]) -> list[str]:
    """Imports in *graph* (module -> what it imports) that cross a layer boundary not allowed
    by ``MAY_IMPORT``; and modules of provenafs that belong to no layer."""
    found = []
    for name, imported in graph.items():
        if name == _ALWAYS:
            continue
        own = layer_of(name)
        if own is None:
            found.append(f"{name} belongs to no layer (add it to MAY_IMPORT)")
            continue
        for each in imported:
            target = each.module
            if not is_under(target, "provenafs") or target in _ROOT_NAMES:
                continue
            other = layer_of(target)
            if other == own or (other is not None and other in MAY_IMPORT[own]):
                continue
            found.append(f"{name}:{each.line} ({own}) imports {target} ({other})")
    return sorted(found)


def import_graph(
    modules: Iterable[Path] = MODULES, root: Path = PACKAGE_ROOT
) -> dict[str, list[Import]]:
    return {module_name(path, root): imports_of(path, root) for path in modules}


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


def test_every_layer_imports_only_what_it_may() -> None:
    assert layer_violations(import_graph()) == []


def test_the_disk_cache_knows_nothing_of_blocks_or_datasets() -> None:
    """No blockcache <-> diskcache cycle: the disk tier takes opaque byte keys."""
    imported = [i.module for i in import_graph()["provenafs.cache.disk_cache"]]
    assert not [m for m in imported if is_under(m, "provenafs")]


@pytest.mark.parametrize("rule", ["pyfuse3", "boto3", "httpx", "server"])
def test_import_rule(rule: str) -> None:
    assert violations(rule) == []


# --- the checker itself: it must see a forbidden import, or every rule passes vacuously ----


@pytest.mark.parametrize(
    ("module", "imported"),
    [
        ("provenafs.read.reader", "provenafs.write.drafts"),  # read and write are apart
        ("provenafs.write.publish", "provenafs.read.reader"),
        ("provenafs.core.filesystem", "provenafs.fuse_ops"),  # below process: no FUSE adapter
        ("provenafs.write.drafts", "provenafs.core.catalog"),  # dependencies point down only
        ("provenafs.cache.disk_cache", "provenafs.storage.blobstore"),  # caches know no S3
        ("provenafs.core.catalog", "provenafs.server.app"),  # the mount imports no server code
        ("provenafs.server.app", "provenafs.core.catalog"),  # ... and the server no mount code
        ("provenafs.fuse_ops", "provenafs.process.daemon"),
    ],
)
def test_the_checker_refuses_a_forbidden_import(module: str, imported: str) -> None:
    graph = {module: [Import(imported, 7, top_level=True)]}
    assert layer_violations(graph) == [
        f"{module}:7 ({layer_of(module)}) imports {imported} ({layer_of(imported)})"
    ]


def test_the_checker_allows_imports_down_and_within_a_layer() -> None:
    graph = {
        "provenafs.core.filesystem": [
            Import("provenafs.core.catalog", 1, True),
            Import("provenafs.write.drafts", 2, True),
            Import("provenafs.read.reader", 3, True),
            Import("provenafs", 4, True),
            Import("trio", 5, True),
        ],
        "provenafs.process.daemon": [Import("provenafs.fuse_ops", 1, True)],
    }
    assert layer_violations(graph) == []


def test_the_checker_places_every_module(tmp_path: Path) -> None:
    """A module written into a layer package with a forbidden import is caught from its source;
    a module outside every layer is caught for that alone."""
    root = tmp_path / "provenafs"
    (root / "read").mkdir(parents=True)
    (root / "read" / "sneaky.py").write_text(
        '"""Reads."""\n\ndef f() -> None:\n    from provenafs.write import drafts\n'
    )
    (root / "grab_bag.py").write_text('"""Anything."""\n')
    graph = import_graph(sorted(root.rglob("*.py")), root)
    assert layer_violations(graph) == [
        "provenafs.grab_bag belongs to no layer (add it to MAY_IMPORT)",
        "provenafs.read.sneaky:4 (provenafs.read) imports provenafs.write (provenafs.write)",
        "provenafs.read.sneaky:4 (provenafs.read) imports provenafs.write.drafts (provenafs.write)",
    ]


def test_the_rules_see_imports() -> None:
    """The walker finds what it must police (else every rule would pass vacuously)."""
    fuse_ops = PACKAGE_ROOT / "fuse_ops.py"
    assert any(imp.module == "pyfuse3" for imp in imports_of(fuse_ops))
    cli = [imp for imp in imports_of(PACKAGE_ROOT / "cli.py") if "server" in imp.module]
    assert cli and not any(imp.top_level for imp in cli)
    assert module_name(PACKAGE_ROOT / "api" / "__init__.py") == "provenafs.api"
    graph = import_graph()
    assert any(is_under(i.module, "provenafs.write") for i in graph["provenafs.core.changes"])


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
