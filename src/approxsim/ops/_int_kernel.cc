// approxsim integer CPU kernel: batched matmul of integer operands through a product table.
//
// Compiled on first use by approxsim.ops._int_cpu (the same compiler and flags as the float
// kernel) and called through ctypes; one call computes one block of the output, the caller
// runs blocks on its own threads, or approxsim_int_gemm_parts runs them on the OpenMP team
// torch uses (see _parallel.h).
//
// Semantics (DESIGN §2): operands are integer values in [min, min + rows); the product of a
// and b is table[a - min][b - min] (int32), and C[r, n] = Σ_k table[a[r,k] - min][b[k,n] - min]
// is an exact integer sum. Integer addition is associative, so any order gives the same bits
// as long as nothing overflows: partial sums over a k tile are int32 (the caller bounds the k
// tile by (2^31 - 1) / max|table|), and they are added into C as int32 or int64 (the caller
// picks int64 when K · max|table| could leave int32).
//
// Row gather (DESIGN §4): per tile of NT columns of B and k tile, a table
//     V[kk, i, c] = table[i, b[k0 + kk, n0 + c] - min]
// so that C[r, n0 + c] = Σ_kk V[kk, a[r, k0 + kk] - min, c]: one contiguous vector add per
// (r, k), no per-product table lookup. Building V costs rows · kt · NT entries per tile; it is
// repaid over the rows of A.

#include <stdint.h>
#include <string.h>

#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include "_parallel.h"
#include "_simd.h"

namespace {

typedef int32_t v8i __attribute__((vector_size(32)));
constexpr int kPrefetchRows = 8;  // rows of A fetched ahead in the row loop

#if defined(__AVX512F__)
// Store sixteen V rows (i0..i0+16) of sixteen columns (c0..c0+16) held transposed in blk,
// as VT (16-bit entries by truncation, exact for the tables the caller gives them).
template <typename VT>
inline void store_block16x16(VT* vk, int NT, int i0, int c0, __m512* blk) {
    for (int p = 0; p < 16; ++p) {
        VT* dst = vk + (int64_t)(i0 + p) * NT + c0;
        if constexpr (std::is_same<VT, int32_t>::value) {
            _mm512_storeu_ps(dst, blk[p]);
        } else {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                                _mm512_cvtepi32_epi16(_mm512_castps_si512(blk[p])));
        }
    }
}
#endif

// Element types of the operands, as the Python side numbers them.
enum Kind { kInt8 = 0, kUInt8 = 1, kInt16 = 2, kInt32 = 3, kInt64 = 4 };

inline int64_t load_value(const void* p, int kind, int64_t i) {
    switch (kind) {
        case kInt8: return static_cast<const int8_t*>(p)[i];
        case kUInt8: return static_cast<const uint8_t*>(p)[i];
        case kInt16: return static_cast<const int16_t*>(p)[i];
        case kInt32: return static_cast<const int32_t*>(p)[i];
        default: return static_cast<const int64_t*>(p)[i];
    }
}

// Write eight V rows (i0..i0+8) of eight columns (c0..c0+8) held transposed in blk, as VT.
// 16-bit entries are packed with saturation, which is exact: the caller picks a 16-bit VT only
// for tables whose entries all fit it.
#if defined(__AVX2__)
template <typename VT>
inline void store_block(VT* vk, int NT, int i0, int c0, __m256* blk);

template <>
inline void store_block<int32_t>(int32_t* vk, int NT, int i0, int c0, __m256* blk) {
    for (int p = 0; p < 8; ++p)
        _mm256_storeu_ps(reinterpret_cast<float*>(vk + (int64_t)(i0 + p) * NT + c0), blk[p]);
}

template <typename VT>
inline void store_block16(VT* vk, int NT, int i0, int c0, __m256* blk) {
    for (int p = 0; p < 8; ++p) {
        __m256i x = _mm256_castps_si256(blk[p]);
        __m256i packed = std::is_same<VT, uint16_t>::value ? _mm256_packus_epi32(x, x)
                                                          : _mm256_packs_epi32(x, x);
        // Lanes are (x0-3, x0-3, x4-7, x4-7): gather the 64-bit halves x0-3, x4-7 in front.
        packed = _mm256_permute4x64_epi64(packed, 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(vk + (int64_t)(i0 + p) * NT + c0),
                         _mm256_castsi256_si128(packed));
    }
}

