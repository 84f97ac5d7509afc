"""``make site``: the course as a static website, built offline with MkDocs and its Material
theme.

Why this generator: Material ships its fonts-free theme, icons, scripts and search (lunr in
a web worker) inside the wheel, so a build and a visit fetch nothing (``theme.font: false``
keeps it from linking Google Fonts). Notebook pages are written here as Markdown rather
than through mkdocs-jupyter, whose template links MathJax and Mermaid from CDNs: as Markdown,
a notebook gets the theme's own code blocks, admonitions, table of contents and search.

What the build does, in order (``build``):

1. stage the hand-written pages (``docs/*.md``, their images and stylesheet) in a fresh
   folder;
2. one page per course notebook: the learner notebook (``labs/``) with the outputs of a real
   smoke run of its solution: the run ``make demo`` left in ``runs/demo/notebooks/`` when
   its record says it is current (same notebook, parameters, configs, package and lock),
   else a new run that records itself there;
3. one page per DAG: its ``doc_md``, its graph (drawn from the parsed DAG) and its code;
4. (the instructor build) the latest experiment comparison of ``notebook_experiments`` (the
   DAG runs on the smoke config first if none exists): a learner's copy of the DAG runs
   their own notebook, so the learner build has none;
5. ``mkdocs build --strict`` (a broken link or a missing page fails the build), a check
   that no page loads anything from off-site, then the new site replaces the old one.

The learner build is built from a learner release (``workbook release``: a fresh one, or
``release=``): its labs, its pages of the docs (the release's README as the home page), its
DAGs. Nothing the release does not hold can reach a page, and the built site is scanned for
the release's secrets (``release.leaks``: solution lines, model answers, quiz keys, hidden
checks) before it replaces the old one. An instructor build (``solutions=True``) is built from
this repository, adds each exercise's solution below it, collapsed, and goes to
``site-instructors/`` so a learner site is never the one that shows answers.
"""

from __future__ import annotations

import contextlib
import html
import html.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from shared import paths
from shared.io import atomic_directory

#: The hand-written pages, their stylesheet and the MkDocs settings, in the checkout.
DOCS = Path(__file__).resolve().parent.parent / "docs"


#: How a DAG that a lab's notebook promoted into dags/ begins (shared.airflow_local.promote).
PROMOTED = "# Promoted from "


class SiteError(RuntimeError):
    """The site cannot be built as asked; the message names the file at fault."""


@dataclass
class Page:
    """A page to write into the staged docs folder: Markdown and the files it links."""

    path: str  # relative to the docs folder, e.g. "labs/02_lab1_2b_training_on_mnist.md"
    title: str
    markdown: str
    files: dict[str, bytes] = field(default_factory=dict)  # relative to the docs folder
    #: What a generated page is made from; its first line says so (an edit of the page is lost).
    source: str = ""


@dataclass
class BuildResult:
    site: Path
    pages: list[str]
    seconds: float
    reused: list[str]  # notebook executions taken from an earlier, still current run
    executed: list[str]  # notebook executions made by this build


def output_dir(solutions: bool) -> Path:
    return paths.project_root() / ("site-instructors" if solutions else "site")


# ----------------------------------------------------------------- notebooks → Markdown

_DETAILS = re.compile(
    r"<details>\s*<summary>(?P<summary>.*?)</summary>\s*\n(?P<body>.*?)\n\s*</details>", re.S
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_IMAGE_LINK = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in text.splitlines())


def _fence(text: str, lang: str = "text") -> str:
    """A fenced block that no backtick run inside ``text`` can close early."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    ticks = "`" * (longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _collapsible(summary: str, body: str, kind: str = "note") -> str:
    """Material's collapsed admonition (pymdownx.details): ``??? kind "summary"``."""
    title = summary.strip().replace('"', "'")
    return f'??? {kind} "{title}"\n\n{_indent(body.strip())}\n'


