"""Time and peak memory of building and splitting the merged chest X-ray table of the scale
study's pre-training data at the real sources' sizes (a benchmark, not a test)::

    python benchmarks/merged_tables.py            # target: <= 10 s and <= 4 GB on 2 cores

Tables (no images: building the table reads none) are generated in a temporary folder with the
real layouts: CheXpert ``train.csv`` (223,414 rows) and NIH ``Data_Entry_2017_v2020.csv``
(112,120), as ``benchmarks/table_readers.py`` writes them; MIMIC-CXR-JPG's gzip tables
(377,110 images of 227,835 studies, the CheXpert labeler's table and the official split); the
PadChest table (160,861 rows, list-literal labels, some ``labelCUIS`` cells wrapped across
lines). Then ``ChestXrayDataModule(train={source: table}, label_space="union")``'s
``prepare_tables()`` -- every source read in the label space, patient ids prefixed, each source
re-split by patient -- runs in a fresh process, whose wall time and peak resident memory are
printed (the generation's memory is not counted).
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table_readers import write_chexpert, write_nih

from medxfer.datamodules.chest_xray import CHEXPERT_LABELS

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion",
          "Pneumonia", "Pneumothorax"]  # fmt: skip
PADCHEST_TERMS = ["normal", "cardiomegaly", "pleural effusion", "laminar atelectasis",
                  "consolidation", "pneumonia", "pneumothorax", "aortic elongation", "scoliosis",
                  "COPD signs", "chronic changes", "NSG tube", "pacemaker"]  # fmt: skip


def write_mimic(folder: Path, images: int, studies: int, seed: int = 0) -> Path:
    """MIMIC-CXR-JPG's metadata, CheXpert-labeler and split tables (gzip)."""
    rng = np.random.default_rng(seed)
    study_ids = 50_000_000 + np.arange(studies) * 7
    subject_of_study = np.sort(rng.integers(10_000_000, 10_000_000 + studies // 3, studies))
    study_of_image = np.sort(rng.integers(0, studies, images))
    dicom = pd.Series(np.arange(images)).map("{:08x}-0a1b2c3d-4e5f6a7b-8c9d0e1f-22334455".format)
    views = np.array(["PA", "AP", "LATERAL", "LL", ""])[
        rng.choice(5, images, p=[0.25, 0.39, 0.3, 0.02, 0.04])
    ]
    meta = pd.DataFrame(
        {
            "dicom_id": dicom,
            "subject_id": subject_of_study[study_of_image],
            "study_id": study_ids[study_of_image],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": views,
            "Rows": 3056,
            "Columns": 2544,
            "StudyDate": 21800506,
            "StudyTime": 213014.531,
        }
    )
    values = np.array([np.nan, 1.0, 0.0, -1.0])
    labelled = rng.random(studies) > 0.01  # ~1 % of studies without a label row
    labels = pd.DataFrame(
        values[
            rng.choice(4, (int(labelled.sum()), len(CHEXPERT_LABELS)), p=[0.7, 0.15, 0.1, 0.05])
        ],
        columns=sorted(CHEXPERT_LABELS),
    )
    labels.insert(0, "study_id", study_ids[labelled])
    labels.insert(0, "subject_id", subject_of_study[labelled])
    split = np.array(["train", "validate", "test"])[
        rng.choice(3, subject_of_study.max() + 1, p=[0.98, 0.01, 0.01])
    ]
    split_table = meta[["dicom_id", "study_id", "subject_id"]].assign(
        split=split[meta["subject_id"].to_numpy()]
    )
    for kind, frame in (("metadata", meta), ("chexpert", labels), ("split", split_table)):
        with gzip.open(folder / f"mimic-cxr-2.0.0-{kind}.csv.gz", "wt", compresslevel=1) as f:
            frame.to_csv(f, index=False)
    return folder / "mimic-cxr-2.0.0-metadata.csv.gz"


def write_padchest(path: Path, rows: int, seed: int = 0) -> Path:
    """The PadChest table: 36 columns, list-literal labels, 3.6 % wrapped ``labelCUIS`` cells."""
    rng = np.random.default_rng(seed)
    n_terms = rng.choice(4, rows, p=[0.05, 0.5, 0.3, 0.15]) + 1
    combos = [
        repr(
            [
                ("" if j == 0 else " ") + t
                for j, t in enumerate(rng.choice(PADCHEST_TERMS, k, replace=False))
            ]
        )
        for k in n_terms[:5000]
    ]
    labels = np.array(combos, dtype=object)[rng.integers(0, len(combos), rows)]
    labels[rng.random(rows) < 0.0006] = "nan"
    columns = {
        "": np.arange(rows),
        "ImageID": pd.Series(np.arange(rows)).map("{:038d}_x.png".format),
        "ImageDir": rng.integers(0, 55, rows),
        "StudyDate_DICOM": 20140915,
        "StudyID": np.arange(rows),
        "PatientID": pd.Series(rng.integers(0, rows // 2, rows)).map("p{:012d}".format),
        "PatientBirth": rng.integers(1920, 2010, rows).astype(float),
        "PatientSex_DICOM": np.array(["M", "F", "O"])[rng.choice(3, rows, p=[0.5, 0.49, 0.01])],
        "ViewPosition_DICOM": "POSTEROANTERIOR",
        "Projection": np.array(["PA", "L", "AP_horizontal", "AP", "COSTAL"])[
            rng.choice(5, rows, p=[0.5, 0.3, 0.12, 0.06, 0.02])
        ],
    }
    frame = pd.DataFrame(columns)
    for name in ("MethodProjection", "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
                 "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM",
                 "PixelAspectRatio_DICOM", "SpatialResolution_DICOM"):  # fmt: skip
        frame[name] = "x"
    frame["BitsStored_DICOM"] = 12
    for name in ("WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM", "Columns_DICOM",
                 "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
                 "RelativeXRayExposure_DICOM", "ReportID", "Report"):  # fmt: skip
        frame[name] = "1"
    frame["MethodLabel"] = np.where(rng.random(rows) < 0.27, "Physician", "RNN_model")
    frame["Labels"] = labels
    frame["Localizations"] = "[]"
    frame["LabelsLocalizationsBySentence"] = "[]"
    frame["labelCUIS"] = np.where(rng.random(rows) < 0.036, "['C0018800'\n 'C0032227']", "[]")
    frame["LocalizationsCUIS"] = "[]"
    frame.to_csv(path, index=False)
    return path


def measure(spec: str) -> None:
    """In this (fresh) process: build and split the merged table; print JSON."""
    from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable

    tables = {k: CXRTable(**v) for k, v in json.loads(spec).items()}
    t0 = time.perf_counter()
    dm = ChestXrayDataModule(
        tables, labels=LABELS, label_space="union", frontal_only=False, name="merged"
    )
    parts = dm.prepare_tables()
    seconds = time.perf_counter() - t0
    rows = {k: len(v) for k, v in parts.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": seconds, "peak_gib": peak, "rows": rows}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes")
    args = p.parse_args()
    if args.measure:
        measure(args.measure)
        return
    s = args.scale
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        chexpert = root / "CheXpert-v1.0" / "train.csv"
        chexpert.parent.mkdir()
        write_chexpert(chexpert, int(223_414 * s))
        nih = root / "Data_Entry_2017_v2020.csv"
        write_nih(nih, int(112_120 * s))
        (root / "mimic").mkdir()
        mimic = write_mimic(root / "mimic", int(377_110 * s), int(227_835 * s))
        padchest = write_padchest(
            root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", int(160_861 * s)
        )
        print(f"tables generated in {time.perf_counter() - t0:.0f} s")
        spec = {
            "chexpert": {"csv": str(chexpert)},
            "mimic": {"csv": str(mimic), "format": "mimic"},
            "nih": {"csv": str(nih), "format": "nih"},
            "padchest": {"csv": str(padchest), "format": "padchest"},
        }
        out = subprocess.run(
            [sys.executable, __file__, "--measure", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    total = sum(result["rows"].values())
    print(
        f"merged table of {total:,} images (train / val / test {result['rows']}): "
        f"{result['seconds']:.1f} s, peak {result['peak_gib']:.2f} GiB resident "
        "(target: <= 10 s, <= 4 GB on the 2-core machine)"
    )


if __name__ == "__main__":
    main()
