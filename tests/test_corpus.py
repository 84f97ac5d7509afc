"""An instructor's adversarial corpus: for each graded item, wrong answers a learner plausibly
writes (a mistake, not sabotage) and a correct answer in another style than the solution's,
each graded by the lab's real checks, public and hidden, as the grader runs them
(``suites.run_in_kernel`` on a namespace), and each with the verdict it must get: a wrong
one loses points with a message that names its mistake, a correct one keeps them all.

Every exercise whose answer is a few lines of Python (Labs 0 and 1.2a, Lab 1.1's cron, Lab
1.2b's model, data, device and loops, Lab 1.3's config, Lab 1.4's backfill prediction) is here;
the DAG, script and pipeline exercises, which need Airflow runs and files, have theirs in
tests/test_grade.py (planted bugs, graded for real), tests/test_checks.py and
tests/test_lifecycle.py. ``python -m pytest tests/test_corpus.py
-q -rA`` lists every verdict.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass

import pytest

from shared import checks
from workbook.grading import suites

#: What the notebooks import before their exercises.
PRELUDE = """
import datetime as dt
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2
"""


@dataclass(frozen=True)
class Variant:
    lab: str
    item: str  # the exercise (its answer's name in the notebook)
    name: str
    source: str  # the learner's cell(s), run after PRELUDE (and the item's SETUP)
    expect: str  # "pass", or a phrase of the message of a check that must fail


#: What a cell needs that the notebook defined before the exercise.
SETUP = {
    "unsure_explicit": """
scale = 255
threshold = 0.9

def normalise(pixels, scale=scale):
    return [p / scale for p in pixels]

def accuracy(predictions, labels):
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)

def unsure(probabilities):
    return [i for i, p in enumerate(probabilities) if p < threshold]
""",
    "class_counts": """
from shared import data, paths
splits = data.load_splits(paths.data_root(), 0.1, 0, 600)
""",
    "pixel_mean": """
from shared import data, paths
splits = data.load_splits(paths.data_root(), 0.1, 0, 600)
""",
}

LOOP = dict(zip(checks.LOOP_QUIZ, ["data", "data", "model", "deployment", "deployment",
                                   "monitoring"], strict=True))  # fmt: skip
TOOL = dict(zip(checks.TOOL_QUIZ, ["Airflow", "PyTorch", "Airflow", "PyTorch", "Airflow",
                                   "PyTorch", "neither", "neither"], strict=True))  # fmt: skip


def _quiz(name: str, answers: dict[str, str], **changes: str) -> str:
    """``name = {...}`` with the answers, some changed (by the question's first word)."""
    changed = {
        q: next((v for k, v in changes.items() if q.startswith(k.replace("_", " "))), a)
        for q, a in answers.items()
    }
    return f"{name} = {changed!r}"


WRITER = """
def write_totals(path, values):
{body}
"""


def writer(body: str) -> str:
    return WRITER.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))


PARTITION = """
def partition_path(root, stage, ds):
{body}
"""


def partition(body: str) -> str:
    return PARTITION.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))


SETTINGS = """
belongs_in_config = {names}

def settings_from_config(config):
{body}
"""


def settings(names: str, body: str) -> str:
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return SETTINGS.format(names=names, body=body)


UNSURE = """
hidden_global = {name!r}

def unsure_explicit(probabilities, threshold):
{body}
"""


def unsure(body: str, name: str = "threshold") -> str:
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return UNSURE.format(name=name, body=body)


CRON = {"weekdays at 02:30": "30 2 * * 1-5", "every 15 minutes": "*/15 * * * *",
        "first of the month at midnight": "0 0 1 * *"}  # fmt: skip


def _cron(**changes: str) -> str:
    return f"cron = {CRON | changes!r}"


TRAIN_EPOCH = """
def train_epoch(model, loader, optimizer, device):
    model.train()
    total, seen = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        seen += len(labels)
    return total / seen
"""
EVALUATE = """
def evaluate(model, loader, device):
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(1) == labels).sum().item()
            total += len(labels)
    return correct / total
"""
#: my_fit calls the learner's own two loops: the correct ones above.
SETUP["my_fit"] = TRAIN_EPOCH + EVALUATE
MY_FIT = """
def my_fit(model, train_loader, val_loader, epochs, lr, device):
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(1, epochs + 1):
        train_loss = train_epoch(model, train_loader, optimizer, device)
        val_accuracy = evaluate(model, val_loader, device)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_accuracy": val_accuracy})
    return history
"""

