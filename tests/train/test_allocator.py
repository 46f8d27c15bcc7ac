"""The trainer's glibc allocator tuning: a step's freed CPU tensors are reused, not page-faulted
in again (``components.train.trial._configure_host``)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

# Training steps of a small AnyNet on the CPU; prints the minor page faults of the last 5.
PROBE = """
import resource, torch
from components.sample.anynet import AnyNet
from components.sample.space import REFERENCE_SPECS
from components.train.trial import _configure_host
_configure_host()
torch.set_num_threads(2)
model = AnyNet(REFERENCE_SPECS["regnetx_400mf"])
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(tuning: str) -> int:
    env = os.environ | {
        "APRFLOW_MALLOC_TUNING": tuning,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_tensors_are_reused_without_page_faults():
    default = _faults("0")
    assert default > 5000  # glibc's defaults: each step's activations are faulted in anew
    assert _faults("1") < default / 20
