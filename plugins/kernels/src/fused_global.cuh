/*
 * elfatt-deploy kernels v2: the global heads (internal header).
 *
 * Reduction item (b, global head, chunk of chunkTokens tokens), in the first launch next to the
 * local items: ctx_c[i][j] = sum_n exp(k[n][i] - m_i) v[n][j] over the chunk's tokens, with the
 * running per-channel max m_i (online softmax of k over tokens), on tensor cores:
 *   A = exp(K - m)^T (rows: k channels i, k index: tokens) comes from the key tile itself:
 *   ldmatrix.trans gives the fragment of K^T, the lanes widen it to float32, take the tile max
 *   of each channel over the quad that shares the row, rescale, exponentiate and pack it back
 *   (bfloat16: E_hi + E_lo); B = V (ldmatrix.trans). Key/value tiles of 64 tokens are
 *   double-buffered with cp.async. The chunk's partial (ctx_c, m_c, s_c) goes to the workspace
 *   and m_c raises its group's max keys (red.max); then a release/acquire count per group of a
 *   merge tree of fan-in 4 (kFUSED_MERGE_FANIN): the block that counts a group's last partial
 *   merges the group exactly (M = the group's max key, S = sum s_c e^(m_c - M),
 *   C = sum ctx_c e^(m_c - M)) into a partial of the next level and counts that one, up to the
 *   root, whose merge writes ctx = C / S in the input type (bfloat16: hi and lo). Each merging
 *   block zeroes the counter and keys it consumed, so that persistent state (enqueueWithState)
 *   needs no memset. No extra pass over the tokens or over the maxima, no extra launch; two L2
 *   round trips per level on the critical path (log4 of the chunks), not one per two chunks.
 * Output item (b, global head, tile of up to 8 x 8 tokens), in the second launch:
 *   softmax(q) over the head's channels in registers (the A fragment of the query tile, row max
 *   and sum over the quad), times ctx on tensor cores (bfloat16: q'_hi ctx_hi + q'_lo ctx_hi +
 *   q'_hi ctx_lo), plus LePE of v over the whole grid from a halo tile, 16-byte stores. The q tile,
 *   the halo and the LePE parameters are loaded before griddepcontrol.wait, the context after it
 *   (sm_90: the kernel is a programmatic dependent launch of the pass kernel).
 */
#pragma once

#include "fused_common.cuh"

#include <cstring>
#include <type_traits>

