"""Time to a target accuracy: how the speedrun (Lab 1.2's appendix) and ``workbook bench``
measure a training recipe.

The clock counts training steps only. The test split is evaluated every 1/8 epoch with the
clock paused, and a throwaway forward and backward pass builds the layers' kernels first,
off the clock. A seeded run is deterministic, so repeats differ only in what else the
machine was doing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

TARGET = 0.99
CPU = torch.device("cpu")


@dataclass
class SpeedResult:
    name: str
    seed: int | None
    seconds_per_epoch: float
    seconds_to_target: float | None  # None: never reached within the epochs trained
    epochs_to_target: float | None
    final_accuracy: float  # test accuracy after the last epoch trained
    trace: list[tuple[float, float, float]]  # (epoch, training seconds, test accuracy)
    repeat_seconds: list[float] = field(default_factory=list)  # s/epoch of each repeat
    val_accuracy: float | None = None  # validation accuracy after the last epoch, if measured
    # seconds on the clock before the first step (the speedrun's model build): included in
    # the total, which seconds_to_target does not count
    setup_seconds: float = 0.0


class _Reached(Exception):
    pass


def synchronize(device: torch.device) -> None:
    """Wait for the accelerator's queued work, so a clock read after it is honest (a GPU
    runs asynchronously: without this, time goes to whoever next waits for a result)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def warm_up(model: nn.Module, batches, device: torch.device) -> None:
    """One forward and backward pass of a throwaway copy, off the clock: the first call of
    each kind of layer builds its kernels (oneDNN primitives on a CPU; cuDNN/cuBLAS handles
    and autotuning on CUDA, about 0.3 s), a one-off cost that is not training. The model,
    its optimizer and every random-number state are left as they were."""
    import copy

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        images, labels = next(iter(batches))
        twin = copy.deepcopy(model)
        F.cross_entropy(twin(images.to(device)), labels.to(device)).backward()
    synchronize(device)


def time_to_target(
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches,
    test_batches,
    epochs: int,
    device: torch.device = CPU,
    per_batch: Callable[[], None] | None = None,
    per_epoch: Callable[[], None] | None = None,
    set_epoch: Callable[[int], None] | None = None,
    evals_per_epoch: int = 8,
    target: float = TARGET,
    stop_at_target: bool = True,
    seed: int | None = None,
    log=print,
    warm: bool = True,
) -> SpeedResult:
    """Train, evaluating on the test set every 1/evals_per_epoch epoch with the clock paused.

    The clock counts training steps only (evaluation and, with ``warm``, the warm-up are off
    it; without it the first steps pay for building the layers' kernels). With
    ``stop_at_target`` the run ends at the first evaluation that reaches ``target``; without
    it the run trains every epoch, so the final accuracy is the config's real result.
    """
    from shared.train import Schedule, evaluate, train_one_epoch

    n = len(train_batches)
    marks = {round(n * k / evals_per_epoch) - 1 for k in range(1, evals_per_epoch + 1)}
    state = {"clock": 0.0, "start": 0.0, "epoch": 0, "reached": None}
    trace: list[tuple[float, float, float]] = []

    def after_step(i: int) -> None:
        if per_batch is not None:
            per_batch()
        if i not in marks:
            return
        synchronize(device)
        state["clock"] += time.perf_counter() - state["start"]
        acc = evaluate(model, test_batches, device)["accuracy"]
        at = state["epoch"] + (i + 1) / n
        trace.append((round(at, 3), round(state["clock"], 3), acc))
        log(f"  {name}: epoch {at:.3f}  {state['clock']:7.2f} s  test accuracy {acc:.2%}")
        if acc >= target and state["reached"] is None:
            state["reached"] = (state["clock"], at)
            if stop_at_target:
                raise _Reached
        state["start"] = time.perf_counter()

    if warm:
        warm_up(model, train_batches, device)
    for epoch in range(epochs):
        state["epoch"] = epoch
        if set_epoch is not None:
            set_epoch(epoch)
        state["start"] = time.perf_counter()
        try:
            train_one_epoch(
                model, train_batches, optimizer, device, Schedule(None, True), after_step=after_step
            )
        except _Reached:
            break
        if per_epoch is not None:
            per_epoch()
    at = trace[-1][0] if trace else float(epochs)
    return SpeedResult(
        name=name,
        seed=seed,
        seconds_per_epoch=state["clock"] / at if at else float("nan"),
        seconds_to_target=state["reached"][0] if state["reached"] else None,
        epochs_to_target=state["reached"][1] if state["reached"] else None,
        final_accuracy=trace[-1][2] if trace else float("nan"),
        trace=trace,
    )
