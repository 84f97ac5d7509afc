"""Notebook files: clean metadata so commits carry content, not machine noise.

Outputs stay (nbval compares them); what goes is what differs between machines and runs:
widget state, per-cell timings, papermill's run records, kernel paths and versions.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

from shared.experiments import KERNEL_NAME
from shared.io import atomic_write_text
from shared.paths import project_root

KERNELSPEC = {
    "name": KERNEL_NAME,
    "display_name": "Python 3 (MLOps workbook)",
    "language": "python",
}

#: Cell metadata worth keeping: tags drive papermill ("parameters") and nbval.
_KEEP_CELL_METADATA = {"tags", "editable", "deletable", "nbval-ignore-output"}


def _relative_paths(text: str) -> str:
    """Absolute paths of this checkout in printed output become relative to it ("./...")."""

    return text.replace(str(project_root()) + "/", "./")


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return ``nb`` with machine- and run-specific metadata removed (in place).

    Printed absolute paths of the checkout are made relative, so committed outputs say
    nothing about the machine they were run on.
    """
    kept = {"workbook": nb.metadata["workbook"]} if "workbook" in nb.metadata else {}
    nb.metadata = nbformat.from_dict(
        {
            "kernelspec": dict(KERNELSPEC),
            "language_info": {"name": "python"},
            **kept,  # a generated lab's note naming its source (workbook.labs)
        }
    )
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict(
            {k: v for k, v in cell.metadata.items() if k in _KEEP_CELL_METADATA and v}
        )
        cell.pop("id", None) if nb.nbformat_minor < 5 else None
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = _relative_paths(out["text"])
            elif out.get("output_type") == "error":
                out["traceback"] = [_relative_paths(t) for t in out["traceback"]]
    return nb


def dumps(nb: nbformat.NotebookNode) -> str:
    """Serialise the way nbformat does, with a final newline (stable diffs)."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def clean_file(path: str | os.PathLike[str], check: bool = False) -> bool:
    """Clean one notebook file; return True if it was (or, with ``check``, would be) changed."""

    p = Path(path)
    original = p.read_text(encoding="utf-8")
    cleaned = dumps(clean(nbformat.reads(original, as_version=4)))
    if cleaned == original:
        return False
    if not check:
        atomic_write_text(p, cleaned)
    return True
