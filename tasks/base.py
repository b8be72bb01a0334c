"""The base transfer-learning task: a pre-trained backbone, a head, a loss and metrics.

:class:`TransferTask` owns the fine-tuning recipe of Mustafa et al., "Supervised Transfer
Learning at Scale for Medical Imaging" (2021) and of BiT (Kolesnikov et al., 2020): SGD with
momentum or Adam, linear warm-up then step decay by a factor every N steps (or cosine), optional
weight decay towards the initial weights (L2-SP, Li et al., ICML 2018; the paper's "weight decay
to init"), and optional freezing of the first stages.

The task owns its input normalisation: datasets hand out 8-bit images (float16 for mammograms,
DESIGN.md's batch contract) and :meth:`TransferTask.on_after_batch_transfer` normalises them on
the device with the mean / std the weights were trained with (:meth:`normalize_image`), before
any step runs; ``forward`` and everything after it see normalised float images.

A new modality is a small subclass overriding some of:

* :meth:`encode` -- normalised images ``(B, C, H, W)`` or ``(B, V, C, H, W)`` -> features;
* :meth:`aggregate` -- per-image features -> one vector per case (identity here);
* :meth:`build_head` -- the head module;
* :meth:`loss`, :meth:`probabilities`, :meth:`make_metrics`.

Validation and test steps return ``{"probs", "target", "groups", "id"}`` (DESIGN.md), so the
analysis callbacks never need to know which task produced them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import Metric

from medxfer.backbones import create_backbone, input_config, parameter_stages, stage_names
from medxfer.backbones import weights_chain as backbone_weights_chain
from medxfer.errors import ConfigError
from medxfer.naming import eval_prefix

__all__ = ["TransferTask", "mixup_batch", "resolve_input_norm"]

# Lightning warns whenever a task overrides a batch hook that the datamodule does not: here it
# is the design (the task normalises its batches on the device, the data never ask it how). A
# datamodule that overrides the hook itself replaces the task's (Lightning calls one of the
# two), and the backbone then refuses the un-normalised uint8 images.
warnings.filterwarnings(
    "ignore", message=r"You have overridden `on_after_batch_transfer` in `LightningModule`"
)

#: (backbone, weights, override) triples already warned about: one warning per contradiction.
_WARNED: set[tuple[str, str, str]] = set()


def resolve_input_norm(
    backbone: str, pretrained: str | None, override: dict[str, Sequence[float]] | None
) -> dict[str, list[float]]:
    """The input normalisation of a task: ``override`` when given (warned about once when it
    contradicts the weights' own, :func:`medxfer.backbones.input_config`), else the weights'."""
    if override is not None:
        if set(override) != {"mean", "std"}:
            raise ValueError(f"input_norm needs exactly 'mean' and 'std', got {sorted(override)}")
        norm = {k: [float(v) for v in override[k]] for k in ("mean", "std")}
        if pretrained is not None:  # a fresh start from weights: compare with what they expect
            cfg = input_config(backbone, pretrained)
            expected = {"mean": list(cfg.mean), "std": list(cfg.std)}
            key = (backbone, str(pretrained), repr(norm))
            if not _same_norm(norm, expected) and key not in _WARNED:
                _WARNED.add(key)
                rank_zero_warn(
                    f"input_norm={norm} contradicts the normalisation of the weights "
                    f"({backbone}, pretrained={pretrained}): {expected} ({cfg.origin}); "
                    "the override is used"
                )
        return norm
    cfg = input_config(backbone, pretrained)
    return {"mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std]}


def _check_norm(norm: dict[str, list[float]]) -> None:
    """Refuse a normalisation without one positive std per mean."""
    mean, std = norm["mean"], norm["std"]
    if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
        raise ValueError(f"input_norm needs one positive std per mean, got {norm}")


def _same_norm(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return all(
        len(a[k]) == len(b[k])
        and all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a[k], b[k], strict=True))
        for k in ("mean", "std")
    )


def mixup_batch(batch: dict[str, Any], alpha: float) -> dict[str, Any]:
    """MixUp of a batch with a shuffled copy of itself: ``lambda ~ Beta(alpha, alpha)`` from
    torch's (seeded) generator; images and targets mixed (an unknown, NaN, target stays
    unknown), multi-image masks joined."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    target = batch["target"]
    perm = torch.randperm(len(target), device=target.device)
    out = dict(batch)
    out["image"] = lam * batch["image"] + (1 - lam) * batch["image"][perm]
    out["target"] = lam * target + (1 - lam) * target[perm]
    if "mask" in batch:
        out["mask"] = batch["mask"] | batch["mask"][perm]
    return out


