"""The pretraining-factors study (Huh et al.): variants of a source made inside the pipeline,
the transfer of every pretrained model, and the analysis of which choices matter."""
