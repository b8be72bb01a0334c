"""The error surface of the ``medxfer`` command: every expected failure -- a bad table, image,
weight file, config key, cache, or a missing file -- in every subcommand exits with status 2
and one line ``medxfer: error: ...`` naming the file / line / column or key, without a
traceback (``--debug`` shows it). Each case runs the command in a subprocess, as a user would."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

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


# --- labels cases: data options ---
# Data options validated where they are read: one line naming the key and the allowed range
# (the other options and bounds, in process: tests/datamodules/test_data_options.py).
OPTION_CASES: list[tuple[str, list[str], list[str], None]] = [
    ("batch-size-zero", ["--data.init_args.batch_size=0"], ["batch_size=0", ">= 1"], None),
    ("image-size-zero", ["--data.init_args.image_size=0"], ["image_size=0", ">= 1"], None),
    (
        "train-fraction-above-1",
        ["--data.init_args.train_fraction=1.5"],
        ["train_fraction=1.5", "(0, 1]"],
        None,
    ),
]


# --- weights cases ---
# Issue 25: weight files that are not weights, images a grey reader cannot read faithfully and
# tables whose message blamed the wrong thing; each was a traceback, silent or misleading.
# int64 weights take the NaN case's path (tests/backbones/test_backbones.py covers both).


def weight_file(name: str, write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """``write`` a weight file ``name`` into the work folder and pass it as ``pretrained``."""

    def prepare(work: Path) -> list[str]:
        write(work / name)
        return [f"--model.init_args.pretrained={work / name}"]

    return prepare


def nan_resnet18(path: Path) -> None:
    """The config's timm/resnet18 weights with every floating-point value NaN."""
    import timm
    import torch

    state = timm.create_model("resnet18", num_classes=0).state_dict()
    torch.save(
        {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path
    )


def truncated_npz(path: Path) -> None:
    import numpy as np

    np.savez(path, **{f"w{k}": np.ones((64, 64), np.float32) for k in range(4)})
    path.write_bytes(path.read_bytes()[:5000])


def first_image_as(name: str, write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A table whose first image is replaced by ``write``'s file (named ``..._<name>``), with
    ``verify_images`` so that every image is decoded at setup."""

    def prepare(work: Path) -> list[str]:
        lines = (work / CXR / "train.csv").read_text().splitlines()
        image = lines[1].split(",")[0]
        bad = image.replace(".jpg", f"_{name}")
        write(work / "data/synthetic/chexpert" / bad)
        lines[1] = lines[1].replace(image, bad)
        (work / CXR / f"{name}.csv").write_text("\n".join(lines) + "\n")
        return [
            f"--data.init_args.train.csv={CXR}/{name}.csv",
            "--data.init_args.verify_images=true",
        ]

    return prepare


def pil_image(mode: str, size: tuple[int, int], transparent: int = 0) -> Callable[[Path], None]:
    """An image of ``mode`` and ``size``, grey 90; the first ``transparent`` pixels of an RGBA
    image transparent."""

    def write(path: Path) -> None:
        from PIL import Image

        img = Image.new(mode, size, (90,) * len(mode) if mode != "L" else 90)
        if mode == "RGBA":
            img.putalpha(255)
            for k in range(transparent):
                img.putpixel((k, 0), (90, 90, 90, 0))
        img.save(path)

    return write


def header_only(lines: list[str]) -> list[str]:
    return lines[:1]


def repeat_row_other_sex(lines: list[str]) -> list[str]:
    """Line 2 again as line 6, with the other Sex."""
    fields = lines[1].split(",")
    sex = lines[0].split(",").index("Sex")
    fields[sex] = "Male" if fields[sex] == "Female" else "Female"
    return [*lines[:5], ",".join(fields), *lines[5:]]


WEIGHTS_CASES: list[tuple[str, list[str], list[str], Callable[[Path], list[str]] | None]] = [
    (
        "weights-text-safetensors",
        [],
        ["notes.safetensors: not a valid .safetensors file"],
        weight_file("notes.safetensors", lambda p: p.write_text("download link: ...\n")),
    ),
    (
        "weights-truncated-npz",
        [],
        ["cut.npz: not a valid .npz file"],
        weight_file("cut.npz", truncated_npz),
    ),
    (
        "weights-directory",
        [],
        ["weights_folder is a directory, not a file"],
        weight_file("weights_folder", lambda p: p.mkdir(exist_ok=True)),
    ),
    (
        "weights-all-nan",
        [],
        ["nan.pth: tensor 'conv1.weight' holds 9408 NaN", "100 non-finite tensor(s) of 120"],
        weight_file("nan.pth", nan_resnet18),
    ),
    (
        "table-header-only",
        [],
        ["header.csv: the table has no rows (only its header"],
        table_case("header.csv", header_only),
    ),
    (
        "repeated-row-that-differs",
        [],
        ["differ.csv: lines 2, 6 hold the same image", "the copies differ in column(s) 'Sex'"],
        table_case("differ.csv", repeat_row_other_sex),
    ),
    (
        "image-one-pixel",
        [],
        ["_dot.png", "is 1x1 pixels, under the 8-pixel minimum side"],
        first_image_as("dot.png", pil_image("L", (1, 1))),
    ),
    (
        "image-transparent",
        [],
        ["_alpha.png", "has 3 transparent pixel(s) of 1024"],
        first_image_as("alpha.png", pil_image("RGBA", (32, 32), transparent=3)),
    ),
    (
        "image-cmyk",
        [],
        ["_cmyk.jpg", "is CMYK"],
        first_image_as("cmyk.jpg", pil_image("CMYK", (32, 32))),
    ),
]


@pytest.mark.parametrize(
    ("args", "fragments", "prepare"),
    [pytest.param(a, f, p, id=i) for i, a, f, p in [*FIT_CASES, *OPTION_CASES, *WEIGHTS_CASES]],
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
        pytest.param(["study", "run", "nowhere.yaml"], ["nowhere.yaml"], id="study"),
        pytest.param(
            ["study", "-c", TINY, "--out", "s", "--name", "x"],
            ["medxfer study takes a study file"],
            id="study-old-form",
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


# --- seg cases ---
SEG_DEMO = str(REPO / "configs" / "seg_demo.yaml")


@pytest.fixture(scope="module")
def seg_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic Montgomery (32 px) and SIIM-ACR (32 px) layouts in a fresh folder."""
    from medxfer.datamodules.segmentation import write_synthetic_montgomery, write_synthetic_siim

    work = tmp_path_factory.mktemp("seg_errors")
    write_synthetic_montgomery(work / "mont", 10, size=32, seed=0)
    write_synthetic_siim(work / "siim", 8, size=32, seed=0)
    return work


def half_size_mask(work: Path) -> list[str]:
    """A copy of the Montgomery folder whose first left-lung mask is 16 x 16 (its image 32)."""
    import shutil

    import numpy as np
    from PIL import Image

    shutil.copytree(work / "mont", work / "mont_half", dirs_exist_ok=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(
        work / "mont_half/ManualMask/leftMask/MCUCXR_0001_0.png"
    )
    return ["--data.init_args.train=mont_half"]


def missing_dicom(work: Path) -> list[str]:
    """A copy of the SIIM folder without the DICOM of the table's first row (line 2)."""
    import shutil

    shutil.copytree(work / "siim", work / "siim_part", dirs_exist_ok=True)
    first = (work / "siim_part/train-rle.csv").read_text().splitlines()[1].split(",")[0]
    next((work / "siim_part").rglob(f"{first}.dcm")).unlink()
    (work / "first_missing.txt").write_text(first)
    return [
        "--data.init_args.layout=siim",
        "--data.init_args.train=siim_part/train-rle.csv",
        "--data.init_args.dicom_root=siim_part",
        "--data.init_args.rle_encoding=relative",
    ]


# (case id, arguments after `fit -c seg_demo.yaml`, fragments of the error line, preparation)
SEG_CASES: list[tuple[str, list[str], list[str], Callable[[Path], list[str]]]] = [
    (
        "seg-half-size-mask-verified",
        ["--data.init_args.verify_images=true", "--data.init_args.num_workers=0"],
        ["leftMask/MCUCXR_0001_0.png", "is 16x16", "CXR_png/MCUCXR_0001_0.png is 32x32"],
        half_size_mask,
    ),
    (
        "seg-half-size-mask-in-a-worker",
        ["--data.init_args.num_workers=1"],
        ["leftMask/MCUCXR_0001_0.png", "is 16x16", "CXR_png/MCUCXR_0001_0.png is 32x32"],
        half_size_mask,
    ),
    (
        "siim-missing-dicom",
        ["--data.init_args.num_workers=0"],
        ["train-rle.csv, line 2", "skip_missing_images: true"],
        missing_dicom,
    ),
]


@pytest.mark.parametrize(
    ("args", "fragments", "prepare"), [pytest.param(a, f, p, id=i) for i, a, f, p in SEG_CASES]
)
def test_segmentation_bad_input_in_one_line(
    seg_work: Path, args: list[str], fragments: list[str], prepare: Callable[[Path], list[str]]
) -> None:
    extra = prepare(seg_work)
    settings = [
        "--trainer.max_steps=1",
        "--data.init_args.image_size=32",
        "--data.init_args.split=[0.5, 0.25, 0.25]",
    ]
    proc = medxfer(["fit", "-c", SEG_DEMO, *settings, *extra, *args], seg_work)
    assert_one_line_error(proc, fragments)
    if prepare is missing_dicom:  # the line names the first missing file
        assert f"{(seg_work / 'first_missing.txt').read_text()}.dcm" in proc.stderr


# --- labels cases ---
@pytest.fixture(scope="module")
def covid_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/image_table_demo.yaml's table layout (synthetic), for the ImageTable cases."""
    from medxfer.datamodules.image_table import write_synthetic_table

    return write_synthetic_table(tmp_path_factory.mktemp("table"), n_patients=20, size=32)


# (case id, arguments after `fit -c image_table_demo.yaml --data.init_args.train=<table>`,
#  fragments the error line must contain)
TABLE_LABELS_CASES: list[tuple[str, list[str], list[str]]] = [
    (
        "where-missing-column",
        ["--data.init_args.where={site: [a]}"],
        ["metadata.csv", "where", "'site'"],
    ),
    (
        "other-folds-a-finding",
        ["--data.init_args.target=findings", "--data.init_args.other=covid"],
        ["other='covid'", "finding of the training split", "other: Other"],
    ),
    (
        "declared-class-without-training-case",
        ["--data.init_args.labels=[normal, pneumonia, covid, lipoid]"],
        ["'lipoid'", "no positive case in the training split", "drop_empty_labels"],
    ),
]


@pytest.mark.parametrize(
    ("args", "fragments"), [pytest.param(a, f, id=i) for i, a, f in TABLE_LABELS_CASES]
)
def test_image_table_label_errors_in_one_line(
    covid_table: Path, args: list[str], fragments: list[str]
) -> None:
    config = str(REPO / "configs" / "image_table_demo.yaml")
    base = [f"--data.init_args.train={covid_table}", "--data.init_args.shifted=null"]
    proc = medxfer(["fit", "-c", config, "--trainer.max_steps=1", *base, *args], covid_table.parent)
    assert_one_line_error(proc, fragments)


# --- reliab cases ---
def yaml_with_repeated_key(work: Path) -> tuple[str, list[str]]:
    """tiny.yaml with ``lr`` written twice under ``model.init_args``; the fragments name the
    file, the dotted key and both physical lines (found in the text written)."""
    text = Path(TINY).read_text().replace("    lr: 0.01\n", "    lr: 0.01\n    lr: 0.5\n")
    (work / "twice.yaml").write_text(text)
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if line.strip().startswith("lr:")]
    assert len(lines) == 2
    return "twice.yaml", ["twice.yaml", "'model.init_args.lr'", f"lines {lines[0]} and {lines[1]}"]


def yaml_with_syntax_error(work: Path) -> tuple[str, list[str]]:
    """A config whose line 3 is indented under a scalar (a mapping where none may start)."""
    (work / "broken.yaml").write_text("trainer:\n  max_steps: 1\n   devices: 1\n")
    return "broken.yaml", ["broken.yaml", "line 3", "YAML syntax error"]


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(yaml_with_repeated_key, id="repeated-key"),
        pytest.param(yaml_with_syntax_error, id="syntax-error"),
    ],
)
def test_yaml_config_errors_name_the_file(
    work: Path, prepare: Callable[[Path], tuple[str, list[str]]]
) -> None:
    config, fragments = prepare(work)
    assert_one_line_error(medxfer(["fit", "-c", config], work), fragments)