CORPUS = [
    # ---------------------------------------------------------------- Lab 0: the two quizzes
    Variant("0", "loop_of", "all_correct_capitalised",
            _quiz("loop_of", {q: a.capitalize() for q, a in LOOP.items()}), "pass"),
    Variant("0", "loop_of", "logging_is_monitoring", _quiz("loop_of", LOOP, log="monitoring"),
            "log every prediction"),
    Variant("0", "loop_of", "validation_is_model", _quiz("loop_of", LOOP, check="model"),
            "expected columns"),
    Variant("0", "loop_of", "left_as_given", _quiz("loop_of", dict.fromkeys(LOOP, None)),
            "no answer yet"),
    Variant("0", "tool_of", "all_correct_spaced",
            _quiz("tool_of", {q: f" {a} " for q, a in TOOL.items()}), "pass"),
    Variant("0", "tool_of", "checkpoint_is_airflow", _quiz("tool_of", TOOL, save="Airflow"),
            "checkpoint"),
    Variant("0", "tool_of", "metric_is_pytorch", _quiz("tool_of", TOOL, decide="PyTorch"),
            "metric"),
    Variant("0", "tool_of", "archive_is_airflow", _quiz("tool_of", TOOL, keep="Airflow"),
            "five years"),
    # ---------------------------------------------------------------- Lab 0: the crash-safe writer
    Variant("0", "write_totals", "named_temporary_file", writer("""
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as f:
            for v in values:
                print(v, file=f)
        os.replace(f.name, path)
    """), "pass"),
    Variant("0", "write_totals", "in_place", writer("""
        with open(path, "w") as f:
            for v in values:
                f.write(f"{v}\\n")
    """), "a crash halfway left"),
    Variant("0", "write_totals", "appends", writer("""
        with open(path, "a") as f:
            for v in values:
                f.write(f"{v}\\n")
    """), "a rerun must leave the same file"),
    Variant("0", "write_totals", "hides_the_error", writer("""
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "w") as f:
                for v in values:
                    f.write(f"{v}\\n")
            os.replace(tmp, path)
        except Exception:
            pass
    """), "hides the error"),
    # collects every value first, then writes in place: a crash of the values is safe, a
    # crash while writing (a full disk, a killed process) is not
    Variant("0", "write_totals", "collect_then_write_in_place", writer("""
        text = "".join(f"{v}\\n" for v in values)
        path.write_text(text)
    """), "in place"),
    # ---------------------------------------------------------------- Lab 0: partition paths
    Variant("0", "partition_path", "strptime_round_trip", partition("""
        try:
            day = dt.datetime.strptime(ds, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"bad date {ds!r}") from None
        if day.strftime("%Y-%m-%d") != ds:
            raise ValueError(f"bad date {ds!r}")
        return Path(root, stage, ds)
    """), "pass"),
    Variant("0", "partition_path", "no_check", partition("""
        return Path(root) / stage / ds
    """), "was accepted"),
    Variant("0", "partition_path", "fromisoformat_only", partition("""
        dt.date.fromisoformat(ds)
        return Path(root) / stage / ds
    """), "'20240101' (another spelling) was accepted"),
    Variant("0", "partition_path", "regex_only", partition(r"""
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", ds):
            raise ValueError(ds)
        return Path(root) / stage / ds
    """), "'2024-02-30' (a day that does not exist) was accepted"),
    Variant("0", "partition_path", "strptime_only", partition("""
        dt.datetime.strptime(ds, "%Y-%m-%d")
        return Path(root) / stage / ds
    """), "'2024-1-05' was accepted"),
    Variant("0", "partition_path", "strips_spaces", partition("""
        ds = ds.strip()
        if dt.date.fromisoformat(ds).isoformat() != ds:
            raise ValueError(ds)
        return Path(root) / stage / ds
    """), "'2024-01-05 ' was accepted"),
    # ---------------------------------------------------------------- Lab 0: settings in the config
    Variant("0", "settings_from_config", "list_and_comprehension",
            settings('["epochs", "batch_size", "learning_rate"]', """
        return {k: config["training"][k] for k in belongs_in_config}
    """), "pass"),
    Variant("0", "settings_from_config", "pixels_too",
            settings('{"learning_rate", "batch_size", "epochs", "pixels"}', """
        return {k: config["training"][k] for k in belongs_in_config}
    """), "'pixels' is in belongs_in_config"),
    Variant("0", "settings_from_config", "forgot_epochs",
            settings('{"learning_rate", "batch_size"}', """
        return {k: config["training"][k] for k in belongs_in_config}
    """), "1 experiment setting is missing"),
    Variant("0", "settings_from_config", "values_copied_from_the_printout",
            settings('{"learning_rate", "batch_size", "epochs"}', """
        return {"learning_rate": 0.006, "batch_size": 128, "epochs": 1}
    """), "read each value from the config you are given"),
    Variant("0", "settings_from_config", "top_level_keys",
            settings('{"learning_rate", "batch_size", "epochs"}', """
        return {k: config[k] for k in belongs_in_config}
    """), "raised while checking"),
    # ---------------------------------------------------------------- Lab 0: explicit inputs
    Variant("0", "unsure_explicit", "numpy", unsure("""
        return [int(i) for i in np.flatnonzero(np.asarray(probabilities) < threshold)]
    """), "pass"),
    Variant("0", "unsure_explicit", "names_the_default_parameter", unsure("""
        return [i for i, p in enumerate(probabilities) if p < threshold]
    """, name="scale"), "'scale' is not read when any of the three functions runs"),
    Variant("0", "unsure_explicit", "still_reads_the_global", unsure("""
        return [i for i, p in enumerate(probabilities) if p < globals()["threshold"]]
    """), "unsure_explicit"),
    Variant("0", "unsure_explicit", "at_most_not_below", unsure("""
        return [i for i, p in enumerate(probabilities) if p <= threshold]
    """), "returned [0, 2]"),
    Variant("0", "unsure_explicit", "probabilities_not_positions", unsure("""
        return [p for p in probabilities if p < threshold]
    """), "returned [0.5]"),
    # ---------------------------------------------------------------- Lab 1.3: a config of one's own
    Variant("1.3", "my_config_yaml", "flow_style_dot_slash", '''
my_config_yaml = """
extends: ./default.yaml
model: {name: mlp, hidden_sizes: [256, 64]}
training: {epochs: 3, learning_rate: 8.0e-4}
"""
''', "pass"),
    Variant("1.3", "my_config_yaml", "layers_reversed", '''
my_config_yaml = """
extends: default.yaml
model: {name: mlp, hidden_sizes: [64, 256]}
training: {epochs: 3, learning_rate: 0.0008}
"""
''', "names two, in order"),
    Variant("1.3", "my_config_yaml", "default_learning_rate", '''
my_config_yaml = """
extends: default.yaml
model: {name: mlp, hidden_sizes: [256, 64]}
training: {epochs: 3}
"""
''', "a tenth of the default's"),
    Variant("1.3", "my_config_yaml", "a_smaller_batch_too", '''
my_config_yaml = """
extends: default.yaml
model: {name: mlp, hidden_sizes: [256, 64]}
training: {epochs: 3, learning_rate: 0.0008, batch_size: 64}
"""
''', "also changes training.batch_size"),
    Variant("1.3", "my_config_yaml", "everything_from_scratch", '''
my_config_yaml = """
model: {name: mlp, hidden_sizes: [256, 64]}
training: {epochs: 3, learning_rate: 0.0008}
"""
''', "does not extend default.yaml"),
    # ---------------------------------------------------------------- Lab 1.2a: flatten
    Variant("1.2a", "flatten", "reshape_len", "def flatten(images):\n    return images.reshape(len(images), -1)\n", "pass"),
    Variant("1.2a", "flatten", "everything", "def flatten(images):\n    return images.flatten()\n", "became (50176,)"),
    Variant("1.2a", "flatten", "fixed_batch_size", "def flatten(images):\n    return images.view(64, -1)\n", "the last, smaller batch"),
    Variant("1.2a", "flatten", "fixed_image_size", "def flatten(images):\n    return images.reshape(-1, 784)\n", "(5, 3, 8, 8)"),
    Variant("1.2a", "flatten", "channels_first_transposed", "def flatten(images):\n    return images.transpose(0, 1).reshape(len(images), -1)\n", "row 3 does not hold image 3"),
    # ---------------------------------------------------------------- Lab 1.2a: a gradient
    Variant("1.2a", "grad_by_hand", "float_and_item", """
grad_by_hand = 14.0
x = torch.tensor(2.0, requires_grad=True)
(x**3 + 2 * x).backward()
grad_by_autograd = x.grad.item()
""", "pass"),
    Variant("1.2a", "grad_by_hand", "forgot_a_term", """
grad_by_hand = 3 * 2**2
x = torch.tensor(2.0, requires_grad=True)
(x**3 + 2 * x).backward()
grad_by_autograd = x.grad
""", "by hand you got 12"),
    Variant("1.2a", "grad_by_hand", "the_value_not_the_slope", """
grad_by_hand = 2**3 + 2 * 2
x = torch.tensor(2.0, requires_grad=True)
y = x**3 + 2 * x
y.backward()
grad_by_autograd = y
""", "by hand you got 12"),
    Variant("1.2a", "grad_by_hand", "no_backward", """
grad_by_hand = 14
x = torch.tensor(2.0, requires_grad=True)
y = x**3 + 2 * x
grad_by_autograd = x.grad
""", "grad_by_autograd is None"),
    Variant("1.2a", "grad_by_hand", "gradient_of_y_read_from_y", """
grad_by_hand = 14
x = torch.tensor(2.0, requires_grad=True)
y = x**3 + 2 * x
y.backward()
grad_by_autograd = y.item()
""", "autograd gave 12.0"),
    # ---------------------------------------------------------------- Lab 1.2a: class counts
    Variant("1.2a", "class_counts", "unique_with_counts",
            "class_counts = torch.unique(splits.train.labels, return_counts=True)[1]\n", "pass"),
    Variant("1.2a", "class_counts", "shares",
            "class_counts = torch.bincount(splits.train.labels, minlength=10) / len(splits.train.labels)\n",
            "these are shares"),
    Variant("1.2a", "class_counts", "the_test_split",
            "class_counts = torch.bincount(splits.test.labels, minlength=10)\n", "add up to"),
    Variant("1.2a", "class_counts", "histc_float",
            "class_counts = torch.histc(splits.train.labels.float(), bins=10, min=0, max=9)\n",
            "not per digit"),
    Variant("1.2a", "class_counts", "labels_of_the_first_batch",
            "class_counts = torch.bincount(splits.train.labels[:64], minlength=10)\n", "add up to"),
    # ---------------------------------------------------------------- Lab 1.1: cron
    Variant("1.1", "cron", "names_and_ranges", _cron(**{
        "weekdays at 02:30": "30 2 * * mon-fri", "every 15 minutes": "0-59/15 * * * *",
        "first of the month at midnight": "0 0 1 * *"}), "pass"),
    Variant("1.1", "cron", "hour_and_minute_swapped", _cron(**{
        "weekdays at 02:30": "2 30 * * 1-5"}), "weekdays at 02:30"),
    Variant("1.1", "cron", "weekdays_from_sunday", _cron(**{
        "weekdays at 02:30": "30 2 * * 0-4"}), "weekdays at 02:30"),
    Variant("1.1", "cron", "at_minute_15", _cron(**{"every 15 minutes": "15 * * * *"}),
            "every 15 minutes"),
    Variant("1.1", "cron", "every_day_at_midnight", _cron(**{
        "first of the month at midnight": "0 0 * * *"}), "first of the month"),
    Variant("1.1", "cron", "month_field_for_day", _cron(**{
        "first of the month at midnight": "0 0 * 1 *"}), "first of the month"),
    # ---------------------------------------------------------------- Lab 1.2b: the MLP
    Variant("1.2b", "MyMLP", "layers_by_name_and_functional_relu", """
class MyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(28 * 28, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x.flatten(1))))
""", "pass"),
    Variant("1.2b", "MyMLP", "no_nonlinearity", """
class MyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Linear(128, 10))

    def forward(self, x):
        return self.layers(x)
""", "your model is linear in its input"),
    Variant("1.2b", "MyMLP", "dropout_instead_of_relu", """
class MyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 10))

    def forward(self, x):
        return self.layers(x)
""", "your model is linear in its input"),
    Variant("1.2b", "MyMLP", "gelu_and_dropout", """
class MyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.GELU(),
                                    nn.Dropout(0.2), nn.Linear(128, 10))

    def forward(self, x):
        return self.layers(x)
""", "pass"),
    Variant("1.2b", "MyMLP", "softmax_at_the_end", """
class MyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
                                    nn.Linear(128, 10), nn.Softmax(dim=1))

    def forward(self, x):
        return self.layers(x)
""", "logits"),
    Variant("1.2b", "MyMLP", "hidden_64", """
class MyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.layers(x)
""", "784→128→10"),
    Variant("1.2b", "MyMLP", "layers_made_in_forward", """
class MyMLP(nn.Module):
    def forward(self, x):
        return nn.Linear(128, 10)(F.relu(nn.Linear(784, 128)(x.flatten(1))))
""", "parameters"),
    # ---------------------------------------------------------------- Lab 1.2b: pixel statistics
    Variant("1.2b", "pixel_mean", "numpy_float64", """
values = splits.train.images.numpy().astype("float64") / 255
pixel_mean, pixel_std = float(values.mean()), float(values.std())
""", "pass"),
    Variant("1.2b", "pixel_mean", "not_scaled", """
pixels = splits.train.images.float()
pixel_mean, pixel_std = pixels.mean().item(), pixels.std().item()
""", "[0, 1]"),
    Variant("1.2b", "pixel_mean", "the_test_split", """
pixels = splits.test.images.float() / 255
pixel_mean, pixel_std = pixels.mean().item(), pixels.std().item()
""", "training split"),
    Variant("1.2b", "pixel_mean", "the_tutorials_numbers", """
pixel_mean, pixel_std = 0.1307, 0.3081
""", "training split"),
    Variant("1.2b", "pixel_mean", "tensors_not_floats", """
pixels = splits.train.images.float() / 255
pixel_mean, pixel_std = pixels.mean(), pixels.std()
""", "float"),
    # ---------------------------------------------------------------- Lab 1.2b: the transform
    Variant("1.2b", "mnist_transform", "keywords_and_tuples", """
def mnist_transform(mean, std):
    return v2.Compose([v2.ToImage(), v2.ToDtype(dtype=torch.float32, scale=True),
                       v2.Normalize(mean=(mean,), std=(std,))])
""", "pass"),
    Variant("1.2b", "mnist_transform", "not_scaled", """
def mnist_transform(mean, std):
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32), v2.Normalize([mean], [std])])
""", "scale"),
    Variant("1.2b", "mnist_transform", "the_tutorials_numbers", """
def mnist_transform(mean, std):
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([0.1307], [0.3081])])
""", "with the statistics it is given"),
    Variant("1.2b", "mnist_transform", "mean_and_std_swapped", """
def mnist_transform(mean, std):
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([std], [mean])])
""", "the other way round"),
    # ---------------------------------------------------------------- Lab 1.2b: the loader
    Variant("1.2b", "make_loader", "list_of_pairs", """
def make_loader(split, batch_size):
    pairs = list(zip(split.normalized(), split.labels))
    return DataLoader(pairs, batch_size=batch_size, shuffle=True)
""", "pass"),
    Variant("1.2b", "make_loader", "no_shuffle", """
def make_loader(split, batch_size):
    return DataLoader(TensorDataset(split.normalized(), split.labels), batch_size=batch_size)
""", "shuffle"),
    Variant("1.2b", "make_loader", "raw_images", """
def make_loader(split, batch_size):
    return DataLoader(TensorDataset(split.images, split.labels), batch_size=batch_size,
                      shuffle=True)
""", "(B, 1, 28, 28) floats"),
    Variant("1.2b", "make_loader", "images_shuffled_apart_from_labels", """
def make_loader(split, batch_size):
    images = split.normalized()[torch.randperm(len(split.labels))]
    return DataLoader(TensorDataset(images, split.labels), batch_size=batch_size, shuffle=True)
""", "with another image's label"),
    Variant("1.2b", "make_loader", "batch_size_fixed", """
def make_loader(split, batch_size):
    return DataLoader(TensorDataset(split.normalized(), split.labels), batch_size=64,
                      shuffle=True)
""", "batch"),
    # ---------------------------------------------------------------- Lab 1.2b: the device
    Variant("1.2b", "pick_device", "one_expression", """
def pick_device():
    return torch.device(torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu")
""", "pass"),
    Variant("1.2b", "pick_device", "always_cuda", """
def pick_device():
    return torch.device("cuda")
""", "cuda"),
    Variant("1.2b", "pick_device", "a_string", """
def pick_device():
    return "cuda" if torch.cuda.is_available() else "cpu"
""", "torch.device"),
    Variant("1.2b", "pick_device", "accelerator_unchecked", """
def pick_device():
    return torch.accelerator.current_accelerator() or torch.device("cpu")
""", "usable"),
    # ---------------------------------------------------------------- Lab 1.2b: the training loop
    Variant("1.2b", "train_epoch", "summed_loss_set_to_none", """
def train_epoch(model, loader, optimizer, device):
    model.train()
    total, seen = 0.0, 0
    for images, labels in loader:
        optimizer.zero_grad(set_to_none=True)
        out = model(images.to(device))
        batch_sum = F.cross_entropy(out, labels.to(device), reduction="sum")
        (batch_sum / len(labels)).backward()
        optimizer.step()
        total, seen = total + batch_sum.item(), seen + len(labels)
    return total / seen
""", "pass"),
    Variant("1.2b", "train_epoch", "no_train_mode", TRAIN_EPOCH.replace("    model.train()\n", ""),
            "never told the model it is training"),
    Variant("1.2b", "train_epoch", "no_zero_grad", TRAIN_EPOCH.replace(
        "        optimizer.zero_grad()\n", ""), "old gradients cleared"),
    Variant("1.2b", "train_epoch", "no_step", TRAIN_EPOCH.replace("        optimizer.step()\n", ""),
            "step"),
    Variant("1.2b", "train_epoch", "mean_of_batch_means", TRAIN_EPOCH.replace(
        "total += loss.item() * len(labels)", "total += loss.item()").replace(
        "seen += len(labels)", "seen += 1"), "average over samples"),
    Variant("1.2b", "train_epoch", "labels_left_behind", TRAIN_EPOCH.replace(
        "images, labels = images.to(device), labels.to(device)", "images = images.to(device)"),
        "move the images and the labels"),
    # ---------------------------------------------------------------- Lab 1.2b: the evaluation loop
    Variant("1.2b", "evaluate", "inference_mode_and_mean", """
def evaluate(model, loader, device):
    model.eval()
    hits = []
    with torch.inference_mode():
        for images, labels in loader:
            hits.append(model(images.to(device)).argmax(dim=1).eq(labels.to(device)))
    return torch.cat(hits).float().mean().item()
""", "pass"),
    Variant("1.2b", "evaluate", "compared_on_the_cpu", """
def evaluate(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            predictions = model(images.to(device)).argmax(1).cpu()
            correct += int((predictions == labels).sum())
    return correct / len(loader.dataset)
""", "pass"),
    Variant("1.2b", "evaluate", "no_eval_mode", EVALUATE.replace("    model.eval()\n", ""),
            "dropout"),
    Variant("1.2b", "evaluate", "a_tensor", EVALUATE.replace(
        "correct += (model(images).argmax(1) == labels).sum().item()",
        "correct += (model(images).argmax(1) == labels).sum()"), "float"),
    Variant("1.2b", "evaluate", "mean_of_batch_accuracies", """
def evaluate(model, loader, device):
    model.eval()
    accs = []
    with torch.no_grad():
        for images, labels in loader:
            accs.append((model(images.to(device)).argmax(1) == labels.to(device)).float().mean().item())
    return sum(accs) / len(accs)
""", "over all samples"),
    Variant("1.2b", "evaluate", "the_max_logit_not_its_class", EVALUATE.replace(
        "argmax(1)", "max(1).values"), "the class of the largest logit"),
    # ---------------------------------------------------------------- Lab 1.2b: fit
    Variant("1.2b", "my_fit", "keywords_and_enumerate", """
def my_fit(model, train_loader, val_loader, epochs, lr, device):
    model = model.to(device)
    opt = torch.optim.Adam(params=model.parameters(), lr=lr)
    return [
        {"epoch": e, "train_loss": train_epoch(model, train_loader, opt, device),
         "val_accuracy": evaluate(model, val_loader, device)}
        for e in range(1, epochs + 1)
    ]
""", "pass"),
    Variant("1.2b", "my_fit", "lr_ignored", MY_FIT.replace("lr=lr", "lr=1e-3"),
            "with lr=0 the weights still changed"),
    Variant("1.2b", "my_fit", "epochs_from_zero", MY_FIT.replace(
        "range(1, epochs + 1)", "range(epochs)"), "epoch"),
    Variant("1.2b", "my_fit", "validated_on_training_data", MY_FIT.replace(
        "evaluate(model, val_loader, device)", "evaluate(model, train_loader, device)"),
        "measure it on the validation loader"),
    Variant("1.2b", "my_fit", "new_optimizer_every_epoch", MY_FIT.replace(
        "    optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n", "").replace(
        "        train_loss =", "        optimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"
        "        train_loss ="), "is the optimizer made once"),
    # ---------------------------------------------------------------- Lab 1.4: the backfill's plan
    Variant("1.4", "predicted_runs", "a_tuple", "planned = ['2024-01-03', '2024-01-04']\n"
            "predicted_runs = ('2024-01-04', '2024-01-03')\n", "pass"),
    Variant("1.4", "predicted_runs", "every_day_again", "planned = ['2024-01-03', '2024-01-04']\n"
            "predicted_runs = ['2024-01-01', '2024-01-02', '2024-01-03', '2024-01-04']\n",
            "it plans none for"),
    Variant("1.4", "predicted_runs", "the_end_date_left_out",
            "planned = ['2024-01-03', '2024-01-04']\npredicted_runs = ['2024-01-03']\n",
            "you left out"),
    Variant("1.4", "predicted_runs", "a_count", "planned = ['2024-01-03', '2024-01-04']\n"
            "predicted_runs = 2\n", "a list of dates"),
]  # fmt: skip


