"""Build the optional Cython hot paths; all other metadata lives in pyproject.toml.

Every ``ext/<name>.pyx`` becomes the extension module ``aigateway.hotpath.<name>``.
``AIGATEWAY_NO_EXTENSIONS=1`` builds none (the pure-Python twins are used instead) and
``AIGATEWAY_DEBUG_BUILD=1`` compiles without optimisation and with assertions enabled.
"""

import os
import pathlib
import shutil
import sys

from setuptools import Extension, setup


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "")
    return value not in ("", "0")


NO_EXTENSIONS = _env_flag("AIGATEWAY_NO_EXTENSIONS") or sys.implementation.name != "cpython"
DEBUG_BUILD = _env_flag("AIGATEWAY_DEBUG_BUILD")

if NO_EXTENSIONS:
    print("*********************\n* Pure Python build *\n*********************")
    ext_modules = []
else:
    from Cython.Build import cythonize

    # Cython looks up the declarations of module "aigateway.hotpath.X" as aigateway/hotpath/X.pxd
    # on its include path, not next to ext/X.pyx: mirror ext/*.pxd into such a tree under build/.
    include_root = pathlib.Path("build", "cython-include")
    pxd_dir = include_root / "aigateway" / "hotpath"
    pxd_dir.mkdir(parents=True, exist_ok=True)
    for pxd in pathlib.Path("ext").glob("*.pxd"):
        shutil.copy2(pxd, pxd_dir / pxd.name)

    if sys.platform == "win32":
        cflags = ["/Od"] if DEBUG_BUILD else ["/O2"]
    else:
        cflags = ["-O0", "-g3", "-UNDEBUG"] if DEBUG_BUILD else ["-O3"]
    ext_modules = cythonize(
        [
            Extension(f"aigateway.hotpath.{pyx.stem}", [pyx.as_posix()], extra_compile_args=cflags)
            for pyx in sorted(pathlib.Path("ext").glob("*.pyx"))
        ],
        include_path=[include_root.as_posix()],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )

setup(ext_modules=ext_modules)
