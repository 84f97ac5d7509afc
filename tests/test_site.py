"""The course website (`make site`): notebooks as pages, outputs from real runs, executions
reused by their record, nothing fetched off-site; then the built site in headless Chromium."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import struct
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, DevTools, make_sandbox

from shared import experiments
from shared.provision import sha256_file
from workbook import labs, release, site

NAMES = [p.name for p in labs.solution_files(REPO / "solutions")]
ARTIFACTS = REPO / "artifacts" / "screenshots"


def solution_lines(name: str) -> tuple[set[str], set[str]]:
    """(every line of exercise solutions, the hidden ones): lines of the solution as it runs
    (``published_source``) that the lab's cell does not have; hidden: those the lab does not
    show either, as an answer on purpose ("Show the answer")."""
    lab_text = (REPO / "labs" / name).read_text()

    def code(path):
        return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]

    lines = set()
    for sol, lab in zip(code(REPO / "solutions" / name), code(REPO / "labs" / name), strict=True):
        if not labs.parse_regions(sol.source)[1]:
            continue  # no exercise here: the lab has the same code (formatter pragmas aside)
        new = {line.strip() for line in labs.published_source(sol.source).splitlines()}
        new -= {line.strip() for line in lab.source.splitlines()}
        lines |= {line for line in new if len(line) > 15}
    return lines, {line for line in lines if json.dumps(line)[1:-1] not in lab_text}


# ------------------------------------------------------------------ pieces, no kernel


def test_maths_becomes_mathml_outside_code_only():
    text = site.maths_to_mathml("For $f(x) = x^3$, in `x = $y$` and for $5 and $6:\n$$a^2$$")
    assert text.count("<math") == 2 and 'display="block"' in text
    assert "`x = $y$`" in text and "$5 and $6" in text
    assert "<mi>f</mi>" in text and "<msup><mi>x</mi><mn>3</mn></msup>" in text


def test_markdown_cell_turns_details_into_collapsed_admonitions_and_copies_pictures(tmp_path):
    (tmp_path / "docs" / "images").mkdir(parents=True)
    (tmp_path / "docs" / "images" / "ui.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "labs").mkdir()
    source = (
        "Intro ![the UI](../docs/images/ui.png)\n\n"
        "<details><summary>Show a hint</summary>\n\nUse `x.view`.\n\n</details>\n\n"
        '<details><summary>Show the "answer"</summary>\n\n```python\nx = 1\n```\n\n</details>'
    )
    text, files = site.markdown_cell(source, tmp_path / "labs" / "nb.ipynb")
    assert "![the UI](../images/ui.png)" in text
    assert files == {"images/ui.png": b"\x89PNG fake"}
    assert '??? tip "Show a hint"\n\n    Use `x.view`.' in text
    assert "??? success \"Show the 'answer'\"\n\n    ```python\n    x = 1\n    ```" in text
    assert "<details>" not in text
    with pytest.raises(
        site.SiteError, match="nb.ipynb: links the missing picture ../docs/images/gone.png"
    ):
        site.markdown_cell("![x](../docs/images/gone.png)", tmp_path / "labs" / "nb.ipynb")


def test_outputs_become_text_blocks_pictures_and_markdown():
    png = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                                        "text/plain": "<Figure size 640x480>"})  # fmt: skip
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="saved /proj/runs/a.pt\n\x1b[1mok\x1b[0m\n"),
        png,
        nbformat.v4.new_output("display_data", data={"text/markdown": "| a |\n|---|\n| 1 |"}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "```tricky```"},
                               execution_count=1),
    ]  # fmt: skip
    text, files = site.outputs_markdown(outputs, "labs/x/cell3", "/proj")
    assert text.startswith('<div class="nb-output" markdown>') and text.endswith("</div>")
    assert "```text\nsaved ./runs/a.pt\nok\n```" in text, "paths relative, no ANSI codes"
    assert files == {"labs/x/cell3-1.png": b"\x89PNG\r\n\x1a\n"}
    assert "![&lt;Figure size 640x480&gt;](x/cell3-1.png)" in text, "from labs/x.md to labs/x/"
    assert "| a |\n|---|\n| 1 |" in text
    assert "````text\n```tricky```\n````" in text, "a fence longer than any inside it"
    assert site.outputs_markdown([], "p", None) == ("", {})
    svg = nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg></svg>"})
    widget = nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "1"}}
    )
    text, files = site.outputs_markdown([svg, widget], "labs/x/cell1", None)
    assert files == {"labs/x/cell1-0.svg": b"<svg></svg>"} and "](x/cell1-0.svg)" in text
    assert "![figure]" in text, "a picture without a text form still gets an alt text"
    assert "application/vnd.jupyter.widget-view+json not shown here" in text


def test_offsite_references_are_found_and_plain_links_are_not(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text(
        '<a href="https://airflow.apache.org/docs/">docs</a>'
        '<script src="https://cdn.example.org/x.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/css">'
        '<img alt="ok" src="../img/local.png">'
        '<img srcset="small.png 1x, https://cdn.example.org/big.png 2x">'
        "<div style=\"background: url('https://example.org/inline.png')\"></div>"
        "<style>@import 'https://fonts.example.org/f.css';</style>"
        "<script>import('https://esm.example.org/plotly.js')</script>"
        "<video poster=https://example.org/poster.jpg></video>"
    )
    (tmp_path / "s.css").write_text("body{background:url('https://example.org/bg.png')}")
    assert site.offsite_references(tmp_path) == [
        "a/index.html: https://cdn.example.org/x.js",
        "a/index.html: //fonts.example.org/css",
        "a/index.html: https://cdn.example.org/big.png",
        "a/index.html: https://example.org/inline.png",
        "a/index.html: https://fonts.example.org/f.css",
        "a/index.html: https://esm.example.org/plotly.js",
        "a/index.html: https://example.org/poster.jpg",
        "s.css: https://example.org/bg.png",
    ]


def test_the_newest_dag_comparison_is_chosen_not_the_lab_sweep(tmp_path):
    import os

    written = {"2024-01-03": 100, "manual__2026-11-28T02-00-00-00-00": 300, "2024-01-01": 200,
               "lab1_3": 400}  # fmt: skip
    for folder, mtime in written.items():
        (tmp_path / folder / "experiments").mkdir(parents=True)
        md = tmp_path / folder / "experiments" / "comparison.md"
        md.write_text("| x |")
        os.utime(md, (mtime, mtime))
    newest = tmp_path / "manual__2026-11-28T02-00-00-00-00" / "experiments"
    assert site.latest_comparison(tmp_path) == newest, "a run without a logical date counts"
    assert site.latest_comparison(tmp_path / "nothing") is None


def test_an_execution_record_is_current_only_for_the_same_notebook_and_parameters(tmp_path):
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text((REPO / "solutions" / NAMES[0]).read_text())
    out = tmp_path / "out" / "nb.ipynb"
    params = {"config_path": "configs/smoke.yaml"}
    assert experiments.current_record(notebook, out, params) is None, "no run yet"
    out.parent.mkdir()
    out.write_text(notebook.read_text())
    key = experiments.execution_key(notebook, params)
    record = out.with_name("nb.ipynb.run.json")
    entry = {"key": key, "parameters": params, "output_sha256": sha256_file(out)}
    record.write_text(json.dumps(entry))
    assert experiments.current_record(notebook, out, params) == entry
    out.write_text(out.read_text() + " ")
    assert experiments.current_record(notebook, out, params) is None, "the output was rewritten"
    entry["output_sha256"] = sha256_file(out)
    record.write_text(json.dumps(entry))
    assert (
        experiments.current_record(notebook, out, {"config_path": "configs/default.yaml"}) is None
    )
    notebook.write_text(notebook.read_text().replace("MLOps", "MLOPS"))
    assert experiments.current_record(notebook, out, params) is None, "the notebook changed"
    record.write_text("{not json")
    assert experiments.current_record(notebook, out, params) is None


@pytest.mark.parametrize("name", NAMES)
def test_a_notebook_page_shows_the_lab_with_outputs_and_solutions_only_when_asked(name):
    """Built from each solution's own stored outputs (what nbval checks): the learner page
    has the lab's code and no hidden solution line; the instructor page adds them."""
    record = {"parameters": {"config_path": "configs/default.yaml"}, "finished": "2026-01-01",
              "seconds": 1.0, "root": str(REPO)}  # fmt: skip
    args = (REPO / "labs" / name, REPO / "solutions" / name, REPO / "solutions" / name, record)
    learner = site.notebook_page(*args, f"labs/{Path(name).stem}")
    instructor = site.notebook_page(*args, f"labs/{Path(name).stem}", solutions=True)
    every, hidden = solution_lines(name)
    assert every, "every notebook has exercises"
    assert not {line for line in hidden if line in learner.markdown}
    assert {line for line in every if line in instructor.markdown} == every
    exercises = sum(
        bool(labs.parse_regions(c.source)[1])
        for c in nbformat.read(REPO / "solutions" / name, as_version=4).cells
        if c.cell_type == "code"
    )
    assert instructor.markdown.count('??? success "Solution"') == exercises > 0
    assert learner.markdown.count('??? success "Solution"') == 0
    assert "YOUR CODE HERE" in learner.markdown and 'class="nb-output"' in learner.markdown
    assert re.match(r"(00|Lab 1\.(1|2a|2b|3|4)) · ", learner.title), learner.title
    assert any(f.endswith(".png") for f in instructor.files), "the notebook's figures come along"
    # a cell that runs the learner's DAG, script or experiments (tagged in the solution): the
    # learner page shows none of its model output, text or figure; the instructors' does
    code = site._code_cells(nbformat.read(REPO / "solutions" / name, as_version=4))
    for i, cell in enumerate(code):
        if labs.LEARNER_OUTPUT_TAG not in cell.metadata.get("tags", []):
            continue
        assert not [f for f in learner.files if f.startswith(f"labs/{Path(name).stem}/cell{i}-")]
        for out in cell.outputs:
            line = next((s for s in out.get("text", "").splitlines() if len(s) > 15), None)
            if line is not None:
                assert line not in learner.markdown and line in instructor.markdown, (i, line)


