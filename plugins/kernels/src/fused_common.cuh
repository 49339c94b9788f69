/*
 * elfatt-deploy kernels v2: what the fused kernels share (internal header).
 *
 * Kernels v2 run float16 / bfloat16 with head dim kD = 32 or 64 on sm_80+, in blocks of four
 * warps (kFUSED_THREADS = 128), every block on tiles of up to kFUSED_ROWS = 64 tokens:
 *   - 16-bit tiles in shared memory have rows of kD + 8 elements (16 bytes of padding): the
 *     eight 16-byte rows of one ldmatrix phase, and the 16-byte cp.async / epilogue accesses of
 *     one quarter warp, then fall in eight different 16-byte bank groups (row r starts at bank
 *     group (r * (kD + 8) / 8) mod 8 = r mod 8 for kD = 64, 5 r mod 8 for kD = 32);
 *   - tiles are filled with 16-byte cp.async (zero fill for rows past the end);
 *   - outputs are staged as float32 in rows of kD + 8 floats and written with 16-byte stores of
 *     eight channels, LePE (fp32 weights in registers) added from a shared-memory halo tile.
 * See docs/kernels.md ("Kernels v2") for the whole design.
 */
#pragma once

#include "common.cuh"
#include "ptx.cuh"

#include <cstdint>
#include <type_traits>

namespace elfatt
{
namespace detail
{

constexpr int32_t kFUSED_WARPS = kFUSED_ROWS / 16;
constexpr int32_t kFUSED_THREADS = kFUSED_WARPS * kWARP_SIZE;
constexpr float kFUSED_LOG2E = 1.4426950408889634F;

//! Row stride (elements) of a 16-bit tile and bytes of one tile of kFUSED_ROWS rows.
template <int32_t kD>
__host__ __device__ constexpr int32_t fusedLd()
{
    return kD + 8;
}
template <int32_t kD>
__host__ __device__ constexpr int32_t fusedTileBytes()
{
    return kFUSED_ROWS * fusedLd<kD>() * 2;
}
//! Row stride (floats) of the float32 output staging tile; kFUSED_ROWS rows of it take exactly
//! two 16-bit tiles.
template <int32_t kD>
__host__ __device__ constexpr int32_t fusedOutLd()
{
    return kD + 8;
}
static_assert(kFUSED_ROWS * fusedOutLd<64>() * 4 == 2 * fusedTileBytes<64>(), "output tile = two 16-bit tiles");

//! Everything the v2 kernels need besides the pointers (passed by value; see FusedPlan).
struct FusedArgs
{
    int32_t batch;
    int32_t height;
    int32_t width;
    int32_t channels;
    int32_t globalHeads;
    int32_t localHeads;
    int32_t globalChannels;
    int32_t windowH;
    int32_t windowW;
    int32_t windowsY;
    int32_t windowsX;
    int32_t qTileH;
    int32_t qTileW;
    int32_t qTilesY;
    int32_t qTilesX;
    int32_t keyTiles;
    int32_t haloRows;
    int32_t localStages; //!< key/value stages of the local tiles: 1 (one key tile per window) or 2
    int32_t chunks;
    int32_t mergeGroups; //!< groups of one (b, head)'s merge tree
    int32_t mergeSlots;  //!< partial slots of one (b, head): the chunks', then the tree's groups below the root
    int32_t chunkTokens;
    int32_t oTileH;
    int32_t oTileW;
    int32_t oTilesY;
    int32_t oTilesX;
    int32_t oHaloRows;
    int32_t reductionItems;
    int32_t localItems;
    int32_t outputItems;
    float scaleLog2;  //!< local logit scale times log2(e)
    bool hasLepe;
    bool lepeFloat32; //!< LePE weight and bias are float32 (else the input type)
};

//! The v2 workspace (see LaunchPlan: partials in the v1 regions; a counter and kD max keys per merge group).
struct FusedWorkspace
{
    float* ctxPartial;   //!< [B][G][mergeSlots][kD][kD]: sum_n exp(k_i - m_i) v_j of each chunk (or group)
    float* maxPartial;   //!< [B][G][mergeSlots][kD]: m_i of each chunk (or group)
    float* sumPartial;   //!< [B][G][mergeSlots][kD]: sum_n exp(k_i - m_i) of each chunk (or group)
    uint16_t* ctx;       //!< [B][G][parts][kD][kD] 16-bit: the merged context (bfloat16: hi, then lo)
    uint32_t* counters;  //!< [B][G][mergeGroups]: partials of each group done (zero at the start; left zero)
    uint32_t* maxKeys;   //!< [B][G][mergeGroups][kD]: max m_i over each group's partials as an ordered key
                         //!< (orderedKey; 0, none yet, at the start; left zero), right after the counters
};

//! A rectangle of the token grid: rows [r0, r0 + rows), columns [c0, c0 + cols).
struct Rect
{
    int32_t r0;
    int32_t c0;
    int32_t rows;
    int32_t cols;
};

//! 2^x of a weight of the global heads' k and q softmax (x <= 0): ptx::exp2Approx, one MUFU.EX2, except
//! in the bfloat16 d = 64 kernels, which keep exp2f (the same MUFU.EX2 plus a four-instruction fix-up
//! for subnormal results): there the shorter code makes ptxas spill two predicate registers (8 bytes)
//! on sm_90 at the 128-register cap, and the v2 kernels must not spill (tests/test_kernels_nvcc.py).
template <typename T, int32_t kD>
__device__ __forceinline__ float globalSoftmaxExp2(float x)
{
    if constexpr (std::is_same<T, __nv_bfloat16>::value && kD == 64)
    {
        return exp2f(x);
    }
    else
    {
        return ptx::exp2Approx(x);
    }
}

//! Rect grown by one token on every side, clipped to bounds (the LePE taps it reads).
__device__ __forceinline__ Rect haloOf(Rect const& r, Rect const& bounds)
{
    Rect h;
    h.r0 = max(r.r0 - 1, bounds.r0);
    h.c0 = max(r.c0 - 1, bounds.c0);
    h.rows = min(r.r0 + r.rows + 1, bounds.r0 + bounds.rows) - h.r0;
    h.cols = min(r.c0 + r.cols + 1, bounds.c0 + bounds.cols) - h.c0;
    return h;
}

//! Row and column of index i = first + k step in a raster of `cols` columns, for k = 0, 1, ...: two
//! integer divisions when it is made (a division by a run-time divisor is ~20 SASS instructions),
//! then a few adds and one compare per advance(). cols < 1 (an empty raster, whose indices are all
//! masked) is treated as 1.
struct RowColumnStepper
{
    int32_t r;
    int32_t c;
    int32_t cols;
    int32_t stepRows;
    int32_t stepCols;

