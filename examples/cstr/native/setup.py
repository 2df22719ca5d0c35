"""Build the CSTR sample's accelerator: one C extension module, ``_cstr_native``."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class _AlwaysCompile(build_ext):
    """``build_ext --force``: pip builds in this folder and would reuse ``build/``'s object.

    Setuptools only compares the C file's time with the object's, so a changed compile flag
    below would otherwise not take effect; one small file compiles in about a second.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        self.force = True


setup(
    cmdclass={"build_ext": _AlwaysCompile},
    ext_modules=[
        Extension(
            "_cstr_native",
            sources=["_cstr_native.c"],
            # Results must equal the pure-Python path bit for bit: IEEE semantics (no
            # -ffast-math) and no fused multiply-adds, which round once where Python rounds twice.
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"],
            libraries=["m"],
        )
    ],
)
