"""The transfer component: how well do pretrained backbones transfer to other datasets?

Fixed-feature evaluations of a backbone (one of our trained trials or any timm model): cosine
kNN (top-1 and top-5 fraction, as in the kNN ranking of pretrained timm backbones by the
cosine similarity of their embeddings) and a Kornblith-style linear probe (L-BFGS logistic
regression on penultimate-layer features; Kornblith, Shlens, Le 2019, arXiv 1805.08974).
Importing this package is cheap (no torch); the implementation lives in ``features``, ``knn``,
``linear_probe`` and ``run``.
"""
