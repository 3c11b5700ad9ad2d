// approxsim CPU kernel: batched approximate matmul with exact LUT products.
//
// Compiled on first use by approxsim.ops._cpu_native (g++ -O3 -march=native) and called
// through ctypes; every entry point is a plain C function over raw pointers and strides, so
// one call computes one block of the output. The *_parts/*_par entry points run many blocks on
// the OpenMP team torch uses (see _parallel.h); built without OpenMP, the caller runs blocks
// on its own threads instead.
//
// Number semantics (DESIGN §2): an operand x = s · 2^e · (1.f) with a normal exponent is
// reduced to its LUT index i = top M bits of f (after round-to-nearest-even when asked for,
// which may carry into the exponent), and the product of a and b is
//     sa·sb · 2^(ea+eb) · LUT[ia, ib].
// Zero and subnormal operands give a signed zero; inf/NaN operands are not handled here
// (the caller runs the reference). Both kernels form each product as w_a · (w_b · LUT[..])
// where w = s · 2^e is the operand with its fraction cleared. Multiplying by a power of two
// is exact as long as the result is a normal float; the kernels record the exponent ranges
// they met so the caller can verify that (and otherwise run the reference instead).
//
// Two strategies, same results up to the order of the float32 sum:
//  * row gather (approxsim_gemm_gather): per tile of B's columns and K, a table
//        V[kk, i, c] = w_b[k, n] · LUT[i, ib[k, n]]
//    so that C[r, n] = Σ_k w_a[r, k] · V[k, ia[r, k], n] is one contiguous vector
//    multiply-add per (r, k). Building V costs 2^M · K · N, repaid over many rows.
//  * direct (approxsim_gemm_direct): one LUT lookup per product, vectorized with gathers;
//    for problems with few rows and few columns (weight gradients), where V would not pay.

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include "_parallel.h"
#include "_simd.h"

