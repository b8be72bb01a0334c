"""W&B sweeps: each sweep's command line, built the way ``wandb agent`` builds it, parses and
reaches the model; the W&B logger stays offline without a key and uploads no paths or images."""

from __future__ import annotations

import itertools
import os
from argparse import Namespace
from pathlib import Path

import pytest
import yaml
from bit_format import write_bit_npz

from medxfer.backbones import create_backbone
from medxfer.commands.lightning import build_cli
from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih
from medxfer.datamodules.dermatology import write_synthetic_derm
from medxfer.datamodules.mammography import write_synthetic_mammo
from medxfer.loggers import REDACTED, WandbLogger, redact_paths

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def agent_command(sweep: dict, point: dict[str, object]) -> list[str]:
    """The command ``wandb agent`` runs: ``${env}`` dropped, ``${program}`` substituted and
    ``${args}`` expanded to ``--key=value`` per parameter."""
    out: list[str] = []
    for part in sweep["command"]:
        if part == "${env}":
            continue
        if part == "${program}":
            out.append(sweep["program"])
        elif part == "${args}":
            out += [f"--{k}={v}" for k, v in point.items()]
        else:
            out.append(part)
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sweeps")
    data = base / "data"
    write_synthetic_chexpert(data / "chexpert", n_patients=20, size=32)
    write_synthetic_nih(data / "nih", n_patients=5, size=32)
    write_synthetic_derm(data / "derm", n_cases=30, size=32)
    write_synthetic_mammo(data / "mammo", n_exams=20, size=32)
    (base / "weights").mkdir()
    write_bit_npz(create_backbone("bit-r50x1"), base / "weights" / "BiT-M-R50x1.npz")
    return base


DATA = {
    "chexpert_bit.yaml": lambda d: [
        f"--data.init_args.train.csv={d}/chexpert/CheXpert-v1.0-synthetic/train.csv",
        "--data.init_args.shifted={}",
    ],
    "derm_bit.yaml": lambda d: [
        f"--data.init_args.train={d}/derm/cases.csv",
        "--model.init_args.backbone=bit-r50x1",
    ],
    "mammo_bit.yaml": lambda d: [f"--data.init_args.train={d}/mammo/exams.csv"],
    "resolution_chexpert.yaml": lambda d: [
        f"--data.init_args.train.csv={d}/chexpert/CheXpert-v1.0-synthetic/train.csv",
        "--data.init_args.shifted={}",
    ],
    "resolution_derm.yaml": lambda d: [
        f"--data.init_args.train={d}/derm/cases.csv",
        "--model.init_args.backbone=bit-r50x1",
    ],
    "resolution_mammo.yaml": lambda d: [f"--data.init_args.train={d}/mammo/exams.csv"],
}


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=[p.name for p in SWEEPS])
def test_agent_command_line_reaches_the_model(
    sweep_file: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = yaml.safe_load(sweep_file.read_text())
    grid = {k: v["values"] for k, v in sweep["parameters"].items()}
    first = dict(zip(grid, next(itertools.product(*grid.values())), strict=True))
    last = dict(zip(grid, list(itertools.product(*grid.values()))[-1], strict=True))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(workdir / "weights"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(workdir))
    for point in (first, last):
        cmd = agent_command(sweep, point)
        assert cmd[:2] == ["medxfer", "fit"]
        extra = [
            *DATA[sweep_file.name](workdir / "data"),
            f"--trainer.default_root_dir={workdir / 'runs'}",
        ]
        cli = build_cli([*cmd[2:], *extra], run=False)
        for key, value in point.items():
            section, *rest = key.split(".")
            if section == "model":
                got = getattr(cli.model.hparams, rest[-1])
            elif section == "data":
                got = cli.datamodule.hparams[rest[-1]]
            else:
                got = getattr(cli.trainer, rest[-1])
            assert got == (pytest.approx(value) if isinstance(value, float) else value), key
        assert any(isinstance(lg, WandbLogger) for lg in cli.trainer.loggers)


def test_wandb_logger_is_offline_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    logger = WandbLogger(save_dir=str(tmp_path / "w"))
    assert logger._offline is True and logger._log_model is False
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert WandbLogger(save_dir=str(tmp_path / "w"))._offline is False


def test_paths_are_redacted_and_images_refused(tmp_path: Path) -> None:
    params = {
        "backbone": "bit-r50x1",
        "pretrained": "/home/me/weights/BiT-M-R50x1.npz",
        "lr": 0.003,
        "data": Namespace(
            train="data/cases.csv", labels=["Edema", "Pleural Effusion"], name="chexpert"
        ),
        "shifted": {"nih": {"csv": "/data/nih/Data_Entry_2017.csv", "format": "nih"}},
    }
    out = redact_paths(params)
    assert out["pretrained"] == REDACTED and out["data"]["train"] == REDACTED
    assert out["shifted"]["nih"]["csv"] == REDACTED and out["shifted"]["nih"]["format"] == "nih"
    assert (
        out["backbone"] == "bit-r50x1"
        and out["lr"] == 0.003
        and out["data"]["labels"] == ["Edema", "Pleural Effusion"]
    )
    logger = WandbLogger(save_dir=str(tmp_path / "w"), offline=True)
    with pytest.warns(UserWarning, match="does not upload images"):
        logger.log_image("x", [])
    assert not os.listdir(tmp_path / "w")  # nothing started, nothing written
