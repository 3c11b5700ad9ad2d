// approxsim lut-gradient CPU kernel: the two gradient-table GEMMs of the `lut` backward.
//
// Compiled on first use by approxsim.ops._lut_grad_cpu (the compiler and flags of the other
// kernels) and called through ctypes. For one group of codes qa (R, K), qb (K, N), weights
// g_a, g_b (R, N) and float tables Ga, Gb (C, C) indexed by code - qmin:
//     grad_a[r, k] = Σ_n g_a[r, n] · Ga[qa[r, k] - qmin, qb[k, n] - qmin]
//     grad_b[k, n] = Σ_r g_b[r, n] · Gb[qa[r, k] - qmin, qb[k, n] - qmin]
//
// Per reduction index k the (C, N) table V[i, n] = G[i, qb[k, n] - qmin] turns each product
// row into a contiguous row of V (DESIGN §4's row idea): grad_a[r, k] is the dot of g_a[r, :]
// with V_a[qa[r, k], :], and grad_b[k, :] += g_b[r, :] · V_b[qa[r, k], :], one vector FMA per
// (r, k) and column vector. Where the rows are too few to repay building V (R below about C),
// the "direct" mode reads G's row qa[r, k] and gathers its entries qb[k, :] instead.
//
// Loops: per k block (the V tables of a few k, sized for L2), per row tile (its weight rows
// stay in L1), per k of the block, per row. Codes and grad_a are read and written along r, so
// they stream best laid out k-major (the caller's choice, strides given).
//
// Determinism: one call owns whole reduction indices k (a span of the flattened (group, k)
// range), so every output element is summed by one thread, in the accumulator type T (float
// or double; the products of two floats are exact in double): grad_a over n in vector lanes,
// then across the lanes; grad_b over the rows of each row tile (even and odd rows apart, then
// added), then tile after tile. None of it depends on the split or on the k block size.

#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include "_parallel.h"

namespace {

// Vector width in bytes (APPROXSIM_VEC_BYTES overrides it, to exercise the 64-byte code on a
// machine without AVX-512).
#if defined(APPROXSIM_VEC_BYTES)
constexpr int kVecBytes = APPROXSIM_VEC_BYTES;
#elif defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif

typedef float vf __attribute__((vector_size(kVecBytes)));
typedef double vd __attribute__((vector_size(kVecBytes)));

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
    typedef vf type;
};
template <>
struct VecOf<double> {
    typedef vd type;
};

template <typename T>
constexpr int lanes() {
    return kVecBytes / (int)sizeof(T);
}

template <typename T>
inline typename VecOf<T>::type load(const T* p) {
    typename VecOf<T>::type x;
    memcpy(&x, p, sizeof x);
    return x;
}

template <typename T>
inline void store(T* p, typename VecOf<T>::type x) {
    memcpy(p, &x, sizeof x);
}

// The lanes of x summed in a fixed order (the upper half folded onto the lower, repeatedly).
template <typename T>
inline T hsum(typename VecOf<T>::type x) {
    constexpr int L = lanes<T>();
    if constexpr (L == 16) x += __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1,
                                                          2, 3, 4, 5, 6, 7);
    if constexpr (L >= 8) {
        if constexpr (L == 8)
            x += __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3);
        else
            x += __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
    }
    if constexpr (L == 4) x += __builtin_shufflevector(x, x, 2, 3, 0, 1);
    if constexpr (L == 8) x += __builtin_shufflevector(x, x, 2, 3, 0, 1, 2, 3, 0, 1);
    if constexpr (L == 16)
        x += __builtin_shufflevector(x, x, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
    return x[0] + x[1];
}

// Element types of the codes, as the Python side numbers them.
enum Kind { kInt16 = 0, kInt32 = 1 };

inline int64_t load_code(const void* p, int kind, int64_t i) {
    return kind == kInt16 ? (int64_t) static_cast<const int16_t*>(p)[i]
                          : (int64_t) static_cast<const int32_t*>(p)[i];
}

// Shapes, strides (in elements) and pointers of one call.
struct Problem {
    const void* qa;
    int qa_kind;
    int64_t sqa_g, sqa_r, sqa_k;
    const void* qb;
    int qb_kind;
    int64_t sqb_g, sqb_k, sqb_n;
    const float* g_a;  // (G, R, N) contiguous, or null
    const float* g_b;  // (G, R, N) contiguous, or null
    const float* ga;   // (C, C)
    const float* gb;   // (C, C)
    float* out_a;      // (G, R, K), strides below
    int64_t soa_g, soa_r, soa_k;
    float* out_b;      // (G, K, N) contiguous
    int64_t R, K, N;
    int C;
    int64_t qmin;
};

