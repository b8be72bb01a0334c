"""``medxfer report STUDY``: the paper's tables and plots from a study folder.

For every configuration (``STUDY/<name>/seed<k>/``, written by ``medxfer study``) and test set,
every logged test metric (AUROC, top-1, Dice, ECE, subgroup gaps: whatever ``results.json``
holds) as mean ± standard deviation over replicas, with the 95 % percentile bootstrap interval
over test cases of the replica mean (the same resamples for every replica: each replica's
per-resample values, ``analysis/bootstrap_<set>.npz``, are computed once at test time by
:class:`~medxfer.callbacks.PredictionWriter`, so the report only averages them; without that
file they are computed here from the per-case predictions, identically). Then, per task, the
best configuration against every other by a two-sample t-test (Welch's or Student's,
:func:`scipy.stats.ttest_ind`; paired, :func:`scipy.stats.ttest_rel`, where two
configurations share seeds and test cases) with the configurations not significantly different
from the best marked; the epochs to converge; a grid of targets x pre-training x model per shot
count (any axes of the runs' ``axes.json``); the comparison with a published reference table;
data-efficiency curves and the fraction at which each backbone matches a baseline; subgroup
gaps; CKA against depth and weight drift per stage (the analyses of Mustafa et al., "Supervised
Transfer Learning at Scale for Medical Imaging", 2021, and of the benchmarks of pre-trained
ResNet-50s it is compared with). Files that some runs have and others lack (see
:mod:`medxfer.artifacts`) are listed, never silently skipped. Written as Markdown and HTML with
PNG figures in ``STUDY/report/``.

The report is one function per section, each returning its Markdown lines (and writing its
figures, through :func:`medxfer.plots.saved_figure`); :func:`build_report` puts them in order.
Every file name and key the runs' writers also spell comes from :mod:`medxfer.artifacts`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import markdown
import numpy as np
import yaml
from scipy import stats

from medxfer import artifacts
from medxfer.errors import ConfigError, RunFileError
from medxfer.metrics import (
    BOOTSTRAP_TASKS,
    SubgroupReport,
    case_order,
    cases_digest,
    replica_interval,
    resampled_metrics,
    stage_drift,
)
from medxfer.naming import eval_prefix
from medxfer.plots import saved_figure
from medxfer.results import read_results

__all__ = [
    "ALPHA",
    "Cell",
    "Layout",
    "ReferenceRow",
    "Run",
    "StudyRuns",
    "TestResult",
    "baseline_section",
    "best_section",
    "build_report",
    "calibration_fairness_section",
    "check_metrics",
    "comparison_section",
    "convergence_section",
    "data_efficiency_section",
    "default_metrics",
    "feature_reuse_section",
    "find_runs",
    "layout_section",
    "logged_metrics",
    "metric_cells",
    "missing_artifacts",
    "missing_section",
    "parse_layout",
    "performance_section",
    "read_reference",
    "read_results",
    "reference_section",
    "render_html",
    "subgroups_section",
    "summary_section",
    "two_sample_test",
]

#: The report's own figures (the CKA and drift figures share the runs' names, see artifacts).
DATA_EFFICIENCY_PLOT, SUBGROUP_GAPS_PLOT = "data_efficiency.png", "subgroup_gaps.png"
#: Significance level of every test in the report: p >= ALPHA is "not significantly different".
ALPHA = 0.05
#: The two-sample tests the report offers (``--test``).
TestName = Literal["welch", "student", "paired"]
TESTS: tuple[str, ...] = ("welch", "student", "paired")
_TEST_NAMES = {"welch": "Welch's", "student": "Student's", "paired": "paired"}
#: The pseudo-axis naming a test set in layouts and reference tables.
SET_AXIS = "set"
#: The axes of a configuration without ``axes.json``: derived from its ``config.yaml``.
DERIVED_AXES = ("backbone", "pretrained", "train_fraction")


@dataclass
class Run:
    """One replica of a configuration.

    Attributes:
        axes: the configuration's axes, ``{axis: value}``: its ``axes.json`` (written by
            ``medxfer study``) or, without one, :data:`DERIVED_AXES` from ``config.yaml``.
    """

    name: str
    seed: int
    folder: Path
    results: dict[str, float]
    backbone: str = "?"
    pretrained: str = "none"
    fraction: float = 1.0
    axes: dict[str, str] = field(default_factory=dict)
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
        sets_of: the test sets each configuration's replicas were scored on.
        axes: every axis of the configurations, in order of first appearance.
    """

    root: Path
    runs: list[Run]
    by_name: dict[str, list[Run]] = field(init=False)
    sets: list[str] = field(init=False)
    sets_of: dict[str, list[str]] = field(init=False)
    axes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        names = sorted({r.name for r in self.runs})
        self.by_name = {n: [r for r in self.runs if r.name == n] for n in names}
        self.sets = artifacts.result_sets(k for r in self.runs for k in r.results)
        self.sets_of = {
            n: artifacts.result_sets(k for r in reps for k in r.results)
            for n, reps in self.by_name.items()
        }
        self.axes = list(dict.fromkeys(a for r in self.runs for a in r.axes))

    @classmethod
    def read(cls, root: Path) -> StudyRuns:
        """The finished replicas of study folder ``root``."""
        return cls(root, find_runs(root))

    def first(self, name: str) -> Run:
        """The first replica of configuration ``name``: its backbone, pre-training and training
        fraction are the configuration's."""
        return self.by_name[name][0]

    def cells(self) -> list[tuple[str, str]]:
        """Every (configuration, test set) that some replica was scored on."""
        return [(n, s) for n in self.by_name for s in self.sets_of[n]]


