"""Upload compiled pipelines to Kubeflow Pipelines and start runs there (``kfp.Client``).

aprflow upload [--host URL] [--namespace NS] [--prefix aprflow-] [FILE_OR_DIR ...]
aprflow submit apr-study --host URL [--namespace NS] [--experiment E] [--config F] [--set k=v]

Each uploaded pipeline version is named by the content hash of its compiled YAML
(``<pipeline name>-<hash>``), so uploading the same file twice creates nothing new and a changed
pipeline gets a new version. ``submit`` checks the arguments with the study's preflight (the
checks of ``aprflow run`` that need nothing of this machine), uploads the compiled pipeline the
same way, and starts the run from that pipeline version, so the Kubeflow UI links each run to
the exact pipeline it ran. The bearer token comes from ``APRFLOW_KFP_TOKEN``, else from the
ServiceAccount token file that multi-user Kubeflow projects into pods
(``KF_PIPELINES_SA_TOKEN_PATH``, default ``/var/run/secrets/kubeflow/pipelines/token``), else
none (single-user KFP, a port-forward). At the top this module imports only kfp, PyYAML, the
standard library and components.common (errors and the CLI frame, standard library only), so
the small upload image (images/upload) runs it with nothing else installed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from components.common.cli import add_common_options, print_result, run_cli
from components.common.errors import AprflowError

TOKEN_ENV = "APRFLOW_KFP_TOKEN"
# The kfp SDK's own names for the projected ServiceAccount token (kfp.client).
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
HOST_ENV = "KF_PIPELINES_ENDPOINT"
DEFAULT_PREFIX = "aprflow-"
COMPILED_DIR = Path(__file__).parent / "compiled"


class SubmitError(AprflowError):
    """Bad input for an upload or a run, or a Kubeflow Pipelines API that refused it."""


@dataclass(frozen=True)
class Uploaded:
    """Result of uploading one compiled pipeline."""

    pipeline_name: str
    pipeline_id: str
    version_name: str
    version_id: str
    created: bool


def version_name(pipeline_name: str, path: Path) -> str:
    """``<pipeline name>-<first 12 hex digits of the SHA-256 of the file's bytes>``.

    The compiled YAML is deterministic (tests/pipelines checks it is what `aprflow compile`
    writes), so the same pipeline code always gives the same version name.
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{pipeline_name}-{digest}"


def pipeline_name_of(path: Path, prefix: str = DEFAULT_PREFIX) -> str:
    """The name a compiled file is uploaded under: prefix + file stem with '-' for '_'."""
    return prefix + path.stem.replace("_", "-")


