/*
 * elfatt-deploy: the device memory one ElfattAttention plugin instance keeps across enqueues.
 *
 * Kernels v2 count the finished chunks of each (batch item, global head) in 32-bit counters. In the
 * workspace TensorRT lends for one enqueue those must be zeroed with a cudaMemsetAsync every time
 * (one stream operation per layer and enqueue, ~2-4 us at batch 1); kept by the plugin instance
 * instead, they are zeroed once and the kernels leave them zeroed (elfatt::enqueueWithState).
 *
 * Safe because one plugin instance serves one execution context (attachToContext clones it, and a
 * clone starts without memory of its own), and TensorRT never runs one context's enqueues at the same
 * time. Every case this class cannot serve (no device, another device, a stream being captured into
 * a CUDA graph before the memory exists, allocation failure) returns nullptr: the enqueue then takes
 * the workspace and the memset, which is always correct.
 */
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace elfatt
{
namespace trt
{

//! The CUDA runtime calls PersistentCounters makes (replaced by fakes in the tests).
struct CounterCudaApi
{
    cudaError_t (*getDevice)(int* device);
    cudaError_t (*malloc)(void** ptr, size_t bytes);
    cudaError_t (*free)(void* ptr);
    cudaError_t (*memsetAsync)(void* ptr, int value, size_t bytes, cudaStream_t stream);
    cudaError_t (*streamIsCapturing)(cudaStream_t stream, cudaStreamCaptureStatus* status);
    cudaError_t (*getLastError)();
};

//! The CUDA runtime's functions.
CounterCudaApi const& cudaRuntimeCounterApi() noexcept;

class PersistentCounters
{
public:
    //! Allocations are at least this large (1024 counters), so that a growing batch rarely reallocates.
    static constexpr size_t kMIN_BYTES = 4096;

    explicit PersistentCounters(CounterCudaApi const& api = cudaRuntimeCounterApi()) noexcept;
    //! A copy (the plugin's clone) owns no memory yet: two instances never share counters.
    PersistentCounters(PersistentCounters const& other) noexcept;
    PersistentCounters& operator=(PersistentCounters const&) = delete;
    ~PersistentCounters() noexcept;

    //! Counters of at least `bytes` bytes on the current device, zero when work that follows in
    //! `stream` starts (a zeroing cudaMemsetAsync is enqueued on stream after an allocation or
    //! markDirty), or nullptr: take the per-enqueue memset. Never throws, never synchronizes
    //! (except the implicit synchronization of cudaFree when a larger allocation replaces a smaller).
    void* acquire(size_t bytes, cudaStream_t stream) noexcept;

    //! After an enqueue that failed: the counters may hold counts; zero them before their next use.
    void markDirty() noexcept;

    size_t capacity() const noexcept
    {
        return mBytes;
    }

private:
    void release() noexcept;

    CounterCudaApi const* mApi;
    void* mPtr{nullptr};
    size_t mBytes{0};
    int mDevice{-1};
    bool mDirty{false};
};

} // namespace trt
} // namespace elfatt