def test_a_learner_site_that_holds_a_secret_is_refused_and_the_old_one_kept(tmp_path):
    """The learner build's last gate: the built pages are scanned as a release is (a solution
    line inside highlighted code is still found), and a site that holds one is not kept."""
    secret = next(s for s in release.secrets()
                  if s.what.startswith("solutions/") and "\n" not in s.text and "(" in s.text)  # fmt: skip
    out = tmp_path / "site"
    out.mkdir()
    (out / "sitemap.xml").write_text("the old site")
    style = {"stylesheets/site.css": (site.DOCS / "stylesheets" / "site.css").read_bytes()}
    pages = [site.Page("index.md", "Home", "# Home\n", style),
             site.Page("lab.md", "Lab", f"# Lab\n\n```python\n{secret.text}\n```\n")]  # fmt: skip
    nav = [{"Home": "index.md"}, {"Lab": "lab.md"}]
    with pytest.raises(site.SiteError, match="holds what a release must not") as caught:
        site._mkdocs(pages, nav, out, False, vet=release.leaks)
    assert f"lab/index.html: {secret.what}" in str(caught.value)
    assert (out / "sitemap.xml").read_text() == "the old site"
    pages[1].markdown = "# Lab\n\nYour code goes here.\n"
    site._mkdocs(pages, nav, out, False, vet=release.leaks)  # without it, the site is built
    assert (out / "lab" / "index.html").is_file()


