/*
 * elfatt-deploy kernels: driver of the host emulation's tracing build (test builds only).
 *
 *   elfatt_trace B H W C globalHeads localHeads windowH windowW scale dtype hasLepe path MODE SAMPLES OUT
 *
 * Runs elfatt::enqueueWithPath on buffers of deterministic pseudo-random values (the traced
 * quantities depend on addresses, not on values) and writes the tracer's JSON lines to OUT.
 * dtype: 0 float32, 1 float16, 2 bfloat16; path: auto | tiled | generic | tensorcore | fused,
 * or the KernelPath number. MODE: dry (list the launches, run no block), all (every block of
 * every launch), sample (the blocks SAMPLES names: lines "launch block weight"; a launch it
 * does not name runs no block). bench/kernels_model.py builds and drives it.
 */
#include "elfatt/elfatt_kernels.h"
#include "elfatt/elfatt_kernels_ext.h"
#include "emulation_tracer.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <vector>


namespace
{

namespace tr = ::elfatt::emulation::trace;

[[noreturn]] void usage(char const* message)
{
    std::fprintf(stderr,
        "elfatt_trace: %s\n"
        "usage: elfatt_trace B H W C globalHeads localHeads windowH windowW scale dtype(0|1|2) hasLepe(0|1) "
        "path(auto|tiled|generic|tensorcore|fused|N) mode(dry|all|sample) SAMPLES OUT\n",
        message);
    std::exit(2);
}

int64_t parseInt(char const* text, char const* what)
{
    char* end = nullptr;
    errno = 0;
    long long const value = std::strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0)
    {
        usage((std::string("bad ") + what + ": '" + text + "'").c_str());
    }
    return value;
}

elfatt::KernelPath parsePath(std::string const& text)
{
    static std::map<std::string, int> const kNAMES{
        {"auto", 0}, {"tiled", 1}, {"generic", 2}, {"tensorcore", 3}, {"fused", 4}};
    auto const found = kNAMES.find(text);
    if (found != kNAMES.end())
    {
        return static_cast<elfatt::KernelPath>(found->second);
    }
    return static_cast<elfatt::KernelPath>(parseInt(text.c_str(), "path"));
}

//! Buffer of `bytes` bytes, 256-byte aligned like cudaMalloc, filled with values of the dtype.
struct Buffer
{
    void* data{nullptr};
    size_t bytes{0};
    explicit Buffer(size_t size)
        : bytes(size)
    {
        data = size > 0 ? ::operator new(size, std::align_val_t{256}) : nullptr;
    }
    ~Buffer()
    {
        if (data != nullptr)
        {
            ::operator delete(data, std::align_val_t{256});
        }
    }
    Buffer(Buffer const&) = delete;
    Buffer& operator=(Buffer const&) = delete;
};

void fill(Buffer& buffer, int64_t dtype, uint64_t seed, float scale)
{
    uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
    size_t const element = dtype == 0 ? 4 : 2;
    for (size_t i = 0; i < buffer.bytes / element; ++i)
    {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        float const value = scale * (static_cast<float>((state >> 40) & 0xFFFFFF) / 8388608.F - 1.F);
        if (dtype == 0)
        {
            static_cast<float*>(buffer.data)[i] = value;
        }
        else if (dtype == 1)
        {
            static_cast<__half*>(buffer.data)[i] = __float2half_rn(value);
        }
        else
        {
            static_cast<__nv_bfloat16*>(buffer.data)[i] = __float2bfloat16_rn(value);
        }
    }
}

