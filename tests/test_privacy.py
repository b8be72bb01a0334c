"""Privacy by default: a ``medxfer fit`` logging to W&B (offline) with per-case predictions
leaves no image path and no patient id in the W&B run folder or the prediction files, although
the run's console shows both (a skipped image is logged with its path) and its command line
names the tables."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih

REPO = Path(__file__).resolve().parents[1]
PATIENT_ID = re.compile(rb"patient\d{5}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("privacy")
    data = work / "data"
    chexpert = write_synthetic_chexpert(data / "chexpert", n_patients=30, size=32, seed=0)
    nih = write_synthetic_nih(data / "nih", n_patients=8, size=32, seed=1)
    # a corrupt image, skipped with a warning that names its path (and so its patient)
    lines = chexpert.read_text().splitlines()
    bad = lines[1].split(",")[0]
    (chexpert.parents[1] / bad).write_bytes(b"not a jpeg")
    logger = {
        "class_path": "medxfer.loggers.WandbLogger",
        "init_args": {"save_dir": str(work / "wandb"), "offline": True},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medxfer",
            "fit",
            "-c",
            str(REPO / "configs/tiny.yaml"),
            "--trainer.max_steps=2",
            f"--trainer.default_root_dir={work / 'runs'}",
            f"--trainer.logger={json.dumps(logger)}",
            "--trainer.callbacks+=medxfer.callbacks.PredictionWriter",
            f"--data.init_args.train.csv={chexpert}",
            f"--data.init_args.shifted.nih.csv={nih}",
            "--data.init_args.skip_bad_images=true",
        ],
        cwd=work,
        env=dict(env, WANDB_DIR=str(work / "wandb"), WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"work": work, "data": data, "stderr": proc.stderr, "bad": Path(bad)}


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_the_console_did_show_a_path_and_a_patient(run: dict) -> None:
    """The fixture can fail the tests below: the console carried what must not leak."""
    assert str(run["bad"]) in run["stderr"]
    assert PATIENT_ID.search(run["stderr"].encode())


def test_wandb_run_folder_holds_no_path_or_patient_id(run: dict) -> None:
    files = _files(run["work"] / "wandb" / "wandb")  # W&B's own files (the run's are beside)
    assert any(p.suffix == ".wandb" for p in files), files  # the offline run was written
    for path in files:
        content = path.read_bytes()
        assert str(run["data"]).encode() not in content, path
        assert PATIENT_ID.search(content) is None, path


def test_predictions_key_cases_by_a_keyed_hash(run: dict) -> None:
    npz = sorted(run["work"].rglob("predictions_*.npz"))
    assert {p.name for p in npz} == {"predictions_chexpert.npz", "predictions_nih.npz"}
    for path in npz:
        assert PATIENT_ID.search(path.read_bytes()) is None, path
        assert str(run["data"]).encode() not in path.read_bytes(), path
    # a user with the run's key joins back to the source ids: HMAC-SHA256 of the test set's ids
    run_dir = npz[0].parents[1]
    key = bytes.fromhex((run_dir / "id_key").read_text().strip())
    ids = np.load(run_dir / "analysis" / "predictions_nih.npz")["id"]
    nih_ids = [  # the NIH reader's case id: the image file's name without .png (patient first)
        line.split(",")[0].removesuffix(".png")
        for line in (run["data"] / "nih/Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]
    ]
    expected = {hmac.new(key, i.encode(), hashlib.sha256).hexdigest()[:20] for i in nih_ids}
    assert len(ids) == len(nih_ids) and set(ids) == expected


def test_redaction_covers_file_names_without_a_folder() -> None:
    """Every configured location leaves W&B redacted: a file name with no folder (the issue's
    ``metadata_patient456.parquet``), compressed tables, and any value under a location key,
    while names that only look dotted (backbones ``arch.source``) and numbers stay."""
    from medxfer.loggers import REDACTED, redact_paths

    params = {
        "data": {
            "train": {"csv": "metadata_patient456.parquet"},
            "table": "cases.csv.gz",
            "image_root": "scans",
            "cache": "cache_v2",
            "weights": "BiT-M-R50x1.npz",
            "labels": ["Edema", "Atelectasis"],
        },
        "ids": ["patient00007.dcm", "lesion.nii.gz"],
        "model": {"backbone": "resnet50.dino", "source": "bit-r50x1.bit-m", "lr": 0.01},
    }
    out = redact_paths(params)
    data = out["data"]
    assert data["train"]["csv"] == data["table"] == data["image_root"] == REDACTED
    assert data["cache"] == data["weights"] == REDACTED
    assert out["ids"] == [REDACTED, REDACTED]
    assert data["labels"] == ["Edema", "Atelectasis"]
    assert out["model"] == params["model"]
    assert "patient456" not in json.dumps(out)


def test_class_paths_are_not_taken_for_locations() -> None:
    """``class_path`` names a class (``_path`` as in a location key, but not one): kept."""
    from medxfer.loggers import REDACTED, redact_paths

    params = {"model": {"class_path": "medxfer.tasks.MultiLabelClassifier"}, "_class_path": "x.Y"}
    params["data"] = {"csv_path": "train"}
    out = redact_paths(params)
    assert out["model"]["class_path"] == "medxfer.tasks.MultiLabelClassifier"
    assert out["_class_path"] == "x.Y" and out["data"]["csv_path"] == REDACTED
