"""Self-checks for the lab exercises: plain asserts with a sentence saying what is wrong.

Each check takes what the learner wrote (a function, a model, a value), tests the
behaviour, prints one line starting with ✓ when it passes, and raises AssertionError with
a specific hint when it does not. A stub that still raises NotImplementedError is reported
as "not written yet" with its hint, not as a traceback. The grader reuses these checks.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared import paths
from shared.paths import project_root


class CheckFailed(AssertionError):
    """A self-check failed; the message says what was expected and how to fix it."""


def _check(what: str, crashed: str = ""):
    """Decorator: name the check, turn NotImplementedError into a hint, print ✓ on success.

    When the learner's own code raises inside the check (a model that does not flatten dies
    in its first layer), the failure says so with the learner's line and ``crashed``, the
    check's diagnosis, instead of a traceback through this module. In a notebook, a failed
    check shows as its message alone (``_quiet_tracebacks``)."""

    def wrap(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            try:
                result = func(*args, **kwargs)
            except NotImplementedError as exc:
                message = f"{what}: {unwritten(exc)}"
            except CheckFailed as exc:
                message = str(exc)
            except AssertionError as exc:
                message = f"{what}: {exc}"
            except Exception as exc:  # the learner's code raised while being checked
                message = f"{what}: {crash_report(exc)}" + (f"; {crashed}" if crashed else "")
            else:
                print(f"✓ {what}")
                return result
            _quiet_tracebacks()
            raise CheckFailed(message) from None

        run.what = what
        return run

    return wrap


def crash_report(exc: BaseException) -> str:
    """ "your code raised X: message, at <the learner's line>": the innermost frame of the
    traceback that is not this module's, torch's or the standard library's, where the
    learner can look."""
    import linecache
    import sysconfig
    import traceback

    skip = (str(Path(__file__).resolve().parent), sysconfig.get_paths()["stdlib"],
            sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])  # fmt: skip
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if not frame.filename.startswith(skip):
            line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
            where = f", at `{line}`" if line else f", at line {frame.lineno}"
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"your code raised {type(exc).__name__}: {first}{where}"


def _quiet_tracebacks() -> None:
    """In a notebook kernel, show a failed check as its message alone: its traceback would
    lead through this module's internals, which is not where the learner's mistake is."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or getattr(shell, "_workbook_quiet_checks", False):
        return

    def message_only(self, etype, value, tb, tb_offset=None):
        self.showtraceback((etype, value, None), tb_offset=0)

    shell.set_custom_exc((CheckFailed,), message_only)
    shell._workbook_quiet_checks = True


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


