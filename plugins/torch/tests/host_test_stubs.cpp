/*
 * elfatt-deploy: test doubles for the PyTorch binding's CPU test build (see host_test_stubs.h).
 */
#include "host_test_stubs.h"

namespace elfatt
{
namespace test
{
namespace
{
LaunchRecord gRecord{};
cudaError_t gResult{cudaSuccess};
} // namespace

LaunchRecord const& lastLaunch() noexcept
{
    return gRecord;
}

void setLaunchResult(cudaError_t result) noexcept
{
    gResult = result;
}

} // namespace test

cudaError_t enqueueWithPath(AttentionParams const& params, KernelPath path, void const* qkv, void const* lepeWeight,
    void const* lepeBias, void* out, void* workspace, cudaStream_t stream) noexcept
{
    test::LaunchRecord& r = test::gRecord;
    ++r.calls;
    r.params = params;
    r.path = path;
    r.qkv = qkv;
    r.lepeWeight = lepeWeight;
    r.lepeBias = lepeBias;
    r.out = out;
    r.workspace = workspace;
    r.state = nullptr;
    r.stateBytes = 0;
    r.withState = false;
    r.stream = stream;
    return test::gResult;
}

cudaError_t enqueueWithPathAndState(AttentionParams const& params, KernelPath path, void const* qkv,
    void const* lepeWeight, void const* lepeBias, void* out, void* workspace, void* state, size_t stateBytes,
    cudaStream_t stream) noexcept
{
    cudaError_t const result = enqueueWithPath(params, path, qkv, lepeWeight, lepeBias, out, workspace, stream);
    test::gRecord.state = state;
    test::gRecord.stateBytes = stateBytes;
    test::gRecord.withState = true;
    return result;
}

} // namespace elfatt

// The CUDA runtime's error texts (no libcudart in this build).
extern "C" char const* cudaGetErrorName(cudaError_t error)
{
    return error == cudaSuccess ? "cudaSuccess" : "cudaErrorInvalidValue";
}

extern "C" char const* cudaGetErrorString(cudaError_t error)
{
    return error == cudaSuccess ? "no error" : "invalid argument";
}
