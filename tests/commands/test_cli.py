"""Entry points: every shipped config through `medxfer fit -c` in a subprocess (tiny settings),
checkpoint restore, `medxfer list`, `python -m medxfer`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bit_format import write_bit_npz

from medxfer.artifacts import EPOCHS_TO_BEST, convergence_key
from medxfer.backbones import create_backbone
from medxfer.datamodules.chest_xray import (
    ChestXrayDataModule,
    CXRTable,
    write_synthetic_chexpert,
    write_synthetic_mimic,
    write_synthetic_nih,
    write_synthetic_padchest,
    write_synthetic_tuberculosis,
)
from medxfer.datamodules.dermatology import write_synthetic_derm
from medxfer.datamodules.image_table import write_synthetic_table
from medxfer.datamodules.mammography import write_synthetic_mammo
from medxfer.datamodules.natural import (
    write_synthetic_cifar,
    write_synthetic_flowers,
    write_synthetic_pets,
)
from medxfer.datamodules.segmentation import (
    write_synthetic_drive,
    write_synthetic_montgomery,
    write_synthetic_siim,
)
from medxfer.tasks import MultiLabelClassifier

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
TINY = [
    "--trainer.max_steps=2",
    "--trainer.max_epochs=1",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--data.init_args.image_size=32",
    "--data.init_args.num_workers=0",
    "--data.init_args.batch_size=4",
    "--trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder laid out like the repository: data/synthetic, and ../shared beside it."""
    base = tmp_path_factory.mktemp("cli")
    work = base / "work"
    write_synthetic_chexpert(work / "data/synthetic/chexpert", n_patients=40, size=40, seed=0)
    write_synthetic_nih(work / "data/synthetic/nih", n_patients=10, size=40, seed=1)
    write_synthetic_mimic(work / "data/synthetic/mimic", n_patients=40, size=40, seed=0)
    write_synthetic_padchest(work / "data/synthetic/padchest", 30, size=40, seed=0)
    for folder, collection in (("montgomery_tb", "MCUCXR"), ("shenzhen_tb", "CHNCXR")):
        write_synthetic_tuberculosis(
            work / f"data/synthetic/{folder}", 24, size=40, seed=0, collection=collection
        )
    write_synthetic_cifar(work / "data/synthetic/natural", "cifar10", "python", 120, 40)
    write_synthetic_cifar(work / "data/synthetic/natural", "cifar100", "python", 200, 100)
    write_synthetic_flowers(work / "data/synthetic/flowers", 1020, size=32)
    write_synthetic_pets(work / "data/synthetic/pets", 10, size=32)
    write_synthetic_derm(work / "data/synthetic/derm", n_cases=40, size=40, seed=0)
    write_synthetic_derm(work / "data/synthetic/derm_b", n_cases=12, size=40, seed=1, shifted=True)
    write_synthetic_mammo(work / "data/synthetic/mammo", n_exams=30, size=40, seed=0)
    write_synthetic_mammo(
        work / "data/synthetic/mammo_b", n_exams=10, size=40, seed=1, shifted=True
    )
    write_synthetic_table(work / "data/synthetic/table", n_patients=40, size=40, seed=0)
    write_synthetic_montgomery(work / "data/synthetic/montgomery", 16, size=40, seed=0)
    write_synthetic_drive(work / "data/synthetic/drive", 8, 4, size=40, seed=0)
    write_synthetic_siim(work / "data/synthetic/siim", 16, size=40, seed=0)
    write_synthetic_table(
        work / "data/synthetic/table_folder", n_patients=40, size=40, seed=0, layout="folder"
    )
    write_synthetic_table(
        work / "data/synthetic/table_b", n_patients=12, size=40, seed=1, shifted=True
    )
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (base / "shared").symlink_to(shared)
    weights = base / "weights"
    weights.mkdir()
    write_bit_npz(create_backbone("bit-r50x1"), weights / "BiT-M-R50x1.npz")
    return work


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MEDXFER_WEIGHTS_DIR=str(cwd.parent / "weights"), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "medxfer", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _extra(config: str, workdir: Path) -> list[str]:
    if config == "chexpert_bit_r50x1.yaml":  # real-data paths: point them at the synthetic copies
        nih = {
            "nih": {
                "csv": "data/synthetic/nih/Data_Entry_2017_v2020.csv",
                "format": "nih",
                "split_list": "data/synthetic/nih/test_list.txt",
            }
        }
        return [
            "--data.init_args.train.csv=data/synthetic/chexpert/CheXpert-v1.0-synthetic/train.csv",
            f"--data.init_args.shifted={json.dumps(nih)}",
            "--model.init_args.channels_last=false",
        ]
    natural = {
        "cifar10_bit.yaml": "natural",
        "cifar10_bit_reduced.yaml": "natural",
        "cifar100_bit_reduced.yaml": "natural",
        "flowers102_bit_reduced.yaml": "flowers",
        "pets_bit_reduced.yaml": "pets",
    }
    if config in natural:  # the synthetic copies
        return [
            f"--data.init_args.root=data/synthetic/{natural[config]}",
            "--model.init_args.channels_last=false",
            "--trainer.precision=32-true",
        ]
    if config == "mimic_cxr.yaml":  # the official splits of the synthetic MIMIC-CXR-JPG copy
        mimic = "data/synthetic/mimic/"
        tables = {
            part: {
                "csv": mimic + "mimic-cxr-2.0.0-metadata.csv.gz",
                "format": "mimic",
                "official_split": split,
                "patients": mimic + "patients.csv.gz",
            }
            for part, split in (("train", "train"), ("val", "validate"), ("test", "test"))
        }
        return [
            *(f"--data.init_args.{part}={json.dumps(t)}" for part, t in tables.items()),
            "--model.init_args.channels_last=false",
        ]
    # the paper's derm / mammo setups name large BiT models and /data paths: keep every other
    # setting, point them at the synthetic copies and the (test-written) BiT-M R50x1 file
    small_bit = ["--model.init_args.backbone=bit-r50x1", "--model.init_args.channels_last=false"]
    if config == "derm_paper.yaml":
        return ["--data.init_args.train=data/synthetic/derm/cases.csv", *small_bit]
    if config.startswith("seg_benchmark_"):  # ResNet-50 weights and /data paths
        small = ["--model.init_args.backbone=timm/resnet18", "--model.init_args.pretrained=null"]
        data = {
            "seg_benchmark_drive.yaml": [
                "--data.init_args.train=data/synthetic/drive/training",
                "--data.init_args.test=data/synthetic/drive/test",
            ],
            "seg_benchmark_montgomery.yaml": ["--data.init_args.train=data/synthetic/montgomery"],
            "seg_benchmark_siim.yaml": [
                "--data.init_args.train=data/synthetic/siim/train-rle.csv",
                "--data.init_args.dicom_root=data/synthetic/siim",
            ],
        }
        return [*small, *data[config]]
    if config == "cls_benchmark_nih.yaml":  # ResNet-50 weights and /data paths
        nih = "data/synthetic/nih/"
        table = {"csv": nih + "Data_Entry_2017_v2020.csv", "format": "nih"}
        return [
            "--model.init_args.backbone=timm/resnet18",
            "--model.init_args.pretrained=null",
            f"--data.init_args.train={json.dumps({**table, 'split_list': nih + 'train_val_list.txt'})}",
            f"--data.init_args.test={json.dumps({**table, 'split_list': nih + 'test_list.txt'})}",
        ]
    if config == "tb_benchmark.yaml":  # ResNet-50 weights and /data paths
        tb = {"format": "tuberculosis"}
        return [
            "--model.init_args.backbone=timm/resnet18",
            "--model.init_args.pretrained=null",
            f"--data.init_args.train={json.dumps({**tb, 'csv': 'data/synthetic/shenzhen_tb'})}",
            "--data.init_args.shifted="
            + json.dumps({"montgomery": {**tb, "csv": "data/synthetic/montgomery_tb"}}),
        ]
    if config == "mammo_paper.yaml":
        return ["--data.init_args.train=data/synthetic/mammo/exams.csv", *small_bit]
    if (
        config in ("nih_subset.yaml", "image_table_nih.yaml")
        and not (workdir.parent / "shared/data/nih-chestxray14-subset").is_dir()
    ):
        pytest.skip("real NIH subset absent (../shared/data)")
    return []


