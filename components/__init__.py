"""aprflow's Kubeflow Pipelines components: one sub-package per component.

Each sub-package holds a thin ``component.py`` (the ``@dsl.component`` definitions) and plain,
importable implementation modules with a CLI (``python -m components.<name> --help``).
"""

import atexit
import gc

# Every task is a process that exits when its work is done. At exit the interpreter's last
# garbage collections walk every object torch, timm and MLflow created: 1-2 s per task on a
# 2-core machine, seconds of every study spent after the work. Freezing them first skips
# those walks (Python docs, gc.freeze); the atexit handlers (MLflow's, logging's) still run
# and the exit status is unchanged.
atexit.register(gc.freeze)
