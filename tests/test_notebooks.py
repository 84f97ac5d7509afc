"""Notebooks: labs generated from solutions, promoted code in sync, parameters, smoke runs.

The solutions' checked outputs themselves are validated by nbval (`pytest --nbval-lax
solutions/`, part of `make test`); that each generated lab, run from the top, fails first at
its first exercise with that exercise's hint is asserted on the grader's run of it
(tests/test_grade.py, test_every_generated_lab_scores_zero): one execution for both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from shared import airflow_local, experiments
from workbook import labs
from workbook.grading import suites

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = labs.solution_files(REPO / "solutions")
NAMES = [p.name for p in SOLUTIONS]
LAB_1_3 = next(n for n in NAMES if "_lab1_3_" in n)


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_course_notebooks_exist_in_order():
    assert NAMES == [
        "00_mlops_lifecycle.ipynb",
        "01_lab1_1_first_airflow_dag.ipynb",
        "02_lab1_2a_pytorch_from_scratch.ipynb",
        "02_lab1_2b_training_on_mnist.ipynb",
        "03_lab1_3_config_driven_training.ipynb",
        "04_lab1_4_your_pipeline.ipynb",
    ]
    assert sorted(p.name for p in (REPO / "labs").glob("*.ipynb")) == NAMES


def test_labs_are_generated_from_solutions_without_drift():
    assert labs.build(REPO / "solutions", REPO / "labs", suites.suite_for, write=False) == []


@pytest.mark.parametrize("name", NAMES)
def test_labs_leak_no_solution(name):
    solution, lab = REPO / "solutions" / name, REPO / "labs" / name
    regions = [r for c in code_cells(solution) for r in labs.parse_regions(c.source)[1]]
    lab_text = lab.read_text()
    assert regions, "every notebook has at least one exercise"
    assert "BEGIN SOLUTION" not in lab_text and "END SOLUTION" not in lab_text
    stubs = sum(c.source.count("raise NotImplementedError(") for c in code_cells(lab))
    fix_or_fill = sum(
        c.source.count("# FIX ME: ") + c.source.count("# YOUR CODE HERE: ") for c in code_cells(lab)
    )
    assert stubs == sum(r.broken is None for r in regions)
    assert fix_or_fill == sum(r.label is not None for r in regions)  # UNMARKED: no label
    assert all(not c.outputs for c in code_cells(lab)), "labs carry no outputs of the solution"
    inside_lines, outside_lines = set(), set()
    for cell in code_cells(solution):
        inside = False
        for line in cell.source.splitlines():
            if labs.BEGIN.match(line):
                inside = True
            elif labs.END.match(line):
                inside = False
            else:
                (inside_lines if inside else outside_lines).add(line.strip())
    lab_lines = {line.strip() for c in code_cells(lab) for line in c.source.splitlines()}
    # a solution line may legitimately appear in the lab only where the solution also has it
    # outside a region (a "bad way" example, a check call)
    # and a skeleton the lab starts from (### LAB STARTS WITH) shares lines with the answer
    given = {line.strip().lstrip("#").strip() for r in regions for line in r.broken or []}
    leaked = {line for line in inside_lines - outside_lines - given if len(line) > 12} & lab_lines
    assert not leaked, f"solution lines leaked into the lab's code: {sorted(leaked)}"


def test_stub_source_keeps_indentation_and_hint():
    src = "def f():\n    ### BEGIN SOLUTION (return 42)\n    return 42\n    ### END SOLUTION\n"
    out, n = labs.stub_source(src)
    assert n == 1
    assert out == (
        "def f():\n    # YOUR CODE HERE: return 42\n"
        "    raise NotImplementedError('not written yet: return 42')"
    )
    for bad in ("### BEGIN SOLUTION\nx = 1\n", "x = 1\n### END SOLUTION\n",
                "### BEGIN SOLUTION\n### BEGIN SOLUTION\n"):  # fmt: skip
        with pytest.raises(labs.MarkerError):
            labs.stub_source(bad, "nb cell 3")


def test_labs_check_reports_a_hand_edited_lab(tmp_path):
    sol, lab = tmp_path / "solutions", tmp_path / "labs"
    sol.mkdir()
    (sol / "00_x.ipynb").write_text((REPO / "solutions" / NAMES[0]).read_text())
    assert labs.build(sol, lab, suites.suite_for) == []
    assert labs.build(sol, lab, suites.suite_for, write=False) == []
    edited = lab / "00_x.ipynb"
    edited.write_text(edited.read_text().replace("YOUR CODE HERE", "my answer"))
    (lab / "99_orphan.ipynb").write_text("{}")
    problems = [str(p) for p in labs.build(sol, lab, suites.suite_for, write=False)]
    assert any("00_x.ipynb: differs from what its solution generates" in p for p in problems)
    assert any("99_orphan.ipynb: has no solution notebook" in p for p in problems)


PROMOTED = [  # (solution notebook, the variable its %%writefile cell writes, the DAG file)
    ("01_lab1_1_first_airflow_dag.ipynb", "draft", "lab1_1/lab1_1_first_dag.py"),
    ("04_lab1_4_your_pipeline.ipynb", "trainer_file", "lab1_4/dags/my_trainer.py"),
    ("04_lab1_4_your_pipeline.ipynb", "training_dag", "lab1_4/dags/my_training_pipeline.py"),
    ("04_lab1_4_your_pipeline.ipynb", "production_dag", "lab1_4/dags/my_model_in_production.py"),
    ("04_lab1_4_your_pipeline.ipynb", "retraining_dag", "lab1_4/dags/my_retraining.py"),
]


@pytest.mark.parametrize(("name", "variable", "draft"), PROMOTED)
def test_promoted_dags_match_their_solutions(name, variable, draft):
    """Each DAG in dags/ that a lab promotes is exactly what its solution's %%writefile cell
    writes, without the authoring lines."""
    (cell,) = [
        c
        for c in code_cells(REPO / "solutions" / name)
        if c.source.startswith(f"%%writefile {{{variable}}}")
    ]
    published = labs.published_source(cell.source.split("\n", 1)[1])
    assert "### BEGIN" not in published and "### HINT" not in published
    # promote (a learner's tool, in shared) drops the marker lines without the labs' parser
    without = airflow_local.without_authoring_lines(cell.source.split("\n", 1)[1])
    assert without.rstrip("\n") == published.rstrip("\n")  # a region may end the file
    promoted = (REPO / "dags" / Path(draft).name).read_text()
    header, body = promoted.split("\n", 2)[:2], promoted.split("\n", 2)[2]
    # the file says where it comes from, so an edit of it is not lost without a word
    assert header[0].startswith(f"# Promoted from runs/{draft} by ")
    assert "edit what writes that draft" in header[0] and "an edit here is replaced" in header[1]
    assert published.rstrip("\n") == body.rstrip("\n")


def test_every_generated_lab_names_its_source():
    for name in NAMES:
        lab = nbformat.read(REPO / "labs" / name, as_version=4)
        assert lab.metadata["workbook"]["generated_from"] == f"solutions/{name}"
        assert "workbook labs build" in lab.metadata["workbook"]["generated_by"]


def test_lab_1_3_sweep_refuses_an_unsaved_or_stubbed_notebook():
    """papermill runs the saved file: a stubbed file, or a function edited in the kernel but
    not saved, is named before four sub-runs fail."""

    def train_from_config(config):  # not the saved notebook's version
        return {}

    problems = experiments.saved_notebook_problems(REPO / "labs" / LAB_1_3, train_from_config)
    assert len(problems) == 2
    assert problems[0].startswith("the saved file still has unwritten exercises (cells ")
    assert problems[1] == "train_from_config differs from the saved file (edited, not saved)"
    assert experiments.saved_notebook_problems(REPO / "solutions" / LAB_1_3) == []


@pytest.mark.parametrize("name", NAMES)
def test_solution_hygiene(name):
    path = REPO / "solutions" / name
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'config_path = "configs/default.yaml"' in params[0].source
    assert nb.metadata.kernelspec.name == "mlops-workbook"
    text = path.read_text()
    assert str(REPO) not in text and "/home/" not in text and "/root/" not in text, "absolute paths"
    checked = [
        c for c in nb.cells if "nbval-check-output" in c.metadata.get("tags", [])
    ]  # fmt: skip
    assert checked and all(c.outputs for c in checked), (
        "checked cells carry the outputs nbval compares"
    )
    assert "widgets" not in nb.metadata and all("execution" not in c.metadata for c in nb.cells)


# ------------------------------------------------------------------ execution


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.kernel
def test_solution_runs_on_the_smoke_config(name, smoke_run):
    out, root, seconds, error = smoke_run(name)
    print(f"{name}: {seconds:.1f} s on configs/smoke.yaml")
    assert error is None, error
    executed = nbformat.read(out, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    # Every project path the notebook's text quotes (`runs/lab1_3/experiments/`, with
    # `<name>`-style placeholders as wildcards) exists after its run: a renamed folder
    # leaves no stale directions. A config's run id is the run-id test's (another config).
    text = "\n".join(c.source for c in executed.cells if c.cell_type == "markdown")
    for quoted in set(re.findall(r"`((?:runs|data|registry)/[^`\s]*)`", text)):
        if re.search(r"\b(default|smoke)-[0-9a-f]{10}\b", quoted):
            continue
        pattern = re.sub(r"<[^>]+>", "*", quoted).rstrip("/")
        assert list(root.glob(pattern)), f"{name} quotes `{quoted}`, absent after its run"
    text = json.dumps([c.get("outputs", []) for c in executed.cells], ensure_ascii=False)
    assert "✓" in text, "the self-checks ran and passed"
    assert "httpx" not in text, "no deprecation warnings of Airflow's dependencies in the output"


@pytest.mark.slow
@pytest.mark.kernel
def test_lab_1_3_smoke_run_reaches_the_sweep(smoke_run):
    """On the smoke config the sweep runs too, on the smoke subset, and compares six runs:
    the course's four and the learner's two (the solution's, written into
    configs/experiments/mine/)."""
    out, root, _, error = smoke_run("03_lab1_3_config_driven_training.ipynb")
    assert error is None, error
    table = (root / "runs" / "lab1_3" / "experiments" / "comparison.csv").read_text().splitlines()
    assert {row.split(",")[0] for row in table[1:]} >= {"mine-batch-small", "mine-no-schedule"}
    assert len(table) == 7 and table[0].startswith(
        "name,model,learning_rate,batch_size,epochs,updates"
    )
    for row in table[1:]:
        config_hash = row.split(",")[-1]
        (run_dir,) = (root / "runs" / "lab1_3" / "experiments").glob(f"*-{config_hash}")
        assert "subset: 1200" in (run_dir / "config.yaml").read_text()
    executed = out.read_text()
    assert "✓ same config, same result: metrics and weights" in executed


@pytest.mark.parametrize("folder", ["solutions", "labs"])
def test_every_picture_a_notebook_shows_exists(folder):
    """Markdown images (the Airflow UI screenshots in docs/images/) resolve from the notebook."""
    import re

    for path in (REPO / folder).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", cell.source):
                image = (path.parent / target).resolve()
                assert image.is_file() and image.read_bytes()[:4] == b"\x89PNG", (path.name, target)


def test_run_ids_the_text_quotes_are_the_configs_own():
    """A run id quoted in a notebook's or a page's text (`runs/default-<hash>/`) is the one
    its config has today: a config change that moves the hash makes the text stale."""
    import re

    from shared.config import load_config

    ids = {
        name: load_config(REPO / "configs" / f"{name}.yaml").run_id()
        for name in ("default", "smoke")
    }
    texts = [p for p in (*SOLUTIONS, *(REPO / "docs").glob("*.md"), REPO / "README.md")]
    for path in texts:
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        else:
            text = path.read_text()
        for name, quoted in re.findall(r"\b(default|smoke)-([0-9a-f]{10})\b", text):
            assert f"{name}-{quoted}" == ids[name], f"{path.name} quotes {name}-{quoted}"


def test_the_experiments_dag_runs_the_learners_lab_1_3_once_it_is_complete(tmp_path):
    """notebook_experiments runs labs/' Lab 1.3 notebook when every exercise in the saved
    file is written, the solution's otherwise, and says which and why."""
    (tmp_path / "labs").mkdir()
    # a learner release has no solution to fall back on: the sweep says what to finish
    with pytest.raises(ValueError, match="cannot run yet: there is no " + LAB_1_3):
        experiments.notebook_for_experiments(tmp_path)
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / LAB_1_3).write_text((REPO / "solutions" / LAB_1_3).read_text())
    notebook, why = experiments.notebook_for_experiments(tmp_path)
    assert notebook == tmp_path / "solutions" / LAB_1_3 and "no " + LAB_1_3 in why
    (tmp_path / "labs" / LAB_1_3).write_text((REPO / "labs" / LAB_1_3).read_text())
    notebook, why = experiments.notebook_for_experiments(tmp_path)
    assert notebook.parent.name == "solutions" and "unwritten exercises" in why
    (tmp_path / "labs" / LAB_1_3).write_text((REPO / "solutions" / LAB_1_3).read_text())
    notebook, why = experiments.notebook_for_experiments(tmp_path)
    assert notebook == tmp_path / "labs" / LAB_1_3 and why.startswith("yours")


@pytest.mark.slow
@pytest.mark.kernel
def test_lab_1_4_smoke_run_closes_the_loop_and_the_demo_reads_it(smoke_run):
    """The capstone's smoke run: its three DAGs promoted into the project's dags/, six days of
    production with drift found on the new scanner's days only, retrained models registered;
    `make demo` reads that loop back from the files the DAGs wrote."""
    from workbook import demo

    out, root, _, error = smoke_run("04_lab1_4_your_pipeline.ipynb")
    assert error is None, error
    assert {p.name for p in (root / "dags").glob("my_*.py")} == {
        "my_trainer.py", "my_training_pipeline.py", "my_model_in_production.py",
        "my_retraining.py",
    }  # fmt: skip
    line = demo.lifecycle_summary(root)
    assert "deployed over 6 days (2024-02-01..2024-02-06)" in line, line
    assert "drift found on 2024-02-04, 2024-02-05, 2024-02-06;" in line, line
    assert "retrained and registered" in line and "time" in line, line
    accuracies = [
        int(a.rstrip("%")) for a in line.split("accuracy per day ")[1].split(";")[0].split(" → ")
    ]
    assert min(accuracies) == accuracies[3] and accuracies[-1] > accuracies[3] + 20, line
