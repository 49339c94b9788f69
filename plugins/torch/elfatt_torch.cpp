/*
 * elfatt-deploy: PyTorch CUDA extension for the elfatt::attention op.
 *
 * A thin binding over plugins/kernels (the same sources the TensorRT plugin uses),
 * built just in time by elfatt_deploy/op/cuda_backend.py with
 * torch.utils.cpp_extension.load. Every error becomes a RuntimeError (TORCH_CHECK)
 * whose message names the bad value.
 *
 * What the kernels take, and so what this binding passes without a copy or a cast:
 * qkv contiguous [B, H, W, 3C] of float32, float16 or bfloat16 (a non-contiguous qkv is
 * copied once); LePE weight and bias contiguous, on qkv's device, both of qkv's dtype or
 * both float32 (AttentionParams::lepeFloat32: fp32 parameters under fp16/bf16 autocast are
 * used as they are, never rounded). Anything else is refused with a message that says what
 * to pass; elfatt_deploy.op.cuda_backend maps the op's wider input set onto this one (and
 * sends float64 to the eager reference).
 */
#include <ATen/MemoryOverlap.h>
#include <torch/extension.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "elfatt/elfatt_kernels.h"
#include "elfatt/elfatt_kernels_ext.h"

#ifdef ELFATT_TORCH_HOST_TEST
// CPU test build only (tests/test_kernels_torch.py): CPU tensors stand in for CUDA ones and
// plugins/torch/tests/host_test_stubs.cpp records each launch instead of running kernels.
#include "host_test_stubs.h"
#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace
{

#ifdef ELFATT_TORCH_HOST_TEST
constexpr char const* kKERNEL_DEVICE = "CPU (host test build)";
bool onKernelDevice(at::Tensor const& t)
{
    return t.is_cpu();
}
struct DeviceGuard
{
    explicit DeviceGuard(at::Device) {}
};
cudaStream_t currentStream(at::Device)
{
    return nullptr;
}
#else
constexpr char const* kKERNEL_DEVICE = "CUDA";
bool onKernelDevice(at::Tensor const& t)
{
    return t.is_cuda();
}
using DeviceGuard = c10::cuda::CUDAGuard;
cudaStream_t currentStream(at::Device device)
{
    return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}
#endif

constexpr size_t kMESSAGE_BYTES = 512;

elfatt::DataType toKernelType(at::ScalarType type)
{
    switch (type)
    {
    case at::kFloat: return elfatt::DataType::kFLOAT;
    case at::kHalf: return elfatt::DataType::kHALF;
    case at::kBFloat16: return elfatt::DataType::kBF16;
    default: break;
    }
    TORCH_CHECK(false, "elfatt: qkv dtype ", c10::toString(type),
        " is not supported by the CUDA kernels; use float32, float16 or bfloat16 (the op, "
        "elfatt_deploy.elfatt_attention, runs float64 in the eager reference)");
    return elfatt::DataType::kFLOAT;
}

int32_t toInt32(int64_t value, char const* name)
{
    TORCH_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), "elfatt: ", name, "=", value,
        " must be in [0, 2147483647]");
    return static_cast<int32_t>(value);
}

//! An optional LePE tensor, checked (qkv's device; qkv's dtype or float32) and contiguous. Never casts.
at::Tensor prepareLepe(c10::optional<at::Tensor> const& tensor, at::Tensor const& qkv, char const* name)
{
    if (!tensor.has_value() || !tensor->defined())
    {
        return at::Tensor();
    }
    TORCH_CHECK(tensor->device() == qkv.device(), "elfatt: ", name, " is on ", tensor->device(), " but qkv is on ",
        qkv.device(), "; move both to the same device");
    at::ScalarType const type = tensor->scalar_type();
    TORCH_CHECK(type == qkv.scalar_type() || type == at::kFloat, "elfatt: ", name, " has dtype ", c10::toString(type),
        " but qkv has ", c10::toString(qkv.scalar_type()), "; the CUDA kernels take LePE parameters of qkv's dtype or "
        "float32 (convert ", name, " with .float())");
    return tensor->contiguous();
}

