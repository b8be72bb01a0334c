"""The generic table datamodule: any image dataset a user brings, by YAML alone.

A CSV (or Parquet) table with configurable columns -- image path(s), patient, case id, an
optional split, subgroup attributes -- and the target in any of the usual encodings:

* ``binary``: one 0/1 column per label (multi-label; ``-1`` and blanks by policy, as for
  CheXpert);
* ``class``: one class-name column (multi-class);
* ``findings``: one ``|``-separated findings column (multi-label, as NIH ChestX-ray14);
* ``soft``: one soft-label column (``"A:0.6|B:0.4"`` or a dict; multi-class with soft targets).

An image folder ``root/<class>/<image>`` (torchvision's ``ImageFolder`` layout) is read as a
``class`` table. Label names come from the training split, never from a fixed list; everything
else (the patient-level split, subsets, the HDF5 cache, shifted test sets, analyses, the report)
is the template's (:class:`~medxfer.datamodules.MedxferDataModule`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from medxfer.data.dataset import age_groups
from medxfer.data.tables import (
    TableError,
    check_age,
    close_names,
    near_duplicate_names,
    normalise_sex,
    parse_differential,
)
from medxfer.errors import ConfigError
from medxfer.transforms import ImageTransform, resize_side

from ..base import MedxferDataModule
from .readers import read_image_folder, read_image_table

__all__ = ["ImageTable"]

log = logging.getLogger(__name__)


class ImageTable(MedxferDataModule):
    """Any image dataset as a table (CSV / Parquet) or an image folder, configured in YAML.

    Args:
        train: the training table, or an image folder ``root/<class>/<image>``; re-split by
            patient by ``split`` unless ``split_column`` is given.
        val, test: explicit validation / in-distribution test tables (or folders).
        target: the target encoding: ``binary`` (0/1 column per label in ``labels``),
            ``class`` (class names in ``target_column``), ``findings`` (``separator``-joined
            names in ``target_column``) or ``soft`` (``"A:0.6|B:0.4"`` or a dict in
            ``target_column``). Image folders are ``class``.
        target_column: the column holding the target (``class`` / ``findings`` / ``soft``).
        labels: ``binary``: the label columns (required). Otherwise optional: the declared
            label names in order (default: every name in the training split, sorted, with a
            warning for a rare name that looks like a misspelling of a common one). A ``class``
            or ``soft`` name outside them is an error naming file, line and column and the
            closest declared name (``Eczma`` -> did you mean ``Eczema``?), unless ``other``
            is declared; ``findings`` outside them are not modelled (a near miss of a
            declared name is warned about), or train the dedicated ``other`` label. Every
            label needs a positive training case (see ``drop_empty_labels``).
        separator: separator of the ``findings`` column.
        no_finding: the ``findings`` name that means no label (all zeros), e.g. ``No Finding``.
        uncertain: ``binary``: what ``-1`` means in training: ``ones``, ``zeros`` or ``ignore``
            (masked).
        eval_uncertain: the same for validation / test / shifted tables (default: masked, as
            the CheXpert protocol).
        blank: ``binary``: what an empty cell means: ``zeros`` or ``ignore`` (masked).
        other: the class unknown labels map to (counted and logged); without it an unknown
            label of an evaluation table is an error naming file, line and column. ``class`` /
            ``soft``: any class (e.g. a class ``Other`` the data already has). ``findings``:
            a dedicated label of its own, never a finding of the training split or of
            ``labels`` -- folding unknown findings into a real one would make, e.g., Lipoid or
            Influenza cases COVID-19 positives; with ``labels`` declared, training findings
            outside them train it. ``binary`` targets have no unknown label: refused.
        drop_empty_labels: drop (count and log) labels without a positive case in the training
            split instead of failing: an untrained head would be scored and averaged into
            ``auroc_mean``.
        image_column: the image path column, or several (each row a case of images).
        image_root: folder image paths are relative to (default: each table's folder).
        patient_column: patient identifier (default: each row its own patient; give it when
            patients have several rows, or splits leak).
        id_column: case id column (default ``<table>-<line>``: the row's physical line in the
            file, the number every error names).
        where: row filters, column -> the values to keep (``{view: [PA, AP]}``), applied to
            every table before anything else is checked; the rows each filter removes are
            counted in the log, and a column the table lacks is an error naming it.
        split_column: column of ``train`` / ``val`` / ``test`` (instead of the re-split).
        group_columns: subgroup attributes, batch group name -> column (or a list of columns);
            their values are free text, groups as written.
        sex_column: a sex column, read through the shared list
            (:data:`~medxfer.data.tables.SEX_VALUES`: F, M, Female, Male in any case, Unknown,
            blank) into the ``sex`` group; another value is an error (``unknown_sex``: read as
            Unknown).
        age_column: a numeric age column in [0, 120] years (blank: unknown), binned by
            ``age_bins`` into the ``age`` group.
        age_bins: edges of the age groups.
        color: colour images (RGB); else grey, repeated to ``channels``.
        channels: output channels of grey images.
        image_size: training and evaluation resolution.
        resize: side before cropping (default ``image_size * 8 / 7``).
        augment: random rotation (``rotate``), crop (``crop``) and flips (``hflip``,
            ``vflip``) in training.
        crop: the training crop: ``random`` (an ``image_size`` window of the resized image) or
            ``resized`` (torchvision's random resized crop, the benchmark of Hosseinzadeh Taher
            et al., 2021; :class:`~medxfer.transforms.ImageTransform`).
        split, split_seed, stratify, seed, batch_size, **kwargs: as for every datamodule
            (:class:`MedxferDataModule`: image checks, loader settings, subsets, ``cache``);
            ``stratify`` defaults to true for class targets (:attr:`default_stratify`).
    """

    default_name = "data"
    default_batch_size = 32

    def __init__(
        self,
        train: str,
        target: Literal["binary", "class", "findings", "soft"] = "class",
        target_column: str | None = None,
        labels: Sequence[str] | None = None,
        separator: str = "|",
        no_finding: str | None = None,
        uncertain: Literal["ones", "zeros", "ignore"] = "ignore",
        eval_uncertain: Literal["ones", "zeros", "ignore"] = "ignore",
        blank: Literal["zeros", "ignore"] = "ignore",
        other: str | None = None,
        drop_empty_labels: bool = False,
        image_column: str | Sequence[str] = "path",
        image_root: str | None = None,
        patient_column: str | None = None,
        id_column: str | None = None,
        where: dict[str, list[str]] | None = None,
        split_column: str | None = None,
        group_columns: dict[str, str] | Sequence[str] | None = None,
        sex_column: str | None = None,
        age_column: str | None = None,
        age_bins: Sequence[float] = (40, 60, 80),
        color: bool = True,
        channels: int = 3,
        image_size: int = 224,
        resize: int | None = None,
        augment: bool = True,
        rotate: float = 10.0,
        hflip: bool = True,
        vflip: bool = False,
        crop: Literal["random", "resized"] = "random",
        **kwargs: Any,
    ) -> None:
        if split_column is not None:
            if kwargs.get("val") is not None or kwargs.get("test") is not None:
                raise ValueError(
                    "split_column splits the training table into train / val / test: give no "
                    "explicit val / test table with it"
                )
            kwargs["split"] = (1.0, 0.0, 0.0)  # the column decides
        super().__init__(train, **kwargs)
        self.save_hyperparameters()
        if target == "binary" and not labels:
            raise ValueError("target='binary' needs labels: the 0/1 label columns")
        if (
            target in ("class", "findings", "soft")
            and target_column is None
            and not self._is_folder(train)
        ):
            raise ValueError(f"target={target!r} needs target_column: the column holding it")
        self._check_other(target, other, labels)
        if color and channels != 3:
            raise ValueError("colour images give 3 channels; set color: false for grey input")
        self.image_columns = [image_column] if isinstance(image_column, str) else list(image_column)
        groups = group_columns or {}
        self.groups = dict(groups) if isinstance(groups, dict) else {c: c for c in groups}
        if sex_column is not None and "sex" in self.groups:
            raise ValueError("sex_column makes the 'sex' group: remove 'sex' from group_columns")
        self.reader = "rgb" if color else "grey"
        self._channels = 3 if color else channels
        self._other_counts: dict[str, int] = {}

    @staticmethod
    def _check_other(target: str, other: str | None, labels: Sequence[str] | None) -> None:
        """``other`` never folds unknown labels of a multi-label target into a real label: it
        is refused with ``binary`` targets, and with ``findings`` it must be a new name (not in
        ``labels``; :meth:`fit_labels` checks the training split's findings)."""
        if other is None:
            return
        if target == "binary":
            raise ConfigError(
                f"other={other!r}: binary targets are label columns and have no unknown label "
                "to map; remove other"
            )
        if target == "findings" and labels and other in labels:
            raise ConfigError(
                f"other={other!r} is one of the declared labels: unknown findings would count "
                f"as {other!r} positives; name a dedicated label (e.g. other: Other)"
            )

    # Reading ---------------------------------------------------------------------------------
    @staticmethod
    def _is_folder(table: str) -> bool:
        return Path(table).is_dir()

    @property
    def multiclass(self) -> bool:
        """Whether the target is one distribution over classes (``class``, ``soft``, folders)."""
        return self.hparams.target in ("class", "soft")

    @property
    def output_type(self) -> str:
        """``multiclass`` (use ``CaseClassifier``) or ``multilabel`` (``MultiLabelClassifier``)."""
        return "multiclass" if self.multiclass else "multilabel"

    def _target_columns(self) -> list[str]:
        hp = self.hparams
        return list(hp.labels) if hp.target == "binary" else [hp.target_column]

    def read_table(self, table: str, evaluation: bool = False) -> pd.DataFrame:
        """Read one table (or image folder) and parse its target into canonical columns:
        ``label:<name>`` floats (``binary``), ``target_class`` (``class``), ``target_set``
        (``findings``) or ``target_weights`` (``soft``); bad values name file, line, column."""
        hp = self.hparams
        if self._is_folder(table):
            if hp.target != "class":
                raise ValueError(
                    f"{table} is an image folder, which holds classes: set target: class"
                )
            columns = {
                "group_columns": self.groups,
                "sex_column": hp.sex_column,
                "age_column": hp.age_column,
                "patient_column": hp.patient_column,
                "split_column": hp.split_column,
                "where": hp.where,
            }
            named = [k for k, v in columns.items() if v]
            if named:
                raise ValueError(
                    f"{table} is an image folder, which has no columns: remove {', '.join(named)}"
                )
            df = read_image_folder(table)
            df["target_class"] = df.pop("class")
        else:
            extra = [*self._target_columns(), *self.groups.values()]
            extra += [c for c in (hp.sex_column, hp.age_column) if c]
            df = read_image_table(
                table,
                self.image_columns,
                hp.image_root,
                hp.patient_column,
                hp.id_column,
                hp.split_column if table == self.tables["train"] else None,
                list(dict.fromkeys(extra)),
                drop_duplicates=self.drop_duplicates,
                where=hp.where,
            )
            self._parse_target(df, evaluation)
        for group, column in self.groups.items():
            df[f"group:{group}"] = df[column] if column in df else "unknown"
        if hp.sex_column:
            df["group:sex"] = normalise_sex(
                df[hp.sex_column], self._where(df, hp.sex_column), self.unknown_sex
            )
        if hp.age_column:
            ages = self._ages(df, hp.age_column)
            df["group:age"] = age_groups(ages, hp.age_bins)
        return df

    @staticmethod
    def _where(df: pd.DataFrame, column: str) -> Callable[[int], str]:
        """Row position -> ``"<file>, line <n>, column '<column>'"`` of ``df``."""
        return lambda k: f"{df['source'].iloc[k]}, line {df['line'].iloc[k]}, column {column!r}"

    def _ages(self, df: pd.DataFrame, column: str) -> np.ndarray:
        """The age column as years (NaN when blank), each a number in [0, 120]."""
        text = df[column]
        ages = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
        bad = np.isnan(ages) & (text != "").to_numpy()
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise TableError(f"{self._where(df, column)(k)}: age {text.iloc[k]!r} is not a number")
        check_age(ages, self._where(df, column))
        return ages

    def _parse_target(self, df: pd.DataFrame, evaluation: bool = False) -> None:
        hp = self.hparams
        where = lambda k, c: f"{df['source'].iloc[k]}, line {df['line'].iloc[k]}, column {c!r}"  # noqa: E731
        if hp.target == "binary":
            codes = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0}
            policy = hp.eval_uncertain if evaluation else hp.uncertain
            minus = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
            empty = {"zeros": 0.0, "ignore": np.nan}[hp.blank]
            for label in hp.labels:
                col = df[label]
                values = col.map(codes)
                bad = values.isna() & (col != "")
                if bad.any():
                    k = int(np.flatnonzero(bad.to_numpy())[0])
                    raise TableError(
                        f"{where(k, label)}: label value {col.iloc[k]!r}; expected 1, 0, -1 or blank"
                    )
                values = values.where(col != "", empty).replace(-1.0, minus)
                df[f"label:{label}"] = values.astype(float)
        elif hp.target == "class":
            col = df[hp.target_column]
            blank = col == ""
            if blank.any():
                k = int(np.flatnonzero(blank.to_numpy())[0])
                raise TableError(f"{where(k, hp.target_column)}: no class")
            self._check_declared(df, col.tolist(), hp.target_column)
            df["target_class"] = col
        elif hp.target == "findings":
            col = df[hp.target_column]
            df["target_set"] = [
                frozenset(f.strip() for f in v.split(hp.separator) if f.strip()) - {hp.no_finding}
                for v in col
            ]
        else:
            col = df[hp.target_column]
            df["target_weights"] = [
                parse_differential(v, where(k, hp.target_column)) for k, v in enumerate(col)
            ]
            self._check_declared(df, df["target_weights"].tolist(), hp.target_column)

    def _check_declared(self, df: pd.DataFrame, values: list[Any], column: str) -> None:
        """With declared ``labels`` and no ``other``: every class name in ``values`` (a name or
        a dict of names per row) is declared, else an error naming the file, line, column and
        the closest declared name."""
        hp = self.hparams
        if not hp.labels or hp.other:
            return
        declared = set(hp.labels)
        for k, value in enumerate(values):
            for name in [value] if isinstance(value, str) else value:
                if name not in declared:
                    raise TableError(
                        f"{self._where(df, column)(k)}: class {name!r} is not in the declared "
                        f"labels {list(hp.labels)}{close_names(name, hp.labels)}"
                    )

    # Template hooks --------------------------------------------------------------------------
    def evaluation_differs(self) -> bool:
        hp = self.hparams
        return hp.target == "binary" and hp.eval_uncertain != hp.uncertain

    def split_description(self) -> str:
        col = self.hparams.split_column
        return f"reading and the split column {col!r}" if col else super().split_description()

    def split_table(self, table: pd.DataFrame) -> list[pd.DataFrame]:
        """The ``split_column``'s parts, else the template's patient-level re-split."""
        if self.hparams.split_column is None:
            return super().split_table(table)
        return [table[table["split"] == part] for part in ("train", "val", "test")]

    def fit_labels(self, train: pd.DataFrame) -> list[str]:
        """``binary``: the label columns; otherwise ``labels`` when given, else every name in
        the training split (sorted), with ``other`` added when declared."""
        hp = self.hparams
        if hp.target == "binary":
            return self._supported(train, list(hp.labels))
        if hp.labels:
            names = list(hp.labels)
        else:
            if "target_class" in train:
                counts = Counter(train["target_class"])
            elif "target_set" in train:
                counts = Counter(n for s in train["target_set"] for n in s)
            else:
                counts = Counter(n for w in train["target_weights"] for n in w)
            names = sorted(counts)
            for rare, common in near_duplicate_names(counts):
                log.warning(
                    "%s: label %r (%d case(s)) looks like a misspelling of %r (%d); declare "
                    "labels to make this an error",
                    self.name,
                    rare,
                    counts[rare],
                    common,
                    counts[common],
                )
        if hp.other and hp.target == "findings" and not hp.labels and hp.other in names:
            raise ConfigError(
                f"other={hp.other!r} is a finding of the training split: unknown findings would "
                f"count as {hp.other!r} positives; name a dedicated label (e.g. other: Other)"
            )
        if hp.other and hp.other not in names:
            names.append(hp.other)
        if not names:
            raise ValueError(f"{self.name}: the training split has no labels")
        return self._supported(train, names)

    def label_positives(self, train: pd.DataFrame, names: Sequence[str]) -> dict[str, int]:
        """Training cases positive for each label of ``names`` (``binary``: cells read as 1;
        otherwise cases naming it with a positive weight, unknown names counted for ``other``
        as :meth:`targets` maps them)."""
        hp = self.hparams
        if hp.target == "binary":
            return {n: int((train[f"label:{n}"] == 1).sum()) for n in names}
        counts: Counter[str] = Counter()
        column = next(c for c in ("target_class", "target_set", "target_weights") if c in train)
        for value in train[column]:
            if isinstance(value, str):
                items = {value}
            elif isinstance(value, dict):
                items = {n for n, w in value.items() if w > 0}
            else:
                items = set(value)
            for n in items:
                counts[n if n in names or hp.other is None else hp.other] += 1
        return {n: counts[n] for n in names}

    def _supported(self, train: pd.DataFrame, names: list[str]) -> list[str]:
        """``names`` after refusing (or, with ``drop_empty_labels``, dropping and counting) the
        labels without a positive training case: their heads would never see a positive, yet be
        scored and averaged like the others."""
        positives = self.label_positives(train, names)
        empty = [n for n in names if positives[n] == 0]
        if not empty:
            return names
        other = self.hparams.other
        if other in empty:
            raise ConfigError(
                f"{self.name}: other={other!r} has no training case to learn from (no training "
                "label maps to it); declare labels, so that training labels outside them train "
                f"{other!r}, or remove other"
            )
        if self.hparams.target == "binary":
            known = {n: int(train[f"label:{n}"].notna().sum()) for n in empty}
            why = ", ".join(f"{n!r} ({known[n]} of {len(train)} rows known)" for n in empty)
        else:
            why = ", ".join(repr(n) for n in empty)
        if not self.hparams.drop_empty_labels:
            raise ConfigError(
                f"{self.name}: label(s) {why} have no positive case in the training split "
                f"({len(train)} rows); remove them from labels, or set drop_empty_labels: true"
            )
        log.warning(
            "%s: dropped %d label(s) without a positive training case: %s",
            self.name,
            len(empty),
            why,
        )
        kept = [n for n in names if n not in empty]
        if not kept:
            raise ConfigError(f"{self.name}: no label has a positive case in the training split")
        return kept

    def targets(self, table: pd.DataFrame, what: str) -> np.ndarray:
        """``(N, K)`` targets over the label space; unknown names are an error naming file,
        line and column, or mapped to ``other`` (counted)."""
        hp = self.hparams
        names = self.label_names
        if hp.target == "binary":
            return table[[f"label:{n}" for n in names]].to_numpy(dtype=np.float32)
        index = {n: k for k, n in enumerate(names)}
        out = np.zeros((len(table), len(names)), dtype=np.float32)
        mapped = 0
        near: dict[str, int] = {}
        column = (
            "target_class"
            if "target_class" in table
            else "target_set"
            if "target_set" in table
            else "target_weights"
        )
        for r, (value, line, src) in enumerate(
            zip(table[column], table["line"], table["source"], strict=True)
        ):
            items = (
                {value: 1.0}
                if isinstance(value, str)
                else dict.fromkeys(value, 1.0)
                if isinstance(value, frozenset)
                else value
            )
            for label, weight in items.items():
                if label not in index and hp.other is None and hp.target == "findings":
                    if hp.labels:
                        if close_names(label, names):
                            near[label] = near.get(label, 0) + 1
                        continue  # findings outside the labels asked for are not modelled
                    raise TableError(
                        f"{src}, line {line}, column {hp.target_column!r}: {what}: finding "
                        f"{label!r} is not in the training split's labels {names}"
                        f"{close_names(label, names)}; declare labels (the findings to model; "
                        "others are not modelled) or a dedicated label other: Other"
                    )
                if label not in index:
                    if hp.other is None:
                        col = hp.target_column or "class folder"
                        raise TableError(
                            f"{src}, line {line}, column {col!r}: {what}: label {label!r} is not in "
                            f"the training split's labels {names}{close_names(label, names)}; "
                            "declare other: <a class> to map unknown classes to it"
                        )
                    label, mapped = hp.other, mapped + 1
                out[r, index[label]] += weight
        for label, n in near.items():
            log.warning(
                "%s: finding %r (%d case(s)) is not modelled: not in labels, though close to one%s",
                what,
                label,
                n,
                close_names(label, names),
            )
        if mapped:
            self._other_counts[what] = mapped
            log.warning("%s: %d unknown label(s) mapped to %r", what, mapped, hp.other)
        return out

    @property
    def default_stratify(self) -> bool:
        """Class targets (``class``, ``soft``, image folders) stratify the re-split by default:
        a rare class must reach training; multi-label targets when ``stratify: true``."""
        return self.multiclass

    def split_strata(self, table: pd.DataFrame) -> pd.DataFrame:
        """Indicators of each row's class (``class``; ``soft``: its largest weight) or of its
        positive labels (``binary``: cells read as 1; ``findings``: each finding named), over
        every name in the table: the label space is fixed only after the split."""
        if "target_class" in table:
            return pd.get_dummies(table["target_class"]).astype(float)
        if "target_weights" in table:
            top = [max(w, key=w.get) for w in table["target_weights"]]
            return pd.get_dummies(pd.Series(top, index=table.index)).astype(float)
        if "target_set" in table:
            names = sorted({n for s in table["target_set"] for n in s})
            return pd.DataFrame(
                [[float(n in s) for n in names] for s in table["target_set"]],
                index=table.index,
                columns=names,
            )
        labels = list(self.hparams.labels)
        return pd.DataFrame(
            (table[[f"label:{n}" for n in labels]].to_numpy() == 1).astype(float),
            index=table.index,
            columns=labels,
        )

    def strata(self, train: pd.DataFrame) -> Sequence[object]:
        """The class (multi-class) or the rarest positive label (multi-label)."""
        if self.multiclass:
            targets = self.targets(train, "train")
            return [self.label_names[k] for k in targets.argmax(axis=1)]
        return super().strata(train)

    def group_columns(self) -> dict[str, str]:
        out = {g: f"group:{g}" for g in self.groups}
        if self.hparams.sex_column:
            out["sex"] = "group:sex"
        if self.hparams.age_column:
            out["age"] = "group:age"
        return out

    def dataset_options(self, train: bool) -> dict[str, Any]:
        """Several image columns: a packed case of images (shuffled in training)."""
        if len(self.image_columns) == 1:
            return {}
        return {"views": len(self.image_columns), "pack": True, "shuffle": train}

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return resize_side(self.hparams.image_size, self.hparams.resize)

    def transform(self, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
        hp = self.hparams
        aug = train and hp.augment
        return ImageTransform(
            hp.image_size,
            hp.resize,
            train=aug,
            rotate=hp.rotate,
            hflip=hp.hflip,
            vflip=hp.vflip,
            channels=self._channels,
            seed=self.seed,
            crop=hp.crop,
        )
