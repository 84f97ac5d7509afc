# Promoted from runs/lab1_1/lab1_1_first_dag.py by shared.airflow_local.promote: edit what writes that draft
# (the notebook's DAG cell), then promote again; an edit here is replaced.
"""
### Lab 1.1: your first DAG

Three tasks and one fan-in, the shape of every pipeline in this course:

```
make_numbers ──┐
               ├──> summarize
announce ──────┘
```

* **make_numbers** (TaskFlow `@task`) writes the day's numbers to
  `data/lab1_1/raw/<ds>/numbers.json`. It overwrites, never appends, so rerunning a day
  gives the same file (idempotency), and each day has its own folder (date partitioning).
* **announce** (`BashOperator`) prints which day the run is for; `{{ ds }}` is templated.
* **summarize** (`@task`) receives the numbers file's *path* through XCom (paths and small
  results travel through XCom, never data) and writes `data/lab1_1/processed/<ds>/summary.json`.

Project imports sit inside the tasks: the dag-processor parses this file again every
`[dag_processor] min_file_process_interval` (30 s by default), and everything at module
level is paid on every parse.

Run it: `make airflow`, log in, unpause `lab1_1_first_dag`, trigger it with a logical date,
then open the Grid view to watch the three squares turn green.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task


@dag(
    dag_id="lab1_1_first_dag",
    schedule="@daily",  # a preset; the cron spelling is "0 0 * * *"
    start_date=datetime(2024, 1, 1),
    catchup=False,  # do not backfill every day since 2024 when first unpaused
    tags=["phase1", "lab1.1"],
    default_args={
        "owner": "mlops-course",
        "retries": 2,  # transient failures (a busy disk, a network blip) retry on their own
        "retry_delay": timedelta(seconds=30),
    },
    doc_md=__doc__,
)
def lab1_1_first_dag():
    @task
    def make_numbers(ds: str | None = None) -> str:
        """Write ten numbers for the day; seeded by the date, so a rerun writes the same."""
        import random

        from airflow.sdk.exceptions import AirflowFailException

        from shared.io import atomic_write_json
        from shared.paths import data_root

        if ds is None:  # a manual run without a logical date: no partition to write
            raise AirflowFailException(
                "lab1_1_first_dag partitions its data by the logical date: trigger it with one"
            )
        rng = random.Random(ds)
        numbers = [rng.randint(0, 100) for _ in range(10)]
        path = data_root() / "lab1_1" / "raw" / ds / "numbers.json"
        atomic_write_json(path, {"ds": ds, "numbers": numbers})
        return str(path)

    @task
    def summarize(numbers_path: str, ds: str | None = None) -> dict:
        """Read the day's numbers and write their summary next to the other processed days."""
        import json
        from pathlib import Path

        from shared.io import atomic_write_json
        from shared.paths import data_root

        numbers = json.loads(Path(numbers_path).read_text())["numbers"]
        summary = {"ds": ds, "count": len(numbers), "total": sum(numbers), "max": max(numbers)}
        atomic_write_json(data_root() / "lab1_1" / "processed" / ds / "summary.json", summary)
        return summary

    announce = BashOperator(
        task_id="announce",
        bash_command='echo "lab1_1_first_dag: processing the partition for {{ ds }}"',
    )
    numbers = make_numbers()
    [numbers, announce] >> summarize(numbers)  # fan-in: summarize waits for both


lab1_1_first_dag()
