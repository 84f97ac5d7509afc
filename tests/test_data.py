"""Data: splits, subsets, the two loading paths, validation and date partitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared import data
from shared.data import DataValidationError, Split


def synthetic(n_per_class: int = 20, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 28, 28), generator=gen, dtype=torch.uint8)
    return Split(images, labels)


def test_train_val_split_is_seeded_and_disjoint():
    s = synthetic()
    a_train, a_val = data.train_val_split(s, 0.25, seed=1)
    b_train, b_val = data.train_val_split(s, 0.25, seed=1)
    _, c_val = data.train_val_split(s, 0.25, seed=2)
    assert len(a_val) == 50 and len(a_train) == 150
    assert torch.equal(a_val.images, b_val.images) and torch.equal(a_train.labels, b_train.labels)
    assert not torch.equal(a_val.images, c_val.images)
    keys = lambda sp: {bytes(img.numpy()) for img in sp.images}  # noqa: E731
    assert not keys(a_train) & keys(a_val)


def test_balanced_subset_is_deterministic_and_balanced():
    s = synthetic()
    sub = data.balanced_subset(s, 35, seed=0)
    assert len(sub) == 35
    counts = torch.bincount(sub.labels, minlength=10).tolist()
    assert max(counts) - min(counts) <= 1
    assert torch.equal(sub.images, data.balanced_subset(s, 35, seed=0).images)
    with pytest.raises(ValueError, match="only 20"):
        data.balanced_subset(s, 250, seed=0)


def test_tensor_batches_reshuffle_per_epoch_and_shard_evenly():
    s = synthetic(n_per_class=7)  # 70 samples: not divisible by 4
    b = data.tensor_batches(s, batch_size=8, shuffle=True, seed=3)
    first = torch.cat([y for _, y in b])
    assert len(first) == 70 and sorted(first.tolist()) == sorted(s.labels.tolist())
    b.set_epoch(1)
    second = torch.cat([y for _, y in b])
    assert not torch.equal(first, second)
    b.set_epoch(0)
    assert torch.equal(first, torch.cat([y for _, y in b])), "epoch-keyed order repeats exactly"
    shards = [data.tensor_batches(s, 8, True, 3, rank=r, world_size=4) for r in range(4)]
    sizes = [sum(len(y) for _, y in sh) for sh in shards]
    assert sizes == [17, 17, 17, 17] and len({len(sh) for sh in shards}) == 1


def test_fast_path_matches_the_classic_transform():
    s = synthetic(n_per_class=2)
    fast = next(iter(data.tensor_batches(s, 20, shuffle=False, seed=0)))
    classic = next(iter(data.dataloader_batches(s, 20, shuffle=False, seed=0)))
    assert fast[0].shape == classic[0].shape == (20, 1, 28, 28)
    assert torch.allclose(fast[0], classic[0], atol=1e-6)
    assert torch.equal(fast[1], classic[1])


def test_validate_passes_real_shaped_data_and_reports():
    s = synthetic()
    report = data.check_quality(s.images, s.labels, expected_count=200)
    assert report["ok"] and report["class_counts"] == [20] * 10
    assert set(report["checks"]) >= {"shape", "dtype", "nan", "label_range", "class_balance"}


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda x, y: (x[:, :27], y), "expected (N, 28, 28)"),
        (lambda x, y: (x.double(), y), "expected uint8"),
        (lambda x, y: (torch.full((200, 28, 28), float("nan")), y), "NaN"),
        (lambda x, y: (x, torch.where(y == 3, 11, y)), "labels must be integers 0-9; found 0..11"),
        (lambda x, y: (x, torch.where(y < 5, 0, y)), "class shares"),
        (lambda x, y: (x[:150], y), "150 images but 200 labels"),
    ],
    ids=["shape", "dtype", "nan", "label-range", "balance", "count"],
)
def test_validate_raises_with_a_report(mutate, expected):
    s = synthetic()
    x, y = mutate(s.images, s.labels)
    with pytest.raises(DataValidationError, match="data validation failed") as err:
        data.check_quality(x, y)
    assert expected in str(err.value)
    assert err.value.report["ok"] is False


def test_real_files_validate(mnist_root):
    report = data.validate_files(mnist_root)
    assert report["ok"] and report["train"]["n"] == 60_000 and report["test"]["n"] == 10_000


def test_load_splits_on_real_data(mnist_root):
    splits = data.load_splits(mnist_root, val_fraction=0.1, seed=0, subset=1000)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (900, 100, 200)
    assert torch.bincount(splits.test.labels).tolist() == [20] * 10


def test_missing_data_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="workbook data fetch"):
        data.load_splits(tmp_path, 0.1, 0)


def test_partitions_are_atomic_idempotent_and_checked(tmp_path):
    arrays = {"images": np.zeros((3, 28, 28), np.uint8), "labels": np.arange(3, dtype=np.uint8)}
    folder = data.write_partition("raw", "2024-01-01", tmp_path, arrays, {"source": "test"})
    assert folder == tmp_path / "raw" / "2024-01-01"
    (folder / "stale.txt").write_text("from an earlier attempt")
    data.write_partition("raw", "2024-01-01", tmp_path, arrays)  # rerun the same day
    assert sorted(p.name for p in folder.iterdir()) == ["images.npy", "labels.npy", "manifest.json"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["2024-01-01"], "no temp dirs"
    back = data.read_partition("raw", "2024-01-01", tmp_path)
    assert np.array_equal(back["labels"], arrays["labels"])
    raw = bytearray((folder / "labels.npy").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "labels.npy").write_bytes(bytes(raw))
    with pytest.raises(DataValidationError, match=r"labels.npy: sha256 .* \(corrupted partition\)"):
        data.read_partition("raw", "2024-01-01", tmp_path)


@pytest.mark.parametrize("ds", ["2024-1-1", "yesterday", "2024-02-30"])
def test_partition_dates_must_be_iso(tmp_path, ds):
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        data.partition_dir("raw", ds, tmp_path)
