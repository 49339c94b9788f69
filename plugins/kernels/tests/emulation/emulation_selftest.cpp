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
#include "ptx.cuh"

#include <cfloat>
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
namespace ptx = ::elfatt::detail::ptx;

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

// ----- inline-PTX instructions (src/ptx.cuh) ------------------------------------------------------

//! Bits of element (r, c) of a row-major 16-bit matrix with row stride ld, as a uint32 half.
template <typename T>
uint32_t bitsAt(T const* m, int32_t ld, int32_t r, int32_t c)
{
    return ::elfatt::detail::toRaw(m[r * ld + c]);
}

//! D (16 x 8) = A (16 x 16, row-major) B (16 x 8, row-major [k][n]) + C with one mma.sync whose
//! registers every lane fills itself from the fragment layouts of the PTX ISA. plant = 1 puts
//! A[g + 8][2t..] where A[g][2t + 8..] belongs and back (a swapped row/column in one fragment).
template <typename T>
__global__ void mmaFromLayout(T const* a, T const* b, float const* c, float* d, int32_t plant)
{
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % 32;
    int32_t const g = lane >> 2;
    int32_t const t = lane & 3;
    uint32_t ra[4];
    ra[0] = bitsAt(a, 16, g, 2 * t) | (bitsAt(a, 16, g, 2 * t + 1) << 16);
    ra[1] = bitsAt(a, 16, g + 8, 2 * t) | (bitsAt(a, 16, g + 8, 2 * t + 1) << 16);
    ra[2] = bitsAt(a, 16, g, 2 * t + 8) | (bitsAt(a, 16, g, 2 * t + 9) << 16);
    ra[3] = bitsAt(a, 16, g + 8, 2 * t + 8) | (bitsAt(a, 16, g + 8, 2 * t + 9) << 16);
    if (plant != 0)
    {
        uint32_t const swap = ra[1];
        ra[1] = ra[2];
        ra[2] = swap;
    }
    uint32_t rb[2];
    rb[0] = bitsAt(b, 8, 2 * t, g) | (bitsAt(b, 8, 2 * t + 1, g) << 16);
    rb[1] = bitsAt(b, 8, 2 * t + 8, g) | (bitsAt(b, 8, 2 * t + 9, g) << 16);
    float rc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    float rd[4];
    ptx::mma16816<T>(rd, ra, rb, rc);
    d[g * 8 + 2 * t] = rd[0];
    d[g * 8 + 2 * t + 1] = rd[1];
    d[(g + 8) * 8 + 2 * t] = rd[2];
    d[(g + 8) * 8 + 2 * t + 1] = rd[3];
}

//! The same products with ldmatrix from shared memory, as the v2 kernels load them:
//! D1 (16 x 16) = A B (B row-major [k][n]: .trans) and D2 (16 x 16) = A K^T (K row-major [n][k]).
template <typename T>
__global__ void mmaFromLdmatrix(T const* a, T const* b, T const* k, float* d1, float* d2)
{
    constexpr int32_t kLD = 24; // 16 + 8 elements: 48-byte rows, conflict-free ldmatrix phases
    __shared__ __align__(16) T sA[16 * kLD];
    __shared__ __align__(16) T sB[16 * kLD];
    __shared__ __align__(16) T sK[16 * kLD];
    int32_t const lane = static_cast<int32_t>(threadIdx.x) % 32;
    for (int32_t e = lane; e < 256; e += 32)
    {
        sA[(e / 16) * kLD + e % 16] = a[e];
        sB[(e / 16) * kLD + e % 16] = b[e];
        sK[(e / 16) * kLD + e % 16] = k[e];
    }
    __syncwarp();
    uint32_t ra[4];
    ptx::ldmatrixX4(ra, sA + (lane % 16) * kLD + (lane / 16) * 8);
    uint32_t rb[4];   // {b0, b1} of n-tile 0, {b0, b1} of n-tile 1
    ptx::ldmatrixX4Trans(rb, sB + ((lane % 8) + 8 * ((lane / 8) % 2)) * kLD + 8 * (lane / 16));
    uint32_t rk[4];
    ptx::ldmatrixX4(rk, sK + ((lane % 8) + 8 * (lane / 16)) * kLD + 8 * ((lane / 8) % 2));
    int32_t const g = lane >> 2;
    int32_t const t = lane & 3;
    for (int32_t n = 0; n < 2; ++n)
    {
        float const zero[4] = {0.F, 0.F, 0.F, 0.F};
        float r1[4];
        float r2[4];
        uint32_t const b1[2] = {rb[2 * n], rb[2 * n + 1]};
        uint32_t const b2[2] = {rk[2 * n], rk[2 * n + 1]};
        ptx::mma16816<T>(r1, ra, b1, zero);
        ptx::mma16816<T>(r2, ra, b2, zero);
        for (int32_t e = 0; e < 4; ++e)
        {
            int32_t const row = g + (e >= 2 ? 8 : 0);
            int32_t const col = 8 * n + 2 * t + (e & 1);
            d1[row * 16 + col] = r1[e];
            d2[row * 16 + col] = r2[e];
        }
    }
}

