"""The results table of a run: the Markdown that ``medxfer fit`` / ``medxfer test`` print and
write as ``results.md`` beside ``results.json``, and the reader of ``results.json``
(:func:`read_results`: ``medxfer study`` counts a replica done by it without importing torch).

A library function (the commands and the study report both use it); it imports the standard
library at module level only, and the subgroup reader (torch) when a run has subgroups.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["format_results", "read_results"]


def format_results(
    flat: dict[str, float], subgroups: dict[str, dict[str, Any]] | None = None
) -> str:
    """Markdown tables of ``test/<set>/<metric>`` values: one row per test set with the headline
    metrics (AUROC, ECE, loss, per-label AUROC with its number of positives), then one row per
    set and attribute with the subgroup summary when subgroup metrics were logged. NaN (e.g. a
    gap with fewer than two scored subgroups) reads ``n/a``.

    ``subgroups`` maps a test set to its ``analysis/subgroups_test_<set>.json`` (as written by
    :class:`~medxfer.callbacks.SubgroupCallback`); each adds one row per set, attribute and group
    with the group's size and metric value (AUROC, accuracy or Dice: the file's ``metric``), the
    same for every task. A group under ``min_size`` reads ``too small``, one whose metric is
    undefined ``n/a``, and an unknown-attribute group scored apart from the gap ``(apart)``.

    Example:
        >>> print(format_results({"test/nih/auroc/Edema": 0.75, "test/nih/positives/Edema": 12}))
        | set | auroc/Edema |
        |---|---|
        | nih | 0.7500 (12 pos) |
    """
    from medxfer.naming import POSITIVES, SUBGROUP, SUBGROUP_SUMMARY

    rows: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        _, name, metric = key.split("/", 2)
        rows.setdefault(name, {})[metric] = value

    def cell(v: float | None) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"

    def main_cell(r: dict[str, float], metric: str) -> str:
        text = cell(r.get(metric))
        if metric.startswith("auroc/"):
            pos = r.get(f"{POSITIVES}/{metric.removeprefix('auroc/')}")
            text += "" if pos is None or math.isnan(pos) else f" ({pos:.0f} pos)"
        return text

    def order(m: str) -> tuple:
        return (m.startswith("loss"), "/" in m, m)

    apart = (f"{SUBGROUP}/", f"{POSITIVES}/")
    main = sorted({m for r in rows.values() for m in r if not m.startswith(apart)}, key=order)
    lines = ["| set | " + " | ".join(main) + " |", "|---" * (len(main) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(main_cell(r, c) for c in main) + " |"
        for name, r in rows.items()
    ]
    attrs = sorted(
        {m.split("/")[1] for r in rows.values() for m in r if m.startswith(f"{SUBGROUP}/")}
    )
    if attrs:
        lines += [
            "",
            "| set | attribute | " + " | ".join(SUBGROUP_SUMMARY) + " |",
            "|---" * (len(SUBGROUP_SUMMARY) + 2) + "|",
        ]
        for name, r in rows.items():
            for a in attrs:
                if any(k.startswith(f"{SUBGROUP}/{a}/") for k in r):
                    lines.append(
                        f"| {name} | {a} | "
                        + " | ".join(cell(r.get(f"{SUBGROUP}/{a}/{s}")) for s in SUBGROUP_SUMMARY)
                        + " |"
                    )
    if subgroups:
        lines += _group_tables(subgroups, cell)
    return "\n".join(lines)


def _group_tables(subgroups: dict[str, dict[str, Any]], cell: Any) -> list[str]:
    """The per-group rows of :func:`format_results`: one table per subgroup metric (a run has
    one; sets scored by different metrics would get a table each)."""
    from medxfer import artifacts
    from medxfer.metrics.subgroups import SubgroupReport  # torch: only when there are groups

    lines: list[str] = []
    for metric in dict.fromkeys(str(data["metric"]) for data in subgroups.values()):
        lines += ["", f"| set | attribute | group | n | {metric} |", "|---" * 5 + "|"]
        for name, data in subgroups.items():
            if str(data["metric"]) != metric:
                continue
            for attr, raw in data[artifacts.ATTRIBUTES].items():
                rep = SubgroupReport.from_dict(raw)
                for group, n in rep.sizes.items():
                    if group in rep.too_small:
                        value = "too small"
                    elif group in rep.unknown:
                        value = f"{cell(rep.unknown[group])} (apart)"
                    else:
                        value = cell(rep.values.get(group))  # undefined: n/a
                    lines.append(f"| {name} | {attr} | {group} | {n} | {value} |")
    return lines


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
