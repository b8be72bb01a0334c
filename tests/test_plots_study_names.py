"""The figures read run artifacts by the names of :mod:`medxfer.artifacts` and
:func:`medxfer.metrics.stage_drift`: what a plot shows is checked against hand-made records; the
one helper that saves every figure writes it whole and closes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from medxfer import artifacts, plots


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the plots close, kept open for inspection."""
    kept: list[Figure] = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    return kept


def _bars(fig: Figure) -> dict[str, float]:
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    return dict(zip(labels, [p.get_height() for p in ax.patches], strict=True))


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        pytest.param(
            {
                "stage/layer1": {"l1": 0.3, "rel_l2": 0.1, "n": 8},
                "block/layer1.0": {"l1": 0.5, "rel_l2": 0.2, "n": 4},
                "block/layer1.1": {"l1": 0.1, "rel_l2": 0.0, "n": 4},
                "stage/layer2": {"l1": 0.7, "rel_l2": 0.3, "n": 4},
                "block/layer2.0": {"l1": 0.7, "rel_l2": 0.3, "n": 4},
            },
            {"layer1.0": 0.5, "layer1.1": 0.1, "layer2.0": 0.7},
            id="blocks",
        ),
        pytest.param(
            {
                "stage/stem": {"l1": 0.2, "rel_l2": 0.1, "n": 8},
                "stage/head": {"l1": 0.9, "rel_l2": 0.4, "n": 2},
            },
            {"stem": 0.2, "head": 0.9},
            id="stages-when-no-blocks",
        ),
    ],
)
def test_drift_plot_shows_each_block_l1(
    drift: dict, expected: dict[str, float], figures: list[Figure], tmp_path: Path
) -> None:
    path = tmp_path / artifacts.DRIFT_PLOT
    plots.plot_drift_per_block(drift, path)
    assert path.is_file()
    assert _bars(figures[0]) == pytest.approx(expected)


def test_cka_plot_reads_history_records(figures: list[Figure], tmp_path: Path) -> None:
    history = [
        {
            artifacts.WHEN: artifacts.START,
            artifacts.EPOCH: 0,
            artifacts.STEP: 0,
            artifacts.CKA: {"layer1": 1.0, "layer2": 1.0},
        },
        {
            artifacts.WHEN: artifacts.END,
            artifacts.EPOCH: 4,
            artifacts.STEP: 40,
            artifacts.CKA: {"layer1": 0.9, "layer2": 0.4},
        },
    ]
    path = tmp_path / artifacts.CKA_PLOT
    plots.plot_cka_vs_depth(history, path)
    assert path.is_file()
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "start (epoch 0)",
        "end (epoch 4)",
    ]
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[1.0, 1.0], [0.9, 0.4]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer1", "layer2"]


def test_saved_figure_writes_the_png_and_closes_the_figure(tmp_path: Path) -> None:
    open_before = plt.get_fignums()
    with plots.saved_figure(tmp_path / "a.png", figsize=(2, 2)) as (fig, ax):
        ax.plot([0, 1], [0, 1])
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.get_size_inches() == pytest.approx((2, 2))
    with pytest.raises(RuntimeError, match="drawing"):
        with plots.saved_figure(tmp_path / "b.png") as (fig, ax):
            raise RuntimeError("drawing failed")
    assert plt.get_fignums() == open_before  # both closed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # nothing of b, no temporary
