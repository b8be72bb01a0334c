"""TransferTask / MultiLabelClassifier: schedules (the optimiser's rate against torch's own
schedulers), losses, L2-SP, freezing, AUROC, a short fit."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.metrics import MultilabelAUROC, masked_multilabel_auroc
from medxfer.tasks import MultiLabelClassifier, masked_bce_with_logits


def _task(**kw) -> MultiLabelClassifier:
    kw.setdefault("backbone", "timm/resnet18")
    kw.setdefault("num_classes", 3)
    return MultiLabelClassifier(**kw)


def _rates(task: MultiLabelClassifier, steps: int) -> list[float]:
    """The learning rate the task's own optimiser and scheduler give at steps 0..steps-1."""
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def _torch_rates(
    make: Callable[[torch.optim.Optimizer], object], lr: float, steps: int
) -> list[float]:
    """The learning rate of torch's own scheduler ``make(optimizer)`` at steps 0..steps-1."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize(
    ("step", "factor"),
    [
        pytest.param(0, 0.1, id="warmup-first"),
        pytest.param(9, 1.0, id="warmup-last"),
        pytest.param(99, 1.0, id="before-decay"),
        pytest.param(100, 0.1, id="first-decay"),
        pytest.param(250, 0.01, id="second-decay"),
    ],
)
def test_step_schedule_by_hand(step: int, factor: float) -> None:
    task = _task(lr=0.5, warmup_steps=10, decay_every=100, decay_factor=0.1)
    assert _rates(task, step + 1)[step] == pytest.approx(0.5 * factor, rel=1e-9)


@pytest.mark.parametrize(
    ("options", "milestones"),
    [
        pytest.param({"decay_every": 100}, [100, 200], id="decay-every-100"),
        pytest.param({"decay_at": [120, 180]}, [121, 181], id="decay-after-120-and-180"),
    ],
)
def test_step_schedule_equals_torch_linear_warmup_then_multistep(
    options: dict, milestones: list[int]
) -> None:
    """Linear warm-up over 10 steps (1/10 ... 10/10), then x0.3 at each milestone: torch's
    ``LinearLR`` chained with ``MultiStepLR`` (``decay_at`` decays the step after each)."""
    task = _task(lr=0.2, warmup_steps=10, decay_factor=0.3, **options)
    expected = _torch_rates(
        lambda opt: torch.optim.lr_scheduler.ChainedScheduler(
            [
                torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, total_iters=9),
                torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.3),
            ]
        ),
        0.2,
        250,
    )
    np.testing.assert_allclose(_rates(task, 250), expected, rtol=1e-9, atol=1e-15)


def test_cosine_schedule_equals_torch_linear_warmup_then_cosine_annealing() -> None:
    """10 warm-up steps, then ``CosineAnnealingLR`` to 0 over the remaining 90 of 100."""
    task = _task(lr=0.2, schedule="cosine", warmup_steps=10)
    task._trainer = SimpleNamespace(estimated_stepping_batches=100)  # what configure reads
    expected = _torch_rates(
        lambda opt: torch.optim.lr_scheduler.SequentialLR(
            opt,
            [
                torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, total_iters=9),
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=90, eta_min=0.0),
            ],
            milestones=[10],
        ),
        0.2,
        101,
    )
    got = _rates(task, 101)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)
    assert got[55] == pytest.approx(0.1) and got[100] == pytest.approx(0.0, abs=1e-15)


def test_masked_bce_equals_hand_computation() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (bce(0.0, 1) + bce(-1.0, 0) + bce(3.0, 1)) / 3
    assert masked_bce_with_logits(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce_with_logits(logits, torch.full_like(target, float("nan"))).item() == 0.0


def test_l2sp_penalty_is_zero_at_init_and_exact_after_a_perturbation() -> None:
    task = _task(wd_to_init=0.5)
    assert task.l2sp_penalty().item() == 0.0
    with torch.no_grad():
        task.backbone.conv1.weight[0, 0, 0, 0] += 0.3
        task.backbone.layer1[0].bn1.bias[2] -= 0.2
    assert task.l2sp_penalty().item() == pytest.approx(0.5 / 2 * (0.3**2 + 0.2**2), rel=1e-5)


def test_freeze_stages_freezes_stem_and_keeps_frozen_batchnorm_in_eval() -> None:
    task = _task(freeze_stages=2)  # timm resnet18: stem (conv1, bn1) and layer1
    frozen = {n for n, p in task.backbone.named_parameters() if not p.requires_grad}
    assert {"conv1.weight", "bn1.weight", "layer1.1.conv2.weight"} <= frozen
    assert not any(n.startswith("layer2") for n in frozen)
    task.train()
    assert not task.backbone.bn1.training and task.backbone.layer2[0].bn1.training
    with pytest.raises(ValueError, match="declares 5 stages"):
        _task(freeze_stages=9)


def test_auroc_metric_matches_sklearn_per_label_with_unknowns() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((200, 3)).astype(np.float32)
    target = (rng.random((200, 3)) < 0.3).astype(np.float32)
    target[rng.random((200, 3)) < 0.2] = np.nan
    target[:, 2] = np.where(np.isnan(target[:, 2]), np.nan, 0.0)  # label 2: one class only
    metric = MultilabelAUROC(["a", "b c", "d"])
    for chunk in np.array_split(np.arange(200), 7):
        metric.update(torch.from_numpy(probs[chunk]), torch.from_numpy(target[chunk]))
    out = metric.compute()
    expected = [
        roc_auc_score(target[~np.isnan(target[:, k]), k], probs[~np.isnan(target[:, k]), k])
        for k in range(2)
    ]
    assert out["auroc/a"].item() == pytest.approx(expected[0], abs=1e-6)
    assert out["auroc/b_c"].item() == pytest.approx(expected[1], abs=1e-6)
    assert math.isnan(out["auroc/d"].item())
    assert out["auroc_mean"].item() == pytest.approx(np.mean(expected), abs=1e-6)
    assert torch.isnan(masked_multilabel_auroc(torch.rand(4, 1), torch.full((4, 1), float("nan"))))[
        0
    ]


def test_short_fit_logs_each_test_set_under_its_name(
    synthetic_cxr: dict[str, Path], tiny_trainer
) -> None:
    dm = ChestXrayDataModule(
        CXRTable(str(synthetic_cxr["chexpert"])),
        shifted={"nih": CXRTable(str(synthetic_cxr["nih"]), format="nih")},
        image_size=32,
        batch_size=8,
        num_workers=0,
    )
    task = MultiLabelClassifier(
        backbone="timm/resnet18",
        num_classes=dm.num_classes,
        label_names=dm.label_names,
        lr=0.01,
        wd_to_init=0.01,
        warmup_steps=1,
    )
    trainer = tiny_trainer(limit_test_batches=None, val_check_interval=3)
    trainer.fit(task, datamodule=dm)
    assert "val/auroc_mean" in trainer.callback_metrics and "val/loss" in trainer.callback_metrics
    results = trainer.test(task, datamodule=dm, verbose=False)
    assert "test/chexpert/auroc_mean" in results[0] and "test/nih/auroc_mean" in results[1]
    assert "test/chexpert/auroc/Pleural_Effusion" in results[0]


def test_batch_transfer_moves_every_tensor_and_passes_ids_and_group_names() -> None:
    """The datamodules' transfer hook (which skips walking id / group strings) on the ``meta``
    device: every tensor moved, nested or not; text lists returned as they are."""
    dm = ChestXrayDataModule(CXRTable("never-read.csv"))
    ids, sex = ["a", "b"], ["F", "M"]
    batch = {
        "image": torch.zeros(2, 3, 4, 4),
        "target": torch.ones(2, 3),
        "groups": {"sex": sex, "age": torch.tensor([40.0, 60.0])},
        "id": ids,
        "extra": [torch.zeros(1), "x"],
    }
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved.keys() == batch.keys() and moved["groups"].keys() == {"sex", "age"}
    for value in (moved["image"], moved["target"], moved["groups"]["age"], moved["extra"][0]):
        assert value.device.type == "meta"
    assert moved["image"].shape == (2, 3, 4, 4) and moved["extra"][1] == "x"
    assert moved["id"] == ["a", "b"] and moved["groups"]["sex"] == ["F", "M"]
    assert batch["image"].device.type == "cpu"  # the input is not changed
    plain = dm.transfer_batch_to_device(torch.zeros(2), torch.device("meta"), 0)
    assert plain.device.type == "meta"  # not a dict: Lightning's own transfer


def test_fit_uses_the_datamodules_transfer_without_a_warning(
    synthetic_cxr: dict[str, Path], tiny_trainer
) -> None:
    """The hook sits on the datamodule (which owns the batch contract), so Lightning neither
    warns about a task overriding it nor bypasses it."""
    import warnings

    dm = ChestXrayDataModule(CXRTable(str(synthetic_cxr["chexpert"])), image_size=32, num_workers=0)
    calls = []
    original = dm.transfer_batch_to_device
    dm.transfer_batch_to_device = lambda *a: calls.append(1) or original(*a)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(max_steps=1, limit_val_batches=0).fit(
            _task(num_classes=dm.num_classes, label_names=dm.label_names), datamodule=dm
        )
    assert calls
    assert not [w for w in caught if "transfer_batch_to_device" in str(w.message)]


#: torchvision's published ImageNet normalisation, and BiT's [-1, 1].
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SIGNED = {"mean": [0.5] * 3, "std": [0.5] * 3}


def _by_hand(x01: torch.Tensor, norm: dict[str, list[float]]) -> torch.Tensor:
    """``(x01 - mean) / std`` per channel, in float64."""
    mean = torch.tensor(norm["mean"], dtype=torch.float64)[:, None, None]
    std = torch.tensor(norm["std"], dtype=torch.float64)[:, None, None]
    return (x01.double() - mean) / std


@pytest.mark.parametrize(
    "norm", [pytest.param(IMAGENET, id="imagenet"), pytest.param(SIGNED, id="bit-signed")]
)
def test_the_task_normalises_uint8_batches_after_the_transfer(norm) -> None:
    task = _task(input_norm=norm)
    image = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    image[0, :, 0, 0], image[0, :, 0, 1] = 0, 255
    batch = {"image": image, "target": torch.zeros(2, 3), "id": ["a", "b"]}
    out = task.on_after_batch_transfer(batch, 0)
    assert out["image"].dtype == torch.float32 and out["id"] == ["a", "b"]
    assert batch["image"].dtype == torch.uint8  # the loader's batch is left as it was
    torch.testing.assert_close(
        out["image"].double(), _by_hand(image.double() / 255, norm), atol=1e-6, rtol=0
    )
    if norm is SIGNED:  # BiT's [-1, 1]: black and white land exactly on the ends
        assert out["image"][0, :, 0, 0].eq(-1).all() and out["image"][0, :, 0, 1].eq(1).all()


def test_one_channel_images_use_the_channel_average_of_the_normalisation() -> None:
    """A grey image through a 1-channel first conv: the mean over channels of the grey image
    normalised per channel (what the transforms' Normalize did before)."""
    task = _task(input_norm=IMAGENET, in_chans=1)
    image = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    expected = _by_hand(image.double().expand(-1, 3, -1, -1) / 255, IMAGENET).mean(1, keepdim=True)
    torch.testing.assert_close(task.normalize_image(image).double(), expected, atol=1e-6, rtol=0)


def test_float16_images_are_taken_on_zero_one_and_empty_slots_are_zero() -> None:
    """Mammograms come as float16 in [0, 1]; a case's empty slots (mask false) are zeros on the
    normalised scale, as they were when the transforms normalised."""
    task = _task(input_norm=IMAGENET)
    image = torch.rand(2, 3, 3, 4, 4).half()
    mask = torch.tensor([[True, False, True], [True, True, False]])
    out = task.normalize_image(image, mask)
    torch.testing.assert_close(
        out[mask].double(), _by_hand(image[mask].double(), IMAGENET), atol=1e-6, rtol=0
    )
    assert out[~mask].eq(0).all()


def test_normalisation_refuses_what_it_cannot_read() -> None:
    task = _task(input_norm=IMAGENET)
    with pytest.raises(ValueError, match=r"uint8 or float.*torch.int64"):
        task.normalize_image(torch.zeros(1, 3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"2-channel images but a 3-channel input_norm"):
        task.normalize_image(torch.zeros(1, 2, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"one positive std per mean"):
        _task(input_norm={"mean": [0.5, 0.5], "std": [0.5, 0.0]})
