"""The container images the KFP components run in (built from ``images/``, see its README).

Every component sets ``base_image`` explicitly: our image has the aprflow package installed,
so component bodies import it and no packages are installed at run time.
"""

REGISTRY = "ghcr.io/aprflow"
VERSION = "0.1.0"
CPU_IMAGE = f"{REGISTRY}/aprflow-cpu:{VERSION}"
GPU_IMAGE = f"{REGISTRY}/aprflow-gpu:{VERSION}"
