/*
 * elfatt-deploy kernels v2: one block of the local heads (internal header).
 *
 * A work item is (batch item b, local head, window, query tile): the query tile is a rectangle
 * of at most 64 tokens of the window (the whole window for 7 x 7 windows; 7 x 9 of a 7-row
 * stripe, 1 x 64 of a 1-row stripe). Warp w owns query rows [16 w, 16 w + 16) of the tile.
 *   1. cp.async brings the query tile, the first key tile (64 keys of the window in row-major
 *      order) and its values to shared memory (rows past the end as zeros); with more than one
 *      key tile per window, the next key/value tile is copied into the second stage while the
 *      current one is used, and the LePE halo (the query rectangle plus one token around,
 *      clipped to the window) into its own tile.
 *   2. Per key tile, FlashAttention-2 style, all in registers: S = Q K^T with mma.sync
 *      m16n8k16 (ldmatrix fragments, float32 accumulators), keys past the window masked to
 *      -inf, the online softmax of each row in float32 (row max over the quad of lanes that
 *      share the row, rescale of the running sum and of O), and the S accumulators packed to
 *      16 bits as the A operand of O += P V (bfloat16: P = P_hi + P_lo, two products, as v1).
 *   3. Epilogue: O / sum staged as float32 in shared memory, LePE of v inside the window from
 *      the V tile (one key tile: it holds the whole window) or the halo tile, 16-byte stores.
 */
#pragma once

#include "fused_common.cuh"

#include <type_traits>

