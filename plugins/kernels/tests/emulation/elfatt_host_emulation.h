/*
 * elfatt-deploy kernels: host emulation of the CUDA device features the kernels use.
 *
 * TEST BUILDS ONLY. plugins/kernels/src/common.cuh includes this header when
 * ELFATT_HOST_EMULATION is defined; the kernel sources (*.cu) are then compiled by
 * g++ as plain C++ (-x c++) and every kernel runs on CPU threads, so that a machine
 * without a GPU can check the kernels' numerics against the float64 reference and
 * run them under AddressSanitizer / UBSan. See README.md next to this file.
 *
 * Model:
 *  - a launch runs blockDim.x std::threads, one per CUDA thread of a block (kept in a pool
 *    between launches); together they run the blocks blockIdx.x = 0 .. G-1 one after
 *    another, with G = min(grid, ELFATT_EMULATION_MAX_BLOCKS (default 3)) and gridDim.x = G.
 *    Every kernel of this library is a block-stride loop (item = blockIdx.x; item +=
 *    gridDim.x), so a smaller grid still covers every work item and exercises the stride
 *    logic. Blocks never run concurrently.
 *  - __shared__ is `static`: a function-local static is shared by all threads of the
 *    emulated block (blocks run one after another, so that is correct). At the start of
 *    every block the static __shared__ arrays of the launched kernel and the dynamic shared
 *    memory are filled with 0xFF bytes (float NaN, integer -1), so a read of shared memory
 *    that the block did not write shows up.
 *  - __syncthreads / __syncwarp / __shfl_*_sync are real barriers (mutex + condition
 *    variable) with a timeout: a divergent barrier aborts with a message instead of hanging,
 *    and threads waiting at two different __syncthreads() abort at once.
 *    ELFATT_EMULATION_SCHEDULE=forward|reverse runs one warp at a time in warp order, so that
 *    a missing __syncthreads between warps shows deterministically (default: free).
 *  - nvcuda::wmma is emulated at tile level (every lane holds the whole tile).
 * What it cannot show: warp scheduling and timing (shuffles order a warp's lanes like a
 * __syncwarp here), device math ulps, the real tensor-core fragment layouts, memory-model
 * subtleties, performance.
 */
#pragma once

#ifndef ELFATT_HOST_EMULATION
#error "elfatt_host_emulation.h is for host-emulation test builds (-DELFATT_HOST_EMULATION) only"
#endif
#if defined(__CUDACC__)
#error "elfatt_host_emulation.h must be compiled by a host compiler (g++ -x c++), not nvcc"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "emulation_trace.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------------
// CUDA keywords
// ---------------------------------------------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __shared__
#undef __constant__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#if defined(ELFATT_EMULATION_TRACING)
// The tracing build inlines what nvcc inlines (__forceinline__ is a guarantee there), so that a
// traced access has the same inline chain on the host (addr2line -i) as its SASS on the GPU
// (nvdisasm -gi): the performance model keys its SASS-per-instruction ratios by call site. The
// warp and block intrinsics too: the runtime call inside them then reports the kernel's line.
#define __forceinline__ inline __attribute__((always_inline))
#define ELFATT_EMULATION_INTRINSIC __attribute__((always_inline))
#else
#define __forceinline__ inline
#define ELFATT_EMULATION_INTRINSIC
#endif
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __grid_constant__
// __align__(n) (host_defines.h: __attribute__((aligned(n)))) and __restrict__ (a g++ keyword)
// keep working as they are.
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif

