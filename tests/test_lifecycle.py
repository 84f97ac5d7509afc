"""The production loop's library (shared.lifecycle), without Airflow: production days,
batch predictions, the monitor's statistics, retraining and the champion/challenger rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from shared import data, lifecycle, paths, pipeline

TRAIN_DS = "2024-01-02"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project with one model trained on a smoke partition and registered, as Lab 1.4's
    training pipeline leaves it; the tests below work on copies of its state or add days."""
    import os

    root = paths.scratch_project(tmp_path_factory.mktemp("lifecycle") / "project")
    saved = os.environ.get("WORKBOOK_ROOT")
    os.environ["WORKBOOK_ROOT"] = str(root)
    try:
        pipeline.ingest(TRAIN_DS, paths.data_root(), subset=1200)
        run = pipeline.train(TRAIN_DS, "configs/smoke.yaml", paths.data_root(), paths.runs_root())
        metrics = pipeline.evaluate_run(run, TRAIN_DS, paths.data_root())
        registered = pipeline.register(run, metrics, root / "registry" / "lab1_4")
        yield root, registered
    finally:
        if saved is None:
            os.environ.pop("WORKBOOK_ROOT")
        else:
            os.environ["WORKBOOK_ROOT"] = saved


def test_scenario_days_and_the_shift_date():
    days = lifecycle.scenario_days()
    assert days[0] == lifecycle.SCENARIO_START and len(days) == lifecycle.SCENARIO_DAYS
    assert [lifecycle.is_shifted(d) for d in days] == [d >= lifecycle.SHIFT_FROM for d in days]
    assert any(lifecycle.is_shifted(d) for d in days) and not lifecycle.is_shifted(days[0])


def test_a_production_day_is_the_same_bytes_on_a_rerun_and_differs_between_days(tmp_path):
    root = paths.scratch_project(tmp_path / "p") / "data"
    first = Path(lifecycle.production_day("2024-02-01", root, size=200))
    digest = json.loads((first / "manifest.json").read_text())["files"]
    again = Path(lifecycle.production_day("2024-02-01", root, size=200))
    assert json.loads((again / "manifest.json").read_text())["files"] == digest
    a = data.read_partition("production", "2024-02-01", root)["images"]
    lifecycle.production_day("2024-02-02", root, size=200)
    b = data.read_partition("production", "2024-02-02", root)["images"]
    assert a.shape == b.shape == (200, 28, 28) and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        lifecycle.production_day("2024-2-1", root)


def test_the_new_scanner_rotates_and_adds_noise_that_moves_the_mean_intensity(tmp_path):
    root = paths.scratch_project(tmp_path / "p") / "data"
    lifecycle.production_day("2024-03-01", root, shifted=False, size=300)
    lifecycle.production_day("2024-03-02", root, shifted=True, size=300)
    clean = data.read_partition("production", "2024-03-01", root)
    shifted = data.read_partition("production", "2024-03-02", root)
    assert shifted["images"].dtype == np.uint8
    assert shifted["images"].mean() / 255 - clean["images"].mean() / 255 > 0.03
    manifest = json.loads(
        (data.partition_dir("production", "2024-03-02", root) / "manifest.json").read_text()
    )
    assert manifest["shifted"] is True and "rotated" in manifest["scanner"]


def test_predictions_carry_each_inputs_fingerprint_and_the_model(trained):
    root, registered = trained
    data_root = root / "data"
    lifecycle.production_day("2024-02-01", data_root, size=100)
    out = Path(lifecycle.predict_day("2024-02-01", registered["path"], data_root))
    stored = json.loads(out.read_text())
    images = data.read_partition("production", "2024-02-01", data_root)["images"]
    assert [p["input"] for p in stored["predictions"]] == [lifecycle.fingerprint(i) for i in images]
    assert all(0 <= p["class"] <= 9 for p in stored["predictions"])
    assert stored["model"]["path"] == registered["path"] and stored["ds"] == "2024-02-01"
    assert out == data_root / "predictions" / "2024-02-01" / "predictions.json"
    assert 0.5 < lifecycle.day_accuracy("2024-02-01", data_root) <= 1.0


def test_statistics_and_their_distance():
    images = np.full((4, 28, 28), 51, dtype=np.uint8)  # 51 / 255 = 0.2
    day = lifecycle.statistics(images, [1, 1, 2, 3])
    assert day == {"n": 4, "mean_intensity": 0.2,
                   "class_shares": [0, 0.5, 0.25, 0.25, 0, 0, 0, 0, 0, 0]}  # fmt: skip
    ref = {"mean_intensity": 0.15, "class_shares": [0.1] * 10}
    distance = lifecycle.compare(day, ref)
    assert distance["intensity_shift"] == pytest.approx(0.05)
    # total variation: half the sum of |differences| = (0.1*7 + 0.4 + 0.15 + 0.15) / 2
    assert distance["class_shift"] == pytest.approx(0.7)
    assert lifecycle.compare(ref, ref) == {"intensity_shift": 0.0, "class_shift": 0.0}


