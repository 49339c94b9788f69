/*
 * elfatt-deploy: PyTorch CUDA extension for the elfatt::attention op.
 *
 * A thin binding over plugins/kernels (the same sources the TensorRT plugin uses),
 * built just in time by elfatt_deploy/op/cuda_backend.py with
 * torch.utils.cpp_extension.load. Every error becomes a RuntimeError (TORCH_CHECK)
 * whose message names the bad value.
 */
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>
#include <string>

#include "elfatt/elfatt_kernels.h"
#include "elfatt/elfatt_kernels_ext.h"

namespace
{

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
        " is not supported by the CUDA kernels; use float32, float16 or bfloat16");
    return elfatt::DataType::kFLOAT;
}

int32_t toInt32(int64_t value, char const* name)
{
    TORCH_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), "elfatt: ", name, "=", value,
        " must be in [0, 2147483647]");
    return static_cast<int32_t>(value);
}

//! Makes an optional LePE tensor contiguous, on qkv's device and of qkv's dtype.
at::Tensor prepareLepe(c10::optional<at::Tensor> const& tensor, at::Tensor const& qkv, char const* name)
{
    if (!tensor.has_value() || !tensor->defined())
    {
        return at::Tensor();
    }
    TORCH_CHECK(tensor->device() == qkv.device(), "elfatt: ", name, " is on ", tensor->device(), " but qkv is on ",
        qkv.device(), "; move both to the same device");
    return tensor->to(qkv.scalar_type()).contiguous();
}

} // namespace

//! path: -1 = the library default (env ELFATT_KERNEL_PATH), 0 = auto, 1 = tiled, 2 = generic.
at::Tensor elfattAttention(at::Tensor const& qkvIn, c10::optional<at::Tensor> const& lepeWeightIn,
    c10::optional<at::Tensor> const& lepeBiasIn, int64_t globalHeads, int64_t localHeads, int64_t windowH,
    int64_t windowW, double scale, int64_t path)
{
    TORCH_CHECK(qkvIn.is_cuda(), "elfatt: qkv is on ", qkvIn.device(), "; the CUDA kernels need a CUDA tensor");
    TORCH_CHECK(qkvIn.dim() == 4, "elfatt: qkv has ", qkvIn.dim(), " dims (shape ", qkvIn.sizes(),
        "); it must be 4-D [B, H, W, 3C]");
    TORCH_CHECK(qkvIn.size(3) % 3 == 0, "elfatt: qkv has ", qkvIn.size(3),
        " channels, which is not divisible by 3; qkv must be [B, H, W, 3C]");
    TORCH_CHECK(path >= -1 && path <= 2, "elfatt: path=", path, " must be -1 (default), 0 (auto), 1 (tiled) or 2 (generic)");
    elfatt::DataType const dtype = toKernelType(qkvIn.scalar_type());

    c10::cuda::CUDAGuard const guard(qkvIn.device());
    at::Tensor const qkv = qkvIn.contiguous();
    int64_t const channels = qkv.size(3) / 3;
    at::Tensor const weight = prepareLepe(lepeWeightIn, qkv, "lepe_weight");
    at::Tensor const bias = prepareLepe(lepeBiasIn, qkv, "lepe_bias");
    TORCH_CHECK(weight.defined() || !bias.defined(), "elfatt: lepe_bias is given without lepe_weight; pass both or neither");
    if (weight.defined())
    {
        TORCH_CHECK(weight.dim() == 4 && weight.size(0) == channels && weight.size(1) == 1 && weight.size(2) == 3
                && weight.size(3) == 3,
            "elfatt: lepe_weight has shape ", weight.sizes(), "; it must be [C, 1, 3, 3] = [", channels, ", 1, 3, 3]");
    }
    if (bias.defined())
    {
        TORCH_CHECK(bias.dim() == 1 && bias.size(0) == channels, "elfatt: lepe_bias has shape ", bias.sizes(),
            "; it must be [C] = [", channels, "]");
    }

    elfatt::AttentionParams params;
    params.batch = qkv.size(0);
    params.height = qkv.size(1);
    params.width = qkv.size(2);
    params.channels = channels;
    params.globalHeads = toInt32(globalHeads, "global_heads");
    params.localHeads = toInt32(localHeads, "local_heads");
    params.windowH = toInt32(windowH, "window_h");
    params.windowW = toInt32(windowW, "window_w");
    params.scale = static_cast<float>(scale);
    params.dtype = dtype;
    params.hasLepe = weight.defined();

    char message[kMESSAGE_BYTES] = {};
    if (elfatt::validateParams(params, message, sizeof(message)) != elfatt::Status::kSUCCESS)
    {
        TORCH_CHECK(false, message);
    }

    at::Tensor out = at::empty({params.batch, params.height, params.width, channels}, qkv.options());
    if (out.numel() == 0)
    {
        return out;
    }
    size_t const wsBytes = elfatt::workspaceSize(params);
    at::Tensor workspace;
    if (wsBytes > 0)
    {
        workspace = at::empty({static_cast<int64_t>(wsBytes)}, qkv.options().dtype(at::kByte));
    }
    cudaStream_t const stream = c10::cuda::getCurrentCUDAStream(qkv.device().index()).stream();
    elfatt::KernelPath const kernelPath
        = (path < 0) ? elfatt::defaultKernelPath() : static_cast<elfatt::KernelPath>(path);
    cudaError_t const status = elfatt::enqueueWithPath(params, kernelPath, qkv.data_ptr(),
        weight.defined() ? weight.data_ptr() : nullptr, bias.defined() ? bias.data_ptr() : nullptr, out.data_ptr(),
        workspace.defined() ? workspace.data_ptr() : nullptr, stream);
    TORCH_CHECK(status == cudaSuccess, "elfatt: CUDA kernel launch failed: ", cudaGetErrorName(status), " (",
        cudaGetErrorString(status), ") for qkv ", qkv.sizes(), " ", c10::toString(qkv.scalar_type()));
    return out;
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
    m.def("workspace_size", &elfattWorkspaceSize, "Workspace bytes of one launch", py::arg("batch"),
        py::arg("height"), py::arg("width"), py::arg("channels"), py::arg("global_heads"), py::arg("local_heads"),
        py::arg("window_h"), py::arg("window_w"));
    m.def("version", []() { return std::string(elfatt::kernelsVersion()); });
}