namespace elfatt
{
namespace emulation
{
namespace detail
{

struct LaunchState;

// The emulated built-in variables of the calling thread (set by the launch).
inline thread_local uint3 tThreadIdx{0, 0, 0};
inline thread_local uint3 tBlockIdx{0, 0, 0};
inline thread_local dim3 tBlockDim{1, 1, 1};
inline thread_local dim3 tGridDim{1, 1, 1};
inline thread_local LaunchState* tLaunch = nullptr;

//! Runs body (one call = one CUDA thread running the kernel once) on the emulated grid.
//! programmaticDependent: the launch asked for programmatic stream serialization (PDL, from
//! cudaLaunchKernelEx); it runs like any other (after the previous launch has completed) and the
//! trace records it.
cudaError_t runLaunch(void const* kernel, unsigned grid, unsigned block, size_t smemBytes,
    std::function<void()> const& body, bool programmaticDependent = false) noexcept;

//! Launches a kernel from the argument array of cudaLaunchKernelExC (pointers to the arguments).
using ArgumentArrayLauncher = cudaError_t (*)(
    void const* kernel, unsigned grid, unsigned block, size_t smemBytes, bool programmatic, void** args);
//! Remembers how to launch kernel from an argument array (see emulation::registerKernel).
void registerArgumentArrayLauncher(void const* kernel, ArgumentArrayLauncher launcher) noexcept;

void* dynamicSharedBase() noexcept;
void syncThreads(std::source_location const& where) noexcept;
void syncWarp(unsigned mask, std::source_location const& where) noexcept;
//! Warp exchange: every lane gives value and gets the value of lane srcLane (all lanes take part).
uint64_t warpExchange(unsigned mask, uint64_t value, int32_t srcLane, std::source_location const& where) noexcept;
//! Largest deposit of one lane in warpGather.
constexpr size_t kWARP_GATHER_BYTES = 64;
//! Warp rendezvous of a warp-wide instruction (mma.sync, ldmatrix): every lane deposits `bytes`
//! (<= kWARP_GATHER_BYTES) bytes from `mine`; once all 32 lanes arrived, each gets all 32
//! deposits in `all` (lane-major, 32 * bytes). `what` names the instruction: lanes of one warp
//! at two different instructions abort ("divergent warp-wide instruction").
void warpGather(void const* mine, size_t bytes, void* all, char const* what, std::source_location const& where) noexcept;
//! Whether [ptr, ptr + bytes) lies in the launched block's shared memory (dynamic, or one of the
//! kernel's static __shared__ arrays).
bool isShared(void const* ptr, size_t bytes) noexcept;
//! Lane index (threadIdx.x % 32) of the calling emulated thread; aborts outside a kernel.
int32_t currentLane(char const* what) noexcept;
//! Compute capability the emulation reports (ELFATT_EMULATION_SM, default 90), e.g. 90 or 87.
int32_t emulatedSm() noexcept;
[[noreturn]] void fail(char const* format, ...) noexcept __attribute__((format(printf, 1, 2)));

template <typename T>
uint64_t toBits(T value) noexcept
{
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t), "shuffle of an unsupported type");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
}

template <typename T>
T fromBits(uint64_t bits) noexcept
{
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

inline void checkWidth(int width, char const* what) noexcept
{
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    {
        fail("%s: width %d is not a power of two in [1, 32]", what, width);
    }
}

} // namespace detail

//! The launch's dynamic shared memory (ELFATT_DYNAMIC_SHARED in common.cuh).
template <typename T>
T* dynamicShared() noexcept
{
    return static_cast<T*>(detail::dynamicSharedBase());
}

//! Emulated kernel<<<grid, block, smemBytes>>>(args...): synchronous; returns the launch error.
//! programmatic: launched with programmatic stream serialization (cudaLaunchKernelEx + PDL).
template <typename... Params, typename... Args>
cudaError_t launchWith(
    void (*kernel)(Params...), unsigned grid, unsigned block, size_t smemBytes, bool programmatic, Args... args) noexcept
{
    static_assert(sizeof...(Params) == sizeof...(Args), "launch: wrong number of kernel arguments");
    std::tuple<Params...> const packed(static_cast<Params>(args)...);
    return detail::runLaunch(
        reinterpret_cast<void const*>(kernel), grid, block, smemBytes,
        [&packed, kernel]() {
            std::tuple<Params...> copy(packed); // kernel parameters are per-thread copies, as on the device
            std::apply(kernel, copy);
        },
        programmatic);
}

template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smemBytes, Args... args) noexcept
{
    return launchWith(kernel, grid, block, smemBytes, false, args...);
}

namespace detail
{

template <typename... Params, size_t... kI>
cudaError_t launchFromArgumentArrayImpl(void const* kernel, unsigned grid, unsigned block, size_t smemBytes,
    bool programmatic, void** args, std::index_sequence<kI...>) noexcept
{
    auto const typed = reinterpret_cast<void (*)(Params...)>(const_cast<void*>(kernel));
    return launchWith(typed, grid, block, smemBytes, programmatic,
        *static_cast<std::remove_cv_t<std::remove_reference_t<Params>>*>(args[kI])...);
}

template <typename... Params>
cudaError_t launchFromArgumentArray(
    void const* kernel, unsigned grid, unsigned block, size_t smemBytes, bool programmatic, void** args)
{
    return launchFromArgumentArrayImpl<Params...>(
        kernel, grid, block, smemBytes, programmatic, args, std::index_sequence_for<Params...>{});
}

} // namespace detail