    __device__ __forceinline__ RowColumnStepper(int32_t first, int32_t step, int32_t columns)
        : cols(max(columns, 1))
    {
        r = first / cols;
        c = first - r * cols;
        stepRows = step / cols;
        stepCols = step - stepRows * cols;
    }

    __device__ __forceinline__ void advance()
    {
        r += stepRows;
        c += stepCols;
        if (c >= cols)
        {
            c -= cols;
            ++r;
        }
    }
};

//! cp.async of kD channels of `rows` tokens into a 16-bit tile (rows >= count read as zeros):
//! token t of the tile is rect row t / rect.cols, column t % rect.cols; tileRows rows are
//! written. src points at qkv of one batch item plus the first channel; stride = 3C.
template <int32_t kD>
__device__ __forceinline__ void copyRect(unsigned char* tile, int32_t tileRows, uint16_t const* src, Rect const& rect,
    int32_t width, int32_t stride)
{
    constexpr int32_t kCHUNKS = kD / 8; // 16-byte chunks per row
    constexpr int32_t kLD = fusedLd<kD>();
    int32_t const count = rect.rows * rect.cols;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const chunk = tid % kCHUNKS;
    int32_t const first = tid / kCHUNKS;
    RowColumnStepper at(first, kFUSED_THREADS / kCHUNKS, rect.cols);
    for (int32_t row = first; row < tileRows; row += kFUSED_THREADS / kCHUNKS, at.advance())
    {
        bool const valid = row < count;
        int32_t const token = valid ? (rect.r0 + at.r) * width + rect.c0 + at.c : 0;
        // A masked row still passes a valid 16-byte aligned address (the first channel of token 0).
        uint16_t const* from = src + (valid ? token * stride + 8 * chunk : 0);
        ptx::cpAsync16(tile + (row * kLD + 8 * chunk) * 2, from, valid ? 16U : 0U);
    }
}

//! cp.async of keys [first, first + tileRows) of a window in row-major order (keys >= count read
//! as zeros).
template <int32_t kD>
__device__ __forceinline__ void copyWindowRun(unsigned char* tile, int32_t tileRows, uint16_t const* src,
    Rect const& window, int32_t first, int32_t width, int32_t stride)
{
    constexpr int32_t kCHUNKS = kD / 8;
    constexpr int32_t kLD = fusedLd<kD>();
    int32_t const count = window.rows * window.cols;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const chunk = tid % kCHUNKS;
    RowColumnStepper at(first + tid / kCHUNKS, kFUSED_THREADS / kCHUNKS, window.cols);
    for (int32_t row = tid / kCHUNKS; row < tileRows; row += kFUSED_THREADS / kCHUNKS, at.advance())
    {
        int32_t const idx = first + row;
        bool const valid = idx < count;
        int32_t const token = valid ? (window.r0 + at.r) * width + window.c0 + at.c : 0;
        uint16_t const* from = src + (valid ? token * stride + 8 * chunk : 0);
        ptx::cpAsync16(tile + (row * kLD + 8 * chunk) * 2, from, valid ? 16U : 0U);
    }
}

//! cp.async of `count` consecutive tokens (raster order) starting at token `first`.
template <int32_t kD>
__device__ __forceinline__ void copyTokens(
    unsigned char* tile, int32_t tileRows, uint16_t const* src, int32_t first, int32_t count, int32_t stride)
{
    constexpr int32_t kCHUNKS = kD / 8;
    constexpr int32_t kLD = fusedLd<kD>();
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const chunk = tid % kCHUNKS;
    for (int32_t row = tid / kCHUNKS; row < tileRows; row += kFUSED_THREADS / kCHUNKS)
    {
        bool const valid = row < count;
        uint16_t const* from = src + (valid ? (first + row) * stride + 8 * chunk : 0);
        ptx::cpAsync16(tile + (row * kLD + 8 * chunk) * 2, from, valid ? 16U : 0U);
    }
}

//! A fragment (16 x 16, row-major) of rows [row0, row0 + 16), columns [col0, col0 + 16) of a 16-bit tile.
template <int32_t kD>
__device__ __forceinline__ void loadA(uint32_t (&a)[4], unsigned char const* tile, int32_t row0, int32_t col0)
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    ptx::ldmatrixX4(a, tile + ((row0 + lane % 16) * fusedLd<kD>() + col0 + 8 * (lane / 16)) * 2);
}

//! A fragment of the transpose: A[i][k] = tile[k0 + k][i0 + i] (tile rows are the k index).
template <int32_t kD>
__device__ __forceinline__ void loadATrans(uint32_t (&a)[4], unsigned char const* tile, int32_t k0, int32_t i0)
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    int32_t const m = lane / 8;
    ptx::ldmatrixX4Trans(a, tile + ((k0 + lane % 8 + 8 * (m / 2)) * fusedLd<kD>() + i0 + 8 * (m % 2)) * 2);
}

