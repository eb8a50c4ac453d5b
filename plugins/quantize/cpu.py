"""Whether this machine's int8 kernels saturate: onnxruntime's U8S8 path on an x86-64 CPU without VNNI.

On AVX2 / AVX-512 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW,
which sums pairs of products into int16 with saturation; full-range 8-bit weights overflow it and a quantized
model comes out far from its float original (onnxruntime's quantization guide: try ``reduce_range``, 7-bit
weights, which cannot overflow). VNNI (``avx512_vnni``, ``avx_vnni``) and AMX accumulate in int32 and do not
saturate; nor do ARM's kernels. Written here: onnxruntime exposes no query for the kernel it will pick, so the
CPU flags Linux lists in /proc/cpuinfo decide; an x86-64 CPU whose flags cannot be read is taken to saturate
(7-bit weights are safe on every CPU, full range is not).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

_X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
_NON_SATURATING = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def _flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


@functools.cache
def int8_saturates(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """True where onnxruntime's U8S8 int8 kernels saturate (x86 without VNNI); the arguments default to this
    machine's (``platform.machine()``, /proc/cpuinfo)."""
    if (machine or platform.machine()).lower() not in _X86:
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    return not (_flags(cpuinfo) & _NON_SATURATING)
