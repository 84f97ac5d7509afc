"""Experiments: run a parameterised notebook with papermill, compare the runs it produced.

Used by ``workbook run``, by Lab 1.3 and by the ``notebook_experiments`` DAG, so the three
run notebooks and compare results the same way.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.io import atomic_path, atomic_write_text
from shared.paths import project_root
from shared.provision import sha256_file

#: The Jupyter kernel set-up registers (scripts/setup.sh): papermill runs every notebook on
#: it, wherever papermill is called from, so the project's interpreter and packages are used.
KERNEL_NAME = "mlops-workbook"
#: What an unwritten exercise's stub says (``raise NotImplementedError("not written yet: ...")``,
#: written by ``workbook.labs``): a saved notebook that still holds one is not ready to run.
UNWRITTEN = "not written yet"

#: Columns of the comparison table, in order.
COLUMNS = [
    "name", "model", "learning_rate", "batch_size", "epochs", "updates",
    "val_accuracy", "test_accuracy", "train_seconds", "config_hash",
]  # fmt: skip


def run_notebook(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parameters: dict[str, Any],
    kernel_name: str = KERNEL_NAME,
    timeout: int = 600,
    log_output: bool = False,
    cwd: str | os.PathLike[str] | None = None,
) -> Path:
    """Execute ``notebook`` with papermill into ``output`` (atomically); returns ``output``.

    ``kernel_name`` is explicit so the project's interpreter runs it wherever papermill is
    called from; ``timeout`` bounds each cell, so a hung kernel fails instead of stalling.
    A failed run still leaves the executed notebook (with the error) at ``output``, which is
    where a learner or an Airflow log points to look.
    """
    import papermill

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: no such notebook")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        tmp_nb = tmp.with_suffix(".ipynb")
        try:
            papermill.execute_notebook(
                str(notebook),
                str(tmp_nb),
                parameters=parameters,
                kernel_name=kernel_name,
                execution_timeout=timeout,
                log_output=log_output,
                progress_bar=False,
                cwd=str(cwd or notebook.parent),
            )
        except Exception:
            if tmp_nb.exists():
                os.replace(tmp_nb, output)  # keep the evidence
            raise
        os.replace(tmp_nb, tmp)
    return output


#: What an executed notebook's outputs depend on besides the notebook and its parameters:
#: the configs it reads, the library it imports (``shared``: a notebook imports nothing of
#: ``workbook``) and the locked environment. ``make demo`` and ``make site`` record this key
#: beside each execution, so the site reuses an execution that is still current.
_KEY_GLOBS = ("configs/**/*.yaml", "shared/**/*.py", "requirements.lock")


def execution_key(notebook: str | os.PathLike[str], parameters: dict[str, Any]) -> str:
    """sha256 of the notebook, its parameters and everything in ``_KEY_GLOBS`` of the
    checkout this package lives in (a sandbox project links its configs from there)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(Path(notebook).read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True).encode())
    for pattern in _KEY_GLOBS:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if "__pycache__" not in rel:
                digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _record_path(output: Path) -> Path:
    return output.with_name(output.name + ".run.json")


