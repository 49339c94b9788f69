/*
 * elfatt-deploy kernels: device helpers shared by the kernels (internal header).
 */
#pragma once

#include "plan.h"

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#ifdef ELFATT_HOST_EMULATION
// Test builds only: runs these very kernels on CPU threads (plugins/kernels/tests/emulation).
#include "elfatt_host_emulation.h"
#define ELFATT_DYNAMIC_SHARED(type, name) type* const name = ::elfatt::emulation::dynamicShared<type>()
#else
//! Declares the block's dynamic shared memory as an array `name` of `type`.
#define ELFATT_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace elfatt
{
namespace detail
{

constexpr int32_t kWARP_SIZE = 32;
constexpr unsigned kFULL_MASK = 0xffffffffU;

//! Element <-> float conversions (all arithmetic runs in float32).
__device__ __forceinline__ float toFloat(float x)
{
    return x;
}
__device__ __forceinline__ float toFloat(__half x)
{
    return __half2float(x);
}
__device__ __forceinline__ float toFloat(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ float fromFloat<float>(float x)
{
    return x;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float x)
{
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

//! Bits of a 16-bit element and back (for packing two elements into one 32-bit register).
__device__ __forceinline__ uint16_t toRaw(__half x)
{
    return static_cast<__half_raw>(x).x;
}
__device__ __forceinline__ uint16_t toRaw(__nv_bfloat16 x)
{
    return static_cast<__nv_bfloat16_raw>(x).x;
}

template <typename T>
__device__ __forceinline__ T fromRaw(uint16_t bits);
template <>
__device__ __forceinline__ __half fromRaw<__half>(uint16_t bits)
{
    __half_raw raw;
    raw.x = bits;
    __half value;
    value = raw;
    return value;
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromRaw<__nv_bfloat16>(uint16_t bits)
{
    __nv_bfloat16_raw raw;
    raw.x = bits;
    __nv_bfloat16 value;
    value = raw;
    return value;
}

//! Read-only load of one element, widened to float.
template <typename T>
__device__ __forceinline__ float loadFloat(T const* ptr)
{
    return toFloat(*ptr);
}

//! Butterfly reductions: every lane ends with the same (bitwise identical) value.
__device__ __forceinline__ float warpAllReduceSum(float x)
{
#pragma unroll
    for (int32_t offset = kWARP_SIZE / 2; offset > 0; offset /= 2)
    {
        x += __shfl_xor_sync(kFULL_MASK, x, offset);
    }
    return x;
}

__device__ __forceinline__ float warpAllReduceMax(float x)
{
#pragma unroll
    for (int32_t offset = kWARP_SIZE / 2; offset > 0; offset /= 2)
    {
        x = fmaxf(x, __shfl_xor_sync(kFULL_MASK, x, offset));
    }
    return x;
}

//! exp(x - m) that is 0 (not NaN) when both are -inf.
__device__ __forceinline__ float expShifted(float x, float m)
{
    return (m == -INFINITY) ? 0.F : expf(x - m);
}

//! Per-launch geometry shared by the kernels (passed by value).
struct Geometry
{
    int64_t batch;
    int64_t height;
    int64_t width;
    int64_t channels;     //!< C
    int64_t headDim;      //!< d
    int64_t globalHeads;
    int64_t localHeads;
    int64_t globalChannels; //!< c1
    int64_t windowH;
    int64_t windowW;
    int64_t windowsY;
    int64_t windowsX;
    bool lepeFloat32; //!< LePE weight and bias are float32, not T (AttentionParams::lepeFloat32)
};

inline Geometry makeGeometry(LaunchPlan const& plan) noexcept
{
    Geometry g{};
    g.batch = plan.batch;
    g.height = plan.height;
    g.width = plan.width;
    g.channels = plan.channels;
    g.headDim = plan.headDim;
    g.globalHeads = plan.globalHeads;
    g.localHeads = plan.localHeads;
    g.globalChannels = plan.globalChannels;
    g.windowH = plan.windowH;
    g.windowW = plan.windowW;
    g.windowsY = plan.windowsY;
    g.windowsX = plan.windowsX;
    g.lepeFloat32 = plan.lepeFloat32;
    return g;
}

//! Element i of a LePE weight or bias, widened to float: stored as float32 when isFloat32, else as T.
template <typename T>
__device__ __forceinline__ float loadLepeParam(void const* params, int64_t i, bool isFloat32)
{
    return isFloat32 ? static_cast<float const*>(params)[i] : toFloat(static_cast<T const*>(params)[i]);
}

//! Depthwise 3x3 LePE of v at token (row, col), channel ch, restricted to the rectangle
//! [rowBegin, rowEnd) x [colBegin, colEnd) (taps outside read zero), plus the bias.
//! weight is [C, 1, 3, 3]; bias may be null; both hold T, or float32 with g.lepeFloat32 (the
//! kernels pass them on as T const* without reading them). batchBase points at qkv of one batch item.
template <typename T>
__device__ __forceinline__ float lepeAt(T const* batchBase, void const* weight, void const* bias, Geometry const& g,
    int64_t row, int64_t col, int64_t ch, int64_t rowBegin, int64_t rowEnd, int64_t colBegin, int64_t colEnd)
{
    int64_t const stride = 3 * g.channels;
    float acc = (bias != nullptr) ? loadLepeParam<T>(bias, ch, g.lepeFloat32) : 0.F;
#pragma unroll
    for (int32_t ky = 0; ky < 3; ++ky)
    {
        int64_t const r = row + ky - 1;
        if (r < rowBegin || r >= rowEnd)
        {
            continue;
        }
#pragma unroll
        for (int32_t kx = 0; kx < 3; ++kx)
        {
            int64_t const c = col + kx - 1;
            if (c < colBegin || c >= colEnd)
            {
                continue;
            }
            float const w = loadLepeParam<T>(weight, ch * 9 + ky * 3 + kx, g.lepeFloat32);
            float const v = loadFloat(batchBase + (r * g.width + c) * stride + 2 * g.channels + ch);
            acc = fmaf(w, v, acc);
        }
    }
    return acc;
}

//! Launches kernel<<<grid, block, smemBytes, stream>>>(args...) and returns the launch error.
//! Every kernel goes through here so that the host emulation can run them too.
template <typename... Params, typename... Args>
inline cudaError_t launchKernel(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smemBytes,
    cudaStream_t stream, Args... args) noexcept
{
#ifdef ELFATT_HOST_EMULATION
    (void) stream;
    return ::elfatt::emulation::launch(kernel, grid, block, smemBytes, static_cast<Params>(args)...);
#else
    kernel<<<grid, block, smemBytes, stream>>>(static_cast<Params>(args)...);
    return cudaGetLastError();
#endif
}

//! Launches kernel with cudaLaunchKernelEx as a programmatic dependent of the previous kernel in
//! the stream (cudaLaunchAttributeProgrammaticStreamSerialization = 1: programmatic dependent
//! launch, PDL, CUDA C++ Programming Guide "Programmatic Dependent Launch and Synchronization"):
//! it may start before that kernel completes, once all of its blocks have executed
//! griddepcontrol.launch_dependents or exited, and must call griddepcontrol.wait
//! (ptx::gridDependencyWait) before it reads anything the previous kernel writes or writes
//! anything the previous kernel reads. Only for sm_90 and newer (the caller checks). No host
//! synchronization and no allocation, so it may be captured into a CUDA graph (CUDA 12.3+ keeps
//! the attribute as a programmatic edge; not yet checked on a GPU). Returns the launch error.
//! The host emulation runs it through the same cudaLaunchKernelEx (emulation::registerKernel lets
//! its cudaLaunchKernelExC unpack the argument array).
template <typename... Params, typename... Args>
inline cudaError_t launchKernelDependent(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smemBytes,
    cudaStream_t stream, Args... args) noexcept
{
#ifdef ELFATT_HOST_EMULATION
    ::elfatt::emulation::registerKernel(kernel);
#endif
    cudaLaunchAttribute attribute[1] = {};
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    // gridDim, blockDim, dynamicSmemBytes, stream, attrs, numAttrs (positional: the host emulation
    // defines gridDim and blockDim as macros, the built-in variables).
    cudaLaunchConfig_t const config = {dim3(grid, 1, 1), dim3(block, 1, 1), smemBytes, stream, attribute, 1U};
    return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

//! Whether a device of this compute capability (major * 10 + minor) has programmatic dependent
//! launch (griddepcontrol, cudaLaunchAttributeProgrammaticStreamSerialization): sm_90 and newer.
inline bool programmaticLaunchAvailable(int32_t computeCapability) noexcept
{
    return computeCapability >= 90;
}

//! Grid size for a block-stride loop over `items` work items.
inline unsigned gridFor(int64_t items) noexcept
{
    constexpr int64_t kMAX_BLOCKS = int64_t{1} << 20;
    return static_cast<unsigned>(items < kMAX_BLOCKS ? items : kMAX_BLOCKS);
}

} // namespace detail
} // namespace elfatt