namespace elfatt
{
namespace detail
{

//! Parts of the stored context: 1 (float16) or 2 (bfloat16: hi and lo).
template <typename T>
__host__ __device__ constexpr int32_t fusedCtxParts()
{
    return std::is_same<T, __nv_bfloat16>::value ? 2 : 1;
}

//! Bytes of dynamic shared memory of a reduction item: two stages of key and value tiles, a flag.
template <int32_t kD>
__host__ __device__ constexpr int32_t fusedReductionSmemBytes()
{
    return 4 * fusedTileBytes<kD>() + 16;
}

//! Bytes of dynamic shared memory of an output item: query tile and context (or the float32
//! output tile over both), then the LePE halo and the LePE parameters.
template <typename T, int32_t kD>
__host__ __device__ constexpr int32_t fusedOutputSmemBytes(int32_t haloRows)
{
    return (2 * fusedTileBytes<kD>() > fusedTileBytes<kD>() + fusedCtxParts<T>() * kD * fusedLd<kD>() * 2
                   ? 2 * fusedTileBytes<kD>()
                   : fusedTileBytes<kD>() + fusedCtxParts<T>() * kD * fusedLd<kD>() * 2)
        + haloRows * fusedLd<kD>() * 2 + fusedLepeBytes<kD>();
}

//! A float as a uint32 whose unsigned order is the float order (NaN aside): sign bit set, the bits
//! inverted. 0 is below every key of a number (-inf's is 0x007FFFFF): "no maximum yet".
__device__ __forceinline__ uint32_t orderedKey(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    return (bits & 0x80000000U) != 0U ? ~bits : (bits | 0x80000000U);
}

__device__ __forceinline__ float fromOrderedKey(uint32_t key)
{
    uint32_t const bits = (key & 0x80000000U) != 0U ? (key & 0x7FFFFFFFU) : ~key;
    float x;
    memcpy(&x, &bits, sizeof(x));
    return x;
}

//! Merges the `count` (1..kFUSED_MERGE_FANIN) partials (ctx_c, m_c, s_c) of group `group` of a level of
//! a (b, head)'s merge tree (its counters and keys from `offset`, its nodes' slots from `below`, `groups`
//! groups): M = max m_c (the group's max keys, raised by every partial's writer before it counted),
//! S = sum s_c e^(m_c - M), C = sum ctx_c e^(m_c - M). Below the root (groups > 1) it stores (C, M, S) as
//! the group's partial (slot chunks + offset + group) and raises the parent's keys with M; the root
//! writes ctx = C / S to ws.ctx (16-bit, hi [and lo]). Zeroes the group's keys. Slots and key addresses
//! are computed where they are used, from int32s and kernel parameters: passing them in as 64-bit
//! values kept more registers live across the loads and spilled on sm_87.
template <typename T, int32_t kD>
__device__ __forceinline__ void fusedMergeGroup(FusedArgs const& a, int32_t pair, int32_t below, int32_t offset,
    int32_t group, int32_t count, int32_t groups, FusedWorkspace const& ws)
{
    int64_t const first = static_cast<int64_t>(pair) * a.mergeSlots + below + group * kFUSED_MERGE_FANIN;
    uint32_t* const groupKeys = ws.maxKeys + (static_cast<int64_t>(pair) * a.mergeGroups + offset + group) * kD;
    constexpr int32_t kTHREADS_PER_ROW = kFUSED_THREADS / kD;
    constexpr int32_t kCOLS = kD / kTHREADS_PER_ROW; //!< 32 (kD = 64) or 8 (kD = 32) columns per thread
    constexpr int32_t kPARTS = fusedCtxParts<T>();
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const i = tid / kTHREADS_PER_ROW;
    int32_t const j0 = (tid % kTHREADS_PER_ROW) * kCOLS;
    // Other blocks wrote the partials and keys: read them from L2 (__ldcg), never from a stale L1 line.
    // No pass over the partials' maxima: the key's load is in flight with the first two partials' (one
    // L2 round trip); their weights are its first use.
    float const big = fromOrderedKey(__ldcg(groupKeys + i));
    float sum = 0.F;
    float acc[kCOLS];
#pragma unroll
    for (int32_t j = 0; j < kCOLS; ++j)
    {
        acc[j] = 0.F;
    }
    // Two partials at a time, every load of both issued before any is used: one L2 round trip per two
    // (as nvcc schedules the plain loop; more in flight would not fit in 128 registers).
    struct Partial
    {
        float m;
        float s;
        float4 p[kCOLS / 4];
    };
    auto const load = [&](int32_t c, Partial& x) {
        int64_t const slot = first + c;
        x.m = __ldcg(ws.maxPartial + slot * kD + i);
        x.s = __ldcg(ws.sumPartial + slot * kD + i);
        float4 const* row = reinterpret_cast<float4 const*>(ws.ctxPartial + (slot * kD + i) * kD + j0);
#pragma unroll
        for (int32_t v = 0; v < kCOLS / 4; ++v)
        {
            x.p[v] = __ldcg(row + v);
        }
    };
    auto const add = [&](Partial const& x) {
        float const weight = ptx::exp2Approx((x.m - big) * kFUSED_LOG2E); // every partial has a token: m, big finite
        sum = fmaf(x.s, weight, sum);
#pragma unroll
        for (int32_t v = 0; v < kCOLS / 4; ++v)
        {
            acc[4 * v] = fmaf(x.p[v].x, weight, acc[4 * v]);
            acc[4 * v + 1] = fmaf(x.p[v].y, weight, acc[4 * v + 1]);
            acc[4 * v + 2] = fmaf(x.p[v].z, weight, acc[4 * v + 2]);
            acc[4 * v + 3] = fmaf(x.p[v].w, weight, acc[4 * v + 3]);
        }
    };
    int32_t c = 0;
    for (; c + 1 < count; c += 2)
    {
        Partial x0;
        Partial x1;
        load(c, x0);
        load(c + 1, x1);
        add(x0);
        add(x1);
    }
    if (c < count)
    {
        Partial x0;
        load(c, x0);
        add(x0);
    }
    // Every thread of row i (one warp) has read the key: zero it for the next enqueue (persistent state).
    __syncwarp();
    if (j0 == 0)
    {
        groupKeys[i] = 0U;
    }
    if (groups > 1)
    {
        int64_t const into = static_cast<int64_t>(pair) * a.mergeSlots + a.chunks + offset + group;
        uint32_t* const parentKeys = ws.maxKeys
            + (static_cast<int64_t>(pair) * a.mergeGroups + offset + groups + group / kFUSED_MERGE_FANIN) * kD;
        float* const row = ws.ctxPartial + (into * kD + i) * kD + j0;
#pragma unroll
        for (int32_t v = 0; v < kCOLS / 4; ++v)
        {
            *reinterpret_cast<float4*>(row + 4 * v)
                = make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]);
        }
        if (j0 == 0)
        {
            ws.maxPartial[into * kD + i] = big;
            ws.sumPartial[into * kD + i] = sum;
            ptx::reduceMax(parentKeys + i, orderedKey(big));
        }
        return;
    }
    float const inv = 1.F / sum;
    uint16_t* hi = ws.ctx + static_cast<int64_t>(pair) * kPARTS * kD * kD + i * kD + j0;
#pragma unroll
    for (int32_t v = 0; v < kCOLS / 8; ++v)
    {
        uint32_t h[4];
        uint32_t l[4];
#pragma unroll
        for (int32_t w = 0; w < 4; ++w)
        {
            float const x0 = acc[8 * v + 2 * w] * inv;
            float const x1 = acc[8 * v + 2 * w + 1] * inv;
            h[w] = ptx::packPair<T>(x0, x1);
            float y0;
            float y1;
            ptx::unpackPair<T>(h[w], y0, y1);
            l[w] = ptx::packPair<T>(x0 - y0, x1 - y1);
        }
        *reinterpret_cast<uint4*>(hi + 8 * v) = make_uint4(h[0], h[1], h[2], h[3]);
        if constexpr (kPARTS == 2)
        {
            *reinterpret_cast<uint4*>(hi + kD * kD + 8 * v) = make_uint4(l[0], l[1], l[2], l[3]);
        }
    }
}

