"""Multi-node trials: one Kubeflow Trainer v2 TrainJob per trial (see README.md)."""