//! Refuses an output (or the persistent state, which the kernels also write) that shares memory with
//! an input: the kernels read qkv and the LePE parameters while they write out, so an overlap would
//! give a silently wrong answer.
void checkNoOverlap(at::Tensor const& out, at::Tensor const& input, char const* name, char const* outName = "out")
{
    if (!input.defined())
    {
        return;
    }
    std::string const remedy = std::string(outName) == "out"
        ? std::string("a separate output tensor, or call attention() which allocates one")
        : std::string("a separate ") + outName + " tensor";
    TORCH_CHECK(at::get_overlap_status(out, input) == at::MemOverlapStatus::No, "elfatt: ", outName,
        " shares memory with ", name, " (", outName, " ", out.sizes(), " at ", out.data_ptr(), ", ", name, " ",
        input.sizes(), " at ", input.data_ptr(), "); the kernels read ", name, " while writing ", outName,
        ": pass ", remedy);
}

//! Inputs of one call, checked, contiguous and on one device, with their kernel params.
struct Prepared
{
    at::Tensor qkv;
    at::Tensor weight;
    at::Tensor bias;
    elfatt::AttentionParams params;
    elfatt::KernelPath path{elfatt::KernelPath::kAUTO};
};

Prepared prepare(at::Tensor const& qkvIn, c10::optional<at::Tensor> const& lepeWeightIn,
    c10::optional<at::Tensor> const& lepeBiasIn, int64_t globalHeads, int64_t localHeads, int64_t windowH,
    int64_t windowW, double scale, int64_t path)
{
    TORCH_CHECK(onKernelDevice(qkvIn), "elfatt: qkv is on ", qkvIn.device(), "; the CUDA kernels need a ",
        kKERNEL_DEVICE, " tensor");
    TORCH_CHECK(qkvIn.dim() == 4, "elfatt: qkv has ", qkvIn.dim(), " dims (shape ", qkvIn.sizes(),
        "); it must be 4-D [B, H, W, 3C]");
    TORCH_CHECK(qkvIn.size(3) % 3 == 0, "elfatt: qkv has ", qkvIn.size(3),
        " channels, which is not divisible by 3; qkv must be [B, H, W, 3C]");
    TORCH_CHECK(path >= -1 && path <= static_cast<int64_t>(elfatt::KernelPath::kFUSED), "elfatt: path=", path,
        " must be -1 (default), 0 (auto), 1 (tiled), 2 (generic), 3 (tensorcore) or 4 (fused)");

    Prepared p;
    elfatt::DataType const dtype = toKernelType(qkvIn.scalar_type());
    p.qkv = qkvIn.contiguous();
    int64_t const channels = p.qkv.size(3) / 3;
    p.weight = prepareLepe(lepeWeightIn, p.qkv, "lepe_weight");
    p.bias = prepareLepe(lepeBiasIn, p.qkv, "lepe_bias");
    TORCH_CHECK(p.weight.defined() || !p.bias.defined(),
        "elfatt: lepe_bias is given without lepe_weight; pass both or neither");
    TORCH_CHECK(!p.bias.defined() || p.bias.scalar_type() == p.weight.scalar_type(), "elfatt: lepe_weight has dtype ",
        c10::toString(p.weight.scalar_type()), " but lepe_bias has ", c10::toString(p.bias.scalar_type()),
        "; pass both in one dtype (qkv's or float32)");
    if (p.weight.defined())
    {
        TORCH_CHECK(p.weight.dim() == 4 && p.weight.size(0) == channels && p.weight.size(1) == 1
                && p.weight.size(2) == 3 && p.weight.size(3) == 3,
            "elfatt: lepe_weight has shape ", p.weight.sizes(), "; it must be [C, 1, 3, 3] = [", channels,
            ", 1, 3, 3]");
    }
    if (p.bias.defined())
    {
        TORCH_CHECK(p.bias.dim() == 1 && p.bias.size(0) == channels, "elfatt: lepe_bias has shape ", p.bias.sizes(),
            "; it must be [C] = [", channels, "]");
    }

    p.params.batch = p.qkv.size(0);
    p.params.height = p.qkv.size(1);
    p.params.width = p.qkv.size(2);
    p.params.channels = channels;
    p.params.globalHeads = toInt32(globalHeads, "global_heads");
    p.params.localHeads = toInt32(localHeads, "local_heads");
    p.params.windowH = toInt32(windowH, "window_h");
    p.params.windowW = toInt32(windowW, "window_w");
    // A double outside float's range has no float value (the cast would be undefined behaviour).
    TORCH_CHECK(std::isfinite(scale) && std::fabs(scale) <= static_cast<double>(std::numeric_limits<float>::max()),
        "elfatt: scale ", scale, " is not a finite float32; pass 0 for 1/sqrt(d) or a finite value");
    p.params.scale = static_cast<float>(scale);
    p.params.dtype = dtype;
    p.params.hasLepe = p.weight.defined();
    p.params.lepeFloat32 = p.weight.defined() && p.weight.scalar_type() == at::kFloat;

    char message[kMESSAGE_BYTES] = {};
    if (elfatt::validateParams(p.params, message, sizeof(message)) != elfatt::Status::kSUCCESS)
    {
        TORCH_CHECK(false, message);
    }
    p.path = (path < 0) ? elfatt::defaultKernelPath() : static_cast<elfatt::KernelPath>(path);
    return p;
}

