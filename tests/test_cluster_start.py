"""Cluster.start()'s wait, without services: which parts it starts again and which exits
are errors. The real processes are exercised in test_cluster.py (slow, airflow, cluster)."""

from __future__ import annotations

import pytest

from workbook import cluster as cl


class _Parts(cl.Cluster):
    """A cluster whose processes are names in a set: ``running`` is what is alive, and
    spawning a part adds it (unless it is in ``dies``, parts that exit as soon as started)."""

    def __init__(self, tmp_path, running, dies=()):
        super().__init__(tmp_path / "state", root=tmp_path, dags=tmp_path, workers=1)
        self.running, self.dies, self.spawns, self.stops = set(running), set(dies), [], []

    def _pid(self, name):
        return 1 if name in self.running else None

    def stop_process(self, name, *args, **kw):
        self.stops.append(name)
        was_running = name in self.running
        self.running.discard(name)
        return was_running

    def _spawn_airflow(self, name):
        self.spawns.append(name)
        self._spawned.append(name)
        if name not in self.dies:
            self.running.add(name)
        return 1

    def health(self):
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return {p: {"status": "healthy"} for p in parts}

    def _workers_ready(self):
        return self.worker_names


def test_a_part_that_was_running_and_exits_during_the_start_is_started_again(tmp_path):
    # The triggerer was alive when start() looked, and gave up once PostgreSQL was gone.
    everything = {"postgres", "redis", *cl.AIRFLOW_PROCESSES, "worker-1"}
    c = _Parts(tmp_path, running=everything - {"triggerer"})
    said = []
    c._wait_until_healthy(said.append, timeout=5)
    assert c.spawns == ["triggerer"]
    assert "triggerer exited during the start" in said[0]


def test_a_part_this_start_launched_that_exits_is_an_error(tmp_path):
    everything = {"postgres", "redis", *cl.AIRFLOW_PROCESSES, "worker-1"}
    c = _Parts(tmp_path, running=everything - {"scheduler"}, dies={"scheduler"})
    c._spawned.append("scheduler")  # start() launched it, and it exited
    with pytest.raises(cl.ClusterError, match="scheduler exited during start-up"):
        c._wait_until_healthy(print, timeout=5)
    assert c.spawns == []


def test_a_part_started_again_that_exits_once_more_is_an_error(tmp_path):
    everything = {"postgres", "redis", *cl.AIRFLOW_PROCESSES, "worker-1"}
    c = _Parts(tmp_path, running=everything - {"triggerer"}, dies={"triggerer"})
    with pytest.raises(cl.ClusterError, match="triggerer exited during start-up"):
        c._wait_until_healthy(print, timeout=5)
    assert c.spawns == ["triggerer"]  # once, not in a loop


def test_postgres_or_redis_gone_is_an_error_not_a_restart(tmp_path):
    everything = {"postgres", "redis", *cl.AIRFLOW_PROCESSES, "worker-1"}
    c = _Parts(tmp_path, running=everything - {"redis"})
    with pytest.raises(cl.ClusterError, match="redis exited during start-up"):
        c._wait_until_healthy(print, timeout=5)
    assert c.spawns == []


def test_the_heartbeat_timeout_reaches_the_scheduler_and_too_short_is_refused(tmp_path):
    env = cl.Cluster(tmp_path / "state", root=tmp_path, heartbeat_timeout=15).airflow_env()
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "15"
    default = cl.Cluster(tmp_path / "state", root=tmp_path).airflow_env()
    assert default["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "30"
    # one beat every 5 s: under 15 s, one slow answer would fail a task that is running
    with pytest.raises(cl.ClusterError, match="heartbeat_timeout must be at least 15 s, not 5"):
        cl.Cluster(tmp_path / "state", root=tmp_path, heartbeat_timeout=5)


@pytest.mark.parametrize(
    "stopped, migrates, restarted",
    [
        # everything running: "already running", no `airflow` command
        (set(), False, []),
        # PostgreSQL was down: the parts that exit without it are restarted with it (else they
        # exit later, after start() returned), so the tables are checked first
        ({"postgres"}, True, ["scheduler", "dag-processor", "triggerer"]),
        ({"scheduler"}, True, ["scheduler"]),  # an Airflow part to start: the tables first
        ({"worker-1"}, True, ["worker-1"]),
    ],
)
def test_start_restarts_only_what_it_must_and_checks_the_tables_only_then(
    tmp_path, monkeypatch, stopped, migrates, restarted
):
    everything = {"postgres", "redis", *cl.AIRFLOW_PROCESSES, "worker-1"}
    c = _Parts(tmp_path, running=everything - stopped)
    calls = []
    monkeypatch.setattr(c, "_start_postgres", lambda echo: c.running.add("postgres"))
    monkeypatch.setattr(c, "_start_redis", lambda echo: c.running.add("redis"))
    monkeypatch.setattr(c, "_migrate", lambda echo: calls.append("migrate"))
    said = []
    c.start(echo=said.append)
    assert calls == (["migrate"] if migrates else [])
    assert sorted(c.spawns) == sorted(restarted)
    assert c.stops == [n for n in restarted if n not in stopped]  # stopped first, then started
    assert c.running == everything
    if not stopped:
        assert said == ["cluster: already running"]