def markdown_cell(source: str, notebook: Path) -> tuple[str, dict[str, bytes]]:
    """A notebook's Markdown as the site shows it: ``<details>`` blocks (a lab's hints and
    answers) become collapsed admonitions, whose body is rendered as Markdown (raw HTML
    would show it as source); pictures the notebook links from ``docs/images/`` are copied
    beside the page's images. ``notebook``: the file the cell is from (links are relative
    to its folder)."""
    files: dict[str, bytes] = {}

    def details(m: re.Match) -> str:
        kind = "tip" if "hint" in m["summary"].lower() else "success"
        return _collapsible(m["summary"], m["body"], kind)

    def image(m: re.Match) -> str:
        target = m[2]
        if re.match(r"[a-z]+:", target):
            return m[0]
        source = (notebook.parent / target).resolve()
        if not source.is_file():
            raise SiteError(f"{notebook}: links the missing picture {target}")
        files[f"images/{source.name}"] = source.read_bytes()
        return f"{m[1]}../images/{source.name}{m[3]}"

    text = _DETAILS.sub(details, source)
    return maths_to_mathml(_IMAGE_LINK.sub(image, text)), files


#: Code in Markdown, where a dollar sign is a dollar sign: fenced blocks and inline spans.
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
#: $$display$$ and $inline$ maths (an inline one starts and ends with a non-space, so a
#: price such as "$5 and $6" is not taken for maths).
_MATHS = re.compile(
    r"\$\$(?P<block>.+?)\$\$|(?<![\\$])\$(?P<inline>[^\s$](?:[^$\n]*[^\s$\\])?)\$", re.S
)


def maths_to_mathml(text: str) -> str:
    """``$...$`` and ``$$...$$`` in Markdown as MathML, converted here with latex2mathml:
    browsers draw MathML themselves, so the page needs no script and works offline (the
    notebooks' maths is written for JupyterLab, which renders the same LaTeX)."""
    from latex2mathml.converter import convert

    def one(m: re.Match) -> str:
        if m["block"] is not None:
            return convert(m["block"].strip(), display="block")
        return convert(m["inline"], display="inline")

    parts = _CODE.split(text)
    # the odd items are code: left as they are
    return "".join(p if i % 2 else _MATHS.sub(one, p) for i, p in enumerate(parts))


def _output_text(text: str, root: str | None) -> str:
    text = _ANSI.sub("", text)
    if root:
        text = text.replace(root.rstrip("/") + "/", "./")
    return text


def outputs_markdown(
    outputs: list, image_prefix: str, root: str | None
) -> tuple[str, dict[str, bytes]]:
    """A code cell's outputs: text in plain blocks, pictures as files, Markdown and HTML as
    they are; wrapped in one ``nb-output`` block the stylesheet marks as output."""
    import base64

    blocks: list[str] = []
    files: dict[str, bytes] = {}
    pictures = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/svg+xml": "svg"}
    for n, out in enumerate(outputs):
        kind = out.get("output_type")
        if kind == "stream":
            blocks.append(_fence(_output_text(out["text"], root)))
        elif kind == "error":
            blocks.append(_fence(_output_text("\n".join(out["traceback"]), root)))
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            picture = next((m for m in pictures if m in data), None)
            if picture is not None:
                name = f"{image_prefix}-{n}.{pictures[picture]}"
                raw = data[picture]
                if picture == "image/svg+xml":  # text, not base64 (nbformat joins the lines)
                    files[name] = (raw if isinstance(raw, str) else "".join(raw)).encode()
                else:
                    files[name] = base64.b64decode(raw)
                alt = (_output_text(data.get("text/plain", ""), root).splitlines() or ["figure"])[0]
                # linked from the page (labs/<stem>.md) to its folder (labs/<stem>/...)
                blocks.append(f"![{html.escape(alt)}]({Path(name).parent.name}/{Path(name).name})")
            elif "text/markdown" in data:
                blocks.append(data["text/markdown"])
            elif "text/html" in data:
                blocks.append(f'<div class="nb-html" markdown="0">\n{data["text/html"]}\n</div>')
            elif "text/plain" in data:
                blocks.append(_fence(_output_text(data["text/plain"], root)))
            else:  # a kind of output a static page cannot show (a widget without text)
                blocks.append(
                    f"*(an output of type {', '.join(sorted(data)) or 'unknown'} not shown here)*"
                )
    if not blocks:
        return "", files
    body = "\n\n".join(blocks)
    return f'<div class="nb-output" markdown>\n\n{body}\n\n</div>', files


