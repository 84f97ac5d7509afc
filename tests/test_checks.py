"""Self-checks and hidden checks: right answers pass (every correct spelling of them), wrong
ones fail with a hint a learner can act on, never a bare exception. Plus the lab generator's
hints, answers, points and debugging regions.
"""

from __future__ import annotations

import html
import json
import re
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import torch

from shared import checks
from workbook import labs
from workbook.grading import suites

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- 00: the habits

THRESHOLD = 0.9
SCALE = 255


def normalise(pixels, scale=SCALE):
    return [p / scale for p in pixels]


def accuracy(predictions, labels):
    matches = [p == t for p, t in zip(predictions, labels, strict=True)]
    return matches.count(True) / len(matches)  # `.count` is an attribute, not a global


def unsure(probabilities):
    return [i for i, p in enumerate(probabilities) if p < THRESHOLD]  # a global, in a comprehension


def unsure_explicit(probabilities, threshold):
    return [i for i, p in enumerate(probabilities) if p < threshold]


def unsure_still_global(probabilities, threshold):
    return [i for i, p in enumerate(probabilities) if p < THRESHOLD]


def unsure_off_by_one(probabilities, threshold):
    return [i for i, p in enumerate(probabilities) if p <= threshold]


THREE = {"normalise": normalise, "accuracy": accuracy, "unsure": unsure}


def test_hidden_global_is_found_in_the_bytecode_not_by_its_name(capsys):
    checks.hidden_global("THRESHOLD", unsure_explicit, THREE)
    assert "✓" in capsys.readouterr().out
    # a default value is read once, at def time: SCALE is not what unsure reads at call time
    with pytest.raises(checks.CheckFailed, match="'SCALE' is not read when any of the three"):
        checks.hidden_global("SCALE", unsure_explicit, THREE)
    with pytest.raises(checks.CheckFailed, match=r"still reads the global \['THRESHOLD'\]"):
        checks.hidden_global("THRESHOLD", unsure_still_global, THREE)
    with pytest.raises(checks.CheckFailed, match="returned"):
        checks.hidden_global("THRESHOLD", unsure_off_by_one, THREE)


def test_free_globals_are_loads_not_attribute_names():
    assert checks.free_globals(accuracy) == {}
    assert set(checks.free_globals(unsure)) == {"THRESHOLD"}


def write_in_place(path, values):
    with open(path, "w") as f:
        for v in values:
            f.write(f"{v}\n")


def write_appending(path, values):
    with open(path, "a") as f:
        for v in values:
            f.write(f"{v}\n")


def write_swallowing(path, values):
    import os

    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "w") as f:
            for v in values:
                f.write(f"{v}\n")
    except Exception:
        return  # hides the failure: the task would be marked a success
    os.replace(tmp, path)


def write_swapped_in(path, values):
    import tempfile
    from pathlib import Path

    fd, name = tempfile.mkstemp(dir=path.parent)
    with open(fd, "w") as f:
        f.writelines(f"{v}\n" for v in values)
    Path(name).replace(path)


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (write_in_place, "a crash halfway left"),
        (write_appending, "lines instead of 3"),
        (write_swallowing, "let it propagate"),
    ],
)
def test_crash_safe_writer_names_each_mistake(writer, message):
    with pytest.raises(checks.CheckFailed, match=message):
        checks.crash_safe_writer(writer)


def test_crash_safe_writer_accepts_another_correct_style(capsys):
    checks.crash_safe_writer(write_swapped_in)
    assert "✓" in capsys.readouterr().out


# --------------------------------------------------------------------------- quizzes and cron


def _right(quiz: dict, choices) -> dict:
    return {
        q: next(c for c in choices if checks.answer_key(q, c) == digest)
        for q, (digest, _) in quiz.items()
    }


def test_quiz_keys_are_digests_and_feedback_never_names_the_right_answer():
    answers = _right(checks.LOOP_QUIZ, checks.LOOP_CHOICES)
    checks.lifecycle_quiz({q: a.upper() for q, a in answers.items()})  # any case
    source = Path(checks.__file__).read_text()
    assert all(
        f'"{a}"' not in source.split("LOOP_QUIZ = {")[1].split("}")[0] for a in answers.values()
    )
    # answering one choice everywhere: the message counts and nudges, naming no right answer
    for everywhere in checks.LOOP_CHOICES:
        wrong = dict.fromkeys(checks.LOOP_QUIZ, everywhere)
        n = sum(a != everywhere for a in answers.values())
        with pytest.raises(checks.CheckFailed, match=f"{n} of 6 answers to rethink") as err:
            checks.lifecycle_quiz(wrong)
        text = str(err.value)
        for question, right in answers.items():
            line = (
                next(x for x in text.splitlines() if question in x) if right != everywhere else ""
            )
            assert f"'{right}'" not in line and f'"{right}"' not in line
    tool = _right(checks.TOOL_QUIZ, checks.TOOL_CHOICES)
    assert set(tool.values()) == set(checks.TOOL_CHOICES), "three choices, each used"
    unanswered = dict.fromkeys(checks.TOOL_QUIZ)
    with pytest.raises(checks.CheckFailed, match="(?s)0 of 8 answers to rethink, 8 not answered"):
        checks.tool_quiz(unanswered)


