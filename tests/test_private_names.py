"""Only the compatibility modules (``*_compat.py``) name other libraries' private names.

Everything else in the project uses public names only, so a library release that renames
or drops an internal breaks one compatibility module, whose own tests name the installed
version, and nothing else. The check reads the source of every room (``poolflow``'s own
modules, ``runners``, ``tasks``, ``flows``, ``deployments``) and of ``bench``, and flags:

- an import of a private name or module of another package (``from prefect.x import _y``,
  ``import prefect._internal``);
- a private attribute of an imported module (``prefect.settings._y``), apart from the
  documented standard-library functions in ``DOCUMENTED``;
- a private attribute read from any other object, unless the project defines that name
  itself (an attribute of one of its own classes);
- ``getattr``/``setattr``/``hasattr`` with a private name on anything but ``self``;
- Prefect's private environment variables (``PREFECT__...``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("runners", "tasks", "flows", "deployments", "bench")
LOOKUPS = ("getattr", "setattr", "hasattr", "delattr")
DOCUMENTED = {("os", "_exit"), ("sys", "_current_frames"), ("sys", "_getframe")}
"""Standard-library functions with a leading underscore that Python documents as public."""


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def project_sources() -> list[Path]:
    """Every Python file of the project but the compatibility modules and the tests."""
    files = sorted((ROOT / "poolflow").glob("*.py"))
    for room in ROOMS:
        files += sorted((ROOT / room).rglob("*.py"))
    return [path for path in files if not path.name.endswith("_compat.py")]


def own_private_names(trees: list[ast.Module]) -> set[str]:
    """The private names the project defines: functions, classes, assigned names and
    assigned attributes."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)  # assignments, annotated ones (dataclass fields) included
    return {name for name in names if _private(name)}


def _imported_modules(tree: ast.Module) -> dict[str, str]:
    """Local name -> module, for ``import x.y [as z]`` of other packages."""
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("poolflow"):
                    top = alias.name.split(".")[0]
                    modules[alias.asname or top] = alias.name if alias.asname else top
    return modules


def violations(tree: ast.Module, own: set[str]) -> Iterator[tuple[int, str]]:
    """(line, what) for every use of another library's private name in ``tree``."""
    modules = _imported_modules(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("poolflow"):
                continue
            if any(_private(part) for part in node.module.split(".")):
                yield node.lineno, f"imports private module {node.module}"
            for alias in node.names:
                if _private(alias.name):
                    yield node.lineno, f"imports {alias.name} from {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(part) for part in alias.name.split(".")):
                    yield node.lineno, f"imports private module {alias.name}"
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = ast.unparse(node.value)
            module = modules.get(base)
            if module is not None:
                if (module, node.attr) not in DOCUMENTED:
                    yield node.lineno, f"reads {node.attr} of module {module}"
            elif base not in ("self", "cls") and node.attr not in own:
                yield node.lineno, f"reads {base}.{node.attr}, which the project does not define"
        elif isinstance(node, ast.Call) and (name := _private_name_looked_up(node)) is not None:
            yield node.lineno, f"looks up private name {name}"
        elif isinstance(node, ast.Constant) and str(node.value).startswith("PREFECT__"):
            yield node.lineno, f"names Prefect's private environment variable {node.value}"


def _private_name_looked_up(call: ast.Call) -> str | None:
    """The private name a ``getattr``-like call looks up on anything but ``self``, if any."""
    if not isinstance(call.func, ast.Name) or call.func.id not in LOOKUPS:
        return None
    if len(call.args) < 2 or ast.unparse(call.args[0]) == "self":
        return None
    name = call.args[1]
    if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
        return name.value
    return None


def test_only_compatibility_modules_name_other_libraries_private_names() -> None:
    sources = project_sources()
    assert len(sources) > 50 and any(path.name == "multiprocessing_runner.py" for path in sources)
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sources}
    own = own_private_names(list(trees.values()))
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path, tree in trees.items()
        for line, what in violations(tree, own)
    ]
    assert not found, "private names outside the *_compat.py modules:\n" + "\n".join(found)


def test_the_check_finds_each_kind_of_private_use() -> None:
    source = """
import os
import prefect.settings as ps
import prefect._internal.compat
from prefect.utilities import _helper
from prefect._internal import concurrency
os._exit(0)
ps._secret
state._hidden_field
getattr(state, "_other_field")
state._ours
env = {"PREFECT__SERVER_EPHEMERAL": "1"}
"""
    found = list(violations(ast.parse(source), own={"_ours"}))
    assert sorted(line for line, _ in found) == [4, 5, 6, 8, 9, 10, 12], found
