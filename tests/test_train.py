"""Training: metrics returned, determinism, exact resume, safe checkpoints, DDP with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from shared import train
from shared.config import load_config

# Dropout on, so resuming must restore the RNG state too, not only the weights.
TINY = ["data.subset=600", "training.epochs=3", "model.dropout=0.3", "training.progress=false"]


def tiny(tmp_path, *extra):
    return load_config("configs/smoke.yaml", [*TINY, f"output.root={tmp_path}", *extra])


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def strip_times(metrics):
    m = json.loads(json.dumps(metrics))
    m.pop("train_seconds")
    for h in m["history"]:
        h.pop("seconds")
    return m


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run that the other tests compare against."""
    root = tmp_path_factory.mktemp("ref")
    return train.fit(tiny(root), log=lambda *a: None)


def test_fit_returns_metrics_and_writes_the_run_folder(reference):
    m = reference.metrics
    assert m["completed"] and m["epochs_completed"] == 3 and len(m["history"]) == 3
    assert set(m["history"][0]) >= {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
    }
    assert 0.5 < m["test"]["accuracy"] <= 1.0, "a tiny CNN still learns far above chance (10 %)"
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    files = sorted(p.name for p in reference.run_dir.iterdir())
    assert files == ["checkpoint.pt", "config.yaml", "environment.json", "metrics.json"]
    assert reference.run_dir.name == f"smoke-{tiny(reference.run_dir.parent).hash()}"
    assert json.loads((reference.run_dir / "metrics.json").read_text())["test"] == m["test"]
    env = json.loads((reference.run_dir / "environment.json").read_text())
    assert env["versions"]["torch"] == torch.__version__ and env["device"] == "cpu"


def test_same_config_gives_identical_weights_and_metrics(reference, tmp_path):
    again = train.fit(tiny(tmp_path), log=lambda *a: None)
    assert same_weights(weights(again.model), weights(reference.model))
    assert strip_times(again.metrics) == strip_times(reference.metrics)


def test_other_seed_gives_other_weights(reference, tmp_path):
    other = train.fit(tiny(tmp_path, "seed=1"), log=lambda *a: None)
    assert not same_weights(weights(other.model), weights(reference.model))


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resume_is_exact(reference, tmp_path, stop_after):
    cfg = tiny(tmp_path)
    first = train.fit(cfg, stop_after_epoch=stop_after, log=lambda *a: None)
    assert not first.completed and first.metrics["test"] is None
    assert (
        json.loads((first.run_dir / "metrics.json").read_text())["epochs_completed"] == stop_after
    )
    resumed = train.fit(cfg, run_dir=first.run_dir, resume=True, log=lambda *a: None)
    assert resumed.completed
    assert same_weights(weights(resumed.model), weights(reference.model))
    assert strip_times(resumed.metrics) == strip_times(reference.metrics)


def test_resume_refuses_a_different_config(reference, tmp_path):
    other = tiny(tmp_path, "training.learning_rate=0.05")
    with pytest.raises(ValueError, match="resume needs the same config"):
        train.fit(other, run_dir=reference.run_dir, resume=True, log=lambda *a: None)


def test_checkpoint_is_complete_and_loads_weights_only(reference):
    state = train.load_checkpoint(reference.run_dir / "checkpoint.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "config_hash",
            "history", "versions"} <= set(state)  # fmt: skip
    assert state["epoch"] == 3 and state["config_hash"] == tiny(reference.run_dir).hash()
    model, cfg = train.load_model(reference.run_dir)
    assert same_weights(weights(model), weights(reference.model)) and cfg.model.name == "cnn"


def test_checkpoint_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "x": Payload()}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        train.load_checkpoint(path)


def test_evaluate_uses_eval_mode_and_no_grad():
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(784, 10)

        def forward(self, x):
            seen["training"], seen["grad"] = self.training, torch.is_grad_enabled()
            return self.lin(x.flatten(1))

    model = Spy().train()
    batches = [(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))]
    result = train.evaluate(model, batches, torch.device("cpu"))
    assert seen == {"training": False, "grad": False}
    assert model.training, "evaluate restores the mode it found"
    assert result["n"] == 4


def test_select_device_falls_back_to_cpu_and_refuses_missing_gpus():
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert train.select_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="requested, but this machine's accelerator is"):
            train.select_device("cuda")
    assert train.select_device("cpu").type == "cpu"


@pytest.mark.slow
def test_torchrun_two_processes_rank0_writes(tmp_path):
    """The same entry point under torchrun: DDP on CPU (gloo), two ranks, rank 0 writes."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [
        torchrun, "--standalone", "--nproc-per-node=2", "-m", "workbook.cli", "train",
        "--config", "configs/smoke.yaml", "--set", f"output.root={tmp_path}",
        "--set", "data.subset=400", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["completed"]
    assert "2 processes" in done.stdout
    assert done.stdout.count("run folder") == 1, "only rank 0 logs and writes"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt", "config.yaml", "environment.json", "metrics.json",
    ]  # fmt: skip
    model, _ = train.load_model(run_dir)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
