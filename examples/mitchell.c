/* Mitchell's logarithmic multiplier at MBITS fraction bits (7 unless -DMBITS=...), written the
 * way ApproxTrain's C models are: the operands' bits read through pointer casts, both fractions
 * cut to MBITS bits and added, a carry out of the fraction bumps the exponent. Valid for
 * normal operands whose product is in range; approxsim's edge rules cover the rest.
 * approxsim builds it bit-identical to its built-in `mitchell7`:
 *
 *   approxsim multipliers show --c examples/mitchell.c --function mitchell_mul --mantissa-bits 7
 *   approxsim bench direct --c examples/mitchell.c --function mitchell_mul --mantissa-bits 7
 */
#include <stdint.h>

#ifndef MBITS
#define MBITS 7
#endif

float mitchell_mul(float a, float b)
{
    uint32_t ua = *(uint32_t *)&a;
    uint32_t ub = *(uint32_t *)&b;
    uint32_t sign = (ua ^ ub) & 0x80000000u;
    int32_t e = (int32_t)((ua >> 23) & 0xffu) + (int32_t)((ub >> 23) & 0xffu) - 127;
    uint32_t s = ((ua & 0x7fffffu) >> (23 - MBITS)) + ((ub & 0x7fffffu) >> (23 - MBITS));
    if (s >= (1u << MBITS)) {
        s -= 1u << MBITS;
        e += 1;
    }
    uint32_t r = sign | ((uint32_t)e << 23) | (s << (23 - MBITS));
    return *(float *)&r;
}
