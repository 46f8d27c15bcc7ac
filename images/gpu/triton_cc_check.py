"""GPU image build check: Triton can compile a C extension module in this image.

torch.compile on a GPU (recipes with ``compile_model=true``) runs Triton, which compiles its
CUDA launcher ``driver.c`` at first use (triton 3.8.0: ``CudaUtils`` in
triton/backends/nvidia/driver.py calls ``compile_module_from_src`` in triton/runtime/build.py,
whose ``_find_compiler`` takes $CC, else gcc, else clang, else raises "Failed to find C
compiler"). This script builds a minimal module through the same function, which needs no GPU:
a missing compiler, C headers or Python.h fails the image build instead of the first trial.

    python3 triton_cc_check.py
"""

from __future__ import annotations

import os
import sys
import tempfile

MODULE = "aprflow_cc_check"
SOURCE = f"""
#include <Python.h>
static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{MODULE}", NULL, -1, NULL}};
PyMODINIT_FUNC PyInit_{MODULE}(void) {{ return PyModule_Create(&module); }}
"""


def main() -> int:
    """Compiles and imports the module in a throw-away Triton cache; prints what it built."""
    with tempfile.TemporaryDirectory() as cache:
        # A fresh cache: the build really runs, and leaves nothing in the image's HOME.
        os.environ["TRITON_CACHE_DIR"] = cache
        from triton.runtime.build import compile_module_from_src

        module = compile_module_from_src(SOURCE, MODULE)
        print(f"triton compiled and imported {module.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
