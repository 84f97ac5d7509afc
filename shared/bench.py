"""``workbook bench``: training speed, measured side by side (a benchmark, not a test).

(a) a faithful re-implementation of the classic pytorch/examples ``mnist/main.py``: its Net
    (two convs, dropout, fc 9216->128), Adadelta lr 1.0, StepLR gamma 0.7, batch 64, a
    DataLoader over ``torchvision.datasets.MNIST`` with ToTensor + Normalize;
(b) the workbook's ``configs/default.yaml`` (tensor path, small CNN, Adam + OneCycle).

For each: seconds per epoch, and seconds of training until the test accuracy first reaches
99.0 %, checked every quarter epoch with the clock paused while evaluating. Also the MLP's
epoch time through the tensor path and through the DataLoader path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TARGET = 0.99


class ClassicNet(nn.Module):
    """pytorch/examples mnist/main.py ``Net``, layer for layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        # log_softmax + nll_loss in the original; our loop's cross_entropy applies
        # log_softmax again, which changes nothing (log_softmax is idempotent).
        return F.log_softmax(self.fc2(x), dim=1)


@dataclass
class SpeedResult:
    name: str
    seconds_per_epoch: float
    seconds_to_target: float | None  # None: never reached within max_epochs
    epochs_to_target: float | None
    final_accuracy: float
    trace: list[tuple[float, float, float]]  # (epoch, training seconds, test accuracy)


class _Reached(Exception):
    pass


def time_to_target(
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches,
    test_batches,
    epochs: int,
    per_batch: Callable[[], None] | None = None,
    per_epoch: Callable[[], None] | None = None,
    set_epoch: Callable[[int], None] | None = None,
    evals_per_epoch: int = 4,
    target: float = TARGET,
    log=print,
) -> SpeedResult:
    """Train, evaluating on the test set every 1/evals_per_epoch epoch with the clock paused."""
    from shared.train import Schedule, evaluate, train_one_epoch

    device = torch.device("cpu")
    n = len(train_batches)
    marks = {round(n * k / evals_per_epoch) - 1 for k in range(1, evals_per_epoch + 1)}
    state = {"clock": 0.0, "start": 0.0, "epoch": 0, "reached": None}
    trace: list[tuple[float, float, float]] = []

    def after_step(i: int) -> None:
        if per_batch is not None:
            per_batch()
        if i not in marks:
            return
        state["clock"] += time.perf_counter() - state["start"]
        acc = evaluate(model, test_batches, device)["accuracy"]
        at = state["epoch"] + (i + 1) / n
        trace.append((round(at, 2), round(state["clock"], 2), acc))
        log(f"  {name}: epoch {at:.2f}  {state['clock']:6.1f} s  test accuracy {acc:.2%}")
        if acc >= target and state["reached"] is None:
            state["reached"] = (state["clock"], at)
            raise _Reached
        state["start"] = time.perf_counter()

    for epoch in range(epochs):
        state["epoch"] = epoch
        if set_epoch is not None:
            set_epoch(epoch)
        state["start"] = time.perf_counter()
        try:
            train_one_epoch(
                model, train_batches, optimizer, device, Schedule(None, True), after_step=after_step
            )
        except _Reached:
            break
        if per_epoch is not None:
            per_epoch()
    clock, at = state["reached"] or (state["clock"], trace[-1][0] if trace else epochs)
    return SpeedResult(
        name=name,
        seconds_per_epoch=clock / at if at else float("nan"),
        seconds_to_target=state["reached"][0] if state["reached"] else None,
        epochs_to_target=state["reached"][1] if state["reached"] else None,
        final_accuracy=trace[-1][2] if trace else float("nan"),
        trace=trace,
    )


def bench_classic(root, test_batches, max_epochs: int, log=print) -> SpeedResult:
    from torch.utils.data import DataLoader

    from shared import data

    torch.manual_seed(1)  # the example's default --seed
    ds = data.torchvision_dataset(root, train=True, transform=data.classic_transform())
    loader = DataLoader(ds, batch_size=64, shuffle=True)
    model = ClassicNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return time_to_target(
        "classic", model, optimizer, loader, test_batches, max_epochs,
        per_epoch=scheduler.step, log=log,
    )  # fmt: skip


