/*
 * elfatt-deploy kernels: local block heads on tensor cores (float16 and bfloat16).
 *
 * Same result as localTiledKernel (local_attention.cu), computed with wmma 16x16x16
 * tiles: float16 needs sm_70, bfloat16 sm_80; the launcher falls back to the SIMT
 * kernel elsewhere.
 *
 * One block of 4 warps per (b, head, window, tile of 64 queries); warp w owns queries
 * [16 w, 16 w + 16) of the tile. The head dim is zero padded to kD = 16, 32 or 64.
 *   1. The query tile is staged in shared memory (zero padded) and each warp keeps
 *      its 16 x kD queries in matrix_a fragments for the whole window.
 *   2. Keys and values stream through shared memory in tiles of 32 tokens of the
 *      window. Per tile each warp computes its 16 x 32 logits S = Q K^T on tensor
 *      cores (float32 accumulation), stores them to its own shared tile, and runs the
 *      online softmax in float32 with two lanes per query row (16 columns each):
 *      tile max, rescale factor, exp2 with log2(e) folded into the scale. The
 *      probabilities go back to shared memory in the input type and O += P V runs on
 *      tensor cores. For bfloat16, P is split into P_hi = bf16(P) and
 *      P_lo = bf16(P - P_hi) and both products are accumulated: with P_hi alone ~1e-3
 *      (relative L2) of the output differs from the correctly rounded result, with
 *      both ~5e-5 (host emulation). Against float64 that is 1.70e-3 vs 1.67e-3, since
 *      bfloat16 output rounding (~1.65e-3) dominates, but the contract's 2e-3 leaves
 *      little room, so the kernel spends the second P.V product on it.
 *   3. O stays in accumulator fragments. Their element layout is unspecified, so the
 *      kernel learns the row of each element once, by loading a tile whose entries
 *      are their own row numbers into a fragment of the same type; rescaling a row
 *      (online softmax correction, final 1 / sum) then needs no trip through memory.
 *      This relies on one guarantee only: fragments of the same type share their
 *      element mapping, whether loaded or produced by mma_sync; CUDA's own WMMA GEMM
 *      sample relies on it too (c.x[i] = alpha * acc.x[i] + beta * c.x[i]).
 *   4. Epilogue: normalized O goes through shared memory and is written
 *      channel-contiguous, with LePE inside the window and the bias added in float32.
 * No N x N or N x window intermediate ever reaches global memory; qkv is read once per
 * (query tile, key tile) pair. Loads are 16-byte vectors when C and d are multiples
 * of 8 and qkv is 16-byte aligned.
 */
#include "common.cuh"
#include "launch.h"
#include "window.cuh"

#include <cstddef>
#include <cstdint>
#include <type_traits>

#ifndef ELFATT_HOST_EMULATION
#include <mma.h>
#endif

