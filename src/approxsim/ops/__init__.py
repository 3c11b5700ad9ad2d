"""Approximate ops: ``matmul`` and ``mul`` as torch.library custom ops, with their kernels.

Importing this package registers the ops; kernels compile (C++, Numba, Triton) on first use.

Layout: :mod:`.matmul` (the ops, autograd and the public entry points), :mod:`.intmatmul`
(the integer op ``approxsim::int_lut_bmm`` and :func:`int_matmul`, which ``matmul`` calls for
an integer multiplier; its kernels are ``_int_cpu`` + ``_int_kernel.cc`` and ``_int_triton``),
:mod:`.reference` (the pure-torch specification), :mod:`.conv` (convolution lowering: patch
matrices, their adjoints, chunking), and the float kernels — ``_cpu`` (CPU dispatcher),
``_cpu_native`` (compiled C++), ``_numba``, ``_triton`` (GPU) — with their shared
``_threads``, ``_scratch``, ``_tiling`` and ``_ranges`` helpers. The number format they all
follow is :mod:`approxsim.multipliers.numformat`.
"""

from approxsim.ops._scratch import release_kept_memory
from approxsim.ops.conv import conv_out_size, im2col_conv2d
from approxsim.ops.intmatmul import IntMultiplierLike, int_matmul
from approxsim.ops.matmul import PassMultipliers, matmul, mul, resolve_passes

__all__ = [
    "matmul",
    "mul",
    "int_matmul",
    "IntMultiplierLike",
    "PassMultipliers",
    "resolve_passes",
    "im2col_conv2d",
    "conv_out_size",
    "release_kept_memory",
]
