"""``workbook release OUT``: the folder learners get, built from this repository.

nbgrader keeps an instructor's ``source/`` apart from the ``release/`` students receive;
here the repository is the source (instructors keep it, a private fork) and the release is
what they publish. It holds what a learner runs: the lab notebooks (exercises without their
answers), the ``shared`` library the notebooks import, the configs, the DAG the labs name
(``notebook_experiments``), the set-up (scripts, lock), the learner pages of the docs and
the ``workbook`` command without its grader; a learner README and Makefile of its own.

Left out: ``solutions/``, the grader (``workbook/grading/``: the hidden checks and their
suite), the tests (they read the solutions), the DAGs promoted from the solutions
(``dags/lab1_1_first_dag.py``, Lab 1.4's ``my_*.py``, and ``mnist_training_pipeline.py``, Lab
1.4's answer in the package's words), the instructor and maintainer pages and scripts. A
learner's own promoted DAGs are theirs: the release's ``.gitignore`` keeps them untracked.
``leaks`` scans a release for what must not be in it (tests/test_release.py runs it).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

from shared.io import atomic_write_text

#: The repository this package is part of: what a release is built from.
CHECKOUT = Path(__file__).resolve().parent.parent
#: What is copied, as it is (folders whole, minus caches and LEFT_OUT).
COPIED = (
    "labs",
    "shared",
    "configs",
    "environment.yml",
    "requirements.lock",
    "dags/.airflowignore",
    "dags/notebook_experiments.py",
    "scripts/setup.sh",
    "scripts/setup_stamp.py",
    "scripts/lab.sh",
    "scripts/airflow.sh",
    "scripts/setup-system.sh",
    "docs/install.md",
    "docs/data.md",
    "docs/airflow.md",
    "docs/course.md",
    "docs/speed.md",
    "docs/images",
    "workbook",
)
#: The pages of ``docs/`` a release has, in the learners' words (``learner_text``).
LEARNER_DOCS = (
    "docs/install.md",
    "docs/data.md",
    "docs/airflow.md",
    "docs/course.md",
    "docs/speed.md",
)
#: Inside what is copied, never in a release.
LEFT_OUT = (
    "workbook/grading",
    "workbook/release.py",
    "workbook/labs.py",  # the lab generator: it reads solutions/
    "workbook/site.py",  # the website is built by the instructors, from a release
    "workbook/demo.py",  # make demo runs the solutions
    "configs/experiments/mine",
)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


class ReleaseError(ValueError):
    """The release cannot be built where asked (the message says why)."""


def build(out: str | os.PathLike[str], source: Path | None = None) -> Path:
    """Build the release in ``out`` (a new folder, or an empty one), atomically: it is made
    beside ``out`` and moved into place whole, so a failed build leaves nothing behind."""
    source = source or CHECKOUT
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out} exists and is not an empty folder")
    if source.resolve() in (out, *out.parents):
        raise ReleaseError(f"{out} is inside the repository it is built from")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for rel in COPIED:
            src, dst = source / rel, tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=IGNORED)
            else:
                shutil.copy2(src, dst)
        for rel in LEFT_OUT:
            if (tmp / rel).is_dir():
                shutil.rmtree(tmp / rel)
            elif (tmp / rel).exists():
                (tmp / rel).unlink()
        _strip_generator_marks(tmp / "labs")
        for rel in LEARNER_DOCS:
            atomic_write_text(tmp / rel, learner_text((tmp / rel).read_text(), rel))
        _write_learner_files(source, tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _strip_generator_marks(folder: Path) -> None:
    """The labs without the generator's metadata (which names the solution each was made
    from, and says an edit is lost: true in the instructors' repository only)."""
    from workbook.labs import GENERATED_KEY
    from workbook.notebooks import dumps

    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nb.metadata.pop(GENERATED_KEY, None)
        atomic_write_text(path, dumps(nb))


#: A passage of the docs for the repository's readers only, left out of a release (it names
#: the tests, the lock's tooling, the grader).
_REPOSITORY_ONLY = re.compile(r"<!-- repository only -->\n?(.*?)<!-- /repository only -->\n?", re.S)
#: A passage for a release only: an HTML comment, so the repository's pages do not show it.
_RELEASE_ONLY = re.compile(r"<!-- release only:\n?(.*?)-->\n?", re.S)
#: A row of a table of make targets: its first cell names them (`make lab` / `make test`).
_TARGET_ROW = re.compile(r"^\|\s*(`make [^|]*)\|")