def answer_key(*parts: object) -> str:
    """The stored form of a quiz's right answer: a digest (``answer_key(question, answer)``,
    case and outer spaces ignored), so the answer is not in clear text here. It hides nothing
    from a learner who hashes each of a question's three or four choices, as trying each in
    the self-check would: the quizzes are practice with feedback; what the written questions
    and the hidden checks ask cannot be tried out so."""
    import hashlib

    text = "\x1f".join(str(p).strip().lower() for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SourceFailed(Exception):
    """What the crash-safety checks raise from inside a stream of values, halfway through."""


def values_then_failure(values: list[int]):
    yield from values
    raise SourceFailed("the check's source of values failed halfway (on purpose)")


def writer_problems(write: Callable, folder: Path) -> list[str]:
    """What is wrong with a totals writer, tried on the cases the self-check and the hidden
    check share: one value per line, a rerun replaces, a crash halfway keeps the old file."""
    path = folder / "totals.csv"
    write(path, [1, 2, 3])
    if not path.is_file():
        return [f"after write_totals(path, [1, 2, 3]) there is no file at path ({path.name})"]
    first = path.read_text()
    if first.splitlines() != ["1", "2", "3"]:
        return [f"after writing [1, 2, 3] the file holds {first!r}; expected one value per line"]
    write(path, [1, 2, 3])
    again = path.read_text()
    if again != first:
        return [
            f"after a second run with the same values the file has {len(again.splitlines())} "
            "lines instead of 3: a rerun must leave the same file, not add to it"
        ]
    path.write_text("7\n8\n9\n")
    try:
        write(path, values_then_failure([1, 2]))
    except SourceFailed:
        pass
    else:
        return [
            "the values failed halfway, yet write_totals returned as if all went well: a task "
            "that hides the error is marked successful with half a result; let it propagate"
        ]
    after = path.read_text() if path.is_file() else None
    if after != "7\n8\n9\n":
        seen = "no file at all" if after is None else f"{after.split()}"
        return [
            f"a crash halfway left {seen} where the old file held ['7', '8', '9']: a reader at "
            "that moment sees a broken file. Where could the new rows wait until they are "
            "complete?"
        ]
    # A file replaced in one step is a new file (a rename gives path the new one's inode);
    # one rewritten in place keeps its inode, and a crash while it is being written (a full
    # disk, a killed process) leaves it half written, however the values behaved.
    inode = path.stat().st_ino
    write(path, [4, 5])
    if path.stat().st_ino == inode:
        return [
            "write_totals rewrote the file in place: had it crashed while writing (a full "
            "disk, a killed process), a reader would find half a file. Where could the new "
            "rows wait until they are complete?"
        ]
    return []


@_check("crash-safe write: a rerun replaces the file, a crash leaves the old one whole")
def crash_safe_writer(write: Callable[[Path, Any], Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        problems = writer_problems(write, Path(tmp))
    assert not problems, problems[0]


@_check("partition path: <root>/<stage>/<YYYY-MM-DD>")
def partition_path(func: Callable[[str, str, str], Path]) -> None:
    got = func("data", "raw", "2024-01-01")
    assert Path(got) == Path("data/raw/2024-01-01"), (
        f"partition_path('data', 'raw', '2024-01-01') returned {got!r}: the folder is the "
        "root, then the stage, then the date"
    )
    for bad, why in (("01/02/2024", "another spelling"), ("20240101", "another spelling"),
                     ("2024-02-30", "a day that does not exist")):  # fmt: skip
        try:
            func("data", "raw", bad)
        except ValueError:
            continue
        _fail(f"partition path: {bad!r} ({why}) was accepted; raise ValueError for it")


#: Lab 00's quizzes: each question, its right answer as a digest (``answer_key``), and a
#: question to ask oneself when the answer is off, which never names the right one.
LOOP_QUIZ = {
    "check that today's files have the expected columns and no empty labels":
        ("b2353c326dc400cf", "is anything trained or served yet, or is this about what comes in?"),
    "store yesterday's events under raw/2024-01-01/":
        ("35acea938bb8aa71", "what is being kept here: a model, a prediction, or what arrived?"),
    "pick the model with the best validation accuracy and register it":
        ("f2f33c3b45f09d02", "does this happen before any user sees a prediction, or after?"),
    "load the registered model behind an HTTP endpoint":
        ("ab19163d11f4d791", "is a model being made here, or put to use?"),
    "log every prediction with the input it was made for":
        ("836ba924a2d53a74", "is the log written where a prediction is made, or where predictions are watched later?"),
    "compare this week's prediction distribution with last month's":
        ("409f90acc6628d31", "is anything new made here, or is something in use being watched?"),
}  # fmt: skip
LOOP_CHOICES = ("data", "model", "deployment", "monitoring")
TOOL_QUIZ = {
    "run the training pipeline every night at 02:00":
        ("4400cc1eb8c04702", "is this about a computation, or about when something runs?"),
    "compute the gradient of the loss for a batch":
        ("642559378b09747d", "does this happen inside one task, on tensors?"),
    "retry a failed download three times, a minute apart":
        ("00fe546a450443e2", "who notices that a task failed, and starts it again?"),
    "move a batch of images to the GPU":
        ("9e0305b8efc3b008", "does this happen between tasks, or inside the training code?"),
    "start evaluate only after train succeeded":
        ("7a2509b7abdc23cd", "is this an order between tasks, or a step inside one?"),
    "save the trained weights to a checkpoint file":
        ("9b43e44216f9e9d9", "whose objects are the weights, and who writes them out?"),
    "decide which metric the business will judge the model by":
        ("eb1fadf84e4726c6", "can any program make this choice?"),
    "keep five years of raw events so any day can be reprocessed":
        ("a739c04cc3e75913", "is this scheduling, computing, or keeping?"),
}  # fmt: skip
TOOL_CHOICES = ("Airflow", "PyTorch", "neither")


def _quiz(answers: Any, name: str, key: dict[str, tuple[str, str]], choices) -> None:
    assert isinstance(answers, dict), f"{name} is a {type(answers).__name__}; keep it a dict"
    missing = [q for q in key if q not in answers]
    assert not missing, f"no answer for {missing[0]!r}: keep every question as it is written"
    unanswered, off = [], []
    for question, (digest, nudge) in key.items():
        given = answers[question]
        if given is None:
            unanswered.append(question)
        elif str(given).strip().lower() not in {c.lower() for c in choices}:
            off.append(f"{question!r}: {given!r} is not one of {', '.join(choices)}")
        elif answer_key(question, given) != digest:
            off.append(f"{question!r}: ask yourself {nudge}")
    lines = [f"{q!r}: no answer yet" for q in unanswered] + off
    assert not lines, (
        f"{len(off)} of {len(key)} answers to rethink"
        + (f", {len(unanswered)} not answered yet" if unanswered else "")
        + ":\n  "
        + "\n  ".join(lines)
    )


@_check("the four loops: each task in its loop")
def lifecycle_quiz(loop_of: dict[str, str]) -> None:
    _quiz(loop_of, "loop_of", LOOP_QUIZ, LOOP_CHOICES)


@_check("orchestration, computation, or neither")
def tool_quiz(tool_of: dict[str, str]) -> None:
    _quiz(tool_of, "tool_of", TOOL_QUIZ, TOOL_CHOICES)


#: The experiment settings of ``train_settings_bad``, each as a digest (``answer_key``).
SETTINGS_KEY = {"85538edc970fc6f7", "4232b48eacbd92bf", "42d5ca775d137c81"}
SETTINGS_NAMES = ("learning_rate", "batch_size", "epochs", "pixels", "classes")


def settings_names(names: Any) -> set[str]:
    assert isinstance(names, set | frozenset | list | tuple), (
        f"belongs_in_config is a {type(names).__name__}; make it a set of names, such as "
        "{'name', ...}"
    )
    names = {str(n) for n in names}
    unknown = sorted(names - set(SETTINGS_NAMES))
    assert not unknown, (
        f"{unknown} are not settings of train_settings_bad; choose among {list(SETTINGS_NAMES)}"
    )
    wrong = sorted(n for n in names if answer_key("setting", n) not in SETTINGS_KEY)
    assert not wrong, (
        f"{wrong[0]!r} is in belongs_in_config: would anyone change it to try another "
        "experiment, or would the data be wrong if it changed?"
    )
    short = len(SETTINGS_KEY) - len(names)
    assert not short, (
        f"{short} experiment setting{'s are' if short > 1 else ' is'} missing from "
        "belongs_in_config: which values would you change to try another run?"
    )
    return names


def settings_problems(names: set[str], func: Callable, overrides: list[list[str]]) -> list[str]:
    """What is wrong with ``func`` on configs made by ``overrides`` on the default."""
    from shared.config import load_config

    default = project_root() / "configs" / "default.yaml"
    problems = []
    for extra in overrides:
        cfg = load_config(default, extra)
        got = func(cfg)
        if not isinstance(got, dict):
            return [f"settings_from_config returned {type(got).__name__}; return a dict"]
        if set(got) != names:
            return [f"the dict has the keys {sorted(got)}; expected exactly belongs_in_config's"]
        for name in sorted(names):
            if got[name] != cfg["training"][name]:
                problems.append(
                    f"with {name} = {cfg['training'][name]} in the config you returned "
                    f"{got[name]!r}: read each value from the config you are given"
                )
                break
    return problems


@_check("experiment settings in the config, facts of the problem in code")
def settings_from_config(belongs_in_config: Any, func: Callable) -> None:
    names = settings_names(belongs_in_config)
    problems = settings_problems(
        names, func,
        [["training.learning_rate=0.0123", "training.batch_size=77", "training.epochs=5"]],
    )  # fmt: skip
    assert not problems, problems[0]


def data_globals(func: Callable) -> list[str]:
    """The global names ``func`` reads when it runs that hold data: modules, functions and
    classes are tools, not inputs."""
    import inspect

    return [
        name for name, value in free_globals(func).items()
        if not (inspect.ismodule(value) or callable(value))
    ]  # fmt: skip


def unsure_problems(func: Callable, cases) -> list[str]:
    """``func(probabilities, threshold)`` against ``cases`` [(probabilities, threshold)]."""
    hidden = data_globals(func)
    if hidden:
        return [f"unsure_explicit still reads the global {hidden}: take it as a parameter"]
    for probabilities, limit in cases:
        want = [i for i, p in enumerate(probabilities) if p < limit]
        got = func(probabilities, limit)
        if got != want:
            return [
                f"unsure_explicit({probabilities}, {limit}) returned {got!r}; the original "
                f"gives {want} when its global holds {limit}"
            ]
    return []


@_check("the hidden global found, and made a parameter")
def hidden_global(name: Any, explicit: Callable, functions: dict[str, Callable]) -> None:
    read = {g for f in functions.values() for g in data_globals(f)}
    assert isinstance(name, str) and name.strip(), (
        f"hidden_global is {name!r}; put the global's name in it, as a string"
    )
    assert name.strip() in read, (
        f"{name.strip()!r} is not read when any of the three functions runs: change its "
        "value, call them again, and see whose result changes"
    )
    problems = unsure_problems(explicit, [([0.95, 0.5, 0.99], 0.9), ([0.2, 0.7, 0.5], 0.5)])
    assert not problems, problems[0]


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
        "make_numbers and announce (a fan-in)"
    )
    assert dag.catchup is False, (
        "catchup is on: switching the DAG on would create a run for every day since its start_date"
    )


#: Lab 1.1's broken DAG as the lab shows it (a test keeps the two the same): three faults
#: nobody labelled, which Airflow reports one at a time.
DEBUG_DAG = '''\
"""A DAG for Lab 1.1's debugging section: it fetches a report, then publishes it."""

from __future__ import annotations

from datetime import datetime, timedelta

import torchvision
from airflow.sdk import dag, task
from airflow.utils.dates import days_ago


@dag(
    dag_id="lab1_1_debug_me",
    schedule=None,
    start_date=days_ago(1),
    catchup=False,
    default_args={"retries": 0},
)
def lab1_1_debug_me():
    @task
    def fetch_report(ti=None) -> str:
        """Ask a report server that is busy the first time it is asked (a simulation)."""
        print(f"asking the report server (try {ti.try_number})")
        if ti.try_number == 1:
            raise ConnectionError("report server busy: try again in a moment")
        return "report fetched"

    @task
    def publish(report: str) -> None:
        print(f"published: {report} (torchvision {torchvision.__version__})")

    publish(fetch_report())


lab1_1_debug_me()
'''
#: The parse timeout the lab's parse cell uses (30 s by default): a heavy import shows.
DEBUG_IMPORT_TIMEOUT = 0.5
#: Each fault: (a name for messages, words the line that reports it must contain).
#: Named by where they show, not by what they are: finding that out is the exercise.
DEBUG_FAULTS = (
    ("the fault the first parse reports", ("timeout",)),
    ("the fault the parse reports once that one is fixed", ("days_ago", "airflow.utils.dates")),
    ("the fault the run reports", ("report server busy",)),
)
_debug_texts: list[str] = []


def _normal(line: str) -> str:
    """A line of Airflow's output without what differs between machines: absolute paths
    (a file's folder, a package's location) and runs of spaces."""

    line = re.sub(r"\(/[^)]*\)", "", line)
    line = re.sub(r"(?:/[^\s/'\"]+)+/(?=[\w.-]+\.py\b)", "", line)
    return " ".join(line.split())


def debug_texts() -> list[str]:
    """What Airflow reports for each fault of ``DEBUG_DAG``, computed here: the parse of the
    file as shown, the parse once the slow import is gone, the log of a run once the file
    parses (cached: two fresh processes and a DAG run, about 10 s)."""
    if _debug_texts:
        return _debug_texts
    from shared import airflow_local

    slow, light = DEBUG_DAG, DEBUG_DAG.replace("import torchvision\n", "", 1)
    runs = (
        light.replace("from airflow.utils.dates import days_ago\n", "", 1)
        .replace("start_date=days_ago(1)", "start_date=datetime(2024, 1, 1)")
        .replace("torchvision.__version__", "'?'")
    )
    found = []
    for source in (slow, light, runs):
        # a folder each: dag.test() parses every file in the folder of the DAG it runs
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "lab1_1_debug_me.py"
            file.write_text(source)
            if source is runs:
                dag = airflow_local.load_dag_file(file).get_dag("lab1_1_debug_me")
                found.append(airflow_local.run_dag_logged(dag, "2024-01-01")[1])
            else:
                # the whole error as Airflow recorded it, and what the lab's parse cell prints
                # of it: the learner may copy a line of either
                # The tight timeout only where it is the fault shown: a busy machine must not
                # make the light file time out too.
                timeout = DEBUG_IMPORT_TIMEOUT if source is slow else None
                error = airflow_local.parse_in_fresh_process(file, timeout, raw=True)
                # The timeout is an alarm raised wherever the import happens to be; now and
                # then it lands in a library's `try: ... except Exception:` and is swallowed,
                # and the parse runs on to the next fault. Airflow's dag-processor would
                # report the timeout on its next parse: so does this, once or twice more.
                for _ in range(2):
                    if source is not slow or "DagBag import timeout" in (error or ""):
                        break
                    error = airflow_local.parse_in_fresh_process(file, timeout, raw=True)
                shown = airflow_local.format_import_error(file, error) if error else ""
                # The parse cell prints "<file>: <the error's line>"; which line comes first
                # depends on where the timeout's alarm lands (a busy machine moves it), so
                # every line of the error counts in that form too.
                named = [f"{file.name}: {line.strip()}" for line in (error or "").splitlines()]
                found.append("\n".join([shown, *named, error or ""]))
    _debug_texts.extend(found)
    return _debug_texts


def evidence_problems(evidence: Any) -> list[str]:
    """Which faults ``evidence`` (lines copied from Airflow's output) does not report."""
    assert isinstance(evidence, list | tuple), (
        f"evidence is a {type(evidence).__name__}; make it a list of the lines you copied"
    )
    lines = [_normal(str(e)) for e in evidence if str(e).strip()]
    texts = [[_normal(x) for x in text.splitlines()] for text in debug_texts()]
    problems = []
    for line in lines:
        if len(line) < 12 or not any(line in x for text in texts for x in text):
            problems.append(
                f"{line[:80]!r} is not a line Airflow printed for this DAG: copy each line from "
                "the parse cell's or the run cell's output"
            )
    for (name, words), text in zip(DEBUG_FAULTS, texts, strict=True):
        if not any(w in x for x in text for w in words):
            # Airflow did not report this fault the way the lab shows it: the check cannot
            # judge the learner's line, and says so instead of blaming it
            problems.append(f"the check could not reproduce Airflow's report of {name} here: "
                            f"{' '.join(text)[:200]!r}; show this to your instructor")  # fmt: skip
            continue
        named = [
            line for line in lines
            if any(line in x for x in text) and any(w in line for w in words)
        ]  # fmt: skip
        if not named:
            shown = [line for line in lines if any(line in x for x in text)]
            problems.append(
                f"{name}: the line you copied for it does not say what went wrong; pick the one "
                "that names the problem"
                if shown
                else f"no line of yours reports {name} yet"
            )
    return problems


@_check("three faults found from Airflow's own words, and fixed")
def debugged_dag(debug_file, evidence: Any, ds: str = "2024-01-01") -> None:
    from datetime import UTC, datetime, timedelta

    from shared import airflow_local

    problems = evidence_problems(evidence)
    if problems:
        # What Airflow prints for a timeout depends on where its alarm lands, and a busy
        # machine moves it: before blaming the learner's lines, reproduce the faults once more.
        _debug_texts.clear()
        problems = evidence_problems(evidence)
    assert not problems, "\n  " + "\n  ".join(problems)
    error = airflow_local.parse_in_fresh_process(debug_file)
    if error:
        _fail(f"the DAG file still does not parse:\n{error}")
    heavy = airflow_local.imported_when_parsed(debug_file, ["torchvision", "torch"])
    assert not heavy, (
        f"parsing the DAG file imports {' and '.join(heavy)}: every parse, every 30 s, still "
        "pays for it, so the first parse's fault is not fixed"
    )
    dag = airflow_local.load_dag_file(debug_file).get_dag("lab1_1_debug_me")
    assert dag is not None, "no DAG with dag_id 'lab1_1_debug_me' in the file"
    start = dag.start_date
    assert start is not None and datetime.now(UTC) - start > timedelta(days=7), (
        f"start_date is {start}: a date computed while the file is parsed moves with every "
        "parse, so the schedule never settles"
    )
    tries, log = airflow_local.run_dag_logged(dag, ds)
    state, attempt = tries.get("fetch_report", (None, 0))
    assert state == "success", (
        f"fetch_report ended {state} after {attempt} tr{'y' if attempt == 1 else 'ies'}; its "
        "log says the server was busy: a second try a moment later would succeed"
    )
    assert attempt == 2, (
        f"fetch_report succeeded on try {attempt}; the server answers on the second"
    )
    assert tries.get("publish", (None,))[0] == "success", (
        f"publish ended {tries.get('publish')}; its log:\n"
        + "\n".join(airflow_local.log_lines_that_matter(log)[-5:])
    )


@_check("every task succeeded")
def all_succeeded(states: dict[str, str]) -> None:
    bad = {t: s for t, s in states.items() if s != "success"}
    assert states and not bad, f"tasks not successful: {bad}; read the task's log above"


# --------------------------------------------------------------------------- 02 PyTorch


@_check("class_counts: images per digit in the training split")
def class_counts(counts: Any, split) -> None:
    import torch

    assert isinstance(counts, torch.Tensor), (
        f"class_counts is a {type(counts).__name__}; make it a tensor of 10 counts"
    )
    assert tuple(counts.shape) == (10,), (
        f"class_counts has shape {tuple(counts.shape)}; one count per digit 0-9 is (10,)"
    )
    want = torch.bincount(split.labels, minlength=10)
    if torch.equal(counts.to(torch.int64), want) and not counts.is_floating_point():
        return
    total = counts.double().sum().item()
    assert abs(total - 1) > 1e-3, (
        "these are shares (they add up to 1); the question asks for counts"
    )
    assert round(total) == len(split.labels), (
        f"your counts add up to {total:,.0f}; the training split holds {len(split.labels):,} "
        "images: count each of them, once"
    )
    raise AssertionError(
        "the counts add up to the split's size but not per digit: index d must hold the "
        "number of images labelled d"
    )


@_check("flatten: (64, 1, 28, 28) -> (64, 784)")
def flatten_batch(func) -> None:
    import math

    import torch

    for shape, what in (((64, 1, 28, 28), "a batch"),
                        ((7, 1, 28, 28), "the last, smaller batch of an epoch"),
                        ((5, 3, 8, 8), "a batch of five small colour images")):  # fmt: skip
        x = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
        try:
            got = func(x)
        except RuntimeError as exc:
            _fail(
                f"flatten on {what}, of shape {shape}, raised {str(exc).splitlines()[0][:120]}: "
                "does a number in your code fit only MNIST's first batches?"
            )
        assert isinstance(got, torch.Tensor), (
            f"flatten returned {type(got).__name__}; return a tensor"
        )
        want = (shape[0], math.prod(shape[1:]))
        assert tuple(got.shape) == want, (
            f"{what}, of shape {shape}, became {tuple(got.shape)}; expected {want}: each row "
            "must hold one whole image: how many numbers does one image have, and which "
            "dimension counts images?"
        )
        assert torch.equal(got[3], x[3].flatten()), (
            f"in {what}, of shape {shape}, row 3 does not hold image 3's pixels in order: the "
            "batch dimension must stay first"
        )


@_check("gradient of f(x) = x**3 + 2*x at x = 2")
def gradient(by_hand: float, by_autograd) -> None:
    assert by_autograd is not None, (
        "grad_by_autograd is None: a tensor's .grad stays empty until gradients are sent back "
        "to it, and only a tensor that asked for them gets one"
    )
    try:  # detached: float() of a tensor that records gradients warns
        value = float(getattr(by_autograd, "detach", lambda: by_autograd)())
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(
            f"grad_by_autograd is {type(by_autograd).__name__} {by_autograd!r}; expected one "
            "number: the gradient autograd stored for x"
        ) from None
    assert abs(by_hand - 14.0) < 1e-6, (
        f"by hand you got {by_hand}: differentiate each term of f on its own, add them, "
        "then put in x = 2; autograd's value is a way to check yours"
    )
    assert abs(value - 14.0) < 1e-6, (
        f"autograd gave {value}: is y computed from x by f, is x the tensor that asked for "
        "gradients, and is grad_by_autograd read from x after the gradients were sent back?"
    )


def _regression_problem(seed: int = 0):
    """A tiny linear regression and its loss: 32 points, 3 inputs, a model of 4 parameters."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=gen)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.3

    def loss_of(w, b):
        return ((x @ w + b - y) ** 2).mean()

    return loss_of


def optim_problems(optim_class: Callable, lr: float, steps: int) -> list[str]:
    """``optim_class(params, lr)`` against ``torch.optim.SGD`` step for step on a tiny
    regression: the same weights after every step, and gradients cleared by zero_grad."""
    import torch

    loss_of = _regression_problem()
    mine = [torch.zeros(3, requires_grad=True), torch.zeros(1, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_() for p in mine]
    opt, ref_opt = optim_class(mine, lr), torch.optim.SGD(ref, lr=lr)
    for step in range(1, steps + 1):
        for o, params in ((opt, mine), (ref_opt, ref)):
            o.zero_grad()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in params):
                return [f"after zero_grad() before step {step}, a parameter's .grad still holds "
                        "the last step's gradient: zero_grad must leave nothing behind"]  # fmt: skip
            loss_of(*params).backward()
            o.step()
        # the same arithmetic in another order rounds differently in the last bits
        if all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(mine, ref, strict=True)):
            continue
        if all(torch.equal(a, torch.zeros_like(a)) for a in mine):
            return [f"after step {step} the weights have not moved: does step change the tensors "
                    "you were given in place (a new tensor bound to a local name changes nothing)?"]  # fmt: skip
        moved = (mine[0] - ref[0]).abs().max().item()
        return [f"after step {step} your weights differ from SGD's by up to {moved:.3g}: which way "
                "does a step go, uphill or downhill, and how far?"]  # fmt: skip
    return []


@_check(
    "BasicOptim steps exactly as torch.optim.SGD",
    crashed="PyTorch refuses to change a tensor that records gradients in place while it "
    "records: where does autograd stop recording?",
)
def basic_optim(optim_class: Callable) -> None:
    problems = optim_problems(optim_class, 0.1, 5)
    assert not problems, problems[0]


def log_softmax_problems(func: Callable, logits) -> list[str]:
    """``func`` against ``torch.log_softmax(logits, dim=1)``."""
    import torch

    got = func(logits.clone())
    if not isinstance(got, torch.Tensor) or got.shape != logits.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return [f"for logits of shape {tuple(logits.shape)} you returned {shape}: one log-"
                "probability per logit, in the same shape"]  # fmt: skip
    if not torch.isfinite(got).all():
        return [f"for logits as large as {logits.abs().max().item():.0f} you returned "
                "inf or nan: exp of a large number overflows a float; what can you subtract "
                "from each row first without changing the result?"]  # fmt: skip
    want = torch.log_softmax(logits, dim=1)
    if not torch.allclose(got, want, atol=1e-4):
        rows = got.exp().sum(dim=1)
        if not torch.allclose(rows, torch.ones_like(rows), atol=1e-3):
            return [f"the probabilities of each row should sum to 1; yours sum to "
                    f"{rows[:3].tolist()}: over which dimension do you normalise?"]  # fmt: skip
        return [f"your values differ from the log-softmax by up to {(got - want).abs().max():.3g}"]
    return []


@_check(
    "a numerically stable log-softmax, as F.cross_entropy uses it",
    crashed="is every operation done row by row (dim=1), do the shapes still line up for the "
    "subtraction (keepdim), and is each value a tensor? (Some reductions along a dimension "
    "return a pair: read what yours returns.)",
)
def stable_log_softmax(func: Callable) -> None:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    cases = [torch.randn(4, 10, generator=gen), torch.tensor([[100.0, 101.0, 102.0]]),
             torch.tensor([[1000.0, 999.0], [0.0, -1.0]])]  # fmt: skip
    for logits in cases:
        problems = log_softmax_problems(func, logits)
        assert not problems, problems[0]
    logits, labels = cases[0], torch.tensor([3, 1, 4, 1])
    nll = -func(logits)[torch.arange(4), labels].mean()
    assert torch.allclose(nll, F.cross_entropy(logits, labels), atol=1e-5), (
        "your log-softmax, averaged at the right labels, is not F.cross_entropy's loss"
    )


#: Predictions a learner wrote before running an experiment (Lab 1.2's "predict, then
#: run"): {key: text}, as recorded first in this kernel. The grader collects the text from
#: the answer cell itself; this only keeps the run cell from starting before it.
_PREDICTIONS: dict[str, str] = {}
#: Words of the lab's placeholder that a prediction must not still hold.
_PLACEHOLDER = "before you run the next cell"


def record_prediction(key: str, text: Any) -> None:
    """Record the learner's prediction for experiment ``key``; refuses an empty one."""
    words = str(text or "").split()
    if _PLACEHOLDER in str(text) or len(words) < 8:
        raise CheckFailed(
            "write your prediction first, in a sentence or two (8 words or more): what do you "
            "expect, and why? It is not graded on being right"
        )
    _PREDICTIONS.setdefault(key, str(text).strip())
    print(f"✓ prediction recorded ({len(words)} words); now run the experiment")


def require_prediction(key: str) -> None:
    """Stop an experiment's cell until its prediction is recorded."""
    if key not in _PREDICTIONS:
        raise CheckFailed(
            "no prediction recorded for this experiment yet: write it in the cell above and "
            "run that cell first"
        )


@_check("the safe loader refuses your file")
def refused_by_safe_load(path) -> None:
    import pickle

    import torch

    path = Path(path)
    assert path.is_file(), f"there is no file at {paths.show(path)}: save something there first"
    try:
        torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as exc:
        raise AssertionError(
            f"loading it failed with {type(exc).__name__}, not a refusal: the file must be one "
            "torch.save wrote, which torch.load reads only without weights_only"
        ) from None
    else:
        raise AssertionError(
            "torch.load(..., weights_only=True) loaded your file: it holds only what the safe "
            "loader allows (tensors, numbers, strings, containers)"
        )


@_check(
    "model maps a batch of images to 10 logits",
    crashed="it died on a batch of shape (64, 1, 28, 28): does your model flatten each image "
    "before its first Linear layer, and does each layer take the size the last one gave?",
)
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
    probabilities = bool((out >= 0).all()) and torch.allclose(
        out.sum(dim=1), torch.ones(len(out)), atol=1e-4
    )
    assert not probabilities, (
        "every row of your model's output is positive and sums to 1: probabilities, not "
        "logits. F.cross_entropy turns logits into probabilities itself; a second softmax "
        "flattens the gradients. Leave the last layer's scores as they are"
    )
    assert out.requires_grad, (
        "the output does not depend on the model's parameters: does forward() use the layers __init__ made?"
    )
    # An affine map f satisfies f(a + b) + f(0) = f(a) + f(b): layers stacked without a
    # nonlinearity between them collapse into one linear layer, whatever their sizes.
    training = model.training
    model.eval()  # dropout's noise would hide a missing nonlinearity
    with torch.no_grad():
        a, b, zero = x[:8], x[8:16], torch.zeros_like(x[:8])
        gap = (model(a + b) + model(zero) - model(a) - model(b)).abs().max().item()
    model.train(training)
    assert gap > 1e-4, (
        "your model is linear in its input: Linear layers stacked without a nonlinearity "
        "between them are one Linear layer. Put a ReLU after the hidden layer"
    )


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


def speedrun(
    net_class: Callable, recipe: dict[str, Any], subset: int | None = None, optional: bool = False
):
    """``_speedrun`` (below). ``optional``: the notebook's appendix calls it so, and a
    SpeedNet not written yet (its stub raises NotImplementedError) is then reported as not
    attempted instead of failing, so "Run All" of a lab without the appendix ends cleanly.
    The grader calls it without: an unattempted speedrun scores nothing."""
    if optional:
        try:
            net_class()
        except NotImplementedError:
            print("(optional, not attempted: this check runs once SpeedNet is written)")
            return None
    return _speedrun(net_class, recipe, subset)


@_check("your speedrun was measured as `workbook bench` measures (clock paused to evaluate)")
def _speedrun(net_class: Callable, recipe: dict[str, Any], subset: int | None = None, splits=None):
    """Train ``net_class()`` on the CPU on MNIST's training split (54,000 images, seed 0) with
    Adam and a one-cycle schedule as ``recipe`` says (batch_size, learning_rate, epochs 1-3,
    betas), reading the test accuracy every eighth of an epoch with the clock paused, as
    ``workbook bench`` does; print the time to 99.0 %. The clock starts before ``SpeedNet()``
    is built and has no warm-up beside it: whatever the net does before its first step
    counts. ``subset`` (the smoke config's) shrinks the data: the run is then a rehearsal
    that cannot reach 99 %. ``splits``: data already loaded (the grader's measurement).

    Fails when the net is not a module mapping (B, 1, 28, 28) to (B, 10) logits, when the
    recipe is off, or (on the full data) when it learns nothing: below 90 % at the end.
    Returns speedrun.SpeedResult; its ``seconds_to_target`` excludes ``setup_seconds``.
    """
    import time

    import torch

    from shared import data, speedrun
    from shared.config import TrainingConfig
    from shared.train import make_optimizer, make_schedule

    r = _speedrun_recipe(recipe)
    if splits is None:
        splits = data.load_splits(paths.data_root(), 0.1, 0, subset)
    start = time.perf_counter()
    torch.manual_seed(0)
    model = net_class()
    assert isinstance(model, torch.nn.Module), (
        f"SpeedNet() gave a {type(model).__name__}; expected an nn.Module"
    )
    with torch.no_grad():
        shape = tuple(model(splits.train.normalized()[:2]).shape)
    assert shape == (2, 10), f"SpeedNet maps (2, 1, 28, 28) to {shape}; expected (2, 10) logits"
    setup = time.perf_counter() - start
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
        warm=False,
    )  # fmt: skip
    result.setup_seconds = setup
    if result.seconds_to_target is None:
        print(f"99.0 % not reached in {r['epochs']} epoch(s): final test accuracy "
              f"{result.final_accuracy:.2%}, {result.seconds_per_epoch:.2f} s per epoch")  # fmt: skip
    else:
        print(f"99.0 % test accuracy after {setup + result.seconds_to_target:.2f} s "
              f"({setup:.2f} s to build the net, then {result.epochs_to_target:.3f} epochs); "
              f"final {result.final_accuracy:.2%}, {result.seconds_per_epoch:.2f} s per epoch")  # fmt: skip
    if subset is None:
        assert result.final_accuracy >= 0.9, (
            f"after {r['epochs']} epoch(s) your SpeedNet reached {result.final_accuracy:.1%} "
            "test accuracy; a working net passes 97 % in one epoch: check forward() (each "
            "layer used once, ReLU between layers) and the learning rate"
        )
    return result


def speedrun_data():
    """The grader's measurement, before its clock starts: the full splits, loaded; then the
    test files are deleted from this (throw-away) copy of the data, so nothing the learner's
    code does afterwards can read the test set from disk."""
    from shared import data

    splits = data.load_splits(paths.data_root(), 0.1, 0, None)
    for f in (paths.data_root() / "MNIST" / "raw").glob("t10k-*"):
        f.unlink()
    return splits


def speedrun_record(net_class: Callable, recipe: Any, splits) -> str:
    """The grader's measurement: ``_speedrun`` on ``splits``, its figures as JSON (the
    cell's value, which the grader reads)."""
    import json

    result = _speedrun(net_class, recipe, splits=splits)
    reached = result.seconds_to_target is not None
    return json.dumps(
        {
            "seconds_to_99": result.setup_seconds + result.seconds_to_target if reached else None,
            "epochs_to_99": result.epochs_to_target,
            "final_accuracy": result.final_accuracy,
            "setup_seconds": result.setup_seconds,
        }
    )


speedrun.what = _speedrun.what


@_check("loader yields shuffled batches of (images, labels)")
def data_loader(make_loader: Callable, split, batch_size: int) -> None:
    loader = make_loader(split, batch_size)
    images, labels = next(iter(loader))
    assert tuple(images.shape[1:]) == (1, 28, 28), (
        f"images come out with shape {tuple(images.shape)} and dtype {images.dtype}; the model takes (B, 1, 28, 28) floats: the Split gives its images that way too (the DataLoader section says how)"
    )
    assert len(images) == len(labels) == batch_size, (
        f"batch of {len(images)}; expected batch_size={batch_size}"
    )
    first = [next(iter(loader))[1].tolist() for _ in range(3)]
    assert any(f != first[0] for f in first[1:]), (
        "every pass over the data starts with the same batch: a training loader must draw a new order each epoch"
    )
    # Shuffled, each image must still come with its own label: find every batch image in the
    # split and compare the labels.
    flat = split.normalized().flatten(1)
    rows = [int((flat - image.flatten()).abs().sum(1).argmin()) for image in images]
    wrong = sum(int(split.labels[r]) != int(label) for r, label in zip(rows, labels, strict=True))
    assert not wrong, (
        f"{wrong} of the {len(labels)} images of a batch came with another image's label: "
        "images and labels must be shuffled together (one dataset of pairs), never apart"
    )


def _pixel_stats(images) -> tuple[float, float]:
    x = images.double() / 255
    return x.mean().item(), x.std().item()


@_check("the training split's pixel mean and std, on the [0, 1] scale")
def pixel_stats(mean: Any, std: Any, splits) -> None:
    import torch

    for name, value in (("pixel_mean", mean), ("pixel_std", std)):
        assert isinstance(value, float), (
            f"{name} is a {type(value).__name__}; make it a Python float (a one-element "
            "tensor's .item())"
        )
    want_mean, want_std = _pixel_stats(splits.train.images)
    if abs(mean - want_mean) <= 2e-5 and abs(std - want_std) <= 2e-5:
        return
    assert mean <= 1 and std <= 1, (
        f"a mean of {mean:.4g} and a std of {std:.4g}: the pixels are stored from 0 to 255, and "
        "the question asks for them on the [0, 1] scale first"
    )
    everything = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    for name, images in (("validation split", splits.val.images),
                         ("test split", splits.test.images), ("three splits together", everything)):  # fmt: skip
        m, s = _pixel_stats(images)
        assert not (abs(mean - m) <= 2e-5 and abs(std - s) <= 2e-5), (
            f"these are the statistics of the {name}: normalising uses the training split's, "
            "applied unchanged to every split"
        )
    assert abs(mean - want_mean) <= 2e-5, (
        "pixel_mean is not the mean of the training split's pixels"
    )
    raise AssertionError(
        "pixel_mean is right, pixel_std is not: the spread of all the training pixels "
        "together, not an average of each image's spread"
    )


def _transformed(make_transform: Callable, pixels, mean: float, std: float):
    from PIL import Image

    return make_transform(mean, std)(Image.fromarray(pixels.numpy()))


def transform_problems(make_transform: Callable, seed: int, mean: float, std: float) -> list[str]:
    """What is wrong with the learner's ``mnist_transform`` on one random picture."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=gen)
    out = _transformed(make_transform, pixels, mean, std)
    if not isinstance(out, torch.Tensor):
        return [f"the transform returns a {type(out).__name__}; a model takes a tensor"]
    if tuple(out.shape) != (1, 28, 28):
        return [f"a picture comes out with shape {tuple(out.shape)}; a model takes one picture as "
                "(1, 28, 28), its channel first"]  # fmt: skip
    if out.dtype != torch.float32:
        return [f"a picture comes out as {out.dtype}; a model's weights are float32"]
    want = ((pixels.double() / 255 - mean) / std).float().unsqueeze(0)
    if torch.allclose(out, want, atol=1e-4):
        return []
    out = out.as_subclass(torch.Tensor)
    if out.abs().max() > 20:
        return [f"values up to {out.abs().max():.0f}: the mean and std are on the [0, 1] "
                "scale, but the pixels they were applied to were not"]  # fmt: skip
    if torch.allclose(out, (pixels.float() / 255).unsqueeze(0), atol=1e-4):
        return ["the pixels are scaled to [0, 1] but not normalised with the mean and std"]
    if torch.allclose(out, ((pixels.float() / 255 - std) / mean).unsqueeze(0), atol=1e-4):
        return ["the mean and the std are used the other way round"]
    other = _transformed(make_transform, pixels, mean + 0.1, std * 2)
    if isinstance(other, torch.Tensor) and torch.allclose(other.as_subclass(torch.Tensor), out):
        return [f"given mean {mean} and std {std}, and then {mean + 0.1:g} and {std * 2:g}, "
                "your transform gives the same numbers: it must normalise with the statistics "
                "it is given, not with numbers of its own"]  # fmt: skip
    return [f"with mean {mean} and std {std} a pixel of value p should become "
            "(p / 255 - mean) / std; yours come out otherwise"]  # fmt: skip


@_check(
    "your transform makes an MNIST picture a normalised (1, 28, 28) float tensor",
    crashed="it died on a 28x28 PIL picture: can each step take what the step before it gives?",
)
def mnist_transform(make_transform: Callable) -> None:
    problems = transform_problems(make_transform, seed=7, mean=0.2, std=0.35)
    assert not problems, problems[0]


@_check("one knob changed, to a value curves can run")
def one_change(change: Any, curves: Callable) -> None:
    import inspect

    knobs = {name: p.default for name, p in inspect.signature(curves).parameters.items()
             if name != "epochs"}  # fmt: skip
    assert isinstance(change, dict) and change, (
        f"change is {change!r}; make it a dict with one of {', '.join(knobs)} and its new value"
    )
    assert len(change) == 1, (
        f"change holds {len(change)} knobs: with more than one, you cannot tell which moved "
        "the curves"
    )
    ((key, value),) = change.items()
    assert key in knobs, f"{key!r} is not one of the knobs: {', '.join(knobs)}"
    limits = {"train_size": (int, 100, 40_000), "hidden": (int, 1, 4096),
              "lr": (float, 1e-6, 1.0), "weight_decay": (float, 0.0, 1.0)}  # fmt: skip
    kind, low, high = limits[key]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    assert number and (kind is float or isinstance(value, int)), (
        f"{key} must be {'an integer' if kind is int else 'a number'}, not {value!r}"
    )
    assert low <= value <= high, f"{key}={value} is outside what this cell can run: {low} to {high}"
    assert value != knobs[key], f"{key}={value} is the value the first run used: change it"


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
                # a move names a device (t.to(device), t.to("cpu")); t.to(torch.long) does not
                where = [*args[1:], kwargs.get("device")] if kwargs else list(args[1:])
                moves = any(isinstance(w, torch.device | str) for w in where)
                if func is torch.Tensor.to and args and moves:
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
    # A model with dropout, handed over in evaluation mode (as it is after an evaluate): a
    # loop that never calls model.train() trains it with dropout off.
    dropout_model, _ = _tiny_problem(dropout=0.5)
    dropout_model.eval()
    modes: list[bool] = []
    dropout_model[3].register_forward_pre_hook(lambda m, i: modes.append(m.training))
    train_epoch(dropout_model, batches, torch.optim.SGD(dropout_model.parameters(), lr=0.1),
                torch.device("cpu"))  # fmt: skip
    assert modes and all(modes), (
        "a model handed to train_epoch in evaluation mode, as it is after an evaluation, "
        "trained with its dropout off: the loop never told the model it is training"
    )
    changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert changed, (
        "the weights did not change after a whole epoch: are the gradients computed, and does the optimizer take its step, for every batch?"
    )
    same = all(
        torch.allclose(p, q, atol=1e-6)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True)
    )
    assert same, (
        "after one epoch your weights differ from the package's: are the old gradients cleared "
        "before each batch's backward pass (they add up otherwise), and is there one step per batch?"
    )
    assert isinstance(loss, float), (
        f"train_epoch returned a {type(loss).__name__}; return the mean loss as a Python float (a one-number tensor has a method that gives its number)"
    )
    assert abs(loss - expected) < 1e-4, (
        f"mean loss {loss:.5f}; expected {expected:.5f}: average over samples"
    )
    assert moves.tensors >= 2 * len(batches), _unmoved(moves.tensors, len(batches))


def _unmoved(moved: int, batches: int) -> str:
    what = (
        "the batches never moved"
        if moved == 0
        else (f"{moved} tensors moved for {batches} batches of images and labels: some never moved")
    )
    return (
        f"{what} to the device: on a GPU the model, its inputs and the labels the loss "
        "compares with must all be on the same one (move the images and the labels)"
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
    assert not any(grad_seen), (
        "the model's outputs were recorded for gradients: evaluation never calls backward, so "
        "that graph costs memory and time for nothing (the evaluation loop's section names the switch)"
    )
    # the images at least: the labels may be compared where they are (predictions.cpu())
    assert moves.tensors >= len(batches), _unmoved(moves.tensors, len(batches))
    assert isinstance(acc, float), (
        f"evaluate returned a {type(acc).__name__}; return the accuracy as a Python float (a "
        "one-number tensor has a method that gives its number)"
    )
    again = evaluate(model.train(), batches, cpu)
    assert acc == again, (
        "two evaluations of the same model differ: something random (dropout) is still on while evaluating; the evaluation loop's section names the switch"
    )
    expected = reference(model, batches, torch.device("cpu"))["accuracy"]
    # 1e-6: a float32 mean of 100 hits is 0.09000000357..., and one sample is 0.01
    assert abs(float(acc) - expected) < 1e-6, (
        f"accuracy {acc}; expected {expected}: count the correct predictions (each the class "
        "of the largest logit) over all samples, then divide by the number of samples"
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


@_check("the device: the usable accelerator, else the CPU")
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
        "every batch must move to the device, inside your loops"
    )
    for problem in _fit_problems(my_fit):
        raise AssertionError(problem)


def _fit_problems(my_fit: Callable) -> list[str]:
    """my_fit against the same loop written out (the learner's own train_epoch and evaluate,
    as their my_fit calls them): the lr it is given, one Adam for all epochs, and the
    validation loader for val_accuracy."""
    import torch

    from shared.train import evaluate as reference_evaluate

    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    model, batches = _tiny_problem(seed=3)
    before = weights(model)
    my_fit(model, batches, batches, 2, 0.0, torch.device("cpu"))
    if not torch.equal(weights(model), before):
        return ["with lr=0 the weights still changed: make the optimizer with the lr my_fit "
                "is given, not a number of your own"]  # fmt: skip
    # what my_fit should do, step by step, with the learner's own train_epoch
    train_epoch = my_fit.__globals__.get("train_epoch")
    model, batches = _tiny_problem(seed=4)
    if callable(train_epoch):
        twin, _ = _tiny_problem(seed=4)
        optimizer = torch.optim.Adam(twin.parameters(), lr=0.01)
        for _ in range(2):
            train_epoch(twin, batches, optimizer, torch.device("cpu"))
        my_fit(model, batches, batches, 2, 0.01, torch.device("cpu"))
        if not torch.allclose(weights(model), weights(twin), atol=1e-6):
            return ["two epochs of my_fit end with other weights than one Adam made before the "
                    "first epoch and kept for both: is the optimizer made once, outside the "
                    "epoch loop (a new one each epoch forgets its running averages)?"]  # fmt: skip
    # A validation loader unlike the training one: labelled with the model's own predictions
    # (lr=0 keeps the model as it is), so it scores 100 % there and about 10 % on batches.
    from torch.utils.data import DataLoader, TensorDataset

    model, batches = _tiny_problem(seed=5)
    images = next(iter(batches))[0]
    with torch.no_grad():
        model.eval()
        val = DataLoader(TensorDataset(images, model(images).argmax(1)), batch_size=16)
    history = my_fit(model, batches, val, 1, 0.0, torch.device("cpu"))
    expected = reference_evaluate(model, val, torch.device("cpu"))["accuracy"]
    if abs(float(history[-1]["val_accuracy"]) - expected) > 1e-6:
        return [f"val_accuracy is {float(history[-1]['val_accuracy']):.3f}; the model scores "
                f"{expected:.3f} on val_loader: measure it on the validation loader"]  # fmt: skip
    return []


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


#: Fresh runs of a learner's script, by (the script's digest, the resolved config's hash):
#: the metrics and a copy of what it wrote. A seeded script on the same config writes the
#: same files, so two checks that need the same run (the notebook's config straight through)
#: share one, about 4 s each.
_SCRIPT_RUNS: dict[tuple[str, str], tuple[dict, Path]] = {}


def _script_key(script, config_path) -> tuple[str, str] | None:
    import hashlib

    from shared.config import ConfigError, load_config

    try:
        config_hash = load_config(config_path).hash()
    except ConfigError:
        return None
    return hashlib.sha256(Path(script).read_bytes()).hexdigest(), config_hash


def script_result(script, config_path, out_dir, *extra: str) -> dict:
    """Run the learner's training script on ``config_path`` into ``out_dir`` (with ``extra``
    arguments); the metrics it wrote, or an AssertionError that quotes what it printed."""
    import atexit
    import copy
    import shutil

    key = None if extra else _script_key(script, config_path)
    if key in _SCRIPT_RUNS:
        metrics, kept = _SCRIPT_RUNS[key]
        shutil.copytree(kept, out_dir, dirs_exist_ok=True)
        return copy.deepcopy(metrics)
    metrics = _script_metrics(script, config_path, out_dir, *extra)
    if key is not None:
        kept = Path(tempfile.mkdtemp(prefix="workbook-script-run-"))
        atexit.register(shutil.rmtree, kept, True)
        shutil.copytree(out_dir, kept, dirs_exist_ok=True)
        _SCRIPT_RUNS[key] = (copy.deepcopy(metrics), kept)
    return metrics


def _script_metrics(script, config_path, out_dir, *extra: str) -> dict:
    done = _run_script(script, ["--config", str(config_path), "--out", str(out_dir), *extra])
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


@_check("the script checkpoints every epoch and resumes exactly")
def script_resumes(script, config_path) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def epochs(n: int) -> Path:
            f = tmp / f"epochs{n}.yaml"
            f.write_text(f"extends: {paths.resolve(config_path)}\ntraining:\n  epochs: {n}\n")
            return f

        straight = script_result(script, epochs(2), tmp / "straight")
        checkpoint = tmp / "straight" / "checkpoint.pt"
        assert checkpoint.is_file(), "the script wrote no checkpoint.pt in --out"
        try:
            torch.load(checkpoint, weights_only=True)
        except Exception as exc:
            raise AssertionError(
                f"checkpoint.pt does not load with weights_only=True ({type(exc).__name__}): "
                "save tensors, numbers, strings and containers of them, not objects"
            ) from None
        script_result(script, epochs(1), tmp / "resumed")
        resumed = script_result(script, epochs(2), tmp / "resumed", "--resume")
        assert len(resumed["history"]) == 2, (
            f"one epoch, then a resumed run to two, recorded {len(resumed['history'])} "
            "epoch(s): keep the checkpoint's history and add the epochs that follow it"
        )
        a, b = straight["history"][-1], resumed["history"][-1]
        same = (
            abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-6
            and a["val_accuracy"] == b["val_accuracy"]
            and straight["test_accuracy"] == resumed["test_accuracy"]
        )
        assert same, (
            f"two epochs straight end with train loss {a['train_loss']:.6f}, validation "
            f"accuracy {a['val_accuracy']:.4f}; one epoch then a resumed second with "
            f"{b['train_loss']:.6f}, {b['val_accuracy']:.4f}: something epoch 2 depends on "
            "was not saved or not restored"
        )
        (tmp / "resumed" / "checkpoint.pt").write_bytes(b"not a checkpoint")
        broken = _run_script(
            script, ["--config", str(epochs(3)), "--out", str(tmp / "resumed"), "--resume"]
        )
        assert broken.returncode != 0, (
            "with --resume and an unreadable checkpoint.pt the script exited 0: either it did "
            "not read the checkpoint at all, or it started over silently, which hides the loss"
        )


# --------------------------------------------------------------------------- 03 configs


#: Lab 1.3's question, as the values its config must hold: (key, how to read it in words).
MY_CONFIG_ASKS = "an MLP with hidden layers 256 then 64, three times the default's epochs, a tenth of its learning rate"


def my_config_problems(text: Any) -> list[str]:
    """What is wrong with the learner's YAML for the question ``MY_CONFIG_ASKS``."""
    import yaml

    from shared.config import ConfigError, load_config, load_config_text

    if not isinstance(text, str):
        return [f"my_config_yaml is a {type(text).__name__}; make it a string of YAML"]
    try:
        raw = yaml.safe_load(text)
        cfg = load_config_text(text)
    except (ConfigError, yaml.YAMLError) as exc:
        return [f"your config does not load: {str(exc).split(': ', 1)[-1]}"]
    default_file = (project_root() / "configs" / "default.yaml").resolve()
    base = raw.get("extends") if isinstance(raw, dict) else None
    if not isinstance(base, str) or (default_file.parent / base).resolve() != default_file:
        return [
            "it does not extend default.yaml: a config that repeats every value drifts "
            "from the default the day someone changes it"
        ]
    default = load_config(default_file)
    if cfg.model.name != "mlp":
        return [f"model.name is {cfg.model.name!r}: the question is about the other kind of model"]
    problems = []
    if list(cfg.model.hidden_sizes) != [256, 64]:
        problems.append(
            f"the MLP's hidden layers are {cfg.model.hidden_sizes}: the question "
            "names two, in order"
        )
    if cfg.training.epochs != 3 * default.training.epochs:
        problems.append(
            f"training.epochs is {cfg.training.epochs}: three times what the default "
            "trains for (read it in default.yaml)"
        )
    if abs(cfg.training.learning_rate - default.training.learning_rate / 10) > 1e-12:
        problems.append(
            f"training.learning_rate is {cfg.training.learning_rate}: a tenth of the "
            "default's (read it in default.yaml)"
        )
    return problems