//! B fragments of two n8 tiles, B[k][n] = tile[n0 + n][k0 + k] (tile rows are the n index, as K
//! for Q K^T): b[0..1] for columns n0..n0+7, b[2..3] for n0+8..n0+15.
template <int32_t kD>
__device__ __forceinline__ void loadBRows(uint32_t (&b)[4], unsigned char const* tile, int32_t n0, int32_t k0)
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    ptx::ldmatrixX4(b, tile + ((n0 + lane % 8 + 8 * (lane / 16)) * fusedLd<kD>() + k0 + 8 * ((lane / 8) % 2)) * 2);
}

//! B fragments of two n8 tiles, B[k][n] = tile[k0 + k][n0 + n] (tile rows are the k index, as V
//! for P V): b[0..1] for columns n0..n0+7, b[2..3] for n0+8..n0+15.
template <int32_t kD>
__device__ __forceinline__ void loadBCols(uint32_t (&b)[4], unsigned char const* tile, int32_t k0, int32_t n0)
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    ptx::ldmatrixX4Trans(
        b, tile + ((k0 + lane % 8 + 8 * ((lane / 8) % 2)) * fusedLd<kD>() + n0 + 8 * (lane / 16)) * 2);
}

//! acc[n] (16 x 8 tile n of a warp's 16 rows) -> rows [row0, row0 + 16) of the float32 staging tile.
template <int32_t kD, int32_t kN>
__device__ __forceinline__ void stageRows(float* sOut, int32_t row0, float const (&acc)[kN][4])
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % kWARP_SIZE;
    int32_t const g = lane >> 2;
    int32_t const t = lane & 3;
    constexpr int32_t kLD = fusedOutLd<kD>();
