"""`workbook grade`: solutions score full marks, labs score zero, each planted bug is caught by
the check written for it, and bad submissions get a report without harming anything.

Kernels run for real (smoke config); the slow cases are batched through the CLI the way
an instructor runs them, two at a time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from workbook.grading import grade, gradebook, guard, measure, suites

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = {lab.id: REPO / "solutions" / lab.notebook for lab in suites.LABS.values()}


def workbook(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "workbook.cli", *args], capture_output=True, text=True, **kw
    )


def variant(
    folder: Path,
    lab_id: str,
    name: str,
    replace: dict[str, str] | None = None,
    after: tuple[str, str] | None = None,
) -> Path:
    """A copy of a solution with planted changes. Every ``replace`` key must occur in the
    notebook, so a variant can never silently equal the solution; ``after = (text, code)``
    inserts a code cell after the first cell containing ``text``."""
    nb = nbformat.read(SOLUTIONS[lab_id], as_version=4)
    for old, new in (replace or {}).items():
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert hits, f"{old!r} not found in {SOLUTIONS[lab_id].name}"
        for c in hits:
            c.source = c.source.replace(old, new)
    if after is not None:
        text, code = after
        index = next(i for i, c in enumerate(nb.cells) if text in c.source)
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(code))
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def statuses(report: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def tree_digest(root: Path) -> str:
    """A digest of every file under ``root`` (names and bytes), symlinks not followed."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- fast units


def test_every_lab_has_a_suite_with_public_and_hidden_checks():
    assert sorted(SOLUTIONS) == ["0", "1.1", "1.2a", "1.2b", "1.3", "1.4"]
    for lab in suites.LABS.values():
        assert SOLUTIONS[lab.id].is_file()
        assert any(c.public for c in lab.checks) and any(not c.public for c in lab.checks)
        assert len({c.id for c in lab.checks}) == len(lab.checks)
        assert all(c.points > 0 and c.needs for c in lab.checks)


def test_public_checks_are_the_ones_the_notebook_calls():
    """A check marked public is one the learner's notebook really calls (so it is no surprise);
    instructor-only checks never appear in a notebook."""
    for lab in suites.LABS.values():
        text = SOLUTIONS[lab.id].read_text() + (REPO / "labs" / lab.notebook).read_text()
        for c in lab.checks:
            called = any(f"checks.{name}(" in text for name in _check_functions(c))
            assert called == c.public, f"lab {lab.id} check {c.id}: public={c.public}"


def _check_functions(check: suites.Check) -> list[str]:
    from shared import checks

    return [n for n in dir(checks) if getattr(getattr(checks, n), "what", None) == check.what]


@pytest.mark.parametrize("lab_id", sorted(SOLUTIONS))
def test_lab_is_detected_from_the_heading_even_when_renamed(lab_id, tmp_path):
    nb = grade.read_submission(SOLUTIONS[lab_id])
    assert grade.detect_lab(nb, "alice_final_v2.ipynb").id == lab_id
    lab_nb = grade.read_submission(REPO / "labs" / suites.LABS[lab_id].notebook)
    assert grade.detect_lab(lab_nb, "x.ipynb").id == lab_id


def test_lab_falls_back_to_the_file_name_then_asks():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    assert grade.detect_lab(nb, "02_lab1_2b_training_on_mnist.ipynb").id == "1.2b"
    assert grade.detect_lab(nb, "02_lab1_2a_alice.ipynb").id == "1.2a"
    assert grade.detect_lab(nb, "02_lab1_2_pytorch_training.ipynb") is None  # which half?
    assert grade.detect_lab(nb, "homework.ipynb") is None
    with pytest.raises(grade.GradeInputError, match="pass --lab"):
        grade.resolve_lab(nb, "homework.ipynb", None)
    assert grade.resolve_lab(nb, "homework.ipynb", "1.3").id == "1.3"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{ this is not json", "not a notebook"),
        ('{"cells": 3}', "not a notebook"),
        (nbformat.writes(nbformat.v4.new_notebook()), "no code cells"),
        (b"\xff\xfe\x00binary", "cannot read"),
    ],
)
def test_unreadable_notebooks_are_named_and_exit_2(tmp_path, content, message):
    path = tmp_path / "broken.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(grade.GradeInputError, match=message):
        grade.read_submission(path)
    out = workbook("grade", str(path), "--json")
    assert out.returncode == 2, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "unreadable" and message in report["message"]
    assert str(path) in report["message"]


def test_a_notebook_for_another_lab_is_refused_with_exit_2():
    out = workbook("grade", str(SOLUTIONS["1.1"]), "--lab", "1.2b")
    assert out.returncode == 2
    assert "is Lab 1.1 · Your first Airflow DAG, not lab 1.2" in out.stdout


def test_a_machine_without_mnist_is_a_grader_error_not_a_traceback(tmp_path):
    out = workbook("grade", str(SOLUTIONS["0"]), env={**os.environ, "WORKBOOK_ROOT": str(tmp_path)})
    assert out.returncode == 1
    assert "cannot grade: FileNotFoundError" in out.stdout and "make setup" in out.stdout
    assert "Traceback" not in out.stderr


def test_bad_usage_exits_2(tmp_path):
    assert workbook("grade", str(SOLUTIONS["1.2b"]), "--lab", "9.9").returncode == 2
    assert workbook("grade", str(SOLUTIONS["1.2b"]), "--timeout", "0").returncode == 2
    assert workbook("grade", str(tmp_path)).returncode == 2  # an empty folder
    assert workbook("grade").returncode == 2


@pytest.mark.parametrize(
    ("event", "args", "blocked"),
    [
        ("open", ("/outside/a.txt", "w", 0), "/outside/a.txt"),
        ("open", ("/outside/a.txt", "r", 0), None),
        ("open", ("/outside/a.txt", None, os.O_WRONLY | os.O_CREAT), "/outside/a.txt"),
        ("open", ("/outside/a.txt", None, os.O_RDONLY), None),
        ("open", ("/box/sub/a.txt", "a", 0), None),
        ("open", ("/box/../etc/passwd", "w", 0), "/etc/passwd"),
        ("open", (3, "w", 0), None),
        ("open", ("/dev/null", "w", 0), None),
        ("os.remove", ("/outside/a.txt", -1), "/outside/a.txt"),
        ("os.rename", ("/box/a", "/outside/b", -1, -1), "/outside/b"),
        ("os.rename", ("/outside/a", "/box/b", -1, -1), "/outside/a"),
        ("shutil.rmtree", ("/outside", None), "/outside"),
        ("os.mkdir", ("/box/new", 0o777, -1), None),
        ("sqlite3.connect", (":memory:",), None),
        ("sqlite3.connect", ("/outside/db.sqlite",), "/outside/db.sqlite"),
        ("os.listdir", ("/outside",), None),
    ],
)
def test_guard_blocks_changes_outside_its_roots(event, args, blocked):
    assert guard.check_event(event, args, ("/box",)) == blocked


def test_guard_is_active_in_a_python_process_started_with_the_sandbox_env(tmp_path):
    """What a graded kernel (and any Python it starts) gets: the sitecustomize on PYTHONPATH."""
    box, outside = tmp_path / "box", tmp_path / "outside.txt"
    (box / "guard").mkdir(parents=True)
    (box / "guard" / "sitecustomize.py").write_text(guard.SITECUSTOMIZE)
    shutil.copyfile(guard.__file__, box / "guard" / f"{guard.GUARD_MODULE}.py")
    outside.write_text("precious")
    code = (
        "import os, shutil, pathlib, sys\n"
        f"pathlib.Path({str(box / 'ok.txt')!r}).write_text('fine')\n"
        "for attempt in (lambda: open(sys.argv[1], 'w'), lambda: os.remove(sys.argv[1]),\n"
        "                lambda: shutil.rmtree(os.path.dirname(sys.argv[1]))):\n"
        "    try:\n        attempt()\n    except PermissionError as e:\n        print('blocked')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(box / "guard"), guard.ROOTS_ENV: str(box)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(outside)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["blocked"] * 3
    assert outside.read_text() == "precious" and (box / "ok.txt").read_text() == "fine"


def test_the_kernel_inherits_only_allowed_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("LANG", "C.UTF-8")
    box = {"root": tmp_path, "project": tmp_path / "project"}
    env = grade.kernel_env(box, threads=1)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "do-not-leak" not in str(env)
    assert env["LANG"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]
    assert env["HOME"].startswith(str(tmp_path)) and env["OMP_NUM_THREADS"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "guard"), str(tmp_path / "pkg")]


