"""KFP component: materialise the study's datasets in the artifact store."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_datasets(
    datasets: list,
    resolution: int,
    seed: int,
    store_uri: str,
    refs: Output[Dataset],
):
    """Writes each dataset's shards to the store (reusing existing ones) and their references.

    Args:
        datasets: built-in dataset names.
        resolution: image side in pixels.
        seed: generator and split seed.
        store_uri: artifact store URI ('' = APRFLOW_STORE_URI or runs/store).
        refs: JSON list of dataset references (name, manifest key, content hash, classes).
    """
    import json

    from components.data.datasets import prepare_all

    prepared = prepare_all(datasets, int(resolution), int(seed), store_uri or None)
    with open(refs.path, "w") as f:
        json.dump([ref.to_dict() for ref in prepared], f)
    refs.metadata["datasets"] = {ref.name: ref.content_hash for ref in prepared}
