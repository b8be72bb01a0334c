"""Test-time ten-crop (the classification test protocol of Hosseinzadeh Taher et al., 2021):
the crops against slicing and flipping the resized image by hand, and a test run's
probabilities against the mean of the ten single-crop predictions computed one crop at a time;
validation stays one centre crop; a multi-image datamodule refuses the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from medxfer.datamodules.chest_xray import ChestXrayDataModule, CXRTable
from medxfer.datamodules.dermatology import DermatologyDataModule, write_synthetic_derm
from medxfer.errors import ConfigError
from medxfer.tasks import MultiLabelClassifier
from medxfer.transforms import ImageTransform, TenCropTransform

RNG = np.random.default_rng(1)


def _by_hand(full: torch.Tensor, s: int) -> list[torch.Tensor]:
    """The four corners, the centre and their horizontal flips of ``full`` ``(C, R, R)``."""
    r = full.shape[-1]
    c = (r - s) // 2  # R - S even below: the centre is exact
    crops = [
        full[:, :s, :s],
        full[:, :s, r - s :],
        full[:, r - s :, :s],
        full[:, r - s :, r - s :],
        full[:, c : c + s, c : c + s],
    ]
    flipped = full.flip(-1)
    crops += [
        flipped[:, :s, :s],
        flipped[:, :s, r - s :],
        flipped[:, r - s :, :s],
        flipped[:, r - s :, r - s :],
        flipped[:, c : c + s, c : c + s],
    ]
    return crops


@pytest.mark.parametrize(
    ("size", "side"), [pytest.param(28, 32, id="28-of-32"), pytest.param(224, 256, id="224-of-256")]
)
def test_ten_crops_are_the_corners_centre_and_flips_of_the_resized_image(
    size: int, side: int
) -> None:
    image = RNG.random((300, 280), dtype=np.float32)
    crops = TenCropTransform(ImageTransform(size, resize=size, train=False))(image)
    assert crops.shape == (10, 3, size, size) and crops.dtype == torch.uint8
    full = ImageTransform(side, resize=side, train=False)(image)  # resize to R, no crop
    for k, want in enumerate(_by_hand(full, size)):
        assert torch.equal(crops[k], want), f"crop {k}"


def _chexpert(root: Path, **kw: Any) -> ChestXrayDataModule:
    dm = ChestXrayDataModule(CXRTable(str(root)), batch_size=4, num_workers=0, augment=False, **kw)
    dm.setup("test")
    return dm


def test_a_ten_crop_test_run_scores_the_mean_of_the_single_crop_predictions(
    synthetic_cxr: dict[str, Path], tiny_trainer
) -> None:
    torch.manual_seed(0)
    dm = _chexpert(synthetic_cxr["chexpert"], image_size=28, ten_crop=True)
    assert dm.val_set[0]["image"].shape == (3, 28, 28), "validation stays one centre crop"
    task = MultiLabelClassifier(
        backbone="timm/test_resnet", num_classes=dm.num_classes, label_names=dm.label_names
    )
    got: dict[str, np.ndarray] = {}

    class Keep(L.Callback):
        def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, idx=0) -> None:
            got.update(zip(outputs["id"], outputs["probs"].numpy(), strict=True))

    tiny_trainer(callbacks=[Keep()], limit_test_batches=1).test(task, datamodule=dm, verbose=False)
    assert len(got) == 4  # one test batch

    # independently: the image resized to 32 (no crop), cut by hand, each crop scored on its
    # own (in eval mode a crop's prediction does not depend on the others in its batch)
    full = _chexpert(synthetic_cxr["chexpert"], image_size=32, resize=32)
    test = next(iter(full.test_sets.values()))
    task.eval()
    with torch.no_grad():
        for i in range(len(test)):
            sample = test[i]
            if sample["id"] not in got:
                continue
            crops = torch.stack(_by_hand(sample["image"], 28))
            single = task.probabilities(task(task.normalize_image(crops)))  # (10, K)
            want = single.mean(dim=0).numpy()
            np.testing.assert_allclose(got[sample["id"]], want, rtol=1e-5, atol=1e-6)


def test_ten_crop_refuses_a_multi_image_datamodule(tmp_path: Path) -> None:
    dm = DermatologyDataModule(
        str(write_synthetic_derm(tmp_path, n_cases=20, size=16, seed=0)),
        n_conditions=3, image_size=16, num_workers=0, ten_crop=True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="ten_crop=true: DermatologyDataModule does not hold"):
        dm.setup("test")