@_check("your YAML config says what the question asks")
def my_config(text: str) -> None:
    problems = my_config_problems(text)
    assert not problems, "\n  " + "\n  ".join(problems) if len(problems) > 1 else problems[0]


def experiment_problems(folder: Path) -> list[str]:
    """What is wrong with a learner's experiment files (Lab 1.3): at least two, each with a
    hypothesis that can be tested, each one change (or two) from the baseline, each run
    under its own name."""

    from shared.config import ConfigError, load_config

    baseline_file = project_root() / "configs" / "experiments" / "baseline.yaml"
    baseline = load_config(baseline_file).model_dump(exclude={"output"})
    course = {load_config(f).output.name for f in baseline_file.parent.glob("*.yaml")}
    files = sorted(Path(folder).glob("*.yaml"))
    if len(files) < 2:
        return [f"{len(files)} experiment file(s) in {paths.show(folder)}; write two"]
    problems, names = [], {}
    for f in files:
        text = f.read_text()
        found = re.search(r"^#\s*hypothesis:\s*(.+)$", text, re.M | re.I)
        if not found or len(found[1].split()) < 8:
            problems.append(
                f"{f.name}: no '# hypothesis: ...' line of a sentence (8 words or "
                "more): what do you expect, and why?"
            )
            continue
        try:
            cfg = load_config(f)
        except ConfigError as exc:
            problems.append(f"{f.name} does not load: {str(exc).split(': ', 1)[-1]}")
            continue
        mine = cfg.model_dump(exclude={"output"})
        changed = sorted(
            f"{s}.{k}" if isinstance(v, dict) else s
            for s, v in mine.items()
            for k in (v if isinstance(v, dict) else [None])
            if (v[k] if isinstance(v, dict) else v) != (baseline[s][k] if isinstance(v, dict) else baseline[s])
        )  # fmt: skip
        if "model.name" in changed:
            changed = ["model"]  # another kind of model is one change, whatever its keys
        if not changed:
            problems.append(
                f"{f.name} changes nothing from the baseline: does it extend "
                "../baseline.yaml and set the value you want to test?"
            )
        elif len(changed) > 2:
            problems.append(
                f"{f.name} changes {', '.join(changed)}: with that many changes the "
                "table cannot say which one made the difference"
            )
        if cfg.output.name in course or cfg.output.name in names:
            problems.append(
                f"{f.name}: output.name {cfg.output.name!r} is taken by "
                f"{names.get(cfg.output.name, 'a course experiment')}: give it its own"
            )
        names[cfg.output.name] = f.name
    return problems


