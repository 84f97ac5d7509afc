"""The lifecycle's last loops, as plain functions Lab 1.4's DAGs wrap: deploy, monitor, retrain.

A trained, registered model meets "production": one batch of new digits a day. Each day,

    data/production/<ds>/      the day's images (and labels, which arrive later): production_day
    data/predictions/<ds>/     the model's answer for each image, with its fingerprint: predict_day
    data/monitoring/<ds>/      the day's statistics beside the training data's: monitor_day

and when the monitor finds drift, a retraining run trains on the data so far and replaces the
registered best only if it beats it on the same test images (``retrain``, ``challenge``).

The production data is MNIST's test split, drawn per day with a seed from the date, so every
rerun of a day sees the same images. From ``SHIFT_FROM`` on, a "new scanner" delivers them
rotated and noisy (``shift``): a drift the model was never trained on. Every labelled day is
cut in two halves: the first may be trained on by a retraining run, the second never is: it
is the exam on which a retrained model and the one in service are compared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.io import atomic_directory, atomic_write_json, file_lock

#: The course's production scenario: six days from 2024-02-01, the scanner changing on the
#: fourth. Any other date is a day like these: shifted from SHIFT_FROM on, normal before.
SCENARIO_START = "2024-02-01"
SCENARIO_DAYS = 6
SHIFT_FROM = "2024-02-04"
DAY_SIZE = 1000  # images a day; half of them (the second) the exam, never trained on
ROTATION, NOISE = 45.0, 40.0  # the new scanner: degrees, and the noise's std in grey levels


def scenario_days(start: str = SCENARIO_START, days: int = SCENARIO_DAYS) -> list[str]:
    """``days`` consecutive dates (YYYY-MM-DD) from ``start``."""
    first = dt.date.fromisoformat(start)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]


def is_shifted(ds: str) -> bool:
    """Whether the scenario's day ``ds`` comes from the new scanner."""
    return ds >= SHIFT_FROM