def discover_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The KFP bearer token: ``APRFLOW_KFP_TOKEN``, else the projected token file, else None.

    Raises:
        SubmitError: when ``KF_PIPELINES_SA_TOKEN_PATH`` names a file that cannot be read (a
            typo there would otherwise end in an unexplained 401/403 from the API).
    """
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    explicit = environ.get(TOKEN_PATH_ENV)
    path = Path(explicit or DEFAULT_TOKEN_PATH)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if explicit:
            raise SubmitError(f"{TOKEN_PATH_ENV}={explicit}: no such token file") from None
        return None
    except OSError as e:
        raise SubmitError(f"cannot read the KFP token file {path}: {e.strerror}") from None
    return token or None


def connect(host: str | None, namespace: str | None, token: str | None):
    """A ``kfp.Client`` for ``host`` (or ``KF_PIPELINES_ENDPOINT``) with the bearer token."""
    import kfp

    host = host or os.environ.get(HOST_ENV)
    if not host:
        raise SubmitError(
            f"no Kubeflow Pipelines host: pass --host URL (or set {HOST_ENV}), e.g. "
            "--host http://ml-pipeline.kubeflow.svc.cluster.local:8888"
        )
    if not host.startswith(("http://", "https://")):
        raise SubmitError(f"--host {host!r} must start with http:// or https://")
    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    try:
        return kfp.Client(**kwargs)
    except TimeoutError:  # kfp.Client probes /healthz 5 times, 5 s apart
        raise SubmitError(
            f"Kubeflow Pipelines at {host} does not answer /apis/v2beta1/healthz; check --host "
            "(e.g. kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888)"
        ) from None


def _api_error(action: str, error: Exception) -> SubmitError:
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None) or str(error).splitlines()[0]
    hint = ""
    if status in (401, 403):
        hint = (
            f"; set {TOKEN_ENV} or mount a token with audience pipelines.kubeflow.org at "
            f"{DEFAULT_TOKEN_PATH} (chart: pipelineUpload.kfpToken=true)"
        )
    code = f" (HTTP {status})" if status else ""
    return SubmitError(f"Kubeflow Pipelines refused to {action}{code}: {reason}{hint}")


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def _find_pipeline(client, name: str, namespace: str | None) -> str | None:
    # kfp.Client.get_pipeline_id lists shared pipelines only; a namespace needs the API call.
    kwargs = {"filter": _name_filter(name)}
    if namespace:
        kwargs["namespace"] = namespace
    found = client._pipelines_api.pipeline_service_list_pipelines(**kwargs).pipelines or []
    if len(found) > 1:
        raise SubmitError(f"{len(found)} pipelines are named {name!r}: delete all but one")
    return found[0].pipeline_id if found else None


def _find_version(client, pipeline_id: str, name: str) -> str | None:
    response = client.list_pipeline_versions(pipeline_id, page_size=2, filter=_name_filter(name))
    versions = response.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def upload(client, path: Path, name: str, namespace: str | None = None) -> Uploaded:
    """Uploads ``path`` as a version of pipeline ``name`` unless that version exists already.

    A new pipeline is created together with its first version (one API call), so every version
    of an aprflow pipeline, the first included, carries a content-hash name.
    """
    import kfp_server_api

    version = version_name(name, path)
    try:
        pipeline_id = _find_pipeline(client, name, namespace)
        if pipeline_id is not None:
            version_id = _find_version(client, pipeline_id, version)
            if version_id is not None:
                return Uploaded(name, pipeline_id, version, version_id, created=False)
            response = client.upload_pipeline_version(
                str(path), version, pipeline_id=pipeline_id, description=f"aprflow {path.name}"
            )
            return Uploaded(name, pipeline_id, version, response.pipeline_version_id, True)
        spec = yaml.safe_load_all(path.read_text())
        pipeline_spec, *platform = list(spec)
        body = kfp_server_api.V2beta1CreatePipelineAndVersionRequest(
            pipeline=kfp_server_api.V2beta1Pipeline(
                display_name=name,
                description=pipeline_spec.get("pipelineInfo", {}).get("description"),
                namespace=namespace,
            ),
            pipeline_version=kfp_server_api.V2beta1PipelineVersion(
                display_name=version,
                description=f"aprflow {path.name}",
                # A compiled file with a platform spec is uploaded as both documents.
                pipeline_spec={"pipeline_spec": pipeline_spec, "platform_spec": platform[0]}
                if platform
                else pipeline_spec,
            ),
        )
        created = client._pipelines_api.pipeline_service_create_pipeline_and_version(body)
        # The call answers with the pipeline only; its first version is found by name.
        version_id = _find_version(client, created.pipeline_id, version)
    except kfp_server_api.ApiException as e:
        raise _api_error(f"upload {path.name} as {name}", e) from None
    if version_id is None:
        raise SubmitError(
            f"Kubeflow Pipelines created pipeline {name} but lists no version {version}"
        )
    return Uploaded(name, created.pipeline_id, version, version_id, created=True)


def compiled_files(paths: list[str]) -> list[Path]:
    """The ``*.yaml`` files named by ``paths`` (files, or folders of them); default: compiled/."""
    files: list[Path] = []
    for raw in paths or [str(COMPILED_DIR)]:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                raise SubmitError(f"{path} holds no compiled pipeline (*.yaml)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SubmitError(f"{path}: no such file or folder")
    return files


# Run parameters that name Kubernetes objects in the run's namespace (DNS-1123 subdomains).
OBJECT_NAME_PARAMETERS = ("s3_secret", "launcher_config_map")
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def run_arguments(pipeline_key: str, config: str | None, overrides: list[str]) -> dict[str, Any]:
    """The run's parameters: the pipeline's defaults < ``config`` < ``--set`` (type-checked).

    Raises:
        ConfigError: for an unknown key or a wrong type (pipelines.config).
        SubmitError: for a Secret/ConfigMap name Kubernetes would reject.
    """
    from pipelines.config import load_config, parse_overrides
    from pipelines.registry import PIPELINES

    arguments = load_config(PIPELINES[pipeline_key], config, parse_overrides(overrides))
    for key in OBJECT_NAME_PARAMETERS:
        value = arguments.get(key)
        if value is not None and (len(value) > 253 or not _OBJECT_NAME.match(value)):
            raise SubmitError(
                f"{key}={value!r} is not a Kubernetes object name (lower-case letters, digits, "
                "'-' and '.'), e.g. s3_secret=aprflow-s3"
            )
    return arguments


def preflight(pipeline_key: str, arguments: dict[str, Any]) -> None:
    """The checks of ``aprflow run`` that hold for a cluster run (pipelines.preflight).

    Raises:
        AprflowError: for an argument the run could not work with, as ``aprflow run`` says it.
    """
    if pipeline_key == "apr-study":
        from pipelines.preflight import check_study

        check_study(arguments, local=False)
    elif pipeline_key == "apr-predict":
        from pipelines.predict_preflight import check_predict

        check_predict(arguments, local=False)
    elif pipeline_key == "transfer-study":
        from pipelines.transfer_preflight import check_transfer

        check_transfer(arguments, local=False)
    elif pipeline_key == "seed-study":
        from pipelines.seed_preflight import check_seed_study

        check_seed_study(arguments, local=False)
    elif pipeline_key == "class-count":
        from pipelines.class_count_preflight import check_class_count

        check_class_count(arguments, local=False)
    elif pipeline_key == "pretrain-factors":
        from pipelines.pretrain_preflight import check_pretrain_factors

        check_pretrain_factors(arguments, local=False)


def submit(
    client,
    uploaded: Uploaded,
    arguments: dict[str, Any],
    experiment: str,
    namespace: str | None = None,
    service_account: str | None = None,
    run_name: str | None = None,
) -> str:
    """Starts a run of the ``uploaded`` pipeline version and returns its run id.

    ``kfp.Client.run_pipeline`` with ``pipeline_id`` and ``version_id`` (kubeflow/pipelines
    sdk/python/kfp/client/client.py at kfp 2.17.0: ``run_pipeline``, line 679, whose
    ``_create_job_config`` sets the run's ``pipeline_version_reference``, line 973) creates a
    run that the Kubeflow UI links to that version; ``create_run_from_pipeline_package`` would
    send the spec inline with every run, linked to no pipeline.
    """
    import kfp_server_api

    run_name = run_name or f"{uploaded.version_name} {datetime.datetime.now():%Y-%m-%d %H-%M-%S}"
    try:
        experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            params=arguments,
            pipeline_id=uploaded.pipeline_id,
            version_id=uploaded.version_id,
            service_account=service_account,
        )
    except kfp_server_api.ApiException as e:
        raise _api_error(f"start a run of {uploaded.version_name}", e) from None
    return run.run_id


def build_upload_parser() -> argparse.ArgumentParser:
    """The parser of ``aprflow upload``."""
    parser = argparse.ArgumentParser(
        prog="aprflow upload",
        description="Upload compiled pipelines to Kubeflow Pipelines. Each version is named by "
        "the content hash of its YAML: uploading the same file again creates nothing.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="FILE_OR_DIR",
        help=f"compiled pipeline files or folders (default {COMPILED_DIR})",
    )
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="pipeline name prefix")
    _add_connection_arguments(parser)
    add_common_options(parser, json_output=True)
    return parser


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        help=f"Kubeflow Pipelines API, e.g. http://localhost:8888 (default ${HOST_ENV})",
    )
    parser.add_argument(
        "--namespace",
        help="profile namespace of multi-user Kubeflow; without it, pipelines are uploaded "
        "as shared ones and runs go to kfp.Client's default namespace 'kubeflow'",
    )


def build_submit_parser() -> argparse.ArgumentParser:
    """The parser of ``aprflow submit``; its help lists every pipeline's parameters (made when
    the help is shown: it imports the pipelines)."""
    from pipelines.config import ParametersParser, add_config_options
    from pipelines.names import PIPELINE_NAMES

    parser = ParametersParser(
        prog="aprflow submit",
        description="Check a study's arguments, upload its compiled pipeline (as aprflow "
        "upload does) and start a run of that pipeline version on Kubeflow Pipelines. Prints "
        "the run id.",
        pipelines=PIPELINE_NAMES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pipeline", choices=PIPELINE_NAMES, help="pipeline (study) to run")
    parser.add_argument("--experiment", default="aprflow", help="KFP experiment (default aprflow)")
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"pipeline name prefix, as for aprflow upload (default {DEFAULT_PREFIX})",
    )
    parser.add_argument("--run-name", help="run name shown in the Kubeflow UI")
    parser.add_argument(
        "--service-account",
        help="Kubernetes ServiceAccount the run's pods use (default: the KFP runner account); "
        "e.g. one annotated for IRSA / workload identity",
    )
    add_config_options(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the run's arguments, contact nothing"
    )
    _add_connection_arguments(parser)
    add_common_options(parser, json_output=True)
    return parser


def _upload(args: argparse.Namespace) -> int:
    files = compiled_files(args.paths)
    client = connect(args.host, args.namespace, discover_token())
    results, lines = [], []
    for path in files:
        result = upload(client, path, pipeline_name_of(path, args.prefix), args.namespace)
        state = "uploaded" if result.created else "unchanged, already uploaded"
        lines.append(
            f"{path.name}: pipeline {result.pipeline_name} version {result.version_name} ({state})"
        )
        results.append({"file": str(path), **asdict(result)})
    print_result(args, results, text="\n".join(lines))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from pipelines.cli import compiled_path

    arguments = run_arguments(args.pipeline, args.config, args.overrides)
    if args.print_config:
        from pipelines.config import print_config
        from pipelines.registry import PIPELINES

        print_config(args, PIPELINES[args.pipeline], arguments)
        return 0
    preflight(args.pipeline, arguments)
    if "task_cpu" in arguments:
        from pipelines.sweep import scaled_task_cpu

        arguments["task_cpu"] = scaled_task_cpu(arguments)
    if args.dry_run:
        # The run's parameters as Kubeflow receives them: JSON by nature.
        print_result(args, dict(sorted(arguments.items())))
        return 0
    path = compiled_path(args.pipeline)
    client = connect(args.host, args.namespace, discover_token())
    uploaded = upload(client, path, pipeline_name_of(path, args.prefix), args.namespace)
    run_id = submit(
        client,
        uploaded,
        arguments,
        args.experiment,
        args.namespace,
        args.service_account,
        args.run_name,
    )
    print_result(
        args,
        {
            "run_id": run_id,
            "pipeline": uploaded.pipeline_name,
            "version": uploaded.version_name,
            "experiment": args.experiment,
        },
        text=f"run {run_id} of pipeline {uploaded.pipeline_name} version "
        f"{uploaded.version_name} started in experiment {args.experiment}",
    )
    return 0


def upload_main(argv: list[str] | None = None) -> int:
    """``aprflow upload``."""
    return run_cli(build_upload_parser(), _upload, argv)


def submit_main(argv: list[str] | None = None) -> int:
    """``aprflow submit``."""
    return run_cli(build_submit_parser(), _submit, argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.submit upload ...`` (the chart's upload Job, in the upload image):
    the same as ``aprflow upload ...`` (and ``... submit ...``)."""
    from pipelines.cli import main as aprflow

    return aprflow(argv)


if __name__ == "__main__":
    sys.exit(main())
