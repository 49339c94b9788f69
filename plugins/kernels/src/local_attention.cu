/*
 * elfatt-deploy kernels: local block heads of ElfattAttention.
 *
 * The H x W grid is tiled from the top-left corner by windows of windowH x windowW
 * tokens; edge windows are partial and hold only existing tokens. Inside each window
 * and for each local head: out = softmax(scale q k^T) v + LePE(v inside the window).
 *
 * localTiledKernel (head dim <= 64, zero padded to kD = 16, 32 or 64):
 *   FlashAttention-style SIMT kernel. One block of 64 threads per (b, head, window,
 *   tile of 64 queries); thread t owns query t of the tile: q and the output row stay
 *   in registers. Keys and values stream through shared memory in tiles of 32 tokens
 *   of the same window; per tile the thread computes its 32 logits, the tile max, and
 *   rescales its running sum and output once (online softmax, float32, in base 2 with
 *   log2(e) folded into the scale). The epilogue stages the normalized output in
 *   shared memory and writes it channel-contiguous, adding LePE and the bias.
 *   Window sizes do not matter: any number of query and key tiles works.
 *
 * localGenericKernel (any head dim, also the cross-check path):
 *   one warp per query; lanes split the channels, the logit is a warp all-reduce,
 *   the online softmax runs key by key. Output channels are done in groups of 128.
 *
 * float16 / bfloat16 with head dim <= 64 go to the tensor-core kernel
 * (local_attention_tc.cu) on devices that have it, unless a path forces these ones.
 */
#include "common.cuh"
#include "launch.h"
#include "window.cuh"

#include <atomic>
#include <type_traits>

namespace elfatt
{
namespace detail
{
namespace
{

constexpr int32_t kBQ = 64; //!< queries (threads) per block of the tiled kernel
constexpr int32_t kBK = 32; //!< keys per shared-memory tile
constexpr int32_t kGENERIC_WARPS = 4;
constexpr int32_t kGENERIC_PER_LANE = 4; //!< output channels per lane and group
constexpr float kLOG2E = 1.4426950408889634F;

template <typename T, int32_t kD>
__global__ void __launch_bounds__(kBQ) localTiledKernel(T const* __restrict__ qkv, T const* __restrict__ lepeWeight,
    T const* __restrict__ lepeBias, T* __restrict__ out, Geometry g, float scaleLog2, int64_t tilesPerWindow)
{
    static_assert(kD % 4 == 0, "kD must be a multiple of 4");
    __shared__ __align__(16) float sK[kBK * kD];
    __shared__ __align__(16) float sV[kBK * kD];
    __shared__ float sQO[kBQ * (kD + 1)]; // q tile in, output tile out; +1 avoids bank conflicts
    __shared__ int64_t sRowOff[kBQ];      // token offsets (in tokens) of the current tile

    int64_t const d = g.headDim;
    int64_t const tokens = g.height * g.width;
    int64_t const stride = 3 * g.channels;
    int64_t const items = g.batch * g.localHeads * g.windowsY * g.windowsX * tilesPerWindow;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);

