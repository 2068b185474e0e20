// Entry points of the XLA FFI handlers in jax_ffi.cpp, for the bindings to hand to JAX.
#pragma once

namespace hyprvdb_ffi {
void* delta_matmul_t();
void* delta_values_grad();
void* delta_accumulate();
void* delta_accumulate_segments();
}  // namespace hyprvdb_ffi
