"""Shared fixtures. Tests never download: the real MNIST files are provisioned by set-up."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from shared import paths

REPO = Path(__file__).resolve().parent.parent

#: The run the DAG tests and the cluster test share: mnist_training_pipeline on the smoke
#: config for one logical date.
DS = "2024-01-01"
PIPELINE_SMOKE = {"config_path": "configs/smoke.yaml", "subset": 1200}


def make_sandbox(root: Path) -> Path:
    """A project root outside the checkout (shared.paths.scratch_project): tasks and
    notebooks run with WORKBOOK_ROOT pointing here write there, never into the repo."""
    return paths.scratch_project(root)


def pytest_configure(config):
    """Set before anything imports airflow or starts a kernel (both read the environment
    once): a throw-away Airflow home, and a session sandbox as the project root, which the
    nbval kernels inherit. Under pytest-xdist each worker (and every kernel or process it
    starts) gets its share of the cores: two workers each training on every core would
    spend the difference spinning in OpenMP."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = share
    tmp = Path(tempfile.mkdtemp(prefix="workbook-tests-"))
    os.environ["AIRFLOW_HOME"] = str(tmp / "airflow")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["WORKBOOK_ROOT"] = str(make_sandbox(tmp / "project"))


#: The slowest test files, slowest first (seconds on 2 cores, from `pytest --durations`).
#: `make test` hands whole files to two xdist workers in collection order
#: (--no-loadscope-reorder); starting with the long ones keeps both busy to the end instead
#: of leaving one to finish the cluster tests alone.
SLOWEST_FILES = [
    "tests/test_cluster.py",  # ~360 s: services, kills, restarts
    "tests/test_grade.py",  # ~280 s: sandboxed kernels, the batch
    "tests/test_dags.py",  # ~210 s: dag.test runs
    "tests/test_notebooks.py",  # ~180 s: the smoke runs (shared with test_site)
    "solutions/03_lab1_3_config_driven_training.ipynb",  # ~150 s: nbval with the sweep
    "tests/test_site.py",
    "solutions/02_lab1_2b_training_on_mnist.ipynb",
    "solutions/04_lab1_4_your_pipeline.ipynb",  # ~40 s: its DAGs, six production days
    "tests/test_airflow_ui.py",
    "tests/test_checks.py",
    "tests/test_train.py",
    "tests/test_cli.py",
    "solutions/01_lab1_1_first_airflow_dag.ipynb",
    "tests/test_jupyterlab.py",
]


def pytest_collection_modifyitems(items):
    """nbval's cells run in a kernel: marked so (`make test-fast` leaves them out). nbval waits
    5 s (hard-coded) for a cell's output messages after the cell finished; on a loaded 2-core
    machine they once took longer, failing a cell that had run fine. Then the slowest files
    first (SLOWEST_FILES), each file's own order kept."""
    for item in items:
        if hasattr(item, "output_timeout"):
            item.add_marker(pytest.mark.kernel)
            item.output_timeout = 60

    def rank(item) -> int:
        path = Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
        return SLOWEST_FILES.index(path) if path in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: the order inside a file stays


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """A fresh project root for one test (see make_sandbox)."""
    root = make_sandbox(tmp_path / "project")
    monkeypatch.setenv("WORKBOOK_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The provisioned data folder; set-up (make test) fetched and verified it before pytest."""
    root = paths.data_root()
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(), (
        "MNIST is not provisioned: run `make setup` (or `workbook data fetch`) first"
    )
    return root


def _free_port() -> int:
    from workbook.cluster import free_port

    return free_port()


@pytest.fixture
def free_port():
    """A function returning a loopback port that is free right now."""
    return _free_port


#: Headless Chromium as the browser tests start it: no sandbox (CI runs as root), and none of
#: the background connections a closed network refuses many times a second.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_command() -> list[str]:
    """Chromium and its flags. Where it is missing, the browser tests skip if this machine
    cannot install it (no apt-get as root: a Mac, a learner's Linux account), and fail if it
    could have: there scripts/setup-system.sh, which `make test` runs, installs it."""
    binary = shutil.which("chromium")
    if binary:
        return [binary, *CHROMIUM_FLAGS]
    if _can_install_debian_packages():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (scripts/setup-system.sh)"
        )
    pytest.skip(
        "no Chromium, and no apt-get as root to install it: install Chromium to run the browser tests"
    )


def _can_install_debian_packages() -> bool:
    return bool(shutil.which("apt-get")) and os.geteuid() == 0


@pytest.fixture
def bubblewrap():
    """Skip unless bubblewrap can sandbox a kernel here; fail where set-up should have
    installed it (apt-get as root) and did not."""
    from workbook.grading import sandbox

    problem = sandbox.bwrap_problem()
    if problem is None:
        return
    if not shutil.which("bwrap") and _can_install_debian_packages():
        pytest.fail("bubblewrap is missing: `make test` installs it (scripts/setup-system.sh)")
    pytest.skip(f"no OS sandbox here: {problem}")