namespace elfatt
{
namespace detail
{
namespace
{

namespace wmma = nvcuda::wmma;

constexpr int32_t kTC_WARPS = 4;
constexpr int32_t kTC_THREADS = kTC_WARPS * kWARP_SIZE;
//! Blocks per SM the register allocation must allow. 3 caps registers at 168 per thread, which
//! sm_87/sm_90 builds fit without spills; 4 (128 registers) spills up to 240 bytes. Not tuned on a GPU yet.
constexpr int32_t kTC_MIN_BLOCKS = 3;
constexpr int32_t kTC_M = 16;                //!< edge of one wmma tile
constexpr int32_t kTC_BQ = kTC_WARPS * kTC_M; //!< queries per block
constexpr int32_t kTC_BK = 32;               //!< keys per shared-memory tile
constexpr int32_t kTC_PAD16 = 8;             //!< row padding (elements) of 16-bit tiles: 16 bytes
constexpr int32_t kTC_PADF = 4;              //!< row padding (elements) of float tiles: 16 bytes
constexpr float kTC_LOG2E = 1.4426950408889634F;

//! Whether the architecture being compiled has wmma for T (always true in the host pass).
template <typename T>
struct TensorCoreArch
{
    static constexpr bool kVALUE = false;
};
template <>
struct TensorCoreArch<__half>
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
    static constexpr bool kVALUE = false;
#else
    static constexpr bool kVALUE = true;
#endif
};
template <>
struct TensorCoreArch<__nv_bfloat16>
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    static constexpr bool kVALUE = false;
#else
    static constexpr bool kVALUE = true;
#endif
};

constexpr size_t alignUp(size_t bytes)
{
    return (bytes + 127) / 128 * 128;
}

constexpr size_t maxOf(size_t a, size_t b)
{
    return a > b ? a : b;
}

//! Byte offsets into the block's static shared memory. The first region is reused:
//! the query tile, then the key/value/logit/probability tiles, then the output tile.
//! Every tile a wmma call touches starts at a multiple of 32 bytes and has a row
//! stride that is a multiple of 16 bytes, as load/store_matrix_sync require.
template <typename T, int32_t kD>
struct TensorCoreLayout
{
    static constexpr int32_t kLDT = kD + kTC_PAD16;     //!< q, k, v tiles (elements of T)
    static constexpr int32_t kLDS = kTC_BK + kTC_PADF;  //!< logits (floats)
    static constexpr int32_t kLDP = kTC_BK + kTC_PAD16; //!< probabilities (elements of T)
    static constexpr int32_t kLDO = kD + kTC_PADF;      //!< output tile (floats)

    static constexpr size_t kQ = 0;
    static constexpr size_t kQ_END = alignUp(kTC_BQ * kLDT * sizeof(T));
    static constexpr size_t kK = 0;
    static constexpr size_t kV = alignUp(kK + kTC_BK * kLDT * sizeof(T));
    static constexpr size_t kS = alignUp(kV + kTC_BK * kLDT * sizeof(T));
    static constexpr size_t kS_WARP = kTC_M * kLDS * sizeof(float);
    static constexpr size_t kP = alignUp(kS + kTC_WARPS * kS_WARP);
    static constexpr size_t kP_WARP = kTC_M * kLDP * sizeof(T);
    //! bfloat16 keeps P as P_hi + P_lo (two tiles per warp), float16 as one.
    static constexpr int32_t kP_PARTS = std::is_same<T, __nv_bfloat16>::value ? 2 : 1;
    static constexpr size_t kLOOP_END = alignUp(kP + kP_PARTS * kTC_WARPS * kP_WARP);
    static constexpr size_t kO = 0;
    static constexpr size_t kO_END = alignUp(kTC_BQ * kLDO * sizeof(float));

    static constexpr size_t kROW_INDEX = maxOf(kQ_END, maxOf(kLOOP_END, kO_END)); //!< float [16][16]
    static constexpr size_t kROW_SCALE = alignUp(kROW_INDEX + kTC_M * kTC_M * sizeof(float)); //!< float [warps][16]
    static constexpr size_t kQUERY_OFF = alignUp(kROW_SCALE + kTC_WARPS * kTC_M * sizeof(float)); //!< int64 [64]
    static constexpr size_t kKEY_OFF = alignUp(kQUERY_OFF + kTC_BQ * sizeof(int64_t));          //!< int64 [32]
    static constexpr size_t kBYTES = alignUp(kKEY_OFF + kTC_BK * sizeof(int64_t));

