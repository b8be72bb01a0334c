"""The task and datamodule registries, with medxfer's own entries declared by import path.

Tasks and datamodules are LightningModules and LightningDataModules: importing one imports
Lightning (seconds). Their registries live here, in a module that imports nothing heavy, and
medxfer's built-in entries are declared (:meth:`medxfer.registry.Registry.declare`) by name,
one-line description and ``"module:attr"`` path, so ``medxfer list tasks|datamodules`` answers
without importing them; :meth:`~medxfer.registry.Registry.get` (and the CLI, before it parses a
config) imports what it returns. Nothing here imports a modality: the paths are strings, and
each modality's datamodule still registers itself (``@DATAMODULES.register()``), which
completes its declaration when its module is imported.

``medxfer.tasks.TASKS`` and ``medxfer.datamodules.DATAMODULES`` are these objects; plug-ins add
to them as before. A declaration's description is the first line (or sentence) of its class's
docstring; ``tests/test_startup.py`` checks that they agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medxfer.registry import Registry

if TYPE_CHECKING:
    from medxfer.datamodules import MedxferDataModule
    from medxfer.tasks import TransferTask

__all__ = ["DATAMODULES", "TASKS"]

#: Task LightningModules by name (third-party: the ``medxfer.tasks`` entry-point group).
TASKS: Registry[type[TransferTask]] = Registry("task", group="medxfer.tasks")

#: Datamodules by name. Modality packages register theirs here; third-party packages through
#: the ``medxfer.datamodules`` entry-point group.
DATAMODULES: Registry[type[MedxferDataModule]] = Registry("datamodule", group="medxfer.datamodules")

for _name, _module, _description in [
    ("TransferTask", "base", "Fine-tune a registered backbone on a medical task."),
    (
        "MultiLabelClassifier",
        "single_image",
        "Multi-label findings: sigmoid / masked BCE, AUROC per label and mean.",
    ),
    (
        "CaseClassifier",
        "multi_image",
        "One distribution over classes (softmax) from a single image or a case of images (masked "
        "mean of features); hard (one-hot) or soft targets.",
    ),
    (
        "MultiViewClassifier",
        "multi_view",
        "4 views -> concatenated features -> one 512-unit head per horizon; focal loss.",
    ),
    (
        "Segmenter",
        "segmentation",
        "A U-Net over the stages of any registered backbone; per-pixel logits ``(B, K, H, W)``.",
    ),
]:
    TASKS.declare(_name, f"medxfer.tasks.{_module}:{_name}", description=_description)

for _name, _package, _description in [
    (
        "ChestXrayDataModule",
        "chest_xray",
        "Multi-label chest X-ray data with in-distribution and shifted test sets.",
    ),
    (
        "DermatologyDataModule",
        "dermatology",
        "Dermatology cases of 1-6 photos with soft differential labels and skin-type subgroups.",
    ),
    (
        "ImageTable",
        "image_table",
        "Any image dataset as a table (CSV / Parquet) or an image folder, configured in YAML.",
    ),
    (
        "MammographyDataModule",
        "mammography",
        "4-view screening mammography exams with multi-horizon outcome labels.",
    ),
    (
        "SegmentationDataModule",
        "segmentation",
        "Images with masks in one of the benchmark layouts or a generic table.",
    ),
]:
    DATAMODULES.declare(
        _name, f"medxfer.datamodules.{_package}.datamodule:{_name}", description=_description
    )
del _name, _module, _package, _description
