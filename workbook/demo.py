"""``make demo``: the course end to end on the embedded defaults, then a short summary.

Each step is a function returning one line about what it produced; the summary lists every
step with its time and the folders holding the results. A failed step stops the demo with
exit code 1 after printing what ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared import paths


@dataclass
class StepResult:
    name: str
    seconds: float
    outcome: str
    ok: bool


def step_data() -> str:
    from shared import provision

    root = paths.data_root()
    problems = provision.check(root)
    if problems:
        raise RuntimeError(
            "MNIST files invalid: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
        )
    return f"4 MNIST files verified by sha256 in {provision.raw_dir(root)}"


def step_train() -> str:
    from shared.config import load_config
    from shared.train import fit

    result = fit(load_config("configs/default.yaml"))
    m = result.metrics
    return (
        f"{m['model']} ({m['parameters']:,} parameters): test accuracy {m['test']['accuracy']:.2%} "
        f"after {m['epochs_completed']} epoch{'s' if m['epochs_completed'] != 1 else ''}, "
        f"{m['train_seconds']:.1f} s of training; "
        f"run folder {result.run_dir}"
    )


#: The demo runs notebooks and DAGs on the smoke config: the point is that every part of the
#: course runs end to end; the full-data training above shows the real accuracy.
SMOKE_NOTEBOOK_PARAMS = {
    "03_lab1_3_config_driven_training.ipynb": {"overrides": ["data.subset=1200"]},
}
DEMO_DS = "2024-01-01"


def smoke_params(notebook_name: str) -> dict:
    """The papermill parameters of a solution's smoke run: the demo's, the site's and the
    tests' (one execution of each notebook can serve all three)."""
    return {"config_path": "configs/smoke.yaml", **SMOKE_NOTEBOOK_PARAMS.get(notebook_name, {})}


def executed_dir():
    """Where the demo (and ``make site``) keep the solutions' smoke executions."""
    return paths.runs_root() / "demo" / "notebooks"


def step_notebooks() -> str:
    from shared import experiments
    from workbook import labs

    out_dir = executed_dir()
    done = []
    for nb in labs.solution_files(paths.project_root() / "solutions"):
        start = time.perf_counter()
        experiments.run_recorded(nb, out_dir / nb.name, smoke_params(nb.name), timeout=600)
        done.append(f"{nb.stem} {time.perf_counter() - start:.0f} s")
        print(f"  executed {nb.name}")
    return (
        f"{len(done)} solution notebooks executed with papermill ({', '.join(done)}) into {out_dir}"
    )


def _airflow_dags_test(dag_id: str, conf: dict) -> None:
    import json
    import os
    import subprocess
    import sys

    from shared import airflow_local

    airflow_local.configure()
    airflow = [sys.executable, "-m", "airflow"]
    env = dict(os.environ)
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    log = paths.runs_root() / "demo" / f"{dag_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        done = subprocess.run(
            [*airflow, "dags", "test", dag_id, DEMO_DS, "-c", json.dumps(conf)],
            env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"airflow dags test {dag_id} failed; its log is {log}")


def step_pipeline_dag() -> str:
    import json

    _airflow_dags_test(
        "mnist_training_pipeline", {"config_path": "configs/smoke.yaml", "subset": 1200}
    )
    best = json.loads((paths.project_root() / "registry" / "mnist" / "best.json").read_text())
    return (
        f"ingest -> validate -> train -> evaluate -> register succeeded for {DEMO_DS}; "
        f"registry best: {best['version']} ({best['accuracy']:.2%}) in {paths.project_root() / 'registry'}"
    )


def step_experiments_dag() -> str:
    _airflow_dags_test("notebook_experiments", {"overrides": ["data.subset=1200"]})
    out = paths.runs_root() / DEMO_DS / "experiments"
    return f"Lab 1.3 notebook run once per experiment config; comparison in {out / 'comparison.md'}"


def lifecycle_summary(project) -> str:
    """Lab 1.4's loop as its executed notebook left it in ``project``: the model trained,
    each production day's accuracy, the days the monitor found drift, the retrained models
    registered. Read from the files the DAGs wrote (the monitor's reports, the predictions
    and the day's labels, the registry), not from the notebook."""
    import json
    from pathlib import Path

    from shared import lifecycle

    data_root, registry = Path(project) / "data", Path(project) / "registry" / "lab1_4" / "mnist"
    rows = []
    for ds in lifecycle.scenario_days():
        report = data_root / "monitoring" / ds / "report.json"
        if not report.is_file():
            raise RuntimeError(f"Lab 1.4 left no monitoring report for {ds} ({report})")
        r = json.loads(report.read_text())
        rows.append((ds, r["model"], r["drift"], lifecycle.day_accuracy(ds, data_root)))
    retrained = sorted(p.parent.name for p in registry.glob("*-retrained-*/registration.json"))
    trained = rows[0][1]
    drift = [ds for ds, _, d, _ in rows if d]
    accuracies = " → ".join(f"{acc:.0%}" for *_, acc in rows)
    return (
        f"trained and registered {trained}; deployed over {len(rows)} days "
        f"({rows[0][0]}..{rows[-1][0]}), accuracy per day {accuracies}; drift found on "
        f"{', '.join(drift) or 'no day'}; retrained and registered {len(retrained)} "
        f"time{'s' if len(retrained) != 1 else ''} ({', '.join(retrained) or 'none'})"
    )


def step_lifecycle() -> str:
    return lifecycle_summary(paths.project_root())


#: The demo's steps in course order.
STEPS: list[tuple[str, Callable[[], str]]] = [
    ("data: provision and verify MNIST", step_data),
    ("Lab 1.2: train configs/default.yaml", step_train),
    ("notebooks: every solution with papermill (smoke config)", step_notebooks),
    ("Lab 1.4: the loop closed (trained, deployed, drift found, retrained)", step_lifecycle),
    ("Airflow: mnist_training_pipeline with airflow dags test (smoke config)", step_pipeline_dag),
    ("Airflow: notebook_experiments with airflow dags test (smoke config)", step_experiments_dag),
]


def run(steps: list[tuple[str, Callable[[], str]]] = STEPS, log=print) -> list[StepResult]:
    """Run each step in order, stopping at the first failure; return what ran."""
    results: list[StepResult] = []
    for name, func in steps:
        log(f"\n=== {name}")
        start = time.perf_counter()
        try:
            outcome, ok = func(), True
        except Exception as exc:  # the summary names the failure; the traceback is above it
            import traceback

            traceback.print_exc()
            outcome, ok = f"FAILED: {type(exc).__name__}: {exc}", False
        results.append(StepResult(name, time.perf_counter() - start, outcome, ok))
        if not ok:
            break
    return results


def summary(results: list[StepResult]) -> str:
    lines = ["", "=== demo summary"]
    for r in results:
        lines.append(f"  [{'ok' if r.ok else 'FAILED'}] {r.name} ({r.seconds:.1f} s)")
        lines.append(f"         {r.outcome}")
    total = sum(r.seconds for r in results)
    lines.append(f"  total {total:.1f} s; results under {paths.runs_root()}")
    return "\n".join(lines)


def main() -> int:
    results = run()
    print(summary(results))
    return 0 if results and all(r.ok for r in results) and len(results) == len(STEPS) else 1