def test_mistyped_command_lists_every_command(work: Path) -> None:
    proc = medxfer(["fitt"], work)
    names = ["fit", "validate", "test", "predict", "list", "synthesize", "prepare", "study"]
    assert_one_line_error(proc, ["'fitt'", "did you mean 'fit'?", *names, "report", "export"])


def text_checkpoint(work: Path) -> list[str]:
    """A text file named like a checkpoint."""
    (work / "notes.ckpt").write_text("epoch 3 looked best\n")
    return ["validate", "-c", TINY, "--ckpt_path=notes.ckpt"]


def truncated_checkpoint(work: Path) -> list[str]:
    """The first half of a real torch.save archive (a copy cut short)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(64)}}, buffer)
    (work / "cut.ckpt").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return ["test", "-c", TINY, "--ckpt_path=cut.ckpt"]


def resume_of_another_task(work: Path) -> list[str]:
    """A run folder holding tiny.yaml's config and a ``last.ckpt`` of another model (a
    Lightning-layout checkpoint of timm's test_resnet, keys under ``model.``)."""
    import timm
    import torch

    run = work / "other_task_run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    import yaml

    config = yaml.safe_load(Path(TINY).read_text())
    config["trainer"].pop("default_root_dir")
    config["trainer"]["logger"] = False
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    other = timm.create_model("test_resnet", num_classes=3).state_dict()
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in other.items()}, "global_step": 1},
        run / "checkpoints" / "last.ckpt",
    )
    return ["fit", "--resume", "other_task_run"]