@pytest.fixture
def chromium():
    """A function returning Chromium's command line (or skipping, see chromium_command);
    called at the point a test needs the browser, so what it checked before still counts."""
    return chromium_command


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(name)`` executes ``solutions/<name>`` on the smoke config with papermill
    (the demo's parameters, ``demo.smoke_params``), once per session, each in a project
    sandbox of its own, and returns (executed notebook, project root, seconds, error or
    None). Tests that read the same execution share it: the notebook tests, the
    notebook-vs-DAG parity test and the website (the executions land side by side in one
    folder, ``smoke_run.folder``, each with its run record, as ``make demo`` leaves them).

    Under pytest-xdist the workers share them too: a session fixture is otherwise built
    once per worker, and the notebook tests and the website test on different workers ran
    the four notebooks twice. The first worker to ask for a notebook runs it under a file
    lock in the folder all workers share; the other waits for the lock and reads the
    result (what the tests read of the sandbox is only read)."""
    import json
    import time

    from shared import experiments, io
    from workbook import demo

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's popen-gwN
    base = base / "smoke-runs"
    folder = base / "executed"
    done: dict[str, tuple[Path, Path, float, Exception | None]] = {}

    def execute(name: str) -> dict:
        root = make_sandbox(base / name.removesuffix(".ipynb") / "project")
        start = time.perf_counter()
        error = None
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("WORKBOOK_ROOT", str(root))
            try:
                experiments.run_recorded(
                    REPO / "solutions" / name, folder / name, demo.smoke_params(name), timeout=300
                )
            except Exception as exc:  # the test that asks reports it, with the notebook
                error = f"{type(exc).__name__}: {exc}"
        return {"root": str(root), "seconds": time.perf_counter() - start, "error": error}

    def run(name: str):
        if name not in done:
            result = base / f"{name}.result.json"
            with io.file_lock(base / f"{name}.lock"):
                if not result.is_file():
                    io.atomic_write_json(result, execute(name))
            r = json.loads(result.read_text())
            error = None if r["error"] is None else RuntimeError(r["error"])
            done[name] = (folder / name, Path(r["root"]), r["seconds"], error)
        return done[name]

    run.folder = folder
    return run


@pytest.fixture(scope="session")
def dagbag():
    """The DAG folder parsed by Airflow, on the session's embedded SQLite database."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()  # the embedded SQLite database in the session's temporary AIRFLOW_HOME
    return DagBag(str(REPO / "dags"))


@pytest.fixture(scope="session")
def embedded_pipeline(dagbag, tmp_path_factory):
    """mnist_training_pipeline run once per session with dag.test() (the embedded set-up) on
    the smoke config for DS, in a project of its own: (project root, the dag run). The DAG
    tests check it; the cluster test compares its own run of the same config with it."""
    from datetime import UTC, datetime

    root = make_sandbox(tmp_path_factory.mktemp("embedded") / "project")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBOOK_ROOT", str(root))
        dag = dagbag.get_dag("mnist_training_pipeline")
        run = dag.test(logical_date=datetime.fromisoformat(DS).replace(tzinfo=UTC),
                       run_conf=PIPELINE_SMOKE)  # fmt: skip
    return root, run


class DevTools:
    """Headless Chromium driven over the DevTools protocol (websocket-client, already in the
    lock as a Jupyter dependency): ``send`` a command and get its result; the console
    errors, uncaught exceptions and failed requests collect in ``problems``, and every URL
    requested in ``requests``."""

    def __init__(self, browser_command: list[str], profile: Path, port: int, size=(1400, 900)):
        import json
        import subprocess
        import time
        import urllib.request

        import websocket

        self._json = json
        self.proc = subprocess.Popen(
            [*browser_command, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
             f"--remote-debugging-port={port}", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline, pages = time.monotonic() + 30, None
        while pages is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
                    pages = [p for p in json.loads(r.read()) if p["type"] == "page"] or None
            except OSError:
                pass
            if pages is None:
                assert time.monotonic() < deadline, "Chromium's DevTools endpoint did not answer"
                time.sleep(0.3)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self._ids = iter(range(1, 1_000_000))
        self.problems: list[str] = []
        self.requests: list[str] = []  # every URL the pages asked for, in order
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.problems.append("console: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))  # fmt: skip
        elif method == "Runtime.exceptionThrown":
            self.problems.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.problems.append(
                f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}"
            )
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.problems.append(f"request failed: {params.get('errorText')}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            self.problems.append(
                f"HTTP {params['response']['status']}: {params['response']['url']}"
            )

    def send(self, method: str, params: dict | None = None, until: str | None = None) -> dict:
        """Run ``method``; with ``until``, also wait for that event (e.g. Page.loadEventFired)."""
        msg_id = next(self._ids)
        self.ws.send(self._json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        result, seen = None, until is None
        while result is None or not seen:
            msg = self._json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                assert "error" not in msg, msg
                result = msg.get("result", {})
            elif "method" in msg:
                self._event(msg)
                seen = seen or msg["method"] == until
        return result

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})  # fmt: skip
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, until="Page.loadEventFired")

    def screenshot(self, path: Path, full_page: bool = False) -> bytes:
        import base64

        params = {"format": "png", "captureBeyondViewport": full_page}
        png = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
