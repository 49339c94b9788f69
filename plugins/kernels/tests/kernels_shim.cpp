/*
 * elfatt-deploy kernels: C entry points for the CPU tests (tests/test_kernels_*.py,
 * loaded with ctypes). Not part of the library.
 *
 * Built with g++ against plan.cpp alone (validation and workspace planning), or with
 * nvcc against every kernel source plus -DELFATT_SHIM_WITH_ENQUEUE (then enqueue's
 * host-side checks, which return before any CUDA call, can run without a GPU).
 */
#include "elfatt/elfatt_kernels.h"
#include "plan.h"

#include <cstddef>
#include <cstdint>

namespace
{

elfatt::AttentionParams makeParams(int64_t batch, int64_t height, int64_t width, int64_t channels,
    int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale, int32_t dtype,
    int32_t hasLepe) noexcept
{
    elfatt::AttentionParams p;
    p.batch = batch;
    p.height = height;
    p.width = width;
    p.channels = channels;
    p.globalHeads = globalHeads;
    p.localHeads = localHeads;
    p.windowH = windowH;
    p.windowW = windowW;
    p.scale = scale;
    p.dtype = static_cast<elfatt::DataType>(dtype);
    p.hasLepe = hasLepe != 0;
    return p;
}

//! makePlan for a KernelPath given as int; false for params it rejects.
bool planFor(elfatt::AttentionParams const& p, int32_t path, elfatt::detail::LaunchPlan& plan) noexcept
{
    return elfatt::detail::makePlan(p, static_cast<elfatt::KernelPath>(path), plan, nullptr, 0)
        == elfatt::Status::kSUCCESS;
}

} // namespace

extern "C"
{

__attribute__((visibility("default"))) int32_t elfattShimValidate(int64_t batch, int64_t height, int64_t width,
    int64_t channels, int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale,
    int32_t dtype, int32_t hasLepe, char* msg, size_t msgLen)
{
    elfatt::AttentionParams const p
        = makeParams(batch, height, width, channels, globalHeads, localHeads, windowH, windowW, scale, dtype, hasLepe);
    return static_cast<int32_t>(elfatt::validateParams(p, msg, msgLen));
}

__attribute__((visibility("default"))) uint64_t elfattShimWorkspace(int64_t batch, int64_t height, int64_t width,
    int64_t channels, int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale,
    int32_t dtype, int32_t hasLepe)
{
    elfatt::AttentionParams const p
        = makeParams(batch, height, width, channels, globalHeads, localHeads, windowH, windowW, scale, dtype, hasLepe);
    return static_cast<uint64_t>(elfatt::workspaceSize(p));
}

__attribute__((visibility("default"))) uint64_t elfattShimState(int64_t batch, int64_t height, int64_t width,
    int64_t channels, int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale,
    int32_t dtype, int32_t hasLepe)
{
    elfatt::AttentionParams const p
        = makeParams(batch, height, width, channels, globalHeads, localHeads, windowH, windowW, scale, dtype, hasLepe);
    return static_cast<uint64_t>(elfatt::stateSize(p));
}

//! The local-head kernel makePlan picks for these params and kernel path (LocalKernel as int),
//! -1 for params it rejects.
__attribute__((visibility("default"))) int32_t elfattShimLocalKernel(int64_t batch, int64_t height, int64_t width,
    int64_t channels, int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale,
    int32_t dtype, int32_t hasLepe, int32_t path)
{
    elfatt::detail::LaunchPlan plan;
    if (!planFor(makeParams(batch, height, width, channels, globalHeads, localHeads, windowH, windowW, scale, dtype,
                     hasLepe),
            path, plan))
    {
        return -1;
    }
    return static_cast<int32_t>(plan.localKernel);
}

//! Whether makePlan runs kernels v2 for these params and path (1, else 0; -1 for rejected params), and
//! their tile shapes: shape[0..17] = qTileH, qTileW, qTilesY, qTilesX, keyTiles, haloRows, chunks,
//! chunkTokens, oTileH, oTileW, oTilesY, oTilesX, oHaloRows, reductionItems, localItems, outputItems,
//! mergeGroups, mergeSlots.
__attribute__((visibility("default"))) int32_t elfattShimFusedPlan(int64_t batch, int64_t height, int64_t width,
    int64_t channels, int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale,
    int32_t dtype, int32_t hasLepe, int32_t path, int32_t* shape)
{
    elfatt::detail::LaunchPlan plan;
    if (!planFor(makeParams(batch, height, width, channels, globalHeads, localHeads, windowH, windowW, scale, dtype,
                     hasLepe),
            path, plan))
    {
        return -1;
    }
    elfatt::detail::FusedPlan const& f = plan.fusedPlan;
    int32_t const values[18] = {f.qTileH, f.qTileW, f.qTilesY, f.qTilesX, f.keyTiles, f.haloRows, f.chunks,
        f.chunkTokens, f.oTileH, f.oTileW, f.oTilesY, f.oTilesX, f.oHaloRows, f.reductionItems, f.localItems,
        f.outputItems, f.mergeGroups, f.mergeSlots};
    for (int32_t i = 0; i < 18; ++i)
    {
        shape[i] = values[i];
    }
    return plan.fused ? 1 : 0;
}

#ifdef ELFATT_SHIM_WITH_ENQUEUE
__attribute__((visibility("default"))) int32_t elfattShimEnqueue(int64_t batch, int64_t height, int64_t width,
    int64_t channels, int32_t globalHeads, int32_t localHeads, int32_t windowH, int32_t windowW, float scale,
    int32_t dtype, int32_t hasLepe, void const* qkv, void const* weight, void const* bias, void* out, void* workspace)
{
    elfatt::AttentionParams const p
        = makeParams(batch, height, width, channels, globalHeads, localHeads, windowH, windowW, scale, dtype, hasLepe);
    return static_cast<int32_t>(elfatt::enqueue(p, qkv, weight, bias, out, workspace, nullptr));
}

__attribute__((visibility("default"))) int32_t elfattShimInvalidValueCode()
{
    return static_cast<int32_t>(cudaErrorInvalidValue);
}
#endif
}
