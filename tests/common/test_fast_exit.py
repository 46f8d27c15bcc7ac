"""A task's process exits without the interpreter's last walks over its objects
(``components/__init__.py`` freezes them at exit), and still runs its atexit handlers."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A reference cycle with a finaliser, left for the garbage collector at exit: the final
# collections of an interpreter's shutdown find it, unless the objects were frozen.
SCRIPT = """
{setup}
import atexit
class Cycle:
    def __del__(self):
        print("cycle collected at exit", flush=True)
cycle = Cycle()
cycle.itself = cycle
del cycle
atexit.register(lambda: print("atexit handler ran", flush=True))
"""


def _run(setup: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(setup=setup)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_plain_interpreter_collects_the_cycle_at_exit():
    # The control: without the freeze the shutdown's collections walk (and find) the cycle.
    assert _run("pass").splitlines() == ["atexit handler ran", "cycle collected at exit"]


@pytest.mark.parametrize("package", ["components", "components.common.progress"])
def test_importing_components_skips_the_final_collections(package):
    assert _run(f"import {package}").splitlines() == ["atexit handler ran"]
