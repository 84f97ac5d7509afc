"""The distributed Airflow (`make airflow-cluster`): PostgreSQL, Redis, CeleryExecutor, two
Celery workers, all on loopback. One cluster for the module, started from a fresh state
folder; the tests run the course's DAGs on it through the REST API, break it the ways a
distributed set-up breaks, and stop it. Each test starts by bringing back whatever an
earlier one stopped, so each also runs alone (`-k`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
from pathlib import Path

import pytest
from conftest import (
    DS,
    PIPELINE_SMOKE,
    REPO,
    _can_install_debian_packages,
    _free_port,
    make_sandbox,
)

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.cluster]

EXPERIMENTS_SMOKE = {"overrides": ["data.subset=1200"]}
#: metrics.json keys that are the model, not the machine (train_seconds, history's timings)
STABLE_METRICS = ("completed", "config_hash", "epochs_completed", "model", "parameters", "test",
                  "weights_sha256")  # fmt: skip


def _missing_services() -> list[str]:
    from workbook import cluster

    missing = [] if shutil.which("redis-server") else ["redis-server"]
    try:
        cluster.postgres_bindir()
    except cluster.ClusterError:
        missing.append("postgresql")
    return missing


@pytest.fixture(scope="module")
def cluster():
    """A cluster in a fresh temporary state folder, on free ports, writing into a project
    sandbox, running only what the tests trigger (no daily runs in between). Stopped at the
    end, and checked that none of its processes is left."""
    from workbook import cluster as cl

    missing = _missing_services()
    if missing and _can_install_debian_packages():
        pytest.fail(
            f"{', '.join(missing)} missing: `make test` installs them (scripts/setup-system.sh)"
        )
    if missing:
        pytest.skip(f"no {' or '.join(missing)}, and no apt-get as root to install them")
    base = Path(tempfile.mkdtemp(prefix="workbook-cluster-"))
    # As root, PostgreSQL runs as the user 'postgres', which must be able to enter this folder.
    os.chmod(base, 0o711)
    c = cl.Cluster(
        base / "state", root=make_sandbox(base / "project"), dags=REPO / "dags",
        ports={"api": _free_port(), "postgres": _free_port(), "redis": _free_port()},
        schedules=False,
        # the kill test waits this out; 15 s is still three missed heartbeats (one every 5 s)
        heartbeat_timeout=15,
    )  # fmt: skip
    try:
        seconds = c.start()
        print(f"cluster from a fresh state folder: up in {seconds:.1f} s")
        yield c
    finally:
        pids = c.running_pids()
        c.stop()
        assert not cl.alive(pids), "every process of the cluster has exited"
        shutil.rmtree(base, ignore_errors=True)


def snapshot(root: Path) -> dict[str, object]:
    """What mnist_training_pipeline wrote for DS under ``root``, comparable between project
    folders: file digests; JSON with the project's path replaced; metrics without timings."""
    root = root.resolve()
    found: dict[str, object] = {}
    for base in (f"data/raw/{DS}", f"data/processed/{DS}", f"runs/pipeline/{DS}", "registry"):
        for p in sorted((root / base).rglob("*")):
            if not p.is_file() or p.name == "environment.json":  # the machine and process
                continue
            key = p.relative_to(root).as_posix()
            if p.name == "metrics.json":
                metrics = json.loads(p.read_text())
                found[key] = {k: metrics[k] for k in STABLE_METRICS}
            elif p.suffix == ".pt":  # the model and training state, not the archive's bytes
                found[key] = _checkpoint(p)
            elif p.suffix == ".json":
                found[key] = json.loads(p.read_text().replace(str(root), "<project>"))
            else:
                found[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _checkpoint(path: Path) -> dict[str, object]:
    import torch

    from shared.train import weights_digest

    ckpt = torch.load(path, weights_only=True)
    return {"weights": weights_digest(ckpt["model"]), "epoch": ckpt["epoch"],
            "config_hash": ckpt["config_hash"], "config": ckpt["config"],
            "optimizer": weights_digest({f"{k}.{n}": t for k, v in ckpt["optimizer"]["state"].items()
                                         for n, t in v.items() if torch.is_tensor(t)})}  # fmt: skip


def wait_for_running(api, dag_id: str, run_id: str, task_id=None, timeout: float = 300) -> dict:
    """Poll until a task instance (of ``task_id``, or any) runs on a worker; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in api.task_instances(dag_id, run_id):
            if task_id in (None, ti["task_id"]) and ti["state"] == "running" and ti["hostname"]:
                return ti
        time.sleep(0.3)
    raise TimeoutError(f"no {task_id} of {run_id} started within {timeout:.0f} s")


def test_both_dags_run_on_both_workers_as_the_embedded_run_does(cluster, embedded_pipeline):
    from workbook.cluster import listening_sockets

    cluster.start()
    api = cluster.api()
    runs = {}
    for dag_id, conf in (("mnist_training_pipeline", PIPELINE_SMOKE),
                         ("notebook_experiments", EXPERIMENTS_SMOKE)):  # fmt: skip
        api.unpause(dag_id)
        runs[dag_id] = api.trigger(dag_id, DS, conf)

    # Every second while both run: every port any process of the cluster listens on (task
    # runners and the notebooks' kernels included) is on loopback.
    listening: set[tuple[int, str, int]] = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        listening |= set(listening_sockets(cluster.running_pids()))
        if all(api.run_state(d, r) in ("success", "failed") for d, r in runs.items()):
            break
        time.sleep(1)
    assert {port for _, _, port in listening} > set(cluster.ports.values()), "kernels' ports too"
    assert {addr for _, addr, _ in listening} <= {"127.0.0.1", "::1"}, listening

    hosts: dict[str, list[str]] = {}
    for dag_id, run_id in runs.items():
        assert api.wait(dag_id, run_id, timeout=60) == "success", cluster.log_tail("scheduler")
        for ti in api.task_instances(dag_id, run_id):
            assert (ti["state"], ti["queue"]) == ("success", "default"), ti
            hosts.setdefault(ti["hostname"], []).append(f"{dag_id}.{ti['task_id']}")
    # The experiments' four notebooks run two at a time (pool `experiments`, one slot per
    # worker), and a worker with one slot takes one task at a time: both must have worked.
    assert set(hosts) == {"worker-1", "worker-2"}, hosts

    # Both ran every task without the database's password, the token signing secret or the
    # Fernet key in their environment (they run learners' code: it could read them).
    from workbook.cluster import WORKER_WITHHELD

    secrets = cluster.secrets()
    for worker in ("worker-1", "worker-2"):
        environ = Path(f"/proc/{cluster._pid(worker)}/environ").read_bytes().decode()
        keys = {entry.split("=", 1)[0] for entry in environ.split("\0") if entry}
        assert not keys & set(WORKER_WITHHELD), keys & set(WORKER_WITHHELD)
        for name in ("postgres", "jwt_secret", "fernet_key", "api_secret_key"):
            assert secrets[name] not in environ, f"{worker} holds the {name} secret"

    # Same DAG file, same config: the same partitions, model (weights digest), evaluation and
    # registry entry as dag.test() on the embedded database.
    embedded_root, _ = embedded_pipeline
    ours, theirs = snapshot(cluster.root), snapshot(embedded_root)
    assert any(k.endswith("checkpoint.pt") for k in ours) and "registry/mnist/best.json" in ours
    assert ours == theirs

    out = cluster.root / "runs" / DS / "experiments"
    assert len((out / "comparison.csv").read_text().splitlines()) == 5  # header + 4 configs


def test_the_lab_1_4_capstone_dags_run_on_the_workers_unchanged(cluster):
    """Lab 1.4's promoted DAG files, as they are in dags/, on the Celery workers: the training
    pipeline for a date, a production day from the new scanner (its monitor updates the
    asset), then the retraining, which reads that day from the asset's event. This cluster
    creates no runs by itself (schedules off, so the other tests' runs stay their own), so
    the retraining is triggered here; the asset starting it on its own is the live-stack
    test's (tests/test_airflow_ui.py)."""
    cluster.start()
    api = cluster.api()
    hosts = set()
    for dag_id, ds, conf in (
        ("my_training_pipeline", "2024-01-02", PIPELINE_SMOKE),
        ("my_model_in_production", "2024-02-10", None),
        ("my_retraining", "2024-02-10", {"config_path": "configs/smoke.yaml"}),
    ):
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, ds, conf)
        assert api.wait(dag_id, run_id, timeout=300) == "success", cluster.log_tail("scheduler")
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}
        assert set(states.values()) == {"success"}, states  # flag_drift too: drift found
        hosts |= {ti["hostname"] for ti in api.task_instances(dag_id, run_id)}
    assert hosts <= {"worker-1", "worker-2"} and hosts, hosts
    best = json.loads((cluster.root / "registry" / "lab1_4" / "mnist" / "best.json").read_text())
    assert best["version"].startswith("2024-02-10-retrained-"), best
    report = cluster.root / "data" / "monitoring" / "2024-02-10" / "report.json"
    assert json.loads(report.read_text())["drift"] is True