def test_the_kernels_package_copy_has_no_hidden_suite(tmp_path, sandbox):
    box = grade.make_sandbox(tmp_path / "box")
    pkg = box["root"] / "pkg"
    assert [p.name for p in pkg.iterdir()] == ["shared"], "the learners' library only"
    assert (pkg / "shared" / "checks.py").is_file()
    assert not list(pkg.rglob("suites.py")), "no copy of the hidden suite anywhere"
    assert not list(pkg.rglob("grade.py")) and not list(pkg.rglob("cluster.py"))
    assert (box["root"] / "guard" / f"{guard.GUARD_MODULE}.py").is_file()


def test_bubblewrap_hides_the_checkout_and_home_but_keeps_python(tmp_path):
    from workbook.grading import sandbox as os_sandbox

    command = os_sandbox.bwrap_command(tmp_path, tmp_path / "cwd")
    pairs = list(zip(command, command[1:], strict=False))
    assert ("--tmpfs", str(REPO)) in pairs and ("--tmpfs", str(Path.home().resolve())) in pairs
    assert ("--ro-bind", str(Path(sys.prefix).resolve())) in pairs
    assert ("--bind", str(tmp_path)) in pairs
    root = os.geteuid() == 0  # no user namespace then: drop_privileges changes the user
    for flag in ("--unshare-net", "--unshare-pid") if root else ("--unshare-all",):
        assert flag in command
    assert "--die-with-parent" in command and "--new-session" in command
    # later mounts win: the folder is bound after the empty folders that hide the rest
    assert command.index("--bind") > max(i for i, a in enumerate(command) if a == "--tmpfs")
    assert ("--tmpfs", "/run") in pairs
    assert (("--cap-drop", "ALL") in pairs) is not root
    drop = os_sandbox.drop_privileges(tmp_path)
    assert (drop[-2:] == [str(os_sandbox.KERNEL_UID), str(tmp_path)]) if root else drop == []


def test_binding_python_back_never_uncovers_a_hidden_folder(tmp_path):
    """The environment is bound back where a hidden folder covered it; a hidden folder inside
    it is then hidden again, after that bind."""
    from workbook.grading import sandbox as os_sandbox

    venv = Path(sys.prefix).resolve()
    inner = venv / "lib"
    command = os_sandbox.bwrap_command(tmp_path, tmp_path, extra_hidden=[inner])
    positions = {pair: i for i, pair in enumerate(zip(command, command[1:], strict=False))}
    if ("--ro-bind", str(venv)) in positions:  # the venv lies inside a hidden folder
        assert positions[("--ro-bind", str(venv))] < max(
            i for (flag, value), i in positions.items() if flag == "--tmpfs" and value == str(inner)
        )
    assert ("--ro-bind", "/usr") not in positions


def test_a_python_environment_in_tmp_is_bound_back_inside_the_sandbox(tmp_path, monkeypatch):
    """bubblewrap gives the kernel an empty /tmp: a virtual environment made there would be
    gone (its kernel dying at start), so it is bound back like one in the checkout."""
    from workbook.grading import sandbox as os_sandbox

    monkeypatch.setattr(sys, "prefix", "/tmp/learners-venv")
    command = os_sandbox.bwrap_command(tmp_path, tmp_path)
    pairs = list(zip(command, command[1:], strict=False))
    assert command.index("/tmp/learners-venv") > command.index("/tmp")  # after the tmpfs
    assert ("--ro-bind", "/tmp/learners-venv") in pairs


@pytest.mark.kernel
@pytest.mark.sandbox
def test_an_environment_the_sandbox_hides_is_named_as_the_cause(tmp_path, monkeypatch):
    from workbook.grading import sandbox as os_sandbox

    if os_sandbox.bwrap_problem() is not None:
        pytest.skip(f"needs bubblewrap: {os_sandbox.bwrap_problem()}")
    real = os_sandbox.bwrap_command
    venv = str(Path(sys.prefix).resolve())

    def hides_python(*args, **kw):  # as if the environment lay where the sandbox hides
        command = real(*args, **kw)
        return command[:-1] + ["--tmpfs", venv, "--"]

    monkeypatch.setattr(os_sandbox, "bwrap_command", hides_python)
    report = grade.grade(SOLUTIONS["0"], sandbox_mode="bwrap", measure=False)
    assert report.status == "grader error", report.format()
    assert f"Python environment ({venv}) cannot run inside the sandbox" in report.message
    assert set(statuses(report.to_dict()).values()) == {"not reached"}