    static_assert(kS_WARP % 32 == 0 && kP_WARP % 32 == 0, "per-warp tiles must stay 32-byte aligned");
    static_assert((kTC_M * kLDT * sizeof(T)) % 32 == 0 && (kTC_M * kLDO * sizeof(float)) % 32 == 0,
        "16-row steps must stay 32-byte aligned");
    static_assert(kLDT % 8 == 0 && kLDP % 8 == 0 && kLDS % 4 == 0 && kLDO % 4 == 0, "wmma leading dimensions");
    static_assert(kBYTES <= 48 * 1024, "static shared memory is limited to 48 KiB");
};

//! dst[r][c] = src row r (token offsets[r]) channel column + c for r < rows and c < d, else 0;
//! kROWS x kD elements with row stride kD + kTC_PAD16. vec8: 16-byte loads (d, C multiples of 8).
template <typename T, int32_t kD, int32_t kROWS>
__device__ __forceinline__ void loadRows(T* dst, T const* base, int64_t const* offsets, int32_t rows, int64_t column,
    int64_t d, int64_t stride, bool vec8)
{
    constexpr int32_t kLD = kD + kTC_PAD16;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    if (vec8)
    {
        constexpr int32_t kVECS = kD / 8;
        for (int32_t e = tid; e < kROWS * kVECS; e += kTC_THREADS)
        {
            int32_t const r = e / kVECS;
            int32_t const c = (e % kVECS) * 8;
            uint4 value = make_uint4(0U, 0U, 0U, 0U);
            if (r < rows && c < d)
            {
                value = *reinterpret_cast<uint4 const*>(base + offsets[r] * stride + column + c);
            }
            *reinterpret_cast<uint4*>(dst + r * kLD + c) = value;
        }
        return;
    }
    T const zero = fromFloat<T>(0.F);
    for (int32_t e = tid; e < kROWS * kD; e += kTC_THREADS)
    {
        int32_t const r = e / kD;
        int32_t const c = e % kD;
        dst[r * kLD + c] = (r < rows && c < d) ? base[offsets[r] * stride + column + c] : zero;
    }
}

template <typename T, int32_t kD>
__device__ __forceinline__ void tensorCoreBody(T const* __restrict__ qkv, T const* __restrict__ lepeWeight,
    T const* __restrict__ lepeBias, T* __restrict__ out, Geometry const& g, float scaleLog2, int64_t tilesPerWindow,
    bool vec8, unsigned char* smem)
{
    using Layout = TensorCoreLayout<T, kD>;
    using FragA = wmma::fragment<wmma::matrix_a, kTC_M, kTC_M, kTC_M, T, wmma::row_major>;
    using FragKt = wmma::fragment<wmma::matrix_b, kTC_M, kTC_M, kTC_M, T, wmma::col_major>;
    using FragV = wmma::fragment<wmma::matrix_b, kTC_M, kTC_M, kTC_M, T, wmma::row_major>;
    using FragAcc = wmma::fragment<wmma::accumulator, kTC_M, kTC_M, kTC_M, float>;
    constexpr int32_t kDT = kD / kTC_M;     //!< 16-wide column tiles of the head dim
    constexpr int32_t kKT = kTC_BK / kTC_M; //!< 16-wide tiles of a key tile
    constexpr int32_t kHALF_COLS = kTC_BK / 2;
    constexpr int32_t kP_PARTS = Layout::kP_PARTS;

    T* sQ = reinterpret_cast<T*>(smem + Layout::kQ);
    T* sK = reinterpret_cast<T*>(smem + Layout::kK);
    T* sV = reinterpret_cast<T*>(smem + Layout::kV);
    float* sO = reinterpret_cast<float*>(smem + Layout::kO);
    float* sRowIndex = reinterpret_cast<float*>(smem + Layout::kROW_INDEX);
    int64_t* sQueryOff = reinterpret_cast<int64_t*>(smem + Layout::kQUERY_OFF);
    int64_t* sKeyOff = reinterpret_cast<int64_t*>(smem + Layout::kKEY_OFF);

    int64_t const d = g.headDim;
    int64_t const tokens = g.height * g.width;
    int64_t const stride = 3 * g.channels;
    int64_t const items = g.batch * g.localHeads * g.windowsY * g.windowsX * tilesPerWindow;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const warp = tid / kWARP_SIZE;
    int32_t const lane = tid % kWARP_SIZE;
    int32_t const myRow = lane >> 1;               //!< softmax row of this lane in its warp's 16
    int32_t const myCol0 = (lane & 1) * kHALF_COLS; //!< first of its 16 columns

    float* sS = reinterpret_cast<float*>(smem + Layout::kS + warp * Layout::kS_WARP);
    //! Part `part` of this warp's probability tile (part 1: bfloat16's rounding residual).
    auto const sP = [&](int32_t part) {
        return reinterpret_cast<T*>(smem + Layout::kP + (part * kTC_WARPS + warp) * Layout::kP_WARP);
    };
    float* sRowScale = reinterpret_cast<float*>(smem + Layout::kROW_SCALE) + warp * kTC_M;

    // Row of every accumulator element (see the header comment).
    for (int32_t e = tid; e < kTC_M * kTC_M; e += kTC_THREADS)
    {
        sRowIndex[e] = static_cast<float>(e / kTC_M);
    }
    __syncthreads();
    FragAcc rowOf;
    wmma::load_matrix_sync(rowOf, sRowIndex, kTC_M, wmma::mem_row_major);

    for (int64_t item = blockIdx.x; item < items; item += gridDim.x)
    {
        LocalItem const it = decodeLocalItem(g, item, tilesPerWindow);
        Window const& w = it.w;
        int64_t const b = it.b;
        int64_t const qBegin = it.tile * kTC_BQ;
        if (qBegin >= w.size)
        {
            continue; // block-uniform: this partial window has fewer query tiles
        }
        int32_t const nq = static_cast<int32_t>(min(static_cast<int64_t>(kTC_BQ), w.size - qBegin));
        int64_t const ch = g.globalChannels + it.head * d; // first channel of this head
        T const* base = qkv + b * tokens * stride;

        // 1. Query tile -> shared -> fragments.
        __syncthreads(); // the previous item is done with shared memory
        if (tid < nq)
        {
            sQueryOff[tid] = windowTokenIndex(w, qBegin + tid, g.width);
        }
        __syncthreads();
        loadRows<T, kD, kTC_BQ>(sQ, base, sQueryOff, nq, ch, d, stride, vec8);
        __syncthreads();
        FragA qFrag[kDT];
#pragma unroll
        for (int32_t k = 0; k < kDT; ++k)
        {
            wmma::load_matrix_sync(qFrag[k], sQ + warp * kTC_M * Layout::kLDT + k * kTC_M, Layout::kLDT);
        }
        FragAcc oFrag[kDT];
#pragma unroll
        for (int32_t n = 0; n < kDT; ++n)
        {
            wmma::fill_fragment(oFrag[n], 0.F);
        }
        //! O[r][:] *= sRowScale[r] for the warp's 16 rows, in registers.
        auto const scaleRows = [&]() {
#pragma unroll
            for (int32_t n = 0; n < kDT; ++n)
            {
#pragma unroll
                for (int32_t i = 0; i < oFrag[n].num_elements; ++i)
                {
                    oFrag[n].x[i] *= sRowScale[static_cast<int32_t>(rowOf.x[i])];
                }
            }
        };
        float runMax = -INFINITY; // of row myRow; both lanes of the row hold the same values
        float runSum = 0.F;

        // 2. Key tiles.
        for (int64_t kBegin = 0; kBegin < w.size; kBegin += kTC_BK)
        {
            int32_t const nk = static_cast<int32_t>(min(static_cast<int64_t>(kTC_BK), w.size - kBegin));
            __syncthreads(); // every warp is done with sQ / the previous sK, sV and sKeyOff
            if (tid < nk)
            {
                sKeyOff[tid] = windowTokenIndex(w, kBegin + tid, g.width);
            }
            __syncthreads();
            loadRows<T, kD, kTC_BK>(sK, base, sKeyOff, nk, g.channels + ch, d, stride, vec8);
            loadRows<T, kD, kTC_BK>(sV, base, sKeyOff, nk, 2 * g.channels + ch, d, stride, vec8);
            __syncthreads();

            // S = Q K^T (this warp's 16 queries x 32 keys), float32 accumulation.
#pragma unroll
            for (int32_t n = 0; n < kKT; ++n)
            {
                FragAcc sFrag;
                wmma::fill_fragment(sFrag, 0.F);
#pragma unroll
                for (int32_t k = 0; k < kDT; ++k)
                {
                    FragKt kFrag;
                    wmma::load_matrix_sync(kFrag, sK + n * kTC_M * Layout::kLDT + k * kTC_M, Layout::kLDT);
                    wmma::mma_sync(sFrag, qFrag[k], kFrag, sFrag);
                }
                wmma::store_matrix_sync(sS + n * kTC_M, sFrag, Layout::kLDS, wmma::mem_row_major);
            }
            __syncwarp();

            // Online softmax of row myRow over this tile; keys past nk are masked.
            float s[kHALF_COLS];
            float tileMax = -INFINITY;
#pragma unroll
            for (int32_t j = 0; j < kHALF_COLS; ++j)
            {
                int32_t const col = myCol0 + j;
                s[j] = (col < nk) ? sS[myRow * Layout::kLDS + col] * scaleLog2 : -INFINITY;
                tileMax = fmaxf(tileMax, s[j]);
            }
            tileMax = fmaxf(tileMax, __shfl_xor_sync(kFULL_MASK, tileMax, 1));
            // As in the SIMT kernel: shift by 0 if every logit so far is -inf, so that
            // exp2(-inf - -inf) cannot poison the running sums with NaN.
            float const newMax = fmaxf(runMax, tileMax);
            float const shift = (newMax == -INFINITY) ? 0.F : newMax;
            float const correction = exp2f(runMax - shift); // 0 on the first tile
            float tileSum = 0.F;
#pragma unroll
            for (int32_t j = 0; j < kHALF_COLS; ++j)
            {
                float const p = exp2f(s[j] - shift);
                T const hi = fromFloat<T>(p);
                sP(0)[myRow * Layout::kLDP + myCol0 + j] = hi;
                if constexpr (kP_PARTS == 2)
                {
                    sP(1)[myRow * Layout::kLDP + myCol0 + j] = fromFloat<T>(p - toFloat(hi));
                }
                tileSum += p;
            }
            tileSum += __shfl_xor_sync(kFULL_MASK, tileSum, 1);
            runSum = runSum * correction + tileSum;
            runMax = newMax;
            if ((lane & 1) == 0)
            {
                sRowScale[myRow] = correction;
            }
            __syncwarp();

            // O = diag(correction) O + P V.
            scaleRows();
#pragma unroll
            for (int32_t k = 0; k < kKT; ++k)
            {
                FragA pFrag[kP_PARTS];
#pragma unroll
                for (int32_t part = 0; part < kP_PARTS; ++part)
                {
                    wmma::load_matrix_sync(pFrag[part], sP(part) + k * kTC_M, Layout::kLDP);
                }
#pragma unroll
                for (int32_t n = 0; n < kDT; ++n)
                {
                    FragV vFrag;
                    wmma::load_matrix_sync(vFrag, sV + k * kTC_M * Layout::kLDT + n * kTC_M, Layout::kLDT);
#pragma unroll
                    for (int32_t part = 0; part < kP_PARTS; ++part)
                    {
                        wmma::mma_sync(oFrag[n], pFrag[part], vFrag, oFrag[n]);
                    }
                }
            }
            __syncwarp(); // sRowScale and this warp's sS / sP are rewritten next tile
        }

        // 3. Normalize the rows: O / sum.
        if ((lane & 1) == 0)
        {
            sRowScale[myRow] = 1.F / runSum;
        }
        __syncwarp();
        scaleRows();

        // 4. Epilogue: O -> shared -> channel-contiguous stores (+ LePE in the window).
        __syncthreads(); // every warp is done with the key/value tiles: the region becomes sO
#pragma unroll
        for (int32_t n = 0; n < kDT; ++n)
        {
            wmma::store_matrix_sync(
                sO + warp * kTC_M * Layout::kLDO + n * kTC_M, oFrag[n], Layout::kLDO, wmma::mem_row_major);
        }
        __syncthreads();
        storeLocalRows(sO, Layout::kLDO, sQueryOff, nq, kTC_THREADS, base, lepeWeight, lepeBias, out, g, b, ch, w);
    }
}

template <typename T, int32_t kD>
__global__ void __launch_bounds__(kTC_THREADS, kTC_MIN_BLOCKS) localTensorCoreKernel(T const* __restrict__ qkv,
    T const* __restrict__ lepeWeight, T const* __restrict__ lepeBias, T* __restrict__ out, Geometry g,
    float scaleLog2, int64_t tilesPerWindow, bool vec8)
{
    if constexpr (TensorCoreArch<T>::kVALUE)
    {
        __shared__ __align__(128) unsigned char smem[TensorCoreLayout<T, kD>::kBYTES];
        tensorCoreBody<T, kD>(qkv, lepeWeight, lepeBias, out, g, scaleLog2, tilesPerWindow, vec8, smem);
    }
    else
    {
#ifndef ELFATT_HOST_EMULATION
        __trap(); // never launched: launchLocalHeadsTensorCore checks the device first
#endif
    }
}

template <typename T, int32_t kD>
cudaError_t launchTensorCore(LaunchPlan const& plan, Geometry const& g, T const* qkv, T const* weight, T const* bias,
    T* out, cudaStream_t stream) noexcept
{
    int64_t const tilesPerWindow = (plan.windowH * plan.windowW + kTC_BQ - 1) / kTC_BQ;
    int64_t const items = plan.batch * plan.localHeads * plan.windowsY * plan.windowsX * tilesPerWindow;
    bool const vec8 = plan.headDim % 8 == 0 && plan.channels % 8 == 0 && reinterpret_cast<uintptr_t>(qkv) % 16 == 0;
    return launchKernel(localTensorCoreKernel<T, kD>, gridFor(items), kTC_THREADS, 0, stream, qkv, weight, bias, out,
        g, plan.scale * kTC_LOG2E, tilesPerWindow, vec8);
}

} // namespace