def test_a_scheduler_restarted_mid_run_finishes_the_run(cluster):
    cluster.start()
    api = cluster.api()
    api.unpause("mnist_training_pipeline")
    run_id = api.trigger("mnist_training_pipeline", "2024-01-02", PIPELINE_SMOKE)
    wait_for_running(api, "mnist_training_pipeline", run_id)
    before = cluster.status()
    assert cluster.stop_process("scheduler")
    assert cluster.status()["scheduler"] is None
    cluster.start()  # starts what is not running: here the scheduler alone
    after = cluster.status()
    assert after["scheduler"] not in (None, before["scheduler"])
    assert {k: v for k, v in after.items() if k != "scheduler"} == {
        k: v for k, v in before.items() if k != "scheduler"}  # fmt: skip
    assert api.wait("mnist_training_pipeline", run_id, timeout=600) == "success"
    tries = {ti["task_id"]: ti["try_number"] for ti in api.task_instances(
        "mnist_training_pipeline", run_id)}  # fmt: skip
    assert set(tries.values()) == {1}, f"no task lost its try to the restart: {tries}"


def test_a_worker_killed_mid_task_loses_the_task_to_the_other_worker(cluster):
    """SIGKILL (no warm shutdown) of the worker running a notebook: its heartbeat stops, the
    scheduler fails that try after the heartbeat timeout, and the retry (retries=1) runs on
    the worker that is alive. The run succeeds."""
    from workbook.cluster import alive

    cluster.start()
    api = cluster.api()
    api.unpause("notebook_experiments")
    run_id = api.trigger("notebook_experiments", "2024-01-03", EXPERIMENTS_SMOKE)
    victim = wait_for_running(api, "notebook_experiments", run_id, "run_notebook")
    doomed = cluster.family(victim["hostname"])  # the worker, its task runner, the kernel
    assert cluster.stop_process(victim["hostname"], signal.SIGKILL, wait=0)
    assert not alive(doomed), "the whole worker is gone, as with a machine that died"
    assert api.wait("notebook_experiments", run_id, timeout=600) == "success"
    (after,) = [ti for ti in api.task_instances("notebook_experiments", run_id)
                if ti["task_id"] == "run_notebook" and ti["map_index"] == victim["map_index"]]  # fmt: skip
    survivor = ({"worker-1", "worker-2"} - {victim["hostname"]}).pop()
    assert (after["state"], after["try_number"], after["hostname"]) == ("success", 2, survivor)


