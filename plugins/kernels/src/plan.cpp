/*
 * elfatt-deploy kernels: parameter validation and launch planning (host-only).
 */
#include "plan.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace elfatt
{
namespace detail
{
namespace
{

void setMessage(char* msg, size_t msgLen, char const* format, ...) noexcept
{
    if (msg == nullptr || msgLen == 0)
    {
        return;
    }
    va_list args;
    va_start(args, format);
    int const written = std::vsnprintf(msg, msgLen, format, args);
    va_end(args);
    if (written < 0)
    {
        msg[0] = '\0';
    }
}

//! a * b into out; false on overflow or negative operands.
bool mulChecked(int64_t a, int64_t b, int64_t& out) noexcept
{
    if (a < 0 || b < 0)
    {
        return false;
    }
    if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    {
        return false;
    }
    out = a * b;
    return true;
}

int64_t ceilDiv(int64_t a, int64_t b) noexcept
{
    return (a + b - 1) / b;
}

size_t alignUp(size_t value) noexcept
{
    return (value + kWORKSPACE_ALIGN - 1) / kWORKSPACE_ALIGN * kWORKSPACE_ALIGN;
}

//! Adds a float region of `count` elements at the end of the workspace; false on overflow.
bool addRegion(int64_t count, size_t& offset, size_t& cursor) noexcept
{
    int64_t bytes = 0;
    if (!mulChecked(count, static_cast<int64_t>(sizeof(float)), bytes))
    {
        return false;
    }
    // Keep every size far below the size_t / int64 limits so that alignUp cannot wrap.
    constexpr int64_t kLIMIT = std::numeric_limits<int64_t>::max() / 4;
    if (bytes > kLIMIT || cursor > static_cast<size_t>(kLIMIT))
    {
        return false;
    }
    offset = cursor;
    cursor = alignUp(cursor + static_cast<size_t>(bytes));
    return true;
}

int64_t minOf(int64_t a, int64_t b) noexcept
{
    return a < b ? a : b;
}

constexpr int64_t kINT32_LIMIT = int64_t{1} << 31;

//! Tile shapes and work-item counts of kernels v2; false when a count does not fit int32.
bool makeFusedPlan(LaunchPlan const& plan, FusedPlan& fused) noexcept
{
    fused = FusedPlan{};
    int64_t const rows = kFUSED_ROWS;
    // Local heads: query rectangles of at most 64 tokens, as many window rows as fit.
    int64_t const qh = minOf(plan.windowH, rows);
    int64_t const qw = minOf(plan.windowW, rows / qh);
    int64_t const keyTiles = ceilDiv(plan.windowH * plan.windowW, rows);
    int64_t const qTiles = ceilDiv(plan.windowH, qh) * ceilDiv(plan.windowW, qw);
    int64_t const localItems = plan.batch * plan.localHeads * plan.windowsY * plan.windowsX * qTiles;
    // Global heads: chunks of >= 512 tokens (>= 256 in a small grid; multiples of 64), output tiles of
    // up to 8 x 8 tokens.
    int64_t const itemsAt512 = plan.batch * plan.globalHeads * ceilDiv(plan.tokens, kFUSED_CHUNK_TOKENS);
    int64_t const target = itemsAt512 < kFUSED_FEW_REDUCTION_ITEMS ? kFUSED_SMALL_CHUNK_TOKENS : kFUSED_CHUNK_TOKENS;
    int64_t chunks = ceilDiv(plan.tokens, target);
    chunks = chunks < 1 ? 1 : (chunks > kFUSED_MAX_CHUNKS ? kFUSED_MAX_CHUNKS : chunks);
    int64_t const chunkTokens = ceilDiv(ceilDiv(plan.tokens, chunks), rows) * rows;
    chunks = ceilDiv(plan.tokens, chunkTokens);
    int64_t const ow = minOf(plan.width, 8);
    int64_t const oh = minOf(plan.height, rows / ow);
    int64_t const outputTiles = ceilDiv(plan.height, oh) * ceilDiv(plan.width, ow);
    int64_t const reductionItems = plan.batch * plan.globalHeads * chunks;
    int64_t const outputItems = plan.batch * plan.globalHeads * outputTiles;
    if (localItems >= kINT32_LIMIT || reductionItems + localItems >= kINT32_LIMIT || outputItems >= kINT32_LIMIT
        || chunkTokens >= kINT32_LIMIT)
    {
        return false;
    }
    fused.qTileH = static_cast<int32_t>(qh);
    fused.qTileW = static_cast<int32_t>(qw);
    fused.qTilesY = static_cast<int32_t>(ceilDiv(plan.windowH, qh));
    fused.qTilesX = static_cast<int32_t>(ceilDiv(plan.windowW, qw));
    fused.keyTiles = static_cast<int32_t>(keyTiles);
    fused.haloRows = (keyTiles > 1 && plan.hasLepe)
        ? static_cast<int32_t>(minOf(qh + 2, plan.windowH) * minOf(qw + 2, plan.windowW))
        : 0;
    fused.chunks = plan.globalHeads > 0 ? static_cast<int32_t>(chunks) : 0;
    fused.chunkTokens = static_cast<int32_t>(chunkTokens);
    fused.mergeGroups = plan.globalHeads > 0 ? fusedMergeGroups(chunks) : 0;
    fused.mergeSlots = plan.globalHeads > 0 ? fusedMergeSlots(chunks) : 0;
    fused.oTileH = static_cast<int32_t>(oh);
    fused.oTileW = static_cast<int32_t>(ow);
    fused.oTilesY = static_cast<int32_t>(ceilDiv(plan.height, oh));
    fused.oTilesX = static_cast<int32_t>(ceilDiv(plan.width, ow));
    fused.oHaloRows = plan.hasLepe ? static_cast<int32_t>(minOf(oh + 2, plan.height) * minOf(ow + 2, plan.width)) : 0;
    fused.reductionItems = static_cast<int32_t>(reductionItems);
    fused.localItems = static_cast<int32_t>(localItems);
    fused.outputItems = static_cast<int32_t>(outputItems);
    return true;
}

} // namespace

int32_t fusedMergeGroups(int64_t chunks) noexcept
{
    int64_t groups = 0;
    int64_t nodes = chunks < 1 ? 1 : chunks;
    do
    {
        nodes = ceilDiv(nodes, kFUSED_MERGE_FANIN);
        groups += nodes;
    } while (nodes > 1);
    return static_cast<int32_t>(groups);
}

int32_t fusedMergeSlots(int64_t chunks) noexcept
{
    return static_cast<int32_t>((chunks < 1 ? 1 : chunks) + fusedMergeGroups(chunks) - 1);
}

bool fusedEligible(LaunchPlan const& plan) noexcept
{
    return (plan.dtype == DataType::kHALF || plan.dtype == DataType::kBF16)
        && (plan.headDim == 32 || plan.headDim == 64) && !plan.empty
        && plan.tokens * 3 * plan.channels < kINT32_LIMIT && plan.fusedPlan.qTileH > 0;
}

int64_t globalOutSharedBytes(int64_t headDim) noexcept
{
    // Context d x d plus one softmax(q) row of d per warp. A head dim this large never
    // fits in shared memory; returning early keeps d * d from overflowing int64.
    if (headDim < 0 || headDim > (int64_t{1} << 20))
    {
        return std::numeric_limits<int64_t>::max();
    }
    return static_cast<int64_t>(sizeof(float)) * (headDim * headDim + kGLOBAL_OUT_WARPS * headDim);
}

Status makePlan(AttentionParams const& params, KernelPath path, LaunchPlan& plan, char* msg, size_t msgLen) noexcept
{
    if (msg != nullptr && msgLen > 0)
    {
        msg[0] = '\0';
    }
    plan = LaunchPlan{};
    auto fail = [](void) { return Status::kINVALID_ARGUMENT; };

    if (params.dtype != DataType::kFLOAT && params.dtype != DataType::kHALF && params.dtype != DataType::kBF16)
    {
        setMessage(msg, msgLen,
            "elfatt: dtype %d is not supported; use kFLOAT (0, float32), kHALF (1, float16) or kBF16 (2, bfloat16)",
            static_cast<int>(params.dtype));
        return fail();
    }
    if (params.batch < 0)
    {
        setMessage(msg, msgLen, "elfatt: batch must be >= 0, got %lld", static_cast<long long>(params.batch));
        return fail();
    }
    if (params.height < 0)
    {
        setMessage(msg, msgLen, "elfatt: height must be >= 0, got %lld", static_cast<long long>(params.height));
        return fail();
    }
    if (params.width < 0)
    {
        setMessage(msg, msgLen, "elfatt: width must be >= 0, got %lld", static_cast<long long>(params.width));
        return fail();
    }
    if (params.globalHeads < 0)
    {
        setMessage(msg, msgLen, "elfatt: globalHeads must be >= 0, got %d", params.globalHeads);
        return fail();
    }
    if (params.localHeads < 0)
    {
        setMessage(msg, msgLen, "elfatt: localHeads must be >= 0, got %d", params.localHeads);
        return fail();
    }
    int64_t const heads = static_cast<int64_t>(params.globalHeads) + static_cast<int64_t>(params.localHeads);
    if (heads < 1)
    {
        setMessage(msg, msgLen,
            "elfatt: globalHeads + localHeads must be >= 1, got %d + %d = 0 (zero heads); give at least one head",
            params.globalHeads, params.localHeads);
        return fail();
    }
    if (params.windowH < 0)
    {
        setMessage(msg, msgLen, "elfatt: windowH must be >= 0 (0 = whole height), got %d", params.windowH);
        return fail();
    }
    if (params.windowW < 0)
    {
        setMessage(msg, msgLen, "elfatt: windowW must be >= 0 (0 = whole width), got %d", params.windowW);
        return fail();
    }
    if (!std::isfinite(params.scale) || params.scale < 0.F)
    {
        setMessage(msg, msgLen, "elfatt: scale must be finite and >= 0 (0 = 1/sqrt(d)), got %g",
            static_cast<double>(params.scale));
        return fail();
    }
    if (params.channels < 1)
    {
        setMessage(msg, msgLen,
            "elfatt: channels (C, qkv has 3C) must be >= 1, got %lld", static_cast<long long>(params.channels));
        return fail();
    }
    if (params.channels % heads != 0)
    {
        setMessage(msg, msgLen,
            "elfatt: channels (C = %lld) must be divisible by globalHeads + localHeads (%d + %d = %lld)",
            static_cast<long long>(params.channels), params.globalHeads, params.localHeads,
            static_cast<long long>(heads));
        return fail();
    }

    // Sizes: every element index of qkv must fit int64.
    int64_t tokens = 0;
    int64_t rows = 0;
    int64_t elements = 0;
    int64_t qkvChannels = 0;
    if (!mulChecked(params.height, params.width, tokens) || !mulChecked(params.batch, tokens, rows)
        || !mulChecked(params.channels, 3, qkvChannels) || !mulChecked(rows, qkvChannels, elements))
    {
        setMessage(msg, msgLen,
            "elfatt: batch x height x width x 3C = %lld x %lld x %lld x 3*%lld overflows int64; split the batch",
            static_cast<long long>(params.batch), static_cast<long long>(params.height),
            static_cast<long long>(params.width), static_cast<long long>(params.channels));
        return fail();
    }

    plan.batch = params.batch;
    plan.height = params.height;
    plan.width = params.width;
    plan.channels = params.channels;
    plan.tokens = tokens;
    plan.headDim = params.channels / heads;
    plan.globalHeads = params.globalHeads;
    plan.localHeads = params.localHeads;
    plan.globalChannels = plan.globalHeads * plan.headDim;
    plan.dtype = params.dtype;
    plan.hasLepe = params.hasLepe;
    plan.lepeFloat32 = params.hasLepe && params.lepeFloat32;
    plan.empty = (rows == 0);
    plan.scale = (params.scale == 0.F) ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(plan.headDim)))
                                       : params.scale;

    if (params.height > 0)
    {
        plan.windowH = (params.windowH == 0 || params.windowH > params.height) ? params.height : params.windowH;
        plan.windowsY = ceilDiv(params.height, plan.windowH);
    }
    if (params.width > 0)
    {
        plan.windowW = (params.windowW == 0 || params.windowW > params.width) ? params.width : params.windowW;
        plan.windowsX = ceilDiv(params.width, plan.windowW);
    }

    // Kernel choices.
    bool const generic = (path == KernelPath::kGENERIC);
    bool const tiled = !generic && plan.headDim <= kLOCAL_TILED_MAX_DIM;
    bool const tensorCore = tiled
        && (path == KernelPath::kAUTO || path == KernelPath::kTENSOR_CORE || path == KernelPath::kFUSED)
        && plan.dtype != DataType::kFLOAT;
    plan.localKernel = tensorCore ? LocalKernel::kTENSOR_CORE : (tiled ? LocalKernel::kTILED : LocalKernel::kGENERIC);
    plan.localTiledDim = plan.headDim <= 16 ? 16 : (plan.headDim <= 32 ? 32 : 64);
    plan.globalSharedCtx = !generic && globalOutSharedBytes(plan.headDim) <= kGLOBAL_OUT_SMEM_LIMIT;
    if (!plan.empty && plan.tokens * 3 * plan.channels < kINT32_LIMIT && !makeFusedPlan(plan, plan.fusedPlan))
    {
        plan.fusedPlan = FusedPlan{};
    }
    plan.fused = (path == KernelPath::kFUSED || path == KernelPath::kAUTO) && fusedEligible(plan);

    // Global heads: token split and workspace. Monotone non-decreasing in B, H and W, so a
    // workspace planned for the largest shape serves every smaller one (TensorRT relies on it).
    if (plan.globalHeads > 0 && !plan.empty)
    {
        int64_t chunks = ceilDiv(tokens, kGLOBAL_MIN_CHUNK_TOKENS);
        chunks = chunks < 1 ? 1 : (chunks > kGLOBAL_MAX_CHUNKS ? kGLOBAL_MAX_CHUNKS : chunks);
        plan.chunkTokens = ceilDiv(tokens, chunks);
        plan.chunks = ceilDiv(tokens, plan.chunkTokens); // no empty chunk

        // Partial slots per (batch item, global head): v1's chunks, or kernels v2's chunks and merge tree
        // for the most chunks v2 can have here (at most plan.chunks and kFUSED_MAX_CHUNKS; slots and
        // groups grow with the chunks, so a smaller shape's tree fits).
        int64_t const v2Chunks = minOf(plan.chunks, kFUSED_MAX_CHUNKS);
        int64_t const v2Slots = fusedMergeSlots(v2Chunks);
        int64_t const slots = plan.chunks > v2Slots ? plan.chunks : v2Slots;
        int64_t bg = 0;
        int64_t bgc = 0;
        int64_t dd = 0;
        int64_t ctxPartial = 0;
        int64_t rowPartial = 0;
        int64_t ctxFinal = 0;
        int64_t counters = 0;
        size_t cursor = 0;
        bool ok = mulChecked(plan.batch, plan.globalHeads, bg) && mulChecked(bg, slots, bgc)
            && mulChecked(plan.headDim, plan.headDim, dd) && mulChecked(bgc, dd, ctxPartial)
            && mulChecked(bgc, plan.headDim, rowPartial) && mulChecked(bg, dd, ctxFinal);
        ok = ok && addRegion(ctxPartial, plan.wsCtxPartial, cursor) && addRegion(rowPartial, plan.wsMaxPartial, cursor)
            && addRegion(rowPartial, plan.wsSumPartial, cursor) && addRegion(ctxFinal, plan.wsCtx, cursor);
        // Kernels v2: per (batch item, global head) and group of its merge tree one uint32 counter and d
        // uint32 max keys (the group's channel maxima); the same size as floats.
        ok = ok && mulChecked(bg, fusedMergeGroups(v2Chunks) * (1 + plan.headDim), counters)
            && addRegion(counters, plan.wsCounters, cursor);
        if (!ok)
        {
            setMessage(msg, msgLen,
                "elfatt: the workspace for batch %lld, %lld global heads of dim %lld overflows; split the batch",
                static_cast<long long>(plan.batch), static_cast<long long>(plan.globalHeads),
                static_cast<long long>(plan.headDim));
            plan = LaunchPlan{};
            return fail();
        }
        plan.workspaceBytes = cursor;
        // only kernels v2 count chunks: no state for the v1 paths (float32, other head dims, huge grids)
        plan.stateBytes = plan.fused ? static_cast<size_t>(counters) * sizeof(uint32_t) : 0;
    }
    return Status::kSUCCESS;
}

} // namespace detail

