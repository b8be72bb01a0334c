"""Segmentation with a U-Net whose encoder is any registered pre-trained backbone, as in the
transfer benchmark of self-supervised and supervised ResNet-50s on pneumothorax (SIIM-ACR), lung
(Montgomery) and retinal-vessel (DRIVE) masks scored by Dice.

The encoder is built and loaded by medxfer's own strict loader (:func:`create_backbone`), so a
self-supervised or BiT checkpoint reaches the U-Net exactly as it reaches a classifier. Its
declared stages (``feature_info`` / ``forward_intermediates``) feed MONAI's maintained
``UNetDecoder`` and ``SegmentationHead``; the loss is MONAI's ``DiceLoss`` plus cross-entropy,
both restricted to the valid pixels (a field of view) when the batch has them -- MONAI's
``DiceCELoss`` takes no pixel mask, so the two terms are combined here.

Metrics are scored at the model's resolution, or -- when the batch carries each image's masks
at its native size (the datamodule's ``native_resolution``, the default of the benchmark
configs) -- at the native resolution the benchmarks publish: each image's probabilities are
resized back to its size (bilinear, ``align_corners=False``, on the probabilities, which are then
thresholded or arg-maxed) and scored against the masks as stored, inside the field of view.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from torch import nn

from medxfer.metrics.segmentation import SegmentationMetrics, case_dice

from .base import TransferTask

__all__ = ["Segmenter", "unet_stages"]


def unet_stages(feature_info: Any) -> list[int]:
    """Indices of the backbone stages a U-Net decoder uses: the deepest stage at each stride,
    the strides doubling from one to the next (what each decoder block upsamples by).

    Raises:
        ValueError: the strides do not double (the decoder could not align the skips).
    """
    info = feature_info.get_dicts() if hasattr(feature_info, "get_dicts") else feature_info
    last: dict[int, int] = {}
    for k, d in enumerate(info):
        last[int(d["reduction"])] = k
    strides = sorted(last)
    if any(b != 2 * a for a, b in itertools.pairwise(strides)):
        raise ValueError(f"backbone stage strides {strides} do not double: no U-Net decoder fits")
    return [last[r] for r in strides]


class _UNet(nn.Module):
    """Decoder and head over the encoder's stage features (the first is the shallowest)."""

    def __init__(
        self, channels: list[int], in_chans: int, num_classes: int, decoder: list[int], scale: float
    ) -> None:
        super().__init__()
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=[in_chans, *channels],
            decoder_channels=decoder[: len(channels)],
            act=("relu", {"inplace": True}),
            norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.head = SegmentationHead(
            2, decoder[len(channels) - 1], num_classes, kernel_size=3, scale_factor=scale
        )
        self.skips = len(channels) - 1

    def forward(self, image: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decoder([image, *features], self.skips))


