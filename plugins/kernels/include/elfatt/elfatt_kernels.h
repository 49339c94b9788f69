/*
 * elfatt-deploy: CUDA kernels for the ElfattAttention op (contract v1, docs/op-spec.md).
 *
 * Plain CUDA C++ with no TensorRT or PyTorch dependency. The TensorRT plugin
 * (plugins/tensorrt) and the PyTorch extension (plugins/torch) are thin
 * wrappers over the functions below.
 *
 * Layouts (all row-major, contiguous):
 *   qkv          [B, H, W, 3C]   channels [q | k | v], each C wide
 *   lepeWeight   [C, 1, 3, 3]    optional (nullptr when hasLepe is false)
 *   lepeBias     [C]             optional
 *   out          [B, H, W, C]
 * qkv and out have the data type params.dtype; the LePE weight and bias have it
 * too, or are float32 when params.lepeFloat32 is set. Arithmetic that reduces
 * accumulates in float32.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace elfatt
{

//! Element type of every tensor of one launch.
enum class DataType : int32_t
{
    kFLOAT = 0,
    kHALF = 1,
    kBF16 = 2,
};

//! Everything a launch depends on. Plain old data: the TensorRT plugin
//! serializes its fields one by one, never this struct's bytes.
struct AttentionParams
{
    int64_t batch{0};    //!< B >= 0
    int64_t height{0};   //!< H >= 0 (token rows)
    int64_t width{0};    //!< W >= 0 (token columns)
    int64_t channels{0}; //!< C, the output channel count; qkv has 3C
    int32_t globalHeads{0};
    int32_t localHeads{0};
    int32_t windowH{0}; //!< 0 = the whole height
    int32_t windowW{0}; //!< 0 = the whole width
    float scale{0.F};   //!< 0 = 1/sqrt(d)
    DataType dtype{DataType::kFLOAT};
    bool hasLepe{false};
    //! The LePE weight and bias are float32 whatever dtype is (fp32 parameters with fp16/bf16
    //! activations, as under PyTorch autocast); false: they have dtype. Ignored without LePE.
    bool lepeFloat32{false};
};

//! Result of validateParams.
enum class Status : int32_t
{
    kSUCCESS = 0,
    kINVALID_ARGUMENT = 1,
};

//! Checks every rule of the contract that depends on the params alone.
//! On failure writes a NUL-terminated message naming the field and the rule
//! into msg (when msg != nullptr and msgLen > 0) and returns kINVALID_ARGUMENT.
//! Host-only, never throws.
Status validateParams(AttentionParams const& params, char* msg, size_t msgLen) noexcept;

//! Bytes of device workspace enqueue needs for these params (0 allowed).
//! Host-only, never throws; returns 0 for params that fail validateParams.
size_t workspaceSize(AttentionParams const& params) noexcept;

//! Launches the op on stream. Returns cudaErrorInvalidValue for params that
//! fail validateParams or null pointers that are required, cudaSuccess for an
//! empty problem (B, H or W = 0), else the first launch error. Asynchronous:
//! never synchronizes the stream. workspace must hold workspaceSize(params)
//! bytes, aligned to 256 bytes.
cudaError_t enqueue(AttentionParams const& params, void const* qkv, void const* lepeWeight, void const* lepeBias,
    void* out, void* workspace, cudaStream_t stream) noexcept;

//! Bytes of caller-owned persistent state that enqueueWithState can use for these params: per
//! (batch item, global head) and group of its merge tree one 32-bit counter and head-dim 32-bit max
//! keys (4 x B x G x groups x (1 + d); groups of the tree over min(64, ceil(H W / 256)) chunks, the most
//! kernels v2 run for the shape: 5 for 16), which kernels v2 otherwise keep in
//! the workspace and zero with a cudaMemsetAsync at every enqueue. 0 where kernels v2 do not run (float32, head
//! dims other than 32 and 64, a grid whose indices exceed int32), without global heads, for an empty
//! problem and for params that fail validateParams. Host-only, never throws.
size_t stateSize(AttentionParams const& params) noexcept;

//! enqueue() with caller-owned persistent state (stateSize(params) bytes, 4-byte aligned), which
//! saves kernels v2 the cudaMemsetAsync of their counters and keys (one stream operation per enqueue).
//! The caller zeroes the state once before its first use (cudaMemset / cudaMemsetAsync); every
//! enqueueWithState whose kernels complete leaves it zeroed again, so the next one uses it as it is.
//! Rules: enqueues that share one state must not overlap in time (issue them in one stream, or
//! order them with events), as one TensorRT plugin instance in one execution context does; after
//! an enqueue that returned an error, zero the state again before its next use. state == nullptr or
//! stateBytes < stateSize(params): exactly enqueue() (counters in the workspace, memset). A state
//! that is not 4-byte aligned: cudaErrorInvalidValue. Same other rules and return values as enqueue().
cudaError_t enqueueWithState(AttentionParams const& params, void const* qkv, void const* lepeWeight,
    void const* lepeBias, void* out, void* workspace, void* state, size_t stateBytes, cudaStream_t stream) noexcept;

} // namespace elfatt
