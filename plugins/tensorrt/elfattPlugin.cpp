/*
 * elfatt-deploy: the ElfattAttention TensorRT plugin (see elfattPlugin.h).
 */
#include "elfattPlugin.h"

#include "elfattPluginLogger.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <sstream>

namespace elfatt
{
namespace trt
{

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace
{

constexpr int32_t kQKV_RANK = 4;
constexpr int32_t kLEPE_WEIGHT_RANK = 4;
constexpr int32_t kLEPE_BIAS_RANK = 1;
constexpr int64_t kLEPE_KERNEL = 3;
constexpr int64_t kQKV_PARTS = 3;
constexpr size_t kMESSAGE_CAPACITY = 512;

char const* fieldTypeName(PluginFieldType type) noexcept
{
    switch (type)
    {
    case PluginFieldType::kFLOAT16: return "FLOAT16";
    case PluginFieldType::kFLOAT32: return "FLOAT32";
    case PluginFieldType::kFLOAT64: return "FLOAT64";
    case PluginFieldType::kINT8: return "INT8";
    case PluginFieldType::kINT16: return "INT16";
    case PluginFieldType::kINT32: return "INT32";
    case PluginFieldType::kCHAR: return "CHAR";
    case PluginFieldType::kDIMS: return "DIMS";
    case PluginFieldType::kUNKNOWN: return "UNKNOWN";
    case PluginFieldType::kBF16: return "BF16";
    case PluginFieldType::kINT64: return "INT64";
    case PluginFieldType::kFP8: return "FP8";
    case PluginFieldType::kINT4: return "INT4";
    default: break; // newer types (e.g. kFP4 in TensorRT 11)
    }
    return "other";
}

char const* dataTypeName(DataType type) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: return "FLOAT";
    case DataType::kHALF: return "HALF";
    case DataType::kBF16: return "BF16";
    case DataType::kINT8: return "INT8";
    case DataType::kINT32: return "INT32";
    case DataType::kBOOL: return "BOOL";
    case DataType::kUINT8: return "UINT8";
    case DataType::kFP8: return "FP8";
    case DataType::kINT64: return "INT64";
    case DataType::kINT4: return "INT4";
    default: break; // newer types (e.g. kFP4, kE8M0 in TensorRT 11)
    }
    return "other";
}

bool isSupportedType(DataType type) noexcept
{
    return type == DataType::kFLOAT || type == DataType::kHALF || type == DataType::kBF16;
}

char const* inputName(int32_t index) noexcept
{
    switch (index)
    {
    case kQKV_INDEX: return "qkv";
    case kLEPE_WEIGHT_INDEX: return "lepe_weight";
    case kLEPE_BIAS_INDEX: return "lepe_bias";
    default: break;
    }
    return "?";
}

std::string dimsToString(Dims const& dims)
{
    std::ostringstream os;
    os << "[";
    for (int32_t i = 0; i < dims.nbDims && i < Dims::MAX_DIMS; ++i)
    {
        os << (i > 0 ? ", " : "") << dims.d[i];
    }
    os << "]";
    return os.str();
}

//! Checks the type of every input/output: same type for all, one of FP32/FP16/BF16.
bool checkTypes(DataType const* types, int32_t nbTypes, std::string& error)
{
    for (int32_t i = 0; i < nbTypes; ++i)
    {
        if (!isSupportedType(types[i]))
        {
            error = std::string("tensor ") + std::to_string(i) + " has data type " + dataTypeName(types[i])
                + "; supported types are FLOAT, HALF and BF16";
            return false;
        }
        if (types[i] != types[0])
        {
            error = std::string("tensor ") + std::to_string(i) + " has data type " + dataTypeName(types[i])
                + " but qkv has " + dataTypeName(types[0]) + "; all inputs and the output must share one type";
            return false;
        }
    }
    return true;
}

//! Logs an exception a plugin method caught. ``method`` is a literal: building the message allocates, so it
//! happens here, inside the try (a std::bad_alloc from it must not leave the noexcept method).
void logCaught(char const* method, std::exception const* e) noexcept
{
    try
    {
        logError(std::string(kPLUGIN_NAME) + ": " + method + ": unexpected exception: "
            + (e != nullptr ? e->what() : "unknown"));
    }
    catch (...)
    {
        logMessage(Severity::kERROR, "unexpected exception (message unavailable)");
    }
}

} // namespace

// ---------------------------------------------------------------------------------------------------------------------
// Attributes