def targets(makefile: str) -> set[str]:
    """The targets a Makefile defines."""
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))


def learner_text(text: str, where: str) -> str:
    """A page of the docs as a release has it: repository-only passages left out,
    release-only ones shown, and a table's rows for make targets the release's Makefile
    lacks dropped. ``where``: the page, for the error an unclosed passage gets."""
    text = _REPOSITORY_ONLY.sub("", text)
    if "repository only -->" in text:
        raise ReleaseError(f"{where}: a <!-- repository only --> passage is never closed")
    text = _RELEASE_ONLY.sub(lambda m: m[1], text)
    if "<!-- release only" in text:
        raise ReleaseError(f"{where}: a <!-- release only: passage is never closed (-->)")
    ours = targets(MAKEFILE)
    return "".join(
        line
        for line in text.splitlines(keepends=True)
        if not (m := _TARGET_ROW.match(line))
        or set(re.findall(r"`make ([a-z][a-z-]*)", m[1])) <= ours
    )


def _write_learner_files(source: Path, tmp: Path) -> None:
    """The files a release has in its own words: pyproject (without the grader's package),
    the Makefile, the README, the .gitignore."""
    pyproject = (source / "pyproject.toml").read_text()
    packages = 'packages = ["shared", "workbook", "workbook.grading"]'
    if packages not in pyproject:
        raise ReleaseError(f"pyproject.toml no longer lists {packages}: update release.py")
    pyproject = _without_sections(pyproject, ("tool.importlinter", "tool.pytest"))
    atomic_write_text(
        tmp / "pyproject.toml", pyproject.replace(packages, 'packages = ["shared", "workbook"]')
    )
    atomic_write_text(tmp / "Makefile", makefile(source))
    atomic_write_text(tmp / "README.md", README.format(labs=_lab_table(source)))
    atomic_write_text(tmp / ".gitignore", GITIGNORE)
    atomic_write_text(tmp / "labs" / "README.md", LABS_README)
    atomic_write_text(tmp / "workbook" / "__init__.py", WORKBOOK_INIT)


def _without_sections(toml: str, names: tuple[str, ...]) -> str:
    """``toml`` without the tables whose name starts with one of ``names`` (the test suite's
    and the architecture contracts' settings: a release has neither the tests nor the
    packages they name)."""
    import tomllib

    kept, dropping = [], False
    for line in toml.splitlines(keepends=True):
        if m := re.match(r"\[\[?([\w.-]+)\]\]?\s*$", line):
            dropping = m[1].startswith(names)
        if not dropping:
            kept.append(line)
    text = "".join(kept).rstrip("\n") + "\n"
    tomllib.loads(text)  # still TOML: a table cut in half would fail here, not in pip
    return text


def makefile(source: Path) -> str:
    """The release's Makefile: the repository Makefile's settings (everything before its
    ``.PHONY`` line, the first line retitled), then the learner's targets (``MAKEFILE``)."""
    text = (source / "Makefile").read_text()
    head, phony, _ = text.partition("\n.PHONY:")
    if not phony:
        raise ReleaseError(f"{source / 'Makefile'}: no .PHONY line to end its settings at")
    _, _, settings = head.partition("\n")
    title = "# The MLOps Foundations workbook, learner edition. `make help` lists the targets."
    return f"{title}\n{settings.rstrip()}\n\n{MAKEFILE}"