#pragma unroll
    for (int32_t n = 0; n < kN; ++n)
    {
        *reinterpret_cast<float2*>(sOut + (row0 + g) * kLD + 8 * n + 2 * t) = make_float2(acc[n][0], acc[n][1]);
        *reinterpret_cast<float2*>(sOut + (row0 + g + 8) * kLD + 8 * n + 2 * t) = make_float2(acc[n][2], acc[n][3]);
    }
}

//! 8 consecutive 16-bit elements of a 16-byte aligned address, widened.
template <typename T>
__device__ __forceinline__ void load8(float (&v)[8], void const* p)
{
    uint4 const raw = *static_cast<uint4 const*>(p);
    uint32_t const words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int32_t i = 0; i < 4; ++i)
    {
        ptx::unpackPair<T>(words[i], v[2 * i], v[2 * i + 1]);
    }
}

//! Bytes of the float32 LePE parameters of one head in shared memory: weights [9][kD], bias [kD].
template <int32_t kD>
__host__ __device__ constexpr int32_t fusedLepeBytes()
{
    return 10 * kD * 4;
}

//! Index in sW of channel c of tap (0..8; 9 = the bias): each tap's kD floats are stored as two
//! halves, channels 8 g + 0..3 of every group g at 4 g, channels 8 g + 4..7 at kD / 2 + 4 g, so
//! that the eight weights of group g are two float4 reads with no shuffling (readLepe8), each a
//! quarter warp's conflict-free 128 bytes (d = 64: groups 0..7; d = 32: groups 0..3, twice).
template <int32_t kD>
__host__ __device__ constexpr int32_t lepeIndex(int32_t tap, int32_t c)
{
    return tap * kD + ((c & 7) >> 2) * (kD / 2) + (c >> 3) * 4 + (c & 3);
}

//! The eight float32 weights of channel group g (channels 8 g .. 8 g + 7) of tap (9: the bias).
template <int32_t kD>
__device__ __forceinline__ void readLepe8(float (&w)[8], float const* sW, int32_t tap, int32_t group)
{
    float4 const lo = *reinterpret_cast<float4 const*>(sW + tap * kD + 4 * group);
    float4 const hi = *reinterpret_cast<float4 const*>(sW + tap * kD + kD / 2 + 4 * group);
    w[0] = lo.x;
    w[1] = lo.y;
    w[2] = lo.z;
    w[3] = lo.w;
    w[4] = hi.x;
    w[5] = hi.y;
    w[6] = hi.z;
    w[7] = hi.w;
}