bool ElfattAttributes::operator==(ElfattAttributes const& other) const noexcept
{
    // Bitwise compare of scale: a round trip must restore the exact bits.
    return globalHeads == other.globalHeads && localHeads == other.localHeads && windowH == other.windowH
        && windowW == other.windowW && std::memcmp(&scale, &other.scale, sizeof(scale)) == 0
        && hasLepe == other.hasLepe;
}

std::string ElfattAttributes::toString() const
{
    std::ostringstream os;
    os.precision(9);
    os << kFIELD_GLOBAL_HEADS << "=" << globalHeads << ", " << kFIELD_LOCAL_HEADS << "=" << localHeads << ", "
       << kFIELD_WINDOW_H << "=" << windowH << ", " << kFIELD_WINDOW_W << "=" << windowW << ", " << kFIELD_SCALE
       << "=" << scale;
    return os.str();
}

bool validateAttributes(ElfattAttributes const& attrs, std::string& error)
{
    struct IntField
    {
        char const* name;
        int32_t value;
        char const* meaning;
    };
    IntField const ints[] = {
        {kFIELD_GLOBAL_HEADS, attrs.globalHeads, "number of global linear heads"},
        {kFIELD_LOCAL_HEADS, attrs.localHeads, "number of local block heads"},
        {kFIELD_WINDOW_H, attrs.windowH, "window height, 0 = whole height"},
        {kFIELD_WINDOW_W, attrs.windowW, "window width, 0 = whole width"},
    };
    for (IntField const& f : ints)
    {
        if (f.value < 0)
        {
            error = std::string("field '") + f.name + "' must be >= 0 (" + f.meaning + "), got "
                + std::to_string(f.value);
            return false;
        }
    }
    if (static_cast<int64_t>(attrs.globalHeads) + static_cast<int64_t>(attrs.localHeads) < 1)
    {
        error = std::string("fields '") + kFIELD_GLOBAL_HEADS + "' + '" + kFIELD_LOCAL_HEADS
            + "' must be >= 1 (zero heads), got " + std::to_string(attrs.globalHeads) + " + "
            + std::to_string(attrs.localHeads);
        return false;
    }
    if (!std::isfinite(attrs.scale))
    {
        std::ostringstream os;
        os << "field '" << kFIELD_SCALE << "' must be finite (0 = 1/sqrt(d)), got " << attrs.scale;
        error = os.str();
        return false;
    }
    if (attrs.scale < 0.F)
    {
        std::ostringstream os;
        os << "field '" << kFIELD_SCALE << "' must be >= 0 (0 = 1/sqrt(d)), got " << attrs.scale;
        error = os.str();
        return false;
    }
    return true;
}

namespace
{

//! What a field slot holds: an int32 attribute or the float scale.
enum class SlotKind
{
    kINT,
    kFLOAT,
};

char const* acceptedTypes(SlotKind kind) noexcept
{
    return kind == SlotKind::kINT ? "INT32 or INT64" : "FLOAT32 or FLOAT64 (or INT32 / INT64)";
}

bool typeAccepted(SlotKind kind, PluginFieldType type) noexcept
{
    bool const isInt = type == PluginFieldType::kINT32 || type == PluginFieldType::kINT64;
    bool const isFloat = type == PluginFieldType::kFLOAT32 || type == PluginFieldType::kFLOAT64;
    return kind == SlotKind::kINT ? isInt : (isInt || isFloat);
}

//! Reads one scalar field into an int32 (kINT) or float (kFLOAT) slot, converting the types that TensorRT's ONNX
//! parser and the Python API may produce: ONNX INT attributes arrive as kINT32 (onnx-tensorrt loadFields), Python
//! callers often pass int64 / float64 NumPy data, an ONNX file written with scale=0 carries an INT attribute.
//! The type must pass typeAccepted(). Data may be unaligned: memcpy only. Returns false with error set for a value
//! that does not fit.
bool readScalar(PluginField const& field, SlotKind kind, void* target, std::string const& name, std::string& error)
{
    if (kind == SlotKind::kINT)
    {
        int64_t value = 0;
        if (field.type == PluginFieldType::kINT32)
        {
            int32_t v32 = 0;
            std::memcpy(&v32, field.data, sizeof(v32));
            value = v32;
        }
        else if (field.type == PluginFieldType::kINT64)
        {
            std::memcpy(&value, field.data, sizeof(value));
            if (value < std::numeric_limits<int32_t>::min() || value > std::numeric_limits<int32_t>::max())
            {
                error = "field '" + name + "' (INT64) is out of the int32 range, got " + std::to_string(value);
                return false;
            }
        }
        int32_t const out = static_cast<int32_t>(value);
        std::memcpy(target, &out, sizeof(out));
        return true;
    }
    float out = 0.F;
    if (field.type == PluginFieldType::kFLOAT32)
    {
        std::memcpy(&out, field.data, sizeof(out));
    }
    else if (field.type == PluginFieldType::kFLOAT64)
    {
        double value = 0.0;
        std::memcpy(&value, field.data, sizeof(value));
        // A double outside the float range does not convert (undefined behaviour): reject it as non-finite.
        if (!std::isfinite(value) || std::fabs(value) > static_cast<double>(std::numeric_limits<float>::max()))
        {
            std::ostringstream os;
            os.precision(17);
            os << "field '" << name << "' must be finite in the float32 range (0 = 1/sqrt(d)), got " << value
               << " (FLOAT64)";
            error = os.str();
            return false;
        }
        out = static_cast<float>(value);
    }
    else if (field.type == PluginFieldType::kINT32)
    {
        int32_t value = 0;
        std::memcpy(&value, field.data, sizeof(value));
        out = static_cast<float>(value);
    }
    else // kINT64
    {
        int64_t value = 0;
        std::memcpy(&value, field.data, sizeof(value));
        out = static_cast<float>(value);
    }
    std::memcpy(target, &out, sizeof(out));
    return true;
}

} // namespace

