"""Start-up: ``medxfer --help`` and ``medxfer list`` import neither torch, Lightning nor timm;
``import medxfer.metrics`` imports no backbone; the entry points medxfer declares (listed without
importing their classes) are the classes they name. Checked by what a fresh process has in
``sys.modules``, not by timing (``benchmarks/startup.py`` times them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medxfer.registry import Registry

#: Runs ``medxfer.commands.main(argv)`` and prints the heavy modules it left in ``sys.modules``.
RUN_MAIN = """
import sys
from medxfer.commands import main
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
        pytest.param(["list", "readers"], ["grey", "dicom", "mammogram"], id="list-readers"),
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


#: medxfer's built-in plug-ins, written out by hand (the entry points must declare exactly these).
BUILT_IN = {
    "tasks": {
        "TransferTask",
        "MultiLabelClassifier",
        "CaseClassifier",
        "MultiViewClassifier",
        "Segmenter",
    },
    "datamodules": {
        "ChestXrayDataModule",
        "DermatologyDataModule",
        "ImageTable",
        "MammographyDataModule",
        "NaturalImageDataModule",
        "SegmentationDataModule",
    },
    "readers": {"grey", "rgb", "dicom", "mammogram", "cifar"},
}


@pytest.mark.parametrize("kind", sorted(BUILT_IN))
def test_each_entry_point_is_the_object_it_names(kind: str) -> None:
    """One declaration per plug-in: medxfer's own entry points name their classes by class name
    (what a config's ``class_path`` writes) and load the task / datamodule classes; image
    readers load decoders with their output version (mammography's and DICOM's are 2)."""
    from medxfer.data.images import output_version
    from medxfer.datamodules import MedxferDataModule
    from medxfer.plugins import declared, load
    from medxfer.tasks import TransferTask

    own = {n for n, ep in declared(kind).items() if ep.value.startswith("medxfer.")}
    assert own == BUILT_IN[kind]
    for name in own:
        obj = load(kind, name)
        if kind == "readers":
            assert callable(obj)
            assert output_version(name) == (2 if name in ("dicom", "mammogram") else 1)
        else:
            base = {"tasks": TransferTask, "datamodules": MedxferDataModule}[kind]
            assert obj.__name__ == name and issubclass(obj, base)


def test_an_unknown_plugin_name_lists_close_ones() -> None:
    from medxfer.errors import UnknownNameError
    from medxfer.plugins import load

    with pytest.raises(
        UnknownNameError,
        match=r"unknown datamodule 'ChestXray'\. Close names: ChestXrayDataModule\.",
    ):
        load("datamodules", "ChestXray")


def test_a_backbone_registered_twice_warns_and_the_later_wins() -> None:
    reg: Registry = Registry("widget", group="medxfer.no-such-group")

    def join() -> None:
        """A join."""

    def other() -> None:
        """Another join."""

    reg.add("join", join)
    with pytest.warns(UserWarning, match="registered twice"):
        reg.add("join", other)
    assert reg.get("join") is other and reg.entry("join").description == "Another join."
