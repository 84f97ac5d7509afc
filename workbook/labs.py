"""Learner labs generated from the solution notebooks (the single source).

In a solution notebook, the code a learner writes sits between two marker lines::

    ### BEGIN SOLUTION (make a second run replace the first)
    ### HINT What does a retry do to a file that is added to? Compare the bad way above.
    ### POINTER `help(open)` lists the modes; one of them truncates.
    with open(path, "w") as f:
        ...
    ### END SOLUTION

``build_lab`` replaces each region with a stub at the same indentation::

    # YOUR CODE HERE: make a second run replace the first
    raise NotImplementedError('not written yet: make a second run replace the first')

The marker's short text says *what* to do, never how. Hints come in two stages, each in a
collapsed block of a generated markdown cell above the exercise, with the points the lab's
grading suite gives for it: ``### HINT`` lines say what to think about, ``### POINTER``
lines point narrower (which function, which page of the docs). Every exercise has both;
none holds the answer's code, which lives in ``solutions/`` only.

A debugging exercise shows broken code instead of a stub. After ``### LAB SHOWS``, the
region holds the broken lines, commented out in the solution; the lab shows them live
under a ``# FIX ME: hint`` line. ``### LAB SHOWS UNMARKED`` shows them with no line at all
(a bug nobody labelled, found from Airflow's error or a task's log), and ``### LAB STARTS
WITH`` under ``# YOUR CODE HERE``, for a skeleton to fill in, such as a quiz's slots::

    ### BEGIN SOLUTION (the import the error points at)
    from datetime import datetime
    ### LAB SHOWS UNMARKED
    # from airflow.utils.dates import days_ago
    ### END SOLUTION

Answers in words (nbgrader's manually graded cells): a markdown cell whose first line is
``<!-- ANSWER id points -->`` holds the model answer in the solution; the lab gets an
empty answer cell with the id ``answer-<id>`` for the learner to fill, and ``workbook
grade`` collects it for the instructor (``written_questions``). A code cell whose first line
is ``### ANSWER id points`` does the same for an answer the notebook records (a prediction
written before a run): its regions are stubbed as usual.

Labs carry no outputs and no tooling noise (``# noqa``, ``# fmt: skip``, nbval's markers
and tags). ``check`` rebuilds every lab in memory and reports any difference from the
committed ``labs/`` (drift or a hand edit), any marker that would leak, and any exercise
without both stages of hints.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from shared.experiments import UNWRITTEN
from shared.io import atomic_write_text
from workbook import notebooks

#: The solution markers: the code between BEGIN and END SOLUTION is what a learner writes
#: (``parse_regions`` turns it into a stub); HINT and POINTER lines are the two stages of
#: hints; the LAB SHOWS / STARTS WITH blocks are what the lab shows instead of a stub.
#: ``shared.airflow_local.promote`` drops these lines from a DAG it publishes.
BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:\s*\((?P<hint>.*)\))?\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
HINT = re.compile(r"^[ \t]*### (?P<stage>HINT|POINTER)\s?(?P<text>.*)$")
LAB_SHOWS = re.compile(r"^[ \t]*### LAB (?P<kind>SHOWS UNMARKED|SHOWS|STARTS WITH)\s*$")
#: The first line of a written answer's cell: markdown, or a code cell the notebook records.
ANSWER_MD = re.compile(r"^<!-- ANSWER (?P<id>[\w.-]+) (?P<points>\d+) -->\s*$")
ANSWER_CODE = re.compile(r"^### ANSWER (?P<id>[\w.-]+) (?P<points>\d+)\s*$")
#: What a learner's answer cell holds until they write in it.
ANSWER_PLACEHOLDER = "*Your answer here, in your own words (double-click this cell to write).*"

DEFAULT_HINT = "write this part"
#: Trailing comments meant for tools, not learners: stripped from the generated labs.
TOOL_COMMENT = re.compile(r"\s+# (?:noqa\b.*|fmt: (?:skip|off|on)|NBVAL_\w+.*)$")
NBVAL_TAGS = {"nbval-check-output", "nbval-ignore-output", "nbval-skip", "nbval-raises-exception"}
EXERCISE_TAG = "workbook-exercise"
#: A solution cell whose output is what the learner's own work makes through files or DAGs an
#: exercise wrote (a DAG's run, a script's accuracy, a sweep of their experiments): the
#: learner site shows no model output under it, as under a cell that uses an exercise's names.
LEARNER_OUTPUT_TAG = "workbook-learner-output"
#: The notebook metadata key of a generated lab that names its source.
GENERATED_KEY = "workbook"


class MarkerError(ValueError):
    """Unbalanced or nested solution markers; the message names the notebook and cell."""


@dataclass
class Region:
    """One exercise region of a code cell."""

    hint: str
    answer: list[str]  # the solution's lines, at the cell's indentation
    hints: list[str]  # ### HINT lines: what to think about
    pointers: list[str]  # ### POINTER lines: where to look
    broken: list[str] | None  # what the lab shows instead of a stub (### LAB SHOWS)
    label: str | None = "FIX ME"  # the line above ``broken`` (None: unmarked)


def _uncomment(line: str, indent: str) -> str:
    body = line[len(indent) :] if line.startswith(indent) else line.lstrip()
    return indent + (body[2:] if body.startswith("# ") else body.removeprefix("#"))


def parse_regions(source: str, where: str = "") -> tuple[str, list[Region]]:
    """The lab version of ``source`` (stubs, broken code, tool comments gone) and its regions."""
    lab, _, regions = _parse(source, where)
    return lab, regions


def published_source(source: str) -> str:
    """``source`` as the solution runs it, without the authoring lines: marker and hint
    lines go, and so do the commented-out lines a lab shows instead (``### LAB SHOWS``).
    What the instructors' site shows as a solution."""
    return _parse(source, "", strict=False)[1]


def _parse(source: str, where: str, strict: bool = True) -> tuple[str, str, list[Region]]:
    """The one reader of the marker grammar: (the lab's source, the solution's source
    without authoring lines, the regions). ``strict``: unbalanced markers raise."""
    out: list[str] = []
    published: list[str] = []
    regions: list[Region] = []
    inside, showing, indent = False, False, ""
    region = Region("", [], [], [], None)
    for lineno, line in enumerate(source.splitlines(), 1):
        begin, end = BEGIN.match(line), END.match(line)
        marker = begin or end or HINT.match(line) or LAB_SHOWS.match(line)
        if not marker and not (inside and showing):
            published.append(line)
        if begin:
            if inside and strict:
                raise MarkerError(f"{where} line {lineno}: BEGIN SOLUTION inside another region")
            inside, showing, indent = True, False, begin["indent"]
            region = Region((begin["hint"] or DEFAULT_HINT).strip(), [], [], [], None)
        elif end:
            if not inside:
                if not strict:
                    continue
                raise MarkerError(f"{where} line {lineno}: END SOLUTION without BEGIN")
            inside = False
            if region.broken is not None:
                if region.label is not None:
                    out.append(f"{indent}# {region.label}: {region.hint}")
                out.extend(_uncomment(b, indent) for b in region.broken)
            else:
                message = f"{UNWRITTEN}: {region.hint}"
                out.append(f"{indent}# YOUR CODE HERE: {region.hint}")
                out.append(f"{indent}raise NotImplementedError({message!r})")
            # Kept at the cell's indentation: the answer replaces the stub where it stands.
            region.answer = "\n".join(region.answer).strip("\n").splitlines()
            regions.append(region)
        elif inside and LAB_SHOWS.match(line):
            showing, region.broken = True, []
            kind = LAB_SHOWS.match(line)["kind"]
            region.label = {"STARTS WITH": "YOUR CODE HERE", "SHOWS UNMARKED": None}.get(
                kind, "FIX ME"
            )
        elif inside and HINT.match(line):
            m = HINT.match(line)
            (region.hints if m["stage"] == "HINT" else region.pointers).append(m["text"].strip())
        elif inside and showing:
            region.broken.append(TOOL_COMMENT.sub("", line))
        elif inside:
            region.answer.append(TOOL_COMMENT.sub("", line))
        else:
            out.append(TOOL_COMMENT.sub("", line))
    if inside and strict:
        raise MarkerError(f"{where}: BEGIN SOLUTION without END")
    return "\n".join(out), "\n".join(published) + ("\n" if source.endswith("\n") else ""), regions


def stub_source(source: str, where: str = "") -> tuple[str, int]:
    """Replace each solution region in ``source``; returns the new source and region count."""
    text, regions = parse_regions(source, where)
    return text, len(regions)


def cell_python(source: str) -> ast.Module | None:
    """A code cell's source parsed as Python, its magics and shell lines blanked; None when
    it is not Python (a ``%%writefile`` cell's YAML, a syntax error)."""
    code = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    try:
        return ast.parse(code)
    except SyntaxError:
        return None


def names_used(source: str) -> set[str]:
    """The names a code cell reads."""
    tree = cell_python(source)
    if tree is None:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def defined_names(source: str) -> set[str]:
    """Names a code cell binds at its top level (assignments, loops, imports, def, class,
    inside ``with``/``if``/``try`` too, not inside functions), and the file variable of a
    ``%%writefile {name}`` cell: what a grading check may need from that exercise."""
    first, _, rest = source.partition("\n")
    magic = re.match(r"%%writefile\s+(?:-a\s+)?\{(\w+)\}", first)
    if magic:
        return {magic[1]}
    tree = cell_python(source)
    if tree is None:
        return set()
    names: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)  # its body's names are its own
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        stack.extend(ast.iter_child_nodes(node))
    return names