//! Launches on the current stream of qkv's device; out is contiguous [B, H, W, C] of qkv's dtype.
//! state: caller-owned persistent state (enqueueWithPathAndState; a contiguous uint8 tensor on qkv's
//! device, checked by the caller), or undefined (enqueueWithPath: counters in the workspace, memset).
void launch(Prepared const& p, at::Tensor& out, at::Tensor const& state = at::Tensor())
{
    if (out.numel() == 0)
    {
        return;
    }
    size_t const wsBytes = elfatt::workspaceSize(p.params);
    at::Tensor workspace;
    if (wsBytes > 0)
    {
        workspace = at::empty({static_cast<int64_t>(wsBytes)}, p.qkv.options().dtype(at::kByte));
    }
    cudaStream_t const stream = currentStream(p.qkv.device());
    void const* const weight = p.weight.defined() ? p.weight.data_ptr() : nullptr;
    void const* const bias = p.bias.defined() ? p.bias.data_ptr() : nullptr;
    void* const ws = workspace.defined() ? workspace.data_ptr() : nullptr;
    cudaError_t const status = state.defined()
        ? elfatt::enqueueWithPathAndState(p.params, p.path, p.qkv.data_ptr(), weight, bias, out.data_ptr(), ws,
            state.numel() > 0 ? state.data_ptr() : nullptr, static_cast<size_t>(state.numel()), stream)
        : elfatt::enqueueWithPath(p.params, p.path, p.qkv.data_ptr(), weight, bias, out.data_ptr(), ws, stream);
    TORCH_CHECK(status == cudaSuccess, "elfatt: CUDA kernel launch failed: ", cudaGetErrorName(status), " (",
        cudaGetErrorString(status), ") for qkv ", p.qkv.sizes(), " ", c10::toString(p.qkv.scalar_type()));
}

} // namespace

//! path: -1 = the library default (env ELFATT_KERNEL_PATH), 0 = auto, 1 = tiled, 2 = generic,
//! 3 = tensorcore, 4 = fused. The output is allocated here, so it never overlaps an input.
at::Tensor elfattAttention(at::Tensor const& qkv, c10::optional<at::Tensor> const& lepeWeight,
    c10::optional<at::Tensor> const& lepeBias, int64_t globalHeads, int64_t localHeads, int64_t windowH,
    int64_t windowW, double scale, int64_t path)
{
    DeviceGuard const guard(qkv.device());
    Prepared const p = prepare(qkv, lepeWeight, lepeBias, globalHeads, localHeads, windowH, windowW, scale, path);
    at::Tensor out = at::empty({p.params.batch, p.params.height, p.params.width, p.params.channels}, p.qkv.options());
    launch(p, out);
    return out;
}

