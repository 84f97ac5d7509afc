"""The gradebook: what grading found, per check and per submission, and the tables an
instructor reads (text report, CSV, markdown summary, JSON).

``workbook.grading.grade`` fills these in; nothing here runs code.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.io import atomic_write_text

#: What became of a check. Only "failed" says the learner's work is wrong: "not reached" means
#: the cells that define what it checks never ran (the run was stopped, or a cell that
#: raised left a name undefined), "timed out" that it ran past its time limit (a
#: busy machine, or code that never ends), "error" that the grader could not run it.
PASS, FAIL, NOT_REACHED, TIMED_OUT, ERROR = "pass", "failed", "not reached", "timed out", "error"
#: The report's four-letter column, the markdown summary's symbol.
MARKS = {PASS: "PASS", FAIL: "FAIL", NOT_REACHED: "----", TIMED_OUT: "TIME", ERROR: "ERR!"}
SYMBOLS = {PASS: "✓", FAIL: "✗", NOT_REACHED: "–", TIMED_OUT: "⏱", ERROR: "!", "": ""}


@dataclass
class CheckResult:
    id: str
    what: str
    status: str
    points: int
    max_points: int
    required: bool
    public: bool
    hint: str = ""


#: Errors that say an exercise is wrong or unwritten (its check says more) rather than that
#: the code crashed.
EXERCISE_ERRORS = ("CheckFailed", "NotImplementedError")


@dataclass
class ExecutionError:
    cell: int  # 1-based position in the submitted notebook, markdown cells included
    error: str  # "Ename: last line of the message"
    stopped: bool  # execution stopped here (a time limit; an error does not stop it)


@dataclass
class WrittenAnswer:
    """A question the learner answered in words, scored by the instructor (nbgrader's
    manually graded cells): ``points`` stays None (pending) until the sheet is read back."""

    id: str
    prompt: str  # the question, as the notebook asks it
    max_points: int
    text: str  # what the learner wrote; "" when the cell was left as given
    points: int | None = None
    feedback: str = ""

    @property
    def status(self) -> str:
        if not self.text:
            return "blank"
        return "pending" if self.points is None else "scored"


@dataclass
class Report:
    notebook: str
    lab: str | None
    title: str = ""
    # graded | timeout | memory limit exceeded | kernel died | unreadable | wrong lab | grader error
    status: str = "graded"
    message: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    errors: list[ExecutionError] = field(default_factory=list)
    output_truncated: bool = False
    seconds: float = 0.0
    name: str = ""  # how a batch names it: its path relative to the folder all share
    sandbox: str = ""  # which sandbox ran it (workbook.grading.sandbox.describe)
    limits: str = ""  # the limits it ran under
    # figures the measuring checks printed, by check id (Lab 1.2: {"speedrun": {...}})
    measurements: dict[str, Any] = field(default_factory=dict)
    written: list[WrittenAnswer] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report as ``to_dict`` wrote it (a batch's JSON, read back to add the scores of
        the written answers)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["checks"] = [CheckResult(**c) for c in data.get("checks", [])]
        fields["errors"] = [ExecutionError(**e) for e in data.get("errors", [])]
        fields["written"] = [
            WrittenAnswer(**{k: v for k, v in w.items() if k != "status"})
            for w in data.get("written", [])
        ]
        return cls(**fields)

    @property
    def written_score(self) -> int:
        return sum(w.points or 0 for w in self.written)

    @property
    def written_max(self) -> int:
        return sum(w.max_points for w in self.written)

    @property
    def written_pending(self) -> int:
        """Written answers the instructor has not scored yet (a blank one scores 0)."""
        return sum(w.points is None for w in self.written)

    @property
    def label(self) -> str:
        return self.name or Path(self.notebook).name

    @property
    def score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.max_points for c in self.checks)

    @property
    def passed(self) -> bool:
        """Every required check passed (the single-notebook exit code is 0)."""
        return self.gradable and all(c.status == PASS for c in self.checks if c.required)

    @property
    def gradable(self) -> bool:
        return self.status not in ("unreadable", "wrong lab", "grader error")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(score=self.score, max_score=self.max_score, passed=self.passed)
        for w, answer in zip(out["written"], self.written, strict=True):
            w["status"] = answer.status
        out.update(written_score=self.written_score, written_max=self.written_max,
                   written_pending=self.written_pending)  # fmt: skip
        return out

    def summary_line(self) -> str:
        """One line for a batch: name, score, and which checks did not pass, by what became
        of them (failed, timed out, error, not reached), optional ones named apart."""
        name = self.label
        if not self.gradable:
            return f"{name}: not graded ({self.status}): {self.message}"
        status = "" if self.status == "graded" else f" ({self.status})"
        verdict = "pass" if self.passed else f"fail{status}: {_by_status(self.checks, True)}"
        optional = _by_status(self.checks, False)
        return f"{name}: {self.score}/{self.max_score} {verdict}" + (
            f" (optional: {optional})" if optional else ""
        )

    def format(self) -> str:
        """The human report: one line per check, the score, any execution error."""
        lines = [
            f"{self.notebook}: {self.title or (f'lab {self.lab}' if self.lab else 'lab not determined')}"
        ]
        if not self.gradable:
            return "\n".join([*lines, f"  cannot grade: {self.message}"])
        width = max((len(c.id) for c in self.checks), default=0)
        for c in self.checks:
            mark = MARKS[c.status]
            tail = "" if c.required else " (optional)"
            # a pass says what was checked; a failure says what is wrong and how to fix it
            text = c.what if c.status == PASS or not c.hint else c.hint
            status = "" if c.status in (PASS, FAIL) else f"{c.status}: "
            lines.append(
                f"  {mark}  {c.id:<{width}}  {c.points}/{c.max_points}{tail}  {status}{text}"
            )
        required = [c for c in self.checks if c.required]
        ok = sum(c.status == PASS for c in required)
        lines.append(
            f"  score {self.score}/{self.max_score}; required checks passed: {ok}/{len(required)}"
            f"; {self.seconds:.1f} s"
        )
        if self.written:
            lines.append(
                f"  written answers, scored by the instructor: {self.written_score}/"
                f"{self.written_max}"
                + (f", {self.written_pending} pending" if self.written_pending else "")
            )
            wide = max(len(w.id) for w in self.written)
            for w in self.written:
                got = "–" if w.points is None else str(w.points)
                words = " ".join(w.text.split())
                shown = f'"{words[:60]}{"…" if len(words) > 60 else ""}"' if words else ""
                lines.append(
                    f"  {w.status.upper():7} {w.id:<{wide}}  {got}/{w.max_points}  {shown}"
                )
        exercise_errors = [e.cell for e in self.errors if e.error.startswith(EXERCISE_ERRORS)]
        if exercise_errors:  # their checks above say what is wrong
            cells = ", ".join(map(str, exercise_errors))
            lines.append(f"  exercise cells that raised (self-check or stub): {cells}")
        for e in self.errors:
            if e.stopped:
                lines.append(f"  execution stopped at cell {e.cell}: {e.error}")
            elif not e.error.startswith(EXERCISE_ERRORS):
                lines.append(f"  cell {e.cell} raised {e.error} (the cells after it still ran)")
        m = self.measurements.get("speedrun")
        if m is not None:
            lines.append(f"  speedrun: {speedrun_text(m)}")
        if self.message:
            lines.append(f"  {self.message}")
        if self.output_truncated:
            lines.append(
                "  output past the grader's cap was dropped (the executed copy shows where)"
            )
        if self.sandbox:
            lines.append(f"  sandbox: {self.sandbox}; limits: {self.limits}")
        return "\n".join(lines)


def _by_status(checks: Sequence[CheckResult], required: bool) -> str:
    """ "failed a, b; not reached c": the checks (required or optional) that did not pass."""
    parts = []
    for status in (FAIL, TIMED_OUT, ERROR, NOT_REACHED):
        ids = [c.id for c in checks if c.status == status and c.required == required]
        if ids:
            parts.append(f"{status} {', '.join(ids)}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- tables


def _columns(reports: Sequence[Report]) -> list[str]:
    ids: list[str] = []
    for r in reports:
        ids += [c.id for c in r.checks if c.id not in ids]
    return ids


def table(reports: Sequence[Report]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per submission, one column per check (pass, failed, not reached, timed out,
    error)."""
    checks = _columns(reports)
    written: list[str] = []
    for r in reports:
        written += [w.id for w in r.written if w.id not in written]
    header = ["submission", "lab", "status", "score", "max_score", "passed", *checks, "error"]
    if written:
        header += ["written_score", "written_max", "written_pending", *written]
    header.append("sandbox")
    timed = any("speedrun" in r.measurements for r in reports)
    if timed:
        header.append("time_to_99")
    rows = []
    for r in reports:
        by_id = {c.id: c.status for c in r.checks}
        stop = next((e for e in r.errors if e.stopped), None) or next(
            (e for e in r.errors if not e.error.startswith(EXERCISE_ERRORS)), None
        )
        problem = f"cell {stop.cell}: {stop.error}" if stop else r.message
        rows.append(
            {
                "submission": r.label, "lab": r.lab or "", "status": r.status,
                "score": r.score, "max_score": r.max_score, "passed": r.passed,
                **{c: by_id.get(c, "") for c in checks}, "error": problem,
                "sandbox": r.sandbox,
            }
        )  # fmt: skip
        if written:
            by_q = {w.id: w for w in r.written}
            rows[-1].update(written_score=r.written_score, written_max=r.written_max,
                            written_pending=r.written_pending)  # fmt: skip
            for q in written:
                w = by_q.get(q)
                rows[-1][q] = "" if w is None else (w.status if w.points is None else w.points)
        if timed:
            rows[-1]["time_to_99"] = _time_to_99(r)
    return header, rows


