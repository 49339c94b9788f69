/*
 * elfatt-deploy kernels: exact host emulation of the inline-PTX instructions of src/ptx.cuh.
 *
 * TEST BUILDS ONLY (included by src/ptx.cuh under ELFATT_HOST_EMULATION). Every PTX wrapper
 * the v2 kernels use lands here, in this one header, so that a tracing build can count or
 * record them in one place (counters: countOp below).
 *
 *  - mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: the 32 lanes meet at a
 *    warp rendezvous and deposit their registers (a[4], b[2], c[4]); each lane rebuilds the
 *    whole A (16 x 16), B (16 x 8) and C (16 x 8) from the fragment layouts the PTX ISA
 *    documents, computes its own four D elements as c + sum_k a b in float32 (the products of
 *    two 16-bit floats are exact in float32; the sum runs over k in order) and keeps only
 *    its own D registers. A lane that puts an element in the wrong register therefore
 *    corrupts other lanes' results, as on the device.
 *  - ldmatrix.sync.aligned.m8n8.x4{,.trans}.shared.b16: lanes deposit their row addresses;
 *    each lane reads the elements the ISA assigns to it from the rows the other lanes gave.
 *    Every row address must be 16-byte aligned and lie in the block's shared memory.
 *  - cp.async.cg.shared.global (16 bytes, src-size 0..16): the source is read when the copy is
 *    issued (so AddressSanitizer points at the issuing line), the 16 destination bytes are
 *    filled with 0xFF (NaN) at once, and the data lands only when a cp.async.wait_group of the
 *    issuing thread covers the copy's commit group. A read before that wait (or, by another
 *    thread, before the barrier after it) sees NaN; so does a copy issued into a buffer that
 *    other threads still read. Copies still in flight when a block ends abort the run.
 *  - griddepcontrol.launch_dependents / griddepcontrol.wait (sm_90, programmatic dependent
 *    launch): ordering no-ops here, since launches run one after another and each completes
 *    before the next starts (what the wait guarantees on the device). They are counted per launch
 *    (thread instructions) when the emulated device is sm_90 or newer only: the kernels compile
 *    them out for sm_80 / sm_87, so on an emulated Orin the count stays 0, as in its binary.
 *
 * What it cannot model: the tensor cores' internal rounding of the sum (the device may add
 * the 16 products in another order or with wider intermediates: differences of a few float32
 * ulps), timing, and the asynchronous copy's effect on bandwidth.
 */
#pragma once

#include "elfatt_host_emulation.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <source_location>
#include <string>
#include <type_traits>
#include <vector>

