"""Self-checks for the lab exercises: plain asserts with a sentence saying what is wrong.

Each check takes what the learner wrote (a function, a model, a value), tests the
behaviour, prints one line starting with ✓ when it passes, and raises AssertionError with
a specific hint when it does not. A stub that still raises NotImplementedError is reported
as "not written yet" with its hint, not as a traceback. The grader reuses these checks.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CheckFailed(AssertionError):
    """A self-check failed; the message says what was expected and how to fix it."""


def _check(what: str):
    """Decorator: name the check, turn NotImplementedError into a hint, print ✓ on success."""

    def wrap(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            try:
                result = func(*args, **kwargs)
            except NotImplementedError as exc:
                raise CheckFailed(f"{what}: not written yet ({exc})") from None
            except CheckFailed:
                raise
            except AssertionError as exc:
                raise CheckFailed(f"{what}: {exc}") from None
            print(f"✓ {what}")
            return result

        run.what = what
        return run

    return wrap


def _fail(message: str):
    raise CheckFailed(message)


# --------------------------------------------------------------------------- 00 habits


@_check("idempotent write: running twice gives the same file")
def idempotent_writer(write: Callable[[Path, list[int]], Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "totals.csv"
        write(path, [1, 2, 3])
        first = path.read_text()
        write(path, [1, 2, 3])
        second = path.read_text()
    assert first, "your function wrote an empty file"
    assert first == second, (
        f"after two runs the file has {second.count(chr(10))} lines instead of "
        f"{first.count(chr(10))}: open it with 'w' (replace), not 'a' (append)"
    )


@_check("partition path: <root>/<stage>/<YYYY-MM-DD>")
def partition_path(func: Callable[[str, str, str], Path]) -> None:
    got = func("data", "raw", "2024-01-01")
    assert Path(got) == Path("data/raw/2024-01-01"), f"got {got!r}; expected data/raw/2024-01-01"
    try:
        func("data", "raw", "01/02/2024")
    except ValueError:
        pass
    else:
        _fail("partition path: '01/02/2024' was accepted; raise ValueError unless ds is YYYY-MM-DD")


@_check("accuracy takes its inputs as arguments and returns a number")
def explicit_accuracy(func: Callable[[list[int], list[int]], float]) -> None:
    got = func([1, 2, 3, 4], [1, 2, 0, 4])
    assert isinstance(got, float), f"returned {type(got).__name__}; return a float"
    assert abs(got - 0.75) < 1e-9, f"accuracy([1,2,3,4], [1,2,0,4]) returned {got}; expected 0.75"
    import builtins

    hidden = [n for n in func.__code__.co_names if n not in vars(builtins)]
    assert not hidden, f"it reads global names {hidden}: pass them in as parameters instead"


# --------------------------------------------------------------------------- 01 Airflow


@_check("schedule preset")
def schedule_preset(answer: str) -> None:
    assert answer == "@daily", f"{answer!r} is not the preset for '0 0 * * *' (midnight every day)"


@_check("lab1_1_first_dag: three tasks, a BashOperator and a fan-in")
def lab1_1_dag(dagbag) -> None:
    from shared.airflow_local import first_import_error

    error = first_import_error(dagbag)
    if error:
        _fail(f"lab1_1_first_dag: the DAG file does not import: {error}")
    dag = dagbag.get_dag("lab1_1_first_dag")
    assert dag is not None, f"no DAG with dag_id 'lab1_1_first_dag' (found {dagbag.dag_ids})"
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"make_numbers", "announce", "summarize"}, (
        f"tasks are {sorted(tasks)}; expected make_numbers, announce and summarize"
    )
    assert type(tasks["announce"]).__name__ == "BashOperator", "announce should be a BashOperator"
    upstream = set(tasks["summarize"].upstream_task_ids)
    assert upstream == {"make_numbers", "announce"}, (
        f"summarize waits for {sorted(upstream) or 'nothing'}; it must wait for both "
        "make_numbers and announce: [numbers, announce] >> summarize(numbers)"
    )
    assert dag.catchup is False, (
        "set catchup=False so unpausing does not backfill every day since start_date"
    )


@_check("every task succeeded")
def all_succeeded(states: dict[str, str]) -> None:
    bad = {t: s for t, s in states.items() if s != "success"}
    assert states and not bad, f"tasks not successful: {bad}; read the task's log above"


# --------------------------------------------------------------------------- 02 PyTorch


@_check("flatten: (64, 1, 28, 28) -> (64, 784)")
def flatten_batch(func) -> None:
    import torch

    x = torch.arange(64 * 784, dtype=torch.float32).reshape(64, 1, 28, 28)
    got = func(x)
    assert tuple(got.shape) == (64, 784), (
        f"shape {tuple(got.shape)}; expected (64, 784): keep the batch dimension, flatten the rest "
        "(x.reshape(x.shape[0], -1) or x.flatten(1))"
    )
    assert torch.equal(got[3], x[3].flatten()), "the pixels of each image must stay with that image"


@_check("gradient of f(x) = x**3 + 2*x at x = 2")
def gradient(by_hand: float, by_autograd) -> None:
    value = float(by_autograd)
    assert abs(by_hand - 14.0) < 1e-6, f"by hand you got {by_hand}; f'(x) = 3x^2 + 2, so f'(2) = 14"
    assert abs(value - 14.0) < 1e-6, (
        f"autograd gave {value}; create x with requires_grad=True, compute y, call y.backward(), read x.grad"
    )


@_check("model maps a batch of images to 10 logits")
def model_output(model) -> None:
    import torch

    x = torch.randn(64, 1, 28, 28)
    out = model(x)
    assert tuple(out.shape) == (64, 10), (
        f"your model returns shape {tuple(out.shape)}; expected (64, 10): does your last layer "
        "have 10 outputs, and do you flatten (64, 1, 28, 28) to (64, 784) first?"
    )
    n = sum(p.numel() for p in model.parameters())
    assert n > 0, "the model has no parameters: assign layers to self in __init__"
    assert out.requires_grad, (
        "the output does not depend on the parameters: use the layers in forward()"
    )


@_check("loader yields shuffled batches of (images, labels)")
def data_loader(loader, batch_size: int) -> None:
    images, labels = next(iter(loader))
    assert tuple(images.shape[1:]) == (1, 28, 28), (
        f"images have shape {tuple(images.shape)}; expected (B, 1, 28, 28)"
    )
    assert len(images) == len(labels) == batch_size, (
        f"batch of {len(images)}; expected batch_size={batch_size}"
    )
    first = [next(iter(loader))[1].tolist() for _ in range(3)]
    assert any(f != first[0] for f in first[1:]), (
        "every pass starts with the same batch: set shuffle=True"
    )


def _tiny_problem(seed: int = 0, dropout: float = 0.0):
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(96, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (96,), generator=gen)
    batches = [(images[i : i + 32], labels[i : i + 32]) for i in range(0, 96, 32)]
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10)
    )
    return model, batches


@_check("training loop matches shared.train.train_one_epoch")
def train_loop(train_epoch) -> None:
    import torch

    from shared.train import train_one_epoch

    model, batches = _tiny_problem()
    reference, _ = _tiny_problem()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    loss = train_epoch(model, batches, opt)
    expected = train_one_epoch(reference, batches, ref_opt, torch.device("cpu"))["loss"]
    changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert changed, (
        "the weights did not change: call loss.backward() and optimizer.step() for every batch"
    )
    same = all(
        torch.allclose(p, q, atol=1e-6)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True)
    )
    assert same, (
        "after one epoch your weights differ from the package's: call optimizer.zero_grad() before "
        "loss.backward() (gradients add up otherwise), and step once per batch"
    )
    assert isinstance(loss, float), (
        f"return the mean loss as a float (got {type(loss).__name__}); use loss.item()"
    )
    assert abs(loss - expected) < 1e-4, (
        f"mean loss {loss:.5f}; expected {expected:.5f}: average over samples"
    )


@_check("evaluation loop: eval mode, no gradients, same accuracy as the package")
def evaluate_loop(evaluate) -> None:
    import torch

    from shared.train import evaluate as reference

    model, batches = _tiny_problem(dropout=0.5)
    model.train()
    grad_seen = []
    hook = model[1].register_forward_hook(lambda m, i, o: grad_seen.append(o.requires_grad))
    acc = evaluate(model, batches)
    hook.remove()
    assert grad_seen, "your loop never called the model"
    assert not any(grad_seen), "gradients were tracked: wrap the loop in `with torch.no_grad():`"
    again = evaluate(model.train(), batches)
    assert acc == again, (
        "two evaluations of the same model differ: dropout is still on; call model.eval() first"
    )
    expected = reference(model, batches, torch.device("cpu"))["accuracy"]
    assert abs(float(acc) - expected) < 1e-9, (
        f"accuracy {acc}; expected {expected}: count correct / total"
    )


@_check("reloaded checkpoint predicts exactly like the trained model")
def same_predictions(model, reloaded, images) -> None:
    import torch

    model.eval()
    reloaded.eval()
    with torch.no_grad():
        a, b = model(images).argmax(1), reloaded(images).argmax(1)
    assert torch.equal(a, b), (
        f"{int((a != b).sum())} of {len(a)} predictions differ: load the state_dict you saved"
    )


# --------------------------------------------------------------------------- 03 configs


def config_from_text(text: str):
    """Load a learner's YAML text as a Config (ConfigError if it does not load).

    The text is written beside the real configs so `extends: default.yaml` resolves, as
    ".yaml.tmp" so no glob for "*.yaml" ever picks it up, even if the kernel dies before the
    file is removed.
    """
    from shared.config import load_config
    from shared.paths import project_root

    fd, name = tempfile.mkstemp(
        prefix=".check-", suffix=".yaml.tmp", dir=project_root() / "configs"
    )
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return load_config(name)
    finally:
        os.unlink(name)


@_check("your YAML config loads and says what was asked")
def my_config(text: str) -> None:
    from shared.config import ConfigError

    try:
        cfg = config_from_text(text)
    except ConfigError as exc:
        _fail(f"your config does not load: {str(exc).split(': ', 1)[-1]}")
    assert cfg.model.name == "mlp", f"model.name is {cfg.model.name!r}; expected 'mlp'"
    assert cfg.training.learning_rate == 0.005, (
        f"training.learning_rate is {cfg.training.learning_rate}; expected 0.005"
    )
    assert cfg.training.epochs == 1, f"training.epochs is {cfg.training.epochs}; expected 1"


@_check("same config, same result")
def same_result(first: dict, second: dict) -> None:
    assert first["config_hash"] == second["config_hash"], "the two runs used different configs"
    a, b = first["test"]["accuracy"], second["test"]["accuracy"]
    assert a == b, f"test accuracy {a} vs {b}: a seed or a shuffle is not coming from the config"
