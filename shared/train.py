"""Training and evaluation: loops that return metrics, checkpoints that resume exactly.

``fit(config)`` is the one entry point the CLI, the notebooks and the DAGs call. It writes a
run folder ``<output.root>/<name>-<config hash>/`` holding

* ``config.yaml``       the resolved config (every value, defaults included)
* ``checkpoint.pt``     model, optimizer, scheduler, epoch, RNG states, config, metrics, versions
* ``metrics.json``      per-epoch loss/accuracy for train and validation, test accuracy, times
* ``environment.json``  library versions, code version, device, threads

The same resolved config on the same machine gives identical weights and metrics; a run
stopped after epoch k and resumed from its checkpoint ends exactly where an uninterrupted
run ends. Under ``torchrun --nproc-per-node=N`` the same function trains with
DistributedDataParallel (gloo on CPU); rank 0 alone writes.
"""

from __future__ import annotations

import io
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared import paths
from shared.config import Config, TrainingConfig, save_config
from shared.io import atomic_directory, atomic_write_bytes, atomic_write_json, tqdm_disable

CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- set-up


class DeviceError(RuntimeError):
    """The config (or a command line) asks for a device this machine does not have."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: another format, or made with another config."""


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: the accelerator this machine has and can use (CUDA, Apple MPS, Intel XPU...,
    as ``torch.accelerator`` reports it), else the CPU; an explicit choice must be available."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if preference == "auto":
        return accelerator or torch.device("cpu")
    if preference != "cpu" and (accelerator is None or accelerator.type != preference):
        offered = accelerator.type if accelerator is not None else "none"
        raise DeviceError(
            f"training.device: {preference!r} requested, but this machine's accelerator is "
            f"{offered}; use 'auto' or 'cpu'"
        )
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and CUDA); the workbook draws no numpy randomness."""
    random.seed(seed)
    torch.manual_seed(seed)
    # cuBLAS is deterministic only with a fixed workspace; read when CUDA first starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Same config -> same weights. warn_only: a few CUDA kernels have no deterministic
    # version; on CPU every op we use is deterministic.
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params, lr, wd = list(model.parameters()), cfg.learning_rate, cfg.weight_decay
    # Adam's fused kernel updates every parameter in one pass: 0.35 ms per step instead of
    # 0.8 ms for the default per-tensor loop (the default CNN, 2 CPU cores), 3 % of an epoch.
    fused = {"fused": True} if params and params[0].device.type in ("cpu", "cuda") else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd, **fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # unreachable: schema checks


@dataclass
class Schedule:
    """A learning-rate scheduler and when it steps: after every batch or every epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_batch: bool

    def batch_done(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def epoch_done(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainingConfig, steps_per_epoch: int
) -> Schedule:
    """The learning-rate schedule ``cfg.scheduler`` names, for ``cfg.epochs`` epochs of
    ``steps_per_epoch`` optimizer steps. Hand it to ``train_one_epoch``, which steps the
    per-batch kinds (onecycle, cosine) after every batch, and call its ``epoch_done()`` after
    each epoch, which steps the per-epoch kind (step); ``none`` does nothing either way."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        # cycle_momentum=False: by default OneCycleLR also cycles momentum (Adam's beta1,
        # 0.95 -> 0.85 -> 0.95), silently overriding training.betas. Off, the config's
        # betas apply; [0.7, 0.9] measured 99.05 % mean, every seed of 0-4 at 99.0 % or more.
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.learning_rate, total_steps=total, cycle_momentum=False
        )
        return Schedule(sched, per_batch=True)
    if cfg.scheduler == "cosine":
        return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), True)
    if cfg.scheduler == "step":
        return Schedule(
            torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.step_gamma), False
        )
    return Schedule(None, per_batch=False)


# --------------------------------------------------------------------------- loops


def train_one_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    schedule: Schedule | None = None,
    progress: bool = False,
    desc: str = "train",
    after_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """One pass over ``batches`` (any iterable of ``(images, labels)`` pairs: a DataLoader,
    or the package's tensor batches), each moved to ``device``; steps ``schedule`` after
    every batch when it is a per-batch one. Returns {"loss": mean loss per sample,
    "accuracy", "samples", "seconds"}.

    ``after_step(i)``, if given, runs after optimizer step i (the benchmark evaluates there).
    """
    from tqdm.auto import tqdm

    model.train()
    start = time.perf_counter()
    # Running sums stay tensors on the device: ``.item()`` every step would make the CPU
    # wait for a GPU after each batch (on an H100 that wait is most of a step's time).
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    bar = tqdm(batches, desc=desc, leave=False, disable=tqdm_disable(progress), unit="batch")
    for step, (images, labels) in enumerate(bar):
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.batch_done()
        n = len(labels)
        total_loss += loss.detach() * n
        correct += (logits.argmax(1) == labels).sum()
        seen += n
        if not bar.disable and step % 20 == 0:  # a read of the loss syncs: not every step
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", refresh=False)
        if after_step is not None:
            after_step(step)
    return {
        "loss": total_loss.item() / max(seen, 1),
        "accuracy": correct.item() / max(seen, 1),
        "n": seen,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device) -> dict[str, float]:
    """Mean loss and accuracy over ``batches``, in eval mode (dropout off), without gradients."""
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    model.train(was_training)
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1), "n": seen}


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
) -> torch.Tensor:
    """Predicted class for each (normalised) image, in eval mode."""
    model.eval()
    out = [
        model(images[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def weights_digest(model: nn.Module | dict[str, torch.Tensor]) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes and bytes), 16 hex digits:
    two models with the same digest compute exactly the same function. Takes a model or its
    state dict (a checkpoint's ``model``: the checkpoint file's own bytes differ between
    saves of the same weights, since the archive inside names the temporary file)."""
    import hashlib

    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- checkpoints


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only
        "torchvision": str(torchvision.__version__),
        "numpy": numpy.__version__,
    }


def code_version() -> str:
    """The git commit of the project (with ``-dirty`` for local edits), or ``unknown``."""
    root = paths.project_root()
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """``torch.save`` into memory, then written through a temporary file, so a crash never
    leaves half a checkpoint. Saved to a file, the archive inside would be named after the
    temporary file; from memory it is always "archive", so the same state gives the same
    bytes (a rerun of a pipeline date leaves an identical checkpoint)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, no code runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}; expected {CHECKPOINT_FORMAT}"
        )
    return state


def load_model(source: str | os.PathLike[str]) -> tuple[nn.Module, Config]:
    """A trained model and its config, from a run folder or a checkpoint file."""
    from shared.config import Config as _Config
    from shared.model import build_model

    path = Path(source)
    state = load_checkpoint(path / "checkpoint.pt" if path.is_dir() else path)
    config = _Config.model_validate(state["config"])
    model = build_model(config.model)
    model.load_state_dict(state["model"])
    model.eval()
    return model, config


def as_config_model(model: nn.Module, config: Config) -> nn.Module:
    """``model``'s weights moved into ``build_model(config.model)``, on the CPU, in eval mode.

    Every checkpoint holds the weights of the config's own model, so that ``load_model``
    rebuilds any run from its config alone, whoever trained it. A model built elsewhere (a
    learner's ``nn.Sequential`` names its weights ``1.weight``, the package's MLP
    ``net.1.weight``) fits when its weights have the same shapes in the same order; the two
    are then run on one batch and must answer alike, so a model whose layers differ (another
    activation, another order) is refused rather than saved as something it is not.
    """
    import copy

    from shared.model import build_model

    target = build_model(config.model).eval()
    theirs, ours = list(model.state_dict().items()), list(target.state_dict().items())

    def shapes(items) -> list[tuple[int, ...]]:
        return [tuple(t.shape) for _, t in items]

    if shapes(theirs) != shapes(ours):
        raise CheckpointError(
            f"the trained model's weights have the shapes {shapes(theirs)}; the config's model "
            f"({config.model.name}, {config.model.model_dump(exclude={'name'})}) has "
            f"{shapes(ours)}: build the model from config.model, layer by layer as "
            "shared.model.build_model does"
        )
    target.load_state_dict(
        {name: t.detach().cpu().clone() for (name, _), (_, t) in zip(ours, theirs, strict=True)}
    )
    probe = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    mine = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        same = torch.allclose(mine(probe), target(probe), atol=1e-5)
    if not same:
        raise CheckpointError(
            f"the trained model has the weights of the config's {config.model.name} but computes "
            "something else with them (another activation, the layers in another order?): "
            "build it layer by layer as shared.model.build_model does"
        )
    return target


def save_trained_run(
    config: Config,
    result: dict[str, Any],
    seconds: float,
    run_dir: str | os.PathLike[str],
    trainer: str = "notebook",
    checkpoint: bool = False,
) -> Path:
    """Write a run folder for a model trained outside ``fit`` (a learner's
    ``train_from_config``), in ``fit``'s layout, atomically, replacing an earlier one.

    ``result`` is what the trainer returned: the trained ``model``, its ``history`` (one
    dict per epoch) and its ``test_accuracy``. The folder holds the resolved ``config.yaml``
    and ``metrics.json`` (with the weights' digest and ``trainer``, who trained it); with
    ``checkpoint``, also ``checkpoint.pt`` in the format ``load_model`` reads (the weights
    moved into the config's model by ``as_config_model``). Returns the folder.
    """
    from shared.model import count_parameters

    target = Path(run_dir)
    history = list(result["history"])
    model = as_config_model(result["model"], config) if checkpoint else result["model"]
    metrics = {
        "run_id": target.name,
        "config_hash": config.hash(),
        "model": config.model.name,
        "parameters": count_parameters(model),
        "epochs_completed": len(history),
        "completed": len(history) == config.training.epochs,
        "history": history,
        "train_seconds": seconds,
        "test": {"accuracy": float(result["test_accuracy"])},
        "weights_sha256": weights_digest(model),
        "trainer": trainer,
    }
    with atomic_directory(target) as tmp:
        save_config(config, tmp / "config.yaml")
        if checkpoint:
            save_checkpoint(tmp / "checkpoint.pt", {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "epoch": len(history),
                "config": config.to_dict(),
                "config_hash": config.hash(),
                "history": history,
                "trainer": trainer,
                "versions": library_versions(),
            })  # fmt: skip
        atomic_write_json(tmp / "metrics.json", metrics)
    return target


# --------------------------------------------------------------------------- distributed


@dataclass
class Processes:
    """This process's place among torchrun's: its rank and how many there are (1, 1 alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _join_processes(device: torch.device) -> Processes:
    """Join the process group that torchrun describes through RANK / WORLD_SIZE."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


def _all_reduce_sum(values: list[float], procs: Processes) -> list[float]:
    if procs.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


# --------------------------------------------------------------------------- fit


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: nn.Module = field(repr=False)
    completed: bool = True
    main_process: bool = True  # False on torchrun ranks other than 0, which write nothing


def run_dir_for(config: Config) -> Path:
    """``<output.root>/<name>-<hash>``: the same config always lands in the same folder."""
    return paths.resolve(config.output.root) / config.run_id()


def _batches(split, cfg: Config, shuffle: bool, procs: Processes, device: torch.device):
    from shared import data

    kw = {"rank": procs.rank, "world_size": procs.world_size} if shuffle else {}
    if cfg.data.loader == "dataloader":
        return data.dataloader_batches(split, cfg.training.batch_size, shuffle, cfg.seed, **kw)
    # the tensor path keeps the split on the training device (a GPU's memory, if any)
    return data.tensor_batches(
        split, cfg.training.batch_size, shuffle, cfg.seed, device=device, **kw
    )


def _set_epoch(batches, epoch: int, seed: int) -> None:
    """Key each epoch's shuffle on (seed, epoch), so a resumed run sees the same order."""
    if hasattr(batches, "set_epoch"):  # TensorBatches
        batches.set_epoch(epoch)
    elif hasattr(batches.sampler, "set_epoch"):  # DataLoader + DistributedSampler
        batches.sampler.set_epoch(epoch)
    elif batches.generator is not None:  # DataLoader shuffling with its own generator
        batches.generator.manual_seed(seed + epoch)


@dataclass
class _Run:
    """Everything one training run holds, passed between fit's steps."""

    config: Config
    run_dir: Path
    device: torch.device
    procs: Processes
    splits: Any
    batches: dict[str, Any]  # "train", "val", "test"
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    show: bool  # progress bars
    say: Any  # print on the main process, nothing elsewhere
    train_model: nn.Module | None = None  # the model, or its DistributedDataParallel wrapper
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def _prepare(config: Config, run_dir: Path, progress: bool | None, log, splits) -> _Run:
    """Device, process group, seeds, data splits as batches on the device, model,
    optimizer and schedule: everything before the first step, from the config alone."""
    from shared import data
    from shared.model import build_model

    device = select_device(config.training.device)
    procs = _join_processes(device)
    seed_everything(config.seed)
    if splits is None:
        root = paths.resolve(config.data.root)
        splits = data.load_splits(root, config.data.val_fraction, config.seed, config.data.subset)
    batches = {
        "train": _batches(splits.train, config, True, procs, device),
        "val": _batches(splits.val, config, False, procs, device),
        "test": _batches(splits.test, config, False, procs, device),
    }
    model = build_model(config.model).to(device)
    optimizer = make_optimizer(model, config.training)
    schedule = make_schedule(optimizer, config.training, len(batches["train"]))
    show = (config.training.progress if progress is None else progress) and procs.is_main
    say = log if procs.is_main else (lambda *_: None)
    return _Run(config, run_dir, device, procs, splits, batches, model, optimizer, schedule,
                show, say)  # fmt: skip


def _resume(run: _Run) -> None:
    """Model, optimizer, schedule, RNG states and history from the run's checkpoint, which
    must come from the same config: the rest of the run is then exactly the uninterrupted
    one's."""
    state = load_checkpoint(run.run_dir / "checkpoint.pt")
    if state["config_hash"] != run.config.hash():
        raise CheckpointError(
            f"{run.run_dir}: checkpoint was made with config hash {state['config_hash']}, "
            f"this config is {run.config.hash()}; resume needs the same config"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.schedule.scheduler is not None:
        run.schedule.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    run.history, run.start_epoch = list(state["history"]), int(state["epoch"])
    run.say(f"resuming {run.run_dir.name} after epoch {run.start_epoch}")


def _wrap_for_processes(run: _Run) -> None:
    """Under torchrun, train through DistributedDataParallel (it averages gradients across
    processes); alone, the model itself."""
    run.train_model = run.model
    if run.procs.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        run.train_model = DistributedDataParallel(run.model)


def _write_header(run: _Run) -> None:
    """The run folder's config.yaml and environment.json (main process), and one line
    saying what trains on what."""
    from shared.model import count_parameters

    if run.procs.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run.config, run.run_dir / "config.yaml")
        atomic_write_json(run.run_dir / "environment.json", {
            "versions": library_versions(),
            "code_version": code_version(),
            "device": str(run.device),
            "torch_threads": torch.get_num_threads(),
            "world_size": run.procs.world_size,
            "platform": platform.platform(),
        })  # fmt: skip
    s = run.splits
    run.say(
        f"run {run.run_dir.name}: {run.config.model.name} ({count_parameters(run.model):,} "
        f"parameters) on {run.device}, "
        f"{len(s.train):,} train / {len(s.val):,} val / {len(s.test):,} test images"
        + (f", {run.procs.world_size} processes" if run.procs.world_size > 1 else "")
    )


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """One epoch of training, then validation; returns the epoch's history entry (train
    figures summed over every process)."""
    epochs = run.config.training.epochs
    _set_epoch(run.batches["train"], epoch, run.config.seed)
    tr = train_one_epoch(
        run.train_model, run.batches["train"], run.optimizer, run.device, run.schedule,
        run.show, desc=f"epoch {epoch + 1}/{epochs}",
    )  # fmt: skip
    run.schedule.epoch_done()
    loss_sum, correct, n = _all_reduce_sum(
        [tr["loss"] * tr["n"], tr["accuracy"] * tr["n"], tr["n"]], run.procs
    )
    val = evaluate(run.model, run.batches["val"], run.device)
    h = {
        "epoch": epoch + 1,
        "train_loss": loss_sum / n,
        "train_accuracy": correct / n,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "seconds": tr["seconds"],
        "lr": run.optimizer.param_groups[0]["lr"],
    }
    run.say(
        f"epoch {epoch + 1}/{epochs}: train loss {h['train_loss']:.4f} "
        f"acc {h['train_accuracy']:.2%} | val loss {h['val_loss']:.4f} "
        f"acc {h['val_accuracy']:.2%} | {h['seconds']:.1f} s"
    )
    return h


def _metrics(run: _Run, completed: bool, test: dict[str, float] | None) -> dict[str, Any]:
    """metrics.json: what the run is, how far it got, its history and its test result."""
    from shared.model import count_parameters

    return {
        "run_id": run.run_dir.name,
        "config_hash": run.config.hash(),
        "model": run.config.model.name,
        "parameters": count_parameters(run.model),
        "device": str(run.device),
        "world_size": run.procs.world_size,
        "epochs_completed": len(run.history),
        "completed": completed,
        "history": run.history,
        "train_seconds": sum(h["seconds"] for h in run.history),
        "test": test,
        "weights_sha256": weights_digest(run.model),
    }


def _save_progress(run: _Run, epochs_done: int) -> None:
    """After each epoch (main process): a checkpoint that resumes exactly, and metrics.json
    marked not completed, so an interrupted run shows how far it got."""
    if not run.procs.is_main:
        return
    schedule = run.schedule.scheduler
    save_checkpoint(run.run_dir / "checkpoint.pt", {
        "format": CHECKPOINT_FORMAT,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": schedule.state_dict() if schedule else None,
        "epoch": epochs_done,
        "rng": _rng_state(),
        "config": run.config.to_dict(),
        "config_hash": run.config.hash(),
        "history": run.history,
        "versions": library_versions(),
    })  # fmt: skip
    atomic_write_json(run.run_dir / "metrics.json", _metrics(run, False, None))


def _finish(run: _Run) -> RunResult:
    """Test a completed run (never an interrupted one: the test set is read once, at the
    end), write the final metrics.json, wait for every process."""
    completed = len(run.history) >= run.config.training.epochs
    test = evaluate(run.model, run.batches["test"], run.device) if completed else None
    metrics = _metrics(run, completed, test)
    if run.procs.is_main:
        atomic_write_json(run.run_dir / "metrics.json", metrics)
    if test is not None:
        run.say(
            f"test accuracy {test['accuracy']:.2%} (loss {test['loss']:.4f}); "
            f"run folder {run.run_dir}"
        )
    if run.procs.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return RunResult(run.run_dir, metrics, run.model, completed, run.procs.is_main)


def fit(
    config: Config,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    progress: bool | None = None,
    log=print,
    splits=None,
) -> RunResult:
    """Train ``config`` to the end (or to ``stop_after_epoch``), writing the run folder.

    Args:
        config: a validated Config (``load_config``).
        run_dir: where to write; default ``run_dir_for(config)``.
        resume: continue from ``run_dir/checkpoint.pt``; its config hash must match.
        stop_after_epoch: stop after this many epochs, as an interrupted run would.
        progress: tqdm bars; default ``config.training.progress``.
        splits: data.MNISTSplits to train on instead of loading ``config.data.root``
            (the Airflow pipeline passes the day's partition).
    Returns:
        RunResult with the run folder, the metrics dict and the trained model.
    """
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(config)
    run = _prepare(config, run_dir, progress, log, splits)
    if resume:
        _resume(run)
    _wrap_for_processes(run)
    _write_header(run)
    epochs = config.training.epochs
    last = epochs if stop_after_epoch is None else min(stop_after_epoch, epochs)
    for epoch in range(run.start_epoch, last):
        run.history.append(_train_epoch(run, epoch))
        _save_progress(run, epoch + 1)
    return _finish(run)
