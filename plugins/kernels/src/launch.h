/*
 * elfatt-deploy kernels: launchers of the global and local heads (internal header).
 * Each is instantiated for float, __half and __nv_bfloat16 in its .cu file.
 */
#pragma once

#include "common.cuh"
#include "plan.h"

#include <cuda_runtime_api.h>

namespace elfatt
{
namespace detail
{

//! Global heads: context pass, merge, output pass (+ LePE over the whole grid).
//! Writes channels [0, c1) of out. Needs plan.workspaceBytes of workspace.
template <typename T>
cudaError_t launchGlobalHeads(LaunchPlan const& plan, T const* qkv, T const* lepeWeight, T const* lepeBias, T* out,
    void* workspace, cudaStream_t stream) noexcept;

//! Local heads: windowed softmax attention (+ LePE inside each window).
//! Writes channels [c1, C) of out. No workspace.
template <typename T>
cudaError_t launchLocalHeads(
    LaunchPlan const& plan, T const* qkv, T const* lepeWeight, T const* lepeBias, T* out, cudaStream_t stream) noexcept;

//! Local heads on tensor cores (local_attention_tc.cu); instantiated for __half and
//! __nv_bfloat16 only. The caller checks tensorCoresAvailable first.
template <typename T>
cudaError_t launchLocalHeadsTensorCore(LaunchPlan const& plan, Geometry const& g, T const* qkv, T const* lepeWeight,
    T const* lepeBias, T* out, cudaStream_t stream) noexcept;

//! Kernels v2 (fused_attention.cu), float16 / bfloat16, head dim 32 or 64 (plan.fused): one launch
//! for the global heads' context reduction and the local heads, one for the global heads' output.
//! Needs plan.workspaceBytes of workspace, 16-byte aligned qkv and out, and sm_80. counters: the
//! caller's persistent, zeroed chunk counters (plan.stateBytes; left zeroed), or nullptr: the
//! workspace's, zeroed with a cudaMemsetAsync first.
template <typename T>
cudaError_t launchFused(LaunchPlan const& plan, T const* qkv, void const* lepeWeight, void const* lepeBias, T* out,
    void* workspace, uint32_t* counters, cudaStream_t stream) noexcept;

//! Whether a device of this compute capability runs kernels v2 (sm_80: mma.sync bf16, cp.async).
bool fusedAvailable(int32_t computeCapability) noexcept;

//! Compute capability (major * 10 + minor) of the current device, cached per device; 0 if unknown.
int32_t currentComputeCapability() noexcept;

//! Whether a device of this compute capability (major * 10 + minor) runs the
//! tensor-core kernel for dtype: float16 from sm_70, bfloat16 from sm_80.
bool tensorCoresAvailable(DataType dtype, int32_t computeCapability) noexcept;

} // namespace detail
} // namespace elfatt