inline int64_t padded(int64_t n, int lanes_) { return (n + lanes_ - 1) / lanes_ * lanes_; }

// Rows of one row tile: its weight rows stay in L1 while every k of the block passes over them.
template <typename T>
inline int row_tile(int64_t np) {
    int64_t rt = 16384 / (np * (int64_t)sizeof(T));
    rt = rt < 8 ? 8 : rt > 256 ? 256 : rt;
    return (int)(rt & ~(int64_t)1);
}

// Scratch of one call: for each of the kb indices k of a block, the V tables (C × Np each
// side, V mode) and the column codes; the B-side sums; one row tile of padded weight rows per
// side; and the row codes of one (tile, k).
template <typename T>
struct Scratch {
    T* va;
    T* vb;
    T* acc_b;
    T* tile_a;
    T* tile_b;
    int32_t* xs;
    int32_t* cols;
};

template <typename T>
int64_t scratch_bytes(int C, int64_t N, int kb, bool v_mode) {
    const int64_t np = padded(N, lanes<T>());
    const int64_t rt = row_tile<T>(np);
    int64_t t = (v_mode ? 2 * (int64_t)kb * C * np : 0) + kb * np + 2 * rt * np;
    return t * (int64_t)sizeof(T) + 4 * (rt + (int64_t)kb * np) + 256;
}

template <typename T>
Scratch<T> carve(void* work, int C, int64_t N, int kb, bool v_mode) {
    const int64_t np = padded(N, lanes<T>());
    const int64_t rt = row_tile<T>(np);
    uintptr_t p = ((uintptr_t)work + 63) & ~(uintptr_t)63;
    Scratch<T> s;
    T* t = reinterpret_cast<T*>(p);
    s.va = t;
    if (v_mode) t += (int64_t)kb * C * np;
    s.vb = t;
    if (v_mode) t += (int64_t)kb * C * np;
    s.acc_b = t;
    t += kb * np;
    s.tile_a = t;
    t += rt * np;
    s.tile_b = t;
    t += rt * np;
    s.xs = reinterpret_cast<int32_t*>(t);
    s.cols = s.xs + rt;
    return s;
}

// Weight rows r0..r0+rows of g as T, zero-padded to np (or g itself where no copy is needed).
template <typename T>
inline const T* weight_tile(const float* g, int64_t N, int64_t np, int rows, T* buf) {
    if (sizeof(T) == sizeof(float) && N == np) return reinterpret_cast<const T*>(g);
    for (int r = 0; r < rows; ++r) {
        for (int64_t n = 0; n < N; ++n) buf[r * np + n] = (T)g[r * N + n];
        for (int64_t n = N; n < np; ++n) buf[r * np + n] = 0;
    }
    return buf;
}

// Vector j of the product row for code x: V row x (V mode) or G's row x gathered at cols.
template <typename T, bool VMode>
inline typename VecOf<T>::type product_vec(const T* vk, const float* table, const int32_t* cols,
                                           int64_t x, int64_t np, int C, int64_t n) {
    typedef typename VecOf<T>::type vt;
    if (VMode) return load<T>(vk + x * np + n);
    const float* row = table + x * C;
#if defined(__AVX512F__) && !defined(APPROXSIM_VEC_BYTES)
    if constexpr (sizeof(T) == 4) {
        __m512 v = _mm512_i32gather_ps(_mm512_loadu_si512(cols + n), row, 4);
        vt out;
        memcpy(&out, &v, sizeof out);
        return out;
    } else {
        __m512d v = _mm512_cvtps_pd(_mm256_i32gather_ps(
            row, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cols + n)), 4));
        vt out;
        memcpy(&out, &v, sizeof out);
        return out;
    }
#elif defined(__AVX2__) && !defined(APPROXSIM_VEC_BYTES)
    if constexpr (sizeof(T) == 4) {
        __m256 v = _mm256_i32gather_ps(
            row, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cols + n)), 4);
        vt out;
        memcpy(&out, &v, sizeof out);
        return out;
    } else {
        __m256d v = _mm256_cvtps_pd(
            _mm_i32gather_ps(row, _mm_loadu_si128(reinterpret_cast<const __m128i*>(cols + n)), 4));
        vt out;
        memcpy(&out, &v, sizeof out);
        return out;
    }
#else
    constexpr int L = lanes<T>();
    vt out;
    for (int j = 0; j < L; ++j) out[j] = (T)row[cols[n + j]];
    return out;
#endif
}

