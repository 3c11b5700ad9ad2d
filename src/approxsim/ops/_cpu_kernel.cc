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
//    multiply-add per (r, k). Building V costs 2^M · K · N, repaid over many rows. Tiles of
//    at most 16 columns take several rows per step (their row step is one vector).
//  * direct (gemm_direct, approxsim_gemm_gather with direct = 1): one scalar LUT lookup per
//    product, several rows per step; for problems with few rows and few columns (weight
//    gradients), where V would not pay.
// Rows per step and the columns computed never change an output's float operations or their
// order (tests/ops/test_cpu_row_groups.py).

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include "_parallel.h"
#include "_simd.h"

namespace {

#include "_cpu_decode.h"

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

// Vector registers the row gather may fill with accumulators when it takes several rows per
// step (tiles of at most 16 columns, whose one-vector V rows leave little work per step).
constexpr int kGatherAccumulators = kVectorBytes == 64 ? 16 : 8;

// How the row gather's row step is laid out for NT columns: vectors no wider than the
// hardware's (wider generic vectors are split by the compiler through the stack: with AVX2 a
// 64-byte splat is written as four 16-byte stores and read back as two 32-byte loads, which
// stalls store forwarding on every step), two k per step into two accumulator sets so the FMA
// chains stay short, unless one row already takes more than four vectors (AVX2 with 64-column
// tiles: one set keeps all accumulators in the sixteen registers), and for tiles of at most 16
// columns up to four rows per step.
template <int NT>
struct RowStep {
    static constexpr int VB = NT * 4 < kVectorBytes ? NT * 4 : kVectorBytes;
    static constexpr int L = VB / 4;    // floats per vector
    static constexpr int NV = NT / L;   // vectors per V row
    static constexpr int SETS = NV > 4 ? 1 : 2;
    static constexpr int FIT = kGatherAccumulators / (2 * NV);
    static constexpr int ROWS = NT > 16 || FIT < 1 ? 1 : FIT > 4 ? 4 : FIT;
    static_assert(8 % ROWS == 0, "gather_rows fills 8-row tiles group by group");
};

// G output rows of one (k-tile, column-tile) block: row g's Σ_kk w[g·gs + kk·step] · V row
// off[g·gs + kk·step], written to (first k tile) or added into crow[g·scr + q·scn]. Each row's
// sums are the same float operations in the same order whatever G: even kk into one set, odd
// kk into the other, the two sets added at the end.
template <int NT, int G>
inline void accumulate_rows(const float* v, const int32_t* off, const float* w, int64_t gs,
                            int step, int kt, float* crow, int64_t scr, int64_t scn, int nt,
                            bool first) {
    typedef RowStep<NT> S;
    typedef float vec __attribute__((vector_size(S::VB), aligned(4)));
    constexpr int NV = S::NV;
    vec acc0[G][NV], acc1[G][NV];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 16
        for (int j = 0; j < NV; ++j) acc0[g][j] = acc1[g][j] = vec{};
    int kk = 0;
    if constexpr (S::SETS == 2) {
        for (; kk + 1 < kt; kk += 2) {
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) {
                const int32_t* og = off + g * gs;
                const float* wg = w + g * gs;
                const vec* v0 = reinterpret_cast<const vec*>(v + og[kk * step]);
                const vec* v1 = reinterpret_cast<const vec*>(v + og[(kk + 1) * step]);
                const float w0 = wg[kk * step], w1 = wg[(kk + 1) * step];
#pragma GCC unroll 16
                for (int j = 0; j < NV; ++j) {
                    acc0[g][j] += w0 * v0[j];
                    acc1[g][j] += w1 * v1[j];
                }
            }
        }
    }
    for (; kk < kt; ++kk) {
#pragma GCC unroll 4
        for (int g = 0; g < G; ++g) {
            const vec* v0 = reinterpret_cast<const vec*>(v + off[g * gs + kk * step]);
            const float w0 = w[g * gs + kk * step];
#pragma GCC unroll 16
            for (int j = 0; j < NV; ++j) acc0[g][j] += w0 * v0[j];
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
        float* cg = crow + g * scr;
        if (scn == 1 && nt == NT) {  // a full tile of contiguous output: whole vectors
            vec* cv = reinterpret_cast<vec*>(cg);
#pragma GCC unroll 16
            for (int j = 0; j < NV; ++j)
                cv[j] = first ? acc0[g][j] + acc1[g][j] : cv[j] + (acc0[g][j] + acc1[g][j]);
            continue;
        }
        float out[NT];
#pragma GCC unroll 16
        for (int j = 0; j < NV; ++j) {
            vec sum = acc0[g][j] + acc1[g][j];
            memcpy(out + j * S::L, &sum, sizeof(vec));
        }
        if (first) {
            for (int q = 0; q < nt; ++q) cg[q * scn] = out[q];
        } else {
            for (int q = 0; q < nt; ++q) cg[q * scn] += out[q];
        }
    }
}

// One output row (accumulate_rows for a single row).
template <int NT>
inline void accumulate_row(const float* v, const int32_t* off, const float* w, int step, int kt,
                           float* crow, int64_t scn, int nt, bool first) {
    accumulate_rows<NT, 1>(v, off, w, 0, step, kt, crow, 0, scn, nt, first);
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

// nr rows of a decoded block of a column-major A (row j's operands at off[kk·16 + j]) into
// crow + j·scr, RowStep<NT>::ROWS rows per step.
template <int NT>
inline void block_rows(const float* v, const int32_t* off, const float* w, int nr, int kt,
                       float* crow, int64_t scr, int64_t scn, int nt, bool first) {
    constexpr int G = RowStep<NT>::ROWS;
    int j = 0;
    if constexpr (G > 1) {
        for (; j + G <= nr; j += G)
            accumulate_rows<NT, G>(v, off + j, w + j, 1, 16, kt, crow + j * scr, scr, scn, nt,
                                   first);
    }
    for (; j < nr; ++j)
        accumulate_row<NT>(v, off + j, w + j, 16, kt, crow + j * scr, scn, nt, first);
}

// Accumulate rows r_lo..r_hi of one (k-tile, column-tile) block through V. off/w hold
// 16·kt entries: a column-major A (rows contiguous, sar == 1) is decoded sixteen rows at a
// time, one vector per column, with no transposing copy; a row-major one RowStep<NT>::ROWS
// rows at a time. A column-major C (scr == 1, the gradient of a column-major operand) is
// written eight rows at a time through store_rows_t.
template <int NT>
void gather_rows(const float* a, int64_t sar, int64_t sak, int64_t r_lo, int64_t r_hi,
                 int64_t k0, int kt, const float* v, int rows, int shift, uint32_t nearest,
                 float* c, int64_t scr, int64_t scn, int64_t n0, int nt, bool first,
                 int32_t* off, float* w, Range& ra) {
    constexpr int G = RowStep<NT>::ROWS;
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
                    block_rows<NT>(v, off + j0, w + j0, nj, kt, tile, NT, 1, NT, true);
                    store_rows_t<NT>(tile, nj, c, scn, r0 + j0, n0, nt, first);
                }
                continue;
            }
            block_rows<NT>(v, off, w, nr, kt, c + r0 * scr + n0 * scn, scr, scn, nt, first);
        }
        ra.merge(dec.range());
        return;
    }
    int pending = 0;  // rows of tile not yet stored (column-major C); a multiple of G until
                      // the last rows, and G divides 8
    for (int64_t r = r_lo; r < r_hi;) {
        const int g_n = r_hi - r >= G ? G : 1;
        for (int g = 0; g < g_n; ++g) {
            const float* arow = a + (r + g) * sar + k0 * sak;
            // Rows of one k-tile are far apart in A: fetch ahead, the hardware prefetcher
            // won't.
            if (sak == 1 && r + g + kPrefetchRows < r_hi) {
                const char* ahead = reinterpret_cast<const char*>(arow + kPrefetchRows * sar);
                for (int q = 0; q < kt * sak * 4; q += 64) __builtin_prefetch(ahead + q);
            }
            decode_span(arow, sak, kt, shift, nearest, rows * NT, dec, ra, off + g * kt,
                        w + g * kt);
        }
        float* dst = c_t ? tile + pending * NT : c + r * scr + n0 * scn;
        const int64_t d_scr = c_t ? NT : scr, d_scn = c_t ? 1 : scn;
        const int d_nt = c_t ? NT : nt;
        const bool d_first = c_t || first;
        if (g_n == G && G > 1) {
            accumulate_rows<NT, G>(v, off, w, kt, 1, kt, dst, d_scr, d_scn, d_nt, d_first);
        } else {
            accumulate_row<NT>(v, off, w, 1, kt, dst, d_scn, d_nt, d_first);
        }
        r += g_n;
        if (c_t) {
            pending += g_n;
            if (pending == 8 || r == r_hi) {
                store_rows_t<NT>(tile, pending, c, scn, r - pending, n0, nt, first);
                pending = 0;
            }
        }
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

// Accumulator registers the direct kernel may fill with one group of rows (G rows of NC
// scalar sums each), leaving the rest for B's operands and temporaries.
#if defined(__AVX512F__)
constexpr int kDirectAccumulators = 24;
#else
constexpr int kDirectAccumulators = 12;
#endif
constexpr int kDirectMaxGroup = 4;

// Direct-kernel rows r_lo..r_hi of one (k tile, column tile) block, G rows at a time; ib/wb
// hold B's decoded tile (kt rows of NT), off/w room for G·k_tile decoded operands of A. Only
// the first NC columns are computed (NC = nt when a narrow tile is instantiated for it,
// otherwise NT: padding adds exact zeros to sums never stored). Per output the same float
// operations in the same order as one row at a time: w_a · (w_b · LUT) added over kk.
template <int NT, int NC, int G>
__attribute__((optimize("no-tree-vectorize"))) void direct_rows(
    const float* a, int64_t sar, int64_t sak, int64_t r_lo, int64_t r_hi, int64_t k0, int kt,
    int k_tile, const float* lut, const int32_t* ib, const float* wb, int shift,
    uint32_t nearest, Decode16& dec, Range& ra, int32_t* off, float* w, float* c, int64_t scr,
    int64_t scn, int64_t n0, int nt, bool first) {
    int64_t r = r_lo;
    for (; r + G <= r_hi; r += G) {
        for (int g = 0; g < G; ++g)
            decode_span(a + (r + g) * sar + k0 * sak, sak, kt, shift, nearest, 0, dec, ra,
                        off + g * k_tile, w + g * k_tile);
        float acc[G][NC];
#pragma GCC unroll 32
        for (int g = 0; g < G; ++g)
            for (int q = 0; q < NC; ++q) acc[g][q] = 0.0f;
        // Scalar loads (this function is not auto-vectorized): hardware gathers are slow on
        // CPUs with the GDS mitigation. B's index and weight are loaded once for G rows.
        for (int kk = 0; kk < kt; ++kk) {
            const int32_t* ik = ib + kk * NT;
            const float* sk = wb + kk * NT;
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) {
                const float* l0 = lut + off[g * k_tile + kk];
                const float wa = w[g * k_tile + kk];
#pragma GCC unroll 16
                for (int q = 0; q < NC; ++q) acc[g][q] += wa * (sk[q] * l0[ik[q]]);
            }
        }
        for (int g = 0; g < G; ++g) {
            float* crow = c + (r + g) * scr + n0 * scn;
            if (first) {
                for (int q = 0; q < nt; ++q) crow[q * scn] = acc[g][q];
            } else {
                for (int q = 0; q < nt; ++q) crow[q * scn] += acc[g][q];
            }
        }
    }
    if constexpr (G > 1) {
        if (r < r_hi)
            direct_rows<NT, NC, 1>(a, sar, sak, r, r_hi, k0, kt, k_tile, lut, ib, wb, shift,
                                   nearest, dec, ra, off, w, c, scr, scn, n0, nt, first);
    }
}