namespace elfatt
{
namespace emulation
{
namespace ptx
{

// ---------------------------------------------------------------------------------------------
// Counters: one per kind of instruction, per launch (the runtime resets them at every launch
// and prints them with ELFATT_EMULATION_TRACE=1). Warp-wide instructions count once per warp.
// ---------------------------------------------------------------------------------------------
enum class Op : int32_t
{
    kMMA = 0,       //!< mma.sync m16n8k16 (warp instructions)
    kLDMATRIX = 1,  //!< ldmatrix .x4 (warp instructions)
    kCP_ASYNC = 2,  //!< cp.async of 16 bytes (thread instructions)
    kCOMMIT = 3,    //!< cp.async.commit_group (thread instructions)
    kWAIT = 4,      //!< cp.async.wait_group (thread instructions)
    kGRID_LAUNCH = 5, //!< griddepcontrol.launch_dependents (thread instructions, sm_90+)
    kGRID_WAIT = 6,   //!< griddepcontrol.wait (thread instructions, sm_90+)
    kCOUNT = 7,
};

inline std::atomic<uint64_t> gCounts[static_cast<int32_t>(Op::kCOUNT)];

ELFATT_EMULATION_UNTRACED inline void countOp(Op op) noexcept
{
    gCounts[static_cast<int32_t>(op)].fetch_add(1, std::memory_order_relaxed);
}

inline void resetCounts() noexcept
{
    for (std::atomic<uint64_t>& count : gCounts)
    {
        count.store(0, std::memory_order_relaxed);
    }
}

//! "mma.sync=N ldmatrix=N cp.async=N commit=N wait=N" for the trace.
inline std::string formatCounts()
{
    char text[200];
    std::snprintf(text, sizeof(text), "mma.sync=%llu ldmatrix=%llu cp.async=%llu commit=%llu wait=%llu",
        static_cast<unsigned long long>(gCounts[0].load()), static_cast<unsigned long long>(gCounts[1].load()),
        static_cast<unsigned long long>(gCounts[2].load()), static_cast<unsigned long long>(gCounts[3].load()),
        static_cast<unsigned long long>(gCounts[4].load()));
    return text;
}

//! "launch_dependents=N wait=N" (griddepcontrol) for the trace, or "" when both are 0.
inline std::string formatGridCounts()
{
    uint64_t const launches = gCounts[static_cast<int32_t>(Op::kGRID_LAUNCH)].load();
    uint64_t const waits = gCounts[static_cast<int32_t>(Op::kGRID_WAIT)].load();
    if (launches == 0 && waits == 0)
    {
        return {};
    }
    char text[120];
    std::snprintf(text, sizeof(text), "launch_dependents=%llu wait=%llu", static_cast<unsigned long long>(launches),
        static_cast<unsigned long long>(waits));
    return text;
}

namespace detail
{

inline float widen16(uint16_t bits, bool bf16) noexcept
{
    if (bf16)
    {
        __nv_bfloat16_raw raw;
        raw.x = bits;
        return __bfloat162float(__nv_bfloat16(raw));
    }
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
}

struct MmaRegisters
{
    uint32_t a[4];
    uint32_t b[2];
    float c[4];
};

// The rebuild and the product run optimized and outside ASan's instrumentation: every lane
// decodes the whole tile, the emulation's main cost in the v2 kernels.
[[gnu::optimize("O2"), gnu::no_sanitize_address]] inline void mmaCompute(
    MmaRegisters const (&all)[32], int32_t lane, bool bf16, float (&d)[4]) noexcept
{
    float a[16][16];
    float b[16][8];
    float c[16][8];
    for (int32_t l = 0; l < 32; ++l)
    {
        int32_t const g = l >> 2;
        int32_t const t = l & 3;
        MmaRegisters const& r = all[l];
        for (int32_t half = 0; half < 2; ++half)
        {
            int32_t const shift = 16 * half;
            // A: a[0] = A[g][2t + h], a[1] = A[g + 8][2t + h], a[2] = A[g][2t + 8 + h], a[3] = A[g + 8][2t + 8 + h]
            a[g][2 * t + half] = widen16(static_cast<uint16_t>(r.a[0] >> shift), bf16);
            a[g + 8][2 * t + half] = widen16(static_cast<uint16_t>(r.a[1] >> shift), bf16);
            a[g][2 * t + 8 + half] = widen16(static_cast<uint16_t>(r.a[2] >> shift), bf16);
            a[g + 8][2 * t + 8 + half] = widen16(static_cast<uint16_t>(r.a[3] >> shift), bf16);
            // B: b[0] = B[2t + h][g], b[1] = B[2t + 8 + h][g]
            b[2 * t + half][g] = widen16(static_cast<uint16_t>(r.b[0] >> shift), bf16);
            b[2 * t + 8 + half][g] = widen16(static_cast<uint16_t>(r.b[1] >> shift), bf16);
        }
        // C: c[0], c[1] = C[g][2t, 2t + 1]; c[2], c[3] = C[g + 8][2t, 2t + 1]
        c[g][2 * t] = r.c[0];
        c[g][2 * t + 1] = r.c[1];
        c[g + 8][2 * t] = r.c[2];
        c[g + 8][2 * t + 1] = r.c[3];
    }
    int32_t const g = lane >> 2;
    int32_t const t = lane & 3;
    for (int32_t e = 0; e < 4; ++e)
    {
        int32_t const row = g + (e >= 2 ? 8 : 0);
        int32_t const col = 2 * t + (e & 1);
        float acc = c[row][col];
        for (int32_t k = 0; k < 16; ++k)
        {
            acc += a[row][k] * b[k][col]; // exact product, float32 sum in k order
        }
        d[e] = acc;
    }
}

// ----- cp.async: per-thread commit groups ------------------------------------------------------

struct PendingCopy
{
    unsigned char* dst;
    unsigned char data[16];
    uint32_t srcBytes; //!< bytes read from global memory (the rest is zero fill)
    uint32_t chain;    //!< the issuing thread's copy chain when it was issued (tracing: see Hooks::asyncWait)
    uint32_t group{0}; //!< ordinal of its commit group among the thread's groups of the block (tracing)
};

struct CopyState
{
    std::vector<PendingCopy> open;                   //!< issued since the last commit_group
    std::deque<std::vector<PendingCopy>> committed; //!< oldest first
    uint32_t chain{0}; //!< DRAM round trips in a row so far (tracing: see Hooks::asyncWait)
    uint32_t groups{0}; //!< commit groups of the thread so far in the block (tracing: Hooks::asyncCommit)
};

inline thread_local CopyState tCopies;

ELFATT_EMULATION_UNTRACED inline void land(std::vector<PendingCopy> const& group) noexcept
{
    for (PendingCopy const& copy : group)
    {
        std::memcpy(copy.dst, copy.data, sizeof(copy.data));
    }
}

} // namespace detail

// noinline: __builtin_return_address(0) must be the call site in the kernel code (inlined, it is
// the return address of the kernel function the call was inlined into).
template <typename T>
[[gnu::noinline]] inline void mma16816(float (&d)[4], uint32_t const (&a)[4], uint32_t const (&b)[2], float const (&c)[4],
    std::source_location const where = std::source_location::current()) noexcept
{
    static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "mma16816: __half or __nv_bfloat16");
    constexpr bool kBF16 = std::is_same_v<T, __nv_bfloat16>;
    namespace e = ::elfatt::emulation::detail;
    int32_t const sm = e::emulatedSm();
    if (sm < 80)
    {
        e::fail("mma.sync.m16n8k16 with f32 accumulators and %s inputs needs sm_80 in this build; emulating sm_%d",
            kBF16 ? "bf16" : "f16", sm);
    }
    int32_t const lane = e::currentLane("mma.sync");
    detail::MmaRegisters mine{};
    std::memcpy(mine.a, a, sizeof(mine.a));
    std::memcpy(mine.b, b, sizeof(mine.b));
    std::memcpy(mine.c, c, sizeof(mine.c));
    detail::MmaRegisters all[32];
    e::warpGather(&mine, sizeof(mine), all, kBF16 ? "mma.sync.m16n8k16.bf16" : "mma.sync.m16n8k16.f16", where);
    ::elfatt::emulation::trace::traceMmaAt(__builtin_return_address(0), 16, 8, 16, 2);
    detail::mmaCompute(all, lane, kBF16, d); // d may alias c: c was copied first
    if (lane == 0)
    {
        countOp(Op::kMMA);
    }
}

//! ldmatrix.sync.aligned.m8n8.x{count}{.trans}.shared.b16. (Tracing build: the lane's device access is
//! the 16-byte row at its own address, for lanes 0 .. 8 count - 1; the gathers below are not traced.)
ELFATT_EMULATION_UNTRACED inline void ldmatrix(uint32_t* r, void const* rowAddress, int32_t count, bool trans,
    std::source_location const where = std::source_location::current()) noexcept
{
    namespace e = ::elfatt::emulation::detail;
    int32_t const lane = e::currentLane("ldmatrix");
    struct Deposit
    {
        unsigned char const* address;
        int32_t count;
        int32_t trans;
    };
    Deposit const mine{static_cast<unsigned char const*>(rowAddress), count, trans ? 1 : 0};
    if (lane < 8 * count)
    {
        ::elfatt::emulation::trace::traceAccessAt(__builtin_return_address(0), rowAddress, 16, false);
    }
    Deposit all[32];
    e::warpGather(&mine, sizeof(mine), all, trans ? "ldmatrix.trans" : "ldmatrix", where);
    for (int32_t m = 0; m < count; ++m)
    {
        for (int32_t row = 0; row < 8; ++row)
        {
            Deposit const& given = all[8 * m + row];
            if (given.count != count || given.trans != mine.trans)
            {
                e::fail("ldmatrix: lane %d uses .x%d%s, lane %d .x%d%s", lane, count, trans ? ".trans" : "",
                    8 * m + row, given.count, given.trans ? ".trans" : "");
            }
            if (reinterpret_cast<uintptr_t>(given.address) % 16 != 0 || !e::isShared(given.address, 16))
            {
                e::fail("ldmatrix: row %d of matrix %d (address %p, from lane %d) is not a 16-byte aligned row of "
                        "shared memory",
                    row, m, static_cast<void const*>(given.address), 8 * m + row);
            }
        }
        int32_t const g = lane >> 2;
        int32_t const t = lane & 3;
        uint16_t lo = 0;
        uint16_t hi = 0;
        if (!trans)
        {
            // Row g of matrix m, elements 2t and 2t + 1.
            std::memcpy(&lo, all[8 * m + g].address + 4 * t, 2);
            std::memcpy(&hi, all[8 * m + g].address + 4 * t + 2, 2);
        }
        else
        {
            // Elements [2t][g] and [2t + 1][g] of matrix m: column g of the stored rows.
            std::memcpy(&lo, all[8 * m + 2 * t].address + 2 * g, 2);
            std::memcpy(&hi, all[8 * m + 2 * t + 1].address + 2 * g, 2);
        }
        r[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
    if (lane == 0)
    {
        countOp(Op::kLDMATRIX);
    }
}

//! cp.async.cg.shared.global [dst], [src], cpSize, srcBytes. (Tracing build: srcBytes read from global
//! memory and 16 bytes written to shared memory, both at the cp.async; the landing is not traced.)
ELFATT_EMULATION_UNTRACED inline void cpAsync(void* dst, void const* src, uint32_t cpSize, uint32_t srcBytes) noexcept
{
    namespace e = ::elfatt::emulation::detail;
    if (cpSize != 16 || srcBytes > cpSize)
    {
        e::fail("cp.async.cg: cp-size must be 16 (got %u) and src-size <= cp-size (got %u)", cpSize, srcBytes);
    }
    if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || !e::isShared(dst, 16))
    {
        e::fail("cp.async: destination %p is not 16 bytes of shared memory aligned to 16", dst);
    }
    if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || e::isShared(src, 1))
    {
        e::fail("cp.async: source %p is not a 16-byte aligned global address", src);
    }
    if (srcBytes > 0)
    {
        ::elfatt::emulation::trace::traceAccessAt(__builtin_return_address(0), src, srcBytes, false);
    }
    ::elfatt::emulation::trace::traceAccessAt(__builtin_return_address(0), dst, 16, true);
    detail::PendingCopy copy{static_cast<unsigned char*>(dst), {}, srcBytes, detail::tCopies.chain};
    std::memset(copy.data, 0, sizeof(copy.data)); // zero fill past srcBytes
    if (srcBytes > 0)
    {
        std::memcpy(copy.data, src, srcBytes); // the source is read now
    }
    std::memset(dst, 0xFF, 16);                // the destination is undefined until the wait
    detail::tCopies.open.push_back(copy);
    countOp(Op::kCP_ASYNC);
}

ELFATT_EMULATION_UNTRACED inline void cpAsyncCommit() noexcept
{
    (void) ::elfatt::emulation::detail::currentLane("cp.async.commit_group");
    uint32_t const group = detail::tCopies.groups++;
    for (detail::PendingCopy& copy : detail::tCopies.open)
    {
        copy.group = group;
    }
    ::elfatt::emulation::trace::traceAsyncCommitAt(__builtin_return_address(0), group);
    detail::tCopies.committed.push_back(std::move(detail::tCopies.open));
    detail::tCopies.open.clear();
    countOp(Op::kCOMMIT);
}

ELFATT_EMULATION_UNTRACED inline void cpAsyncWait(int32_t pending) noexcept
{
    (void) ::elfatt::emulation::detail::currentLane("cp.async.wait_group");
    if (::elfatt::emulation::trace::gHooks != nullptr)
    {
        uint64_t inFlight = 0;
        for (detail::PendingCopy const& copy : detail::tCopies.open)
        {
            inFlight += copy.srcBytes;
        }
        uint64_t landing = 0;
        uint32_t copies = 0;
        uint32_t dependsOn = 0;
        int64_t const groups = static_cast<int64_t>(detail::tCopies.committed.size());
        for (int64_t g = 0; g < groups; ++g)
        {
            for (detail::PendingCopy const& copy : detail::tCopies.committed[static_cast<size_t>(g)])
            {
                inFlight += copy.srcBytes;
                if (g < groups - pending && copy.srcBytes > 0)
                {
                    landing += copy.srcBytes;
                    ++copies;
                    detail::tCopies.chain = std::max(detail::tCopies.chain, copy.chain + 1);
                    dependsOn = std::max(dependsOn, copy.group + 1);
                }
            }
        }
        ::elfatt::emulation::trace::traceAsyncWaitAt(
            __builtin_return_address(0), inFlight, static_cast<uint32_t>(landing), copies, detail::tCopies.chain,
            dependsOn);
    }
    while (static_cast<int64_t>(detail::tCopies.committed.size()) > pending)
    {
        detail::land(detail::tCopies.committed.front());
        detail::tCopies.committed.pop_front();
    }
    countOp(Op::kWAIT);
}

//! griddepcontrol.wait (wait = true) or .launch_dependents: no-ops for the order (launches run
//! one after another, each complete before the next), counted where the device has them (sm_90+).
ELFATT_EMULATION_UNTRACED inline void gridDependencyControl(bool wait) noexcept
{
    (void) ::elfatt::emulation::detail::currentLane(wait ? "griddepcontrol.wait" : "griddepcontrol.launch_dependents");
    if (::elfatt::emulation::detail::emulatedSm() >= 90)
    {
        countOp(wait ? Op::kGRID_WAIT : Op::kGRID_LAUNCH);
    }
}

//! Called by the runtime when a thread finishes a block: no copy may still be in flight.
inline void endOfBlock() noexcept
{
    size_t inFlight = detail::tCopies.open.size();
    for (std::vector<detail::PendingCopy> const& group : detail::tCopies.committed)
    {
        inFlight += group.size();
    }
    detail::tCopies.open.clear();
    detail::tCopies.committed.clear();
    detail::tCopies.chain = 0;
    detail::tCopies.groups = 0;
    if (inFlight > 0)
    {
        ::elfatt::emulation::detail::fail("cp.async: %zu copies of this thread are still in flight at the end of the "
                                          "block (a missing cp.async.wait_group?)",
            inFlight);
    }
}

} // namespace ptx
} // namespace emulation
} // namespace elfatt
