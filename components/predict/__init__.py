"""The predict component: which of my already-trained architectures will train best on a new
dataset, without training them all?

Cheap transfer scores of a trained population on the new target (kNN, linear probe, LogME,
LEEP, from ``components.transfer``) and the baselines "the source dataset's ranking" and
"random" predict the architectures' ranking on the target; ``k`` architectures chosen over the
predicted ranking are trained from scratch on the target (``components.train``), and each
predictor is scored against them (Kendall tau and weighted tau with bootstrap intervals,
regret, cost). Importing this package is cheap (no torch); the pure parts live in
``population``, ``predictors``, ``agreement`` and ``report``, the pipeline's steps in ``steps``.
"""
