/*
 * elfatt-deploy kernels: enqueue() — validation, planning, dispatch by dtype.
 */
#include "common.cuh"
#include "launch.h"

#include <cstdint>
#include <type_traits>

namespace elfatt
{
namespace
{

template <typename T>
cudaError_t runHeads(detail::LaunchPlan const& plan, void const* qkv, void const* lepeWeight, void const* lepeBias,
    void* out, void* workspace, uint32_t* counters, cudaStream_t stream) noexcept
{
    T const* q = static_cast<T const*>(qkv);
    // The LePE weight and bias hold T, or float32 with plan.lepeFloat32: only lepeAt reads them.
    T const* w = static_cast<T const*>(lepeWeight);
    T const* b = static_cast<T const*>(lepeBias);
    T* o = static_cast<T*>(out);
    if constexpr (!std::is_same<T, float>::value)
    {
        // Kernels v2 need sm_80 and 16-byte aligned qkv and out (16-byte vectors; the LePE
        // parameters are read element by element); elsewhere the tensor-core path (v1) runs.
        auto const aligned = [](void const* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
        if (plan.fused && aligned(qkv) && aligned(out) && detail::fusedAvailable(detail::currentComputeCapability()))
        {
            return detail::launchFused<T>(plan, q, lepeWeight, lepeBias, o, workspace, counters, stream);
        }
    }
    cudaError_t const status = detail::launchGlobalHeads<T>(plan, q, w, b, o, workspace, stream);
    if (status != cudaSuccess)
    {
        return status;
    }
    return detail::launchLocalHeads<T>(plan, q, w, b, o, stream);
}

} // namespace

cudaError_t enqueueWithPathAndState(AttentionParams const& params, KernelPath path, void const* qkv,
    void const* lepeWeight, void const* lepeBias, void* out, void* workspace, void* state, size_t stateBytes,
    cudaStream_t stream) noexcept
{
    detail::LaunchPlan plan;
    if (detail::makePlan(params, path, plan, nullptr, 0) != Status::kSUCCESS)
    {
        return cudaErrorInvalidValue;
    }
    if (plan.empty)
    {
        return cudaSuccess; // B, H or W = 0: nothing to read or write
    }
    if (qkv == nullptr || out == nullptr || (plan.hasLepe && lepeWeight == nullptr)
        || (plan.workspaceBytes > 0 && workspace == nullptr))
    {
        return cudaErrorInvalidValue;
    }
    if (reinterpret_cast<uintptr_t>(workspace) % alignof(float) != 0
        || reinterpret_cast<uintptr_t>(state) % alignof(uint32_t) != 0)
    {
        return cudaErrorInvalidValue;
    }
    if (plan.lepeFloat32
        && (reinterpret_cast<uintptr_t>(lepeWeight) % alignof(float) != 0
            || reinterpret_cast<uintptr_t>(lepeBias) % alignof(float) != 0))
    {
        return cudaErrorInvalidValue;
    }
    // Persistent counters where the caller gives enough of them, else the workspace's (zeroed per enqueue).
    uint32_t* const counters = state != nullptr && stateBytes >= plan.stateBytes && plan.stateBytes > 0
        ? static_cast<uint32_t*>(state)
        : nullptr;
    switch (plan.dtype)
    {
    case DataType::kFLOAT: return runHeads<float>(plan, qkv, lepeWeight, lepeBias, out, workspace, counters, stream);
    case DataType::kHALF:
        return runHeads<__half>(plan, qkv, lepeWeight, lepeBias, out, workspace, counters, stream);
    case DataType::kBF16:
        return runHeads<__nv_bfloat16>(plan, qkv, lepeWeight, lepeBias, out, workspace, counters, stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t enqueueWithPath(AttentionParams const& params, KernelPath path, void const* qkv, void const* lepeWeight,
    void const* lepeBias, void* out, void* workspace, cudaStream_t stream) noexcept
{
    return enqueueWithPathAndState(
        params, path, qkv, lepeWeight, lepeBias, out, workspace, /*state=*/nullptr, /*stateBytes=*/0, stream);
}

cudaError_t enqueue(AttentionParams const& params, void const* qkv, void const* lepeWeight, void const* lepeBias,
    void* out, void* workspace, cudaStream_t stream) noexcept
{
    return enqueueWithPath(params, defaultKernelPath(), qkv, lepeWeight, lepeBias, out, workspace, stream);
}

cudaError_t enqueueWithState(AttentionParams const& params, void const* qkv, void const* lepeWeight,
    void const* lepeBias, void* out, void* workspace, void* state, size_t stateBytes, cudaStream_t stream) noexcept
{
    return enqueueWithPathAndState(
        params, defaultKernelPath(), qkv, lepeWeight, lepeBias, out, workspace, state, stateBytes, stream);
}

} // namespace elfatt