def bench_workbook(config, root, test_batches, log=print) -> SpeedResult:
    from shared import data
    from shared.model import build_model
    from shared.train import make_optimizer, make_schedule, seed_everything

    seed_everything(config.seed)
    splits = data.load_splits(root, config.data.val_fraction, config.seed, config.data.subset)
    batches = data.tensor_batches(splits.train, config.training.batch_size, True, config.seed)
    model = build_model(config.model)
    optimizer = make_optimizer(model, config.training)
    schedule = make_schedule(optimizer, config.training, len(batches))
    return time_to_target(
        "workbook", model, optimizer, batches, test_batches, config.training.epochs,
        per_batch=schedule.batch_done, per_epoch=schedule.epoch_done, set_epoch=batches.set_epoch,
        log=log,
    )  # fmt: skip


def mlp_epoch_times(root, log=print) -> dict[str, float]:
    """One epoch of the 784-128-10 MLP through each data path."""
    from shared import data
    from shared.model import MLP
    from shared.train import train_one_epoch

    full = data.load_split(root, train=True)
    out = {}
    for path in ("tensor", "dataloader"):
        torch.manual_seed(0)
        model = MLP([128])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        maker = data.tensor_batches if path == "tensor" else data.dataloader_batches
        start = time.perf_counter()
        batches = maker(full, 128, True, 0)  # the tensor path's one-off normalisation counts
        result = train_one_epoch(model, batches, opt, torch.device("cpu"))
        out[path] = time.perf_counter() - start
        log(
            f"  mlp via {path}: {out[path]:.2f} s per epoch, train accuracy {result['accuracy']:.2%}"
        )
    return out


def run(
    config_path: str = "configs/default.yaml", max_classic_epochs: int = 5, log=print
) -> dict[str, Any]:
    from shared import data, paths
    from shared.config import load_config

    config = load_config(config_path, ["training.progress=false"])
    root = paths.resolve(config.data.root)
    test = data.load_split(root, train=False)
    test_batches = data.tensor_batches(test, 1000, False, 0)  # evaluation is off the clock
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    log("(b) workbook default config")
    ours = bench_workbook(config, root, test_batches, log)
    log("(a) classic pytorch/examples pipeline")
    classic = bench_classic(root, test_batches, max_classic_epochs, log)
    log("MLP epoch time by data path")
    mlp = mlp_epoch_times(root, log)
    return {"classic": asdict(classic), "workbook": asdict(ours), "mlp_epoch_seconds": mlp}


def report(results: dict[str, Any]) -> str:
    c, w = results["classic"], results["workbook"]

    def to99(r):
        if r["seconds_to_target"] is None:
            return f"not reached ({r['final_accuracy']:.2%})"
        return f"{r['seconds_to_target']:.1f} s ({r['epochs_to_target']:.2f} epochs)"

    lines = [
        "",
        f"{'':34}{'s/epoch':>10}   time to 99.0 % test accuracy",
        f"{'(a) classic pytorch/examples':34}{c['seconds_per_epoch']:>10.1f}   {to99(c)}",
        f"{'(b) workbook configs/default':34}{w['seconds_per_epoch']:>10.1f}   {to99(w)}",
    ]
    if c["seconds_to_target"] and w["seconds_to_target"]:
        lines.append(f"speed-up to 99.0 %: {c['seconds_to_target'] / w['seconds_to_target']:.1f}x")
    m = results["mlp_epoch_seconds"]
    lines.append(
        f"MLP 784-128-10, one epoch: tensor path {m['tensor']:.2f} s, DataLoader path "
        f"{m['dataloader']:.2f} s ({m['dataloader'] / m['tensor']:.1f}x)"
    )
    return "\n".join(lines)


def dag_parse_times(dags_dir=None) -> dict[str, float]:
    """Each DAG file's parse time as Airflow's DagBag measures it, each in a fresh process
    (so no file profits from modules another file already imported)."""
    from pathlib import Path

    from shared import airflow_local, paths

    airflow_local.configure()
    folder = paths.project_root() / "dags" if dags_dir is None else dags_dir
    files = sorted(folder.glob("*.py"))
    return {Path(f).name: s for f, s in airflow_local.parse_seconds(*files).items()}