template <>
inline void store_block<uint16_t>(uint16_t* vk, int NT, int i0, int c0, __m256* blk) {
    store_block16<uint16_t>(vk, NT, i0, c0, blk);
}

template <>
inline void store_block<int16_t>(int16_t* vk, int NT, int i0, int c0, __m256* blk) {
    store_block16<int16_t>(vk, NT, i0, c0, blk);
}
#endif

#if defined(__AVX2__)
// V rows i0..i0+16, columns c0..c0+16 from 16-bit table columns src[q] (q = column):
// two 8x8 transposes of 16-bit lanes side by side in 256-bit registers (low half columns
// c0..c0+8, high half c0+8..c0+16), for rows i0..i0+8 and then i0+8..i0+16.
template <typename VT>
inline void store_block16x16_epi16(VT* vk, int NT, int i0, int c0, const VT* const* src) {
    for (int h = 0; h < 2; ++h) {
        const int i = i0 + 8 * h;
        __m256i x[8];
        for (int q = 0; q < 8; ++q) {
            __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[q] + i));
            __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[q + 8] + i));
            x[q] = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
        }
        __m256i a[8], b[8];
        for (int q = 0; q < 4; ++q) {
            a[2 * q] = _mm256_unpacklo_epi16(x[2 * q], x[2 * q + 1]);
            a[2 * q + 1] = _mm256_unpackhi_epi16(x[2 * q], x[2 * q + 1]);
        }
        for (int q = 0; q < 2; ++q) {
            for (int s = 0; s < 2; ++s) {
                b[4 * q + 2 * s] = _mm256_unpacklo_epi32(a[4 * q + s], a[4 * q + s + 2]);
                b[4 * q + 2 * s + 1] = _mm256_unpackhi_epi32(a[4 * q + s], a[4 * q + s + 2]);
            }
        }
        for (int p = 0; p < 4; ++p) {
            VT* row = vk + (int64_t)(i + 2 * p) * NT + c0;
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(row),
                                _mm256_unpacklo_epi64(b[p], b[p + 4]));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + NT),
                                _mm256_unpackhi_epi64(b[p], b[p + 4]));
        }
    }
}
#endif

