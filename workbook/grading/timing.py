"""How long grading takes (``workbook bench --grading``): a benchmark, not a test.

The README's grading figures come from here: one Lab 1.2 submission, then a class, with
each number of parallel jobs, in each sandbox this machine has.
"""

from __future__ import annotations

from shared import paths


def grading_times(
    n: int = 10, jobs: tuple[int, ...] = (1, 2), modes: tuple[str, ...] = ("bwrap", "none")
) -> dict[str, float]:
    """Seconds to grade one Lab 1.2 submission, then a class of ``n`` (the solution and the
    generated lab, alternating, renamed like learners' files) with each number of ``jobs``,
    in each sandbox mode this machine has (bubblewrap's overhead is the difference)."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from workbook.grading import grade, sandbox
    from workbook.grading.suites import LABS

    lab = LABS["1.2b"]
    sources = [paths.project_root() / d / lab.notebook for d in ("solutions", "labs")]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subs = []
        for i in range(n):
            subs.append(Path(tmp) / f"learner{i:02d}.ipynb")
            shutil.copyfile(sources[i % 2], subs[-1])
        for mode in modes:
            if mode == "bwrap" and sandbox.bwrap_problem():
                continue
            start = time.perf_counter()
            report = grade.grade(subs[0], sandbox_mode=mode)
            times[f"{mode}: one submission"] = time.perf_counter() - start
            assert report.passed, report.format()
            for j in jobs:
                start = time.perf_counter()
                reports = grade.grade_many(subs, jobs=j, progress=False, sandbox_mode=mode)
                times[f"{mode}: {n} submissions, {j} at a time"] = time.perf_counter() - start
                assert sum(r.passed for r in reports) == (n + 1) // 2
    return times
