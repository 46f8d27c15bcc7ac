"""The container images the KFP components run in (built from ``images/`` by images/build.sh).

The names live in ``images.json`` beside this file (package data), the one place that both
the pipeline code and the image tests read. Every component sets ``base_image`` explicitly:
our image has the aprflow package installed, so component bodies import it and nothing is
installed at run time.
"""

import json
from pathlib import Path

_IMAGES = json.loads((Path(__file__).with_name("images.json")).read_text())
CPU_IMAGE: str = _IMAGES["cpu"]
GPU_IMAGE: str = _IMAGES["gpu"]
