"""The names of the pipelines aprflow ships, without importing them.

The command line needs the names to build its parser; importing the pipelines themselves
(kfp and every component) would cost ``aprflow --help`` seconds. ``pipelines.registry`` maps
the same names to the pipeline functions, and a test checks that both agree.
"""

PIPELINE_NAMES = (
    "apr-study",
    "transfer-study",
    "apr-predict",
    "seed-study",
    "class-count",
    "pretrain-factors",
)
# Pipelines whose preflight and report copy `aprflow run` knows.
LOCAL_PIPELINES = (
    "apr-study",
    "apr-predict",
    "transfer-study",
    "seed-study",
    "class-count",
    "pretrain-factors",
)
