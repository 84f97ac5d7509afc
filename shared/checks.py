"""Self-checks for the lab exercises: plain asserts with a sentence saying what is wrong.

Each check takes what the learner wrote (a function, a model, a value), tests the
behaviour, prints one line starting with ✓ when it passes, and raises AssertionError with
a specific hint when it does not. A stub that still raises NotImplementedError is reported
as "not written yet" with its hint, not as a traceback. The grader reuses these checks.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared import paths
from shared.paths import project_root


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
                raise CheckFailed(f"{what}: {unwritten(exc)}") from None
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


def unwritten(exc: BaseException | str) -> str:
    """ "not written yet: <hint>" for a stub's NotImplementedError, however it was worded."""
    message = str(exc).strip()
    return message if message.startswith("not written yet") else f"not written yet: {message}"


def free_globals(func: Callable) -> dict[str, Any]:
    """The global names ``func`` really reads (nested functions and comprehensions
    included), with their current values; a name not defined anywhere maps to None.

    ``co_names`` is not enough: it also lists attribute names (``.count``) and misses the
    names used inside a comprehension, which Python 3.11 compiles as a nested function.
    """
    import builtins
    import dis

    names: set[str] = set()
    stack = [func.__code__]
    while stack:
        code = stack.pop()
        names.update(
            ins.argval
            for ins in dis.get_instructions(code)
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")
        )
        stack.extend(c for c in code.co_consts if hasattr(c, "co_code"))
    scope = getattr(func, "__globals__", {})
    return {n: scope.get(n) for n in sorted(names) if n in scope or not hasattr(builtins, n)}


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
    for bad in ("01/02/2024", "20240101"):
        try:
            func("data", "raw", bad)
        except ValueError:
            continue
        _fail(f"partition path: {bad!r} was accepted; raise ValueError unless ds is YYYY-MM-DD")


@_check("accuracy takes its inputs as arguments and returns a number")
def explicit_accuracy(func: Callable[[list[int], list[int]], float]) -> None:
    import inspect

    got = func([1, 2, 3, 4], [1, 2, 0, 4])
    assert isinstance(got, float), f"returned {type(got).__name__}; return a float"
    assert abs(got - 0.75) < 1e-9, f"accuracy([1,2,3,4], [1,2,0,4]) returned {got}; expected 0.75"
    # Modules, functions and classes are tools, not inputs: only data read from globals counts.
    hidden = [
        name
        for name, value in free_globals(func).items()
        if not (inspect.ismodule(value) or callable(value))
    ]
    assert not hidden, f"it reads global names {hidden}: pass them in as parameters instead"


#: Lab 00's quiz: each task, the loop it belongs to, and why (shown when the answer is wrong).
LOOP_QUIZ = {
    "check that today's files have the expected columns and no empty labels":
        ("data", "validating quality is part of the data loop, before anything trains on it"),
    "store yesterday's events under raw/2024-01-01/":
        ("data", "ingesting and partitioning data by date is the data loop"),
    "pick the model with the best validation accuracy and register it":
        ("model", "evaluating and registering models closes the model loop"),
    "load the registered model behind an HTTP endpoint":
        ("deployment", "serving predictions is the deployment loop"),
    "log every prediction with the input it was made for":
        ("deployment", "the deployment loop logs inputs and predictions, which monitoring reads"),
    "compare this week's prediction distribution with last month's":
        ("monitoring", "detecting drift is the monitoring loop"),
}  # fmt: skip
#: Which tool does the job: Airflow orchestrates (when, in what order, retries), PyTorch computes.
TOOL_QUIZ = {
    "run the training pipeline every night at 02:00": ("Airflow", "schedules belong to the orchestrator"),
    "compute the gradient of the loss for a batch": ("PyTorch", "autograd is computation"),
    "retry a failed download three times, a minute apart": ("Airflow", "retries are a task setting in Airflow"),
    "move a batch of images to the GPU": ("PyTorch", "tensors and devices are PyTorch's"),
    "start evaluate only after train succeeded": ("Airflow", "dependencies between tasks are the DAG's job"),
    "save the trained weights to a checkpoint file": ("PyTorch", "state_dict and torch.save are PyTorch's"),
}  # fmt: skip