template <typename T, int32_t kD>
__device__ __forceinline__ void fusedReductionItem(
    FusedArgs const& a, int32_t item, uint16_t const* __restrict__ qkv, FusedWorkspace const& ws, unsigned char* smem)
{
    constexpr int32_t kTILE = fusedTileBytes<kD>();
    constexpr int32_t kMT = kD / 16;                       //!< 16-row tiles of ctx (k channels i)
    constexpr int32_t kNW = (kD / 8) / (kFUSED_WARPS / kMT); //!< n8 tiles of ctx columns per warp
    constexpr bool kBF16 = std::is_same<T, __nv_bfloat16>::value;
    static_assert(kNW % 2 == 0 && kNW >= 2, "warp tiling of the context");

    int32_t const chunk = item % a.chunks;
    int32_t const pair = item / a.chunks; // b * G + head
    int32_t const head = pair % a.globalHeads;
    int32_t const b = pair / a.globalHeads;
    int32_t const tokens = a.height * a.width;
    int32_t const t0 = chunk * a.chunkTokens;
    int32_t const nt = min(a.chunkTokens, tokens - t0);
    int32_t const tiles = (nt + kFUSED_ROWS - 1) / kFUSED_ROWS;
    int32_t const stride = 3 * a.channels;
    uint16_t const* base = qkv + static_cast<int64_t>(b) * tokens * stride;
    uint16_t const* kSrc = base + a.channels + head * kD;
    uint16_t const* vSrc = base + 2 * a.channels + head * kD;
    auto const sK = [&](int32_t stage) { return smem + kTILE * stage; };
    auto const sV = [&](int32_t stage) { return smem + kTILE * (2 + stage); };
    int32_t* const sLast = reinterpret_cast<int32_t*>(smem + 4 * kTILE);

    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP_SIZE;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    int32_t const g = lane >> 2;
    int32_t const t = lane & 3;
    int32_t const i0 = 16 * (warp % kMT);            //!< this warp's 16 k channels
    int32_t const j0 = 8 * kNW * (warp / kMT);        //!< and its 8 kNW v channels
    float acc[kNW][4];
#pragma unroll
    for (int32_t n = 0; n < kNW; ++n)
    {
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.F;
    }
    float rowMax[2] = {-INFINITY, -INFINITY}; //!< m of channels i0 + g and i0 + g + 8 (natural units)
    float rowSum[2] = {0.F, 0.F};             //!< this lane's share of s

    __syncthreads(); // the previous item is done with shared memory
    copyTokens<kD>(sK(0), kFUSED_ROWS, kSrc, t0, min(kFUSED_ROWS, nt), stride);
    copyTokens<kD>(sV(0), kFUSED_ROWS, vSrc, t0, min(kFUSED_ROWS, nt), stride);
    ptx::cpAsyncCommit();
    for (int32_t tile = 0; tile < tiles; ++tile)
    {
        int32_t const stage = tile & 1;
        if (tile + 1 < tiles)
        {
            int32_t const next = t0 + (tile + 1) * kFUSED_ROWS;
            int32_t const count = min(kFUSED_ROWS, nt - (tile + 1) * kFUSED_ROWS);
            copyTokens<kD>(sK(stage ^ 1), kFUSED_ROWS, kSrc, next, count, stride);
            copyTokens<kD>(sV(stage ^ 1), kFUSED_ROWS, vSrc, next, count, stride);
            ptx::cpAsyncCommit();
            ptx::cpAsyncWait<1>();
        }
        else
        {
            ptx::cpAsyncWait<0>();
        }
        __syncthreads(); // every thread's copies of this tile have landed
        int32_t const nv = min(kFUSED_ROWS, nt - tile * kFUSED_ROWS);

        // K^T fragments, block by block of 16 tokens (registers r: channel i0 + g, + 8 for odd r;
        // tokens 16 kb + 2 t + h, + 8 for r >= 2). Pass 1: the tile max of each channel.
        float tileMax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int32_t kb = 0; kb < 4; ++kb)
        {
            if (16 * kb >= nv)
            {
                continue;
            }
            uint32_t ka[4];
            loadATrans<kD>(ka, sK(stage), 16 * kb, i0);
#pragma unroll
            for (int32_t r = 0; r < 4; ++r)
            {
                float x[2];
                ptx::unpackPair<T>(ka[r], x[0], x[1]);
#pragma unroll
                for (int32_t h = 0; h < 2; ++h)
                {
                    int32_t const token = 16 * kb + 2 * t + h + (r >= 2 ? 8 : 0);
                    tileMax[r & 1] = token < nv ? fmaxf(tileMax[r & 1], x[h]) : tileMax[r & 1];
                }
            }
        }
        float shift[2];
#pragma unroll
        for (int32_t r = 0; r < 2; ++r)
        {
            tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(kFULL_MASK, tileMax[r], 1));
            tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(kFULL_MASK, tileMax[r], 2));
            float const newMax = fmaxf(rowMax[r], tileMax[r]); // finite: nv >= 1
            shift[r] = newMax * kFUSED_LOG2E;
            float const alpha = ptx::exp2Approx((rowMax[r] - newMax) * kFUSED_LOG2E); // 0 on the first tile
            rowMax[r] = newMax;
            rowSum[r] *= alpha;
