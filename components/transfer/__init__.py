"""The transfer component: how well do pretrained backbones transfer to other datasets?

Fixed-feature evaluations of a backbone (one of our trained trials or any timm model): cosine
kNN (top-1 and top-5 fraction, SEEDS 002) and a Kornblith-style linear probe (L-BFGS logistic
regression on penultimate-layer features, SEEDS 003). Importing this package is cheap (no
torch); the implementation lives in ``features``, ``knn``, ``linear_probe`` and ``run``.
"""