    for (int64_t item = blockIdx.x; item < items; item += gridDim.x)
    {
        LocalItem const it = decodeLocalItem(g, item, tilesPerWindow);
        Window const& w = it.w;
        int64_t const b = it.b;
        int64_t const qBegin = it.tile * kBQ;
        if (qBegin >= w.size)
        {
            continue; // block-uniform: this partial window has fewer query tiles
        }
        int32_t const nq = static_cast<int32_t>(min(static_cast<int64_t>(kBQ), w.size - qBegin));
        int64_t const ch = g.globalChannels + it.head * d; // first channel of this head
        T const* base = qkv + b * tokens * stride;

        // Query tile -> shared (zero padded) -> registers, pre-scaled by scale * log2(e).
        __syncthreads(); // the previous item is done with shared memory
        if (tid < nq)
        {
            sRowOff[tid] = windowTokenIndex(w, qBegin + tid, g.width);
        }
        __syncthreads();
        for (int32_t e = tid; e < kBQ * kD; e += kBQ)
        {
            int32_t const t = e / kD;
            int32_t const c = e % kD;
            sQO[t * (kD + 1) + c] = (t < nq && c < d) ? loadFloat(base + sRowOff[t] * stride + ch + c) : 0.F;
        }
        __syncthreads();
        float q[kD];
        float acc[kD];
#pragma unroll
        for (int32_t c = 0; c < kD; ++c)
        {
            q[c] = sQO[tid * (kD + 1) + c] * scaleLog2;
            acc[c] = 0.F;
        }
        float runMax = -INFINITY;
        float runSum = 0.F;

        for (int64_t kBegin = 0; kBegin < w.size; kBegin += kBK)
        {
            int32_t const nk = static_cast<int32_t>(min(static_cast<int64_t>(kBK), w.size - kBegin));
            __syncthreads(); // everyone is done with the previous key tile and sRowOff
            if (tid < nk)
            {
                sRowOff[tid] = windowTokenIndex(w, kBegin + tid, g.width);
            }
            __syncthreads();
            for (int32_t e = tid; e < kBK * kD; e += kBQ)
            {
                int32_t const j = e / kD;
                int32_t const c = e % kD;
                bool const valid = j < nk && c < d;
                T const* tokenPtr = base + (valid ? sRowOff[j] : 0) * stride + ch + c;
                sK[e] = valid ? loadFloat(tokenPtr + g.channels) : 0.F;
                sV[e] = valid ? loadFloat(tokenPtr + 2 * g.channels) : 0.F;
            }
            __syncthreads();

            float s[kBK];
            float tileMax = -INFINITY;
#pragma unroll
            for (int32_t j = 0; j < kBK; ++j)
            {
                float dot = 0.F;
#pragma unroll
                for (int32_t c = 0; c < kD; c += 4)
                {
                    float4 const k4 = *reinterpret_cast<float4 const*>(&sK[j * kD + c]);
                    dot = fmaf(q[c], k4.x, dot);
                    dot = fmaf(q[c + 1], k4.y, dot);
                    dot = fmaf(q[c + 2], k4.z, dot);
                    dot = fmaf(q[c + 3], k4.w, dot);
                }
                s[j] = (j < nk) ? dot : -INFINITY;
                tileMax = fmaxf(tileMax, s[j]);
            }
            // nk >= 1, so tileMax is finite unless every logit of the tile overflowed to -inf;
            // then shift by 0 so that exp2(-inf - -inf) cannot turn runSum and acc into NaN
            // for good (a later tile with finite logits must still give the reference result).
            float const newMax = fmaxf(runMax, tileMax);
            float const shift = (newMax == -INFINITY) ? 0.F : newMax;
            float const correction = exp2f(runMax - shift); // 0 on the first tile
            float tileSum = 0.F;
#pragma unroll
            for (int32_t j = 0; j < kBK; ++j)
            {
                s[j] = exp2f(s[j] - shift); // padded keys: exp2(-inf) = 0
                tileSum += s[j];
            }
            runSum = runSum * correction + tileSum;
            runMax = newMax;
#pragma unroll
            for (int32_t c = 0; c < kD; ++c)
            {
                acc[c] *= correction;
            }
#pragma unroll
            for (int32_t j = 0; j < kBK; ++j)
            {
#pragma unroll
                for (int32_t c = 0; c < kD; c += 4)
                {
                    float4 const v4 = *reinterpret_cast<float4 const*>(&sV[j * kD + c]);
                    acc[c] = fmaf(s[j], v4.x, acc[c]);
                    acc[c + 1] = fmaf(s[j], v4.y, acc[c + 1]);
                    acc[c + 2] = fmaf(s[j], v4.z, acc[c + 2]);
                    acc[c + 3] = fmaf(s[j], v4.w, acc[c + 3]);
                }
            }
        }

        // Epilogue: normalized rows -> shared -> channel-contiguous stores (+ LePE in the window).
        float const inv = 1.F / runSum;
#pragma unroll
        for (int32_t c = 0; c < kD; ++c)
        {
            sQO[tid * (kD + 1) + c] = acc[c] * inv;
        }
        __syncthreads();
        if (tid < nq)
        {
            sRowOff[tid] = windowTokenIndex(w, qBegin + tid, g.width);
        }
        __syncthreads();
        storeLocalRows(sQO, kD + 1, sRowOff, nq, kBQ, base, lepeWeight, lepeBias, out, g, b, ch, w);
    }
}

template <typename T>
__global__ void __launch_bounds__(kGENERIC_WARPS* kWARP_SIZE) localGenericKernel(T const* __restrict__ qkv,
    T const* __restrict__ lepeWeight, T const* __restrict__ lepeBias, T* __restrict__ out, Geometry g, float scale,
    int64_t tilesPerWindow)
{
    int64_t const d = g.headDim;
    int64_t const tokens = g.height * g.width;
    int64_t const stride = 3 * g.channels;
    int64_t const items = g.batch * g.localHeads * g.windowsY * g.windowsX * tilesPerWindow;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP_SIZE;

    for (int64_t item = blockIdx.x; item < items; item += gridDim.x)
    {
        LocalItem const it = decodeLocalItem(g, item, tilesPerWindow);
        Window const& w = it.w;
        int64_t const b = it.b;
        int64_t const qIndex = it.tile * kGENERIC_WARPS + warp;
        if (qIndex >= w.size)
        {
            continue; // warp-uniform; this kernel has no block barriers
        }
        int64_t const ch = g.globalChannels + it.head * d;
        T const* base = qkv + b * tokens * stride;
        int64_t qRow;
        int64_t qCol;
        windowToken(w, qIndex, qRow, qCol);
        T const* q = base + (qRow * g.width + qCol) * stride + ch;

        for (int64_t group = 0; group < d; group += kGENERIC_PER_LANE * kWARP_SIZE)
        {
            float acc[kGENERIC_PER_LANE];
#pragma unroll
            for (int32_t u = 0; u < kGENERIC_PER_LANE; ++u)
            {
                acc[u] = 0.F;
            }
            float runMax = -INFINITY;
            float runSum = 0.F;
            for (int64_t key = 0; key < w.size; ++key)
            {
                int64_t kRow;
                int64_t kCol;
                windowToken(w, key, kRow, kCol);
                T const* k = base + (kRow * g.width + kCol) * stride + g.channels + ch;
                T const* v = k + g.channels;
                float partial = 0.F;
                for (int64_t c = lane; c < d; c += kWARP_SIZE)
                {
                    partial = fmaf(loadFloat(q + c), loadFloat(k + c), partial);
                }
                float const logit = warpAllReduceSum(partial) * scale;
                float const newMax = fmaxf(runMax, logit);
                float const correction = expShifted(runMax, newMax);
                float const p = expShifted(logit, newMax);
                runSum = runSum * correction + p;
                runMax = newMax;
#pragma unroll
                for (int32_t u = 0; u < kGENERIC_PER_LANE; ++u)
                {
                    int64_t const c = group + lane + u * kWARP_SIZE;
                    float const vc = (c < d) ? loadFloat(v + c) : 0.F;
                    acc[u] = fmaf(p, vc, acc[u] * correction);
                }
            }
#pragma unroll
            for (int32_t u = 0; u < kGENERIC_PER_LANE; ++u)
            {
                int64_t const c = group + lane + u * kWARP_SIZE;
                if (c < d)
                {
                    float value = acc[u] / runSum;
                    if (lepeWeight != nullptr)
                    {
                        value += lepeAt(base, lepeWeight, lepeBias, g, qRow, qCol, ch + c, w.r0, w.r1, w.c0, w.c1);
                    }
                    out[(b * tokens + qRow * g.width + qCol) * g.channels + ch + c] = fromFloat<T>(value);
                }
            }
        }
    }
}

template <typename T, int32_t kD>
cudaError_t launchTiled(LaunchPlan const& plan, Geometry const& g, T const* qkv, T const* weight, T const* bias,
    T* out, cudaStream_t stream) noexcept
{
    int64_t const tilesPerWindow = (plan.windowH * plan.windowW + kBQ - 1) / kBQ;
    int64_t const items = plan.batch * plan.localHeads * plan.windowsY * plan.windowsX * tilesPerWindow;
    return launchKernel(localTiledKernel<T, kD>, gridFor(items), kBQ, 0, stream, qkv, weight, bias, out, g,
        plan.scale * kLOG2E, tilesPerWindow);
}


} // namespace

//! Cached per device (the kernels ask at every enqueue).
int32_t currentComputeCapability() noexcept
{
    constexpr int32_t kMAX_DEVICES = 64;
    static std::atomic<int32_t> cache[kMAX_DEVICES]; // zero-initialized: not asked yet
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0)
    {
        return 0;
    }
    if (device < kMAX_DEVICES)
    {
        int32_t const known = cache[device].load(std::memory_order_relaxed);
        if (known != 0)
        {
            return known;
        }
    }
    int major = 0;
    int minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess
        || cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    {
        return 0;
    }
    int32_t const capability = major * 10 + minor;
    if (device < kMAX_DEVICES)
    {
        cache[device].store(capability, std::memory_order_relaxed);
    }
    return capability;
}

