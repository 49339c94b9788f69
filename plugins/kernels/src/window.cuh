/*
 * elfatt-deploy kernels: windows of the local heads (internal header).
 *
 * The H x W grid is tiled from the top-left corner by windows of windowH x windowW
 * tokens; edge windows are partial and hold only existing tokens. Tokens of a window
 * are numbered row-major inside it.
 */
#pragma once

#include "common.cuh"

#include <cstdint>

namespace elfatt
{
namespace detail
{

//! Window (wy, wx) of the grid: rows [r0, r1), columns [c0, c1).
struct Window
{
    int64_t r0;
    int64_t r1;
    int64_t c0;
    int64_t c1;
    int64_t cols;
    int64_t size;
};

__device__ __forceinline__ Window makeWindow(Geometry const& g, int64_t wy, int64_t wx)
{
    Window w;
    w.r0 = wy * g.windowH;
    w.r1 = min(g.height, w.r0 + g.windowH);
    w.c0 = wx * g.windowW;
    w.c1 = min(g.width, w.c0 + g.windowW);
    w.cols = w.c1 - w.c0;
    w.size = (w.r1 - w.r0) * w.cols;
    return w;
}

//! Row and column of the idx-th token of a window (row-major inside the window).
__device__ __forceinline__ void windowToken(Window const& w, int64_t idx, int64_t& row, int64_t& col)
{
    int64_t r;
    int64_t c;
    if (idx <= 0x7fffffff && w.cols <= 0x7fffffff)
    {
        int32_t const i32 = static_cast<int32_t>(idx);
        int32_t const n32 = static_cast<int32_t>(w.cols);
        r = i32 / n32;
        c = i32 - r * n32;
    }
    else
    {
        r = idx / w.cols;
        c = idx - r * w.cols;
    }
    row = w.r0 + r;
    col = w.c0 + c;
}

//! Token index (row * W + col) of the idx-th token of a window.
__device__ __forceinline__ int64_t windowTokenIndex(Window const& w, int64_t idx, int64_t width)
{
    int64_t row;
    int64_t col;
    windowToken(w, idx, row, col);
    return row * width + col;
}

//! One work item of the local kernels: (batch item, local head, window, tile of queries).
struct LocalItem
{
    int64_t b;
    int64_t head;
    int64_t tile; //!< query tile inside the window
    Window w;
};

//! Decodes item = (((b * localHeads + head) * windowsY + wy) * windowsX + wx) * tilesPerWindow + tile.
__device__ __forceinline__ LocalItem decodeLocalItem(Geometry const& g, int64_t item, int64_t tilesPerWindow)
{
    LocalItem it;
    int64_t rest = item;
    it.tile = rest % tilesPerWindow;
    rest /= tilesPerWindow;
    int64_t const wx = rest % g.windowsX;
    rest /= g.windowsX;
    int64_t const wy = rest % g.windowsY;
    rest /= g.windowsY;
    it.head = rest % g.localHeads;
    it.b = rest / g.localHeads;
    it.w = makeWindow(g, wy, wx);
    return it;
}

//! Epilogue of the tiled local kernels: out[token, ch + c] = tile[t][c] (+ LePE inside the window)
//! for the rows t < rows of a float tile with row stride ld, tokenIndex[t] their token indices.
//! Channel-contiguous stores; `threads` threads of the block share the work (block-stride by threadIdx.x).
template <typename T>
__device__ __forceinline__ void storeLocalRows(float const* tile, int32_t ld, int64_t const* tokenIndex, int32_t rows,
    int32_t threads, T const* batchBase, T const* lepeWeight, T const* lepeBias, T* out, Geometry const& g, int64_t b,
    int64_t ch, Window const& w)
{
    int64_t const d = g.headDim;
    int64_t const tokens = g.height * g.width;
    int64_t const count = static_cast<int64_t>(rows) * d;
    for (int64_t e = threadIdx.x; e < count; e += threads)
    {
        int32_t const t = static_cast<int32_t>(e / d);
        int32_t const c = static_cast<int32_t>(e - static_cast<int64_t>(t) * d);
        float value = tile[t * ld + c];
        int64_t const token = tokenIndex[t];
        if (lepeWeight != nullptr)
        {
            int64_t const row = token / g.width;
            int64_t const col = token - row * g.width;
            value += lepeAt(batchBase, lepeWeight, lepeBias, g, row, col, ch + c, w.r0, w.r1, w.c0, w.c1);
        }
        out[(b * tokens + token) * g.channels + ch + c] = fromFloat<T>(value);
    }
}

} // namespace detail
} // namespace elfatt
