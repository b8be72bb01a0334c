"""The one-way layers of DESIGN.md, read from the source tree's import graph (``ast``, every
``import`` and ``from ... import`` anywhere in a module, function-local and ``TYPE_CHECKING``
ones included):

* a library module never imports ``medxfer.commands`` (commands sit on top);
* the core (``medxfer/`` outside the commands) imports no datamodule or task package: a modality
  reaches it through entry points only;
* ``medxfer.metrics`` imports no backbone, task or datamodule;
* ``medxfer.backbones`` imports no task or datamodule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Where each package's source lives (``[tool.setuptools.package-dir]`` of pyproject.toml).
PACKAGE_DIRS = {
    "medxfer": ROOT / "medxfer",
    "medxfer.backbones": ROOT / "backbones",
    "medxfer.tasks": ROOT / "tasks",
    "medxfer.datamodules": ROOT / "datamodules",
}

#: The rule that applies to the core alone (not to backbones, tasks, datamodules, commands).
_CORE_RULE = "the core imports no modality"

#: (importer prefix, importer exemption, forbidden import prefixes, why).
RULES: list[tuple[str, str | None, tuple[str, ...], str]] = [
    ("medxfer", "medxfer.commands", ("medxfer.commands",), "commands sit on top of the library"),
    (
        "medxfer",
        "medxfer.commands",
        ("medxfer.datamodules", "medxfer.tasks"),
        _CORE_RULE,
    ),
    (
        "medxfer.metrics",
        None,
        ("medxfer.backbones", "medxfer.tasks", "medxfer.datamodules"),
        "metrics import no model or data code",
    ),
    (
        "medxfer.backbones",
        None,
        ("medxfer.tasks", "medxfer.datamodules"),
        "backbones import no task or datamodule",
    ),
]

#: Packages with their own rules, not part of the "core" of the first two rules; ``python -m
#: medxfer`` (``medxfer.__main__``) is the command line's entry, part of the commands layer.
_NOT_CORE = (
    "medxfer.backbones",
    "medxfer.tasks",
    "medxfer.datamodules",
    "medxfer.commands",
    "medxfer.__main__",
)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def modules(dirs: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    """``(module name, file)`` of every source file under the package folders ``dirs``."""
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path


def imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` of every import statement of a module (relative imports
    resolved against its package)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from medxfer import commands` imports a module
                yield f"{target}.{alias.name}", node.lineno


def violations(dirs: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Every import that breaks one of :data:`RULES`, as ``file:line: module imports target
    (why)``, files relative to ``root``."""
    found: dict[tuple[str, int], str] = {}  # one report per import statement
    for module, path in modules(dirs):
        for importer, exempt, forbidden, why in RULES:
            if not _within(module, importer) or (exempt and _within(module, exempt)):
                continue
            if _within(module, "medxfer.__main__"):
                continue
            core_rule = why == _CORE_RULE  # applies to the core only
            if core_rule and any(_within(module, p) for p in _NOT_CORE):
                continue
            for target, line in imports(module, path):
                where = str(path.relative_to(root))
                if any(_within(target, f) for f in forbidden) and (where, line) not in found:
                    found[where, line] = f"{where}:{line}: {module} imports {target} ({why})"
    return sorted(found.values())


def test_the_source_tree_keeps_the_one_way_rules() -> None:
    assert violations(PACKAGE_DIRS) == []


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        pytest.param(
            "medxfer/data/cache.py",
            "from medxfer.commands.common import CommandParser",
            "commands sit on top",
            id="library-imports-a-command",
        ),
        pytest.param(
            "medxfer/callbacks/base.py",
            "    import medxfer.datamodules.chest_xray",
            "the core imports no modality",
            id="core-imports-a-modality-in-a-function",
        ),
        pytest.param(
            "medxfer/metrics/cka.py",
            "from medxfer.backbones import stage_names",
            "metrics import no model",
            id="metrics-import-a-backbone",
        ),
        pytest.param(
            "datamodules/base.py",
            "from medxfer.commands.common import CommandParser",
            "commands sit on top",
            id="datamodule-imports-a-command",
        ),
        pytest.param(
            "backbones/weights.py",
            "from ..commands import common",
            "commands sit on top",
            id="backbone-imports-a-command-relatively",
        ),
        pytest.param(
            "tasks/base.py",
            "from medxfer import commands",
            "commands sit on top",
            id="task-imports-the-commands-package",
        ),
        pytest.param(
            "backbones/weights.py",
            "from ..tasks import TransferTask",
            "backbones import no task",
            id="backbones-import-a-task-relatively",
        ),
    ],
)
def test_a_forbidden_import_is_reported(module: str, source: str, why: str, tmp_path: Path) -> None:
    """The checker on a copy of the tree with one forbidden import added: exactly that import
    is reported, with its file and line."""
    dirs: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        copy = tmp_path / folder.name
        for path in folder.rglob("*.py"):
            (copy / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(folder)).write_text(path.read_text())
        dirs[package] = copy
    target = tmp_path / module
    text = target.read_text()
    if source.startswith(" "):
        text += f"\n\ndef _added() -> None:\n{source}\n"
    else:
        text += f"\n{source}\n"
    target.write_text(text)
    line = len(text.rstrip("\n").splitlines())
    found = violations(dirs, tmp_path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{module}:{line}: ") and why in found[0]
