"""The DAGs, tested with Airflow's own tools: DagBag, structure, conventions, dag.test()."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import DS  # the run the session fixtures share
from conftest import PIPELINE_SMOKE as SMOKE

from shared import airflow_local

REPO = Path(__file__).resolve().parent.parent
DAG_FILES = airflow_local.dag_files(REPO / "dags")  # the files the dag-processor parses
LOGICAL_DATE = datetime(2024, 1, 1, tzinfo=UTC)

EXPECTED_STRUCTURE = {
    "lab1_1_first_dag": {
        "make_numbers": {"summarize"},
        "announce": {"summarize"},
        "summarize": set(),
    },
    "mnist_training_pipeline": {
        "ingest": {"validate"},
        "validate": {"train"},
        "train": {"evaluate", "register"},
        "evaluate": {"register"},
        "register": set(),
    },
    # Lab 1.4's, promoted from its solution
    "my_training_pipeline": {
        "ingest": {"validate"},
        "validate": {"train"},
        "train": {"evaluate", "register"},
        "evaluate": {"register"},
        "register": set(),
    },
    "my_model_in_production": {
        "deliver": {"predict"},
        "predict": {"monitor"},
        "monitor": {"drift_found"},
        "drift_found": {"flag_drift"},
        "flag_drift": set(),
    },
    "my_retraining": {"retrain": {"challenge"}, "challenge": set()},
    "notebook_experiments": {
        "list_configs": {"run_notebook"},
        "run_notebook": {"compare"},
        "compare": set(),
    },
}


def run(dagbag, dag_id, conf=None, **kw):
    """dag.test() for one logical date; returns {task_id: (state, try_number)} and the run."""
    dr = dagbag.get_dag(dag_id).test(logical_date=LOGICAL_DATE, run_conf=conf, **kw)
    return states_of(dr), dr


def states_of(dr) -> dict[str, tuple[str, int]]:
    states = {}
    for ti in dr.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = (str(ti.state), ti.try_number)
    return states


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- integrity


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(EXPECTED_STRUCTURE)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_STRUCTURE))
def test_structure(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED_STRUCTURE[dag_id]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_conventions(dagbag, path):
    dag = dagbag.get_dag(path.stem)
    assert dag is not None, f"{path.name}: file name must equal the dag_id"
    assert dag.tags and "phase1" in dag.tags
    assert dag.catchup is False
    assert dag.doc_md and len(dag.doc_md) > 200, "doc_md explains the DAG to a learner"
    for t in dag.tasks:
        assert t.owner == "mlops-course", t.task_id
        assert t.retries >= 1 and t.retry_delay >= timedelta(seconds=10), t.task_id
    source = path.read_text()
    assert "airflow.decorators" not in source and "airflow.operators." not in source


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_top_level_imports_nothing_heavy(path):
    probe = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dagfile", {str(path)!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
heavy = ["torch", "torchvision", "papermill", "matplotlib", "shared.train", "shared.data"]
print(json.dumps([m for m in heavy if m in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
@pytest.mark.airflow
def test_lab1_1_runs_and_is_idempotent(dagbag, sandbox):
    states, _ = run(dagbag, "lab1_1_first_dag")
    assert states == {t: ("success", 1) for t in ("make_numbers", "announce", "summarize")}
    raw = sandbox / "data" / "lab1_1" / "raw" / DS / "numbers.json"
    summary = json.loads(
        (sandbox / "data" / "lab1_1" / "processed" / DS / "summary.json").read_text()
    )
    numbers = json.loads(raw.read_text())["numbers"]
    assert summary == {"ds": DS, "count": 10, "total": sum(numbers), "max": max(numbers)}
    before = digests(sandbox / "data" / "lab1_1")
    states, _ = run(dagbag, "lab1_1_first_dag")
    assert all(s == "success" for s, _ in states.values())
    assert digests(sandbox / "data" / "lab1_1") == before, "same day, same files, no extras"


@pytest.mark.slow
@pytest.mark.usefixtures("dagbag", "sandbox")  # the database, a project to write into
@pytest.mark.airflow
def test_run_dag_schedules_a_draft_as_written_outside_the_dags_folder(tmp_path):
    """Lab 1.1 runs its draft before promoting it. Airflow 3's dag.test() schedules the
    serialised DAG from the dags folder; run_dag must serialise the draft itself, so a DAG
    that is not in dags/ yet runs, with the draft's own dependencies."""
    from airflow.models.serialized_dag import SerializedDagModel

    from shared import airflow_local

    source = (REPO / "dags" / "lab1_1_first_dag.py").read_text()
    edits = {
        'dag_id="lab1_1_first_dag"': 'dag_id="lab1_1_draft_only"',
        "[numbers, announce] >> summarize(numbers)": "summarize(numbers)",  # no fan-in
    }
    for old, new in edits.items():
        assert old in source
        source = source.replace(old, new)
    draft = tmp_path / "drafts" / "lab1_1_draft_only.py"
    draft.parent.mkdir()
    draft.write_text(source)
    dag = airflow_local.load_dag_file(draft).get_dag("lab1_1_draft_only")
    states = airflow_local.run_dag(dag, DS)
    assert states == {t: "success" for t in ("announce", "make_numbers", "summarize")}
    scheduled = SerializedDagModel.get_dag("lab1_1_draft_only")
    assert set(scheduled.get_task("summarize").upstream_task_ids) == {"make_numbers"}


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.kernel
def test_training_pipeline_end_to_end_and_idempotent(
    dagbag, embedded_pipeline, smoke_run, monkeypatch
):
    sandbox, dr = embedded_pipeline
    monkeypatch.setenv("WORKBOOK_ROOT", str(sandbox))  # the rerun below writes there too
    states = states_of(dr)
    assert states == {t: ("success", 1) for t in EXPECTED_STRUCTURE["mnist_training_pipeline"]}
    partition = sandbox / "data" / "raw" / DS
    assert sorted(p.name for p in partition.iterdir()) == [
        "manifest.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy",
    ]  # fmt: skip
    assert (sandbox / "data" / "processed" / DS / "validation.json").is_file()
    (run_dir,) = (sandbox / "runs" / "pipeline" / DS).iterdir()
    assert {"checkpoint.pt", "config.yaml", "metrics.json", "evaluation.json"} <= {
        p.name for p in run_dir.iterdir()
    }
    registry = sandbox / "registry" / "mnist"
    best = json.loads((registry / "best.json").read_text())
    (version,) = [p.name for p in registry.iterdir() if p.is_dir()]
    assert best["version"] == version == f"{DS}-{run_dir.name.split('-')[-1]}"
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert best["accuracy"] == evaluation["test_accuracy"] > 0.5
    # XCom carries paths and small metrics, never data
    ti = dr.get_task_instance("evaluate")
    assert ti.xcom_pull(task_ids="train") == str(run_dir)

    # Parity: the promoted code is the notebook's code. The same config through Lab 1.2's
    # notebook under papermill and through this DAG gives the same model, bit for bit.
    _, notebook_root, _, error = smoke_run("02_lab1_2b_training_on_mnist.ipynb")
    assert error is None, error
    dag_metrics = json.loads((run_dir / "metrics.json").read_text())
    nb_metrics = json.loads((notebook_root / "runs" / run_dir.name / "metrics.json").read_text())
    assert nb_metrics["config_hash"] == dag_metrics["config_hash"]
    assert nb_metrics["test"]["accuracy"] == dag_metrics["test"]["accuracy"]
    assert nb_metrics["weights_sha256"] == dag_metrics["weights_sha256"]

    # Rerun the same logical date: same data, same model, nothing duplicated.
    before = {
        "partition": digests(partition),
        "runs": sorted(p.name for p in (sandbox / "runs").rglob("*")),
        "registry": sorted(p.name for p in registry.rglob("*")),
        "best": best,
    }
    states, _ = run(dagbag, "mnist_training_pipeline", SMOKE)
    assert all(s == "success" for s, _ in states.values())
    assert digests(partition) == before["partition"]
    assert sorted(p.name for p in (sandbox / "runs").rglob("*")) == before["runs"]
    assert sorted(p.name for p in registry.rglob("*")) == before["registry"]
    assert json.loads((registry / "best.json").read_text()) == before["best"]