Status validateParams(AttentionParams const& params, char* msg, size_t msgLen) noexcept
{
    detail::LaunchPlan plan;
    return detail::makePlan(params, KernelPath::kAUTO, plan, msg, msgLen);
}

size_t workspaceSize(AttentionParams const& params) noexcept
{
    detail::LaunchPlan plan;
    if (detail::makePlan(params, KernelPath::kAUTO, plan, nullptr, 0) != Status::kSUCCESS)
    {
        return 0;
    }
    return plan.workspaceBytes;
}

size_t stateSize(AttentionParams const& params) noexcept
{
    detail::LaunchPlan plan;
    if (detail::makePlan(params, KernelPath::kAUTO, plan, nullptr, 0) != Status::kSUCCESS)
    {
        return 0;
    }
    return plan.stateBytes;
}

KernelPath defaultKernelPath() noexcept
{
    static KernelPath const kPATH = []() {
        char const* value = std::getenv("ELFATT_KERNEL_PATH");
        if (value == nullptr)
        {
            return KernelPath::kAUTO;
        }
        if (std::strcmp(value, "generic") == 0)
        {
            return KernelPath::kGENERIC;
        }
        if (std::strcmp(value, "tiled") == 0)
        {
            return KernelPath::kTILED;
        }
        if (std::strcmp(value, "tensorcore") == 0)
        {
            return KernelPath::kTENSOR_CORE;
        }
        if (std::strcmp(value, "fused") == 0)
        {
            return KernelPath::kFUSED;
        }
        return KernelPath::kAUTO;
    }();
    return kPATH;
}

char const* kernelsVersion() noexcept
{
    return "1";
}

} // namespace elfatt