//! cp.async semantics on two warps. Lanes 32..47 (warp 1) copy 16 chunks of 16 bytes in two
//! commit groups (group 0: data; group 1: src-size 0, i.e. zeros) and record what they see
//! themselves: seen[0..] before any wait, seen[64..] after wait_group 1 (group 0 landed),
//! seen[128..] group 1 after wait_group 1 (still in flight), seen[192..] after wait_group 0.
//! Warp 0 then reads all 64 floats into seen[256..]. mode 0: correct (barrier after the wait);
//! mode 1, planted bug: the barrier comes before the wait; mode 2, planted bug: warp 1 reads its
//! data before any wait (seen[64..]).
__global__ void cpAsyncSemantics(float const* src, float* seen, int32_t mode)
{
    __shared__ __align__(16) float data[64];
    __shared__ __align__(16) float zeros[64];
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    bool const copier = tid >= 32 && tid < 48;
    int32_t const chunk = tid - 32;
    if (copier)
    {
        ptx::cpAsync16(data + 4 * chunk, src + 4 * chunk, 16);
        ptx::cpAsyncCommit();
        ptx::cpAsync16(zeros + 4 * chunk, src + 4 * chunk, 0);
        ptx::cpAsyncCommit();
        seen[0 * 64 + chunk] = data[4 * chunk];
        if (mode == 2)
        {
            seen[1 * 64 + chunk] = data[4 * chunk + 1]; // planted: used before its wait
        }
    }
    if (mode == 1)
    {
        __syncthreads(); // planted: between the commit and the wait
    }
    if (copier)
    {
        if (mode != 2)
        {
            ptx::cpAsyncWait<1>();
            seen[1 * 64 + chunk] = data[4 * chunk + 1];
            seen[2 * 64 + chunk] = zeros[4 * chunk];
        }
        ptx::cpAsyncWait<0>();
        seen[3 * 64 + chunk] = zeros[4 * chunk + 2];
    }
    if (mode != 1)
    {
        __syncthreads(); // after every thread's wait: the copies are visible to the whole block
    }
    if (tid < 32)
    {
        seen[4 * 64 + tid] = data[tid];
        seen[4 * 64 + 32 + tid] = data[tid + 32];
    }
}

//! Copies issued and never waited for.
__global__ void cpAsyncPending(float const* src)
{
    __shared__ __align__(16) float data[64];
    ptx::cpAsync16(data + 4 * (threadIdx.x % 16), src, 16);
    ptx::cpAsyncCommit();
}

__global__ void ldmatrixMisaligned()
{
    __shared__ __align__(16) __half tile[16 * 24];
    uint32_t r[4];
    ptx::ldmatrixX4(r, tile + (threadIdx.x % 16) * 24 + 4); // 8 bytes into a row
}