def run_folder(workdir: Path, name: str) -> Path:
    """A working folder of its own for one command (its ``runs/`` is its own), beside
    ``workdir`` so that ``data/``, ``../shared`` and ``../weights`` resolve as there."""
    cwd = workdir.parent / f"run-{name}"
    cwd.mkdir()
    (cwd / "data").symlink_to(workdir / "data")
    return cwd


#: The published setups on real-data paths (BiT R50x1, pointed at the synthetic copies): 13-19 s
#: each, so they run in ``make test-all``; every other config runs in ``make test``.
PAPER_CONFIGS = {
    "chexpert_bit_r50x1.yaml",
    "cifar10_bit.yaml",
    "cifar10_bit_reduced.yaml",
    "cifar100_bit_reduced.yaml",
    "flowers102_bit_reduced.yaml",
    "pets_bit_reduced.yaml",
    "cls_benchmark_nih.yaml",
    "tb_benchmark.yaml",
    "derm_paper.yaml",
    "mammo_paper.yaml",
    "mimic_cxr.yaml",
}


@pytest.mark.parametrize(
    "config",
    [pytest.param(c, marks=[pytest.mark.slow] if c in PAPER_CONFIGS else []) for c in CONFIGS],
)
def test_every_shipped_config_fits_and_tests(config: str, workdir: Path) -> None:
    cwd = run_folder(workdir, config)
    # with a ConvergenceCallback the two steps are one whole epoch: validated once, at its end
    converges = "ConvergenceCallback" in (REPO / "configs" / config).read_text()
    epoch = ["--trainer.limit_train_batches=2"] if converges else []
    out = _run(
        ["fit", "-c", str(REPO / "configs" / config), *TINY, *epoch, *_extra(config, workdir)],
        cwd,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (results,) = cwd.glob("runs/**/results.json")
    values = json.loads(results.read_text())
    assert any(k.endswith(("/auroc_mean", "/dice_mean")) for k in values)
    assert (results.parent / "config.yaml").is_file()
    if converges:  # epochs to converge, kept beside the test metrics for the report
        history = json.loads((results.parent / "analysis/convergence.json").read_text())
        if any(h["value"] is not None for h in history["history"]):
            assert values[convergence_key(EPOCHS_TO_BEST)] == 1
        else:  # the monitored metric undefined on the tiny set (e.g. no positive case)
            assert convergence_key(EPOCHS_TO_BEST) not in values


def test_checkpoint_restores_to_identical_predictions(workdir: Path) -> None:
    run = workdir / "runs/restore"
    out = _run(
        [
            "fit",
            "-c",
            str(REPO / "configs/tiny.yaml"),
            f"--trainer.default_root_dir={run}",
            f"--trainer.logger.init_args.save_dir={run}",
            "--trainer.limit_test_batches=null",
        ],
        workdir,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = next(run.glob("**/checkpoints/*.ckpt"))
    written = json.loads(next(run.glob("**/results.json")).read_text())
    model = MultiLabelClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert model.hparams.pretrained is None
    # the restored weights equal the saved ones
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    # and give the subprocess's test metrics again
    import lightning as L

    root = workdir / "data/synthetic"
    dm = ChestXrayDataModule(
        CXRTable(str(root / "chexpert/CheXpert-v1.0-synthetic/train.csv")),
        shifted={"nih": CXRTable(str(root / "nih/Data_Entry_2017_v2020.csv"), format="nih")},
        image_size=32,
        batch_size=8,
        num_workers=0,
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    results = trainer.test(model, datamodule=dm, verbose=False)
    for key in ("test/chexpert/auroc_mean", "test/nih/auroc_mean", "test/nih/loss"):
        got = next(r[key] for r in results if key in r)
        assert got == pytest.approx(written[key], abs=1e-6)


def test_pretrained_weights_named_in_a_config_are_required(workdir: Path) -> None:
    env_missing = [
        "fit",
        "-c",
        str(REPO / "configs/tiny.yaml"),
        "--model.init_args.backbone=bit-r50x1",
        "--model.init_args.pretrained=bit-s",
    ]
    out = _run(env_missing, workdir)
    assert out.returncode != 0 and "BiT-S-R50x1.npz" in out.stderr


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        pytest.param(
            "backbones",
            ["bit-r50x1", ".bit-m", "BiT-M-R50x1.npz", "resnet50", ".swav", "timm/<name>"],
            id="backbones",
        ),
        pytest.param("tasks", ["MultiLabelClassifier", "TransferTask"], id="tasks"),
        pytest.param("datamodules", ["ChestXrayDataModule"], id="datamodules"),
    ],
)
def test_list(what: str, expected: list[str], tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "medxfer"  # the console script the install created
    assert script.is_file()
    out = subprocess.run([str(script), "list", what], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in expected:
        assert word in out.stdout


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_header_says_how_to_run_it(config: str) -> None:
    header = []
    for line in (REPO / "configs" / config).read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert f"medxfer fit -c configs/{config}" in "\n".join(header)


@pytest.mark.parametrize(
    ("config", "table", "command"),
    [
        pytest.param(
            "mammo_demo.yaml",
            "data/synthetic/mammo/exams.csv",
            "medxfer synthesize mammo data/synthetic",
            id="mammo",
        ),
        pytest.param(
            "derm_demo.yaml",
            "data/synthetic/derm/cases.csv",
            "medxfer synthesize derm data/synthetic",
            id="derm",
        ),
        pytest.param(
            "image_table_demo.yaml",
            "data/synthetic/table/metadata.csv",
            "medxfer synthesize table data/synthetic",
            id="table",
        ),
    ],
)
def test_demo_before_its_data_is_a_one_line_error_with_the_command(
    config: str, table: str, command: str, tmp_path: Path
) -> None:
    out = _run(["fit", "-c", str(REPO / "configs" / config)], tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("medxfer: error:")]
    assert len(errors) == 1 and f"table not found: {table}" in errors[0]
    assert f"create the demo data with: {command}" in out.stderr
