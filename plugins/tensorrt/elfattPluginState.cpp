/*
 * elfatt-deploy: the device memory one ElfattAttention plugin instance keeps across enqueues
 * (see elfattPluginState.h).
 */
#include "elfattPluginState.h"

#include <atomic>
#include <new>

namespace elfatt
{
namespace trt
{
namespace
{
std::atomic<CounterCudaApi const*> gDefaultApi{nullptr};
} // namespace

CounterCudaApi const& cudaRuntimeCounterApi() noexcept
{
    static CounterCudaApi const kAPI{
        [](int* device) { return cudaGetDevice(device); },
        [](int device) { return cudaSetDevice(device); },
        [](void** ptr, size_t bytes) { return cudaMalloc(ptr, bytes); },
        [](void* ptr) { return cudaFree(ptr); },
        [](void* ptr, int value, size_t bytes, cudaStream_t stream) { return cudaMemsetAsync(ptr, value, bytes, stream); },
        [](cudaStream_t stream, cudaStreamCaptureStatus* status) { return cudaStreamIsCapturing(stream, status); },
        [](cudaStreamCaptureMode* mode) { return cudaThreadExchangeStreamCaptureMode(mode); },
        []() { return cudaGetLastError(); },
    };
    return kAPI;
}

void setDefaultCounterCudaApi(CounterCudaApi const* api) noexcept
{
    gDefaultApi.store(api);
}

CounterCudaApi const& defaultCounterCudaApi() noexcept
{
    CounterCudaApi const* api = gDefaultApi.load();
    return api != nullptr ? *api : cudaRuntimeCounterApi();
}

PersistentCounters::PersistentCounters() noexcept
    : mApi(&defaultCounterCudaApi())
{
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
    if (mPtr == nullptr && mRetired.empty())
    {
        return;
    }
    // Free on the buffers' device; at process exit the CUDA runtime may already be gone
    // (cudaErrorCudartUnloading): nothing to do then.
    int current = -1;
    bool const switched = mApi->getDevice(&current) == cudaSuccess && current != mDevice
        && mApi->setDevice(mDevice) == cudaSuccess;
    // cudaFree in the relaxed capture mode, as cudaMalloc in acquire(): destroying a context while another
    // thread captures a graph in the global mode must not invalidate that capture.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    bool const relaxed = mApi->exchangeCaptureMode(&mode) == cudaSuccess;
    for (void* ptr : mRetired)
    {
        static_cast<void>(mApi->free(ptr));
    }
    if (mPtr != nullptr)
    {
        static_cast<void>(mApi->free(mPtr));
    }
    if (relaxed)
    {
        static_cast<void>(mApi->exchangeCaptureMode(&mode));
    }
    if (switched)
    {
        static_cast<void>(mApi->setDevice(current));
    }
    static_cast<void>(mApi->getLastError());
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
        // At least twice the old size, so that a batch that keeps growing retires O(log) buffers.
        size_t size = bytes > kMIN_BYTES ? bytes : kMIN_BYTES;
        size = size < 2 * mBytes ? 2 * mBytes : size;
        // A retired buffer is zero (its last enqueue completed or was zeroed) and may be in a captured
        // graph: keep it until the destructor. Reserve first, so that no allocation is left unowned.
        if (mPtr != nullptr)
        {
            try
            {
                mRetired.reserve(mRetired.size() + 1);
            }
            catch (std::bad_alloc const&)
            {
                return nullptr;
            }
        }
        cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
        bool const exchanged = mApi->exchangeCaptureMode(&mode) == cudaSuccess;
        void* ptr = nullptr;
        cudaError_t const status = mApi->malloc(&ptr, size);
        if (exchanged)
        {
            static_cast<void>(mApi->exchangeCaptureMode(&mode));
        }
        if (status != cudaSuccess || ptr == nullptr)
        {
            static_cast<void>(mApi->getLastError()); // not sticky: leave no error for the next call to find
            return nullptr;
        }
        if (mPtr != nullptr)
        {
            mRetired.push_back(mPtr); // capacity reserved above: cannot throw
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
