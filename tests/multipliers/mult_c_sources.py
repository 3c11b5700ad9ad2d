"""C and C++ functional models used by the from_c and cache tests (written for these tests)."""

from __future__ import annotations

from pathlib import Path

# Mitchell at MBITS fraction bits (7 unless -DMBITS=...), ApproxTrain style: the repository's
# examples/mitchell.c (pointer-cast type punning, fractions cut in place, a carry bumps the
# exponent), plus a second entry point with the same behaviour (a different `function` -> a new
# cache key).
MITCHELL_C = (
    Path(__file__).resolve().parents[2] / "examples" / "mitchell.c"
).read_text() + "\nfloat mitchell_mul_alias(float a, float b) { return mitchell_mul(a, b); }\n"

# MBM the way ApproxTrain's FPmultMBM_fast16 does it, in C++: a namespace, std:: helpers and
# an overload (the harness must pick the float one).
MBM_CC = r"""
#include <cstdint>
#include <cstring>

namespace approx {

inline std::uint32_t to_bits(float x) { std::uint32_t u; std::memcpy(&u, &x, sizeof u); return u; }
inline float from_bits(std::uint32_t u) { float x; std::memcpy(&x, &u, sizeof x); return x; }

double mbm_mul(double a, double b) { return a * b; }

float mbm_mul(float a, float b)
{
    const std::uint32_t ua = to_bits(a), ub = to_bits(b);
    const std::uint32_t sign = (ua ^ ub) & 0x80000000u;
    std::int32_t e = std::int32_t((ua >> 23) & 0xffu) + std::int32_t((ub >> 23) & 0xffu) - 127;
    const std::uint32_t fa = (ua & 0x7f0000u) | 0x10000u;   // top 7 bits, lowest kept forced 1
    const std::uint32_t fb = (ub & 0x7f0000u) | 0x10000u;
    const std::uint32_t s = fa + fb;
    const std::uint32_t c = (1u << 19) + (1u << 17);          // 2^-4 + 2^-6
    std::uint32_t frac;
    if (s < (1u << 23)) {
        std::uint32_t mant = (1u << 23) + s + c;
        if (mant >= (1u << 24)) { mant >>= 1; e += 1; }
        frac = mant & 0x7fffffu;
    } else {
        e += 1;
        const std::uint32_t low = s & 0x7fffffu;
        const std::uint32_t corrected = low + (c >> 1);
        frac = corrected >= (1u << 23) ? low : corrected;
    }
    return from_bits((sign | (std::uint32_t(e) << 23) | frac) & 0xffff0000u);
}

}  // namespace approx
"""

# Exact product of operands truncated to M fraction bits, as a C++ template in an .inl file.
TRUNC_INL = r"""
#include <cstdint>
#include <cstring>

template <int M>
static float keep_top_bits(float x)
{
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    u &= ~((std::uint32_t(1) << (23 - M)) - 1u);
    std::memcpy(&x, &u, sizeof x);
    return x;
}

template <int M>
float trunc_mul_t(float a, float b) { return keep_top_bits<M>(a) * keep_top_bits<M>(b); }

float trunc_mul5(float a, float b) { return trunc_mul_t<5>(a, b); }
"""

# bfloat16 unit: inputs and product rounded to nearest-even bfloat16 (needs rounding="nearest").
BF16_C = r"""
#include <stdint.h>
#include <string.h>

static float round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

float bf16_mul(float a, float b) { return round_bf16(round_bf16(a) * round_bf16(b)); }
"""

# Not decomposable at any M: the exact float32 product sees all 23 fraction bits.
EXACT_C = "float exact_mul(float a, float b) { return a * b; }\n"

# Not decomposable: correct truncation product on the grid (exponent 0), but it changes with
# the operand's exponent.
EXPONENT_DEPENDENT_C = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

static float cut7(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

float odd_mul(float a, float b)
{
    float p = cut7(a) * cut7(b);
    return fabsf(a) >= 1024.0f ? p * 1.5f : p;
}
"""

BROKEN_C = r"""
float broken_mul(float a, float b)
{
    return a * ;
}
"""

DOUBLE_C = "double dmul(double a, double b) { return a * b; }\n"
DOUBLE_CC = "namespace n { double dmul(double a, double b) { return a * b; } }\n"

CUDA_QUALIFIED_C = r"""
#include <stdint.h>
__device__ float cuda_trunc_mul(float a, float b)
{
    uint32_t ua = *(uint32_t *)&a & 0xffff0000u, ub = *(uint32_t *)&b & 0xffff0000u;
    return *(float *)&ua * *(float *)&ub;
}
"""

CUDA_QUALIFIED_CC = r"""
#include <cstdint>
#include <cstring>
__host__ __device__ __forceinline__ float cut(float x)
{
    std::uint32_t u; std::memcpy(&u, &x, 4); u &= 0xffff0000u; std::memcpy(&x, &u, 4); return x;
}
__host__ __device__ float cuda_trunc_mul(float a, float b) { return cut(a) * cut(b); }
"""

# A plain C file using CUDA's __forceinline__ on the model function itself (ApproxTrain style).
CUDA_FORCEINLINE_C = r"""
#include <stdint.h>
__device__ __forceinline__ float cuda_trunc_mul(float a, float b)
{
    uint32_t ua = *(uint32_t *)&a & 0xffff0000u, ub = *(uint32_t *)&b & 0xffff0000u;
    return *(float *)&ua * *(float *)&ub;
}
"""

# Declared, never defined.
DECLARED_ONLY_C = "float ghost_mul(float a, float b);\n"

# Returns zero: an invalid LUT (entries must be positive normal floats).
ZERO_C = "float zero_mul(float a, float b) { (void)a; (void)b; return 0.0f; }\n"
