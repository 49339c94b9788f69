/*
 * elfatt-deploy kernels v2 (KernelPath::kFUSED): the two launches of the op.
 *
 *   (memset of the merge trees' counters and max keys, with global heads; none where the caller
 *   owns persistent counters, enqueueWithState: the last block of each group zeroes its own)
 *   fusedPassKernel:   blocks [0, R) reduce the global heads' K/V chunks (the last block of each
 *                      group of 4 partials merges them, up a tree to the context), blocks
 *                      [R, R + L) run the local heads' query tiles. One grid: the local work never waits for the reduction, and
 *                      a B = 1 ViT-S problem at 64 x 64 tokens has R + L = 24 + 300 blocks.
 *   fusedOutputKernel: softmax(q) . ctx + LePE of the global heads, one block per 8 x 8 tokens
 *                      (with global heads only). On sm_90 a programmatic dependent launch (PDL,
 *                      cudaLaunchKernelEx): its blocks load the q tile, the LePE halo and weights
 *                      while the pass kernel finishes, then griddepcontrol.wait for the context.
 * float16 / bfloat16, head dim 32 or 64, sm_80+; see fused_local.cuh and fused_global.cuh.
 */
#include "fused_global.cuh"
#include "fused_local.cuh"
#include "launch.h"

#include <atomic>
#include <cstdint>

