"""Studies end to end on CPU, through the study runner as a user runs it (``medxfer study run``
then ``medxfer report``), on synthetic data in the real layouts: the benchmark's layout (3
initialisations x 2 tasks x 3 seeds: the best-versus-others, epochs-to-converge, mean ± std and
published-replica tables) and the scale study's natural-target layout (3 pre-training sources
x 2 shot counts x 2 seeds: mean ± std per cell). Slow: 18 and 12 small fits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from medxfer.backbones import create_backbone
from medxfer.datamodules.chest_xray import write_synthetic_chexpert, write_synthetic_nih
from medxfer.datamodules.natural import write_synthetic_cifar

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: Two validated epochs of two steps each: enough for epochs to converge to mean something.
SHORT = {
    "trainer.max_steps": -1,
    "trainer.max_epochs": 2,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
}


def medxfer(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "medxfer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out


def section(text: str, heading: str) -> str:
    """The Markdown under ``heading`` up to the next heading of its level or above."""
    start = text.index(heading)
    level = heading.split(" ")[0]
    rest = text[start + len(heading) :]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", rest, re.M)]
    return rest[: ends[0]] if ends else rest


def test_benchmark_layout_study_renders_every_table(tmp_path: Path) -> None:
    write_synthetic_chexpert(tmp_path / "data/synthetic/chexpert", n_patients=30, size=32, seed=0)
    write_synthetic_nih(tmp_path / "data/synthetic/nih", n_patients=8, size=32, seed=1)
    (tmp_path / "convergence.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: medxfer.callbacks.ConvergenceCallback\n"
        "      init_args: {monitor: val/auroc_mean, mode: max}\n"
    )
    study = {
        "out": "bench",
        "base": [str(REPO / "configs/tiny.yaml"), "convergence.yaml"],
        "overrides": SHORT,
        "axes": {
            "init": {
                name: {"model.init_args.backbone": f"timm/{name}"}
                for name in ("test_resnet", "test_efficientnet", "test_convnext")
            },
            "task": {
                "cxr5": {"data.init_args.name": "cxr5"},
                "cxr2": {
                    "data.init_args.name": "cxr2",
                    "data.init_args.labels": ["Cardiomegaly", "Edema"],
                },
            },
        },
        "seeds": 3,
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    plan = medxfer(["study", "plan", "bench.yaml"], tmp_path).stdout
    assert "6 run(s) x 3 seed(s) = 18 replica(s)" in plan
    medxfer(["study", "run", "bench.yaml", "--jobs", "2"], tmp_path)
    results = sorted((tmp_path / "bench").glob("*/seed*/results.json"))
    assert len(results) == 18
    # published replicas of one cell: the report shows them beside the reproduced ones
    (tmp_path / "published.csv").write_text(
        "init,task,set,seed,metric,value\n"
        + "".join(
            f"test_resnet,cxr5,cxr5,{k},auroc_mean,{v}\n" for k, v in enumerate((0.7, 0.72, 0.71))
        )
    )
    medxfer(["report", "bench", "--layout", "init:task", "--reference", "published.csv"], tmp_path)
    text = (tmp_path / "bench/report/report.md").read_text()
    # mean ± std per configuration and test set, with bootstrap intervals
    perf = section(text, "## Performance")
    rows = [ln for ln in perf.splitlines() if ln.startswith("| test_")]
    assert len(rows) == 6 * 2  # 6 configurations x (their own test set + nih)
    assert all(" ± " in row and "[" in row for row in rows)
    # best against every other, per task: one best cell per task and test set
    best = section(text, "## Best against every other configuration")
    auroc = section(best, "### auroc_mean")
    assert auroc.count("(best)") >= 2 and "p=" in auroc
    # epochs to converge, recorded by every replica
    converge = section(text, "## Epochs to converge")
    assert sum(ln.startswith("| test_") for ln in converge.splitlines()) == 6
    # the reference cell: its published mean beside the reproduced one, with a test
    ref = section(text, "## Against published replicas")
    assert "0.710 ± 0.010" in ref and "test_resnet" in ref
    # the values are the runs' own: a cell's mean is the mean of its replicas' results.json
    cell = [
        json.loads(p.read_text())["test/cxr5/auroc_mean"]
        for p in (tmp_path / "bench/test_resnet_cxr5").glob("seed*/results.json")
    ]
    mean = f"{sum(cell) / 3:.3f} ± "
    assert any(row.startswith("| test_resnet_cxr5 |") and mean in row for row in rows)


def test_natural_target_study_reports_mean_and_std_per_cell(tmp_path: Path) -> None:
    write_synthetic_cifar(tmp_path / "data/synthetic/natural", "cifar10", "python", 200, 100)
    for k, name in enumerate(("source_a", "source_b")):
        torch.manual_seed(k)
        model = create_backbone("timm/test_resnet")
        save_file({n: t.contiguous() for n, t in model.state_dict().items()},
                  tmp_path / f"{name}.safetensors")  # fmt: skip
    study = {
        "out": "natural",
        "base": [str(REPO / "configs/natural_demo.yaml")],
        "overrides": {
            **SHORT,
            "model.init_args.backbone": "timm/test_resnet",
            "data.init_args.batch_size": 8,
        },
        "axes": {
            "source": {
                "random": {"model.init_args.pretrained": None},
                "a": {"model.init_args.pretrained": "source_a.safetensors"},
                "b": {"model.init_args.pretrained": "source_b.safetensors"},
            },
            "shots": {"data.init_args.shots_per_class": [1, 5]},
        },
        "seeds": 2,
    }
    (tmp_path / "natural.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    medxfer(["study", "run", "natural.yaml", "--jobs", "2"], tmp_path)
    assert len(sorted((tmp_path / "natural").glob("*/seed*/results.json"))) == 12
    medxfer(["report", "natural", "--layout", "source:shots"], tmp_path)
    text = (tmp_path / "natural/report/report.md").read_text()
    grid = section(text, "## Grid")
    top1 = section(grid, "### top1")
    rows = [ln for ln in top1.splitlines() if ln.startswith(("| random", "| a ", "| b "))]
    assert len(rows) == 3
    assert all(row.count(" ± ") == 2 for row in rows)  # shots 1 and 5
    # a cell is its replicas' mean: source a at 5 shots
    values = [
        json.loads(p.read_text())["test/natural/top1"]
        for p in (tmp_path / "natural/a_shots5").glob("seed*/results.json")
    ]
    (row,) = [r for r in rows if r.startswith("| a ")]
    assert f"{sum(values) / 2:.3f} ± " in row
