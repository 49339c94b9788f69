/*
 * elfatt-deploy kernels: inline-PTX wrappers for the v2 ("fused") kernels (internal header).
 *
 * The warp- or thread-level instructions of sm_80 and newer that the v2 kernels use, each behind
 * one small function, so that the kernels read as CUDA C++ and the host emulation can replace every
 * one of them by an exact model (plugins/kernels/tests/emulation/emulation_ptx.h; the atomics and
 * ex2 below, whose models are a few lines, in this file):
 *
 *   mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32   mma16816<T>
 *   ldmatrix.sync.aligned.m8n8.x4{,.trans}.shared.b16                 ldmatrixX4 / ldmatrixX4Trans
 *   cp.async.cg.shared.global [dst], [src], 16, srcBytes              cpAsync16 (zero-fills past srcBytes)
 *   cp.async.commit_group / cp.async.wait_group N                      cpAsyncCommit / cpAsyncWait<N>
 *   atom.acq_rel.gpu.global.add.u32                                    counterArrive
 *   red.relaxed.gpu.global.max.u32                                     reduceMax
 *   ex2.approx.ftz.f32                                                 exp2Approx
 *
 * and, on sm_90 only (programmatic dependent launch, PDL; compiled out for sm_80 / sm_87, where
 * both are empty: those devices launch every kernel after the previous one has completed):
 *
 *   griddepcontrol.launch_dependents                                   gridLaunchDependents
 *   griddepcontrol.wait                                                gridDependencyWait
 *
 * Register fragments, exactly as the PTX ISA documents them for m16n8k16 with 16-bit inputs
 * ("Matrix Fragments for mma.m16n8k16 with floating point type"); groupID = lane >> 2,
 * tig = lane & 3 (thread ID in group). A 32-bit register holds two 16-bit elements, the one
 * with the lower index in the low half.
 *   A (16 x 16, row): a[0] = A[g][2t, 2t+1]     a[1] = A[g+8][2t, 2t+1]
 *                     a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
 *   B (16 x 8, col):  b[0] = B[2t, 2t+1][g]     b[1] = B[2t+8, 2t+9][g]
 *   C, D (16 x 8, f32): c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]
 * ldmatrix .x4: lane 8 m + r gives the shared address of row r (8 x 16-bit, 16-byte aligned)
 * of matrix m; register m of lane l receives row l >> 2, elements 2 (l & 3) and 2 (l & 3) + 1
 * of matrix m; with .trans, elements [2 (l & 3)][l >> 2] and [2 (l & 3) + 1][l >> 2] (the
 * matrix read column-major).
 *
 * Consequences the kernels use (FlashAttention-2's register trick): the accumulators of two
 * neighbouring n8 tiles of S = Q K^T, packed pairwise to 16 bits, are the A fragment of P
 * for the k16 block of those 16 keys:
 *   A(P, keys 16j..16j+15) = { pack(S[2j].c0, c1), pack(S[2j].c2, c3), pack(S[2j+1].c0, c1), pack(S[2j+1].c2, c3) }.
 */
#pragma once

#include "common.cuh"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <type_traits>

#ifdef ELFATT_HOST_EMULATION
#include "emulation_ptx.h"
#endif