namespace elfatt
{
namespace detail
{

//! Bytes of dynamic shared memory of a local item: query tile, key and value stages, halo, LePE
//! parameters.
template <int32_t kD>
__host__ __device__ constexpr int32_t fusedLocalSmemBytes(int32_t stages, int32_t haloRows)
{
    return fusedTileBytes<kD>() * (1 + 2 * stages) + haloRows * fusedLd<kD>() * 2 + fusedLepeBytes<kD>();
}

template <typename T, int32_t kD>
__device__ __forceinline__ void fusedLocalItem(FusedArgs const& a, int32_t item, uint16_t const* __restrict__ qkv,
    void const* lepeWeight, void const* lepeBias, T* __restrict__ out, unsigned char* smem)
{
    constexpr int32_t kTILE = fusedTileBytes<kD>();
    constexpr int32_t kKB = kD / 16;           //!< k16 blocks of the head dim (Q K^T)
    constexpr int32_t kNT = kD / 8;            //!< n8 tiles of the head dim (P V, O)
    //! Keys of S held in registers at a time (16 registers of S): 64 keys needed ~160 registers at
    //! kD = 64 and spilled at kD = 32 (sm_87, sm_90); 16 keys cost twice the row-max shuffles,
    //! corrections and O rescales per key.
    constexpr int32_t kSUB = 32;
    constexpr int32_t kSN = kSUB / 8;          //!< n8 tiles of S
    constexpr int32_t kPK = kSUB / 16;         //!< k16 blocks of P V
    constexpr bool kBF16 = std::is_same<T, __nv_bfloat16>::value;

    int32_t rest = item;
    int32_t const tx = rest % a.qTilesX;
    rest /= a.qTilesX;
    int32_t const ty = rest % a.qTilesY;
    rest /= a.qTilesY;
    int32_t const wx = rest % a.windowsX;
    rest /= a.windowsX;
    int32_t const wy = rest % a.windowsY;
    rest /= a.windowsY;
    int32_t const head = rest % a.localHeads;
    int32_t const b = rest / a.localHeads;

    Rect win;
    win.r0 = wy * a.windowH;
    win.c0 = wx * a.windowW;
    win.rows = min(a.height - win.r0, a.windowH);
    win.cols = min(a.width - win.c0, a.windowW);
    Rect q;
    q.r0 = win.r0 + ty * a.qTileH;
    q.c0 = win.c0 + tx * a.qTileW;
    if (q.r0 >= win.r0 + win.rows || q.c0 >= win.c0 + win.cols)
    {
        return; // block-uniform: a partial window has fewer query tiles
    }
    q.rows = min(win.r0 + win.rows - q.r0, a.qTileH);
    q.cols = min(win.c0 + win.cols - q.c0, a.qTileW);
    int32_t const keys = win.rows * win.cols;
    int32_t const keyTiles = (keys + kFUSED_ROWS - 1) / kFUSED_ROWS;
    int32_t const stride = 3 * a.channels;
    int32_t const ch = a.globalChannels + head * kD;
    int64_t const tokens = static_cast<int64_t>(a.height) * a.width;
    uint16_t const* base = qkv + static_cast<int64_t>(b) * tokens * stride;
    bool const separateHalo = a.hasLepe && keyTiles > 1;

    unsigned char* const sQ = smem;
    auto const sK = [&](int32_t stage) { return smem + kTILE * (1 + stage); };
    auto const sV = [&](int32_t stage) { return smem + kTILE * (1 + a.localStages + stage); };
    unsigned char* const sHalo = smem + kTILE * (1 + 2 * a.localStages);
    float* const sW = reinterpret_cast<float*>(sHalo + a.haloRows * fusedLd<kD>() * 2);
    float* const sOut = reinterpret_cast<float*>(smem); // over sQ and the first key stage, after the last tile
    Rect const haloRect = separateHalo ? haloOf(q, win) : win;

    __syncthreads(); // the previous item is done with shared memory
    copyRect<kD>(sQ, kFUSED_ROWS, base + ch, q, a.width, stride);
    copyWindowRun<kD>(sK(0), kFUSED_ROWS, base + a.channels + ch, win, 0, a.width, stride);
    copyWindowRun<kD>(sV(0), kFUSED_ROWS, base + 2 * a.channels + ch, win, 0, a.width, stride);
    if (separateHalo)
    {
        copyRect<kD>(sHalo, haloRect.rows * haloRect.cols, base + 2 * a.channels + ch, haloRect, a.width, stride);
    }
    ptx::cpAsyncCommit();

    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP_SIZE;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    int32_t const t = lane & 3;
    uint32_t qa[kKB][4];
    float o[kNT][4];
#pragma unroll
    for (int32_t n = 0; n < kNT; ++n)
    {
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.F;
    }
    float rowMax[2] = {-INFINITY, -INFINITY}; //!< rows g and g + 8 of the warp's 16: max of q.k (unscaled)
    float rowSum[2] = {0.F, 0.F};             //!< this lane's share of the row sums

    for (int32_t kt = 0; kt < keyTiles; ++kt)
    {
        int32_t const stage = kt & 1;
        if (kt + 1 < keyTiles)
        {
            int32_t const next = (kt + 1) & 1;
            copyWindowRun<kD>(
                sK(next), kFUSED_ROWS, base + a.channels + ch, win, (kt + 1) * kFUSED_ROWS, a.width, stride);
            copyWindowRun<kD>(
                sV(next), kFUSED_ROWS, base + 2 * a.channels + ch, win, (kt + 1) * kFUSED_ROWS, a.width, stride);
            ptx::cpAsyncCommit();
            ptx::cpAsyncWait<1>();
        }
        else
        {
            ptx::cpAsyncWait<0>();
        }
        __syncthreads(); // every thread's copies of this tile have landed
        if (kt == 0)
        {
#pragma unroll
            for (int32_t kb = 0; kb < kKB; ++kb)
            {
                loadA<kD>(qa[kb], sQ, 16 * warp, 16 * kb);
            }
        }
        int32_t const nk = min(kFUSED_ROWS, keys - kt * kFUSED_ROWS);
        for (int32_t sub = 0; sub * kSUB < nk; ++sub) // block-uniform
        {
            int32_t const k0 = sub * kSUB;
            // S = Q K^T for the warp's 16 queries x kSUB keys [k0, k0 + kSUB) of the tile.
            float s[kSN][4];
#pragma unroll
            for (int32_t np = 0; np < kSN / 2; ++np)
            {
#pragma unroll
                for (int32_t e = 0; e < 4; ++e)
                {
                    s[2 * np][e] = 0.F;
                    s[2 * np + 1][e] = 0.F;
                }
                if (k0 + 16 * np < nk)
                {
#pragma unroll
                    for (int32_t kb = 0; kb < kKB; ++kb)
                    {
                        uint32_t bk[4];
                        loadBRows<kD>(bk, sK(stage), k0 + 16 * np, 16 * kb);
                        uint32_t const b0[2] = {bk[0], bk[1]};
                        uint32_t const b1[2] = {bk[2], bk[3]};
                        ptx::mma16816<T>(s[2 * np], qa[kb], b0, s[2 * np]);
                        ptx::mma16816<T>(s[2 * np + 1], qa[kb], b1, s[2 * np + 1]);
                    }
                }
            }

            // Online softmax of rows g (elements 0, 1) and g + 8 (elements 2, 3). The maxima are of
            // the raw logits q.k (the scale is > 0, plan.cpp, so it commutes with max), and the scale
            // is applied inside the exponent's FFMA: exp2(s scaleLog2 - max scaleLog2), no separate
            // multiply per element. Keys past the window masked to -inf only in a block that has some
            // (block-uniform).
            float tileMax[2] = {-INFINITY, -INFINITY};
            if (k0 + kSUB <= nk)
            {
#pragma unroll
                for (int32_t n = 0; n < kSN; ++n)
                {
#pragma unroll
                    for (int32_t e = 0; e < 4; ++e)
                    {
                        tileMax[e >> 1] = fmaxf(tileMax[e >> 1], s[n][e]);
                    }
                }
            }
            else
            {
#pragma unroll
                for (int32_t n = 0; n < kSN; ++n)
                {
#pragma unroll
                    for (int32_t e = 0; e < 4; ++e)
                    {
                        int32_t const key = k0 + 8 * n + 2 * t + (e & 1);
                        s[n][e] = key < nk ? s[n][e] : -INFINITY;
                        tileMax[e >> 1] = fmaxf(tileMax[e >> 1], s[n][e]);
                    }
                }
            }
            float shift[2];
            float correction[2];
#pragma unroll
            for (int32_t r = 0; r < 2; ++r)
            {
                tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(kFULL_MASK, tileMax[r], 1));
                tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(kFULL_MASK, tileMax[r], 2));
                float const newMax = fmaxf(rowMax[r], tileMax[r]);
                // As in v1: shift by 0 while every logit so far is -inf, so that exp2(-inf - -inf)
                // cannot turn the running sums into NaN.
                shift[r] = newMax == -INFINITY ? 0.F : newMax * a.scaleLog2;
                correction[r] = ptx::exp2Approx(fmaf(rowMax[r], a.scaleLog2, -shift[r])); // 0 on the first keys
                rowMax[r] = newMax;
                rowSum[r] *= correction[r];
            }
#pragma unroll
            for (int32_t n = 0; n < kSN; ++n)
            {
#pragma unroll
                for (int32_t e = 0; e < 4; ++e)
                {
                    s[n][e] = ptx::exp2Approx(fmaf(s[n][e], a.scaleLog2, -shift[e >> 1])); // masked: exp2(-inf) = 0
                    rowSum[e >> 1] += s[n][e];
                }
            }
#pragma unroll
            for (int32_t n = 0; n < kNT; ++n)
            {
                o[n][0] *= correction[0];
                o[n][1] *= correction[0];
                o[n][2] *= correction[1];
                o[n][3] *= correction[1];
            }

            // O += P V: the S accumulators of n8 tiles 2 pk and 2 pk + 1 are the A fragment of
            // keys [k0 + 16 pk, k0 + 16 pk + 16) (ptx.cuh); bfloat16 adds the residual P - bf16(P).
#pragma unroll
            for (int32_t pk = 0; pk < kPK; ++pk)
            {
                if (k0 + 16 * pk >= nk)
                {
                    continue;
                }
                float const* lo = s[2 * pk];
                float const* hi = s[2 * pk + 1];
                uint32_t const pa[4] = {ptx::packPair<T>(lo[0], lo[1]), ptx::packPair<T>(lo[2], lo[3]),
                    ptx::packPair<T>(hi[0], hi[1]), ptx::packPair<T>(hi[2], hi[3])};
                uint32_t pr[4] = {0U, 0U, 0U, 0U};
                if constexpr (kBF16)
                {
#pragma unroll
                    for (int32_t r = 0; r < 4; ++r)
                    {
                        float p0;
                        float p1;
                        ptx::unpackPair<T>(pa[r], p0, p1);
                        float const* src = r < 2 ? lo : hi;
                        int32_t const e = 2 * (r & 1);
                        pr[r] = ptx::packPair<T>(src[e] - p0, src[e + 1] - p1);
                    }
                }
#pragma unroll
                for (int32_t nb = 0; nb < kNT / 2; ++nb)
                {
                    uint32_t bv[4];
                    loadBCols<kD>(bv, sV(stage), k0 + 16 * pk, 16 * nb);
                    uint32_t const b0[2] = {bv[0], bv[1]};
                    uint32_t const b1[2] = {bv[2], bv[3]};
                    ptx::mma16816<T>(o[2 * nb], pa, b0, o[2 * nb]);
                    ptx::mma16816<T>(o[2 * nb + 1], pa, b1, o[2 * nb + 1]);
                    if constexpr (kBF16)
                    {
                        ptx::mma16816<T>(o[2 * nb], pr, b0, o[2 * nb]);
                        ptx::mma16816<T>(o[2 * nb + 1], pr, b1, o[2 * nb + 1]);
                    }
                }
            }
        }
        __syncthreads(); // every warp is done with this stage (the next copy reuses it)
    }

