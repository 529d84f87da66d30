"""The vector kernels (``kernels_vec.c``) checked by a C program against double-precision
references (``kernels_check.c``), with no Python in between: every build this CPU runs, and the
generic build cross-compiled for aarch64 (NEON) and run under qemu-user where Debian's
``gcc-aarch64-linux-gnu`` and ``qemu-user`` are installed (``.ci/run`` installs them as root)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tenacia.serve.engine.cpu import kernels

from ..conftest import needs_cc

CHECK = Path(__file__).with_name("kernels_check.c")
CROSS_CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
cross = pytest.mark.skipif(not (shutil.which(CROSS_CC) and shutil.which(QEMU) and SYSROOT.is_dir()),
                           reason=f"needs Debian's {CROSS_CC} (gcc-aarch64-linux-gnu) and {QEMU} (qemu-user)")


def build(cc: str, isa: str, out: Path) -> Path:
    source, flags, _ = kernels.BUILDS[isa]
    subprocess.run([cc, "-O3", "-fopenmp", *flags, f"-I{source.parent}", str(CHECK), "-lm", "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out


def run_checks(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "all checks passed" in done.stdout, done.stdout + done.stderr
    return done.stdout


@needs_cc
@pytest.mark.parametrize("isa", [pytest.param("avx2", marks=pytest.mark.avx2), "generic"])
def test_the_vector_kernels_pass_their_c_checks_on_this_cpu(isa, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    out = run_checks([str(build(cc, isa, tmp_path / f"check-{isa}"))])
    assert f"VEC {8 if isa == 'avx2' else 4}" in out


@cross
def test_the_generic_kernels_pass_their_c_checks_on_aarch64_under_qemu(tmp_path):
    binary = build(CROSS_CC, "generic", tmp_path / "check-aarch64")
    arch = subprocess.run(["file", str(binary)], capture_output=True, text=True).stdout if shutil.which("file") else ""
    assert not arch or "aarch64" in arch or "ARM aarch64" in arch, arch
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:  # the compiler vectorised with NEON: fused multiply-adds on four floats at once
        disassembly = subprocess.run([objdump, "-d", str(binary)], capture_output=True, text=True).stdout
        assert "fmla\tv" in disassembly and ".4s" in disassembly
    run_checks([QEMU, "-L", str(SYSROOT), str(binary)])
