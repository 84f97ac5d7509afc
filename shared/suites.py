"""What each lab is graded on: its check suite (``workbook grade`` runs these).

A suite is the lab's public self-checks (``shared.checks``, which the learner's notebook
also calls) plus instructor-only checks defined here, never in the notebook. Each check
names the variables it needs from the learner's kernel; the grader appends one cell per
check to the executed submission, and that cell calls :func:`run_in_kernel`. A missing
variable means the cell that defines it never ran: the check is *not run*, not a crash.

Instructor-only checks test the learner's code on inputs the notebook never shows (a new
date, a bigger sample, a second list), so an answer tuned to the visible check still has
to be right.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared import checks

Namespace = dict[str, Any]


class CheckNotRun(Exception):
    """The variables a check needs were never defined (an earlier cell failed or was skipped)."""


@dataclass(frozen=True)
class Check:
    """One graded check: ``run(namespace)`` raises (AssertionError or any error) on failure."""

    id: str
    what: str
    points: int
    needs: tuple[str, ...]
    run: Callable[[Namespace], None]
    public: bool = True  # the learner's notebook calls it too (a self-check)
    required: bool = True  # exit 0 needs every required check; optional ones only add points
    timeout: int = 120  # seconds for this check's cell, learner code included


@dataclass(frozen=True)
class Lab:
    id: str
    title: str
    notebook: str  # file name in solutions/ and labs/
    heading: re.Pattern[str]  # matches the first heading of the notebook
    parameters: dict[str, Any]  # what papermill injects when grading
    checks: tuple[Check, ...] = field(default=())

    @property
    def max_points(self) -> int:
        return sum(c.points for c in self.checks)

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(f"lab {self.id} has no check {check_id!r}")


def _public(check_fn, id: str, points: int, needs: tuple[str, ...], call, **kw) -> Check:
    return Check(id, check_fn.what, points, needs, call, public=True, **kw)


# --------------------------------------------------------------------------- 00 habits


def _write_totals_replaces(ns: Namespace) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "totals.csv"
        ns["write_totals"](path, [1, 2, 3])
        ns["write_totals"](path, [4])
        got = path.read_text()
    assert got == "4\n", (
        f"after writing [1, 2, 3] then [4] the file holds {got!r}; expected '4\\n': each run "
        "replaces the whole file (open with 'w'), one value per line"
    )


def _partition_rejects_impossible_dates(ns: Namespace) -> None:
    from pathlib import Path

    func = ns["partition_path"]
    assert Path(func("lake", "features", "2024-02-29")) == Path("lake/features/2024-02-29"), (
        "2024-02-29 (a leap day) must be accepted and give lake/features/2024-02-29"
    )
    for bad in ("2024-02-30", "2024-13-01"):
        try:
            func("lake", "features", bad)
        except ValueError:
            continue
        raise AssertionError(
            f"{bad!r} was accepted; parse ds as a real date (dt.date.fromisoformat)"
        )


# --------------------------------------------------------------------------- 01 Airflow


def _dag_file(ns: Namespace):
    from shared.airflow_local import load_dag_file

    return load_dag_file(ns["draft"])


def _dag_partitions_by_date(ns: Namespace) -> None:
    """Run the learner's DAG for a day the notebook never uses; outputs land in that day's
    partitions, and a rerun of the day leaves identical files."""
    import json

    from shared import airflow_local, paths

    bag = _dag_file(ns)
    error = airflow_local.first_import_error(bag)
    assert error is None, f"the DAG file does not import: {error}"
    dag = bag.get_dag("lab1_1_first_dag")
    assert dag is not None, "no DAG with dag_id 'lab1_1_first_dag'"
    ds = "2024-03-15"
    raw = paths.data_root() / "lab1_1" / "raw" / ds / "numbers.json"
    processed = paths.data_root() / "lab1_1" / "processed" / ds / "summary.json"
    states = airflow_local.run_dag(dag, ds)
    assert set(states.values()) == {"success"}, f"run for {ds}: {states}"
    assert raw.is_file() and processed.is_file(), (
        f"after a run for {ds} expected data/lab1_1/raw/{ds}/numbers.json and "
        f"data/lab1_1/processed/{ds}/summary.json: build the paths from ds, not a fixed date"
    )
    numbers = json.loads(raw.read_text())["numbers"]
    summary = json.loads(processed.read_text())
    assert summary.get("total") == sum(numbers), (
        f"summary total {summary.get('total')} is not the sum of that day's numbers {sum(numbers)}"
    )
    before = (raw.read_bytes(), processed.read_bytes())
    airflow_local.run_dag(dag, ds)
    assert (raw.read_bytes(), processed.read_bytes()) == before, (
        "a second run of the same day changed its files: tasks must overwrite, and draw their "
        "numbers from a generator seeded by ds"
    )


# --------------------------------------------------------------------------- 02 PyTorch


def _synthetic_split(n: int = 256):
    import torch

    from shared.data import Split

    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen)
    return Split(images, torch.arange(n) % 10)


#: Lab 1.2's hidden learning check: MyMLP + make_loader + train_epoch, one epoch of Adam
#: on 5,400 balanced images (0.4 s). The solution reaches 88.3 % (87.2-89.2 % over torch
#: seeds 0-3); without zero_grad 44-62 %, with labels shuffled against images 11-17 %.
LEARN_SUBSET, LEARN_THRESHOLD = 6000, 0.80


def _learns_mnist(ns: Namespace) -> None:
    import torch

    from shared import data, paths
    from shared.train import evaluate

    splits = data.load_splits(paths.data_root(), 0.1, seed=0, subset=LEARN_SUBSET)
    torch.manual_seed(0)
    model = ns["MyMLP"]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ns["train_epoch"](model, ns["make_loader"](splits.train, 64), optimizer)
    val = [(splits.val.normalized(), splits.val.labels)]
    accuracy = evaluate(model, val, torch.device("cpu"))["accuracy"]
    assert accuracy >= LEARN_THRESHOLD, (
        f"one epoch of your MyMLP, make_loader and train_epoch reached {accuracy:.1%} on "
        f"validation images; expected at least {LEARN_THRESHOLD:.0%}: check the loss "
        "(F.cross_entropy on logits), zero_grad/backward/step, and that the loader pairs "
        "each image with its own label"
    )


def _mlp_layer_sizes(ns: Namespace) -> None:
    model = ns["MyMLP"]()
    n = sum(p.numel() for p in model.parameters())
    expected = 784 * 128 + 128 + 128 * 10 + 10
    assert n == expected, (
        f"MyMLP has {n:,} parameters; the exercise's 784→128→10 layers have {expected:,}"
    )


def _same_predictions(ns: Namespace) -> None:
    import torch

    images = torch.randn(200, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    checks.same_predictions(ns["my_model"], ns["reloaded"], images)


# --------------------------------------------------------------------------- 03 configs


def _config_changes_only_what_was_asked(ns: Namespace) -> None:
    from shared.config import ConfigError, load_config
    from shared.paths import project_root

    try:
        mine = checks.config_from_text(ns["my_config_yaml"]).model_dump(exclude={"output"})
    except ConfigError as exc:
        raise AssertionError(f"your config does not load: {exc}") from None
    asked = ["model.name=mlp", "training.learning_rate=0.005", "training.epochs=1"]
    default = project_root() / "configs" / "default.yaml"
    expected = load_config(default, asked).model_dump(exclude={"output"})
    extra = sorted(
        f"{section}.{key}"
        for section, values in expected.items()
        if isinstance(values, dict)
        for key in values
        if mine[section][key] != values[key]
    ) + sorted(k for k, v in expected.items() if not isinstance(v, dict) and mine[k] != v)
    assert not extra, (
        f"your config also changes {', '.join(extra)}: extend default.yaml and set only "
        "model.name, training.learning_rate and training.epochs"
    )


# --------------------------------------------------------------------------- the suites

# One line per check: id, points, the names it needs, then how it is called (public: the
# self-check the notebook also calls; hidden: an instructor-only function above).
# fmt: off
_LAB_0 = (
    _public(checks.idempotent_writer, "idempotent_writer", 1, ("write_totals",),
            lambda ns: checks.idempotent_writer(ns["write_totals"])),
    Check("write_replaces", "a second write replaces the first (hidden case)", 1,
          ("write_totals",), _write_totals_replaces, public=False),
    _public(checks.partition_path, "partition_path", 1, ("partition_path",),
            lambda ns: checks.partition_path(ns["partition_path"])),
    Check("real_dates_only", "partition path accepts real dates only (hidden cases)", 1,
          ("partition_path",), _partition_rejects_impossible_dates, public=False),
    _public(checks.explicit_accuracy, "explicit_accuracy", 1, ("accuracy",),
            lambda ns: checks.explicit_accuracy(ns["accuracy"])),
)
_LAB_1_1 = (
    _public(checks.schedule_preset, "schedule_preset", 1, ("schedule",),
            lambda ns: checks.schedule_preset(ns["schedule"])),
    _public(checks.lab1_1_dag, "dag_structure", 3, ("draft",),
            lambda ns: checks.lab1_1_dag(_dag_file(ns))),
    _public(checks.all_succeeded, "all_succeeded", 1, ("states",),
            lambda ns: checks.all_succeeded(ns["states"])),
    Check("partitions_by_date", "the DAG writes a new day's partitions, rerun-safe (hidden: "
          "runs 2024-03-15)", 3, ("draft",), _dag_partitions_by_date, public=False, timeout=180),
)
_LAB_1_2 = (
    _public(checks.flatten_batch, "flatten", 1, ("flatten",),
            lambda ns: checks.flatten_batch(ns["flatten"])),
    _public(checks.gradient, "gradient", 1, ("grad_by_hand", "grad_by_autograd"),
            lambda ns: checks.gradient(ns["grad_by_hand"], ns["grad_by_autograd"])),
    _public(checks.model_output, "model_output", 2, ("MyMLP",),
            lambda ns: checks.model_output(ns["MyMLP"]())),
    Check("mlp_layer_sizes", "MyMLP has the 784→128→10 layers asked for", 1, ("MyMLP",),
          _mlp_layer_sizes, public=False, required=False),
    _public(checks.data_loader, "data_loader", 1, ("make_loader",),
            lambda ns: checks.data_loader(ns["make_loader"](_synthetic_split(), 32), 32)),
    _public(checks.train_loop, "train_loop", 3, ("train_epoch",),
            lambda ns: checks.train_loop(ns["train_epoch"])),
    _public(checks.evaluate_loop, "evaluate_loop", 2, ("evaluate",),
            lambda ns: checks.evaluate_loop(ns["evaluate"])),
    Check("learns_mnist", f"your pieces learn MNIST: ≥ {LEARN_THRESHOLD:.0%} after one epoch "
          "(hidden)", 2, ("MyMLP", "make_loader", "train_epoch"), _learns_mnist, public=False),
    _public(checks.same_predictions, "checkpoint_roundtrip", 1, ("my_model", "reloaded"),
            _same_predictions),
)
_LAB_1_3 = (
    _public(checks.my_config, "my_config", 3, ("my_config_yaml",),
            lambda ns: checks.my_config(ns["my_config_yaml"])),
    Check("only_what_was_asked", "your config changes nothing else (hidden)", 1,
          ("my_config_yaml",), _config_changes_only_what_was_asked, public=False,
          required=False),
)
# fmt: on

LABS: dict[str, Lab] = {
    lab.id: lab
    for lab in (
        Lab("0", "00 · The MLOps lifecycle and four habits", "00_mlops_lifecycle.ipynb",
            re.compile(r"^#\s*00\b"), {"config_path": "configs/smoke.yaml"}, _LAB_0),
        Lab("1.1", "Lab 1.1 · Your first Airflow DAG", "01_lab1_1_first_airflow_dag.ipynb",
            re.compile(r"^#\s*Lab 1\.1\b"),
            {"config_path": "configs/smoke.yaml", "ds": "2024-01-01"}, _LAB_1_1),
        Lab("1.2", "Lab 1.2 · Training a PyTorch model on MNIST",
            "02_lab1_2_pytorch_training.ipynb", re.compile(r"^#\s*Lab 1\.2\b"),
            {"config_path": "configs/smoke.yaml"}, _LAB_1_2),
        # The sweep runs package code, not the learner's, four notebooks deep: grading with
        # it would take a minute instead of ten seconds.
        Lab("1.3", "Lab 1.3 · Config-driven training", "03_lab1_3_config_driven_training.ipynb",
            re.compile(r"^#\s*Lab 1\.3\b"),
            {"config_path": "configs/smoke.yaml", "overrides": [], "sweep": False}, _LAB_1_3),
    )
}  # fmt: skip


def run_in_kernel(namespace: Namespace, lab_id: str, check_id: str) -> None:
    """Run one check against the learner's kernel namespace (the grader's appended cells call
    this). Raises CheckNotRun when a needed variable is missing; the check's own error when
    it fails; returns quietly when it passes."""
    check = LABS[lab_id].check(check_id)
    missing = [name for name in check.needs if name not in namespace]
    if missing:
        raise CheckNotRun(
            f"{' and '.join(missing)} never defined: the cell that defines "
            f"{'them' if len(missing) > 1 else 'it'} raised or never ran"
        )
    check.run(namespace)
