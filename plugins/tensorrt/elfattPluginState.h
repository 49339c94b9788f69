/*
 * elfatt-deploy: the device memory one ElfattAttention plugin instance keeps across enqueues.
 *
 * Kernels v2 count the finished partials of each group of each (batch item, global head)'s merge tree
 * in 32-bit counters (and keep the groups' channel maxima in 32-bit keys beside them). In the
 * workspace TensorRT lends for one enqueue those must be zeroed with a cudaMemsetAsync every time
 * (one stream operation per layer and enqueue, ~2-4 us at batch 1); kept by the plugin instance
 * instead, they are zeroed once and the kernels leave them zeroed (elfatt::enqueueWithState).
 *
 * Safe because one plugin instance serves one execution context (attachToContext clones it, and a
 * clone starts without memory of its own), and TensorRT never runs one context's enqueues at the same
 * time. Every case this class cannot serve (no device, another device, a stream being captured into
 * a CUDA graph before the memory exists, allocation failure) returns nullptr: the enqueue then takes
 * the workspace and the memset, which is always correct.
 *
 * Memory handed out is never freed before the instance is destroyed: a CUDA graph captured from an
 * enqueue keeps the counters' address, so when a larger batch needs more counters the smaller buffer
 * is retired (kept, still zero) rather than freed, and the destructor frees all of them.
 */
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace elfatt
{
namespace trt
{

//! The CUDA runtime calls PersistentCounters makes (replaced by fakes in the tests).
struct CounterCudaApi
{
    cudaError_t (*getDevice)(int* device);
    cudaError_t (*setDevice)(int device);
    cudaError_t (*malloc)(void** ptr, size_t bytes);
    cudaError_t (*free)(void* ptr);
    cudaError_t (*memsetAsync)(void* ptr, int value, size_t bytes, cudaStream_t stream);
    cudaError_t (*streamIsCapturing)(cudaStream_t stream, cudaStreamCaptureStatus* status);
    cudaError_t (*exchangeCaptureMode)(cudaStreamCaptureMode* mode);
    cudaError_t (*getLastError)();
};

//! The CUDA runtime's functions.
CounterCudaApi const& cudaRuntimeCounterApi() noexcept;

//! The API that PersistentCounters made from now on use: api, or the CUDA runtime's for nullptr (the
//! default). For the header-only test driver, which runs the plugin without a GPU.
void setDefaultCounterCudaApi(CounterCudaApi const* api) noexcept;
CounterCudaApi const& defaultCounterCudaApi() noexcept;

class PersistentCounters
{
public:
    //! Allocations are at least this large (1024 words: e.g. the counters and keys of 3 (b, head) merge
    //! trees of 16 chunks at d = 64), so that a growing batch rarely reallocates.
    static constexpr size_t kMIN_BYTES = 4096;

    PersistentCounters() noexcept;
    explicit PersistentCounters(CounterCudaApi const& api) noexcept;
    //! A copy (the plugin's clone) owns no memory yet: two instances never share counters.
    PersistentCounters(PersistentCounters const& other) noexcept;
    PersistentCounters& operator=(PersistentCounters const&) = delete;
    ~PersistentCounters() noexcept;

    //! Counters of at least `bytes` bytes on the current device, zero when work that follows in
    //! `stream` starts (a zeroing cudaMemsetAsync is enqueued on stream after an allocation or
    //! markDirty), or nullptr: take the per-enqueue memset. Never throws, never synchronizes the
    //! device, frees nothing (a smaller buffer is retired, see above). The allocation runs in the
    //! relaxed capture mode, so that another thread's global-mode graph capture is not invalidated.
    void* acquire(size_t bytes, cudaStream_t stream) noexcept;

    //! After an enqueue that failed: the counters may hold counts; zero them before their next use.
    void markDirty() noexcept;

    size_t capacity() const noexcept
    {
        return mBytes;
    }
    //! Buffers kept for graphs that may still use them (freed by the destructor).
    size_t retired() const noexcept
    {
        return mRetired.size();
    }

private:
    CounterCudaApi const* mApi;
    void* mPtr{nullptr};
    size_t mBytes{0};
    int mDevice{-1};
    bool mDirty{false};
    std::vector<void*> mRetired;
};

} // namespace trt
} // namespace elfatt