@pytest.mark.parametrize(
    "weekdays", ["30 2 * * 1-5", "30 2 * * mon-fri", "30 02 * * MON-FRI", "30 2 * * 1,2,3,4,5"]
)
def test_cron_check_accepts_every_correct_spelling(weekdays):
    checks.cron_expressions(
        {
            "weekdays at 02:30": weekdays,
            "every 15 minutes": "0,15,30,45 * * * *",
            "first of the month at midnight": "@monthly",
        }
    )


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        ("30 2 * * *", "fires at 2024-01-05 02:30, 2024-01-06 02:30"),  # Saturday too
        ("2 30 * * 1-5", "not a cron expression Airflow accepts"),
        (None, "no cron expression yet"),
    ],
)
def test_cron_check_says_when_a_wrong_expression_fires(answer, hint):
    answers = {**dict.fromkeys(checks.CRON_EXPECTED, "*/15 * * * *"), "weekdays at 02:30": answer}
    with pytest.raises(checks.CheckFailed, match="weekdays at 02:30") as err:
        checks.cron_expressions(answers)
    assert hint in str(err.value)


def test_settings_from_config_needs_the_right_names_and_the_configs_values(capsys):
    names = {"learning_rate", "batch_size", "epochs"}
    checks.settings_from_config(names, lambda c: {n: c.training[n] for n in names})
    assert "✓" in capsys.readouterr().out
    with pytest.raises(checks.CheckFailed, match="'pixels' is in belongs_in_config"):
        checks.settings_from_config(names | {"pixels"}, lambda c: {})
    with pytest.raises(checks.CheckFailed, match="1 experiment setting is missing"):
        checks.settings_from_config({"learning_rate", "epochs"}, lambda c: {})
    with pytest.raises(checks.CheckFailed, match="read each value from the config"):
        checks.settings_from_config(
            names, lambda c: {"learning_rate": 0.001, "batch_size": 32, "epochs": c.training.epochs}
        )


# --------------------------------------------------------------------------- hidden checks


def _lab_check(check_id: str) -> tuple[str, suites.Check]:
    for lab in suites.LABS.values():
        for c in lab.checks:
            if c.id == check_id:
                return lab.id, c
    raise KeyError(check_id)


def _fake_script(tmp: Path, body: str) -> Path:
    script = tmp / "train_mlp.py"
    script.write_text(textwrap.dedent(body))
    return script


#: For each instructor-only check, answers of the wrong shape a learner might really write.
#: Each must come back as a hint, never a TypeError or KeyError: ("hint", ns) fails the
#: check's own assertion; ("raised", ns) makes the learner's code raise, which the grader's
#: entry point turns into a hint naming the error and what was being checked.
WRONG_SHAPES = {
    "writer_unseen_cases": [
        ("hint", {"write_totals": lambda path, values: path.write_text(str(list(values)))}),
        ("hint", {"write_totals": lambda path, values: path.write_text("")}),
        ("raised", {"write_totals": lambda path, values: None}),  # writes no file
    ],
    "settings_unseen_configs": [
        ("hint", {"belongs_in_config": "epochs", "settings_from_config": lambda c: {}}),
        (
            "hint",
            {
                "belongs_in_config": {"learning_rate", "batch_size", "epochs"},
                "settings_from_config": lambda c: [c],
            },
        ),  # fmt: skip
    ],
    "unsure_unseen_cases": [
        ("hint", {"unsure_explicit": lambda probabilities, threshold: None}),
        ("raised", {"unsure_explicit": lambda probabilities: []}),
    ],
    "no_logical_date": [("hint", {"draft": Path("no_such_dag.py")})],
    "real_dates_only": [
        ("hint", {"partition_path": lambda root, stage, ds: None}),
        ("hint", {"partition_path": lambda root, stage, ds: f"{root}/{stage}/{ds}"}),
        ("raised", {"partition_path": lambda root, stage: root}),
    ],
    "cron_long_horizon": [
        ("hint", {"cron": ["30 2 * * 1-5"]}),
        ("hint", {"cron": {"weekdays at 02:30": 230}}),
        ("hint", {"cron": {}}),
    ],
    "mlp_layer_sizes": [("hint", {"MyMLP": lambda: __import__("torch").nn.Linear(784, 10)})],
    "optim_unseen_cases": [("raised", {"BasicOptim": lambda params, lr: None})],
    "log_softmax_unseen_cases": [
        ("hint", {"log_softmax": lambda logits: logits}),
        ("hint", {"log_softmax": lambda logits: [0.0]}),
    ],
    "transform_unseen_cases": [
        # hard-codes the published statistics: right only when asked for exactly those
        ("hint", {"mnist_transform": lambda mean, std: _v2_transform(0.1307, 0.3081)}),
        ("raised", {"mnist_transform": lambda mean, std: None}),
    ],
    "only_what_was_asked": [
        ("hint", {"my_config_yaml": 5}),
        ("hint", {"my_config_yaml": "model: [1]"}),
    ],
    "trainer_unseen_configs": [
        ("hint", {"train_from_config": lambda config: [0.9]}),
        ("hint", {"train_from_config": lambda config: {"history": [], "test_accuracy": 0.9}}),
    ],
    # Lab 1.4's: a drafts folder without the DAG files (their behaviour: the planted bugs of
    # tests/test_grade.py, graded for real)
    **{
        check_id: [("hint", {"drafts": Path("no_such_folder")})]
        for check_id in (
            "unseen_training_date",
            "trainer_in_dag",
            "refuses_no_date",
            "monitor_unseen_days",
            "retraining_unseen_drift",
        )
    },
}