def _run_folder(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    for name in ("checkpoint.pt", "config.yaml", "metrics.json", "evaluation.json"):
        (run_dir / name).write_text(name)
    return run_dir


def _register(run_dir: Path, reg: Path, config_hash: str, accuracy: float) -> dict:
    from shared import pipeline

    metrics = {"ds": DS, "config_hash": config_hash, "test_accuracy": accuracy}
    return pipeline.register(run_dir, metrics, reg)


def _best(reg: Path) -> tuple[str, float]:
    best = json.loads((reg / "mnist" / "best.json").read_text())
    return best["version"].removeprefix(f"{DS}-"), best["accuracy"]


def test_register_moves_best_only_when_beaten(tmp_path):
    run_dir, reg = _run_folder(tmp_path), tmp_path / "registry"
    first = _register(run_dir, reg, "a", 0.9)
    worse = _register(run_dir, reg, "b", 0.8)
    tie = _register(run_dir, reg, "d", 0.9)
    better = _register(run_dir, reg, "c", 0.95)
    assert first["is_best"] and not worse["is_best"] and not tie["is_best"] and better["is_best"]
    assert _best(reg) == ("c", 0.95)
    assert sorted(p.name for p in (reg / "mnist").iterdir() if not p.name.startswith(".")) == [
        f"{DS}-a", f"{DS}-b", f"{DS}-c", f"{DS}-d", "best.json",
    ]  # fmt: skip


def test_a_rerun_of_the_best_version_that_scores_lower_does_not_keep_its_old_score(tmp_path):
    """The rerun replaced the best version's files with a worse model: the pointer goes to
    whichever version now scores highest, never to the new model with the old score."""
    run_dir, reg = _run_folder(tmp_path), tmp_path / "registry"
    _register(run_dir, reg, "a", 0.90)
    _register(run_dir, reg, "b", 0.95)
    again = _register(run_dir, reg, "b", 0.85)  # the same version (ds, config), a worse run
    assert not again["is_best"] and _best(reg) == ("a", 0.90)
    _register(run_dir, reg, "a", 0.90)  # a rerun that ties: nothing moves
    assert _best(reg) == ("a", 0.90)
    lower = _register(run_dir, reg, "a", 0.80)  # now every version scores lower than b's 0.85
    assert not lower["is_best"] and _best(reg) == ("b", 0.85)


def test_register_waits_for_the_registry_lock(tmp_path):
    """While another writer holds the registry's lock, register neither copies nor moves
    best.json; it finishes once the lock is released."""
    import threading

    from shared.io import file_lock

    run_dir, reg = _run_folder(tmp_path), tmp_path / "registry"
    _register(run_dir, reg, "a", 0.9)
    with file_lock(reg / "mnist" / ".best.lock"):
        writer = threading.Thread(target=_register, args=(run_dir, reg, "b", 0.95))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive(), "register went ahead while the lock was held"
        assert _best(reg) == ("a", 0.9) and not (reg / "mnist" / f"{DS}-b").exists()
    writer.join(timeout=30)
    assert not writer.is_alive() and _best(reg) == ("b", 0.95)


@pytest.mark.slow
@pytest.mark.airflow
def test_the_pipeline_triggered_without_a_logical_date_fails_at_once_saying_why(
    dagbag, sandbox, capsys
):
    """Its data is partitioned by day: with no logical date, ingest fails (no retry) with a
    message saying how to trigger it, and nothing downstream runs or writes."""
    dr = dagbag.get_dag("mnist_training_pipeline").test(logical_date=None, run_conf=SMOKE)
    states = states_of(dr)
    assert states["ingest"] == ("failed", 1)
    assert {states[t][0] for t in ("validate", "train", "evaluate", "register")} == {
        "upstream_failed"
    }
    assert "trigger it with a logical date" in capsys.readouterr().out
    assert not (sandbox / "data" / "raw").exists() and not (sandbox / "registry").exists()


def test_a_run_without_a_logical_date_is_named_by_its_run_id():
    from shared import pipeline

    assert pipeline.run_folder_name("2024-01-01", "manual__x") == "2024-01-01"
    assert (
        pipeline.run_folder_name(None, "manual__2026-11-28T02:00:00.123+00:00")
        == "manual__2026-11-28T02-00-00.123-00-00"
    )
    with pytest.raises(ValueError, match="no folder name"):
        pipeline.run_folder_name(None, None)


def write_bad_partition(sandbox: Path, kind: str) -> None:
    from shared import data

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 20)
    if kind == "labels":
        labels[:5] = 11  # a label that cannot be a digit
    arrays = {
        "train_images": rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        "train_labels": labels,
        "test_images": rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        "test_labels": np.repeat(np.arange(10, dtype=np.uint8), 20),
    }
    folder = data.write_partition("raw", DS, sandbox / "data", arrays)
    if kind == "digest":
        f = folder / "train_labels.npy"
        f.write_bytes(f.read_bytes()[:-1] + b"\x03")


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.parametrize(
    "kind, message",
    [
        ("digest", "differs from the manifest"),
        ("labels", "labels must be integers 0-9; found 0..11"),
    ],
)
def test_bad_partition_stops_the_run_at_validate(dagbag, sandbox, capfd, kind, message):
    write_bad_partition(sandbox, kind)
    # ingest is marked successful without running, so the corrupted partition is what validate sees
    states, dr = run(dagbag, "mnist_training_pipeline", SMOKE, mark_success_pattern="^ingest$")
    assert states["validate"] == ("failed", 1), "bad data fails at once: no retries"
    for task in ("train", "evaluate", "register"):
        assert states[task][0] == "upstream_failed", task
    assert not (sandbox / "runs").exists() and not (sandbox / "registry").exists()
    captured = capfd.readouterr()
    task_log = captured.out + captured.err
    assert f"data validation failed for {DS}" in task_log and message in task_log
    assert str(dr.state) == "failed"


