// The AVX2 + FMA float32 delta product (delta_avx2.cpp, the only file built with those
// flags). Call avx2_supported() first: on other CPUs the portable kernels in linear.h run.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hyprvdb_cpu {

// Whether delta_avx2.cpp was built for AVX2 + FMA (x86-64 only).
bool avx2_built();

// Whether this CPU has AVX2 and FMA and the kernel was built for them (compiled with the
// caller's flags, never with AVX2's).
inline bool avx2_supported() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return avx2_built() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

// Tokens per chunk, and the scratch (in floats) one call needs for k input features.
int avx2_chunk();
size_t avx2_scratch_floats(int k);

// Rows [r0, r1) of y[b, r] (+)= scale * x[b] . dW[r] for the tokens of chunk `chunk`
// (b in [chunk * avx2_chunk(), ...) below batch). dW is CSR (indptr, indices, data).
void delta_avx2(const int* indptr, const int* indices, const float* data, const float* x,
                long long ldx, int k, int batch, float* y, long long ldy, float scale,
                bool accumulate, int chunk, int r0, int r1, float* scratch);

}  // namespace hyprvdb_cpu