def _points_line(checks) -> str:
    if not checks:
        return ""
    total = sum(c.points for c in checks)
    parts = []
    for c in checks:
        what = re.sub(r"\s*\(hidden[^)]*\)", "", c.what)
        kind = "the self-check below" if c.public else "a hidden check, on inputs you do not see"
        extra = "; a bonus, not needed to pass" if not c.required else ""
        # escaped: a check saying "<root>/<stage>" would otherwise be an HTML tag, invisible
        parts.append(f"{c.points} · {html.escape(what, quote=False)} ({kind}{extra})")
    # the blank line: Markdown renderers other than JupyterLab's (the website's) need it
    # before a list
    lines = [f"**{total} point{'s' if total != 1 else ''}** when graded:", ""]
    lines += [f"- {p}" for p in parts]
    return "\n".join(lines)


def _hint_block(summary: str, lines: list[str]) -> str:
    return f"<details><summary>{summary}</summary>\n\n" + "\n\n".join(lines) + "\n\n</details>"


def exercise_cell(regions: list[Region], checks, cell_id: str) -> nbformat.NotebookNode | None:
    """The markdown cell placed above an exercise: its points, then the two stages of
    hints, each collapsed. Never the answer: that lives in ``solutions/`` only."""
    blocks = [_points_line(checks)] if checks else []
    hints = [h for r in regions for h in r.hints]
    pointers = [p for r in regions for p in r.pointers]
    if hints:
        blocks.append(_hint_block("Hint 1: what to think about", hints))
    if pointers:
        blocks.append(_hint_block("Hint 2: where to look", pointers))
    if not blocks:
        return None
    cell = nbformat.v4.new_markdown_cell("\n\n".join(blocks))
    cell["id"] = cell_id
    cell.metadata["tags"] = [EXERCISE_TAG]
    return cell


