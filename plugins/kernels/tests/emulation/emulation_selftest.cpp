/*
 * elfatt-deploy kernels: self-test of the host emulation (test builds only).
 *
 *   elfatt_emulation_selftest NAME
 *
 * Small CUDA-style kernels, some correct (exit 0 when the emulation computes what a GPU
 * would), some deliberately broken (the emulation, AddressSanitizer or UBSan must stop
 * them with a message): tests/test_kernels_emulated.py runs each and checks the outcome,
 * which shows that the harness can fail.
 */
#include "elfatt_host_emulation.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{

namespace wmma = nvcuda::wmma;

int gFailures = 0;

void expect(bool ok, char const* what)
{
    if (!ok)
    {
        std::fprintf(stderr, "selftest: FAILED: %s\n", what);
        ++gFailures;
    }
}

void expectLaunch(cudaError_t got, cudaError_t want, char const* what)
{
    if (got != want)
    {
        std::fprintf(stderr, "selftest: FAILED: %s: launch returned %s, expected %s\n", what, cudaGetErrorName(got),
            cudaGetErrorName(want));
        ++gFailures;
    }
}

// ----- correct kernels ---------------------------------------------------------------------------

//! Block-stride loop: every item is visited exactly once whatever the emulated grid.
__global__ void countItems(int32_t* visits, int64_t items, uint32_t* gridSeen)
{
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x)
    {
        if (threadIdx.x == 0)
        {
            visits[item] += 1;
        }
    }
    if (threadIdx.x == 0 && blockIdx.x == 0)
    {
        *gridSeen = gridDim.x;
    }
}

//! Every shuffle flavour against its definition; out[kind * n + tid].
__global__ void shuffles(float* out)
{
    unsigned const tid = threadIdx.x;
    unsigned const n = blockDim.x;
    float const mine = static_cast<float>(tid);
    out[0 * n + tid] = __shfl_xor_sync(0xffffffffU, mine, 5);
    out[1 * n + tid] = __shfl_down_sync(0xffffffffU, mine, 3);
    out[2 * n + tid] = __shfl_up_sync(0xffffffffU, mine, 2, 8);
    out[3 * n + tid] = __shfl_sync(0xffffffffU, mine, 7, 16);
    float sum = mine;
    for (int offset = 16; offset > 0; offset /= 2)
    {
        sum += __shfl_xor_sync(0xffffffffU, sum, offset);
    }
    out[4 * n + tid] = sum;
}

//! Block-wide exchange through static shared memory with a barrier: correct.
__global__ void exchange(float* out)
{
    __shared__ float tile[128];
    tile[threadIdx.x] = static_cast<float>(threadIdx.x) * 2.F;
    __syncthreads();
    out[threadIdx.x] = tile[(threadIdx.x + 1) % blockDim.x];
}

//! D = A B + C on one warp with wmma, A row-major and B col-major (a transposed load).
template <typename T>
__global__ void wmmaProduct(T const* a, T const* bT, float const* c, float* d)
{
    __shared__ __align__(32) float tile[16 * 16];
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, bT, 16);
    wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(tile, acc, 16, wmma::mem_col_major);
    __syncwarp();
    for (int e = static_cast<int>(threadIdx.x); e < 256; e += 32)
    {
        d[(e % 16) * 16 + e / 16] = tile[e]; // back to row-major
    }
}

// ----- broken kernels ----------------------------------------------------------------------------

__global__ void divergentSyncthreads(float* out)
{
    if (threadIdx.x < 32)
    {
        __syncthreads();
    }
    else
    {
        __syncthreads();
    }
    out[threadIdx.x] = 1.F;
}

__global__ void lostLane(float* out)
{
    if (threadIdx.x == 0)
    {
        return; // lane 0 never reaches the warp barrier below
    }
    __syncwarp();
    out[threadIdx.x] = 1.F;
}

__global__ void staticSharedOverflow(float* out, int shift)
{
    __shared__ float tile[64];
    tile[threadIdx.x] = 1.F;
    __syncthreads();
    out[threadIdx.x] = tile[static_cast<int>(threadIdx.x) + shift]; // shift 1: tile[64] for the last thread
}

__global__ void globalOverflow(float* out)
{
    out[threadIdx.x + 1] = 1.F; // one past the end for the last thread
}

__global__ void readUnwrittenShared(float* out, float* dynamicOut)
{
    __shared__ float tile[64];
    float* dyn = ::elfatt::emulation::dynamicShared<float>();
    if (threadIdx.x < 32)
    {
        tile[threadIdx.x] = 1.F; // the upper half stays unwritten
        dyn[threadIdx.x] = 1.F;
    }
    __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x];
    dynamicOut[threadIdx.x] = dyn[threadIdx.x];
}

__global__ void wmmaMisaligned(__half const* a)
{
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, a + 8, 16); // 16 bytes past a 256-byte aligned base
}

