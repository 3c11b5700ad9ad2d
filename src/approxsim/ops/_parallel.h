// Parallel loops shared by approxsim's compiled CPU kernels (_cpu_kernel.cc, _int_kernel.cc).
//
// Built with -fopenmp (where torch's own OpenMP runtime is the GNU libgomp), a kernel's
// libgomp.so.1 is the copy torch already loaded, so these loops run on the same OpenMP thread
// team as torch's operators: one set of worker threads for both, instead of approxsim's
// threads and torch's spinning OpenMP threads taking the cores from each other. Built without
// it, every loop runs serially and the caller splits the work over its own threads.
// Included by both kernels; its text is part of each kernel's cache key.
#pragma once

#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace approxsim_parallel {

// Threads of the last parallel loop's team (1 when it ran serially): lets tests see that a
// thread count set in torch reaches the kernel.
inline int& last_team() {
    static int team = 0;
    return team;
}

// Span j of [0, n) split into at most `parts` contiguous spans of (almost) equal size, as
// approxsim.ops._threads.split_range splits it; returns false past the last span.
inline bool span(int64_t n, int64_t parts, int64_t j, int64_t& lo, int64_t& hi) {
    int64_t p = parts < n ? parts : n;
    if (p < 1) p = 1;
    const int64_t step = (n + p - 1) / p;
    lo = j * step;
    hi = lo + step < n ? lo + step : n;
    return lo < n;
}

// f(j) for j in [0, n): part j on thread j % threads of the OpenMP team, or all on the
// calling thread where threads <= 1, n <= 1 or the kernel was built without OpenMP.
template <class F>
void for_parts(int64_t n, int threads, F f) {
#ifdef _OPENMP
    if (threads > 1 && n > 1) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int64_t j = 0; j < n; ++j) {
            if (j == 0) last_team() = omp_get_num_threads();
            f(j);
        }
        return;
    }
#endif
    last_team() = 1;
    for (int64_t j = 0; j < n; ++j) f(j);
}

// 1 when the kernel including this runs its loops on OpenMP (built with -fopenmp), else 0.
inline int openmp_enabled() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

}  // namespace approxsim_parallel
