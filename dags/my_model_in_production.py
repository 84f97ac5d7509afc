# Promoted from runs/lab1_4/dags/my_model_in_production.py by shared.airflow_local.promote: edit what writes that draft
# (the notebook's DAG cell), then promote again; an edit here is replaced.
"""
### Lab 1.4: my model in production

```
deliver -> predict -> monitor -> drift_found -> flag_drift
```

Each day a batch of new digits arrives (`data/production/<ds>/`); the registered best model
of `my_training_pipeline` predicts them, and the predictions are written with each input's
fingerprint (`data/predictions/<ds>/`). The monitor compares the day with the data the model
was trained on and writes its report (`data/monitoring/<ds>/`). On drift, `flag_drift`
updates the asset `mnist_drift`, and `my_retraining`, scheduled on that asset, runs;
without drift, `drift_found` skips it and the asset is not touched.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task

DRIFT = Asset("mnist_drift")
REGISTRY = "registry/lab1_4"  # where my_training_pipeline registers, from the project root

#: The largest intensity shift of twenty normal batches was 0.0033; the new scanner moves it
#: ten times as far. Three times the normal maximum leaves room for an unusual normal day.
INTENSITY_THRESHOLD = 0.01
#: The class shift of normal batches reached about 0.06, so only a large change counts: the
#: predicted classes move with the model's own mistakes, not only with the data.
CLASS_THRESHOLD = 0.2


def drifted(report: dict) -> bool:
    """Whether the day's data has moved away from the training data (shared.lifecycle.compare)."""
    return (
        report["intensity_shift"] > INTENSITY_THRESHOLD or report["class_shift"] > CLASS_THRESHOLD
    )


@dag(
    dag_id="my_model_in_production",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["phase1", "lab1.4"],
    default_args={"owner": "mlops-course", "retries": 2, "retry_delay": timedelta(seconds=10)},
    doc_md=__doc__,
)
def my_model_in_production():
    @task
    def deliver(ds: str | None = None) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from shared import lifecycle, paths

        if ds is None:
            raise AirflowFailException("my_model_in_production needs a logical date: the day")
        return lifecycle.production_day(ds, paths.data_root())

    @task
    def predict(batch: str, ds: str | None = None) -> dict:
        import json

        from shared import lifecycle, paths

        best = json.loads((paths.resolve(REGISTRY) / "mnist" / "best.json").read_text())
        path = lifecycle.predict_day(ds, best["path"], paths.data_root())
        return {"predictions": path, "model": best["version"],
                "train_partition": lifecycle.training_partition(best)}  # fmt: skip

    @task
    def monitor(served: dict, ds: str | None = None) -> dict:
        from shared import lifecycle, paths

        report = lifecycle.monitor_day(
            ds, served["predictions"], served["train_partition"], paths.data_root()
        )
        report.update(model=served["model"], drift=drifted(report),
                      thresholds={"intensity": INTENSITY_THRESHOLD, "class": CLASS_THRESHOLD})  # fmt: skip
        lifecycle.write_report(ds, report, paths.data_root())
        return {k: report[k] for k in ("ds", "model", "drift", "intensity_shift", "class_shift")}

    @task.short_circuit
    def drift_found(report: dict) -> dict | bool:
        return report if report["drift"] else False  # False: skip what follows

    @task(outlets=[DRIFT])
    def flag_drift(report: dict, outlet_events=None) -> None:
        outlet_events[DRIFT].extra = report  # which day drifted, for whoever reacts

    flag_drift(drift_found(monitor(predict(deliver()))))


my_model_in_production()
