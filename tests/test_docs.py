"""The README is the front door and docs/ holds the rest: every relative link in README.md
(and between the pages of docs/) resolves, every page is on the website, and the committed
lifecycle figure is the one the code draws."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: [text](target): a Markdown link; images included (![alt](target)).
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor MkDocs' toc extension (and GitHub) give a heading: lower case, punctuation
    dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s+", "-", text)


def _anchors(page: Path) -> set[str]:
    return {
        _slug(line.lstrip("#"))
        for line in page.read_text().splitlines()
        if re.match(r"^#{1,6} ", line)
    }


def _generated_page(page: Path, path: str) -> bool:
    """A link from docs/ to a page the website generates: a DAG's, the experiments' (the
    site's strict build checks those links again, on the built pages). A lab is linked as
    its notebook, ``../labs/NAME.ipynb``, which a forge shows and the site makes its page."""
    if page.parent.name != "docs":
        return False
    target = Path(path)
    if target.parts[:1] == ("dags",):
        return (REPO / "dags" / target.with_suffix(".py").name).is_file()
    return path == "experiments.md"


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize(
    "page", [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_every_relative_link_resolves(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if _generated_page(page, path):
            continue
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == [], f"{page.name}: " + "; ".join(broken)


def test_the_readme_is_a_front_door():
    """About 150 lines: what, what it costs, the two commands, three paths; the rest is linked."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[:5] == [
        "What it costs",
        "The two commands",
        "Learners",
        "Instructors",
        "Contributors",
    ]
    assert "make demo" in text and "make test" in text and "make lab" in text
    linked = {Path(t.partition("#")[0]).name for t in _relative_links(REPO / "README.md")}
    for page in (REPO / "docs").glob("*.md"):
        if page.name == "index.md":  # the website's home page: the README is the repository's
            continue
        assert page.name in linked, f"docs/{page.name} is not linked from the README"


def test_every_docs_page_is_on_the_website():
    from workbook import site

    assert sorted(site.HAND_WRITTEN) == sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert [p.path for p in site.hand_written_pages()] == list(site.HAND_WRITTEN)


def test_the_committed_lifecycle_figure_is_the_one_the_code_draws():
    """The README shows docs/images/lifecycle.png; `workbook site figures` redraws it."""
    import io

    import matplotlib.image as mpimg
    import numpy as np

    from workbook import site

    drawn = mpimg.imread(io.BytesIO(site.lifecycle_png()), format="png")
    committed = mpimg.imread(site.LIFECYCLE_PNG)
    assert drawn.shape == committed.shape and np.abs(drawn - committed).max() < 0.02, (
        "docs/images/lifecycle.png is out of date: run `workbook site figures`"
    )