def _seed(ds: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{ds}".encode()).digest()[:4], "little")


def shift(images: np.ndarray, seed: int) -> np.ndarray:
    """The new scanner: each image rotated by ROTATION degrees, then Gaussian noise of std
    NOISE grey levels (seeded), clipped back to 0..255 uint8."""
    import torch
    import torchvision.transforms.functional as TF

    rotated = TF.rotate(
        torch.from_numpy(images).unsqueeze(1), ROTATION, TF.InterpolationMode.BILINEAR
    ).squeeze(1)
    noise = torch.randn(rotated.shape, generator=torch.Generator().manual_seed(seed)) * NOISE
    return (rotated.float() + noise).clamp(0, 255).round().to(torch.uint8).numpy()


def production_day(
    ds: str,
    data_root: str | os.PathLike[str],
    shifted: bool | None = None,
    size: int = DAY_SIZE,
    seed: int = 0,
) -> str:
    """Write the day's production batch to ``data/production/<ds>/`` and return the folder.

    ``size`` images of MNIST's test split, chosen by a generator seeded with the date (a
    rerun writes the same bytes); ``shifted`` (default: ``is_shifted(ds)``) passes them
    through the new scanner. Labels are stored beside them: in production they arrive days
    later, from people checking a sample; here they are what measures the model afterwards.
    """
    from shared import data

    data.check_date(ds)
    shifted = is_shifted(ds) if shifted is None else shifted
    root = Path(data_root)
    test = data.load_split(root, train=False)  # raises, naming the fix, if MNIST is missing
    rng = np.random.default_rng(_seed(ds, seed))
    idx = np.sort(rng.choice(len(test), size=size, replace=False))
    images = test.images.numpy()[idx]
    if shifted:
        images = shift(images, _seed(ds, seed + 1))
    arrays = {"images": images, "labels": test.labels.numpy()[idx].astype(np.uint8)}
    meta = {"shifted": shifted, "seed": seed, "size": size}
    if shifted:
        meta["scanner"] = f"rotated {ROTATION:g} degrees, noise std {NOISE:g}"
    return str(data.write_partition("production", ds, root, arrays, meta))


def fingerprint(image: np.ndarray) -> str:
    """sha256 of one image's bytes (16 hex digits): which input a prediction was for."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


def _normalized(images: np.ndarray):
    import torch

    from shared import data

    return data.Split(torch.from_numpy(images), torch.zeros(len(images))).normalized()


def predict_day(
    ds: str, model_dir: str | os.PathLike[str], data_root: str | os.PathLike[str]
) -> str:
    """The registered model's predictions for the day's images, written (whole, replacing a
    rerun's) to ``data/predictions/<ds>/predictions.json``: the model version, and for each
    image its fingerprint and predicted class. Returns the file's path."""
    from shared import data
    from shared.train import load_model, predict

    images = data.read_partition("production", ds, data_root)["images"]
    model, config = load_model(model_dir)
    predicted = predict(model, _normalized(images)).tolist()
    out = data.partition_dir("predictions", ds, data_root) / "predictions.json"
    atomic_write_json(out, {
        "ds": ds,
        "model": {"path": str(model_dir), "config_hash": config.hash()},
        "predictions": [{"input": fingerprint(im), "class": int(c)}
                        for im, c in zip(images, predicted, strict=True)],
    })  # fmt: skip
    return str(out)


def statistics(images: np.ndarray, classes: np.ndarray | list[int]) -> dict[str, Any]:
    """What a monitor can see without labels: the images' mean intensity (grey levels scaled
    to 0..1) and the share of each class among ``classes`` (predicted, or true labels for the
    training data)."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=10)
    return {
        "n": int(len(images)),
        "mean_intensity": round(float(images.mean()) / 255, 6),
        "class_shares": [round(float(c) / max(len(images), 1), 6) for c in counts],
    }


def reference(train_ds: str, data_root: str | os.PathLike[str]) -> dict[str, Any]:
    """The training data's statistics (the partition ``data/raw/<train_ds>/``): what a
    production day is compared with."""
    from shared import data

    arrays = data.read_partition("raw", train_ds, data_root)
    return statistics(arrays["train_images"], arrays["train_labels"])


def compare(day: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """How far a day is from the reference: the absolute difference of mean intensities,
    and the total variation distance between the class shares (half the sum of absolute
    differences: 0 = the same shares, 1 = no class in common)."""
    shares, ref_shares = np.array(day["class_shares"]), np.array(ref["class_shares"])
    return {
        "intensity_shift": round(abs(day["mean_intensity"] - ref["mean_intensity"]), 6),
        "class_shift": round(float(np.abs(shares - ref_shares).sum()) / 2, 6),
    }


def monitor_day(
    ds: str, predictions_path: str | os.PathLike[str], train_ds: str, data_root
) -> dict[str, Any]:
    """The day's statistics, the reference's, and how far apart they are (``compare``).
    Reads the day's images and predictions, never its labels (a monitor runs before they
    arrive). Deciding whether that is drift is the caller's: the threshold is a choice."""
    from shared import data

    images = data.read_partition("production", ds, data_root)["images"]
    predicted = [p["class"] for p in json.loads(Path(predictions_path).read_text())["predictions"]]
    day = statistics(images, predicted)
    ref = reference(train_ds, data_root)
    return {"ds": ds, "day": day, "reference": ref, **compare(day, ref)}


def write_report(ds: str, report: dict[str, Any], data_root: str | os.PathLike[str]) -> str:
    """The monitor's report, whole, at ``data/monitoring/<ds>/report.json`` (a rerun
    replaces it)."""
    from shared import data

    out = data.partition_dir("monitoring", ds, data_root) / "report.json"
    atomic_write_json(out, report)
    return str(out)


def day_accuracy(ds: str, data_root: str | os.PathLike[str]) -> float:
    """The share of the day's predictions that were right, once its labels have arrived."""
    from shared import data

    labels = data.read_partition("production", ds, data_root)["labels"]
    path = data.partition_dir("predictions", ds, data_root) / "predictions.json"
    predicted = np.array([p["class"] for p in json.loads(path.read_text())["predictions"]])
    return float((predicted == labels).mean())


# --------------------------------------------------------------------------- retraining


def production_days(data_root: str | os.PathLike[str], until: str) -> list[str]:
    """The dates of every production day written so far, up to and including ``until``."""
    folder = Path(data_root) / "production"
    days = sorted(p.parent.name for p in folder.glob("*/manifest.json"))
    return [d for d in days if not d.startswith(".") and d <= until]


def labelled_halves(data_root: str | os.PathLike[str], days: list[str]):
    """(train, exam): the days' labelled images, the first half of each day in ``train`` (a
    retraining run may learn from them), the second half in ``exam`` (never trained on: the
    test a retrained model and the model in service are compared on)."""
    import torch

    from shared import data

    halves: dict[str, list] = {"train": [], "exam": []}
    for ds in days:
        arrays = data.read_partition("production", ds, data_root)
        half = len(arrays["labels"]) // 2
        for name, part in (("train", slice(0, half)), ("exam", slice(half, None))):
            halves[name].append((arrays["images"][part], arrays["labels"][part]))

    def split(parts) -> data.Split:
        images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 28, 28), np.uint8)
        labels = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.uint8)
        return data.Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))

    return split(halves["train"]), split(halves["exam"])


def training_partition(best: dict[str, Any]) -> str:
    """The raw partition (its date) the registered model ``best`` (a best.json entry) was
    trained on: a retrained model names it in ``trained_on.json``; a pipeline run trained on
    the partition of its own date."""
    trained_on = Path(best["path"]) / "trained_on.json"
    if trained_on.is_file():
        return json.loads(trained_on.read_text())["train_partition"]
    return best["ds"]