@_check("your two experiments: a testable hypothesis and one change each")
def my_experiments(folder: Path) -> None:
    problems = experiment_problems(folder)
    assert not problems, problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems)


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


def check_trainer_run(train_from_config, config, splits=None) -> dict:
    """Run the learner's ``train_from_config`` on ``config`` (with ``splits``, Lab 1.4's
    form: ``train_from_config(config, splits=splits)``) and check that it built what the
    config says; returns its result. Shared by the self-checks and the hidden check."""
    from shared.data import training_images
    from shared.model import build_model, count_parameters
    from shared.pipeline import call_trainer

    if splits is None:
        n_train = training_images(config.data.subset, config.data.val_fraction)
        data_from = "the data from config.data (subset, val_fraction)"
    else:
        n_train, data_from = len(splits.train), "the data from the splits it is given"
    with _StepLog() as log:
        if splits is None:
            result = train_from_config(config)
        else:
            result = call_trainer(train_from_config, config, splits)[0]
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
        f"and epochs from config.training, {data_from}, and keep the last, smaller batch "
        "(no drop_last)"
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
            f"the learning rate never changed; the config's scheduler is {t.scheduler!r}: is "
            "the schedule made from the config, handed to the loop that steps per batch, and "
            "told when each epoch ends (per-epoch schedules)?"
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
        "two runs of the same config gave different weights: does every random draw (the first "
        "weights, the order of the batches) follow from config.seed?"
    )


