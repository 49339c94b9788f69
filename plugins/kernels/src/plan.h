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

//! Kernel of the local heads.
enum class LocalKernel : int32_t
{
    kGENERIC = 0,     //!< one warp per query, any head dim
    kTILED = 1,       //!< tiled SIMT kernel, head dim <= kLOCAL_TILED_MAX_DIM
    kTENSOR_CORE = 2, //!< wmma kernel (float16/bfloat16); kTILED where the device lacks the tensor-core type
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
    size_t wsCtxPartial{0};   //!< float [B][G][chunks][d][d]
    size_t wsMaxPartial{0};   //!< float [B][G][chunks][d]
    size_t wsSumPartial{0};   //!< float [B][G][chunks][d]
    size_t wsCtx{0};          //!< float [B][G][d][d], normalized
    size_t workspaceBytes{0};

    // Kernel choices.
    LocalKernel localKernel{LocalKernel::kGENERIC};
    int32_t localTiledDim{0}; //!< head dim padded to 16, 32 or 64 (kTILED and kTENSOR_CORE)
    bool globalSharedCtx{false};
};

//! Validates params and fills plan. Returns kINVALID_ARGUMENT with a message in
//! msg (when given) for params that break the contract. Never throws.
Status makePlan(AttentionParams const& params, KernelPath path, LaunchPlan& plan, char* msg, size_t msgLen) noexcept;

//! Bytes of dynamic shared memory the global output kernel needs when it stages the context.
int64_t globalOutSharedBytes(int64_t headDim) noexcept;

} // namespace detail
} // namespace elfatt