namespace {

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

typedef uint32_t vu16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

// Hardware-width vectors (8 lanes with AVX2, 16 with AVX-512). GCC compiles comparisons and
// selects on generic vectors wider than the hardware's lane by lane, as scalar code.
typedef uint32_t vu __attribute__((vector_size(kVectorBytes)));
typedef int32_t vi __attribute__((vector_size(kVectorBytes)));
constexpr int kLanes = kVectorBytes / 4;
constexpr int kParts = 16 / kLanes;

// Sixteen operands at once: what decode() does, in vector registers. Lane j's offset is
// base[j] + index·i_mul; lo/hi/special accumulate the exponent range per lane (zero and
// subnormal lanes, such as zero padding, are left out of it).
struct Decode16 {
    uint32_t half, round_mask, shift, i_mul;
    vi lo[kParts], hi[kParts], special[kParts];
    Decode16(int shift_, uint32_t nearest, int32_t i_mul_)
        : half((1u << (shift_ - 1)) - 1u), round_mask(0u - nearest), shift((uint32_t)shift_),
          i_mul((uint32_t)i_mul_) {
        for (int p = 0; p < kParts; ++p) {
            for (int j = 0; j < kLanes; ++j) lo[p][j] = 255, hi[p][j] = 0, special[p][j] = 0;
        }
    }
    inline void operator()(vu16 bits16, vi16 base16, int32_t* __restrict off,
                           float* __restrict w) {
#pragma GCC unroll 2
        for (int p = 0; p < kParts; ++p) {
            vu bits;
            vi base;
            memcpy(&bits, reinterpret_cast<const char*>(&bits16) + p * kVectorBytes, kVectorBytes);
            memcpy(&base, reinterpret_cast<const char*>(&base16) + p * kVectorBytes, kVectorBytes);
            vu mag = bits & 0x7FFFFFFFu;
            vu e0 = mag >> 23;
            vi fin = (e0 != 0u) & (e0 != 255u);  // all-ones lanes where finite and nonzero
            vu add = (half + ((mag >> shift) & 1u)) & round_mask & (vu)fin;
            vu rnd = ((mag + add) >> shift) << shift;
            vu e = rnd >> 23;
            vi ok = (e0 != 0u) & (e != 255u);
            vu idx = ((rnd & 0x7FFFFFu) >> shift) & (vu)ok;
            vi o = (vi)((vu)base + idx * i_mul);
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
        vi16 lane;
        for (int j = 0; j < 16; ++j) lane[j] = j * q_mul;
        for (; q + 16 <= n; q += 16) {
            vu16 bits;
            memcpy(&bits, x + q, 64);
            dec(bits, lane + q * q_mul, off + q, w + q);
        }
        if (q < n) {
            const uint32_t* xb = reinterpret_cast<const uint32_t*>(x + q);
            vu16 bits = vu16{};
            for (int j = 0; j < n - q; ++j) bits[j] = xb[j];
            int32_t o16[16];
            float w16[16];
            dec(bits, lane + q * q_mul, o16, w16);
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
        vu16 bits = vu16{};
        if (nr == 16) {
            // kt columns are kt streams far apart: fetch a few blocks ahead in each.
            __builtin_prefetch(x + kk * sak + 16 * kPrefetchBlocks);
            memcpy(&bits, x + kk * sak, 64);
        } else {
            const uint32_t* xb = reinterpret_cast<const uint32_t*>(x + kk * sak);
            for (int j = 0; j < nr; ++j) bits[j] = xb[j];
        }
        vi16 base;
        for (int j = 0; j < 16; ++j) base[j] = kk * q_mul;
        dec(bits, base, off + kk * 16, w + kk * 16);
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

// Build V for columns n0..n0+nt (nt <= NT, padded with zeros to NT) and k0..k0+kt.
template <int NT>
void build_v(const float* b, int64_t sbk, int64_t sbn, int64_t k0, int kt, int64_t n0, int nt,
             const float* lut, const float* lut_t, int rows, int shift, int nearest, float* v,
             Range& rb) {
    int32_t ib[NT];
    float wb[NT];
    for (int kk = 0; kk < kt; ++kk) {
        decode_b_row(b + (k0 + kk) * sbk + n0 * sbn, sbn, nt, NT, shift, nearest, ib, wb, rb);
        float* vk = v + (int64_t)kk * rows * NT;
#if defined(__AVX512F__)
        // Sixteen scaled LUT columns (rows of the transposed LUT) at a time, transposed in
        // registers into sixteen V rows: no gathers (slow on CPUs with the GDS mitigation).
        if (NT % 16 == 0 && rows % 16 == 0) {
            for (int c0 = 0; c0 < NT; c0 += 16) {
                for (int i0 = 0; i0 < rows; i0 += 16) {
                    __m512 blk[16];
                    for (int q = 0; q < 16; ++q) {
                        const float* col = lut_t + (int64_t)ib[c0 + q] * rows + i0;
                        blk[q] = _mm512_mul_ps(_mm512_set1_ps(wb[c0 + q]), _mm512_loadu_ps(col));
                    }
                    transpose16(blk);
                    for (int p = 0; p < 16; ++p)
                        _mm512_storeu_ps(vk + (int64_t)(i0 + p) * NT + c0, blk[p]);
                }
            }
            continue;
        }
#endif
#if defined(__AVX2__)
        // The same with 8x8 transposes: eight-wide tiles, and every tile without AVX-512.
        if (NT % 8 == 0 && rows % 8 == 0) {
            for (int c0 = 0; c0 < NT; c0 += 8) {
                for (int i0 = 0; i0 < rows; i0 += 8) {
                    __m256 blk[8];
                    for (int q = 0; q < 8; ++q) {
                        const float* col = lut_t + (int64_t)ib[c0 + q] * rows + i0;
                        blk[q] = _mm256_mul_ps(_mm256_set1_ps(wb[c0 + q]), _mm256_loadu_ps(col));
                    }
                    transpose8(blk);
                    for (int p = 0; p < 8; ++p)
                        _mm256_storeu_ps(vk + (int64_t)(i0 + p) * NT + c0, blk[p]);
                }
            }
            continue;
        }
#endif
        for (int i = 0; i < rows; ++i) {
            const float* lrow = lut + (int64_t)i * rows;
            float* vrow = vk + (int64_t)i * NT;
#if defined(__AVX512F__)
            if (NT % 16 == 0) {
                for (int c = 0; c < NT; c += 16) {
                    __m512i vi = _mm512_loadu_si512(ib + c);
                    __m512 g = _mm512_i32gather_ps(vi, lrow, 4);
                    _mm512_storeu_ps(vrow + c, _mm512_mul_ps(_mm512_loadu_ps(wb + c), g));
                }
                continue;
            }
#endif
#if defined(__AVX2__)
            if (NT % 8 == 0) {
                for (int c = 0; c < NT; c += 8) {
                    __m256i vi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ib + c));
                    __m256 g = _mm256_i32gather_ps(lrow, vi, 4);
                    _mm256_storeu_ps(vrow + c, _mm256_mul_ps(_mm256_loadu_ps(wb + c), g));
                }
                continue;
            }
#endif
            for (int c = 0; c < NT; ++c) vrow[c] = wb[c] * lrow[ib[c]];
        }
    }
}

// One output row of one (k-tile, column-tile) block: Σ_kk w[kk·step] · V row off[kk·step],
// written to (first k tile) or added into crow[q·scn].
template <int NT>
inline void accumulate_row(const float* v, const int32_t* off, const float* w, int step, int kt,
                           float* crow, int64_t scn, int nt, bool first) {
    // Vectors no wider than the hardware's: wider generic vectors are split by the compiler
    // through the stack (with AVX2 a 64-byte splat is written as four 16-byte stores and read
    // back as two 32-byte loads, which stalls store forwarding on every step).
    constexpr int VB = NT * 4 < kVectorBytes ? NT * 4 : kVectorBytes;
    typedef float vec __attribute__((vector_size(VB), aligned(4)));
    constexpr int L = VB / 4;    // floats per vector
    constexpr int NV = NT / L;   // vectors per V row
    // Two k per step into two accumulator sets, so the FMA chains stay short, unless one row
    // already takes more than four vectors (AVX2 with 64-column tiles): then one set, which
    // keeps all accumulators in the sixteen registers.
    constexpr int SETS = NV > 4 ? 1 : 2;
    vec acc0[NV], acc1[NV];
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) acc0[j] = acc1[j] = vec{};
    int kk = 0;
    if constexpr (SETS == 2) {
        for (; kk + 1 < kt; kk += 2) {
            const vec* v0 = reinterpret_cast<const vec*>(v + off[kk * step]);
            const vec* v1 = reinterpret_cast<const vec*>(v + off[(kk + 1) * step]);
            const float w0 = w[kk * step], w1 = w[(kk + 1) * step];
#pragma GCC unroll 16
            for (int j = 0; j < NV; ++j) {
                acc0[j] += w0 * v0[j];
                acc1[j] += w1 * v1[j];
            }
        }
    }
    for (; kk < kt; ++kk) {
        const vec* v0 = reinterpret_cast<const vec*>(v + off[kk * step]);
        const float w0 = w[kk * step];
#pragma GCC unroll 16
        for (int j = 0; j < NV; ++j) acc0[j] += w0 * v0[j];
    }
    if (scn == 1 && nt == NT) {  // a full tile of contiguous output: whole vectors
        vec* cv = reinterpret_cast<vec*>(crow);
#pragma GCC unroll 16
        for (int j = 0; j < NV; ++j) cv[j] = first ? acc0[j] + acc1[j] : cv[j] + (acc0[j] + acc1[j]);
        return;
    }
    float out[NT];
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) {
        vec s = acc0[j] + acc1[j];
        memcpy(out + j * L, &s, sizeof(vec));
    }
    if (first) {
        for (int q = 0; q < nt; ++q) crow[q * scn] = out[q];
    } else {
        for (int q = 0; q < nt; ++q) crow[q * scn] += out[q];
    }
}

// Write (first k tile) or add nr <= 8 rows of a row-major tile (NT floats per row) into a
// column-major C (C[r, n] at c[r + n·scn]) at rows r0.., columns n0..n0+nt: full blocks of 8x8
// through a register transpose, so each store is 8 consecutive floats of one column (a row's
// scalar stores are 4·scn bytes apart, which for large R is a multiple of 4 KiB: all in one L1
// set). Same float ops as the row-major path.
template <int NT>
inline void store_rows_t(const float* tile, int nr, float* c, int64_t scn, int64_t r0, int64_t n0,
                         int nt, bool first) {
    int q0 = 0;
#if defined(__AVX2__)
    if (nr == 8) {
        for (; q0 + 8 <= nt; q0 += 8) {
            __m256 blk[8];
            for (int j = 0; j < 8; ++j) blk[j] = _mm256_loadu_ps(tile + j * NT + q0);
            transpose8(blk);
            for (int p = 0; p < 8; ++p) {
                float* dst = c + (n0 + q0 + p) * scn + r0;
                _mm256_storeu_ps(dst, first ? blk[p] : _mm256_add_ps(_mm256_loadu_ps(dst), blk[p]));
            }
        }
    }
#endif
    for (int q = q0; q < nt; ++q) {
        float* dst = c + (n0 + q) * scn + r0;
        for (int j = 0; j < nr; ++j) dst[j] = first ? tile[j * NT + q] : dst[j] + tile[j * NT + q];
    }
}

// Accumulate rows r_lo..r_hi of one (k-tile, column-tile) block through V. off/w hold
// 16·kt entries: a column-major A (rows contiguous, sar == 1) is decoded sixteen rows at a
// time, one vector per column, with no transposing copy. A column-major C (scr == 1, the
// gradient of a column-major operand) is written eight rows at a time through store_rows_t.
template <int NT>
void gather_rows(const float* a, int64_t sar, int64_t sak, int64_t r_lo, int64_t r_hi,
                 int64_t k0, int kt, const float* v, int rows, int shift, uint32_t nearest,
                 float* c, int64_t scr, int64_t scn, int64_t n0, int nt, bool first,
                 int32_t* off, float* w, Range& ra) {
    Decode16 dec(shift, nearest, NT);
    const bool c_t = scr == 1 && scn != 1;
    float tile[8 * NT];
    if (sar == 1 && sak != 1) {
        for (int64_t r0 = r_lo; r0 < r_hi; r0 += 16) {
            int nr = (int)(r_hi - r0 < 16 ? r_hi - r0 : 16);
            decode_block(a + r0 + k0 * sak, sak, nr, kt, rows * NT, dec, off, w);
            if (c_t) {
                for (int j0 = 0; j0 < nr; j0 += 8) {
                    int nj = nr - j0 < 8 ? nr - j0 : 8;
                    for (int j = 0; j < nj; ++j)
                        accumulate_row<NT>(v, off + j0 + j, w + j0 + j, 16, kt, tile + j * NT, 1,
                                           NT, true);
                    store_rows_t<NT>(tile, nj, c, scn, r0 + j0, n0, nt, first);
                }
                continue;
            }
            for (int j = 0; j < nr; ++j)
                accumulate_row<NT>(v, off + j, w + j, 16, kt, c + (r0 + j) * scr + n0 * scn,
                                   scn, nt, first);
        }
        ra.merge(dec.range());
        return;
    }
    int pending = 0;  // rows of tile not yet stored (column-major C)
    for (int64_t r = r_lo; r < r_hi; ++r) {
        const float* arow = a + r * sar + k0 * sak;
        // Rows of one k-tile are far apart in A: fetch ahead, the hardware prefetcher won't.
        if (sak == 1 && r + kPrefetchRows < r_hi) {
            const char* ahead = reinterpret_cast<const char*>(arow + kPrefetchRows * sar);
            for (int q = 0; q < kt * sak * 4; q += 64) __builtin_prefetch(ahead + q);
        }
        decode_span(arow, sak, kt, shift, nearest, rows * NT, dec, ra, off, w);
        if (c_t) {
            accumulate_row<NT>(v, off, w, 1, kt, tile + pending * NT, 1, NT, true);
            if (++pending == 8 || r + 1 == r_hi) {
                store_rows_t<NT>(tile, pending, c, scn, r + 1 - pending, n0, nt, first);
                pending = 0;
            }
            continue;
        }
        accumulate_row<NT>(v, off, w, 1, kt, c + r * scr + n0 * scn, scn, nt, first);
    }
    ra.merge(dec.range());
}

template <int NT>
void gemm_gather(const float* a, int64_t sar, int64_t sak, const float* b, int64_t sbk,
                 int64_t sbn, float* c, int64_t scr, int64_t scn, int64_t K, int64_t N,
                 const float* lut, const float* lut_t, int m, int nearest,
                 int64_t r_lo, int64_t r_hi,
                 int64_t t_lo, int64_t t_hi, int k_tile, float* work, Range& ra, Range& rb) {
    const int rows = 1 << m;
    const int shift = 23 - m;
    float* v = work;
    int32_t* off = reinterpret_cast<int32_t*>(work + (int64_t)k_tile * rows * NT);
    float* w = reinterpret_cast<float*>(off + 16 * (int64_t)k_tile);
    for (int64_t t = t_lo; t < t_hi; ++t) {
        int64_t n0 = t * NT;
        int nt = (int)(N - n0 < NT ? N - n0 : NT);
        for (int64_t k0 = 0; k0 < K; k0 += k_tile) {
            int kt = (int)(K - k0 < k_tile ? K - k0 : k_tile);
            build_v<NT>(b, sbk, sbn, k0, kt, n0, nt, lut, lut_t, rows, shift, nearest, v, rb);
            gather_rows<NT>(a, sar, sak, r_lo, r_hi, k0, kt, v, rows, shift, nearest, c, scr,
                            scn, n0, nt, k0 == 0, off, w, ra);
        }
    }
}

// The direct kernel for rows r_lo..r_hi, column tiles t_lo..t_hi of NT columns: per k tile,
// B's operands are decoded once (LUT column index and s·2^e), then each row looks its
// products up in its operand's LUT row, one scalar load per product.
template <int NT>
__attribute__((optimize("no-tree-vectorize"))) void gemm_direct(const float* a, int64_t sar, int64_t sak, const float* b, int64_t sbk,
                 int64_t sbn, float* c, int64_t scr, int64_t scn, int64_t K, int64_t N,
                 const float* lut, int m, int nearest, int64_t r_lo, int64_t r_hi, int64_t t_lo,
                 int64_t t_hi, int k_tile, float* work, Range& ra, Range& rb) {
    const int rows = 1 << m;
    const int shift = 23 - m;
    int32_t* ib = reinterpret_cast<int32_t*>(work);  // (k_tile, NT)
    float* wb = work + (int64_t)k_tile * NT;          // (k_tile, NT)
    int32_t* off = reinterpret_cast<int32_t*>(wb + (int64_t)k_tile * NT);
    float* w = reinterpret_cast<float*>(off + k_tile);
    Decode16 dec(shift, (uint32_t)nearest, rows);
    for (int64_t t = t_lo; t < t_hi; ++t) {
        int64_t n0 = t * NT;
        int nt = (int)(N - n0 < NT ? N - n0 : NT);
        for (int64_t k0 = 0; k0 < K; k0 += k_tile) {
            int kt = (int)(K - k0 < k_tile ? K - k0 : k_tile);
            for (int kk = 0; kk < kt; ++kk)
                decode_b_row(b + (k0 + kk) * sbk + n0 * sbn, sbn, nt, NT, shift, nearest,
                             ib + kk * NT, wb + kk * NT, rb);
            for (int64_t r = r_lo; r < r_hi; ++r) {
                const float* arow = a + r * sar + k0 * sak;
                decode_span(arow, sak, kt, shift, (uint32_t)nearest, 0, dec, ra, off, w);
                float acc[NT];
                for (int q = 0; q < NT; ++q) acc[q] = 0.0f;
                {
                    // Scalar loads (this function is not auto-vectorized): hardware gathers
                    // are slow on CPUs with the GDS mitigation.
                    for (int kk = 0; kk < kt; ++kk) {
                        const float* l0 = lut + off[kk];
                        const float wa = w[kk];
                        const int32_t* ik = ib + kk * NT;
                        const float* sk = wb + kk * NT;
                        // All NT columns (padding has weight +0 and a finite LUT entry, so
                        // it adds exact zeros): a constant trip count keeps acc in registers.
#pragma GCC unroll 16
                        for (int q = 0; q < NT; ++q) acc[q] += wa * (sk[q] * l0[ik[q]]);
                    }
                }
                float* crow = c + r * scr + n0 * scn;
                if (k0 == 0) {
                    for (int q = 0; q < nt; ++q) crow[q * scn] = acc[q];
                } else {
                    for (int q = 0; q < nt; ++q) crow[q * scn] += acc[q];
                }
            }
        }
    }
    ra.merge(dec.range());
}

// The output columns lo..hi whose input column w0 + ow·sw lies inside [0, W).
inline void inside_columns(int64_t w0, int sw, int64_t W, int64_t Wo, int64_t& lo, int64_t& hi) {
    lo = w0 >= 0 ? 0 : (-w0 + sw - 1) / sw;
    hi = W - w0 <= 0 ? 0 : (W - w0 + sw - 1) / sw;
    if (hi > Wo) hi = Wo;
    if (lo > hi) lo = hi;
}

}  // namespace