# --------------------------------------------------------------------------- 04 your pipeline

#: Where Lab 1.4's trainer check points config.data: nowhere. The pipeline hands the trainer
#: its data; a trainer that loads config.data instead fails there, and is told so.
NOT_THE_DATA = "config-data-is-not-where-the-pipeline-data-is"


def _module_undefined(function: Callable) -> list[str]:
    """The global names the functions of ``function``'s module read and the module never
    defines or imports (what a notebook's earlier cells defined for it)."""
    import inspect
    import sys

    module = sys.modules.get(function.__module__)
    scope = vars(module) if module else function.__globals__
    functions = [f for f in scope.values()
                 if inspect.isfunction(f) and f.__module__ == function.__module__]  # fmt: skip
    return sorted({n for f in functions for n in free_globals(f) if n not in scope})


@_check("my_trainer.py: your Lab 1.3 trainer as a module, training on the data it is given")
def promoted_trainer(path) -> None:
    from shared import data, pipeline
    from shared.config import load_config
    from shared.train import CheckpointError, as_config_model, weights_digest

    try:
        trainer = pipeline.load_trainer(path)
    except NameError as exc:  # a name the module's own top level uses (an annotation)
        _fail(
            f"{paths.show(Path(path))}: {exc}, as the module loads: a module sees only its "
            "own imports, not the notebook's; import at its top what it uses"
        )
    undefined = _module_undefined(trainer)
    assert not undefined, (
        f"{paths.show(Path(path))} uses {', '.join(undefined)} without importing or defining "
        f"{'it' if len(undefined) == 1 else 'them'}: a module sees only its own imports, not "
        "the notebook's; import at its top what its functions use"
    )
    config = load_config(
        project_root() / "configs" / "default.yaml", [*TRAINER_CONFIG, f"data.root={NOT_THE_DATA}"]
    )
    # 500 images where the config says 600: a trainer that found the data some other way
    # (a fixed path) takes the wrong number of steps
    splits = data.load_splits(paths.data_root(), config.data.val_fraction, config.seed, 500)
    try:
        first = check_trainer_run(trainer, config, splits)
    except pipeline.TrainerError as exc:
        _fail(f"my_trainer.py: {exc}")
    except Exception as exc:
        if NOT_THE_DATA not in str(exc):
            raise
        _fail(
            "your trainer loaded the data config.data names although it was given splits: "
            "when splits is not None, train, validate and test on splits.train, splits.val and "
            "splits.test (the pipeline's day of data); load config.data only without them"
        )
    again = trainer(config, splits=splits)
    assert weights_digest(first["model"]) == weights_digest(again["model"]), (
        "two runs of the same config on the same splits gave different weights: does every "
        "random draw (the first weights, the order of the batches) follow from config.seed?"
    )
    try:
        as_config_model(first["model"], config)  # what the pipeline's checkpoint will hold
    except CheckpointError as exc:
        _fail(f"my_trainer.py: {exc}")