bool parseFields(PluginFieldCollection const* fc, ElfattAttributes& attrs, std::string& error)
{
    if (fc == nullptr)
    {
        error = "the plugin field collection is null";
        return false;
    }
    if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        error = "the plugin field collection is malformed (nbFields=" + std::to_string(fc->nbFields)
            + (fc->fields == nullptr ? ", fields=null)" : ")");
        return false;
    }
    ElfattAttributes parsed;
    struct Slot
    {
        char const* name;
        SlotKind kind;
        void* target;
        bool seen;
    };
    Slot slots[] = {
        {kFIELD_GLOBAL_HEADS, SlotKind::kINT, &parsed.globalHeads, false},
        {kFIELD_LOCAL_HEADS, SlotKind::kINT, &parsed.localHeads, false},
        {kFIELD_WINDOW_H, SlotKind::kINT, &parsed.windowH, false},
        {kFIELD_WINDOW_W, SlotKind::kINT, &parsed.windowW, false},
        {kFIELD_SCALE, SlotKind::kFLOAT, &parsed.scale, false},
        {kFIELD_HAS_LEPE, SlotKind::kINT, &parsed.hasLepe, false},
    };
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        if (field.name == nullptr)
        {
            error = "field #" + std::to_string(i) + " has a null name";
            return false;
        }
        std::string const name(field.name);
        if (name == kFIELD_PLUGIN_VERSION || name == kFIELD_PLUGIN_NAMESPACE)
        {
            continue; // read by the ONNX parser to find this creator; nothing to do here
        }
        Slot* slot = nullptr;
        for (Slot& s : slots)
        {
            if (name == s.name)
            {
                slot = &s;
            }
        }
        if (slot == nullptr)
        {
            error = "unknown field '" + name + "' (expected " + kFIELD_GLOBAL_HEADS + ", " + kFIELD_LOCAL_HEADS + ", "
                + kFIELD_WINDOW_H + ", " + kFIELD_WINDOW_W + ", " + kFIELD_SCALE + ", and optionally "
                + kFIELD_HAS_LEPE + ", " + kFIELD_PLUGIN_VERSION + ", " + kFIELD_PLUGIN_NAMESPACE + ")";
            return false;
        }
        if (slot->seen)
        {
            error = "field '" + name + "' is given more than once";
            return false;
        }
        slot->seen = true;
        if (!typeAccepted(slot->kind, field.type))
        {
            error = "field '" + name + "' must have type " + acceptedTypes(slot->kind) + ", got "
                + fieldTypeName(field.type) + " (PluginFieldType " + std::to_string(static_cast<int32_t>(field.type))
                + ")";
            return false;
        }
        if (field.length != 1)
        {
            error = "field '" + name + "' must have length 1, got " + std::to_string(field.length);
            return false;
        }
        if (field.data == nullptr)
        {
            error = "field '" + name + "' has null data";
            return false;
        }
        if (!readScalar(field, slot->kind, slot->target, name, error))
        {
            return false;
        }
    }
    if (!validateAttributes(parsed, error))
    {
        return false;
    }
    if (slots[5].seen && parsed.hasLepe != 0 && parsed.hasLepe != 1)
    {
        error = std::string("field '") + kFIELD_HAS_LEPE + "' must be 0 or 1 (whether the LePE inputs are given), got "
            + std::to_string(parsed.hasLepe);
        return false;
    }
    attrs = parsed;
    return true;
}

