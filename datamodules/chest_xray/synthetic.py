"""Synthetic chest X-ray datasets written in the real CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG,
PadChest, COVIDx and Montgomery / Shenzhen tuberculosis formats.

The files go through exactly the loaders used for real data, so the demo, the tests and the
benchmarks exercise the real code path. Each of the five CheXpert competition findings draws
a local pattern that a small CNN learns within minutes at 64-128 px:

* Cardiomegaly: an enlarged cardiac silhouette;
* Pleural Effusion: fluid filling the lower lung field (costophrenic angle blunted);
* Atelectasis: thin plate-like bright streaks in the mid lung;
* Edema: perihilar haze in both lungs;
* Consolidation: a dense bright patch in one lung.

A :class:`Shift` changes acquisition (contrast gamma, noise, blur) and prevalence, giving the
"different hospital" of a shift evaluation. Sex and age are drawn per patient and written in
the tables so subgroup analyses have something to group by.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .tables import CHEXPERT_LABELS, COMPETITION_LABELS

__all__ = [
    "Shift",
    "render_cxr",
    "write_synthetic_chexpert",
    "write_synthetic_covidx",
    "write_synthetic_mimic",
    "write_synthetic_nih",
    "write_synthetic_padchest",
    "write_synthetic_tuberculosis",
]

_CHEXPERT_TO_NIH = {"Pleural Effusion": "Effusion"}
_NIH_EXTRA = ("Infiltration", "Nodule", "Emphysema")


@dataclass(frozen=True)
class Shift:
    """Acquisition and population differences of a synthetic site.

    Attributes:
        gamma: contrast curve exponent applied to the [0, 1] image.
        noise: standard deviation of additive Gaussian noise.
        blur: Gaussian blur radius in pixels (0: none).
        prevalence: per-finding prevalence (default 0.25 each).
    """

    gamma: float = 1.0
    noise: float = 0.03
    blur: float = 0.0
    prevalence: dict[str, float] = field(default_factory=dict)


def render_cxr(
    findings: set[str], rng: np.random.Generator, size: int = 80, shift: Shift = Shift()
) -> np.ndarray:
    """Draw one frontal radiograph-like grey image (uint8 ``(size, size)``) with ``findings``."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.08)
    body = ((x - 0.5) / 0.46) ** 2 + ((y - 0.55) / 0.52) ** 2 < 1
    img[body] = 0.55
    lungs = []
    for cx in (0.31 + rng.normal(0, 0.01), 0.69 + rng.normal(0, 0.01)):
        lung = ((x - cx) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
        lungs.append((cx, lung))
        img[lung] = 0.22
    heart_r = rng.normal(0.165, 0.015) if "Cardiomegaly" in findings else rng.normal(0.125, 0.015)
    heart = ((x - 0.47) / (heart_r * 1.2)) ** 2 + ((y - 0.68) / heart_r) ** 2 < 1
    img[heart] = 0.7
    if "Pleural Effusion" in findings:
        for _cx, lung in lungs[: rng.integers(1, 3)] if rng.random() < 0.5 else lungs:
            img[lung & (y > 0.7 + rng.normal(0, 0.04))] = 0.5
    if "Atelectasis" in findings:
        for _ in range(2):
            cx, _lung = lungs[rng.integers(0, 2)]
            yy = 0.45 + rng.uniform(-0.08, 0.08)
            streak = (np.abs(y - yy - 0.15 * (x - cx)) < 0.018) & (np.abs(x - cx) < 0.12)
            img[streak] = 0.45
    if "Edema" in findings:
        for cx, lung in lungs:
            haze = np.exp(-(((x - (cx + 0.5) / 2) / 0.12) ** 2 + ((y - 0.48) / 0.14) ** 2))
            img[lung] += (0.18 * haze + 0.06 * rng.random((size, size)))[lung]
    if "Consolidation" in findings:
        cx, lung = lungs[rng.integers(0, 2)]
        px, py, r = cx + rng.uniform(-0.06, 0.06), rng.uniform(0.32, 0.55), rng.uniform(0.035, 0.06)
        blob = ((x - px) ** 2 + (y - py) ** 2 < r**2) & lung
        img[blob] = 0.45
    img = np.clip(img + rng.normal(0, 0.04, img.shape), 0, 1) ** shift.gamma
    pil = Image.fromarray((img * 255).astype(np.uint8))
    if shift.blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(shift.blur))
    arr = np.asarray(pil, dtype=np.float32) / 255 + rng.normal(0, shift.noise, (size, size))
    return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)