@pytest.mark.parametrize(
    ("prepare", "fragments"),
    [
        pytest.param(text_checkpoint, ["notes.ckpt", "not a checkpoint"], id="text-ckpt"),
        pytest.param(truncated_checkpoint, ["cut.ckpt", "not a checkpoint"], id="truncated-ckpt"),
        pytest.param(
            resume_of_another_task,
            [
                "other_task_run/checkpoints/last.ckpt",
                "not a checkpoint of this MultiLabelClassifier",
            ],
            id="resume-another-task",
        ),
    ],
)
def test_unusable_checkpoint_is_named(
    work: Path, prepare: Callable[[Path], list[str]], fragments: list[str]
) -> None:
    assert_one_line_error(medxfer(prepare(work), work), fragments)


def test_second_fit_into_a_locked_run_folder(work: Path) -> None:
    """A run folder another fit holds (an ``flock`` taken here, as a running fit holds it) is
    refused in one line naming the folder and the holder's PID."""
    import fcntl

    from medxfer.checkpointing import RunFolderLock

    folder = work / "busy_run"
    folder.mkdir(exist_ok=True)
    with open(RunFolderLock(folder).path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        args = ["--trainer.logger=false", "--trainer.default_root_dir=busy_run"]
        proc = medxfer(["fit", "-c", TINY, "--trainer.max_steps=1", *args], work)
    assert_one_line_error(proc, ["busy_run", "in use by another medxfer fit", str(os.getpid())])


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param('{"test/chexpert/auroc_mean": 0.7', ["not a complete JSON"], id="truncated"),
        pytest.param(
            '{"test/chexpert/auroc_mean": "0.7x"}',
            ["'test/chexpert/auroc_mean' is not a number", "0.7x"],
            id="non-numeric",
        ),
    ],
)
def test_report_names_an_unreadable_results_file(
    work: Path, content: str, fragments: list[str]
) -> None:
    results = work / "bad_study" / "cfg" / "seed0" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(content)
    proc = medxfer(["report", "bad_study"], work)
    assert_one_line_error(proc, ["bad_study/cfg/seed0/results.json", *fragments])


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


