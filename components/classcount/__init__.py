"""The class-count study: class subsets of one dataset made inside the pipeline, and the
analysis of how the architecture ranking on them follows the full set's (ImageNet-X)."""