#pragma unroll
            for (int32_t n = 0; n < kNW; ++n)
            {
                acc[n][2 * r] *= alpha;
                acc[n][2 * r + 1] *= alpha;
            }
        }
        // Pass 2: E = exp(k - m) (0 past the chunk) as the A fragment, times V.
#pragma unroll
        for (int32_t kb = 0; kb < 4; ++kb)
        {
            if (16 * kb >= nv)
            {
                continue;
            }
            uint32_t ea[4];
            loadATrans<kD>(ea, sK(stage), 16 * kb, i0);
            uint32_t er[4] = {0U, 0U, 0U, 0U};
#pragma unroll
            for (int32_t r = 0; r < 4; ++r)
            {
                float x[2];
                ptx::unpackPair<T>(ea[r], x[0], x[1]);
#pragma unroll
                for (int32_t h = 0; h < 2; ++h)
                {
                    int32_t const token = 16 * kb + 2 * t + h + (r >= 2 ? 8 : 0);
                    x[h] = token < nv ? globalSoftmaxExp2<T, kD>(fmaf(x[h], kFUSED_LOG2E, -shift[r & 1])) : 0.F;
                    rowSum[r & 1] += x[h];
                }
                ea[r] = ptx::packPair<T>(x[0], x[1]);
                if constexpr (kBF16)
                {
                    float y0;
                    float y1;
                    ptx::unpackPair<T>(ea[r], y0, y1);
                    er[r] = ptx::packPair<T>(x[0] - y0, x[1] - y1);
                }
            }
#pragma unroll
            for (int32_t np = 0; np < kNW / 2; ++np)
            {
                uint32_t bv[4];
                loadBCols<kD>(bv, sV(stage), 16 * kb, j0 + 16 * np);
                uint32_t const b0[2] = {bv[0], bv[1]};
                uint32_t const b1[2] = {bv[2], bv[3]};
                ptx::mma16816<T>(acc[2 * np], ea, b0, acc[2 * np]);
                ptx::mma16816<T>(acc[2 * np + 1], ea, b1, acc[2 * np + 1]);
                if constexpr (kBF16)
                {
                    ptx::mma16816<T>(acc[2 * np], er, b0, acc[2 * np]);
                    ptx::mma16816<T>(acc[2 * np + 1], er, b1, acc[2 * np + 1]);
                }
            }
        }
        __syncthreads(); // every warp is done with this stage (the next copy reuses it)
    }

    // The chunk's partial -> workspace.
    int64_t const slot = static_cast<int64_t>(pair) * a.mergeSlots + chunk;
    float* const partial = ws.ctxPartial + slot * kD * kD;