# --- zoo ---
def _zoo_text_pickle(work: Path) -> list[str]:
    (work / "notes.pkl").write_text("not a pickle\n")
    return ["convert", "byol", "notes.pkl", "byol.safetensors"]


def _zoo_no_experiment_state(work: Path) -> list[str]:
    import pickle

    (work / "other.pkl").write_bytes(pickle.dumps({"step": 3, "params": {}}))
    return ["convert", "byol", "other.pkl", "byol.safetensors"]


def _zoo_simclr_missing_variable(work: Path) -> list[str]:
    import numpy as np

    np.savez(work / "simclr.npz", **{"base_model/conv2d/kernel": np.zeros((7, 7, 3, 8))})
    return ["convert", "simclr", "simclr.npz", "simclr.safetensors"]


def _zoo_tensorflow_checkpoint(work: Path) -> list[str]:
    (work / "model.ckpt-225206.index").write_bytes(b"")
    return ["convert", "simclr", "model.ckpt-225206", "simclr.safetensors"]


ZOO_CASES = [
    pytest.param(_zoo_text_pickle, ["notes.pkl", "not a readable BYOL"], id="byol-not-a-pickle"),
    pytest.param(
        _zoo_no_experiment_state, ["other.pkl", "no key 'experiment_state'"], id="byol-no-state"
    ),
    pytest.param(
        _zoo_simclr_missing_variable,
        ["simclr.npz", "missing variable base_model/batch_normalization/gamma"],
        id="simclr-missing-variable",
    ),
    pytest.param(
        _zoo_tensorflow_checkpoint,
        ["model.ckpt-225206", "pip install tensorflow-cpu"],
        id="simclr-without-tensorflow",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("tensorflow") is not None,
            reason="TensorFlow is installed: the checkpoint reader exists",
        ),
    ),
]


