"""aprflow's Kubeflow Pipelines components: one sub-package per component.

Each sub-package holds a thin ``component.py`` (the ``@dsl.component`` definitions) and plain,
importable implementation modules with a CLI (``python -m components.<name> --help``).
"""