@pytest.mark.parametrize(
    ("check_id", "case"),
    [(cid, i) for cid, cases in WRONG_SHAPES.items() for i in range(len(cases))],
)
def test_hidden_checks_answer_wrong_shapes_with_a_hint(check_id, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lab_id, check = _lab_check(check_id)
    kind, namespace = WRONG_SHAPES[check_id][case]
    if kind == "hint":  # the check's own assertion, with what it expected and found
        with pytest.raises(AssertionError) as err:
            check.run(namespace)
        assert len(str(err.value)) > 15
    else:
        with pytest.raises(checks.CheckFailed, match="raised while checking that") as err:
            suites.run_in_kernel(namespace, lab_id, check_id)
        assert check.what in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "body, hint",
    [
        ("print('hello')\n", "wrote no metrics.json"),
        ("import sys\nsys.exit(3)\n", "exited with 3"),
        (
            """
            import json, sys
            from pathlib import Path
            out = Path(sys.argv[sys.argv.index('--out') + 1]); out.mkdir(parents=True)
            (out / 'metrics.json').write_text(json.dumps([1, 2]))
            """,
            "expected the keys history and test_accuracy",
        ),
    ],
)
def test_the_hidden_script_check_quotes_what_went_wrong(body, hint, tmp_path):
    lab_id, check = _lab_check("script_unseen_config")
    with pytest.raises(AssertionError, match=hint):
        suites.run_in_kernel({"script": _fake_script(tmp_path, body)}, lab_id, check.id)


def test_every_hidden_check_has_wrong_shape_cases():
    """The table above (and the slow Airflow and script cases) cover every hidden check."""
    hidden = {c.id for lab in suites.LABS.values() for c in lab.checks if not c.public}
    covered = set(WRONG_SHAPES) | {"script_unseen_config", "partitions_by_date", "learns_mnist"}
    assert hidden <= covered, f"no wrong-shape case for {sorted(hidden - covered)}"


@pytest.mark.slow
def test_learns_mnist_explains_a_model_with_the_wrong_output(mnist_root):
    import torch

    namespace = {
        "MyMLP": lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5)),
        "make_loader": lambda split, batch: [(split.normalized(), split.labels)],
        "train_epoch": lambda model, loader, opt, device: None,
    }
    with pytest.raises(
        checks.CheckFailed,
        match="IndexError: Target 9 is out of bounds.*raised while checking that",
    ):
        suites.run_in_kernel(namespace, "1.2b", "learns_mnist")


WRONG_KEYS_DAG = """
from __future__ import annotations
from datetime import datetime
from airflow.sdk import dag, task
from airflow.providers.standard.operators.bash import BashOperator

@dag(dag_id="lab1_1_first_dag", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False)
def lab1_1_first_dag():
    @task
    def make_numbers(ds: str | None = None) -> str:
        import json
        from shared.paths import data_root
        path = data_root() / "lab1_1" / "raw" / ds / "numbers.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(list(range(10))))  # a bare list: no "numbers" key
        return str(path)

    @task
    def summarize(numbers_path: str, ds: str | None = None) -> dict:
        import json
        from shared.paths import data_root
        path = data_root() / "lab1_1" / "processed" / ds / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"sum": 45}))
        return {}

    announce = BashOperator(task_id="announce", bash_command="echo {{ ds }}")
    numbers = make_numbers()
    [numbers, announce] >> summarize(numbers)

lab1_1_first_dag()
"""