bool toKernelType(DataType type, elfatt::DataType& out) noexcept
{
    switch (type)
    {
    case DataType::kFLOAT: out = elfatt::DataType::kFLOAT; return true;
    case DataType::kHALF: out = elfatt::DataType::kHALF; return true;
    case DataType::kBF16: out = elfatt::DataType::kBF16; return true;
    default: break;
    }
    return false;
}

// ---------------------------------------------------------------------------------------------------------------------
// ElfattPlugin

ElfattPlugin::ElfattPlugin(std::string layerName, ElfattAttributes const& attrs)
    : mLayerName(std::move(layerName))
    , mAttrs(attrs)
{
}

ElfattPlugin::ElfattPlugin(ElfattPlugin const& other)
    : nvinfer1::IPluginV3()
    , nvinfer1::IPluginV3OneCore()
    , nvinfer1::IPluginV3OneBuild()
    , nvinfer1::IPluginV3OneRuntime()
    , mLayerName(other.mLayerName)
    , mAttrs(other.mAttrs)
{
}

bool ElfattPlugin::recordInputCount(int32_t nbInputs, std::string& error)
{
    int32_t const hasLepe = nbInputs == kNB_INPUTS_LEPE ? 1 : 0;
    if (mAttrs.hasLepe >= 0 && mAttrs.hasLepe != hasLepe)
    {
        error = std::string("got ") + std::to_string(nbInputs) + " input(s), but " + kFIELD_HAS_LEPE + "="
            + std::to_string(mAttrs.hasLepe) + " (from the engine's fields or an earlier call) says "
            + (mAttrs.hasLepe == 1 ? "3 (qkv, lepe_weight, lepe_bias)" : "1 (qkv)");
        return false;
    }
    mAttrs.hasLepe = hasLepe;
    return true;
}

std::string ElfattPlugin::where(char const* method) const
{
    return std::string(kPLUGIN_NAME) + " '" + mLayerName + "': " + method + ": ";
}

nvinfer1::IPluginCapability* ElfattPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    try
    {
        switch (type)
        {
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        logError(where("getCapabilityInterface") + "unknown capability type "
            + std::to_string(static_cast<int32_t>(type)));
    }
    catch (std::exception const& e)
    {
        logCaught("getCapabilityInterface", &e);
    }
    catch (...)
    {
        logCaught("getCapabilityInterface", nullptr);
    }
    return nullptr;
}

nvinfer1::IPluginV3* ElfattPlugin::clone() noexcept
{
    try
    {
        return new ElfattPlugin(*this);
    }
    catch (std::exception const& e)
    {
        logCaught("clone", &e);
    }
    catch (...)
    {
        logCaught("clone", nullptr);
    }
    return nullptr;
}

char const* ElfattPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* ElfattPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* ElfattPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

bool ElfattPlugin::checkCounts(int32_t nbInputs, int32_t nbOutputs, std::string& error) const
{
    if (nbInputs != kNB_INPUTS_NO_LEPE && nbInputs != kNB_INPUTS_LEPE)
    {
        error = "expected 1 input (qkv) or 3 inputs (qkv, lepe_weight, lepe_bias), got " + std::to_string(nbInputs);
        return false;
    }
    if (nbOutputs != kNB_OUTPUTS)
    {
        error = "expected 1 output, got " + std::to_string(nbOutputs);
        return false;
    }
    return true;
}

