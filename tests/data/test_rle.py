"""Run-length masks (SIIM-ACR): both encodings against hand-made masks, round trips, bad strings."""

from __future__ import annotations

import numpy as np
import pytest

from medxfer.data.rle import RLEError, rle_decode, rle_encode

# A 4 x 3 mask (H = 4, W = 3). Column-major pixel numbers (0-based):
#   col 0: 0 1 2 3 | col 1: 4 5 6 7 | col 2: 8 9 10 11
MASK = np.array(
    [
        [0, 1, 0],
        [1, 1, 0],
        [1, 0, 0],
        [0, 0, 1],
    ],
    dtype=bool,
)
# runs: pixels 1-2 (col 0 rows 1-2), 4-5 (col 1 rows 0-1), 11 (col 2 row 3)
ABSOLUTE = "2 2 5 2 12 1"  # 1-based starts
RELATIVE = "1 2 1 2 5 1"  # each start counted from the end of the previous run


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        pytest.param(ABSOLUTE, "absolute", id="absolute"),
        pytest.param(RELATIVE, "relative", id="relative"),
    ],
)
def test_decode_hand_made_mask(text: str, encoding: str) -> None:
    np.testing.assert_array_equal(rle_decode(text, MASK.shape, encoding), MASK)
    assert rle_encode(MASK, encoding) == text


@pytest.mark.parametrize("encoding", ["absolute", "relative"])
def test_round_trip_on_random_masks(encoding: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((17, 23)) < rng.uniform(0.05, 0.6)
        np.testing.assert_array_equal(
            rle_decode(rle_encode(mask, encoding), mask.shape, encoding), mask
        )


def test_empty_masks() -> None:
    assert rle_encode(np.zeros((5, 5), bool), "relative") == "-1"
    assert not rle_decode("-1", (5, 5), "absolute").any()
    assert not rle_decode(" -1 ", (5, 5), "relative").any()


@pytest.mark.parametrize(
    ("text", "encoding", "message"),
    [
        pytest.param("1 2 3", "absolute", "odd number", id="odd"),
        pytest.param("10 5", "absolute", "past the 4x3 image", id="past-end-absolute"),
        pytest.param("1 2 9 3", "relative", "past the 4x3 image", id="past-end-relative"),
        pytest.param("0 2", "absolute", "1-based", id="zero-start"),
        pytest.param("1 x", "relative", "non-integer", id="text"),
        pytest.param("1 -2", "relative", "negative", id="negative"),
    ],
)
def test_bad_strings(text: str, encoding: str, message: str) -> None:
    with pytest.raises(RLEError, match=message):
        rle_decode(text, MASK.shape, encoding)