@pytest.mark.slow
@pytest.mark.airflow
def test_partitions_check_names_the_keys_it_expected(tmp_path, sandbox):
    """The case a first-time learner hit: JSON without the keys the notebook names."""
    from airflow.utils import db

    db.initdb()
    draft = tmp_path / "lab1_1_first_dag.py"
    draft.write_text(WRONG_KEYS_DAG)
    with pytest.raises(AssertionError) as err:
        suites.run_in_kernel({"draft": draft}, "1.1", "partitions_by_date")
    assert 'expected {"ds": "<ds>", "numbers": [ten integers]}' in str(err.value)


# --------------------------------------------------------------------------- lab generator


SOLUTION_CELL = """\
def f(path):
    ### BEGIN SOLUTION (write the file so a rerun replaces it)
    ### HINT what does a second run do to the file?
    ### POINTER help(open) lists the modes
    with open(path, "w") as fh:  # noqa: SIM115
        fh.write("x")
    ### END SOLUTION
print(f)  # NBVAL_CHECK_OUTPUT
"""


def test_stub_hint_and_answer_are_generated_from_the_region():
    text, regions = labs.parse_regions(SOLUTION_CELL)
    assert text.splitlines() == [
        "def f(path):",
        "    # YOUR CODE HERE: write the file so a rerun replaces it",
        "    raise NotImplementedError('not written yet: write the file so a rerun replaces it')",
        "print(f)",
    ]
    (region,) = regions
    assert region.hints == ["what does a second run do to the file?"]
    assert region.pointers == ["help(open) lists the modes"]
    assert region.answer == ['    with open(path, "w") as fh:', '        fh.write("x")']


def test_debugging_regions_show_the_broken_code_in_the_lab():
    cell = (
        "from datetime import datetime\n"
        "### BEGIN SOLUTION (the import error)\n"
        "START = datetime(2024, 1, 1)\n"
        "### LAB SHOWS\n"
        "# from airflow.utils.dates import days_ago\n"
        "#\n"
        "# START = days_ago(1)\n"
        "### END SOLUTION\n"
    )
    text, (region,) = labs.parse_regions(cell)
    assert text.splitlines() == [
        "from datetime import datetime",
        "# FIX ME: the import error",
        "from airflow.utils.dates import days_ago",
        "",
        "START = days_ago(1)",
    ]
    assert region.answer == ["START = datetime(2024, 1, 1)"]
    assert (
        labs.published_source(cell)
        == "from datetime import datetime\nSTART = datetime(2024, 1, 1)\n"
    )


def test_generated_lab_shows_points_and_two_stages_of_hints_but_never_the_answer():
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 00 · x"), nbformat.v4.new_code_cell(SOLUTION_CELL)]
    )
    nb.cells[1].metadata["tags"] = ["nbval-check-output"]
    check = suites.Check("c", "writes the file", 3, ("f",), lambda ns: None)
    lab = labs.build_lab(nb, "x.ipynb", (check,))
    exercise, code = lab.cells[1], lab.cells[2]
    assert exercise.cell_type == "markdown" and labs.EXERCISE_TAG in exercise.metadata.tags
    assert "**3 points** when graded" in exercise.source and "writes the file" in exercise.source
    first, second = exercise.source.index("Hint 1"), exercise.source.index("Hint 2")
    text = exercise.source
    assert first < text.index("second run") < second < text.index("help(open)")
    assert 'open(path, "w")' not in text + code.source and "answer" not in text.lower()
    assert "NBVAL" not in code.source and "noqa" not in code.source
    assert code.metadata.get("tags", []) == []


def test_an_exercise_without_both_stages_of_hints_is_a_problem(tmp_path):
    sol, lab = tmp_path / "solutions", tmp_path / "labs"
    sol.mkdir()
    lab.mkdir()
    cell = SOLUTION_CELL.replace("    ### POINTER help(open) lists the modes\n", "")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbformat.write(nb, sol / "00_x.ipynb")
    problems = [str(p) for p in labs.build(sol, lab, lambda name: ())]
    assert any("needs a ### HINT and a ### POINTER" in p for p in problems), problems