//! Makes kernel launchable through the CUDA runtime's cudaLaunchKernelEx (cuda_runtime.h's
//! template packs the arguments into an array of pointers and calls cudaLaunchKernelExC, which
//! the emulation implements in emulation_runtime.cpp: it needs the parameter types to unpack
//! them, which only this template knows). detail::launchKernelDependent calls it before every launch.
template <typename... Params>
void registerKernel(void (*kernel)(Params...)) noexcept
{
    detail::registerArgumentArrayLauncher(
        reinterpret_cast<void const*>(kernel), &detail::launchFromArgumentArray<Params...>);
}

} // namespace emulation
} // namespace elfatt

// cuda_runtime.h declares its C++ wrappers of these only for nvcc (__CUDACC__).
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) noexcept
{
    return ::cudaFuncSetAttribute(reinterpret_cast<void const*>(entry), attr, value);
}

// ---------------------------------------------------------------------------------------------
// Built-in variables (read-only, per emulated thread)
// ---------------------------------------------------------------------------------------------
#define threadIdx (static_cast<::uint3 const&>(::elfatt::emulation::detail::tThreadIdx))
#define blockIdx (static_cast<::uint3 const&>(::elfatt::emulation::detail::tBlockIdx))
#define blockDim (static_cast<::dim3 const&>(::elfatt::emulation::detail::tBlockDim))
#define gridDim (static_cast<::dim3 const&>(::elfatt::emulation::detail::tGridDim))
#ifndef warpSize
#define warpSize 32
#endif

// ---------------------------------------------------------------------------------------------
// Barriers and warp exchanges
// ---------------------------------------------------------------------------------------------
ELFATT_EMULATION_INTRINSIC inline void __syncthreads(std::source_location const where = std::source_location::current()) noexcept
{
    ::elfatt::emulation::detail::syncThreads(where);
}

ELFATT_EMULATION_INTRINSIC inline void __syncwarp(
    unsigned mask = 0xffffffffU, std::source_location const where = std::source_location::current()) noexcept
{
    ::elfatt::emulation::detail::syncWarp(mask, where);
}

template <typename T>
ELFATT_EMULATION_INTRINSIC inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32,
    std::source_location const where = std::source_location::current()) noexcept
{
    namespace d = ::elfatt::emulation::detail;
    d::checkWidth(width, "__shfl_sync");
    int32_t const lane = d::currentLane("__shfl_sync");
    int32_t const src = (lane & ~(width - 1)) + (srcLane & (width - 1));
    return d::fromBits<T>(d::warpExchange(mask, d::toBits(var), src, where));
}

template <typename T>
ELFATT_EMULATION_INTRINSIC inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32,
    std::source_location const where = std::source_location::current()) noexcept
{
    namespace d = ::elfatt::emulation::detail;
    d::checkWidth(width, "__shfl_xor_sync");
    int32_t const lane = d::currentLane("__shfl_xor_sync");
    int32_t src = lane ^ laneMask;
    // A lane reading from a later group of `width` lanes (or past the warp) keeps its own value.
    if (src < 0 || src >= ((lane / width) + 1) * width || src >= 32)
    {
        src = lane;
    }
    return d::fromBits<T>(d::warpExchange(mask, d::toBits(var), src, where));
}

template <typename T>
ELFATT_EMULATION_INTRINSIC inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
    std::source_location const where = std::source_location::current()) noexcept
{
    namespace d = ::elfatt::emulation::detail;
    d::checkWidth(width, "__shfl_down_sync");
    int32_t const lane = d::currentLane("__shfl_down_sync");
    int64_t const src = static_cast<int64_t>(lane) + delta;
    int64_t const groupEnd = (lane / width + 1) * width;
    int32_t const from = src < groupEnd ? static_cast<int32_t>(src) : lane;
    return d::fromBits<T>(d::warpExchange(mask, d::toBits(var), from, where));
}