@pytest.mark.slow
@pytest.mark.airflow
def test_transient_failure_succeeds_on_retry(dagbag, sandbox, monkeypatch):
    from shared import pipeline

    real, calls = pipeline.ingest, []

    def flaky_ingest(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("object store unavailable (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "ingest", flaky_ingest)
    dag = dagbag.get_dag("mnist_training_pipeline")
    monkeypatch.setattr(dag.get_task("ingest"), "retry_delay", timedelta(0))
    states, _ = run(dagbag, "mnist_training_pipeline", SMOKE)
    assert states["ingest"] == ("success", 2), "failed once, succeeded on the retry"
    assert states["register"][0] == "success" and len(calls) == 2


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.kernel
def test_notebook_experiments_maps_the_lab_1_3_notebook_over_every_config(dagbag, sandbox):
    """Triggered by hand as Airflow 3 allows, without a logical date (the DAG is manual-only):
    the run id names the output folder."""
    from shared import pipeline

    configs = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
    dr = dagbag.get_dag("notebook_experiments").test(
        logical_date=None, run_conf={"overrides": ["data.subset=1200"]}
    )
    assert dr.logical_date is None
    states = states_of(dr)
    assert states["list_configs"] == ("success", 1) and states["compare"] == ("success", 1)
    mapped = {k: v for k, v in states.items() if k.startswith("run_notebook[")}
    assert len(mapped) == len(configs) and all(s == "success" for s, _ in mapped.values())
    folder = pipeline.run_folder_name(None, dr.run_id)
    assert folder.startswith("manual__") and "/" not in folder and ":" not in folder
    out = sandbox / "runs" / folder / "experiments"
    for cfg in configs:
        executed = out / f"{cfg.stem}.ipynb"
        assert executed.is_file(), f"executed notebook for {cfg.name}"
        assert '"injected-parameters"' in executed.read_text(), "papermill injected the config"
    table = (out / "comparison.csv").read_text().splitlines()
    assert table[0].startswith("name,model,learning_rate") and len(table) == len(configs) + 1
    assert {row.split(",")[0] for row in table[1:]} == {
        "exp-baseline", "exp-batch-large", "exp-lr-low", "exp-mlp",
    }  # fmt: skip
    assert (out / "comparison.md").read_text().count("\n| exp-") == len(configs)
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    compared = dr.get_task_instance("compare").xcom_pull(task_ids="compare")
    assert compared["csv"] == str(out / "comparison.csv")


def test_register_compares_only_runs_measured_on_the_same_test_images(tmp_path):
    """A smoke run's accuracy on 240 images never displaces a full run's on 10,000, however
    high; a run on more images supersedes a best measured on fewer; within one test set,
    only a strictly better score moves the pointer; a crash's dot-folder is no version."""
    from shared import pipeline

    run_dir, reg = _run_folder(tmp_path), tmp_path / "registry"
    smoke, full = {"n": 240, "digest": "s" * 16}, {"n": 10_000, "digest": "f" * 16}

    def register(config_hash, accuracy, test_set):
        metrics = {"ds": DS, "config_hash": config_hash, "test_accuracy": accuracy,
                   "test_set": test_set}  # fmt: skip
        return pipeline.register(run_dir, metrics, reg)

    assert register("smoke1", 0.90, smoke)["is_best"]
    assert register("full1", 0.85, full)["is_best"]  # more images: it supersedes
    lucky = register("smoke2", 0.99, smoke)
    assert not lucky["is_best"] and not lucky["comparable"]
    assert _best(reg) == ("full1", 0.85)
    assert register("full2", 0.87, full)["is_best"]
    assert not register("full3", 0.86, full)["is_best"]
    (reg / "mnist" / ".full9.tmp1").mkdir()  # left by a crash mid-copy: not a registration
    (reg / "mnist" / ".full9.tmp1" / "registration.json").write_text(
        json.dumps({"version": "x", "test_accuracy": 1.0, "ds": DS, "test_set": full})
    )
    again = register("full2", 0.80, full)  # the best's own rerun scored lower
    assert again["best"]["version"] == f"{DS}-full3" and _best(reg) == ("full3", 0.86)


def test_the_trainer_beside_the_dags_is_promoted_but_never_parsed_as_a_dag():
    assert (REPO / "dags" / "my_trainer.py").is_file()
    assert "my_trainer.py" not in {p.name for p in DAG_FILES}


def test_promote_publishes_a_module_the_ignore_file_names_and_refuses_one_it_does_not(tmp_path):
    dags, drafts = tmp_path / "dags", tmp_path / "drafts"
    dags.mkdir()
    drafts.mkdir()
    (dags / ".airflowignore").write_text((REPO / "dags" / ".airflowignore").read_text())
    module = drafts / "my_trainer.py"
    module.write_text("def train_from_config(config, splits=None):\n    return {}\n")
    published = airflow_local.promote(module, dags)
    assert published == dags / "my_trainer.py"
    header = published.read_text().splitlines()[:2]
    assert header[0].startswith("# Promoted from ") and "cell that writes it" in header[1]
    assert published.read_text().endswith(module.read_text())
    assert airflow_local.dag_files(dags) == []  # the dag-processor skips it

    other = drafts / "helpers.py"
    other.write_text("X = 1\n")
    with pytest.raises(ValueError, match="must be named in dags/.airflowignore"):
        airflow_local.promote(other, dags)
    module.write_text("def train_from_config(config splits):\n")
    with pytest.raises(ValueError, match="does not compile, not promoted"):
        airflow_local.promote(module, dags)
    assert published.read_text().endswith("return {}\n")  # the published one stays whole
