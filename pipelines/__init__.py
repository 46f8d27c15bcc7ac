"""aprflow's Kubeflow pipelines (one module per study), their configs and the ``aprflow`` CLI."""