    // Epilogue: O / sum -> float32 staging tile (over sQ and the first key stage) -> global.
#pragma unroll
    for (int32_t r = 0; r < 2; ++r)
    {
        rowSum[r] += __shfl_xor_sync(kFULL_MASK, rowSum[r], 1);
        rowSum[r] += __shfl_xor_sync(kFULL_MASK, rowSum[r], 2);
        rowSum[r] = 1.F / rowSum[r];
    }
#pragma unroll
    for (int32_t n = 0; n < kNT; ++n)
    {
        o[n][0] *= rowSum[0];
        o[n][1] *= rowSum[0];
        o[n][2] *= rowSum[1];
        o[n][3] *= rowSum[1];
    }
    stageRows<kD>(sOut, 16 * warp, o);
    if (a.hasLepe)
    {
        stageLepe<T, kD>(sW, lepeWeight, lepeBias, ch, a.lepeFloat32);
    }
    __syncthreads();
    unsigned char const* halo = separateHalo ? sHalo : sV(0); // one key tile: the V tile is the window
    storeTile<T, kD>(sOut, q, win, halo, haloRect, a.hasLepe ? sW : nullptr,
        out + static_cast<int64_t>(b) * tokens * a.channels, ch, a.width, a.channels);
}

} // namespace detail
} // namespace elfatt
