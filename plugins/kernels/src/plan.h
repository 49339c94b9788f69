/*
 * elfatt-deploy kernels: host-side launch plan (internal header).
 *
 * Everything the kernels need that depends on the params alone: effective
 * head dim, window sizes, the token split of the global heads and the
 * workspace layout. Host-only; compiles with any C++14 compiler.
 */
#pragma once

#include "elfatt/elfatt_kernels.h"
#include "elfatt/elfatt_kernels_ext.h"

#include <cstddef>
#include <cstdint>

namespace elfatt
{
namespace detail
{

//! Tokens per chunk of the global-head context pass start at this many...
constexpr int64_t kGLOBAL_MIN_CHUNK_TOKENS = 256;
//! ...and one (batch item, global head) is split into at most this many chunks.
constexpr int64_t kGLOBAL_MAX_CHUNKS = 128;
//! The context pass works on blocks of kGLOBAL_CTX_TILE x kGLOBAL_CTX_TILE context entries.
constexpr int64_t kGLOBAL_CTX_TILE = 64;
//! Every workspace region starts at a multiple of this.
constexpr size_t kWORKSPACE_ALIGN = 256;
//! Largest head dim of the tiled local kernel (zero padded up to 16, 32 or 64).
constexpr int64_t kLOCAL_TILED_MAX_DIM = 64;
//! Shared memory (bytes) the global output kernel may use for the staged context.
constexpr int64_t kGLOBAL_OUT_SMEM_LIMIT = 48 * 1024;
//! Warps per block of the global output kernel.
constexpr int64_t kGLOBAL_OUT_WARPS = 8;

// Kernels v2 (KernelPath::kFUSED, fused_attention.cu).
//! Query rows of one v2 block (4 warps x 16 rows) and keys per shared-memory key tile.
constexpr int32_t kFUSED_ROWS = 64;
//! Tokens per chunk of the v2 context reduction start at this many (a multiple of kFUSED_ROWS)...
constexpr int64_t kFUSED_CHUNK_TOKENS = 512;
//! ...or at this many where chunks of kFUSED_CHUNK_TOKENS give fewer than kFUSED_FEW_REDUCTION_ITEMS
//! reduction items (B * G * chunks): a grid that small is bound by one reduction block's critical
//! path (its tiles one after another, then the merge), not by bandwidth, so shorter chunks finish
//! sooner although the merge has twice as many partials...
constexpr int64_t kFUSED_SMALL_CHUNK_TOKENS = 256;
constexpr int64_t kFUSED_FEW_REDUCTION_ITEMS = 64;
//! ...and one (batch item, global head) is split into at most this many chunks (<= kGLOBAL_MAX_CHUNKS,
//! so that the v2 partials fit in the v1 regions of the workspace).
constexpr int64_t kFUSED_MAX_CHUNKS = 64;
//! The chunk partials of one (batch item, global head) merge in a tree of this fan-in: the last block
//! of each group of kFUSED_MERGE_FANIN chunks merges them into a partial of the next level, the last
//! of each group of those merges them, and so on up to the one group whose merge writes the context.
//! The critical path has two L2 round trips per level (log4 of the chunks), not one per two chunks.
constexpr int32_t kFUSED_MERGE_FANIN = 4;

//! Groups of the merge tree over `chunks` partials (one counter, and one max key per channel, each):
//! ceil(chunks / 4) + ceil(chunks / 16) + ... + 1 (1 for a single chunk).
int32_t fusedMergeGroups(int64_t chunks) noexcept;
//! Partial slots of one (batch item, global head) in kernels v2: the chunks', then one per group of
//! the tree below the root, level by level (siblings contiguous): chunks + fusedMergeGroups - 1.
int32_t fusedMergeSlots(int64_t chunks) noexcept;

//! Kernel of the local heads.
enum class LocalKernel : int32_t
{
    kGENERIC = 0,     //!< one warp per query, any head dim
    kTILED = 1,       //!< tiled SIMT kernel, head dim <= kLOCAL_TILED_MAX_DIM
    kTENSOR_CORE = 2, //!< wmma kernel (float16/bfloat16); kTILED where the device lacks the tensor-core type
};

//! Tile shapes of kernels v2 (all int32: v2 runs only where every index of one batch item fits).
struct FusedPlan
{
    // Local heads: a query tile is a qTileH x qTileW rectangle of a window (<= kFUSED_ROWS tokens).
    int32_t qTileH{0};
    int32_t qTileW{0};
    int32_t qTilesY{0};  //!< query tiles per window, down and across
    int32_t qTilesX{0};
    int32_t keyTiles{0}; //!< key tiles of kFUSED_ROWS tokens in the largest window; 1: the V tile is the LePE halo
    int32_t haloRows{0}; //!< rows of the separate LePE halo tile when keyTiles > 1 (with LePE), else 0
    // Global heads: context reduction chunks and output tiles (oTileH x oTileW tokens).
    int32_t chunks{0};
    int32_t chunkTokens{0};
    int32_t mergeGroups{0}; //!< groups of one (b, head)'s merge tree (fusedMergeGroups(chunks))
    int32_t mergeSlots{0};  //!< partial slots of one (b, head) (fusedMergeSlots(chunks))
    int32_t oTileH{0};
    int32_t oTileW{0};
    int32_t oTilesY{0};
    int32_t oTilesX{0};
    int32_t oHaloRows{0}; //!< rows of the output tile's LePE halo (0 without LePE)
    // Work items of the two launches.
    int32_t reductionItems{0}; //!< B * G * chunks
    int32_t localItems{0};     //!< B * localHeads * windows * query tiles
    int32_t outputItems{0};    //!< B * G * output tiles
};

struct LaunchPlan
{
    int64_t batch{0};
    int64_t height{0};
    int64_t width{0};
    int64_t channels{0};
    int64_t tokens{0};        //!< H * W
    int64_t headDim{0};       //!< d
    int64_t globalHeads{0};
    int64_t localHeads{0};
    int64_t globalChannels{0}; //!< c1 = globalHeads * d
    int64_t windowH{0};       //!< effective window rows, 1..H (0 when H = 0)
    int64_t windowW{0};       //!< effective window columns, 1..W (0 when W = 0)
    int64_t windowsY{0};      //!< ceil(H / windowH)
    int64_t windowsX{0};      //!< ceil(W / windowW)
    float scale{0.F};         //!< effective local logit scale
    DataType dtype{DataType::kFLOAT};
    bool hasLepe{false};
    bool lepeFloat32{false};  //!< LePE weight and bias are float32 (else dtype)
    bool empty{true};         //!< B, H or W is 0: nothing to launch

