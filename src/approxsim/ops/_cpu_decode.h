// Operand decoding shared by the float kernel's strategies (_cpu_kernel.cc): an operand
// x = s · 2^e · (1.f) becomes its LUT index (top M bits of f, rounded to nearest even when
// asked, which may carry into the exponent) and its weight w = s · 2^e (a signed zero for
// zero and subnormal operands), and the exponent range met is recorded (see DESIGN §2 and the
// comment at the top of _cpu_kernel.cc). Included once, by _cpu_kernel.cc, inside its
// anonymous namespace; its text is part of the kernel's cache key.
#pragma once

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif
constexpr int kPrefetchRows = 8;  // rows of A fetched ahead in the row loop
constexpr int kPrefetchBlocks = 8;  // blocks of 16 rows of a column-major A fetched ahead

struct Decoded {
    int32_t index;  // LUT index (top M fraction bits, rounded when asked)
    float weight;   // s · 2^e, or a signed zero for zero/subnormal operands
    int32_t exp;    // biased exponent after rounding; 0 for zero/subnormal, 255 for inf/NaN
};

inline Decoded decode(uint32_t bits, int shift, int nearest) {
    uint32_t mag = bits & 0x7FFFFFFFu;
    uint32_t e = mag >> 23;
    if (nearest && shift > 0 && e != 255 && e != 0) {
        uint32_t half = (1u << (shift - 1)) - 1u;
        mag = ((mag + half + ((mag >> shift) & 1u)) >> shift) << shift;
        e = mag >> 23;
    }
    Decoded d;
    bool ok = e != 0 && e != 255;
    d.exp = (int32_t)e;
    d.index = ok ? (int32_t)((mag & 0x7FFFFFu) >> shift) : 0;
    uint32_t w = (bits & 0x80000000u) | (ok ? (e << 23) : 0u);
    memcpy(&d.weight, &w, 4);
    return d;
}

struct Range {
    int32_t lo = 255, hi = 0, special = 0;
    inline void add(int32_t e) {
        if (e == 255) {
            special = 1;
        } else if (e != 0) {
            lo = e < lo ? e : lo;
            hi = e > hi ? e : hi;
        }
    }
    inline void merge(const Range& o) {
        lo = o.lo < lo ? o.lo : lo;
        hi = o.hi > hi ? o.hi : hi;
        special |= o.special;
    }
};


// Hardware-width vectors (8 lanes with AVX2, 16 with AVX-512). GCC compiles comparisons and
// selects on generic vectors wider than the hardware's lane by lane, as scalar code.
typedef uint32_t vu __attribute__((vector_size(kVectorBytes)));
typedef int32_t vi __attribute__((vector_size(kVectorBytes)));
constexpr int kLanes = kVectorBytes / 4;
constexpr int kParts = 16 / kLanes;

// Sixteen operands at once: what decode() does, in vector registers. Lane j's offset is
// base + j·step + index·i_mul; lo/hi/special accumulate the exponent range per lane (zero and
// subnormal lanes, such as zero padding, are left out of it). The operands are read straight
// from memory in hardware-width parts: a 64-byte generic vector would be split by the
// compiler through the stack with AVX2, and reading it back stalls store forwarding.
struct Decode16 {
    uint32_t half, round_mask, shift, i_mul;
    vi lo[kParts], hi[kParts], special[kParts];
    vi iota;  // lane numbers 0..kLanes-1
    Decode16(int shift_, uint32_t nearest, int32_t i_mul_)
        : half((1u << (shift_ - 1)) - 1u), round_mask(0u - nearest), shift((uint32_t)shift_),
          i_mul((uint32_t)i_mul_) {
        for (int p = 0; p < kParts; ++p) {
            for (int j = 0; j < kLanes; ++j) lo[p][j] = 255, hi[p][j] = 0, special[p][j] = 0;
        }
        for (int j = 0; j < kLanes; ++j) iota[j] = j;
    }
    inline void operator()(const uint32_t* __restrict src, int32_t base, int32_t step,
                           int32_t* __restrict off, float* __restrict w) {
#pragma GCC unroll 2
        for (int p = 0; p < kParts; ++p) {
            vu bits;
            memcpy(&bits, src + p * kLanes, kVectorBytes);
            const vi lane_base = (base + p * kLanes * step) + iota * step;
            vu mag = bits & 0x7FFFFFFFu;
            vu e0 = mag >> 23;
            vi fin = (e0 != 0u) & (e0 != 255u);  // all-ones lanes where finite and nonzero
            vu add = (half + ((mag >> shift) & 1u)) & round_mask & (vu)fin;
            vu rnd = ((mag + add) >> shift) << shift;
            vu e = rnd >> 23;
            vi ok = (e0 != 0u) & (e != 255u);
            vu idx = ((rnd & 0x7FFFFFu) >> shift) & (vu)ok;
            vi o = (vi)((vu)lane_base + idx * i_mul);
            vu wb = (bits & 0x80000000u) | ((e << 23) & (vu)ok);
            memcpy(off + p * kLanes, &o, kVectorBytes);
            memcpy(w + p * kLanes, &wb, kVectorBytes);
            vi ei = (vi)e;
            vi take_lo = ok & (ei < lo[p]), take_hi = ok & (ei > hi[p]);
            lo[p] = (ei & take_lo) | (lo[p] & ~take_lo);
            hi[p] = (ei & take_hi) | (hi[p] & ~take_hi);
            special[p] |= (vi)(e == 255u);
        }
    }
    Range range() const {
        Range out;
        for (int p = 0; p < kParts; ++p) {
            for (int j = 0; j < kLanes; ++j)
                out.merge(Range{lo[p][j], hi[p][j], special[p][j] != 0});
        }
        return out;
    }
};

