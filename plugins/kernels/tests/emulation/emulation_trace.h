/*
 * elfatt-deploy kernels: hooks of the host emulation's tracing build (test builds only).
 *
 * The ordinary emulation build (ASan/UBSan) never sets these hooks and pays one pointer test
 * per launch and per wmma call. The tracing build (bench/kernels_model.py builds it; see
 * emulation_trace.cpp) compiles the kernel sources with gcc's -fsanitize=thread
 * instrumentation, links no libtsan and implements the __tsan_read/__tsan_write callbacks
 * itself, so that every load and store of the kernel code reaches the tracer with its
 * address, size and instruction (the return address). Device operations the emulation
 * performs on a whole tile for every lane (wmma) are invisible to that instrumentation
 * (ELFATT_EMULATION_UNTRACED) and report instead, per lane, the access that lane makes on
 * the device (traceAccess) and the matrix operation (traceMma).
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

//! Functions the tracer must not see load by load (they report their device access instead).
#define ELFATT_EMULATION_UNTRACED __attribute__((no_sanitize_thread, noinline))

namespace elfatt
{
namespace emulation
{
namespace trace
{

struct SharedRange
{
    void const* base;
    size_t bytes;
};

//! What a launch looks like to the tracer.
struct LaunchInfo
{
    char const* kernel; //!< short name, e.g. localTensorCoreKernel<__half, 64>
    unsigned grid;
    unsigned block;
    size_t dynamicSmemBytes;
    size_t staticSmemBytes;
    std::vector<SharedRange> shared; //!< dynamic shared memory and the kernel's static __shared__ arrays
    //! Launched with programmatic stream serialization (cudaLaunchKernelEx, PDL): a dependent of the
    //! launch before it that may start early and waits with griddepcontrol.wait.
    bool programmaticDependent{false};
};

enum class Sync : int32_t
{
    kBLOCK = 0,   //!< __syncthreads
    kWARP = 1,    //!< __syncwarp
    kSHUFFLE = 2, //!< __shfl_*_sync
};

enum class L2Trip : int32_t
{
    kLOAD = 0, //!< an ld.global.cg is issued (the read that follows is its access)
    kWAIT = 1, //!< the thread waits for one L2 round trip (atomic with a result, fence)
};

struct Hooks
{
    //! Fills blocks with the block indices to run (in order, gridDim.x = grid) and returns true,
    //! or returns false for the ordinary schedule. An empty list runs no block.
    bool (*selectBlocks)(LaunchInfo const& launch, std::vector<unsigned>& blocks);
    void (*launchBegin)(LaunchInfo const& launch);
    //! Every thread of the block finished it (called by one thread while the others wait).
    void (*blockEnd)(unsigned block);
    void (*launchEnd)();
    //! A barrier or shuffle of the calling emulated thread; site identifies the call.
    void (*sync)(Sync kind, void const* site);
    //! The calling lane's device access: bytes at addr (one lane of a warp-wide instruction).
    void (*access)(void const* addr, uint32_t bytes, bool write, void const* site);
    //! A warp-wide matrix multiply-accumulate m x n x k with inputs of inBytes bytes (per lane call).
    void (*mma)(int32_t m, int32_t n, int32_t k, int32_t inBytes, void const* site);
    //! A cudaMemsetAsync of bytes bytes in the stream (a stream operation between launches).
    void (*memset)(size_t bytes);
    //! A cp.async.wait_group of the calling emulated thread: the global bytes of its copies in flight
    //! (issued, not yet landed: open and committed groups) when it executes, the bytes and copies of
    //! the groups it waits for (0: nothing to wait for), and the thread's copy chain after it: the
    //! most DRAM round trips that must follow one another up to this wait (a copy issued after a
    //! wait of chain c lands no sooner than one round trip later: a wait for it is at chain c + 1).
    //! dependsOn: 1 + the ordinal (see asyncCommit) of the newest group whose global bytes land at this
    //! wait, 0 where none does.
    void (*asyncWait)(uint64_t inFlightBytes, uint32_t landingBytes, uint32_t landingCopies, uint32_t chain,
        uint32_t dependsOn, void const* site);
    //! A cp.async.commit_group of the calling emulated thread: its ordinal among the thread's groups of
    //! the block (0, 1, ...), so that a wait can name the group it waits for (a timeline of the warp).
    void (*asyncCommit)(uint32_t group, void const* site);
    //! A round trip to L2 of the calling emulated thread that no cp.async group covers (a timeline mark,
    //! not an instruction): kLOAD, an L2-only load (ld.global.cg, __ldcg) is issued, its value used at the
    //! thread's next traced instruction that is not another such load at the soonest (loads issued back
    //! to back are in flight together); kWAIT, the thread waits for one round trip here (an atomic whose
    //! result it uses, a __threadfence).
    void (*l2RoundTrip)(L2Trip what);
};

//! Null except in the tracing build (defined in emulation_runtime.cpp).
extern Hooks const* gHooks;

//! Reports the calling lane's device access of one warp-wide instruction at site (an address in
//! the kernel code that names the instruction, e.g. __builtin_return_address(0) of the emulated
//! intrinsic). All lanes of the warp must report the same sequence of sites.
inline void traceAccessAt(void const* site, void const* addr, uint32_t bytes, bool write) noexcept
{
    if (gHooks != nullptr && gHooks->access != nullptr)
    {
        gHooks->access(addr, bytes, write, site);
    }
}

//! traceAccessAt with the caller's return address as the site.
__attribute__((noinline)) inline void traceAccess(void const* addr, uint32_t bytes, bool write) noexcept
{
    traceAccessAt(__builtin_return_address(0), addr, bytes, write);
}

//! Reports one warp-wide m x n x k multiply-accumulate (called by every lane of the warp).
inline void traceMmaAt(void const* site, int32_t m, int32_t n, int32_t k, int32_t inBytes) noexcept
{
    if (gHooks != nullptr && gHooks->mma != nullptr)
    {
        gHooks->mma(m, n, k, inBytes, site);
    }
}

//! Reports the calling lane's cp.async.wait_group at site (see Hooks::asyncWait).
inline void traceAsyncWaitAt(void const* site, uint64_t inFlightBytes, uint32_t landingBytes, uint32_t landingCopies,
    uint32_t chain, uint32_t dependsOn) noexcept
{
    if (gHooks != nullptr && gHooks->asyncWait != nullptr)
    {
        gHooks->asyncWait(inFlightBytes, landingBytes, landingCopies, chain, dependsOn, site);
    }
}

//! Reports the calling lane's cp.async.commit_group at site (see Hooks::asyncCommit).
inline void traceAsyncCommitAt(void const* site, uint32_t group) noexcept
{
    if (gHooks != nullptr && gHooks->asyncCommit != nullptr)
    {
        gHooks->asyncCommit(group, site);
    }
}

//! Reports the calling lane's L2 round trip (see Hooks::l2RoundTrip).
inline void traceL2RoundTrip(L2Trip what) noexcept
{
    if (gHooks != nullptr && gHooks->l2RoundTrip != nullptr)
    {
        gHooks->l2RoundTrip(what);
    }
}

__attribute__((noinline)) inline void traceMma(int32_t m, int32_t n, int32_t k, int32_t inBytes) noexcept
{
    traceMmaAt(__builtin_return_address(0), m, n, k, inBytes);
}

inline bool tracing() noexcept
{
    return gHooks != nullptr;
}

} // namespace trace
} // namespace emulation
} // namespace elfatt