template <typename T>
cudaError_t launchLocalHeads(
    LaunchPlan const& plan, T const* qkv, T const* lepeWeight, T const* lepeBias, T* out, cudaStream_t stream) noexcept
{
    if (plan.localHeads == 0 || plan.empty)
    {
        return cudaSuccess;
    }
    Geometry const g = makeGeometry(plan);
    T const* weight = plan.hasLepe ? lepeWeight : nullptr;
    T const* bias = plan.hasLepe ? lepeBias : nullptr;
    if constexpr (!std::is_same<T, float>::value)
    {
        if (plan.localKernel == LocalKernel::kTENSOR_CORE
            && tensorCoresAvailable(plan.dtype, currentComputeCapability()))
        {
            return launchLocalHeadsTensorCore<T>(plan, g, qkv, weight, bias, out, stream);
        }
    }
    if (plan.localKernel != LocalKernel::kGENERIC) // kTILED, or kTENSOR_CORE on a device without them
    {
        switch (plan.localTiledDim)
        {
        case 16: return launchTiled<T, 16>(plan, g, qkv, weight, bias, out, stream);
        case 32: return launchTiled<T, 32>(plan, g, qkv, weight, bias, out, stream);
        case 64: return launchTiled<T, 64>(plan, g, qkv, weight, bias, out, stream);
        default: return cudaErrorInvalidValue;
        }
    }
    int64_t const tilesPerWindow = (plan.windowH * plan.windowW + kGENERIC_WARPS - 1) / kGENERIC_WARPS;
    int64_t const items = plan.batch * plan.localHeads * plan.windowsY * plan.windowsX * tilesPerWindow;
    return launchKernel(localGenericKernel<T>, gridFor(items), kGENERIC_WARPS * kWARP_SIZE, 0, stream, qkv, weight,
        bias, out, g, plan.scale, tilesPerWindow);
}

template cudaError_t launchLocalHeads<float>(
    LaunchPlan const&, float const*, float const*, float const*, float*, cudaStream_t) noexcept;
template cudaError_t launchLocalHeads<__half>(
    LaunchPlan const&, __half const*, __half const*, __half const*, __half*, cudaStream_t) noexcept;
template cudaError_t launchLocalHeads<__nv_bfloat16>(LaunchPlan const&, __nv_bfloat16 const*, __nv_bfloat16 const*,
    __nv_bfloat16 const*, __nv_bfloat16*, cudaStream_t) noexcept;

} // namespace detail
} // namespace elfatt