template <typename T>
ELFATT_EMULATION_INTRINSIC inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
    std::source_location const where = std::source_location::current()) noexcept
{
    namespace d = ::elfatt::emulation::detail;
    d::checkWidth(width, "__shfl_up_sync");
    int32_t const lane = d::currentLane("__shfl_up_sync");
    int64_t const src = static_cast<int64_t>(lane) - delta;
    int64_t const groupBegin = (lane / width) * width;
    int32_t const from = src >= groupBegin ? static_cast<int32_t>(src) : lane;
    return d::fromBits<T>(d::warpExchange(mask, d::toBits(var), from, where));
}

// ---------------------------------------------------------------------------------------------
// Device math the kernels call unqualified. fmaxf, fmaf, expf, exp2f, INFINITY come from <cmath>
// (glibc declares them in the global namespace). min/max: the overload set of CUDA's
// crt/math_functions.h, so that a call nvcc finds ambiguous is ambiguous here too.
// ---------------------------------------------------------------------------------------------
#define ELFATT_EMULATION_MINMAX(R, A, B)                                                                            \
    inline R min(A const a, B const b) noexcept                                                                      \
    {                                                                                                                \
        return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b);                        \
    }                                                                                                                \
    inline R max(A const a, B const b) noexcept                                                                      \
    {                                                                                                                \
        return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b);                        \
    }
ELFATT_EMULATION_MINMAX(int, int, int)
ELFATT_EMULATION_MINMAX(unsigned int, unsigned int, unsigned int)
ELFATT_EMULATION_MINMAX(unsigned int, int, unsigned int)
ELFATT_EMULATION_MINMAX(unsigned int, unsigned int, int)
ELFATT_EMULATION_MINMAX(long int, long int, long int)
ELFATT_EMULATION_MINMAX(unsigned long int, unsigned long int, unsigned long int)
ELFATT_EMULATION_MINMAX(unsigned long int, long int, unsigned long int)
ELFATT_EMULATION_MINMAX(unsigned long int, unsigned long int, long int)
ELFATT_EMULATION_MINMAX(long long int, long long int, long long int)
ELFATT_EMULATION_MINMAX(unsigned long long int, unsigned long long int, unsigned long long int)
ELFATT_EMULATION_MINMAX(unsigned long long int, long long int, unsigned long long int)
ELFATT_EMULATION_MINMAX(unsigned long long int, unsigned long long int, long long int)
ELFATT_EMULATION_MINMAX(double, double, double)
ELFATT_EMULATION_MINMAX(double, float, double)
ELFATT_EMULATION_MINMAX(double, double, float)
#undef ELFATT_EMULATION_MINMAX
// min/max of two floats: fminf/fmaxf semantics (a NaN operand yields the other one), as on the device.
inline float min(float const a, float const b) noexcept
{
    return fminf(a, b);
}
inline float max(float const a, float const b) noexcept
{
    return fmaxf(a, b);
}

inline float __expf(float x) noexcept
{
    return expf(x);
}
inline float __exp2f(float x) noexcept
{
    return exp2f(x);
}
inline float __fdividef(float a, float b) noexcept
{
    return a / b;
}
inline float __frcp_rn(float x) noexcept
{
    return 1.F / x;
}
inline float __fmaf_rn(float a, float b, float c) noexcept
{
    return fmaf(a, b, c);
}
template <typename T>
inline T __ldg(T const* ptr) noexcept
{
    return *ptr;
}
//! Load through L2 only (kernels v2 read other blocks' partials with it): a plain load here; the
//! tracer sees it as an L2 round trip (emulation_trace.h, Hooks::l2RoundTrip).
template <typename T>
inline T __ldcg(T const* ptr) noexcept
{
    elfatt::emulation::trace::traceL2RoundTrip(elfatt::emulation::trace::L2Trip::kLOAD);
    return *ptr;
}