bool tensorCoresAvailable(DataType dtype, int32_t computeCapability) noexcept
{
    switch (dtype)
    {
    case DataType::kHALF: return computeCapability >= 70;
    case DataType::kBF16: return computeCapability >= 80;
    case DataType::kFLOAT: return false;
    }
    return false;
}

template <typename T>
cudaError_t launchLocalHeadsTensorCore(LaunchPlan const& plan, Geometry const& g, T const* qkv, T const* lepeWeight,
    T const* lepeBias, T* out, cudaStream_t stream) noexcept
{
    switch (plan.localTiledDim)
    {
    case 16: return launchTensorCore<T, 16>(plan, g, qkv, lepeWeight, lepeBias, out, stream);
    case 32: return launchTensorCore<T, 32>(plan, g, qkv, lepeWeight, lepeBias, out, stream);
    case 64: return launchTensorCore<T, 64>(plan, g, qkv, lepeWeight, lepeBias, out, stream);
    default: return cudaErrorInvalidValue;
    }
}

template cudaError_t launchLocalHeadsTensorCore<__half>(LaunchPlan const&, Geometry const&, __half const*,
    __half const*, __half const*, __half*, cudaStream_t) noexcept;
template cudaError_t launchLocalHeadsTensorCore<__nv_bfloat16>(LaunchPlan const&, Geometry const&,
    __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16*, cudaStream_t) noexcept;

} // namespace detail
} // namespace elfatt