    // Global heads: token split and workspace layout (bytes from the base).
    int64_t chunks{0};
    int64_t chunkTokens{0};
    //! The partial regions hold [B][G][slots] partials, slots = max(chunks, fusedMergeSlots of the most
    //! chunks v2 can have here): v1 indexes them [B][G][chunks], v2 [B][G][fusedPlan.mergeSlots].
    size_t wsCtxPartial{0};   //!< float [B][G][slots][d][d]
    size_t wsMaxPartial{0};   //!< float [B][G][slots][d]
    size_t wsSumPartial{0};   //!< float [B][G][slots][d]
    size_t wsCtx{0};          //!< float [B][G][d][d], normalized
    //! Kernels v2's merge trees: uint32 [B][G][groups] counters (partials of each group done), then
    //! uint32 [B][G][groups][d] max keys (each group's channel maxima, order-preserving keys). v2 also
    //! reuses the regions above: partials in wsCtxPartial/wsMaxPartial/wsSumPartial, the merged
    //! context in wsCtx as the input type (hi, and lo for bfloat16: 4 bytes per entry).
    size_t wsCounters{0};
    size_t workspaceBytes{0};
    //! Bytes of the caller's persistent counters that can replace wsCounters (enqueueWithState):
    //! the wsCounters region (counters and max keys of the merge trees) where kernels v2 run (fused), else 0.
    size_t stateBytes{0};

    // Kernel choices.
    LocalKernel localKernel{LocalKernel::kGENERIC};
    int32_t localTiledDim{0}; //!< head dim padded to 16, 32 or 64 (kTILED and kTENSOR_CORE)
    bool globalSharedCtx{false};
    //! Kernels v2 run (KernelPath::kFUSED; the launch still needs sm_80+ and 16-byte aligned qkv and out,
    //! else the tensor-core path runs).
    bool fused{false};
    FusedPlan fusedPlan;
};

//! Validates params and fills plan. Returns kINVALID_ARGUMENT with a message in
//! msg (when given) for params that break the contract. Never throws.
Status makePlan(AttentionParams const& params, KernelPath path, LaunchPlan& plan, char* msg, size_t msgLen) noexcept;

//! Whether kernels v2 cover these params: float16/bfloat16, head dim 32 or 64, every index of one
//! batch item (tokens x 3C) and every work-item count in int32.
bool fusedEligible(LaunchPlan const& plan) noexcept;

//! Bytes of dynamic shared memory the global output kernel needs when it stages the context.
int64_t globalOutSharedBytes(int64_t headDim) noexcept;

} // namespace detail
} // namespace elfatt