// Atomics and fences. Blocks of one emulated launch run one after another, so the
// last-block-merges pattern (counted with an atomic, then the merge) is exercised in its logic, not in its
// memory-ordering subtleties.
// Untraced (the tracing build's tsan instrumentation has no atomics; a fence is a locked RMW here).
// The tracer counts each as one L2 round trip the thread waits for (the atomics return their result).
ELFATT_EMULATION_UNTRACED inline unsigned atomicAdd(unsigned* address, unsigned value) noexcept
{
    elfatt::emulation::trace::traceL2RoundTrip(elfatt::emulation::trace::L2Trip::kWAIT);
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
ELFATT_EMULATION_UNTRACED inline int atomicAdd(int* address, int value) noexcept
{
    elfatt::emulation::trace::traceL2RoundTrip(elfatt::emulation::trace::L2Trip::kWAIT);
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
ELFATT_EMULATION_UNTRACED inline void __threadfence() noexcept
{
    elfatt::emulation::trace::traceL2RoundTrip(elfatt::emulation::trace::L2Trip::kWAIT);
    static unsigned fence = 0;
    (void) __atomic_fetch_add(&fence, 0U, __ATOMIC_SEQ_CST); // a full barrier on every host CPU
}

// ---------------------------------------------------------------------------------------------
// nvcuda::wmma, emulated at tile level: every lane holds the whole logical tile (row-major in
// x[], whatever the layout argument), mma_sync computes d = c + a*b in float from the exact
// products of the input values, store_matrix_sync writes element e from lane e % 32 only (so a
// missing __syncwarp before other lanes read the stored tile is a real race here too).
// num_elements is the whole tile: kernel code may use x[] only for elementwise, layout
// independent operations (as on the device, where the element-to-lane map is unspecified).
// ---------------------------------------------------------------------------------------------
namespace nvcuda
{
namespace wmma
{

struct matrix_a
{
};
struct matrix_b
{
};
struct accumulator
{
};
struct row_major
{
};
struct col_major
{
};
enum layout_t
{
    mem_row_major,
    mem_col_major
};

namespace emulation_detail
{

template <class Use, int M, int N, int K>
struct TileShape;
template <int M, int N, int K>
struct TileShape<matrix_a, M, N, K>
{
    static constexpr int kRows = M;
    static constexpr int kCols = K;
};
template <int M, int N, int K>
struct TileShape<matrix_b, M, N, K>
{
    static constexpr int kRows = K;
    static constexpr int kCols = N;
};
template <int M, int N, int K>
struct TileShape<accumulator, M, N, K>
{
    static constexpr int kRows = M;
    static constexpr int kCols = N;
};

template <int M, int N, int K>
constexpr bool kSupportedShape = (M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16)
    || (M == 8 && N == 32 && K == 16);

inline float widen(float x) noexcept
{
    return x;
}
inline float widen(__half x) noexcept
{
    return __half2float(x);
}
inline float widen(__nv_bfloat16 x) noexcept
{
    return __bfloat162float(x);
}
template <typename T>
T narrow(float x) noexcept;
template <>
inline float narrow<float>(float x) noexcept
{
    return x;
}
template <>
inline __half narrow<__half>(float x) noexcept
{
    return __float2half_rn(x);
}

template <typename T>
void checkPointer(void const* ptr, unsigned ldm, char const* what) noexcept
{
    if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0)
    {
        ::elfatt::emulation::detail::fail(
            "%s: pointer %p is not 256-bit (32-byte) aligned, as the CUDA C++ guide requires", what, ptr);
    }
    unsigned const multiple = 16U / static_cast<unsigned>(sizeof(T));
    if (ldm % multiple != 0)
    {
        ::elfatt::emulation::detail::fail("%s: ldm = %u is not a multiple of %u (16 bytes of %zu-byte elements)", what,
            ldm, multiple, sizeof(T));
    }
}

//! Tracing build: the lane's device accesses of a 16-bit a/b tile load (ldmatrix: 16-byte rows of
//! 8 x 8 matrices; lane l of instruction j reads row l % 8 of matrix 4 j + l / 8, the matrices
//! ordered by 8-row group, then 16-byte column chunk of the tile as it lies in memory).
template <typename T>
void traceTileRows(void const* site, void const* ptr, unsigned ldm, int memRows, int memCols, bool write) noexcept
{
    if (!::elfatt::emulation::trace::tracing())
    {
        return;
    }
    int32_t const lane = ::elfatt::emulation::detail::currentLane("wmma (trace)");
    int const perChunk = 16 / static_cast<int>(sizeof(T));
    int const groups = memRows / 8;
    int const matrices = groups * (memCols / perChunk);
    for (int j = 0; j * 4 < matrices; ++j)
    {
        int const matrix = 4 * j + lane / 8;
        if (matrix >= matrices)
        {
            break;
        }
        int const row = 8 * (matrix % groups) + lane % 8;
        int const col = perChunk * (matrix / groups);
        ::elfatt::emulation::trace::traceAccessAt(
            site, static_cast<char const*>(ptr) + (static_cast<size_t>(row) * ldm + col) * sizeof(T), 16, write);
    }
}

//! Tracing build: the lane's device accesses of an accumulator tile load/store (the mma.m16n8
//! C/D layout: lane l holds rows 8 g + l / 4 and columns 8 t + 2 (l % 4) .. + 1 of every 8 x 8 piece).
template <typename T>
void traceAccumulator(
    void const* site, void const* ptr, unsigned ldm, int rows, int cols, bool rowMajor, bool write) noexcept
{
    if (!::elfatt::emulation::trace::tracing())
    {
        return;
    }
    int32_t const lane = ::elfatt::emulation::detail::currentLane("wmma (trace)");
    for (int g = 0; g < rows / 8; ++g)
    {
        for (int t = 0; t < cols / 8; ++t)
        {
            int const r = 8 * g + lane / 4;
            int const c = 8 * t + 2 * (lane % 4);
            if (rowMajor)
            {
                ::elfatt::emulation::trace::traceAccessAt(site,
                    static_cast<char const*>(ptr) + (static_cast<size_t>(r) * ldm + c) * sizeof(T), 2 * sizeof(T),
                    write);
            }
            else
            {
                for (int e = 0; e < 2; ++e)
                {
                    ::elfatt::emulation::trace::traceAccessAt(site,
                        static_cast<char const*>(ptr) + (static_cast<size_t>(c + e) * ldm + r) * sizeof(T),
                        sizeof(T), write);
                }
            }
        }
    }
}

template <typename T>
void checkArch(char const* what) noexcept
{
    int32_t const sm = ::elfatt::emulation::detail::emulatedSm();
    if (std::is_same_v<T, __nv_bfloat16> && sm < 80)
    {
        ::elfatt::emulation::detail::fail("%s: bfloat16 wmma needs sm_80 or newer; emulating sm_%d", what, sm);
    }
    if (sm < 70)
    {
        ::elfatt::emulation::detail::fail("%s: wmma needs sm_70 or newer; emulating sm_%d", what, sm);
    }
}

} // namespace emulation_detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment
{
    static_assert(emulation_detail::kSupportedShape<M, N, K>, "wmma shape not emulated (16x16x16, 32x8x16, 8x32x16)");
    static constexpr bool kIS_ACC = std::is_same_v<Use, accumulator>;
    static_assert(kIS_ACC ? std::is_void_v<Layout>
                          : (std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>),
        "matrix_a/matrix_b fragments need row_major or col_major; accumulators take no layout");
    static_assert(kIS_ACC ? (std::is_same_v<T, float> || std::is_same_v<T, __half>)
                          : (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>),
        "wmma element type not emulated (a/b: __half or __nv_bfloat16; accumulator: float or __half)");

    static constexpr int kRows = emulation_detail::TileShape<Use, M, N, K>::kRows;
    static constexpr int kCols = emulation_detail::TileShape<Use, M, N, K>::kCols;
#ifdef ELFATT_EMULATION_TRACING
    //! Tracing build: the per-lane count of the device, so that the kernels' elementwise loops
    //! over x[] make as many accesses per lane as on the device (the values are then wrong: the
    //! tracing build measures accesses, not numerics).
    static constexpr int num_elements = kRows * kCols / 32;
#else
    static constexpr int num_elements = kRows * kCols;
#endif
    using element_type = T;
    using storage_element_type = T;
    T x[kRows * kCols]; //!< the whole logical tile, row-major (emulation only)
};

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& frag, std::type_identity_t<T> const& value) noexcept
{
    for (int e = 0; e < frag.num_elements; ++e)
    {
        frag.x[e] = value;
    }
}

//! matrix_a / matrix_b: the layout comes from the fragment type.
template <class Use, int M, int N, int K, class T, class Layout>
ELFATT_EMULATION_UNTRACED inline void load_matrix_sync(
    fragment<Use, M, N, K, T, Layout>& frag, std::type_identity_t<T> const* ptr, unsigned ldm) noexcept
{
    static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout_t argument");
    emulation_detail::checkArch<T>("wmma::load_matrix_sync");
    emulation_detail::checkPointer<T>(ptr, ldm, "wmma::load_matrix_sync");
    using Frag = fragment<Use, M, N, K, T, Layout>;
    constexpr bool kROW = std::is_same_v<Layout, row_major>;
    emulation_detail::traceTileRows<T>(__builtin_return_address(0), ptr, ldm, kROW ? Frag::kRows : Frag::kCols, kROW ? Frag::kCols : Frag::kRows, false);
    for (int r = 0; r < Frag::kRows; ++r)
    {
        for (int c = 0; c < Frag::kCols; ++c)
        {
            size_t const offset = std::is_same_v<Layout, row_major> ? static_cast<size_t>(r) * ldm + c
                                                                    : static_cast<size_t>(c) * ldm + r;
            frag.x[r * Frag::kCols + c] = ptr[offset];
        }
    }
}

template <int M, int N, int K, class T>
ELFATT_EMULATION_UNTRACED inline void load_matrix_sync(
    fragment<accumulator, M, N, K, T>& frag, std::type_identity_t<T> const* ptr, unsigned ldm, layout_t layout) noexcept
{
    emulation_detail::checkPointer<T>(ptr, ldm, "wmma::load_matrix_sync (accumulator)");
    emulation_detail::traceAccumulator<T>(__builtin_return_address(0), ptr, ldm, M, N, layout == mem_row_major, false);
    for (int r = 0; r < M; ++r)
    {
        for (int c = 0; c < N; ++c)
        {
            size_t const offset = layout == mem_row_major ? static_cast<size_t>(r) * ldm + c
                                                          : static_cast<size_t>(c) * ldm + r;
            frag.x[r * N + c] = ptr[offset];
        }
    }
}

template <int M, int N, int K, class T>
ELFATT_EMULATION_UNTRACED inline void store_matrix_sync(
    std::type_identity_t<T>* ptr, fragment<accumulator, M, N, K, T> const& frag, unsigned ldm, layout_t layout) noexcept
{
    emulation_detail::checkPointer<T>(ptr, ldm, "wmma::store_matrix_sync");
    emulation_detail::traceAccumulator<T>(__builtin_return_address(0), ptr, ldm, M, N, layout == mem_row_major, true);
    int32_t const lane = ::elfatt::emulation::detail::currentLane("wmma::store_matrix_sync");
    for (int e = lane; e < M * N; e += 32) // element e is written by lane e % 32 only
    {
        int const r = e / N;
        int const c = e % N;
        size_t const offset = layout == mem_row_major ? static_cast<size_t>(r) * ldm + c
                                                      : static_cast<size_t>(c) * ldm + r;
        ptr[offset] = frag.x[e];
    }
}

// Plain loops over the lane's own fragments: optimized and left out of ASan's instrumentation,
// since every lane repeats the whole tile product (the emulation's main cost in wmma kernels).
template <int M, int N, int K, class TAB, class LayoutA, class LayoutB, class TC, class TD>
[[gnu::optimize("O2"), gnu::no_sanitize_address, gnu::no_sanitize_thread, gnu::noinline]] inline void mma_sync(fragment<accumulator, M, N, K, TD>& d,
    fragment<matrix_a, M, N, K, TAB, LayoutA> const& a, fragment<matrix_b, M, N, K, TAB, LayoutB> const& b,
    fragment<accumulator, M, N, K, TC> const& c) noexcept
{
    emulation_detail::checkArch<TAB>("wmma::mma_sync");
    ::elfatt::emulation::trace::traceMmaAt(__builtin_return_address(0), M, N, K, static_cast<int32_t>(sizeof(TAB)));
    float wa[M * K];
    float wb[K * N];
    for (int e = 0; e < M * K; ++e)
    {
        wa[e] = emulation_detail::widen(a.x[e]);
    }
    for (int e = 0; e < K * N; ++e)
    {
        wb[e] = emulation_detail::widen(b.x[e]);
    }
    float result[M * N];
    for (int i = 0; i < M; ++i)
    {
        for (int j = 0; j < N; ++j)
        {
            float acc = emulation_detail::widen(c.x[i * N + j]);
            for (int k = 0; k < K; ++k)
            {
                acc += wa[i * K + k] * wb[k * N + j]; // products of two 16-bit floats are exact in float32
            }
            result[i * N + j] = acc;
        }
    }
    for (int e = 0; e < M * N; ++e) // d may alias c
    {
        d.x[e] = emulation_detail::narrow<TD>(result[e]);
    }
}

} // namespace wmma
} // namespace nvcuda
