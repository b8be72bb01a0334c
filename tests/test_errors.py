"""The error surface of the ``medxfer`` command: every expected failure -- a bad table, image,
weight file, config key, cache, or a missing file -- in every subcommand exits with status 2
and one line ``medxfer: error: ...`` naming the file / line / column or key, without a
traceback (``--debug`` shows it). Each case runs the command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
CXR = "data/synthetic/chexpert/CheXpert-v1.0-synthetic"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/tiny.yaml's data (synthetic CheXpert and NIH layouts) in a fresh folder."""
    work = tmp_path_factory.mktemp("errors")
    write_synthetic_chexpert(work / "data/synthetic/chexpert", n_patients=30, size=32, seed=0)
    write_synthetic_nih(work / "data/synthetic/nih", n_patients=8, size=32, seed=1)
    return work


def medxfer(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDXFER_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "medxfer", *args],
        cwd=cwd,
        env=dict(env, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def edited_table(work: Path, name: str, edit: Callable[[list[str]], list[str]]) -> str:
    """A copy of the synthetic CheXpert train.csv, beside it (image paths stay valid), with
    ``edit`` applied to its lines; returns its path relative to ``work``."""
    lines = (work / CXR / "train.csv").read_text().splitlines()
    (work / CXR / name).write_text("\n".join(edit(lines)) + "\n")
    return f"{CXR}/{name}"


def truncate_row(lines: list[str]) -> list[str]:
    """Line 3 cut to its first 10 of 19 fields."""
    return [*lines[:2], ",".join(lines[2].split(",")[:10]), *lines[3:]]


def bad_unused_label(lines: list[str]) -> list[str]:
    """Fracture (a label tiny.yaml does not use) = 2.0 on line 4."""
    fields = lines[3].split(",")
    fields[lines[0].split(",").index("Fracture")] = "2.0"
    return [*lines[:3], ",".join(fields), *lines[4:]]


def repeat_row(lines: list[str]) -> list[str]:
    """Line 2 again as line 6 (the same image twice)."""
    return [*lines[:5], lines[1], *lines[5:]]


def set_field(column: str, value: str) -> Callable[[list[str]], list[str]]:
    """Set ``column`` to ``value`` on line 3."""

    def edit(lines: list[str]) -> list[str]:
        fields = lines[2].split(",")
        fields[lines[0].split(",").index(column)] = value
        return [*lines[:2], ",".join(fields), *lines[3:]]

    return edit


def table_case(name: str, edit: Callable[[list[str]], list[str]]) -> Callable[[Path], list[str]]:
    return lambda w: [f"--data.init_args.train.csv={edited_table(w, name, edit)}"]


def resnet34_weights(work: Path) -> list[str]:
    """ResNet-34 weights for the config's ResNet-18: 96 tensors it has no place for."""
    import timm
    import torch

    torch.save(timm.create_model("resnet34").state_dict(), work / "resnet34.pth")
    return [f"--model.init_args.pretrained={work / 'resnet34.pth'}"]


def corrupt_first_image(work: Path) -> list[str]:
    """A table whose first image is not a JPEG (a truncated file), checked at setup."""
    lines = (work / CXR / "train.csv").read_text().splitlines()
    image = lines[1].split(",")[0]
    bad = image.replace(".jpg", "_corrupt.jpg")
    (work / "data/synthetic/chexpert" / bad).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    lines[1] = lines[1].replace(image, bad)
    (work / CXR / "corrupt.csv").write_text("\n".join(lines) + "\n")
    return [f"--data.init_args.train.csv={CXR}/corrupt.csv"]


def garbage_weights(work: Path) -> list[str]:
    """A weight file that is not one (a few bytes of text)."""
    (work / "garbage.pth").write_bytes(b"not a checkpoint")
    return [f"--model.init_args.pretrained={work / 'garbage.pth'}"]


# (case id, arguments after `fit -c tiny.yaml`, fragments the error line must contain,
#  preparation of the bad input in the work folder or None)
FIT_CASES: list[tuple[str, list[str], list[str], Callable[[Path], list[str]] | None]] = [
    (
        "truncated-row",
        [],
        ["truncated.csv", "line 3"],
        lambda w: [f"--data.init_args.train.csv={edited_table(w, 'truncated.csv', truncate_row)}"],
    ),
    (
        "bad-value-unused-column",
        [],
        ["unused.csv", "line 4", "Fracture"],
        lambda w: [f"--data.init_args.train.csv={edited_table(w, 'unused.csv', bad_unused_label)}"],
    ),
    (
        "missing-table",
        ["--data.init_args.train.csv=data/nowhere/train.csv"],
        ["data/nowhere/train.csv"],
        None,
    ),
    (
        "corrupt-image",
        ["--data.init_args.verify_images=true"],
        ["_corrupt.jpg"],
        corrupt_first_image,
    ),
    (
        "weights-not-a-weight-file",
        [],
        ["garbage.pth"],
        garbage_weights,
    ),
    (
        "weights-missing-file",
        ["--model.init_args.pretrained=weights/none.pth"],
        ["weights/none.pth"],
        None,
    ),
    (
        "repeated-row",
        [],
        ["repeated.csv", "lines 2, 6"],
        table_case("repeated.csv", repeat_row),
    ),
    (
        "negative-age",
        [],
        ["age.csv", "line 3", "Age"],
        table_case("age.csv", set_field("Age", "-4")),
    ),
    (
        "unknown-sex",
        [],
        ["sex.csv", "line 3", "Sex", "'X'"],
        table_case("sex.csv", set_field("Sex", "X")),
    ),
    ("weights-of-another-architecture", [], ["resnet34.pth", "96"], resnet34_weights),
    ("unknown-option", ["--model.init_args.lrr=0.1"], ["model", "'lrr'"], None),
    ("wrong-type", ["--data.init_args.batch_size=abc"], ["batch_size", "abc"], None),
    ("unknown-backbone", ["--model.init_args.backbone=resnet5O"], ["resnet5O"], None),
    ("unknown-timm-model", ["--model.init_args.backbone=timm/resnet1"], ["resnet1"], None),
    (
        "unknown-weight-source",
        ["--model.init_args.backbone=resnet50.mocov9"],
        ["mocov9", "moco-v2"],
        None,
    ),
    ("missing-cache", ["--data.init_args.cache=cache/none.h5"], ["cache/none.h5"], None),
]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragments: list[str]) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("medxfer: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize(
    ("args", "fragments", "prepare"),
    [pytest.param(a, f, p, id=i) for i, a, f, p in FIT_CASES],
)
def test_fit_reports_bad_input_in_one_line(
    work: Path,
    args: list[str],
    fragments: list[str],
    prepare: Callable[[Path], list[str]] | None,
) -> None:
    extra = prepare(work) if prepare else []
    proc = medxfer(["fit", "-c", TINY, "--trainer.max_steps=1", *args, *extra], work)
    assert_one_line_error(proc, fragments)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(["fit", "-c", "nowhere.yaml"], ["nowhere.yaml"], id="fit-missing-config"),
        pytest.param(["prepare", "-c", "nowhere.yaml", "c.h5"], ["nowhere.yaml"], id="prepare"),
        pytest.param(["prepare", "-c", TINY], ["required: out"], id="prepare-usage"),
        pytest.param(["list", "backbone"], ["invalid choice: 'backbone'"], id="list-usage"),
        pytest.param(
            ["study", "-c", "nowhere.yaml", "--out", "s", "--name", "x"],
            ["nowhere.yaml"],
            id="study",
        ),
        pytest.param(["report", "no_study_here"], ["no_study_here"], id="report"),
        pytest.param(["validate", "-c", TINY, "--ckpt_path=none.ckpt"], ["none.ckpt"], id="ckpt"),
    ],
)
def test_every_subcommand_reports_bad_input_in_one_line(
    work: Path, args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(medxfer(args, work), fragments)


def test_debug_shows_the_traceback(work: Path) -> None:
    proc = medxfer(["fit", "-c", TINY, "--model.init_args.backbone=resnet5O", "--debug"], work)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UnknownNameError" in proc.stderr


def test_summaries_at_info_unless_quiet(work: Path) -> None:
    """Split sizes and the label space are shown by default; ``--quiet`` keeps warnings only
    (both runs stop at the same config error after the data are read)."""
    args = ["fit", "-c", TINY, "--model.init_args.backbone=resnet5O"]
    loud, quiet = medxfer(args, work), medxfer([*args, "--quiet"], work)
    assert "medxfer: chexpert train: " in loud.stderr
    assert "label space (5)" in loud.stderr
    assert "label space" not in quiet.stderr and "chexpert train" not in quiet.stderr
    assert quiet.returncode == loud.returncode == 2


# --- ux cases ---
UX_CASES = [
    pytest.param(
        ["predict", "-c", TINY], ["predict needs --ckpt_path"], id="predict-no-checkpoint"
    ),
]


@pytest.mark.parametrize(("args", "fragments"), UX_CASES)
def test_ux_commands_report_bad_input_in_one_line(
    work: Path, args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(medxfer(args, work), fragments)
