"""The ``aprflow`` command line: run studies locally, compile pipelines, run single steps.

aprflow run apr-study [--config FILE] [--set key=value ...] [--dry-run | --print-config]
aprflow compile [--out-dir DIR]
aprflow upload [--host URL] [--namespace NS] [FILE_OR_DIR ...]   (to Kubeflow Pipelines)
aprflow submit STUDY --host URL [--namespace NS] [--experiment E] [--set key=value ...]
aprflow sample|data|train|transfer|analyze ...      (one step; ``aprflow STEP --help``)
aprflow recipes [NAME] [--set recipe.FIELD=VALUE]   (training recipes, recipes/*.yaml)

Every command follows :mod:`components.common.cli`: the result on stdout (``--json``),
progress on stderr (``-q``/``-v``), exit 0/1/2, ``--debug`` for a traceback. The common options
may also come before the command (``aprflow --debug sample ...``).

Each command is its own module's ``main(argv)``, imported only when it runs: ``aprflow --help``
imports neither kfp nor torch.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from components.common.cli import (
    EXIT_USAGE,
    add_common_options,
    did_you_mean,
    print_result,
    run_cli,
)
from pipelines.names import LOCAL_PIPELINES

COMPILED_DIR = Path(__file__).parent / "compiled"


class Command(NamedTuple):
    """A command of ``aprflow``: ``module:function`` of its ``main(argv) -> int`` and of its
    parser builder, and its one-line summary."""

    main: str
    parser: str
    summary: str


COMMANDS = {
    "run": Command(
        "pipelines.cli:run_main",
        "pipelines.cli:build_run_parser",
        "run a pipeline locally (kfp.local)",
    ),
    "compile": Command(
        "pipelines.cli:compile_main",
        "pipelines.cli:build_compile_parser",
        "compile every pipeline to YAML",
    ),
    "upload": Command(
        "pipelines.submit:upload_main",
        "pipelines.submit:build_upload_parser",
        "upload compiled pipelines to Kubeflow Pipelines (version = content hash)",
    ),
    "submit": Command(
        "pipelines.submit:submit_main",
        "pipelines.submit:build_submit_parser",
        "start a run on Kubeflow Pipelines",
    ),
    "sample": Command(
        "components.sample.cli:main",
        "components.sample.cli:build_parser",
        "sample architectures of a design space in a FLOP band",
    ),
    "data": Command(
        "components.data.cli:main",
        "components.data.cli:build_parser",
        "build, derive, describe and list datasets (tar shards)",
    ),
    "train": Command(
        "components.train.cli:main",
        "components.train.cli:build_parser",
        "train one architecture on one dataset",
    ),
    "recipes": Command(
        "components.train.recipes_cli:main",
        "components.train.recipes_cli:build_parser",
        "list the training recipes, or print one resolved",
    ),
    "transfer": Command(
        "components.transfer.cli:main",
        "components.transfer.cli:build_parser",
        "transfer of pretrained models: kNN, linear probe, LogME, LEEP, fine-tune (study, score)",
    ),
    "analyze": Command(
        "analysis.cli:main",
        "analysis.cli:build_parser",
        "run the APR analysis on any results table (CSV/Parquet)",
    ),
}
# Each local pipeline's preflight (arguments, runs_dir) and dry-run plan (arguments -> text).
LOCAL_CHECKS = {
    "apr-study": ("pipelines.preflight:check_study", "pipelines.sweep:dry_run_summary"),
    "apr-predict": (
        "pipelines.predict_preflight:check_predict",
        "pipelines.predict_preflight:dry_run_summary",
    ),
    "transfer-study": (
        "pipelines.transfer_preflight:check_transfer",
        "pipelines.transfer_preflight:dry_run_summary",
    ),
    "seed-study": (
        "pipelines.seed_preflight:check_seed_study",
        "pipelines.seed_preflight:dry_run_summary",
    ),
    "class-count": (
        "pipelines.class_count_preflight:check_class_count",
        "pipelines.class_count_preflight:dry_run_summary",
    ),
    "pretrain-factors": (
        "pipelines.pretrain_preflight:check_pretrain_factors",
        "pipelines.pretrain_preflight:dry_run_summary",
    ),
}
# Common options that may come before the command name; they are passed on to the command.
_LEADING_OPTION = re.compile(r"^(--debug|--quiet|--verbose|-[qv]+)$")


def compiled_path(name: str, out_dir: Path = COMPILED_DIR) -> Path:
    return out_dir / f"{name.replace('-', '_')}.yaml"


def compile_all(out_dir: Path = COMPILED_DIR) -> list[Path]:
    """Compiles every pipeline to ``out_dir/<name>.yaml`` (what Kubeflow uploads)."""
    from kfp import compiler

    from pipelines.registry import PIPELINES

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in PIPELINES.items():
        path = compiled_path(name, out_dir)
        compiler.Compiler().compile(pipeline, str(path))
        paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: common options and the list of commands (for ``--help``).

    Each command parses its own arguments (:data:`COMMANDS`).
    """
    parser = argparse.ArgumentParser(
        prog="aprflow",
        description="Architecture-performance-relationship studies on Kubeflow Pipelines. "
        "'run' executes a pipeline on this machine through kfp.local (artifacts in runs/store, "
        "MLflow in runs/mlflow.db unless APRFLOW_STORE_URI / MLFLOW_TRACKING_URI say "
        "otherwise); 'compile' writes the YAML that a Kubeflow backend accepts "
        "(kfp run create -f pipelines/compiled/apr_study.yaml key=value ...).",
        epilog="Results go to stdout (--json for JSON), progress to stderr (-q hides it). Exit "
        "status: 0 success, 1 failure, 2 usage error. 'aprflow COMMAND --help' for a command.",
    )
    add_common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