def _read_axes(path: Path) -> dict[str, str] | None:
    """A configuration's ``axes.json`` (a flat JSON object of axis -> value), or ``None``.

    Raises:
        RunFileError: not JSON, or not a flat object (the file is named).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path}: not a JSON object of axis: value ({err})") from err
    if not isinstance(data, dict) or any(isinstance(v, dict | list) for v in data.values()):
        raise RunFileError(f"{path}: not a flat JSON object of axis: value")
    return {str(k): str(v) for k, v in data.items()}


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster


def _replica_folders(study: Path) -> list[tuple[Path, int]]:
    """Every replica folder (``<name>/seed<k>/``, :func:`medxfer.artifacts.replica_dir`) of
    ``study`` with its seed, finished or not, in path order."""
    folders = [(f, artifacts.replica_seed(f.name)) for f in sorted(study.glob("*/*"))]
    return [(f, seed) for f, seed in folders if seed is not None and f.is_dir()]


def find_runs(study: Path) -> list[Run]:
    """Every finished replica of ``study`` (those with ``results.json``), with its
    configuration's axes (``<name>/axes.json``, else derived from ``config.yaml``).

    Raises:
        FileNotFoundError: ``study`` holds no finished replica.
        RunFileError: a ``results.json`` or ``axes.json`` that cannot be read.
    """
    runs = []
    axes_of: dict[Path, dict[str, str] | None] = {}
    for folder, seed in _replica_folders(study):
        res = folder / artifacts.RESULTS_JSON
        if not res.is_file():
            continue
        results = read_results(res)
        run = Run(folder.parent.name, seed, folder, results)
        cfg_path = folder / artifacts.CONFIG_YAML
        if cfg_path.is_file():
            cfg = yaml.load(cfg_path.read_text(), Loader=_YAML_LOADER) or {}
            model = (cfg.get("model") or {}).get("init_args", {})
            data = (cfg.get("data") or {}).get("init_args", {})
            run.backbone = str(model.get("backbone", "?"))
            run.pretrained = str(model.get("pretrained") or model.get("initialised_from") or "none")
            run.fraction = float(data.get("train_fraction") or 1.0)
        if folder.parent not in axes_of:
            axes_of[folder.parent] = _read_axes(folder.parent / artifacts.AXES_JSON)
        axes = axes_of[folder.parent]
        derived = (run.backbone, run.pretrained, f"{run.fraction:g}")
        run.axes = dict(axes) if axes is not None else dict(zip(DERIVED_AXES, derived, strict=True))
        runs.append(run)
    if not runs:
        layout = f"<name>/{artifacts.replica_dir('<k>')}/{artifacts.RESULTS_JSON}"
        raise FileNotFoundError(
            f"{study}: no finished runs (expected {layout}, written by medxfer study)"
        )
    return runs


def missing_artifacts(study: Path, runs: list[Run], sets: Sequence[str]) -> list[str]:
    """One line per run folder lacking a file that the report reads and other runs have (and
    per replica folder without ``results.json``: unfinished, left out of every table). A test
    set's files are expected of the runs scored on that set only."""
    lines = [
        f"`{folder.relative_to(study)}` lacks `{artifacts.RESULTS_JSON}` (unfinished: in no table)"
        for folder, _ in _replica_folders(study)
        if not (folder / artifacts.RESULTS_JSON).is_file()
    ]
    per_set = [
        artifacts.predictions_npz,
        artifacts.bootstrap_npz,
        lambda s: artifacts.subgroups_json(eval_prefix("test", s)),
    ]
    expected: list[tuple[str, list[Run]]] = [(artifacts.CONFIG_YAML, runs)]
    for s in sets:
        scored = [r for r in runs if artifacts.result_key(s, "") in _prefixes(r)]
        expected += [(f"{artifacts.ANALYSIS_DIR}/{name(s)}", scored) for name in per_set]
    expected += [
        (f"{artifacts.ANALYSIS_DIR}/{a}", runs)
        for a in (artifacts.CKA_JSON, artifacts.WEIGHT_DRIFT_JSON, artifacts.CONVERGENCE_JSON)
    ]
    for name, among in expected:
        lacking = [r for r in among if not (r.folder / name).is_file()]
        if len(lacking) < len(among):
            lines += [f"`{r.folder.relative_to(study)}` lacks `{name}`" for r in lacking]
    return lines


def _prefixes(run: Run) -> set[str]:
    """The ``test/<set>/`` prefixes of a run's results (which test sets it was scored on)."""
    return {artifacts.result_key(s, "") for s in artifacts.result_sets(run.results)}


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


