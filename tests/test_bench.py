"""`workbook bench`'s measurement: what counts as time to 99 %, the median over seeds, and
repeats of a deterministic run (the timings themselves are the benchmark's, not a test's)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared import speedrun
from workbook import bench


def _separable(n: int = 512, seed: int = 0):
    """Two classes a linear model separates: labels are the sign of the first pixel."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 28, 28, generator=gen)
    labels = (images[:, 0, 0, 0] > 0).long()
    batches = [(images[i : i + 64], labels[i : i + 64]) for i in range(0, n, 64)]
    return batches, [(images, labels)]


def _run(stop_at_target: bool, target: float = 0.95) -> speedrun.SpeedResult:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2))
    train, test = _separable()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    return speedrun.time_to_target(
        "tiny", model, optimizer, train, test, epochs=3, evals_per_epoch=4, target=target,
        stop_at_target=stop_at_target, log=lambda *_: None,
    )  # fmt: skip


def test_time_to_target_records_the_first_crossing_and_trains_on_when_asked():
    full = _run(stop_at_target=False)
    assert [at for at, _, _ in full.trace] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0,
                                               2.25, 2.5, 2.75, 3.0]  # fmt: skip
    first = next(i for i, (_, _, acc) in enumerate(full.trace) if acc >= 0.95)
    assert full.epochs_to_target == full.trace[first][0]
    assert full.seconds_to_target == pytest.approx(full.trace[first][1], abs=1e-3)
    assert full.seconds_to_target > 0
    assert full.final_accuracy == full.trace[-1][2]
    # stopping at the target gives the same crossing (the run is seeded) and trains no further
    stopped = _run(stop_at_target=True)
    assert stopped.epochs_to_target == full.epochs_to_target
    assert stopped.trace[-1][0] == full.epochs_to_target < 3
    never = _run(stop_at_target=False, target=1.01)
    assert never.seconds_to_target is None and never.epochs_to_target is None


def test_warm_up_leaves_the_model_and_the_random_state_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2), nn.Dropout(0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    speedrun.warm_up(model, _separable()[0], torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), state)


def _result(seconds, accuracy=0.991, per_epoch=5.0, trace=((1.0, 5.0, 0.991),)):
    return speedrun.SpeedResult("seed", 0, per_epoch, seconds, None if seconds is None else 1.0,
                             accuracy, list(trace))  # fmt: skip


def test_summary_takes_the_median_seed_and_counts_a_miss_as_slowest():
    runs = [_result(6.0, 0.9905), _result(None, 0.9897), _result(5.0, 0.9912)]
    s = bench.summarize(runs)
    assert s["median_seconds_to_target"] == 6.0  # 5.0, 6.0, never
    assert s["reached"] == 2 and s["min_final_accuracy"] == 0.9897
    assert s["mean_final_accuracy"] == pytest.approx((0.9905 + 0.9897 + 0.9912) / 3)
    assert bench.summarize([_result(None), _result(None)])["median_seconds_to_target"] is None


def test_repeats_keep_the_median_and_the_workbooks_must_be_identical():
    slow, mid, fast = (_result(t, per_epoch=t) for t in (7.5, 6.0, 5.1))
    median = bench.median_of([slow, fast, mid])
    assert median.seconds_to_target == 6.0 and median.repeat_seconds == [7.5, 5.1, 6.0]
    assert bench.median_of([slow, fast]).seconds_to_target == 5.1  # the lower middle of two
    other = _result(5.0, trace=((1.0, 5.0, 0.985),))
    with pytest.raises(RuntimeError, match="not deterministic"):
        bench.median_of([fast, other])
    assert bench.median_of([fast, other], deterministic=False).seconds_to_target == 5.0


def test_the_report_prints_each_seed_the_median_and_the_ratio():
    from dataclasses import asdict

    runs = [_result(4.0), _result(6.0), _result(5.0)]
    results = {
        "config": "configs/default.yaml", "device": "cpu", "torch": "2", "threads": 2,
        "workbook": [asdict(r) for r in runs], "summary": bench.summarize(runs),
        "classic": asdict(_result(250.0, per_epoch=66.0)),
    }  # fmt: skip
    text = bench.report(results)
    assert text.count("seed 0") == 3 and "median" in text and "5.00 s" in text
    assert "50.0x sooner than the classic" in text


@pytest.mark.slow
def test_selection_reads_validation_for_every_candidate_and_test_once_per_seed(
    mnist_root, monkeypatch
):
    """`workbook bench --select`: each candidate scored on validation only; the test split
    evaluated for the chosen candidate alone, after the choice."""
    import shared.train

    seen = []
    real = shared.train.evaluate

    def counting(model, batches, device):
        seen.append(len(batches.labels))
        return real(model, batches, device)

    monkeypatch.setattr(shared.train, "evaluate", counting)
    grid = {"model.fc": [16, 32], "training.learning_rate": [0.004]}
    results = bench.select("configs/smoke.yaml", grid=grid, seeds=2, log=lambda *_: None)
    # smoke: 1,200 images -> 120 validation, 240 test (data.subset_test_size)
    assert seen == [120] * 4 + [240] * 2
    means = {" ".join(c["overrides"]): sum(c["val"]) / 2 for c in results["candidates"]}
    assert " ".join(results["chosen"]) == max(means, key=means.get)
    assert len(results["chosen_test"]) == 2
    assert "<- chosen" in bench.selection_report(results)