@dataclass
class Written:
    """A question answered in words: the learner's cell ``answer-<id>``, scored by hand."""

    id: str
    points: int
    prompt: str  # the markdown cell above the answer cell
    model: str  # the solution's answer (instructors only)
    kind: str  # "markdown", or "code" for an answer the notebook records


def _answer_marker(cell) -> re.Match | None:
    first = cell.source.split("\n", 1)[0]
    return (ANSWER_MD if cell.cell_type == "markdown" else ANSWER_CODE).match(first)


def answer_id(cell) -> str | None:
    """The id of the written answer a solution's cell holds (its ANSWER marker), or None."""
    marker = _answer_marker(cell)
    return marker["id"] if marker else None


def written_questions(solution: nbformat.NotebookNode) -> list[Written]:
    """The questions of a solution notebook that the learner answers in words, in order."""
    out, previous = [], ""
    for cell in solution.cells:
        marker = _answer_marker(cell)
        if marker is None:
            if cell.cell_type == "markdown":
                previous = cell.source
            continue
        body = cell.source.split("\n", 1)[1] if "\n" in cell.source else ""
        out.append(Written(marker["id"], int(marker["points"]), previous.strip(), body.strip(),
                           cell.cell_type))  # fmt: skip
    return out


def answer_text(cell) -> str:
    """What a learner wrote in an answer cell: a markdown cell's text, or the string a code
    answer cell assigns (its source when it assigns none); "" while it is still blank."""
    if cell.cell_type == "markdown":
        text = re.sub(r"<!--.*?-->", "", cell.source, flags=re.S).replace(ANSWER_PLACEHOLDER, "")
        return text.strip()
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return cell.source.strip()
    strings = [
        node.value.value.strip()
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]  # fmt: skip
    return "\n".join(s for s in strings if s) if strings else cell.source.strip()