extern "C" {

// dst[c·ldd + r] = src[r·lds + c] for rows r_lo..r_hi and all cols: a transposing copy
// (torch's own copy of a transposed view is several times slower), 16x16 blocks in
// registers where AVX-512 is available.
void approxsim_transpose(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t r_lo,
                         int64_t r_hi, int64_t cols) {
    int64_t r0 = r_lo;
#if defined(__AVX512F__)
    for (; r0 + 16 <= r_hi; r0 += 16) {
        int64_t c0 = 0;
        for (; c0 + 16 <= cols; c0 += 16) {
            __m512 blk[16];
            for (int q = 0; q < 16; ++q) blk[q] = _mm512_loadu_ps(src + (r0 + q) * lds + c0);
            transpose16(blk);
            for (int p = 0; p < 16; ++p) _mm512_storeu_ps(dst + (c0 + p) * ldd + r0, blk[p]);
        }
        for (; c0 < cols; ++c0)
            for (int q = 0; q < 16; ++q) dst[c0 * ldd + r0 + q] = src[(r0 + q) * lds + c0];
    }
#endif
    for (; r0 < r_hi; r0 += 8) {
        int64_t r1 = r0 + 8 < r_hi ? r0 + 8 : r_hi;
        for (int64_t c0 = 0; c0 < cols; c0 += 8) {
            int64_t c1 = c0 + 8 < cols ? c0 + 8 : cols;
            for (int64_t c = c0; c < c1; ++c)
                for (int64_t r = r0; r < r1; ++r) dst[c * ldd + r] = src[r * lds + c];
        }
    }
}

// The patch matrix of a 2-D convolution, transposed (one plane per kernel tap):
//     out[q][n][oh][ow] = x[c][n][oh·sh + i·dh − ph][ow·sw + j·dw − pw]   (0 outside x)
// with q = (c·kh + i)·kw + j, for the planes q_lo..q_hi. x is (C, N, H, W) with any strides.
void approxsim_im2col_t(const float* x, int64_t sxc, int64_t sxn, int64_t sxh, int64_t sxw,
                        int64_t N, int64_t H, int64_t W, int kh, int kw, int sh, int sw, int dh,
                        int dw, int ph, int pw, int64_t Ho, int64_t Wo, float* out, int64_t q_lo,
                        int64_t q_hi) {
    for (int64_t q = q_lo; q < q_hi; ++q) {
        const int64_t c = q / (kh * kw);
        const int i = (int)((q / kw) % kh), j = (int)(q % kw);
        const int64_t w0 = (int64_t)j * dw - pw;
        int64_t lo, hi;
        inside_columns(w0, sw, W, Wo, lo, hi);
        float* plane = out + q * N * Ho * Wo;
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t oh = 0; oh < Ho; ++oh) {
                float* orow = plane + (n * Ho + oh) * Wo;
                const int64_t h = oh * sh + (int64_t)i * dh - ph;
                if (h < 0 || h >= H) {
                    memset(orow, 0, 4 * Wo);
                    continue;
                }
                const float* xrow = x + c * sxc + n * sxn + h * sxh;
                for (int64_t ow = 0; ow < lo; ++ow) orow[ow] = 0.0f;
                if (sw == 1 && sxw == 1) {
                    memcpy(orow + lo, xrow + w0 + lo, 4 * (hi - lo));
                } else {
                    for (int64_t ow = lo; ow < hi; ++ow) orow[ow] = xrow[(w0 + ow * sw) * sxw];
                }
                for (int64_t ow = hi; ow < Wo; ++ow) orow[ow] = 0.0f;
            }
        }
    }
}

