/*
 * elfatt-deploy kernels: command-line driver of the host emulation (test builds only).
 *
 *   elfatt_emulate B H W C globalHeads localHeads windowH windowW scale dtype hasLepe path DIR
 *
 * dtype: 0 float32, 1 float16, 2 bfloat16; hasLepe: 0 (none), 1 (LePE of dtype) or 2 (LePE in
 * float32: AttentionParams::lepeFloat32); path: auto | tiled | generic | tensorcore | fused. DIR
 * holds qkv.bin [B,H,W,3C], and with hasLepe lepe_weight.bin [C,1,3,3] and (optional: without it
 * the bias pointer is null) lepe_bias.bin [C], as raw elements of dtype (float32 for hasLepe 2).
 * Runs elfatt::enqueueWithPath on exact-size heap buffers (AddressSanitizer flags any access
 * past them), with out and the workspace filled with 0xFF bytes (NaN) first, and writes
 * DIR/out.bin [B,H,W,C]. Exits 0 on success, 1 on a library error, 2 on bad usage or files.
 *
 * ELFATT_EMULATE_STATE=clean: the caller-owned persistent state instead (elfatt::stateSize bytes,
 * zeroed once): two enqueueWithPathAndState calls back to back on the same state (out and the
 * workspace reset to NaN before each), out.bin from the second; exits 1 unless the state is zero
 * again afterwards. ELFATT_EMULATE_STATE=dirty: the same with a state that starts non-zero (what a
 * kernel that forgot to zero its counters leaves behind), no check of the state: the output shows it.
 * ELFATT_EMULATE_STATE=small: a zeroed state 4 bytes short of stateSize (the library must take the memset
 * path); =misaligned: a state pointer 1 byte off a 4-byte boundary (the library must refuse it).
 * ELFATT_EMULATE_LEPE=unaligned: the LePE weight and bias passed one element past a 16-byte boundary.
 */
#include "elfatt/elfatt_kernels.h"
#include "elfatt/elfatt_kernels_ext.h"

#include <cuda_runtime_api.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace
{

constexpr size_t kALIGN = 256; // what cudaMalloc gives

struct Buffer
{
    void* data{nullptr};
    size_t bytes{0};

    explicit Buffer(size_t size)
        : bytes(size)
    {
        // Exactly `size` bytes: the allocation's redzone starts right after the last element.
        data = size > 0 ? ::operator new(size, std::align_val_t{kALIGN}) : nullptr;
    }
    ~Buffer()
    {
        if (data != nullptr)
        {
            ::operator delete(data, std::align_val_t{kALIGN});
        }
    }
    Buffer(Buffer const&) = delete;
    Buffer& operator=(Buffer const&) = delete;
};

[[noreturn]] void usage(char const* message)
{
    std::fprintf(stderr,
        "elfatt_emulate: %s\n"
        "usage: elfatt_emulate B H W C globalHeads localHeads windowH windowW scale dtype(0 f32|1 f16|2 bf16) "
        "hasLepe(0|1|2 = float32 LePE) path(auto|tiled|generic|tensorcore|fused) DIR\n",
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
        std::string const message = std::string("bad ") + what + ": '" + text + "'";
        usage(message.c_str());
    }
    return value;
}

float parseFloat(char const* text, char const* what)
{
    char* end = nullptr;
    float const value = std::strtof(text, &end);
    if (end == text || *end != '\0')
    {
        std::string const message = std::string("bad ") + what + ": '" + text + "'";
        usage(message.c_str());
    }
    return value;
}

elfatt::KernelPath parsePath(std::string const& text)
{
    if (text == "auto")
    {
        return elfatt::KernelPath::kAUTO;
    }
    if (text == "tiled")
    {
        return elfatt::KernelPath::kTILED;
    }
    if (text == "generic")
    {
        return elfatt::KernelPath::kGENERIC;
    }
    if (text == "tensorcore")
    {
        return elfatt::KernelPath::kTENSOR_CORE;
    }
    if (text == "fused")
    {
        return elfatt::KernelPath::kFUSED;
    }
    usage(("unknown path '" + text + "'").c_str());
}

bool fileExists(std::string const& path)
{
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file != nullptr)
    {
        std::fclose(file);
        return true;
    }
    return false;
}

