"""Segmenter: the U-Net's encoder is the classifier's backbone loaded by the same strict loader,
logits at the input's resolution for every backbone family, the loss against MONAI's Dice and
torch's cross-entropy computed independently on the valid pixels, stage selection."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from medxfer.tasks import MultiLabelClassifier, Segmenter, unet_stages


def test_encoder_equals_the_classification_backbone_from_the_same_ssl_file(tmp_path) -> None:
    encoder = timm.create_model("resnet50", num_classes=0)
    torch.nn.init.normal_(encoder.conv1.weight)  # not timm's initialisation: must be loaded
    path = tmp_path / "moco.pth.tar"
    state = {f"module.encoder_q.{k}": v for k, v in encoder.state_dict().items()}
    state["module.encoder_q.fc.0.weight"] = torch.zeros(4, 2048)  # a projection head, left out
    torch.save({"state_dict": state}, path)
    seg = Segmenter(backbone="resnet50", pretrained=str(path), num_classes=1)
    cls = MultiLabelClassifier(backbone="resnet50", pretrained=str(path), num_classes=1)
    for (name, a), (_, b) in zip(
        seg.backbone.state_dict().items(), cls.backbone.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(seg.backbone.conv1.weight, encoder.conv1.weight, rtol=0, atol=0)
    assert seg.backbone.load_report.unexpected == ["module.encoder_q.fc.0.weight"]


@pytest.mark.parametrize(
    ("backbone", "size"),
    [
        pytest.param("timm/resnet18", (64, 64), id="timm-resnet18"),
        pytest.param("bit-r50x1", (64, 64), id="bit"),
        pytest.param("resnet50v2-bn", (32, 32), id="bn-baseline"),
        pytest.param("timm/resnet18", (45, 70), id="odd-size-padded"),
    ],
)
def test_logits_at_input_resolution(backbone: str, size: tuple[int, int]) -> None:
    task = Segmenter(backbone=backbone, num_classes=2).eval()
    with torch.no_grad():
        out = task(torch.rand(2, 3, *size))
    assert out.shape == (2, 2, *size)


def test_stage_selection_keeps_the_deepest_stage_per_stride() -> None:
    info = [
        {"num_chs": 64, "reduction": 2, "module": "a"},
        {"num_chs": 64, "reduction": 4, "module": "b"},
        {"num_chs": 128, "reduction": 4, "module": "c"},
        {"num_chs": 256, "reduction": 8, "module": "d"},
    ]
    assert unet_stages(info) == [0, 2, 3]
    with pytest.raises(ValueError, match="do not double"):
        unet_stages([{"num_chs": 8, "reduction": 4}, {"num_chs": 8, "reduction": 16}])


def test_binary_loss_is_dice_plus_bce_on_valid_pixels() -> None:
    torch.manual_seed(0)
    task = Segmenter(backbone="timm/resnet18", num_classes=2, dice_weight=0.5)
    logits = torch.randn(3, 2, 8, 8)
    target = (torch.rand(3, 2, 8, 8) < 0.4).float()
    valid = torch.rand(3, 8, 8) < 0.6
    v = valid[:, None].float()
    probs = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = (bce * v).sum() / (v.sum() * 2) + 0.5 * DiceLoss()(probs * v, target * v)
    got = task.batch_loss(logits, {"target": target, "valid": valid})
    torch.testing.assert_close(got, expected)


def test_multiclass_loss_ignores_pixels_outside_the_field_of_view() -> None:
    task = Segmenter(backbone="timm/resnet18", num_classes=3, multiclass=True)
    logits = torch.randn(2, 3, 6, 6)
    labels = torch.randint(0, 3, (2, 6, 6))
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    valid[:, :, :3] = False
    changed = labels.clone()
    changed[:, :, :3] = (labels[:, :, :3] + 1) % 3  # only outside the field of view
    a = task.batch_loss(logits, {"target": labels, "valid": valid})
    b = task.batch_loss(logits, {"target": changed, "valid": valid})
    torch.testing.assert_close(a, b)
    ce = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels[valid])
    onehot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() * valid[:, None]
    dice = DiceLoss()(torch.softmax(logits, 1) * valid[:, None], onehot)
    torch.testing.assert_close(a, ce + dice)


def test_mask_writer_writes_the_thresholded_predictions(tmp_path, tiny_trainer) -> None:
    import numpy as np
    from PIL import Image

    from medxfer.callbacks import MaskWriter
    from medxfer.datamodules.segmentation import SegmentationDataModule, write_synthetic_montgomery

    root = write_synthetic_montgomery(tmp_path / "mont", 10, size=32, seed=0)
    dm = SegmentationDataModule(str(root), layout="montgomery", image_size=32, num_workers=0)
    task = Segmenter(backbone="timm/resnet18", num_classes=1, label_names=["lung"]).eval()
    trainer = tiny_trainer(callbacks=[MaskWriter(out_dir=str(tmp_path / "out"))])
    trainer.predict(task, datamodule=dm, return_predictions=False)
    test = dm.test_sets["seg"]
    # file names: HMAC-SHA256 of the case id under the run folder's key (no patient id)
    key = bytes.fromhex((Path(trainer.log_dir) / "id_key").read_text().strip())
    keyed = {i: hmac.new(key, i.encode(), hashlib.sha256).hexdigest()[:20] for i in test.ids}
    files = sorted((tmp_path / "out" / "seg").glob("*.png"))
    assert [f.name for f in files] == sorted(f"{k}_lung.png" for k in keyed.values())
    assert not any(i in f.name for f in files for i in test.ids)
    sample = test[0]
    with torch.no_grad():
        # forward takes normalised images (the trainer normalises uint8 batches first)
        probs = torch.sigmoid(task(task.normalize_image(sample["image"][None])))[0, 0].numpy()
    written = np.asarray(Image.open(tmp_path / "out" / "seg" / f"{keyed[test.ids[0]]}_lung.png"))
    np.testing.assert_array_equal(written == 255, probs >= 0.5)


def _numpy_native_dice(probs32: np.ndarray, truth: np.ndarray, fov: np.ndarray | None) -> float:
    """Dice of one image at its native size, independently: OpenCV's bilinear resize of the
    probabilities (pixel centres aligned, as ``align_corners=False``), thresholded at 0.5,
    scored inside the field of view (1 when prediction and truth are both empty)."""
    h, w = truth.shape
    up = cv2.resize(probs32.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    assert np.abs(up - 0.5).min() > 1e-4  # no pixel on the threshold: the test is exact
    inside = np.ones_like(truth, bool) if fov is None else fov
    pred, true = (up >= 0.5) & inside, truth & inside
    total = pred.sum() + true.sum()
    return 1.0 if total == 0 else 2 * (pred & true).sum() / total


def test_native_resolution_dice_equals_numpy_on_a_hand_made_case() -> None:
    """Predictions at 32 px, scored against native masks of 45 x 38 (with a field of view) and
    40 x 40 (without): per-image Dice, the metric's mean and the step output equal NumPy's;
    the 32 px Dice against the resized mask differs (the native path is what is scored)."""
    y, x = np.mgrid[0:32, 0:32] / 31.0
    probs32 = [
        1 / (1 + np.exp(-(6 * np.sin(5 * x + 1.3) * np.cos(4 * y) + 0.7))),
        1 / (1 + np.exp(-(8 * (x - 0.45) + 5 * (y - 0.5) ** 2))),
    ]
    yy, xx = np.mgrid[0:38, 0:45]
    truth_a = ((xx - 20) / 14.0) ** 2 + ((yy - 18) / 11.0) ** 2 < 1
    fov_a = ((xx - 22) / 21.0) ** 2 + ((yy - 19) / 17.5) ** 2 < 1
    truth_b = np.zeros((40, 40), bool)
    truth_b[5:30, 22:39] = True
    expected = [
        _numpy_native_dice(probs32[0], truth_a, fov_a),
        _numpy_native_dice(probs32[1], truth_b, None),
    ]
    task = Segmenter(backbone="timm/resnet18", num_classes=1, label_names=["lesion"])
    metric = task.make_metrics()
    probs = torch.tensor(np.stack(probs32)[:, None], dtype=torch.float32)
    resized = [
        cv2.resize(t.astype(np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST)
        for t in (truth_a, truth_b)
    ]
    batch = {
        "target": torch.tensor(np.stack(resized)[:, None], dtype=torch.float32),
        "valid": torch.ones(2, 32, 32, dtype=torch.bool),
        "native_target": [
            torch.from_numpy(truth_a[None].astype(np.uint8)),
            torch.from_numpy(truth_b[None].astype(np.uint8)),
        ],
        "native_valid": [torch.from_numpy(fov_a), None],
    }
    task.update_metrics(metric, probs, batch)
    np.testing.assert_allclose(batch["dice"][:, 0].numpy(), expected, rtol=0, atol=1e-6)
    scores = metric.compute()
    assert scores["dice/lesion"].item() == pytest.approx(np.mean(expected), abs=1e-6)
    at_32 = task.make_metrics()
    at_32.update(probs, batch["target"], batch["valid"])
    assert abs(at_32.compute()["dice/lesion"].item() - np.mean(expected)) > 1e-3


def test_native_resolution_masks_written_and_scored(tmp_path, tiny_trainer) -> None:
    """DRIVE at 48 px through a 32 px model with ``native_resolution``: ``MaskWriter`` writes
    48 x 48 masks equal to OpenCV's bilinear resize of the probabilities, thresholded and cut
    to the stored field of view; ``trainer.test``'s Dice equals NumPy's on those masks against
    the stored vessels inside the field of view."""
    from PIL import Image

    from medxfer.callbacks import MaskWriter
    from medxfer.datamodules.segmentation import SegmentationDataModule, write_synthetic_drive

    root = write_synthetic_drive(tmp_path / "drive", 4, 3, size=48, seed=1)
    dm = SegmentationDataModule(
        str(root / "training"),
        test=str(root / "test"),
        layout="drive",
        split=(0.75, 0.25, 0.0),
        image_size=32,
        native_resolution=True,
        num_workers=0,
        batch_size=2,
    )
    torch.manual_seed(0)
    task = Segmenter(backbone="timm/resnet18", num_classes=1, label_names=["vessel"]).eval()
    dm.setup("test")
    test = dm.test_sets["seg"]
    with torch.no_grad():  # an untrained model: threshold at its median, so masks are not empty
        first = torch.sigmoid(task(task.normalize_image(test[0]["image"][None])))
    threshold = task.hparams.threshold = float(first.median())
    out = tmp_path / "out"
    writer = MaskWriter(out_dir=str(out), threshold=threshold, source_ids=True)
    trainer = tiny_trainer(callbacks=[writer])
    trainer.predict(task, datamodule=dm, return_predictions=False)
    dice = []
    for i, case in enumerate(test.ids):
        n = case.rsplit("-", 1)[1]
        written = np.asarray(Image.open(out / "seg" / f"{case}_vessel.png")) == 255
        assert written.shape == (48, 48)
        sample = test[i]
        with torch.no_grad():
            probs = torch.sigmoid(task(task.normalize_image(sample["image"][None])))[0, 0]
        up = cv2.resize(probs.numpy(), (48, 48), interpolation=cv2.INTER_LINEAR)
        fov = np.asarray(Image.open(root / f"test/mask/{n}_test_mask.gif").convert("L")) > 127
        vessels = np.asarray(Image.open(root / f"test/1st_manual/{n}_manual1.gif").convert("L"))
        sure = np.abs(up - threshold) > 1e-5  # pixels on the threshold may round either way
        np.testing.assert_array_equal(written[sure], ((up >= threshold) & fov)[sure])
        assert not written[~fov].any()
        true = (vessels > 127) & fov
        total = written.sum() + true.sum()
        dice.append(1.0 if total == 0 else 2 * (written & true).sum() / total)
    trainer = tiny_trainer(limit_test_batches=1.0)
    trainer.test(task, datamodule=dm, verbose=False)
    logged = trainer.callback_metrics["test/seg/dice/vessel"].item()
    assert 0 < np.mean(dice) < 1, dice  # neither empty nor perfect: the comparison can fail
    assert logged == pytest.approx(np.mean(dice), abs=1e-5)


def test_native_resolution_multiclass_scores_the_argmax_of_resized_probabilities() -> None:
    """Softmax probabilities at 16 px over 3 classes, native class map 27 x 21: each class's
    Dice equals NumPy's on the arg-max of OpenCV's bilinear resize of the probabilities."""
    rng = np.random.default_rng(4)
    logits = cv2.resize(rng.normal(0, 3, (4, 4, 3)).astype(np.float32), (16, 16))
    probs16 = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # (16, 16, 3)
    truth = cv2.resize(rng.integers(0, 3, (5, 5)).astype(np.uint8), (27, 21), cv2.INTER_NEAREST)
    up = cv2.resize(probs16, (27, 21), interpolation=cv2.INTER_LINEAR)  # (21, 27, 3)
    top2 = np.sort(up, -1)[..., -2:]
    assert (top2[..., 1] - top2[..., 0]).min() > 1e-5  # no tie for the arg-max
    pred = up.argmax(-1)
    expected = []
    for c in range(3):
        p, t = pred == c, truth == c
        expected.append(1.0 if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum()))
    assert 0 < min(expected) and max(expected) < 1
    task = Segmenter(backbone="timm/resnet18", num_classes=3, multiclass=True)
    metric = task.make_metrics()
    batch = {
        "target": torch.zeros(1, 16, 16),
        "native_target": [torch.from_numpy(truth.astype(np.int64))],
        "native_valid": [None],
    }
    task.update_metrics(metric, torch.from_numpy(probs16).permute(2, 0, 1)[None], batch)
    np.testing.assert_allclose(batch["dice"][0].numpy(), expected, rtol=0, atol=1e-6)
