"""
### Notebook experiments: papermill-executed notebooks as Airflow tasks

Lab 1.3's notebook is parameterised (its `parameters` cell has `config_path` and
`overrides`), so Airflow can run it once per experiment config, unchanged:

```
list_configs -> run_notebook (one mapped task per configs/experiments/*.yaml) -> compare
```

* **list_configs** finds the experiment configs (add a YAML file there and the next run
  has one more mapped task: dynamic task mapping with `.expand`).
* **run_notebook** executes the Lab 1.3 notebook with papermill: the learner's own,
  `labs/03_lab1_3_config_driven_training.ipynb`, once every exercise in the saved file is
  written; until then the run says what to finish first (where the course's model solutions
  are present, as in its instructors' copy, it runs the solution's instead); the task's log
  says which notebook ran, and why. It runs on
  the project's kernel `mlops-workbook`, with each cell's output in the task log and a
  per-cell timeout. The notebook trains the config with its own
  `train_from_config` and records the run; the executed notebook lands in
  `runs/<ds>/experiments/` (a run triggered without a logical date: `runs/<run id>/`),
  next to that run folder. The mapped tasks run in the pool
  `experiments`, whose slots say how many notebooks train at once: one on a laptop
  (`make airflow`: each training uses every core, and runs side by side would make their
  times incomparable), one per Celery worker on a cluster (`make airflow-cluster`), where
  each worker is its own machine. The DAG file is the same on both.
* **compare** gathers every run's metrics into `comparison.csv`, `comparison.md` and
  `comparison.png` in the same folder.

Param `overrides` is applied to every config; `["data.subset=1200", "training.epochs=1"]`
gives a smoke run in seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="notebook_experiments",
    schedule=None,  # run on demand: experiments are started by a person, not a clock
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["phase1", "lab1.3", "papermill"],
    default_args={
        "owner": "mlops-course",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
    },
    params={
        "overrides": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^[\w.]+=.*$"},
            description="dotted key=value overrides applied to every experiment config",
        ),
    },  # fmt: skip
    doc_md=__doc__,
)
def notebook_experiments():
    @task
    def list_configs() -> list[str]:
        from shared import paths

        found = sorted(p.relative_to(paths.project_root()).as_posix()
                       for p in (paths.project_root() / "configs" / "experiments").glob("*.yaml"))  # fmt: skip
        if not found:
            raise FileNotFoundError("configs/experiments/ has no *.yaml experiment configs")
        return found

    @task(execution_timeout=timedelta(minutes=20), pool="experiments")
    def run_notebook(
        config_path: str,
        ds: str | None = None,
        run_id: str | None = None,
        params: dict | None = None,
    ) -> str:
        from pathlib import Path

        from shared import experiments, paths, pipeline
        from shared.config import load_config

        notebook, why = experiments.notebook_for_experiments(paths.project_root())
        print(f"running {paths.show(notebook)}, {why}")
        # a manual run may have no logical date (Airflow 3): then its run id names the folder
        out_dir = paths.runs_root() / pipeline.run_folder_name(ds, run_id) / "experiments"
        overrides = [*params["overrides"], f"output.root={out_dir}"]
        run_dir = out_dir / load_config(config_path, overrides).run_id()
        experiments.run_notebook(
            notebook,
            out_dir / f"{Path(config_path).stem}.ipynb",
            {"config_path": config_path, "overrides": overrides, "sweep": False},
            timeout=600,
            log_output=True,  # each cell's output appears in the task log
        )
        if not (run_dir / "metrics.json").is_file():
            raise RuntimeError(f"{paths.show(notebook)} ran but wrote no metrics to {run_dir}")
        return str(run_dir)

    @task
    def compare(run_dirs: list[str], ds: str | None = None, run_id: str | None = None) -> dict:
        from shared import experiments, paths, pipeline

        out_dir = paths.runs_root() / pipeline.run_folder_name(ds, run_id) / "experiments"
        return experiments.compare(list(run_dirs), out_dir)

    compare(run_notebook.expand(config_path=list_configs()))


notebook_experiments()