bool ElfattPlugin::checkShapes(Dims const* inputDims, int32_t nbInputs, std::string& error) const
{
    Dims const& qkv = inputDims[kQKV_INDEX];
    if (qkv.nbDims != kQKV_RANK)
    {
        error = "input 0 (qkv) must be 4-D [B, H, W, 3C], got " + std::to_string(qkv.nbDims) + "-D "
            + dimsToString(qkv);
        return false;
    }
    int64_t const channels3 = qkv.d[3];
    int64_t channels = -1;
    if (channels3 >= 0)
    {
        if (channels3 % kQKV_PARTS != 0)
        {
            error = "qkv channel count 3C = " + std::to_string(channels3) + " (qkv shape " + dimsToString(qkv)
                + ") is not divisible by 3";
            return false;
        }
        channels = channels3 / kQKV_PARTS;
        int64_t const heads = static_cast<int64_t>(mAttrs.globalHeads) + mAttrs.localHeads;
        if (channels % heads != 0)
        {
            error = "C = " + std::to_string(channels) + " is not divisible by the head count global_heads + "
                + "local_heads = " + std::to_string(heads);
            return false;
        }
    }
    if (nbInputs == kNB_INPUTS_LEPE)
    {
        Dims const& weight = inputDims[kLEPE_WEIGHT_INDEX];
        int64_t const expected[kLEPE_WEIGHT_RANK] = {channels, 1, kLEPE_KERNEL, kLEPE_KERNEL};
        bool ok = weight.nbDims == kLEPE_WEIGHT_RANK;
        for (int32_t i = 0; ok && i < kLEPE_WEIGHT_RANK; ++i)
        {
            ok = weight.d[i] < 0 || expected[i] < 0 || weight.d[i] == expected[i];
        }
        if (!ok)
        {
            error = "input 1 (lepe_weight) must have shape [C, 1, 3, 3] = [" + std::to_string(channels)
                + ", 1, 3, 3], got " + dimsToString(weight);
            return false;
        }
        Dims const& bias = inputDims[kLEPE_BIAS_INDEX];
        if (bias.nbDims != kLEPE_BIAS_RANK || (bias.d[0] >= 0 && channels >= 0 && bias.d[0] != channels))
        {
            error = "input 2 (lepe_bias) must have shape [C] = [" + std::to_string(channels) + "], got "
                + dimsToString(bias);
            return false;
        }
    }
    return true;
}

bool ElfattPlugin::makeParams(
    Dims const& qkvDims, DataType type, bool hasLepe, elfatt::AttentionParams& params, std::string& error) const
{
    if (qkvDims.nbDims != kQKV_RANK)
    {
        error = "qkv must be 4-D, got " + dimsToString(qkvDims);
        return false;
    }
    for (int32_t i = 0; i < kQKV_RANK; ++i)
    {
        if (qkvDims.d[i] < 0)
        {
            error = "qkv dimension " + std::to_string(i) + " is not known (" + dimsToString(qkvDims) + ")";
            return false;
        }
    }
    if (!toKernelType(type, params.dtype))
    {
        error = std::string("unsupported data type ") + dataTypeName(type) + "; supported are FLOAT, HALF and BF16";
        return false;
    }
    params.batch = qkvDims.d[0];
    params.height = qkvDims.d[1];
    params.width = qkvDims.d[2];
    params.channels = qkvDims.d[3] / kQKV_PARTS;
    params.globalHeads = mAttrs.globalHeads;
    params.localHeads = mAttrs.localHeads;
    params.windowH = mAttrs.windowH;
    params.windowW = mAttrs.windowW;
    params.scale = mAttrs.scale;
    params.hasLepe = hasLepe;
    char message[kMESSAGE_CAPACITY] = {};
    if (elfatt::validateParams(params, message, sizeof(message)) != elfatt::Status::kSUCCESS)
    {
        message[kMESSAGE_CAPACITY - 1] = '\0';
        error = std::string("invalid parameters for qkv ") + dimsToString(qkvDims) + ": " + message;
        return false;
    }
    return true;
}

int32_t ElfattPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            logError(where("configurePlugin") + error);
            return 1;
        }
        if (in == nullptr || out == nullptr)
        {
            logError(where("configurePlugin") + "null tensor descriptions");
            return 1;
        }
        DataType types[kNB_INPUTS_LEPE + kNB_OUTPUTS];
        Dims dims[kNB_INPUTS_LEPE];
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            types[i] = in[i].desc.type;
            dims[i] = in[i].desc.dims;
        }
        types[nbInputs] = out[0].desc.type;
        if (!checkTypes(types, nbInputs + nbOutputs, error) || !checkShapes(dims, nbInputs, error))
        {
            logError(where("configurePlugin") + error);
            return 1;
        }
        for (int32_t i = 0; i <= nbInputs; ++i)
        {
            TensorFormat const format = (i < nbInputs) ? in[i].desc.format : out[0].desc.format;
            if (format != TensorFormat::kLINEAR)
            {
                logError(where("configurePlugin") + "tensor " + std::to_string(i) + " has format "
                    + std::to_string(static_cast<int32_t>(format)) + "; only kLINEAR is supported");
                return 1;
            }
        }
        // The kernels must accept every shape of the profile: check its bounds now, so that a profile the kernels
        // cannot run (e.g. a max shape whose sizes overflow) fails the build here instead of at run time.
        bool const hasLepe = nbInputs == kNB_INPUTS_LEPE;
        char const* const boundNames[] = {"min", "max"};
        Dims const* const bounds[] = {&in[kQKV_INDEX].min, &in[kQKV_INDEX].max};
        for (int32_t b = 0; b < 2; ++b)
        {
            elfatt::AttentionParams params;
            if (bounds[b]->nbDims == kQKV_RANK && bounds[b]->d[0] >= 0
                && !makeParams(*bounds[b], in[kQKV_INDEX].desc.type, hasLepe, params, error))
            {
                logError(where("configurePlugin") + "the optimization profile's " + boundNames[b] + " shape "
                    + dimsToString(*bounds[b]) + " is not one the kernels can run: " + error
                    + "; build with a smaller --shapes range");
                return 1;
            }
        }
        if (!recordInputCount(nbInputs, error))
        {
            logError(where("configurePlugin") + error);
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logCaught("configurePlugin", &e);
    }
    catch (...)
    {
        logCaught("configurePlugin", nullptr);
    }
    return 1;
}