def grading_times(
    n: int = 10, jobs: tuple[int, ...] = (1, 2), modes: tuple[str, ...] = ("bwrap", "none")
) -> dict[str, float]:
    """Seconds to grade one Lab 1.2 submission, then a class of ``n`` (the solution and the
    generated lab, alternating, renamed like learners' files) with each number of ``jobs``,
    in each sandbox mode this machine has (bubblewrap's overhead is the difference)."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from shared import grade, paths, sandbox
    from shared.suites import LABS

    lab = LABS["1.2"]
    sources = [paths.project_root() / d / lab.notebook for d in ("solutions", "labs")]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subs = []
        for i in range(n):
            subs.append(Path(tmp) / f"learner{i:02d}.ipynb")
            shutil.copyfile(sources[i % 2], subs[-1])
        for mode in modes:
            if mode == "bwrap" and sandbox.bwrap_problem():
                continue
            start = time.perf_counter()
            report = grade.grade(subs[0], sandbox_mode=mode)
            times[f"{mode}: one submission"] = time.perf_counter() - start
            assert report.passed, report.format()
            for j in jobs:
                start = time.perf_counter()
                reports = grade.grade_many(subs, jobs=j, progress=False, sandbox_mode=mode)
                times[f"{mode}: {n} submissions, {j} at a time"] = time.perf_counter() - start
                assert sum(r.passed for r in reports) == (n + 1) // 2
    return times


def cluster_times() -> dict[str, float]:
    """Seconds, for the README's distributed-Airflow section: the cluster's start from a
    fresh state folder and again on its data; mnist_training_pipeline on the smoke config
    through the cluster (trigger to success, REST API) vs ``airflow dags test`` on the
    embedded SQLite database (a process, as `make demo` runs it); notebook_experiments with
    two Celery workers, then one. Everything in temporary folders, on free ports."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from shared import cluster as cl
    from shared import paths

    pipeline = ("mnist_training_pipeline", {"config_path": "configs/smoke.yaml", "subset": 1200})
    experiments = ("notebook_experiments", {"overrides": ["data.subset=1200"]})
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="workbook-bench-") as tmp:
        os.chmod(tmp, 0o711)  # PostgreSQL (as the user postgres, when we are root) enters it
        checkout = Path(__file__).resolve().parent.parent
        ports = {"api": cl.free_port(), "postgres": cl.free_port(), "redis": cl.free_port()}

        def timed_run(c: cl.Cluster, dag_id: str, conf: dict, ds: str) -> float:
            api = c.api()
            api.unpause(dag_id)
            start = time.perf_counter()
            run_id = api.trigger(dag_id, ds, conf)
            state = api.wait(dag_id, run_id, timeout=1200)
            if state != "success":
                raise RuntimeError(f"{dag_id} {ds} on the cluster: {state}")
            return time.perf_counter() - start

        quiet = lambda *a, **k: None  # noqa: E731
        c = cl.Cluster(Path(tmp) / "state", root=paths.scratch_project(Path(tmp) / "cluster"),
                       dags=checkout / "dags", ports=ports, schedules=False)  # fmt: skip
        try:
            times["cluster start, fresh state folder"] = c.start(echo=quiet)
            c.stop(echo=quiet)
            times["cluster start, on its data"] = c.start(echo=quiet)
            times["pipeline (smoke), cluster, trigger to success"] = timed_run(
                c, *pipeline, "2024-01-01"
            )
            times["experiments (smoke), 2 workers"] = timed_run(c, *experiments, "2024-01-01")
            c.stop(echo=quiet)
            c = cl.Cluster(c.state, workers=1, root=c.root, dags=c.dags, schedules=False)
            c.start(echo=quiet)
            times["experiments (smoke), 1 worker"] = timed_run(c, *experiments, "2024-01-02")
        finally:
            c.stop(echo=quiet)

        # The embedded route: `airflow dags test` on SQLite, in a project of its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(AIRFLOW_HOME=str(Path(tmp) / "embedded-home"),
                   AIRFLOW__CORE__DAGS_FOLDER=str(checkout / "dags"),
                   AIRFLOW__CORE__LOAD_EXAMPLES="False",
                   WORKBOOK_ROOT=str(paths.scratch_project(Path(tmp) / "embedded")))  # fmt: skip
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run([airflow, "dags", "test", pipeline[0], "2024-01-01", "-c",
                        json.dumps(pipeline[1])], env=env, check=True, capture_output=True)  # fmt: skip
        times["pipeline (smoke), embedded `airflow dags test`"] = time.perf_counter() - start
    return times