def _reached(m: dict[str, Any]) -> bool:
    return "error" not in m and m["seconds_to_99"] is not None and m["full_data"]


def _spread(m: dict[str, Any]) -> str:
    """ "4.10–4.52 s over 3 runs": the range of the repeated runs' times."""
    runs = m.get("runs") or []
    times = [t for t in runs if t is not None]
    if len(runs) < 2:
        return f"{len(runs)} run"
    missed = len(runs) - len(times)
    span = f"{min(times):.2f}–{max(times):.2f} s" if times else "no run reached 99.0 %"
    return f"{span} over {len(runs)} runs" + (
        f", {missed} not reaching 99.0 %" if missed and times else ""
    )


def speedrun_text(m: dict[str, Any]) -> str:
    """A measurement in words: "4.20 s to 99.0 % (4.10–4.52 s over 3 runs), final test
    accuracy 99.03%", "not reached, ...", or why it could not be measured."""
    if not m:
        return "not measured"
    if "error" in m:
        return f"not measured: {m['error']}"
    head = f"{m['seconds_to_99']:.2f} s to 99.0 %" if _reached(m) else "not reached"
    return f"{head} ({_spread(m)}), final test accuracy {m['final_accuracy']:.2%}"


def _time_to_99(report: Report) -> str:
    """The speedrun column: the median seconds to 99.0 %, "not reached", "not measured", or
    empty."""
    m = report.measurements.get("speedrun")
    if m is None:
        return ""
    if "error" in m:
        return "not measured"
    return f"{m['seconds_to_99']:.2f}" if _reached(m) else "not reached"


