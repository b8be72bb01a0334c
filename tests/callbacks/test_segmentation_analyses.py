"""Segmentation through the existing analysis callbacks: Dice per subgroup (against NumPy on the
model's own predictions; in the subgroup file, the logged metrics and results.md), pixel ECE on
a seeded, fixed-size subsample of valid pixels (a hand-computed case; the same pixels whatever
the batching), and CKA and weight drift of the U-Net's encoder (against NumPy: the unbiased HSIC
as its U-statistic over 4-tuples, and the relative l2 / mean absolute change of the encoder's
conv kernels)."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medxfer.callbacks import (
    CalibrationCallback,
    CKACallback,
    SubgroupCallback,
    WeightDriftCallback,
)
from medxfer.commands.lightning import MedxferCLI
from medxfer.datamodules.segmentation import SegmentationDataModule, write_synthetic_montgomery
from medxfer.metrics import CalibrationError, sample_pixels
from medxfer.tasks import Segmenter


def _numpy_dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice of two bool masks; 1 when both are empty."""
    total = pred.sum() + true.sum()
    return 1.0 if total == 0 else 2.0 * (pred & true).sum() / total


def _two_lungs(
    root: Path, cases: int, batch_size: int, split: tuple[float, float, float]
) -> SegmentationDataModule:
    """Synthetic Montgomery radiographs at 32 px, left and right lung as two classes."""
    return SegmentationDataModule(
        str(write_synthetic_montgomery(root, cases, size=40, seed=3)),
        layout="montgomery",
        lungs="left_right",
        image_size=32,
        augment=False,
        batch_size=batch_size,
        num_workers=0,
        split=split,
    )


def _tiny_unet(**kwargs: float) -> Segmenter:
    """A seeded two-class U-Net on a ResNet-18 encoder with a tiny decoder."""
    torch.manual_seed(0)
    return Segmenter(
        backbone="timm/resnet18",
        num_classes=2,
        label_names=["left_lung", "right_lung"],
        decoder_channels=(32, 16, 8, 8, 8),
        **kwargs,
    )


def test_subgroup_dice_equals_numpy_per_group(tiny_trainer, tmp_path: Path) -> None:
    dm = _two_lungs(tmp_path / "mont", 20, batch_size=3, split=(0.3, 0.1, 0.6))
    task = _tiny_unet()
    callback = SubgroupCallback(attributes=["sex", "tb"], min_size=1)
    trainer = tiny_trainer(callbacks=[callback], limit_test_batches=None)
    trainer.test(task, datamodule=dm, verbose=False)

    # independent: the model's predictions on every test image, Dice per image and class in NumPy
    ds = dm.test_sets["seg"]
    task.eval()
    per_case, groups = [], {"sex": [], "tb": []}
    with torch.no_grad():
        for i in range(len(ds)):
            sample = ds[i]
            image = task.normalize_image(sample["image"][None])  # forward takes normalised
            probs = torch.sigmoid(task(image))[0].numpy()
            true = sample["target"].numpy() > 0.5
            per_case.append([_numpy_dice(probs[k] >= 0.5, true[k]) for k in range(2)])
            for g in groups:
                groups[g].append(sample["groups"][g])
    per_case_arr = np.array(per_case)
    report = json.loads((tmp_path / "analysis/subgroups_test_seg.json").read_text())
    assert report["metric"] == "dice"
    logged = trainer.callback_metrics
    for attr, labels in groups.items():
        labels_arr = np.array(labels)
        expected = {
            g: float(per_case_arr[labels_arr == g].mean(axis=0).mean()) for g in sorted(set(labels))
        }
        assert len(expected) >= 2, f"synthetic data gave one {attr} group"
        got = report["attributes"][attr]
        assert got["values"] == pytest.approx(expected, abs=1e-6)
        assert got["sizes"] == {g: labels.count(g) for g in expected}
        mean = np.mean(list(expected.values()))
        gap = max(abs(v - mean) for v in expected.values()) / mean
        assert got["gap"] == pytest.approx(gap, abs=1e-6)
        for g, v in expected.items():
            assert float(logged[f"test/seg/subgroup/{attr}/{g}"]) == pytest.approx(v, abs=1e-5)
    # the overall Dice the task logs is the mean of the same per-case values
    assert float(logged["test/seg/dice_mean"]) == pytest.approx(per_case_arr.mean(), abs=1e-5)
    # results.md (as `medxfer test` writes it): one row per set, attribute and group, n and Dice
    MedxferCLI.write_results(SimpleNamespace(trainer=trainer), trainer.logged_metrics)
    lines = (tmp_path / "results.md").read_text().splitlines()
    header = lines.index("| set | attribute | group | n | dice |")
    rows = [line.strip("|").split("|") for line in lines[header + 2 :]]
    table = {(a.strip(), g.strip()): (int(n), float(v)) for _, a, g, n, v in rows}
    assert {s.strip() for s, *_ in rows} == {"seg"}
    assert set(table) == {(a, g) for a, labels in groups.items() for g in set(labels)}
    for attr, labels in groups.items():
        labels_arr = np.array(labels)
        for g in set(labels):
            n, value = table[attr, g]
            assert n == labels.count(g)
            assert value == pytest.approx(per_case_arr[labels_arr == g].mean(), abs=5e-5)


