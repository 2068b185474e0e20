// XLA FFI targets for CUDA (built with nvcc where a CUDA compiler and jaxlib are found):
// hyprvdb.jax's delta products inside jitted JAX code on a GPU, launched on XLA's stream, with
// no Python per layer. The kernels are kernels/matmul.cu's (the per-thread logic of
// kernels/sparse_ops.cuh, which the CPU extension runs too).
//
// hyprvdb_delta_accumulate          y += scale * x @ dW.T (y aliased to its input), by the
//                                   row kernel or the staged one as sparse_ops.cuh's rule picks
// hyprvdb_delta_accumulate_segments y[b] += scale * x[b] @ dW_seg[b].T over stacked deltas
//
// Leading dimensions of x are flattened: x is (batch, k), y (batch, rows).
#include <Python.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "xla/ffi/api/ffi.h"
#include "../ffi_shapes.h"
#include "../../kernels/matmul.cu"

namespace ffi = xla::ffi;

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxGridY = 65535;
constexpr int kMaxSegments = 4096;  // 48 KiB of shared memory for the tile builder
constexpr int kMaxDevices = 64;

// A device attribute, asked once per device (the launches ask for each call).
int device_attribute(cudaDeviceAttr attr, std::atomic<int>* cache) {
    int dev = 0;
    cudaGetDevice(&dev);
    int v = dev >= 0 && dev < kMaxDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
    if (v == 0) {
        cudaDeviceGetAttribute(&v, attr, dev);
        if (dev >= 0 && dev < kMaxDevices) cache[dev].store(v, std::memory_order_relaxed);
    }
    return v;
}

// Per device: multiprocessors, opt-in shared memory, and how much each staged kernel took.
std::atomic<int> g_sms[kMaxDevices], g_smem_optin[kMaxDevices], g_staged_opt_in[kMaxDevices],
    g_segments_opt_in[kMaxDevices];

ffi::Error launched(const char* what) {
    const cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return ffi::Error::Success();
    return ffi::Error::Internal(std::string(what) + ": " + cudaGetErrorString(err));
}

// The tiles of a mixed batch, on the device, in one block: rows counted per segment, each
// segment's rows placed after the segments before it (their order within a segment is not the
// batch's: every row's sum is its own, so results do not depend on it), tiles of at most
// nb rows of one segment. tiles[3t..3t+2] = (start in order, rows, segment); n_tiles[0]
// is the count, and the product kernel's blocks past it return at once. Segments outside
// 0..nseg-1 (the -1 rows) are left out. shared: 3 * nseg ints.
__global__ void segment_tiles_device(const int* __restrict__ seg, int batch, int nseg, int nb,
                                     int* __restrict__ order, int* __restrict__ tiles,
                                     int* __restrict__ n_tiles) {
    extern __shared__ int sh[];
    int* count = sh;             // rows of each segment
    int* start = sh + nseg;      // first position in order
    int* fill = sh + 2 * nseg;   // next free position
    for (int s = threadIdx.x; s < nseg; s += blockDim.x) count[s] = 0;
    __syncthreads();
    for (int b = threadIdx.x; b < batch; b += blockDim.x) {
        const int s = seg[b];
        if (s >= 0 && s < nseg) atomicAdd(&count[s], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int at = 0, t = 0;
        for (int s = 0; s < nseg; ++s) {
            start[s] = fill[s] = at;
            for (int k = 0; k < count[s]; k += nb, ++t) {
                tiles[3 * t] = at + k;
                tiles[3 * t + 1] = min(nb, count[s] - k);
                tiles[3 * t + 2] = s;
            }
            at += count[s];
        }
        n_tiles[0] = t;
    }
    __syncthreads();
    for (int b = threadIdx.x; b < batch; b += blockDim.x) {
        const int s = seg[b];
        if (s >= 0 && s < nseg) order[atomicAdd(&fill[s], 1)] = b;
    }
}

// The mixed batch over device-built tiles: blocks past the tile count return.
__global__ void delta_matmul_segments_counted(const int* __restrict__ indptr,
                                              const int* __restrict__ indices,
                                              const float* __restrict__ data,
                                              const float* __restrict__ x, long long ldx,
                                              float* y, long long ldy, int rows,
                                              const int* __restrict__ order,
                                              const int* __restrict__ tiles,
                                              const int* __restrict__ n_tiles, int tile0,
                                              float scale) {
    const int t = tile0 + blockIdx.y;
    if (t < n_tiles[0])
        segments_tile<float>(indptr, indices, data, x, ldx, y, ldy, rows, order, tiles, t,
                             scale);
}

// The same, staged: tiles of at most bt rows, bt * k floats of dynamic shared memory.
__global__ void delta_matmul_segments_staged_counted(
    const int* __restrict__ indptr, const int* __restrict__ indices,
    const float* __restrict__ data, const float* __restrict__ x, long long ldx, float* y,
    long long ldy, int rows, int k, int bt, const int* __restrict__ order,
    const int* __restrict__ tiles, const int* __restrict__ n_tiles, int tile0, float scale) {
    const int t = tile0 + blockIdx.y;
    if (t < n_tiles[0])
        segments_staged_tile<float>(indptr, indices, data, x, ldx, y, ldy, rows, k, bt, order,
                                    tiles, t, scale);
}

// Lets a staged kernel take smem bytes of dynamic shared memory (past 48 KiB a kernel must
// opt in), once per device and size.
template <typename Kernel>
void opt_in(Kernel kernel, int smem, std::atomic<int>* done) {
    if (smem <= 48 * 1024) return;
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev >= 0 && dev < kMaxDevices && done[dev].load(std::memory_order_relaxed) >= smem)
        return;
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (dev >= 0 && dev < kMaxDevices) done[dev].store(smem, std::memory_order_relaxed);
}

