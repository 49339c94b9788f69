/*
 * elfatt-deploy kernels: launchers of the global and local heads (internal header).
 * Each is instantiated for float, __half and __nv_bfloat16 in its .cu file.
 */
#pragma once

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

} // namespace detail
} // namespace elfatt