@pytest.mark.parametrize(("make", "fragments"), ZOO_CASES)
def test_convert_reports_bad_releases_in_one_line(
    work: Path, make: Callable[[Path], list[str]], fragments: list[str]
) -> None:
    assert_one_line_error(medxfer(make(work), work), fragments)


# --- fairness ---
# The fairness options of the analysis callbacks, checked when the callback is built.
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            [
                "--trainer.callbacks+=medxfer.callbacks.SubgroupCallback",
                "--trainer.callbacks.specificity=1.5",
            ],
            ["SubgroupCallback", "specificity", "1.5", "[0, 1]"],
            id="specificity-above-1",
        ),
    ],
)
def test_fairness_options_in_one_line(work: Path, args: list[str], fragments: list[str]) -> None:
    proc = medxfer(["fit", "-c", TINY, "--trainer.max_steps=1", *args], work)
    assert_one_line_error(proc, fragments)


# --- protocol ---
# The benchmark protocol's options that contradict the rest of a config (ten-crop on cases of
# several images, a warm-up before ReduceLROnPlateau); choices are checked by the parser.
def derm_with_ten_crop(work: Path) -> list[str]:
    """Ten-crop asked of multi-image dermatology cases (it averages one image's crops)."""
    from medxfer.datamodules.dermatology import write_synthetic_derm

    table = write_synthetic_derm(work / "data/protocol_derm", n_cases=12, size=16, seed=0)
    return ["-c", str(REPO / "configs" / "derm_demo.yaml"), f"--data.init_args.train={table}"]


PROTOCOL_CASES = [
    pytest.param(
        ["-c", TINY, "--model.init_args.schedule=plateau"],
        ["schedule 'plateau' has no warm-up", "warmup_steps: 0"],
        None,
        id="plateau-with-warm-up",
    ),
    pytest.param(
        ["--data.init_args.ten_crop=true"],
        ["ten_crop=true", "DermatologyDataModule", "single-image"],
        derm_with_ten_crop,
        id="ten-crop-multi-image",
    ),
]


@pytest.mark.parametrize(("args", "fragments", "prepare"), PROTOCOL_CASES)
def test_protocol_options_report_bad_input_in_one_line(
    work: Path,
    args: list[str],
    fragments: list[str],
    prepare: Callable[[Path], list[str]] | None,
) -> None:
    extra = prepare(work) if prepare else []
    proc = medxfer(["fit", *extra, *args, "--trainer.max_steps=1"], work)
    assert_one_line_error(proc, fragments)


