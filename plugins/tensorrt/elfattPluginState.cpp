/*
 * elfatt-deploy: the device memory one ElfattAttention plugin instance keeps across enqueues
 * (see elfattPluginState.h).
 */
#include "elfattPluginState.h"

namespace elfatt
{
namespace trt
{

CounterCudaApi const& cudaRuntimeCounterApi() noexcept
{
    static CounterCudaApi const kAPI{
        [](int* device) { return cudaGetDevice(device); },
        [](void** ptr, size_t bytes) { return cudaMalloc(ptr, bytes); },
        [](void* ptr) { return cudaFree(ptr); },
        [](void* ptr, int value, size_t bytes, cudaStream_t stream) { return cudaMemsetAsync(ptr, value, bytes, stream); },
        [](cudaStream_t stream, cudaStreamCaptureStatus* status) { return cudaStreamIsCapturing(stream, status); },
        []() { return cudaGetLastError(); },
    };
    return kAPI;
}

PersistentCounters::PersistentCounters(CounterCudaApi const& api) noexcept
    : mApi(&api)
{
}

PersistentCounters::PersistentCounters(PersistentCounters const& other) noexcept
    : mApi(other.mApi)
{
}

PersistentCounters::~PersistentCounters() noexcept
{
    release();
}

void PersistentCounters::release() noexcept
{
    if (mPtr != nullptr)
    {
        // At process exit the CUDA runtime may already be gone (cudaErrorCudartUnloading): nothing to do then.
        if (mApi->free(mPtr) != cudaSuccess)
        {
            static_cast<void>(mApi->getLastError());
        }
    }
    mPtr = nullptr;
    mBytes = 0;
    mDevice = -1;
    mDirty = false;
}

void PersistentCounters::markDirty() noexcept
{
    mDirty = mPtr != nullptr;
}

void* PersistentCounters::acquire(size_t bytes, cudaStream_t stream) noexcept
{
    if (bytes == 0)
    {
        return nullptr;
    }
    int device = -1;
    if (mApi->getDevice(&device) != cudaSuccess)
    {
        static_cast<void>(mApi->getLastError());
        return nullptr;
    }
    bool const fits = mPtr != nullptr && device == mDevice && mBytes >= bytes;
    if (fits && !mDirty)
    {
        return mPtr;
    }
    if (mPtr != nullptr && device != mDevice)
    {
        return nullptr; // the counters live on another device: leave them, take the memset
    }
    // Allocating or zeroing from here on: not while the stream is being captured into a CUDA graph
    // (a cudaMalloc there would invalidate the capture; the memset path is capturable).
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (mApi->streamIsCapturing(stream, &capture) != cudaSuccess)
    {
        static_cast<void>(mApi->getLastError());
        return nullptr;
    }
    if (capture != cudaStreamCaptureStatusNone)
    {
        return nullptr;
    }
    if (!fits)
    {
        release();
        size_t const size = bytes > kMIN_BYTES ? bytes : kMIN_BYTES;
        void* ptr = nullptr;
        if (mApi->malloc(&ptr, size) != cudaSuccess || ptr == nullptr)
        {
            static_cast<void>(mApi->getLastError()); // not sticky: leave no error for the next call to find
            return nullptr;
        }
        mPtr = ptr;
        mBytes = size;
        mDevice = device;
        mDirty = true;
    }
    if (mApi->memsetAsync(mPtr, 0, mBytes, stream) != cudaSuccess)
    {
        static_cast<void>(mApi->getLastError());
        return nullptr;
    }
    mDirty = false;
    return mPtr;
}

} // namespace trt
} // namespace elfatt
