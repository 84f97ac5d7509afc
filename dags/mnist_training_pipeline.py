"""
### MNIST training pipeline

The Lab 1.2 / 1.3 code promoted into a daily pipeline:

```
ingest -> validate -> train -> evaluate -> register
```

| task | what it does | writes |
|---|---|---|
| ingest | provisions MNIST (verified by sha256) and writes the day's partition | `data/raw/<ds>/` |
| validate | checks digests, shapes, dtype, labels and class balance; **fails the run** on bad data | `data/processed/<ds>/validation.json` |
| train | trains the config named by the `config_path` param | `runs/pipeline/<ds>/<name>-<hash>/` |
| evaluate | test accuracy of the trained model on the day's test split | `.../evaluation.json` |
| register | copies the model into `registry/mnist/<ds>-<hash>/`; moves `best.json` only if it beats the best on the same test images (their count and digest are recorded; a run measured on more images supersedes one on fewer) | `registry/mnist/` |

Every task passes paths and small metrics through XCom and writes only under its day's
folders, so rerunning a date replaces that date's outputs and leaves no duplicates.

Params (validated when the run is triggered): `config_path` (default `configs/default.yaml`),
`overrides` (a list of `key=value`, e.g. `["training.epochs=1"]`), `subset` (class-balanced
sample size for smoke runs, or null for all 70,000 images).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="mnist_training_pipeline",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs share the registry's best.json; one at a time keeps it simple
    tags=["phase1", "pytorch", "pipeline"],
    default_args={
        "owner": "mlops-course",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "config_path": Param(
            "configs/default.yaml",
            type="string",
            pattern=r"^[\w./-]+\.ya?ml$",
            description="training config, relative to the project root",
        ),
        "overrides": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^[\w.]+=.*$"},
            description="dotted key=value overrides applied to the config",
        ),
        "subset": Param(
            None,
            type=["null", "integer"],
            minimum=10,
            description="class-balanced subset size for smoke runs; null = all data",
        ),
    },  # fmt: skip
    doc_md=__doc__,
)
def mnist_training_pipeline():
    @task
    def ingest(ds: str | None = None, params: dict | None = None) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from shared import paths, pipeline

        if ds is None:  # a manual run without a logical date: no day to partition by
            raise AirflowFailException(
                pipeline.NEEDS_LOGICAL_DATE.format(dag_id="mnist_training_pipeline")
            )
        return pipeline.ingest(ds, paths.data_root(), subset=params["subset"])

    @task
    def validate(partition: str, ds: str | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from shared import paths, pipeline
        from shared.data import DataValidationError

        try:
            return pipeline.validate_partition(ds, paths.data_root())
        except DataValidationError as exc:
            # Bad data is not transient: fail now, without retries, and say what is wrong.
            raise AirflowFailException(f"data validation failed for {ds}: {exc}") from exc

    @task
    def train(report: dict, ds: str | None = None, params: dict | None = None) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from shared import paths, pipeline
        from shared.config import ConfigError

        try:
            return pipeline.train(
                ds, params["config_path"], paths.data_root(), paths.runs_root(), params["overrides"]
            )
        except ConfigError as exc:
            # A wrong config stays wrong on a retry: fail at once, naming file and key.
            raise AirflowFailException(f"bad training config: {exc}") from exc

    @task
    def evaluate(run_dir: str, ds: str | None = None) -> dict:
        from shared import paths, pipeline

        return pipeline.evaluate_run(run_dir, ds, paths.data_root())

    @task
    def register(run_dir: str, metrics: dict) -> dict:
        from shared import paths, pipeline

        return pipeline.register(run_dir, metrics, paths.project_root() / "registry")

    run_dir = train(validate(ingest()))
    register(run_dir, evaluate(run_dir))


mnist_training_pipeline()