//! sW[lepeIndex(tap, c)] = weight[(ch0 + c) * 9 + tap] and sW[lepeIndex(9, c)] = bias[ch0 + c] (0
//! without a bias), as float32, for the kD channels of one head. The caller puts a __syncthreads
//! before the reads.
//! The head's weights are 9 kD contiguous elements from 9 ch0 (layout [C][3][3]) and its biases kD
//! from ch0, both at 16-byte aligned offsets (ch0 is a multiple of 32): where the pointers are
//! 16-byte aligned they are read as 16-byte vectors, one coalesced warp instruction per 512
//! bytes (d = 64, float16: 72 + 8 vectors, one instruction in each of the 4 warps but the last);
//! else element by element (5 scalar loads per thread, lanes 9 elements apart).
template <typename T, int32_t kD>
__device__ __forceinline__ void stageLepe(float* sW, void const* weight, void const* bias, int32_t ch0, bool isFloat32)
{
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    bool const vectors = ((reinterpret_cast<uintptr_t>(weight) | reinterpret_cast<uintptr_t>(bias)) & 15U) == 0U;
    if (vectors)
    {
        int32_t const per = isFloat32 ? 4 : 8; // elements per 16-byte vector
        int32_t const esize = isFloat32 ? 4 : 2;
        int32_t const weightVectors = 9 * kD / per;
        int32_t const vectorCount = weightVectors + (bias != nullptr ? kD / per : 0);
        for (int32_t v = tid; v < vectorCount; v += kFUSED_THREADS)
        {
            bool const isWeight = v < weightVectors;
            int32_t const first = isWeight ? v * per : (v - weightVectors) * per; // element of the head
            unsigned char const* src = isWeight
                ? static_cast<unsigned char const*>(weight) + static_cast<int64_t>(9 * ch0 + first) * esize
                : static_cast<unsigned char const*>(bias) + static_cast<int64_t>(ch0 + first) * esize;
            float x[8];
            if (isFloat32)
            {
                float4 const f = *reinterpret_cast<float4 const*>(src);
                x[0] = f.x;
                x[1] = f.y;
                x[2] = f.z;
                x[3] = f.w;
                x[4] = x[5] = x[6] = x[7] = 0.F;
            }
            else
            {
                uint4 const raw = *reinterpret_cast<uint4 const*>(src);
                ptx::unpackPair<T>(raw.x, x[0], x[1]);
                ptx::unpackPair<T>(raw.y, x[2], x[3]);
                ptx::unpackPair<T>(raw.z, x[4], x[5]);
                ptx::unpackPair<T>(raw.w, x[6], x[7]);
            }
#pragma unroll
            for (int32_t k = 0; k < 8; ++k)
            {
                if (k < per)
                {
                    int32_t const e = first + k;
                    sW[isWeight ? lepeIndex<kD>(e % 9, e / 9) : lepeIndex<kD>(9, e)] = x[k];
                }
            }
        }
        if (bias == nullptr)
        {
            for (int32_t c = tid; c < kD; c += kFUSED_THREADS)
            {
                sW[lepeIndex<kD>(9, c)] = 0.F;
            }
        }
        return;
    }
    for (int32_t e = tid; e < 10 * kD; e += kFUSED_THREADS)
    {
        int32_t const tap = e / kD;
        int32_t const c = e - tap * kD;
        float value = 0.F;
        if (tap < 9)
        {
            value = loadLepeParam<T>(weight, (ch0 + c) * 9 + tap, isFloat32);
        }
        else if (bias != nullptr)
        {
            value = loadLepeParam<T>(bias, ch0 + c, isFloat32);
        }
        sW[lepeIndex<kD>(tap, c)] = value;
    }
}

//! Eight consecutive floats of shared memory at p (16-byte aligned), read as two float4 in the
//! order that keeps a quarter warp's eight 32-byte reads conflict-free: threads whose phase index
//! has bit 2 set read the high half first (rows of kD + 8 floats, 8-float groups).
__device__ __forceinline__ void read8(float (&v)[8], float const* p)
{
    int32_t const first = ((static_cast<int32_t>(threadIdx.x) & 7) >> 2) * 4;
    float4 const x = *reinterpret_cast<float4 const*>(p + first);
    float4 const y = *reinterpret_cast<float4 const*>(p + 4 - first);
    float4 const lo = first == 0 ? x : y; // selects, not a dynamically indexed array (local memory)
    float4 const hi = first == 0 ? y : x;
    v[0] = lo.x;
    v[1] = lo.y;
    v[2] = lo.z;
    v[3] = lo.w;
    v[4] = hi.x;
    v[5] = hi.y;
    v[6] = hi.z;
    v[7] = hi.w;
}