// The column codes of k0..k0+kt (minus qmin; zero past N) and, in V mode, the V tables.
// Returns nonzero when a code of qb lies outside the tables.
template <typename T, bool VMode>
int build_block(const Problem& p, int64_t g, int64_t k0, int kt, Scratch<T>& s) {
    const int64_t np = padded(p.N, lanes<T>());
    const char* qb = static_cast<const char*>(p.qb) +
                     g * p.sqb_g * (p.qb_kind == kInt16 ? 2 : 4);
    int bad = 0;
    for (int kk = 0; kk < kt; ++kk) {
        int32_t* cols = s.cols + kk * np;
        for (int64_t n = 0; n < np; ++n) {
            int64_t x = 0;
            if (n < p.N) {
                x = load_code(qb, p.qb_kind, (k0 + kk) * p.sqb_k + n * p.sqb_n) - p.qmin;
                bad |= (uint64_t)x >= (uint64_t)p.C;
                x = (uint64_t)x < (uint64_t)p.C ? x : 0;
            }
            cols[n] = (int32_t)x;
        }
        if (!VMode) continue;
        for (int side = 0; side < 2; ++side) {
            const float* table = side == 0 ? p.ga : p.gb;
            T* v = (side == 0 ? s.va : s.vb) + (int64_t)kk * p.C * np;
            if ((side == 0 ? p.g_a : p.g_b) == nullptr) continue;
            for (int i = 0; i < p.C; ++i) {
                T* dst = v + (int64_t)i * np;
                for (int64_t n = 0; n < np; n += lanes<T>())
                    store<T>(dst + n, product_vec<T, false>(nullptr, table, cols, i, np, p.C, n));
                for (int64_t n = p.N; n < np; ++n) dst[n] = 0;
            }
        }
    }
    return bad;
}

// B side of one (row tile, k): acc[n] += Σ_r w[r, n]·P[x_r, n], NV vectors held in registers
// (two sets, even and odd rows, added at the end), or any width through memory (NV = 0).
template <typename T, bool VMode, int NV>
void tile_b(const T* w, const int32_t* xs, int rows, const T* vk, const float* table,
            const int32_t* cols, int64_t np, int C, T* acc) {
    typedef typename VecOf<T>::type vt;
    constexpr int L = lanes<T>();
    if (NV == 0) {
        for (int r = 0; r < rows; ++r)
            for (int64_t n = 0; n < np; n += L)
                store<T>(acc + n, load<T>(acc + n) + load<T>(w + r * np + n) *
                                                         product_vec<T, VMode>(vk, table, cols,
                                                                               xs[r], np, C, n));
        return;
    }
    vt s0[NV > 0 ? NV : 1] = {}, s1[NV > 0 ? NV : 1] = {};
    int r = 0;
    for (; r + 1 < rows; r += 2) {
        for (int j = 0; j < NV; ++j) {
            s0[j] += load<T>(w + r * np + j * L) *
                     product_vec<T, VMode>(vk, table, cols, xs[r], np, C, j * L);
            s1[j] += load<T>(w + (r + 1) * np + j * L) *
                     product_vec<T, VMode>(vk, table, cols, xs[r + 1], np, C, j * L);
        }
    }
    if (r < rows)
        for (int j = 0; j < NV; ++j)
            s0[j] += load<T>(w + r * np + j * L) *
                     product_vec<T, VMode>(vk, table, cols, xs[r], np, C, j * L);
    for (int j = 0; j < NV; ++j) store<T>(acc + j * L, load<T>(acc + j * L) + (s0[j] + s1[j]));
}

// A side of one (row tile, k): out[r·so] = Σ_n w[r, n]·P[x_r, n], NV vectors unrolled (or
// any width, NV = 0).
template <typename T, bool VMode, int NV>
void tile_a(const T* w, const int32_t* xs, int rows, const T* vk, const float* table,
            const int32_t* cols, int64_t np, int C, float* out, int64_t so) {
    typedef typename VecOf<T>::type vt;
    constexpr int L = lanes<T>();
    for (int r = 0; r < rows; ++r) {
        const T* wr = w + r * np;
        vt acc = {};
        if (NV == 0) {
            for (int64_t n = 0; n < np; n += L)
                acc += load<T>(wr + n) * product_vec<T, VMode>(vk, table, cols, xs[r], np, C, n);
        } else {
            for (int j = 0; j < NV; ++j)
                acc += load<T>(wr + j * L) *
                       product_vec<T, VMode>(vk, table, cols, xs[r], np, C, j * L);
        }
        out[r * so] = (float)hsum<T>(acc);
    }
}