// The choice by shape of kernels/sparse_ops.cuh for float32 (ops.gpu_plan follows the same
// rule): the staged kernel's batch tile and row groups when it is the pick, else bt = 0.
struct Plan {
    int bt = 0;
    long long groups = 0;
};

Plan staged_plan(int64_t rows, int64_t k, int64_t nnz, int64_t batch) {
    const int sms = device_attribute(cudaDevAttrMultiProcessorCount, g_sms);
    const int optin = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, g_smem_optin);
    Plan p;
    const int bt = staged_batch_tile(k, sizeof(float), std::min(optin, HVDB_STAGED_SMEM), batch);
    const long long groups = bt ? staged_row_groups(rows, batch, bt, HVDB_STAGED_WARPS, sms) : 0;
    if (product_choice(rows, k, nnz, batch, sizeof(float), bt, groups, false) == kProductStaged)
        p.bt = bt, p.groups = groups;
    return p;
}

ffi::Error DeltaAccumulateCuda(cudaStream_t stream, ffi::Buffer<ffi::S32> indptr,
                               ffi::Buffer<ffi::S32> indices, ffi::Buffer<ffi::F32> data,
                               ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> y_in,
                               ffi::ResultBuffer<ffi::F32> y, float scale) {
    hyprvdb_ffi_shapes::Product p;
    if (auto err = hyprvdb_ffi_shapes::accumulate(indptr, x, y_in, y, &p); err.failure())
        return err;
    const int64_t rows = p.rows, k = p.k, batch = p.batch;
    if (y_in.typed_data() != y->typed_data())
        cudaMemcpyAsync(y->typed_data(), y_in.typed_data(), y->size_bytes(),
                        cudaMemcpyDeviceToDevice, stream);
    if (rows == 0 || batch == 0 || indices.element_count() == 0) return launched("copy");
    const dim3 block(32 * kWarpsPerBlock), staged(32 * HVDB_STAGED_WARPS);
    if (const Plan plan = staged_plan(rows, k, int64_t(indices.element_count()), batch); plan.bt) {
        const int bt = plan.bt, smem = int(k * bt * sizeof(float));
        opt_in(delta_matmul_staged<float>, smem, g_staged_opt_in);
        const int64_t per = int64_t(kMaxGridY) * bt;  // batch rows per launch
        for (int64_t b0 = 0; b0 < batch; b0 += per) {
            const int nb = int(std::min<int64_t>(per, batch - b0));
            delta_matmul_staged<float><<<dim3(unsigned(plan.groups), (nb + bt - 1) / bt), staged,
                                         size_t(smem), stream>>>(
                indptr.typed_data(), indices.typed_data(), data.typed_data(),
                x.typed_data() + b0 * k, k, y->typed_data() + b0 * rows, rows, int(rows),
                int(k), nb, bt, scale);
        }
        return launched("hyprvdb_delta_accumulate (staged)");
    }
    const int gx = int((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    const int64_t per = int64_t(kMaxGridY) * HVDB_NB;  // batch rows per launch
    for (int64_t b0 = 0; b0 < batch; b0 += per) {
        const int nb = int(std::min<int64_t>(per, batch - b0));
        delta_matmul<float><<<dim3(gx, (nb + HVDB_NB - 1) / HVDB_NB), block, 0, stream>>>(
            indptr.typed_data(), indices.typed_data(), data.typed_data(),
            x.typed_data() + b0 * k, k, y->typed_data() + b0 * rows, rows, int(rows), nb,
            scale);
    }
    return launched("hyprvdb_delta_accumulate");
}

ffi::Error DeltaAccumulateSegmentsCuda(cudaStream_t stream, ffi::ScratchAllocator scratch,
                                       ffi::Buffer<ffi::S32> indptr,
                                       ffi::Buffer<ffi::S32> indices,
                                       ffi::Buffer<ffi::F32> data, ffi::Buffer<ffi::F32> x,
                                       ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::F32> y_in,
                                       ffi::ResultBuffer<ffi::F32> y, float scale) {
    hyprvdb_ffi_shapes::Product p;
    if (auto err = hyprvdb_ffi_shapes::accumulate_segments(indptr, x, seg, y_in, y, &p);
        err.failure())
        return err;
    const int64_t rows = p.rows, k = p.k, batch = p.batch;
    const int nseg = p.nseg;
    if (nseg > kMaxSegments)  // the tile builder keeps three ints per segment in shared memory
        return ffi::Error::InvalidArgument(
            "hyprvdb_delta_accumulate_segments: " + std::to_string(nseg) +
            " deltas in one mixed batch; at most " + std::to_string(kMaxSegments));
    if (y_in.typed_data() != y->typed_data())
        cudaMemcpyAsync(y->typed_data(), y_in.typed_data(), y->size_bytes(),
                        cudaMemcpyDeviceToDevice, stream);
    if (batch == 0 || indices.element_count() == 0) return launched("copy");
    // the rule of a single delta, for the deltas' mean size over the whole batch
    const Plan plan =
        staged_plan(rows, k, int64_t(indices.element_count()) / std::max(nseg, 1), batch);
    const int nb = plan.bt ? plan.bt : HVDB_NB;
    const int64_t max_tiles = batch / nb + nseg + 1;
    auto order = scratch.Allocate(sizeof(int) * size_t(batch));
    auto tiles = scratch.Allocate(sizeof(int) * size_t(3 * max_tiles + 1));
    if (!order || !tiles)
        return ffi::Error::Internal("hyprvdb_delta_accumulate_segments: no scratch memory");
    int* order_p = static_cast<int*>(*order);
    int* tiles_p = static_cast<int*>(*tiles);
    int* count_p = tiles_p + 3 * max_tiles;
    segment_tiles_device<<<1, 1024, sizeof(int) * 3 * size_t(nseg), stream>>>(
        seg.typed_data(), int(batch), nseg, nb, order_p, tiles_p, count_p);
    const dim3 block(32 * kWarpsPerBlock), staged(32 * HVDB_STAGED_WARPS);
    if (plan.bt) {
        const int smem = int(k * nb * sizeof(float));
        opt_in(delta_matmul_segments_staged_counted, smem, g_segments_opt_in);
        for (int64_t t0 = 0; t0 < max_tiles; t0 += kMaxGridY) {
            const int n = int(std::min<int64_t>(kMaxGridY, max_tiles - t0));
            delta_matmul_segments_staged_counted<<<dim3(unsigned(plan.groups), n), staged,
                                                   size_t(smem), stream>>>(
                indptr.typed_data(), indices.typed_data(), data.typed_data(), x.typed_data(),
                k, y->typed_data(), rows, int(rows), int(k), nb, order_p, tiles_p, count_p,
                int(t0), scale);
        }
        return launched("hyprvdb_delta_accumulate_segments (staged)");
    }
    const int gx = int((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    for (int64_t t0 = 0; t0 < max_tiles; t0 += kMaxGridY) {
        const int n = int(std::min<int64_t>(kMaxGridY, max_tiles - t0));
        delta_matmul_segments_counted<<<dim3(gx, n), block, 0, stream>>>(
            indptr.typed_data(), indices.typed_data(), data.typed_data(), x.typed_data(), k,
            y->typed_data(), rows, int(rows), order_p, tiles_p, count_p, int(t0), scale);
    }
    return launched("hyprvdb_delta_accumulate_segments");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HyprvdbDeltaAccumulateCuda, DeltaAccumulateCuda,
                              hyprvdb_ffi_shapes::accumulate_operands(
                                  ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(HyprvdbDeltaAccumulateSegmentsCuda, DeltaAccumulateSegmentsCuda,
                              hyprvdb_ffi_shapes::accumulate_segments_operands(
                                  ffi::Ffi::Bind()
                                      .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                      .Ctx<ffi::ScratchAllocator>()));

// The module hyprvdb._cuda_ffi: the handlers as capsules named like the CPU targets, for
// jax.ffi.register_ffi_target(..., platform="CUDA"). Plain CPython API: nvcc builds it alone.
static PyModuleDef hyprvdb_cuda_ffi_module = {
    PyModuleDef_HEAD_INIT, "_cuda_ffi",
    "hyprvdb.jax's delta products as XLA FFI targets for CUDA (capsules)", -1, nullptr};

PyMODINIT_FUNC PyInit__cuda_ffi() {
    PyObject* m = PyModule_Create(&hyprvdb_cuda_ffi_module);
    if (!m) return nullptr;
    const struct {
        const char* name;
        void* fn;
    } targets[] = {
        {"hyprvdb_delta_accumulate", reinterpret_cast<void*>(HyprvdbDeltaAccumulateCuda)},
        {"hyprvdb_delta_accumulate_segments",
         reinterpret_cast<void*>(HyprvdbDeltaAccumulateSegmentsCuda)},
    };
    for (const auto& t : targets) {
        PyObject* cap = PyCapsule_New(t.fn, nullptr, nullptr);
        if (!cap || PyModule_AddObject(m, t.name, cap) < 0) {
            Py_XDECREF(cap);
            Py_DECREF(m);
            return nullptr;
        }
    }
    return m;
}