def test_an_unmarked_debugging_region_shows_broken_code_with_no_label():
    cell = "### BEGIN SOLUTION (x)\nA = 1\n### LAB SHOWS UNMARKED\n# A = days_ago(1)\n### END SOLUTION\n"
    assert labs.parse_regions(cell)[0] == "A = days_ago(1)"


def test_written_answers_become_empty_cells_the_grader_finds_by_id():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("**1.** Why?"),
            nbformat.v4.new_markdown_cell("<!-- ANSWER q-why 2 -->\nBecause the model says so."),
        ]
    )
    (written,) = labs.written_questions(nb)
    assert (written.id, written.points, written.prompt) == ("q-why", 2, "**1.** Why?")
    assert written.model == "Because the model says so."
    lab = labs.build_lab(nb, "x.ipynb")
    cell = lab.cells[1]
    assert cell["id"] == "answer-q-why" and "Because" not in cell.source
    assert labs.answer_text(cell) == ""  # the placeholder counts as blank
    cell.source = "Because of the seed."
    assert labs.answer_text(cell) == "Because of the seed."
    code = nbformat.v4.new_code_cell(
        '# your answer\nprediction = """\nIt will fall.\n"""\nrun(prediction)'
    )
    assert labs.answer_text(code) == "It will fall."


@pytest.mark.parametrize("lab", list(suites.LABS.values()), ids=lambda lab: lab.id)
def test_every_graded_check_shows_its_points_in_the_lab(lab):
    """Every check of a suite is listed, with its points, above the exercise it grades."""
    nb = nbformat.read(REPO / "labs" / lab.notebook, as_version=4)
    shown = "\n".join(c.source for c in nb.cells if labs.EXERCISE_TAG in c.metadata.get("tags", []))
    for check in lab.checks:
        what = html.escape(re.sub(r"\s*\(hidden[^)]*\)", "", check.what), quote=False)
        assert f"{check.points} · {what} (" in shown, check.id
    total = sum(
        int(line.split("**")[1].split()[0]) for line in shown.splitlines() if "when graded" in line
    )
    assert total == lab.max_points


@pytest.mark.parametrize("name", [p.name for p in labs.solution_files(REPO / "solutions")])
def test_labs_carry_no_tooling_noise(name):
    nb = nbformat.read(REPO / "labs" / name, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    markers = ("### BEGIN", "### END", "### HINT", "### POINTER", "### LAB", "### ANSWER")
    for noise in ("NBVAL", "noqa", "fmt: skip", "fmt: off", *markers):
        assert noise not in code, f"{name}: {noise!r} in a code cell"
    tags = {t for c in nb.cells for t in c.metadata.get("tags", [])}
    assert not tags & labs.NBVAL_TAGS


def test_stub_messages_all_say_not_written_yet():
    for path in (REPO / "labs").glob("*.ipynb"):
        text = json.loads(path.read_text())
        for cell in text["cells"]:
            source = "".join(cell["source"])
            for line in source.splitlines():
                if "raise NotImplementedError(" in line:
                    assert "not written yet: " in line, (path.name, line)


class _TinyNet(torch.nn.Module):
    def __init__(self, outputs: int = 10) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, outputs))

    def forward(self, x):
        return self.layers(x)


class _SlowToBuild(_TinyNet):
    def __init__(self) -> None:
        time.sleep(0.3)  # work before the first step (precomputing, peeking) is on the clock
        super().__init__()


def test_speedrun_measures_a_net_from_its_build(capsys, mnist_root):
    result = checks.speedrun(_SlowToBuild, {"batch_size": 64, "learning_rate": 0.01}, subset=1200)
    out = capsys.readouterr().out
    assert "99.0 % not reached in 1 epoch(s)" in out  # the smoke subset is a rehearsal
    assert result.seconds_to_target is None and result.final_accuracy > 0.5  # it learned
    assert result.setup_seconds >= 0.3
    assert len(result.trace) == 8  # read every eighth of the epoch


@pytest.mark.parametrize(
    ("net", "recipe", "message"),
    [
        (_TinyNet, {"epochs": 9}, "speedrun_recipe['epochs'] is 9; expected an integer in [1, 3]"),
        (_TinyNet, {"batch": 64}, "unknown keys ['batch']"),
        (_TinyNet, {"betas": [0.9, True]}, "expected two numbers in [0, 1)"),
        (_TinyNet, {"learning_rate": "0.01"}, "expected a number in [1e-05, 1.0]"),
        (_TinyNet, [128, 0.006], "speedrun_recipe is a list"),
        (lambda: _TinyNet(5), {}, "expected (2, 10) logits"),
        (lambda: "not a module", {}, "expected an nn.Module"),
    ],
)
def test_speedrun_names_what_is_wrong(net, recipe, message, mnist_root):
    with pytest.raises(checks.CheckFailed) as err:
        checks.speedrun(net, recipe, subset=1200)
    assert message in str(err.value)