#: Lab 1.4's DAGs and the order their tasks must run in (each pair: first before second).
LAB1_4_ORDER = {
    "my_training_pipeline": ["ingest", "validate", "train", "evaluate", "register"],
    "my_model_in_production": ["deliver", "predict", "monitor", "drift_found", "flag_drift"],
    "my_retraining": ["retrain", "challenge"],
}
DRIFT_ASSET = "mnist_drift"
#: What a DAG file must not import when it is parsed (the tasks import them when they run).
HEAVY_AT_PARSE = ("torch", "torchvision", "shared.pipeline", "shared.lifecycle", "shared.train")


def lab1_4_dag(folder, dag_id: str):
    """The DAG ``dag_id`` from ``<folder>/<dag_id>.py``, or a failure naming what is wrong."""
    from pathlib import Path

    from shared.airflow_local import first_import_error, load_dag_file

    path = Path(folder) / f"{dag_id}.py"
    assert path.is_file(), f"{paths.show(path)} is missing: run the cell that writes it"
    bag = load_dag_file(path)
    error = first_import_error(bag)
    if error:
        _fail(f"{dag_id}: the file does not import: {error}")
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{path.name} holds no DAG with dag_id {dag_id!r} (found {bag.dag_ids})"
    return dag


def _asset_names(obj) -> set[str]:
    """The names of the assets in a task's outlets or a DAG's asset condition (an Asset, or
    AssetAll / AssetAny of them, nested)."""
    if obj is None:
        return set()
    if isinstance(obj, list | tuple):
        return set().union(*(_asset_names(o) for o in obj)) if obj else set()
    if hasattr(obj, "objects"):  # AssetAll, AssetAny
        return _asset_names(list(obj.objects))
    name = getattr(obj, "name", None)
    return {name} if isinstance(name, str) else set()