// The adjoint of approxsim_im2col_t for channels c_lo..c_hi: gx (C, N, H, W), contiguous and
// zeroed by the caller, receives g[q][n][oh][ow] at the input position each came from, the
// taps q of a channel added in increasing order.
void approxsim_col2im_t(const float* g, int64_t N, int64_t H, int64_t W, int kh, int kw,
                        int sh, int sw, int dh, int dw, int ph, int pw, int64_t Ho, int64_t Wo,
                        float* gx, int64_t c_lo, int64_t c_hi) {
    for (int64_t c = c_lo; c < c_hi; ++c) {
        for (int i = 0; i < kh; ++i) {
            for (int j = 0; j < kw; ++j) {
                const int64_t q = (c * kh + i) * kw + j;
                const int64_t w0 = (int64_t)j * dw - pw;
                int64_t lo, hi;
                inside_columns(w0, sw, W, Wo, lo, hi);
                const float* plane = g + q * N * Ho * Wo;
                for (int64_t n = 0; n < N; ++n) {
                    for (int64_t oh = 0; oh < Ho; ++oh) {
                        const int64_t h = oh * sh + (int64_t)i * dh - ph;
                        if (h < 0 || h >= H) continue;
                        const float* grow = plane + (n * Ho + oh) * Wo;
                        float* xrow = gx + ((c * N + n) * H + h) * W;
                        for (int64_t ow = lo; ow < hi; ++ow) xrow[w0 + ow * sw] += grow[ow];
                    }
                }
            }
        }
    }
}

