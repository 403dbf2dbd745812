"""Builds the Cython hot paths in core_ext/ (everything else is plain Python)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(f"core_ext.{pyx.stem}", [str(pyx)], extra_compile_args=["-O2"])
    for pyx in sorted(Path("core_ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
