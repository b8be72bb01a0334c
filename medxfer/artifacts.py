"""The files a run leaves in its folder, and the keys inside them: written by the analysis
callbacks, the metrics and ``medxfer fit`` (``results.json``), read by ``medxfer report``. Both
sides import the names from here, so a file or key is spelled once.

A study folder (``medxfer study``; the report in ``report/``)::

    <study>/<name>/seed<k>/   one replica (replica_dir(k)) of configuration <name>
    <study>/<name>/axes.json  {axis: value} of configuration <name> (medxfer study)
    <study>/report/           report.md, report.html and their figures (medxfer report)
    <study>/<name>/run_spec.json  its configs, overrides and their hash (RUN_SPEC_JSON)
    <study>/study.yaml        the study file the folder was run from (STUDY_YAML)

A run folder (``<study>/<name>/seed<k>/`` under ``medxfer study``)::

    config.yaml            the resolved config (LightningCLI)
    checkpoints/           best-*.ckpt, last.ckpt (what ``medxfer fit --resume`` continues)
    results.json           {"test/<set>/<metric>": value} (result_key), strict JSON (NaN -> null),
                           and "convergence/<field>" (convergence_key) with a ConvergenceCallback
    results.md             the same as Markdown tables, and each subgroup's size (subgroups_*.json)
    id_key                 the key of the keyed case ids in prediction files (or in a folder above)
    analysis/
      calibration_<prefix>.json   reliability_<prefix>.png   reliability_labels_<prefix>.png
      subgroups_<prefix>.json     {"epoch", "metric", "min_size", "attributes": {attr: report}}
      predictions_<set>.npz       probs, target, id, group_<attribute> (test sets)
      bootstrap_<set>.npz         each metric on each shared resample of the cases (report)
      cka.json  cka_vs_depth.png  {"history": [{"when", "epoch", "step", "cka": {stage: v}}]}
      weight_drift.json  drift_per_block.png   {"history": [{"epoch", "step", "drift": ...}]}
      convergence.json
    predictions/           medxfer predict: <set>.csv (id, one probability column per label /
                           class; predictions_csv), <set>/ the segmentation masks (MaskWriter)

``<prefix>`` is an evaluation set's logging prefix (``val``, ``test/nih``; see
:func:`medxfer.naming.eval_prefix`) with ``/`` written as ``_``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medxfer.naming import eval_prefix

__all__ = [
    "ANALYSIS_DIR",
    "ATTRIBUTES",
    "AUROC_LABELS",
    "AUROC_MEAN",
    "AXES_JSON",
    "BINS",
    "BINS_PER_LABEL",
    "BINS_SCALED",
    "BOOTSTRAP_CASES",
    "CASE_ID",
    "CHECKPOINTS_DIR",
    "CKA",
    "CKA_JSON",
    "CKA_PLOT",
    "CONFIG_YAML",
    "CONVERGENCE",
    "CONVERGENCE_JSON",
    "DICE",
    "DICE_MEAN",
    "DRIFT",
    "DRIFT_L1",
    "DRIFT_PLOT",
    "ECE",
    "ECE_SCALED",
    "END",
    "EPOCH",
    "EPOCHS_TO_BEST",
    "GROUP_PREFIX",
    "HISTORY",
    "ID_KEY",
    "LAST_CKPT",
    "MEAN_CLASS_ACC",
    "PREDICTIONS_DIR",
    "PROBS",
    "REPORT_DIR",
    "REPORT_HTML",
    "REPORT_MD",
    "RESULTS_JSON",
    "RESULTS_MD",
    "RUN_SPEC_JSON",
    "START",
    "STEP",
    "STUDY_YAML",
    "TARGET",
    "TASK",
    "TEMPERATURE",
    "TEMPERATURE_EPOCH",
    "TOP1",
    "WEIGHT_DRIFT_JSON",
    "WHEN",
    "atomic_path",
    "bootstrap_npz",
    "calibration_json",
    "case_id_key",
    "convergence_key",
    "is_result_key",
    "jsonable",
    "keyed_case_ids",
    "predictions_csv",
    "predictions_npz",
    "reliability_labels_plot",
    "reliability_plot",
    "replica_dir",
    "replica_seed",
    "result_key",
    "result_sets",
    "subgroups_json",
    "write_json",
    "write_text",
]

# Files and folders -----------------------------------------------------------------------------
CONFIG_YAML = "config.yaml"
#: Lightning's checkpoint folder in a run folder, and the checkpoint ``--resume`` continues from.
CHECKPOINTS_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
ANALYSIS_DIR = "analysis"
CKA_JSON = "cka.json"
CKA_PLOT = "cka_vs_depth.png"
WEIGHT_DRIFT_JSON = "weight_drift.json"
DRIFT_PLOT = "drift_per_block.png"
CONVERGENCE_JSON = "convergence.json"
#: ``medxfer predict``'s folder in a run folder (per-case CSVs, segmentation masks).
PREDICTIONS_DIR = "predictions"
#: ``medxfer study``: the copy of the study file at the study folder's root, and each run's
#: expanded spec (configs, overrides, its hash) beside its ``seed<k>/`` folders.
STUDY_YAML = "study.yaml"
RUN_SPEC_JSON = "run_spec.json"


def _flat(prefix: str) -> str:
    return prefix.replace("/", "_")


def calibration_json(prefix: str) -> str:
    """``calibration_<prefix>.json`` of evaluation set ``prefix`` (``"test/nih"``)."""
    return f"calibration_{_flat(prefix)}.json"


def reliability_plot(prefix: str) -> str:
    """``reliability_<prefix>.png`` of evaluation set ``prefix``."""
    return f"reliability_{_flat(prefix)}.png"


def reliability_labels_plot(prefix: str) -> str:
    """``reliability_labels_<prefix>.png``: one reliability diagram per label of ``prefix``."""
    return f"reliability_labels_{_flat(prefix)}.png"


def subgroups_json(prefix: str) -> str:
    """``subgroups_<prefix>.json`` of evaluation set ``prefix``."""
    return f"subgroups_{_flat(prefix)}.json"


def predictions_npz(set_name: str) -> str:
    """``predictions_<set>.npz``: the per-case predictions on test set ``set_name``."""
    return f"predictions_{set_name}.npz"


def bootstrap_npz(set_name: str) -> str:
    """``bootstrap_<set>.npz``: each metric of test set ``set_name`` on each resample of its
    cases (:func:`medxfer.metrics.resampled_metrics`; one ``(n_resamples,)`` array per metric,
    named as in ``results.json``, and the digest of the cases, :data:`BOOTSTRAP_CASES`)."""
    return f"bootstrap_{set_name}.npz"


def predictions_csv(set_name: str) -> str:
    """``<set>.csv`` in :data:`PREDICTIONS_DIR`: ``medxfer predict``'s per-case probabilities
    on evaluation set ``set_name`` (a column ``id``, then one per label / class)."""
    return f"{set_name}.csv"


# Study folders ---------------------------------------------------------------------------------
#: ``<study>/<name>/axes.json``: a flat JSON object {axis name: value as a string} of the
#: configuration, written by ``medxfer study`` and read by ``medxfer report``.
AXES_JSON = "axes.json"
#: ``medxfer report``'s folder in a study folder, and its two renderings of the report.
REPORT_DIR, REPORT_MD, REPORT_HTML = "report", "report.md", "report.html"
_REPLICA = "seed"


def replica_dir(seed: int | str) -> str:
    """The folder of the replica with seed ``seed`` inside its configuration's folder
    (``replica_dir("<k>")`` names the pattern in a message).

    Example:
        >>> replica_dir(3)
        'seed3'
    """
    return f"{_REPLICA}{seed}"


def replica_seed(folder_name: str) -> int | None:
    """The seed of replica folder ``folder_name`` (:func:`replica_dir`), or ``None`` when the
    name is not a replica folder's.

    Example:
        >>> replica_seed("seed12"), replica_seed("seeds"), replica_seed("report")
        (12, None, None)
    """
    rest = folder_name.removeprefix(_REPLICA)
    return int(rest) if rest != folder_name and rest.isdigit() else None


# Keys ------------------------------------------------------------------------------------------
#: Metrics of an evaluation set, logged as ``<prefix>/<metric>`` (results.json: test sets):
#: mean AUROC over labels, expected calibration error, top-1 accuracy against the top label.
AUROC_MEAN, ECE, TOP1 = "auroc_mean", "ece", "top1"
#: Beside ``top1`` for multi-class tasks: the mean over classes of each class's top-1 accuracy
#: (balanced accuracy; the scale study's second natural-target metric).
MEAN_CLASS_ACC = "mean_class_acc"
#: Beside ``auroc_mean``: how many labels it averages (those with both classes among the set's
#: known cases), so a mean over 4 of 5 labels says so.
AUROC_LABELS = "auroc_labels"


def result_key(set_name: str, metric: str) -> str:
    """The key of ``metric`` on test set ``set_name`` in ``results.json``.

    Example:
        >>> result_key("nih", AUROC_MEAN)
        'test/nih/auroc_mean'
    """
    return f"{eval_prefix('test', set_name)}/{metric}"


def is_result_key(key: str) -> bool:
    """Whether ``key`` is a test set's metric (:func:`result_key`), kept in ``results.json``.

    Example:
        >>> is_result_key("test/nih/ece"), is_result_key("val/ece")
        (True, False)
    """
    return key.startswith(eval_prefix("test", ""))


def result_sets(keys: Iterable[str]) -> list[str]:
    """The test sets named by the :func:`result_key` keys among ``keys``, sorted.

    Example:
        >>> result_sets(["test/nih/ece", "test/chexpert/auroc_mean", "val/ece"])
        ['chexpert', 'nih']
    """
    return sorted({k.split("/")[1] for k in keys if is_result_key(k)})


#: ``convergence/<field>``: the :class:`~medxfer.callbacks.ConvergenceCallback` summary, logged
#: and kept in ``results.json`` beside the test metrics; ``EPOCHS_TO_BEST`` is the benchmark's
#: epochs to converge (epochs trained when the monitored validation metric first reached its best).
CONVERGENCE, EPOCHS_TO_BEST = "convergence", "epochs_to_best"


def convergence_key(field: str) -> str:
    """The logged and ``results.json`` key of a convergence summary field.

    Example:
        >>> convergence_key(EPOCHS_TO_BEST)
        'convergence/epochs_to_best'
    """
    return f"{CONVERGENCE}/{field}"


#: ``predictions_<set>.npz``: ``(n, K)`` probabilities and targets, ``(n,)`` case ids, and one
#: ``(n,)`` array of subgroup names per attribute, ``group_<attribute>``.
PROBS, TARGET, CASE_ID, GROUP_PREFIX = "probs", "target", "id", "group_"
#: Also in ``predictions_<set>.npz``: the task's output type (``multilabel``, ``multiclass``,
#: ``segmentation``) and, for a segmenter, each case's Dice per class ``(n, K)``.
TASK, DICE = "task", "dice"
#: A segmenter's mean Dice over classes, in ``results.json``.
DICE_MEAN = "dice_mean"
#: ``bootstrap_<set>.npz``: the digest of the set's case ids (:func:`medxfer.metrics.cases_digest`).
BOOTSTRAP_CASES = "cases"
#: JSON files: where in training a record was made, and the history of records.
EPOCH, STEP, HISTORY = "epoch", "step", "history"
#: ``cka.json`` records: ``WHEN`` is ``START``, ``"epoch"`` or ``END``; ``CKA`` maps stage -> CKA.
WHEN, START, END, CKA = "when", "start", "end", "cka"
#: ``weight_drift.json`` records: ``DRIFT`` holds :func:`medxfer.metrics.weight_drift`'s result,
#: whose entries give the mean absolute change of the weights as ``DRIFT_L1``.
DRIFT, DRIFT_L1 = "drift", "l1"
#: ``subgroups_<prefix>.json``: attribute -> :class:`medxfer.metrics.SubgroupReport` fields.
ATTRIBUTES = "attributes"
#: ``calibration_<prefix>.json``: the reliability diagram's bins.
BINS = "bins"
#: ``calibration_<prefix>.json``: label (as in ``ece/<label>``, :func:`medxfer.metrics.metric_key`)
#: -> its own bins (multi-label tasks); the temperature
#: fitted on validation (logged as ``<prefix>/temperature``) and the validation epoch it was
#: fitted at; the ECE after scaling by it (logged as ``<prefix>/ece_scaled``) and its bins.
BINS_PER_LABEL, TEMPERATURE, TEMPERATURE_EPOCH = (
    "bins_per_label",
    "temperature",
    "temperature_epoch",
)
ECE_SCALED, BINS_SCALED = "ece_scaled", "bins_scaled"


# Strict JSON -----------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """``obj`` with tensors as lists, NaN as ``None`` and infinities as ``"inf"`` / ``"-inf"``,
    so that ``json.dumps(..., allow_nan=False)`` writes strict JSON (``null``, never ``NaN``).

    Example:
        >>> jsonable({"auroc": float("nan"), "ratio": float("inf"), "n": [1, 2.5]})
        {'auroc': None, 'ratio': 'inf', 'n': [1, 2.5]}
    """
    if hasattr(obj, "tolist") and not isinstance(obj, str):  # torch / numpy arrays and scalars
        obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: Path, data: Any, **kwargs: Any) -> Path:
    """Write ``data`` to ``path`` as strict, indented JSON (see :func:`jsonable`); returns
    ``path``. ``kwargs`` go to :func:`json.dumps` (e.g. ``sort_keys=True``)."""
    return write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False, **kwargs))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`), so a run killed mid-write
    never leaves a truncated artifact (a study takes a valid ``results.json`` for a finished
    replica)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# Case ids --------------------------------------------------------------------------------------
#: The file holding the key of the run's keyed case ids (hex, 64 characters).
ID_KEY = "id_key"


def case_id_key(run_dir: Path) -> bytes:
    """The key that turns a dataset's case ids into the ids written in a run's files.

    The nearest ``id_key`` file in ``run_dir`` or a folder above it is used (``medxfer study``
    writes one at the study's root, so that its replicas' prediction files share case ids and
    the report can pair them); with none, a random key is created in ``run_dir``. Kept beside the
    results, it lets the user join predictions back to the source ids locally
    (:func:`keyed_case_ids` on the source table), while a file shared without it names no case.
    """
    run_dir = Path(run_dir).resolve()
    for folder in (run_dir, *run_dir.parents):
        if (folder / ID_KEY).is_file():
            text = (folder / ID_KEY).read_text().strip()
            try:
                return bytes.fromhex(text)
            except ValueError:
                raise ValueError(
                    f"{folder / ID_KEY}: not a hex key; delete it to have a new one made"
                ) from None
    key = os.urandom(32)
    write_text(run_dir / ID_KEY, key.hex() + "\n")
    return key


def keyed_case_ids(ids: Any, key: bytes) -> list[str]:
    """HMAC-SHA256 of each case id under ``key``, as 20 hex characters: stable for one key,
    unlinkable to the source id (which embeds a patient identifier, e.g. CheXpert's
    ``patient00007_study1_view1_frontal`` or an NIH file name) without it.

    Example:
        >>> keyed_case_ids(["patient00007_study1"], bytes(32))
        ['58c34cfc88de0d08e19f']
    """
    import hashlib
    import hmac

    return [hmac.new(key, str(i).encode(), hashlib.sha256).hexdigest()[:20] for i in ids]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that infer the format from it
    -- ``np.savez``, ``savefig``, PIL -- still do) to write to; on success it is flushed to disk
    and renamed onto ``path`` in one step, so readers see the old file or the whole new one,
    never a part. On an error the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
        ('done', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
