"""``medxfer report STUDY``: the paper's tables and plots from a study folder.

For every configuration (``STUDY/<name>/seed<k>/``, written by ``medxfer study``) and test set:
the mean over replicas of AUROC with a 95 % percentile bootstrap interval
(:func:`medxfer.metrics.bootstrap_ci`: 1000 resamples of the test cases, the same resamples for
every replica, so the interval is that of the replica mean), ECE and top-1 where logged;
data-efficiency curves (metric against ``train_fraction`` per backbone) and the fraction at
which each backbone matches a baseline; subgroup gaps; CKA against depth and weight drift per
stage; and Welch's two-sample t-test between two configurations across replicas (the analyses
of Mustafa et al., "Supervised Transfer Learning at Scale for Medical Imaging", 2021). Files
that some runs have and others lack (see :mod:`medxfer.artifacts`) are listed, never silently
skipped. Written as Markdown and HTML with PNG figures in ``STUDY/report/``.

The report is one function per section, each returning its Markdown lines (and writing its
figures, through :func:`medxfer.plots.saved_figure`); :func:`build_report` puts them in order.
Every file name and key the runs' writers also spell comes from :mod:`medxfer.artifacts`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import markdown
import numpy as np
import yaml
from scipy import stats

from medxfer import artifacts
from medxfer.errors import ConfigError
from medxfer.metrics import SubgroupReport, bootstrap_ci, stage_drift
from medxfer.naming import eval_prefix
from medxfer.plots import saved_figure

__all__ = [
    "Run",
    "StudyRuns",
    "auroc_cells",
    "baseline_section",
    "build_report",
    "calibration_fairness_section",
    "comparison_section",
    "data_efficiency_section",
    "feature_reuse_section",
    "find_runs",
    "missing_artifacts",
    "missing_section",
    "performance_section",
    "read_results",
    "render_html",
    "subgroups_section",
    "summary_section",
]

#: The report's own figures (the CKA and drift figures share the runs' names, see artifacts).
DATA_EFFICIENCY_PLOT, SUBGROUP_GAPS_PLOT = "data_efficiency.png", "subgroup_gaps.png"

#: ``(configuration, test set) -> (mean AUROC over replicas, its table cell)``.
AurocCells = Mapping[tuple[str, str], tuple[float, str]]


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


@dataclass
class StudyRuns:
    """The finished replicas of a study folder, grouped as the sections read them.

    Attributes:
        root: the study folder.
        runs: its finished replicas (:func:`find_runs`).
        by_name: the replicas of each configuration, configurations sorted by name.
        sets: the test sets named in any replica's ``results.json``, sorted.
    """

    root: Path
    runs: list[Run]
    by_name: dict[str, list[Run]] = field(init=False)
    sets: list[str] = field(init=False)

    def __post_init__(self) -> None:
        names = sorted({r.name for r in self.runs})
        self.by_name = {n: [r for r in self.runs if r.name == n] for n in names}
        self.sets = artifacts.result_sets(k for r in self.runs for k in r.results)

    @classmethod
    def read(cls, root: Path) -> StudyRuns:
        """The finished replicas of study folder ``root``."""
        return cls(root, find_runs(root))

    def first(self, name: str) -> Run:
        """The first replica of configuration ``name``: its backbone, pre-training and training
        fraction are the configuration's."""
        return self.by_name[name][0]


def _number(v: object) -> float:
    """A value of strict JSON as a float: ``null`` -> NaN, ``"inf"`` -> inf.

    Raises:
        ValueError, TypeError: not a number (text, a list, a mapping, true / false).
    """
    if isinstance(v, bool | list | dict):
        raise TypeError(f"{type(v).__name__}")
    return math.nan if v is None else float(v)  # type: ignore[arg-type]


def read_results(path: Path) -> dict[str, float]:
    """A replica's ``results.json``: a JSON object of metric -> number (``null``: NaN).

    Raises:
        RunFileError: the file is not JSON (truncated, edited by hand), not an object, or a
            value is not a number (the key and value are named).
    """
    from medxfer.errors import RunFileError

    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise RunFileError(
            f"{path}: not a complete JSON results table ({err}); run the replica again "
            "(delete the file; medxfer study redoes it)"
        ) from err
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: not a results table (a JSON object of metric: number)")
    results = {}
    for key, value in data.items():
        try:
            results[str(key)] = _number(value)
        except (TypeError, ValueError) as err:
            raise RunFileError(f"{path}: key '{key}' is not a number: {value!r}") from err
    return results