class _NoFlatten(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        # the learner's line the diagnosis must quote:
        return self.fc(x)


def test_a_crash_inside_a_check_is_diagnosed_with_the_learners_line():
    """An MLP that forgets to flatten dies inside PyTorch: the check says so in one message,
    the learner's line and its own diagnosis, not a traceback through the checks."""
    with pytest.raises(checks.CheckFailed) as err:
        checks.model_output(_NoFlatten())
    message = str(err.value)
    assert "your code raised RuntimeError: mat1 and mat2 shapes cannot be multiplied" in message
    assert "at `return self.fc(x)`" in message and "flatten each image" in message
    assert err.value.__suppress_context__ and err.value.__cause__ is None


class _Optim:
    def __init__(self, params, lr):
        self.params, self.lr = list(params), lr

    def step(self):
        with torch.no_grad():
            for p in self.params:
                p -= self.lr * p.grad

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class _Uphill(_Optim):
    def step(self):
        with torch.no_grad():
            for p in self.params:
                p += self.lr * p.grad


class _Recording(_Optim):
    def step(self):
        for p in self.params:
            p -= self.lr * p.grad


class _Rebinding(_Optim):
    def step(self):
        for p in self.params:
            p = p - self.lr * p.grad  # noqa: PLW2901


class _Keeping(_Optim):
    def zero_grad(self):
        pass


class _ZeroingInPlace(_Optim):  # another correct style: zero the gradients in place
    def zero_grad(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()


@pytest.mark.parametrize(
    ("optim", "message"),
    [
        (_Uphill, "which way does a step go"),
        (_Recording, "where does autograd stop recording"),
        (_Rebinding, "the weights have not moved"),
        (_Keeping, "still holds the last step's gradient"),
    ],
)
def test_basic_optim_names_each_mistake(optim, message):
    with pytest.raises(checks.CheckFailed, match=message):
        checks.basic_optim(optim)


def test_basic_optim_accepts_another_correct_style(capsys):
    checks.basic_optim(_Optim)
    checks.basic_optim(_ZeroingInPlace)
    assert capsys.readouterr().out.count("✓") == 2


def _naive(z):
    return torch.log(torch.exp(z) / torch.exp(z).sum(dim=1, keepdim=True))


def _global_max(z):
    s = z - z.max()
    return s - s.exp().sum(dim=1, keepdim=True).log()


def _no_keepdim(z):
    s = z - z.max(dim=1).values
    return s - s.exp().sum(dim=1).log()


def _wrong_dim(z):
    s = z - z.max(dim=1, keepdim=True).values
    return s - s.exp().sum(dim=0, keepdim=True).log()


def _logsumexp(z):  # another correct style
    return z - torch.logsumexp(z, dim=1, keepdim=True)


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_naive, "inf or nan"),
        (_global_max, "inf or nan"),  # rows of very different scales underflow
        (_no_keepdim, "do the shapes still line up"),
        (_wrong_dim, "over which dimension"),
    ],
)
def test_log_softmax_names_each_mistake(func, message):
    with pytest.raises(checks.CheckFailed, match=message):
        checks.stable_log_softmax(func)


def test_log_softmax_accepts_logsumexp(capsys):
    checks.stable_log_softmax(_logsumexp)
    assert "✓" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.airflow
def test_debug_evidence_may_be_copied_from_what_the_parse_cell_prints(dagbag):
    """The lab's parse cell prints the error with the file's name first; the traceback has
    the exception's own line: a line copied from either counts, a made-up one does not."""
    printed = "lab1_1_debug_me.py: airflow.sdk.exceptions.AirflowTaskTimeout: DagBag import timeout"
    raw = "airflow.sdk.exceptions.AirflowTaskTimeout: DagBag import timeout for lab1_1_debug_me.py"
    others = ["ImportError: cannot import name 'days_ago'", "ConnectionError: report server busy"]
    for line in (printed, raw):
        assert checks.evidence_problems([line, *others]) == []
    made_up = checks.evidence_problems(["the parse was too slow", *others])
    assert any("is not a line Airflow printed" in p for p in made_up)