@_check("your Lab 1.4 DAGs: their tasks and their order, and the asset that links two of them")
def lab1_4_dags(folder, dag_ids: Sequence[str] = tuple(LAB1_4_ORDER)) -> None:
    for dag_id in dag_ids:
        order = LAB1_4_ORDER[dag_id]
        dag = lab1_4_dag(folder, dag_id)
        tasks = set(dag.task_dict)
        assert tasks == set(order), (
            f"{dag_id} has the tasks {sorted(tasks)}; the table asks for {order}"
        )
        for first, then in zip(order, order[1:], strict=False):
            assert first in dag.task_dict[then].upstream_task_ids, (
                f"{dag_id}: {then} does not wait for {first}; wire them so {first} runs first "
                "(a task that takes another's result waits for it)"
            )
        from shared.airflow_local import imported_when_parsed

        heavy = imported_when_parsed(dag.fileloc, HEAVY_AT_PARSE)
        assert not heavy, (
            f"{dag_id}: parsing the file imports {', '.join(heavy)}: Airflow parses it every "
            "30 s (Lab 1.1, section 6); import them inside the tasks that use them"
        )
        if dag_id == "my_model_in_production":
            outlets = _asset_names(dag.task_dict["flag_drift"].outlets)
            assert DRIFT_ASSET in outlets, (
                f"flag_drift updates {sorted(outlets) or 'no asset'}; it must name the asset "
                f"{DRIFT_ASSET!r} among its outlets, or nothing ever tells my_retraining"
            )
        if dag_id == "my_retraining":
            scheduled_on = _asset_names(getattr(dag.timetable, "asset_condition", None))
            assert DRIFT_ASSET in scheduled_on, (
                f"my_retraining is scheduled {dag.schedule!r}; it must run when the "
                f"asset {DRIFT_ASSET!r} is updated, the one flag_drift updates"
            )
        else:
            assert dag.catchup is False, (
                f"{dag_id}: catchup is on; switching it on would create a run for every day "
                "since its start_date"
            )