def _quiz(answers: Any, key: dict[str, tuple[str, str]], choices: tuple[str, ...]) -> None:
    assert isinstance(answers, dict), f"expected a dict of answers, got {type(answers).__name__}"
    missing = [q for q in key if q not in answers]
    assert not missing, f"no answer for {missing[0]!r}: keep every question as it is written"
    wrong = []
    for question, (right, why) in key.items():
        given = answers[question]
        if given is None:
            wrong.append(f"{question!r}: no answer yet (one of {', '.join(choices)})")
        elif str(given).strip().lower() != right.lower():
            wrong.append(f"{question!r}: not {given!r}: {why}")
    assert not wrong, f"{len(wrong)} of {len(key)} to rethink:\n  " + "\n  ".join(wrong)


@_check("the four loops: each task in its loop")
def lifecycle_quiz(loop_of: dict[str, str]) -> None:
    _quiz(loop_of, LOOP_QUIZ, ("data", "model", "deployment", "monitoring"))


@_check("orchestration or computation: Airflow or PyTorch")
def tool_quiz(tool_of: dict[str, str]) -> None:
    _quiz(tool_of, TOOL_QUIZ, ("Airflow", "PyTorch"))


@_check("optimizer settings come from the config")
def settings_from_config(func: Callable) -> None:
    from shared.config import load_config

    default = project_root() / "configs" / "default.yaml"
    for lr, batch in ((0.0123, 77), (0.5, 8)):
        cfg = load_config(default, [f"training.learning_rate={lr}", f"training.batch_size={batch}"])
        got = func(cfg)
        assert isinstance(got, dict), f"return a dict, not {type(got).__name__}"
        assert got.get("learning_rate") == lr and got.get("batch_size") == batch, (
            f"with learning_rate {lr} and batch_size {batch} in the config you returned {got}: "
            "read both from config['training'], do not write numbers in the code"
        )


# --------------------------------------------------------------------------- 01 Airflow


#: Lab 1.1's cron exercise: each schedule in words, and the fire times (UTC) that any
#: correct expression gives from Friday 2024-01-05 00:00 on. Airflow's own cron timetable
#: computes the learner's times, so every correct spelling passes ("1-5" or "mon-fri").
CRON_START = (2024, 1, 5)
CRON_EXPECTED = {
    "weekdays at 02:30": ["2024-01-05 02:30", "2024-01-08 02:30", "2024-01-09 02:30"],
    "every 15 minutes": ["2024-01-05 00:00", "2024-01-05 00:15", "2024-01-05 00:30"],
    "first of the month at midnight": ["2024-02-01 00:00", "2024-03-01 00:00", "2024-04-01 00:00"],
}


def cron_problems(answers: Any, expected: dict[str, list[str]], start) -> list[str]:
    from shared.airflow_local import cron_description, cron_times

    assert isinstance(answers, dict), f"expected a dict, got {type(answers).__name__}"
    problems = []
    for name, want in expected.items():
        expr = answers.get(name)
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{name}: no cron expression yet (a string of five fields)")
            continue
        try:
            got = [t.strftime("%Y-%m-%d %H:%M") for t in cron_times(expr, start, len(want))]
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if got != want:
            problems.append(
                f"{name}: {expr!r} ({cron_description(expr)}) fires at {', '.join(got)}; "
                f"expected {', '.join(want)}"
            )
    return problems


@_check("cron expressions fire when their names say")
def cron_expressions(answers: dict[str, str]) -> None:
    from datetime import datetime

    problems = cron_problems(answers, CRON_EXPECTED, datetime(*CRON_START))
    assert not problems, "\n  " + "\n  ".join(problems)


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