def _load(target: str) -> Callable:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def command_main(name: str) -> Callable[[list[str]], int]:
    """The ``main(argv)`` of command ``name`` (its module imported now)."""
    return _load(COMMANDS[name].main)


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of command ``name`` (what ``aprflow NAME --help`` shows; sub-commands
    as argparse sub-parsers), built without running anything: for generated CLI docs."""
    return _load(COMMANDS[name].parser)()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``aprflow``: the command named in ``argv``, with the common options before it.

    Returns:
        The command's exit status: 0 success, 1 failure, 2 usage error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    leading = 0
    while leading < len(argv) and _LEADING_OPTION.match(argv[leading]):
        leading += 1
    name = argv[leading] if leading < len(argv) else "-"
    if name in COMMANDS:
        return command_main(name)(argv[:leading] + argv[leading + 1 :])
    if not name.startswith("-"):
        build_parser().print_usage(sys.stderr)
        hint = did_you_mean(name, COMMANDS) or f"choose from {', '.join(COMMANDS)}"
        print(f"aprflow: error: unknown command {name!r}: {hint}", file=sys.stderr)
        return EXIT_USAGE
    # No command: --help, --version, or a usage error from argparse.
    return run_cli(build_parser(), lambda args: command_main(args.command)([]), argv)


# --- aprflow compile -------------------------------------------------------------------------


def build_compile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aprflow compile",
        description="Compile every pipeline to <DIR>/<name>.yaml, the files that Kubeflow "
        "Pipelines accepts (aprflow upload, kfp run create -f ...).",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=COMPILED_DIR,
        help="output folder (default: the package's pipelines/compiled/)",
    )
    add_common_options(parser, json_output=True)
    return parser


def _compile(args: argparse.Namespace) -> int:
    paths = compile_all(args.out_dir)
    print_result(args, [str(path) for path in paths], text="\n".join(map(str, paths)))
    return 0


def compile_main(argv: Sequence[str] | None = None) -> int:
    """``aprflow compile``."""
    return run_cli(build_compile_parser(), _compile, argv)


# --- aprflow run -----------------------------------------------------------------------------


def build_run_parser() -> argparse.ArgumentParser:
    """The parser of ``aprflow run``; its help lists every pipeline parameter (made when the
    help is shown: it imports the pipelines)."""
    import textwrap

    from pipelines.config import ParametersParser, add_config_options

    parser = ParametersParser(
        prog="aprflow run",
        description=textwrap.fill(
            "Run a pipeline on this machine through kfp.local: every task is a subprocess of "
            "this Python environment. The terminal shows progress (stderr); the tasks' full log "
            "goes to RUNS_DIR/logs/; the result is the study's folder RUNS_DIR/<study_id>/ with "
            "report.html (stdout).",
            width=96,
        ),
        pipelines=LOCAL_PIPELINES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "pipeline",
        choices=LOCAL_PIPELINES,
        help="pipeline to run",
    )
    add_config_options(parser)
    parser.add_argument("--runs-dir", default="runs", help="where reports land (default runs/)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config and services and print the plan, run nothing",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the run, print where the study's wall time went (start-up, each task, "
        "trials, outside trials) and write it to profile.json beside the report",
    )
    add_common_options(parser, json_output=True)
    return parser


def _run(args: argparse.Namespace) -> int:
    from pipelines.config import load_config, parse_overrides, print_config
    from pipelines.local import local_slots, run_local
    from pipelines.registry import PIPELINES
    from pipelines.sweep import scaled_task_cpu

    pipeline = PIPELINES[args.pipeline]
    arguments = load_config(pipeline, args.config, parse_overrides(args.overrides))
    if args.print_config:
        print_config(args, pipeline, arguments)
        return 0
    check, summary = (_load(target) for target in LOCAL_CHECKS[args.pipeline])
    check(arguments, runs_dir=args.runs_dir)
    if "task_cpu" in arguments:
        arguments["task_cpu"] = scaled_task_cpu(arguments)
    if args.dry_run:
        with local_slots():  # the plan this machine will run
            plan = summary(arguments).splitlines()
        print_result(
            args,
            {"pipeline": args.pipeline, "arguments": arguments, "plan": plan},
            text=dry_run_text(args.pipeline, arguments, plan),
        )
        return 0
    study_dir = run_local(pipeline, arguments, args.runs_dir, profile=args.profile)
    report = study_dir / "report.html"
    print_result(args, {"study_dir": str(study_dir), "report": str(report)}, text=str(report))
    return 0


def dry_run_text(pipeline: str, arguments: dict, plan: list[str]) -> str:
    """What ``aprflow run --dry-run`` prints: the checked arguments as a YAML config (one
    ``key: value`` line each) and the plan's lines."""
    from pipelines.config import config_yaml

    return f"config OK: {pipeline}\n{config_yaml(arguments)}\n" + "\n".join(plan)


def run_main(argv: Sequence[str] | None = None) -> int:
    """``aprflow run``."""
    return run_cli(build_run_parser(), _run, argv)