def _draw_findings(rng: np.random.Generator, shift: Shift) -> set[str]:
    return {lab for lab in COMPETITION_LABELS if rng.random() < shift.prevalence.get(lab, 0.25)}


def _patients(rng: np.random.Generator, n_patients: int, images_per_patient: tuple[int, int]):
    for p in range(1, n_patients + 1):
        sex = "Female" if rng.random() < 0.5 else "Male"
        age = int(rng.integers(20, 91))
        yield p, sex, age, int(rng.integers(images_per_patient[0], images_per_patient[1] + 1))


def write_synthetic_chexpert(
    out_dir: str | os.PathLike[str],
    n_patients: int = 300,
    images_per_patient: tuple[int, int] = (1, 8),
    size: int = 80,
    seed: int = 0,
    shift: Shift = Shift(),
    lateral_rate: float = 0.1,
    uncertain_rate: float = 0.05,
    folder: str = "CheXpert-v1.0-synthetic",
) -> Path:
    """Write a CheXpert-layout dataset: ``out_dir/<folder>/{train,valid}.csv`` and JPEGs under
    ``<folder>/train/patientNNNNN/studyN/viewN_frontal.jpg``.

    Uncertain (-1.0) values replace a true label at ``uncertain_rate``; negatives are written
    as 0.0 or left blank (not mentioned), as in the real file. Lateral images carry the same
    labels without the pattern (they are what ``frontal_only`` removes). ``valid.csv`` holds
    the last 10 % of patients without uncertain labels, like the radiologist-consensus set.

    Returns:
        The path of ``train.csv``.
    """
    rng = np.random.default_rng(seed)
    root = Path(out_dir) / folder
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    rows: dict[str, list[list[str]]] = {"train": [], "valid": []}
    n_valid = max(1, n_patients // 10)
    for p, sex, age, n_img in _patients(rng, n_patients, images_per_patient):
        split = "valid" if p > n_patients - n_valid else "train"
        for study in range(1, n_img + 1):
            findings = _draw_findings(rng, shift)
            lateral = rng.random() < lateral_rate
            rel = f"{folder}/{split}/patient{p:05d}/study{study}/view1_{'lateral' if lateral else 'frontal'}.jpg"
            pixels = render_cxr(set() if lateral else findings, rng, size, shift)
            (root.parent / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root.parent / rel, quality=95)
            values = []
            for lab in CHEXPERT_LABELS:
                positive = (
                    lab in findings
                    if lab in COMPETITION_LABELS
                    else (lab == "No Finding" and not findings)
                )
                if positive and split == "train" and rng.random() < uncertain_rate:
                    values.append("-1.0")
                elif positive:
                    values.append("1.0")
                else:
                    values.append("" if rng.random() < 0.6 else "0.0")
            ap = "" if lateral else ("AP" if rng.random() < 0.4 else "PA")
            rows[split].append(
                [rel, sex, str(age), "Lateral" if lateral else "Frontal", ap, *values]
            )
    for split, split_rows in rows.items():
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(split_rows)
    return root / "train.csv"


def write_synthetic_nih(
    out_dir: str | os.PathLike[str],
    n_patients: int = 150,
    images_per_patient: tuple[int, int] = (1, 6),
    size: int = 80,
    seed: int = 1,
    shift: Shift = Shift(
        gamma=1.6, noise=0.09, blur=1.0, prevalence={"Edema": 0.4, "Consolidation": 0.15}
    ),
) -> Path:
    """Write an NIH ChestX-ray14-layout dataset: ``out_dir/images/NNNNNNNN_NNN.png`` and
    ``out_dir/Data_Entry_2017_v2020.csv`` with the official header (commas inside
    ``OriginalImage[Width,Height]``), plus ``train_val_list.txt`` / ``test_list.txt`` split by
    patient. Like the real files, a few PNGs are RGB or RGBA containers of a grey image.

    Returns:
        The path of the CSV.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    lines, train_val, test = [header], [], []
    for p, sex, age, n_img in _patients(rng, n_patients, images_per_patient):
        for k in range(n_img):
            findings = _draw_findings(rng, shift)
            name = f"{p:08d}_{k:03d}.png"
            pixels = render_cxr(findings, rng, size, shift)
            container = rng.choice(["L", "RGB", "RGBA"], p=[0.2, 0.7, 0.1])
            img = Image.fromarray(pixels)
            img = img if container == "L" else img.convert(str(container))
            img.save(out / "images" / name)
            labels = [_CHEXPERT_TO_NIH.get(f, f) for f in sorted(findings)]
            labels += [e for e in _NIH_EXTRA if rng.random() < 0.05]
            view = "AP" if rng.random() < 0.35 else "PA"
            lines.append(
                f"{name},{'|'.join(labels) or 'No Finding'},{k},{p},{age},{sex[0]},{view},"
                f"{size * 32},{size * 32},0.143,0.143"
            )
            (test if p % 5 == 0 else train_val).append(name)
    csv_path = out / "Data_Entry_2017_v2020.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    (out / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (out / "test_list.txt").write_text("\n".join(test) + "\n")
    return csv_path


#: MIMIC-CXR ``ViewPosition`` values the synthetic writer draws, with their frequencies.
_MIMIC_VIEWS = {"PA": 0.4, "AP": 0.3, "LATERAL": 0.15, "LL": 0.03, "": 0.1, "AP AXIAL": 0.02}


def write_synthetic_mimic(
    out_dir: str | os.PathLike[str],
    n_patients: int = 150,
    studies_per_patient: tuple[int, int] = (1, 3),
    size: int = 80,
    seed: int = 2,
    shift: Shift = Shift(gamma=0.8, noise=0.05, prevalence={"Cardiomegaly": 0.35}),
    unlabelled_rate: float = 0.05,
) -> Path:
    """Write a MIMIC-CXR-JPG-layout dataset into ``out_dir``: JPEGs under
    ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg``, the release's gzip tables
    ``mimic-cxr-2.0.0-{metadata,chexpert,negbio,split}.csv.gz`` and a MIMIC-IV-style
    ``patients.csv.gz`` (``subject_id, gender, anchor_age, anchor_year, ...``).

    As in the real release: labels are per study (1.0 / 0.0 / -1.0 / blank; the NegBio table
    differs in a few uncertain values), a ``unlabelled_rate`` of studies have no label row,
    ``ViewPosition`` is blank for some images, a study holds one to three images (lateral ones
    without the findings' pattern), the split is by patient (about 80 / 10 / 10 % train /
    validate / test) and study dates are shifted into the 22nd century.

    Returns:
        The path of the metadata table.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    meta_header = [
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
        "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
    ]  # fmt: skip
    meta, split_rows, patients = (
        [meta_header],
        [["dicom_id", "study_id", "subject_id", "split"]],
        [],
    )
    chexpert = [["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]]
    negbio = [list(chexpert[0])]
    views, weights = list(_MIMIC_VIEWS), np.array(list(_MIMIC_VIEWS.values()))
    study = 50000000
    for p, sex, age, _n in _patients(rng, n_patients, (1, 1)):
        subject = 10000000 + 7919 * p
        anchor_year = int(rng.integers(2110, 2190))
        patients.append([subject, sex[0], age, anchor_year, "2008 - 2010", ""])
        split = str(rng.choice(["train", "validate", "test"], p=[0.8, 0.1, 0.1]))
        for _ in range(int(rng.integers(studies_per_patient[0], studies_per_patient[1] + 1))):
            study += int(rng.integers(1, 5000))
            findings = _draw_findings(rng, shift)
            values, negbio_values = [], []
            for lab in sorted(CHEXPERT_LABELS):
                positive = (
                    lab in findings
                    if lab in COMPETITION_LABELS
                    else (lab == "No Finding" and not findings)
                )
                value = "1.0" if positive else ("" if rng.random() < 0.7 else "0.0")
                if positive and rng.random() < 0.05:
                    value = "-1.0"
                values.append(value)
                negbio_values.append("" if value == "-1.0" and rng.random() < 0.5 else value)
            if rng.random() >= unlabelled_rate:
                chexpert.append([subject, study, *values])
                negbio.append([subject, study, *negbio_values])
            year = anchor_year + int(rng.integers(0, 3))
            date = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
            for _k in range(int(rng.integers(1, 4))):
                dicom = "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, 5))
                view = str(rng.choice(views, p=weights / weights.sum()))
                lateral = view in ("LATERAL", "LL")
                rel = Path(
                    "files", f"p{str(subject)[:2]}", f"p{subject}", f"s{study}", f"{dicom}.jpg"
                )
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                pixels = render_cxr(set() if lateral else findings, rng, size, shift)
                Image.fromarray(pixels).save(out / rel, quality=95)
                meta.append(
                    [
                        dicom,
                        subject,
                        study,
                        "CHEST (PA AND LAT)",
                        view,
                        size,
                        size,
                        date,
                        "101112.5",
                    ]
                )
                split_rows.append([dicom, study, subject, split])
    tables = {
        "metadata": meta,
        "chexpert": chexpert,
        "negbio": negbio,
        "split": split_rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    for kind, rows in tables.items():
        _write_gzip_csv(out / f"mimic-cxr-2.0.0-{kind}.csv.gz", rows)
    header = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
    _write_gzip_csv(out / "patients.csv.gz", [header, *patients])
    return out / "mimic-cxr-2.0.0-metadata.csv.gz"


def _write_gzip_csv(path: Path, rows: list[list[object]]) -> None:
    """``rows`` as a gzip-compressed CSV (fixed mtime: the same bytes for the same rows)."""
    with gzip.GzipFile(path, "wb", mtime=0) as raw, io.TextIOWrapper(raw, newline="") as f:
        csv.writer(f).writerows(rows)


#: The 36 columns of the real PadChest table (the first, the index, is unnamed).
_PADCHEST_COLUMNS = (
    "", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
    "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric",
    "Modality_DICOM", "Manufacturer_DICOM", "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM", "SpatialResolution_DICOM",
    "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM", "Columns_DICOM",
    "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
    "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
)  # fmt: skip
#: Competition finding -> the PadChest term the synthetic writer uses for it.
_PADCHEST_TERM = {
    "Atelectasis": "laminar atelectasis", "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation", "Edema": "pulmonary edema",
    "Pleural Effusion": "pleural effusion",
}  # fmt: skip
#: PadChest terms no competition finding maps to (listed as unmapped by the reader).
_PADCHEST_OTHER = ("aortic elongation", "scoliosis", "chronic changes", "COPD signs")
_PADCHEST_PROJECTION = {
    "PA": 0.5,
    "AP_horizontal": 0.15,
    "AP": 0.1,
    "L": 0.2,
    "COSTAL": 0.03,
    "UNK": 0.02,
}


def write_synthetic_padchest(
    out_dir: str | os.PathLike[str],
    n_patients: int = 150,
    images_per_patient: tuple[int, int] = (1, 3),
    size: int = 80,
    seed: int = 4,
    shift: Shift = Shift(gamma=1.2, noise=0.04, prevalence={"Pleural Effusion": 0.35}),
) -> Path:
    """Write a PadChest-layout dataset: ``out_dir/<ImageDir>/<ImageID>.png`` (16-bit PNGs in
    folders 0-2) and ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` with the real
    table's 36 columns.

    As in the real table: an unnamed leading index column; ``Labels`` as Python list literals
    with leading spaces and the odd empty item (``['pleural effusion', ' cardiomegaly']``,
    ``['normal']``, ``['']``-like), the text ``nan`` on a few rows, ``exclude`` and
    ``suboptimal study`` markers; ``labelCUIS`` / ``LocalizationsCUIS`` cells that wrap across
    physical lines; ``MethodLabel`` Physician or RNN_model; ``Projection`` PA / L /
    AP_horizontal / AP / COSTAL / UNK; sex M / F / O; ``PatientBirth`` a float year.

    Returns:
        The path of the CSV.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    projections = list(_PADCHEST_PROJECTION)
    weights = np.array(list(_PADCHEST_PROJECTION.values()))
    rows, index = [], 0
    for p, sex, age, n_img in _patients(rng, n_patients, images_per_patient):
        patient = f"{rng.integers(0, 2**62):x}{p}"
        sex_code = "O" if rng.random() < 0.02 else sex[0]
        birth = 2014 - age
        for k in range(n_img):
            findings = _draw_findings(rng, shift)
            projection = str(rng.choice(projections, p=weights / weights.sum()))
            lateral = projection == "L"
            terms = [_PADCHEST_TERM[f] for f in sorted(findings)]
            terms += [t for t in _PADCHEST_OTHER if rng.random() < 0.1]
            if not terms:
                terms = ["normal"]
            if rng.random() < 0.03:
                terms.append("exclude")
            if rng.random() < 0.03:
                terms.append("suboptimal study")
            items = [("" if j == 0 else " ") + t for j, t in enumerate(terms)]
            if rng.random() < 0.1:
                items.append("")
            labels = "nan" if rng.random() < 0.02 else repr(items)
            image = f"{rng.integers(0, 2**62):x}_{p}_{k}.png"
            folder = int(rng.integers(0, 3))
            pixels = render_cxr(set() if lateral else findings, rng, size, shift)
            (out / str(folder)).mkdir(exist_ok=True)
            Image.fromarray(pixels.astype(np.uint16) * 257).save(out / str(folder) / image)
            cuis = "['C0018800'\n 'C0032227']" if rng.random() < 0.3 else "['C0018800']"
            row = {c: "" for c in _PADCHEST_COLUMNS}
            row.update(
                {
                    "": str(index),
                    "ImageID": image,
                    "ImageDir": str(folder),
                    "StudyDate_DICOM": f"2014{int(rng.integers(1, 13)):02d}15",
                    "StudyID": f"{patient}s{k}",
                    "PatientID": patient,
                    "PatientBirth": f"{birth}.0",
                    "PatientSex_DICOM": sex_code,
                    "Projection": projection,
                    "MethodProjection": "Manual review of DICOM fields",
                    "Modality_DICOM": "CR",
                    "BitsStored_DICOM": "16",
                    "Rows_DICOM": str(size),
                    "Columns_DICOM": str(size),
                    "Report": "sin hallazgos",
                    "MethodLabel": "Physician" if rng.random() < 0.27 else "RNN_model",
                    "Labels": labels,
                    "Localizations": "[]",
                    "labelCUIS": cuis,
                    "LocalizationsCUIS": "[]",
                }
            )
            rows.append([row[c] for c in _PADCHEST_COLUMNS])
            index += 1
    path = out / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([list(_PADCHEST_COLUMNS), *rows])
    return path


#: COVIDx data sources the synthetic writer names in 4-field lines.
_COVIDX_SOURCES = ("cohen", "rsna", "sirm", "actmed", "fig1", "ricord")


def write_synthetic_covidx(
    out_dir: str | os.PathLike[str],
    n_patients: int = 150,
    size: int = 80,
    seed: int = 6,
    fields: str = "4",
    shift: Shift = Shift(gamma=1.1, noise=0.05),
) -> Path:
    """Write a COVIDx-layout release: ``train/`` and ``test/`` image folders and their label
    files ``train.txt`` / ``test.txt`` (space-separated, no header) of ``fields`` 3 (``patient_id
    filename class``), 4 (``... data_source``) or ``mixed`` (both, as some releases have).

    Classes ``normal`` / ``pneumonia`` / ``COVID-19``: COVID-19 draws bilateral consolidation and
    haze, pneumonia one consolidation, normal neither; a few file names hold a space, as some
    real ones do. About 20 % of patients are in the test split.

    Returns:
        The path of ``train.txt``.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for p, _sex, _age, n_img in _patients(rng, n_patients, (1, 2)):
        split = "test" if rng.random() < 0.2 else "train"
        cls = str(rng.choice(["normal", "pneumonia", "COVID-19"], p=[0.45, 0.35, 0.2]))
        findings = {"normal": set(), "pneumonia": {"Consolidation"}}.get(
            cls, {"Consolidation", "Edema"}
        )
        (out / split).mkdir(parents=True, exist_ok=True)
        for k in range(n_img):
            name = f"{cls.lower()}-{p}-{k}.png" if rng.random() > 0.05 else f"COVID ({p}-{k}).png"
            Image.fromarray(render_cxr(set(findings), rng, size, shift)).save(out / split / name)
            four = fields == "4" or (fields == "mixed" and rng.random() < 0.5)
            source = f" {rng.choice(_COVIDX_SOURCES)}" if four else ""
            lines[split].append(f"{p} {name} {cls}{source}")
    for split, rows in lines.items():
        (out / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return out / "train.txt"


def write_synthetic_tuberculosis(
    out_dir: str | os.PathLike[str],
    n_images: int = 138,
    size: int = 80,
    seed: int = 7,
    collection: str = "MCUCXR",
    shift: Shift = Shift(gamma=0.9, noise=0.04, blur=0.5),
) -> Path:
    """Write a Montgomery- (``MCUCXR``) or Shenzhen- (``CHNCXR``) layout set: ``CXR_png/
    <collection>_NNNN_<0|1>.png`` and ``ClinicalReadings/<same>.txt`` in that collection's style
    (Montgomery: ``Patient's Sex: F`` / ``Patient's Age: 040Y`` lines; Shenzhen: irregular free
    text such as ``male 35yrs``, ``Female, 23``, ``11 months male``, and a few readings that
    state neither or are missing). Tuberculosis (about 42 %) draws an upper-lobe patch and haze.

    Returns:
        The set's folder.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "CXR_png").mkdir(parents=True, exist_ok=True)
    (out / "ClinicalReadings").mkdir(exist_ok=True)
    for n in range(1, n_images + 1):
        tb = int(rng.random() < 0.42)
        stem = f"{collection}_{n:04d}_{tb}"
        findings = {"Consolidation", "Edema"} if tb else set()
        Image.fromarray(render_cxr(findings, rng, size, shift)).save(
            out / "CXR_png" / f"{stem}.png"
        )
        female, age = rng.random() < 0.5, int(rng.integers(1, 90))
        reading = "PTB in the right upper field" if tb else "normal"
        if collection == "MCUCXR":
            text = (
                f"Patient's Sex: {'F' if female else 'M'}\nPatient's Age: {age:03d}Y\n{reading}\n"
            )
        else:
            sex = "female" if female else "male"
            style = int(rng.integers(0, 5))
            first = [
                f"{sex} {age}yrs",
                f"{sex.title()}, {age}",
                f"{age} months {sex}",
                "",
                f"{sex}",
            ][style]
            text = f"{first}\n{reading}\n"
        if rng.random() > 0.03:
            (out / "ClinicalReadings" / f"{stem}.txt").write_text(text)
    return out
