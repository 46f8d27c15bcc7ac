"""The ``aprflow`` command line: run studies locally, compile pipelines, run single steps.

aprflow run apr-study [--config FILE] [--set key=value ...]
aprflow compile [--out DIR]
aprflow upload [--host URL] [--namespace NS] [FILE_OR_DIR ...]   (to Kubeflow Pipelines)
aprflow submit STUDY --host URL [--namespace NS] [--experiment E] [--set key=value ...]
aprflow sample|data|train|analyze ...      (one step; ``aprflow STEP --help``)
aprflow recipes [NAME] [--set recipe.FIELD=VALUE]   (training recipes, recipes/*.yaml)
--debug anywhere: show the traceback of an error instead of one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.common.errors import AprflowError
from components.common.uris import redact_uri

COMPILED_DIR = Path(__file__).parent / "compiled"
# Pipelines whose preflight and report copy `aprflow run` knows.
LOCAL_PIPELINES = ("apr-study",)

# Single steps: each is the component's own CLI, also runnable as `python -m <module>`.
STEPS = {
    "sample": ("components.sample.cli", "sample architectures of a design space in a FLOP band"),
    "data": ("components.data.cli", "build, derive, describe and list datasets (tar shards)"),
    "train": ("components.train.cli", "train one architecture on one dataset"),
    "recipes": ("components.train.recipes_cli", "list the training recipes, or print one resolved"),
    "transfer": (
        "components.transfer.cli",
        "transfer of pretrained models: kNN, linear probe, LogME, LEEP, fine-tune (study, score)",
    ),
    "analyze": ("analysis.cli", "run the APR analysis on any results table (CSV/Parquet)"),
}


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
    from pipelines.registry import PIPELINES

    parser = argparse.ArgumentParser(
        prog="aprflow",
        description="Architecture-performance-relationship studies on Kubeflow Pipelines. "
        "'run' executes a pipeline on this machine through kfp.local (artifacts in runs/store, "
        "MLflow in runs/mlflow.db unless APRFLOW_STORE_URI / MLFLOW_TRACKING_URI say "
        "otherwise); 'compile' writes the YAML that a Kubeflow backend accepts "
        "(kfp run create -f pipelines/compiled/apr_study.yaml key=value ...).",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the traceback instead of one 'error: ...' line",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run a pipeline locally (kfp.local)")
    # The transfer study runs locally as `aprflow transfer study` (the same steps without
    # KFP); its pipeline is for clusters (`aprflow submit transfer-study`).
    run.add_argument(
        "pipeline",
        choices=[name for name in PIPELINES if name in LOCAL_PIPELINES],
        help="pipeline to run (the transfer study locally: aprflow transfer study --help)",
    )
    run.add_argument("--config", help="YAML file of pipeline parameters (pipelines/configs/)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set n_models=4 --set datasets=[digits,shapes]",
    )
    run.add_argument("--runs-dir", default="runs", help="where reports land (default runs/)")
    run.add_argument(
        "--dry-run", action="store_true", help="check the config and services, run nothing"
    )
    compile_ = commands.add_parser("compile", help="compile every pipeline to YAML")
    compile_.add_argument("--out", type=Path, default=COMPILED_DIR, help="output folder")
    from pipelines import submit

    upload = commands.add_parser(
        "upload",
        help="upload compiled pipelines to Kubeflow Pipelines (version = content hash)",
    )
    submit.add_upload_arguments(upload)
    submit.add_connection_arguments(upload)
    submit_ = commands.add_parser("submit", help="start a run on Kubeflow Pipelines")
    submit.add_submit_arguments(submit_, sorted(PIPELINES))
    submit.add_connection_arguments(submit_)
    for step, (_, summary) in STEPS.items():
        commands.add_parser(step, help=summary, add_help=False)
    return parser


def _run(args: argparse.Namespace) -> int:
    from pipelines.config import load_config, parse_overrides
    from pipelines.local import run_local
    from pipelines.preflight import check_study
    from pipelines.registry import PIPELINES
    from pipelines.sweep import dry_run_summary, scaled_task_cpu

    pipeline = PIPELINES[args.pipeline]
    arguments = load_config(pipeline, args.config, parse_overrides(args.overrides))
    check_study(arguments, runs_dir=args.runs_dir)
    if "task_cpu" in arguments:
        arguments["task_cpu"] = scaled_task_cpu(arguments)
    if args.dry_run:
        print(redact_uri(f"config OK: {arguments}"))
        print(dry_run_summary(arguments))
        return 0
    run_local(pipeline, arguments, args.runs_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs ``aprflow``; bad input ends in one ``error: ...`` line and exit status 2.

    ``--debug`` (anywhere on the line) re-raises instead, with the traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return _dispatch(argv)
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into a line
        if debug:
            raise
        if isinstance(e, AprflowError):
            message = str(e)
        elif isinstance(e, OSError):
            message = f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
        else:  # a bug, not bad input: say so, and how to get the traceback for a report
            message = f"internal error {type(e).__name__}: {e} (rerun with --debug for details)"
        print(f"error: {redact_uri(message)}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in STEPS:
        import importlib

        module = importlib.import_module(STEPS[argv[0]][0])
        return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "compile":
        for path in compile_all(args.out):
            print(f"wrote {path}")
        return 0
    if args.command in ("upload", "submit"):
        from pipelines import submit

        return submit.run_upload(args) if args.command == "upload" else submit.run_submit(args)
    return _run(args)
