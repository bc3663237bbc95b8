from setuptools import setup

# Everything else is in pyproject.toml; this file only exists because cffi's
# build hook is a setup() keyword.
setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