@_check("the broken DAG imports and its flaky task succeeds on a retry")
def debugged_dag(dagbag, tries: dict[str, tuple[str, int]] | None) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.airflow_local import first_import_error

    error = first_import_error(dagbag)
    if error:
        _fail(f"the DAG file still does not import:\n{error}")
    dag = dagbag.get_dag("lab1_1_debug_me")
    assert dag is not None, f"no DAG with dag_id 'lab1_1_debug_me' in the file ({dagbag.dag_ids})"
    start = dag.start_date
    assert start is not None and datetime.now(UTC) - start > timedelta(days=7), (
        f"start_date is {start}: a date computed when the file is parsed moves with every "
        "parse; give the DAG a fixed date such as datetime(2024, 1, 1)"
    )
    assert tries, "the DAG has not run yet: run the cell above after fixing the file"
    state, attempt = tries.get("fetch_report", (None, 0))
    assert state == "success", (
        f"fetch_report ended {state} after {attempt} tr{'y' if attempt == 1 else 'ies'}: its log "
        "says the server is busy on the first try; let Airflow try it again (retries, in "
        "default_args)"
    )
    assert attempt == 2, f"fetch_report succeeded on try {attempt}; expected the second try"
    assert tries.get("publish", (None,))[0] == "success", f"publish ended {tries.get('publish')}"


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
    assert by_autograd is not None, (
        "grad_by_autograd is None: x.grad is filled only after y.backward(), and only for a "
        "tensor created with requires_grad=True"
    )
    try:
        value = float(by_autograd)
    except (TypeError, ValueError):
        raise AssertionError(
            f"grad_by_autograd is {type(by_autograd).__name__} {by_autograd!r}; expected one "
            "number: x.grad after y.backward()"
        ) from None
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


#: The line a speedrun check prints for the grader to read (its leaderboard): this prefix,
#: then JSON. Printed in the learner's kernel, so a determined learner could fake it: the
#: leaderboard is a game, and the instructor can rerun a winner's notebook.
SPEEDRUN_MARK = "workbook-speedrun: "
SPEEDRUN_RECIPE = {"batch_size": (int, 16, 4096), "learning_rate": (float, 1e-5, 1.0),
                   "epochs": (int, 1, 3), "betas": (list, None, None)}  # fmt: skip


def _speedrun_recipe(recipe: Any) -> dict[str, Any]:
    """The recipe with every value checked (an omitted key takes configs/default.yaml's
    value); a sentence naming the key when one is off."""
    from numbers import Integral, Real

    assert isinstance(recipe, dict), (
        f"speedrun_recipe is a {type(recipe).__name__}; expected a dict with the keys "
        f"{', '.join(SPEEDRUN_RECIPE)}"
    )
    unknown = sorted(set(recipe) - set(SPEEDRUN_RECIPE))
    assert not unknown, f"speedrun_recipe: unknown keys {unknown}; allowed: {list(SPEEDRUN_RECIPE)}"
    out = {"batch_size": 128, "learning_rate": 0.006, "epochs": 1, "betas": [0.7, 0.9]}
    out.update(recipe)

    def number(value: Any, integer: bool) -> bool:
        return not isinstance(value, bool) and isinstance(value, Integral if integer else Real)

    for key, (kind, low, high) in SPEEDRUN_RECIPE.items():
        value = out[key]
        if kind is list:
            ok = isinstance(value, list | tuple) and len(value) == 2
            ok = ok and all(number(b, False) and 0 <= b < 1 for b in value)
            assert ok, f"speedrun_recipe['betas'] is {value!r}; expected two numbers in [0, 1)"
            out[key] = [float(b) for b in value]
            continue
        ok = number(value, kind is int) and low <= value <= high
        assert ok, (
            f"speedrun_recipe[{key!r}] is {value!r}; expected "
            f"{'an integer' if kind is int else 'a number'} in [{low}, {high}]"
        )
        out[key] = kind(value)
    return out


