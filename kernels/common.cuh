// Shared by the CUDA kernels (NVRTC through CuPy, or nvcc) and by the CPU extension (g++):
// the per-thread logic lives in HVDB_HD functions so the very same code runs on both.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define HVDB_HD __host__ __device__
#define HVDB_DEVICE 1
#define HVDB_UNROLL _Pragma("unroll")
#define HVDB_PRAGMA(x) _Pragma(#x)
#define HVDB_UNROLL_BY(n) HVDB_PRAGMA(unroll n)
#include <cuda_fp16.h>
#include <cuda_bf16.h>
typedef __half hvdb_half;
typedef __nv_bfloat16 hvdb_bf16;
__device__ inline int hvdb_popcount64(unsigned long long v) { return __popcll(v); }
__device__ inline float to_f32(float v) { return v; }
__device__ inline float to_f32(hvdb_half v) { return __half2float(v); }
__device__ inline float to_f32(hvdb_bf16 v) { return __bfloat162float(v); }
__device__ inline void from_f32(float v, float* out) { *out = v; }
__device__ inline void from_f32(float v, hvdb_half* out) { *out = __float2half_rn(v); }
__device__ inline void from_f32(float v, hvdb_bf16* out) { *out = __float2bfloat16_rn(v); }
#else
#define HVDB_HD
#define HVDB_UNROLL  // the host compiler unrolls by itself
#define HVDB_UNROLL_BY(n)
#include <cstring>
// On the host, 16-bit floats are their bit patterns (numpy float16 / ml_dtypes bfloat16).
struct hvdb_half { unsigned short bits; };
struct hvdb_bf16 { unsigned short bits; };
inline int hvdb_popcount64(unsigned long long v) { return __builtin_popcountll(v); }
inline float to_f32(float v) { return v; }
inline float to_f32(hvdb_bf16 v) {
    unsigned int u = (unsigned int)v.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float to_f32(hvdb_half v) {
    const unsigned int sign = (unsigned int)(v.bits & 0x8000) << 16;
    unsigned int exp = (v.bits >> 10) & 0x1f, man = v.bits & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {  // subnormal half: normalize
        int e = -1;
        do { man <<= 1; ++e; } while (!(man & 0x400));
        u = sign | ((unsigned int)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline void from_f32(float v, float* out) { *out = v; }
inline void from_f32(float v, hvdb_bf16* out) {
    unsigned int u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN
        out->bits = (unsigned short)((u >> 16) | 0x40);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    out->bits = (unsigned short)(u >> 16);
}
inline void from_f32(float v, hvdb_half* out) {
    unsigned int u;
    std::memcpy(&u, &v, 4);
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000);
    const unsigned int a = u & 0x7fffffffu;
    if (a > 0x7f800000u) { out->bits = sign | 0x7e00; return; }             // NaN
    if (a >= 0x477ff000u) { out->bits = sign | 0x7c00; return; }            // overflow: inf
    if (a < 0x38800000u) {  // below half's smallest normal: a subnormal half or 0
        const unsigned int s = 126 - (a >> 23);  // right shift taking the mantissa to 2^-24 units
        if (s >= 25) { out->bits = sign; return; }
        const unsigned int m = (a & 0x7fffffu) | 0x800000u;
        unsigned int h = m >> s;
        const unsigned int rem = m & ((1u << s) - 1), half = 1u << (s - 1);
        if (rem > half || (rem == half && (h & 1))) ++h;
        out->bits = sign | (unsigned short)h;
        return;
    }
    unsigned int h = ((a >> 13) - (112u << 10));
    const unsigned int rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
    out->bits = sign | (unsigned short)h;
}
#endif
