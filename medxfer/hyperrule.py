"""BiT-HyperRule: the fine-tuning hyper-parameters of Big Transfer chosen from the dataset alone
(Kolesnikov et al., "Big Transfer (BiT): General Visual Representation Learning", ECCV 2020,
section 3.3 and the released ``bit_hyperrule.py``).

The published rule, stated for a global batch of 512:

* SGD with momentum 0.9, base learning rate 0.003, linear warm-up, then the rate divided by 10
  at each later boundary of the schedule, and training over at its last;
* schedule by dataset size: under 20k examples 500 steps (boundaries 100/200/300/400/500),
  under 500k examples 10k steps (500/3000/6000/9000/10000), else 20k steps
  (500/6000/12000/18000/20000);
* MixUp with alpha 0.1 from 20k examples on, none below;
* resolution by image area: under 96 x 96 pixels resize to 160 and crop 128, else resize to 512
  and crop 480.

**Other batch sizes.** medxfer keeps the user's batch and scales the rule to the run's *global*
batch ``B`` = per-process batch x processes (``trainer.world_size``) x
``trainer.accumulate_grad_batches`` (:meth:`HyperRule.for_batch`): every boundary becomes
``ceil(step * 512 / B)`` optimizer steps, so each phase sees at least the rule's examples (the
run sees ``512 x`` the rule's steps: 256,000 examples for 500 steps), and the learning rate is
``0.003 * B / 512`` (linear scaling). At ``B = 512`` (e.g. 8 GPUs x 64, or 32 x 16 accumulated
batches as BiT's ``batch_split`` does) this is the published rule step for step.

**Resolution per modality.** The rule's resolution table is for natural images read through a
resize-then-crop transform: it is applied to datamodules that have both ``resize`` and
``image_size`` (chest X-ray, ImageTable). Datamodules that resize to ``image_size`` without a
crop (mammography, 2048 px by default; dermatology, 448 px) keep their configured
``image_size`` -- shrinking a mammogram to 480 px would lose the findings -- and a warning says
so; the rest of the rule still applies.

The rule reads the training split (its size after ``train_fraction`` / ``shots_per_class``, and
its first image's size) from a datamodule's tables, without the model or the trainer
(:func:`hyperrule_of`), and turns into config overrides (:func:`hyperrule_overrides`) that
``medxfer fit --hyperrule true`` applies before anything is built -- so ``medxfer prepare
--hyperrule true`` caches images at the resolution the fit trains at, and the saved config
holds what ran. This module is the rule and what it reads of a built datamodule (duck-typed:
it imports no datamodule); the commands read and write the config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

__all__ = [
    "REDUCED_LR",
    "HyperRule",
    "bit_hyperrule",
    "describe_rule",
    "describe_run",
    "global_batch",
    "hyperrule_of",
    "hyperrule_overrides",
    "resolution_settings",
]

#: The base learning rate of the scale study's reduced variant (:meth:`HyperRule.reduced`).
REDUCED_LR = 0.001

#: The rule's (resize, crop) sides: below 96 x 96 pixels, and from there on.
SMALL_RESOLUTION, LARGE_RESOLUTION = (160, 128), (512, 480)


@dataclass(frozen=True)
class HyperRule:
    """The BiT-HyperRule settings of one dataset, at one global batch.

    Attributes:
        resolution: (resize, crop) sides in pixels.
        schedule: optimizer-step boundaries: warm-up end, decay steps, end of training.
        mixup: MixUp alpha (0: none).
        base_lr: learning rate after warm-up.
        batch_size: the global batch the schedule and ``base_lr`` are for (512 as published).
        momentum: SGD momentum.
        decay_factor: the rate's multiplier at each decay boundary.
        dataset_size: training examples the rule was chosen for.
        image_size: (H, W) of the image the resolution was chosen for.
    """

    resolution: tuple[int, int]
    schedule: tuple[int, ...]
    mixup: float
    base_lr: float = 0.003
    batch_size: int = 512
    momentum: float = 0.9
    decay_factor: float = 0.1
    dataset_size: int | None = None
    image_size: tuple[int, int] | None = None

    @property
    def total_steps(self) -> int:
        return self.schedule[-1]

    @property
    def examples_seen(self) -> int:
        """Training examples drawn over the whole schedule (``total_steps * batch_size``)."""
        return self.total_steps * self.batch_size

    def lr_at(self, step: int) -> float | None:
        """Learning rate at optimizer ``step``; None once training is over."""
        warmup = self.schedule[0]
        if step < warmup:
            return self.base_lr * step / warmup
        if step >= self.schedule[-1]:
            return None
        return self.base_lr * self.decay_factor ** sum(1 for b in self.schedule[1:] if b < step)

    def for_batch(self, batch_size: int) -> HyperRule:
        """The rule at global batch ``batch_size``: each boundary at the same number of examples
        (``ceil(step * self.batch_size / batch_size)`` steps, never fewer examples) and the
        learning rate scaled linearly.

        Example:
            >>> run = bit_hyperrule(10_000, 224).for_batch(32)
            >>> run.schedule, run.examples_seen, run.base_lr
            ((1600, 3200, 4800, 6400, 8000), 256000, 0.0001875)
        """
        _check_batch(batch_size)
        return replace(
            self,
            schedule=tuple(-(-b * self.batch_size // batch_size) for b in self.schedule),
            base_lr=self.base_lr * batch_size / self.batch_size,
            batch_size=batch_size,
        )

    def reduced(self, batch_size: int) -> HyperRule:
        """The scale study's reduced variant at global batch ``batch_size`` (Cherti & Jitsev,
        2021, their released fine-tuning code, run at batch 128): the rule's boundaries kept
        *in steps* (not moved to the same number of examples) and base lr
        :data:`REDUCED_LR` whatever the batch; resolution and MixUp as the rule. Nesterov
        momentum, adaptive gradient clipping and no weight decay are the config's
        (``configs/*_bit_reduced.yaml``).

        Example:
            >>> run = bit_hyperrule(50_000, 32).reduced(128)
            >>> run.schedule, run.base_lr, run.batch_size
            ((500, 3000, 6000, 9000, 10000), 0.001, 128)
        """
        _check_batch(batch_size)
        return replace(self, base_lr=REDUCED_LR, batch_size=batch_size)

    def task_settings(self) -> dict[str, Any]:
        """The :class:`~medxfer.tasks.TransferTask` hyper-parameters of this rule (at its
        ``batch_size``)."""
        return {
            "optimizer": "sgd",
            "momentum": self.momentum,
            "lr": self.base_lr,
            "schedule": "step",
            "warmup_steps": self.schedule[0],
            "decay_every": None,
            "decay_at": list(self.schedule[1:-1]),
            "decay_factor": self.decay_factor,
            "mixup": self.mixup,
        }


def _check_batch(batch_size: int) -> None:
    """A global batch must be a positive number of examples."""
    if batch_size < 1:
        raise ValueError(f"the global batch must be positive, got {batch_size}")


def bit_hyperrule(dataset_size: int, image_size: int | Sequence[int]) -> HyperRule:
    """The BiT-HyperRule for ``dataset_size`` training examples of ``image_size`` ((H, W) or a side),
    at the published global batch of 512 (:meth:`HyperRule.for_batch` for another).

    Example:
        >>> rule = bit_hyperrule(50_000, (224, 224))
        >>> rule.resolution, rule.schedule[-1], rule.mixup, round(rule.lr_at(5000), 6)
        ((512, 480), 10000, 0.1, 0.0003)
    """
    if dataset_size <= 0:
        raise ValueError(f"dataset_size must be positive, got {dataset_size}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    resolution = SMALL_RESOLUTION if h * w < 96 * 96 else LARGE_RESOLUTION
    if dataset_size < 20_000:
        schedule = (100, 200, 300, 400, 500)
    elif dataset_size < 500_000:
        schedule = (500, 3000, 6000, 9000, 10_000)
    else:
        schedule = (500, 6000, 12_000, 18_000, 20_000)
    return HyperRule(
        resolution,
        schedule,
        0.0 if dataset_size < 20_000 else 0.1,
        dataset_size=dataset_size,
        image_size=(int(h), int(w)),
    )


# ------------------------------------------------------------------------------ the data side
def _training_table(datamodule: Any) -> Any:
    """The training rows of a datamodule: its split after ``train_fraction`` /
    ``shots_per_class``, before image checks (no image is read)."""
    parts = datamodule.prepare_tables()
    return datamodule.subsample_train(
        parts["train"], datamodule.strata(parts["train"]), f"{datamodule.name} train"
    )


def _image_size(datamodule: Any, path: str) -> tuple[int, int]:
    """(H, W) of one image: from its file's header, else from the datamodule's image cache (at
    the side it is configured with or at one the rule sets), else -- a ``<file>#<member>``
    path -- by decoding the member with the datamodule's reader."""
    if os.path.isfile(path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                return img.size[1], img.size[0]
        except UnidentifiedImageError:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
    if datamodule.cache:
        from medxfer.data.cache import CacheError, CacheSettings, ImageCache

        sides = (datamodule.cache_side, SMALL_RESOLUTION[0], LARGE_RESOLUTION[0])
        for side in dict.fromkeys(sides):
            try:
                cache = ImageCache(datamodule.cache, CacheSettings(datamodule.reader, side))
                return cache.source_shape(path)
            except CacheError:
                continue
    from medxfer.data.images import image_reader, split_member

    file, member = split_member(path)
    if member and os.path.isfile(file):  # a member of a container file (a CIFAR batch)
        shape = image_reader(datamodule.reader)(path).shape
        return int(shape[0]), int(shape[1])
    raise FileNotFoundError(
        f"BiT-HyperRule reads the size of the first training image, {path}: not found"
        + (f", nor in the image cache {datamodule.cache}" if datamodule.cache else "")
    )


def hyperrule_of(datamodule: Any) -> HyperRule:
    """The rule of a datamodule's training split: its number of rows (after ``train_fraction``
    / ``shots_per_class``; rows that ``skip_bad_images`` drops later are not subtracted) and the
    size of its first image. Reads the tables, not the model or the trainer."""
    train = _training_table(datamodule)
    first = (
        train["path"].iloc[0] if "path" in train else next(p for p in train["paths"].iloc[0] if p)
    )
    return bit_hyperrule(len(train), _image_size(datamodule, str(first)))


def resolution_settings(datamodule: Any, rule: HyperRule) -> dict[str, int]:
    """The ``data.init_args`` the rule sets: ``resize`` and ``image_size`` (the crop) for
    datamodules that resize then crop; none, with a warning, for those that only resize (the
    rule's natural-image resolution would shrink e.g. a 2048 px mammogram to 480 px)."""
    hp = datamodule.hparams
    if "resize" in hp and "image_size" in hp:
        resize, crop = rule.resolution
        return {"resize": resize, "image_size": crop}
    rank_zero_warn(
        f"BiT-HyperRule: {type(datamodule).__name__} resizes to image_size without a crop, "
        f"which the rule's natural-image resolution (resize {rule.resolution[0]}, crop "
        f"{rule.resolution[1]}) does not cover; image_size={hp.get('image_size')} is kept"
    )
    return {}


# ------------------------------------------------------------------------------- the run side
def global_batch(batch_size: int, processes: int = 1, accumulate: int = 1) -> int:
    """Examples per optimizer step: per-process batch x processes x accumulated batches.

    Example:
        >>> global_batch(16, processes=2, accumulate=3)
        96
    """
    return int(batch_size) * int(processes) * int(accumulate)


def hyperrule_overrides(resolution: dict[str, int], run: HyperRule) -> dict[str, Any]:
    """The config values BiT-HyperRule sets, as dotted keys of a ``medxfer fit`` config, for a
    run at global batch ``run.batch_size`` (``rule.for_batch(global_batch(...))``):
    ``resolution`` (from :func:`resolution_settings`) under ``data.init_args``, the task's
    optimiser, lr, schedule and MixUp under ``model.init_args``, and the trainer's
    ``max_steps`` with ``max_epochs=-1`` (the rule's step count decides). The command applies
    them to the config before anything is built, so the saved config holds what ran.

    Example:
        >>> run = bit_hyperrule(10_000, 40).for_batch(32)
        >>> over = hyperrule_overrides({"resize": 160, "image_size": 128}, run)
        >>> over["data.init_args.image_size"], over["model.init_args.lr"], over["trainer.max_steps"]
        (128, 0.0001875, 8000)
    """
    out: dict[str, Any] = {f"data.init_args.{k}": v for k, v in resolution.items()}
    out.update({f"model.init_args.{k}": v for k, v in run.task_settings().items()})
    out["trainer.max_steps"], out["trainer.max_epochs"] = run.total_steps, -1
    return out


def describe_rule(rule: HyperRule, datamodule: Any, resolution: dict[str, int]) -> str:
    """One line on the rule of a datamodule's training split and the resolution it sets."""
    h, w = rule.image_size or (0, 0)
    where = ", ".join(f"{k}={v}" for k, v in resolution.items()) or (
        f"image_size={datamodule.hparams.get('image_size')} kept (no crop step)"
    )
    return (
        f"BiT-HyperRule: {rule.dataset_size:,} training examples, first image {h}x{w} px -> "
        f"{type(datamodule).__name__} {where}; MixUp {rule.mixup:g}; the rule's "
        f"{rule.total_steps} steps at batch {rule.batch_size}"
    )


def describe_run(
    run: HyperRule,
    batch_size: int,
    processes: int = 1,
    accumulate: int = 1,
    reduced: bool = False,
) -> str:
    """One line on what :func:`hyperrule_overrides` sets for ``run`` (``reduced``: the scale
    study's variant), with the global batch spelled out (``batch_size`` per process x
    ``processes`` x ``accumulate``) and the published rule's examples beside the run's."""
    variant = "BiT-HyperRule, the scale study's reduced variant," if reduced else "BiT-HyperRule"
    line = (
        f"{variant} at global batch {run.batch_size} ({batch_size} per process x "
        f"{processes} process(es) x {accumulate} accumulated): "
        f"SGD momentum {run.momentum:g}, lr {run.base_lr:.6g}, "
        f"warm-up {run.schedule[0]} steps, lr x {run.decay_factor:g} after steps "
        f"{', '.join(map(str, run.schedule[1:-1]))}; {run.total_steps} steps = "
        f"{run.examples_seen:,} examples"
    )
    if run.dataset_size is not None and run.image_size is not None:
        rule = bit_hyperrule(run.dataset_size, run.image_size)
        line += (
            f" (the rule: {rule.total_steps} x {rule.batch_size} = {rule.examples_seen:,} at lr "
            f"{rule.base_lr:g})"
        )
    return line