class TransferTask(L.LightningModule):
    """Fine-tune a registered backbone on a medical task.

    ``output_type`` (``"multilabel"`` or ``"multiclass"``) tells task-agnostic callbacks how to
    read ``probs``: independent per-label probabilities, or one distribution over classes.

    Args:
        backbone: a name from ``medxfer list backbones`` or ``timm/<name>``.
        pretrained: None (random init), a weight source of the backbone, or a local file.
        allow_unexpected: load a weight file with tensors inside the backbone's modules that it
            has no place for (another architecture's blocks) instead of failing; for experts.
        num_classes: K, the number of outputs (linked from the datamodule by the CLI).
        label_names: names of the K outputs (linked from the datamodule).
        in_chans: image channels (linked from the datamodule).
        drop_rate: dropout before the linear head.
        backbone_kwargs: extra arguments of the backbone factory (``drop_path_rate``...).
        optimizer: ``sgd`` (momentum) or ``adam``.
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: ordinary L2 weight decay of the optimizer.
        wd_to_init: coefficient of ``sum ||w - w0||^2 / 2`` over the backbone (L2-SP).
        schedule: ``step`` (decay by ``decay_factor`` every ``decay_every`` steps), ``cosine``
            (to 0 at the end of training) or ``constant``; all after ``warmup_steps`` of linear
            warm-up. Or ``plateau``: PyTorch's ``ReduceLROnPlateau`` on ``plateau_monitor``
            (checked after each validation epoch; the benchmark of pre-trained ResNet-50s:
            x 0.5 after 5 flat epochs), without warm-up.
        warmup_steps: optimizer steps of linear warm-up.
        decay_every: steps between decays of the ``step`` schedule (None: never).
        decay_at: explicit decay steps of the ``step`` schedule instead (the rate is multiplied
            by ``decay_factor`` once past each; BiT-HyperRule's boundaries).
        decay_factor: multiplier at each decay.
        plateau_monitor, plateau_mode, plateau_factor, plateau_patience: the ``plateau``
            schedule's logged metric, its direction (``min`` for a loss), the rate's multiplier
            and the epochs without improvement before it applies.
        agc_clip: adaptive gradient clipping (Brock et al., "High-performance large-scale image
            recognition without normalization", 2021; the scale study's optimiser): each
            backbone unit's gradient is scaled down to at most ``agc_clip`` times its weight's
            norm (``timm.utils.adaptive_clip_grad``; the head is not clipped, as in the paper).
            None: off. Lightning's ``gradient_clip_val`` still applies after it.
        freeze_stages: freeze the first N entries of the backbone's ``feature_info`` (1: the
            stem, 2: stem and first stage, ...); their norm layers stay in eval mode.
        channels_last: run the backbone in channels-last memory format (faster on GPUs).
        grad_checkpointing: activation checkpointing of the backbone's stages (timm's
            ``set_grad_checkpointing``): a stage's activations are recomputed in the backward
            pass instead of kept, for models whose activations do not fit (R152x4 at 224 px);
            the gradients are the same, a training step costs about one more forward.
        mixup: MixUp alpha in training (Zhang et al., ICLR 2018; BiT-HyperRule uses 0.1 from
            20k examples): images, masks and targets of shuffled pairs mixed with
            ``lambda ~ Beta(alpha, alpha)``; 0 disables it.
        initialised_from: records where the initial weights came from; never loaded (set by
            checkpoints, which hold the weights themselves).
        input_norm: ``{"mean": [...], "std": [...]}`` of the input images. Default: what the
            weights were trained with (:func:`medxfer.backbones.input_config`: BiT and random
            init [-1, 1], torchvision and self-supervised ResNet-50s ImageNet mean / std, a
            medxfer checkpoint what it was trained with). An explicit value that contradicts the
            weights is warned about. The resolved value (:attr:`input_norm`) is what the task
            normalises its images with (:meth:`normalize_image`, on the device), and is saved
            in the hyper-parameters, checkpoints and the run's config.
        weights_chain: where the initial weights come from, oldest first (default: from
            ``backbone`` / ``pretrained``, :func:`medxfer.backbones.weights_chain`; a medxfer
            export's recorded chain). Saved in checkpoints; ``medxfer export`` extends it.
    """

    output_type: ClassVar[str] = "multilabel"

    def __init__(
        self,
        backbone: str = "timm/resnet18",
        pretrained: str | None = None,
        allow_unexpected: bool = False,
        num_classes: int = 1,
        label_names: Sequence[str] | None = None,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float = 0.003,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        wd_to_init: float = 0.0,
        schedule: Literal["step", "cosine", "constant", "plateau"] = "step",
        warmup_steps: int = 0,
        decay_every: int | None = None,
        decay_at: list[int] | None = None,
        decay_factor: float = 0.1,
        plateau_monitor: str = "val/loss",
        plateau_mode: Literal["min", "max"] = "min",
        plateau_factor: float = 0.5,
        plateau_patience: int = 5,
        agc_clip: float | None = None,
        freeze_stages: int = 0,
        channels_last: bool = False,
        grad_checkpointing: bool = False,
        mixup: float = 0.0,
        initialised_from: str | None = None,
        input_norm: dict[str, list[float]] | None = None,
        weights_chain: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        input_norm = resolve_input_norm(backbone, pretrained, input_norm)  # what hparams record
        if weights_chain is None:  # recorded once, from the weights this run starts from
            weights_chain = (
                [{"start": initialised_from}]
                if pretrained is None and initialised_from
                else backbone_weights_chain(backbone, pretrained)
            )
        _check_norm(input_norm)
        self.save_hyperparameters()
        self.input_norm = input_norm
        # On the device with the model; not in the state dict (hparams hold the values).
        self.register_buffer("input_mean", torch.tensor(input_norm["mean"]), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_norm["std"]), persistent=False)
        self.label_names = (
            list(label_names)
            if label_names is not None
            else [f"class{k}" for k in range(num_classes)]
        )
        if len(self.label_names) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(self.label_names)} label_names")
        self.backbone = create_backbone(
            backbone,
            pretrained=pretrained,
            in_chans=in_chans,
            allow_unexpected=allow_unexpected,
            **(backbone_kwargs or {}),
        )
        self.head = self.build_head(self.backbone.num_features, num_classes)
        self.l2sp_anchor = nn.Module()
        if wd_to_init > 0:
            for name, p in self.backbone.named_parameters():
                self.l2sp_anchor.register_buffer(name.replace(".", "__"), p.detach().clone())
        self._frozen: list[nn.Module] = []
        if freeze_stages:
            self._freeze(freeze_stages)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if grad_checkpointing:
            if not hasattr(self.backbone, "set_grad_checkpointing"):
                raise ConfigError(
                    f"grad_checkpointing: backbone {backbone!r} has no set_grad_checkpointing "
                    "(timm models have it)"
                )
            self.backbone.set_grad_checkpointing(True)
        self.eval_metrics = nn.ModuleDict()

    # ------------------------------------------------------------------ input normalisation
    def normalize_image(
        self, image: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images as the backbone's weights expect them: ``(x01 - mean) / std`` per channel,
        float32, where ``x01`` is the image on [0, 1] -- uint8 divided by 255, a float image
        (float16 mammograms) as it is.

        A 1-channel image (a first conv whose RGB kernels were summed) uses the channel
        averages of the per-channel maps ``x01 / std - mean / std``. With ``mask`` ``(B, V)``
        the empty slots of multi-image cases ``(B, V, C, H, W)`` become zeros, as they are on
        the normalised scale.

        Args:
            image: ``(..., C, H, W)`` uint8 or float in [0, 1].
            mask: which slots of ``(B, V, ...)`` cases hold an image (optional).

        Returns:
            float32 tensor of ``image``'s shape, on its device.

        Raises:
            ValueError: an integer dtype other than uint8, or a channel count that is neither
                the normalisation's nor 1.

        Example:
            >>> task = TransferTask(input_norm={"mean": [0.5] * 3, "std": [0.5] * 3})
            >>> task.normalize_image(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).tolist()
            [[[[-1.0, 1.0]]]]
        """
        if image.dtype == torch.uint8:
            top = 255.0
        elif image.is_floating_point():
            top = 1.0
        else:
            raise ValueError(f"images must be uint8 or float in [0, 1], got {image.dtype}")
        scale, shift = 1.0 / self.input_std, -self.input_mean / self.input_std
        c = image.shape[-3]
        if c != len(scale):
            if c != 1:
                raise ValueError(f"{c}-channel images but a {len(scale)}-channel input_norm")
            scale, shift = scale.mean(0, keepdim=True), shift.mean(0, keepdim=True)
        x = image.to(torch.float32, copy=True)  # never in place on the caller's tensor
        x = x.mul_((scale / top).view(c, 1, 1)).add_(shift.view(c, 1, 1))
        if mask is not None and x.ndim == 5:
            x = x.masked_fill_(~mask.bool()[..., None, None, None], 0.0)
        return x

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise a batch's ``image`` on the device (:meth:`normalize_image`) before any
        step sees it: the data deliver 8-bit pixels and never ask the model how to normalise
        them (DESIGN.md's batch contract)."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
            batch = {**batch, "image": self.normalize_image(batch["image"], batch.get("mask"))}
        return batch

    # ------------------------------------------------------------------------ model pieces
    def build_head(self, num_features: int, num_classes: int) -> nn.Module:
        """Dropout then one linear layer (override for a deeper head)."""
        return nn.Sequential(
            nn.Dropout(self.hparams.drop_rate), nn.Linear(num_features, num_classes)
        )

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Backbone features of every normalised image: ``(B, C, H, W)`` -> ``(B, F)``, or
        ``(B, V, C, H, W)`` -> ``(B, V, F)`` (the B*V images in one pass)."""
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:])
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x).reshape(*lead, -1)

    def aggregate(self, features: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Per-image features -> one vector per case. Identity for one image per case."""
        return features

    def forward(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of a batch dict (or of an image tensor) of normalised images: the
        trainer normalises every batch first (:meth:`on_after_batch_transfer`); outside it, pass
        uint8 images through :meth:`normalize_image`."""
        if isinstance(batch, torch.Tensor):
            batch = {"image": batch}
        return self.head(self.aggregate(self.encode(batch["image"]), batch))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss()")

    def batch_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The loss of a batch: :meth:`loss` of its target (override to use more of the batch,
        e.g. a field-of-view mask)."""
        return self.loss(logits, batch["target"])

    def update_metrics(self, metric: Metric, probs: torch.Tensor, batch: dict[str, Any]) -> None:
        """Feed one evaluation batch to ``metric`` (default: ``update(probs, target)``)."""
        metric.update(probs, batch["target"])

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities ``(B, K)``; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must implement probabilities()")

    def make_metrics(self) -> Metric:
        """A fresh Metric for one evaluation set; ``update(probs, target)``, ``compute() -> dict``."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_metrics()")

    def initial_backbone(self) -> nn.Module | None:
        """A fresh copy of the backbone at its pre-trained initialisation (for CKA and weight
        drift after a resumed run), or None when it started from random weights."""
        hp = self.hparams
        source = hp.pretrained or hp.initialised_from
        if source is None:
            return None
        return create_backbone(
            hp.backbone,
            pretrained=source,
            in_chans=hp.in_chans,
            allow_unexpected=hp.get("allow_unexpected", False),
            **(hp.backbone_kwargs or {}),
        )

    # ---------------------------------------------------------------------- regularisation
    def l2sp_penalty(self) -> torch.Tensor:
        """``wd_to_init / 2 * sum ||w - w0||^2`` over the backbone's parameters."""
        anchors = dict(self.l2sp_anchor.named_buffers())
        total = sum(
            ((p - anchors[n.replace(".", "__")]) ** 2).sum()
            for n, p in self.backbone.named_parameters()
            if p.requires_grad
        )
        return 0.5 * self.hparams.wd_to_init * total

    def _freeze(self, n_stages: int) -> None:
        stages = stage_names(self.backbone)
        if not 0 < n_stages <= len(stages):
            raise ValueError(
                f"freeze_stages={n_stages}: the backbone declares {len(stages)} stages"
            )
        frozen = set(stages[:n_stages])
        owner = parameter_stages(self.backbone)
        for name, p in self.backbone.named_parameters():
            if owner[name] in frozen:
                p.requires_grad_(False)
        frozen_params = {id(p) for p in self.backbone.parameters() if not p.requires_grad}
        self._frozen = [
            m
            for m in self.backbone.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and all(id(p) in frozen_params for p in m.parameters())
        ]

    def train(self, mode: bool = True) -> TransferTask:
        """Like ``nn.Module.train``, but frozen BatchNorm layers keep their running statistics."""
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    # ------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.hparams.mixup > 0:
            batch = mixup_batch(batch, self.hparams.mixup)
        logits = self(batch)
        loss = self.batch_loss(logits.float(), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        if self.hparams.wd_to_init > 0:
            penalty = self.l2sp_penalty()
            self.log("train/l2sp", penalty, batch_size=len(batch["target"]))
            loss = loss + penalty
        return loss

    def _eval_set_name(self, stage: str, dataloader_idx: int) -> str:
        if stage == "val":
            return "val" if dataloader_idx == 0 else f"val{dataloader_idx}"
        names = (
            list(getattr(self.trainer.datamodule, "eval_names", []) or []) if self._trainer else []
        )
        return names[dataloader_idx] if dataloader_idx < len(names) else f"set{dataloader_idx}"

    def _eval_step(self, batch: dict[str, Any], stage: str, dataloader_idx: int) -> dict[str, Any]:
        logits = self(batch).float()
        probs = self.probabilities(logits)
        name = self._eval_set_name(stage, dataloader_idx)
        prefix = eval_prefix(stage, name)
        if prefix not in self.eval_metrics:
            self.eval_metrics[prefix] = self.make_metrics().to(self.device)
        self.update_metrics(self.eval_metrics[prefix], probs, batch)
        self.log(
            f"{prefix}/loss",
            self.batch_loss(logits, batch),
            batch_size=len(probs),
            add_dataloader_idx=False,
            sync_dist=True,
        )
        return {
            "probs": probs,
            "target": batch["target"],
            "groups": batch.get("groups", {}),
            "id": batch.get("id", []),
            "set": name,
        }

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return self._eval_step(batch, "val", dataloader_idx)

    def test_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        return self._eval_step(batch, "test", dataloader_idx)

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """``{"probs", "id", "groups", "set"}`` of a batch: the evaluation set's name (as in
        test steps) lets :class:`~medxfer.callbacks.PredictionWriter` write one file per set."""
        return {
            "probs": self.probabilities(self(batch).float()),
            "id": batch.get("id", []),
            "groups": batch.get("groups", {}),
            "set": self._eval_set_name("test", dataloader_idx),
        }

    def _log_eval_metrics(self, stage: str) -> None:
        for prefix in [k for k in self.eval_metrics if k.split("/")[0] == stage]:
            metric = self.eval_metrics[prefix]
            values = metric.compute()
            self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, add_dataloader_idx=False)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_eval_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval_metrics("test")

    # --------------------------------------------------------------------------- optimiser
    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of ``lr`` at optimizer step ``step`` (warm-up, then the schedule)."""
        hp = self.hparams
        if step < hp.warmup_steps:
            return (step + 1) / hp.warmup_steps
        if hp.schedule == "step":
            if hp.decay_at:
                return hp.decay_factor ** sum(1 for m in hp.decay_at if m < step)
            return hp.decay_factor ** (step // hp.decay_every) if hp.decay_every else 1.0
        if hp.schedule == "cosine":
            span = max(1, total_steps - hp.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - hp.warmup_steps) / span)))
        return 1.0

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {hp.optimizer!r}")
        if hp.schedule == "plateau":
            if hp.warmup_steps:
                raise ValueError(
                    "schedule 'plateau' has no warm-up (ReduceLROnPlateau sets the rate alone); "
                    f"set warmup_steps: 0, not {hp.warmup_steps}"
                )
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode=hp.plateau_mode, factor=hp.plateau_factor, patience=hp.plateau_patience
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": plateau,
                    "interval": "epoch",
                    "monitor": hp.plateau_monitor,
                },
            }
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_factor(s, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Adaptive gradient clipping of the backbone (``agc_clip``), then Lightning's own
        clipping (``trainer.gradient_clip_val``) when set."""
        if self.hparams.agc_clip:
            from timm.utils import adaptive_clip_grad

            adaptive_clip_grad(self.backbone.parameters(), clip_factor=self.hparams.agc_clip)
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold the weights, so restoring one must not need the original weight
        file: ``pretrained`` is moved to ``initialised_from``."""
        hp = checkpoint.get("hyper_parameters")
        if hp is not None and hp.get("pretrained") is not None:
            hp["initialised_from"] = str(hp["pretrained"])
            hp["pretrained"] = None