int32_t ElfattPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            logError(where("getOutputDataTypes") + error);
            return 1;
        }
        if (outputTypes == nullptr || inputTypes == nullptr)
        {
            logError(where("getOutputDataTypes") + "null type array");
            return 1;
        }
        if (!checkTypes(inputTypes, nbInputs, error))
        {
            logError(where("getOutputDataTypes") + error);
            return 1;
        }
        outputTypes[0] = inputTypes[kQKV_INDEX];
        return 0;
    }
    catch (std::exception const& e)
    {
        logCaught("getOutputDataTypes", &e);
    }
    catch (...)
    {
        logCaught("getOutputDataTypes", nullptr);
    }
    return 1;
}

int32_t ElfattPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
    int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            logError(where("getOutputShapes") + error);
            return 1;
        }
        if (inputs == nullptr || outputs == nullptr)
        {
            logError(where("getOutputShapes") + "null shape arrays");
            return 1;
        }
        // Check whatever is already known (build-time constants); the rest is checked in configurePlugin and
        // onShapeChange.
        Dims known[kNB_INPUTS_LEPE];
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            known[i].nbDims = inputs[i].nbDims;
            if (inputs[i].nbDims < 0 || inputs[i].nbDims > Dims::MAX_DIMS)
            {
                logError(where("getOutputShapes") + "input " + std::to_string(i) + " (" + inputName(i)
                    + ") has an invalid rank " + std::to_string(inputs[i].nbDims));
                return 1;
            }
            for (int32_t j = 0; j < inputs[i].nbDims; ++j)
            {
                IDimensionExpr const* e = inputs[i].d[j];
                known[i].d[j] = (e != nullptr && e->isConstant()) ? e->getConstantValue() : -1;
            }
        }
        if (!checkShapes(known, nbInputs, error))
        {
            logError(where("getOutputShapes") + error);
            return 1;
        }
        DimsExprs const& qkv = inputs[kQKV_INDEX];
        IDimensionExpr const* three = exprBuilder.constant(kQKV_PARTS);
        IDimensionExpr const* channels = (three != nullptr && qkv.d[3] != nullptr)
            ? exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *qkv.d[3], *three)
            : nullptr;
        if (channels == nullptr)
        {
            logError(where("getOutputShapes") + "the expression builder could not build C = 3C / 3");
            return 1;
        }
        outputs[0].nbDims = kQKV_RANK;
        outputs[0].d[0] = qkv.d[0];
        outputs[0].d[1] = qkv.d[1];
        outputs[0].d[2] = qkv.d[2];
        outputs[0].d[3] = channels;
        return 0;
    }
    catch (std::exception const& e)
    {
        logCaught("getOutputShapes", &e);
    }
    catch (...)
    {
        logCaught("getOutputShapes", nullptr);
    }
    return 1;
}

bool ElfattPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            logError(where("supportsFormatCombination") + error);
            return false;
        }
        if (inOut == nullptr || pos < 0 || pos >= nbInputs + nbOutputs)
        {
            logError(where("supportsFormatCombination") + "position " + std::to_string(pos) + " is out of range [0, "
                + std::to_string(nbInputs + nbOutputs) + ") or the descriptions are null");
            return false;
        }
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR || !isSupportedType(desc.type))
        {
            return false;
        }
        // Decide from inOut[0..pos] only: every tensor takes qkv's type.
        return pos == kQKV_INDEX || desc.type == inOut[kQKV_INDEX].desc.type;
    }
    catch (std::exception const& e)
    {
        logCaught("supportsFormatCombination", &e);
    }
    catch (...)
    {
        logCaught("supportsFormatCombination", nullptr);
    }
    return false;
}

