"""The real Airflow UI stack, as `make airflow` starts it: api-server, scheduler and
dag-processor on 127.0.0.1, driven through the REST API, then stopped by PID."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import DevTools

from workbook.airflow_api import Api

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "screenshots"


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def screenshot_logged_in(
    browser_command: list[str],
    url: str,
    token: str,
    shots: dict[str, Path],
    profile: Path,
    port: int,
    tasks: set[str],
) -> dict[str, bytes]:
    """Headless Chromium driven over the DevTools protocol: set the UI's login cookie
    (`_token`, the JWT from /auth/token), then for each ``{view: path}`` of ``shots`` (the
    DAG page's "grid" or "graph" view, the UI's `default_dag_view` setting in the browser's
    local storage) open ``url``, wait until the page shows every one of ``tasks``, save a PNG."""
    browser = DevTools(browser_command, profile, port)
    try:
        base = url.split("/dags/")[0]
        browser.send("Network.setCookie", {"name": "_token", "value": token, "url": base + "/"})
        pngs = {}
        for view, out in shots.items():
            browser.open(base + "/")  # returns at the load event: the origin's storage is there
            browser.evaluate(f"localStorage.setItem('default_dag_view', JSON.stringify({view!r}))")
            browser.open(url)
            # The React UI fetches the DAG and its runs after the load event: wait until the
            # view shows every task, then give the last requests a moment to paint.
            wait_for(
                lambda: browser.evaluate(
                    f"{sorted(tasks)!r}.every(t => document.body.innerText.includes(t))"
                ),
                60, f"the {view} view to show the tasks {sorted(tasks)}", interval=0.5,
            )  # fmt: skip
            time.sleep(1.5)
            pngs[view] = browser.screenshot(out)
    finally:
        browser.close()
    return pngs


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def lab1_4_capstone_on_the_live_stack(api: Api, env: dict, project: Path) -> None:
    """Lab 1.4's promoted DAGs on the scheduler, as the lab tells a learner to run them:
    Airflow's own `airflow backfill create` over three dates (through airflow_local.backfill,
    which the notebook calls, in a process of its own with the stack's Airflow home), then a
    production run for a day from the new scanner, whose asset event must start
    my_retraining by itself (data-aware scheduling), which registers a better model."""
    import sys

    api.unpause("my_training_pipeline")  # a paused DAG's backfill runs stay queued
    probe = (
        "from shared import airflow_local; import json; "
        "print(json.dumps(airflow_local.backfill("
        "'my_training_pipeline', '2024-01-02', '2024-01-04', timeout=400)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=480)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    states = json.loads(done.stdout.strip().splitlines()[-1])
    assert states == {d: "success" for d in ("2024-01-02", "2024-01-03", "2024-01-04")}, states
    for ds in states:  # each date trained into its own partition
        assert (project / "runs" / "pipeline" / ds).is_dir()
    registry = project / "registry" / "lab1_4" / "mnist"
    assert {p.name[:10] for p in registry.glob("2024-01-0*")} == set(states)
    best = registry / "best.json"

    api.unpause("my_model_in_production")
    api.unpause("my_retraining")
    run_id = api.trigger("my_model_in_production", "2024-02-10")
    assert api.wait("my_model_in_production", run_id, timeout=240) == "success"
    flagged = {
        t["task_id"]: t["state"] for t in api.task_instances("my_model_in_production", run_id)
    }
    assert flagged["flag_drift"] == "success", flagged

    def retraining_run():
        runs = api.get("/api/v2/dags/my_retraining/dagRuns")["dag_runs"]
        return runs[0] if runs else None

    # Switched on with catchup=False, the production DAG also runs once for the latest day
    # (today: the new scanner's too), so the retraining may be for that day's alarm or ours.
    started = wait_for(retraining_run, 120, "the asset event to start my_retraining")
    assert started["run_type"] == "asset_triggered", started
    assert started["logical_date"] is None, "a run started by an asset has no logical date"
    assert api.wait("my_retraining", started["dag_run_id"], timeout=240) == "success"
    assert "-retrained-" in json.loads(best.read_text())["version"]
    # Whatever the schedules started meanwhile (today's runs) is let finish, then the DAGs
    # are switched off, so that stopping the stack finds its scheduler idle.
    dags = ("my_training_pipeline", "my_model_in_production", "my_retraining")
    wait_for(lambda: not any(api.unfinished_runs(d) for d in dags), 300, "the DAGs' runs to end")
    for dag_id in dags:
        api.pause(dag_id)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(900)
@pytest.mark.airflow
def test_ui_lists_dags_and_runs_lab1_1(tmp_path, sandbox, free_port, chromium):
    home, port = tmp_path / "airflow-home", free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_PORT": str(port),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "WORKBOOK_ROOT": str(sandbox),
    }
    script = REPO / "scripts" / "airflow.sh"
    start = time.monotonic()
    started = subprocess.run(
        [str(script), "start"], env=env, capture_output=True, text=True, timeout=240
    )
    pids = {p.stem: int(p.read_text()) for p in (home / "pids").glob("*.pid")}
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout and "user: admin" in started.stdout
        assert set(pids) == {"api-server", "scheduler", "dag-processor"}
        password = json.loads((home / "passwords.json").read_text())["admin"]
        assert oct((home / "passwords.json").stat().st_mode & 0o777) == "0o600"

        base = f"http://127.0.0.1:{port}"
        api = Api(base, "admin", password)
        with pytest.raises(urllib.error.HTTPError) as denied:
            api.get("/api/v2/dags", auth=False)
        assert denied.value.code == 401, "the API refuses calls without a token"

        def listed():
            dags = {d["dag_id"] for d in api.get("/api/v2/dags")["dags"]}
            return (
                dags
                if {"lab1_1_first_dag", "mnist_training_pipeline", "notebook_experiments"} <= dags
                else None
            )

        wait_for(listed, 120, "the dag-processor to parse dags/")
        assert api.get("/api/v2/importErrors")["total_entries"] == 0

        api.unpause("lab1_1_first_dag")
        run_id = api.trigger("lab1_1_first_dag", "2024-01-01")
        assert api.wait("lab1_1_first_dag", run_id, timeout=240) == "success"
        tis = api.task_instances("lab1_1_first_dag", run_id)
        assert {t["task_id"]: t["state"] for t in tis} == {
            "make_numbers": "success", "announce": "success", "summarize": "success",
        }  # fmt: skip
        # `make screenshots` copies these two into docs/images/, where Lab 1.1 shows them.
        pngs = screenshot_logged_in(
            chromium(),
            f"{base}/dags/lab1_1_first_dag",
            api.token(),
            {view: ARTIFACTS / f"lab1_1_first_dag_{view}.png" for view in ("grid", "graph")},
            tmp_path / "chromium",
            free_port(),
            {t["task_id"] for t in tis},
        )
        for png in pngs.values():
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, (
                "a rendered page, not a blank one"
            )
        assert pngs["grid"] != pngs["graph"], "the two views differ"
        summary = sandbox / "data" / "lab1_1" / "processed" / "2024-01-01" / "summary.json"
        assert json.loads(summary.read_text())["count"] == 10, (
            "the task wrote into the project root"
        )
        lab1_4_capstone_on_the_live_stack(api, env, sandbox)
        print(
            f"UI test: started, ran lab1_1_first_dag and Lab 1.4's DAGs (a backfill, an asset "
            f"event) and checked them in {time.monotonic() - start:.1f} s"
        )
    finally:
        stopped = subprocess.run(
            [str(script), "stop"], env=env, capture_output=True, text=True, timeout=60
        )
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    for name, pid in pids.items():
        assert not alive(pid), f"{name} (pid {pid}) still running after stop"
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # its whole process group, workers included, is gone
    assert not list((home / "pids").glob("*.pid"))
