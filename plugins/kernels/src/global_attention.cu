/*
 * elfatt-deploy kernels: global linear heads of ElfattAttention.
 *
 * Per (batch item b, global head h), with q, k, v the head's d channels:
 *   k' = softmax of k over all tokens (per channel), ctx = k'^T v   (d x d)
 *   out = softmax(q over its d channels) . ctx + LePE(v over the whole grid)
 *
 * Pass 1 (globalContextPartialKernel): the tokens are split into chunks; one block
 *   per (b, h, chunk, 64-row block of ctx, 64-column block of ctx) reads its chunk
 *   once in tiles of 32 tokens and keeps, per ctx row i, a running max m_i, a running
 *   sum s_i = sum exp(k_i - m_i) and the running ctx row sum exp(k_i - m_i) v,
 *   rescaled whenever m_i grows (online softmax). Partials go to the workspace.
 * Pass 2 (globalContextMergeKernel): merges the chunks exactly:
 *   M = max_c m_c, S = sum_c s_c e^(m_c - M), ctx = sum_c ctx_c e^(m_c - M) / S.
 * Pass 3 (globalOutputKernel): one warp per token: softmax of q over its channels
 *   (max subtracted), times ctx (staged in shared memory when it fits), plus LePE.
 * Everything accumulates in float32.
 */
#include "common.cuh"
#include "launch.h"