# Metrics and their cells ----------------------------------------------------------------------
#: Metrics whose lower values are better (matched on the last part of the name).
_LOWER_IS_BETTER = ("ece", artifacts.ECE_SCALED, "loss", "gap", "ratio", "equalized_odds_gap")
#: Logged values that are counts or bookkeeping, not metrics: left out of the default tables.
_NOT_METRICS = ("loss", artifacts.AUROC_LABELS, artifacts.TEMPERATURE)


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better (ECE, a loss, a subgroup gap or ratio).

    Example:
        >>> lower_is_better("ece"), lower_is_better("subgroup/sex/gap"), lower_is_better("top1")
        (True, True, False)
    """
    return metric.rsplit("/", 1)[-1] in _LOWER_IS_BETTER


def _metric_of(key: str) -> str | None:
    """The metric of a ``results.json`` key ``test/<set>/<metric>`` (None for other keys)."""
    parts = key.split("/", 2)
    return parts[2] if artifacts.is_result_key(key) and len(parts) == 3 else None


def logged_metrics(study: StudyRuns) -> list[str]:
    """Every test metric some run logged (``test/<set>/<metric>`` in ``results.json``), sorted."""
    return sorted({m for r in study.runs for k in r.results if (m := _metric_of(k))})


def default_metrics(study: StudyRuns) -> list[str]:
    """The metrics reported when none is asked for: every logged metric without a ``/`` (mean
    AUROC, top-1, ECE, Dice ...: not per-label values) but losses and counts, and every
    subgroup gap (``subgroup/<attribute>/gap``)."""
    logged = logged_metrics(study)
    plain = [m for m in logged if "/" not in m and m not in _NOT_METRICS]
    gaps = [m for m in logged if m.startswith("subgroup/") and m.endswith("/gap")]
    return plain + gaps


def check_metrics(study: StudyRuns, metrics: Sequence[str]) -> None:
    """Refuse a metric that no run of the study logged, naming those logged.

    Raises:
        ConfigError: ``metric 'x' was logged by no run of STUDY (logged: ...)``.
    """
    logged = logged_metrics(study)
    for m in metrics:
        if m not in logged:
            raise ConfigError(
                f"metric {m!r} was logged by no run of {study.root} (logged: {', '.join(logged)})"
            )


@dataclass
class Cell:
    """One metric of one configuration on one test set, over its replicas.

    Attributes:
        values: each replica's logged value by seed (replicas that did not log it, or logged
            NaN, left out).
        low, high: the 95 % bootstrap interval of the replica mean (NaN without one).
        note: why there is no interval ("" when there is one, or the metric is not resampled).
        cases: the digest of the test cases every replica was scored on, when known: two
            configurations with equal digests and seeds can be compared pairwise.
    """

    values: dict[int, float] = field(default_factory=dict)
    low: float = math.nan
    high: float = math.nan
    note: str = ""
    cases: str | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def std(self) -> float:
        """The sample standard deviation over replicas (``ddof=1``; NaN for one replica)."""
        return float(np.std(list(self.values.values()), ddof=1)) if self.n > 1 else math.nan

    def summary(self, digits: int = 3) -> str:
        """``mean ± std`` (``mean`` alone for one replica; ``n/a`` for none)."""
        if not self.values:
            return "n/a"
        text = _fmt(self.mean, digits)
        return text if self.n < 2 else f"{text} ± {_fmt(self.std, digits)}"

    def text(self, digits: int = 3) -> str:
        """:meth:`summary` and the interval ``[low, high]`` or the reason there is none."""
        text = self.summary(digits)
        if not math.isnan(self.low):
            return f"{text} [{_fmt(self.low, digits)}, {_fmt(self.high, digits)}]"
        return f"{text} (no interval: {self.note})" if self.note and self.values else text


#: ``(configuration, test set, metric) -> Cell``.
Cells = dict[tuple[str, str, str], Cell]


def _task_of(predictions: Mapping[str, np.ndarray]) -> str:
    """The output type of a ``predictions_<set>.npz``: recorded in it, or (files written before
    it was) multi-class when a known target is not 0/1 (a soft label), else multi-label."""
    if artifacts.TASK in predictions:
        return str(predictions[artifacts.TASK])
    target = np.asarray(predictions[artifacts.TARGET], dtype=np.float64)
    known = target[~np.isnan(target)]
    return "multiclass" if known.size and not np.isin(known, (0.0, 1.0)).all() else "multilabel"


def _resamples(run: Run, test_set: str, n_resamples: int) -> tuple[dict[str, np.ndarray], str]:
    """A replica's metrics on the first ``n_resamples`` shared resamples of ``test_set`` and the
    digest of its cases: from ``bootstrap_<set>.npz`` when it holds enough resamples, else
    computed from ``predictions_<set>.npz`` exactly as it would have been stored.

    Raises:
        LookupError: neither file (the message says which is missing).
    """
    stored = run.analysis / artifacts.bootstrap_npz(test_set)
    if stored.is_file():
        with np.load(stored) as f:
            values = {k: f[k] for k in f.files if k != artifacts.BOOTSTRAP_CASES}
            if values and min(len(v) for v in values.values()) >= n_resamples:
                digest = str(f[artifacts.BOOTSTRAP_CASES])
                return {k: v[:n_resamples] for k, v in values.items()}, digest
    raw = run.analysis / artifacts.predictions_npz(test_set)
    if not raw.is_file():
        raise LookupError("per-case predictions missing")
    with np.load(raw) as f:  # lazy: a segmenter's per-pixel probabilities are never read
        task = _task_of(f)
        if task not in BOOTSTRAP_TASKS:
            raise LookupError(f"no resampled metrics for a {task or 'custom'} task")
        ids = f[artifacts.CASE_ID]
        order = case_order(ids)
        if task == "segmentation":
            if artifacts.DICE not in f:
                raise LookupError("per-case Dice missing")
            probs = target = None
            dice = f[artifacts.DICE][order]
        else:
            probs, target = f[artifacts.PROBS][order], f[artifacts.TARGET][order]
            dice = None
    values = resampled_metrics(probs, target, task, n_resamples, dice=dice)  # type: ignore[arg-type]
    return values, cases_digest(ids)


def _stored_digest(run: Run, test_set: str) -> str | None:
    """The digest of the test cases in a replica's ``bootstrap_<set>.npz`` (None without it)."""
    stored = run.analysis / artifacts.bootstrap_npz(test_set)
    if not stored.is_file():
        return None
    with np.load(stored) as f:
        return str(f[artifacts.BOOTSTRAP_CASES]) if artifacts.BOOTSTRAP_CASES in f else None


