// The AVX2 + FMA float32 delta product (delta_avx2.cpp, the only file built with those
// flags). Call avx2_supported() first: on other CPUs the portable kernels in linear.h run.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hyprvdb_cpu {

// Whether this CPU has AVX2 and FMA and the file was built for them.
bool avx2_supported();

// Tokens per chunk, and the scratch (in floats) one call needs for k input features.
int avx2_chunk();
size_t avx2_scratch_floats(int k);

// Rows [r0, r1) of y[b, r] (+)= scale * x[b] . dW[r] for the tokens of chunk `chunk`
// (b in [chunk * avx2_chunk(), ...) below batch). dW is CSR (indptr, indices, data).
void delta_avx2(const int* indptr, const int* indices, const float* data, const float* x,
                long long ldx, int k, int batch, float* y, long long ldy, float scale,
                bool accumulate, int chunk, int r0, int r1, float* scratch);

}  // namespace hyprvdb_cpu