def run_recorded(
    notebook: str | os.PathLike[str],
    output: str | os.PathLike[str],
    parameters: dict[str, Any],
    timeout: int = 600,
) -> Path:
    """``run_notebook``, then a record beside ``output`` (``<name>.run.json``: the execution
    key, the output's sha256, the parameters, the project root it ran in, when and how
    long), written only after
    a successful run, so a failed or interrupted run is never taken for a current one."""
    import datetime
    import time

    notebook, output = Path(notebook), Path(output)
    key = execution_key(notebook, parameters)  # before the run: what it ran against
    _record_path(output).unlink(missing_ok=True)
    start = time.perf_counter()
    run_notebook(notebook, output, parameters, timeout=timeout)
    record = {
        "key": key,
        "output_sha256": sha256_file(output),
        "notebook": notebook.name,
        "parameters": parameters,
        "root": str(project_root()),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(_record_path(output), json.dumps(record, indent=2) + "\n")
    return output


def current_record(
    notebook: str | os.PathLike[str], output: str | os.PathLike[str], parameters: dict[str, Any]
) -> dict[str, Any] | None:
    """The record of ``output`` if it is an execution of ``notebook`` with ``parameters``
    against the files as they are now (the same key), and ``output`` is still the file that
    run wrote (its sha256); None if missing or stale."""
    output = Path(output)
    try:
        record = json.loads(_record_path(output).read_text())
    except (OSError, ValueError):
        return None
    if not output.is_file() or record.get("key") != execution_key(notebook, parameters):
        return None
    if record.get("output_sha256") != sha256_file(output):
        return None  # something else wrote that file since
    return record


def record_run(
    config, result: dict[str, Any], seconds: float, run_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write a run folder for a run trained outside ``train.fit`` (Lab 1.3's own
    ``train_from_config``), in the layout ``fit`` uses, so ``compare`` reads both alike:
    the resolved ``config.yaml`` and ``metrics.json`` (history, test accuracy, seconds, the
    weights' digest), written atomically, replacing an earlier run of the same config
    (``train.save_trained_run``). Returns the folder.
    """
    from shared.train import run_dir_for, save_trained_run

    target = Path(run_dir) if run_dir is not None else run_dir_for(config)
    return save_trained_run(config, result, seconds, target)


#: Where a learner's own experiment files go (Lab 1.3): beside the course's, in a folder of
#: their own that the repository ignores. The ``notebook_experiments`` DAG reads only the
#: course's (``configs/experiments/*.yaml``).
MINE = Path("configs") / "experiments" / "mine"


def write_my_experiments(files: dict[str, str]) -> Path:
    """Write a learner's experiment files (``{"name.yaml": yaml text}``) into ``MINE``,
    replacing what an earlier run of the cell wrote there; returns the folder. A name that
    is not a plain ``*.yaml`` file name is refused (ValueError), before anything is written."""
    if not isinstance(files, dict) or not files:
        raise ValueError("my_experiments must be a dict of file name -> YAML text")
    for name, text in files.items():
        if not (isinstance(name, str) and name.endswith(".yaml") and Path(name).name == name):
            raise ValueError(f"{name!r}: a file name such as 'my_change.yaml', without folders")
        if not isinstance(text, str):
            raise ValueError(f"{name}: its YAML must be a string, not {type(text).__name__}")
    folder = project_root() / MINE
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        atomic_write_text(folder / name, text)
    return folder


def saved_notebook_problems(notebook: str | os.PathLike[str], *functions) -> list[str]:
    """Why running the *saved* ``notebook`` (papermill reads the file, not the open tab)
    would not run the code this kernel has: exercises still stubbed in the file, or a
    function whose current source is not in the file (edited but not saved)."""
    import inspect

    import nbformat

    nb = nbformat.read(Path(notebook), as_version=4)
    problems = []
    stubbed = [
        i for i, c in enumerate(nb.cells, 1)
        if c.cell_type == "code" and any(
            "raise NotImplementedError(" in line and UNWRITTEN in line
            for line in c.source.splitlines()
        )
    ]  # fmt: skip
    if stubbed:
        cells = ", ".join(map(str, stubbed))
        problems.append(f"the saved file still has unwritten exercises (cells {cells})")
    saved = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for func in functions:
        try:
            source = inspect.getsource(func).strip()
        except (OSError, TypeError):
            continue
        if source not in saved:
            problems.append(f"{func.__name__} differs from the saved file (edited, not saved)")
    return problems


LAB_1_3 = "03_lab1_3_config_driven_training.ipynb"


def notebook_for_experiments(root: str | os.PathLike[str]) -> tuple[Path, str]:
    """The Lab 1.3 notebook an experiment sweep runs, and why: the learner's own
    (``labs/``) once every exercise in the saved file is written, else the solution."""
    root = Path(root)
    mine = root / "labs" / LAB_1_3
    if not mine.is_file():
        return _solution(root, f"there is no {mine.name} in labs/")
    problems = saved_notebook_problems(mine)
    if problems:
        return _solution(root, f"your labs/{mine.name} has {problems[0]}")
    return mine, "yours: every exercise in it is written"


def _solution(root: Path, why: str) -> tuple[Path, str]:
    """The solution, where there is one; a learner release has none (ValueError)."""
    solution = root / "solutions" / LAB_1_3
    if not solution.is_file():
        raise ValueError(f"Lab 1.3's notebook cannot run yet: {why}; finish and save it first")
    return solution, f"the solution: {why}"


def summarize_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One comparison row from a run folder's config.yaml and metrics.json."""
    from shared.config import load_config

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = load_config(run_dir / "config.yaml")
    last = metrics["history"][-1] if metrics["history"] else {}
    from shared.data import training_images

    # Optimizer steps: what an epoch budget buys at this batch size.
    n_train = training_images(cfg.data.subset, cfg.data.val_fraction)
    steps = metrics["epochs_completed"] * -(-n_train // cfg.training.batch_size)
    return {
        "name": cfg.output.name,
        "model": cfg.model.name,
        "learning_rate": cfg.training.learning_rate,
        "batch_size": cfg.training.batch_size,
        "epochs": metrics["epochs_completed"],
        "updates": steps,
        "val_accuracy": round(last.get("val_accuracy", float("nan")), 4),
        "test_accuracy": round((metrics.get("test") or {}).get("accuracy", float("nan")), 4),
        "train_seconds": round(metrics["train_seconds"], 1),
        "config_hash": metrics["config_hash"],
    }


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def compare(
    run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> dict[str, str]:
    """Write comparison.csv, comparison.md and comparison.png for ``run_dirs`` into ``out_dir``.

    Rows are sorted by test accuracy, best first. Returns the three paths.
    """
    from shared import plots

    out = Path(out_dir)
    summaries = [(summarize_run(d), Path(d)) for d in run_dirs]
    rows = sorted((row for row, _ in summaries), key=lambda r: -r["test_accuracy"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "comparison.csv", buf.getvalue())
    atomic_write_text(out / "comparison.md", to_markdown(rows))
    runs = {row["name"]: json.loads((d / "metrics.json").read_text()) for row, d in summaries}
    plots.save(plots.compare_runs(runs), out / "comparison.png")
    return {k: str(out / f"comparison.{k}") for k in ("csv", "md", "png")}
