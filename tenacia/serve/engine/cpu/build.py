"""Compiling and loading one build of the CPU kernels (``kernels.py``) for one instruction set.

How: the C file is compiled once with the system C compiler (``$CC``, else ``cc``) into
``<cache_root()>/kernels/`` keyed by a hash of its source, flags and compiler, then loaded with
``ctypes``. It uses OpenMP and must share torch's runtime (torch's own ``libgomp.so.1`` is
already loaded, so the loader resolves to it); if two OpenMP runtimes end up mapped, or the CPU
lacks the instruction set, or there is no OpenMP build of torch or no compiler, ``kernels.choose`` says
why and the engine keeps torch's ops and MKL.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import torch

from ....device import cpu_features
from ....storage import atomic_write, cache_root

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("kernels_avx512.c")
VEC_SOURCE = Path(__file__).with_name("kernels_vec.c")
# every C file of this folder: the two sources and what they include (the build's cache key reads them all)
C_SOURCES = tuple(sorted(Path(__file__).parent.glob("*.c")))

COMMON = ["-O3", "-fopenmp", "-fPIC", "-shared"]
# instruction set -> (source, compiler flags, the cpu_features words it needs); best first
BUILDS: dict[str, tuple[Path, list[str], tuple[str, ...]]] = {
    "avx512": (SOURCE, ["-mavx512f", "-mfma"], ("avx512f", "fma")),
    "avx2": (VEC_SOURCE, ["-DVEC=8", "-mavx2", "-mfma"], ("avx2", "fma")),
    "generic": (VEC_SOURCE, ["-DVEC=4"], ()),
}
ISAS = tuple(BUILDS)
ISA_ENV = "TENACIA_ISA"

class Unavailable(RuntimeError):
    pass


def _openmp_runtimes() -> set[str]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return set()
    names = ("libgomp", "libiomp", "libomp")
    return {line.split()[-1] for line in maps.splitlines() if any(n in line.rsplit("/", 1)[-1] for n in names)}


def compile_library(cc: str, isa: str = "avx512", extra: tuple[str, ...] = ()) -> Path:
    """The cached build of ``isa``'s kernels; ``extra``: more compiler flags (``-D`` settings tried
    by ``bench/decode_stack_ab.py``)."""
    source, flags, _ = BUILDS[isa]
    flags = COMMON + flags + list(extra)
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    text = b"".join(p.read_bytes() for p in C_SOURCES)
    key = hashlib.sha256(text + " ".join(flags).encode() + version.encode()).hexdigest()[:16]
    out = cache_root() / "kernels" / f"decode_kernels-{isa}-{key}.so"
    if out.exists():
        return out

    def build(tmp: Path) -> None:
        done = subprocess.run([cc, *flags, str(source), "-o", str(tmp)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise Unavailable(f"{cc} failed to build {source.name} for {isa}: {done.stderr.strip()[-500:]}")

    atomic_write(out, build)  # a concurrent build of the same key writes the same bytes
    return out


def load_library(cc: str, isa: str = "avx512") -> ctypes.CDLL:
    """Load the cached build, or build it. A cached file that does not load (truncated by a full
    disk, a crash mid-copy on a filesystem without atomic rename) is removed and built again once."""
    path = compile_library(cc, isa)
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        log.warning("cached %s does not load (%s); building it again", path, e)
        path.unlink(missing_ok=True)
        return ctypes.CDLL(str(compile_library(cc, isa)))


def missing(isa: str) -> str | None:
    """Why this CPU cannot run ``isa``'s build (None if it can)."""
    lacks = [word for word in BUILDS[isa][2] if word not in cpu_features()]
    return f"this CPU has no {', '.join(lacks)} for the {isa} kernels" if lacks else None


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Give ``lib``'s functions (any build of the kernels) their C argument types; returns it."""
    lib.tenacia_small_gemm_pack.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
    lib.tenacia_small_gemm_pack.restype = None
    lib.tenacia_small_gemm.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.tenacia_small_gemm.restype = None
    lib.tenacia_gemm_rows.argtypes, lib.tenacia_gemm_rows.restype = lib.tenacia_small_gemm.argtypes, None
    p, i, f = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
    t = ctypes.c_int
    for name, args in (("tenacia_add_rms_norm", [p, p, p, f, p, i, i, t]), ("tenacia_rotary", [p, i, i, i, i, p, p, t]),
                       ("tenacia_silu_mul", [p, p, i, i, i, p, t]),
                       ("tenacia_decode_attention", [p, i, p, p, i, p, i, i, i, i, f, p, ctypes.c_int]),
                       ("tenacia_store_kv", [p, p, i, i, i, i, p, p, p, p, p, i, p]),
                       ("tenacia_decode_stack", [i, p, i, i, i, i, i, f, p, i, p, p, p, p, i, p, p, p, i, i, p, p, t])):
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, None
    lib.tenacia_decode_stack_scratch.argtypes, lib.tenacia_decode_stack_scratch.restype = [i] * 6, i
    lib.tenacia_prefill_attention.argtypes = [p, i, p, i, i, p, i, i, i, i, i, i, i, f, p, t]
    lib.tenacia_prefill_attention.restype = ctypes.c_int
    lib.tenacia_store_rows.argtypes, lib.tenacia_store_rows.restype = [p, i, i, i, p, i, p], i
    if hasattr(lib, "tenacia_argmax_rows"):  # a build from before greedy.c (bench/decode_stack_ab.py loads those)
        lib.tenacia_argmax_rows.argtypes, lib.tenacia_argmax_rows.restype = [p, i, i, i, p, t], i
    return lib


@functools.cache
def library(isa: str = "avx512") -> ctypes.CDLL | str:
    """The loaded kernels of ``isa``, or the reason they cannot be used."""
    try:
        if (why := missing(isa)) is not None:
            raise Unavailable(why)
        if not torch.backends.openmp.is_available():
            raise Unavailable("this torch build has no OpenMP")
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise Unavailable("no C compiler (set CC, or install gcc)")
        before = _openmp_runtimes()
        lib = load_library(cc, isa)
        if len(after := _openmp_runtimes()) > 1:
            raise Unavailable(f"two OpenMP runtimes would run side by side: {sorted(after)} (torch's: {sorted(before)})")
    except (Unavailable, OSError) as e:
        log.info("decode kernels unavailable, decoding with torch ops and MKL: %s", e)
        return str(e)
    return declare(lib)
