"""Approximate ops: ``matmul`` and ``mul`` as torch.library custom ops, with their kernels.

Importing this package registers the ops; kernels compile (Numba, Triton) on first use.
"""

from approxsim.ops.matmul import PassMultipliers, matmul, mul, resolve_passes

__all__ = ["matmul", "mul", "PassMultipliers", "resolve_passes"]
