"""The container images the KFP components run in (built from ``images/`` by images/build.sh).

The names live in ``images.json`` beside this file (package data), the one place that both
the pipeline code and the image tests read. Every component sets ``base_image`` explicitly:
our image has the aprflow package installed, so component bodies import it and nothing is
installed at run time.

``images/build.sh`` rewrites ``images.json`` (``python -m components.common.images set --cpu REF
--gpu REF``) with the references it builds, by tag before the build and by digest after a push,
then recompiles ``pipelines/compiled/`` so the uploaded pipelines name exactly those images.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from components.common.files import atomic_write_text

IMAGES_JSON = Path(__file__).with_name("images.json")
KINDS = ("cpu", "gpu")
# registry[:port]/path/name followed by :tag, @sha256:digest, or both (lower-case path, as OCI
# requires); enough to reject the common mistakes (spaces, a missing tag, upper case).
_REFERENCE = re.compile(
    r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)

_IMAGES = json.loads(IMAGES_JSON.read_text())
CPU_IMAGE: str = _IMAGES["cpu"]
GPU_IMAGE: str = _IMAGES["gpu"]


def check_reference(reference: str) -> str:
    """Returns ``reference`` if it is a full image reference with a tag or digest.

    Raises:
        ValueError: naming the reference and the expected form.
    """
    if not _REFERENCE.match(reference) or not re.search(r"(:[^/]+|@sha256:.+)$", reference):
        raise ValueError(
            f"{reference!r} is not an image reference of the form "
            "REGISTRY/PATH/NAME:TAG or REGISTRY/PATH/NAME[:TAG]@sha256:DIGEST"
        )
    return reference


def write_images(cpu: str, gpu: str, path: Path = IMAGES_JSON) -> None:
    """Writes the references into ``images.json`` atomically (checked first)."""
    images = {"cpu": check_reference(cpu), "gpu": check_reference(gpu)}
    atomic_write_text(path, json.dumps(images) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m components.common.images show|set --cpu REF --gpu REF``."""
    parser = argparse.ArgumentParser(prog="python -m components.common.images")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="print images.json")
    set_ = commands.add_parser("set", help="write the image references into images.json")
    set_.add_argument("--cpu", required=True, help="CPU image reference")
    set_.add_argument("--gpu", required=True, help="GPU image reference")
    args = parser.parse_args(argv)
    if args.command == "show":
        print(IMAGES_JSON.read_text().strip())
        return 0
    try:
        write_images(args.cpu, args.gpu)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {IMAGES_JSON}: cpu={args.cpu} gpu={args.gpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
