"""Airflow's REST API (v2), the few calls the course makes: a token from /auth/token, then
unpause, trigger with a logical date, poll a run, list its task instances. Used by the tests
and benchmarks of `make airflow` and `make airflow-cluster`; standard library only."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote


class Api:
    """The few REST API calls the course needs, with a token from /auth/token."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        self.user, self.password = user, password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text else None

    def token(self) -> str:
        if self._token is None:
            self._token = self._request("POST", "/auth/token", {
                "username": self.user, "password": self.password}, auth=False)["access_token"]  # fmt: skip
        return self._token

    def get(self, path: str, auth: bool = True) -> Any:
        return self._request("GET", path, auth=auth)

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})

    def unfinished_runs(self, dag_id: str) -> list[str]:
        """The run ids of ``dag_id`` that are queued or running."""
        runs = self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
        return [r["dag_run_id"] for r in runs if r["state"] in ("queued", "running")]

    def trigger(self, dag_id: str, logical_date: str, conf: dict | None = None) -> str:
        """Trigger a run for ``logical_date`` (ISO date or datetime, UTC); its run id."""
        if len(logical_date) == 10:
            logical_date += "T00:00:00Z"
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                            {"logical_date": logical_date, "conf": conf or {}})  # fmt: skip
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances"
                        "?limit=100")["task_instances"]  # fmt: skip

    def wait(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        """Poll until the run is success or failed; its final state (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.run_state(dag_id, run_id)
            except (urllib.error.URLError, OSError):
                state = None  # a restart of a component: ask again
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise TimeoutError(f"{dag_id} {run_id} not finished within {timeout:.0f} s")


def _quote(run_id: str) -> str:
    return quote(run_id, safe="")
