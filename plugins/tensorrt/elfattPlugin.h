/*
 * elfatt-deploy: the ElfattAttention TensorRT plugin (op contract v1, docs/plugin.md).
 *
 * IPluginV3 with the IPluginV3OneCore / IPluginV3OneBuild / IPluginV3OneRuntime
 * capabilities, and its IPluginCreatorV3One creator. A thin wrapper over the CUDA
 * kernels of plugins/kernels (elfatt::validateParams / workspaceSize / stateSize /
 * enqueueWithState).
 *
 * This header and elfattPlugin.cpp use TensorRT headers only (no libnvinfer
 * symbol): registration with the plugin registry and the exported entry points
 * live in elfattPluginStaticRegistration.cpp and elfattPluginCreators.cpp.
 *
 * Every virtual entry point is noexcept and catches everything: no exception
 * crosses the plugin boundary; failures are logged (elfattPluginLogger.h) and
 * reported through the return value (non-zero / nullptr / false).
 */
#pragma once

#include <NvInferRuntime.h>

#include "elfatt/elfatt_kernels.h"
#include "elfattPluginState.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace elfatt
{
namespace trt
{

constexpr char const* kPLUGIN_NAME = "ElfattAttention";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "";

//! Field names, as the ONNX node's attributes.
constexpr char const* kFIELD_GLOBAL_HEADS = "global_heads";
constexpr char const* kFIELD_LOCAL_HEADS = "local_heads";
constexpr char const* kFIELD_WINDOW_H = "window_h";
constexpr char const* kFIELD_WINDOW_W = "window_w";
constexpr char const* kFIELD_SCALE = "scale";
//! Serialized with the fields once the input count is known (not an ONNX attribute): 1 = LePE inputs given.
constexpr char const* kFIELD_HAS_LEPE = "has_lepe";
//! String attributes the ONNX parser may pass on; accepted and ignored.
constexpr char const* kFIELD_PLUGIN_VERSION = "plugin_version";
constexpr char const* kFIELD_PLUGIN_NAMESPACE = "plugin_namespace";

//! Input / output positions.
constexpr int32_t kQKV_INDEX = 0;
constexpr int32_t kLEPE_WEIGHT_INDEX = 1;
constexpr int32_t kLEPE_BIAS_INDEX = 2;
constexpr int32_t kNB_INPUTS_NO_LEPE = 1;
constexpr int32_t kNB_INPUTS_LEPE = 3;
constexpr int32_t kNB_OUTPUTS = 1;

//! The attributes of one ElfattAttention node.
struct ElfattAttributes
{
    int32_t globalHeads{0};
    int32_t localHeads{0};
    int32_t windowH{0};
    int32_t windowW{0};
    float scale{0.F};
    //! -1 while unknown (a plugin made from an ONNX node), 0 or 1 once configurePlugin / onShapeChange saw the
    //! inputs or the engine's serialized fields said so.
    int32_t hasLepe{-1};

    bool operator==(ElfattAttributes const& other) const noexcept;
    //! "global_heads=..., local_heads=..., ..." (for messages and metadata).
    std::string toString() const;
};

//! Parses a PluginFieldCollection into attributes. On failure returns false and
//! sets error to a message naming the field and the rule. Integer fields accept
//! kINT32 (what TensorRT's ONNX parser passes for INT attributes, and what
//! getFieldsToSerialize writes) and kINT64 (range-checked); scale accepts kFLOAT32,
//! kFLOAT64 (must fit float32) and, for an ONNX INT attribute such as scale=0,
//! kINT32 / kINT64. Unknown field names, other types, lengths other than 1, null
//! data, duplicates, negative values, zero heads in total and a non-finite or
//! negative scale are errors; missing fields keep their default 0;
//! plugin_version / plugin_namespace are ignored. has_lepe (written by
//! getFieldsToSerialize, not an ONNX attribute) must be 0 or 1 when present.
//! Data may be unaligned.
bool parseFields(nvinfer1::PluginFieldCollection const* fc, ElfattAttributes& attrs, std::string& error);

//! Checks the attribute rules alone (used by parseFields and the constructor).
bool validateAttributes(ElfattAttributes const& attrs, std::string& error);

class ElfattPlugin : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime
{
public:
    ElfattPlugin(std::string layerName, ElfattAttributes const& attrs);
    ElfattPlugin(ElfattPlugin const& other);
    ElfattPlugin& operator=(ElfattPlugin const&) = delete;
    ElfattPlugin(ElfattPlugin&&) = delete;
    ElfattPlugin& operator=(ElfattPlugin&&) = delete;
    ~ElfattPlugin() override = default;

    ElfattAttributes const& getAttributes() const noexcept
    {
        return mAttrs;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! "ElfattAttention 'layer': " prefix for messages.
    std::string where(char const* method) const;
    //! Checks input/output counts; on failure sets error.
    bool checkCounts(int32_t nbInputs, int32_t nbOutputs, std::string& error) const;
    //! Checks concrete or partially known shapes (values < 0 are unknown and skipped).
    bool checkShapes(nvinfer1::Dims const* inputDims, int32_t nbInputs, std::string& error) const;
    //! Builds kernel params for the given qkv dims and type.
    bool makeParams(nvinfer1::Dims const& qkvDims, nvinfer1::DataType type, bool hasLepe,
        elfatt::AttentionParams& params, std::string& error) const;
    //! Records the input count in mAttrs.hasLepe, or checks it against the one already known.
    bool recordInputCount(int32_t nbInputs, std::string& error);

    std::string mLayerName;
    ElfattAttributes mAttrs;
    std::string mMetadata;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialFc{};
    //! Kernels v2's chunk counters, kept across enqueues (a clone starts without them).
    PersistentCounters mCounters;
};

class ElfattPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    ElfattPluginCreator();
    ~ElfattPluginCreator() override = default;
    //! mFc points into this object's mFieldNames: a copy would point into the source's.
    ElfattPluginCreator(ElfattPluginCreator const&) = delete;
    ElfattPluginCreator& operator=(ElfattPluginCreator const&) = delete;
    ElfattPluginCreator(ElfattPluginCreator&&) = delete;
    ElfattPluginCreator& operator=(ElfattPluginCreator&&) = delete;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

    static constexpr int32_t kNB_FIELDS = 5;

private:
    std::array<nvinfer1::PluginField, kNB_FIELDS> mFieldNames;
    nvinfer1::PluginFieldCollection mFc{};
};

//! The one creator instance of this library (a function-local static).
ElfattPluginCreator& getElfattPluginCreator() noexcept;

//! Maps a TensorRT data type to the kernels' one; false for unsupported types.
bool toKernelType(nvinfer1::DataType type, elfatt::DataType& out) noexcept;

} // namespace trt
} // namespace elfatt