namespace elfatt
{
namespace detail
{
namespace ptx
{

//! Whether the architecture being compiled has these instructions (mma.sync bf16, cp.async:
//! sm_80). Always true in the host pass and the emulation; kernels built for older
//! architectures compile their v2 bodies out and trap.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
constexpr bool kAVAILABLE = false;
#else
constexpr bool kAVAILABLE = true;
#endif

//! Two floats rounded to T (round to nearest even) in one 32-bit register, lo in the low half.
template <typename T>
__device__ __forceinline__ uint32_t packPair(float lo, float hi)
{
    uint32_t const l = toRaw(fromFloat<T>(lo));
    uint32_t const h = toRaw(fromFloat<T>(hi));
    return l | (h << 16);
}

//! The two elements of a register as floats.
template <typename T>
__device__ __forceinline__ void unpackPair(uint32_t bits, float& lo, float& hi)
{
    lo = toFloat(fromRaw<T>(static_cast<uint16_t>(bits & 0xffffU)));
    hi = toFloat(fromRaw<T>(static_cast<uint16_t>(bits >> 16)));
}

#ifdef ELFATT_HOST_EMULATION

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t const (&a)[4], uint32_t const (&b)[2], float const (&c)[4])
{
    ::elfatt::emulation::ptx::mma16816<T>(d, a, b, c);
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], void const* rowAddress)
{
    ::elfatt::emulation::ptx::ldmatrix(r, rowAddress, 4, false);
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], void const* rowAddress)
{
    ::elfatt::emulation::ptx::ldmatrix(r, rowAddress, 4, true);
}

__device__ __forceinline__ void cpAsync16(void* sharedDst, void const* globalSrc, uint32_t srcBytes)
{
    ::elfatt::emulation::ptx::cpAsync(sharedDst, globalSrc, 16, srcBytes);
}

__device__ __forceinline__ void cpAsyncCommit()
{
    ::elfatt::emulation::ptx::cpAsyncCommit();
}

template <int32_t kN>
__device__ __forceinline__ void cpAsyncWait()
{
    ::elfatt::emulation::ptx::cpAsyncWait(kN);
}

__device__ __forceinline__ void gridLaunchDependents()
{
    ::elfatt::emulation::ptx::gridDependencyControl(false);
}

__device__ __forceinline__ void gridDependencyWait()
{
    ::elfatt::emulation::ptx::gridDependencyControl(true);
}

//! Atomic add with release and acquire semantics at GPU scope (see the device version).
__device__ __forceinline__ uint32_t counterArrive(uint32_t* counter, uint32_t value)
{
    return atomicAdd(counter, value);
}

//! *word = max(*word, value), no result (see the device version). Untraced, as the atomics are (the
//! tracing build's instrumentation has none); nothing waits for it on the device either.
ELFATT_EMULATION_UNTRACED inline void reduceMax(uint32_t* word, uint32_t value)
{
    uint32_t seen = __atomic_load_n(word, __ATOMIC_RELAXED);
    while (seen < value && !__atomic_compare_exchange_n(word, &seen, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    {
    }
}

//! 2^x as ex2.approx.ftz.f32 computes it (see the device version): a subnormal x counts as 0 and a
//! result below the smallest normal float (x < -126) is +0. Traced as the exp2f it calls.
__device__ __forceinline__ float exp2Approx(float x)
{
    float const y = exp2f(std::fpclassify(x) == FP_SUBNORMAL ? 0.F : x);
    return y < FLT_MIN ? 0.F : y; // NaN compares false and stays NaN
}

#else // device code

__device__ __forceinline__ uint32_t sharedAddress(void const* p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

//! The operands of one mma.sync.m16n8k16 with float32 accumulators: d <- a b + c.
#define ELFATT_MMA_16816_OPERANDS                                                                                   \
    : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                                               \
    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3])

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t const (&a)[4], uint32_t const (&b)[2], float const (&c)[4])
{
    static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "f16 or bf16 inputs");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (std::is_same<T, __half>::value)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%10, %11, %12, %13};\n" ELFATT_MMA_16816_OPERANDS);
    }
    else
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%10, %11, %12, %13};\n" ELFATT_MMA_16816_OPERANDS);
    }
#else
    (void) a;
    (void) b;
    d[0] = c[0];
    d[1] = c[1];
    d[2] = c[2];
    d[3] = c[3];
    __trap();
#endif
}
#undef ELFATT_MMA_16816_OPERANDS

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], void const* rowAddress)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sharedAddress(rowAddress)));
#else
    (void) rowAddress;
    r[0] = r[1] = r[2] = r[3] = 0U;
    __trap();