def _namespace(v: Variant) -> dict:
    ns: dict = {}
    exec(PRELUDE + SETUP.get(v.item, "") + textwrap.dedent(v.source), ns)
    return ns


def verdicts(v: Variant) -> dict[str, str]:
    """{check id: "pass" or its message} for every check of the lab the variant answers."""
    ns = _namespace(v)
    out = {}
    for check in suites.LABS[v.lab].checks:
        if not set(check.needs) <= set(ns) or v.item not in check.needs:
            continue
        try:
            suites.run_in_kernel(ns, v.lab, check.id)
        except (AssertionError, suites.CheckNotRun) as exc:
            out[check.id] = str(exc)
        else:
            out[check.id] = "pass"
    return out


@pytest.mark.parametrize("v", CORPUS, ids=lambda v: f"{v.lab}-{v.item}-{v.name}")
def test_each_answer_gets_its_verdict(v, capsys, mnist_root):
    got = verdicts(v)
    assert got, f"no check grades {v.item}"
    if v.expect == "pass":
        assert set(got.values()) == {"pass"}, got
    else:
        failed = [m for m in got.values() if m != "pass"]
        assert any(v.expect in m for m in failed), got


#: The exercises covered here, each by its answer's name in the notebook; Lab 1.2a's two
#: optimizer exercises have their corpus in tests/test_checks.py (names each mistake).
ITEMS = {("0", "loop_of"), ("0", "tool_of"), ("0", "write_totals"), ("0", "partition_path"),
         ("0", "settings_from_config"), ("0", "unsure_explicit"), ("1.1", "cron"),
         ("1.2a", "flatten"), ("1.2a", "grad_by_hand"), ("1.2a", "class_counts"),
         ("1.2b", "MyMLP"), ("1.2b", "pixel_mean"), ("1.2b", "mnist_transform"),
         ("1.2b", "make_loader"), ("1.2b", "pick_device"), ("1.2b", "train_epoch"),
         ("1.2b", "evaluate"), ("1.2b", "my_fit"), ("1.3", "my_config_yaml"),
         ("1.4", "predicted_runs")}  # fmt: skip


def test_every_item_has_three_wrong_answers_and_a_correct_one_in_another_style():
    kinds = Counter((v.lab, v.item, v.expect == "pass") for v in CORPUS)
    for lab, item in sorted(ITEMS):
        assert kinds[(lab, item, False)] >= 3, f"{lab} {item}: fewer than three wrong answers"
        assert kinds[(lab, item, True)] >= 1, f"{lab} {item}: no correct answer of another style"
    assert {(v.lab, v.item) for v in CORPUS} == ITEMS