// Build V for columns n0..n0+nt (padded to NT with column index 0: padding columns are never
// stored) and k0..k0+kt. table_t is the transposed table (row j = the products with b = j).
// Returns nonzero when a value of B lies outside the table.
template <int NT, typename VT>
int build_v(const void* b, int b_kind, int64_t sbk, int64_t sbn, int64_t k0, int kt,
            int64_t n0, int nt, const int32_t* table_t, const VT* table_tv, int rows,
            int64_t min_value, VT* v) {
    int32_t ib[NT];
    int bad = 0;
    for (int kk = 0; kk < kt; ++kk) {
        for (int c = 0; c < NT; ++c) {
            int64_t x = 0;
            if (c < nt) {
                x = load_value(b, b_kind, (k0 + kk) * sbk + (n0 + c) * sbn) - min_value;
                bad |= (uint64_t)x >= (uint64_t)rows;
                x &= rows - 1;  // stay inside the table; the caller raises on `bad`
            }
            ib[c] = (int32_t)x;
        }
        VT* vk = v + (int64_t)kk * rows * NT;
#if defined(__AVX512F__)
        if (NT % 16 == 0 && rows % 16 == 0) {
            // Sixteen table columns at a time, transposed in registers into sixteen V rows.
            for (int c0 = 0; c0 < NT; c0 += 16) {
                for (int i0 = 0; i0 < rows; i0 += 16) {
                    __m512 blk[16];
                    for (int q = 0; q < 16; ++q)
                        blk[q] = _mm512_loadu_ps(reinterpret_cast<const float*>(
                            table_t + (int64_t)ib[c0 + q] * rows + i0));
                    transpose16(blk);
                    store_block16x16<VT>(vk, NT, i0, c0, blk);
                }
            }
            continue;
        }
#endif
#if defined(__AVX2__)
        if constexpr (!std::is_same<VT, int32_t>::value) {
            if (table_tv != nullptr && NT % 16 == 0 && rows % 16 == 0) {
                // 16-bit entries from the 16-bit transposed table, sixteen columns at a time:
                // half the bytes read and half the shuffles of the int32 path (measured
                // 2x faster on AMD Zen 3).
                for (int c0 = 0; c0 < NT; c0 += 16) {
                    const VT* src[16];
                    for (int q = 0; q < 16; ++q) src[q] = table_tv + (int64_t)ib[c0 + q] * rows;
                    for (int i0 = 0; i0 < rows; i0 += 16)
                        store_block16x16_epi16(vk, NT, i0, c0, src);
                }
                continue;
            }
        }
        if (rows % 8 == 0) {
            // Eight table columns at a time, transposed in registers into eight V rows.
            for (int c0 = 0; c0 < NT; c0 += 8) {
                for (int i0 = 0; i0 < rows; i0 += 8) {
                    __m256 blk[8];
                    for (int q = 0; q < 8; ++q)
                        blk[q] = _mm256_loadu_ps(reinterpret_cast<const float*>(
                            table_t + (int64_t)ib[c0 + q] * rows + i0));
                    transpose8(blk);
                    store_block<VT>(vk, NT, i0, c0, blk);
                }
            }
            continue;
        }
#endif
        for (int c = 0; c < NT; ++c) {
            const int32_t* col = table_t + (int64_t)ib[c] * rows;
            for (int i = 0; i < rows; ++i) vk[(int64_t)i * NT + c] = (VT)col[i];
        }
    }
    return bad;
}