def metric_cells(study: StudyRuns, metrics: Sequence[str], n_resamples: int) -> Cells:
    """Every configuration's ``metrics`` on every test set it was scored on, over its replicas:
    the logged values and, for the metrics resampled at test time (mean AUROC, top-1, ECE,
    Dice), the bootstrap interval of the replica mean (:func:`medxfer.metrics.replica_interval`)
    when every replica has its resamples on the same cases. Computed once; every table reads
    it."""
    resampled = {m for ms in BOOTSTRAP_TASKS.values() for m in ms}
    cells: Cells = {}
    for name, s in study.cells():
        reps = study.by_name[name]
        samples: list[dict[str, np.ndarray]] = []
        digests: set[str] = set()
        note = ""
        if n_resamples > 0 and resampled & set(metrics):
            try:
                for r in reps:
                    values, digest = _resamples(r, s, n_resamples)
                    samples.append(values)
                    digests.add(digest)
            except LookupError as err:
                note, samples, digests = str(err), [], set()
            if len(digests) > 1:
                note, samples = "replicas tested on different cases", []
        else:  # no resampled metric asked: the stored digests still tell shared test cases
            found = [_stored_digest(r, s) for r in reps]
            digests = set() if None in found else set(found)  # type: ignore[arg-type]
        for m in metrics:
            key = artifacts.result_key(s, m)
            values = {r.seed: v for r in reps if not math.isnan(v := r.results.get(key, math.nan))}
            cell = Cell(values, cases=next(iter(digests)) if len(digests) == 1 else None)
            if m in resampled:
                if samples and all(m in x for x in samples):
                    cell.low, cell.high = replica_interval([x[m] for x in samples])
                else:
                    cell.note = note or f"{m} not resampled for this task"
            cells[(name, s, m)] = cell
    return cells


# Two-sample tests -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TestResult:
    """A two-sample t-test: its statistic, p-value and which test ran (``Welch``, ``Student``,
    ``paired``)."""

    statistic: float
    pvalue: float
    kind: str

    @property
    def different(self) -> bool:
        """Significantly different at :data:`ALPHA` (False for an undefined p-value)."""
        return self.pvalue < ALPHA


def two_sample_test(a: Cell, b: Cell, test: TestName = "welch") -> TestResult | None:
    """The t-test of two cells' replica values: Welch's (unequal variances) or Student's
    (pooled) independent two-sample test (:func:`scipy.stats.ttest_ind`), or, with ``paired``,
    :func:`scipy.stats.ttest_rel` over the seeds when both cells have the same seeds and were
    scored on the same test cases (else Welch's). None with fewer than two replicas a side."""
    if min(a.n, b.n) < 2:
        return None
    with warnings.catch_warnings():  # constant samples: scipy warns and returns NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        same_cases = a.cases is not None and a.cases == b.cases
        if test == "paired" and same_cases and set(a.values) == set(b.values):
            seeds = sorted(a.values)
            res = stats.ttest_rel([a.values[k] for k in seeds], [b.values[k] for k in seeds])
            kind = "paired"
        else:
            student = test == "student"
            res = stats.ttest_ind(
                list(a.values.values()), list(b.values.values()), equal_var=student
            )
            kind = "Student" if student else "Welch"
    return TestResult(float(res.statistic), float(res.pvalue), kind)


def _p(res: TestResult | None) -> str:
    return "n/a" if res is None or math.isnan(res.pvalue) else f"{res.pvalue:.4f}"


def _axes_text(axes: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items())


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


