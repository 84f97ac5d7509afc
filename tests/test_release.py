"""The learner release (``workbook release``): what learners get holds no answer, no hidden
check and no quiz key, and works as a project of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from workbook import release

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "mlops-labs"
    done = subprocess.run(
        [sys.executable, "-m", "workbook.cli", "release", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_the_release_holds_what_a_learner_runs_and_none_of_the_instructors_files(built):
    for rel in ("labs/00_mlops_lifecycle.ipynb", "labs/04_lab1_4_your_pipeline.ipynb",
                "shared/checks.py", "configs/default.yaml", "requirements.lock", "Makefile",
                "README.md", "scripts/setup.sh", "dags/notebook_experiments.py",
                "workbook/cli.py"):  # fmt: skip
        assert (built / rel).is_file(), rel
    for rel in ("solutions", "workbook/grading", "tests", "dags/lab1_1_first_dag.py",
                "dags/my_trainer.py", "dags/mnist_training_pipeline.py", "docs/instructors.md",
                "workbook/release.py", "workbook/labs.py", "workbook/site.py",
                "workbook/demo.py"):  # fmt: skip
        assert not (built / rel).exists(), rel
    pyproject = (built / "pyproject.toml").read_text()
    assert 'packages = ["shared", "workbook"]' in pyproject and "[tool.ruff" in pyproject
    # no test suite, no architecture contracts: a learner's `pytest` finds no tests/ to miss
    assert "[tool.pytest" not in pyproject and "importlinter" not in pyproject
    assert "instructors" not in (built / "workbook" / "__init__.py").read_text()
    lab = (built / "labs" / "01_lab1_1_first_airflow_dag.ipynb").read_text()
    assert (
        "solutions/" not in lab and "solutions/" not in (built / "labs" / "README.md").read_text()
    )
    readme = (built / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme and "04_lab1_4_your_pipeline" in readme


def test_the_leak_scan_finds_every_kind_of_secret_it_looks_for(tmp_path):
    """The scan is only as good as what it looks for: an answer block, a single answer line,
    a quiz answer, a written question's model answer, a hidden check's id and a line of its
    code, each planted in a file of its own, are each found."""
    wanted = release.secrets()

    def first(test) -> release.Secret:
        return next(s for s in wanted if test(s))

    planted = [
        first(lambda s: s.what.endswith("02_lab1_2b_training_on_mnist.ipynb") and "\n" in s.text),
        first(lambda s: s.what.endswith("04_lab1_4_your_pipeline.ipynb") and "\n" not in s.text),
        first(lambda s: '": "deployment"' in s.text),  # Lab 0's quiz, in clear text
        first(lambda s: s.what.startswith("solutions/") and len(s.text) >= 40
              and s.text[0].isupper() and s.text.endswith(".")),  # a model answer in words
        first(lambda s: s.what == "hidden check of Lab 1.1"),
        first(lambda s: s.what.startswith("hidden check ") and " = " in s.text),
    ]  # fmt: skip
    for i, s in enumerate(planted):
        (tmp_path / f"file{i}.md").write_text(f"intro\n  {s.text}  \noutro\n")
    found = release.leaks(tmp_path)
    for i, s in enumerate(planted):
        assert any(line.startswith(f"file{i}.md: {s.what}:") for line in found), (s, found)
    assert len(wanted) > 300  # every solution, every hidden check


def test_the_release_leaks_no_answer_no_hidden_check_and_no_quiz_key(built):
    assert release.leaks(built) == []


def test_the_release_is_a_project_of_its_own(built):
    """Its library and command work from its own folder: the learner's commands are there,
    the instructors' (grading, generating labs) are not."""
    env = {**os.environ, "WORKBOOK_ROOT": str(built), "PYTHONPATH": str(built)}
    help_ = subprocess.run([sys.executable, "-m", "workbook.cli", "--help"], capture_output=True,
                           text=True, cwd=built, env=env)  # fmt: skip
    assert help_.returncode == 0, help_.stderr
    assert "grade" not in help_.stdout.split("COMMAND")[-1].split() and "data" in help_.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import shared, workbook; print(shared.__file__, workbook.__file__)"],
        capture_output=True, text=True, cwd=built, env=env,
    )  # fmt: skip
    assert check.stdout.split() == [str(built / "shared" / "__init__.py"),
                                    str(built / "workbook" / "__init__.py")]  # fmt: skip
    config = subprocess.run(
        [sys.executable, "-m", "workbook.cli", "config", "check", "configs/smoke.yaml"],
        capture_output=True, text=True, cwd=built, env=env,
    )  # fmt: skip
    assert config.returncode == 0, config.stderr
    grade = subprocess.run([sys.executable, "-m", "workbook.cli", "grade", "x.ipynb"],
                           capture_output=True, text=True, cwd=built, env=env)  # fmt: skip
    assert grade.returncode == 2 and "invalid choice: 'grade'" in grade.stderr


