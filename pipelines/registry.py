"""The pipelines aprflow ships, by the name used on the command line and in compiled/.

``PIPELINES`` is a read-only mapping that imports a pipeline's module on first lookup:
``@dsl.pipeline`` builds the whole graph when its module is imported (seconds each), and a
command needs one pipeline, so ``aprflow run apr-study`` does not pay for the transfer study.
"""

import importlib
from collections.abc import Callable, Iterator, Mapping

# name -> (module, attribute) of the ``@dsl.pipeline`` object.
_LOCATIONS = {
    "apr-study": ("pipelines.apr_study", "apr_study"),
    "transfer-study": ("pipelines.transfer_study", "transfer_study"),
    "apr-predict": ("pipelines.apr_predict", "apr_predict"),
    "seed-study": ("pipelines.seed_study", "seed_study"),
    "class-count": ("pipelines.class_count", "class_count"),
    "pretrain-factors": ("pipelines.pretrain_factors", "pretrain_factors"),
}


class _Pipelines(Mapping[str, Callable]):
    """Pipelines by name, each module imported when its pipeline is looked up."""

    def __getitem__(self, name: str) -> Callable:
        module, attribute = _LOCATIONS[name]
        return getattr(importlib.import_module(module), attribute)

    def __contains__(self, name: object) -> bool:
        return name in _LOCATIONS  # without importing (Mapping's version looks the item up)

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


PIPELINES: Mapping[str, Callable] = _Pipelines()