def _outputs() -> dict:
    """Two 2 x 3 sigmoid masks; pixels outside the field of view are confident and wrong (they
    would change the ECE if counted)."""
    probs = torch.tensor(
        [[[[0.9, 0.9, 0.2], [0.95, 0.95, 0.95]]], [[[0.75, 0.3, 0.95], [0.95, 0.95, 0.95]]]]
    )
    target = torch.tensor([[[[1.0, 0.0, 0.0], [0, 0, 0]]], [[[1.0, 1.0, 0.0], [0, 0, 0]]]])
    valid = torch.tensor([[[1, 1, 1], [0, 0, 0]], [[1, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    return {"probs": probs, "target": target, "valid": valid, "id": ["a", "b"]}


def test_pixel_ece_of_a_hand_made_case() -> None:
    """10 bins over the five valid pixels: 0.9, 0.9 (outcomes 1, 0) -> |0.5 - 0.9| x 2; 0.2 (0)
    -> 0.2; 0.75 (1) -> 0.25; 0.3 (1) -> 0.7. ECE = (0.8 + 0.2 + 0.25 + 0.7) / 5 = 0.39."""
    callback = CalibrationCallback(n_bins=10, pixels_per_image=100)
    metric = CalibrationError(10, "multilabel", ["lung"])
    callback.update(metric, _outputs())
    assert float(metric.compute()["ece"]) == pytest.approx(0.39, abs=1e-6)
    assert float(metric.stats[..., 0].sum()) == 5  # only valid pixels


def test_pixel_sample_is_fixed_size_seeded_by_case_and_independent_of_batching() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 2, 8, 8, generator=g)
    target = (torch.rand(4, 2, 8, 8, generator=g) > 0.5).float()
    valid = torch.zeros(4, 8, 8, dtype=torch.bool)
    valid[:, 2:6, 1:6] = True  # 20 valid pixels per image
    ids = ["w", "x", "y", "z"]
    p, t = sample_pixels(probs, target, valid, ids, per_image=6, seed=1)
    assert p.shape == (24, 2) and t.shape == (24, 2)
    # every drawn row is one of its image's valid pixels
    for i in range(4):
        rows = probs[i].flatten(1).T[valid[i].flatten()]
        for r in p[6 * i : 6 * i + 6]:
            assert (rows == r).all(1).any()
        assert len({tuple(r.tolist()) for r in p[6 * i : 6 * i + 6]}) == 6  # no repeats
    # the same pixels from two batches in another order
    order = [2, 0, 3, 1]
    halves = [
        sample_pixels(probs[o], target[o], valid[o], [ids[k] for k in o], per_image=6, seed=1)
        for o in (order[:2], order[2:])
    ]
    by_case = {
        ids[k]: halves[j][0][6 * m : 6 * m + 6]
        for j, o in enumerate((order[:2], order[2:]))
        for m, k in enumerate(o)
    }
    for i, case in enumerate(ids):
        torch.testing.assert_close(by_case[case], p[6 * i : 6 * i + 6], rtol=0, atol=0)
    other, _ = sample_pixels(probs, target, valid, ids, per_image=6, seed=2)
    assert not torch.equal(other, p)
    # fewer valid pixels than asked: all of them
    p_all, _ = sample_pixels(probs, target, valid, ids, per_image=100)
    assert p_all.shape == (80, 2)


def test_multiclass_pixel_ece_is_top_label_against_numpy() -> None:
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(3, 3, 5, 5, generator=g), 1)
    target = torch.randint(0, 3, (3, 5, 5), generator=g)
    valid = torch.rand(3, 5, 5, generator=g) > 0.3
    callback = CalibrationCallback(n_bins=15, pixels_per_image=1000)
    metric = CalibrationError(15, "multiclass")
    callback.update(
        metric, {"probs": probs, "target": target, "valid": valid, "id": ["a", "b", "c"]}
    )
    p = probs.permute(0, 2, 3, 1).numpy()[valid.numpy()]
    t = target.numpy()[valid.numpy()]
    conf, correct = p.max(1), (p.argmax(1) == t).astype(float)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum(
        abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum()
        for b in range(15)
        if (bins == b).any()
    ) / len(conf)
    assert float(metric.compute()["ece"]) == pytest.approx(ece, abs=1e-6)


def _hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Unbiased HSIC (Song et al. 2012, Theorem 3) as its U-statistic: the mean over ordered
    4-tuples of distinct examples (i, j, q, r) of ``k_ij l_ij + k_ij l_qr - 2 k_ij l_iq``."""
    terms = [
        k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        for i, j, q, r in itertools.permutations(range(len(k)), 4)
    ]
    return float(np.mean(terms))


def test_cka_and_weight_drift_measure_the_unet_encoder(tiny_trainer, tmp_path: Path) -> None:
    dm = _two_lungs(tmp_path / "mont", 16, batch_size=2, split=(0.25, 0.5, 0.25))
    task = _tiny_unet(lr=0.05)
    start = copy.deepcopy(task.backbone).eval()
    cka, drift = CKACallback(probe_size=100, batch_size=4), WeightDriftCallback()
    trainer = tiny_trainer(callbacks=[cka, drift], max_steps=4)
    trainer.fit(task, datamodule=dm)
    end = task.backbone.eval()
    stages = ["act1", "layer1", "layer2", "layer3", "layer4"]  # timm resnet18's feature_info

    # weight drift: the encoder's conv kernels, grouped by stage by hand (conv1 is the stem's)
    w0 = dict(start.named_parameters())
    sums = {s: np.zeros(4) for s in stages}
    for name, w in end.named_parameters():
        if w.ndim == 4:
            top = name.split(".")[0]
            delta = (w.detach() - w0[name].detach()).double().numpy()
            init = w0[name].detach().double().numpy()
            sums["act1" if top == "conv1" else top] += [
                np.abs(delta).sum(),
                (delta**2).sum(),
                (init**2).sum(),
                delta.size,
            ]
    report = json.loads((tmp_path / "analysis/weight_drift.json").read_text())
    final = report["history"][-1]["drift"]
    assert {g for g in final if g.startswith("stage/")} == {f"stage/{s}" for s in stages}
    assert not any("decoder" in g or "head" in g for g in final)  # the U-Net's own parts
    for s, (l1, d2, i2, n) in sums.items():
        assert final[f"stage/{s}"]["n"] == n
        assert final[f"stage/{s}"]["l1"] == pytest.approx(l1 / n, rel=1e-5)
        assert final[f"stage/{s}"]["rel_l2"] == pytest.approx(np.sqrt(d2 / i2), rel=1e-5)
        assert d2 > 0, f"stage {s} did not move: the test would not see a wrong model"
        logged = float(trainer.callback_metrics[f"drift/rel_l2/{s}"])
        assert logged == pytest.approx(np.sqrt(d2 / i2), rel=1e-5)  # last epoch = end weights

    # CKA: the probe is the whole validation set in order (probe_size > its size), in
    # minibatches of 4; features are each stage's (C, H, W) map flattened per image
    images = torch.stack([dm.val_set[i]["image"] for i in range(len(dm.val_set))])
    assert len(images) == 8 and images.dtype == torch.uint8
    # normalised by hand as the backbone saw them: (x / 255 - mean) / std of the task's weights
    mean = torch.tensor(task.input_norm["mean"])[:, None, None]
    std = torch.tensor(task.input_norm["std"])[:, None, None]
    images = (images.float() / 255 - mean) / std
    num = np.zeros(len(stages))
    den0, den1 = np.zeros(len(stages)), np.zeros(len(stages))
    with torch.no_grad():
        for x in images.split(4):
            f0 = start.forward_intermediates(x, indices=len(stages), intermediates_only=True)
            f1 = end.forward_intermediates(x, indices=len(stages), intermediates_only=True)
            for s, (a, b) in enumerate(zip(f0, f1, strict=True)):
                a, b = a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
                k, l = a @ a.T, b @ b.T  # noqa: E741
                num[s] += _hsic_u_statistic(k, l)
                den0[s] += _hsic_u_statistic(k, k)
                den1[s] += _hsic_u_statistic(l, l)
    expected = num / np.sqrt(den0 * den1)
    history = json.loads((tmp_path / "analysis/cka.json").read_text())["history"]
    assert [h["when"] for h in history] == ["start", "epoch", "epoch", "end"]
    assert history[0]["cka"] == pytest.approx(dict.fromkeys(stages, 1.0), abs=1e-6)
    assert history[-1]["cka"] == pytest.approx(dict(zip(stages, expected, strict=True)), abs=1e-5)
    assert min(expected) < 1 - 1e-4, "fine-tuning left every stage's features unchanged"
