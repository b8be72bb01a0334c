"""``medxfer list backbones``: the weights folder it reads (and how to move it) and, for every
named weight source, whether its file is there -- checked against files placed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from medxfer.commands.listing import main


def _lines(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert main(["backbones", *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_list_backbones_shows_the_weights_folder_and_which_files_are_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "BiT-M-R50x1.npz").write_bytes(b"")
    (tmp_path / "BiT-S-R50x1.npz").mkdir()  # a folder of that name is not the file
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "resnet18.safetensors").write_bytes(b"")
    lines = _lines(capsys, "bit-r50x1")
    assert lines[0] == f"weights folder: {tmp_path}"
    assert lines[1] == "  (set by $MEDXFER_WEIGHTS_DIR); 1 of 2 named weight files present there"
    bit_s = next(line for line in lines if ".bit-s" in line).split()
    bit_m = next(line for line in lines if ".bit-m" in line).split()
    assert bit_s[:3] == [".bit-s", "BiT-S-R50x1.npz", "absent"]
    assert bit_m[:3] == [".bit-m", "BiT-M-R50x1.npz", "present"]
    assert lines[-1].split() == [
        ".timm",
        f"{tmp_path / 'timm'}/<name>.safetensors:",
        "resnet18.safetensors",
    ]


def test_list_backbones_names_the_default_folder_and_how_to_change_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MEDXFER_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    lines = _lines(capsys, "resnet50")
    default = tmp_path / ".cache" / "medxfer" / "weights"
    assert lines[0] == f"weights folder: {default} (does not exist yet)"
    assert lines[1] == (
        "  (the default; set $MEDXFER_WEIGHTS_DIR to read weights from another folder); "
        "0 of 23 named weight files present there"
    )
    assert sum(" absent " in line for line in lines) == 23
    assert lines[-1].endswith("<name>.safetensors: none present")


def test_list_backbones_groups_sources_by_pre_training_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path))
    lines = [line.strip() for line in _lines(capsys, "resnet50")]
    headers = [line for line in lines if line.startswith("[")]
    assert headers == [
        "[supervised]",
        "[contrastive instance discrimination]",
        "[clustering]",
        "[redundancy reduction / distillation]",
        "[in-domain / domain-adaptive medical]",
    ]

    def group(source: str) -> str:  # the header above a source's line
        at = next(i for i, line in enumerate(lines) if line.startswith(f".{source} "))
        return next(line for line in reversed(lines[:at]) if line.startswith("["))

    assert group("inat2021") == "[supervised]"
    assert group("pirl") == group("pcl-v2") == "[contrastive instance discrimination]"
    assert group("sela-v2") == "[clustering]"
    assert group("byol") == "[redundancy reduction / distillation]"
    assert group("imagenet-mimic") == group("chexpert") == "[in-domain / domain-adaptive medical]"
    byol = next(line for line in lines if line.startswith(".byol "))
    assert byol.endswith("; medxfer convert byol)")