// Floats of scratch `work` that approxsim_gemm_gather needs for (k_tile, n_tile, m).
int64_t approxsim_gather_work(int k_tile, int n_tile, int m) {
    return (int64_t)k_tile * (1 << m) * n_tile + 32 * (int64_t)k_tile + 16;
}

// Floats of scratch `work` that approxsim_gemm_direct needs for (k_tile, n_tile).
int64_t approxsim_direct_work(int k_tile, int n_tile) {
    return 2 * (int64_t)k_tile * n_tile + 2 * (int64_t)k_tile + 16;
}

// C[b, r, n] for batches b_lo..b_hi, rows r_lo..r_hi and column tiles t_lo..t_hi (of n_tile
// columns); strides in elements. ranges: int32[batches][6], for each batch the exponent fields
// of A's (lo, hi, special) and B's (lo, hi, special) operands met, merged into what is there.
// Returns 0, or -1 for an unsupported n_tile (8, 16, 32 or 64).
int approxsim_gemm_gather(const float* a, int64_t sab, int64_t sar, int64_t sak, const float* b,
                          int64_t sbb, int64_t sbk, int64_t sbn, float* c, int64_t scb,
                          int64_t scr, int64_t scn, int64_t K, int64_t N,
                          const float* lut, const float* lut_t, int m, int nearest,
                          int64_t b_lo, int64_t b_hi,
                          int64_t r_lo, int64_t r_hi, int64_t t_lo, int64_t t_hi, int n_tile,
                          int k_tile, int direct, float* work, int32_t* ranges) {
    if (n_tile != 8 && n_tile != 16 && n_tile != 32 && n_tile != 64) return -1;
    for (int64_t bi = b_lo; bi < b_hi; ++bi) {
        const float* ab = a + bi * sab;
        const float* bb = b + bi * sbb;
        float* cb = c + bi * scb;
        Range ra, rb;
        switch (n_tile) {
#define APPROXSIM_CASE(T)                                                                    \
    case T:                                                                                  \
        if (direct)                                                                          \
            gemm_direct<T>(ab, sar, sak, bb, sbk, sbn, cb, scr, scn, K, N, lut, m, nearest,  \
                           r_lo, r_hi, t_lo, t_hi, k_tile, work, ra, rb);                    \
        else                                                                                 \
            gemm_gather<T>(ab, sar, sak, bb, sbk, sbn, cb, scr, scn, K, N, lut, lut_t, m,    \
                           nearest, r_lo, r_hi, t_lo, t_hi, k_tile, work, ra, rb);           \
        break;
            APPROXSIM_CASE(8)
            APPROXSIM_CASE(16)
            APPROXSIM_CASE(32)
            APPROXSIM_CASE(64)
#undef APPROXSIM_CASE
        }
        int32_t* rg = ranges + 6 * bi;
        Range ca{rg[0], rg[1], rg[2]}, cb2{rg[3], rg[4], rg[5]};
        ca.merge(ra);
        cb2.merge(rb);
        rg[0] = ca.lo, rg[1] = ca.hi, rg[2] = ca.special;
        rg[3] = cb2.lo, rg[4] = cb2.hi, rg[5] = cb2.special;
    }
    return 0;
}

