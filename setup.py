"""Builds hvsim's one native helper (src/hvsim/core/_native.c) with the system's C compiler."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("hvsim.core._native", ["src/hvsim/core/_native.c"], extra_compile_args=["-O2"])])
