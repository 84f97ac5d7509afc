# Promoted from runs/lab1_4/dags/my_retraining.py by shared.airflow_local.promote: edit what writes that draft
# (the notebook's DAG cell), then promote again; an edit here is replaced.
"""
### Lab 1.4: my retraining

```
retrain -> challenge
```

Scheduled on the asset `mnist_drift`: `my_model_in_production` updates it when its
monitor finds drift, and the scheduler then starts this DAG. `retrain` trains with my
trainer (`my_trainer.py`, beside this file) on the data so far (the training partition plus
the labelled first half of every production day up to the drifting one); `challenge` compares the new model with the registered best on the same
exam (the second half of those days, never trained on) and registers it only if it is
strictly better.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

DRIFT = Asset("mnist_drift")  # the same asset my_model_in_production updates
REGISTRY = "registry/lab1_4"


@dag(
    dag_id="my_retraining",
    schedule=[DRIFT],  # data-aware: runs when the asset is updated, not on a clock
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["phase1", "lab1.4"],
    default_args={"owner": "mlops-course", "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={"config_path": Param("configs/default.yaml", type="string")},
    doc_md=__doc__,
)
def my_retraining():
    @task(inlets=[DRIFT])
    def retrain(params: dict | None = None, inlet_events=None) -> dict:
        import json
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from shared import lifecycle, paths, pipeline

        events = inlet_events[DRIFT]
        if not events:
            raise AirflowFailException("no drift event of mnist_drift yet: nothing to retrain for")
        day = events[-1].extra["ds"]
        best = json.loads((paths.resolve(REGISTRY) / "mnist" / "best.json").read_text())
        trainer = pipeline.load_trainer(Path(__file__).with_name("my_trainer.py"))
        run_dir = lifecycle.retrain(day, lifecycle.training_partition(best),
                                    params["config_path"], paths.data_root(), paths.runs_root(),
                                    trainer=trainer)  # fmt: skip
        return {"ds": day, "run_dir": run_dir}

    @task
    def challenge(trained: dict) -> dict:
        from shared import lifecycle, paths

        outcome = lifecycle.challenge(
            trained["ds"], trained["run_dir"], paths.data_root(), paths.resolve(REGISTRY)
        )
        print(f"on {outcome['test_set']['n']} exam images: model in service "
              f"{outcome['champion']:.2%}, retrained {outcome['challenger']:.2%}; "
              f"{'registered as the new best' if outcome['registered'] else 'not registered'}")  # fmt: skip
        return outcome

    challenge(retrain())


my_retraining()
