"""Run artifacts: results.json is strict JSON, results.md shows n/a, per-label positives and each
subgroup's size and value, and the analysis files are written where :mod:`medxfer.artifacts`
says."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medxfer import artifacts
from medxfer.artifacts import jsonable, write_json
from medxfer.commands.lightning import MedxferCLI
from medxfer.results import format_results


def _strict(text: str) -> object:
    """Parse ``text`` refusing the non-standard constants NaN / Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_results_json_is_strict_json(tmp_path: Path) -> None:
    from medxfer.callbacks import ConvergenceCallback

    convergence = ConvergenceCallback(monitor="val/auroc_mean")
    convergence.history = [(10, 0, 0.6), (20, 1, 0.7), (30, 2, 0.65)]  # best after epoch 1
    trainer = SimpleNamespace(
        is_global_zero=True,
        loggers=[],
        default_root_dir=str(tmp_path),
        callbacks=[convergence],
    )
    results = {
        "test/nih/auroc_mean": 0.75,
        "test/nih/subgroup/sex/gap": math.nan,
        "test/nih/subgroup/sex/ratio": math.inf,
        "val/auroc_mean": 0.5,  # not a test metric: not written
    }
    MedxferCLI.write_results(SimpleNamespace(trainer=trainer), [results])
    values = _strict((tmp_path / "results.json").read_text())
    epochs = artifacts.convergence_key(artifacts.EPOCHS_TO_BEST)
    assert values.pop(epochs) == 2  # epochs to converge: two epochs trained at the best
    assert values.pop("convergence/best") == 0.7 and values.pop("convergence/best_step") == 20
    assert {k for k in values if k.startswith("convergence/")} == {
        "convergence/best_epoch",
        "convergence/epoch_at_fraction",
        "convergence/fraction",
        "convergence/step_at_fraction",
    }
    assert {k: v for k, v in values.items() if not k.startswith("convergence/")} == {
        "test/nih/auroc_mean": 0.75,
        "test/nih/subgroup/sex/gap": None,
        "test/nih/subgroup/sex/ratio": "inf",
    }
    table = (tmp_path / "results.md").read_text()
    assert "| nih | sex | n/a |" in table and "convergence" not in table


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"a": math.nan}, {"a": None}, id="nan"),
        pytest.param({"a": [1.0, -math.inf]}, {"a": [1.0, "-inf"]}, id="inf-in-list"),
        pytest.param({1: (0.5,)}, {"1": [0.5]}, id="keys-and-tuples"),
    ],
)
def test_analysis_json_is_strict(tmp_path: Path, data: dict, expected: dict) -> None:
    path = write_json(tmp_path / "analysis" / "x.json", data)
    assert _strict(path.read_text()) == expected == jsonable(data)


def test_results_table_shows_positives_and_na() -> None:
    flat = {
        "test/chexpert/auroc_mean": 0.8,
        "test/chexpert/auroc/Edema": 0.81234,
        "test/chexpert/positives/Edema": 45.0,
        "test/chexpert/auroc/Pleural_Effusion": math.nan,
        "test/chexpert/positives/Pleural_Effusion": 0.0,
        "test/chexpert/ece": 0.05,
        "test/chexpert/subgroup/age/mean": 0.8,
        "test/chexpert/subgroup/age/gap": math.nan,
        "test/chexpert/subgroup/age/worst": 0.8,
        "test/chexpert/subgroup/age/ratio": math.nan,
    }
    lines = format_results(flat).splitlines()
    assert lines[0] == "| set | auroc_mean | ece | auroc/Edema | auroc/Pleural_Effusion |"
    assert lines[2] == "| chexpert | 0.8000 | 0.0500 | 0.8123 (45 pos) | n/a (0 pos) |"
    assert "| chexpert | age | 0.8000 | n/a | 0.8000 | n/a |" in lines