int32_t ElfattPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

size_t ElfattPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error) || inputs == nullptr || outputs == nullptr)
        {
            logError(where("getWorkspaceSize") + (error.empty() ? std::string("null tensor descriptions") : error));
            return 0;
        }
        // The largest problem of the profile: the kernels' workspace grows with B, H and W, so the size for the
        // max shapes covers every smaller one. Invalid max-shape parameters were already refused by configurePlugin,
        // which TensorRT calls first and whose failure fails the build; this error is logged as well, should a
        // builder ever ask without configuring.
        elfatt::AttentionParams params;
        if (!makeParams(inputs[kQKV_INDEX].max, inputs[kQKV_INDEX].desc.type, nbInputs == kNB_INPUTS_LEPE, params,
                error))
        {
            logError(where("getWorkspaceSize") + "the optimization profile's max shape "
                + dimsToString(inputs[kQKV_INDEX].max) + " is not one the kernels can run: " + error);
            return 0;
        }
        return elfatt::workspaceSize(params);
    }
    catch (std::exception const& e)
    {
        logCaught("getWorkspaceSize", &e);
    }
    catch (...)
    {
        logCaught("getWorkspaceSize", nullptr);
    }
    return 0;
}

char const* ElfattPlugin::getMetadataString() noexcept
{
    try
    {
        mMetadata = mAttrs.toString();
        return mMetadata.c_str();
    }
    catch (std::exception const& e)
    {
        logCaught("getMetadataString", &e);
    }
    catch (...)
    {
        logCaught("getMetadataString", nullptr);
    }
    return nullptr;
}

int32_t ElfattPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        std::string error;
        if (!checkCounts(nbInputs, nbOutputs, error))
        {
            logError(where("onShapeChange") + error);
            return 1;
        }
        if (in == nullptr || out == nullptr)
        {
            logError(where("onShapeChange") + "null tensor descriptions");
            return 1;
        }
        DataType types[kNB_INPUTS_LEPE + kNB_OUTPUTS];
        Dims dims[kNB_INPUTS_LEPE];
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            types[i] = in[i].type;
            dims[i] = in[i].dims;
        }
        types[nbInputs] = out[0].type;
        if (!checkTypes(types, nbInputs + nbOutputs, error) || !checkShapes(dims, nbInputs, error))
        {
            logError(where("onShapeChange") + error);
            return 1;
        }
        elfatt::AttentionParams params;
        if (!makeParams(in[kQKV_INDEX].dims, in[kQKV_INDEX].type, nbInputs == kNB_INPUTS_LEPE, params, error))
        {
            logError(where("onShapeChange") + error);
            return 1;
        }
        Dims const& o = out[0].dims;
        if (o.nbDims != kQKV_RANK || o.d[0] != params.batch || o.d[1] != params.height || o.d[2] != params.width
            || o.d[3] != params.channels)
        {
            logError(where("onShapeChange") + "output shape " + dimsToString(o) + " does not match [B, H, W, C] for qkv "
                + dimsToString(in[kQKV_INDEX].dims));
            return 1;
        }
        if (!recordInputCount(nbInputs, error))
        {
            logError(where("onShapeChange") + error);
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logCaught("onShapeChange", &e);
    }
    catch (...)
    {
        logCaught("onShapeChange", nullptr);
    }
    return 1;
}