class Segmenter(TransferTask):
    """A U-Net over the stages of any registered backbone; per-pixel logits ``(B, K, H, W)``.

    Binary or multi-label masks (``multiclass=False``): sigmoid per class, targets
    ``(B, K, H, W)`` 0/1. Multi-class masks: softmax over the K classes, targets ``(B, H, W)``
    class indices. A batch's ``valid`` ``(B, H, W)`` (a field of view) restricts loss and metrics.

    Validation and test steps return, beside the batch contract's ``probs`` ``(B, K, H, W)``,
    ``target``, ``groups`` and ``id``: ``valid`` and ``dice`` (each image's Dice per class,
    ``(B, K)``, at the native resolution when the batch has ``native_target``), which the
    subgroup callback scores per subgroup and the calibration callback subsamples pixels with
    (:attr:`pixel_task` says how to read the probabilities; pixels at the model's resolution).

    Args (beyond :class:`TransferTask`):
        decoder_channels: channels of the decoder blocks, deepest first (MONAI's defaults).
        multiclass: one class per pixel (softmax) instead of independent masks (sigmoid).
        dice_weight: weight of the Dice term beside cross-entropy.
        threshold: probability from which a pixel is predicted positive (metrics).
    """

    output_type: ClassVar[str] = "segmentation"

    def __init__(
        self,
        *args: Any,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        multiclass: bool = False,
        dice_weight: float = 1.0,
        threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        self._decoder_channels = list(decoder_channels)
        super().__init__(*args, **kwargs)
        self.dice = DiceLoss(include_background=True, reduction="mean")

    def build_head(self, num_features: int, num_classes: int) -> nn.Module:
        """The U-Net decoder and segmentation head over :func:`unet_stages`."""
        self._stages = unet_stages(self.backbone.feature_info)
        info = self.backbone.feature_info
        info = info.get_dicts() if hasattr(info, "get_dicts") else info
        channels = [int(info[k]["num_chs"]) for k in self._stages]
        if len(self._decoder_channels) < len(channels):
            raise ValueError(
                f"decoder_channels needs {len(channels)} entries (one per stage), got {self._decoder_channels}"
            )
        first = int(info[self._stages[0]]["reduction"])
        self._multiple = int(info[self._stages[-1]]["reduction"])
        return _UNet(
            channels, self.hparams.in_chans, num_classes, self._decoder_channels, first / 2
        )

    def forward(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the input's resolution."""
        image = batch if isinstance(batch, torch.Tensor) else batch["image"]
        if self.hparams.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        h, w = image.shape[-2:]
        m = self._multiple
        pad = (0, -w % m, 0, -h % m)  # sides to a multiple of the deepest stride, cropped back
        x = F.pad(image, pad) if any(pad) else image
        features = self.backbone.forward_intermediates(
            x, indices=self._stages, intermediates_only=True
        )
        logits = self.head(x, features)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, 1) if self.hparams.multiclass else torch.sigmoid(logits)

    def batch_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Dice (MONAI) + cross-entropy over the valid pixels."""
        target, valid = batch["target"], batch.get("valid")
        v = torch.ones_like(logits[:, :1]) if valid is None else valid[:, None].to(logits.dtype)
        probs = self.probabilities(logits)
        if self.hparams.multiclass:
            onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
            ignore = target.long().masked_fill(v[:, 0] == 0, -100)
            ce = F.cross_entropy(logits, ignore, ignore_index=-100)
            dice = self.dice(probs * v, onehot * v)
        else:
            t = target.to(logits.dtype)
            ce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * v).sum() / (
                v.sum() * logits.shape[1]
            ).clamp(min=1)
            dice = self.dice(probs * v, t * v)
        return ce + self.hparams.dice_weight * dice

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.batch_loss(logits, {"target": target})

    @property
    def pixel_task(self) -> str:
        """How each pixel's probabilities read: ``multiclass`` (softmax) or ``multilabel``."""
        return "multiclass" if self.hparams.multiclass else "multilabel"

    def _eval_step(self, batch: dict[str, Any], stage: str, dataloader_idx: int) -> dict[str, Any]:
        """The task's step outputs plus the field of view and each image's Dice per class."""
        batch = dict(batch)  # update_metrics leaves each image's Dice in it
        out = super()._eval_step(batch, stage, dataloader_idx)
        out["valid"] = batch.get("valid")
        out["dice"] = batch["dice"]
        return out

    def make_metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(
            self.label_names, multiclass=self.hparams.multiclass, threshold=self.hparams.threshold
        )

    def scored_masks(
        self, probs: torch.Tensor, batch: dict[str, Any]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """What the metrics score: ``[(probs, target, valid)]`` of the whole batch at the
        model's resolution, or, when the batch has ``native_target`` (and ``native_valid``),
        one triple per image at its native size: its probabilities resized bilinear
        (``align_corners=False``) to its masks' ``(H, W)``, its stored masks and its field of
        view (``None`` without one)."""
        if "native_target" not in batch:
            return [(probs, batch["target"], batch.get("valid"))]
        valid = batch.get("native_valid") or [None] * len(probs)
        out = []
        for i, (target, fov) in enumerate(zip(batch["native_target"], valid, strict=True)):
            p = F.interpolate(
                probs[i : i + 1], size=target.shape[-2:], mode="bilinear", align_corners=False
            )
            out.append((p, target[None], None if fov is None else fov[None]))
        return out

    def update_metrics(self, metric: Any, probs: torch.Tensor, batch: dict[str, Any]) -> None:
        """Update ``metric`` with :meth:`scored_masks` and put each image's Dice per class
        ``(B, K)`` in ``batch["dice"]`` (scored once, at the same resolution)."""
        hp = self.hparams
        dice = []
        for p, target, valid in self.scored_masks(probs, batch):
            metric.update(p, target, valid)
            dice.append(case_dice(p, target, valid, hp.multiclass, hp.threshold))
        batch["dice"] = torch.cat(dice)