__global__ void ldmatrixGlobal(__half const* global)
{
    uint32_t r[4];
    ptx::ldmatrixX4(r, global + (threadIdx.x % 16) * 24);
}

//! Half the warp at ldmatrix, the other half at mma.sync.
__global__ void divergentWarpInstruction()
{
    __shared__ __align__(16) __half tile[16 * 24];
    for (int32_t e = static_cast<int32_t>(threadIdx.x); e < 16 * 24; e += 32)
    {
        tile[e] = __float2half_rn(1.F);
    }
    __syncwarp();
    uint32_t r[4] = {0U, 0U, 0U, 0U};
    if (threadIdx.x < 16)
    {
        ptx::ldmatrixX4(r, tile + (threadIdx.x % 16) * 24);
    }
    else
    {
        float d[4];
        float const c[4] = {0.F, 0.F, 0.F, 0.F};
        uint32_t const b[2] = {0U, 0U};
        ptx::mma16816<__half>(d, r, b, c);
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

//! Random A (16 x 16), B (16 x 8) and C: the number of D elements mmaFromLayout gets wrong
//! (beyond 1e-5 of the float64 product); plant as in mmaFromLayout.
template <typename T>
int32_t mmaLayoutMismatches(int32_t plant, double* worstOut)
{
    T* a = alignedArray<T>(256);
    T* b = alignedArray<T>(128);
    float* c = alignedArray<float>(128);
    float* d = alignedArray<float>(128);
    for (int i = 0; i < 256; ++i)
    {
        a[i] = toT<T>(std::sin(0.77F * static_cast<float>(i) + 0.3F));
    }
    for (int i = 0; i < 128; ++i)
    {
        b[i] = toT<T>(std::cos(0.53F * static_cast<float>(i)));
        c[i] = 0.125F * static_cast<float>(i % 5) - 0.25F;
    }
    expectLaunch(::elfatt::emulation::launch(mmaFromLayout<T>, 1, 32, 0, a, b, c, d, plant), cudaSuccess,
        "mmaFromLayout");
    int32_t wrong = 0;
    double worst = 0.0;
    for (int i = 0; i < 16; ++i)
    {
        for (int j = 0; j < 8; ++j)
        {
            double ref = c[i * 8 + j];
            for (int k = 0; k < 16; ++k)
            {
                ref += static_cast<double>(toF(a[i * 16 + k])) * static_cast<double>(toF(b[k * 8 + j]));
            }
            double const err = std::fabs(ref - d[i * 8 + j]);
            worst = std::fmax(worst, err);
            wrong += err > 1e-5 ? 1 : 0;
        }
    }
    *worstOut = worst;
    freeArray(a);
    freeArray(b);
    freeArray(c);
    freeArray(d);
    return wrong;
}

template <typename T>
void checkPtxMma(char const* what)
{
    double worst = 0.0;
    int32_t const wrong = mmaLayoutMismatches<T>(0, &worst);
    expect(wrong == 0, what);
    std::printf("%s: fragment layout worst error %.3g\n", what, worst);

    T* a = alignedArray<T>(256);
    T* b = alignedArray<T>(256);
    T* k = alignedArray<T>(256);
    float* d1 = alignedArray<float>(256);
    float* d2 = alignedArray<float>(256);
    for (int i = 0; i < 256; ++i)
    {
        a[i] = toT<T>(std::sin(0.29F * static_cast<float>(i)));
        b[i] = toT<T>(std::cos(0.41F * static_cast<float>(i) + 1.F));
        k[i] = toT<T>(std::sin(0.17F * static_cast<float>(i) - 2.F));
    }
    expectLaunch(::elfatt::emulation::launch(mmaFromLdmatrix<T>, 1, 32, 0, a, b, k, d1, d2), cudaSuccess, what);
    double worst1 = 0.0;
    double worst2 = 0.0;
    for (int i = 0; i < 16; ++i)
    {
        for (int j = 0; j < 16; ++j)
        {
            double r1 = 0.0;
            double r2 = 0.0;
            for (int q = 0; q < 16; ++q)
            {
                r1 += static_cast<double>(toF(a[i * 16 + q])) * static_cast<double>(toF(b[q * 16 + j]));
                r2 += static_cast<double>(toF(a[i * 16 + q])) * static_cast<double>(toF(k[j * 16 + q]));
            }
            worst1 = std::fmax(worst1, std::fabs(r1 - d1[i * 16 + j]));
            worst2 = std::fmax(worst2, std::fabs(r2 - d2[i * 16 + j]));
        }
    }
    expect(worst1 < 1e-5, "ldmatrix.x4.trans B fragments");
    expect(worst2 < 1e-5, "ldmatrix.x4 K^T fragments");
    std::printf("%s: ldmatrix products worst error %.3g %.3g\n", what, worst1, worst2);
    freeArray(a);
    freeArray(b);
    freeArray(k);
    freeArray(d1);
    freeArray(d2);
}

//! Runs cpAsyncSemantics in mode; seen has 320 floats (NaN where a kernel did not write).
void runCpAsync(int32_t mode, std::vector<float>& src, std::vector<float>& seen)
{
    float* gsrc = alignedArray<float>(64);
    float* gseen = alignedArray<float>(320);
    for (int i = 0; i < 64; ++i)
    {
        gsrc[i] = 1.F + static_cast<float>(i);
    }
    std::memset(gseen, 0xFF, 320 * sizeof(float));
    expectLaunch(::elfatt::emulation::launch(cpAsyncSemantics, 1, 64, 0, gsrc, gseen, mode), cudaSuccess,
        "cpAsyncSemantics");
    src.assign(gsrc, gsrc + 64);
    seen.assign(gseen, gseen + 320);
    freeArray(gsrc);
    freeArray(gseen);
}

//! ex2.approx.ftz.f32 as ptx::exp2Approx models it: exp2f for normal arguments and results, a
//! subnormal argument read as 0, a result below the smallest normal float flushed to +0.
void checkExp2Approx()
{
    namespace ptx = ::elfatt::detail::ptx;
    for (float const x : {-125.5F, -20.25F, -1.F, -0.F, 0.F, 0.375F, 3.F, 127.F})
    {
        expect(ptx::exp2Approx(x) == exp2f(x), "ex2.approx.ftz: exp2f for a normal result");
    }
    expect(ptx::exp2Approx(-126.F) == FLT_MIN, "ex2.approx.ftz: 2^-126 is the smallest normal float");
    expect(ptx::exp2Approx(-126.5F) == 0.F && !std::signbit(ptx::exp2Approx(-126.5F)),
        "ex2.approx.ftz: a subnormal result is +0 (exp2f keeps it)");
    expect(exp2f(-126.5F) > 0.F, "the host exp2f keeps subnormal results (what the flush differs from)");
    expect(ptx::exp2Approx(-INFINITY) == 0.F, "ex2.approx.ftz: 2^-inf = +0");
    expect(ptx::exp2Approx(INFINITY) == INFINITY, "ex2.approx.ftz: 2^inf = inf");
    expect(std::isnan(ptx::exp2Approx(NAN)), "ex2.approx.ftz: NaN stays NaN");
    expect(ptx::exp2Approx(-1.0e-40F) == 1.F && ptx::exp2Approx(1.0e-40F) == 1.F,
        "ex2.approx.ftz: a subnormal argument counts as 0");
}

void checkCpAsync()
{
    std::vector<float> src;
    std::vector<float> seen;
    runCpAsync(0, src, seen);
    int32_t ok = 0;
    for (int i = 0; i < 16; ++i)
    {
        ok += std::isnan(seen[static_cast<size_t>(i)]) ? 1 : 0;                                   // before any wait
        ok += seen[static_cast<size_t>(64 + i)] == src[static_cast<size_t>(4 * i + 1)] ? 1 : 0;  // group 0 landed
        ok += std::isnan(seen[static_cast<size_t>(128 + i)]) ? 1 : 0;                           // group 1 in flight
        ok += seen[static_cast<size_t>(192 + i)] == 0.F ? 1 : 0;                                 // zero fill
    }
    int32_t crossWarp = 0;
    for (int i = 0; i < 64; ++i)
    {
        crossWarp += seen[static_cast<size_t>(256 + i)] == src[static_cast<size_t>(i)] ? 1 : 0;
    }
    expect(ok == 64, "cp.async lands at its wait_group, not before; src-size 0 writes zeros");
    expect(crossWarp == 64, "cp.async data seen by another warp after wait_group + __syncthreads");
    std::printf("cp.async: %d of 64 own-lane checks, %d of 64 cross-warp reads right\n", ok, crossWarp);
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
    checkPtxMma<__half>("mma.sync m16n8k16 float16");
    checkPtxMma<__nv_bfloat16>("mma.sync m16n8k16 bfloat16");
    checkCpAsync();
    checkExp2Approx();

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
            "unwritten-shared|cross-warp|cross-warp-barrier|wmma-misaligned|wmma-ldm|mma-swapped-fragment|"
            "cp-async-no-wait|cp-async-barrier-before-wait|cp-async-pending|ldmatrix-misaligned|ldmatrix-global|"
            "warp-divergent\n");
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
    else if (name == "mma-swapped-fragment")
    {
        double worst = 0.0;
        int32_t const wrong = mmaLayoutMismatches<__half>(1, &worst);
        if (wrong > 0)
        {
            std::fprintf(stderr, "selftest: planted bug caught: %d of 128 elements of D = A B + C differ from the "
                                 "float64 product (worst %.3g) with a[1] and a[2] swapped\n",
                wrong, worst);
            return 1;
        }
    }
    else if (name == "cp-async-no-wait" || name == "cp-async-barrier-before-wait")
    {
        bool const noWait = name == "cp-async-no-wait";
        std::vector<float> src;
        std::vector<float> seen;
        runCpAsync(noWait ? 2 : 1, src, seen);
        int32_t nan = 0;
        for (int i = 0; i < (noWait ? 16 : 64); ++i)
        {
            nan += std::isnan(seen[static_cast<size_t>((noWait ? 64 : 256) + i)]) ? 1 : 0;
        }
        if (nan > 0)
        {
            std::fprintf(stderr, "selftest: planted bug caught: %d values read %s are NaN\n", nan,
                noWait ? "before their cp.async.wait_group" : "by another warp after a barrier placed before the "
                                                              "cp.async.wait_group");
            return 1;
        }
    }
    else if (name == "cp-async-pending")
    {
        float* gsrc = alignedArray<float>(64);
        ::elfatt::emulation::launch(cpAsyncPending, 1, 32, 0, gsrc);
        freeArray(gsrc);
    }
    else if (name == "ldmatrix-misaligned")
    {
        ::elfatt::emulation::launch(ldmatrixMisaligned, 1, 32, 0);
    }
    else if (name == "ldmatrix-global")
    {
        __half* global = alignedArray<__half>(16 * 24);
        ::elfatt::emulation::launch(ldmatrixGlobal, 1, 32, 0, static_cast<__half const*>(global));
        freeArray(global);
    }
    else if (name == "warp-divergent")
    {
        ::elfatt::emulation::launch(divergentWarpInstruction, 1, 32, 0);
    }
    else
    {
        std::fprintf(stderr, "unknown self-test %s\n", name.c_str());
        return 2;
    }
    std::printf("selftest: %s was not caught\n", name.c_str());
    return 0;
}
