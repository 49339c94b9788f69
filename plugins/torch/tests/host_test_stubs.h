/*
 * elfatt-deploy: test doubles for the PyTorch binding's CPU test build
 * (ELFATT_TORCH_HOST_TEST, tests/test_kernels_torch.py). enqueueWithPath records what
 * the binding passes to the kernels instead of launching them; validateParams,
 * workspaceSize and defaultKernelPath are the real ones (plugins/kernels/src/plan.cpp).
 */
#pragma once

#include "elfatt/elfatt_kernels.h"
#include "elfatt/elfatt_kernels_ext.h"

#include <cstdint>

namespace elfatt
{
namespace test
{

//! What the last enqueueWithPath or enqueueWithPathAndState call received.
struct LaunchRecord
{
    int32_t calls{0};
    AttentionParams params{};
    KernelPath path{KernelPath::kAUTO};
    void const* qkv{nullptr};
    void const* lepeWeight{nullptr};
    void const* lepeBias{nullptr};
    void* out{nullptr};
    void* workspace{nullptr};
    void* state{nullptr};        //!< enqueueWithPathAndState only
    size_t stateBytes{0};
    bool withState{false};       //!< the call was enqueueWithPathAndState
    cudaStream_t stream{nullptr};
};

LaunchRecord const& lastLaunch() noexcept;

//! The status the stub enqueueWithPath returns from now on (cudaSuccess at first).
void setLaunchResult(cudaError_t result) noexcept;

} // namespace test
} // namespace elfatt