def retrain(
    ds: str,
    train_ds: str,
    config_path: str,
    data_root: str | os.PathLike[str],
    runs_root: str | os.PathLike[str],
    overrides: list[str] | None = None,
    trainer: Callable[..., dict[str, Any]] | None = None,
) -> str:
    """Train ``config_path`` on the data so far: the training partition ``data/raw/<train_ds>``
    plus the first half of every production day up to ``ds``. The run lands (replacing a
    rerun's) in ``<runs_root>/retraining/<ds>/<run id>/`` with ``trained_on.json`` naming
    the days; returns the folder."""
    import torch

    from shared import data
    from shared.config import load_config
    from shared.pipeline import fit_replacing, splits_from_partition

    config = load_config(config_path, [*(overrides or []), "training.progress=false"])
    base = splits_from_partition(train_ds, data_root, config.data.val_fraction, config.seed)
    days = production_days(data_root, ds)
    new, _ = labelled_halves(data_root, days)
    train = data.Split(
        torch.cat([base.train.images, new.images]), torch.cat([base.train.labels, new.labels])
    )
    run_dir = fit_replacing(config, Path(runs_root) / "retraining" / ds / config.run_id(),
                            data.MNISTSplits(train, base.val, base.test), trainer=trainer,
                            log=lambda *a, **k: None)  # fmt: skip
    atomic_write_json(run_dir / "trained_on.json", {
        "train_partition": train_ds, "production_days": days,
        "images": len(train), "production_images": len(new),
    })  # fmt: skip
    return str(run_dir)


def exam_accuracy(model_dir: str | os.PathLike[str], exam) -> float:
    """The accuracy of the model in ``model_dir`` on ``exam`` (a data.Split)."""
    import torch

    from shared import data
    from shared.train import evaluate, load_model

    model, _ = load_model(model_dir)
    batches = data.tensor_batches(exam, 1000, False, 0)
    return float(evaluate(model, batches, torch.device("cpu"))["accuracy"])


def challenge(
    ds: str,
    challenger_dir: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    registry_root: str | os.PathLike[str],
) -> dict[str, Any]:
    """Compare a retrained model with the registered best on the same exam (the second half
    of every production day up to ``ds``) and register it, as the new best, only if it is
    strictly better there. Returns ``{"champion", "challenger", "test_set", "registered",
    "best"}``; the accuracies are both measured on ``test_set``."""
    from shared import pipeline

    registry = Path(registry_root) / "mnist"
    best_path = registry / "best.json"
    if not best_path.is_file():
        raise FileNotFoundError(f"{best_path}: no registered model to challenge")
    _, exam = labelled_halves(data_root, production_days(data_root, ds))
    if len(exam) == 0:
        raise ValueError(f"no labelled production days up to {ds}: nothing to compare on")
    test_set = pipeline.test_set_id(exam)
    champion = json.loads(best_path.read_text())
    scores = {
        "champion": exam_accuracy(champion["path"], exam),
        "challenger": exam_accuracy(challenger_dir, exam),
    }
    outcome = {**scores, "test_set": test_set, "champion_version": champion["version"]}
    if scores["challenger"] <= scores["champion"]:
        return {**outcome, "registered": False, "best": champion}
    version = f"{ds}-retrained-{Path(challenger_dir).name.rsplit('-', 1)[-1]}"
    with file_lock(registry / ".best.lock"):
        current = json.loads(best_path.read_text())
        if current["version"] != champion["version"]:  # another run moved it meanwhile
            return {**outcome, "registered": False, "best": current}
        target = registry / version
        with atomic_directory(target) as tmp:
            for name in ("checkpoint.pt", "config.yaml", "metrics.json", "trained_on.json"):
                shutil.copy2(Path(challenger_dir) / name, tmp / name)
            atomic_write_json(tmp / "registration.json", {
                "version": version, "source_run": str(challenger_dir), "ds": ds,
                "test_accuracy": scores["challenger"], "test_set": test_set,
                "replaced": champion["version"], "champion_accuracy": scores["champion"],
            })  # fmt: skip
        best = {"version": version, "path": str(target), "accuracy": scores["challenger"],
                "ds": ds, "test_set": test_set}  # fmt: skip
        atomic_write_json(best_path, best)
    return {**outcome, "registered": True, "best": best}


def normal_variation(
    model_dir: str | os.PathLike[str],
    train_ds: str,
    data_root: str | os.PathLike[str],
    batches: int = 20,
    size: int = DAY_SIZE,
    seed: int = 1,
) -> list[dict[str, float]]:
    """How far ``batches`` normal batches of ``size`` test images (drawn with ``seed``, not
    the scenario's) are from the training data, by the monitor's two statistics, with the
    model in ``model_dir`` predicting them: how much a normal day moves by chance alone."""
    from shared import data
    from shared.train import load_model, predict

    test = data.load_split(Path(data_root), train=False)
    model, _ = load_model(model_dir)
    ref = reference(train_ds, data_root)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        idx = np.sort(rng.choice(len(test), size=size, replace=False))
        images = test.images.numpy()[idx]
        out.append(compare(statistics(images, predict(model, _normalized(images)).numpy()), ref))
    return out