def _auroc(cells: Cells, name: str, test_set: str) -> float:
    """A configuration's mean AUROC over replicas on ``test_set`` (NaN when not logged)."""
    cell = cells.get((name, test_set, artifacts.AUROC_MEAN))
    return math.nan if cell is None else cell.mean


def data_efficiency_section(study: StudyRuns, cells: Cells, out: Path) -> list[str]:
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
                pts = sorted((study.first(n).fraction, _auroc(cells, n, s)) for n in names)
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


def baseline_section(study: StudyRuns, cells: Cells, baseline: str | None) -> list[str]:
    """The smallest fraction of training data at which each data-efficiency curve reaches the
    AUROC of configuration ``baseline`` on each test set (linear between the curve's points);
    nothing without a baseline or without curves (see :func:`data_efficiency_section`)."""
    curves = _curves(study)
    if baseline is None or not curves:
        return []
    rows = []
    for s in study.sets:
        target = _auroc(cells, baseline, s)
        for (backbone, pre), names in curves.items():
            match = _matching_fraction(
                [study.first(n).fraction for n in names],
                [_auroc(cells, n, s) for n in names],
                target,
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


def performance_section(
    study: StudyRuns, cells: Cells, metrics: Sequence[str], n_resamples: int
) -> list[str]:
    """The main table: one row per configuration and test set it was scored on (with its
    axes), one column per metric: mean ± std over replicas and, for resampled metrics, the 95 %
    bootstrap interval of the replica mean (``n_resamples`` resamples of the test cases)."""
    rows = [
        [
            name,
            *(study.first(name).axes.get(a, "-") for a in study.axes),
            s,
            str(len(study.by_name[name])),
            *(cells[(name, s, m)].text() for m in metrics),
        ]
        for name, s in study.cells()
    ]
    header = ["configuration", *study.axes, "test set", "replicas", *metrics]
    return [
        "## Performance",
        "",
        "Mean ± standard deviation over replicas; in brackets the 95 % percentile bootstrap "
        f"interval of the replica mean over test cases ({n_resamples} resamples shared by the "
        "replicas) where every replica has its resamples (mean AUROC, top-1, ECE, Dice).",
        "",
        *_table(header, rows),
    ]


def _task_columns(study: StudyRuns, task_axis: str) -> dict[tuple[str, str], list[str]]:
    """The columns of the best-versus-others table: (task, test set) -> its configurations.
    The task is the configuration's ``task_axis`` value, or the test set when it has none."""
    columns: dict[tuple[str, str], list[str]] = {}
    for name, s in study.cells():
        task = study.first(name).axes.get(task_axis, s)
        columns.setdefault((task, s), []).append(name)
    return dict(sorted(columns.items()))


def _row_label(study: StudyRuns, name: str, task_axis: str) -> str:
    """A configuration's row in the best-versus-others table: its axes but the task (so one
    initialisation is one row across tasks), or its name when those axes are not its own."""
    axes = {k: v for k, v in study.first(name).axes.items() if k != task_axis}
    if task_axis in study.first(name).axes and axes:
        return _axes_text(axes)
    return name


def best_section(
    study: StudyRuns,
    cells: Cells,
    metrics: Sequence[str],
    test: TestName = "welch",
    task_axis: str = "task",
) -> list[str]:
    """Per metric, the best configuration of each task (its ``task_axis``, or the test set)
    against every other of that task by :func:`two_sample_test` on the replica values; the best
    and every configuration not significantly different from it (p >= :data:`ALPHA`) in bold.
    Nothing when no task has two configurations."""
    columns = _task_columns(study, task_axis)
    if not any(len(names) > 1 for names in columns.values()):
        return []
    how = (
        "scipy.stats.ttest_rel over the seeds where two configurations share seeds and test "
        "cases, else Welch's"
        if test == "paired"
        else "scipy.stats.ttest_ind"
    )
    md = [
        "## Best against every other configuration",
        "",
        f"Per task, the best configuration's replicas against every other's by "
        f"{_TEST_NAMES[test]} t-test ({how}). **Bold**: the best and those not significantly different from it "
        f"(p >= {ALPHA}).",
        "",
    ]
    labels = {n: _row_label(study, n, task_axis) for n in study.by_name}
    rows = list(dict.fromkeys(labels.values()))
    for m in metrics:
        table: dict[str, dict[tuple[str, str], str]] = {r: {} for r in rows}
        pick = min if lower_is_better(m) else max
        for col, names in columns.items():
            scored = [n for n in names if cells[(n, col[1], m)].values]
            if not scored:
                continue
            best = pick(scored, key=lambda n: cells[(n, col[1], m)].mean)
            top = cells[(best, col[1], m)]
            for n in names:
                cell = cells[(n, col[1], m)]
                if n == best:
                    text = f"**{cell.summary()}** (best)"
                elif not cell.values:
                    text = "n/a"
                else:
                    res = two_sample_test(top, cell, test)
                    same = res is not None and not math.isnan(res.pvalue) and not res.different
                    kind = "" if res is None or res.kind.lower() == test else f", {res.kind}"
                    body = f"**{cell.summary()}**" if same else cell.summary()
                    text = f"{body} (p={_p(res)}{kind})"
                table[labels[n]][col] = text
        used = [c for c in columns if any(c in row for row in table.values())]
        if not used:
            continue
        header = ["configuration", *(t if t == s else f"{t} ({s})" for t, s in used)]
        body = [[r, *(table[r].get(c, "-") for c in used)] for r in rows if table[r]]
        direction = "lower" if lower_is_better(m) else "higher"
        md += [f"### {m} ({direction} is better)", "", *_table(header, body)]
    return md


def convergence_section(study: StudyRuns) -> list[str]:
    """Epochs to converge per configuration, from each replica's ``convergence.json``
    (:class:`~medxfer.callbacks.ConvergenceCallback`): the epochs until the monitored validation
    metric first reached its best value and its ``fraction`` of it, mean ± std over the replicas
    that have the file. Nothing when none has it."""
    rows = []
    for name, reps in study.by_name.items():
        records = [
            json.loads(p.read_text())
            for r in reps
            if (p := r.analysis / artifacts.CONVERGENCE_JSON).is_file()
        ]
        records = [x for x in records if "best_epoch" in x]
        if not records:
            continue

        def epochs(key: str, records: list[dict] = records) -> str:
            values = {i: float(x[key]) + 1 for i, x in enumerate(records) if x.get(key) is not None}
            return Cell(values).summary(1)

        fractions = sorted({float(x.get("fraction", math.nan)) for x in records})
        rows.append(
            [
                name,
                str(records[0].get("monitor", "?")),
                str(len(records)),
                epochs("best_epoch"),
                epochs("epoch_at_fraction"),
                "/".join(f"{f:g}" for f in fractions),
            ]
        )
    if not rows:
        return []
    header = ["configuration", "monitor", "replicas", "epochs to best", "epochs to fraction"]
    return [
        "## Epochs to converge",
        "",
        "Epochs of training (1 = after the first epoch) until the monitored validation metric "
        "first reached its best value, and first reached the given fraction of it; mean ± std "
        "over the replicas that recorded it.",
        "",
        *_table([*header, "fraction"], rows),
    ]


@dataclass(frozen=True)
class Layout:
    """A grid of tables (``--layout ROWS:COLS[:TABLES]``): axes of the configurations (or
    ``set``, the test set) giving the rows, the columns and one table per value of ``tables``
    (e.g. the scale study's targets x pre-training source and model, one table per shot
    count)."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    tables: tuple[str, ...] = ()


def parse_layout(text: str, study: StudyRuns) -> Layout:
    """``ROWS:COLS[:TABLES]``, each a comma-separated list of axes, as a :class:`Layout`.

    Raises:
        ConfigError: not two or three parts, or an axis no configuration has (known ones named).
    """
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ConfigError(
            f"layout {text!r}: expected ROWS:COLS[:TABLES], e.g. task:init,model:shots"
        )
    axes = [tuple(a.strip() for a in p.split(",") if a.strip()) for p in parts]
    known = [*study.axes, SET_AXIS]
    for a in (a for group in axes for a in group):
        if a not in known:
            raise ConfigError(f"layout {text!r}: no configuration has axis {a!r} (axes: {known})")
    return Layout(*axes)  # type: ignore[arg-type]


def _grid(study: StudyRuns, layout: Layout) -> dict[tuple, tuple[str, str]]:
    """(table key, row key, column key) -> the (configuration, test set) in that grid cell.

    Raises:
        ConfigError: two configurations fall in one cell (the axes do not tell them apart).
    """
    grid: dict[tuple, tuple[str, str]] = {}
    for name, s in study.cells():
        axes = {**study.first(name).axes, SET_AXIS: s}
        key = tuple(
            tuple(axes.get(a, "-") for a in part)
            for part in (layout.tables, layout.rows, layout.cols)
        )
        if key in grid and grid[key][0] != name:
            other = grid[key][0]
            rest = [a for a in study.axes if a not in {*layout.rows, *layout.cols, *layout.tables}]
            raise ConfigError(
                f"layout: configurations {other!r} and {name!r} fall in the same cell; add "
                f"one of the axes {rest or [SET_AXIS]} to the layout"
            )
        grid[key] = (name, s)
    return grid


def layout_section(
    study: StudyRuns, cells: Cells, metrics: Sequence[str], layout: Layout | None
) -> list[str]:
    """Per metric, one table per value of ``layout.tables``: rows and columns by the layout's
    axes, each cell the configuration's mean ± std over replicas ("-": not run). Nothing
    without a layout."""
    if layout is None:
        return []
    grid = _grid(study, layout)

    def sort_key(values: tuple[str, ...]) -> tuple:
        return tuple((0, float(v), v) if _is_number(v) else (1, 0.0, v) for v in values)

    tables = sorted({k[0] for k in grid}, key=sort_key)
    rows = sorted({k[1] for k in grid}, key=sort_key)
    cols = sorted({k[2] for k in grid}, key=sort_key)
    md = [
        "## Grid",
        "",
        f"Rows: {', '.join(layout.rows)}; columns: {', '.join(layout.cols)}"
        + (f"; one table per {', '.join(layout.tables)}" if layout.tables else "")
        + ". Mean ± standard deviation over replicas.",
        "",
    ]
    for m in metrics:
        for t in tables:
            present = [r for r in rows if any((t, r, c) in grid for c in cols)]
            used = [c for c in cols if any((t, r, c) in grid for r in rows)]
            body = [
                [
                    ", ".join(r),
                    *(
                        cells[(*grid[(t, r, c)], m)].summary() if (t, r, c) in grid else "-"
                        for c in used
                    ),
                ]
                for r in present
            ]
            title = f"### {m}" + (
                f": {_axes_text(dict(zip(layout.tables, t, strict=True)))}" if t else ""
            )
            header = [", ".join(layout.rows), *(", ".join(c) for c in used)]
            md += [title, "", *_table(header, body)]
    return md


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _same_value(a: str | None, b: str) -> bool:
    """Two axis values are the same: equal text, or equal numbers (``0.5`` and ``.50``)."""
    if a is None:
        return False
    return a == b or (_is_number(a) and _is_number(b) and float(a) == float(b))


@dataclass(frozen=True)
class ReferenceRow:
    """A row of a reference table: published replica values of a cell of a study.

    Attributes:
        line: its line in the file (for messages).
        axes: the cell's axis values (the table's other columns).
        configuration: the study's configuration it matches.
        test_set: the test set it was scored on (the ``set`` column, or the one test set of the
            configuration that logged the metric).
        seed: the published replica's seed (as written).
        metric: the metric, named as in ``results.json``.
        value: the published value.
    """

    line: int
    axes: tuple[tuple[str, str], ...]
    configuration: str
    test_set: str
    seed: str
    metric: str
    value: float


def read_reference(path: Path, study: StudyRuns) -> list[ReferenceRow]:
    """A reference table (CSV: the cell's axis values as columns -- any of the study's axes,
    and ``set`` for the test set --, then ``seed``, ``metric``, ``value``), each row matched to
    the one configuration whose axes hold its values.

    Raises:
        TableError: the file lacks a column or is malformed (file and line named).
        ConfigError: a row whose cell matches no run, or several configurations, or whose
            metric the matched configuration did not log, or whose value is not a number
            (file and line named).
    """
    from medxfer.data.tables import read_table

    table = read_table(path, required=["seed", "metric", "value"])
    axis_cols = [c for c in table.frame.columns if c not in ("seed", "metric", "value", SET_AXIS)]
    rows = []
    for line, rec in zip(table.lines, table.frame.to_dict("records"), strict=True):
        where = f"{table.source} line {line}"
        axes = tuple((c, str(rec[c]).strip()) for c in axis_cols)
        cell = _axes_text(dict(axes)) or "(no axis)"
        names = [
            n
            for n in study.by_name
            if all(_same_value(study.first(n).axes.get(k), v) for k, v in axes)
        ]
        if not names:
            raise ConfigError(
                f"{where}: no run of {study.root} has {cell} (axes of its runs: "
                f"{', '.join(study.axes)})"
            )
        if len(names) > 1:
            rest = [a for a in study.axes if a not in axis_cols]
            raise ConfigError(
                f"{where}: {cell} matches configurations {names[:4]}; add a column for one of "
                f"the axes {rest}"
            )
        (name,) = names
        metric = str(rec["metric"]).strip()
        logged = [
            s
            for s in study.sets_of[name]
            if any(artifacts.result_key(s, metric) in r.results for r in study.by_name[name])
        ]
        test_set = str(rec.get(SET_AXIS, "")).strip()
        if test_set and test_set not in logged:
            raise ConfigError(
                f"{where}: configuration {name!r} ({cell}) logged no {metric!r} on test set "
                f"{test_set!r} (logged on: {logged or 'no set'})"
            )
        if not test_set:
            if len(logged) != 1:
                raise ConfigError(
                    f"{where}: configuration {name!r} ({cell}) logged {metric!r} on "
                    f"{logged or 'no test set'}; name the test set in a column '{SET_AXIS}'"
                )
            test_set = logged[0]
        try:
            value = float(rec["value"])
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value):
            raise ConfigError(f"{where}: value {rec['value']!r} is not a number")
        rows.append(ReferenceRow(int(line), axes, name, test_set, str(rec["seed"]), metric, value))
    return rows


def reference_section(
    cells: Cells, reference: Sequence[ReferenceRow] | None, test: TestName = "welch"
) -> list[str]:
    """The published replicas of each reference cell beside the reproduced ones: mean ± std of
    each and a two-sample t-test (Welch's, or Student's with ``test="student"``: the published
    and reproduced replicas are different runs, so never paired); p >= :data:`ALPHA` reads
    "yes" (not significantly different). Nothing without a reference."""
    if not reference:
        return []
    groups: dict[tuple, list[ReferenceRow]] = {}
    for row in reference:
        groups.setdefault((row.axes, row.configuration, row.test_set, row.metric), []).append(row)
    independent: TestName = "student" if test == "student" else "welch"
    body = []
    for (axes, name, s, m), rows in groups.items():
        published = Cell({i: r.value for i, r in enumerate(rows)})
        reproduced = cells[(name, s, m)]
        res = two_sample_test(published, reproduced, independent)
        consistent = (
            "n/a" if res is None or math.isnan(res.pvalue) else ("no" if res.different else "yes")
        )
        body.append(
            [
                _axes_text(dict(axes)) or name,
                name,
                s,
                m,
                f"{published.summary()} (n={published.n})",
                f"{reproduced.summary()} (n={reproduced.n})",
                _p(res),
                consistent,
            ]
        )
    header = [
        "cell",
        "configuration",
        "test set",
        "metric",
        "published",
        "reproduced",
        "p",
        f"p >= {ALPHA}",
    ]
    return [
        "## Against published replicas",
        "",
        f"Mean ± standard deviation of the published and the reproduced replicas; p of a "
        f"{'Student' if independent == 'student' else 'Welch'} two-sample t-test "
        "(scipy.stats.ttest_ind); yes: not significantly different.",
        "",
        *_table(header, body),
    ]


def comparison_section(
    study: StudyRuns,
    cells: Cells,
    metrics: Sequence[str],
    compare: Sequence[str] | None,
    test: TestName = "welch",
) -> list[str]:
    """The two-sample t-test (:func:`two_sample_test`, ``test``) between the replicas of
    configurations ``compare = (a, b)`` on each metric and test set both were scored on (n/a
    with fewer than two replicas on a side); nothing without ``compare``."""
    if not compare:
        return []
    a, b = compare
    rows = []
    for s in (s for s in study.sets_of[a] if s in study.sets_of[b]):
        for m in metrics:
            ca, cb = cells[(a, s, m)], cells[(b, s, m)]
            if not ca.values and not cb.values:
                continue
            res = two_sample_test(ca, cb, test)
            rows.append(
                [
                    s,
                    m,
                    ca.summary(),
                    cb.summary(),
                    "n/a" if res is None else res.kind,
                    "n/a" if res is None else _fmt(res.statistic),
                    _p(res),
                ]
            )
    return [
        f"## {a} vs {b}",
        "",
        f"{_TEST_NAMES[test]} two-sample t-test on the replicas' values; mean ± std over replicas.",
        "",
        *_table(["test set", "metric", f"{a}", f"{b}", "test", "t", "p"], rows),
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
    metrics: Sequence[str] | None = None,
    test: TestName = "welch",
    layout: str | None = None,
    reference: Path | None = None,
    task_axis: str = "task",
) -> Path:
    """Write ``report.md``, ``report.html`` and the figures of study folder ``study``.

    Args:
        study: the study folder (``<name>/seed<k>/`` replica folders, ``medxfer study``).
        out: the report folder; ``study/report`` by default.
        baseline: the configuration whose AUROC each data-efficiency curve must match.
        compare: two configurations to compare by the t-test ``test``.
        n_resamples: bootstrap resamples of the test cases for the intervals.
        metrics: the test metrics to report (as in ``results.json``: ``auroc_mean``, ``ece``,
            ``subgroup/sex/gap`` ...); default :func:`default_metrics`.
        test: ``welch``, ``student`` or ``paired`` (:func:`two_sample_test`).
        layout: ``ROWS:COLS[:TABLES]`` axes of a grid of tables (:func:`parse_layout`).
        reference: a CSV of published replica values (:func:`read_reference`).
        task_axis: the axis whose values are the tasks of the best-versus-others table.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: ``study`` holds no finished replica.
        ConfigError: ``baseline`` or ``compare`` names no configuration of the study; a metric
            no run logged; an unknown test; a bad layout; a reference row that matches no run
            (checked before anything is written).
    """
    runs = StudyRuns.read(study)
    _check_names(runs, baseline, compare)
    if test not in TESTS:
        raise ConfigError(f"test must be one of {list(TESTS)}, got {test!r}")
    metrics = list(metrics) if metrics else default_metrics(runs)
    check_metrics(runs, metrics)
    grid = parse_layout(layout, runs) if layout else None
    if grid is not None:
        _grid(runs, grid)  # two configurations in one cell: refused before writing
    ref = read_reference(reference, runs) if reference is not None else None
    needed = list(dict.fromkeys([*metrics, *(r.metric for r in ref or ())]))
    if artifacts.AUROC_MEAN in logged_metrics(runs):
        needed = list(dict.fromkeys([*needed, artifacts.AUROC_MEAN]))  # data efficiency
    cells = metric_cells(runs, needed, n_resamples)
    out = out or study / artifacts.REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        [
            *summary_section(runs),
            *missing_section(runs),
            *performance_section(runs, cells, metrics, n_resamples),
            *best_section(runs, cells, metrics, test, task_axis),
            *layout_section(runs, cells, metrics, grid),
            *convergence_section(runs),
            *reference_section(cells, ref, test),
            *data_efficiency_section(runs, cells, out),
            *baseline_section(runs, cells, baseline),
            *subgroups_section(runs, out),
            *calibration_fairness_section(runs, out),
            *feature_reuse_section(runs, out),
            *comparison_section(runs, cells, metrics, compare, test),
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
