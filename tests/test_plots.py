"""Figures: each returns a Figure with the content the labs describe, and saves atomically."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from shared import plots

HISTORY = [
    {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "train_accuracy": 0.8, "val_accuracy": 0.85},
    {"epoch": 2, "train_loss": 0.3, "val_loss": 0.35, "train_accuracy": 0.9, "val_accuracy": 0.88},
]


def test_confusion_matrix_counts_pairs():
    y_true = torch.tensor([0, 0, 1, 2, 2, 2])
    y_pred = torch.tensor([0, 1, 1, 2, 2, 0])
    m = plots.confusion_matrix(y_true, y_pred, num_classes=3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m.sum() == 6 and m.trace() == 4


def test_sample_grid_titles_mark_mistakes():
    images = torch.zeros(4, 1, 28, 28)
    fig = plots.sample_grid(
        images, torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4]), rows=1, cols=4
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["1→1", "2→2", "3→0", "4→4"]
    wrong = fig.axes[2].title.get_color()
    assert wrong == "red" and fig.axes[0].title.get_color() == "black"


def test_training_curves_plot_both_splits():
    fig = plots.training_curves(HISTORY)
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "validation"]
    assert list(acc_ax.lines[1].get_ydata()) == [0.85, 0.88]


def test_confusion_figure_and_compare_runs(tmp_path):
    fig = plots.confusion_figure(torch.eye(10, dtype=torch.long) * 5)
    assert isinstance(fig, Figure) and fig.axes[0].get_xlabel() == "predicted"
    runs = {
        "a": {"history": HISTORY, "test": {"accuracy": 0.9}},
        "b": {"history": HISTORY[:1], "test": None},
    }
    cmp = plots.compare_runs(runs)
    assert [line.get_label() for line in cmp.axes[0].lines] == ["a", "b"]
    path = plots.save(cmp, tmp_path / "out" / "compare.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["compare.png"]
