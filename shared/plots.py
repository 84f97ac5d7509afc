"""Figures for the labs. Each function returns a matplotlib Figure; ``save`` writes one.

Figures are built with the object API (no pyplot state), so they work in notebooks, in
Airflow tasks and in tests without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from shared.io import atomic_path


def sample_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor | None = None,
    rows: int = 4,
    cols: int = 8,
    title: str | None = None,
) -> Figure:
    """A grid of digits with their labels (and predictions, red where wrong)."""
    fig = Figure(figsize=(cols * 1.1, rows * 1.25 + (0.4 if title else 0)))
    n = min(rows * cols, len(images))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].squeeze().float()
        ax.imshow(img.numpy(), cmap="gray_r")
        label = int(labels[i])
        if predictions is None:
            ax.set_title(str(label), fontsize=10)
        else:
            pred = int(predictions[i])
            ax.set_title(f"{label}→{pred}", fontsize=10, color="black" if pred == label else "red")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Loss and accuracy per epoch, side by side: whichever of train_/val_ loss and accuracy
    the history records (``fit`` records all four; Lab 1.2's ``my_fit`` train loss and
    validation accuracy)."""
    fig = Figure(figsize=(10, 3.6))
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split, style, label in (("train", "o-", "train"), ("val", "s--", "validation")):
            if history and f"{split}_{key}" in history[0]:
                ax.plot(epochs, [h[f"{split}_{key}"] for h in history], style, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(
    y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int = 10
) -> torch.Tensor:
    """Counts ``[true, predicted]`` as a (C, C) int64 tensor."""
    idx = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def confusion_figure(matrix: torch.Tensor, title: str = "confusion matrix") -> Figure:
    """The confusion matrix as a heat map with counts; the diagonal is what went right."""
    fig = Figure(figsize=(5.6, 5))
    ax = fig.add_subplot()
    m = matrix.numpy()
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    k = m.shape[0]
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = m.max() / 2 if m.size else 0
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                color = "white" if m[i, j] > threshold else "black"
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    return fig


def compare_runs(runs: Mapping[str, Mapping[str, Any]], metric: str = "val_accuracy") -> Figure:
    """Several runs side by side: ``metric`` per epoch (bars when every run has a single
    epoch: one dot per run on a line chart says nothing) and their final test accuracy."""
    fig = Figure(figsize=(10, 3.6))
    ax_left, ax_bar = fig.subplots(1, 2)
    names = list(runs)
    label = metric.replace("_", " ")
    if max((len(runs[n]["history"]) for n in names), default=0) <= 1:
        values = [(runs[n]["history"] or [{}])[-1].get(metric, float("nan")) for n in names]
        _accuracy_bars(ax_left, names, values, f"{label} after its one epoch")
    else:
        for name in names:
            hist = runs[name]["history"]
            ax_left.plot([h["epoch"] for h in hist], [h[metric] for h in hist], "o-", label=name)
        ax_left.set_xlabel("epoch")
        ax_left.set_ylabel(label)
        ax_left.grid(alpha=0.3)
        ax_left.legend(fontsize=8)
    accs = [(runs[n].get("test") or {}).get("accuracy", float("nan")) for n in names]
    _accuracy_bars(ax_bar, names, accs, "test accuracy")
    fig.tight_layout()
    return fig


def _accuracy_bars(ax, names: Sequence[str], values: Sequence[float], xlabel: str) -> None:
    """Horizontal bars labelled with percentages, the axis zoomed to where they differ."""
    bars = ax.barh(list(names), list(values), color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2%}" for v in values], padding=2, fontsize=8)
    ax.set_xlabel(xlabel)
    finite = [v for v in values if v == v]
    if finite:
        ax.set_xlim(max(0.0, min(finite) - 0.05), 1.0)


def dag_graph(dag, title: str | None = None) -> Figure:
    """A DAG's tasks as boxes (task id and operator) in dependency order, left to right,
    with an arrow for every dependency: the UI's Graph view, drawn from the DAG object."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    tasks = {t.task_id: t for t in dag.tasks}
    depth: dict[str, int] = {}

    def level(task_id: str) -> int:  # longest path from a root: its column
        if task_id not in depth:
            ups = tasks[task_id].upstream_task_ids
            depth[task_id] = 1 + max((level(u) for u in ups), default=-1)
        return depth[task_id]

    columns: dict[int, list[str]] = {}
    for task_id in sorted(tasks):
        columns.setdefault(level(task_id), []).append(task_id)
    rows = max(len(c) for c in columns.values())
    fig = Figure(figsize=(2.9 * len(columns) + 0.4, 1.1 * rows + 0.9))
    ax = fig.add_subplot()
    ax.set_xlim(-0.2, 2.9 * len(columns))
    ax.set_ylim(-0.7, 1.1 * rows)
    ax.axis("off")
    at: dict[str, tuple[float, float]] = {}
    for col, ids in columns.items():
        for row, task_id in enumerate(ids):
            y = 1.1 * (rows - 1) / 2 + 1.1 * ((len(ids) - 1) / 2 - row)
            at[task_id] = (col * 2.9 + 1.1, y)
    for task_id, (x, y) in at.items():
        ax.add_patch(FancyBboxPatch((x - 1.0, y - 0.32), 2.0, 0.64, boxstyle="round,pad=0.05",
                                    facecolor="#dcfce7", edgecolor="#334155"))  # fmt: skip
        ax.text(x, y + 0.09, task_id, ha="center", va="center", fontsize=10, weight="bold")
        kind = type(tasks[task_id]).__name__.removeprefix("_")
        kind = {"PythonDecoratedOperator": "@task", "DecoratedMappedOperator": "@task, mapped"}.get(
            kind, kind
        )
        ax.text(x, y - 0.17, kind, ha="center", va="center", fontsize=8, color="#475569")
    for task_id, task in tasks.items():
        for down in task.downstream_task_ids:
            (x0, y0), (x1, y1) = at[task_id], at[down]
            ax.add_patch(FancyArrowPatch((x0 + 1.02, y0), (x1 - 1.02, y1), arrowstyle="-|>",
                                         mutation_scale=16, lw=1.5, color="#334155"))  # fmt: skip
    ax.set_title(title or dag.dag_id, fontsize=11)
    fig.tight_layout()
    return fig


LIFECYCLE = [
    ("1. DATA", "ingest, validate,\nengineer features,\nversion & partition"),
    ("2. MODEL", "train, evaluate,\ntrack experiments,\nregister the best"),
    ("3. DEPLOYMENT", "load the model,\nserve predictions,\nlog inputs & outputs"),
    ("4. MONITORING", "track performance,\ndetect drift,\ntrigger retraining"),
]


def lifecycle_figure() -> Figure:
    """The four loops of the ML lifecycle as a cycle, with Airflow orchestrating all four."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(8, 6))
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 8)
    ax.axis("off")
    centers = [(2.5, 6.2), (7.5, 6.2), (7.5, 1.8), (2.5, 1.8)]  # clockwise
    colors = ["#dbeafe", "#dcfce7", "#fef9c3", "#fee2e2"]
    for (title, body), (x, y), color in zip(LIFECYCLE, centers, colors, strict=True):
        ax.add_patch(FancyBboxPatch((x - 1.9, y - 1.2), 3.8, 2.4, boxstyle="round,pad=0.1",
                                    facecolor=color, edgecolor="#334155"))  # fmt: skip
        ax.text(x, y + 0.7, title, ha="center", va="center", fontsize=12, weight="bold")
        ax.text(x, y - 0.3, body, ha="center", va="center", fontsize=9)
    for a, b in zip(centers, centers[1:] + centers[:1], strict=True):
        start = (a[0] + (1.95 if b[0] > a[0] else -1.95 if b[0] < a[0] else 0),
                 a[1] + (1.25 if b[1] > a[1] else -1.25 if b[1] < a[1] else 0))  # fmt: skip
        end = (b[0] - (1.95 if b[0] > a[0] else -1.95 if b[0] < a[0] else 0),
               b[1] - (1.25 if b[1] > a[1] else -1.25 if b[1] < a[1] else 0))  # fmt: skip
        ax.add_patch(
            FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=20, lw=2, color="#334155")
        )
    ax.text(5, 4, "Airflow\norchestrates\nevery loop", ha="center", va="center", fontsize=10,
            style="italic", bbox={"boxstyle": "circle", "facecolor": "white", "edgecolor": "#94a3b8"})  # fmt: skip
    ax.text(5, 7.75, "new data → back to the data loop ♻", ha="center", fontsize=9, color="#475569")
    fig.tight_layout()
    return fig


def accuracy_over_days(days: Sequence[Mapping[str, Any]]) -> Figure:
    """Lab 1.4's loop, day by day: the accuracy of the model in service on each day's
    images (known once the labels arrive), the days the monitor found drift (shaded), and
    the days a retrained model was registered (it serves from the next day on)."""
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    x = list(range(len(days)))
    for i, day in enumerate(days):
        if day.get("drift"):
            ax.axvspan(i - 0.5, i + 0.5, color="tab:red", alpha=0.12, lw=0)
    ax.plot(x, [d["accuracy"] for d in days], "o-", color="tab:blue", label="accuracy that day")
    for i, day in enumerate(days):
        ax.annotate(f"{day['accuracy']:.0%}", (i, day["accuracy"]), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8)  # fmt: skip
        if day.get("registered"):
            ax.axvline(i + 0.5, color="tab:green", ls="--", lw=1.5)
    ax.plot([], [], color="tab:red", alpha=0.3, lw=8, label="monitor found drift")
    ax.plot([], [], color="tab:green", ls="--", label="retrained model registered")
    ax.set_xticks(x, [d["ds"] for d in days], rotation=30, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy of the model in service")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` (format from the suffix) atomically; returns the path."""

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