def _lab_table(source: Path) -> str:
    """The labs, one row each: the notebook and its first heading."""
    rows = []
    for nb_path in sorted((source / "labs").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        title = next(
            (c.source.lstrip("# ").splitlines()[0] for c in nb.cells if c.cell_type == "markdown"),
            nb_path.stem,
        )
        rows.append(f"| `labs/{nb_path.name}` | {title} |")
    return "\n".join(["| notebook | lab |", "|---|---|", *rows])


#: The learner Makefile's targets; its settings before them (the environment, Airflow's home)
#: are the repository Makefile's own (``makefile``).
MAKEFILE = """\
.PHONY: help setup lab test airflow airflow-stop airflow-cluster airflow-cluster-stop dags-test bench clean distclean

help: ## list the targets
\t@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\\n", $$1, $$2}'

setup: ## create .venv from the lock file, register the kernel, fetch and verify MNIST
\t@scripts/setup.sh

lab: setup ## JupyterLab on 127.0.0.1, opened at the labs
\t@scripts/lab.sh

test: setup ## check the set-up (the data's digests, the configs, the library) and your DAGs (ruff's AIR rules)
\t@$(BIN)/workbook data validate
\t@$(BIN)/workbook config check configs/default.yaml
\t@$(BIN)/workbook config check configs/smoke.yaml
\t@$(BIN)/python -c "import airflow.sdk, torch, shared.checks; print('set-up: the library, torch and Airflow import')"
\t@$(BIN)/ruff check --select AIR dags

airflow: setup ## the Airflow UI on http://127.0.0.1:8080
\t@scripts/airflow.sh start

airflow-stop: ## stop the Airflow processes `make airflow` started
\t@scripts/airflow.sh stop

airflow-cluster: setup ## distributed Airflow on loopback: PostgreSQL, Redis, CeleryExecutor, 2 Celery workers (UI :8090)
\t@scripts/setup-system.sh postgresql redis-server
\t@$(BIN)/python -m workbook.cluster start

airflow-cluster-stop: ## stop exactly the processes `make airflow-cluster` started (its database stays)
\t@if [ -x $(BIN)/python ]; then $(BIN)/python -m workbook.cluster stop; fi

dags-test: setup ## one DAG for one date: make dags-test DAG=lab1_1_first_dag DATE=2024-01-01
\t@test -n "$(DAG)" || { echo "usage: make dags-test DAG=<dag_id> [DATE=YYYY-MM-DD, default today]" >&2; exit 2; }
\t@$(BIN)/airflow db migrate > /dev/null
\t@$(BIN)/airflow dags test $(DAG) $(or $(DATE),$(shell date -u +%F))

bench: setup ## speed benchmarks (not tests): training and DAG parse times
\t@$(BIN)/workbook bench --dags
\t@$(BIN)/workbook bench

clean: airflow-stop airflow-cluster-stop ## remove runs and Airflow's homes (the cluster's database too; keeps .venv and data/)
\trm -rf runs registry artifacts .airflow .airflow-cluster

distclean: clean ## also remove .venv and data/ (the next make sets everything up again)
\trm -rf $(VENV) data
"""

README = """\
# MLOps Foundations: the labs

Phase 1 of a hands-on MLOps course: the ML lifecycle, Airflow 3 running your own DAGs,
PyTorch training on MNIST, and config-driven experiments. Everything runs on a laptop CPU,
offline once set up.

## Two commands

```bash
make lab    # set-up (a Python environment, the MNIST data), then JupyterLab at the labs
make test   # check the set-up (the data, the configs, the libraries) and your DAGs' imports
```

The first run of either sets everything up (a few minutes: the locked packages, then MNIST,
checked against its published digests); later runs only verify. Python 3.11 to 3.13, Linux
or macOS (Windows: WSL2). [Installing](docs/install.md) has the details, [the MNIST
data](docs/data.md) where the data comes from, and [the course](docs/course.md) what it teaches.

## The labs

{labs}

Work through them in order. Each exercise is a cell with `# YOUR CODE HERE`: run the check
under it, read what it says, and change your code until it passes; the hints below an
exercise open one at a time. Questions answered in words go in the cells marked for them.
Your instructor grades the notebooks you hand in, with the checks you see and with more.

## Airflow

`make airflow` starts Airflow's UI on http://127.0.0.1:8080 with the DAGs in `dags/`; the
labs promote your own DAGs there (they are yours: `.gitignore` keeps them out of git).
[Airflow](docs/airflow.md) says more, and how to run the same DAGs on a cluster of
Celery workers (`make airflow-cluster`).
"""

LABS_README = """\
# The labs

Open them with `make lab`, in order: 00 (the lifecycle and four habits), then Labs 1.1 to 1.4.
Each saves its work in the notebook itself; your DAGs are promoted into `../dags/`.
"""

WORKBOOK_INIT = '''\
"""The ``workbook`` command (``workbook --help``): the MNIST data's set-up and checks
(``data``), config checks (``config``), notebook housekeeping (``nb``), the speed benchmark
(``bench``) and the distributed Airflow (``cluster``, ``make airflow-cluster``). The labs'
notebooks and your DAGs import the library beside it, ``shared``, never this package.
"""
'''

GITIGNORE = """\
.venv/
__pycache__/
*.egg-info/
.ipynb_checkpoints/
/data/
/runs/
/registry/
/artifacts/
/.airflow/
/.airflow-cluster/
/configs/experiments/mine/
# the DAGs you promote from the labs are your own work
/dags/*.py
!/dags/notebook_experiments.py
"""


# --------------------------------------------------------------------------- leaks


@dataclass(frozen=True)
class Secret:
    what: str  # where it comes from: a solution notebook, a hidden check
    text: str  # what must not be found


#: Shorter lines are too common to say anything (``model.train()``, ``return total / seen``).
MIN_LINE = 24


def _lines(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.splitlines() if line.strip()}


def _public_text(source: Path) -> str:
    """What learners see anyway, whitespace normalised per line: the ``shared`` library
    and the generated labs."""
    parts = [py.read_text() for py in sorted((source / "shared").rglob("*.py"))]
    for nb_path in sorted((source / "labs").glob("*.ipynb")):
        parts += [cell.source for cell in nbformat.read(nb_path, as_version=4).cells]
    return "\n".join(sorted(_lines("\n".join(parts))))


def secrets(source: Path | None = None) -> list[Secret]:
    """What a release must not hold: every solution region's answer as a block (its lines
    in order), each of its lines that learners see nowhere else (``_public_text``: a
    ``splits = data.load_splits(`` the labs show is no secret), every written question's
    model answer, and each hidden check's id, function name and lines of its own."""
    import inspect

    from workbook import labs
    from workbook.grading import suites

    source = source or CHECKOUT
    public = _public_text(source)
    found: list[Secret] = []
    for sol in labs.solution_files(source / "solutions"):
        where = f"solutions/{sol.name}"
        for cell in nbformat.read(sol, as_version=4).cells:
            if labs.answer_id(cell):
                found += [Secret(where, s) for s in _lines(labs.answer_text(cell)) if len(s) >= 40]
                continue
            if cell.cell_type != "code":
                continue
            for region in labs.parse_regions(cell.source, sol.name)[1]:
                block = [" ".join(line.split()) for line in region.answer if line.strip()]
                if len(block) >= 2:
                    found.append(Secret(where, "\n".join(block)))
                found += [
                    Secret(where, line)
                    for line in block
                    if len(line) >= MIN_LINE and not line.startswith("#") and line not in public
                ]
    for lab in suites.LABS.values():
        for check in lab.checks:
            if check.public:
                continue
            found.append(Secret(f"hidden check of Lab {lab.id}", check.id))
            func = getattr(check.run, "__name__", "<lambda>")
            if func == "<lambda>":
                continue
            found.append(Secret(f"hidden check {check.id}", func))
            found += [
                Secret(f"hidden check {check.id}", line)
                for line in sorted(_lines(inspect.getsource(check.run)))
                if len(line) >= MIN_LINE
                and not line.startswith(("#", '"""', "def "))
                and line not in public
            ]
    return list(dict.fromkeys(found))  # each once, in order


def texts(root: Path) -> Iterator[tuple[Path, str]]:
    """Every text file under ``root``, whitespace normalised per line (a notebook's JSON
    read as its cells' sources and outputs, a web page as its text: tags gone, entities
    decoded, so a line is found whatever its escaping or highlighting)."""
    import html

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".html":
            text = html.unescape(re.sub(r"<[^>]+>", "", path.read_text(errors="replace")))
        elif path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            parts = [c.source for c in nb.cells]
            parts += [str(o) for c in nb.cells for o in c.get("outputs", [])]
            text = "\n".join(parts)
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # a picture, a binary
        yield path, "\n".join(" ".join(line.split()) for line in text.splitlines())


def leaks(release: Path, source: Path | None = None) -> list[str]:
    """What ``release`` holds that it must not: the files (solutions, the grader, answer
    DAGs) and every secret (``secrets``) found in any of its text files, one line each."""
    release = Path(release)
    out = []
    for rel in ("solutions", "workbook/grading", "tests", "dags/lab1_1_first_dag.py",
                "dags/mnist_training_pipeline.py"):  # fmt: skip
        if (release / rel).exists():
            out.append(f"{rel} is in the release")
    out += [f"{p.relative_to(release)} is in the release" for p in release.glob("dags/my_*.py")]
    wanted = secrets(source)
    words = re.compile(r"\w+")
    ids = {s.text for s in wanted if words.fullmatch(s.text)}
    for path, text in texts(release):
        tokens = set(words.findall(text))
        for s in wanted:
            hit = s.text in tokens if s.text in ids else s.text in text
            if hit:
                out.append(f"{path.relative_to(release)}: {s.what}: {s.text[:80]!r}")
    return out