// Rows of a group for NC computed columns (see kDirectAccumulators).
constexpr int direct_group(int nc) {
    return kDirectAccumulators / nc < 1 ? 1
           : kDirectAccumulators / nc > kDirectMaxGroup ? kDirectMaxGroup
                                                        : kDirectAccumulators / nc;
}

// The direct kernel for rows r_lo..r_hi, column tiles t_lo..t_hi of NT columns: per k tile,
// B's operands are decoded once (LUT column index and s·2^e), then each row looks its
// products up in its operand's LUT row, one scalar load per product. An 8-wide tile holding
// fewer columns computes only those.
template <int NT>
void gemm_direct(const float* a, int64_t sar, int64_t sak, const float* b, int64_t sbk,
                 int64_t sbn, float* c, int64_t scr, int64_t scn, int64_t K, int64_t N,
                 const float* lut, int m, int nearest, int64_t r_lo, int64_t r_hi, int64_t t_lo,
                 int64_t t_hi, int k_tile, float* work, Range& ra, Range& rb) {
    const int rows = 1 << m;
    const int shift = 23 - m;
    int32_t* ib = reinterpret_cast<int32_t*>(work);  // (k_tile, NT)
    float* wb = work + (int64_t)k_tile * NT;          // (k_tile, NT)
    int32_t* off = reinterpret_cast<int32_t*>(wb + (int64_t)k_tile * NT);
    float* w = reinterpret_cast<float*>(off + kDirectMaxGroup * k_tile);
    Decode16 dec(shift, (uint32_t)nearest, rows);
    for (int64_t t = t_lo; t < t_hi; ++t) {
        int64_t n0 = t * NT;
        int nt = (int)(N - n0 < NT ? N - n0 : NT);
        for (int64_t k0 = 0; k0 < K; k0 += k_tile) {
            int kt = (int)(K - k0 < k_tile ? K - k0 : k_tile);
            for (int kk = 0; kk < kt; ++kk)
                decode_b_row(b + (k0 + kk) * sbk + n0 * sbn, sbn, nt, NT, shift, nearest,
                             ib + kk * NT, wb + kk * NT, rb);
#define APPROXSIM_DIRECT(C)                                                                   \
    direct_rows<NT, C, direct_group(C)>(a, sar, sak, r_lo, r_hi, k0, kt, k_tile, lut, ib, wb, \
                                        shift, (uint32_t)nearest, dec, ra, off, w, c, scr,    \
                                        scn, n0, nt, k0 == 0)
            if constexpr (NT == 8) {
                switch (nt) {
                    case 1: APPROXSIM_DIRECT(1); break;
                    case 2: APPROXSIM_DIRECT(2); break;
                    case 3: APPROXSIM_DIRECT(3); break;
                    case 4: APPROXSIM_DIRECT(4); break;
                    case 5: APPROXSIM_DIRECT(5); break;
                    case 6: APPROXSIM_DIRECT(6); break;
                    case 7: APPROXSIM_DIRECT(7); break;
                    default: APPROXSIM_DIRECT(8);
                }
            } else {
                APPROXSIM_DIRECT(NT);
            }
#undef APPROXSIM_DIRECT
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
// registers where AVX-512 is available, 8x8 ones with AVX2.
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
#elif defined(__AVX2__)
    for (; r0 + 8 <= r_hi; r0 += 8) {
        int64_t c0 = 0;
        for (; c0 + 8 <= cols; c0 += 8) {
            __m256 v[8], t[8];
            for (int q = 0; q < 8; ++q) v[q] = _mm256_loadu_ps(src + (r0 + q) * lds + c0);
            for (int q = 0; q < 8; q += 2) {
                t[q] = _mm256_unpacklo_ps(v[q], v[q + 1]);
                t[q + 1] = _mm256_unpackhi_ps(v[q], v[q + 1]);
            }
            for (int q = 0; q < 8; q += 4) {
                v[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
                v[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
                v[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
                v[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
            }
            for (int q = 0; q < 4; ++q) {
                t[q] = _mm256_permute2f128_ps(v[q], v[q + 4], 0x20);
                t[q + 4] = _mm256_permute2f128_ps(v[q], v[q + 4], 0x31);
            }
            for (int p = 0; p < 8; ++p) _mm256_storeu_ps(dst + (c0 + p) * ldd + r0, t[p]);
        }
        for (; c0 < cols; ++c0)
            for (int q = 0; q < 8; ++q) dst[c0 * ldd + r0 + q] = src[(r0 + q) * lds + c0];
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
    return 2 * (int64_t)k_tile * n_tile + 2 * kDirectMaxGroup * (int64_t)k_tile + 16;
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