// 1 when this kernel's parallel loops run on OpenMP (see _parallel.h), else 0.
int approxsim_openmp() { return approxsim_parallel::openmp_enabled(); }

// Threads in the team of the last parallel loop (1 when it ran serially).
int approxsim_last_team() { return approxsim_parallel::last_team(); }

// approxsim_gemm_gather over n_parts blocks parts[j] = (b_lo, b_hi, r_lo, r_hi, t_lo, t_hi),
// on up to `threads` threads: block j with work + j·work_len as scratch, ranges +
// j·6·batches as its exponent record and status[j] for its return value.
void approxsim_gemm_parts(const float* a, int64_t sab, int64_t sar, int64_t sak, const float* b,
                          int64_t sbb, int64_t sbk, int64_t sbn, float* c, int64_t scb,
                          int64_t scr, int64_t scn, int64_t K, int64_t N, const float* lut,
                          const float* lut_t, int m, int nearest, const int64_t* parts,
                          int64_t n_parts, int n_tile, int k_tile, int direct, float* work,
                          int64_t work_len, int32_t* ranges, int64_t batches, int32_t* status,
                          int threads) {
    approxsim_parallel::for_parts(n_parts, threads, [&](int64_t j) {
        const int64_t* p = parts + 6 * j;
        status[j] = approxsim_gemm_gather(a, sab, sar, sak, b, sbb, sbk, sbn, c, scb, scr, scn, K,
                                          N, lut, lut_t, m, nearest, p[0], p[1], p[2], p[3],
                                          p[4], p[5], n_tile, k_tile, direct,
                                          work + j * work_len, ranges + 6 * batches * j);
    });
}