@_check("your speedrun was measured as `workbook bench` measures (clock paused to evaluate)")
def speedrun(net_class: Callable, recipe: dict[str, Any], subset: int | None = None):
    """Train ``net_class()`` on the CPU on MNIST's training split (54,000 images, seed 0) with
    Adam and a one-cycle schedule as ``recipe`` says (batch_size, learning_rate, epochs 1-3,
    betas), reading the test accuracy every eighth of an epoch with the clock paused, as
    ``workbook bench`` does; print the time to 99.0 % and a line the grader reads. ``subset`` (the smoke
    config's) shrinks the data: the run is then a rehearsal that cannot reach 99 %.

    Fails when the net is not a module mapping (B, 1, 28, 28) to (B, 10) logits, when the
    recipe is off, or (on the full data) when it learns nothing: below 90 % at the end.
    Returns speedrun.SpeedResult.
    """
    import json

    import torch

    from shared import data, speedrun
    from shared.config import TrainingConfig
    from shared.train import make_optimizer, make_schedule

    r = _speedrun_recipe(recipe)
    splits = data.load_splits(paths.data_root(), 0.1, 0, subset)
    torch.manual_seed(0)
    model = net_class()
    assert isinstance(model, torch.nn.Module), (
        f"SpeedNet() gave a {type(model).__name__}; expected an nn.Module"
    )
    with torch.no_grad():
        shape = tuple(model(splits.train.normalized()[:2]).shape)
    assert shape == (2, 10), f"SpeedNet maps (2, 1, 28, 28) to {shape}; expected (2, 10) logits"
    batches = data.tensor_batches(splits.train, r["batch_size"], True, 0)
    test = data.tensor_batches(splits.test, 1000, False, 0)
    # the optimizer and schedule shared.train builds for a config with these values
    training = TrainingConfig(
        epochs=r["epochs"], batch_size=r["batch_size"], learning_rate=r["learning_rate"],
        betas=r["betas"], optimizer="adam", scheduler="onecycle", progress=False,
    )  # fmt: skip
    optimizer = make_optimizer(model, training)
    schedule = make_schedule(optimizer, training, len(batches))
    result = speedrun.time_to_target(
        "speedrun", model, optimizer, batches, test, r["epochs"], per_batch=schedule.batch_done,
        set_epoch=batches.set_epoch, stop_at_target=False, seed=0, log=lambda *_: None,
    )  # fmt: skip
    if result.seconds_to_target is None:
        print(f"99.0 % not reached in {r['epochs']} epoch(s): final test accuracy "
              f"{result.final_accuracy:.2%}, {result.seconds_per_epoch:.2f} s per epoch")  # fmt: skip
    else:
        print(f"99.0 % test accuracy after {result.seconds_to_target:.2f} s of training "
              f"({result.epochs_to_target:.3f} epochs); final {result.final_accuracy:.2%}, "
              f"{result.seconds_per_epoch:.2f} s per epoch")  # fmt: skip
    record = {
        "seconds_to_99": result.seconds_to_target,
        "epochs_to_99": result.epochs_to_target,
        "final_accuracy": result.final_accuracy,
        "seconds_per_epoch": result.seconds_per_epoch,
        "full_data": subset is None,
    }
    print(SPEEDRUN_MARK + json.dumps(record))
    if subset is None:
        assert result.final_accuracy >= 0.9, (
            f"after {r['epochs']} epoch(s) your SpeedNet reached {result.final_accuracy:.1%} "
            "test accuracy; a working net passes 97 % in one epoch: check forward() (each "
            "layer used once, ReLU between layers) and the learning rate"
        )
    return result


@_check("loader yields shuffled batches of (images, labels)")
def data_loader(make_loader: Callable, split, batch_size: int) -> None:
    loader = make_loader(split, batch_size)
    images, labels = next(iter(loader))
    assert tuple(images.shape[1:]) == (1, 28, 28), (
        f"images have shape {tuple(images.shape)}; expected (B, 1, 28, 28): use split.normalized()"
    )
    assert len(images) == len(labels) == batch_size, (
        f"batch of {len(images)}; expected batch_size={batch_size}"
    )
    first = [next(iter(loader))[1].tolist() for _ in range(3)]
    assert any(f != first[0] for f in first[1:]), (
        "every pass starts with the same batch: set shuffle=True"
    )