//! Same as elfattAttention, writing into a given contiguous [B, H, W, C] tensor (verification: the
//! caller can poison it first to catch elements the kernels never write). out must not share memory
//! with qkv or the LePE parameters.
void elfattAttentionInto(at::Tensor& out, at::Tensor const& qkv, c10::optional<at::Tensor> const& lepeWeight,
    c10::optional<at::Tensor> const& lepeBias, int64_t globalHeads, int64_t localHeads, int64_t windowH,
    int64_t windowW, double scale, int64_t path)
{
    DeviceGuard const guard(qkv.device());
    Prepared const p = prepare(qkv, lepeWeight, lepeBias, globalHeads, localHeads, windowH, windowW, scale, path);
    TORCH_CHECK(out.device() == p.qkv.device(), "elfatt: out is on ", out.device(), " but qkv is on ",
        p.qkv.device());
    TORCH_CHECK(out.scalar_type() == p.qkv.scalar_type(), "elfatt: out has dtype ",
        c10::toString(out.scalar_type()), " but qkv has ", c10::toString(p.qkv.scalar_type()));
    TORCH_CHECK(out.is_contiguous() && out.dim() == 4 && out.size(0) == p.params.batch
            && out.size(1) == p.params.height && out.size(2) == p.params.width && out.size(3) == p.params.channels,
        "elfatt: out has shape ", out.sizes(), "; it must be contiguous [B, H, W, C] = [", p.params.batch, ", ",
        p.params.height, ", ", p.params.width, ", ", p.params.channels, "]");
    checkNoOverlap(out, p.qkv, "qkv");
    checkNoOverlap(out, p.weight, "lepe_weight");
    checkNoOverlap(out, p.bias, "lepe_bias");
    launch(p, out);
}

//! Bytes of persistent state elfattAttentionWithState takes for these inputs (elfatt::stateSize):
//! kernels v2's merge-tree counters and max keys; 0 where kernels v2 do not run.
int64_t elfattStateSize(at::Tensor const& qkv, c10::optional<at::Tensor> const& lepeWeight,
    c10::optional<at::Tensor> const& lepeBias, int64_t globalHeads, int64_t localHeads, int64_t windowH,
    int64_t windowW, double scale)
{
    Prepared const p = prepare(qkv, lepeWeight, lepeBias, globalHeads, localHeads, windowH, windowW, scale, -1);
    return static_cast<int64_t>(elfatt::stateSize(p.params));
}

//! elfattAttentionInto through enqueueWithPathAndState, as the TensorRT plugin runs the kernels: state is
//! caller-owned persistent memory (a contiguous uint8 tensor on qkv's device, at least state_size bytes,
//! zeroed once before its first use; kernels v2 leave it zeroed), so no memset runs. For checking that
//! path on a GPU (bench/kernels_gpu.py); the op itself calls attention / attention_into.
void elfattAttentionWithState(at::Tensor& out, at::Tensor const& qkv, c10::optional<at::Tensor> const& lepeWeight,
    c10::optional<at::Tensor> const& lepeBias, int64_t globalHeads, int64_t localHeads, int64_t windowH,
    int64_t windowW, double scale, at::Tensor const& state, int64_t path)
{
    DeviceGuard const guard(qkv.device());
    Prepared const p = prepare(qkv, lepeWeight, lepeBias, globalHeads, localHeads, windowH, windowW, scale, path);
    size_t const needed = elfatt::stateSize(p.params);
    TORCH_CHECK(state.device() == p.qkv.device(), "elfatt: state is on ", state.device(), " but qkv is on ",
        p.qkv.device(), "; allocate it on qkv's device");
    TORCH_CHECK(state.scalar_type() == at::kByte && state.is_contiguous() && state.dim() == 1,
        "elfatt: state must be a contiguous 1-D uint8 tensor, got ", c10::toString(state.scalar_type()), " ",
        state.sizes());
    TORCH_CHECK(static_cast<size_t>(state.numel()) >= needed, "elfatt: state has ", state.numel(),
        " bytes but these inputs need ", needed, " (state_size); allocate torch.zeros(state_size(...), dtype=uint8)");
    TORCH_CHECK(needed == 0 || reinterpret_cast<uintptr_t>(state.data_ptr()) % 4 == 0,
        "elfatt: state must be 4-byte aligned; pass a fresh tensor, not a view at an odd offset");
    TORCH_CHECK(out.device() == p.qkv.device() && out.scalar_type() == p.qkv.scalar_type() && out.is_contiguous()
            && out.dim() == 4 && out.size(0) == p.params.batch && out.size(1) == p.params.height
            && out.size(2) == p.params.width && out.size(3) == p.params.channels,
        "elfatt: out must be a contiguous [B, H, W, C] = [", p.params.batch, ", ", p.params.height, ", ",
        p.params.width, ", ", p.params.channels, "] tensor of qkv's dtype and device, got ", out.sizes(), " ",
        c10::toString(out.scalar_type()), " on ", out.device());
    checkNoOverlap(out, p.qkv, "qkv");
    checkNoOverlap(out, p.weight, "lepe_weight");
    checkNoOverlap(out, p.bias, "lepe_bias");
    checkNoOverlap(state, p.qkv, "qkv", "state");
    checkNoOverlap(state, p.weight, "lepe_weight", "state");
    checkNoOverlap(state, p.bias, "lepe_bias", "state");
    checkNoOverlap(state, out, "out", "state");
    launch(p, out, state);
}

