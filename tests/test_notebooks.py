"""Notebooks: labs generated from solutions, promoted code in sync, parameters, smoke runs.

The solutions' checked outputs themselves are validated by nbval (`pytest --nbval-lax
solutions/`, part of `make test`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest

from shared import experiments, labs

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = labs.solution_files(REPO / "solutions")
NAMES = [p.name for p in SOLUTIONS]


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_course_notebooks_exist_in_order():
    assert NAMES == [
        "00_mlops_lifecycle.ipynb",
        "01_lab1_1_first_airflow_dag.ipynb",
        "02_lab1_2_pytorch_training.ipynb",
        "03_lab1_3_config_driven_training.ipynb",
    ]
    assert sorted(p.name for p in (REPO / "labs").glob("*.ipynb")) == NAMES


def test_labs_are_generated_from_solutions_without_drift():
    assert labs.build(REPO / "solutions", REPO / "labs", write=False) == []


@pytest.mark.parametrize("name", NAMES)
def test_labs_leak_no_solution(name):
    solution, lab = REPO / "solutions" / name, REPO / "labs" / name
    regions = sum(labs.stub_source(c.source)[1] for c in code_cells(solution))
    lab_text = lab.read_text()
    assert regions >= 1, "every notebook has at least one exercise"
    assert "BEGIN SOLUTION" not in lab_text and "END SOLUTION" not in lab_text
    stubs = sum(c.source.count("raise NotImplementedError(") for c in code_cells(lab))
    assert stubs == regions
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
    leaked = {line for line in inside_lines - outside_lines if len(line) > 12} & lab_lines
    assert not leaked, f"solution lines leaked into the lab: {sorted(leaked)}"


def test_stub_source_keeps_indentation_and_hint():
    src = "def f():\n    ### BEGIN SOLUTION (return 42)\n    return 42\n    ### END SOLUTION\n"
    out, n = labs.stub_source(src)
    assert n == 1
    assert (
        out
        == "def f():\n    # YOUR CODE HERE: return 42\n    raise NotImplementedError('return 42')"
    )
    for bad in ("### BEGIN SOLUTION\nx = 1\n", "x = 1\n### END SOLUTION\n",
                "### BEGIN SOLUTION\n### BEGIN SOLUTION\n"):  # fmt: skip
        with pytest.raises(labs.MarkerError):
            labs.stub_source(bad, "nb cell 3")


def test_labs_check_reports_a_hand_edited_lab(tmp_path):
    sol, lab = tmp_path / "solutions", tmp_path / "labs"
    sol.mkdir()
    (sol / "00_x.ipynb").write_text((REPO / "solutions" / NAMES[0]).read_text())
    assert labs.build(sol, lab) == []
    assert labs.build(sol, lab, write=False) == []
    edited = lab / "00_x.ipynb"
    edited.write_text(edited.read_text().replace("YOUR CODE HERE", "my answer"))
    (lab / "99_orphan.ipynb").write_text("{}")
    problems = [str(p) for p in labs.build(sol, lab, write=False)]
    assert any("00_x.ipynb: differs from what its solution generates" in p for p in problems)
    assert any("99_orphan.ipynb: has no solution notebook" in p for p in problems)


def test_promoted_dag_matches_the_lab_1_1_solution():
    """dags/lab1_1_first_dag.py is exactly what the solution's %%writefile cell promotes."""
    (cell,) = [
        c for c in code_cells(REPO / "solutions" / NAMES[1]) if c.source.startswith("%%writefile")
    ]
    body = cell.source.split("\n", 1)[1]
    published = "".join(
        line
        for line in body.splitlines(keepends=True)
        if not (labs.BEGIN.match(line) or labs.END.match(line))
    )
    assert published.rstrip("\n") == (REPO / "dags" / "lab1_1_first_dag.py").read_text().rstrip(
        "\n"
    )


@pytest.mark.parametrize("name", NAMES)
def test_solution_hygiene(name):
    path = REPO / "solutions" / name
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'config_path = "configs/default.yaml"' in params[0].source
    assert nb.metadata.kernelspec.name == "mlops-workbook"
    text = path.read_text()
    assert str(REPO) not in text and "/home/" not in text and "/root/" not in text, "absolute paths"
    checked = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and all(c.outputs for c in checked), (
        "checked cells carry the outputs nbval compares"
    )
    assert "widgets" not in nb.metadata and all("execution" not in c.metadata for c in nb.cells)


# ------------------------------------------------------------------ execution


SMOKE_PARAMS = {
    "00_mlops_lifecycle.ipynb": {"config_path": "configs/smoke.yaml"},
    "01_lab1_1_first_airflow_dag.ipynb": {"config_path": "configs/smoke.yaml"},
    "02_lab1_2_pytorch_training.ipynb": {"config_path": "configs/smoke.yaml"},
    "03_lab1_3_config_driven_training.ipynb": {
        "config_path": "configs/smoke.yaml",
        "overrides": ["data.subset=1200"],
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_solution_runs_on_the_smoke_config(name, sandbox, tmp_path):
    out = tmp_path / name
    start = time.perf_counter()
    experiments.run_notebook(REPO / "solutions" / name, out, SMOKE_PARAMS[name], timeout=300)
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s on configs/smoke.yaml")
    executed = nbformat.read(out, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    text = json.dumps([c.get("outputs", []) for c in executed.cells], ensure_ascii=False)
    assert "✓" in text, "the self-checks ran and passed"


FIRST_HINT = {
    "00_mlops_lifecycle.ipynb": "open the file with",
    "01_lab1_1_first_airflow_dag.ipynb": "the preset for midnight every day",
    "02_lab1_2_pytorch_training.ipynb": "keep dimension 0",
    "03_lab1_3_config_driven_training.ipynb": "extends: default.yaml",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_generated_lab_stops_at_the_first_exercise_with_its_hint(name, sandbox, tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as err:
        experiments.run_notebook(
            REPO / "labs" / name, tmp_path / name, {"config_path": "configs/smoke.yaml"}
        )
    assert err.value.ename in ("CheckFailed", "NotImplementedError")
    assert FIRST_HINT[name] in err.value.evalue
