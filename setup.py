"""Build the Cython extension modules of turboworkers.

Every ``cext/NAME.pyx`` becomes the extension module ``turboworkers._NAME``.
``TURBOWORKERS_BUILD_ONLY=name1,name2`` limits a build to some modules, which
keeps the edit-compile loop short while working on one of them.
"""
import os
import pathlib

from setuptools import Extension, setup

HERE = pathlib.Path(__file__).parent
CEXT = HERE / "cext"


def extensions():
    only = {n for n in os.environ.get("TURBOWORKERS_BUILD_ONLY", "").split(",") if n}
    exts = []
    for pyx in sorted(CEXT.glob("*.pyx")):
        if only and pyx.stem not in only:
            continue
        exts.append(Extension(
            "turboworkers._" + pyx.stem,
            [str(pyx.relative_to(HERE))],
            include_dirs=[str(CEXT), str(CEXT / "includes")],
            extra_compile_args=["-O2"],
        ))
    if not exts:
        return []
    from Cython.Build import cythonize
    return cythonize(
        exts,
        include_path=[str(CEXT)],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