class _MoveLog:
    """Tensors moved with ``.to(...)`` inside ``with _MoveLog() as log:``: parameters (a
    model moved) and every other tensor (batches moved, however they are reshaped first)."""

    def __enter__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        log = self
        self.parameters = self.tensors = 0

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func is torch.Tensor.to and args:
                    if isinstance(args[0], torch.nn.Parameter):
                        log.parameters += 1
                    else:
                        log.tensors += 1
                return func(*args, **(kwargs or {}))

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


def _tiny_problem(seed: int = 0, dropout: float = 0.0):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    # 100 samples in batches of 32: the last batch holds 4, so a mean of batch means is
    # caught; a DataLoader, so `len(loader.dataset)` works as in pytorch/examples.
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(100, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (100,), generator=gen)
    batches = DataLoader(TensorDataset(images, labels), batch_size=32)
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
    with _MoveLog() as moves:
        loss = train_epoch(model, batches, opt, torch.device("cpu"))
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
    assert moves.tensors >= len(batches), (
        "the batches never moved to the device: images.to(device) and labels.to(device)"
    )


@_check("evaluation loop: eval mode, no gradients, same accuracy as the package")
def evaluate_loop(evaluate) -> None:
    import torch

    from shared.train import evaluate as reference

    model, batches = _tiny_problem(dropout=0.5)
    model.train()
    grad_seen = []
    hook = model[1].register_forward_hook(lambda m, i, o: grad_seen.append(o.requires_grad))
    cpu = torch.device("cpu")
    with _MoveLog() as moves:
        acc = evaluate(model, batches, cpu)
    hook.remove()
    assert grad_seen, "your loop never called the model"
    assert not any(grad_seen), "gradients were tracked: wrap the loop in `with torch.no_grad():`"
    assert moves.tensors >= len(batches), "move each batch to the device: images.to(device)"
    assert isinstance(acc, float), (
        f"return the accuracy as a float (got {type(acc).__name__}): .item() turns a one-number "
        "tensor into a Python number"
    )
    again = evaluate(model.train(), batches, cpu)
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


@_check("the device: CUDA, then Apple MPS, then the CPU")
def device_choice(pick_device: Callable) -> None:
    import torch

    from shared.train import select_device

    got = pick_device()
    assert isinstance(got, torch.device), (
        f"pick_device returned {type(got).__name__}; return a torch.device"
    )
    assert got == select_device("auto"), (
        f"pick_device chose {got}; this machine offers {select_device('auto')}"
    )


@_check("my_fit trains for every epoch, on the device, and returns a history")
def fit_loop(my_fit: Callable) -> None:
    import torch

    model, batches = _tiny_problem()
    with _MoveLog() as moves:
        history = my_fit(model, batches, batches, 3, 0.05, torch.device("cpu"))
    assert isinstance(history, list) and len(history) == 3, (
        f"history is {type(history).__name__} of length "
        f"{len(history) if hasattr(history, '__len__') else '?'}; expected a list with one "
        "dict per epoch (3 here)"
    )
    keys = {"epoch", "train_loss", "val_accuracy"}
    assert all(isinstance(h, dict) and keys <= set(h) for h in history), (
        f"each history entry needs the keys {sorted(keys)}; the first is {history[0]!r}"
    )
    assert [h["epoch"] for h in history] == [1, 2, 3], "number the epochs 1, 2, 3"
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < losses[0], (
        f"train_loss went {losses[0]:.3f} -> {losses[-1]:.3f}; it should fall: does train_epoch "
        "step the optimizer, and does my_fit make it from model.parameters() with the lr given?"
    )
    assert moves.parameters > 0, "the model never moved to the device: model.to(device)"
    assert moves.tensors >= 3 * len(batches), (
        f"{moves.tensors} tensors moved to the device in 3 epochs of {len(batches)} batches: "
        "move every batch (images.to(device), labels.to(device)) inside your loops"
    )