int32_t ElfattPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError(where("enqueue") + "null tensor descriptions or pointer arrays");
            return 1;
        }
        if (mAttrs.hasLepe != 0 && mAttrs.hasLepe != 1)
        {
            logError(where("enqueue") + "called before onShapeChange/configurePlugin told the input count, and the "
                "engine's fields carry no has_lepe (an engine from an older plugin: rebuild it)");
            return 1;
        }
        bool const hasLepe = mAttrs.hasLepe == 1;
        elfatt::AttentionParams params;
        std::string error;
        if (!makeParams(inputDesc[kQKV_INDEX].dims, inputDesc[kQKV_INDEX].type, hasLepe, params, error))
        {
            logError(where("enqueue") + error);
            return 1;
        }
        void const* lepeWeight = hasLepe ? inputs[kLEPE_WEIGHT_INDEX] : nullptr;
        void const* lepeBias = hasLepe ? inputs[kLEPE_BIAS_INDEX] : nullptr;
        // Kernels v2 keep their chunk counters in this instance's memory (zeroed once, left zeroed by the
        // kernels) instead of zeroing them in the workspace every time; nullptr: the workspace and a memset.
        size_t const stateBytes = elfatt::stateSize(params);
        void* const state = mCounters.acquire(stateBytes, stream);
        cudaError_t const status = elfatt::enqueueWithState(params, inputs[kQKV_INDEX], lepeWeight, lepeBias,
            outputs[0], workspace, state, state != nullptr ? stateBytes : 0, stream);
        if (status != cudaSuccess)
        {
            mCounters.markDirty();
            logError(where("enqueue") + "elfatt::enqueueWithState failed with " + cudaGetErrorName(status) + " ("
                + cudaGetErrorString(status) + ") for qkv " + dimsToString(inputDesc[kQKV_INDEX].dims) + ", "
                + mAttrs.toString());
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logCaught("enqueue", &e);
    }
    catch (...)
    {
        logCaught("enqueue", nullptr);
    }
    return 1;
}

nvinfer1::IPluginV3* ElfattPlugin::attachToContext(nvinfer1::IPluginResourceContext* /* context */) noexcept
{
    // Per-context resources: the clone's own chunk counters, allocated at its first enqueue (the
    // workspace comes from TensorRT).
    return clone();
}

PluginFieldCollection const* ElfattPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        // Rebuilt on each call so the pointers always refer to this object's members.
        mSerialFields.clear();
        mSerialFields.emplace_back(kFIELD_GLOBAL_HEADS, &mAttrs.globalHeads, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFIELD_LOCAL_HEADS, &mAttrs.localHeads, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFIELD_WINDOW_H, &mAttrs.windowH, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFIELD_WINDOW_W, &mAttrs.windowW, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kFIELD_SCALE, &mAttrs.scale, PluginFieldType::kFLOAT32, 1);
        if (mAttrs.hasLepe == 0 || mAttrs.hasLepe == 1)
        {
            // The input count, so that the runtime plugin does not depend on onShapeChange having run on it.
            mSerialFields.emplace_back(kFIELD_HAS_LEPE, &mAttrs.hasLepe, PluginFieldType::kINT32, 1);
        }
        mSerialFc.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialFc.fields = mSerialFields.data();
        return &mSerialFc;
    }
    catch (std::exception const& e)
    {
        logCaught("getFieldsToSerialize", &e);
    }
    catch (...)
    {
        logCaught("getFieldsToSerialize", nullptr);
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------------
// ElfattPluginCreator

ElfattPluginCreator::ElfattPluginCreator()
    : mFieldNames{{
        PluginField(kFIELD_GLOBAL_HEADS, nullptr, PluginFieldType::kINT32, 1),
        PluginField(kFIELD_LOCAL_HEADS, nullptr, PluginFieldType::kINT32, 1),
        PluginField(kFIELD_WINDOW_H, nullptr, PluginFieldType::kINT32, 1),
        PluginField(kFIELD_WINDOW_W, nullptr, PluginFieldType::kINT32, 1),
        PluginField(kFIELD_SCALE, nullptr, PluginFieldType::kFLOAT32, 1),
    }}
{
    mFc.nbFields = kNB_FIELDS;
    mFc.fields = mFieldNames.data();
}

char const* ElfattPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* ElfattPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* ElfattPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* ElfattPluginCreator::getFieldNames() noexcept
{
    return &mFc;
}

nvinfer1::IPluginV3* ElfattPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    try
    {
        std::string const layerName = (name != nullptr) ? name : "";
        ElfattAttributes attrs;
        std::string error;
        if (!parseFields(fc, attrs, error))
        {
            logError(std::string(kPLUGIN_NAME) + " '" + layerName + "': createPlugin ("
                + (phase == nvinfer1::TensorRTPhase::kBUILD ? "build" : "runtime") + " phase): " + error);
            return nullptr;
        }
        return new ElfattPlugin(layerName, attrs);
    }
    catch (std::exception const& e)
    {
        logCaught("createPlugin", &e);
    }
    catch (...)
    {
        logCaught("createPlugin", nullptr);
    }
    return nullptr;
}

ElfattPluginCreator& getElfattPluginCreator() noexcept
{
    static ElfattPluginCreator sCreator;
    return sCreator;
}

} // namespace trt
} // namespace elfatt