//! Epilogue of the v2 kernels: out[token of row i][ch0 + c] = sOut[i][c] (+ LePE of v over bounds
//! from the halo tile) for the rows i < rect.rows * rect.cols of rect, 16-byte stores of eight
//! channels. Thread tid owns channels 8 (tid % (kD / 8)) .. + 7 of rows tid / (kD / 8) + k S
//! (S = kFUSED_THREADS / (kD / 8)), all of them at once: per tap of the 3 x 3 kernel it reads its
//! eight float32 weights once (sW, from stageLepe) and uses them, in registers, for all its rows.
//! The halo tile holds v of haloRect (row-major, rows of kD + 8 elements); outBatch points at
//! out of this batch item.
template <typename T, int32_t kD>
__device__ __forceinline__ void storeTile(float const* sOut, Rect const& rect, Rect const& bounds,
    unsigned char const* halo, Rect const& haloRect, float const* sW, T* outBatch, int32_t ch0, int32_t width,
    int32_t channels)
{
    constexpr int32_t kGROUPS = kD / 8;
    constexpr int32_t kROW_STEP = kFUSED_THREADS / kGROUPS;
    constexpr int32_t kR = (kFUSED_ROWS + kROW_STEP - 1) / kROW_STEP; //!< rows per thread: 4 (kD = 64), 2 (32)
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const group = tid % kGROUPS;
    int32_t const count = rect.rows * rect.cols;
    float value[kR][8];
    int32_t row[kR];
    int32_t col[kR];
    RowColumnStepper at(tid / kGROUPS, kROW_STEP, rect.cols);
#pragma unroll
    for (int32_t k = 0; k < kR; ++k, at.advance())
    {
        int32_t const i = tid / kGROUPS + k * kROW_STEP;
        row[k] = i < count ? rect.r0 + at.r : -2; // -2: no tap of a missing row is inside bounds
        col[k] = rect.c0 + at.c;
        read8(value[k], sOut + i * fusedOutLd<kD>() + 8 * group);
    }
    if (sW != nullptr)
    {
        float w[8];
        readLepe8<kD>(w, sW, 9, group); // the bias
#pragma unroll
        for (int32_t k = 0; k < kR; ++k)
        {
#pragma unroll
            for (int32_t c = 0; c < 8; ++c)
            {
                value[k][c] += w[c];
            }
        }
        // Per row, once: the byte offset of its own token in the halo tile and the 9-bit mask of
        // the taps inside bounds (bit 3 (dy + 1) + dx + 1; a missing row has none), so that a tap
        // costs one bit test and one add per row. Inside bounds: one unsigned compare per axis (a
        // negative difference wraps to > rows).
        constexpr int32_t kLD_BYTES = fusedLd<kD>() * 2;
        int32_t at[kR];
        uint32_t taps[kR];
#pragma unroll
        for (int32_t k = 0; k < kR; ++k)
        {
            uint32_t rowsIn = 0U;
            uint32_t colsIn = 0U;
#pragma unroll
            for (int32_t d = 0; d < 3; ++d)
            {
                rowsIn |= (static_cast<uint32_t>(row[k] + d - 1 - bounds.r0) < static_cast<uint32_t>(bounds.rows) ? 1U : 0U) << d;
                colsIn |= (static_cast<uint32_t>(col[k] + d - 1 - bounds.c0) < static_cast<uint32_t>(bounds.cols) ? 1U : 0U) << d;
            }
            taps[k] = ((rowsIn & 1U) != 0U ? colsIn : 0U) | ((rowsIn & 2U) != 0U ? colsIn << 3 : 0U)
                | ((rowsIn & 4U) != 0U ? colsIn << 6 : 0U);
            at[k] = ((row[k] - haloRect.r0) * haloRect.cols + (col[k] - haloRect.c0)) * kLD_BYTES + 16 * group;
        }
        int32_t const rowBytes = haloRect.cols * kLD_BYTES;
#pragma unroll 1 // rolled: unrolled, the compiler hoists all 9 x kR halo loads and runs out of registers
        for (int32_t dy = 0; dy < 3; ++dy)
        {
            int32_t offset = (dy - 1) * rowBytes - kLD_BYTES; // tap (dy, dx = 0)
#pragma unroll 1
            for (int32_t dx = 0; dx < 3; ++dx, offset += kLD_BYTES)
            {
                int32_t const tap = 3 * dy + dx;
                readLepe8<kD>(w, sW, tap, group);
#pragma unroll
                for (int32_t k = 0; k < kR; ++k)
                {
                    if (((taps[k] >> tap) & 1U) == 0U)
                    {
                        continue;
                    }
                    float v[8];
                    load8<T>(v, halo + at[k] + offset);
#pragma unroll
                    for (int32_t c = 0; c < 8; ++c)
                    {
                        value[k][c] = fmaf(w[c], v[c], value[k][c]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int32_t k = 0; k < kR; ++k)
    {
        if (row[k] < 0)
        {
            continue;
        }
        uint4 packed;
        packed.x = ptx::packPair<T>(value[k][0], value[k][1]);
        packed.y = ptx::packPair<T>(value[k][2], value[k][3]);
        packed.z = ptx::packPair<T>(value[k][4], value[k][5]);
        packed.w = ptx::packPair<T>(value[k][6], value[k][7]);
        *reinterpret_cast<uint4*>(outBatch + static_cast<int64_t>(row[k] * width + col[k]) * channels + ch0 + 8 * group)
            = packed;
    }
}

} // namespace detail
} // namespace elfatt
