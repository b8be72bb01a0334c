"""How far fine-tuning moved the backbone from its initialisation: linear CKA between initial
and current features per stage (Kornblith et al. 2019; minibatch CKA of Nguyen et al. 2021) and
weight drift per stage and block (Mustafa et al. 2021; Neyshabur et al. 2020).

Both use only the backbone's declared stages (``feature_info`` / ``forward_intermediates``).
The initial backbone is the task's pre-trained one, rebuilt with ``initial_backbone()`` when a
run resumes; a randomly initialised backbone is copied at the start of fitting.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader, Subset
from typing_extensions import override

from medxfer import artifacts
from medxfer.backbones import parameter_stages, stage_names
from medxfer.metrics import MinibatchCKA, gram, hsic_unbiased, stage_drift, weight_drift

from .base import analysis_dir, write_json

__all__ = ["CKACallback", "WeightDriftCallback", "initial_backbone"]


def initial_backbone(trainer: L.Trainer, pl_module: L.LightningModule) -> nn.Module:
    """The backbone as it was before fine-tuning, in eval mode and without gradients."""
    fresh = pl_module.initial_backbone() if hasattr(pl_module, "initial_backbone") else None
    if fresh is None:
        if trainer.ckpt_path:
            rank_zero_warn(
                "resumed run of a randomly initialised backbone: analyses compare against the resumed weights"
            )
        fresh = copy.deepcopy(pl_module.backbone)
    return fresh.to(pl_module.device).eval().requires_grad_(False)


class CKACallback(L.Callback):
    """Linear CKA between the initial and the current backbone at every declared stage, on a
    fixed, seeded probe set drawn from the validation set.

    Recorded at the start of fitting, every ``every_n_epochs`` training epochs and at the end of
    fitting; logged as ``cka/<stage>``; ``analysis/cka.json`` and ``analysis/cka_vs_depth.png``.
    Under DDP the probe minibatches are dealt to the ranks and the HSIC sums reduced, so the
    value equals the single-process one.

    Args:
        probe_size: probe images (fewer if the validation set is smaller).
        batch_size: minibatch of the minibatch-CKA estimator (at least 4).
        every_n_epochs: period in training epochs.
        seed: seed of the probe draw.
    """

    def __init__(
        self, probe_size: int = 512, batch_size: int = 64, every_n_epochs: int = 1, seed: int = 0
    ) -> None:
        if batch_size < 4:
            raise ValueError("CKA minibatches need at least 4 images")
        self.probe_size = probe_size
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        self._initial: nn.Module | None = None
        self._grams: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._probe: DataLoader | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(probe_size=self.probe_size, seed=self.seed)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def _probe_loader(self, trainer: L.Trainer) -> DataLoader | None:
        dm = trainer.datamodule
        dataset = getattr(dm, "val_set", None) if dm is not None else None
        if dataset is None:
            rank_zero_warn(
                "CKACallback: no validation dataset (datamodule.val_set); CKA is skipped"
            )
            return None
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(dataset), generator=g)[: self.probe_size].sort().values.tolist()
        return DataLoader(
            Subset(dataset, idx), batch_size=self.batch_size, shuffle=False, num_workers=0
        )

    def _probe_batches(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> Iterator[torch.Tensor]:
        """This rank's probe minibatches (dealt round robin; those under 4 images skipped),
        normalised by the task as its training batches are (``normalize_image``: the dataset
        hands out 8-bit pixels)."""
        assert self._probe is not None
        normalize = getattr(pl_module, "normalize_image", None)
        for k, batch in enumerate(self._probe):
            image = batch["image"]
            if k % trainer.world_size != trainer.global_rank or len(image) < 4:
                continue
            x = image.to(pl_module.device)
            x = normalize(x) if normalize is not None else x.float()
            if x.ndim == 5:  # multi-image cases: every real image is a probe image
                x = x[batch["mask"].to(pl_module.device)] if "mask" in batch else x.flatten(0, 1)
            yield x

    def _features(self, model: nn.Module, x: torch.Tensor, n_stages: int) -> list[torch.Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return model.forward_intermediates(x, indices=n_stages, intermediates_only=True)

    @torch.no_grad()
    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, when: str
    ) -> dict[str, float]:
        """CKA per stage between the initial and current backbone on the probe set.

        The initial model's side (its Gram matrices and their HSIC) is the same every time: it
        is computed once and cached, and the initial model is then released.
        """
        if self._probe is None:
            return {}
        current = pl_module.backbone
        was_training = current.training
        current.eval()
        stages = stage_names(current)
        if self._grams is None:
            assert self._initial is not None
            self._grams = [
                [
                    (g, hsic_unbiased(g, g))
                    for g in map(gram, self._features(self._initial, x, len(stages)))
                ]
                for x in self._probe_batches(trainer, pl_module)
            ]
            self._initial = None
        metrics = [MinibatchCKA().to(pl_module.device) for _ in stages]
        for cached, x in zip(self._grams, self._probe_batches(trainer, pl_module), strict=True):
            for metric, (g0, h00), feat in zip(
                metrics, cached, self._features(current, x, len(stages)), strict=True
            ):
                metric.update(g0, gram(feat), grams=True, hsic_xx=h00)
        current.train(was_training)
        values = {s: float(m.compute()) for s, m in zip(stages, metrics, strict=True)}
        self.history.append(
            {
                artifacts.WHEN: when,
                artifacts.EPOCH: trainer.current_epoch,
                artifacts.STEP: trainer.global_step,
                artifacts.CKA: values,
            }
        )
        write_json(
            trainer,
            artifacts.CKA_JSON,
            {
                "probe_size": len(self._probe.dataset),
                "batch_size": self.batch_size,
                artifacts.HISTORY: self.history,
            },
        )
        return values

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._initial = initial_backbone(trainer, pl_module)
        self._grams = None
        self._probe = self._probe_loader(trainer)
        self.measure(trainer, pl_module, artifacts.START)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            values = self.measure(trainer, pl_module, "epoch")
            pl_module.log_dict({f"cka/{s}": v for s, v in values.items()})

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = self.measure(trainer, pl_module, artifacts.END)
        if values and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"cka_final/{s}": v for s, v in values.items()}, step=trainer.global_step
                )
            from medxfer.plots import plot_cka_vs_depth  # matplotlib: imported when drawing

            plot_cka_vs_depth(
                [h for h in self.history if h[artifacts.WHEN] in (artifacts.START, artifacts.END)],
                analysis_dir(trainer) / artifacts.CKA_PLOT,
            )
        self._initial, self._grams = None, None


class WeightDriftCallback(L.Callback):
    """Weight drift of the backbone's conv kernels from initialisation, per stage and block.

    Logged every ``every_n_epochs`` training epochs as ``drift/l1/<stage>`` and
    ``drift/rel_l2/<stage>``; every stage and block in ``analysis/weight_drift.json``; a
    drift-per-block bar plot at the end of fitting. Weights are equal on every DDP rank, so no
    reduction is needed.

    Args:
        every_n_epochs: period in training epochs.
        keep_on_cpu: keep the initial weights in host memory (saves accelerator memory).
    """

    def __init__(self, every_n_epochs: int = 1, keep_on_cpu: bool = True) -> None:
        self.every_n_epochs = every_n_epochs
        self.keep_on_cpu = keep_on_cpu
        self.history: list[dict[str, Any]] = []
        self._initial: dict[str, torch.Tensor] | None = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = "cpu" if self.keep_on_cpu else pl_module.device
        init = initial_backbone(trainer, pl_module)
        self._initial = {n: p.detach().to(device).clone() for n, p in init.named_parameters()}
        del init

    @torch.no_grad()
    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, dict[str, float]]:
        assert self._initial is not None
        backbone = pl_module.backbone
        drift = weight_drift(backbone, self._initial, parameter_stages(backbone))
        self.history.append(
            {
                artifacts.EPOCH: trainer.current_epoch,
                artifacts.STEP: trainer.global_step,
                artifacts.DRIFT: drift,
            }
        )
        write_json(trainer, artifacts.WEIGHT_DRIFT_JSON, {artifacts.HISTORY: self.history})
        return drift

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        drift = self.measure(trainer, pl_module)
        logged = {
            f"drift/{m}/{stage}": v[m]
            for stage, v in stage_drift(drift).items()
            for m in (artifacts.DRIFT_L1, "rel_l2")
        }
        pl_module.log_dict(logged)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._initial is None:
            return
        drift = self.measure(trainer, pl_module)
        if trainer.is_global_zero:
            from medxfer.plots import plot_drift_per_block  # matplotlib: imported when drawing

            plot_drift_per_block(drift, analysis_dir(trainer) / artifacts.DRIFT_PLOT)
        self._initial = None