def test_without_postgres_the_api_says_so_and_the_cluster_recovers(cluster):
    cluster.start()
    api = cluster.api()
    api.token()
    assert cluster.stop_process("postgres")
    assert cluster.health()["metadatabase"]["status"] == "unhealthy"
    with pytest.raises(urllib.error.HTTPError) as failed:
        api.get("/api/v2/dags")
    assert failed.value.code == 500
    assert "Database error" in failed.value.read().decode()
    cluster.start()  # PostgreSQL on its data again, and whatever exited without it
    health = cluster.health()
    assert all(health[part]["status"] == "healthy" for part in health), health
    from shared import airflow_local

    dag_files = airflow_local.dag_files(REPO / "dags")  # not the trainer beside them
    assert api.get("/api/v2/dags?limit=10")["total_entries"] == len(dag_files)


def test_stop_leaves_no_process_and_a_second_start_reuses_the_database(cluster):
    from workbook.cluster import alive

    cluster.start()
    api = cluster.api()
    api.unpause("lab1_1_first_dag")
    first = api.trigger("lab1_1_first_dag", "2024-02-01")
    assert api.wait("lab1_1_first_dag", first, timeout=300) == "success"
    pids = cluster.running_pids()
    assert len(pids) >= 10
    assert set(cluster.stop()) == set(cluster.process_names)
    assert not alive(pids)
    assert (cluster.state / "postgres" / "data" / "PG_VERSION").is_file()

    cluster.start()
    api = cluster.api()
    runs = api.get("/api/v2/dags/lab1_1_first_dag/dagRuns")["dag_runs"]
    assert first in {r["dag_run_id"] for r in runs}, "the second start kept the database"
    run_id = api.trigger("lab1_1_first_dag", DS)
    assert api.wait("lab1_1_first_dag", run_id, timeout=300) == "success"