namespace elfatt
{
namespace detail
{
namespace
{

#ifndef ELFATT_FUSED_MIN_BLOCKS
#define ELFATT_FUSED_MIN_BLOCKS 4
#endif
//! Blocks per SM the register allocation must allow (4: at most 128 registers per thread).
constexpr int32_t kFUSED_MIN_BLOCKS = ELFATT_FUSED_MIN_BLOCKS;

template <typename T, int32_t kD>
__global__ void __launch_bounds__(kFUSED_THREADS, kFUSED_MIN_BLOCKS) fusedPassKernel(FusedArgs a, uint16_t const* __restrict__ qkv,
    void const* lepeWeight, void const* lepeBias, T* __restrict__ out, FusedWorkspace ws)
{
    if constexpr (ptx::kAVAILABLE)
    {
        ELFATT_DYNAMIC_SHARED(unsigned char, smem);
        // sm_90: the output kernel (a programmatic dependent launch) may be scheduled as soon as every
        // block of this grid has got here. Safe at once: its griddepcontrol.wait still waits for this
        // whole grid to complete and flush its memory before it reads the context.
        ptx::gridLaunchDependents();
        // The first blocks reduce, the others run local items, each kind in its own block-stride
        // loop (one loop over both would keep the loop invariants of both alive: register spills).
        // With the full grid (R + L blocks) that is one item per block; a single block does both.
        int32_t const grid = static_cast<int32_t>(gridDim.x);
        int32_t const block = static_cast<int32_t>(blockIdx.x);
        int32_t reducers = grid;
        if (a.localItems > 0)
        {
            int64_t const share = static_cast<int64_t>(grid) * a.reductionItems / (a.reductionItems + a.localItems);
            reducers = grid == 1 ? 1 : (a.reductionItems == 0 ? 0 : static_cast<int32_t>(min(max(share, int64_t{1}), int64_t{grid - 1})));
        }
        int32_t const firstLocal = grid == 1 ? 0 : reducers;
        if (block < reducers)
        {
            for (int32_t item = block; item < a.reductionItems; item += reducers)
            {
                fusedReductionItem<T, kD>(a, item, qkv, ws, smem);
            }
        }
        if (block >= firstLocal)
        {
            for (int32_t item = block - firstLocal; item < a.localItems; item += grid - firstLocal)
            {
                fusedLocalItem<T, kD>(a, item, qkv, lepeWeight, lepeBias, out, smem);
            }
        }
    }
    else
    {
#ifndef ELFATT_HOST_EMULATION
        __trap(); // never launched: the launcher checks for sm_80 first
#endif
    }
}

template <typename T, int32_t kD>
__global__ void __launch_bounds__(kFUSED_THREADS, kFUSED_MIN_BLOCKS) fusedOutputKernel(FusedArgs a, uint16_t const* __restrict__ qkv,
    void const* lepeWeight, void const* lepeBias, T* __restrict__ out, FusedWorkspace ws)
{
    if constexpr (ptx::kAVAILABLE)
    {
        ELFATT_DYNAMIC_SHARED(unsigned char, smem);
        for (int32_t item = static_cast<int32_t>(blockIdx.x); item < a.outputItems;
             item += static_cast<int32_t>(gridDim.x))
        {
            fusedOutputItem<T, kD>(a, item, qkv, lepeWeight, lepeBias, out, ws, smem);
        }
    }
    else
    {
#ifndef ELFATT_HOST_EMULATION
        __trap();
#endif
    }
}

FusedArgs makeFusedArgs(LaunchPlan const& plan) noexcept
{
    FusedPlan const& f = plan.fusedPlan;
    FusedArgs a{};
    a.batch = static_cast<int32_t>(plan.batch);
    a.height = static_cast<int32_t>(plan.height);
    a.width = static_cast<int32_t>(plan.width);
    a.channels = static_cast<int32_t>(plan.channels);
    a.globalHeads = static_cast<int32_t>(plan.globalHeads);
    a.localHeads = static_cast<int32_t>(plan.localHeads);
    a.globalChannels = static_cast<int32_t>(plan.globalChannels);
    a.windowH = static_cast<int32_t>(plan.windowH);
    a.windowW = static_cast<int32_t>(plan.windowW);
    a.windowsY = static_cast<int32_t>(plan.windowsY);
    a.windowsX = static_cast<int32_t>(plan.windowsX);
    a.qTileH = f.qTileH;
    a.qTileW = f.qTileW;
    a.qTilesY = f.qTilesY;
    a.qTilesX = f.qTilesX;
    a.keyTiles = f.keyTiles;
    a.haloRows = f.haloRows;
    a.localStages = f.keyTiles > 1 ? 2 : 1;
    a.chunks = f.chunks;
    a.mergeGroups = f.mergeGroups;
    a.mergeSlots = f.mergeSlots;
    a.chunkTokens = f.chunkTokens;
    a.oTileH = f.oTileH;
    a.oTileW = f.oTileW;
    a.oTilesY = f.oTilesY;
    a.oTilesX = f.oTilesX;
    a.oHaloRows = f.oHaloRows;
    a.reductionItems = plan.globalHeads > 0 ? f.reductionItems : 0;
    a.localItems = plan.localHeads > 0 ? f.localItems : 0;
    a.outputItems = plan.globalHeads > 0 ? f.outputItems : 0;
    a.scaleLog2 = plan.scale * kFUSED_LOG2E;
    a.hasLepe = plan.hasLepe;
    a.lepeFloat32 = plan.lepeFloat32;
    return a;
}

//! cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel and size above 48 KiB.
template <typename Kernel>
cudaError_t allowSharedMemory(Kernel kernel, size_t bytes, std::atomic<int32_t>& allowed) noexcept
{
    if (bytes <= 48 * 1024 || static_cast<size_t>(allowed.load(std::memory_order_relaxed)) >= bytes)
    {
        return cudaSuccess;
    }
    cudaError_t const status
        = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (status == cudaSuccess)
    {
        allowed.store(static_cast<int32_t>(bytes), std::memory_order_relaxed);
    }
    return status;
}

template <typename T, int32_t kD>
cudaError_t launchFusedDim(LaunchPlan const& plan, T const* qkv, void const* lepeWeight, void const* lepeBias, T* out,
    void* workspace, uint32_t* counters, cudaStream_t stream) noexcept
{
    FusedArgs const a = makeFusedArgs(plan);
    FusedWorkspace ws{};
    char* const base = static_cast<char*>(workspace);
    if (a.reductionItems > 0)
    {
        ws.ctxPartial = reinterpret_cast<float*>(base + plan.wsCtxPartial);
        ws.maxPartial = reinterpret_cast<float*>(base + plan.wsMaxPartial);
        ws.sumPartial = reinterpret_cast<float*>(base + plan.wsSumPartial);
        ws.ctx = reinterpret_cast<uint16_t*>(base + plan.wsCtx);
        if (counters != nullptr)
        {
            // The caller's persistent counters: zero now, and the pass kernel leaves them zeroed.
            ws.counters = counters;
        }
        else
        {
            ws.counters = reinterpret_cast<uint32_t*>(base + plan.wsCounters);
            cudaError_t const status = cudaMemsetAsync(ws.counters, 0,
                static_cast<size_t>(plan.batch * plan.globalHeads * a.mergeGroups * (1 + kD)) * sizeof(uint32_t),
                stream);
            if (status != cudaSuccess)
            {
                return status;
            }
        }
        ws.maxKeys = ws.counters + plan.batch * plan.globalHeads * a.mergeGroups;
    }
    uint16_t const* const q16 = reinterpret_cast<uint16_t const*>(qkv);
    void const* const weight = plan.hasLepe ? lepeWeight : nullptr;
    void const* const bias = plan.hasLepe ? lepeBias : nullptr;

    size_t passBytes = 0;
    if (a.localItems > 0)
    {
        passBytes = static_cast<size_t>(fusedLocalSmemBytes<kD>(a.localStages, a.haloRows));
    }
    if (a.reductionItems > 0 && static_cast<size_t>(fusedReductionSmemBytes<kD>()) > passBytes)
    {
        passBytes = static_cast<size_t>(fusedReductionSmemBytes<kD>());
    }
    static std::atomic<int32_t> passAllowed{0};
    cudaError_t status = allowSharedMemory(fusedPassKernel<T, kD>, passBytes, passAllowed);
    if (status != cudaSuccess)
    {
        return status;
    }
    int64_t const passItems = static_cast<int64_t>(a.reductionItems) + a.localItems;
    status = launchKernel(fusedPassKernel<T, kD>, gridFor(passItems), kFUSED_THREADS, passBytes, stream, a, q16,
        weight, bias, out, ws);
    if (status != cudaSuccess || a.outputItems == 0)
    {
        return status;
    }
    size_t const outBytes = static_cast<size_t>(fusedOutputSmemBytes<T, kD>(a.oHaloRows));
    static std::atomic<int32_t> outAllowed{0};
    status = allowSharedMemory(fusedOutputKernel<T, kD>, outBytes, outAllowed);
    if (status != cudaSuccess)
    {
        return status;
    }
    // sm_90: a programmatic dependent of the pass kernel (PDL). Its blocks may start while the pass
    // kernel's last blocks still run: they load their q tile and LePE halo and stage the LePE
    // parameters, then wait (griddepcontrol.wait) for the whole pass grid (the context, and the
    // local heads' stores to out) before they read ctx. The pass kernel itself is an ordinary
    // launch: everything before it in the stream (the memset, whatever wrote qkv) has completed
    // when it starts, hence also when the output kernel's blocks start.
    if (programmaticLaunchAvailable(currentComputeCapability()))
    {
        return launchKernelDependent(fusedOutputKernel<T, kD>, gridFor(a.outputItems), kFUSED_THREADS, outBytes,
            stream, a, q16, weight, bias, out, ws);
    }
    return launchKernel(fusedOutputKernel<T, kD>, gridFor(a.outputItems), kFUSED_THREADS, outBytes, stream, a, q16,
        weight, bias, out, ws);
}

} // namespace

bool fusedAvailable(int32_t computeCapability) noexcept
{
    return computeCapability >= 80;
}

template <typename T>
cudaError_t launchFused(LaunchPlan const& plan, T const* qkv, void const* lepeWeight, void const* lepeBias, T* out,
    void* workspace, uint32_t* counters, cudaStream_t stream) noexcept
{
    switch (plan.headDim)
    {
    case 32: return launchFusedDim<T, 32>(plan, qkv, lepeWeight, lepeBias, out, workspace, counters, stream);
    case 64: return launchFusedDim<T, 64>(plan, qkv, lepeWeight, lepeBias, out, workspace, counters, stream);
    default: return cudaErrorInvalidValue;
    }
}

template cudaError_t launchFused<__half>(LaunchPlan const&, __half const*, void const*, void const*, __half*, void*,
    uint32_t*, cudaStream_t) noexcept;
template cudaError_t launchFused<__nv_bfloat16>(LaunchPlan const&, __nv_bfloat16 const*, void const*, void const*,
    __nv_bfloat16*, void*, uint32_t*, cudaStream_t) noexcept;

} // namespace detail
} // namespace elfatt
