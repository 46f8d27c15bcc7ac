"""KFP component: sample architectures of a design space inside a FLOP band."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def sample_architectures(
    space: str,
    n_models: int,
    flops_min: float,
    flops_max: float,
    seed: int,
    specs: Output[Dataset],
    population: Output[Markdown],
):
    """Samples ``n_models`` unique architectures with FLOPs (at 224x224) in the band.

    Args:
        space: design space name (anynetx_a ... anynetx_e, regnet).
        n_models: how many architectures (0: none, an empty file, for a study of named
            architectures only).
        flops_min, flops_max: the FLOP band in multiply-adds.
        seed: sampling seed (the same seed gives the same architectures).
        specs: JSONL, one spec with its complexity per line; the rejection statistics are in
            the artifact's metadata.
        population: what the study will train: a table of FLOPs, params, cumulative depth
            and width, b and g, and their histograms (for the Kubeflow UI).
    """
    import base64
    import tempfile
    from pathlib import Path

    from components.sample.samplers import sample_specs
    from components.sample.spec_io import write_specs_jsonl
    from components.sample.summary import write_summary

    if int(n_models) == 0:
        write_specs_jsonl(specs.path, [])
        Path(population.path).write_text("No architectures sampled (n_models = 0).\n")
        return
    result = sample_specs(space, int(n_models), (float(flops_min), float(flops_max)), int(seed))
    write_specs_jsonl(specs.path, result.specs)
    specs.metadata.update(result.stats.to_dict())
    with tempfile.TemporaryDirectory() as folder:
        _, table, histograms = write_summary(folder, result)
        picture = base64.b64encode(Path(histograms).read_bytes()).decode()
        text = f"{Path(table).read_text()}\n![histograms](data:image/png;base64,{picture})\n"
    Path(population.path).write_text(text)
