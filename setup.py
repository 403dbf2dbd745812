"""Builds the Cython hot paths in core_ext/ (everything else is plain Python)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(f"core_ext.{pyx.stem}", [str(pyx)], extra_compile_args=["-O2"])
    for pyx in sorted(Path("core_ext").glob("*.pyx"))
]

setup(
    # The console's static pages, for non-editable installs (signaling.app.find_web_dir looks here).
    data_files=[("share/goldentime/web", sorted(str(p) for p in Path("web").glob("*") if p.is_file()))],
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
