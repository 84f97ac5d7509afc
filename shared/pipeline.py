"""The MNIST training pipeline's steps, as plain functions the DAG's tasks wrap.

ingest -> validate -> train -> evaluate -> register. Each step takes explicit paths and a
partition date (``ds``), writes only under its own date-partitioned, run-scoped folder, and
returns a path or a small dict (what XCom should carry: never the data itself). Rerunning
a date replaces that date's outputs, so a retry or a rerun leaves no duplicates.

Layout (all relative to the project root unless paths are given):

    data/raw/<ds>/                  the day's images and labels + manifest.json (ingest)
    data/processed/<ds>/            validation report (validate)
    runs/pipeline/<ds>/<run id>/    config, checkpoint, metrics (train), evaluation.json (evaluate)
    registry/mnist/<ds>-<hash>/     registered model: checkpoint + config + metrics (register)
    registry/mnist/best.json        pointer to the best registered version so far
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import atomic_directory, atomic_write_json, file_lock


def run_folder_name(ds: str | None, run_id: str | None) -> str:
    """The folder a DAG run's outputs go under: its logical date (``ds``), or, for a run
    triggered without one (Airflow 3 allows that for manual runs), its run id made safe as a
    folder name (``manual__2026-11-28T02:00:00+00:00`` -> ``manual__2026-11-28T02-00-00-00-00``)."""
    if ds:
        return ds
    if not run_id:
        raise ValueError("a run with neither a logical date nor a run id has no folder name")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-.") or "run"


#: What a date-partitioned DAG says when triggered without a logical date.
NEEDS_LOGICAL_DATE = (
    "{dag_id} partitions its data by logical date (data/raw/<ds>/), and this run has none: "
    "trigger it with a logical date (the UI's trigger form, or "
    "`airflow dags trigger {dag_id} --logical-date 2024-01-01`)"
)


def ingest(
    ds: str, data_root: str | os.PathLike[str], subset: int | None = None, seed: int = 0
) -> str:
    """Provision MNIST (a no-op when verified) and write the day's raw partition.

    ``subset`` keeps a class-balanced sample (smoke runs); None keeps all 70,000 images.
    Returns the partition folder.
    """
    from shared import data, provision

    root = Path(data_root)
    provision.fetch(root)
    train = data.load_split(root, train=True, verify=False)
    test = data.load_split(root, train=False, verify=False)
    if subset is not None:
        train = data.balanced_subset(train, subset, seed)
        test = data.balanced_subset(test, data.subset_test_size(subset, len(test)), seed)
    arrays = {
        "train_images": train.images.numpy(),
        "train_labels": train.labels.numpy().astype(np.uint8),
        "test_images": test.images.numpy(),
        "test_labels": test.labels.numpy().astype(np.uint8),
    }
    sources = {
        n: provision.sha256_file(provision.raw_dir(root) / n) for n in provision.OFFICIAL_SHA256
    }
    folder = data.write_partition(
        "raw", ds, root, arrays, {"subset": subset, "seed": seed, "sources": sources}
    )
    return str(folder)


def validate_partition(ds: str, data_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the day's partition (digests, shapes, dtype, labels, balance); raise on failure.

    The report is written to ``data/processed/<ds>/validation.json`` and returned.
    """
    from shared import data

    arrays = data.read_partition("raw", ds, data_root)  # raises on a digest mismatch
    report = {"ds": ds, "ok": True}
    for split in ("train", "test"):
        try:
            report[split] = data.check_quality(arrays[f"{split}_images"], arrays[f"{split}_labels"])
        except data.DataValidationError as exc:
            raise data.DataValidationError(
                f"partition data/raw/{ds}: {split} split: {exc}", exc.report
            ) from None
    target = data.partition_dir("processed", ds, data_root)
    with atomic_directory(target) as tmp:
        (tmp / "validation.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return {"ok": True, "train": report["train"]["n"], "test": report["test"]["n"]}


def _partition_split(arrays: dict[str, np.ndarray], name: str):
    """The ``train`` or ``test`` arrays of a partition as a data.Split (int64 labels)."""
    import torch

    from shared import data

    return data.Split(
        torch.from_numpy(arrays[f"{name}_images"]),
        torch.from_numpy(arrays[f"{name}_labels"].astype(np.int64)),
    )


def splits_from_partition(ds: str, data_root, val_fraction: float, seed: int):
    """The day's raw partition as train / validation (a seeded split) / test."""
    from shared import data

    arrays = data.read_partition("raw", ds, data_root)
    train, val = data.train_val_split(_partition_split(arrays, "train"), val_fraction, seed)
    return data.MNISTSplits(train, val, _partition_split(arrays, "test"))


def train(
    ds: str,
    config_path: str,
    data_root: str | os.PathLike[str],
    runs_root: str | os.PathLike[str],
    overrides: list[str] | None = None,
    trainer: Callable[..., dict[str, Any]] | None = None,
) -> str:
    """Train the config on the day's partition; returns the run folder.

    ``trainer`` is a learner's ``train_from_config(config, splits=...)`` (Lab 1.4, loaded by
    ``load_trainer``); without one, ``shared.train.fit`` trains. The run lands in
    ``<runs_root>/pipeline/<ds>/<name>-<hash>/``: a rerun of the same day and config
    replaces it.
    """
    from shared.config import load_config

    config = load_config(config_path, [*(overrides or []), "training.progress=false"])
    splits = splits_from_partition(ds, data_root, config.data.val_fraction, config.seed)
    run_dir = Path(runs_root) / "pipeline" / ds / config.run_id()
    return str(fit_replacing(config, run_dir, splits, trainer=trainer))


def fit_replacing(
    config,
    run_dir: Path,
    splits,
    trainer: Callable[..., dict[str, Any]] | None = None,
    log: Callable[..., None] = print,
) -> Path:
    """Train ``config`` on ``splits`` into ``run_dir``, replacing what a previous attempt left
    there: a rerun starts from nothing and never mixes attempts (idempotency). With
    ``shared.train.fit``, or with ``trainer`` (see ``run_trainer``). Returns the folder."""
    from shared.train import fit

    if run_dir.exists():
        shutil.rmtree(run_dir)
    if trainer is not None:
        return run_trainer(trainer, config, splits, run_dir)
    return fit(config, run_dir=run_dir, splits=splits, progress=False, log=log).run_dir


class TrainerError(ValueError):
    """A learner's trainer broke the pipeline's contract: it is missing, cannot be called
    as ``train_from_config(config, splits=...)``, or returned something else."""


def load_trainer(path: str | os.PathLike[str], name: str = "train_from_config") -> Callable:
    """The function ``name`` of the Python file ``path`` (the learner's trainer module, beside
    the DAG that trains with it), loaded afresh on every call: a task runs the file as it
    is now, and a module of the same name elsewhere (the draft, the promoted copy, an old
    import) is never mixed up with it."""
    import hashlib
    import importlib.util
    import sys

    from shared import paths

    path = Path(path).resolve()
    if not path.is_file():
        raise TrainerError(
            f"{paths.show(path)}: no such file: write it, and promote it beside the DAG file "
            "that loads it"
        )
    module_name = "workbook_trainer_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # what the module defines may look itself up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    function = getattr(module, name, None)
    if not callable(function):
        raise TrainerError(f"{paths.show(path)} defines no function {name}")
    return function


def trainer_name(trainer: Callable) -> str:
    """``runs/lab1_4/dags/my_trainer.py:train_from_config``: which code trained a run."""
    import inspect

    from shared import paths

    where = inspect.getsourcefile(trainer) or getattr(trainer, "__module__", "?")
    return f"{paths.show(Path(where))}:{getattr(trainer, '__name__', type(trainer).__name__)}"


def call_trainer(
    trainer: Callable[..., dict[str, Any]], config, splits
) -> tuple[dict[str, Any], float]:
    """``trainer(config, splits=splits)`` and the seconds it took, after checking that it can
    take the splits and before trusting what it returned: TrainerError, naming what to
    change, when it cannot or did not return a model, its history and its test accuracy."""
    import inspect
    import time

    from torch import nn

    name = trainer_name(trainer)
    try:
        inspect.signature(trainer).bind(config, splits=splits)
    except TypeError:
        raise TrainerError(
            f"{name}{inspect.signature(trainer)}: the pipeline calls it as "
            "train_from_config(config, splits=...), to train on the day's partition; give it "
            "a splits parameter (None: load config.data, as in Lab 1.3)"
        ) from None
    start = time.perf_counter()
    result = trainer(config, splits=splits)
    seconds = time.perf_counter() - start
    expected = ("model", "history", "test_accuracy")
    missing = [k for k in expected if k not in result] if isinstance(result, dict) else []
    if not isinstance(result, dict) or missing or not isinstance(result["model"], nn.Module):
        raise TrainerError(
            f"{name} returned {type(result).__name__}"
            + (f" without {missing}" if isinstance(result, dict) and missing else "")
            + ": return a dict with the trained model (an nn.Module), its history and its "
            "test_accuracy"
        )
    return result, seconds


def run_trainer(trainer: Callable[..., dict[str, Any]], config, splits, run_dir: Path) -> Path:
    """Train with a learner's ``trainer(config, splits=splits)`` (``call_trainer``) and write
    its run folder: ``config.yaml``, ``metrics.json`` (naming the trainer) and a
    ``checkpoint.pt`` in the registry's format (``train.save_trained_run``)."""
    from shared.train import save_trained_run

    result, seconds = call_trainer(trainer, config, splits)
    return save_trained_run(
        config, result, seconds, run_dir, trainer=trainer_name(trainer), checkpoint=True
    )


def evaluate_run(
    run_dir: str | os.PathLike[str], ds: str, data_root: str | os.PathLike[str]
) -> dict[str, Any]:
    """Evaluate the trained model on the partition's test split; writes evaluation.json."""
    import torch

    from shared import data
    from shared.train import evaluate as evaluate_model
    from shared.train import load_model

    run_dir = Path(run_dir)
    model, config = load_model(run_dir)
    test = _partition_split(data.read_partition("raw", ds, data_root), "test")
    result = evaluate_model(model, data.tensor_batches(test, 1000, False, 0), torch.device("cpu"))
    metrics = {
        "ds": ds,
        "run_dir": str(run_dir),
        "config_hash": config.hash(),
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "n": result["n"],
        "test_set": test_set_id(test),
    }
    atomic_write_json(run_dir / "evaluation.json", metrics)
    return metrics


def test_set_id(split) -> dict[str, Any]:
    """What an accuracy was measured on: the number of test images and a digest of them and
    their labels. Two accuracies compare only when these match (a smoke run's 240 images
    against a full run's 10,000 compares two different exams)."""
    import hashlib

    digest = hashlib.sha256()
    digest.update(split.images.contiguous().numpy().tobytes())
    digest.update(split.labels.contiguous().numpy().tobytes())
    return {"n": len(split.labels), "digest": digest.hexdigest()[:16]}


def _comparable(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Measured on the same test images (two records that never said, as before test sets
    were recorded, count as the same)."""
    return a == b


def register(
    run_dir: str | os.PathLike[str], metrics: dict[str, Any], registry_root: str | os.PathLike[str]
) -> dict[str, Any]:
    """Copy the run into the registry; point ``best.json`` at it only if it beats the best.

    Two runs (two DAGs, or a DAG and a learner) may register at once: the copy and the
    read-modify-write of ``best.json`` happen under one file lock, so neither loses the
    other's update. Returns ``{"version", "path", "accuracy", "is_best", "best"}``.
    """
    run_dir, registry = Path(run_dir), Path(registry_root) / "mnist"
    version = f"{metrics['ds']}-{metrics['config_hash']}"
    target = registry / version
    accuracy = float(metrics["test_accuracy"])
    with file_lock(registry / ".best.lock"):
        with atomic_directory(target) as tmp:
            for name in ("checkpoint.pt", "config.yaml", "metrics.json", "evaluation.json"):
                shutil.copy2(run_dir / name, tmp / name)
            registration = {"version": version, "source_run": str(run_dir), **metrics}
            atomic_write_json(tmp / "registration.json", registration)
        best_path = registry / "best.json"
        best = json.loads(best_path.read_text()) if best_path.is_file() else None
        test_set = metrics.get("test_set")
        entry = _best_entry(version, target, accuracy, metrics["ds"], test_set)
        if best is None:
            best = entry
            atomic_write_json(best_path, best)
        elif not _comparable(best.get("test_set"), test_set):
            # Another exam: an accuracy on other test images says nothing about this one. A
            # run measured on more images than the best's (or a best that never said what it
            # was measured on) is superseded (a full run after smoke runs); otherwise the
            # pointer stays, and the answer's "comparable" says why.
            old = best.get("test_set")
            if test_set and (old is None or test_set["n"] > old["n"]):
                best = entry
                atomic_write_json(best_path, best)
        # Strictly better only: a run that ties the current best leaves the pointer alone.
        elif accuracy > float(best["accuracy"]):
            best = entry
            atomic_write_json(best_path, best)
        elif best["version"] == version and accuracy != float(best["accuracy"]):
            # The best version was just replaced by a rerun that scored lower: the pointer
            # must not keep the old score for the new model. The best is whichever
            # registered version scores highest now on the same test set (this one on a tie).
            best = _highest(registry, prefer=version, test_set=test_set)
            atomic_write_json(best_path, best)
        is_best = best["version"] == version
    return {
        "version": version,
        "path": str(target),
        "accuracy": accuracy,
        "is_best": is_best,
        "comparable": _comparable(best.get("test_set"), test_set),
        "best": best,
    }


def _best_entry(
    version: str, path: Path, accuracy: float, ds: str, test_set: dict[str, Any] | None
) -> dict[str, Any]:
    return {"version": version, "path": str(path), "accuracy": accuracy, "ds": ds,
            "test_set": test_set}  # fmt: skip


def _highest(registry: Path, prefer: str, test_set: dict[str, Any] | None) -> dict[str, Any]:
    """The registered version with the highest accuracy on ``test_set`` (``prefer`` wins a
    tie). Folders whose names start with a dot are writes in progress or left by a crash
    (``atomic_directory``), not registrations."""
    entries = []
    for reg in registry.glob("*/registration.json"):
        if reg.parent.name.startswith("."):
            continue
        r = json.loads(reg.read_text())
        if _comparable(r.get("test_set"), test_set):
            entries.append(_best_entry(r["version"], reg.parent, float(r["test_accuracy"]),
                                       r["ds"], r.get("test_set")))  # fmt: skip
    return max(entries, key=lambda e: (e["accuracy"], e["version"] == prefer))


def outputs_fingerprint(
    ds: str, data_root: str | os.PathLike[str], runs_root: str | os.PathLike[str]
) -> dict[str, str]:
    """What a run for ``ds`` left behind, as {path: digest}: every file of the day's data
    partitions byte for byte; of each training run, its config, its evaluation and its
    weights. A training run also records how long each epoch took (metrics.json, the
    checkpoint's history), which no rerun repeats: those files count by the weights they hold.
    Two equal fingerprints mean a rerun changed nothing that was computed."""
    import hashlib

    from shared.train import load_checkpoint, weights_digest

    found: dict[str, str] = {}
    folders = [Path(data_root) / stage / ds for stage in ("raw", "processed")]
    for folder in [*folders, Path(runs_root) / "pipeline" / ds]:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if not path.is_file() or any(p.startswith(".") for p in path.parts[-3:]):
                continue
            name = path.relative_to(Path(folder).parent.parent).as_posix()
            if path.name == "checkpoint.pt":
                found[name] = "weights " + weights_digest(load_checkpoint(path)["model"])
            elif path.name not in ("metrics.json", "environment.json"):
                found[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return found
