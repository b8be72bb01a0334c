"""CaseClassifier: padding slots change nothing, soft-target loss, top-k metrics and positives per
class by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medxfer.datamodules.dermatology import OTHER
from medxfer.metrics import metric_key
from medxfer.naming import POSITIVES
from medxfer.results import format_results
from medxfer.tasks import CaseClassifier


def test_padded_slots_change_nothing_even_in_training_mode() -> None:
    torch.manual_seed(0)
    task = CaseClassifier(backbone="timm/test_resnet", num_classes=5).train()
    task.head[0].p = 0.0  # dropout off so outputs are comparable
    image = torch.randn(3, 6, 3, 32, 32)
    mask = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool
    )
    a = task({"image": image, "mask": mask})
    garbage = image.clone()
    garbage[~mask] = torch.randn_like(garbage[~mask]) * 100
    b = task({"image": garbage, "mask": mask})
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a case's features are the mean over its real images
    task.eval()
    feats = task.encode(image, mask)
    torch.testing.assert_close(task.aggregate(feats, {"mask": mask})[1], feats[1, 0])


def test_soft_target_loss_equals_hand_computation() -> None:
    task = CaseClassifier(backbone="timm/test_resnet", num_classes=3)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    target = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.0, 1.0]])

    def ce(z: list[float], t: list[float]) -> float:
        lse = math.log(sum(math.exp(v) for v in z))
        return -sum(tk * (zk - lse) for zk, tk in zip(z, t, strict=True))

    expected = (ce([2.0, 0.0, -1.0], [0.6, 0.4, 0.0]) + ce([0.5, 0.5, 0.5], [0, 0, 1])) / 2
    assert task.loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_case_metrics_top_k() -> None:
    task = CaseClassifier(
        backbone="timm/test_resnet", num_classes=4, label_names=["a", "b", "c", OTHER]
    )
    m = task.make_metrics()
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.1, 0.5, 0.3, 0.1]])
    target = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    m.update(probs, target)
    out = m.compute()
    assert out["top1"].item() == pytest.approx(1 / 3)  # only case 2
    assert out["top3"].item() == pytest.approx(
        2 / 3
    )  # case 1 (c is 2nd), case 2; case 3's Other is 4th
    assert "auroc/Other" in out


def test_case_metrics_positives_count_top_labels_across_batches() -> None:
    names = ["a", "b c", "d", OTHER]
    # soft targets: the top label is the argmax; class "d" is never the top label
    batches = [
        np.array([[0.6, 0.4, 0.0, 0.0], [0.1, 0.7, 0.2, 0.0], [0.0, 0.3, 0.2, 0.5]]),
        np.array([[0.0, 1.0, 0.0, 0.0], [0.2, 0.5, 0.3, 0.0], [0.9, 0.0, 0.1, 0.0]]),
    ]
    m = CaseClassifier(backbone="timm/test_resnet", num_classes=4, label_names=names).make_metrics()
    gen = torch.Generator().manual_seed(0)
    for target in batches:
        probs = torch.rand(len(target), 4, generator=gen).softmax(dim=1)
        m.update(probs, torch.from_numpy(target).float())
    out = m.compute()
    expected = np.bincount(np.concatenate(batches).argmax(axis=1), minlength=4)  # [2, 3, 0, 1]
    keys = [f"{POSITIVES}/{metric_key(n)}" for n in names]
    assert keys == ["positives/a", "positives/b_c", "positives/d", "positives/Other"]
    assert [out[k].item() for k in keys] == expected.tolist()
    # results.md pairs each class's AUROC with its positives, as for multi-label tasks
    flat = {f"test/derm/{k}": float(v) for k, v in out.items()}
    table = format_results(flat)
    assert "(3 pos)" in table and "n/a (0 pos)" in table
    assert "positives" not in table.splitlines()[0]  # no column of their own


def test_mean_class_accuracy_is_the_mean_of_per_class_accuracies_by_hand() -> None:
    """Classes a, b, c with 3, 2 and 1 cases; right: 2 of a, 1 of b, 0 of c -> per-class
    accuracies 2/3, 1/2, 0, mean 7/18 (top-1: 3/6). Fed in two halves merged as DDP's gather
    concatenates them, the value is the same."""
    probs = torch.tensor(
        [
            [0.8, 0.1, 0.1],  # a -> a (right)
            [0.6, 0.3, 0.1],  # a -> a (right)
            [0.2, 0.7, 0.1],  # a -> b
            [0.1, 0.8, 0.1],  # b -> b (right)
            [0.5, 0.2, 0.3],  # b -> a
            [0.6, 0.3, 0.1],  # c -> a
        ]
    )
    target = torch.eye(3)[[0, 0, 0, 1, 1, 2]]
    task = CaseClassifier(backbone="timm/test_resnet", num_classes=3, label_names=["a", "b", "c"])
    whole, first, second = task.make_metrics(), task.make_metrics(), task.make_metrics()
    whole.update(probs, target)
    first.update(probs[:4], target[:4])
    second.update(probs[4:], target[4:])
    first.merge_state(second)
    for m in (whole, first):
        out = m.compute()
        assert out["mean_class_acc"].item() == pytest.approx(7 / 18)
        assert out["top1"].item() == pytest.approx(3 / 6)
