"""The report's calibration and fairness section: replica means of ECE, temperature, scaled ECE,
ECE and TPR at a fixed specificity per subgroup and the equalised-odds gap, and per-label
reliability bins pooled over replicas -- against hand-computed means of what each replica wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medxfer import artifacts, plots
from medxfer.metrics import subgroup_gaps
from medxfer.report import StudyRuns, calibration_fairness_section

NAN = float("nan")


def _replica(root: Path, seed: int, ece: float, t: float, scaled: float, bins: dict) -> dict:
    folder = root / "r50" / artifacts.replica_dir(seed)
    analysis = folder / artifacts.ANALYSIS_DIR
    artifacts.write_json(folder / artifacts.RESULTS_JSON, {artifacts.result_key("nih", "ece"): ece})
    artifacts.write_json(
        analysis / artifacts.calibration_json("test/nih"),
        {
            artifacts.ECE: ece,
            f"{artifacts.ECE}/Edema": ece + 0.01,
            artifacts.TEMPERATURE: t,
            artifacts.ECE_SCALED: scaled,
            artifacts.BINS_PER_LABEL: {"Edema": bins},
        },
    )
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(60, 2, generator=g)
    target = (torch.rand(60, 2, generator=g) < probs).float()
    reports = subgroup_gaps(probs, target, {"sex": ["F", "M"] * 30}, min_size=5)
    artifacts.write_json(
        analysis / artifacts.subgroups_json("test/nih"),
        {artifacts.ATTRIBUTES: {a: r.as_dict() for a, r in reports.items()}},
    )
    return reports["sex"].as_dict()


def test_section_averages_replicas_and_pools_bins(tmp_path: Path, monkeypatch) -> None:
    b1 = {"count": [2, 0, 6], "confidence": [0.1, None, 0.9], "outcome": [0.5, None, 1.0]}
    b2 = {"count": [2, 4, 0], "confidence": [0.2, 0.5, None], "outcome": [0.0, 0.25, None]}
    s1 = _replica(tmp_path, 0, 0.10, 1.5, 0.04, b1)
    s2 = _replica(tmp_path, 1, 0.20, 2.5, 0.06, b2)
    drawn = {}
    monkeypatch.setattr(
        plots,
        "plot_reliability_per_label",
        lambda bins, ece, title, path: drawn.update(bins=bins, ece=ece, path=path),
    )
    md = "\n".join(calibration_fairness_section(StudyRuns.read(tmp_path), tmp_path / "out"))
    assert "| r50 | nih | 0.150 | 2.000 | 0.050 | 2 |" in md
    pooled = drawn["bins"]["r50"]["Edema"]
    assert pooled["count"].tolist() == [4, 4, 6]
    assert pooled["confidence"] == pytest.approx([0.15, 0.5, 0.9])
    assert pooled["outcome"] == pytest.approx([0.25, 0.25, 1.0])
    assert drawn["ece"] == {"r50": {"Edema": pytest.approx(0.16)}}
    assert drawn["path"].name == "reliability_labels_nih.png"
    eo = np.mean([s1["equalized_odds_gap"], s2["equalized_odds_gap"]])
    ece_f = np.mean([s1["ece"]["F"], s2["ece"]["F"]])
    tpr_m = np.mean([s1["tpr_at_specificity"]["M"], s2["tpr_at_specificity"]["M"]])
    row = next(line for line in md.splitlines() if line.startswith("| r50 | nih | sex |"))
    assert f"F {ece_f:.3f}" in row and f"M {tpr_m:.3f}" in row and row.endswith(f"| {eo:.3f} |")


def test_section_is_empty_without_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "r50" / artifacts.replica_dir(0)
    artifacts.write_json(folder / artifacts.RESULTS_JSON, {artifacts.result_key("nih", "ece"): 0.1})
    assert calibration_fairness_section(StudyRuns.read(tmp_path), tmp_path / "out") == []


def test_section_draws_the_figure(tmp_path: Path) -> None:
    bins = {"count": [1, 0], "confidence": [0.2, None], "outcome": [0.0, None]}
    _replica(tmp_path, 0, 0.1, 1.2, 0.05, bins)
    md = calibration_fairness_section(StudyRuns.read(tmp_path), tmp_path)
    assert "![reliability per label, nih](reliability_labels_nih.png)" in md
    assert (tmp_path / "reliability_labels_nih.png").stat().st_size > 0