def test_results_md_lists_every_subgroup_with_its_size(tmp_path: Path) -> None:
    """The subgroup callback's report of a hand-made test set, then ``write_results``: one row per
    group in results.md. AUROC of one label with ``min_size=2``: F (0.9+, 0.8-, 0.7+, 0.6-) ranks
    3 of its 4 positive-negative pairs right, 0.75; M has positives only (undefined, n/a);
    ``unknown`` (0.1-, 0.5+) is 1.0, scored apart from the gap; X has one case (too small)."""
    from medxfer.callbacks import SubgroupCallback

    probs = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.2], [0.4], [0.1], [0.5], [0.3]])
    target = torch.tensor([[1.0], [0], [1], [0], [1], [1], [0], [1], [0]])
    sex = ["F", "F", "F", "F", "M", "M", "unknown", "unknown", "X"]
    callback = SubgroupCallback(["sex"], min_size=2)
    metric = callback.make_metric(SimpleNamespace(output_type="multilabel"))
    callback.update(metric, {"probs": probs, "target": target, "groups": {"sex": sex}})
    trainer = SimpleNamespace(
        is_global_zero=True,
        current_epoch=0,
        loggers=[],
        default_root_dir=str(tmp_path),
    )
    logged: dict[str, float] = {"test/nih/auroc_mean": 0.6}
    module = SimpleNamespace(log_dict=lambda values, **_: logged.update(values))
    callback.report(trainer, module, "test/nih", metric)
    MedxferCLI.write_results(SimpleNamespace(trainer=trainer), [logged])

    lines = (tmp_path / "results.md").read_text().splitlines()
    start = lines.index("| set | attribute | group | n | auroc |")
    assert lines[start + 2 :] == [
        "| nih | sex | F | 4 | 0.7500 |",
        "| nih | sex | M | 2 | n/a |",
        "| nih | sex | X | 1 | too small |",
        "| nih | sex | unknown | 2 | 1.0000 (apart) |",
    ]
    assert "| nih | sex | 0.7500 | n/a | 0.7500 | n/a |" in lines  # the summary stays
    # results.json keeps its keys: what was logged, nothing from the subgroup file
    assert set(json.loads((tmp_path / "results.json").read_text())) == set(logged)


# Names the writers and the report share ---------------------------------------------------------
@pytest.mark.parametrize(
    ("folder", "seed"),
    [
        pytest.param("seed0", 0, id="zero"),
        pytest.param("seed12", 12, id="two-digits"),
        pytest.param("seeds", None, id="no-number"),
        pytest.param("seed", None, id="bare"),
        pytest.param("seed-1", None, id="sign"),
        pytest.param("report", None, id="other-folder"),
    ],
)
def test_replica_folders_are_seed_k(folder: str, seed: int | None) -> None:
    assert artifacts.replica_seed(folder) == seed
    if seed is not None:
        assert artifacts.replica_dir(seed) == folder  # medxfer study's STUDY/<name>/seed<k>/


def test_result_keys_are_test_set_and_metric() -> None:
    assert artifacts.result_key("nih", artifacts.AUROC_MEAN) == "test/nih/auroc_mean"
    assert artifacts.result_key("chexpert", artifacts.ECE) == "test/chexpert/ece"
    assert artifacts.result_key("derm", artifacts.TOP1) == "test/derm/top1"
    keys = ["test/nih/ece", "test/chexpert/auroc/Edema", "val/auroc_mean", "val/nih/ece", "test"]
    assert [artifacts.is_result_key(k) for k in keys] == [True, True, False, False, False]
    assert artifacts.result_sets(keys) == ["chexpert", "nih"]


def test_metrics_compute_the_keys_the_report_reads() -> None:
    """The keys the metrics log (and results.json keeps) are those of medxfer.artifacts."""
    from medxfer.metrics import CalibrationError, MultilabelAUROC
    from medxfer.tasks.multi_image import CaseMetrics

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    computed = {}
    for metric in (
        MultilabelAUROC(["a", "b"]),
        CalibrationError(label_names=["a", "b"]),
        CaseMetrics(["a", "b"]),
    ):
        metric.update(probs, target)
        computed.update(metric.compute())
    assert {"auroc_mean", "ece", "top1"} <= set(computed)
    assert computed[artifacts.TOP1].item() == pytest.approx(2 / 3)  # cases 1 and 2 right
    assert computed[artifacts.AUROC_MEAN].item() == pytest.approx(1.0)  # both labels separate
