"""Chest X-ray datamodule: train on one source (CheXpert, NIH ChestX-ray14 or MIMIC-CXR-JPG),
evaluate on its in-distribution test split and on any number of shifted sets (other hospitals).

This reproduces the chest X-ray protocol of Mustafa et al. (2021): CheXpert's training set is
re-split by patient into train / validation / test, the model is selected on validation, and
the same model is evaluated zero-shot on NIH ChestX-ray14 in CheXpert's label space. Each test
set is its own dataloader, logged as ``test/<name>/<metric>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from medxfer.data.dataset import age_groups
from medxfer.errors import ConfigError
from medxfer.transforms import resize_side

from ..base import MedxferDataModule
from .covidx import COVIDX_CLASSES, read_covidx
from .mimic import MIMIC_SPLITS, read_mimic_cxr
from .padchest import PADCHEST_TERMS, read_padchest_csv
from .tables import (
    CHEXPERT_LABELS,
    COMPETITION_LABELS,
    NIH_FINDINGS,
    apply_uncertainty,
    read_chexpert_csv,
    read_nih_csv,
)
from .transforms import GreyImageTransform
from .tuberculosis import TB_LABEL, read_tuberculosis

__all__ = ["CXRTable", "ChestXrayDataModule"]

log = logging.getLogger(__name__)


@dataclass
class CXRTable:
    """Where one chest X-ray table is and in which format.

    Attributes:
        csv: CheXpert ``train.csv``/``valid.csv``, NIH ``Data_Entry_2017*.csv``, MIMIC-CXR-JPG
            ``mimic-cxr-2.0.0-metadata.csv.gz`` (its label and split tables beside it), a COVIDx
            label file (``train.txt``, ``test_COVIDx9A.txt``...) or a tuberculosis set's folder
            (``MontgomerySet/``, ``ChinaSet_AllFiles/``).
        format: ``chexpert``, ``nih``, ``mimic``, ``covidx`` or ``tuberculosis``.
        root: CheXpert: the folder holding ``CheXpert-v1.0.../`` (default: the CSV's
            grandparent). NIH: the image folder (default: ``images/`` beside the CSV).
            MIMIC: the folder holding ``files/`` (default: the table's folder). COVIDx: the
            split's image folder (default: ``train/``, ``val/`` or ``test/`` beside the file).
        split_list: NIH only: keep the images listed (``test_list.txt``...).
        official_split: MIMIC only: keep the images of this official split (``train``,
            ``validate``, ``test``), or ``all``: keep every image and use the official split
            as this source's train / val / test (in place of the patient re-split by
            ``split``; one source of a merged set may, the others are re-split).
        labeler: MIMIC only: the label table, ``chexpert`` or ``negbio``.
        patients: MIMIC only: MIMIC-IV's ``patients.csv[.gz]`` for sex and age.
        fields: COVIDx only: the label file's shape, ``3``, ``4``, ``mixed`` or ``auto``
            (detected per line and logged).
        views: keep the images of these view groups only (``PA``, ``AP``, ``AP Supine``,
            ``Lateral``, ...; counted in the log), e.g. a per-source view filter of merged data.
        options: PadChest only: further arguments of
            :func:`~medxfer.datamodules.chest_xray.read_padchest_csv` (``layout``, ``method``,
            ``projections``, ``drop_excluded``, ``drop_suboptimal``, ``terms``).
    """

    csv: str
    format: Literal["chexpert", "nih", "mimic", "padchest", "covidx", "tuberculosis"] = "chexpert"
    root: str | None = None
    split_list: str | None = None
    official_split: Literal["train", "validate", "test", "all"] | None = None
    labeler: Literal["chexpert", "negbio"] = "chexpert"
    patients: str | None = None
    fields: Literal["auto", "3", "4", "mixed"] = "auto"
    views: list[str] | None = None
    options: dict[str, Any] | None = None


def readable_labels(table: CXRTable) -> list[str]:
    """The label names a source's reader can give (others are unknown, NaN, on its rows):
    CheXpert and MIMIC the 14 CheXpert observations; NIH its findings and the CheXpert names
    (those without an NIH counterpart unknown); PadChest the keys of its term map; COVIDx its
    classes; the tuberculosis sets their one label."""
    if table.format in ("chexpert", "mimic"):
        return list(CHEXPERT_LABELS)
    if table.format == "nih":
        return list(dict.fromkeys([*NIH_FINDINGS, *CHEXPERT_LABELS]))
    if table.format == "padchest":
        terms = dict(PADCHEST_TERMS, **((table.options or {}).get("terms") or {}))
        return [k for k, v in terms.items() if v]
    if table.format == "covidx":
        return list(COVIDX_CLASSES)
    return [TB_LABEL]


class ChestXrayDataModule(MedxferDataModule):
    """Multi-label chest X-ray data with in-distribution and shifted test sets.

    Several sources in one label space: ``train`` (and ``val`` / ``test``) may be a mapping of
    source name -> table (CheXpert, MIMIC, NIH, PadChest...: the merged pre-training data of the
    scale study). Each source is read in the requested label space -- a label its reader cannot
    give is unknown (NaN) on its rows, masked in the loss and the metrics, never a negative --
    and re-split by patient on its own (``split``, ``stratify``), so every part holds each
    source in proportion. ``label_space`` chooses the space: the ``labels`` as given, their
    ``union`` (every label some source annotates) or ``intersection`` (those every source
    annotates). ``source_weights`` samples the training sources at those relative weights; the
    test part gives one test set per source (``test/<source>/...``), and the ``dataset`` group
    (a ``SubgroupCallback`` attribute) breaks validation down by source.

    Args:
        train: the training table (or source name -> table); re-split by patient into
            train / val / test by ``split``.
        val: an explicit validation table (or source name -> table; then ``split[1]`` must be 0).
        test: an explicit in-distribution test table (or mapping; then ``split[2]`` must be 0).
        shifted: name -> table of each shifted test set (e.g. ``{"nih": ...}``).
        labels: label names (CheXpert observations, NIH findings, PadChest map keys...).
        label_space: ``given`` (``labels``), ``union`` or ``intersection`` of what the sources
            annotate among ``labels``.
        source_weights: source name -> relative sampling weight of merged training sources
            (each source's rows drawn with that share of every epoch, with replacement);
            default: every row once per epoch.
        uncertainty: CheXpert -1.0 in training: ``ones`` (U-Ones), ``zeros``, ``ignore``, or
            the label smoothing ``lsr-ones`` (U(0.55, 0.85)) / ``lsr-zeros`` (U(0, 0.3)), drawn
            per image (MIMIC: per study) and label from ``seed``, the same on every read and
            resume.
        eval_uncertainty: the same for validation / test tables (default: masked).
        frontal_only: drop lateral images.
        image_size: training and evaluation resolution.
        resize: side before cropping (default ``image_size * 8 / 7``).
        channels: output channels (3 for RGB backbones, 1 with an adapted first conv).
        augment: the paper's augmentation in training.
        age_bins: edges of the age groups.
        **kwargs: the settings every datamodule shares (:class:`MedxferDataModule`): image
            checks (``skip_bad_images``, ``verify_images``), table checks
            (``drop_duplicates``, ``unknown_sex``), loader (``eval_batch_size``,
            ``num_workers``, ``pin_memory``, ``persistent_workers``, ``prefetch_factor``),
            subsets (``train_fraction``, ``shots_per_class``, ``subsample_seed``) and
            ``cache``, an HDF5 image cache from ``medxfer prepare`` (stores images at
            ``resize``).
    """

    default_name = "chexpert"
    default_batch_size = 32
    default_split = (0.75, 0.10, 0.15)

    def __init__(
        self,
        train: CXRTable | dict[str, CXRTable],
        val: CXRTable | dict[str, CXRTable] | None = None,
        test: CXRTable | dict[str, CXRTable] | None = None,
        shifted: dict[str, CXRTable] | None = None,
        labels: Sequence[str] = COMPETITION_LABELS,
        label_space: Literal["given", "union", "intersection"] = "given",
        source_weights: dict[str, float] | None = None,
        uncertainty: Literal["ones", "zeros", "ignore", "lsr-ones", "lsr-zeros"] = "ones",
        eval_uncertainty: Literal["ones", "zeros", "ignore"] = "ignore",
        frontal_only: bool = True,
        image_size: int = 224,
        resize: int | None = None,
        channels: int = 3,
        augment: bool = True,
        age_bins: Sequence[float] = (40, 60, 80),
        **kwargs: Any,
    ) -> None:
        super().__init__(train, val, test, shifted, **kwargs)
        self.save_hyperparameters()
        self.labels = list(labels)
        self._channels = channels
        self.sources = list(train) if isinstance(train, dict) else None
        #: training reads kept for the evaluation read of the same table (see _read_source)
        self._training_reads: dict[tuple[str, tuple[str, ...]], pd.DataFrame] = {}
        if source_weights is not None:
            unknown = sorted(set(source_weights) - set(self.sources or []))
            if self.sources is None or unknown or min(source_weights.values()) < 0:
                raise ConfigError(
                    f"source_weights {source_weights}: weights (>= 0) of the training sources "
                    f"{self.sources or '(one table: give train as a mapping of sources)'}"
                )

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def cache_side(self) -> int:
        return resize_side(self.hparams.image_size, self.hparams.resize)

    def table_name(self, table: CXRTable | dict[str, CXRTable]) -> str:
        if isinstance(table, dict):
            return ", ".join(f"{name}: {t.csv}" for name, t in table.items())
        return table.csv

    def table_paths(self, table: CXRTable | dict[str, CXRTable]) -> list[str]:
        return [t.csv for t in table.values()] if isinstance(table, dict) else [table.csv]

    @property
    def test_names(self) -> list[str]:
        """One test set per training source when the data are merged."""
        return list(self.sources) if self.sources is not None else [self.name]

    def test_parts(self, test: pd.DataFrame) -> dict[str, pd.DataFrame]:
        if self.sources is None or "dataset" not in test:
            return {self.name: test}
        return {name: test[test["dataset"] == name] for name in self.sources}

    def split_table(self, table: pd.DataFrame) -> list[pd.DataFrame]:
        """Merged sources are split each on its own (every part holds each source in
        proportion): by the source's official split when its table asks for it
        (``official_split: all``), else re-split by patient; one table alike."""
        train = self.tables["train"]
        if self.sources is None:
            return self._split_source(train, table)
        parts = [
            self._split_source(train[name], table[table["dataset"] == name])
            for name in self.sources
        ]
        return [pd.concat([p[k] for p in parts]) for k in range(3)]

    def _split_source(self, source: CXRTable, rows: pd.DataFrame) -> list[pd.DataFrame]:
        """One source's train / val / test: its official split (MIMIC's ``train`` /
        ``validate`` / ``test``, patient-disjoint as its reader checked) or the template's
        patient re-split."""
        if source.official_split != "all":
            return super().split_table(rows)
        official = rows["split"]
        log.info(
            "%s: official split used (train / validate / test: %s)",
            source.csv,
            " / ".join(str(int((official == s).sum())) for s in MIMIC_SPLITS),
        )
        return [rows[official == s] for s in MIMIC_SPLITS]

    def fit_labels(self, train: pd.DataFrame) -> list[str]:
        """``labels``, or their union / intersection over what the training sources annotate
        (a label is annotated by a source when one of its training rows knows it)."""
        if self.hparams.label_space == "given":
            return self.labels
        sources = train["dataset"] if "dataset" in train else pd.Series("data", index=train.index)
        known = {
            name: {lab for lab in self.labels if train.loc[sources == name, lab].notna().any()}
            for name in sources.unique()
        }
        pick = set.union if self.hparams.label_space == "union" else set.intersection
        chosen = pick(*known.values())
        log.info(
            "label space %s over sources %s",
            self.hparams.label_space,
            {k: sorted(v) for k, v in known.items()},
        )
        if not chosen:
            raise ConfigError(
                f"label_space {self.hparams.label_space}: no label of {self.labels} is annotated by {'every' if pick is set.intersection else 'any'} source"
            )
        return [lab for lab in self.labels if lab in chosen]

    def train_sampler(self, dataset: Any) -> Sampler | None:
        """``source_weights``: each training row drawn with probability ``weight(source) /
        rows(source)``, normalised, ``len(dataset)`` draws per epoch with replacement."""
        weights = self.hparams.source_weights
        if not weights:
            return None
        sources = np.asarray(dataset.groups["dataset"])
        counts = {name: int((sources == name).sum()) for name in np.unique(sources)}
        row = np.array([weights.get(s, 0.0) / counts[s] for s in sources], dtype=np.float64)
        if row.sum() <= 0:
            raise ConfigError(f"source_weights {weights}: every training row has weight 0")
        return WeightedRandomSampler(
            torch.as_tensor(row), len(row), replacement=True, generator=torch.Generator()
        )

    def evaluation_differs(self) -> bool:
        return self.hparams.eval_uncertainty != self.hparams.uncertainty

    def read_table(
        self, table: CXRTable | dict[str, CXRTable], evaluation: bool = False
    ) -> pd.DataFrame:
        """Read one table (or each source of a mapping, in the requested label space, with a
        ``dataset`` column and source-prefixed patient ids) with this datamodule's label
        settings (the evaluation uncertainty policy when ``evaluation``), keep the ``views``
        asked for and add the age groups."""
        if not isinstance(table, dict):
            return self._read_source(table, self.labels, evaluation)
        frames = []
        for name, source in table.items():
            readable = set(readable_labels(source))
            asked = [lab for lab in self.labels if lab in readable]
            if not asked:
                raise ConfigError(
                    f"source {name!r} ({source.csv}, format {source.format}) gives none of the "
                    f"labels {self.labels}"
                )
            df = self._read_source(source, asked, evaluation)
            unknown = {lab: np.nan for lab in self.labels if lab not in asked}  # never negative
            df = df.assign(
                **unknown, dataset=name, patient_id=name + ":" + df["patient_id"].astype(str)
            )
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def _read_source(self, table: CXRTable, labels: list[str], evaluation: bool) -> pd.DataFrame:
        """One table through its reader; an evaluation read of a table already read for
        training is derived from that read (its ``uncertain`` bits under
        ``eval_uncertainty``), not parsed again."""
        hp = self.hparams
        key = (repr(table), tuple(labels))
        if evaluation and key in self._training_reads:
            return apply_uncertainty(self._training_reads.pop(key), labels, hp.eval_uncertainty)
        df = self._parse_source(table, labels, evaluation)
        if not evaluation and self.evaluation_differs() and "uncertain" in df:
            self._training_reads[key] = df
        return df

    def _parse_source(self, table: CXRTable, labels: list[str], evaluation: bool) -> pd.DataFrame:
        hp = self.hparams
        uncertainty = hp.eval_uncertainty if evaluation else hp.uncertainty
        if table.format == "chexpert":
            df = read_chexpert_csv(
                table.csv,
                labels,
                uncertainty,  # type: ignore[arg-type]
                hp.frontal_only,
                table.root,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
                lsr_seed=self.seed,
            )
        elif table.format == "mimic":
            df = read_mimic_cxr(
                table.csv,
                labels,
                uncertainty,  # type: ignore[arg-type]
                hp.frontal_only,
                table.official_split,
                table.labeler,
                table.root,
                table.patients,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
                lsr_seed=self.seed,
            )
        elif table.format == "padchest":
            df = read_padchest_csv(
                table.csv,
                labels,
                table.root,
                frontal_only=hp.frontal_only,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
                **(table.options or {}),
            )
        elif table.format == "covidx":
            df = read_covidx(
                table.csv,
                labels,
                table.root,
                table.fields,
                drop_duplicates=self.drop_duplicates,
            )
        elif table.format == "tuberculosis":
            df = read_tuberculosis(table.csv, labels)
        elif table.format == "nih":
            df = read_nih_csv(
                table.csv,
                labels,
                table.root,
                table.split_list,
                drop_duplicates=self.drop_duplicates,
                unknown_sex=self.unknown_sex,
            )
        else:
            raise ValueError(
                f"{table.csv}: unknown format {table.format!r}; use 'chexpert', 'nih', 'mimic', "
                "'padchest', 'covidx' or 'tuberculosis'"
            )
        if table.views is not None:
            keep = df["view"].isin(table.views)
            log.info(
                "%s: kept %d of %d rows of views %s",
                table.csv,
                int(keep.sum()),
                len(df),
                table.views,
            )
            df = df[keep]
        df["age_group"] = age_groups(df["age"], hp.age_bins)
        return df

    def group_columns(self) -> dict[str, str]:
        groups = {"sex": "sex", "age": "age_group", "view": "view"}
        return groups if self.sources is None else {**groups, "dataset": "dataset"}

    def transform(self, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
        hp = self.hparams
        return GreyImageTransform(
            hp.image_size,
            hp.resize,
            train=train and hp.augment,
            channels=self._channels,
            seed=self.seed,
        )