def test_the_monitor_reads_no_labels_and_separates_the_scanner_from_normal_days(trained):
    root, registered = trained
    data_root = root / "data"
    reports = {}
    for ds, shifted in (("2024-02-01", False), ("2024-02-20", True)):
        lifecycle.production_day(ds, data_root, shifted=shifted)
        predictions = lifecycle.predict_day(ds, registered["path"], data_root)
        reports[ds] = lifecycle.monitor_day(ds, predictions, TRAIN_DS, data_root)
    normal = lifecycle.normal_variation(registered["path"], TRAIN_DS, data_root, batches=5)
    worst_normal = max(n["intensity_shift"] for n in normal)
    assert reports["2024-02-01"]["intensity_shift"] < 0.01 and worst_normal < 0.01
    assert reports["2024-02-20"]["intensity_shift"] > 4 * worst_normal
    assert set(reports["2024-02-20"]) >= {"day", "reference", "intensity_shift", "class_shift"}
    written = Path(lifecycle.write_report("2024-02-20", reports["2024-02-20"], data_root))
    assert json.loads(written.read_text())["ds"] == "2024-02-20"


def test_retraining_learns_the_scanner_and_only_a_better_model_is_registered(trained):
    root, registered = trained
    data_root, registry = root / "data", root / "registry" / "lab1_4"
    for ds in ("2024-02-10", "2024-02-11"):
        lifecycle.production_day(ds, data_root, shifted=True, size=400)
    run = lifecycle.retrain(
        "2024-02-11", TRAIN_DS, "configs/smoke.yaml", data_root, paths.runs_root()
    )
    trained_on = json.loads((Path(run) / "trained_on.json").read_text())
    assert trained_on["production_days"][-2:] == ["2024-02-10", "2024-02-11"]
    # only the first half of each day is trained on: the exam half stays unseen
    days = lifecycle.production_days(data_root, "2024-02-11")
    train_half, exam = lifecycle.labelled_halves(data_root, days)
    assert trained_on["production_images"] == len(train_half)
    seen = {lifecycle.fingerprint(i) for i in train_half.images.numpy()}
    assert not seen & {lifecycle.fingerprint(i) for i in exam.images.numpy()}

    outcome = lifecycle.challenge("2024-02-11", run, data_root, registry)
    assert outcome["challenger"] > outcome["champion"] and outcome["registered"]
    assert outcome["test_set"] == pipeline.test_set_id(exam)
    best = json.loads((registry / "mnist" / "best.json").read_text())
    assert best["version"] == outcome["best"]["version"] == "2024-02-11-retrained-" + run[-10:]
    assert lifecycle.training_partition(best) == TRAIN_DS  # it names what it was trained on

    # The same model again is no better than itself: a tie registers nothing.
    again = lifecycle.challenge("2024-02-11", best["path"], data_root, registry)
    assert not again["registered"] and again["champion"] == again["challenger"]
    assert json.loads((registry / "mnist" / "best.json").read_text()) == best


def test_a_challenge_without_a_registered_model_or_labelled_days_says_why(tmp_path):
    root = paths.scratch_project(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="no registered model"):
        lifecycle.challenge("2024-02-01", tmp_path, root / "data", root / "registry")
    (root / "registry" / "mnist").mkdir(parents=True)
    (root / "registry" / "mnist" / "best.json").write_text('{"version": "v", "path": "x"}')
    with pytest.raises(ValueError, match="no labelled production days"):
        lifecycle.challenge("2024-02-01", tmp_path, root / "data", root / "registry")


def test_outputs_fingerprint_ignores_timings_and_sees_a_changed_partition(trained):
    root, _ = trained
    before = pipeline.outputs_fingerprint(TRAIN_DS, root / "data", root / "runs")
    assert any(k.endswith("checkpoint.pt") and v.startswith("weights ") for k, v in before.items())
    assert not any(k.endswith(("metrics.json", "environment.json")) for k in before)
    run = pipeline.train(TRAIN_DS, "configs/smoke.yaml", root / "data", root / "runs")
    pipeline.evaluate_run(run, TRAIN_DS, root / "data")  # what the DAG's next task does
    assert pipeline.outputs_fingerprint(TRAIN_DS, root / "data", root / "runs") == before
    manifest = root / "data" / "raw" / TRAIN_DS / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")
    changed = pipeline.outputs_fingerprint(TRAIN_DS, root / "data", root / "runs")
    assert [k for k in before if before[k] != changed[k]] == [f"raw/{TRAIN_DS}/manifest.json"]


# --------------------------------------------------------------------------- the learner's trainer