def _v2_transform(mean, std, scale=True, order="right"):
    from torchvision.transforms import v2

    steps = [v2.ToImage(), v2.ToDtype(torch.float32, scale=scale), v2.Normalize([mean], [std])]
    if order == "normalise first":
        steps = [v2.ToImage(), v2.Normalize([mean], [std]), v2.ToDtype(torch.float32, scale=scale)]
    return v2.Compose(steps)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m, s: _v2_transform(m, s, scale=False), "the pixels they were applied to were not"),
        (lambda m, s: _v2_transform(s, m), "the other way round"),
        (lambda m, s: _v2_transform(0.0, 1.0), "scaled to \\[0, 1\\] but not normalised"),
        (lambda m, s: lambda picture: torch.zeros(28, 28), "shape \\(28, 28\\)"),
        (lambda m, s: _v2_transform(m, s, order="normalise first"), "can each step take"),
    ],
)
def test_mnist_transform_names_each_plausible_mistake(make, message):
    checks.mnist_transform(lambda m, s: _v2_transform(m, s))
    with pytest.raises(checks.CheckFailed, match=message):
        checks.mnist_transform(make)


def test_pixel_stats_accepts_the_training_split_and_names_the_wrong_ones():
    from shared.data import MNISTSplits, Split

    gen = torch.Generator().manual_seed(0)

    def split(n, high):
        return Split(torch.randint(0, high, (n, 28, 28), dtype=torch.uint8, generator=gen),
                     torch.zeros(n, dtype=torch.int64))  # fmt: skip

    splits = MNISTSplits(split(50, 256), split(20, 200), split(20, 120))
    right = splits.train.images.float() / 255
    checks.pixel_stats(right.mean().item(), right.std().item(), splits)
    val = splits.val.images.float() / 255
    wrong = [
        ((right * 255).mean().item(), (right * 255).std().item(), "0 to 255"),
        (val.mean().item(), val.std().item(), "validation split"),
        (right.mean().item(), right.flatten(1).std(dim=1).mean().item(), "each image's spread"),
        (right.mean(), right.std(), "a Tensor"),
    ]
    for mean, std, message in wrong:
        with pytest.raises(checks.CheckFailed, match=message):
            checks.pixel_stats(mean, std, splits)


def test_one_change_takes_exactly_one_knob_with_a_new_runnable_value():
    def curves(train_size=2000, hidden=128, lr=1e-3, weight_decay=0.0, epochs=15):
        return []

    for good in ({"train_size": 20_000}, {"hidden": 32}, {"lr": 0.01}, {"weight_decay": 1e-3}):
        checks.one_change(good, curves)
    for bad, message in (
        ({}, "make it a dict"),
        ({"hidden": 32, "lr": 0.01}, "cannot tell which"),
        ({"dropout": 0.5}, "not one of the knobs"),
        ({"epochs": 30}, "not one of the knobs"),
        ({"hidden": 128}, "the value the first run used"),
        ({"train_size": 100_000}, "outside what this cell can run"),
        ({"hidden": 32.5}, "an integer"),
        ({"weight_decay": True}, "a number"),
    ):
        with pytest.raises(checks.CheckFailed, match=message):
            checks.one_change(bad, curves)


def _solution_script() -> str:
    """Lab 1.2b's training script as the solution writes it (the %%writefile cell)."""
    nb = nbformat.read(REPO / "solutions" / "02_lab1_2b_training_on_mnist.ipynb", as_version=4)
    source = next(c.source for c in nb.cells if c.source.startswith("%%writefile {script}"))
    return labs.published_source(source.split("\n", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit, message",
    [
        (None, None),
        # forgets the random state: epoch 2's shuffle differs from an uninterrupted run's
        (
            {
                '        torch.set_rng_state(state["rng"])  # the next epoch\'s shuffle draws from it\n': ""
            },
            "was not saved or not restored",
        ),
        # forgets Adam's running averages
        (
            {'        optimizer.load_state_dict(state["optimizer"])\n': ""},
            "was not saved or not restored",
        ),
        # ignores --resume: trains from scratch (same numbers), caught by the broken checkpoint
        (
            {"    if args.resume and checkpoint.exists():": "    if False:"},
            "did not read the checkpoint",
        ),
    ],
)
def test_script_resumes_catches_what_a_resume_forgets(edit, message, tmp_path, mnist_root):
    source = _solution_script()
    for old, new in (edit or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    script = tmp_path / "train_mlp.py"
    script.write_text(source)
    if message is None:
        checks.script_resumes(script, "configs/smoke.yaml")
    else:
        with pytest.raises(checks.CheckFailed, match=message):
            checks.script_resumes(script, "configs/smoke.yaml")


def _train_epoch(model, loader, optimizer, device, train_mode=True):
    import torch.nn.functional as F

    if train_mode:
        model.train()
    total, seen = 0.0, 0
    for images, labels in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images.to(device)), labels.to(device))
        loss.backward()
        optimizer.step()
        total, seen = total + loss.item() * len(labels), seen + len(labels)
    return total / seen