// Rows 0..R of one k block, a row tile at a time: A-side dots and B-side accumulations.
template <typename T, bool VMode, typename QA>
int block_rows(const Problem& p, int64_t g, int64_t k0, int kt, Scratch<T>& s) {
    const int64_t np = padded(p.N, lanes<T>());
    const int nv = (int)(np / lanes<T>());
    const int rt = row_tile<T>(np);
    const QA* qa = static_cast<const QA*>(p.qa) + g * p.sqa_g + k0 * p.sqa_k;
    const float* ga_w = p.g_a ? p.g_a + g * p.R * p.N : nullptr;
    const float* gb_w = p.g_b ? p.g_b + g * p.R * p.N : nullptr;
    float* out_a = p.out_a ? p.out_a + g * p.soa_g + k0 * p.soa_k : nullptr;
    const int64_t R = p.R, qmin = p.qmin;
    const int C = p.C;
    uint64_t bad = 0;
    if (gb_w) memset(s.acc_b, 0, sizeof(T) * kt * np);
    for (int64_t r0 = 0; r0 < R; r0 += rt) {
        const int rows = (int)(R - r0 < rt ? R - r0 : rt);
        const T* wa = ga_w ? weight_tile<T>(ga_w + r0 * p.N, p.N, np, rows, s.tile_a) : nullptr;
        const T* wb = gb_w ? weight_tile<T>(gb_w + r0 * p.N, p.N, np, rows, s.tile_b) : nullptr;
        for (int kk = 0; kk < kt; ++kk) {
            const QA* col = qa + r0 * p.sqa_r + kk * p.sqa_k;
            for (int r = 0; r < rows; ++r) {
                int64_t x = (int64_t)col[r * p.sqa_r] - qmin;
                bad |= (uint64_t)x >= (uint64_t)C;
                s.xs[r] = (int32_t)((uint64_t)x < (uint64_t)C ? x : 0);
            }
            const int32_t* cols = s.cols + kk * np;
            const int64_t v_off = (int64_t)kk * C * np;
            if (wa) {
                const T* vk = s.va + v_off;
                float* out = out_a + r0 * p.soa_r + kk * p.soa_k;
                const int64_t so = p.soa_r;
                switch (nv) {
                    case 1: tile_a<T, VMode, 1>(wa, s.xs, rows, vk, p.ga, cols, np, C, out, so); break;
                    case 2: tile_a<T, VMode, 2>(wa, s.xs, rows, vk, p.ga, cols, np, C, out, so); break;
                    case 3: tile_a<T, VMode, 3>(wa, s.xs, rows, vk, p.ga, cols, np, C, out, so); break;
                    case 4: tile_a<T, VMode, 4>(wa, s.xs, rows, vk, p.ga, cols, np, C, out, so); break;
                    default: tile_a<T, VMode, 0>(wa, s.xs, rows, vk, p.ga, cols, np, C, out, so);
                }
            }
            if (wb) {
                const T* vk = s.vb + v_off;
                T* acc = s.acc_b + kk * np;
                switch (nv) {
                    case 1: tile_b<T, VMode, 1>(wb, s.xs, rows, vk, p.gb, cols, np, C, acc); break;
                    case 2: tile_b<T, VMode, 2>(wb, s.xs, rows, vk, p.gb, cols, np, C, acc); break;
                    case 3: tile_b<T, VMode, 3>(wb, s.xs, rows, vk, p.gb, cols, np, C, acc); break;
                    case 4: tile_b<T, VMode, 4>(wb, s.xs, rows, vk, p.gb, cols, np, C, acc); break;
                    default: tile_b<T, VMode, 0>(wb, s.xs, rows, vk, p.gb, cols, np, C, acc);
                }
            }
        }
    }
    if (gb_w) {
        float* out_b = p.out_b + (g * p.K + k0) * p.N;
        for (int kk = 0; kk < kt; ++kk)
            for (int64_t n = 0; n < p.N; ++n) out_b[kk * p.N + n] = (float)s.acc_b[kk * np + n];
    }
    return bad != 0;
}

// Flattened (group, k) units u_lo..u_hi in blocks of at most kb indices k.
template <typename T, bool VMode>
int run_span(const Problem& p, int64_t u_lo, int64_t u_hi, int kb, void* work) {
    Scratch<T> s = carve<T>(work, p.C, p.N, kb, VMode);
    int bad = 0;
    for (int64_t u = u_lo; u < u_hi;) {
        const int64_t g = u / p.K, k0 = u % p.K;
        int64_t kt = p.K - k0 < kb ? p.K - k0 : kb;
        if (u + kt > u_hi) kt = u_hi - u;
        bad |= build_block<T, VMode>(p, g, k0, (int)kt, s);
        if (p.qa_kind == kInt16)
            bad |= block_rows<T, VMode, int16_t>(p, g, k0, (int)kt, s);
        else
            bad |= block_rows<T, VMode, int32_t>(p, g, k0, (int)kt, s);
        u += kt;
    }
    return bad;
}