#pragma unroll
    for (int32_t n = 0; n < kNW; ++n)
    {
        int32_t const col = j0 + 8 * n + 2 * t;
        *reinterpret_cast<float2*>(partial + (i0 + g) * kD + col) = make_float2(acc[n][0], acc[n][1]);
        *reinterpret_cast<float2*>(partial + (i0 + g + 8) * kD + col) = make_float2(acc[n][2], acc[n][3]);
    }
#pragma unroll
    for (int32_t r = 0; r < 2; ++r)
    {
        rowSum[r] += __shfl_xor_sync(kFULL_MASK, rowSum[r], 1);
        rowSum[r] += __shfl_xor_sync(kFULL_MASK, rowSum[r], 2);
    }
    if (warp < kMT && t == 0)
    {
        // the keys of the chunk's group in the merge tree (level 1: groups of kFUSED_MERGE_FANIN chunks)
        uint32_t* const keys
            = ws.maxKeys + (static_cast<int64_t>(pair) * a.mergeGroups + chunk / kFUSED_MERGE_FANIN) * kD;
        ptx::reduceMax(keys + i0 + g, orderedKey(rowMax[0]));
        ptx::reduceMax(keys + i0 + g + 8, orderedKey(rowMax[1]));
        ws.maxPartial[slot * kD + i0 + g] = rowMax[0];
        ws.maxPartial[slot * kD + i0 + g + 8] = rowMax[1];
        ws.sumPartial[slot * kD + i0 + g] = rowSum[0];
        ws.sumPartial[slot * kD + i0 + g + 8] = rowSum[1];
    }

    // Count the partial in its group of the merge tree; the block that counts a group's last partial
    // merges the group and counts the result one level up, until the root's merge writes the context.
    // Level l's groups have counters and keys [offset, offset + groups) of the (b, head)'s and partial
    // slots chunks + offset + group (siblings contiguous); level 0's nodes are the chunks (slots from 0).
    // One release/acquire count per block and level (ptx::counterArrive) instead of a fence in every
    // thread: the barrier orders the block's partial stores and key raises before thread 0's count,
    // whose release publishes them; in the last block its acquire, then the barrier, order the merge's
    // reads after every other block's count.
    static_assert(kFUSED_MERGE_FANIN == 4, "levels are counted in shifts of 2 bits");
    int32_t below = 0;  // slot of the first node of the level below
    int32_t offset = 0; // counter (and key row) of this level's first group
    for (int32_t shift = 0;; shift += 2) // the level below has nodes of 4^(shift / 2) chunks
    {
        int32_t const nodes = ((a.chunks - 1) >> shift) + 1;
        int32_t const group = chunk >> (shift + 2);
        int32_t const count = min(kFUSED_MERGE_FANIN, nodes - group * kFUSED_MERGE_FANIN);
        int32_t const groups = ((nodes - 1) >> 2) + 1;
        __syncthreads();
        if (threadIdx.x == 0)
        {
            uint32_t* const counter = ws.counters + static_cast<int64_t>(pair) * a.mergeGroups + offset + group;
            uint32_t const done = ptx::counterArrive(counter, 1U);
            bool const last = done + 1 == static_cast<uint32_t>(count);
            if (last)
            {
                // Every partial of the group is counted: nothing reads this counter again in this
                // launch. Zero it for the next enqueue (persistent counters, enqueueWithState).
                *counter = 0U;
            }
            *sLast = last ? 1 : 0;
        }
        __syncthreads();
        if (*sLast == 0)
        {
            return;
        }
        fusedMergeGroup<T, kD>(a, pair, below, offset, group, count, groups, ws);
        if (groups == 1)
        {
            return;
        }
        below = a.chunks + offset;
        offset += groups;
    }
}

