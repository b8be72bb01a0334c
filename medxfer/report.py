"""``medxfer report STUDY``: the paper's tables and plots from a study folder.

For every configuration (``STUDY/<name>/seed<k>/``, written by ``medxfer study``) and test set:
the mean over replicas of AUROC with a 95 % percentile bootstrap interval
(:func:`medxfer.metrics.bootstrap_ci`: 1000 resamples of the test cases, the same resamples for
every replica, so the interval is that of the replica mean), ECE and top-1 where logged;
data-efficiency curves (metric against ``train_fraction`` per backbone) and the fraction at
which each backbone matches a baseline; subgroup gaps; CKA against depth and weight drift per
stage; and Welch's two-sample t-test between two configurations across replicas. Files that some
runs have and others lack (see :mod:`medxfer.artifacts`) are listed, never silently skipped.
Written as Markdown and HTML with PNG figures in ``STUDY/report/``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from medxfer import artifacts
from medxfer.metrics import SubgroupReport, bootstrap_ci, stage_drift
from medxfer.naming import eval_prefix
from medxfer.plots import plt

__all__ = ["Run", "build_report", "find_runs", "missing_artifacts"]


@dataclass
class Run:
    """One replica of a configuration."""

    name: str
    seed: int
    folder: Path
    results: dict[str, float]
    backbone: str = "?"
    pretrained: str = "none"
    fraction: float = 1.0
    analysis: Path = field(init=False)

    def __post_init__(self) -> None:
        self.analysis = self.folder / artifacts.ANALYSIS_DIR


def _number(v: object) -> float:
    """A value of strict JSON as a float: ``null`` -> NaN, ``"inf"`` -> inf."""
    return math.nan if v is None else float(v)  # type: ignore[arg-type]


def find_runs(study: Path) -> list[Run]:
    """Every finished replica of ``study`` (those with ``results.json``)."""
    runs = []
    for res in sorted(study.glob(f"*/seed*/{artifacts.RESULTS_JSON}")):
        folder = res.parent
        results = {k: _number(v) for k, v in json.loads(res.read_text()).items()}
        run = Run(folder.parent.name, int(folder.name[4:]), folder, results)
        cfg_path = folder / artifacts.CONFIG_YAML
        if cfg_path.is_file():
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
            model = (cfg.get("model") or {}).get("init_args", {})
            data = (cfg.get("data") or {}).get("init_args", {})
            run.backbone = str(model.get("backbone", "?"))
            run.pretrained = str(model.get("pretrained") or model.get("initialised_from") or "none")
            run.fraction = float(data.get("train_fraction") or 1.0)
        runs.append(run)
    if not runs:
        raise FileNotFoundError(
            f"{study}: no finished runs (expected <name>/seed<k>/{artifacts.RESULTS_JSON}, "
            "written by medxfer study)"
        )
    return runs


def _onehot_if_multiclass(target: np.ndarray) -> np.ndarray:
    known = target[~np.isnan(target)]
    if known.size and not np.isin(known, (0.0, 1.0)).all():  # soft labels: score the top label
        return np.eye(target.shape[1])[np.nan_to_num(target).argmax(axis=1)]
    return target


def _auroc_cell(reps: list[Run], test_set: str, n_resamples: int) -> tuple[float, str]:
    """The replicas' mean AUROC on ``test_set`` and its table cell: with the bootstrap interval
    of the replica mean when every replica left its per-case predictions on the same cases."""
    files = [r.analysis / artifacts.predictions_npz(test_set) for r in reps]
    if not all(f.is_file() for f in files):
        reason = "per-case predictions missing"
    else:
        preds = [np.load(f) for f in files]
        ids = preds[0][artifacts.CASE_ID]
        if all(np.array_equal(p[artifacts.CASE_ID], ids) for p in preds):
            ci = bootstrap_ci(
                np.stack([p[artifacts.PROBS] for p in preds]),
                _onehot_if_multiclass(np.asarray(preds[0][artifacts.TARGET], dtype=np.float64)),
                "auroc",
                n_resamples,
            )
            return ci.value, f"{ci.value:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
        reason = "replicas tested on different cases"
    point = _mean([r.results.get(f"{eval_prefix('test', test_set)}/auroc_mean") for r in reps])
    return point, f"{_fmt(point)} (no interval: {reason})"


def missing_artifacts(study: Path, runs: list[Run], sets: Sequence[str]) -> list[str]:
    """One line per run folder lacking a file that the report reads and other runs have (and
    per replica folder without ``results.json``: unfinished, left out of every table)."""
    lines = [
        f"`{folder.relative_to(study)}` lacks `{artifacts.RESULTS_JSON}` (unfinished: in no table)"
        for folder in sorted(study.glob("*/seed*"))
        if folder.is_dir() and not (folder / artifacts.RESULTS_JSON).is_file()
    ]
    analysis = [artifacts.predictions_npz(s) for s in sets]
    analysis += [artifacts.subgroups_json(eval_prefix("test", s)) for s in sets]
    analysis += [artifacts.CKA_JSON, artifacts.WEIGHT_DRIFT_JSON]
    expected = [artifacts.CONFIG_YAML] + [f"{artifacts.ANALYSIS_DIR}/{a}" for a in analysis]
    for name in expected:
        lacking = [r for r in runs if not (r.folder / name).is_file()]
        if len(lacking) < len(runs):
            lines += [f"`{r.folder.relative_to(study)}` lacks `{name}`" for r in lacking]
    return lines


def _first(runs: list[Run], filename: str) -> Path | None:
    """``analysis/<filename>`` of the first replica that has it."""
    return next((p for r in runs if (p := r.analysis / filename).is_file()), None)


def _sets(runs: list[Run]) -> list[str]:
    return sorted({k.split("/")[1] for r in runs for k in r.results if k.startswith("test/")})


def _mean(values: Sequence[float | None]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )


def _matching_fraction(fractions: list[float], values: list[float], target: float) -> float | None:
    """Smallest fraction at which the curve reaches ``target`` (linear between points)."""
    pts = sorted(zip(fractions, values, strict=True))
    for (f0, v0), (f1, v1) in zip([(0.0, -math.inf), *pts], pts, strict=False):
        if v1 >= target:
            if v0 == -math.inf or v1 == v0:
                return f1
            return f0 + (target - v0) / (v1 - v0) * (f1 - f0)
    return None


def build_report(
    study: Path,
    out: Path | None = None,
    baseline: str | None = None,
    compare: Sequence[str] | None = None,
    n_resamples: int = 1000,
) -> Path:
    """Write ``report.md``, ``report.html`` and the figures; returns the Markdown path."""
    runs = find_runs(study)
    out = out or study / "report"
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({r.name for r in runs})
    by_name = {n: [r for r in runs if r.name == n] for n in names}
    sets = _sets(runs)
    md: list[str] = [
        f"# Study report: {study.name}",
        "",
        f"{len(runs)} runs, {len(names)} configurations, test sets: {', '.join(sets)}.",
        "",
    ]
    missing = missing_artifacts(study, runs, sets)
    if missing:
        md += [
            "## Missing artifacts",
            "",
            "These runs lack files that other runs of the study have: an AUROC interval needs "
            "every replica's predictions; subgroup and feature-reuse figures use the replicas "
            "that have their files.",
            "",
            *[f"- {line}" for line in missing],
            "",
        ]
    figures: list[tuple[str, str]] = []

    # Main table ------------------------------------------------------------------------
    rows, mean_auroc = [], {}
    for name in names:
        reps = by_name[name]
        for s in sets:
            point, auroc = _auroc_cell(reps, s, n_resamples)
            mean_auroc[(name, s)] = point
            rows.append(
                [
                    name,
                    reps[0].backbone,
                    reps[0].pretrained,
                    f"{reps[0].fraction:g}",
                    s,
                    str(len(reps)),
                    auroc,
                    _fmt(_mean([r.results.get(f"{eval_prefix('test', s)}/ece") for r in reps])),
                    _fmt(_mean([r.results.get(f"{eval_prefix('test', s)}/top1") for r in reps])),
                ]
            )
    md += [
        "## Performance",
        "",
        "AUROC: mean over replicas with a 95 % bootstrap interval over test cases "
        f"({n_resamples} resamples). ECE and top-1: means over replicas.",
        "",
        _table(
            [
                "configuration",
                "backbone",
                "pre-training",
                "train fraction",
                "test set",
                "replicas",
                "AUROC [95% CI]",
                "ECE",
                "top-1",
            ],
            rows,
        ),
        "",
    ]

    # Data efficiency -----------------------------------------------------------------------
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        groups.setdefault((by_name[name][0].backbone, by_name[name][0].pretrained), []).append(name)
    if any(len({by_name[n][0].fraction for n in ns}) > 1 for ns in groups.values()):
        fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.5), squeeze=False)
        for ax, s in zip(axes[0], sets, strict=True):
            for (bb, pre), ns in groups.items():
                pts = sorted((by_name[n][0].fraction, mean_auroc[(n, s)]) for n in ns)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{bb} ({pre})")
            ax.set(xscale="log", xlabel="fraction of training data", ylabel="AUROC", title=s)
            ax.legend(fontsize=7)
        fig.tight_layout()
        with artifacts.atomic_path(out / "data_efficiency.png") as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        figures.append(("Data efficiency", "data_efficiency.png"))
        md += ["## Data efficiency", "", "![data efficiency](data_efficiency.png)", ""]
        if baseline is not None:
            if baseline not in by_name:
                raise ValueError(
                    f"baseline {baseline!r} is not a configuration of the study: {names}"
                )
            rows = []
            for s in sets:
                target = mean_auroc[(baseline, s)]
                for (bb, pre), ns in groups.items():
                    fr = [by_name[n][0].fraction for n in ns]
                    match = _matching_fraction(fr, [mean_auroc[(n, s)] for n in ns], target)
                    rows.append(
                        [
                            s,
                            f"{bb} ({pre})",
                            _fmt(target),
                            "not reached" if match is None else f"{match:.3g}",
                        ]
                    )
            md += [
                f"Fraction of training data at which each backbone matches the baseline `{baseline}`:",
                "",
                _table(["test set", "backbone", "baseline AUROC", "matching fraction"], rows),
                "",
            ]

    # Subgroups ------------------------------------------------------------------------------
    rows, gap_plot = [], {}
    for name in names:
        for s in sets:
            filename = artifacts.subgroups_json(eval_prefix("test", s))
            reports = [
                json.loads(p.read_text())[artifacts.ATTRIBUTES]
                for r in by_name[name]
                if (p := r.analysis / filename).is_file()
            ]
            for attr in sorted({a for rep in reports for a in rep}):
                vals = [SubgroupReport.from_dict(rep[attr]) for rep in reports if attr in rep]
                gap, worst = _mean([v.gap for v in vals]), _mean([v.worst for v in vals])
                small = sorted({g for v in vals for g in v.too_small})
                apart = sorted({g for v in vals for g in v.unknown})
                rows.append(
                    [
                        name,
                        s,
                        attr,
                        _fmt(gap),
                        _fmt(worst),
                        ", ".join(small) or "-",
                        ", ".join(apart) or "-",
                    ]
                )
                gap_plot[(name, s, attr)] = gap
    if rows:
        md += [
            "## Subgroups",
            "",
            "Gap: the largest relative deviation of a subgroup from the mean over subgroups "
            "(mean over replicas; n/a with fewer than two scored subgroups); subgroups under the "
            "minimum size are listed, not scored; cases of unknown attribute are scored apart, "
            "not in the gap (unless the run asked for include_unknown).",
            "",
            _table(
                [
                    "configuration",
                    "test set",
                    "attribute",
                    "gap",
                    "worst group",
                    "too small",
                    "not in gap",
                ],
                rows,
            ),
            "",
        ]
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(gap_plot)), 3.5))
        ax.bar(range(len(gap_plot)), list(gap_plot.values()))  # n/a: no bar
        ax.set_xticks(
            range(len(gap_plot)), ["/".join(k) for k in gap_plot], rotation=90, fontsize=6
        )
        ax.set(ylabel="subgroup gap", title="subgroup gaps")
        fig.tight_layout()
        with artifacts.atomic_path(out / "subgroup_gaps.png") as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        figures.append(("Subgroup gaps", "subgroup_gaps.png"))
        md += ["![subgroup gaps](subgroup_gaps.png)", ""]

    # Feature reuse ---------------------------------------------------------------------------
    cka = {
        n: json.loads(p.read_text())[artifacts.HISTORY]
        for n in names
        if (p := _first(by_name[n], artifacts.CKA_JSON))
    }
    if cka:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for n, hist in cka.items():
            last = ([h for h in hist if h[artifacts.WHEN] == artifacts.END] or hist[-1:])[-1]
            values = last[artifacts.CKA]
            ax.plot(range(len(values)), list(values.values()), "o-", label=n)
        ax.set(
            xlabel="stage",
            ylabel="CKA to initialisation",
            ylim=(0, 1.05),
            title="CKA against depth",
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        with artifacts.atomic_path(out / artifacts.CKA_PLOT) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        figures.append(("CKA against depth", artifacts.CKA_PLOT))
        md += ["## Feature reuse", "", f"![CKA against depth]({artifacts.CKA_PLOT})", ""]
    drift = {
        n: stage_drift(json.loads(p.read_text())[artifacts.HISTORY][-1][artifacts.DRIFT])
        for n in names
        if (p := _first(by_name[n], artifacts.WEIGHT_DRIFT_JSON))
    }
    if drift:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(drift)
        for i, (n, d) in enumerate(drift.items()):
            stages = list(d)
            ax.bar(np.arange(len(stages)) + i * width, [d[k]["l1"] for k in stages], width, label=n)
        ax.set_xticks(np.arange(len(stages)), stages, rotation=30, fontsize=7)
        ax.set(ylabel="mean |w - w0|", title="weight drift per stage")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with artifacts.atomic_path(out / artifacts.DRIFT_PLOT) as tmp:
            fig.savefig(tmp, dpi=120)
        plt.close(fig)
        figures.append(("Weight drift", artifacts.DRIFT_PLOT))
        md += [f"![weight drift]({artifacts.DRIFT_PLOT})", ""]

    # t-test -----------------------------------------------------------------------------------
    if compare:
        a, b = compare
        rows = []
        for s in sets:
            key = f"{eval_prefix('test', s)}/auroc_mean"
            va = [r.results.get(key, math.nan) for r in by_name[a]]
            vb = [r.results.get(key, math.nan) for r in by_name[b]]
            res = stats.ttest_ind(va, vb, equal_var=False) if min(len(va), len(vb)) > 1 else None
            rows.append(
                [
                    s,
                    _fmt(float(np.mean(va))),
                    _fmt(float(np.mean(vb))),
                    "n/a" if res is None else _fmt(float(res.statistic)),
                    "n/a" if res is None else _fmt(float(res.pvalue), 4),
                ]
            )
        md += [
            f"## {a} vs {b}",
            "",
            "Welch's two-sample t-test on the replicas' AUROC.",
            "",
            _table(["test set", f"{a} mean", f"{b} mean", "t", "p"], rows),
            "",
        ]

    text = "\n".join(md)
    artifacts.write_text(out / "report.md", text)
    artifacts.write_text(out / "report.html", _html(text))
    return out / "report.md"


def _cells(row: str, tag: str) -> str:
    return "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row.strip("|").split("|"))


def _html(markdown: str) -> str:
    """A self-contained HTML rendering of the report's Markdown (headings, tables, images)."""
    body, table = [], []

    def flush() -> None:
        if table:
            head, *rest = table
            body.append(
                "<table><tr>"
                + _cells(head, "th")
                + "</tr>"
                + "".join("<tr>" + _cells(r, "td") + "</tr>" for r in rest[1:])
                + "</table>"
            )
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            body.append(f'<img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}">')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>medxfer report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