def _read(path: Path):
    """A notebook, or a SiteError naming the file (missing, unreadable, not a notebook)."""
    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise SiteError(f"{path}: no such notebook") from None
    except Exception as exc:  # nbformat's NotJSONError, ValidationError, OSError, ...
        raise SiteError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})") from None


def _code_cells(nb) -> list:
    return [
        c
        for c in nb.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


def notebook_page(
    lab_path: Path,
    solution_path: Path,
    executed_path: Path,
    record: dict,
    slug: str,
    solutions: bool = False,
) -> Page:
    """The page of one course notebook: the learner's notebook cell by cell, each code cell
    followed by the outputs its solution printed in a real run (``executed_path``); with
    ``solutions``, an exercise's solution code below it, collapsed."""
    from workbook import labs

    lab, solution, executed = (_read(p) for p in (lab_path, solution_path, executed_path))
    lab_code, sol_code, run_code = _code_cells(lab), _code_cells(solution), _code_cells(executed)
    if not len(lab_code) == len(sol_code) == len(run_code):
        raise SiteError(
            f"{lab_path}: {len(lab_code)} code cells, but {solution_path.name} has "
            f"{len(sol_code)} and its execution {len(run_code)}: run `workbook labs build` "
            "(and rebuild the site)"
        )
    paired = {id(c): i for i, c in enumerate(lab_code)}
    models = {f"answer-{w.id}": w for w in labs.written_questions(solution)}
    # Names the learner's exercises define: a cell that uses one prints what *their* code
    # makes, so the learner build shows no solution's output there (it could hold answers).
    theirs = set().union(
        *(labs.defined_names(c.source) for c in sol_code if labs.parse_regions(c.source)[1])
    )
    root = record.get("root")
    params = ", ".join(f"{k}={v!r}" for k, v in record.get("parameters", {}).items())
    parts: list[str] = []
    files: dict[str, bytes] = {}
    title = None
    for cell in lab.cells:
        written = models.get(cell.get("id", ""))
        if written is not None and cell.cell_type == "markdown":
            parts.append(_written_answer(written, solutions))
            continue
        if cell.cell_type == "markdown":
            text, pics = markdown_cell(cell.source, lab_path)
            files.update(pics)
            if title is None and (m := re.search(r"^# (.+)$", text, re.M)):
                title = m[1].strip()
                note = _run_note(lab_path, record, params, solutions)
                text = text.replace(m[0], m[0] + "\n\n" + note, 1)
            parts.append(text)
            continue
        if cell.cell_type != "code":
            continue
        i = paired[id(cell)]
        if cell.source.strip():
            parts.append(_fence(cell.source, "python"))
        exercise = bool(labs.parse_regions(sol_code[i].source)[1])
        if exercise and not solutions:
            # The solution's output under the learner's stub would both contradict the stub
            # and give the answer away ("✓ flatten: (64, 1, 28, 28) -> (64, 784)").
            parts.append("*Your code goes here; its check prints its verdict when you run it.*")
            continue
        if exercise:
            parts.append(
                _collapsible(
                    "Solution", _fence(labs.published_source(sol_code[i].source), "python"),
                    "success",
                )
            )  # fmt: skip
        runs_theirs = theirs & labs.names_used(cell.source) or labs.LEARNER_OUTPUT_TAG in (
            sol_code[i].metadata.get("tags", [])
        )  # a DAG, a script or experiments an exercise wrote: not found by names
        if not solutions and runs_theirs:
            parts.append("*This cell runs your code: its output appears when you run it.*")
            continue
        text, pics = outputs_markdown(run_code[i].outputs, f"{slug}/cell{i}", root)
        files.update(pics)
        if text:
            parts.append(text)
    made_from = (
        f"solutions/{solution_path.name} (the learner's cells from labs/{lab_path.name})"
        if solutions
        else f"labs/{lab_path.name} (the outputs of its model run)"
    )
    return Page(f"{slug}.md", title or lab_path.stem, "\n\n".join(parts) + "\n", files, made_from)


def _written_answer(written, solutions: bool) -> str:
    """A question answered in words: where the learner writes, and (instructors) the model."""
    text = (
        f"*Your answer here, in your own words: {written.points} point"
        f"{'s' if written.points != 1 else ''}, read by your instructor.*"
    )
    box = _collapsible("Your answer", text, "question")
    if solutions:
        box += "\n\n" + _collapsible("A model answer", written.model, "success")
    return box


def _run_note(lab_path: Path, record: dict, params: str, solutions: bool) -> str:
    run = (
        f"run with papermill ({params}) on {record.get('finished', '?')[:10]} in "
        f"{record.get('seconds', '?')} s"
    )
    if solutions:
        said = (f"The outputs under the cells are those of its solution, {run}; each "
                "exercise's solution is under it, collapsed.")  # fmt: skip
    else:
        said = (f"The outputs under the cells are those of a model run of it, {run}. Exercise "
                "cells show what you start from, and cells that run your code show no output: "
                "yours appears when you run them.")  # fmt: skip
    return _collapsible(
        "About this page",
        f"This is the learner notebook `labs/{lab_path.name}`. {said} To work through it, run "
        "`make lab`.",
        "info",
    )


# ----------------------------------------------------------------- executions


def executions(
    folder: Path | None = None, run: bool = True, log: Callable[[str], None] = print
) -> tuple[dict[str, tuple[Path, dict]], list[str], list[str]]:
    """Each solution's smoke execution and its record: reused from ``folder`` (the demo's)
    where its record is current, else executed there now (``run=False``: a SiteError
    instead). Returns ({notebook name: (executed, record)}, reused, executed)."""
    from shared import experiments
    from workbook import demo, labs

    folder = folder or demo.executed_dir()
    found: dict[str, tuple[Path, dict]] = {}
    reused, executed = [], []
    for solution in labs.solution_files(paths.project_root() / "solutions"):
        out = folder / solution.name
        params = demo.smoke_params(solution.name)
        record = experiments.current_record(solution, out, params)
        if record is not None:
            reused.append(solution.name)
        elif not run:
            raise SiteError(f"{out}: no current execution of {solution} (run `make demo`)")
        else:
            log(f"  executing {solution.name} on the smoke config (no current run in {folder})")
            try:
                experiments.run_recorded(solution, out, params, timeout=600)
            except Exception as exc:  # papermill's error names the cell; the file is kept
                raise SiteError(
                    f"{solution}: its smoke run failed ({type(exc).__name__}); the executed "
                    f"notebook with the error is {out}"
                ) from exc
            record = experiments.current_record(solution, out, params)
            if record is None:
                raise SiteError(f"{out}: executed, but its record does not match")
            executed.append(solution.name)
        found[solution.name] = (out, record)
    return found, reused, executed


# ----------------------------------------------------------------- DAGs and experiments


def dag_pages(dags_dir: Path, solutions: bool = False) -> list[Page]:
    """One page per DAG of ``dags_dir``: its description (``doc_md``), its graph as a
    picture drawn from the parsed DAG, and its code. A DAG a lab's notebook promoted there
    (its first line says so) is the answer to that lab: only the instructor build shows it."""
    import io

    from airflow.dag_processing.dagbag import DagBag

    from shared import airflow_local, plots

    airflow_local.configure()
    bag = DagBag(str(dags_dir))
    if bag.import_errors:
        raise SiteError(f"{dags_dir}: DAGs that do not import: {bag.import_errors}")
    if not bag.dags:
        raise SiteError(f"{dags_dir}: no DAGs found")
    pages = []
    for dag_id in sorted(bag.dags):
        dag = bag.dags[dag_id]
        source = Path(dag.fileloc)
        if not solutions and source.read_text().startswith(PROMOTED):
            continue
        buf = io.BytesIO()
        fig = plots.dag_graph(dag)
        fig.savefig(buf, format="png", dpi=110)
        schedule = getattr(dag, "schedule", None) or "none: triggered by hand"
        body = [
            f"# {dag_id}",
            f"`dags/{source.name}` · schedule **{schedule}** · {len(dag.tasks)} tasks"
            + (f" · tags: {', '.join(sorted(dag.tags))}" if dag.tags else ""),
            (dag.doc_md or "*This DAG has no `doc_md`.*").strip(),
            "## Graph",
            f"![the graph of {dag_id}: its tasks and dependencies]({dag_id}.png)",
            "## Code",
            _fence(source.read_text(), "python"),
        ]
        pages.append(
            Page(f"dags/{dag_id}.md", dag_id, "\n\n".join(body) + "\n",
                 {f"dags/{dag_id}.png": buf.getvalue()}, f"dags/{source.name}")
        )  # fmt: skip
    return pages


def latest_comparison(runs_root: Path) -> Path | None:
    """The ``notebook_experiments`` comparison written last: in ``runs/<ds>/experiments/``,
    or ``runs/<run id>/experiments/`` for a run without a logical date (Airflow's run ids
    have a ``__``, as in ``manual__2026-...``). ``runs/lab1_3/`` is the Lab 1.3 notebook's
    own sweep, not the DAG's, and is left out."""
    found = [
        p
        for p in runs_root.glob("*/experiments/comparison.md")
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.parent.parent.name) or "__" in p.parent.parent.name
    ]
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def experiments_page(folder: Path) -> Page:
    """The comparison ``notebook_experiments`` wrote for one logical date: its table and
    figure, and the configuration each row ran."""
    table = (folder / "comparison.md").read_text()
    figure = folder / "comparison.png"
    ds = folder.parent.name  # a logical date, or the run id of a run without one
    subsets = set()
    for config in sorted(folder.glob("*/config.yaml")):
        m = re.search(r"^\s+subset:\s*(\S+)", config.read_text(), re.M)
        subsets.add(m[1] if m else "null")
    data = (
        f"the first {', '.join(sorted(subsets))} training images (a smoke run: its accuracies "
        "show that every experiment runs end to end, not how good each model is; run the DAG "
        "without the subset override for the full-data comparison)"
        if subsets and subsets != {"null"}
        else "the full training set"
    )
    body = [
        "# Experiments compared",
        f"The `notebook_experiments` DAG ran the Lab 1.3 notebook once per file in "
        f"`configs/experiments/`, for {'the logical date' if ds[:1].isdigit() else 'the run'} "
        f"**{ds}**, on {data}, then compared the "
        f"runs (`runs/{ds}/experiments/comparison.md`). Best test accuracy first.",
        table.strip(),
    ]
    files = {}
    if figure.is_file():
        body.append("![validation accuracy of each experiment](experiments/comparison.png)")
        files["experiments/comparison.png"] = figure.read_bytes()
    body.append(
        "Reproduce it: `.venv/bin/airflow dags test notebook_experiments 2024-01-01 "
        '-c \'{"overrides": ["data.subset=1200"]}\'` (smoke; the exports are in '
        "[Airflow](airflow.md)) or trigger it in the UI (`make airflow`); the DAG's page is "
        "[notebook_experiments](dags/notebook_experiments.md)."
    )
    return Page(
        "experiments.md", "Experiments compared", "\n\n".join(body) + "\n", files,
        f"{paths.show(folder)} (the last run of notebook_experiments)",
    )  # fmt: skip