// Store (first k tile) or add one row's NT int32 partial sums into C (int32 or int64).
inline void store_row(const int32_t* acc, void* c, int c64, int64_t at, int64_t scn, int nt,
                      bool first) {
    if (c64) {
        int64_t* dst = static_cast<int64_t*>(c) + at;
        for (int q = 0; q < nt; ++q) dst[q * scn] = first ? acc[q] : dst[q * scn] + acc[q];
    } else {
        int32_t* dst = static_cast<int32_t*>(c) + at;
        if (scn == 1 && first) {
            memcpy(dst, acc, 4 * (size_t)nt);
        } else {
            for (int q = 0; q < nt; ++q) dst[q * scn] = first ? acc[q] : dst[q * scn] + acc[q];
        }
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int kLanes = 16;
typedef __m512i VecI;
template <typename VT>
inline VecI load_widened(const VT* p) {
    if constexpr (std::is_same<VT, int32_t>::value) {
        return _mm512_loadu_si512(p);
    } else if constexpr (std::is_same<VT, uint16_t>::value) {
        return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    } else {
        return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
}
inline VecI vec_zero() { return _mm512_setzero_si512(); }
inline VecI vec_add(VecI x, VecI y) { return _mm512_add_epi32(x, y); }
inline void vec_store(int32_t* p, VecI x) { _mm512_storeu_si512(p, x); }
#elif defined(__AVX2__)
constexpr int kLanes = 8;
typedef __m256i VecI;
template <typename VT>
inline VecI load_widened(const VT* p) {
    if constexpr (std::is_same<VT, int32_t>::value) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else if constexpr (std::is_same<VT, uint16_t>::value) {
        return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else {
        return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
}
inline VecI vec_zero() { return _mm256_setzero_si256(); }
inline VecI vec_add(VecI x, VecI y) { return _mm256_add_epi32(x, y); }
inline void vec_store(int32_t* p, VecI x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x);
}
#else
constexpr int kLanes = 8;
typedef v8i VecI;
template <typename VT>
inline VecI load_widened(const VT* p) {
    VecI x;
    for (int j = 0; j < 8; ++j) x[j] = p[j];
    return x;
}
inline VecI vec_zero() { return v8i{}; }
inline VecI vec_add(VecI x, VecI y) { return x + y; }
inline void vec_store(int32_t* p, VecI x) { memcpy(p, &x, 32); }
#endif

// Rows r_lo..r_hi of one (k tile, column tile) block through V: per row, the V rows its
// values pick are summed in registers (int32: the k tile is bounded so this is exact), then
// stored or added into C. Returns nonzero when a value of A lies outside the table.
template <int NT, typename VT, typename TA>
int gather_rows(const TA* a, int64_t sar, int64_t sak, int64_t r_lo, int64_t r_hi, int64_t k0,
                int kt, const VT* v, int rows, int64_t min_value, void* c, int c64,
                int64_t scr, int64_t scn, int64_t n0, int nt, bool first) {
    // Eight-column tiles on 16-lane vectors keep half a vector of padding.
    constexpr int kVecs = NT < kLanes ? 1 : NT / kLanes;
    constexpr int kWidth = kVecs * kLanes;
    const int64_t step = (int64_t)rows * NT;
    const int64_t mask = rows - 1;
    uint64_t bad = 0;
    for (int64_t r = r_lo; r < r_hi; ++r) {
        const TA* arow = a + r * sar + k0 * sak;
        // Rows of one k tile are far apart in A: fetch a few ahead.
        if (r + kPrefetchRows < r_hi) __builtin_prefetch(arow + kPrefetchRows * sar);
        VecI acc[kVecs];
        for (int p = 0; p < kVecs; ++p) acc[p] = vec_zero();
        const VT* vk = v;
        for (int kk = 0; kk < kt; ++kk, vk += step) {
            int64_t x = (int64_t)arow[kk * sak] - min_value;
            bad |= (uint64_t)x >= (uint64_t)rows;
            const VT* vr = vk + (x & mask) * NT;
            for (int p = 0; p < kVecs; ++p)
                acc[p] = vec_add(acc[p], load_widened<VT>(vr + kLanes * p));
        }
        if (!c64 && scn == 1 && nt == NT && NT >= kLanes) {
            // A full row of a contiguous int32 C: whole-vector stores. (Element-wise stores
            // here were measured 2-3x slower overall when A's rows are 256 bytes apart, as C's
            // are: the many small stores alias the next rows' loads.)
            int32_t* dst = static_cast<int32_t*>(c) + r * scr + n0;
            for (int p = 0; p < kVecs; ++p) {
                VecI x = first ? acc[p] : vec_add(acc[p], load_widened<int32_t>(dst + kLanes * p));
                vec_store(dst + kLanes * p, x);
            }
            continue;
        }
        int32_t out[kWidth];
        for (int p = 0; p < kVecs; ++p) vec_store(out + kLanes * p, acc[p]);
        store_row(out, c, c64, r * scr + n0 * scn, scn, nt, first);
    }
    return bad != 0;
}

template <int NT, typename VT, typename TA>
int gemm_int(const TA* a, int64_t sar, int64_t sak, const void* b, int b_kind, int64_t sbk,
             int64_t sbn, void* c, int c64, int64_t scr, int64_t scn, int64_t K, int64_t N,
             const int32_t* table_t, const VT* table_tv, int rows, int64_t min_value,
             int64_t r_lo, int64_t r_hi,
             int64_t t_lo, int64_t t_hi, int k_tile, void* work) {
    VT* v = static_cast<VT*>(work);
    int bad = 0;
    for (int64_t t = t_lo; t < t_hi; ++t) {
        int64_t n0 = t * NT;
        int nt = (int)(N - n0 < NT ? N - n0 : NT);
        for (int64_t k0 = 0; k0 < K; k0 += k_tile) {
            int kt = (int)(K - k0 < k_tile ? K - k0 : k_tile);
            bad |= build_v<NT, VT>(b, b_kind, sbk, sbn, k0, kt, n0, nt, table_t, table_tv, rows,
                                   min_value, v);
            bad |= gather_rows<NT, VT, TA>(a, sar, sak, r_lo, r_hi, k0, kt, v, rows, min_value,
                                           c, c64, scr, scn, n0, nt, k0 == 0);
        }
    }
    return bad;
}

// Direct kernel (few rows): per product one load from the table row that A's value picks,
//     C[r, n0 + q] = Σ_kk T[a[r, k0 + kk] - min][ib[kk, q]]
// with ib B's column indices of the tile, stored per group of eight columns (kk-major) so the
// inner loop reads them contiguously. Building V costs rows · kt · NT entries per tile; this
// costs nothing per tile beyond decoding B, so it wins where A has fewer rows than the table.
// Eight int32 sums in registers per group (the k tile is bounded so they are exact), one
// scalar load per product: hardware gathers measured slower (AMD Zen 3), and slower still
// on CPUs with the GDS mitigation.
constexpr int kGroup = 8;

template <int NT, typename VT, typename TA>
__attribute__((optimize("no-tree-vectorize")))  // scalar loads, never a gather
int gemm_direct(const TA* a, int64_t sar, int64_t sak, const void* b, int b_kind, int64_t sbk,
                int64_t sbn, void* c, int c64, int64_t scr, int64_t scn, int64_t K, int64_t N,
                const VT* table, int rows, int64_t min_value, int64_t r_lo, int64_t r_hi,
                int64_t t_lo, int64_t t_hi, int k_tile, void* work) {
    constexpr int kGroups = NT / kGroup;
    uint16_t* ib = static_cast<uint16_t*>(work);                            // (groups, kt, 8)
    int32_t* off = reinterpret_cast<int32_t*>(ib + (int64_t)k_tile * NT);  // (kt)
    const int64_t mask = rows - 1;
    uint64_t bad = 0;
    for (int64_t t = t_lo; t < t_hi; ++t) {
        const int64_t n0 = t * NT;
        const int nt = (int)(N - n0 < NT ? N - n0 : NT);
        const int groups = (nt + kGroup - 1) / kGroup;
        for (int64_t k0 = 0; k0 < K; k0 += k_tile) {
            const int kt = (int)(K - k0 < k_tile ? K - k0 : k_tile);
            for (int kk = 0; kk < kt; ++kk) {
                for (int q = 0; q < groups * kGroup; ++q) {
                    int64_t x = 0;  // padding columns read column 0 and are never stored
                    if (q < nt) {
                        x = load_value(b, b_kind, (k0 + kk) * sbk + (n0 + q) * sbn) - min_value;
                        bad |= (uint64_t)x >= (uint64_t)rows;
                    }
                    ib[((int64_t)(q / kGroup) * kt + kk) * kGroup + q % kGroup] =
                        (uint16_t)(x & mask);
                }
            }
            for (int64_t r = r_lo; r < r_hi; ++r) {
                const TA* arow = a + r * sar + k0 * sak;
                for (int kk = 0; kk < kt; ++kk) {
                    int64_t x = (int64_t)arow[kk * sak] - min_value;
                    bad |= (uint64_t)x >= (uint64_t)rows;
                    off[kk] = (int32_t)((x & mask) * rows);
                }
                int32_t acc[kGroups * kGroup];
                for (int g = 0; g < groups; ++g) {
                    const uint16_t* ig = ib + (int64_t)g * kt * kGroup;
                    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
                    for (int kk = 0; kk < kt; ++kk) {
                        const VT* row = table + off[kk];
                        const uint16_t* ik = ig + kk * kGroup;
                        s0 += row[ik[0]];
                        s1 += row[ik[1]];
                        s2 += row[ik[2]];
                        s3 += row[ik[3]];
                        s4 += row[ik[4]];
                        s5 += row[ik[5]];
                        s6 += row[ik[6]];
                        s7 += row[ik[7]];
                    }
                    int32_t* o = acc + g * kGroup;
                    o[0] = s0, o[1] = s1, o[2] = s2, o[3] = s3;
                    o[4] = s4, o[5] = s5, o[6] = s6, o[7] = s7;
                }
                store_row(acc, c, c64, r * scr + n0 * scn, scn, nt, k0 == 0);
            }
        }
    }
    return bad != 0;
}

// Rows r_lo..r_hi and column tiles t_lo..t_hi of one batch by the row gather (direct = 0)
// or the direct kernel (direct = 1).
template <int NT, typename VT>
int gemm_any_a(const void* a, int a_kind, int64_t sar, int64_t sak, const void* b, int b_kind,
               int64_t sbk, int64_t sbn, void* c, int c64, int64_t scr, int64_t scn, int64_t K,
               int64_t N, const int32_t* table_t, const void* table_d, int rows,
               int64_t min_value, int64_t r_lo, int64_t r_hi, int64_t t_lo, int64_t t_hi,
               int k_tile, int direct, void* work) {
    const VT* td = static_cast<const VT*>(table_d);
#define APPROXSIM_INT_A(KIND, T)                                                             \
    case KIND: {                                                                             \
        const T* at = static_cast<const T*>(a);                                              \
        if (direct)                                                                          \
            return gemm_direct<NT, VT, T>(at, sar, sak, b, b_kind, sbk, sbn, c, c64, scr, scn, \
                                          K, N, td, rows, min_value, r_lo, r_hi, t_lo, t_hi, \
                                          k_tile, work);                                     \
        return gemm_int<NT, VT, T>(at, sar, sak, b, b_kind, sbk, sbn, c, c64, scr, scn, K, N, \
                                   table_t, td ? td + (int64_t)rows * rows : nullptr, rows,  \
                                   min_value, r_lo, r_hi, t_lo, t_hi, k_tile,                \
                                   work);                                                    \
    }
    switch (a_kind) {
        APPROXSIM_INT_A(kInt8, int8_t)
        APPROXSIM_INT_A(kUInt8, uint8_t)
        APPROXSIM_INT_A(kInt16, int16_t)
        APPROXSIM_INT_A(kInt32, int32_t)
        APPROXSIM_INT_A(kInt64, int64_t)
    }
#undef APPROXSIM_INT_A
    return -1;
}

template <int NT>
int gemm_any_v(int v_kind, const void* a, int a_kind, int64_t sar, int64_t sak, const void* b,
               int b_kind, int64_t sbk, int64_t sbn, void* c, int c64, int64_t scr, int64_t scn,
               int64_t K, int64_t N, const int32_t* table_t, const void* table_d, int rows,
               int64_t min_value, int64_t r_lo, int64_t r_hi, int64_t t_lo, int64_t t_hi,
               int k_tile, int direct, void* work) {
#define APPROXSIM_INT_V(VKIND, VT)                                                           \
    case VKIND:                                                                              \
        return gemm_any_a<NT, VT>(a, a_kind, sar, sak, b, b_kind, sbk, sbn, c, c64, scr, scn, \
                                  K, N, table_t, table_d, rows, min_value, r_lo, r_hi, t_lo,  \
                                  t_hi, k_tile, direct, work);
    switch (v_kind) {
        APPROXSIM_INT_V(0, int32_t)
        APPROXSIM_INT_V(1, uint16_t)
        APPROXSIM_INT_V(2, int16_t)
    }
#undef APPROXSIM_INT_V
    return -1;
}

}  // namespace

extern "C" {

// Bytes of scratch `work` that approxsim_int_gemm needs for (k_tile, n_tile, rows) with V
// entries of `v_bytes` bytes (the row gather) or for the direct kernel (`direct` nonzero).
int64_t approxsim_int_work(int k_tile, int n_tile, int rows, int v_bytes, int direct) {
    if (direct) return (int64_t)k_tile * (2 * n_tile + 4) + 64;
    return (int64_t)k_tile * rows * n_tile * v_bytes + 64;
}

// C[b, r, n] for batches b_lo..b_hi, rows r_lo..r_hi and column tiles t_lo..t_hi (of n_tile
// columns); strides in elements. a_kind/b_kind: element types (enum Kind); c64: C is int64
// (else int32); table_t: the transposed (rows, rows) table, contiguous; rows a power of two;
// v_kind: V's entries as int32 (0), uint16 (1) or int16 (2) — 16 bits only when every table
// entry fits them; table_d: null, or the (rows, rows) table (row = A's value) followed by its
// transpose, both contiguous, entries of V's type (the row gather builds 16-bit V tiles from
// the transpose; the direct kernel reads the table); direct: the row gather (0) or the direct
// kernel (1, which needs table_d).
// Returns 0, 1 when an operand value lies outside [min_value, min_value + rows) (C is then
// meaningless), or -1 for an unsupported argument.
int approxsim_int_gemm(const void* a, int a_kind, int64_t sab, int64_t sar, int64_t sak,
                       const void* b, int b_kind, int64_t sbb, int64_t sbk, int64_t sbn, void* c,
                       int c64, int64_t scb, int64_t scr, int64_t scn, int64_t K, int64_t N,
                       const int32_t* table_t, const void* table_d, int rows,
                       int64_t min_value, int64_t b_lo, int64_t b_hi, int64_t r_lo,
                       int64_t r_hi, int64_t t_lo, int64_t t_hi, int n_tile, int k_tile,
                       int v_kind, int direct, void* work) {
    if (rows < 1 || (rows & (rows - 1)) != 0 || a_kind < 0 || a_kind > 4 || b_kind < 0 ||
        b_kind > 4 || (direct && (rows > 4096 || table_d == nullptr)))
        return -1;
    const int a_size[5] = {1, 1, 2, 4, 8};
    const int c_size = c64 ? 8 : 4;
    int bad = 0;
    for (int64_t bi = b_lo; bi < b_hi; ++bi) {
        const void* ab = static_cast<const char*>(a) + bi * sab * a_size[a_kind];
        const void* bb = static_cast<const char*>(b) + bi * sbb * a_size[b_kind];
        void* cb = static_cast<char*>(c) + bi * scb * c_size;
        int status;
        switch (n_tile) {
#define APPROXSIM_INT_CASE(T)                                                                \
    case T:                                                                                  \
        status = gemm_any_v<T>(v_kind, ab, a_kind, sar, sak, bb, b_kind, sbk, sbn, cb, c64,  \
                               scr, scn, K, N, table_t, table_d, rows, min_value, r_lo,      \
                               r_hi, t_lo, t_hi, k_tile, direct, work);                      \
        break;
            APPROXSIM_INT_CASE(8)
            APPROXSIM_INT_CASE(16)
            APPROXSIM_INT_CASE(32)
            APPROXSIM_INT_CASE(64)
#undef APPROXSIM_INT_CASE
            default:
                return -1;
        }
        if (status < 0) return -1;
        bad |= status;
    }
    return bad;
}

// 1 when this kernel's parallel loops run on OpenMP (see _parallel.h), else 0.
int approxsim_openmp() { return approxsim_parallel::openmp_enabled(); }

// Threads in the team of the last parallel loop (1 when it ran serially).
int approxsim_last_team() { return approxsim_parallel::last_team(); }

// approxsim_int_gemm over n_parts blocks parts[j] = (b_lo, b_hi, r_lo, r_hi, t_lo, t_hi), on
// up to `threads` threads: block j with work + j·work_len bytes as scratch and status[j] for
// its return value.
void approxsim_int_gemm_parts(const void* a, int a_kind, int64_t sab, int64_t sar, int64_t sak,
                              const void* b, int b_kind, int64_t sbb, int64_t sbk, int64_t sbn,
                              void* c, int c64, int64_t scb, int64_t scr, int64_t scn, int64_t K,
                              int64_t N, const int32_t* table_t, const void* table_d,
                              int rows, int64_t min_value, const int64_t* parts,
                              int64_t n_parts, int n_tile, int k_tile, int v_kind, int direct,
                              char* work, int64_t work_len, int32_t* status, int threads) {
    approxsim_parallel::for_parts(n_parts, threads, [&](int64_t j) {
        const int64_t* p = parts + 6 * j;
        status[j] = approxsim_int_gemm(a, a_kind, sab, sar, sak, b, b_kind, sbb, sbk, sbn, c, c64,
                                       scb, scr, scn, K, N, table_t, table_d, rows, min_value,
                                       p[0], p[1], p[2], p[3], p[4], p[5], n_tile, k_tile,
                                       v_kind, direct, work + j * work_len);
    });
}

}  // extern "C"
