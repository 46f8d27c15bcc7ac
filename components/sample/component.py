"""KFP component: sample architectures of a design space inside a FLOP band."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def sample_architectures(
    space: str,
    n_models: int,
    flops_min: float,
    flops_max: float,
    seed: int,
    specs: Output[Dataset],
):
    """Samples ``n_models`` unique architectures with FLOPs (at 224x224) in the band.

    Args:
        space: design space name (anynetx_a ... anynetx_e, regnet).
        n_models: how many architectures.
        flops_min, flops_max: the FLOP band in multiply-adds.
        seed: sampling seed (the same seed gives the same architectures).
        specs: JSONL, one spec with its complexity per line; the rejection statistics are in
            the artifact's metadata.
    """
    from components.sample.samplers import sample_specs
    from components.sample.spec_io import write_specs_jsonl

    result = sample_specs(space, int(n_models), (float(flops_min), float(flops_max)), int(seed))
    write_specs_jsonl(specs.path, result.specs)
    specs.metadata.update(result.stats.to_dict())
