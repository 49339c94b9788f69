/*
 * elfatt-deploy: test doubles for the kernel API, used only by the header-only
 * plugin test driver (elfattPluginTest.cpp). They let the driver link without a
 * GPU build of plugins/kernels and record what the plugin passes to the kernels.
 */
#pragma once

#include "elfatt/elfatt_kernels.h"

namespace elfatt
{
namespace test
{

//! What the last elfatt::enqueue / enqueueWithState call received.
struct EnqueueRecord
{
    int32_t calls{0};
    AttentionParams params{};
    void const* qkv{nullptr};
    void const* lepeWeight{nullptr};
    void const* lepeBias{nullptr};
    void* out{nullptr};
    void* workspace{nullptr};
    void* state{nullptr};
    size_t stateBytes{0};
    cudaStream_t stream{nullptr};
};

EnqueueRecord& lastEnqueue() noexcept;

//! The status the stub enqueue returns next (cudaSuccess by default).
void setEnqueueResult(cudaError_t result) noexcept;

//! True when validateParams/workspaceSize come from the real plugins/kernels/src/plan.cpp.
bool usesRealPlan() noexcept;

//! Params of the last workspaceSize call (stub mode only records them).
AttentionParams const& lastWorkspaceParams() noexcept;

} // namespace test
} // namespace elfatt