int run_any(const Problem& p, int64_t u_lo, int64_t u_hi, int kb, int v_mode, int wide,
            void* work) {
    if (wide) return v_mode ? run_span<double, true>(p, u_lo, u_hi, kb, work)
                            : run_span<double, false>(p, u_lo, u_hi, kb, work);
    return v_mode ? run_span<float, true>(p, u_lo, u_hi, kb, work)
                  : run_span<float, false>(p, u_lo, u_hi, kb, work);
}

}  // namespace

extern "C" {

// Bytes of scratch one call needs: C codes, N columns, k blocks of kb, V mode or direct, T =
// double (wide) or float.
int64_t approxsim_lut_grad_work(int C, int64_t N, int kb, int v_mode, int wide) {
    return wide ? scratch_bytes<double>(C, N, kb, v_mode != 0)
                : scratch_bytes<float>(C, N, kb, v_mode != 0);
}

// The flattened (group, k) units [u_lo, u_hi) of both sums (a side skipped where its weights
// are null). qa (G, R, K) and qb (G, K, N): int16 (kind 0) or int32 (kind 1) codes, strides in
// elements; g_a, g_b (G, R, N) and out_b (G, K, N) contiguous float32, out_a (G, R, K) float32
// with strides soa_*; ga, gb (C, C) contiguous float32. Codes and A-side outputs contiguous
// along r (stride 1) stream best. Returns 0, or 1 when a code lies outside [qmin, qmin + C)
// (the outputs are then meaningless).
int approxsim_lut_grad(const void* qa, int qa_kind, int64_t sqa_g, int64_t sqa_r, int64_t sqa_k,
                       const void* qb, int qb_kind, int64_t sqb_g, int64_t sqb_k, int64_t sqb_n,
                       const float* g_a, const float* g_b, const float* ga, const float* gb,
                       float* out_a, int64_t soa_g, int64_t soa_r, int64_t soa_k, float* out_b,
                       int64_t R, int64_t K, int64_t N, int C,
                       int64_t qmin, int64_t u_lo, int64_t u_hi, int kb, int v_mode, int wide,
                       void* work) {
    Problem p{qa,    qa_kind, sqa_g, sqa_r, sqa_k, qb, qb_kind, sqb_g, sqb_k, sqb_n, g_a, g_b,
              ga,    gb,      out_a, soa_g, soa_r, soa_k, out_b,   R,     K,     N,     C,   qmin};
    return run_any(p, u_lo, u_hi, kb, v_mode, wide, work);
}

// 1 when this kernel's parallel loops run on OpenMP (see _parallel.h), else 0.
int approxsim_openmp() { return approxsim_parallel::openmp_enabled(); }

// Threads in the team of the last parallel loop (1 when it ran serially).
int approxsim_last_team() { return approxsim_parallel::last_team(); }

// approxsim_lut_grad over n_parts spans parts[j] = (u_lo, u_hi) on up to `threads` threads:
// span j with work + j·work_len bytes of scratch and status[j] for its return value.
void approxsim_lut_grad_parts(const void* qa, int qa_kind, int64_t sqa_g, int64_t sqa_r,
                              int64_t sqa_k, const void* qb, int qb_kind, int64_t sqb_g,
                              int64_t sqb_k, int64_t sqb_n, const float* g_a, const float* g_b,
                              const float* ga, const float* gb, float* out_a, int64_t soa_g,
                              int64_t soa_r, int64_t soa_k, float* out_b,
                              int64_t R, int64_t K, int64_t N, int C, int64_t qmin,
                              const int64_t* parts, int64_t n_parts, int kb, int v_mode,
                              int wide, char* work, int64_t work_len, int32_t* status,
                              int threads) {
    Problem p{qa,    qa_kind, sqa_g, sqa_r, sqa_k, qb, qb_kind, sqb_g, sqb_k, sqb_n, g_a, g_b,
              ga,    gb,      out_a, soa_g, soa_r, soa_k, out_b,   R,     K,     N,     C,   qmin};
    approxsim_parallel::for_parts(n_parts, threads, [&](int64_t j) {
        status[j] = run_any(p, parts[2 * j], parts[2 * j + 1], kb, v_mode, wide,
                            work + j * work_len);
    });
}

}  // extern "C"
