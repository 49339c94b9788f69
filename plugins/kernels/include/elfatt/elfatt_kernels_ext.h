/*
 * elfatt-deploy: optional extras of the ElfattAttention kernel library.
 *
 * Not needed by the TensorRT plugin: enqueue() in elfatt_kernels.h picks the
 * kernels itself. These entry points let the verification script and the
 * PyTorch extension force one implementation so that each can be checked
 * against the reference on its own.
 */
#pragma once

#include "elfatt/elfatt_kernels.h"

namespace elfatt
{

//! Which implementation runs the heads.
//!  - kAUTO:    the fastest available one for the shape (default).
//!  - kTILED:   local heads with the tiled SIMT FlashAttention-style kernel (head
//!              dim up to 64, padded with zeros); global heads with the context
//!              matrix staged in shared memory when it fits. Falls back to
//!              kGENERIC for a head dim the tiled kernels do not cover.
//!  - kGENERIC: the plain one-warp-per-query / context-in-global-memory kernels
//!              that work for every head dim (slow, simple, used as a cross-check).
//!  - kTENSOR_CORE: local heads with the tensor-core (wmma) kernel for float16
//!              (sm_70+) and bfloat16 (sm_80+), head dim up to 64; for float32, a
//!              larger head dim or an older device it behaves as kTILED.
//!  - kFUSED:   kernels v2 (float16/bfloat16, head dim 32 or 64, sm_80+, 16-byte aligned qkv and
//!              out; inline-PTX mma.sync, ldmatrix and cp.async; docs/kernels.md); elsewhere it
//!              behaves as kTENSOR_CORE.
//! kAUTO picks kFUSED where kernels v2 apply, else kTENSOR_CORE's kernels for float16/bfloat16
//! and kTILED's for float32.
//! The environment variable ELFATT_KERNEL_PATH (auto | tiled | generic | tensorcore | fused),
//! read once per process, sets the path that enqueue() uses.
enum class KernelPath : int32_t
{
    kAUTO = 0,
    kTILED = 1,
    kGENERIC = 2,
    kTENSOR_CORE = 3,
    kFUSED = 4,
};

//! enqueue() with an explicit kernel path; kAUTO behaves as enqueue() without
//! the environment override. Same contract and return values as enqueue().
cudaError_t enqueueWithPath(AttentionParams const& params, KernelPath path, void const* qkv, void const* lepeWeight,
    void const* lepeBias, void* out, void* workspace, cudaStream_t stream) noexcept;

//! enqueueWithState() with an explicit kernel path (the state is used by kernels v2 only).
cudaError_t enqueueWithPathAndState(AttentionParams const& params, KernelPath path, void const* qkv,
    void const* lepeWeight, void const* lepeBias, void* out, void* workspace, void* state, size_t stateBytes,
    cudaStream_t stream) noexcept;

//! The path enqueue() uses in this process (from ELFATT_KERNEL_PATH, else kAUTO).
KernelPath defaultKernelPath() noexcept;

//! Library version string, "1" for contract v1.
char const* kernelsVersion() noexcept;

} // namespace elfatt
