"""Training recipes as YAML files, one per recipe (``<name>.yaml``); read by
:mod:`components.train.recipes`, listed by ``aprflow recipes``. A data package: no code."""