def _run_script(script, args: list[str], timeout: int = 300):
    """The learner's script, from the project root, as the notebook runs it."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True, text=True, timeout=timeout, cwd=project_root(),
    )  # fmt: skip


def read_json(path: Path, what: str) -> Any:
    """A JSON file the learner's code wrote, or an AssertionError saying what is wrong."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AssertionError(f"{what} ({path.name}) is not readable JSON: {exc}") from None


def script_result(script, config_path, out_dir) -> dict:
    """Run the learner's training script on ``config_path`` into ``out_dir``; the metrics it
    wrote, or an AssertionError that quotes what the script printed."""
    done = _run_script(script, ["--config", str(config_path), "--out", str(out_dir)])
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    assert done.returncode == 0, f"the script exited with {done.returncode}:\n{tail}"
    metrics_file = Path(out_dir) / "metrics.json"
    assert metrics_file.is_file(), f"the script ran but wrote no {metrics_file.name} in --out"
    metrics = read_json(metrics_file, "the script's metrics")
    assert isinstance(metrics, dict) and {"history", "test_accuracy"} <= set(metrics), (
        f"metrics.json holds {str(metrics)[:80]}; expected the keys history and test_accuracy"
    )
    return metrics


@_check("the training script runs from a terminal with a config path")
def training_script(script, config_path) -> None:
    from shared.config import load_config

    config = load_config(config_path)
    with tempfile.TemporaryDirectory() as out:
        metrics = script_result(script, config_path, out)
    assert len(metrics["history"]) == config.training.epochs, (
        f"history has {len(metrics['history'])} entries; the config asks for "
        f"{config.training.epochs} epochs"
    )
    assert metrics["test_accuracy"] > 0.5, (
        f"test accuracy {metrics['test_accuracy']}: the script does not learn"
    )
    with tempfile.TemporaryDirectory() as out:
        bad = _run_script(script, ["--config", str(Path(out) / "missing.yaml"), "--out", out])
    assert bad.returncode != 0, "a config file that does not exist must give a non-zero exit"


# --------------------------------------------------------------------------- 03 configs


@_check("your YAML config loads and says what was asked")
def my_config(text: str) -> None:
    from shared.config import ConfigError, load_config_text

    try:
        cfg = load_config_text(text)
    except ConfigError as exc:
        _fail(f"your config does not load: {str(exc).split(': ', 1)[-1]}")
    assert cfg.model.name == "mlp", f"model.name is {cfg.model.name!r}; expected 'mlp'"
    assert cfg.training.learning_rate == 0.005, (
        f"training.learning_rate is {cfg.training.learning_rate}; expected 0.005"
    )
    assert cfg.training.epochs == 1, f"training.epochs is {cfg.training.epochs}; expected 1"


@_check("same config, same result: metrics and weights")
def same_result(first: dict, second: dict) -> None:
    assert first["config_hash"] == second["config_hash"], "the two runs used different configs"
    a, b = first["test"]["accuracy"], second["test"]["accuracy"]
    assert a == b, f"test accuracy {a} vs {b}: a seed or a shuffle is not coming from the config"
    wa, wb = first.get("weights_sha256"), second.get("weights_sha256")
    assert wa and wa == wb, (
        f"the weights differ (digest {wa} vs {wb}): seed the model's initialisation and the "
        "loader's shuffle from config.seed"
    )


