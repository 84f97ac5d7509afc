"""Feedback that diagnoses, never dictates: no message of an exercise's checks contains its
answer's code or values, and no generated lab contains an answer.

For every exercise of every lab, the answer's fragments are taken from its solution region:
each code line, each call (and a method call without its object: ``.eval()``), each string
of six characters or more, and the value of each constant expression it assigns. The
messages are every string literal in the functions that check that exercise (the public
self-check, the hidden checks, and the helpers they call by name, transitively)."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import nbformat
import pytest

from shared import checks
from workbook import labs
from workbook.grading import suites

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((REPO / "solutions").glob("[0-9][0-9]_*.ipynb"))


def answer_fragments(answer_lines: list[str]) -> set[str]:
    """What of an answer must never appear in a message (see the module docstring)."""
    code = textwrap.dedent("\n".join(answer_lines))
    numbers: set[str] = set()
    found = {
        " ".join(line.split())
        for line in code.splitlines()
        if len(line.strip()) >= 12 and not line.strip().startswith("#")
    }
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            segment = ast.get_source_segment(code, node) or ""
            if isinstance(node.func, ast.Attribute):
                found.add("." + segment.split(".", 1)[1] if "." in segment else segment)
                found.add(f".{node.func.attr}(" + ("" if node.args or node.keywords else ")"))
            elif node.args or node.keywords:
                found.add(segment)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= {line.strip() for line in node.value.splitlines() if len(line.strip()) >= 6}
        elif isinstance(node, ast.Assign) and not isinstance(node.value, ast.Constant):
            try:
                value = eval(compile(ast.Expression(node.value), "<answer>", "eval"), {})  # noqa: S307
            except Exception:  # names, calls: not a constant expression
                continue
            if isinstance(value, int | float) and abs(value) >= 10:
                numbers.add(repr(value))
    return {f for f in found if len(f) >= 4 and f not in ("....", ".to(")} | numbers


def _functions_called(func, module) -> set:
    """``func`` and the module-level functions of ``module`` (and of shared.checks) it calls
    by name, transitively."""
    seen, todo = set(), [func]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        try:
            source = textwrap.dedent(inspect.getsource(f))
        except (OSError, TypeError):
            continue
        for name in re.findall(r"(?:checks\.)?\b([A-Za-z_]\w*)\s*\(", source):
            for mod in (module, checks):
                target = getattr(mod, name, None)
                if inspect.isfunction(target) and getattr(target, "__module__", "") == mod.__name__:
                    todo.append(target)
        wrapped = getattr(f, "__wrapped__", None)
        if wrapped is not None:
            todo.append(wrapped)
    return seen


def messages(check) -> list[str]:
    """Every string literal in the functions that run ``check`` (docstrings left out)."""
    out = []
    for f in _functions_called(check.run, suites):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(f)))
        except SyntaxError:  # a lambda: its line is part of a larger expression
            continue
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }  # fmt: skip
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                out.append(node.value)
    return out


def exercises(path: Path):
    """(exercise name, its regions' answer lines, the checks the lab lists at it)."""
    nb = nbformat.read(path, as_version=4)
    suite = suites.suite_for(path.name)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = cell.source
        if labs.ANSWER_CODE.match(source.split("\n", 1)[0]):
            source = source.split("\n", 1)[1]
        regions = labs.parse_regions(source, f"{path.name} cell {i}")[1]
        if regions:
            found.append((i, regions, labs.defined_names(cell.source)))
    owned = {}
    for check in suite:
        at = [i for i, _, names in found if set(check.needs) & names]
        if at:
            owned.setdefault(at[-1], []).append(check)
    return [
        (f"{path.stem} cell {i}: {regions[0].hint[:50]}", [a for r in regions for a in r.answer],
         owned.get(i, []), path.name)
        for i, regions, _ in found
    ]  # fmt: skip


def lab_text(name: str) -> str:
    """Everything the learner's notebook shows, whitespace normalised."""
    lab = nbformat.read(REPO / "labs" / name, as_version=4)
    return " ".join(" ".join(c.source.split()) for c in lab.cells)


CASES = [case for path in SOLUTIONS for case in exercises(path)]


@pytest.mark.parametrize("name, answer, owned, notebook", CASES, ids=[c[0] for c in CASES])
def test_no_message_of_an_exercise_contains_its_answer(name, answer, owned, notebook):
    shown = lab_text(notebook)
    fragments = {f for f in answer_fragments(answer) if " ".join(f.split()) not in shown}
    leaks = sorted(
        f"{check.id}: {fragment!r} in {message[:90]!r}"
        for check in owned
        for message in messages(check)
        for fragment in fragments
        if fragment in message
    )
    assert leaks == [], "\n".join(leaks)


def test_every_graded_check_is_listed_at_an_exercise():
    """The messages test reaches every check: each one belongs to an exercise."""
    listed = {c.id for _, _, owned, _ in CASES for c in owned}
    for path in SOLUTIONS:
        for check in suites.suite_for(path.name):
            assert check.id in listed, f"{path.name}: {check.id} belongs to no exercise"


def test_the_fragments_catch_the_leaks_this_test_was_written_for():
    """The extraction is not vacuous: the messages the issue quoted would fail it."""
    assert ".flatten(1)" in answer_fragments(["    return images.flatten(1)"])
    assert ".eval()" in answer_fragments(["model.eval()", "x = 1"])
    assert "14" in answer_fragments(["grad_by_hand = 3 * 2**2 + 2"])
    cron = answer_fragments(['cron = {"weekdays at 02:30": "30 2 * * 1-5"}'])
    assert "30 2 * * 1-5" in cron


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_no_generated_lab_holds_an_answer(path):
    """The learner's notebook holds stubs, hints and empty answer cells: no exercise's answer
    stands in it whole, its hints hold nothing of an answer that the rest of the notebook
    does not show anyway, and no written question's model answer is in it."""
    lab = nbformat.read(REPO / "labs" / path.name, as_version=4)

    def normal(cells) -> str:
        return " ".join(" ".join(c.source.split()) for c in cells)

    hints = [c for c in lab.cells if labs.EXERCISE_TAG in c.metadata.get("tags", [])]
    given = normal(c for c in lab.cells if c not in hints)
    hint_text, everything = normal(hints), normal(lab.cells)
    for name, answer, _, _ in exercises(path):
        whole = " ".join(" ".join(line.split()) for line in answer if line.strip())
        if len([a for a in answer if a.strip()]) >= 2:
            assert whole not in everything, f"{name}: the lab holds the whole answer"
        # A hint may name a function (the second stage says which one); it never holds the
        # answer's code: a call with its arguments, a line, a value.
        named = re.compile(r"^\.\w+\(\)?$")
        leaked = [
            f for f in answer_fragments(answer)
            if f not in given and f in hint_text and not named.match(f)
        ]  # fmt: skip
        assert leaked == [], f"{name}: its hints hold {leaked}"
    for written in labs.written_questions(nbformat.read(path, as_version=4)):
        first = " ".join(written.model.splitlines()[0].split())
        assert first not in everything, f"{written.id}: the lab holds its model answer"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_numbered_section_ends_with_a_summary(path):
    """d2l's habit: each "## N." section closes with a short **Summary.** paragraph."""
    text = "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"
    )
    sections = re.split(r"^(?=## )", text, flags=re.M)
    numbered = [s for s in sections if re.match(r"## \d+\. ", s)]
    assert numbered, "the notebook has numbered sections"
    missing = [s.splitlines()[0] for s in numbered if "**Summary.**" not in s]
    assert missing == [], f"sections without a summary: {missing}"