// The product over k chunks chunks[ci] = (k0, k1) (all batches, rows and column tiles), chunk
// ci into the partial output c + ci·scc with ranges + ci·6·batches and status[ci]; thread j of
// up to `threads` takes the chunks parts[j] = (first, last + 1) with work + j·work_len.
void approxsim_gemm_chunks(const float* a, int64_t sab, int64_t sar, int64_t sak, const float* b,
                           int64_t sbb, int64_t sbk, int64_t sbn, float* c, int64_t scc,
                           int64_t scb, int64_t scr, int64_t scn, int64_t N, const float* lut,
                           const float* lut_t, int m, int nearest, const int64_t* chunks,
                           const int64_t* parts, int64_t n_parts, int64_t batches, int64_t rows,
                           int64_t n_tiles, int n_tile, int k_tile, int direct, float* work,
                           int64_t work_len, int32_t* ranges, int32_t* status, int threads) {
    approxsim_parallel::for_parts(n_parts, threads, [&](int64_t j) {
        for (int64_t ci = parts[2 * j]; ci < parts[2 * j + 1]; ++ci) {
            const int64_t k0 = chunks[2 * ci], k1 = chunks[2 * ci + 1];
            const int kt = (int)(k1 - k0 < k_tile ? k1 - k0 : k_tile);
            status[ci] = approxsim_gemm_gather(
                a + k0 * sak, sab, sar, sak, b + k0 * sbk, sbb, sbk, sbn, c + ci * scc, scb, scr,
                scn, k1 - k0, N, lut, lut_t, m, nearest, 0, batches, 0, rows, 0, n_tiles, n_tile,
                kt, direct, work + j * work_len, ranges + 6 * batches * ci);
        }
    });
}