def _replica_folders(study: Path) -> list[tuple[Path, int]]:
    """Every replica folder (``<name>/seed<k>/``, :func:`medxfer.artifacts.replica_dir`) of
    ``study`` with its seed, finished or not, in path order."""
    folders = [(f, artifacts.replica_seed(f.name)) for f in sorted(study.glob("*/*"))]
    return [(f, seed) for f, seed in folders if seed is not None and f.is_dir()]


def find_runs(study: Path) -> list[Run]:
    """Every finished replica of ``study`` (those with ``results.json``).

    Raises:
        FileNotFoundError: ``study`` holds no finished replica.
        RunFileError: a ``results.json`` that cannot be read (:func:`read_results`).
    """
    runs = []
    for folder, seed in _replica_folders(study):
        res = folder / artifacts.RESULTS_JSON
        if not res.is_file():
            continue
        results = read_results(res)
        run = Run(folder.parent.name, seed, folder, results)
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
        layout = f"<name>/{artifacts.replica_dir('<k>')}/{artifacts.RESULTS_JSON}"
        raise FileNotFoundError(
            f"{study}: no finished runs (expected {layout}, written by medxfer study)"
        )
    return runs


def missing_artifacts(study: Path, runs: list[Run], sets: Sequence[str]) -> list[str]:
    """One line per run folder lacking a file that the report reads and other runs have (and
    per replica folder without ``results.json``: unfinished, left out of every table)."""
    lines = [
        f"`{folder.relative_to(study)}` lacks `{artifacts.RESULTS_JSON}` (unfinished: in no table)"
        for folder, _ in _replica_folders(study)
        if not (folder / artifacts.RESULTS_JSON).is_file()
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


# Formatting -----------------------------------------------------------------------------------
def _mean(values: Sequence[float | None]) -> float:
    """Mean of the known values (``None`` and NaN left out); NaN when none is known."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table, then a blank line; a ``|`` inside a cell is escaped, not a column."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *map(line, rows), ""]


def _image(alt: str, file: str) -> list[str]:
    """The Markdown line showing figure ``file`` of the report folder, then a blank line."""
    return [f"![{alt}]({file})", ""]


# AUROC ----------------------------------------------------------------------------------------
def _onehot_if_multiclass(target: np.ndarray) -> np.ndarray:
    """``target`` as 0/1 labels: soft label distributions score their top label."""
    known = target[~np.isnan(target)]
    if known.size and not np.isin(known, (0.0, 1.0)).all():
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
    key = artifacts.result_key(test_set, artifacts.AUROC_MEAN)
    point = _mean([r.results.get(key) for r in reps])
    return point, f"{_fmt(point)} (no interval: {reason})"


def auroc_cells(study: StudyRuns, n_resamples: int) -> dict[tuple[str, str], tuple[float, str]]:
    """Every configuration's mean AUROC on every test set, with its table cell: the bootstrap
    interval of the replica mean (``n_resamples`` resamples of the test cases) where every
    replica left its per-case predictions, else the mean of the logged values and the reason.
    Computed once: the performance table and the data-efficiency curves both use it."""
    return {
        (name, s): _auroc_cell(reps, s, n_resamples)
        for name, reps in study.by_name.items()
        for s in study.sets
    }


# Sections -------------------------------------------------------------------------------------
def summary_section(study: StudyRuns) -> list[str]:
    """The title and what the study holds: runs, configurations, test sets."""
    return [
        f"# Study report: {study.root.name}",
        "",
        f"{len(study.runs)} runs, {len(study.by_name)} configurations, "
        f"test sets: {', '.join(study.sets)}.",
        "",
    ]


def missing_section(study: StudyRuns) -> list[str]:
    """The files some runs lack and others have (:func:`missing_artifacts`); nothing when none
    is missing. Listed so that a figure over fewer replicas is never taken for all of them."""
    missing = missing_artifacts(study.root, study.runs, study.sets)
    if not missing:
        return []
    return [
        "## Missing artifacts",
        "",
        "These runs lack files that other runs of the study have: an AUROC interval needs "
        "every replica's predictions; subgroup and feature-reuse figures use the replicas "
        "that have their files.",
        "",
        *[f"- {line}" for line in missing],
        "",
    ]


def performance_section(study: StudyRuns, auroc: AurocCells, n_resamples: int) -> list[str]:
    """The main table: one row per configuration and test set, AUROC with its interval
    (``auroc``, from :func:`auroc_cells` with ``n_resamples``), mean ECE and top-1."""

    def mean(reps: list[Run], s: str, metric: str) -> str:
        return _fmt(_mean([r.results.get(artifacts.result_key(s, metric)) for r in reps]))

    rows = [
        [
            name,
            reps[0].backbone,
            reps[0].pretrained,
            f"{reps[0].fraction:g}",
            s,
            str(len(reps)),
            auroc[(name, s)][1],
            mean(reps, s, artifacts.ECE),
            mean(reps, s, artifacts.TOP1),
        ]
        for name, reps in study.by_name.items()
        for s in study.sets
    ]
    header = [
        "configuration",
        "backbone",
        "pre-training",
        "train fraction",
        "test set",
        "replicas",
        "AUROC [95% CI]",
        "ECE",
        "top-1",
    ]
    return [
        "## Performance",
        "",
        "AUROC: mean over replicas with a 95 % bootstrap interval over test cases "
        f"({n_resamples} resamples). ECE and top-1: means over replicas.",
        "",
        *_table(header, rows),
    ]


def _curves(study: StudyRuns) -> dict[tuple[str, str], list[str]]:
    """The configurations of each (backbone, pre-training): the points of one data-efficiency
    curve; empty when no curve has two training fractions (there is no curve to draw)."""
    curves: dict[tuple[str, str], list[str]] = {}
    for name in study.by_name:
        run = study.first(name)
        curves.setdefault((run.backbone, run.pretrained), []).append(name)
    if any(len({study.first(n).fraction for n in names}) > 1 for names in curves.values()):
        return curves
    return {}


def data_efficiency_section(study: StudyRuns, auroc: AurocCells, out: Path) -> list[str]:
    """AUROC against the fraction of training data, one curve per backbone and pre-training and
    one panel per test set (``out/data_efficiency.png``); nothing when no backbone was trained
    on two fractions."""
    curves = _curves(study)
    if not curves or not study.sets:
        return []
    n_sets = len(study.sets)
    with saved_figure(
        out / DATA_EFFICIENCY_PLOT, ncols=n_sets, figsize=(4.5 * n_sets, 3.5), squeeze=False
    ) as (_, axes):
        for ax, s in zip(axes[0], study.sets, strict=True):
            for (backbone, pre), names in curves.items():
                pts = sorted((study.first(n).fraction, auroc[(n, s)][0]) for n in names)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{backbone} ({pre})")
            ax.set(xscale="log", xlabel="fraction of training data", ylabel="AUROC", title=s)
            ax.legend(fontsize=7)
    return ["## Data efficiency", "", *_image("data efficiency", DATA_EFFICIENCY_PLOT)]


def _matching_fraction(fractions: list[float], values: list[float], target: float) -> float | None:
    """Smallest fraction at which the curve reaches ``target`` (linear between points)."""
    pts = sorted(zip(fractions, values, strict=True))
    for (f0, v0), (f1, v1) in zip([(0.0, -math.inf), *pts], pts, strict=False):
        if v1 >= target:
            if v0 == -math.inf or v1 == v0:
                return f1
            return f0 + (target - v0) / (v1 - v0) * (f1 - f0)
    return None


def baseline_section(study: StudyRuns, auroc: AurocCells, baseline: str | None) -> list[str]:
    """The smallest fraction of training data at which each data-efficiency curve reaches the
    AUROC of configuration ``baseline`` on each test set (linear between the curve's points);
    nothing without a baseline or without curves (see :func:`data_efficiency_section`)."""
    curves = _curves(study)
    if baseline is None or not curves:
        return []
    rows = []
    for s in study.sets:
        target = auroc[(baseline, s)][0]
        for (backbone, pre), names in curves.items():
            match = _matching_fraction(
                [study.first(n).fraction for n in names], [auroc[(n, s)][0] for n in names], target
            )
            rows.append(
                [
                    s,
                    f"{backbone} ({pre})",
                    _fmt(target),
                    "not reached" if match is None else f"{match:.3g}",
                ]
            )
    return [
        f"Fraction of training data at which each backbone matches the baseline `{baseline}`:",
        "",
        *_table(["test set", "backbone", "baseline AUROC", "matching fraction"], rows),
    ]


def subgroups_section(study: StudyRuns, out: Path) -> list[str]:
    """Subgroup gaps per configuration, test set and attribute, averaged over the replicas that
    have their subgroup file, with the groups too small to score and those scored apart; a bar
    per row in ``out/subgroup_gaps.png``. Nothing when no replica has a subgroup file."""
    rows, gaps = [], {}
    for name, reps in study.by_name.items():
        for s in study.sets:
            filename = artifacts.subgroups_json(eval_prefix("test", s))
            reports = [
                json.loads(p.read_text())[artifacts.ATTRIBUTES]
                for r in reps
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
                gaps[f"{name}/{s}/{attr}"] = gap
    if not rows:
        return []
    with saved_figure(out / SUBGROUP_GAPS_PLOT, figsize=(max(5, 0.5 * len(gaps)), 3.5)) as (
        _,
        ax,
    ):
        ax.bar(range(len(gaps)), list(gaps.values()))  # n/a: no bar
        ax.set_xticks(range(len(gaps)), list(gaps), rotation=90, fontsize=6)
        ax.set(ylabel="subgroup gap", title="subgroup gaps")
    header = [
        "configuration",
        "test set",
        "attribute",
        "gap",
        "worst group",
        "too small",
        "not in gap",
    ]
    return [
        "## Subgroups",
        "",
        "Gap: the largest relative deviation of a subgroup from the mean over subgroups "
        "(mean over replicas; n/a with fewer than two scored subgroups); subgroups under the "
        "minimum size are listed, not scored; cases of unknown attribute are scored apart, "
        "not in the gap (unless the run asked for include_unknown).",
        "",
        *_table(header, rows),
        *_image("subgroup gaps", SUBGROUP_GAPS_PLOT),
    ]


def _first_file(runs: list[Run], filename: str) -> Path | None:
    """``analysis/<filename>`` of the first replica that has it."""
    return next((p for r in runs if (p := r.analysis / filename).is_file()), None)


def feature_reuse_section(study: StudyRuns, out: Path) -> list[str]:
    """How far fine-tuning moved each configuration from its initialisation, from its first
    replica that measured it: CKA to the initial features against depth at the end of training
    (``cka.json``) and the mean absolute weight change per stage (``weight_drift.json``).
    Nothing when no replica measured either."""
    cka = {
        n: json.loads(p.read_text())[artifacts.HISTORY]
        for n, reps in study.by_name.items()
        if (p := _first_file(reps, artifacts.CKA_JSON))
    }
    drift = {
        n: stage_drift(json.loads(p.read_text())[artifacts.HISTORY][-1][artifacts.DRIFT])
        for n, reps in study.by_name.items()
        if (p := _first_file(reps, artifacts.WEIGHT_DRIFT_JSON))
    }
    if not cka and not drift:
        return []
    md = ["## Feature reuse", ""]
    if cka:
        with saved_figure(out / artifacts.CKA_PLOT, figsize=(5, 3.5)) as (_, ax):
            for n, history in cka.items():
                ends = [h for h in history if h[artifacts.WHEN] == artifacts.END]
                values = (ends or history)[-1][artifacts.CKA]
                ax.plot(range(len(values)), list(values.values()), "o-", label=n)
            ax.set(
                xlabel="stage",
                ylabel="CKA to initialisation",
                ylim=(0, 1.05),
                title="CKA against depth",
            )
            ax.legend(fontsize=7)
        md += _image("CKA against depth", artifacts.CKA_PLOT)
    if drift:
        # one slot per stage name, in order of appearance: backbones may name stages apart
        stages = list(dict.fromkeys(stage for d in drift.values() for stage in d))
        width = 0.8 / len(drift)
        with saved_figure(out / artifacts.DRIFT_PLOT, figsize=(6, 3.5)) as (_, ax):
            for i, (n, d) in enumerate(drift.items()):
                x = [stages.index(stage) + i * width for stage in d]
                ax.bar(x, [v[artifacts.DRIFT_L1] for v in d.values()], width, label=n)
            ax.set_xticks(np.arange(len(stages)), stages, rotation=30, fontsize=7)
            ax.set(ylabel="mean |w - w0|", title="weight drift per stage")
            ax.legend(fontsize=7)
        md += _image("weight drift", artifacts.DRIFT_PLOT)
    return md


def comparison_section(study: StudyRuns, compare: Sequence[str] | None) -> list[str]:
    """Welch's two-sample t-test between the replicas' AUROC of configurations ``compare = (a,
    b)`` on each test set (n/a with fewer than two replicas on a side); nothing without
    ``compare``."""
    if not compare:
        return []
    a, b = compare
    rows = []
    for s in study.sets:
        key = artifacts.result_key(s, artifacts.AUROC_MEAN)
        va = [r.results.get(key, math.nan) for r in study.by_name[a]]
        vb = [r.results.get(key, math.nan) for r in study.by_name[b]]
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
    return [
        f"## {a} vs {b}",
        "",
        "Welch's two-sample t-test on the replicas' AUROC.",
        "",
        *_table(["test set", f"{a} mean", f"{b} mean", "t", "p"], rows),
    ]


# The report ------------------------------------------------------------------------------------
def _check_names(study: StudyRuns, baseline: str | None, compare: Sequence[str] | None) -> None:
    """Refuse a baseline or compared configuration that the study does not hold, naming those
    it does, before any figure is drawn."""
    if compare is not None and len(compare) != 2:
        raise ConfigError(f"compare takes two configurations, got {list(compare)}")
    for role, name in [("baseline", baseline), *(("compare", n) for n in compare or ())]:
        if name is not None and name not in study.by_name:
            raise ConfigError(
                f"{role} {name!r} is not a configuration of the study {study.root}: "
                f"{list(study.by_name)}"
            )


def build_report(
    study: Path,
    out: Path | None = None,
    baseline: str | None = None,
    compare: Sequence[str] | None = None,
    n_resamples: int = 1000,
) -> Path:
    """Write ``report.md``, ``report.html`` and the figures of study folder ``study``.

    Args:
        study: the study folder (``<name>/seed<k>/`` replica folders, ``medxfer study``).
        out: the report folder; ``study/report`` by default.
        baseline: the configuration whose AUROC each data-efficiency curve must match.
        compare: two configurations to compare by Welch's t-test.
        n_resamples: bootstrap resamples of the test cases for the AUROC intervals.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: ``study`` holds no finished replica.
        ValueError: ``baseline`` or ``compare`` names no configuration of the study.
    """
    runs = StudyRuns.read(study)
    _check_names(runs, baseline, compare)
    out = out or study / artifacts.REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    auroc = auroc_cells(runs, n_resamples)
    text = "\n".join(
        [
            *summary_section(runs),
            *missing_section(runs),
            *performance_section(runs, auroc, n_resamples),
            *data_efficiency_section(runs, auroc, out),
            *baseline_section(runs, auroc, baseline),
            *subgroups_section(runs, out),
            *calibration_fairness_section(runs, out),
            *feature_reuse_section(runs, out),
            *comparison_section(runs, compare),
        ]
    )
    artifacts.write_text(out / artifacts.REPORT_MD, text)
    artifacts.write_text(out / artifacts.REPORT_HTML, render_html(text))
    return out / artifacts.REPORT_MD


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    "img{max-width:100%}"
)


def render_html(text: str) -> str:
    """The report's Markdown ``text`` as one self-contained HTML page (its figures referenced
    beside it), by Python-Markdown with its ``tables`` extension.

    Raw HTML in the Markdown is shown as text, not passed through: names in the report come
    from the study's folders and data (configurations, subgroups), and a ``<`` there must not
    become markup.
    """
    converter = markdown.Markdown(extensions=["tables"], output_format="html")
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    body = converter.convert(text)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>medxfer report</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def calibration_fairness_section(study: StudyRuns, out: Path) -> list[str]:
    """Calibration and fairness beyond the gaps, per configuration and test set, averaged over
    the replicas that wrote them (:class:`~medxfer.callbacks.CalibrationCallback`,
    :class:`~medxfer.callbacks.SubgroupCallback`):

    * ECE, the temperature ``T`` fitted on validation (Guo et al., 2017) and the test ECE after
      scaling by it (each the mean over replicas);
    * per-label reliability diagrams, one figure per test set (``reliability_labels_<set>.png``)
      with one curve per configuration: each bin pools its cases over the replicas (counts
      summed; mean confidence and outcome weighted by count), each label's ECE is the mean over
      replicas (one figure per set, not per configuration: a 1,420-run study draws 7, not 150);
    * per attribute: ECE and TPR at the run's fixed specificity per subgroup, and the
      equalised-odds gap at the shared threshold (Hardt et al., 2016; see
      :mod:`medxfer.metrics.subgroups`).

    Nothing when no replica wrote these figures.
    """
    from medxfer.plots import plot_reliability_per_label

    def read(p: Path) -> dict | None:
        return json.loads(p.read_text()) if p.is_file() else None

    def by_group(dicts: list[dict]) -> str:
        groups = sorted({g for d in dicts for g in d})
        return ", ".join(f"{g} {_fmt(_mean([d.get(g) for d in dicts]))}" for g in groups) or "-"

    cal_rows: list[list[str]] = []
    fair_rows: list[list[str]] = []
    curves: dict[str, dict[str, dict]] = {s: {} for s in study.sets}  # set -> configuration ->
    eces: dict[str, dict[str, dict]] = {s: {} for s in study.sets}  # label -> bins / ECE
    for name, reps in study.by_name.items():
        for s in study.sets:
            prefix = eval_prefix("test", s)
            cals = [c for r in reps if (c := read(r.analysis / artifacts.calibration_json(prefix)))]
            if cals:
                cal_rows.append(
                    [
                        name,
                        s,
                        *(
                            _fmt(_mean([c.get(k) for c in cals]))
                            for k in (artifacts.ECE, artifacts.TEMPERATURE, artifacts.ECE_SCALED)
                        ),
                        str(len(cals)),
                    ]
                )
            per_label = [c[artifacts.BINS_PER_LABEL] for c in cals if artifacts.BINS_PER_LABEL in c]
            if per_label:
                pooled, ece = {}, {}
                for label in dict.fromkeys(k for b in per_label for k in b):
                    bins = [b[label] for b in per_label if label in b]
                    sums = np.zeros((len(bins[0]["count"]), 3))
                    for b in bins:
                        n = np.asarray(b["count"], dtype=float)
                        conf = np.nan_to_num(np.asarray(b["confidence"], dtype=float))
                        outcome = np.nan_to_num(np.asarray(b["outcome"], dtype=float))
                        sums += np.stack([n, n * conf, n * outcome], axis=1)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        pooled[label] = {
                            "count": sums[:, 0],
                            "confidence": sums[:, 1] / sums[:, 0],
                            "outcome": sums[:, 2] / sums[:, 0],
                        }
                    ece[label] = _mean([c.get(f"{artifacts.ECE}/{label}") for c in cals])
                curves[s][name], eces[s][name] = pooled, ece
            subs = [
                d[artifacts.ATTRIBUTES]
                for r in reps
                if (d := read(r.analysis / artifacts.subgroups_json(prefix)))
            ]
            for attr in sorted({a for sub in subs for a in sub}):
                vals = [SubgroupReport.from_dict(sub[attr]) for sub in subs if attr in sub]
                vals = [v for v in vals if not math.isnan(v.specificity)]
                if vals:
                    fair_rows.append(
                        [
                            name,
                            s,
                            attr,
                            _fmt(_mean([v.specificity for v in vals]), 2),
                            by_group([v.ece for v in vals]),
                            by_group([v.tpr_at_specificity for v in vals]),
                            _fmt(_mean([v.equalized_odds_gap for v in vals])),
                        ]
                    )
    if not (cal_rows or fair_rows):
        return []
    figures = []
    for s in (s for s in study.sets if curves[s]):
        file = "reliability_labels_{}.png".format(
            "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in s)
        )
        plot_reliability_per_label(
            curves[s], eces[s], f"test set {s}: reliability per label", out / file
        )
        figures += _image(f"reliability per label, {s}", file)
    md = ["## Calibration and fairness", ""]
    if cal_rows:
        md += [
            "ECE on the test set, the temperature T fitted on validation (by minimising the "
            "validation NLL) and the test ECE after dividing the logits by T; means over "
            "replicas.",
            "",
            *_table(
                ["configuration", "test set", "ECE", "T", "ECE after scaling", "replicas"],
                cal_rows,
            ),
            *figures,
        ]
    if fair_rows:
        md += [
            "Per subgroup: ECE, and the true-positive rate at the fixed specificity (each "
            "subgroup's own threshold); equalised-odds gap: the larger of the TPR and FPR "
            "spreads across subgroups at one shared threshold (specificity held on all cases), "
            "mean over labels. Means over replicas.",
            "",
            *_table(
                [
                    "configuration",
                    "test set",
                    "attribute",
                    "specificity",
                    "ECE per subgroup",
                    "TPR at specificity",
                    "equalised-odds gap",
                ],
                fair_rows,
            ),
        ]
    return md
