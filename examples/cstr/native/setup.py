"""Build the CSTR sample's accelerator: one C extension module, ``_cstr_native``."""

from setuptools import Extension, setup

setup(
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
