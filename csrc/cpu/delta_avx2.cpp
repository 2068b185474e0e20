// The float32 delta product for x86-64 CPUs with AVX2 and FMA, compiled with those flags in
// this file alone and chosen at run time (delta_avx2.h): y[b, r] (+)= scale * x[b] . dW[r].
//
// Tokens go in chunks of kChunk. A chunk of x is transposed in cache (k x kChunk, by 8x8
// register transposes), so each nonzero of dW is four vector FMAs over the chunk; eight rows'
// results are transposed back the same way and added to y.
//
// Nothing built here may end up running on a CPU without AVX2: the helpers are local to this
// file (an unnamed namespace) and no standard-library template is instantiated (its copy
// could be the one the linker keeps for the whole module); the CPU check itself is compiled
// elsewhere (delta_avx2.h).
#include "cpu/delta_avx2.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace {

inline int imin(int a, int b) { return a < b ? a : b; }
inline int iclamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

constexpr int kChunk = 32;  // tokens per chunk: four 8-float vectors

// Transpose the 8x8 block held in r[0..7] (r[i] = row i) in registers.
inline void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// xt[i * kChunk + t] = x[b0 + t, i] for i < k, t < kChunk (zero past the batch's end).
void load_chunk(const float* x, long long ldx, int k, int b0, int nb, float* xt) {
    const int k8 = k & ~7;
    for (int t0 = 0; t0 < kChunk; t0 += 8) {
        const int live = iclamp(nb - t0, 0, 8);
        if (live == 0) {
            for (int i = 0; i < k; ++i)
                _mm256_store_ps(xt + size_t(i) * kChunk + t0, _mm256_setzero_ps());
            continue;
        }
        const float* xr[8];
        for (int t = 0; t < 8; ++t) xr[t] = x + (long long)(b0 + t0 + imin(t, live - 1)) * ldx;
        for (int i0 = 0; i0 < k8; i0 += 8) {
            __m256 r[8];
            for (int t = 0; t < 8; ++t)
                r[t] = t < live ? _mm256_loadu_ps(xr[t] + i0) : _mm256_setzero_ps();
            transpose8(r);
            for (int i = 0; i < 8; ++i) _mm256_store_ps(xt + size_t(i0 + i) * kChunk + t0, r[i]);
        }
        for (int i = k8; i < k; ++i)
            for (int t = 0; t < 8; ++t) xt[size_t(i) * kChunk + t0 + t] = t < live ? xr[t][i] : 0.0f;
    }
}

// Rows [r0, r1) of the chunk's product, added to (or written into) y's rows b0 .. b0 + nb.
void rows_of_chunk(const int* indptr, const int* indices, const float* data, const float* xt,
                   int r0, int r1, int b0, int nb, float* y, long long ldy, float scale,
                   bool accumulate, float* yt /* 8 x kChunk, aligned */) {
    const __m256 vs = _mm256_set1_ps(scale);
    for (int rb = r0; rb < r1; rb += 8) {
        const int nr = imin(8, r1 - rb);
        for (int rr = 0; rr < 8; ++rr) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            if (rr < nr) {
                const int end = indptr[rb + rr + 1];
                for (int j = indptr[rb + rr]; j < end; ++j) {
                    const __m256 v = _mm256_broadcast_ss(data + j);
                    const float* p = xt + size_t(indices[j]) * kChunk;
                    a0 = _mm256_fmadd_ps(v, _mm256_load_ps(p), a0);
                    a1 = _mm256_fmadd_ps(v, _mm256_load_ps(p + 8), a1);
                    a2 = _mm256_fmadd_ps(v, _mm256_load_ps(p + 16), a2);
                    a3 = _mm256_fmadd_ps(v, _mm256_load_ps(p + 24), a3);
                }
            }
            float* o = yt + rr * kChunk;
            _mm256_store_ps(o, _mm256_mul_ps(a0, vs));
            _mm256_store_ps(o + 8, _mm256_mul_ps(a1, vs));
            _mm256_store_ps(o + 16, _mm256_mul_ps(a2, vs));
            _mm256_store_ps(o + 24, _mm256_mul_ps(a3, vs));
        }
        for (int t0 = 0; t0 < nb; t0 += 8) {
            __m256 r[8];
            for (int rr = 0; rr < 8; ++rr) r[rr] = _mm256_load_ps(yt + rr * kChunk + t0);
            transpose8(r);  // r[t] = the 8 rows' values for token t0 + t
            const int live = imin(8, nb - t0);
            for (int t = 0; t < live; ++t) {
                float* out = y + (long long)(b0 + t0 + t) * ldy + rb;
                if (nr == 8) {
                    const __m256 v = accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), r[t]) : r[t];
                    _mm256_storeu_ps(out, v);
                } else {
                    alignas(32) float tmp[8];
                    _mm256_store_ps(tmp, r[t]);
                    for (int rr = 0; rr < nr; ++rr) out[rr] = accumulate ? out[rr] + tmp[rr] : tmp[rr];
                }
            }
        }
    }
}

}  // namespace

namespace hyprvdb_cpu {

bool avx2_built() { return true; }

size_t avx2_scratch_floats(int k) { return size_t(k) * kChunk + 8 * kChunk + 8; }

int avx2_chunk() { return kChunk; }

void delta_avx2(const int* indptr, const int* indices, const float* data, const float* x,
                long long ldx, int k, int batch, float* y, long long ldy, float scale,
                bool accumulate, int chunk, int r0, int r1, float* scratch) {
    // 32-byte align the scratch (it holds avx2_scratch_floats(k) floats).
    float* xt = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch) + 31) & ~uintptr_t(31));
    float* yt = xt + size_t(k) * kChunk;
    const int b0 = chunk * kChunk, nb = imin(kChunk, batch - b0);
    load_chunk(x, ldx, k, b0, nb, xt);
    rows_of_chunk(indptr, indices, data, xt, r0, r1, b0, nb, y, ldy, scale, accumulate, yt);
}

}  // namespace hyprvdb_cpu

#else  // not x86-64 with AVX2: the caller keeps its portable path

namespace hyprvdb_cpu {
bool avx2_built() { return false; }
size_t avx2_scratch_floats(int) { return 0; }
int avx2_chunk() { return 0; }
void delta_avx2(const int*, const int*, const float*, const float*, long long, int, int, float*,
                long long, float, bool, int, int, int, float*) {}
}  // namespace hyprvdb_cpu

#endif