__global__ void wmmaBadLdm(__half const* a)
{
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, a, 20); // not a multiple of 8 elements
}

//! Warp 1 fills the upper half of a shared tile that warp 0 reads: needs a __syncthreads between.
__global__ void crossWarp(float* out, int withBarrier)
{
    __shared__ float tile[64];
    if (threadIdx.x >= 32)
    {
        tile[threadIdx.x] = static_cast<float>(threadIdx.x);
    }
    if (withBarrier != 0)
    {
        __syncthreads();
    }
    if (threadIdx.x < 32)
    {
        out[threadIdx.x] = tile[threadIdx.x + 32];
    }
}

__global__ void earlyExit(float* out)
{
    if (threadIdx.x >= 32)
    {
        return; // warp 1 leaves; warp 0 waits at a barrier warp 1 never reaches
    }
    __syncthreads();
    out[threadIdx.x] = 1.F;
}

__global__ void noop(float* out)
{
    (void) out;
}

template <typename T>
T* alignedArray(size_t count)
{
    return static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t{256}));
}

template <typename T>
void freeArray(T* ptr)
{
    ::operator delete(ptr, std::align_val_t{256});
}

template <typename T>
T toT(float x);
template <>
__half toT<__half>(float x)
{
    return __float2half_rn(x);
}
template <>
__nv_bfloat16 toT<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}
float toF(__half x)
{
    return __half2float(x);
}
float toF(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
void checkWmma(char const* what)
{
    T* a = alignedArray<T>(256);
    T* bT = alignedArray<T>(256);
    float* c = alignedArray<float>(256);
    float* d = alignedArray<float>(256);
    for (int i = 0; i < 256; ++i)
    {
        a[i] = toT<T>(std::sin(0.37F * static_cast<float>(i)));
        bT[i] = toT<T>(std::cos(0.11F * static_cast<float>(i)));
        c[i] = 0.25F * static_cast<float>(i % 7);
    }
    expectLaunch(::elfatt::emulation::launch(wmmaProduct<T>, 2, 32, 0, a, bT, c, d), cudaSuccess, what);
    double worst = 0.0;
    for (int i = 0; i < 16; ++i)
    {
        for (int j = 0; j < 16; ++j)
        {
            double ref = c[i * 16 + j];
            for (int k = 0; k < 16; ++k)
            {
                ref += static_cast<double>(toF(a[i * 16 + k])) * static_cast<double>(toF(bT[j * 16 + k]));
            }
            worst = std::fmax(worst, std::fabs(ref - d[i * 16 + j]));
        }
    }
    expect(worst < 1e-5, what);
    freeArray(a);
    freeArray(bT);
    freeArray(c);
    freeArray(d);
}

int runPositive()
{
    // Block-stride coverage at several grid sizes (the cap comes from ELFATT_EMULATION_MAX_BLOCKS).
    for (int64_t items : {1, 2, 3, 7, 40})
    {
        std::vector<int32_t> visits(static_cast<size_t>(items), 0);
        uint32_t gridSeen = 0;
        expectLaunch(::elfatt::emulation::launch(countItems, static_cast<unsigned>(items), 64, 0, visits.data(), items,
                         &gridSeen),
            cudaSuccess, "countItems");
        for (int32_t v : visits)
        {
            expect(v == 1, "block-stride loop visits every item once");
        }
        char const* cap = std::getenv("ELFATT_EMULATION_MAX_BLOCKS");
        int64_t const limit = cap != nullptr ? std::atoll(cap) : 3;
        expect(gridSeen == static_cast<uint32_t>(items < limit ? items : limit), "gridDim.x = min(grid, cap)");
        std::printf("items=%lld gridDim=%u\n", static_cast<long long>(items), gridSeen);
    }

    // Shuffles on two warps.
    unsigned const n = 64;
    std::vector<float> out(5 * n, -1.F);
    expectLaunch(::elfatt::emulation::launch(shuffles, 1, n, 0, out.data()), cudaSuccess, "shuffles");
    for (unsigned t = 0; t < n; ++t)
    {
        unsigned const lane = t % 32;
        unsigned const warp0 = t - lane;
        expect(out[0 * n + t] == static_cast<float>(warp0 + (lane ^ 5U)), "__shfl_xor_sync");
        expect(out[1 * n + t] == static_cast<float>(lane + 3 < 32 ? t + 3 : t), "__shfl_down_sync");
        expect(out[2 * n + t] == static_cast<float>(lane % 8 >= 2 ? t - 2 : t), "__shfl_up_sync width 8");
        expect(out[3 * n + t] == static_cast<float>(warp0 + (lane / 16) * 16 + 7), "__shfl_sync width 16");
        expect(out[4 * n + t] == static_cast<float>(32 * warp0 + 496), "butterfly sum");
    }

    std::vector<float> ex(128);
    expectLaunch(::elfatt::emulation::launch(exchange, 2, 128, 0, ex.data()), cudaSuccess, "exchange");
    for (unsigned t = 0; t < 128; ++t)
    {
        expect(ex[t] == 2.F * static_cast<float>((t + 1) % 128), "shared exchange");
    }

    checkWmma<__half>("wmma float16");
    checkWmma<__nv_bfloat16>("wmma bfloat16");

    // Launch configuration checks.
    float dummy[64] = {};
    expectLaunch(::elfatt::emulation::launch(noop, 1, 48, 0, dummy), cudaErrorInvalidConfiguration, "block of 48");
    expectLaunch(::elfatt::emulation::launch(noop, 0, 32, 0, dummy), cudaErrorInvalidConfiguration, "grid of 0");
    expectLaunch(::elfatt::emulation::launch(noop, 1, 2048, 0, dummy), cudaErrorInvalidConfiguration, "block of 2048");
    expectLaunch(::elfatt::emulation::launch(noop, 1, 32, 64 * 1024, dummy), cudaErrorInvalidValue,
        "64 KiB dynamic shared memory without opting in");
    expectLaunch(cudaGetLastError(), cudaErrorInvalidValue, "cudaGetLastError after a failed launch");
    expectLaunch(cudaGetLastError(), cudaSuccess, "cudaGetLastError clears the error");
    expectLaunch(cudaFuncSetAttribute(noop, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess,
        "opt in to 64 KiB");
    expectLaunch(::elfatt::emulation::launch(noop, 1, 32, 64 * 1024, dummy), cudaSuccess,
        "64 KiB dynamic shared memory after opting in");

    int major = 0;
    int minor = 0;
    expectLaunch(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess, "major");
    expectLaunch(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0), cudaSuccess, "minor");
    std::printf("sm=%d%d\n", major, minor);
    std::printf("%s\n", gFailures == 0 ? "selftest: all passed" : "selftest: FAILURES");
    return gFailures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr,
            "usage: elfatt_emulation_selftest positive|divergent|lost-lane|early-exit|shared-overflow|global-overflow|"
            "unwritten-shared|cross-warp|cross-warp-barrier|wmma-misaligned|wmma-ldm\n");
        return 2;
    }
    std::string const name = argv[1];
    if (name == "positive")
    {
        return runPositive();
    }
    std::vector<float> buffer(128, 0.F);
    if (name == "divergent")
    {
        ::elfatt::emulation::launch(divergentSyncthreads, 1, 64, 0, buffer.data());
    }
    else if (name == "lost-lane")
    {
        ::elfatt::emulation::launch(lostLane, 1, 32, 0, buffer.data());
    }
    else if (name == "shared-overflow")
    {
        ::elfatt::emulation::launch(staticSharedOverflow, 1, 64, 0, buffer.data(), argc > 0 ? 1 : 0);
    }
    else if (name == "global-overflow")
    {
        float* exact = new float[64];
        ::elfatt::emulation::launch(globalOverflow, 1, 64, 0, exact);
        delete[] exact;
    }
    else if (name == "early-exit")
    {
        ::elfatt::emulation::launch(earlyExit, 1, 64, 0, buffer.data());
    }
    else if (name == "cross-warp" || name == "cross-warp-barrier")
    {
        ::elfatt::emulation::launch(crossWarp, 1, 64, 0, buffer.data(), name == "cross-warp" ? 0 : 1);
        int wrong = 0;
        for (int t = 0; t < 32; ++t)
        {
            wrong += buffer[static_cast<size_t>(t)] == static_cast<float>(t + 32) ? 0 : 1;
        }
        std::printf("wrong=%d\n", wrong);
        return 0;
    }
    else if (name == "unwritten-shared")
    {
        std::vector<float> dyn(64, 0.F);
        cudaError_t const status
            = ::elfatt::emulation::launch(readUnwrittenShared, 1, 64, 64 * sizeof(float), buffer.data(), dyn.data());
        int nanStatic = 0;
        int nanDynamic = 0;
        for (int t = 0; t < 64; ++t)
        {
            nanStatic += std::isnan(buffer[static_cast<size_t>(t)]) ? 1 : 0;
            nanDynamic += std::isnan(dyn[static_cast<size_t>(t)]) ? 1 : 0;
        }
        std::printf("status=%d nan static=%d dynamic=%d\n", static_cast<int>(status), nanStatic, nanDynamic);
        return 0;
    }
    else if (name == "wmma-misaligned" || name == "wmma-ldm")
    {
        __half* a = alignedArray<__half>(16 * 24);
        ::elfatt::emulation::launch(name == "wmma-ldm" ? wmmaBadLdm : wmmaMisaligned, 1, 32, 0, a);
        freeArray(a);
    }
    else
    {
        std::fprintf(stderr, "unknown self-test %s\n", name.c_str());
        return 2;
    }
    std::printf("selftest: %s was not caught\n", name.c_str());
    return 0;
}