template <typename T, int32_t kD>
__device__ __forceinline__ void fusedOutputItem(FusedArgs const& a, int32_t item, uint16_t const* __restrict__ qkv,
    void const* lepeWeight, void const* lepeBias, T* __restrict__ out, FusedWorkspace const& ws, unsigned char* smem)
{
    constexpr int32_t kTILE = fusedTileBytes<kD>();
    constexpr int32_t kKB = kD / 16;
    constexpr int32_t kNT = kD / 8;
    constexpr int32_t kPARTS = fusedCtxParts<T>();
    constexpr bool kBF16 = kPARTS == 2;

    int32_t rest = item;
    int32_t const tx = rest % a.oTilesX;
    rest /= a.oTilesX;
    int32_t const ty = rest % a.oTilesY;
    int32_t const pair = rest / a.oTilesY; // b * G + head
    int32_t const head = pair % a.globalHeads;
    int32_t const b = pair / a.globalHeads;
    Rect const grid{0, 0, a.height, a.width};
    Rect tile;
    tile.r0 = ty * a.oTileH;
    tile.c0 = tx * a.oTileW;
    tile.rows = min(a.height - tile.r0, a.oTileH);
    tile.cols = min(a.width - tile.c0, a.oTileW);
    int32_t const stride = 3 * a.channels;
    int64_t const tokens = static_cast<int64_t>(a.height) * a.width;
    uint16_t const* base = qkv + static_cast<int64_t>(b) * tokens * stride;
    int32_t const ch = head * kD;

    unsigned char* const sQ = smem;
    auto const sCtx = [&](int32_t part) { return smem + kTILE + part * kD * fusedLd<kD>() * 2; };
    unsigned char* const sHalo = smem + fusedOutputSmemBytes<T, kD>(0) - fusedLepeBytes<kD>();
    float* const sW = reinterpret_cast<float*>(sHalo + a.oHaloRows * fusedLd<kD>() * 2);
    float* const sOut = reinterpret_cast<float*>(smem);
    Rect const haloRect = haloOf(tile, grid);

    __syncthreads(); // the previous item is done with shared memory
    // What does not depend on the pass kernel first: the q tile and the LePE halo of v (qkv is the
    // op's input) and the LePE parameters. On sm_90 this kernel is a programmatic dependent launch
    // and this part overlaps the pass kernel's last blocks; the wait below returns once the whole
    // pass grid has completed and its writes (ctx) are visible (at once on a later item, or
    // without PDL).
    copyRect<kD>(sQ, kFUSED_ROWS, base + ch, tile, a.width, stride);
    if (a.hasLepe)
    {
        copyRect<kD>(sHalo, haloRect.rows * haloRect.cols, base + 2 * a.channels + ch, haloRect, a.width, stride);
    }
    ptx::cpAsyncCommit();
    if (a.hasLepe)
    {
        stageLepe<T, kD>(sW, lepeWeight, lepeBias, ch, a.lepeFloat32); // own region: read after the barriers below
    }
    ptx::gridDependencyWait();
#pragma unroll
    for (int32_t part = 0; part < kPARTS; ++part)
    {
        copyTokens<kD>(sCtx(part), kD, ws.ctx + (static_cast<int64_t>(pair) * kPARTS + part) * kD * kD, 0, kD, kD);
    }
    ptx::cpAsyncCommit();
    ptx::cpAsyncWait<0>();
    __syncthreads();

    int32_t const warp = static_cast<int32_t>(threadIdx.x) / kWARP_SIZE;
    // softmax(q) of rows g and g + 8 over the head's channels: the lanes of a quad hold them all.
    // Pass 1: the row max; pass 2: e = exp(q - max) as the A fragment (its row sum divides the
    // product at the end).
    float rowMax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int32_t kb = 0; kb < kKB; ++kb)
    {
        uint32_t qa[4];
        loadA<kD>(qa, sQ, 16 * warp, 16 * kb);
#pragma unroll
        for (int32_t r = 0; r < 4; ++r)
        {
            float x0;
            float x1;
            ptx::unpackPair<T>(qa[r], x0, x1);
            rowMax[r & 1] = fmaxf(rowMax[r & 1], fmaxf(x0, x1));
        }
    }
    float rowSum[2] = {0.F, 0.F};