// approxsim_transpose over n_jobs jobs[q] = (src, lds, dst, ldd, r_lo, r_hi, cols) (pointers
// as integers), split into up to `threads` contiguous groups, one per thread.
void approxsim_transpose_jobs(const int64_t* jobs, int64_t n_jobs, int threads) {
    approxsim_parallel::for_parts(threads, threads, [&](int64_t j) {
        int64_t lo, hi;
        if (!approxsim_parallel::span(n_jobs, threads, j, lo, hi)) return;
        for (int64_t q = lo; q < hi; ++q) {
            const int64_t* p = jobs + 7 * q;
            approxsim_transpose(reinterpret_cast<const float*>(p[0]), p[1],
                                reinterpret_cast<float*>(p[2]), p[3], p[4], p[5], p[6]);
        }
    });
}

// approxsim_im2col_t over all planes, split into up to `threads` spans, one per thread.
void approxsim_im2col_par(const float* x, int64_t sxc, int64_t sxn, int64_t sxh, int64_t sxw,
                          int64_t N, int64_t H, int64_t W, int kh, int kw, int sh, int sw,
                          int dh, int dw, int ph, int pw, int64_t Ho, int64_t Wo, float* out,
                          int64_t planes, int threads) {
    approxsim_parallel::for_parts(threads, threads, [&](int64_t j) {
        int64_t lo, hi;
        if (approxsim_parallel::span(planes, threads, j, lo, hi))
            approxsim_im2col_t(x, sxc, sxn, sxh, sxw, N, H, W, kh, kw, sh, sw, dh, dw, ph, pw, Ho,
                               Wo, out, lo, hi);
    });
}

// approxsim_col2im_t over channels 0..C, split into up to `threads` spans, one per thread.
void approxsim_col2im_par(const float* g, int64_t N, int64_t H, int64_t W, int kh, int kw,
                          int sh, int sw, int dh, int dw, int ph, int pw, int64_t Ho, int64_t Wo,
                          float* gx, int64_t C, int threads) {
    approxsim_parallel::for_parts(threads, threads, [&](int64_t j) {
        int64_t lo, hi;
        if (approxsim_parallel::span(C, threads, j, lo, hi))
            approxsim_col2im_t(g, N, H, W, kh, kw, sh, sw, dh, dw, ph, pw, Ho, Wo, gx, lo, hi);
    });
}

}  // extern "C"