std::map<unsigned, tr::LaunchSample> readSamples(std::string const& path)
{
    std::map<unsigned, tr::LaunchSample> samples;
    std::FILE* file = std::fopen(path.c_str(), "r");
    if (file == nullptr)
    {
        usage(("cannot open the sample file " + path).c_str());
    }
    unsigned launch = 0;
    unsigned block = 0;
    double weight = 0;
    int got = 0;
    while ((got = std::fscanf(file, "%u %u %lf", &launch, &block, &weight)) == 3)
    {
        samples[launch].blocks.push_back(block);
        samples[launch].weights.push_back(weight);
    }
    bool const clean = got == EOF;
    std::fclose(file);
    if (!clean)
    {
        usage(("the sample file " + path + " is not lines of 'launch block weight'").c_str());
    }
    return samples;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 16)
    {
        usage("expected 15 arguments");
    }
    elfatt::AttentionParams params;
    params.batch = parseInt(argv[1], "B");
    params.height = parseInt(argv[2], "H");
    params.width = parseInt(argv[3], "W");
    params.channels = parseInt(argv[4], "C");
    params.globalHeads = static_cast<int32_t>(parseInt(argv[5], "globalHeads"));
    params.localHeads = static_cast<int32_t>(parseInt(argv[6], "localHeads"));
    params.windowH = static_cast<int32_t>(parseInt(argv[7], "windowH"));
    params.windowW = static_cast<int32_t>(parseInt(argv[8], "windowW"));
    params.scale = std::strtof(argv[9], nullptr);
    int64_t const dtype = parseInt(argv[10], "dtype");
    params.dtype = static_cast<elfatt::DataType>(dtype);
    params.hasLepe = parseInt(argv[11], "hasLepe") != 0;
    elfatt::KernelPath const path = parsePath(argv[12]);
    std::string const mode = argv[13];
    std::string const samplesPath = argv[14];
    std::string const outPath = argv[15];

    char message[512] = {};
    if (elfatt::validateParams(params, message, sizeof(message)) != elfatt::Status::kSUCCESS)
    {
        std::fprintf(stderr, "elfatt_trace: validateParams: %s\n", message);
        return 1;
    }
    tr::Mode traceMode = tr::Mode::kDRY;
    std::map<unsigned, tr::LaunchSample> samples;
    if (mode == "all")
    {
        traceMode = tr::Mode::kALL;
    }
    else if (mode == "sample")
    {
        traceMode = tr::Mode::kSAMPLE;
        samples = readSamples(samplesPath);
    }
    else if (mode != "dry")
    {
        usage(("unknown mode '" + mode + "'").c_str());
    }
    std::FILE* out = std::fopen(outPath.c_str(), "w");
    if (out == nullptr)
    {
        usage(("cannot write " + outPath).c_str());
    }

    size_t const element = dtype == 0 ? 4 : 2;
    size_t const tokens = static_cast<size_t>(params.batch * params.height * params.width);
    size_t const channels = static_cast<size_t>(params.channels);
    Buffer qkv(tokens * 3 * channels * element);
    Buffer weight(params.hasLepe ? channels * 9 * element : 0);
    Buffer bias(params.hasLepe ? channels * element : 0);
    Buffer output(tokens * channels * element);
    Buffer workspace(elfatt::workspaceSize(params));
    // ELFATT_TRACE_STATE=1: the caller-owned persistent counters (enqueueWithState, what the TensorRT
    // plugin passes), zeroed, instead of the workspace's counters and their memset.
    char const* const stateEnv = std::getenv("ELFATT_TRACE_STATE");
    bool const withState = stateEnv != nullptr && std::strcmp(stateEnv, "1") == 0;
    Buffer state(withState ? elfatt::stateSize(params) : 0);
    if (state.bytes > 0)
    {
        std::memset(state.data, 0, state.bytes);
    }
    // ELFATT_TRACE_STATE_PRESET=n0,n1,...: the persistent counters' starting values (uint32, one per
    // (batch item, global head)), so that a sampled block of a head's last chunk is the one that counts
    // the last chunk and merges (bench/kernels_trace.py, merge_presets); a sample never runs every chunk.
    if (char const* const preset = std::getenv("ELFATT_TRACE_STATE_PRESET"); preset != nullptr && *preset != '\0')
    {
        if (!withState)
        {
            usage("ELFATT_TRACE_STATE_PRESET needs ELFATT_TRACE_STATE=1");
        }
        size_t index = 0;
        char const* cursor = preset;
        while (*cursor != '\0')
        {
            char* end = nullptr;
            unsigned long const value = std::strtoul(cursor, &end, 10);
            if (end == cursor || (*end != ',' && *end != '\0') || value > 0xFFFFFFFFUL
                || (index + 1) * sizeof(uint32_t) > state.bytes)
            {
                usage("ELFATT_TRACE_STATE_PRESET: expected at most stateSize / 4 comma-separated uint32 counters");
            }
            uint32_t const counter = static_cast<uint32_t>(value);
            std::memcpy(static_cast<unsigned char*>(state.data) + index * sizeof(uint32_t), &counter, sizeof(counter));
            ++index;
            cursor = *end == ',' ? end + 1 : end;
        }
    }
    fill(qkv, dtype, 1, 2.F);
    fill(weight, dtype, 2, 0.3F);
    fill(bias, dtype, 3, 0.1F);
    if (workspace.bytes > 0)
    {
        std::memset(workspace.data, 0, workspace.bytes);
    }
    tr::configure(traceMode, std::move(samples), out);
    tr::addGlobalBuffer("qkv", qkv.data, qkv.bytes, 3 * channels * element);
    tr::addGlobalBuffer("out", output.data, output.bytes, channels * element);
    tr::addGlobalBuffer("lepe_weight", weight.data, weight.bytes, 0);
    tr::addGlobalBuffer("lepe_bias", bias.data, bias.bytes, 0);
    tr::addGlobalBuffer("workspace", workspace.data, workspace.bytes, 0);
    tr::addGlobalBuffer("state", state.data, state.bytes, 0);
    tr::install();

    cudaError_t const status = withState
        ? elfatt::enqueueWithPathAndState(params, path, qkv.data, weight.data, bias.data, output.data,
            workspace.data, state.data, state.bytes, /*stream=*/nullptr)
        : elfatt::enqueueWithPath(
            params, path, qkv.data, weight.data, bias.data, output.data, workspace.data, /*stream=*/nullptr);
    std::fclose(out);
    if (status != cudaSuccess)
    {
        std::fprintf(stderr, "elfatt_trace: enqueueWithPath returned %s (%d)\n", cudaGetErrorName(status),
            static_cast<int>(status));
        return 1;
    }
    return 0;
}
