"""KFP component: materialise (built-in) or look up (named builds) the study's datasets."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_datasets(
    datasets: list,
    resolution: int,
    seed: int,
    store_uri: str,
    refs: Output[Dataset],
    summary: Output[HTML],
    settings: dict = {},  # noqa: B006 - KFP reads the default
):
    """Writes each dataset's shards to the store (reusing existing ones) and their references.

    Args:
        datasets: built-in names (digits, faces, shapes) or names built with
            ``aprflow data build`` / ``aprflow data subset`` in the same store.
        resolution: training image side in pixels (datasets without their own setting).
        seed: generator and split seed of the built-in sets.
        store_uri: artifact store URI ('' = APRFLOW_STORE_URI or runs/store).
        refs: JSON list of dataset references (name, manifest key, content hash, classes).
        summary: each dataset's class histogram, sample grid and counts (Kubeflow UI).
        settings: per-dataset settings ``{NAME: {resolution, input, recipe, epochs}}``.
    """
    import json

    from components.data.datasets import prepare_all
    from components.data.summary import study_summary_html

    prepared = prepare_all(datasets, int(resolution), int(seed), store_uri or None, settings)
    with open(refs.path, "w") as f:
        json.dump([ref.to_dict() for ref in prepared], f)
    refs.metadata["datasets"] = {ref.name: ref.content_hash for ref in prepared}
    with open(summary.path, "w") as f:
        f.write(study_summary_html(prepared, store_uri or None))