@_check("my_training_pipeline: runs for two dates of yours, each into its own partitions")
def two_dates(runs: Any) -> None:
    assert isinstance(runs, dict) and len(runs) == 2, (
        f"expected {{date: states}} for two dates; found {str(runs)[:80]}"
    )
    dates = sorted(runs)
    assert any("2024-01-01" <= ds <= "2024-01-05" for ds in dates), (
        f"you chose {dates}: pick at least one in the backfill's range, 2024-01-01..2024-01-05, "
        "so that section 4 has something to predict"
    )
    for ds, states in runs.items():
        assert states, f"the run for {ds} ran no task: is {ds} before the DAG's start_date?"
        bad = {t: s for t, s in states.items() if s != "success"}
        assert not bad, f"the run for {ds} has tasks that did not succeed: {bad}; read its log"
        for stage in ("raw", "processed"):
            folder = paths.data_root() / stage / ds
            assert (folder).is_dir(), f"after the run for {ds} there is no data/{stage}/{ds}/"
        # what the run left, not only what the notebook says it did
        assert any((paths.runs_root() / "pipeline" / ds).glob("*/evaluation.json")), (
            f"after the run for {ds} no model was trained and evaluated in "
            f"runs/pipeline/{ds}/: do train and evaluate take the date from ds?"
        )
        assert any((project_root() / "registry" / "lab1_4" / "mnist").glob(f"{ds}-*")), (
            f"after the run for {ds} nothing was registered for it in registry/lab1_4/mnist/"
        )
    best = project_root() / "registry" / "lab1_4" / "mnist" / "best.json"
    assert best.is_file(), (
        f"after both runs there is no {paths.show(best)}: register must write under the project "
        "root (paths.project_root()), not a folder relative to wherever the task runs"
    )


def _failed_for_good(tries: dict, task: str, why: str) -> str | None:
    """None when ``task`` failed on its first try; else what it did instead."""
    state, attempt = tries.get(task, ("missing", 0))
    if state == "success":
        return f"{why}, {task} succeeded"
    if state != "failed":
        return f"{why}, {task} ended {state}: it never ran (read the run's first failure)"
    if attempt > 1:
        return (f"{why}, {task} failed only after {attempt} tries: no retry can fix that, so "
                "the first failure must be the last (an AirflowFailException)")  # fmt: skip
    return None


def pipeline_failure_problems(dag, ds: str, bad_config: str, conf: dict) -> list[str]:
    """Run ``my_training_pipeline`` four times for ``ds``: with a config that fails
    validation and with data that does (the failing task must fail on its first try, for
    good), with ``ingest`` and ``train`` each failing once with a transient OSError (each
    must succeed on its retry), and without a logical date (``ingest`` must refuse at once).
    Returns what went wrong. ``conf`` is the params of a good run (a run for the same date
    may otherwise inherit the bad config's)."""
    from shared import airflow_local, pipeline
    from shared.data import DataValidationError

    problems = []
    # The runs' logs (tracebacks, on purpose) stay out of the learner's cell.
    tries, _ = airflow_local.run_dag_logged(dag, ds, conf={**conf, "config_path": bad_config})
    problems.append(_failed_for_good(tries, "train", f"with the config {bad_config} (a batch "
                                     "size of 0)"))  # fmt: skip
    if tries.get("register", ("",))[0] == "success":
        problems.append("register succeeded after a failed train")

    real_validate = pipeline.validate_partition

    def bad_data(*args, **kwargs):
        raise DataValidationError("class shares 0.0%..31.2% outside 2%..20% (simulated)", {})

    pipeline.validate_partition = bad_data
    try:
        tries, _ = airflow_local.run_dag_logged(dag, ds, conf=conf)
    finally:
        pipeline.validate_partition = real_validate
    problems.append(_failed_for_good(tries, "validate", "when the day's data failed validation"))

    # A busy disk, once in ingest and once in train: each must succeed on its retry (a task
    # that turns every error into AirflowFailException fails here for good).
    calls: dict[str, int] = {}

    def flaky(name: str, real: Callable) -> Callable:
        def once_busy(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == 1:
                raise OSError("the data share is busy (simulated): try again")
            return real(*args, **kwargs)

        return once_busy

    real = {name: getattr(pipeline, name) for name in ("ingest", "train")}
    for name, function in real.items():
        setattr(pipeline, name, flaky(name, function))
    try:
        tries, log = airflow_local.run_dag_logged(dag, ds, conf=conf)
    finally:
        for name, function in real.items():
            setattr(pipeline, name, function)
    errors = [line for line in airflow_local.exception_lines(log) if "simulated" not in line]
    for name in real:
        state, attempt = tries.get(name, ("missing", 0))
        if (state, attempt) == ("success", 2):
            continue
        if state == "success" and not calls.get(name):
            problems.append(f"{name} never called shared.pipeline.{name}: the check could not "
                            "simulate a busy disk there")  # fmt: skip
        elif state in ("success", "failed"):
            problems.append(f"when the data share was busy once, {name} ended {state} after "
                            f"{attempt} tr{'y' if attempt == 1 else 'ies'}: a transient error "
                            "should be retried, and succeed on the second try"
                            + (f" (the log's last error: {errors[-1][:200]})" if errors else ""))  # fmt: skip
            break  # what follows a failed task never ran

    tries, _ = airflow_local.run_dag_logged(dag, None, conf=conf)
    problems.append(_failed_for_good(tries, "ingest", "in a run without a logical date"))
    return [p for p in problems if p]


@_check(
    "my_training_pipeline: bad config, bad data and no date fail at once; a busy disk is retried"
)
def pipeline_failures(dag, ds: str, bad_config: str, conf: dict) -> None:
    problems = pipeline_failure_problems(dag, ds, bad_config, conf)
    assert not problems, "\n  " + "\n  ".join(problems)


@_check("your prediction of the backfill's runs")
def backfill_prediction(predicted: Any, planned: list[str]) -> None:
    assert isinstance(predicted, list | tuple) and all(isinstance(d, str) for d in predicted), (
        f"predicted_runs should be a list of dates as 'YYYY-MM-DD' strings; found {predicted!r}"
    )
    missing, extra = sorted(set(planned) - set(predicted)), sorted(set(predicted) - set(planned))
    assert not missing and not extra, (
        f"the dry run plans {len(planned)} run(s); you predicted {len(predicted)}"
        + (f"; you left out {missing}" if missing else "")
        + (f"; it plans none for {extra}" if extra else "")
        + ". Which dates did your two runs already cover, and what does --reprocess-behavior "
        "none do with them?"
    )


@_check("flag_drift's event says which day drifted")
def drift_event(events: Any, ds: str) -> None:
    assert events, (
        f"flag_drift succeeded on {ds} but the asset {DRIFT_ASSET!r} has no event: is it in "
        "flag_drift's outlets?"
    )
    extra = events[-1]["extra"]
    assert isinstance(extra, dict) and extra.get("ds") == ds, (
        f"the asset's latest event carries {extra!r}; my_retraining reads which day drifted "
        f"from it, so attach the monitor's dict, with its 'ds' ({ds!r} today)"
    )


@_check("the loop closed: drift found on the shifted days only, a retrained model registered")
def loop_closed(days: Any) -> None:
    from shared import lifecycle

    assert isinstance(days, list) and days, "days should be the list of rows the loop built"
    for row in days:
        expected = lifecycle.is_shifted(row["ds"])
        assert row["drift"] == expected, (
            f"on {row['ds']} your monitor {'found' if row['drift'] else 'did not find'} drift, "
            f"but that day {'comes from the new scanner' if expected else 'is a normal day'}: "
            "look at the numbers the monitor reported that day, and at your thresholds"
        )
    assert any(row.get("registered") for row in days), (
        "no retrained model was registered: read my_retraining's log in the loop's output"
    )
    assert days[-1]["accuracy"] > min(r["accuracy"] for r in days) + 0.2, (
        "the last day's accuracy is no better than the worst day's: the retrained model is "
        "not the one predicting; does predict read best.json on each run?"
    )
