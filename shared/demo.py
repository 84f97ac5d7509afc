"""``make demo``: the course end to end on the embedded defaults, then a short summary.

Each step is a function returning one line about what it produced; the summary lists every
step with its time and the folders holding the results. A failed step stops the demo with
exit code 1 after printing what ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared import paths


@dataclass
class StepResult:
    name: str
    seconds: float
    outcome: str
    ok: bool


def step_data() -> str:
    from shared import provision

    root = paths.data_root()
    problems = provision.check(root)
    if problems:
        raise RuntimeError(
            "MNIST files invalid: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
        )
    return f"4 MNIST files verified by sha256 in {provision.raw_dir(root)}"


def step_train() -> str:
    from shared.config import load_config
    from shared.train import fit

    result = fit(load_config("configs/default.yaml"))
    m = result.metrics
    return (
        f"{m['model']} ({m['parameters']:,} parameters): test accuracy {m['test']['accuracy']:.2%} "
        f"after {m['epochs_completed']} epochs, {m['train_seconds']:.1f} s of training; "
        f"run folder {result.run_dir}"
    )


#: The demo's steps in course order. Later parts of the course add theirs here.
STEPS: list[tuple[str, Callable[[], str]]] = [
    ("data: provision and verify MNIST", step_data),
    ("Lab 1.2: train configs/default.yaml", step_train),
]


def run(steps: list[tuple[str, Callable[[], str]]] = STEPS, log=print) -> list[StepResult]:
    """Run each step in order, stopping at the first failure; return what ran."""
    results: list[StepResult] = []
    for name, func in steps:
        log(f"\n=== {name}")
        start = time.perf_counter()
        try:
            outcome, ok = func(), True
        except Exception as exc:  # the summary names the failure; the traceback is above it
            import traceback

            traceback.print_exc()
            outcome, ok = f"FAILED: {type(exc).__name__}: {exc}", False
        results.append(StepResult(name, time.perf_counter() - start, outcome, ok))
        if not ok:
            break
    return results


def summary(results: list[StepResult]) -> str:
    lines = ["", "=== demo summary"]
    for r in results:
        lines.append(f"  [{'ok' if r.ok else 'FAILED'}] {r.name} ({r.seconds:.1f} s)")
        lines.append(f"         {r.outcome}")
    total = sum(r.seconds for r in results)
    lines.append(f"  total {total:.1f} s; results under {paths.runs_root()}")
    return "\n".join(lines)


def main() -> int:
    results = run()
    print(summary(results))
    return 0 if results and all(r.ok for r in results) and len(results) == len(STEPS) else 1