# --- study ---
def study_file(work: Path, stem: str, **change: object) -> str:
    """A study file over configs/tiny.yaml (two runs, init a / b) with ``change`` applied."""
    body = {
        "out": f"studies/{stem}",
        "base": [TINY],
        "axes": {"init": {"a": {"model.init_args.lr": 0.1}, "b": {"model.init_args.lr": 0.2}}},
        "seeds": [0],
        **change,
    }
    path = work / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path.name


def unknown_override_key(work: Path) -> list[str]:
    axes = {"init": {"a": {"model.init_args.lr": 0.1}, "b": {"model.init_args.lrr": 0.2}}}
    return ["run", study_file(work, "typo", axes=axes)]


def unknown_axis(work: Path) -> list[str]:
    return ["plan", study_file(work, "axis", exclude=[{"size": 1}])]


def same_name(work: Path) -> list[str]:
    return ["plan", study_file(work, "same", name="run")]


def submitit_parameter(work: Path) -> list[str]:
    file = study_file(work, "bogus")
    return ["run", file, "--executor", "submitit-local", "--submitit", "bogus=1"]


def another_version(work: Path) -> list[str]:
    folder = work / "studies" / "old" / "a"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"configs": [TINY], "overrides": {"model.init_args.lr": 0.3}, "hash": "0123"}
    (folder / "run_spec.json").write_text(json.dumps(spec))
    return ["plan", study_file(work, "old")]


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        pytest.param(
            unknown_override_key,
            ["typo.yaml: override model.init_args.lrr=0.2 (run b)", "'lrr' is not accepted"],
            id="study-unknown-key",
        ),
        pytest.param(unknown_axis, ["axis.yaml: exclude[0]: unknown axis 'size'"], id="axis"),
        pytest.param(same_name, ["same.yaml: two runs are named 'run'"], id="study-same-name"),
        pytest.param(
            submitit_parameter,
            ["--submitit: Parameter 'bogus' need to be prefixed"],
            id="study-submitit-parameter",
        ),
        pytest.param(
            another_version,
            ["studies/old/a: made from another version of old.yaml (its overrides differ"],
            id="study-another-version",
        ),
    ],
)
def test_study_bad_input_in_one_line(
    work: Path, make: Callable[[Path], list[str]], fragments: list[str]
) -> None:
    proc = medxfer(["study", *make(work)], work)
    assert_one_line_error(proc, fragments)
    assert not (work / "studies" / "typo").exists()  # nothing ran


# --- report ---
def _report_study(root: Path) -> Path:
    """A finished replica of configuration ``a`` (axes init=moco, task=cxr) logging AUROC."""
    import json

    (root / "st" / "a" / "seed0").mkdir(parents=True)
    (root / "st" / "a" / "seed0" / "results.json").write_text('{"test/nih/auroc_mean": 0.7}')
    (root / "st" / "a" / "axes.json").write_text(json.dumps({"init": "moco", "task": "cxr"}))
    return root / "st"


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        pytest.param(
            ["--metric", "dice_mean"],
            ["metric 'dice_mean' was logged by no run", "logged: auroc_mean"],
            id="unlogged-metric",
        ),
        pytest.param(
            ["--reference", "ref.csv"],
            ["ref.csv line 3: no run of", "has init=simclr, task=cxr"],
            id="reference-row",
        ),
    ],
)
def test_report_refuses_bad_input_in_one_line(
    tmp_path: Path, extra: list[str], fragments: list[str]
) -> None:
    _report_study(tmp_path)
    (tmp_path / "ref.csv").write_text(
        "init,task,seed,metric,value\nmoco,cxr,0,auroc_mean,0.7\nsimclr,cxr,0,auroc_mean,0.7\n"
    )
    proc = medxfer(["report", "st", *extra], tmp_path)
    assert_one_line_error(proc, fragments)
    assert not (tmp_path / "st" / "report").exists()
