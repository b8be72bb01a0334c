"""Start-up: ``medxfer --help`` and ``medxfer list`` import neither torch, Lightning nor timm;
``import medxfer.metrics`` imports no backbone; the declared registry entries (listed without
importing their classes) are the classes they name. Checked by what a fresh process has in
``sys.modules``, not by timing (``benchmarks/startup.py`` times them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from medxfer.registry import Registry

#: Runs ``medxfer.cli.main(argv)`` and prints the heavy modules it left in ``sys.modules``.
RUN_MAIN = """
import sys
from medxfer.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:  # argparse's --help
    code = exit.code
print("HEAVY:" + ",".join(m for m in ("torch", "lightning", "timm") if m in sys.modules))
raise SystemExit(code)
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["--help"],
            ["fit", "validate", "test", "predict", "list", "synthesize", "prepare", "study"],
            id="help",
        ),
        pytest.param(["list", "tasks"], ["MultiLabelClassifier", "Segmenter"], id="list-tasks"),
        pytest.param(
            ["list", "datamodules"], ["ChestXrayDataModule", "ImageTable"], id="list-datamodules"
        ),
        pytest.param(
            ["list", "backbones"], ["bit-r50x1", "BiT-M-R50x1.npz", ".moco-v2"], id="list-backbones"
        ),
        pytest.param(["synthesize", "--help"], ["cxr", "mammo"], id="synthesize-help"),
    ],
)
def test_light_commands_import_no_torch_lightning_or_timm(
    argv: list[str], expected: list[str]
) -> None:
    out = _python(RUN_MAIN, *argv)
    assert out.returncode == 0, out.stderr[-3000:]
    *printed, heavy = out.stdout.splitlines()
    assert heavy == "HEAVY:", f"medxfer {' '.join(argv)} imported {heavy[6:]}"
    for word in expected:
        assert word in "\n".join(printed)


def test_no_command_prints_the_commands_and_fails() -> None:
    out = _python(RUN_MAIN)
    assert out.returncode == 2
    assert "a command is required" in out.stderr and "synthesize" in out.stderr


def test_metrics_import_no_backbone() -> None:
    out = _python(
        "import sys, medxfer.metrics; "
        "print([m for m in ('timm', 'medxfer.backbones') if m in sys.modules])"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("package", "registry", "some"),
    [
        pytest.param("tasks", "TASKS", {"TransferTask", "Segmenter"}, id="tasks"),
        pytest.param(
            "datamodules", "DATAMODULES", {"ChestXrayDataModule", "ImageTable"}, id="datamodules"
        ),
    ],
)
def test_declared_entries_are_the_classes_they_name(
    package: str, registry: str, some: set[str]
) -> None:
    """Each built-in entry names its class's defining module (so that the class registering
    itself completes the declaration), and its description is where the class's docstring
    starts (so the listing cannot drift from the docs)."""
    import importlib

    module = importlib.import_module(f"medxfer.{package}")
    declared = [e for e in getattr(module, registry) if e.target is not None]
    assert some <= {e.name for e in declared}
    for entry in declared:
        cls = getattr(module, entry.name)
        assert entry.obj is cls
        assert entry.target == f"{cls.__module__}:{cls.__qualname__}"
        first_paragraph = " ".join(cls.__doc__.strip().split("\n\n")[0].split())
        assert first_paragraph.startswith(entry.description), entry.name


@pytest.fixture
def demo_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two importable modules: a registry declaring ``Widget``, and the module defining it,
    which registers it when imported (as a modality registers its datamodule)."""
    prefix = f"startup_demo_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{prefix}_registry.py").write_text(
        textwrap.dedent(f"""
        from medxfer.registry import Registry
        REG = Registry("widget", group="medxfer.no-such-group")
        REG.declare("Widget", "{prefix}_widget:Widget", description="A widget.", size=3)
        """)
    )
    (tmp_path / f"{prefix}_widget.py").write_text(
        textwrap.dedent(f"""
        from {prefix}_registry import REG

        @REG.register()
        class Widget:
            '''A widget, described by its docstring.'''
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return prefix


def test_declared_entry_is_imported_on_get_and_completed_silently(demo_modules: str) -> None:
    import importlib

    reg: Registry = importlib.import_module(f"{demo_modules}_registry").REG
    widget_module = f"{demo_modules}_widget"
    entry = reg.entry("Widget")
    assert reg.names() == ["Widget"] and "Widget" in reg
    assert (entry.description, entry.metadata, entry.loaded) == ("A widget.", {"size": 3}, False)
    assert widget_module not in sys.modules  # listed, not imported
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own registration is not "registered twice"
        cls = reg.get("Widget")
    assert cls is sys.modules[widget_module].Widget
    assert reg.entry("Widget").loaded and reg.entry("Widget").description == "A widget."


def test_another_object_under_a_declared_name_warns_and_wins() -> None:
    reg: Registry = Registry("widget", group="medxfer.no-such-group")
    reg.declare("join", "os.path:join", description="Join path parts.")

    def join() -> None:
        """Another join."""

    with pytest.warns(UserWarning, match="registered twice"):
        reg.add("join", join)
    assert reg.get("join") is join and reg.entry("join").description == "Another join."


def test_a_malformed_target_is_refused() -> None:
    reg: Registry = Registry("widget", group="medxfer.no-such-group")
    reg.declare("x", "os.path.join", description="no colon")
    with pytest.raises(ValueError, match=r"'os\.path\.join' is not of the form"):
        reg.get("x")