// Decode n operands x[q·stride]: off[q] = q·q_mul + index·dec.i_mul and w[q] = s·2^e (or a
// signed zero). The row gather asks for its V row (q_mul = 2^M·NT, i_mul = NT), the direct
// kernel for its LUT row (q_mul = 0, i_mul = 2^M). Contiguous operands go sixteen at a time
// through dec (the last few through a zero-padded copy), whose per-lane exponent range the
// caller reduces once at the end; strided ones one at a time into `range`.
inline void decode_span(const float* x, int64_t stride, int n, int shift, uint32_t nearest,
                        int32_t q_mul, Decode16& dec, Range& range, int32_t* __restrict off,
                        float* __restrict w) {
    int q = 0;
    if (stride == 1) {
        const uint32_t* xb = reinterpret_cast<const uint32_t*>(x);
        for (; q + 16 <= n; q += 16) dec(xb + q, q * q_mul, q_mul, off + q, w + q);
        if (q < n) {
            uint32_t bits[16] = {};
            for (int j = 0; j < n - q; ++j) bits[j] = xb[q + j];
            int32_t o16[16];
            float w16[16];
            dec(bits, q * q_mul, q_mul, o16, w16);
            for (int j = 0; j < n - q; ++j) off[q + j] = o16[j], w[q + j] = w16[j];
        }
        return;
    }
    for (; q < n; ++q) {
        uint32_t bits;
        memcpy(&bits, x + q * stride, 4);
        Decoded d = decode(bits, shift, (int)nearest);
        range.add(d.exp);
        off[q] = q * q_mul + d.index * dec.i_mul;
        w[q] = d.weight;
    }
}

// Decode a block of nr <= 16 rows of a column-major A (rows contiguous, columns sak apart),
// columns 0..kt: off[kk·16 + j] = kk·q_mul + index·i_mul and w[kk·16 + j] for row j.
inline void decode_block(const float* x, int64_t sak, int nr, int kt, int32_t q_mul,
                         Decode16& dec, int32_t* __restrict off, float* __restrict w) {
    for (int kk = 0; kk < kt; ++kk) {
        const uint32_t* xb = reinterpret_cast<const uint32_t*>(x + kk * sak);
        if (nr == 16) {
            // kt columns are kt streams far apart: fetch a few blocks ahead in each.
            __builtin_prefetch(x + kk * sak + 16 * kPrefetchBlocks);
            dec(xb, kk * q_mul, 0, off + kk * 16, w + kk * 16);
        } else {
            uint32_t bits[16] = {};
            for (int j = 0; j < nr; ++j) bits[j] = xb[j];
            dec(bits, kk * q_mul, 0, off + kk * 16, w + kk * 16);
        }
    }
}

// Decode n columns of one row of operand B into LUT indices and weights s·2^e, padded with
// (index 0, weight +0) up to width: padding then contributes exact zeros.
inline void decode_b_row(const float* brow, int64_t sbn, int n, int width, int shift, int nearest,
                         int32_t* ib, float* wb, Range& rb) {
    for (int c = 0; c < width; ++c) {
        int32_t idx = 0;
        float wv = 0.0f;
        if (c < n) {
            uint32_t bits;
            memcpy(&bits, brow + c * sbn, 4);
            Decoded d = decode(bits, shift, nearest);
            rb.add(d.exp);
            idx = d.index;
            wv = d.weight;
        }
        ib[c] = idx;
        wb[c] = wv;
    }
}
