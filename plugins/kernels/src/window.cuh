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

} // namespace detail
} // namespace elfatt
