"""Build the Cython extension modules of turboworkers.

The sources live in ``cext/turboworkers/``: ``_NAME.pyx`` beside its
``_NAME.pxd`` becomes the extension module ``turboworkers._NAME``. The folder
mirrors the package so that Cython finds each module's .pxd by its full name;
C declarations shared by several modules are in ``cext/includes/``.
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
    for pyx in sorted((CEXT / "turboworkers").glob("_*.pyx")):
        name = pyx.stem[1:]
        if only and name not in only:
            continue
        exts.append(Extension(
            "turboworkers." + pyx.stem,
            [str(pyx.relative_to(HERE))],
            include_dirs=[str(CEXT / "includes")],
            # C headers: a change recompiles every module
            depends=[str(h.relative_to(HERE)) for h in sorted((CEXT / "includes").glob("*.h"))],
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