int64_t elfattWorkspaceSize(int64_t batch, int64_t height, int64_t width, int64_t channels, int64_t globalHeads,
    int64_t localHeads, int64_t windowH, int64_t windowW)
{
    elfatt::AttentionParams params;
    params.batch = batch;
    params.height = height;
    params.width = width;
    params.channels = channels;
    params.globalHeads = toInt32(globalHeads, "global_heads");
    params.localHeads = toInt32(localHeads, "local_heads");
    params.windowH = toInt32(windowH, "window_h");
    params.windowW = toInt32(windowW, "window_w");
    return static_cast<int64_t>(elfatt::workspaceSize(params));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.doc() = "elfatt-deploy CUDA kernels for elfatt::attention";
    m.def("attention", &elfattAttention, "ElfattAttention forward on CUDA (contract v1)", py::arg("qkv"),
        py::arg("lepe_weight"), py::arg("lepe_bias"), py::arg("global_heads"), py::arg("local_heads"),
        py::arg("window_h"), py::arg("window_w"), py::arg("scale"), py::arg("path") = -1);
    m.def("attention_into", &elfattAttentionInto, "ElfattAttention forward on CUDA into a given output",
        py::arg("out"), py::arg("qkv"), py::arg("lepe_weight"), py::arg("lepe_bias"), py::arg("global_heads"),
        py::arg("local_heads"), py::arg("window_h"), py::arg("window_w"), py::arg("scale"), py::arg("path") = -1);
    m.def("workspace_size", &elfattWorkspaceSize, "Workspace bytes of one launch", py::arg("batch"),
        py::arg("height"), py::arg("width"), py::arg("channels"), py::arg("global_heads"), py::arg("local_heads"),
        py::arg("window_h"), py::arg("window_w"));
    m.def("state_size", &elfattStateSize, "Bytes of persistent state attention_with_state takes", py::arg("qkv"),
        py::arg("lepe_weight"), py::arg("lepe_bias"), py::arg("global_heads"), py::arg("local_heads"),
        py::arg("window_h"), py::arg("window_w"), py::arg("scale"));
    m.def("attention_with_state", &elfattAttentionWithState,
        "attention_into with caller-owned persistent state, as the TensorRT plugin runs the kernels", py::arg("out"),
        py::arg("qkv"), py::arg("lepe_weight"), py::arg("lepe_bias"), py::arg("global_heads"), py::arg("local_heads"),
        py::arg("window_h"), py::arg("window_w"), py::arg("scale"), py::arg("state"), py::arg("path") = -1);
    m.def("version", []() { return std::string(elfatt::kernelsVersion()); });
#ifdef ELFATT_TORCH_HOST_TEST
    m.def("_last_launch", []() {
        elfatt::test::LaunchRecord const& r = elfatt::test::lastLaunch();
        py::dict d;
        d["calls"] = r.calls;
        d["path"] = static_cast<int32_t>(r.path);
        d["batch"] = r.params.batch;
        d["height"] = r.params.height;
        d["width"] = r.params.width;
        d["channels"] = r.params.channels;
        d["dtype"] = static_cast<int32_t>(r.params.dtype);
        d["has_lepe"] = r.params.hasLepe;
        d["lepe_float32"] = r.params.lepeFloat32;
        d["qkv"] = reinterpret_cast<uintptr_t>(r.qkv);
        d["lepe_weight"] = reinterpret_cast<uintptr_t>(r.lepeWeight);
        d["lepe_bias"] = reinterpret_cast<uintptr_t>(r.lepeBias);
        d["out"] = reinterpret_cast<uintptr_t>(r.out);
        d["workspace"] = reinterpret_cast<uintptr_t>(r.workspace);
        d["state"] = reinterpret_cast<uintptr_t>(r.state);
        d["state_bytes"] = r.stateBytes;
        d["with_state"] = r.withState;
        return d;
    });
    m.def("_set_launch_result", [](int32_t status) { elfatt::test::setLaunchResult(static_cast<cudaError_t>(status)); });
#endif
}
