"""The template's options are checked where they are read: each bad value is one ConfigError
naming the key and the allowed range (the CLI cases are in tests/test_errors.py)."""

from __future__ import annotations

import pytest

from medxfer.datamodules.image_table import ImageTable
from medxfer.errors import ConfigError


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        pytest.param({"batch_size": 0}, r"batch_size=0: must be an integer >= 1", id="batch-0"),
        pytest.param({"batch_size": -4}, r"batch_size=-4: must be an integer >= 1", id="batch-neg"),
        pytest.param({"eval_batch_size": 0}, r"eval_batch_size=0: must be", id="eval-batch-0"),
        pytest.param({"shots_per_class": 0}, r"shots_per_class=0: must be", id="shots-0"),
        pytest.param({"num_workers": -1}, r"num_workers=-1: must be an integer >= 0", id="workers"),
        pytest.param(
            {"train_fraction": 0.0}, r"train_fraction=0.0: must be in \(0, 1\]", id="tf-0"
        ),
        pytest.param({"train_fraction": 1.01}, r"train_fraction=1.01: must be in", id="tf-above"),
        pytest.param({"train_fraction": -0.5}, r"train_fraction=-0.5: must be in", id="tf-neg"),
        pytest.param({"image_size": 0}, r"image_size=0: must be an integer >= 1", id="size-0"),
        pytest.param({"image_size": -32}, r"image_size=-32: must be", id="size-neg"),
        pytest.param(
            {"image_size": 64, "resize": 48},
            r"resize=48: must be >= image_size \(64\)",
            id="resize",
        ),
        pytest.param(
            {"split": (0.5, 0.5, 0.5)}, r"split=\[0.5, 0.5, 0.5\]: must be three", id="split-sum"
        ),
        pytest.param({"split": (1.2, -0.2, 0.0)}, r"split=\[1.2, -0.2, 0.0\]", id="split-negative"),
        pytest.param({"split": (0.8, 0.2)}, r"split=\[0.8, 0.2\]", id="split-two"),
    ],
)
def test_bad_options_are_one_config_error_naming_the_key(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImageTable("t.csv", target_column="c", **kw)


def test_boundary_values_are_accepted() -> None:
    dm = ImageTable(
        "t.csv", target_column="c", batch_size=1, train_fraction=1.0, image_size=1, resize=1
    )
    assert (dm.batch_size, dm.train_fraction) == (1, 1.0)
