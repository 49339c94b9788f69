/*
 * elfatt-deploy: test doubles for the kernel API (see kernelStubs.h).
 *
 * enqueue is always a recorder (no GPU here). validateParams/workspaceSize are
 * stubs unless the driver is built with ELFATT_TEST_REAL_PLAN=1, in which case
 * the real host-only implementations of plugins/kernels/src/plan.cpp are linked.
 */
#include "kernelStubs.h"

#include <cstdio>

#ifndef ELFATT_TEST_REAL_PLAN
#define ELFATT_TEST_REAL_PLAN 0
#endif

namespace elfatt
{
namespace test
{
namespace
{
cudaError_t gEnqueueResult{cudaSuccess};
AttentionParams gWorkspaceParams{};
} // namespace

EnqueueRecord& lastEnqueue() noexcept
{
    static EnqueueRecord sRecord;
    return sRecord;
}

void setEnqueueResult(cudaError_t result) noexcept
{
    gEnqueueResult = result;
}

bool usesRealPlan() noexcept
{
    return ELFATT_TEST_REAL_PLAN != 0;
}

AttentionParams const& lastWorkspaceParams() noexcept
{
    return gWorkspaceParams;
}

} // namespace test

cudaError_t enqueue(AttentionParams const& params, void const* qkv, void const* lepeWeight, void const* lepeBias,
    void* out, void* workspace, cudaStream_t stream) noexcept
{
    test::EnqueueRecord& r = test::lastEnqueue();
    ++r.calls;
    r.params = params;
    r.qkv = qkv;
    r.lepeWeight = lepeWeight;
    r.lepeBias = lepeBias;
    r.out = out;
    r.workspace = workspace;
    r.state = nullptr;
    r.stateBytes = 0;
    r.stream = stream;
    return test::gEnqueueResult;
}

cudaError_t enqueueWithState(AttentionParams const& params, void const* qkv, void const* lepeWeight,
    void const* lepeBias, void* out, void* workspace, void* state, size_t stateBytes, cudaStream_t stream) noexcept
{
    cudaError_t const status = enqueue(params, qkv, lepeWeight, lepeBias, out, workspace, stream);
    test::lastEnqueue().state = state;
    test::lastEnqueue().stateBytes = stateBytes;
    return status;
}

#if !ELFATT_TEST_REAL_PLAN
// Stand-ins with the contract's obvious rules; the real ones are in plugins/kernels/src/plan.cpp.
Status validateParams(AttentionParams const& params, char* msg, size_t msgLen) noexcept
{
    int64_t const heads = static_cast<int64_t>(params.globalHeads) + params.localHeads;
    if (params.globalHeads < 0 || params.localHeads < 0 || heads < 1 || params.channels < 0
        || (heads > 0 && params.channels % heads != 0))
    {
        if (msg != nullptr && msgLen > 0)
        {
            std::snprintf(msg, msgLen, "stub validateParams: channels=%lld heads=%lld",
                static_cast<long long>(params.channels), static_cast<long long>(heads));
        }
        return Status::kINVALID_ARGUMENT;
    }
    int64_t elements = 0;
    if (__builtin_mul_overflow(params.batch, params.height, &elements)
        || __builtin_mul_overflow(elements, params.width, &elements)
        || __builtin_mul_overflow(elements, 3 * params.channels, &elements))
    {
        if (msg != nullptr && msgLen > 0)
        {
            std::snprintf(msg, msgLen, "stub validateParams: batch x height x width x 3C overflows int64");
        }
        return Status::kINVALID_ARGUMENT;
    }
    return Status::kSUCCESS;
}

size_t workspaceSize(AttentionParams const& params) noexcept
{
    test::gWorkspaceParams = params;
    int64_t const heads = static_cast<int64_t>(params.globalHeads) + params.localHeads;
    int64_t const d = heads > 0 ? params.channels / heads : 0;
    return static_cast<size_t>(params.batch * params.globalHeads * d * d * 4);
}

size_t stateSize(AttentionParams const& params) noexcept
{
    return static_cast<size_t>(params.batch * params.globalHeads * 4);
}
#endif

} // namespace elfatt