def _answer_cell(cell, marker: re.Match, where: str) -> nbformat.NotebookNode:
    """The learner's answer cell for a solution's written answer."""
    points = int(marker["points"])
    note = f"{points} point{'s' if points != 1 else ''}, read by your instructor"
    if cell.cell_type == "markdown":
        new = nbformat.v4.new_markdown_cell(f"<!-- your answer ({note}) -->\n{ANSWER_PLACEHOLDER}")
    else:
        body = cell.source.split("\n", 1)[1] if "\n" in cell.source else ""
        source, _ = parse_regions(body, where)
        new = nbformat.v4.new_code_cell(f"# your answer ({note})\n{source}")
    new["id"] = f"answer-{marker['id']}"
    return new


def build_lab(
    solution: nbformat.NotebookNode, name: str = "notebook", suite=None
) -> nbformat.NotebookNode:
    """The learner version of a solution notebook: regions stubbed, outputs cleared, written
    answers emptied, a points-and-hints cell above each exercise. ``suite``: the lab's
    checks (for points); each check belongs to the last exercise cell that defines a name it
    needs, the first place from which it can run (Lab 1.2's "your pieces learn MNIST" needs
    MyMLP, make_loader and train_epoch: it is listed at train_epoch)."""
    lab = copy.deepcopy(solution)
    cells: list[nbformat.NotebookNode] = []
    exercises = []  # (position in cells, regions, names defined, key for a stable id)
    for i, cell in enumerate(lab.cells):
        marker = _answer_marker(cell)
        if marker is not None:
            if cell.cell_type == "code":
                body = cell.source.split("\n", 1)[1] if "\n" in cell.source else ""
                exercises.append(
                    (len(cells), parse_regions(body, f"{name} cell {i}")[1],
                     defined_names(body), f"{name}:answer:{marker['id']}")
                )  # fmt: skip
            cells.append(_answer_cell(cell, marker, f"{name} cell {i}"))
            continue
        if cell.cell_type == "code":
            original = cell.source
            cell.source, regions = parse_regions(original, f"{name} cell {i}")
            cell.outputs = []
            cell.execution_count = None
            cell.metadata["tags"] = [
                t for t in cell.metadata.get("tags", []) if t not in NBVAL_TAGS
            ]
            if regions:
                # the id follows the exercise (its hints), not its position in the notebook
                key = f"{name}:" + "|".join(r.hint for r in regions)
                exercises.append((len(cells), regions, defined_names(original), key))
        cells.append(cell)
    owner: dict[int, list] = {}
    for check in suite or ():
        at = [pos for pos, _, names, _ in exercises if set(check.needs) & names]
        if at:
            owner.setdefault(at[-1], []).append(check)
    seen: set[str] = set()
    for pos, regions, _, key in reversed(exercises):  # from the end: positions stay valid
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        while digest in seen:  # two exercises with the same hints: ids must still differ
            digest = hashlib.sha1(digest.encode()).hexdigest()[:8]
        seen.add(digest)
        extra = exercise_cell(regions, owner.get(pos, []), f"ex-{digest}")
        if extra is not None:
            cells.insert(pos, extra)
    lab.cells = cells
    lab = notebooks.clean(lab)
    # Said in the notebook's metadata (JupyterLab: Property Inspector > Notebook metadata),
    # not in a cell: a learner works in this file; its author edits the solution.
    lab.metadata[GENERATED_KEY] = {
        "generated_from": f"solutions/{name}",
        "generated_by": "workbook labs build",
        "edit": f"solutions/{name}: this notebook is regenerated from it, and an edit here is lost",
    }
    return lab