namespace elfatt
{
namespace detail
{
namespace
{

constexpr int32_t kCTX_THREADS = 256;
constexpr int32_t kCTX_TOKENS = 32;                                 //!< tokens per tile of pass 1
constexpr int32_t kCTX_TILE = static_cast<int32_t>(kGLOBAL_CTX_TILE); //!< 64 x 64 ctx entries per block
constexpr int32_t kCTX_SUB = 4;                                     //!< each thread owns 4 x 4 entries
constexpr int32_t kMERGE_THREADS = 256;
constexpr int32_t kOUT_THREADS = static_cast<int32_t>(kGLOBAL_OUT_WARPS) * kWARP_SIZE;
constexpr int64_t kOUT_TOKENS_PER_ITEM = 256;

static_assert(kCTX_TILE / kCTX_SUB * (kCTX_TILE / kCTX_SUB) == kCTX_THREADS, "thread tiling of pass 1");

template <typename T>
__global__ void __launch_bounds__(kCTX_THREADS) globalContextPartialKernel(T const* __restrict__ qkv, Geometry g,
    int64_t chunks, int64_t chunkTokens, float* __restrict__ ctxPartial, float* __restrict__ maxPartial,
    float* __restrict__ sumPartial)
{
    __shared__ __align__(16) float sP[kCTX_TOKENS][kCTX_TILE]; // k, then exp(k - m)
    __shared__ __align__(16) float sV[kCTX_TOKENS][kCTX_TILE];
    __shared__ float sM[kCTX_TILE];
    __shared__ float sS[kCTX_TILE];
    __shared__ float sAlpha[kCTX_TILE];

    int64_t const d = g.headDim;
    int64_t const tokens = g.height * g.width;
    int64_t const stride = 3 * g.channels;
    int64_t const blocksPerDim = (d + kCTX_TILE - 1) / kCTX_TILE;
    int64_t const items = g.batch * g.globalHeads * chunks * blocksPerDim * blocksPerDim;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const ty = tid / (kCTX_TILE / kCTX_SUB);
    int32_t const tx = tid % (kCTX_TILE / kCTX_SUB);

    for (int64_t item = blockIdx.x; item < items; item += gridDim.x)
    {
        int64_t rest = item;
        int64_t const colBlock = rest % blocksPerDim;
        rest /= blocksPerDim;
        int64_t const rowBlock = rest % blocksPerDim;
        rest /= blocksPerDim;
        int64_t const chunk = rest % chunks;
        rest /= chunks;
        int64_t const head = rest % g.globalHeads;
        int64_t const b = rest / g.globalHeads;

        int64_t const i0 = rowBlock * kCTX_TILE;
        int64_t const j0 = colBlock * kCTX_TILE;
        int32_t const rowsHere = static_cast<int32_t>(min(static_cast<int64_t>(kCTX_TILE), d - i0));
        int32_t const colsHere = static_cast<int32_t>(min(static_cast<int64_t>(kCTX_TILE), d - j0));
        int64_t const tokBegin = chunk * chunkTokens;
        int64_t const tokEnd = min(tokens, tokBegin + chunkTokens);
        T const* base = qkv + b * tokens * stride;
        int64_t const kOffset = g.channels + head * d + i0;
        int64_t const vOffset = 2 * g.channels + head * d + j0;

        __syncthreads(); // the previous item is done with the shared arrays
        if (tid < kCTX_TILE)
        {
            sM[tid] = -INFINITY;
            sS[tid] = 0.F;
        }
        float acc[kCTX_SUB][kCTX_SUB];
#pragma unroll
        for (int32_t a = 0; a < kCTX_SUB; ++a)
        {
#pragma unroll
            for (int32_t c = 0; c < kCTX_SUB; ++c)
            {
                acc[a][c] = 0.F;
            }
        }

        for (int64_t t0 = tokBegin; t0 < tokEnd; t0 += kCTX_TOKENS)
        {
            int32_t const nt = static_cast<int32_t>(min(static_cast<int64_t>(kCTX_TOKENS), tokEnd - t0));
            __syncthreads(); // consumers of the previous tile are done
            for (int32_t e = tid; e < kCTX_TOKENS * kCTX_TILE; e += kCTX_THREADS)
            {
                int32_t const t = e / kCTX_TILE;
                int32_t const c = e % kCTX_TILE;
                T const* row = base + (t0 + t) * stride;
                sP[t][c] = (t < nt && c < rowsHere) ? loadFloat(row + kOffset + c) : -INFINITY;
                sV[t][c] = (t < nt && c < colsHere) ? loadFloat(row + vOffset + c) : 0.F;
            }
            __syncthreads();
            if (tid < kCTX_TILE)
            {
                // Online softmax over tokens for ctx row i = tid.
                float tileMax = -INFINITY;
                for (int32_t t = 0; t < kCTX_TOKENS; ++t)
                {
                    tileMax = fmaxf(tileMax, sP[t][tid]);
                }
                float const mOld = sM[tid];
                float const mNew = fmaxf(mOld, tileMax);
                float const alpha = expShifted(mOld, mNew);
                float sum = 0.F;
                for (int32_t t = 0; t < kCTX_TOKENS; ++t)
                {
                    float const p = expShifted(sP[t][tid], mNew);
                    sP[t][tid] = p;
                    sum += p;
                }
                sS[tid] = sS[tid] * alpha + sum;
                sM[tid] = mNew;
                sAlpha[tid] = alpha;
            }
            __syncthreads();
#pragma unroll
            for (int32_t a = 0; a < kCTX_SUB; ++a)
            {
                float const alpha = sAlpha[ty * kCTX_SUB + a];
#pragma unroll
                for (int32_t c = 0; c < kCTX_SUB; ++c)
                {
                    acc[a][c] *= alpha;
                }
            }
            // Padded tokens carry p = 0 and v = 0, so the loop may run over the whole tile.
#pragma unroll 4
            for (int32_t t = 0; t < kCTX_TOKENS; ++t)
            {
                float4 const p4 = *reinterpret_cast<float4 const*>(&sP[t][ty * kCTX_SUB]);
                float4 const v4 = *reinterpret_cast<float4 const*>(&sV[t][tx * kCTX_SUB]);
                float const p[kCTX_SUB] = {p4.x, p4.y, p4.z, p4.w};
                float const v[kCTX_SUB] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
                for (int32_t a = 0; a < kCTX_SUB; ++a)
                {
#pragma unroll
                    for (int32_t c = 0; c < kCTX_SUB; ++c)
                    {
                        acc[a][c] = fmaf(p[a], v[c], acc[a][c]);
                    }
                }
            }
        }

        int64_t const slot = (b * g.globalHeads + head) * chunks + chunk;
        float* ctxOut = ctxPartial + slot * d * d;
#pragma unroll
        for (int32_t a = 0; a < kCTX_SUB; ++a)
        {
            int32_t const i = ty * kCTX_SUB + a;
#pragma unroll
            for (int32_t c = 0; c < kCTX_SUB; ++c)
            {
                int32_t const j = tx * kCTX_SUB + c;
                if (i < rowsHere && j < colsHere)
                {
                    ctxOut[(i0 + i) * d + j0 + j] = acc[a][c];
                }
            }
        }
        if (colBlock == 0 && tid < rowsHere)
        {
            maxPartial[slot * d + i0 + tid] = sM[tid];
            sumPartial[slot * d + i0 + tid] = sS[tid];
        }
    }
}

__global__ void __launch_bounds__(kMERGE_THREADS) globalContextMergeKernel(float const* __restrict__ ctxPartial,
    float const* __restrict__ maxPartial, float const* __restrict__ sumPartial, float* __restrict__ ctx, int64_t pairs,
    int64_t chunks, int64_t d)
{
    int64_t const total = pairs * d * d;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        int64_t const j = idx % d;
        int64_t const i = (idx / d) % d;
        int64_t const pair = idx / (d * d);
        float maxAll = -INFINITY;
        for (int64_t c = 0; c < chunks; ++c)
        {
            maxAll = fmaxf(maxAll, maxPartial[(pair * chunks + c) * d + i]);
        }
        float sum = 0.F;
        float acc = 0.F;
        for (int64_t c = 0; c < chunks; ++c)
        {
            float const w = expShifted(maxPartial[(pair * chunks + c) * d + i], maxAll);
            sum = fmaf(sumPartial[(pair * chunks + c) * d + i], w, sum);
            acc = fmaf(ctxPartial[(pair * chunks + c) * d * d + i * d + j], w, acc);
        }
        ctx[idx] = acc / sum;
    }
}

template <typename T, bool kSHARED_CTX>
__global__ void __launch_bounds__(kOUT_THREADS) globalOutputKernel(T const* __restrict__ qkv,
    T const* __restrict__ lepeWeight, T const* __restrict__ lepeBias, float const* __restrict__ ctx,
    T* __restrict__ out, Geometry g)
{
    ELFATT_DYNAMIC_SHARED(float, smem); // kSHARED_CTX: ctx [d][d], then softmax(q) [warps][d]
    int64_t const d = g.headDim;
    int64_t const tokens = g.height * g.width;
    int64_t const stride = 3 * g.channels;
    int64_t const tiles = (tokens + kOUT_TOKENS_PER_ITEM - 1) / kOUT_TOKENS_PER_ITEM;
    int64_t const items = g.batch * g.globalHeads * tiles;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP_SIZE;
    float* sCtx = smem;
    float* sQ = smem + d * d + warp * d;

    for (int64_t item = blockIdx.x; item < items; item += gridDim.x)
    {
        int64_t const tile = item % tiles;
        int64_t const pair = item / tiles;
        int64_t const head = pair % g.globalHeads;
        int64_t const b = pair / g.globalHeads;
        float const* ctxHead = ctx + pair * d * d;
        T const* base = qkv + b * tokens * stride;
        if (kSHARED_CTX)
        {
            __syncthreads(); // the previous item is done with sCtx
            for (int64_t e = threadIdx.x; e < d * d; e += blockDim.x)
            {
                sCtx[e] = ctxHead[e];
            }
            __syncthreads();
        }
        int64_t const tokEnd = min(tokens, (tile + 1) * kOUT_TOKENS_PER_ITEM);
        for (int64_t tok = tile * kOUT_TOKENS_PER_ITEM + warp; tok < tokEnd; tok += kGLOBAL_OUT_WARPS)
        {
            T const* q = base + tok * stride + head * d;
            float qMax = -INFINITY;
            for (int64_t c = lane; c < d; c += kWARP_SIZE)
            {
                qMax = fmaxf(qMax, loadFloat(q + c));
            }
            qMax = warpAllReduceMax(qMax);
            float qSum = 0.F;
            for (int64_t c = lane; c < d; c += kWARP_SIZE)
            {
                qSum += expShifted(loadFloat(q + c), qMax);
            }
            qSum = warpAllReduceSum(qSum);
            float const qInv = 1.F / qSum;
            if (kSHARED_CTX)
            {
                for (int64_t c = lane; c < d; c += kWARP_SIZE)
                {
                    sQ[c] = expShifted(loadFloat(q + c), qMax) * qInv;
                }
                __syncwarp();
            }
            int64_t const row = tok / g.width;
            int64_t const col = tok % g.width;
            for (int64_t j = lane; j < d; j += kWARP_SIZE)
            {
                float acc = 0.F;
                for (int64_t i = 0; i < d; ++i)
                {
                    float const p = kSHARED_CTX ? sQ[i] : expShifted(loadFloat(q + i), qMax) * qInv;
                    float const cij = kSHARED_CTX ? sCtx[i * d + j] : ctxHead[i * d + j];
                    acc = fmaf(p, cij, acc);
                }
                if (lepeWeight != nullptr)
                {
                    acc += lepeAt(base, lepeWeight, lepeBias, g, row, col, head * d + j, 0, g.height, 0, g.width);
                }
                out[(b * tokens + tok) * g.channels + head * d + j] = fromFloat<T>(acc);
            }
            if (kSHARED_CTX)
            {
                __syncwarp(); // sQ is rewritten for the next token
            }
        }
    }
}

} // namespace

template <typename T>
cudaError_t launchGlobalHeads(LaunchPlan const& plan, T const* qkv, T const* lepeWeight, T const* lepeBias, T* out,
    void* workspace, cudaStream_t stream) noexcept
{
    if (plan.globalHeads == 0 || plan.empty)
    {
        return cudaSuccess;
    }
    Geometry const g = makeGeometry(plan);
    char* ws = static_cast<char*>(workspace);
    float* ctxPartial = reinterpret_cast<float*>(ws + plan.wsCtxPartial);
    float* maxPartial = reinterpret_cast<float*>(ws + plan.wsMaxPartial);
    float* sumPartial = reinterpret_cast<float*>(ws + plan.wsSumPartial);
    float* ctx = reinterpret_cast<float*>(ws + plan.wsCtx);
    int64_t const d = plan.headDim;

    int64_t const blocksPerDim = (d + kCTX_TILE - 1) / kCTX_TILE;
    int64_t const ctxItems = plan.batch * plan.globalHeads * plan.chunks * blocksPerDim * blocksPerDim;
    cudaError_t status = launchKernel(globalContextPartialKernel<T>, gridFor(ctxItems), kCTX_THREADS, 0, stream, qkv,
        g, plan.chunks, plan.chunkTokens, ctxPartial, maxPartial, sumPartial);
    if (status != cudaSuccess)
    {
        return status;
    }

    int64_t const pairs = plan.batch * plan.globalHeads;
    int64_t const mergeItems = (pairs * d * d + kMERGE_THREADS - 1) / kMERGE_THREADS;
    status = launchKernel(globalContextMergeKernel, gridFor(mergeItems), kMERGE_THREADS, 0, stream, ctxPartial,
        maxPartial, sumPartial, ctx, pairs, plan.chunks, d);
    if (status != cudaSuccess)
    {
        return status;
    }

    int64_t const tiles = (plan.tokens + kOUT_TOKENS_PER_ITEM - 1) / kOUT_TOKENS_PER_ITEM;
    unsigned const grid = gridFor(pairs * tiles);
    T const* weight = plan.hasLepe ? lepeWeight : nullptr;
    T const* bias = plan.hasLepe ? lepeBias : nullptr;
    if (plan.globalSharedCtx)
    {
        size_t const smemBytes = static_cast<size_t>(globalOutSharedBytes(d));
        return launchKernel(globalOutputKernel<T, true>, grid, kOUT_THREADS, smemBytes, stream, qkv, weight, bias, ctx,
            out, g);
    }
    return launchKernel(globalOutputKernel<T, false>, grid, kOUT_THREADS, 0, stream, qkv, weight, bias, ctx, out, g);
}

template cudaError_t launchGlobalHeads<float>(
    LaunchPlan const&, float const*, float const*, float const*, float*, void*, cudaStream_t) noexcept;
template cudaError_t launchGlobalHeads<__half>(
    LaunchPlan const&, __half const*, __half const*, __half const*, __half*, void*, cudaStream_t) noexcept;
template cudaError_t launchGlobalHeads<__nv_bfloat16>(LaunchPlan const&, __nv_bfloat16 const*, __nv_bfloat16 const*,
    __nv_bfloat16 const*, __nv_bfloat16*, void*, cudaStream_t) noexcept;

} // namespace detail
} // namespace elfatt