def test_a_release_never_lands_in_a_folder_that_holds_something(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(release.ReleaseError, match="not an empty folder"):
        release.build(tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(release.ReleaseError, match="inside the repository"):
        release.build(REPO / "release-out")
    assert not (REPO / "release-out").exists()


def test_the_docs_keep_passages_for_one_audience_and_rows_for_the_releases_targets():
    page = (
        "The lock<!-- repository only --> (`make lock`)<!-- /repository only -->: pinned.\n"
        "<!-- repository only -->\nThe tests read the solutions.\n<!-- /repository only -->\n"
        "<!-- release only:\nYour DAGs are yours.\n-->\n"
        "| target | what |\n|---|---|\n| `make lab` | JupyterLab |\n"
        "| `make site` / `make site-serve` | the website |\n"
        "| `make clean` / `make distclean` | remove runs / also .venv |\n"
    )
    assert release.learner_text(page, "docs/x.md") == (
        "The lock: pinned.\nYour DAGs are yours.\n"
        "| target | what |\n|---|---|\n| `make lab` | JupyterLab |\n"
        "| `make clean` / `make distclean` | remove runs / also .venv |\n"
    )
    with pytest.raises(release.ReleaseError, match=r"docs/x.md: a <!-- repository only --> pass"):
        release.learner_text("a <!-- repository only --> b", "docs/x.md")
    with pytest.raises(release.ReleaseError, match=r"docs/y.md: a <!-- release only: passage"):
        release.learner_text("a <!-- release only: b", "docs/y.md")


#: A make target named in the text a reader follows: `make lab`, `make dags-test DAG=...`.
_MAKE = re.compile(r"`make ([a-z][a-z-]*)")


def _targets_named(root: Path, texts: list[str]) -> dict[str, set[str]]:
    """Each make target the texts under ``root`` name, with the files naming it."""
    named: dict[str, set[str]] = {}
    for rel in texts:
        for path in sorted(root.glob(rel)):
            if path.suffix == ".ipynb":
                text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
            else:
                text = path.read_text()
            for target in _MAKE.findall(text):
                named.setdefault(target, set()).add(str(path.relative_to(root)))
    return named


@pytest.mark.parametrize("where", ["repository", "release"])
def test_every_make_target_the_labs_and_docs_name_is_in_the_makefile(where, built):
    """A lab that says `make airflow-cluster` in a release whose Makefile has no such target
    leaves the learner stuck: each edition's labs, pages and README name only its targets."""
    root = REPO if where == "repository" else built
    named = _targets_named(root, ["README.md", "docs/*.md", "labs/*.ipynb", "solutions/*.ipynb"])
    assert {"lab", "test", "airflow", "airflow-cluster", "dags-test"} <= set(named)
    missing = {t: sorted(f) for t, f in named.items() if t not in release.targets(
        (root / "Makefile").read_text())}  # fmt: skip
    assert missing == {}, missing


def test_the_releases_docs_are_in_the_learners_words(built):
    """No passage marker is left, no page names the tests, the grader or the solutions, and
    the learner's make targets run (a dry run of `make test` and `make airflow-cluster`)."""
    for path in sorted((built / "docs").glob("*.md")):
        text = path.read_text()
        assert "repository only" not in text and "release only" not in text, path.name
        for word in ("tests/", "solutions/", "workbook grade", "mnist_training_pipeline"):
            assert word not in text, (path.name, word)
    airflow = (built / "docs" / "airflow.md").read_text()
    assert "`my_retraining`" in airflow and "yours, from Lab 1.4" in airflow
    for target, says in (("test", "ruff check --select AIR dags"),
                         ("airflow-cluster", "setup-system.sh postgresql redis-server")):  # fmt: skip
        dry = subprocess.run(["make", "-n", target], capture_output=True, text=True, cwd=built)
        assert dry.returncode == 0 and says in dry.stdout, (target, dry.stdout, dry.stderr)
