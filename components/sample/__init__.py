"""AnyNetX design space: network specs, analytic complexity, samplers and the model builder.

Importing this package is cheap (no torch). The torch model lives in
``components.sample.anynet``; import it explicitly to build models and to register the
``anynet*`` architectures with timm.
"""
