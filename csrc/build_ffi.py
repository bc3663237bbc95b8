"""cffi build script: compiles csrc/ into the private module ``ringbuf._rb``.

Out-of-line API mode.  The cdef is csrc/ringbuf_api.h itself, read here, so
that every declaration is written once: its ``#define NAME value`` lines
become ``#define NAME ...`` (cffi takes the value from the compiler, which
sees the real header), and its other preprocessor lines are dropped.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def api_cdef(path: str) -> str:
    """The declarations of ringbuf_api.h in the form cffi's cdef takes."""
    with open(path) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    lines = []
    for line in text.splitlines():
        define = re.match(r"\s*#\s*define\s+(\w+)\s+\S", line)
        if define:
            lines.append(f"#define {define.group(1)} ...")
        elif not line.lstrip().startswith("#"):
            lines.append(line)
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(api_cdef(os.path.join(HERE, "ringbuf_api.h")))
ffibuilder.set_source(
    "ringbuf._rb",
    '#include "ringbuf.h"',
    # setuptools wants source paths relative to setup.py.
    sources=["csrc/ringbuf.c"],
    include_dirs=[HERE],
    depends=[os.path.join("csrc", n) for n in ("ringbuf.h", "ringbuf_api.h", "futex.h")],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra"],
    libraries=["rt", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