#pragma unroll
    for (int32_t r = 0; r < 2; ++r)
    {
        rowMax[r] = fmaxf(rowMax[r], __shfl_xor_sync(kFULL_MASK, rowMax[r], 1));
        rowMax[r] = fmaxf(rowMax[r], __shfl_xor_sync(kFULL_MASK, rowMax[r], 2));
        rowMax[r] *= kFUSED_LOG2E;
    }
    float acc[kNT][4];
#pragma unroll
    for (int32_t n = 0; n < kNT; ++n)
    {
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.F;
    }
#pragma unroll
    for (int32_t kb = 0; kb < kKB; ++kb)
    {
        uint32_t pa[4];
        loadA<kD>(pa, sQ, 16 * warp, 16 * kb);
        uint32_t pr[4] = {0U, 0U, 0U, 0U};
#pragma unroll
        for (int32_t r = 0; r < 4; ++r)
        {
            float x0;
            float x1;
            ptx::unpackPair<T>(pa[r], x0, x1);
            x0 = globalSoftmaxExp2<T, kD>(fmaf(x0, kFUSED_LOG2E, -rowMax[r & 1]));
            x1 = globalSoftmaxExp2<T, kD>(fmaf(x1, kFUSED_LOG2E, -rowMax[r & 1]));
            rowSum[r & 1] += x0 + x1;
            pa[r] = ptx::packPair<T>(x0, x1);
            if constexpr (kBF16)
            {
                float y0;
                float y1;
                ptx::unpackPair<T>(pa[r], y0, y1);
                pr[r] = ptx::packPair<T>(x0 - y0, x1 - y1);
            }
        }
#pragma unroll
        for (int32_t nb = 0; nb < kNT / 2; ++nb)
        {
            uint32_t bc[4];
            loadBCols<kD>(bc, sCtx(0), 16 * kb, 16 * nb);
            uint32_t const b0[2] = {bc[0], bc[1]};
            uint32_t const b1[2] = {bc[2], bc[3]};
            ptx::mma16816<T>(acc[2 * nb], pa, b0, acc[2 * nb]);
            ptx::mma16816<T>(acc[2 * nb + 1], pa, b1, acc[2 * nb + 1]);
            if constexpr (kBF16)
            {
                uint32_t bl[4];
                loadBCols<kD>(bl, sCtx(1), 16 * kb, 16 * nb);
                uint32_t const l0[2] = {bl[0], bl[1]};
                uint32_t const l1[2] = {bl[2], bl[3]};
                ptx::mma16816<T>(acc[2 * nb], pr, b0, acc[2 * nb]);
                ptx::mma16816<T>(acc[2 * nb + 1], pr, b1, acc[2 * nb + 1]);
                ptx::mma16816<T>(acc[2 * nb], pa, l0, acc[2 * nb]);
                ptx::mma16816<T>(acc[2 * nb + 1], pa, l1, acc[2 * nb + 1]);
            }
        }
    }
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
        acc[n][0] *= rowSum[0];
        acc[n][1] *= rowSum[0];
        acc[n][2] *= rowSum[1];
        acc[n][3] *= rowSum[1];
    }
    __syncthreads(); // every warp is done with sQ and sCtx: the float32 output tile goes over them
    stageRows<kD>(sOut, 16 * warp, acc);
    __syncthreads();
    storeTile<T, kD>(sOut, tile, grid, sHalo, haloRect, a.hasLepe ? sW : nullptr,
        out + static_cast<int64_t>(b) * tokens * a.channels, ch, a.width, a.channels);
}

} // namespace detail
} // namespace elfatt