# ----------------------------------------------------------------- build


_URL = r"(?:https?:)?//[^\s\"'<>)]+"
_CSS_REMOTE = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])(" + _URL + ")", re.I)
_ANY_REMOTE = re.compile(r"https?://[^\s\"'<>)]+", re.I)
#: Attributes whose URL the browser loads by itself (an <a href> is only followed on a click).
_LOADING = {"src", "srcset", "poster", "data", "background", "formaction"}


class _Fetches(html.parser.HTMLParser):
    """Every URL a page makes the browser load: resource attributes, stylesheets and icons
    (<link href>), inline styles and <style> blocks, and any absolute URL in inline script
    code (a notebook's HTML output could load a library that way)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._inline: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        for name, value in attrs.items():
            if name in _LOADING or (name == "href" and tag == "link"):
                candidates = (
                    [u.split()[0] for u in value.split(",") if u.strip()]
                    if name == "srcset"
                    else [value]
                )
                self.urls += [u for u in candidates if re.match(_URL, u.strip())]
            elif name == "style":
                self.urls += _CSS_REMOTE.findall(value)
        self._inline = tag if tag in ("style", "script") and "src" not in attrs else None

    def handle_data(self, data):
        if self._inline == "style":
            self.urls += _CSS_REMOTE.findall(data)
        elif self._inline == "script":
            self.urls += _ANY_REMOTE.findall(data)

    def handle_endtag(self, tag):
        self._inline = None


def offsite_references(site: Path) -> list[str]:
    """Every place in the built site that would fetch from another host when viewed:
    scripts, stylesheets, fonts, pictures, frames, inline styles and scripts (ordinary
    outbound links in text are allowed)."""
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            parser = _Fetches()
            parser.feed(path.read_text(errors="replace"))
            hits = parser.urls
        elif path.suffix == ".css":
            hits = _CSS_REMOTE.findall(path.read_text(errors="replace"))
        else:
            continue
        found += [f"{path.relative_to(site)}: {url}" for url in hits]
    return found


def _stage(stage: Path, pages: list[Page]) -> None:
    for page in pages:
        target = stage / page.path
        target.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"<!-- generated by `workbook site build` from {page.source}: edit that, not this page -->\n\n"
            if page.source
            else ""
        )
        target.write_text(header + page.markdown)
        for rel, data in page.files.items():
            f = stage / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)


def _config(stage: Path, site: Path, nav: list, solutions: bool) -> Path:
    import yaml

    base = DOCS / "mkdocs.yml"
    try:
        config = yaml.safe_load(base.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SiteError(f"{base}: {exc}") from exc
    config["docs_dir"] = str(stage)
    config["site_dir"] = str(site)
    config["nav"] = nav
    if solutions:
        config["site_name"] += " (instructors: solutions shown)"
    path = stage.parent / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


#: The hand-written pages, in the order the navigation lists them; every ``docs/*.md`` must be
#: here (the README links to them: they are the source, the site renders them).
HAND_WRITTEN = {
    "index.md": "Home",
    "course.md": "The course",
    "install.md": "Installing",
    "airflow.md": "Airflow",
    "instructors.md": "Instructors",
    "package.md": "The packages",
    "speed.md": "Speed",
    "data.md": "The MNIST data",
    "site.md": "This website",
    "contributing.md": "Contributing",
}


#: The README's and the home page's lifecycle figure, drawn by ``shared.plots``; committed,
#: so the README shows it on any forge (``workbook site figures`` redraws it).
LIFECYCLE_PNG = DOCS / "images" / "lifecycle.png"


def lifecycle_png() -> bytes:
    """The lifecycle figure as PNG bytes, without the metadata that would differ by run."""
    import io

    from shared import plots

    buf = io.BytesIO()
    plots.lifecycle_figure().savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


#: A link from a release's README into its docs/, which the site stages beside the home page.
_README_DOCS_LINK = re.compile(r"\]\(docs/")
#: A link from a page of docs/ to a lab notebook (which a forge shows), on the site that lab's
#: page.
_LAB_LINK = re.compile(r"\]\(\.\./labs/([\w-]+)\.ipynb(#[^)\s]*)?\)")


def hand_written_pages(release: Path | None = None) -> list[Page]:
    """The pages of ``docs/`` (the README links to them), with their pictures
    (``docs/images/``) and the stylesheet. ``release``: a learner release's instead, the
    pages it has (its README the home page, its links into docs/ made relative)."""
    docs = DOCS if release is None else release / "docs"
    found = sorted(p.name for p in docs.glob("*.md"))
    if release is None and sorted(HAND_WRITTEN) != found:
        raise SiteError(
            f"{DOCS}: the pages there ({', '.join(found)}) are not the ones the site lists "
            f"({', '.join(sorted(HAND_WRITTEN))}): add the new page to site.HAND_WRITTEN"
        )
    if release is not None and not set(found) <= set(HAND_WRITTEN):
        raise SiteError(
            f"{docs}: pages the site does not list: {sorted(set(found) - set(HAND_WRITTEN))}"
        )
    sources = {name: (docs / name, title) for name, title in HAND_WRITTEN.items() if name in found}
    if release is not None:
        sources = {"index.md": (release / "README.md", "Home"), **sources}
    pages = []
    for name, (path, title) in sources.items():
        try:
            text = path.read_text()
        except OSError as exc:
            raise SiteError(f"{path}: cannot read it ({exc.strerror})") from None
        if release is not None and path.name == "README.md":
            text = _README_DOCS_LINK.sub("](", text)
        text = _LAB_LINK.sub(lambda m: f"](labs/{m[1]}.md{m[2] or ''})", text)
        pages.append(Page(name, title, text))
    for picture in sorted((docs / "images").glob("*.png")):
        pages[0].files[f"images/{picture.name}"] = picture.read_bytes()
    pages[0].files["stylesheets/site.css"] = (DOCS / "stylesheets" / "site.css").read_bytes()
    return pages


def comparison_page(run: bool, log: Callable[[str], None]) -> Page:
    """The experiments page, from the last comparison; with ``run``, the DAG runs on the
    smoke config first if there is none yet."""
    from workbook import demo

    comparison = latest_comparison(paths.runs_root())
    if comparison is None:
        if not run:
            raise SiteError(f"{paths.runs_root()}: no experiment comparison (run `make demo`)")
        log("experiments: no comparison yet; running notebook_experiments (smoke config)")
        demo.step_experiments_dag()
        comparison = latest_comparison(paths.runs_root())
        if comparison is None:
            raise SiteError("notebook_experiments ran but wrote no comparison.md")
    return experiments_page(comparison)


def _mkdocs(
    pages: list[Page], nav: list, out: Path, solutions: bool,
    vet: Callable[[Path], list[str]] | None = None,
) -> None:  # fmt: skip
    """Stage ``pages``, run ``mkdocs build --strict`` into a fresh folder, refuse a site
    that would fetch from other hosts, or in which ``vet`` finds something (each line a
    problem), and only then let it replace ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".site-build-", dir=out.parent))
    try:
        stage = work / "docs"
        _stage(stage, pages)
        with atomic_directory(out) as built:
            config = _config(stage, built, nav, solutions)
            done = subprocess.run(
                # not --quiet: it drops the warnings that --strict turns into a failure
                [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)],
                capture_output=True, text=True,
                env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
            )  # fmt: skip
            if done.returncode != 0:
                raise SiteError("mkdocs build --strict failed:\n" + (done.stderr or done.stdout))
            offsite = offsite_references(built)
            if offsite:
                raise SiteError(
                    "the site would fetch from other hosts:\n  " + "\n  ".join(offsite[:20])
                )
            found = vet(built) if vet is not None else []
            if found:
                raise SiteError(
                    f"the learner site holds what a release must not ({len(found)}):\n  "
                    + "\n  ".join(found[:20])
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(
    solutions: bool = False,
    out: Path | None = None,
    executed_folder: Path | None = None,
    run: bool = True,
    log: Callable[[str], None] = print,
    release: Path | None = None,
) -> BuildResult:
    """Build the site into ``out`` (default ``site/``, or ``site-instructors/`` with
    ``solutions``), replacing it only once the new one is built and checked. The learner
    build is made from ``release`` (a folder ``workbook release`` made), or from a fresh
    release of this repository."""
    from workbook import release as releases

    if solutions or release is not None:
        if release is not None and (solutions or not (Path(release) / "labs").is_dir()):
            raise SiteError(f"{release}: not a learner release (no labs/), or an instructor build")
        return _build(Path(release or DOCS.parent), solutions, out, executed_folder, run, log)
    with tempfile.TemporaryDirectory(prefix="workbook-release-") as tmp:
        try:
            made = releases.build(Path(tmp) / "release")
        except releases.ReleaseError as exc:
            raise SiteError(f"the release the learner site is built from: {exc}") from None
        log(f"release: built in {paths.show(made)} for the learner site")
        return _build(made, False, out, executed_folder, run, log)


def _build(
    root: Path,
    solutions: bool,
    out: Path | None,
    executed_folder: Path | None,
    run: bool,
    log: Callable[[str], None],
) -> BuildResult:
    """The build, its notebooks, DAGs and pages from ``root``: this repository for the
    instructor build, a learner release for the learner build (its pages then scanned)."""
    from workbook import labs

    start = time.perf_counter()
    checkout = DOCS.parent
    out = Path(out) if out else output_dir(solutions)
    if out.exists() and any(out.iterdir()) and not (out / "sitemap.xml").is_file():
        # the build replaces the whole folder: never one that is not an earlier site
        raise SiteError(f"{out}: exists and is not a built site; choose another --out")
    found, reused, executed = executions(executed_folder, run=run, log=log)
    log(f"notebooks: {len(reused)} executions reused, {len(executed)} run now")
    notebooks = [
        notebook_page(
            root / "labs" / sol.name, sol, *found[sol.name], f"labs/{sol.stem}", solutions
        )
        for sol in labs.solution_files(checkout / "solutions")
    ]
    dags = dag_pages(root / "dags", solutions)
    log(f"DAGs: {len(dags)} pages")
    # The comparison is of the course's notebook run by the DAG: in a learner's copy, their
    # own Lab 1.3 trainer makes it (and a question asks them to read it), so only the
    # instructors' build shows the model run's.
    experiments = [comparison_page(run, log)] if solutions else []
    hand_written = hand_written_pages(None if solutions else root)
    first, rest = hand_written[:2], hand_written[2:]
    nav = [
        *({p.title: p.path} for p in first),
        {"Notebooks": [{p.title: p.path} for p in notebooks]},
        {"DAGs": [{p.title: p.path} for p in dags]},
        *({"Experiments": p.path} for p in experiments),
        {"Reference": [{p.title: p.path} for p in rest]},
    ]
    pages = hand_written + notebooks + dags + experiments
    vet = None if solutions else (lambda built: _learner_problems(built, checkout))
    _mkdocs(pages, nav, out, solutions, vet)
    return BuildResult(out, [p.path for p in pages], time.perf_counter() - start, reused, executed)


def _learner_problems(built: Path, checkout: Path) -> list[str]:
    """What a learner site must not hold: a release's secrets (``release.leaks``), and the
    instructors' folder named on a page (a model run's output that prints its path)."""
    from workbook import release as releases

    named = [
        f"{path.relative_to(built)}: names the instructors' solutions/ folder"
        for path, text in releases.texts(built)  # a page as its reader sees it
        if path.suffix == ".html" and re.search(r"(?<![\w./-])solutions/", text)
    ]
    return releases.leaks(built, checkout) + named


def make_server(site: Path, port: int = 8000, host: str = "127.0.0.1"):
    """An HTTP server for the built ``site`` on ``host:port`` (port 0: any free one)."""
    import functools
    import http.server
    import sys

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # a browser that navigates on cancels what it was loading: not an error
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    if not (site / "index.html").is_file():
        raise SiteError(f"{site}: no built site here (run `make site`)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    try:
        return Server((host, port), handler)
    except OSError as exc:
        raise SiteError(
            f"{host}:{port}: cannot serve there ({exc.strerror}); try PORT=8001"
        ) from None


def serve(site: Path, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve the built ``site`` on ``host:port`` until interrupted (Ctrl-C)."""
    with make_server(site, port, host) as server:
        url = f"http://{host}:{server.server_address[1]}/"
        print(f"serving {site} on {url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
            server.serve_forever()


def summary(result: BuildResult) -> str:
    size = sum(f.stat().st_size for f in result.site.rglob("*") if f.is_file())
    html_pages = len(list(result.site.rglob("*.html"))) - (
        1 if (result.site / "404.html").exists() else 0
    )
    return (
        f"site: {html_pages} pages, {size / 1e6:.1f} MB in {paths.show(result.site)}, built in "
        f"{result.seconds:.1f} s (notebook executions reused: {len(result.reused)}, run now: "
        f"{len(result.executed)})"
    )
