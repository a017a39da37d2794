"""Builds the fast engine's C kernels (src/digitlab/engine/_kernels.c, _dense.c, _train.c, _deep.c) at install time.

Everything else about the package is in pyproject.toml. The kernels are a plain
shared library that `digitlab.engine.sparse` loads with ctypes (no Python C API),
compiled with portable flags: the AVX2 versions are chosen at run time. The
build is optional: without a C compiler the package still installs, and the
engine trains on its NumPy path and says so.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "digitlab.engine._kernels",
            sources=[
                "src/digitlab/engine/_kernels.c",
                "src/digitlab/engine/_dense.c",
                "src/digitlab/engine/_train.c",
                "src/digitlab/engine/_deep.c",
            ],
            depends=["src/digitlab/engine/_engine.h", "src/digitlab/engine/_threads.h"],
            extra_compile_args=["-O3", "-std=c99", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