def leaderboard(reports: Sequence[Report]) -> list[str]:
    """Markdown lines: the speedrun's ranking (fastest median time to 99.0 % first, ties
    broken by the higher final accuracy) of the submissions that pass every required check,
    then, unranked, the measured runs that never reached 99 % or could not be measured."""
    measured = [
        (r, r.measurements["speedrun"])
        for r in reports
        if "speedrun" in r.measurements and r.passed
    ]
    if not measured:
        return []
    reached = [(r, m) for r, m in measured if _reached(m)]
    reached.sort(key=lambda rm: (round(rm[1]["seconds_to_99"], 2), -rm[1]["final_accuracy"]))
    lines = [
        "",
        "## Speedrun leaderboard",
        "",
        "Seconds from building `SpeedNet()` until the test accuracy first reached 99.0 % "
        "(read every eighth of an epoch, the clock paused), the median of fresh runs: each "
        "submission that passed every required check, timed one run at a time after the "
        "grading, in a new kernel holding only the code that defines SpeedNet (that code's "
        "own time counted) and no test files; ties go to the higher final accuracy.",
        "",
        "| rank | submission | time to 99.0 % | runs | epochs | final test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    rank, previous = 0, None
    for i, (r, m) in enumerate(reached, 1):
        key = (round(m["seconds_to_99"], 2), m["final_accuracy"])
        rank = rank if key == previous else i  # an exact tie shares its rank
        previous = key
        lines.append(
            f"| {rank} | {_md(r.label)} | {m['seconds_to_99']:.2f} s | {_spread(m)} "
            f"| {m['epochs_to_99']:.3f} | {m['final_accuracy']:.2%} |"
        )
    ranked = {id(r) for r, _ in reached}
    for r, m in measured:
        if id(r) in ranked:
            continue
        if "error" in m:
            lines.append(f"| – | {_md(r.label)} | not measured: {_md(m['error'])} | – | – | – |")
        else:
            lines.append(
                f"| – | {_md(r.label)} | not reached | {_spread(m)} | – "
                f"| {m['final_accuracy']:.2%} |"
            )
    return lines


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula: text starting with =, +, -, @ (or a
    tab or carriage return, which some programs strip first) gets a leading apostrophe.
    A file name or an error message is learner-controlled text (OWASP: CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(reports: Sequence[Report]) -> str:
    header, rows = table(reports)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def to_markdown(reports: Sequence[Report]) -> str:
    header, rows = table(reports)
    graded = [r for r in reports if r.gradable]
    lines = [
        "# Grading summary",
        "",
        f"{len(reports)} submissions; {sum(r.passed for r in reports)} pass every required "
        f"check; {len(reports) - len(graded)} could not be graded.",
        "",
        " · ".join(f"{SYMBOLS[s]} {s}" for s in (PASS, FAIL, NOT_REACHED, TIMED_OUT, ERROR)),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [SYMBOLS.get(v, v) if k not in ("status", "error") else v for k, v in row.items()]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    lines += leaderboard(reports)
    return "\n".join(lines) + "\n"


#: The columns of the sheet of written answers; the instructor fills in points and feedback.
SHEET_COLUMNS = ["submission", "lab", "question", "max_points", "prompt", "answer", "points",
                 "feedback"]  # fmt: skip


#: The files of a batch's results folder (``workbook grade --out FOLDER``).
RESULTS = {"csv": "results.csv", "md": "results.md", "json": "results.json",
           "sheet": "results-written.csv"}  # fmt: skip
EXECUTED = "executed"  # the executed notebooks' folder inside it


def results_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` cannot take a batch's results, or None: found before any grading, so
    a batch never ends by failing to write what it graded."""
    folder = Path(folder)
    if folder.suffix in (".csv", ".md", ".json"):
        return (f"{folder}: --out takes a folder (results.csv, results.md, results.json and "
                "executed/ go in it), not a file name")  # fmt: skip
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a folder: --out takes a folder"
    parent = folder.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent if not folder.exists() else folder, os.W_OK):
        return f"{folder}: cannot write there"
    return None


def sheet_path(out: str | os.PathLike[str]) -> Path:
    """Where a batch writes its sheet of written answers: in its results folder."""
    return Path(out) / RESULTS["sheet"]


def to_sheet(reports: Sequence[Report]) -> str:
    """One row per written answer of every submission, for the instructor to score: the
    question, the learner's words, and empty points and feedback columns (already scored
    answers keep their points)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SHEET_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in reports:
        for w in r.written:
            writer.writerow({k: spreadsheet_safe(v) for k, v in {
                "submission": r.label, "lab": r.lab or "", "question": w.id,
                "max_points": w.max_points, "prompt": " ".join(w.prompt.split()),
                "answer": w.text, "points": "" if w.points is None else w.points,
                "feedback": w.feedback,
            }.items()})  # fmt: skip
    return buf.getvalue()


class SheetError(ValueError):
    """A filled-in sheet that cannot be read back; the message names the row and column."""


def merge_sheet(reports: Sequence[Report], sheet: str | os.PathLike[str]) -> int:
    """Read the instructor's scores from ``sheet`` into ``reports``; returns how many answers
    got points. Every problem is found before anything changes (SheetError lists them)."""
    by_key = {(r.label, w.id): w for r in reports for w in r.written}
    try:
        rows = list(csv.DictReader(Path(sheet).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise SheetError(f"{sheet}: cannot read it ({exc})") from None
    problems, updates = [], []
    for n, row in enumerate(rows, 2):  # row 1 is the header
        key = (row.get("submission", ""), row.get("question", ""))
        w = by_key.get(key)
        if w is None:
            problems.append(
                f"{sheet} row {n}: no written answer {key[1]!r} of {key[0]!r} in these results"
            )
            continue
        raw = (row.get("points") or "").strip()
        if not raw:
            continue
        try:
            points = int(raw)
        except ValueError:
            problems.append(f"{sheet} row {n}, points: {raw!r} is not a whole number")
            continue
        if not 0 <= points <= w.max_points:
            problems.append(f"{sheet} row {n}, points: {points} is outside 0..{w.max_points}")
            continue
        updates.append((w, points, (row.get("feedback") or "").strip()))
    if problems:
        raise SheetError("\n".join(problems))
    for w, points, feedback in updates:
        w.points, w.feedback = points, feedback
    return len(updates)


def write_results(
    reports: Sequence[Report], out: str | os.PathLike[str], sheet: bool = True
) -> dict[str, Path]:
    """Write, in the folder ``out``, the CSV, a markdown summary, the full reports as JSON,
    and (with ``sheet``) the sheet of written answers to score, unless one is there already:
    a sheet the instructor has started filling in is theirs. Each file is replaced whole,
    so a batch can write after every submission and lose nothing if it stops."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {k: out / RESULTS[k] for k in ("csv", "md", "json")}
    atomic_write_text(written["csv"], to_csv(reports))
    atomic_write_text(written["md"], to_markdown(reports))
    atomic_write_text(written["json"], json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    if sheet and any(r.written for r in reports):
        written["sheet"] = sheet_path(out)
        if not written["sheet"].exists():
            atomic_write_text(written["sheet"], to_sheet(reports))
    return written
