# Promoted from runs/lab1_4/dags/my_training_pipeline.py by shared.airflow_local.promote: edit what writes that draft
# (the notebook's DAG cell), then promote again; an edit here is replaced.
"""
### Lab 1.4: my training pipeline

```
ingest -> validate -> train -> evaluate -> register
```

The day's data is partitioned by the logical date (`data/raw/<ds>/`), the model trained on
it by my trainer (`my_trainer.py`, beside this file) with the config named in the
`config_path` param, evaluated on the partition's test
images, and registered in `registry/lab1_4/mnist/`, where `best.json` moves only to a model
that beats the best on the same test images. A rerun of a date replaces that date's outputs.

Failures: a bad config or bad data fails the run at once (no retry can fix them); anything
else (a busy disk, a network share that hiccups) is retried. A run without a logical date
is refused: it has no partition to write.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="my_training_pipeline",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # the runs share the registry's best.json
    tags=["phase1", "lab1.4"],
    default_args={
        "owner": "mlops-course",
        "retries": 2,  # transient failures retry on their own
        "retry_delay": timedelta(seconds=10),
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "config_path": Param(
            "configs/default.yaml",
            type="string",
            description="training config, relative to the project root",
        ),
        "subset": Param(
            3000,
            type=["null", "integer"],
            minimum=10,
            description="class-balanced sample of MNIST; null = all 70,000",
        ),
    },  # fmt: skip
    doc_md=__doc__,
)
def my_training_pipeline():
    @task
    def ingest(ds: str | None = None, params: dict | None = None) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from shared import paths, pipeline

        if ds is None:
            raise AirflowFailException(
                "my_training_pipeline partitions its data by the logical date, and this run "
                "has none: trigger it with a logical date"
            )
        return pipeline.ingest(ds, paths.data_root(), subset=params["subset"])

    @task
    def validate(partition: str, ds: str | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from shared import paths, pipeline
        from shared.data import DataValidationError

        try:
            return pipeline.validate_partition(ds, paths.data_root())
        except DataValidationError as exc:  # bad data stays bad on a retry
            raise AirflowFailException(f"data validation failed for {ds}: {exc}") from exc

    @task
    def train(report: dict, ds: str | None = None, params: dict | None = None) -> str:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from shared import paths, pipeline

        try:  # my trainer, from the module beside this file, as it is now
            trainer = pipeline.load_trainer(Path(__file__).with_name("my_trainer.py"))
            return pipeline.train(ds, params["config_path"], paths.data_root(),
                                  paths.runs_root(), trainer=trainer)  # fmt: skip
        except ValueError as exc:  # a bad config (ConfigError), a trainer that breaks the
            # contract (TrainerError) or refuses the config: each stays wrong on a retry
            raise AirflowFailException(f"cannot train: {exc}") from exc

    @task
    def evaluate(run_dir: str, ds: str | None = None) -> dict:
        from shared import paths, pipeline

        return pipeline.evaluate_run(run_dir, ds, paths.data_root())

    @task
    def register(run_dir: str, metrics: dict) -> dict:
        from shared import paths, pipeline

        return pipeline.register(run_dir, metrics, paths.project_root() / "registry" / "lab1_4")

    run_dir = train(validate(ingest()))
    register(run_dir, evaluate(run_dir))


my_training_pipeline()
