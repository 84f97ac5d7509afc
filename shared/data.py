"""MNIST for training: torchvision reads the files, tensors feed the loops.

Two ways to feed a model, side by side on purpose:

* the fast path (``loader: tensor``): each split held as one normalised float tensor, batches
  cut from a seeded permutation. No per-sample PIL work, so an MLP epoch takes ~1 s on
  2 cores instead of ~7 s;
* the classic path (``loader: dataloader``): ``torchvision.datasets.MNIST`` with
  ``ToTensor`` + ``Normalize`` through a ``DataLoader``, as most tutorials write it.

Both give batches of ``(images (B, 1, 28, 28) float32, labels (B,) int64)``.

Also here: a seeded train/validation split, a class-balanced subset for smoke runs,
``validate`` (a data-quality gate that returns a report and raises on failure) and the
date-partitioned layout the course teaches (``data/raw/<date>/``, ``data/processed/<date>/``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared import provision
from shared.io import atomic_directory

# Mean and std of the training pixels (scaled to [0, 1]), the classic MNIST constants.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class DataMissingError(FileNotFoundError):
    """The provisioned MNIST files are missing or do not match their digests."""


class DataValidationError(ValueError):
    """The data failed a check; ``report`` says which and why."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass
class Split:
    """One split as tensors: raw uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def normalized(self) -> torch.Tensor:
        """Float32 (N, 1, 28, 28), scaled to [0, 1] then standardised, as ToTensor+Normalize do."""
        return ((self.images.float() / 255 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


@dataclass
class MNISTSplits:
    train: Split
    val: Split
    test: Split


def _check_root(root: str | os.PathLike[str]) -> Path:
    root = Path(root)
    problems = provision.check(root)
    if problems:
        listed = "; ".join(f"{n}: {p}" for n, p in problems.items())
        raise DataMissingError(
            f"MNIST in {provision.raw_dir(root)} is not usable ({listed}). Run `workbook data fetch`."
        )
    return root


def torchvision_dataset(root: str | os.PathLike[str], train: bool, transform=None):
    """``torchvision.datasets.MNIST`` over the provisioned files (never downloads)."""
    from torchvision.datasets import MNIST

    return MNIST(str(root), train=train, download=False, transform=transform)


def load_split(root: str | os.PathLike[str], train: bool, verify: bool = True) -> Split:
    """The official training (60,000) or test (10,000) split as tensors."""
    if verify:
        _check_root(root)
    ds = torchvision_dataset(root, train=train)
    return Split(ds.data.clone(), ds.targets.clone().long())


#: Images in MNIST's official training split, before validation is held out.
TRAIN_IMAGES = 60_000


def training_images(subset: int | None, val_fraction: float) -> int:
    """How many images a config trains on: the (subset of the) training split, minus the
    validation images ``train_val_split`` holds out. No data is read."""
    total = subset if subset is not None else TRAIN_IMAGES
    return total - round(total * val_fraction)


def train_val_split(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """A seeded, disjoint split; the same seed always holds out the same images."""
    n_val = round(len(split) * val_fraction)  # training_images() counts the same way
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return (
        Split(split.images[train_idx], split.labels[train_idx]),
        Split(split.images[val_idx], split.labels[val_idx]),
    )


def balanced_subset(split: Split, size: int, seed: int) -> Split:
    """``size`` images, as equal per class as possible, chosen by ``seed`` (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(split.labels)
    per_class, extra = divmod(size, len(classes))
    chosen = []
    for i, c in enumerate(classes.tolist()):
        idx = (split.labels == c).nonzero().flatten()
        take = per_class + (1 if i < extra else 0)
        if take > len(idx):
            raise ValueError(f"subset of {size} needs {take} images of class {c}; only {len(idx)}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:take]])
    keep = torch.cat(chosen).sort().values
    return Split(split.images[keep], split.labels[keep])


def subset_test_size(subset: int, test_images: int) -> int:
    """How many test images go with a training subset of ``subset`` (smoke runs): a fifth,
    at least ten (one per class), at most the whole test split. The one rule for the notebook
    splits (``load_splits``) and the pipeline's partitions (``pipeline.ingest``)."""
    return min(test_images, max(10, subset // 5))


def load_splits(
    root: str | os.PathLike[str], val_fraction: float, seed: int, subset: int | None = None
) -> MNISTSplits:
    """Train / validation / test as tensors. ``subset`` shrinks train, val and test alike."""
    root = _check_root(root)
    full = load_split(root, train=True, verify=False)
    test = load_split(root, train=False, verify=False)
    if subset is not None:
        full = balanced_subset(full, subset, seed)
        test = balanced_subset(test, subset_test_size(subset, len(test)), seed)
    train, val = train_val_split(full, val_fraction, seed)
    return MNISTSplits(train, val, test)


class TensorBatches:
    """Batches cut from whole tensors, reshuffled each epoch by ``seed + epoch``.

    Seeding by epoch (not by a running generator) makes the order of epoch k the same
    whether training ran straight through or resumed from a checkpoint. With ``world_size``
    > 1 each rank takes its own, equally long, shard of every epoch's permutation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        # On a GPU the whole split lives in its memory (47 MB for MNIST's training set): a
        # batch is then an index into device memory, not a copy from the host every step.
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(n, generator=gen)
        else:
            idx = torch.arange(n)
        usable = n - n % self.world_size  # equal shards, or DDP ranks wait on each other forever
        return idx[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        per_rank = len(self.labels) // self.world_size
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices().to(self.labels.device)  # shuffled on the CPU: same order anywhere
        for start in range(0, len(idx), self.batch_size):
            b = idx[start : start + self.batch_size]
            yield self.images[b], self.labels[b]


def tensor_batches(split: Split, batch_size: int, shuffle: bool, seed: int, **kw) -> TensorBatches:
    """The fast path: normalise once, then slice batches."""
    return TensorBatches(split.normalized(), split.labels, batch_size, shuffle, seed, **kw)


def classic_transform():
    """``ToTensor`` + ``Normalize``: the per-sample pipeline of most MNIST tutorials."""
    from torchvision import transforms

    return transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )


class _SplitDataset(torch.utils.data.Dataset):
    """A Split read one PIL image at a time through the classic transform."""

    def __init__(self, split: Split):
        from PIL import Image

        self.split, self.transform, self._image = split, classic_transform(), Image.fromarray

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        img = self._image(self.split.images[i].numpy(), mode="L")
        return self.transform(img), int(self.split.labels[i])


def dataloader_batches(
    split: Split, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
) -> torch.utils.data.DataLoader:
    """The classic path: a DataLoader with per-sample PIL transforms, seeded shuffling."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    ds = _SplitDataset(split)
    if world_size > 1:
        sampler = DistributedSampler(ds, world_size, rank, shuffle=shuffle, seed=seed)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen)


# --------------------------------------------------------------------------- validation


def check_quality(
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    expected_count: int | None = None,
    max_class_share: float = 0.2,
    min_class_share: float = 0.02,
) -> dict[str, Any]:
    """A data-quality gate: shapes, dtype, label range, class balance, NaN.

    Returns a report ``{"ok": True, "checks": {...}, "class_counts": [...]}``; raises
    DataValidationError (with the same report) naming every failed check.
    """
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    y = torch.as_tensor(np.asarray(labels)) if isinstance(labels, np.ndarray) else labels
    checks: dict[str, str | None] = {}

    def check(name: str, ok: bool, why: str) -> None:
        checks[name] = None if ok else why

    check("shape", x.dim() in (3, 4) and tuple(x.shape[-2:]) == (28, 28),
          f"images have shape {tuple(x.shape)}; expected (N, 28, 28) or (N, 1, 28, 28)")  # fmt: skip
    check("count", len(x) == len(y), f"{len(x)} images but {len(y)} labels")
    if expected_count is not None:
        check(
            "expected_count",
            len(y) == expected_count,
            f"{len(y)} samples; expected {expected_count}",
        )
    check("dtype", x.dtype in (torch.uint8, torch.float32),
          f"images are {x.dtype}; expected uint8 (raw) or float32 (normalised)")  # fmt: skip
    nan = bool(x.is_floating_point() and torch.isnan(x).any())
    check("nan", not nan, "images contain NaN")
    y_ok = y.dim() == 1 and not y.is_floating_point()
    in_range = bool(y_ok and len(y) and y.min() >= 0 and y.max() <= 9)
    check("label_range", in_range, "labels must be integers 0-9" + (
        f"; found {int(y.min())}..{int(y.max())}" if y_ok and len(y) else ""))  # fmt: skip
    counts = torch.bincount(y.long().clamp(0, 9), minlength=10).tolist() if in_range else []
    if counts:
        shares = [c / len(y) for c in counts]
        check("class_balance", min(shares) >= min_class_share and max(shares) <= max_class_share,
              f"class shares {min(shares):.1%}..{max(shares):.1%} outside "
              f"{min_class_share:.0%}..{max_class_share:.0%}")  # fmt: skip
    failed = {k: v for k, v in checks.items() if v}
    report = {
        "ok": not failed,
        "n": len(y),
        "checks": {k: ("ok" if v is None else v) for k, v in checks.items()},
        "class_counts": counts,
    }
    if failed:
        raise DataValidationError("data validation failed: " + "; ".join(failed.values()), report)
    return report


def validate_files(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Digests of the provisioned files plus ``validate`` on both official splits."""
    problems = provision.check(root)
    if problems:
        report = {"ok": False, "digests": problems}
        raise DataValidationError(
            "MNIST files failed the digest check: "
            + "; ".join(f"{n}: {p}" for n, p in problems.items()),
            report,
        )
    report: dict[str, Any] = {"ok": True, "digests": "all 4 match the official sha256"}
    for name, train, n in (("train", True, 60_000), ("test", False, 10_000)):
        split = load_split(root, train=train, verify=False)
        report[name] = check_quality(split.images, split.labels, expected_count=n)
        if tuple(report[name]["class_counts"]) != provision.OFFICIAL_LABEL_COUNTS[name]:
            report["ok"] = False
            raise DataValidationError(f"{name} label counts differ from the official MNIST", report)
    return report


# --------------------------------------------------------------------------- partitions


def check_date(ds: str) -> str:
    """``ds`` must be an ISO date (YYYY-MM-DD), as Airflow's ``{{ ds }}`` is."""
    # fromisoformat alone also takes "20240101" and "2024-W01-1" (Python 3.11); the round
    # trip accepts exactly one spelling per day.
    try:
        valid = dt.date.fromisoformat(ds).isoformat() == ds
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"partition date {ds!r}: expected YYYY-MM-DD")
    return ds


#: The date-partitioned stages under data/: the pipeline's (raw, processed) and the
#: lifecycle's (production batches, predictions, monitoring reports; shared.lifecycle).
STAGES = ("raw", "processed", "production", "predictions", "monitoring")


def partition_dir(stage: str, ds: str, root: str | os.PathLike[str]) -> Path:
    """``<root>/<stage>/<ds>``, e.g. ``data/raw/2024-01-01``."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    return Path(root) / stage / check_date(ds)


def write_partition(
    stage: str,
    ds: str,
    root: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``arrays`` as .npy files plus ``manifest.json`` into the day's partition.

    The whole folder is built aside and swapped in, so rerunning a day replaces its
    partition (idempotent, no leftovers from an earlier attempt) and a reader never sees a
    half-written one.
    """
    import hashlib

    target = partition_dir(stage, ds, root)
    with atomic_directory(target) as tmp:
        files = {}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            data = (tmp / f"{name}.npy").read_bytes()
            files[f"{name}.npy"] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
            }
        manifest = {"stage": stage, "ds": ds, "files": files, **(meta or {})}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def read_partition(stage: str, ds: str, root: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a partition back, checking each file against its manifest digest."""
    import hashlib

    folder = partition_dir(stage, ds, root)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder}: no partition (manifest.json missing)")
    manifest = json.loads(manifest_path.read_text())
    out = {}
    for fname, info in manifest["files"].items():
        path = folder / fname
        if not path.is_file():
            raise DataValidationError(f"{path}: listed in the manifest but missing", manifest)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != info["sha256"]:
            raise DataValidationError(
                f"{path}: sha256 {digest[:12]}... differs from the manifest's "
                f"{info['sha256'][:12]}... (corrupted partition)",
                manifest,
            )
        out[fname.removesuffix(".npy")] = np.load(path, allow_pickle=False)
    return out