def test_train_loop_catches_a_loop_that_never_switches_to_training_mode():
    checks.train_loop(_train_epoch)
    with pytest.raises(checks.CheckFailed, match="evaluation mode"):
        checks.train_loop(lambda *a: _train_epoch(*a, train_mode=False))


@pytest.mark.slow
@pytest.mark.airflow
def test_a_heavy_import_is_found_by_what_a_parse_imports_not_by_a_clock(tmp_path, dagbag):
    """The debug check's first fault, judged without a timeout a busy machine could trip: a
    parse that imports torchvision at the top is caught; one inside the task is not."""
    from shared import airflow_local

    top = checks.DEBUG_DAG.replace("from airflow.utils.dates import days_ago\n", "").replace(
        "start_date=days_ago(1)", "start_date=datetime(2024, 1, 1)"
    )
    inside = top.replace("import torchvision\n", "", 1).replace(
        "    def publish(report: str) -> None:\n",
        "    def publish(report: str) -> None:\n        import torchvision\n\n",
    )
    for name, source, expected in (("top", top, ["torchvision", "torch"]), ("inside", inside, [])):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "lab1_1_debug_me.py"
        path.write_text(source)
        assert airflow_local.imported_when_parsed(path, ["torchvision", "torch"]) == expected


def test_an_unattempted_optional_speedrun_is_said_so_in_the_notebook_and_fails_for_the_grader(
    capsys,
):
    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            raise NotImplementedError("not written yet: a 5x5 conv")

    assert checks.speedrun(Stub, {}, subset=1200, optional=True) is None
    assert "optional, not attempted" in capsys.readouterr().out
    with pytest.raises(checks.CheckFailed, match="not written yet"):
        checks.speedrun(Stub, {"batch_size": 64, "learning_rate": 0.01}, subset=1200)


def test_class_counts_names_each_plausible_mistake():
    from shared.data import Split

    labels = torch.tensor([0, 1, 1, 2, 9, 9, 9, 3, 4, 5, 6, 7, 8, 8])
    split = Split(torch.zeros(len(labels), 28, 28, dtype=torch.uint8), labels)
    checks.class_counts(torch.bincount(labels, minlength=10), split)
    right = torch.bincount(labels, minlength=10)
    for wrong, message in (
        ([2] * 10, "make it a tensor"),
        (torch.bincount(labels), None),  # all ten digits occur here: the same counts
        (torch.bincount(labels[:5], minlength=10), "add up to 5"),
        (right.float() / len(labels), "shares"),
        (right.flip(0), "not per digit"),
        (right[:9], "shape"),
    ):
        if message is None:
            checks.class_counts(wrong, split)
            continue
        with pytest.raises(checks.CheckFailed, match=message):
            checks.class_counts(wrong, split)


#: Lab 1.4's trainer module as its solution promotes it (the header's two lines dropped).
MY_TRAINER = (REPO / "dags" / "my_trainer.py").read_text().split("\n", 2)[2]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (None, None),
        # Lab 1.3's signature, unchanged: the pipeline cannot hand it the day's data
        ({"def train_from_config(config, splits=None)": "def train_from_config(config)"},
         "give it a splits parameter"),
        # takes splits, then loads config.data anyway
        ({"    if splits is None:  # Lab 1.3": "    if True:  # Lab 1.3"},
         "loaded the data config.data names although it was given splits"),
        # finds the data by a fixed path instead: trains on the wrong number of images
        ({"            paths.resolve(config.data.root),": "            paths.data_root(),",
          "    if splits is None:  # Lab 1.3": "    if True:  # Lab 1.3"},
         "the data from the splits it is given"),
        # copied the functions, not the imports the notebook's earlier cells made
        ({"from torch.utils.data import DataLoader, TensorDataset\n": ""},
         "uses DataLoader, TensorDataset without importing"),
        # ... and without torch's nn, which an annotation needs as the module loads
        ({"from torch import nn\n": ""}, "name 'nn' is not defined, as the module loads"),
        # another activation: the weights fit the config's MLP, the function does not
        ({"nn.ReLU()": "nn.Tanh()"}, "computes something else"),
    ],
)  # fmt: skip
def test_promoted_trainer_names_each_plausible_mistake(edit, message, tmp_path, mnist_root):
    source = MY_TRAINER
    for old, new in (edit or {}).items():
        assert old in source
        source = source.replace(old, new)
    module = tmp_path / "my_trainer.py"
    module.write_text(source)
    if message is None:
        checks.promoted_trainer(module)
        return
    with pytest.raises(checks.CheckFailed, match=message):
        checks.promoted_trainer(module)
