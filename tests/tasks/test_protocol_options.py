"""The benchmark protocol's optimiser options: ReduceLROnPlateau reaches the optimizer (the rate
halves after ``patience`` flat epochs of a scripted metric) and early stopping the trainer;
adaptive gradient clipping against the unit-wise rule computed by hand."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.tasks import MultiLabelClassifier


class ScriptedMetric(MultiLabelClassifier):
    """Logs ``val/scripted`` = 1.0 after every validation epoch: a metric that never improves."""

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("val/scripted", 1.0)


def test_plateau_halves_the_rate_after_patience_flat_epochs_and_early_stopping_stops(
    synthetic_cxr: dict[str, Path], tiny_trainer
) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, batch_size=4, num_workers=0
    )
    task = ScriptedMetric(
        backbone="timm/test_resnet",
        num_classes=dm.num_classes,
        label_names=dm.label_names,
        optimizer="adam",
        lr=0.01,
        schedule="plateau",
        plateau_monitor="val/scripted",
        plateau_patience=1,
        plateau_factor=0.5,
    )
    rates: list[float] = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = tiny_trainer(
        max_steps=-1,
        max_epochs=6,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[Record(), EarlyStopping(monitor="val/scripted", patience=4, mode="min")],
    )
    trainer.fit(task, datamodule=dm)
    # epoch 0 sets the best; epochs 1, 2 are flat: past patience 1 after epoch 2, and again
    # after epoch 4 (the count restarts at a reduction)
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005])
    assert trainer.current_epoch == 5 and trainer.should_stop, "early stopping ended the run"


def test_plateau_refuses_a_warm_up() -> None:
    task = MultiLabelClassifier(backbone="timm/test_resnet", schedule="plateau", warmup_steps=10)
    with pytest.raises(ValueError, match="schedule 'plateau' has no warm-up"):
        task.configure_optimizers()


def test_adaptive_gradient_clipping_is_the_unitwise_rule_on_the_backbone_only() -> None:
    torch.manual_seed(0)
    task = MultiLabelClassifier(backbone="timm/test_resnet", num_classes=2, agc_clip=0.01)
    for p in task.parameters():
        p.grad = torch.randn_like(p) * 10
    before = {n: p.grad.clone() for n, p in task.named_parameters()}
    opt = torch.optim.SGD(task.parameters(), lr=0.1)
    task.configure_gradient_clipping(opt)
    for name, p in task.named_parameters():
        g, w = before[name].numpy(), p.detach().numpy()
        if not name.startswith("backbone."):
            np.testing.assert_array_equal(p.grad.numpy(), g)  # the head is not clipped
            continue
        axes = tuple(range(1, g.ndim)) if g.ndim > 1 else None
        w_norm = np.maximum(np.sqrt((w**2).sum(axis=axes, keepdims=g.ndim > 1)), 1e-3)
        g_norm = np.sqrt((g**2).sum(axis=axes, keepdims=g.ndim > 1))
        limit = 0.01 * w_norm
        want = np.where(g_norm < limit, g, g * limit / np.maximum(g_norm, 1e-6))
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-5, atol=1e-7)


def test_activation_checkpointing_keeps_the_gradients_and_saves_fewer_activations() -> None:
    """The same weights and batch with and without ``grad_checkpointing``: equal loss and
    gradients; the backward keeps fewer activation bytes (counted by autograd's saved-tensor
    hooks) when the stages are recomputed."""
    torch.manual_seed(0)
    kw = {"backbone": "timm/test_resnet", "num_classes": 2, "drop_rate": 0.0}
    plain = MultiLabelClassifier(**kw)  # type: ignore[arg-type]
    ckpt = MultiLabelClassifier(**kw, grad_checkpointing=True)  # type: ignore[arg-type]
    ckpt.load_state_dict(plain.state_dict())
    image = torch.rand(4, 3, 32, 32)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])

    def step(task: MultiLabelClassifier) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        task.train()
        saved = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = task(task.normalize_image(image))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in task.named_parameters()}, sum(saved)

    loss_a, grads_a, bytes_a = step(plain)
    loss_b, grads_b, bytes_b = step(ckpt)
    torch.testing.assert_close(loss_a, loss_b)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, msg=name)
    assert bytes_b < 0.7 * bytes_a, (bytes_a, bytes_b)