#: Lab 1.4's trainer as its solution promotes it: the learner's Lab 1.3 train_from_config in
#: a module, taking the day's splits.
MY_TRAINER = Path(__file__).resolve().parent.parent / "dags" / "my_trainer.py"
#: A tiny MLP, one epoch: the learner's trainer trains it in a fraction of a second.
SMALL_MLP = ["model.hidden_sizes=[32]", "training.epochs=1"]


def test_the_pipeline_trains_with_the_learners_trainer_and_saves_a_model_the_registry_loads(
    trained,
):
    """pipeline.train with a learner's train_from_config: the run folder names the trainer,
    holds a checkpoint that load_model rebuilds from the config alone (the learner's
    nn.Sequential moved into the package's MLP), scores what the trainer measured on the
    partition's test images, and a rerun changes nothing computed."""
    from shared.train import load_model, weights_digest

    root, _ = trained
    trainer = pipeline.load_trainer(MY_TRAINER)
    config = "configs/experiments/mlp.yaml"
    run = pipeline.train(TRAIN_DS, config, root / "data", root / "runs", SMALL_MLP, trainer)
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    assert metrics["trainer"].endswith("dags/my_trainer.py:train_from_config")
    assert metrics["history"][0]["epoch"] == 1 and metrics["epochs_completed"] == 1
    model, loaded = load_model(run)
    assert type(model).__name__ == "MLP" and loaded.model.hidden_sizes == [32]
    assert weights_digest(model) == metrics["weights_sha256"]
    evaluation = pipeline.evaluate_run(run, TRAIN_DS, root / "data")
    assert evaluation["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    before = pipeline.outputs_fingerprint(TRAIN_DS, root / "data", root / "runs")
    pipeline.train(TRAIN_DS, config, root / "data", root / "runs", SMALL_MLP, trainer)
    pipeline.evaluate_run(run, TRAIN_DS, root / "data")  # what the DAG's next task does
    assert pipeline.outputs_fingerprint(TRAIN_DS, root / "data", root / "runs") == before

    lifecycle.production_day("2024-02-12", root / "data", shifted=True, size=200)
    again = lifecycle.retrain("2024-02-12", TRAIN_DS, config, root / "data", root / "runs",
                              SMALL_MLP, trainer)  # fmt: skip
    assert json.loads((Path(again) / "metrics.json").read_text())["trainer"] == metrics["trainer"]


TRAINER_HEAD = "from torch import nn\n\n"
BROKEN_TRAINERS = [  # (what the module defines, the error, what it says)
    ("def train_from_config(config):\n    pass\n", "TrainerError", "give it a splits parameter"),
    ("def train_from_config(config, splits=None):\n    return None\n", "TrainerError",
     "returned NoneType: return a dict"),
    ("def train_from_config(config, splits=None):\n    return {'model': 1, 'history': []}\n",
     "TrainerError", "without ['test_accuracy']"),
    ("def train_from_config(config, splits=None):\n"
     "    return {'model': nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), 'history': [],\n"
     "            'test_accuracy': 0.1}\n", "CheckpointError", "build the model from config.model"),
    ("def train_from_config(config, splits=None):\n"
     "    return {'model': nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(),\n"
     "                                   nn.Dropout(0.0), nn.Linear(32, 10)),\n"
     "            'history': [], 'test_accuracy': 0.1}\n", "CheckpointError",
     "computes something else"),
    ("def train(config):\n    pass\n", "TrainerError", "defines no function train_from_config"),
    ("def train_from_config(config, splits=None):\n    return 0.97\n", "TrainerError",
     "returned float: return a dict"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "error", "says"), BROKEN_TRAINERS)
def test_a_trainer_that_breaks_the_contract_is_refused_naming_what_to_change(
    trained, tmp_path, source, error, says
):
    root, _ = trained
    module = tmp_path / "my_trainer.py"
    module.write_text(TRAINER_HEAD + source)
    run_dir = root / "runs" / "pipeline" / TRAIN_DS
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(Exception, match=re.escape(says)) as raised:
        trainer = pipeline.load_trainer(module)
        pipeline.train(TRAIN_DS, "configs/experiments/mlp.yaml", root / "data", root / "runs",
                       [*SMALL_MLP, "output.name=broken"], trainer)  # fmt: skip
    assert type(raised.value).__name__ == error
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no half-written run folder


def test_load_trainer_runs_the_file_as_it_is_now(tmp_path):
    module = tmp_path / "my_trainer.py"
    with pytest.raises(pipeline.TrainerError, match="no such file"):
        pipeline.load_trainer(module)
    module.write_text("def train_from_config(config, splits=None):\n    return 1\n")
    assert pipeline.load_trainer(module)(None) == 1
    module.write_text("def train_from_config(config, splits=None):\n    return 2\n")
    assert pipeline.load_trainer(module)(None) == 2  # an edit is seen; no stale import