def test_sandbox_modes(monkeypatch):
    from workbook.grading import sandbox as os_sandbox

    monkeypatch.setattr(os_sandbox, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    assert os_sandbox.choose("auto") == "none"
    assert os_sandbox.describe("none").startswith(
        "python-guard only (bubblewrap (bwrap) is not installed); kernel user uid "
    )
    with pytest.raises(os_sandbox.SandboxUnavailable, match="--sandbox bwrap: bubblewrap"):
        os_sandbox.choose("bwrap")
    monkeypatch.setattr(os_sandbox, "bwrap_problem", lambda: None)
    assert os_sandbox.choose("auto") == "bwrap" and os_sandbox.choose("none") == "none"


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA is enforced on Linux")
def test_without_a_cgroup_the_launcher_caps_memory_by_rlimit():
    """The fallback where no cgroup can be made: RLIMIT_DATA turns a 1 GiB allocation under a
    256 MB limit into a MemoryError (the grader reports it as the memory limit)."""
    code = "bytearray(1 << 30)"
    done = subprocess.run(
        [sys.executable, "-I", "-m", "workbook.grading.sandbox", "--memory-mb", "256",
         "--", sys.executable, "-c", code],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "MemoryError" in done.stderr
    fine = subprocess.run(
        [sys.executable, "-I", "-m", "workbook.grading.sandbox", "--memory-mb", "2048",
         "--", sys.executable, "-c", code],
        capture_output=True, text=True,
    )  # fmt: skip
    assert fine.returncode == 0, fine.stderr


def test_grade_help_prints_the_limits_defaults():
    out = workbook("grade", "--help").stdout
    for text in ("--sandbox {auto,bwrap,none}", "default 4096", "default 256", "--threads"):
        assert text in " ".join(out.split()), text


def test_same_named_notebooks_in_different_folders_keep_their_own_names(tmp_path):
    paths = [tmp_path / "alice" / "lab.ipynb", tmp_path / "bob" / "lab.ipynb"]
    assert grade.batch_names(paths) == ["alice/lab.ipynb", "bob/lab.ipynb"]
    assert grade.batch_names([tmp_path / "x" / "one.ipynb"]) == ["one.ipynb"]


def test_csv_cells_never_start_a_formula():
    report = gradebook.Report("x.ipynb", "0", name='=HYPERLINK("http://evil")', message="-2+3")
    rows = list(csv.DictReader(gradebook.to_csv([report]).splitlines()))
    assert rows[0]["submission"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["error"] == "'-2+3"
    assert gradebook.spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert gradebook.spreadsheet_safe("fine") == "fine" and gradebook.spreadsheet_safe(3) == 3


def _report(name: str, lab: str, checks: list[tuple[str, str]], **kw) -> gradebook.Report:
    return gradebook.Report(
        name, lab, title=f"Lab {lab}",
        checks=[gradebook.CheckResult(i, i, s, 1 if s == "pass" else 0, 1, True, True, "h")
                for i, s in checks],
        **kw,
    )  # fmt: skip


def test_results_table_has_a_row_per_submission_and_a_column_per_check(tmp_path):
    reports = [
        _report("a.ipynb", "1.2b", [("flatten", "pass"), ("train_loop", "pass")]),
        _report("b.ipynb", "1.2b", [("flatten", "failed"), ("train_loop", "not reached")],
                errors=[gradebook.ExecutionError(7, "NameError: name 'x' is not defined", True)]),
        gradebook.Report("c.ipynb", None, status="unreadable", message="c.ipynb is not a notebook"),
    ]  # fmt: skip
    written = gradebook.write_results(reports, tmp_path / "results")
    rows = list(csv.DictReader(written["csv"].open()))
    assert [r["submission"] for r in rows] == ["a.ipynb", "b.ipynb", "c.ipynb"]
    assert rows[0]["flatten"] == "pass" and rows[0]["passed"] == "True"
    assert rows[1]["train_loop"] == "not reached" and rows[1]["error"].startswith(
        "cell 7: NameError"
    )
    assert rows[2]["status"] == "unreadable" and rows[2]["flatten"] == ""
    md = written["md"].read_text()
    assert "3 submissions; 1 pass every required check; 1 could not be graded" in md
    assert "| b.ipynb | 1.2b | graded | 0 | 2 | False | ✗ | – |" in md
    assert json.loads(written["json"].read_text())[1]["score"] == 0
    assert [r.summary_line() for r in reports] == [
        "a.ipynb: 2/2 pass",
        "b.ipynb: 0/2 fail: failed flatten; not reached train_loop",
        "c.ipynb: not graded (unreadable): c.ipynb is not a notebook",
    ]


def _speed(seconds, accuracy, epochs=1.0, runs=None) -> dict:
    runs = [seconds] * 3 if runs is None else runs
    return {"seconds_to_99": seconds, "epochs_to_99": None if seconds is None else epochs,
            "final_accuracy": accuracy, "full_data": True, "runs": runs}  # fmt: skip


def test_the_leaderboard_ranks_passing_submissions_by_median_time_and_shows_the_spread(tmp_path):
    runs = {
        "slow.ipynb": _speed(9.5, 0.9921, runs=[9.5, 9.1, 12.0]),
        "fast.ipynb": _speed(4.2, 0.9903, runs=[4.1, 4.2, 4.52]),
        "tie_low.ipynb": _speed(5.0, 0.9901),
        "tie_high.ipynb": _speed(5.0, 0.9930),  # same time, higher accuracy: ranked first
        "short.ipynb": _speed(None, 0.9874),
        "broken.ipynb": {"error": "SpeedNet never defined at the top of a cell"},
    }
    reports = [
        _report(name, "1.2b", [("speedrun", "pass")], measurements={"speedrun": m})
        for name, m in runs.items()
    ] + [_report("unmeasured.ipynb", "1.2b", [("flatten", "pass")])]
    # a measurement of a submission that fails a required check is never ranked
    reports.append(_report("fails.ipynb", "1.2b", [("flatten", "failed"), ("speedrun", "pass")],
                           measurements={"speedrun": _speed(0.5, 0.999)}))  # fmt: skip
    written = gradebook.write_results(reports, tmp_path / "results")
    md = written["md"].read_text()
    board = md[md.index("## Speedrun leaderboard") :].splitlines()
    rows = [line for line in board if line.startswith("| ") and "rank" not in line]
    assert rows == [
        "| 1 | fast.ipynb | 4.20 s | 4.10–4.52 s over 3 runs | 1.000 | 99.03% |",
        "| 2 | tie_high.ipynb | 5.00 s | 5.00–5.00 s over 3 runs | 1.000 | 99.30% |",
        "| 3 | tie_low.ipynb | 5.00 s | 5.00–5.00 s over 3 runs | 1.000 | 99.01% |",
        "| 4 | slow.ipynb | 9.50 s | 9.10–12.00 s over 3 runs | 1.000 | 99.21% |",
        "| – | short.ipynb | not reached | no run reached 99.0 % over 3 runs | – | 98.74% |",
        "| – | broken.ipynb | not measured: SpeedNet never defined at the top of a cell "
        "| – | – | – |",
    ]
    table = {r["submission"]: r["time_to_99"] for r in csv.DictReader(written["csv"].open())}
    assert table == {"slow.ipynb": "9.50", "fast.ipynb": "4.20", "tie_low.ipynb": "5.00",
                     "tie_high.ipynb": "5.00", "short.ipynb": "not reached",
                     "broken.ipynb": "not measured", "unmeasured.ipynb": "",
                     "fails.ipynb": "0.50"}  # fmt: skip
    assert ("speedrun: 4.20 s to 99.0 % (4.10–4.52 s over 3 runs), final test accuracy "
            "99.03%") in reports[1].format()  # fmt: skip
    assert "speedrun: not reached (no run reached 99.0 % over 3 runs)" in reports[4].format()
    # without a measurement there is neither the column nor the section
    plain = gradebook.to_markdown(reports[-2:-1])
    assert "leaderboard" not in plain and "time_to_99" not in plain


def test_only_a_submission_that_passes_is_measured(monkeypatch, tmp_path):
    """Measurements come only from the grader's own runs, of submissions that passed every
    required check and the speedrun check in this grading."""
    timed = []
    monkeypatch.setattr(measure, "measure", lambda notebook, *a, **k: timed.append(notebook) or
                        _speed(4.0, 0.99))  # fmt: skip
    reports = [
        _report("ok.ipynb", "1.2b", [("flatten", "pass"), ("speedrun", "pass")]),
        _report("fails.ipynb", "1.2b", [("flatten", "failed"), ("speedrun", "pass")]),
        _report("slow.ipynb", "1.2b", [("flatten", "pass"), ("speedrun", "failed")]),
        _report("forged.ipynb", "1.2b", [("flatten", "pass")],
                measurements={"speedrun": _speed(0.01, 1.0)}),  # none of the grader's
    ]  # fmt: skip
    reports[3].measurements.clear()  # what a report starts with: nothing measured
    measure.measure_reports(reports, [r.notebook for r in reports], repeats=1)
    assert timed == ["ok.ipynb"]
    assert [bool(r.measurements) for r in reports] == [True, False, False, False]


def test_a_batch_is_one_lab(tmp_path):
    """Without --lab, notebooks claiming different labs are refused before any grading,
    each lab named with its notebooks; one claiming none is graded as the others' lab."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for lab_id, name in (("0", "a"), ("0", "b"), ("1.1", "c")):
        shutil.copy(SOLUTIONS[lab_id], mixed / f"{name}.ipynb")
    (mixed / "broken.ipynb").write_text("not json")  # reported when graded, not a claim
    with pytest.raises(grade.GradeInputError, match=r"lab 0: a.ipynb, b.ipynb; lab 1.1: c.ipynb"):
        grade.batch_lab(sorted(mixed.iterdir()), None)
    assert grade.batch_lab(sorted(mixed.iterdir()), "1.1") == "1.1"  # --lab decides
    plain = nbformat.read(SOLUTIONS["0"], as_version=4)
    plain.cells = [c for c in plain.cells if not c.source.lstrip().startswith("# 00")]
    nbformat.write(plain, tmp_path / "untitled.ipynb")
    same = [mixed / "a.ipynb", mixed / "b.ipynb", tmp_path / "untitled.ipynb"]
    assert grade.batch_lab(same, None) == "0"
    out = workbook("grade", str(mixed), "--out", str(tmp_path / "out"))
    assert out.returncode == 2 and "claim different labs" in out.stderr, out.stderr
    assert not (tmp_path / "out" / "results.csv").exists()


def test_the_speedrun_is_measured_on_the_code_that_defines_speednet_and_nothing_else():
    cells = [
        "import torch\nfrom torch import nn\nimport torch.nn.functional as F\nimport numpy as np",
        "%matplotlib inline\nsplits = load_everything()  # the data: not SpeedNet's business",
        "HIDDEN = 256\nunused = 1",
        "def block(i, o):\n    return nn.Conv2d(i, o, 3)",
        "HIDDEN = HIDDEN // 2  # a later rebinding reads the earlier one",
        "class SpeedNet(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.c = block(1, 8)\n        self.fc = nn.Linear(8 * 26 * 26, HIDDEN)\n"
        "    def forward(self, x):\n        return act(self.fc(self.c(x).flatten(1)))",
        "speedrun_recipe = {'batch_size': 128}\nspeed = checks.speedrun(SpeedNet, speedrun_recipe)",
        "%%writefile foo.py\nprint('not python of this notebook')",
        # changed after it was bound: the measured recipe is the one graded
        "speedrun_recipe['batch_size'] = 256\nlr = 0.01\nlr *= 2\nspeedrun_recipe.update(lr=lr)",
        # a helper SpeedNet's methods call, defined after the class: looked up when it runs
        "%%time\ndef act(x):\n    return F.relu(x)\nrows = [h for h in range(3)]",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    code = measure.program_slice(nb)
    assert "load_everything" not in code and "unused" not in code and "numpy" not in code
    assert "checks.speedrun" not in code and "writefile" not in code
    assert code.index("HIDDEN = 256") < code.index("HIDDEN = HIDDEN // 2") < code.index("class")
    assert "def block" in code and "import torch.nn.functional as F" in code
    namespace: dict = {}
    exec(code, namespace)  # it runs on its own
    assert namespace["SpeedNet"]().fc.out_features == 128
    assert namespace["speedrun_recipe"] == {"batch_size": 256, "lr": 0.02}
    assert "rows" not in code and "def act" in code
    with pytest.raises(measure.MeasureError, match="speedrun_recipe never defined"):
        measure.program_slice(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cells[5])]))


# --------------------------------------------------------------------------- real grading


#: What a learner forging the leaderboard writes: the grader's check record, printed by a cell
#: dressed up as the speedrun check, and the measurement's function replaced in the cell that
#: defines SpeedNet (whose net is broken: its real speedrun fails at once).
FORGED_RECORD = ('{"seconds_to_99": 0.01, "epochs_to_99": 0.01, "final_accuracy": 1.0, '
                 '"setup_seconds": 0.0}')  # fmt: skip


@pytest.mark.slow
@pytest.mark.kernel
def test_a_forged_measurement_with_a_failing_real_speedrun_is_never_ranked(tmp_path):
    subs = tmp_path / "submissions"
    subs.mkdir()
    forged = variant(subs, "1.2b", "forges_the_speedrun", {
        "class SpeedNet(nn.Module):\n    def __init__(self) -> None:\n        super().__init__()\n":
        "from shared import checks as grader\n"
        f"grader.speedrun_record = lambda *args, **kwargs: {FORGED_RECORD!r}\n"
        "class SpeedNet(nn.Module):\n    def __init__(self) -> None:\n        super().__init__()\n"
        "        self.grader = grader.__name__\n",
        "self.fc2 = nn.Linear(hidden, 10)": "self.fc2 = nn.Linear(hidden, 5)",
    })  # fmt: skip
    nb = nbformat.read(forged, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        f"print('speedrun: 0.01 s to 99.0 %')\n{FORGED_RECORD!r}",
        metadata={"tags": [grade.CHECK_TAG], "workbook_check": "speedrun"}))  # fmt: skip
    nbformat.write(nb, forged)
    # the measurement alone: the grader's own check runs, not the submission's replacement
    alone = measure.measure(forged, repeats=1)
    assert "error" in alone and "(2, 5)" in alone["error"], alone
    # a SpeedNet built from the data's statistics pulls the loading into the measurement,
    # whose copy has no test files: not measured, and told why (not a bare missing file)
    loads = variant(tmp_path, "1.2b", "speednet_reads_the_data", {
        "class SpeedNet(nn.Module):\n    def __init__(self) -> None:\n        super().__init__()\n":
        "pixel_mean = float(splits.train.images.float().mean())\n"
        "class SpeedNet(nn.Module):\n    def __init__(self) -> None:\n        super().__init__()\n"
        "        self.mean = pixel_mean\n"})  # fmt: skip
    unmeasured = measure.measure(loads, repeats=1)
    assert "without the test files" in unmeasured.get("error", ""), unmeasured
    # the whole grading, measuring on: the real speedrun check fails, so nothing is measured
    out = workbook("grade", str(subs), "--out", str(tmp_path / "out"), "--speedrun-repeats", "1")
    report = json.loads((tmp_path / "out" / "results.json").read_text())[0]
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["speedrun"]["status"] == "failed" and "(2, 5)" in checks["speedrun"]["hint"]
    assert report["measurements"] == {} and out.returncode == 0, (report, out.stderr)
    assert report["score"] == report["max_score"] - 1  # the optional speedrun's point lost
    results = (tmp_path / "out" / "results.md").read_text()
    assert "leaderboard" not in results.lower() and "0.01" not in results


@pytest.mark.slow
@pytest.mark.parametrize("lab_id", sorted(SOLUTIONS))
@pytest.mark.kernel
def test_every_solution_scores_full_marks(lab_id, tmp_path):
    executed = tmp_path / "executed.ipynb"
    out = workbook("grade", str(SOLUTIONS[lab_id]), "--json", "--executed", str(executed),
                   "--speedrun-repeats", "2")  # fmt: skip
    report = json.loads(out.stdout)
    failed = [(c["id"], c["status"], c.get("hint", "")[:300]) for c in report["checks"]
              if c["status"] != "pass"]  # fmt: skip
    assert out.returncode == 0, (failed, report.get("errors"), report.get("message"))
    assert report["status"] == "graded" and report["errors"] == []
    assert report["score"] == report["max_score"] == suites.LABS[lab_id].max_points
    assert set(statuses(report).values()) == {"pass"}
    # the solution's own model answers are read as its written answers, pending a score
    assert all(w["text"] and w["points"] is None for w in report.get("written", [])), [
        w["id"] for w in report.get("written", []) if not w["text"]
    ]
    # the executed copy carries the appended check cells, one per check, after the loader
    # cell, whose source (the hidden suite) is not saved
    cells = nbformat.read(executed, as_version=4).cells
    checks = [c for c in cells if grade.CHECK_TAG in c.metadata.get("tags", [])]
    assert checks[0].source == grade.LOADER_SAVED_AS
    assert len(checks[1:]) == len(report["checks"])
    if lab_id == "1.2b":  # the optional speedrun was measured again, in fresh kernels
        # (99.0 % itself is reached by a margin of hundredths: numerics, not this test's point)
        speed = report["measurements"]["speedrun"]
        assert "error" not in speed and len(speed["runs"]) == 2, speed
        assert speed["full_data"] and speed["final_accuracy"] > 0.98, speed
        if speed["seconds_to_99"] is not None:
            assert speed["seconds_to_99"] > 0 and 0 < speed["epochs_to_99"] <= 1, speed
        assert any(c["id"] == "speedrun" and not c["required"] for c in report["checks"])


#: What each untouched lab says at its first exercise (a stub's "not written yet", or a quiz's
#: and a skeleton's feedback): the first error a learner who runs it from the top meets.
FIRST_HINT = {
    "0": "no answer yet",
    "1.1": "no cron expression yet",
    "1.2a": "not written yet: keep dimension 0",
    "1.2b": "not written yet: create the four layers",
    "1.3": "not written yet: a YAML string that extends default.yaml",
    "1.4": "not written yet: the imports your two functions need",
}


@pytest.mark.slow
@pytest.mark.parametrize("lab_id", sorted(SOLUTIONS))
@pytest.mark.kernel
def test_every_generated_lab_scores_zero(lab_id):
    """Every check in a suite grades an exercise the lab stubs, so the untouched lab scores 0:
    its stubs fail their checks or stop the run before the variables a check needs. Its
    first error is its first exercise's stub or self-check, with that exercise's hint."""
    out = workbook("grade", str(REPO / "labs" / suites.LABS[lab_id].notebook), "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 1, report
    first = report["errors"][0]["error"]
    assert first.startswith(("CheckFailed: ", "NotImplementedError: ")), first
    assert FIRST_HINT[lab_id] in first, first
    assert report["score"] == 0 and report["max_score"] > 0
    assert "pass" not in statuses(report).values()
    stubs = [e for e in report["errors"] if "NotImplementedError" in e["error"]]
    unwritten = [e for e in report["errors"] if "not written yet" in e["error"]]
    assert stubs or unwritten  # a stub ran, directly or inside its self-check


#: Planted bugs: (lab, name, replacements, the check that must catch it, a phrase of its hint)
BUGS = [
    ("1.2b", "wrong_output_size", {"nn.Linear(128, 10)": "nn.Linear(128, 5)"},
     "model_output", "expected (64, 10)"),
    ("1.2b", "no_eval_mode", {"    model.eval()\n    correct": "    correct"},
     "evaluate_loop", "dropout) is still on"),
    ("1.2b", "no_no_grad",
     {"    with torch.no_grad():\n        for images, labels in loader:\n"
      "            images, labels = images.to(device), labels.to(device)\n"
      "            correct += (model(images).argmax(1) == labels).sum().item()\n"
      "            total += len(labels)\n":
      "    for images, labels in loader:\n"
      "        images, labels = images.to(device), labels.to(device)\n"
      "        correct += (model(images).argmax(1) == labels).sum().item()\n"
      "        total += len(labels)\n"},
     "evaluate_loop", "recorded for gradients"),
    # no optimizer.step(), and the public check patched away so the notebook runs on: the
    # hidden suite's own copy of the check still catches it (one run for both: a Lab 1.2
    # submission is the batch's costliest)
    ("1.2b", "patches_the_check",
     {"        loss.backward()\n        optimizer.step()\n": "        loss.backward()\n",
      "checks.train_loop(train_epoch)": "checks.train_loop = lambda f: None\n"
                                        "checks.train_loop(train_epoch)"},
     "train_loop", "weights did not change"),
    ("1.1", "dag_missing_dependency",
     {"    [numbers, announce] >> summarize(numbers)": "    summarize(numbers)"},
     "dag_structure", "must wait for both"),
    ("1.1", "weekdays_every_day", {'"30 2 * * 1-5"': '"30 2 * * *"'},
     "cron_expressions", "2024-01-06 02:30"),
    ("1.3", "config_typo", {"  learning_rate: 0.0008\n": "  learnin_rate: 0.0008\n"},
     "my_config", "learnin_rate"),
    ("1.3", "trainer_fixed_batch_size",
     {"batch_size=config.training.batch_size, shuffle=True": "batch_size=64, shuffle=True"},
     "trainer_unseen_configs", "take batch_size and epochs from config.training"),
    # Lab 1.4: no retries, so a busy disk fails the run; a retraining that takes its day
    # from the run's logical date, falling back to the notebook's first drift day when an
    # asset starts it without one (the notebook's own loop still passes)
    ("1.4", "no_retries",
     {'        "retries": 2,  # transient failures retry on their own\n': '        "retries": 0,\n'},
     "pipeline_failures", "a transient error should be retried"),
    ("1.4", "retrain_uses_ds",
     {"def retrain(params: dict | None = None, inlet_events=None) -> dict:":
      "def retrain(params: dict | None = None, inlet_events=None, ds=None) -> dict:",
      'day = events[-1].extra["ds"]': 'day = ds or "2024-02-04"'},
     "retraining_unseen_drift", "the asset's latest event names"),
    # a train task that trains with the package's fit, not the learner's trainer: every
    # public check passes (the pipeline works); the hidden one reads who trained the run
    ("1.4", "dag_trains_with_fit",
     {"                                  paths.runs_root(), trainer=trainer)  # fmt: skip":
      "                                  paths.runs_root())  # fmt: skip"},
     "trainer_in_dag", "not your train_from_config"),
    # a threshold under the normal days' own variation: the notebook's days pass, an unseen
    # normal day at the top of that variation raises a false alarm
    ("1.4", "too_sensitive", {"INTENSITY_THRESHOLD = 0.01": "INTENSITY_THRESHOLD = 0.003"},
     "monitor_unseen_days", "raised a false alarm"),
]  # fmt: skip


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """`workbook grade DIR --out FOLDER --jobs 2` over the planted bugs and the bad
    submissions, one batch per lab (a batch is one lab), shared by the tests below (each
    asserts one thing about it). Returns the finished processes, the reports by name, and
    what the hostile one aimed at."""
    from conftest import make_sandbox

    tmp_path = tmp_path_factory.mktemp("batch")
    project = make_sandbox(tmp_path / "project")
    subs = tmp_path / "submissions"
    subs.mkdir()
    for lab_id, name, replace, _, _ in BUGS:
        (subs / lab_id).mkdir(exist_ok=True)
        variant(subs / lab_id, lab_id, name, replace)
    lab0 = subs / "0"
    lab0.mkdir()
    precious = tmp_path / "precious" / "keep.txt"
    precious.parent.mkdir()
    precious.write_text("instructor's file")
    variant(lab0, "0", "raises_early", after=("from shared import checks", "1 / 0"))
    # an exercise that crashes (not a failed self-check): only its own checks lose points
    variant(lab0, "0", "crashes_one_exercise", replace={
        "def write_totals(path: Path, values) -> None:":
        "open(None)\ndef write_totals(path: Path, values) -> None:"})  # fmt: skip
    variant(
        lab0,
        "0",
        "prints_megabytes",
        after=("from shared import checks", "for _ in range(50):\n    print('x' * 100_000)"),
    )
    variant(lab0, "0", "vandal", after=("checks.partition_path(", (
        "import os, shutil\n"
        "from pathlib import Path\n"
        "Path('scribble.txt').write_text('mine')\n"
        "shutil.rmtree(paths.project_root() / 'configs')  # its own copy\n"
        "(paths.data_root() / 'MNIST' / 'raw' / 't10k-labels-idx1-ubyte').unlink()\n"
        "os.chdir('/')\n"
        f"Path({str(precious)!r}).unlink()"
    )))  # fmt: skip
    (lab0 / "not_json.ipynb").write_text("{ definitely not json")
    # an error with a 20 MB message: cut like any other output, not kept whole
    variant(
        lab0,
        "0",
        "raises_huge_error",
        after=("from shared import checks", "raise ValueError('x' * 20_000_000)"),
    )
    # cells dressed up as the grader's: a check's tag and metadata, and the tag alone
    forged = nbformat.read(SOLUTIONS["0"], as_version=4)
    forged.cells.insert(
        2,
        nbformat.v4.new_code_cell(
            "print('forged check ran as my own code')",
            metadata={"tags": [grade.CHECK_TAG], "workbook_check": "lifecycle_quiz"},
        ),
    )
    forged.cells.insert(
        3,
        nbformat.v4.new_code_cell(
            "print('tagged cell ran as my own code')", metadata={"tags": [grade.CHECK_TAG]}
        ),
    )
    forged.cells.insert(4, nbformat.v4.new_code_cell(
        "print('loader cell ran as my own code')",
        metadata={"tags": [grade.CHECK_TAG], "workbook_loader": True}))  # fmt: skip
    nbformat.write(forged, lab0 / "forges_checks.ipynb")
    before = {"repo": tree_digest(REPO / "solutions"), "project": tree_digest(project)}
    outs, reports, results = {}, {}, {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBOOK_ROOT", str(project))  # the project the grader copies from
        for folder in sorted(subs.iterdir()):
            results[folder.name] = tmp_path / "out" / folder.name / "results.csv"
            outs[folder.name] = workbook(
                "grade", str(folder), "--out", str(results[folder.name].parent), "--jobs", "2",
                "--timeout", "480",
                "--no-speedrun",  # measured by the solution's test; here it would add a minute
            )  # fmt: skip
            reports.update({
                Path(r["notebook"]).stem: r
                for r in json.loads(results[folder.name].with_suffix(".json").read_text())
            })  # fmt: skip
    return {"outs": outs, "out": outs["0"], "reports": reports, "results": results["0"],
            "precious": precious, "project": project, "before": before}  # fmt: skip


@pytest.mark.slow
@pytest.mark.kernel
def test_a_batch_finishes_with_a_line_per_submission_and_its_tables(batch):
    out, results, reports = batch["out"], batch["results"], batch["reports"]
    assert all(o.returncode == 1 for o in batch["outs"].values()), out.stderr
    # stderr is a pipe here, not a terminal: no progress bar, so no carriage-return flood
    assert "\r" not in out.stderr and "grading:" not in out.stderr
    assert "not_json.ipynb: not graded (unreadable)" in out.stdout  # a line per submission
    assert (
        "patches_the_check.ipynb: 14/24 fail: failed train_loop, fit_loop, learns_mnist, "
        "training_script, script_unseen_config" in batch["outs"]["1.2b"].stdout
    )
    assert len(reports) == len(BUGS) + 7
    rows = list(csv.DictReader(results.open()))
    assert len(rows) == 7 and "crash_safe_writer" in rows[0]
    assert "speedrun" not in rows[0] and "time_to_99" not in rows[0]  # not asked to measure
    assert results.with_suffix(".md").read_text().startswith("# Grading summary")
    assert "1.2b" not in results.read_text()  # one lab per batch: only Lab 0's columns


@pytest.mark.slow
@pytest.mark.kernel
def test_a_cell_dressed_up_as_a_check_is_run_as_the_learners_code(batch):
    forged = batch["reports"]["forges_checks"]
    assert forged["status"] == "graded" and forged["passed"], forged
    assert [c["id"] for c in forged["checks"]] == [c.id for c in suites.LABS["0"].checks]
    executed = nbformat.read(batch["results"].parent / "executed" / "forges_checks.ipynb",
                             as_version=4)  # fmt: skip
    text = [o.get("text", "") for c in executed.cells[:6] if c.cell_type == "code"
            for o in c.outputs]  # fmt: skip
    for what in ("forged check", "tagged cell", "loader cell"):
        assert f"{what} ran as my own code\n" in text, text
    marked = [c for c in executed.cells if grade.CHECK_TAG in c.metadata.get("tags", [])]
    assert len(marked) == 1 + len(suites.LABS["0"].checks)  # the grader's own, appended


@pytest.mark.slow
@pytest.mark.kernel
def test_an_error_of_megabytes_is_cut_like_any_output(batch):
    huge = batch["reports"]["raises_huge_error"]
    assert set(statuses(huge).values()) == {"pass"}  # the cells after it still ran
    (error,) = huge["errors"]
    assert error["error"].startswith("ValueError: ") and len(error["error"]) <= 300
    executed = batch["results"].parent / "executed" / "raises_huge_error.ipynb"
    assert executed.stat().st_size < 3 * grade.OUTPUT_CAP
    assert "characters cut]" in executed.read_text()
    assert batch["results"].with_suffix(".json").stat().st_size < 1_000_000


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.parametrize(
    "name, check_id, phrase", [(b[1], b[3], b[4]) for b in BUGS], ids=[b[1] for b in BUGS]
)
def test_each_planted_bug_is_caught_by_its_check(batch, name, check_id, phrase):
    report = batch["reports"][name]
    check = next(c for c in report["checks"] if c["id"] == check_id)
    assert check["status"] == "failed" and phrase in check["hint"], check
    assert not report["passed"]


@pytest.mark.slow
@pytest.mark.kernel
def test_a_cell_that_raises_costs_no_other_exercise_its_points(batch):
    early = batch["reports"]["raises_early"]
    assert early["errors"] == [
        {"cell": 4, "error": "ZeroDivisionError: division by zero", "stopped": False}
    ]
    assert set(statuses(early).values()) == {"pass"}  # the cells after it still ran
    crash = batch["reports"]["crashes_one_exercise"]
    assert [e["error"].split(":")[0] for e in crash["errors"]] == ["TypeError"]
    lost = {c: s for c, s in statuses(crash).items() if s != "pass"}
    assert lost == {"crash_safe_writer": "not reached", "writer_unseen_cases": "not reached"}
    hint = next(c["hint"] for c in crash["checks"] if c["id"] == "crash_safe_writer")
    assert "write_totals never defined" in hint
    row = next(r for r in csv.DictReader(batch["results"].open())
               if r["submission"] == "crashes_one_exercise.ipynb")  # fmt: skip
    assert row["error"].startswith("cell ") and "TypeError" in row["error"]


@pytest.mark.slow
@pytest.mark.kernel
def test_megabytes_of_output_are_cut_and_still_graded(batch):
    loud = batch["reports"]["prints_megabytes"]
    assert loud["output_truncated"] and loud["passed"]
    executed = batch["results"].parent / "executed" / "prints_megabytes.ipynb"
    assert executed.stat().st_size < 3 * grade.OUTPUT_CAP


@pytest.mark.slow
@pytest.mark.kernel
def test_a_vandal_is_stopped_and_nothing_outside_its_sandbox_changes(batch):
    vandal = batch["reports"]["vandal"]
    assert batch["precious"].read_text() == "instructor's file"
    blocked = next(e for e in vandal["errors"] if "PermissionError" in e["error"])
    assert "is blocked" in blocked["error"]
    assert statuses(vandal)["crash_safe_writer"] == "pass"
    assert tree_digest(REPO / "solutions") == batch["before"]["repo"]
    assert tree_digest(batch["project"]) == batch["before"]["project"]
    assert (batch["project"] / "configs" / "smoke.yaml").is_file()


@pytest.mark.slow
@pytest.mark.kernel
def test_an_unreadable_notebook_is_reported_not_graded(batch):
    assert batch["reports"]["not_json"]["status"] == "unreadable"


@pytest.mark.slow
@pytest.mark.kernel
def test_notebooks_that_never_finish_are_stopped_at_the_timeout(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    variant(subs, "0", "loops", after=("checks.partition_path(", "while True:\n    pass"))
    variant(subs, "0", "ignores_interrupt", after=("checks.partition_path(", (
        "import time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
        "    except KeyboardInterrupt:\n        pass"
    )))  # fmt: skip
    variant(subs, "0", "kills_kernel", after=("checks.partition_path(", "import os\nos._exit(3)"))
    out = workbook("grade", str(subs), "--json", "--timeout", "15", "--jobs", "2")
    reports = {Path(r["notebook"]).stem: r for r in json.loads(out.stdout)}
    assert out.returncode == 1

    loops = reports["loops"]
    assert loops["status"] == "timeout"
    assert loops["errors"][-1]["error"] == "timed out after 15 s"
    # interrupted like the stop button: what ran before is still graded
    assert statuses(loops)["partition_path"] == "pass"
    assert statuses(loops)["hidden_global"] == "not reached"

    stubborn = reports["ignores_interrupt"]
    assert stubborn["status"] == "timeout" and "killed" in stubborn["message"]
    assert set(statuses(stubborn).values()) == {"not reached"}
    assert stubborn["seconds"] < 15 + grade.INTERRUPT_GRACE + 30

    dead = reports["kills_kernel"]
    assert dead["status"] == "kernel died" and "kernel died" in dead["message"]
    assert set(statuses(dead).values()) == {"not reached"}


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.kernel
def test_hostile_submissions_stay_inside_the_os_sandbox(tmp_path, bubblewrap, monkeypatch, request):
    """What the Python guard cannot stop, bubblewrap does: a shell `!rm`, `subprocess` and
    libc's unlink through ctypes change nothing outside; the instructor's environment,
    the hidden suite and the solutions are out of reach; no network, even to loopback; no
    process outlives the grading; 8 GiB is reported as the memory limit and the batch goes
    on. Two learners' notebooks with the same file name keep their own rows and copies."""
    import socket
    import threading

    # A folder the kernel can see (read-only): /var/cache where the tests may write there
    # (CI runs as root), else /var/tmp, which the sandbox hides altogether.
    base = "/var/cache" if os.access("/var/cache", os.W_OK) else "/var/tmp"
    outside = Path(tempfile.mkdtemp(prefix="workbook-test-", dir=base))
    request.addfinalizer(lambda: shutil.rmtree(outside, ignore_errors=True))
    targets = {how: outside / f"{how}.txt" for how in ("shell", "subprocess", "ctypes")}
    for target in targets.values():
        target.write_text("instructor's file")
    secret = "s3cr3t-" + os.urandom(6).hex()
    monkeypatch.setenv("WORKBOOK_TEST_SECRET", secret)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()
    # A Unix socket where services keep theirs (D-Bus, Docker): a read-only mount does not
    # stop connect(), so the sandbox must hide the folder.
    run_dir = os.environ.get("XDG_RUNTIME_DIR") or "/run"
    unix_path = None
    if os.access(run_dir, os.W_OK):
        unix_path = Path(tempfile.mkdtemp(prefix="workbook-test-", dir=run_dir)) / "s.sock"
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(str(unix_path))
        unix.listen()
        unix.settimeout(0.2)

    def serve():
        while not stop.is_set():
            for listener in [server] + ([unix] if unix_path else []):
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                connections.append(conn.recv(100))
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    marker = "31337.5"  # sleep's argument: how the leftover process is found afterwards
    # Host files the kernel must not read; each must exist here, or "cannot read" proves nothing.
    probes = [REPO / "workbook" / "grading" / "suites.py", SOLUTIONS["0"]]
    assert all(p.is_file() for p in probes), probes
    # Root-only files a kernel that kept root's uid could read though every capability is
    # dropped: /etc/shadow, the SSH host keys, and one made here (0600, in a folder the
    # kernel sees) so the probe exists on every machine.
    as_root = os.geteuid() == 0
    root_only = []
    if as_root:
        key = Path(tempfile.mkdtemp(prefix="workbook-test-", dir=base))
        request.addfinalizer(lambda: shutil.rmtree(key, ignore_errors=True))
        key.chmod(0o755)
        (key / "ssh_host_test_key").write_text("PRIVATE KEY")
        (key / "ssh_host_test_key").chmod(0o600)
        root_only = [Path("/etc/shadow"), *sorted(Path("/etc/ssh").glob("ssh_host_*_key")),
                     key / "ssh_host_test_key"]  # fmt: skip
        root_only = [p for p in root_only if p.is_file()]
        assert Path("/etc/shadow") in root_only and all(os.stat(p).st_mode & 0o004 == 0
                                                         for p in root_only)  # fmt: skip
    hostile = (
        "import ctypes, os, socket, subprocess\n"
        "from pathlib import Path\n"
        f"!rm -f {targets['shell']}\n"
        f"subprocess.run(['rm', '-f', {str(targets['subprocess'])!r}])\n"
        f"print('unlink:', ctypes.CDLL(None).unlink({str(targets['ctypes']).encode()!r}))\n"
        "print('secret:', os.environ.get('WORKBOOK_TEST_SECRET'))\n"
        f"for path in {[str(p) for p in probes]!r}:\n"
        "    try:\n        print('read', len(Path(path).read_text()))\n"
        "    except OSError as exc:\n        print('cannot read:', type(exc).__name__)\n"
        f"for path in {[str(p) for p in root_only]!r}:\n"
        "    try:\n        print('read root-only', len(Path(path).read_bytes()))\n"
        "    except OSError as exc:\n        print('root-only unreadable:', type(exc).__name__)\n"
        "print('uid', os.getuid())\n"
        "try:\n    import workbook.grading.suites\n    print('imported the hidden suite')\n"
        "except ImportError:\n    print('no hidden suite')\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=3).sendall(b'leak')\n"
        "    print('connected')\n"
        "except OSError as exc:\n    print('no network:', type(exc).__name__)\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
    )
    if unix_path is not None:
        hostile += (
            "try:\n    s = socket.socket(socket.AF_UNIX)\n"
            f"    s.connect({str(unix_path)!r})\n    s.sendall(b'leak')\n    print('unix connected')\n"
            "except OSError as exc:\n    print('no unix socket:', type(exc).__name__)\n"
        )
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    (subs / "bob").mkdir()
    variant(subs / "alice", "0", "lab0", after=("checks.partition_path(", hostile))
    variant(subs / "bob", "0", "lab0", after=("checks.partition_path(", "hog = b'x' * (8 << 30)"))
    results = tmp_path / "out" / "results.csv"
    try:
        out = workbook(
            "grade", str(subs), "--out", str(results.parent), "--jobs", "2", "--sandbox", "bwrap",
            "--timeout", "240",
        )  # fmt: skip
    finally:
        stop.set()
        if unix_path is not None:
            shutil.rmtree(unix_path.parent, ignore_errors=True)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("sandbox: bwrap")
    reports = {r["name"]: r for r in json.loads(results.with_suffix(".json").read_text())}
    assert set(reports) == {"alice/lab0.ipynb", "bob/lab0.ipynb"}

    intruder = reports["alice/lab0.ipynb"]
    assert intruder["status"] == "graded" and intruder["score"] == intruder["max_score"]
    assert intruder["sandbox"].startswith("bwrap")
    assert all(t.read_text() == "instructor's file" for t in targets.values())
    executed = tmp_path / "out" / "executed" / "alice" / "lab0.ipynb"
    printed = "".join(
        o.get("text", "") for c in nbformat.read(executed, as_version=4).cells
        if c.cell_type == "code" for o in c.get("outputs", [])
    )  # fmt: skip
    assert "unlink: -1" in printed
    assert secret not in executed.read_text() and "secret: None" in printed
    assert printed.count("cannot read: FileNotFoundError") == 2 and "read " not in printed
    if as_root:  # the kernel ran as an unprivileged user, and the report says so
        assert printed.count("root-only unreadable: PermissionError") == len(root_only)
        from workbook.grading.sandbox import KERNEL_UID

        assert f"uid {KERNEL_UID}" in printed and "read root-only" not in printed
        assert f"kernel user uid {KERNEL_UID}" in intruder["sandbox"]
    assert "no hidden suite" in printed
    assert "no network:" in printed and connections == []
    if unix_path is not None:
        assert "no unix socket: FileNotFoundError" in printed
    assert grade.LOADER_SAVED_AS in executed.read_text()
    assert "def run_in_kernel" not in executed.read_text()  # the hidden suite's code
    leftovers = [
        p for p in Path("/proc").glob("[0-9]*/cmdline")
        if marker in p.read_bytes().decode(errors="replace")
    ]  # fmt: skip
    assert leftovers == [], "a process the notebook started outlived its grading"

    hog = reports["bob/lab0.ipynb"]
    assert hog["status"] == "memory limit exceeded", hog
    assert "memory limit exceeded" in hog["message"]
    # the checks run in the kernel after the notebook's cells: it is gone, so none ran
    assert set(statuses(hog).values()) == {"not reached"} and hog["score"] == 0
    assert (tmp_path / "out" / "executed" / "bob" / "lab0.ipynb").is_file()
    rows = list(csv.DictReader(results.open()))
    assert [r["submission"] for r in rows] == ["alice/lab0.ipynb", "bob/lab0.ipynb"]


# --------------------------------------------------------------------------- written answers


def test_written_answers_are_read_from_the_learners_answer_cells():
    """The grader collects each question's answer from its cell by id: what the learner wrote
    is pending, an untouched cell is blank (0 points), and nothing of it runs."""
    lab = suites.LABS["0"]
    nb = nbformat.read(REPO / "labs" / lab.notebook, as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == "answer-q1-retry")
    cell.source = "It holds the rows twice; I would count the rows against the input."
    written = {w.id: w for w in grade.written_answers(nb, lab)}
    assert set(written) == {"q-devops", "q1-retry", "q2-backfill", "q3-retraining", "q4-hardcoded"}
    assert written["q1-retry"].status == "pending" and written["q1-retry"].points is None
    assert written["q1-retry"].text.startswith("It holds the rows twice")
    assert written["q2-backfill"].status == "blank" and written["q2-backfill"].points == 0
    assert "results.csv" in written["q1-retry"].prompt  # the question, for the sheet


def _written_report(name: str, text: str) -> gradebook.Report:
    return gradebook.Report(
        f"{name}.ipynb", "0", name=f"{name}.ipynb",
        checks=[gradebook.CheckResult("c", "a check", gradebook.PASS, 2, 2, True, True)],
        written=[gradebook.WrittenAnswer("q1", "Why?", 3, text, None if text else 0)],
    )  # fmt: skip


def test_the_sheet_of_written_answers_round_trips_through_manual(tmp_path):
    """A batch writes results.csv and a sheet; the instructor fills in points and feedback;
    `workbook grade --manual SHEET` merges them, refusing a bad row before changing anything."""
    import csv as csv_lib

    reports = [_written_report("alice", "Because the seed."), _written_report("bob", "")]
    written = gradebook.write_results(reports, tmp_path / "results")
    out, sheet = written["csv"], written["sheet"]
    rows = list(csv_lib.DictReader(sheet.open()))
    assert [(r["submission"], r["question"], r["answer"], r["points"]) for r in rows] == [
        ("alice.ipynb", "q1", "Because the seed.", ""),
        ("bob.ipynb", "q1", "", "0"),
    ]
    assert "written answers, scored by the instructor: 0/3, 1 pending" in reports[0].format()
    assert "BLANK" in reports[1].format() and "pending" not in reports[1].format()
    rows[0]["points"], rows[0]["feedback"] = "5", "too many"
    with sheet.open("w", newline="") as f:
        writer = csv_lib.DictWriter(f, fieldnames=gradebook.SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    before = out.read_text()
    bad = workbook("grade", "--manual", str(sheet))
    assert bad.returncode == 2 and "row 2, points: 5 is outside 0..3" in bad.stderr
    assert out.read_text() == before, "a bad sheet changes nothing"
    rows[0]["points"], rows[0]["feedback"] = "2", "half right: name the check"
    with sheet.open("w", newline="") as f:
        writer = csv_lib.DictWriter(f, fieldnames=gradebook.SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    done = workbook("grade", "--manual", str(sheet))
    assert done.returncode == 0, done.stderr
    assert "2 written answers scored, 0 still pending" in done.stderr  # bob's blank: its 0
    merged = {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert merged["alice.ipynb"]["written"][0]["points"] == 2
    assert merged["alice.ipynb"]["written"][0]["feedback"] == "half right: name the check"
    assert merged["alice.ipynb"]["written_score"] == 2 and merged["alice.ipynb"]["score"] == 2
    table = list(csv_lib.DictReader(out.open()))
    assert table[0]["q1"] == "2" and table[0]["written_max"] == "3"


# --------------------------------------------------------------------------- the report's words


def test_the_report_says_what_became_of_each_check_in_its_own_words():
    """failed, not reached, timed out and error are four things, in every table; failed
    optional checks are named too."""
    checks_ = [
        gradebook.CheckResult("a", "A", gradebook.FAIL, 0, 1, True, True, "wrong"),
        gradebook.CheckResult("b", "B", gradebook.NOT_REACHED, 0, 1, True, True, "x undefined"),
        gradebook.CheckResult("c", "C", gradebook.TIMED_OUT, 0, 1, True, False, "past 300 s"),
        gradebook.CheckResult("d", "D", gradebook.ERROR, 0, 1, True, False, "not loaded"),
        gradebook.CheckResult("e", "E", gradebook.FAIL, 0, 1, False, True, "slow"),
        gradebook.CheckResult("f", "F", gradebook.PASS, 1, 1, True, True),
    ]
    report = gradebook.Report("x.ipynb", "1.2b", checks=checks_)
    assert report.summary_line() == (
        "x.ipynb: 1/6 fail: failed a; timed out c; error d; not reached b (optional: failed e)"
    )
    text = report.format()
    assert "  FAIL  a  0/1  wrong" in text and "  ----  b  0/1  not reached: x undefined" in text
    assert "  TIME  c  0/1  timed out: past 300 s" in text and "  ERR!  d  0/1  error: " in text
    assert "  FAIL  e  0/1 (optional)  slow" in text
    md = gradebook.to_markdown([report])
    assert "✓ pass · ✗ failed · – not reached · ⏱ timed out · ! error" in md
    assert "| ✗ | – | ⏱ | ! | ✗ | ✓ |" in md
    row = next(csv.DictReader(gradebook.to_csv([report]).splitlines()))
    assert [row[c] for c in "abcdef"] == [
        "failed", "not reached", "timed out", "error", "failed", "pass",
    ]  # fmt: skip


class _ScriptedKernel:
    """nbclient's part _run_checks uses: each cell it executes gets the next scripted reply."""

    def __init__(self, replies):
        self.script, self.replies, self.timeouts = list(replies), {}, []

    def execute_cell(self, cell, index):
        self.timeouts.append(self.timeout)
        self.replies[index] = self.script.pop(0)


def test_a_check_past_its_limit_is_timed_out_and_the_next_check_still_runs():
    lab = suites.LABS["0"]
    first, second = lab.checks[0], lab.checks[1]
    nb = nbformat.v4.new_notebook()
    nb.cells = [grade._loader_cell(), grade._check_cell(lab, first.id),
                grade._check_cell(lab, second.id)]  # fmt: skip
    ok, late = {"status": "ok"}, {"status": "error", "ename": "Timeout"}
    kernel = _ScriptedKernel([ok, late, ok, ok])  # loader, first, the kernel answers, second
    results, rest = grade._run_checks(kernel, nb, lab, speed=2.5)
    assert results[first.id][0] == gradebook.TIMED_OUT
    assert f"limit of {first.timeout * 2.5:.0f} s ({first.timeout} s x2.5" in results[first.id][1]
    assert results[second.id] == (gradebook.PASS, "")
    assert kernel.timeouts[1] == int(first.timeout * 2.5)  # the scaled limit was the one used
    # a kernel that no longer answers: the checks after it are not reached
    kernel = _ScriptedKernel([ok, late, late])
    results, rest = grade._run_checks(kernel, nb, lab)
    assert second.id not in results and rest[0] == gradebook.NOT_REACHED and "timed out" in rest[1]


def test_the_speed_factor_scales_limits_on_a_slow_machine_only(monkeypatch):
    monkeypatch.setattr(grade, "CALIBRATION_SECONDS", 1e-9)
    assert grade.speed_factor() == grade.MAX_SPEED_FACTOR  # never unbounded
    monkeypatch.setattr(grade, "CALIBRATION_SECONDS", 1e9)
    assert grade.speed_factor() == 1.0  # a fast machine keeps the limits as written


def test_out_must_be_a_folder_and_is_refused_before_any_grading(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text("{}")
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for out, says in ((taken, "is not a folder"), (tmp_path / "results.csv", "takes a folder")):
        done = workbook("grade", str(nb), "--out", str(out), "--sandbox", "none")
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert "grading" not in done.stderr  # refused before a kernel started
    assert taken.read_text() == "not a folder"


def test_a_batch_writes_its_results_after_every_submission(tmp_path, monkeypatch):
    """A batch that stops halfway (here: the second submission breaks the grader itself)
    leaves the first one's results on disk."""
    from workbook import cli

    subs = [tmp_path / "a.ipynb", tmp_path / "b.ipynb"]
    for s in subs:
        s.write_text("{}")

    def fake(notebook, lab_id=None, *args, **kwargs):
        if Path(notebook).name == "b.ipynb":
            raise KeyboardInterrupt  # the instructor's Ctrl-C, or the machine going down
        return _report(kwargs["name"], "0", [("partition_path", "pass")])

    monkeypatch.setattr(grade, "grade_safely", fake)
    monkeypatch.setattr(grade, "speed_factor", lambda: 1.0)
    out = tmp_path / "results"
    code = cli.main(
        ["grade", *map(str, subs), "--out", str(out), "--sandbox", "none", "--jobs", "1"]
    )
    assert code != 0  # the command says it was interrupted
    saved = json.loads((out / "results.json").read_text())
    assert [r["notebook"] for r in saved] == ["a.ipynb"]
    assert (out / "results.csv").read_text().count("\n") == 2  # header + a
