"""Builds the optional bf16x3 matmul kernels (``vocos_core._bf16x3``); all other metadata is in pyproject.toml.

The extension is optional: without a C compiler with OpenMP, or on another platform, the package
installs without it and every matmul runs in PyTorch (``vocos_core.bf16x3.unsupported_reason`` says why).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vocos_core._bf16x3",
            sources=["vocos_core/csrc/bf16x3.c"],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    ]
)