@dataclass
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def solution_files(solutions_dir: Path) -> list[Path]:
    return sorted(solutions_dir.glob("[0-9][0-9]_*.ipynb"))


def hint_problems(nb: nbformat.NotebookNode, where: Path) -> list[Problem]:
    """Exercises of a solution without both stages of hints (what to think about, where to
    look): a learner stuck there would have nothing to open before asking for the answer."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = cell.source
        if _answer_marker(cell) is not None:
            source = source.split("\n", 1)[1] if "\n" in source else ""
        try:
            regions = parse_regions(source, f"{where.name} cell {i}")[1]
        except MarkerError:
            continue  # reported by the build itself
        if regions and not all(any(getattr(r, k) for r in regions) for k in ("hints", "pointers")):
            first = regions[0].hint
            problems.append(Problem(where, f"cell {i} ({first!r}): an exercise needs a ### HINT "
                                           "and a ### POINTER line"))  # fmt: skip
    return problems


def build(
    solutions_dir: Path,
    labs_dir: Path,
    suite_for: Callable[[str], Sequence],
    write: bool = True,
) -> list[Problem]:
    """Generate every lab; with ``write=False`` only compare (what ``check`` does).
    ``suite_for(notebook file name)``: that lab's grading checks, for the points lines
    (``workbook.grading.suites.suite_for``; the caller passes it, so that the generator does
    not import the grader)."""

    problems: list[Problem] = []
    expected_names = set()
    for sol_path in solution_files(solutions_dir):
        expected_names.add(sol_path.name)
        solution = nbformat.read(sol_path, as_version=4)
        problems += hint_problems(solution, sol_path)
        try:
            lab_nb = build_lab(solution, sol_path.name, suite_for(sol_path.name))
            text = notebooks.dumps(lab_nb)
        except MarkerError as exc:
            problems.append(Problem(sol_path, str(exc)))
            continue
        if any(m in text for m in ("BEGIN SOLUTION", "END SOLUTION", "### HINT", "### POINTER",
                                   "### LAB ", "### ANSWER", "<!-- ANSWER")):  # fmt: skip
            problems.append(Problem(sol_path, "solution marker left in the generated lab"))
        lab_path = labs_dir / sol_path.name
        if write:
            if not lab_path.is_file() or lab_path.read_text(encoding="utf-8") != text:
                atomic_write_text(lab_path, text)
        elif not lab_path.is_file():
            problems.append(Problem(lab_path, "missing; run `workbook labs build`"))
        elif lab_path.read_text(encoding="utf-8") != text:
            problems.append(
                Problem(
                    lab_path, "differs from what its solution generates; run `workbook labs build`"
                )
            )
    for lab_path in sorted(labs_dir.glob("*.ipynb")):
        if lab_path.name not in expected_names:
            problems.append(Problem(lab_path, "has no solution notebook of the same name"))
    return problems