#endif
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], void const* rowAddress)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(sharedAddress(rowAddress)));
#else
    (void) rowAddress;
    r[0] = r[1] = r[2] = r[3] = 0U;
    __trap();
#endif
}

//! 16 bytes global -> shared, asynchronous, through L2 only (.cg). Bytes past srcBytes (0 or
//! 16 here) are written as zeros, so a masked row costs no branch; globalSrc must still be a
//! valid 16-byte aligned address.
__device__ __forceinline__ void cpAsync16(void* sharedDst, void const* globalSrc, uint32_t srcBytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress(sharedDst)), "l"(globalSrc),
                 "r"(srcBytes)
                 : "memory");
#else
    (void) sharedDst;
    (void) globalSrc;
    (void) srcBytes;
    __trap();
#endif
}

__device__ __forceinline__ void cpAsyncCommit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

//! Waits until at most kN of this thread's committed groups are still in flight. The copies
//! become visible to the issuing thread only; other threads need a __syncthreads after it.
template <int32_t kN>
__device__ __forceinline__ void cpAsyncWait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kN) : "memory");
#endif
}

//! griddepcontrol.launch_dependents (PTX ISA 7.8, sm_90): a kernel launched after this one with
//! cudaLaunchAttributeProgrammaticStreamSerialization may be scheduled once every block of this
//! grid has executed it or exited. Only a scheduling hint: the dependent's griddepcontrol.wait
//! still waits for this whole grid to complete and flush its memory, so any point is safe.
//! A no-op without such a dependent, and compiled out before sm_90.
__device__ __forceinline__ void gridLaunchDependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

//! griddepcontrol.wait (PTX ISA 7.8, sm_90): waits until the grids this one depends on
//! programmatically have completed and their memory operations are visible to this grid. Returns
//! at once in a kernel launched without the PDL attribute (ordinary stream order has already
//! waited), and on a later call. Compiled out before sm_90, where there is no PDL launch.
__device__ __forceinline__ void gridDependencyWait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

//! atom.acq_rel.gpu.global.add.u32 (PTX ISA 6.0, sm_70): *counter += value, returns the old value.
//! Release: the calling thread's earlier memory operations, and those of its block ordered before it
//! by a __syncthreads, are visible device-wide to whoever acquires this count; acquire: the caller's
//! later operations (and its block's after a __syncthreads) see everything the earlier counts
//! released. The pattern of a split-K semaphore: __syncthreads, one thread counts, __syncthreads.
__device__ __forceinline__ uint32_t counterArrive(uint32_t* counter, uint32_t value)
{
    uint32_t old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;\n" : "=r"(old) : "l"(counter), "r"(value) : "memory");
    return old;
}

//! red.relaxed.gpu.global.max.u32 (PTX ISA 6.0, sm_70): *word = max(*word, value) with no result, so
//! the thread does not wait for it. Ordered before a later counterArrive of its block (after a
//! __syncthreads) like any other store: whoever acquires that count sees it.
__device__ __forceinline__ void reduceMax(uint32_t* word, uint32_t value)
{
    asm volatile("red.relaxed.gpu.global.max.u32 [%0], %1;\n" ::"l"(word), "r"(value) : "memory");
}

//! ex2.approx.ftz.f32 (PTX ISA, all targets): 2^x in one MUFU.EX2. exp2f compiles to the same MUFU.EX2
//! plus a fix-up for subnormal results (FSETP, FMUL, MUFU, FMUL: four instructions); this one flushes
//! them to +0 instead (x < -126, where a softmax weight is below 1.2e-38 and rounds to 0 in fp16 and
//! bf16 anyway) and reads a subnormal x as 0. Same result as exp2f for every other x.
__device__ __forceinline__ float exp2Approx(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

#endif // ELFATT_HOST_EMULATION

} // namespace ptx
} // namespace detail
} // namespace elfatt
