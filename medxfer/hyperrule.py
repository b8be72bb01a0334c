"""BiT-HyperRule: the fine-tuning hyper-parameters of Big Transfer chosen from the dataset alone
(Kolesnikov et al., "Big Transfer (BiT): General Visual Representation Learning", ECCV 2020,
section 3.3 and the released ``bit_hyperrule.py``).

* batch 512, SGD with momentum 0.9, base learning rate 0.003, linear warm-up, then the rate
  divided by 10 at each later boundary of the schedule, and training over at its last;
* schedule by dataset size: under 20k examples 500 steps (boundaries 100/200/300/400/500),
  under 500k examples 10k steps (500/3000/6000/9000/10000), else 20k steps
  (500/6000/12000/18000/20000);
* MixUp with alpha 0.1 from 20k examples on, none below;
* resolution by image area: under 96 x 96 pixels resize to 160 and crop 128, else resize to 512
  and crop 480.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["HyperRule", "bit_hyperrule"]


@dataclass(frozen=True)
class HyperRule:
    """The BiT-HyperRule settings of one dataset.

    Attributes:
        resolution: (precrop, crop) sides in pixels.
        schedule: step boundaries: warm-up end, decay steps, end of training.
        mixup: MixUp alpha (0: none).
        base_lr: learning rate after warm-up (for ``batch_size``).
        batch_size: the batch the rule is stated for.
    """

    resolution: tuple[int, int]
    schedule: tuple[int, ...]
    mixup: float
    base_lr: float = 0.003
    batch_size: int = 512

    @property
    def total_steps(self) -> int:
        return self.schedule[-1]

    def lr_at(self, step: int) -> float | None:
        """Learning rate at optimizer ``step``; None once training is over."""
        warmup = self.schedule[0]
        if step < warmup:
            return self.base_lr * step / warmup
        if step >= self.schedule[-1]:
            return None
        return self.base_lr / 10 ** sum(1 for b in self.schedule[1:] if b < step)


def bit_hyperrule(dataset_size: int, image_size: int | Sequence[int]) -> HyperRule:
    """The BiT-HyperRule for ``dataset_size`` training examples of ``image_size`` ((H, W) or a side).

    Example:
        >>> rule = bit_hyperrule(50_000, (224, 224))
        >>> rule.resolution, rule.schedule[-1], rule.mixup, round(rule.lr_at(5000), 6)
        ((512, 480), 10000, 0.1, 0.0003)
    """
    if dataset_size <= 0:
        raise ValueError(f"dataset_size must be positive, got {dataset_size}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    resolution = (160, 128) if h * w < 96 * 96 else (512, 480)
    if dataset_size < 20_000:
        schedule = (100, 200, 300, 400, 500)
    elif dataset_size < 500_000:
        schedule = (500, 3000, 6000, 9000, 10_000)
    else:
        schedule = (500, 6000, 12_000, 18_000, 20_000)
    return HyperRule(resolution, schedule, 0.0 if dataset_size < 20_000 else 0.1)


def _first_image_size(dataset: object) -> tuple[int, int] | None:
    """(H, W) of the first image file of a medxfer dataset (``paths`` attribute), from the
    image cache when the dataset reads one."""
    from PIL import Image

    paths = getattr(dataset, "paths", None)
    if not paths:
        return None
    first = paths[0]
    while isinstance(first, list):
        first = next((p for p in first if p), None)
    if not first:
        return None
    cached = getattr(getattr(dataset, "images", None), "source_shape", None)
    if cached is not None:  # reading from a cache: the source files may not be here
        return cached(first)
    try:
        with Image.open(first) as img:
            return img.size[1], img.size[0]
    except OSError:
        import pydicom

        ds = pydicom.dcmread(first, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)


def apply_hyperrule(model: object, datamodule: object, trainer: object) -> HyperRule:
    """Set a run's hyper-parameters by BiT-HyperRule (``medxfer fit --hyperrule true``).

    Reads the training split to count examples and the first image for its size, then sets the
    task's optimiser (SGD, momentum 0.9, lr ``0.003 * batch / 512``), warm-up and step decay
    (÷10 at each boundary), MixUp alpha, the datamodule's resize / crop, and the trainer's
    ``max_steps``. Returns the rule.
    """
    datamodule.setup("fit")  # type: ignore[attr-defined]
    train = datamodule.train_set  # type: ignore[attr-defined]
    size = _first_image_size(train) or (224, 224)
    rule = bit_hyperrule(len(train), size)
    hp = model.hparams  # type: ignore[attr-defined]
    batch = datamodule.batch_size  # type: ignore[attr-defined]
    hp.update(
        optimizer="sgd",
        momentum=0.9,
        lr=rule.base_lr * batch / rule.batch_size,
        schedule="step",
        warmup_steps=rule.schedule[0],
        decay_every=None,
        decay_at=list(rule.schedule[1:-1]),
        decay_factor=0.1,
        mixup=rule.mixup,
    )
    dhp = datamodule.hparams  # type: ignore[attr-defined]
    if "image_size" in dhp:
        dhp["resize"], dhp["image_size"] = rule.resolution
        datamodule.reset()  # type: ignore[attr-defined]  # rebuilt at the new size
    trainer.fit_loop.max_steps = rule.total_steps  # type: ignore[attr-defined]
    return rule