class _StepLog:
    """Every optimizer step taken inside ``with _StepLog() as log:``, as (optimizer class,
    its base learning rate, the learning rate in force at that step); ``betas`` collects
    the Adam betas the steps used."""

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.steps: list[tuple[str, float, float]] = []
        self.betas: set[tuple[float, ...]] = set()

        def record(opt, args, kwargs) -> None:
            self.steps.append((type(opt).__name__, opt.defaults["lr"], opt.param_groups[0]["lr"]))
            if "betas" in opt.param_groups[0]:
                self.betas.add(tuple(opt.param_groups[0]["betas"]))

        self._handle = register_optimizer_step_post_hook(record)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def check_trainer_run(train_from_config, config) -> dict:
    """Run the learner's ``train_from_config`` on ``config`` and check that it built what the
    config says; returns its result. Shared by the self-check and the hidden check."""
    from shared.data import training_images
    from shared.model import build_model, count_parameters

    n_train = training_images(config.data.subset, config.data.val_fraction)
    with _StepLog() as log:
        result = train_from_config(config)
    assert isinstance(result, dict), f"return a dict, not {type(result).__name__}"
    missing = [k for k in ("model", "history", "test_accuracy") if k not in result]
    assert not missing, f"the result has no {missing}; return model, history and test_accuracy"
    history, t = result["history"], config.training
    assert isinstance(history, list) and len(history) == t.epochs, (
        f"history has {len(history) if isinstance(history, list) else history!r} entries; "
        f"expected one per epoch ({t.epochs}): training.epochs decides how many"
    )
    assert all(
        isinstance(h, dict) and isinstance(h.get("train_loss"), float)
        and isinstance(h.get("val_accuracy"), float) for h in history
    ), (
        "each history entry is a dict with epoch, and train_loss and val_accuracy as floats "
        f"(the first is {history[0]!r}): train_one_epoch returns a dict, its ['loss'] is the "
        "float; evaluate's ['accuracy'] likewise"
    )  # fmt: skip
    want = count_parameters(build_model(config.model))
    got = count_parameters(result["model"])
    assert got == want, (
        f"your model has {got:,} parameters; the config's model ({config.model.name}, "
        f"{config.model.model_dump(exclude={'name'})}) has {want:,}: build it from config.model"
    )
    per_epoch = -(-n_train // t.batch_size)
    assert len(log.steps) == t.epochs * per_epoch, (
        f"{len(log.steps)} optimizer steps; {n_train} training images in batches of "
        f"{t.batch_size} for {t.epochs} epoch(s) make {t.epochs * per_epoch}: take batch_size "
        "and epochs from config.training, the data from config.data (subset, val_fraction), "
        "and keep the last, smaller batch (no drop_last)"
    )
    kinds = {name for name, _, _ in log.steps}
    assert kinds == {"Adam"}, f"the optimizer was {sorted(kinds)}; the config asks for Adam"
    assert log.betas == {tuple(t.betas)}, (
        f"Adam's betas were {sorted(log.betas)}; the config says {tuple(t.betas)}: pass "
        "betas=config.training.betas"
    )
    base = {lr for _, lr, _ in log.steps}
    assert base == {t.learning_rate}, (
        f"the optimizer's learning rate was {sorted(base)}; the config says {t.learning_rate}"
    )
    used = [lr for _, _, lr in log.steps]
    if t.scheduler == "none":
        assert set(used) == {t.learning_rate}, "scheduler none: the learning rate must not change"
    else:
        assert len(set(used)) > 1, (
            f"the learning rate never changed; the config's scheduler is {t.scheduler!r}: "
            "make it with train.make_schedule, pass it to train_one_epoch (per-batch "
            "schedules) and call schedule.epoch_done() after each epoch (per-epoch ones)"
        )
    acc = result["test_accuracy"]
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0, f"test_accuracy {acc!r}: a float in [0, 1]"
    return result


#: The self-check's small config: an MLP on 600 images, two epochs, a second of CPU.
TRAINER_CONFIG = [
    "model.name=mlp", "model.hidden_sizes=[32]", "data.subset=600", "training.epochs=2",
    "training.batch_size=50", "training.learning_rate=0.01", "training.progress=false",
]  # fmt: skip


@_check("train_from_config builds and trains what the config says, reproducibly")
def config_trainer(train_from_config: Callable) -> None:
    from shared.config import load_config
    from shared.train import weights_digest

    config = load_config(project_root() / "configs" / "default.yaml", TRAINER_CONFIG)
    first = check_trainer_run(train_from_config, config)
    again = train_from_config(config)
    same = weights_digest(first["model"]) == weights_digest(again["model"])
    assert same and first["test_accuracy"] == again["test_accuracy"], (
        "two runs of the same config gave different weights: seed torch (torch.manual_seed) "
        "and the loader's shuffle (a torch.Generator) with config.seed"
    )