//! Reads exactly buffer.bytes bytes; the file must have exactly that size.
void readExact(std::string const& path, Buffer& buffer)
{
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr)
    {
        usage(("cannot open " + path).c_str());
    }
    size_t const got = buffer.bytes > 0 ? std::fread(buffer.data, 1, buffer.bytes, file) : 0;
    char extra = 0;
    bool const longer = std::fread(&extra, 1, 1, file) == 1;
    std::fclose(file);
    if (got != buffer.bytes || longer)
    {
        usage((path + " does not hold exactly " + std::to_string(buffer.bytes) + " bytes").c_str());
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 14)
    {
        usage("expected 13 arguments");
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
    params.scale = parseFloat(argv[9], "scale");
    int64_t const dtype = parseInt(argv[10], "dtype");
    params.dtype = static_cast<elfatt::DataType>(dtype);
    int64_t const hasLepe = parseInt(argv[11], "hasLepe");
    if (hasLepe < 0 || hasLepe > 2)
    {
        usage("hasLepe must be 0, 1 or 2");
    }
    params.hasLepe = hasLepe != 0;
    params.lepeFloat32 = hasLepe == 2;
    elfatt::KernelPath const path = parsePath(argv[12]);
    std::string const dir = argv[13];

    char message[512] = {};
    if (elfatt::validateParams(params, message, sizeof(message)) != elfatt::Status::kSUCCESS)
    {
        std::fprintf(stderr, "elfatt_emulate: validateParams: %s\n", message);
        // enqueue must refuse the same params before touching any pointer.
        cudaError_t const status
            = elfatt::enqueueWithPath(params, path, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
        std::fprintf(stderr, "elfatt_emulate: enqueueWithPath returned %s (%d)\n", cudaGetErrorName(status),
            static_cast<int>(status));
        return 1;
    }
    size_t const element = dtype == 0 ? 4 : 2;
    size_t const lepeElement = params.lepeFloat32 ? 4 : element;
    size_t const tokens = static_cast<size_t>(params.batch * params.height * params.width);
    size_t const channels = static_cast<size_t>(params.channels);

    Buffer qkv(tokens * 3 * channels * element);
    readExact(dir + "/qkv.bin", qkv);
    Buffer weight(params.hasLepe ? channels * 9 * lepeElement : 0);
    Buffer bias(params.hasLepe && fileExists(dir + "/lepe_bias.bin") ? channels * lepeElement : 0);
    if (params.hasLepe)
    {
        readExact(dir + "/lepe_weight.bin", weight);
        if (bias.bytes > 0)
        {
            readExact(dir + "/lepe_bias.bin", bias);
        }
    }
    // ELFATT_EMULATE_LEPE=unaligned: the LePE weight and bias one element past a 16-byte boundary
    // (the kernels then stage them element by element instead of as 16-byte vectors).
    char const* const lepeMode = std::getenv("ELFATT_EMULATE_LEPE");
    bool const unalignedLepe = lepeMode != nullptr && std::string(lepeMode) == "unaligned";
    if (lepeMode != nullptr && !unalignedLepe)
    {
        usage("ELFATT_EMULATE_LEPE must be unaligned");
    }
    Buffer weightShifted(unalignedLepe && weight.bytes > 0 ? weight.bytes + lepeElement : 0);
    Buffer biasShifted(unalignedLepe && bias.bytes > 0 ? bias.bytes + lepeElement : 0);
    void const* weightPtr = weight.data;
    void const* biasPtr = bias.data;
    if (weightShifted.bytes > 0)
    {
        std::memcpy(static_cast<char*>(weightShifted.data) + lepeElement, weight.data, weight.bytes);
        weightPtr = static_cast<char*>(weightShifted.data) + lepeElement;
    }
    if (biasShifted.bytes > 0)
    {
        std::memcpy(static_cast<char*>(biasShifted.data) + lepeElement, bias.data, bias.bytes);
        biasPtr = static_cast<char*>(biasShifted.data) + lepeElement;
    }
    Buffer out(tokens * channels * element);
    Buffer workspace(elfatt::workspaceSize(params));
    char const* const stateMode = std::getenv("ELFATT_EMULATE_STATE");
    std::string const mode = stateMode != nullptr ? stateMode : "";
    bool const cleanState = mode == "clean";
    bool const dirtyState = mode == "dirty";
    bool const smallState = mode == "small";
    bool const misalignedState = mode == "misaligned";
    if (stateMode != nullptr && !cleanState && !dirtyState && !smallState && !misalignedState)
    {
        usage("ELFATT_EMULATE_STATE must be clean, dirty, small or misaligned");
    }
    size_t const stateBytes = elfatt::stateSize(params);
    bool const withState = stateMode != nullptr;
    Buffer state(withState ? stateBytes + 4 : 0);
    if (state.bytes > 0)
    {
        std::memset(state.data, dirtyState ? 0x01 : 0x00, state.bytes);
    }
    void* const statePtr = misalignedState && state.data != nullptr ? static_cast<char*>(state.data) + 1 : state.data;
    size_t const passedBytes = smallState ? (stateBytes >= 4 ? stateBytes - 4 : 0) : stateBytes;
    int const runs = withState ? 2 : 1;
    for (int run = 0; run < runs; ++run)
    {
        if (out.bytes > 0)
        {
            std::memset(out.data, 0xFF, out.bytes); // NaN: any element the kernels do not write stays NaN
        }
        if (workspace.bytes > 0)
        {
            std::memset(workspace.data, 0xFF, workspace.bytes); // NaN: reads before writes show
        }
        cudaError_t const status = runs == 1
            ? elfatt::enqueueWithPath(
                params, path, qkv.data, weightPtr, biasPtr, out.data, workspace.data, /*stream=*/nullptr)
            : elfatt::enqueueWithPathAndState(params, path, qkv.data, weightPtr, biasPtr, out.data,
                workspace.data, statePtr, passedBytes, /*stream=*/nullptr);
        if (status != cudaSuccess)
        {
            std::fprintf(stderr, "elfatt_emulate: enqueueWithPath returned %s (%d): %s\n", cudaGetErrorName(status),
                static_cast<int>(status), cudaGetErrorString(status));
            return 1;
        }
        cudaError_t const last = cudaGetLastError();
        if (last != cudaSuccess)
        {
            std::fprintf(stderr, "elfatt_emulate: cudaGetLastError after enqueue: %s (%d)\n",
                cudaGetErrorName(last), static_cast<int>(last));
            return 1;
        }
        if (cleanState)
        {
            unsigned char const* const bytes = static_cast<unsigned char const*>(state.data);
            for (size_t i = 0; i < stateBytes; ++i)
            {
                if (bytes[i] != 0)
                {
                    std::fprintf(stderr,
                        "elfatt_emulate: byte %zu of the persistent state is %u after enqueue %d (must be 0)\n", i,
                        static_cast<unsigned>(bytes[i]), run + 1);
                    return 1;
                }
            }
        }
    }

    std::string const outPath = dir + "/out.bin";
    std::FILE* file = std::fopen(outPath.c_str(), "wb");
    if (file == nullptr || (out.bytes > 0 && std::fwrite(out.data, 1, out.bytes, file) != out.bytes))
    {
        std::fprintf(stderr, "elfatt_emulate: cannot write %s\n", outPath.c_str());
        return 2;
    }
    std::fclose(file);
    return 0;
}