# ------------------------------------------------------------------ built, in a browser


def _pages(site_dir: Path) -> list[str]:
    folders = (p.parent.relative_to(site_dir).as_posix() for p in site_dir.rglob("index.html"))
    return sorted("/" if f == "." else f"/{f}/" for f in folders)


_PAGE_REPORT = """(() => {
  const origin = location.origin;
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href)
    .filter(h => h.startsWith(origin));
  const images = [...document.querySelectorAll('article img')];
  return {
    title: document.title,
    links,
    broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    output_images: [...document.querySelectorAll('.nb-output img')]
      .filter(i => i.complete && i.naturalWidth > 0).length,
    text: document.querySelector('article').innerText,
  };
})()"""

_SEARCH = """new Promise(resolve => {
  const input = document.querySelector('input.md-search__input');
  input.focus();
  input.value = 'checkpoint';
  input.dispatchEvent(new Event('input', {bubbles: true}));
  input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true}));
  let tries = 0;
  const poll = () => {
    const hits = document.querySelectorAll('.md-search-result__item');
    if (hits.length || ++tries > 100) resolve([...hits].map(h => h.innerText.split('\\n')[0]));
    else setTimeout(poll, 100);
  };
  poll();
})"""


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.airflow
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_the_site_builds_from_current_runs_and_every_page_works_in_chromium(
    smoke_run, tmp_path, monkeypatch, free_port, chromium
):
    """The notebooks' smoke executions (shared with the notebook tests) are reused by their
    records; the Lab 1.3 run's comparison stands in for the DAG's (same `compare`)."""
    import urllib.request

    for name in NAMES:
        assert smoke_run(name)[3] is None, f"{name} did not run"
    root = make_sandbox(tmp_path / "project")
    monkeypatch.setenv("WORKBOOK_ROOT", str(root))
    sweep = (
        smoke_run(next(n for n in NAMES if "_lab1_3_" in n))[1] / "runs" / "lab1_3" / "experiments"
    )
    shutil.copytree(sweep, root / "runs" / "2024-01-01" / "experiments")

    built = site.build(out=tmp_path / "site", executed_folder=smoke_run.folder, run=False)
    print(site.summary(built))
    assert built.reused == NAMES and built.executed == []
    warm = site.build(out=tmp_path / "site", executed_folder=smoke_run.folder, run=False)
    print(f"rebuilt without changes in {warm.seconds:.1f} s")
    assert warm.executed == [] and warm.seconds < 60, "a rebuild reuses every execution"
    instructors = site.build(
        solutions=True, out=tmp_path / "instructors", executed_folder=smoke_run.folder, run=False
    )
    learner_html = {p: p.read_text() for p in (tmp_path / "site").rglob("*.html")}
    instructor_html = "".join(p.read_text() for p in (tmp_path / "instructors").rglob("*.html"))
    assert site.offsite_references(tmp_path / "site") == []

    def text_of(pages: str) -> str:  # what a reader sees: tags gone, entities decoded
        return html_lib.unescape(re.sub(r"<[^>]+>", "", pages))

    learner_text = text_of("".join(learner_html.values()))
    instructor_text = text_of(instructor_html)
    # A line the learners have anyway (another lab, the DAG the release ships) is not an
    # answer given away; the repository's other DAGs are answers (Labs 1.1 and 1.4).
    shipped = [
        REPO / rel for rel in release.COPIED if rel.startswith("dags/") and rel.endswith(".py")
    ]
    shown_elsewhere = "".join(p.read_text() for p in [*(REPO / "labs").glob("*.ipynb"), *shipped])
    for name in NAMES:
        every, hidden = solution_lines(name)
        leaked = {line for line in hidden if line in learner_text and line not in shown_elsewhere}
        assert not leaked, f"{name}: solution code in the learner site: {sorted(leaked)[:3]}"
        assert {line for line in every if line in instructor_text} == every
        page = f"labs/{Path(name).stem}/index.html"
        solutions = (
            (tmp_path / "instructors" / page).read_text().count("<summary>Solution</summary>")
        )
        assert (
            solutions > 0
            and learner_html[tmp_path / "site" / page].count("<summary>Solution</summary>") == 0
        )

    server = site.make_server(tmp_path / "site", port=free_port())
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    browser = DevTools(chromium(), tmp_path / "chromium", free_port(), size=(1400, 1000))
    try:
        pages = _pages(tmp_path / "site")
        assert len(pages) >= 11, pages
        links: set[str] = set()
        figures: dict[str, int] = {}  # the run's figures each notebook page shows, loaded
        for page in pages:
            browser.problems.clear()
            browser.open(base + page)
            report = browser.evaluate(_PAGE_REPORT)
            assert browser.problems == [], (page, browser.problems)
            assert report["broken_images"] == [], (page, report["broken_images"])
            links.update(h.split("#")[0] for h in report["links"])
            if page.startswith("/labs/"):
                figures[page] = report["output_images"]
                assert "YOUR CODE HERE" in report["text"]
        # Labs 1.1's, 1.3's and 1.4's figures are of the learner's own DAG, experiments and
        # pipeline runs: the learner site shows those of Lab 0, 1.2a and 1.2b
        assert sum(n > 0 for n in figures.values()) >= 3, figures
        offsite = [u for u in browser.requests if not u.startswith((base, "data:", "blob:"))]
        assert offsite == [], f"pages fetched from other hosts: {offsite[:5]}"
        for link in sorted(links):
            with urllib.request.urlopen(link, timeout=10) as resp:
                assert resp.status == 200, link
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for page, shot in (("/", "site_home.png"), ("/labs/02_lab1_2b_training_on_mnist/",
                                                     "site_lab1_2.png")):  # fmt: skip
            browser.open(base + page)
            png = browser.screenshot(ARTIFACTS / shot)
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] == 1400
            print(f"screenshot: {ARTIFACTS / shot}")
        browser.open(base + "/labs/02_lab1_2b_training_on_mnist/")
        # the maths is MathML the browser lays out: no script, no raw LaTeX left on the page
        maths = browser.evaluate(
            "(() => ({n: document.querySelectorAll('article math').length,"
            " sized: [...document.querySelectorAll('article math')].every("
            "m => m.getBoundingClientRect().width > 0),"
            " raw: document.querySelector('article').innerText.includes('$f(x)')}))()"
        )
        assert maths["n"] >= 2 and maths["sized"] and not maths["raw"], maths
        browser.open(base + "/")
        hits = browser.evaluate(_SEARCH)
        assert hits, "offline search found nothing for 'checkpoint'"
        print(f"search 'checkpoint': {len(hits)} results, first: {hits[0]!r}")
    finally:
        browser.close()
        server.shutdown()
    # the learner build is the release's: its README the home page, its pages of the docs,
    # its one DAG; the instructors' build adds the DAGs that are answers (Labs 1.1 and 1.4:
    # promoted from the solutions, and the package's own pipeline) and their pages
    assert "MLOps Foundations: the labs" in learner_html[tmp_path / "site" / "index.html"]
    assert sorted(set(instructors.pages) - set(built.pages)) == [
        "contributing.md", "dags/lab1_1_first_dag.md", "dags/mnist_training_pipeline.md",
        "dags/my_model_in_production.md", "dags/my_retraining.md",
        "dags/my_training_pipeline.md", "experiments.md", "instructors.md", "package.md",
        "site.md",
    ]  # fmt: skip
    assert set(built.pages) <= set(instructors.pages)
