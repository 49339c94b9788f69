/*
 * elfatt-deploy: header-only test driver of the ElfattAttention TensorRT plugin.
 *
 * Links the plugin classes (elfattPlugin.cpp, elfattPluginLogger.cpp) with the
 * kernel test doubles (kernelStubs.cpp) and libcudart (error strings only): no
 * libnvinfer, no GPU. IExprBuilder / IDimensionExpr / IPluginResourceContext are
 * mocked through their apiv implementation interfaces.
 *
 * Prints "PASS <check>" / "FAIL <check>: <why>" per check and exits non-zero when
 * any check failed. Built and run by tests/test_trt_plugin_headers.py.
 */
#include "elfattPlugin.h"
#include "elfattPluginLogger.h"
#include "kernelStubs.h"

#include <NvInferRuntime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using namespace nvinfer1;
using elfatt::trt::ElfattAttributes;
using elfatt::trt::ElfattPlugin;
using elfatt::trt::ElfattPluginCreator;

namespace
{

int32_t gFailures = 0;
int32_t gChecks = 0;

void check(bool ok, std::string const& name, std::string const& why = "")
{
    ++gChecks;
    if (ok)
    {
        std::printf("PASS %s\n", name.c_str());
    }
    else
    {
        ++gFailures;
        std::printf("FAIL %s: %s\n", name.c_str(), why.c_str());
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Logger capture (installed through an ILoggerFinder, as loadLibrary does)

class CaptureLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        mMessages.emplace_back(severity, msg != nullptr ? msg : "");
    }
    std::string errors() const
    {
        std::string all;
        for (auto const& m : mMessages)
        {
            if (m.first == Severity::kERROR || m.first == Severity::kINTERNAL_ERROR)
            {
                all += m.second + "\n";
            }
        }
        return all;
    }
    void clear()
    {
        mMessages.clear();
    }
    std::vector<std::pair<Severity, std::string>> mMessages;
};

class CaptureFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        if (mThrow)
        {
            throw std::runtime_error("finder failure");
        }
        return mReturnNull ? nullptr : &mLogger;
    }
    CaptureLogger mLogger;
    bool mReturnNull{false};
    bool mThrow{false};
};

CaptureFinder gFinder;
CaptureLogger gFallbackLogger;

ILogger* fallbackSource() noexcept
{
    return &gFallbackLogger;
}

bool contains(std::string const& text, std::string const& part)
{
    return text.find(part) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------------------------------
// Mock expression builder

class MockDimExpr : public IDimensionExpr
{
public:
    MockDimExpr(bool constant, int64_t value, std::string text)
        : mImplObj(constant, value)
        , mText(std::move(text))
    {
        mImpl = &mImplObj;
    }
    ~MockDimExpr() override = default;
    std::string const& text() const
    {
        return mText;
    }

private:
    class Impl : public apiv::VDimensionExpr
    {
    public:
        Impl(bool constant, int64_t value)
            : mConstant(constant)
            , mValue(value)
        {
        }
        bool isConstant() const override
        {
            return mConstant;
        }
        int64_t getConstantValue() const override
        {
            return mConstant ? mValue : std::numeric_limits<int64_t>::min();
        }
        bool isSizeTensor() const override
        {
            return false;
        }

    private:
        bool mConstant;
        int64_t mValue;
    };
    Impl mImplObj;
    std::string mText;
};

class MockExprBuilder : public IExprBuilder
{
public:
    MockExprBuilder()
        : mImplObj(*this)
    {
        mImpl = &mImplObj;
    }
    ~MockExprBuilder() override = default;

    MockDimExpr const* make(bool constant, int64_t value, std::string text)
    {
        mPool.emplace_back(new MockDimExpr(constant, value, std::move(text)));
        return mPool.back().get();
    }
    MockDimExpr const* sym(std::string const& name)
    {
        return make(false, 0, name);
    }
    MockDimExpr const* num(int64_t value)
    {
        return make(true, value, std::to_string(value));
    }
    int32_t mOperations{0};

private:
    class Impl : public apiv::VExprBuilder
    {
    public:
        explicit Impl(MockExprBuilder& owner)
            : mOwner(owner)
        {
        }
        IDimensionExpr const* constant(int64_t value) override
        {
            return mOwner.num(value);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            ++mOwner.mOperations;
            auto const* a = dynamic_cast<MockDimExpr const*>(&first);
            auto const* b = dynamic_cast<MockDimExpr const*>(&second);
            if (a == nullptr || b == nullptr)
            {
                return nullptr;
            }
            std::string const name = op == DimensionOperation::kFLOOR_DIV ? "floor_div"
                : op == DimensionOperation::kCEIL_DIV                     ? "ceil_div"
                                                                          : "op" + std::to_string(static_cast<int>(op));
            if (first.isConstant() && second.isConstant() && op == DimensionOperation::kFLOOR_DIV)
            {
                return mOwner.num(first.getConstantValue() / second.getConstantValue());
            }
            return mOwner.make(false, 0, name + "(" + a->text() + "," + b->text() + ")");
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }

    private:
        MockExprBuilder& mOwner;
    };
    Impl mImplObj;
    std::vector<std::unique_ptr<MockDimExpr>> mPool;
};

class MockResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

// ---------------------------------------------------------------------------------------------------------------------
// Helpers

struct Fields
{
    int32_t globalHeads{2};
    int32_t localHeads{2};
    int32_t windowH{7};
    int32_t windowW{0};
    float scale{0.125F};
    std::vector<PluginField> list;
    PluginFieldCollection fc{};

    PluginFieldCollection const* build(bool withStrings = true)
    {
        list.clear();
        list.emplace_back("global_heads", &globalHeads, PluginFieldType::kINT32, 1);
        list.emplace_back("local_heads", &localHeads, PluginFieldType::kINT32, 1);
        list.emplace_back("window_h", &windowH, PluginFieldType::kINT32, 1);
        list.emplace_back("window_w", &windowW, PluginFieldType::kINT32, 1);
        list.emplace_back("scale", &scale, PluginFieldType::kFLOAT32, 1);
        if (withStrings)
        {
            list.emplace_back("plugin_version", "1", PluginFieldType::kCHAR, 1);
            list.emplace_back("plugin_namespace", "", PluginFieldType::kCHAR, 0);
        }
        fc.nbFields = static_cast<int32_t>(list.size());
        fc.fields = list.data();
        return &fc;
    }
};

std::unique_ptr<ElfattPlugin> create(ElfattPluginCreator& creator, PluginFieldCollection const* fc,
    TensorRTPhase phase = TensorRTPhase::kBUILD, char const* name = "attn0")
{
    return std::unique_ptr<ElfattPlugin>(static_cast<ElfattPlugin*>(creator.createPlugin(name, fc, phase)));
}

Dims dims(std::vector<int64_t> const& values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    for (size_t i = 0; i < values.size(); ++i)
    {
        d.d[i] = values[i];
    }
    return d;
}

PluginTensorDesc desc(std::vector<int64_t> const& values, DataType type = DataType::kFLOAT,
    TensorFormat format = TensorFormat::kLINEAR)
{
    PluginTensorDesc t{};
    t.dims = dims(values);
    t.type = type;
    t.format = format;
    t.scale = 1.F;
    return t;
}

DynamicPluginTensorDesc dyn(std::vector<int64_t> const& desired, std::vector<int64_t> const& mn,
    std::vector<int64_t> const& opt, std::vector<int64_t> const& mx, DataType type = DataType::kFLOAT,
    TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc t{};
    t.desc = desc(desired, type, format);
    t.min = dims(mn);
    t.opt = dims(opt);
    t.max = dims(mx);
    return t;
}

std::string attrs(ElfattAttributes const& a)
{
    return a.toString();
}

// ---------------------------------------------------------------------------------------------------------------------
// Checks

// The creator's field collection points into the creator itself: copying it must not compile.
static_assert(!std::is_copy_constructible<ElfattPluginCreator>::value
        && !std::is_move_constructible<ElfattPluginCreator>::value
        && !std::is_copy_assignable<ElfattPluginCreator>::value,
    "ElfattPluginCreator must be neither copyable nor movable");

void testCreatorBasics(ElfattPluginCreator& creator)
{
    check(std::strcmp(creator.getPluginName(), "ElfattAttention") == 0, "creator.name");
    check(std::strcmp(creator.getPluginVersion(), "1") == 0, "creator.version");
    check(std::strcmp(creator.getPluginNamespace(), "") == 0, "creator.namespace");
    PluginFieldCollection const* fc = creator.getFieldNames();
    bool ok = fc != nullptr && fc->nbFields == 5;
    char const* names[] = {"global_heads", "local_heads", "window_h", "window_w", "scale"};
    PluginFieldType types[] = {PluginFieldType::kINT32, PluginFieldType::kINT32, PluginFieldType::kINT32,
        PluginFieldType::kINT32, PluginFieldType::kFLOAT32};
    for (int32_t i = 0; ok && i < 5; ++i)
    {
        ok = std::strcmp(fc->fields[i].name, names[i]) == 0 && fc->fields[i].type == types[i]
            && fc->fields[i].length == 1;
    }
    check(ok, "creator.getFieldNames", "expected the 5 fields with INT32/FLOAT32 types");
    check(std::strcmp(creator.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator.interfaceKind");
}

void testValidCreate(ElfattPluginCreator& creator)
{
    Fields f;
    gFinder.mLogger.clear();
    auto plugin = create(creator, f.build(true));
    check(plugin != nullptr, "create.valid_with_plugin_version_namespace", gFinder.mLogger.errors());
    if (plugin)
    {
        ElfattAttributes const& a = plugin->getAttributes();
        check(a.globalHeads == 2 && a.localHeads == 2 && a.windowH == 7 && a.windowW == 0 && a.scale == 0.125F,
            "create.values", attrs(a));
        check(std::strcmp(plugin->getPluginName(), "ElfattAttention") == 0
                && std::strcmp(plugin->getPluginVersion(), "1") == 0
                && std::strcmp(plugin->getPluginNamespace(), "") == 0,
            "plugin.identity");
        IPluginV3& v3 = *plugin;
        auto* core = v3.getCapabilityInterface(PluginCapabilityType::kCORE);
        auto* build = v3.getCapabilityInterface(PluginCapabilityType::kBUILD);
        auto* runtime = v3.getCapabilityInterface(PluginCapabilityType::kRUNTIME);
        check(core != nullptr && std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0,
            "plugin.capability.core");
        check(build != nullptr && std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0,
            "plugin.capability.build");
        check(runtime != nullptr && std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
            "plugin.capability.runtime");
        check(v3.getCapabilityInterface(static_cast<PluginCapabilityType>(7)) == nullptr
                && contains(gFinder.mLogger.errors(), "unknown capability type 7"),
            "plugin.capability.unknown_rejected");
        check(plugin->getNbOutputs() == 1, "plugin.getNbOutputs");
        char const* meta = plugin->getMetadataString();
        check(meta != nullptr && contains(meta, "global_heads=2") && contains(meta, "window_h=7"),
            "plugin.metadata", meta != nullptr ? meta : "null");
    }
    // Missing optional fields keep 0: only the head counts given.
    int32_t heads = 3;
    PluginField only[] = {PluginField("local_heads", &heads, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fc{1, only};
    auto partial = create(creator, &fc);
    check(partial != nullptr && partial->getAttributes().localHeads == 3 && partial->getAttributes().globalHeads == 0
            && partial->getAttributes().scale == 0.F,
        "create.missing_fields_default_to_zero");

    // The fields exactly as TensorRT's ONNX parser builds them (onnx-tensorrt loadFields): only the names the
    // creator's getFieldNames() lists, in that order, INT attributes as kINT32 and FLOAT as kFLOAT32, length 1,
    // data in byte buffers (here at odd addresses: the plugin must not assume alignment), no plugin_version.
    {
        PluginFieldCollection const* names = creator.getFieldNames();
        int32_t const ints[4] = {1, 3, 8, 0};
        float const scale = 0.2F;
        std::vector<unsigned char> storage(64, 0);
        std::vector<PluginField> parsed;
        size_t offset = 1;
        for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i)
        {
            bool const isScale = std::strcmp(names->fields[i].name, "scale") == 0;
            void const* src = isScale ? static_cast<void const*>(&scale) : static_cast<void const*>(&ints[i]);
            std::memcpy(storage.data() + offset, src, 4);
            parsed.emplace_back(names->fields[i].name, storage.data() + offset,
                isScale ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32, 1);
            offset += 5;
        }
        PluginFieldCollection onnxFc{static_cast<int32_t>(parsed.size()), parsed.data()};
        gFinder.mLogger.clear();
        auto p = create(creator, &onnxFc);
        ElfattAttributes expected;
        expected.globalHeads = 1;
        expected.localHeads = 3;
        expected.windowH = 8;
        expected.windowW = 0;
        expected.scale = 0.2F;
        check(p != nullptr && p->getAttributes() == expected, "create.onnx_parser_fields_unaligned",
            p ? attrs(p->getAttributes()) : gFinder.mLogger.errors());
    }
    // int64 / float64 data (NumPy defaults from the Python API, or a parser that passes ONNX INT as kINT64).
    {
        int64_t const i64[4] = {2, 6, 7, 14};
        double const scale = 0.1;
        PluginField wide[] = {PluginField("global_heads", &i64[0], PluginFieldType::kINT64, 1),
            PluginField("local_heads", &i64[1], PluginFieldType::kINT64, 1),
            PluginField("window_h", &i64[2], PluginFieldType::kINT64, 1),
            PluginField("window_w", &i64[3], PluginFieldType::kINT64, 1),
            PluginField("scale", &scale, PluginFieldType::kFLOAT64, 1)};
        PluginFieldCollection wideFc{5, wide};
        gFinder.mLogger.clear();
        auto p = create(creator, &wideFc);
        ElfattAttributes expected;
        expected.globalHeads = 2;
        expected.localHeads = 6;
        expected.windowH = 7;
        expected.windowW = 14;
        expected.scale = static_cast<float>(0.1);
        check(p != nullptr && p->getAttributes() == expected, "create.int64_and_float64_fields",
            p ? attrs(p->getAttributes()) : gFinder.mLogger.errors());
        if (p)
        {
            // Serialized back in the canonical types, so the runtime phase sees kINT32 / kFLOAT32.
            PluginFieldCollection const* ser = p->getFieldsToSerialize();
            bool canonical = ser != nullptr && ser->nbFields == 5;
            for (int32_t i = 0; canonical && i < 5; ++i)
            {
                canonical = ser->fields[i].type
                    == (i == 4 ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32);
            }
            check(canonical, "serialize.canonical_types_after_int64_input");
        }
    }
    // An ONNX file written with scale=0 (an INT attribute) reaches the plugin as kINT32.
    {
        int32_t localHeads = 4;
        int32_t zero = 0;
        PluginField intScale[] = {PluginField("local_heads", &localHeads, PluginFieldType::kINT32, 1),
            PluginField("scale", &zero, PluginFieldType::kINT32, 1)};
        PluginFieldCollection intScaleFc{2, intScale};
        auto p = create(creator, &intScaleFc);
        check(p != nullptr && p->getAttributes().scale == 0.F && p->getAttributes().localHeads == 4,
            "create.integer_scale_attribute", gFinder.mLogger.errors());
    }
}

struct BadCase
{
    std::string name;
    std::vector<std::string> mustContain;
};

void expectRejected(ElfattPluginCreator& creator, PluginFieldCollection const* fc, BadCase const& bc)
{
    gFinder.mLogger.clear();
    auto plugin = create(creator, fc, TensorRTPhase::kBUILD, "badLayer");
    std::string const errors = gFinder.mLogger.errors();
    bool ok = plugin == nullptr && contains(errors, "badLayer");
    for (auto const& part : bc.mustContain)
    {
        ok = ok && contains(errors, part);
    }
    check(ok, "reject." + bc.name, plugin != nullptr ? "plugin was created" : "message was: " + errors);
}

void testBadFields(ElfattPluginCreator& creator)
{
    {
        Fields f;
        f.globalHeads = -1;
        expectRejected(creator, f.build(), {"global_heads_negative", {"'global_heads'", ">= 0", "-1"}});
    }
    {
        Fields f;
        f.localHeads = -2;
        expectRejected(creator, f.build(), {"local_heads_negative", {"'local_heads'", ">= 0", "-2"}});
    }
    {
        Fields f;
        f.windowH = -1;
        expectRejected(creator, f.build(), {"window_h_negative", {"'window_h'", ">= 0"}});
    }
    {
        Fields f;
        f.windowW = -3;
        expectRejected(creator, f.build(), {"window_w_negative", {"'window_w'", ">= 0", "-3"}});
    }
    {
        Fields f;
        f.globalHeads = 0;
        f.localHeads = 0;
        expectRejected(creator, f.build(), {"zero_heads", {"global_heads", "local_heads", "zero heads"}});
    }
    {
        Fields f;
        f.scale = std::numeric_limits<float>::quiet_NaN();
        expectRejected(creator, f.build(), {"scale_nan", {"'scale'", "finite"}});
    }
    {
        Fields f;
        f.scale = std::numeric_limits<float>::infinity();
        expectRejected(creator, f.build(), {"scale_inf", {"'scale'", "finite"}});
    }
    {
        Fields f;
        f.scale = -0.5F;
        expectRejected(creator, f.build(), {"scale_negative", {"'scale'", ">= 0"}});
    }
    {
        Fields f;
        f.build();
        f.list[0].type = PluginFieldType::kFLOAT32;
        expectRejected(creator, &f.fc, {"global_heads_wrong_type", {"'global_heads'", "type INT32", "FLOAT32"}});
    }
    {
        Fields f;
        f.build();
        f.list[4].type = PluginFieldType::kCHAR;
        expectRejected(creator, &f.fc, {"scale_wrong_type", {"'scale'", "type FLOAT32", "CHAR"}});
    }
    {
        Fields f;
        f.build();
        f.list[2].type = PluginFieldType::kINT16;
        expectRejected(creator, &f.fc, {"window_h_wrong_type", {"'window_h'", "INT32", "INT16"}});
    }
    {
        Fields f;
        f.build();
        int64_t big = int64_t{1} << 40;
        f.list[0] = PluginField("global_heads", &big, PluginFieldType::kINT64, 1);
        expectRejected(creator, &f.fc, {"global_heads_int64_out_of_range", {"'global_heads'", "int32 range",
                                                                             "1099511627776"}});
    }
    {
        Fields f;
        f.build();
        int64_t negative = -4;
        f.list[3] = PluginField("window_w", &negative, PluginFieldType::kINT64, 1);
        expectRejected(creator, &f.fc, {"window_w_int64_negative", {"'window_w'", ">= 0", "-4"}});
    }
    {
        Fields f;
        f.build();
        double huge = 1e300;
        f.list[4] = PluginField("scale", &huge, PluginFieldType::kFLOAT64, 1);
        expectRejected(creator, &f.fc, {"scale_float64_out_of_float_range", {"'scale'", "float32 range"}});
    }
    {
        Fields f;
        f.build();
        double nan = std::numeric_limits<double>::quiet_NaN();
        f.list[4] = PluginField("scale", &nan, PluginFieldType::kFLOAT64, 1);
        expectRejected(creator, &f.fc, {"scale_float64_nan", {"'scale'", "finite"}});
    }
    {
        Fields f;
        f.build();
        f.list[1].type = PluginFieldType::kCHAR;
        f.list[1].length = 4;
        expectRejected(creator, &f.fc, {"local_heads_string", {"'local_heads'", "INT32 or INT64", "CHAR"}});
    }
    {
        Fields f;
        f.build();
        f.list[3].length = 2;
        expectRejected(creator, &f.fc, {"window_w_wrong_length", {"'window_w'", "length 1", "got 2"}});
    }
    {
        Fields f;
        f.build();
        f.list[4].length = 0;
        expectRejected(creator, &f.fc, {"scale_zero_length", {"'scale'", "length 1", "got 0"}});
    }
    {
        Fields f;
        f.build();
        f.list[1].data = nullptr;
        expectRejected(creator, &f.fc, {"local_heads_null_data", {"'local_heads'", "null data"}});
    }
    {
        Fields f;
        f.build();
        f.list[2].name = "window";
        expectRejected(creator, &f.fc, {"unknown_field", {"unknown field 'window'"}});
    }
    {
        Fields f;
        f.build();
        f.list[1].name = "global_heads";
        expectRejected(creator, &f.fc, {"duplicate_field", {"'global_heads'", "more than once"}});
    }
    {
        Fields f;
        f.build();
        f.list[0].name = nullptr;
        expectRejected(creator, &f.fc, {"null_field_name", {"field #0", "null name"}});
    }
    expectRejected(creator, nullptr, {"null_collection", {"field collection is null"}});
    {
        PluginFieldCollection fc{-1, nullptr};
        expectRejected(creator, &fc, {"negative_nbFields", {"malformed", "nbFields=-1"}});
    }
}

//! Copies a serialized field collection as TensorRT does (names and data), for a runtime-phase createPlugin.
struct SerializedCopy
{
    std::vector<std::string> names;
    std::vector<std::vector<char>> blobs;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};

    explicit SerializedCopy(PluginFieldCollection const& ser)
    {
        for (int32_t i = 0; i < ser.nbFields; ++i)
        {
            names.emplace_back(ser.fields[i].name);
            blobs.emplace_back(static_cast<char const*>(ser.fields[i].data),
                static_cast<char const*>(ser.fields[i].data) + 4 * ser.fields[i].length);
        }
        for (int32_t i = 0; i < ser.nbFields; ++i)
        {
            fields.emplace_back(names[i].c_str(), blobs[i].data(), ser.fields[i].type, ser.fields[i].length);
        }
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
    }
};

//! has_lepe is serialized once configurePlugin saw the inputs: the runtime plugin runs without onShapeChange.
void testHasLepeSerialization(ElfattPluginCreator& creator)
{
    Fields f;
    auto plugin = create(creator, f.build());
    if (!plugin)
    {
        return;
    }
    check(plugin->getFieldsToSerialize()->nbFields == 5, "serialize.no_has_lepe_before_configure");
    std::vector<DynamicPluginTensorDesc> in = {dyn({-1, 8, 8, 48}, {1, 8, 8, 48}, {1, 8, 8, 48}, {2, 8, 8, 48}),
        dyn({16, 1, 3, 3}, {16, 1, 3, 3}, {16, 1, 3, 3}, {16, 1, 3, 3}), dyn({16}, {16}, {16}, {16})};
    std::vector<DynamicPluginTensorDesc> out = {dyn({-1, 8, 8, 16}, {1, 8, 8, 16}, {1, 8, 8, 16}, {2, 8, 8, 16})};
    gFinder.mLogger.clear();
    if (plugin->configurePlugin(in.data(), 3, out.data(), 1) != 0)
    {
        check(false, "serialize.has_lepe_configure", gFinder.mLogger.errors());
        return;
    }
    PluginFieldCollection const* ser = plugin->getFieldsToSerialize();
    bool found = false;
    for (int32_t i = 0; ser != nullptr && i < ser->nbFields; ++i)
    {
        if (std::strcmp(ser->fields[i].name, "has_lepe") == 0)
        {
            int32_t v = -1;
            std::memcpy(&v, ser->fields[i].data, sizeof(v));
            found = v == 1 && ser->fields[i].type == PluginFieldType::kINT32 && ser->fields[i].length == 1;
        }
    }
    check(ser != nullptr && ser->nbFields == 6 && found, "serialize.has_lepe_after_configure");
    SerializedCopy copy(*ser);
    auto restored = create(creator, &copy.fc, TensorRTPhase::kRUNTIME);
    check(restored != nullptr && restored->getAttributes() == plugin->getAttributes()
            && restored->getAttributes().hasLepe == 1,
        "serialize.has_lepe_round_trip");
    if (restored)
    {
        // No onShapeChange on this object: enqueue still knows the LePE inputs are there.
        PluginTensorDesc inDesc[3] = {desc({2, 8, 8, 48}), desc({16, 1, 3, 3}), desc({16})};
        PluginTensorDesc outDesc[1] = {desc({2, 8, 8, 16})};
        void const* inputs[3] = {reinterpret_cast<void*>(0x10), reinterpret_cast<void*>(0x11),
            reinterpret_cast<void*>(0x12)};
        void* outputs[1] = {reinterpret_cast<void*>(0x20)};
        elfatt::test::lastEnqueue() = elfatt::test::EnqueueRecord{};
        gFinder.mLogger.clear();
        check(restored->enqueue(inDesc, outDesc, inputs, outputs, reinterpret_cast<void*>(0x1000), nullptr) == 0
                && elfatt::test::lastEnqueue().params.hasLepe && elfatt::test::lastEnqueue().lepeBias == inputs[2],
            "enqueue.has_lepe_from_serialized_fields", gFinder.mLogger.errors());
    }
    int32_t two = 2;
    Fields g;
    g.build();
    g.list.emplace_back("has_lepe", &two, PluginFieldType::kINT32, 1);
    g.fc.nbFields = static_cast<int32_t>(g.list.size());
    g.fc.fields = g.list.data();
    gFinder.mLogger.clear();
    check(create(creator, &g.fc) == nullptr && contains(gFinder.mLogger.errors(), "'has_lepe' must be 0 or 1") && contains(gFinder.mLogger.errors(), "got 2"),
        "reject.has_lepe_out_of_range", gFinder.mLogger.errors());
}

void testSerialization(ElfattPluginCreator& creator)
{
    Fields f;
    f.globalHeads = 3;
    f.localHeads = 5;
    f.windowH = 4;
    f.windowW = 9;
    f.scale = 0.1F; // not exactly representable: the bits must survive
    auto plugin = create(creator, f.build(false));
    if (!plugin)
    {
        check(false, "serialize.create", gFinder.mLogger.errors());
        return;
    }
    PluginFieldCollection const* ser = plugin->getFieldsToSerialize();
    bool ok = ser != nullptr && ser->nbFields == 5;
    check(ok, "serialize.five_fields");
    if (!ok)
    {
        return;
    }
    // Copy the serialized bytes, as TensorRT does, then restore from the copy in the runtime phase.
    SerializedCopy copy(*ser);
    auto restored = create(creator, &copy.fc, TensorRTPhase::kRUNTIME);
    check(restored != nullptr && restored->getAttributes() == plugin->getAttributes(), "serialize.round_trip",
        restored ? attrs(restored->getAttributes()) + " vs " + attrs(plugin->getAttributes()) : "restore failed");

    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    auto* clonedPlugin = dynamic_cast<ElfattPlugin*>(cloned.get());
    check(clonedPlugin != nullptr && clonedPlugin->getAttributes() == plugin->getAttributes(), "clone.equal");
    if (clonedPlugin != nullptr)
    {
        // The clone's serialized fields point at the clone's own members.
        PluginFieldCollection const* cs = clonedPlugin->getFieldsToSerialize();
        bool own = cs != nullptr && cs->nbFields == 5;
        for (int32_t i = 0; own && i < 5; ++i)
        {
            own = cs->fields[i].data != ser->fields[i].data
                && std::memcmp(cs->fields[i].data, ser->fields[i].data, 4) == 0;
        }
        check(own, "clone.serializes_own_copy");
    }
    MockResourceContext context;
    std::unique_ptr<IPluginV3> attached(plugin->attachToContext(&context));
    auto* attachedPlugin = dynamic_cast<ElfattPlugin*>(attached.get());
    check(attachedPlugin != nullptr && attachedPlugin != plugin.get()
            && attachedPlugin->getAttributes() == plugin->getAttributes(),
        "attachToContext.clone_equal");
    testHasLepeSerialization(creator);
}

void testOutputShapes(ElfattPluginCreator& creator)
{
    Fields f; // 2 + 2 heads
    auto plugin = create(creator, f.build());
    if (!plugin)
    {
        check(false, "shapes.create");
        return;
    }
    MockExprBuilder eb;
    DimsExprs in[4];
    in[0].nbDims = 4;
    in[0].d[0] = eb.sym("B");
    in[0].d[1] = eb.sym("H");
    in[0].d[2] = eb.sym("W");
    in[0].d[3] = eb.num(96);
    in[1].nbDims = 4;
    in[1].d[0] = eb.num(32);
    in[1].d[1] = eb.num(1);
    in[1].d[2] = eb.num(3);
    in[1].d[3] = eb.num(3);
    in[2].nbDims = 1;
    in[2].d[0] = eb.num(32);
    in[3] = in[2];
    auto text = [](IDimensionExpr const* e) {
        auto const* m = dynamic_cast<MockDimExpr const*>(e);
        return m != nullptr ? m->text() : std::string("null");
    };
    for (int32_t nbInputs : {1, 3})
    {
        DimsExprs out[1];
        int32_t const rc = plugin->getOutputShapes(in, nbInputs, nullptr, 0, out, 1, eb);
        std::string const got = out[0].nbDims == 4
            ? text(out[0].d[0]) + "," + text(out[0].d[1]) + "," + text(out[0].d[2]) + "," + text(out[0].d[3])
            : "rank " + std::to_string(out[0].nbDims);
        check(rc == 0 && got == "B,H,W,32", "shapes.static_channels_inputs_" + std::to_string(nbInputs), got);
    }
    {
        DimsExprs symbolic[1] = {in[0]};
        symbolic[0].d[3] = eb.sym("C3");
        DimsExprs out[1];
        int32_t const before = eb.mOperations;
        int32_t const rc = plugin->getOutputShapes(symbolic, 1, nullptr, 0, out, 1, eb);
        check(rc == 0 && out[0].nbDims == 4 && text(out[0].d[3]) == "floor_div(C3,3)" && eb.mOperations > before,
            "shapes.symbolic_channels_use_builder_division", text(out[0].d[3]));
    }
    for (int32_t nbInputs : {0, 2, 4})
    {
        gFinder.mLogger.clear();
        DimsExprs out[1];
        int32_t const rc = plugin->getOutputShapes(in, nbInputs, nullptr, 0, out, 1, eb);
        check(rc != 0 && contains(gFinder.mLogger.errors(), "got " + std::to_string(nbInputs)),
            "shapes.reject_input_count_" + std::to_string(nbInputs), gFinder.mLogger.errors());
    }
    {
        gFinder.mLogger.clear();
        DimsExprs out[2];
        int32_t const rc = plugin->getOutputShapes(in, 1, nullptr, 0, out, 2, eb);
        check(rc != 0 && contains(gFinder.mLogger.errors(), "expected 1 output"), "shapes.reject_output_count");
    }
    struct ShapeCase
    {
        std::string name;
        int32_t index;
        int32_t dim;
        int64_t value;
        std::string message;
    };
    ShapeCase const cases[] = {
        {"channels_not_div_3", 0, 3, 97, "not divisible by 3"},
        {"channels_not_div_heads", 0, 3, 90, "C = 30 is not divisible by the head count"},
        {"lepe_weight_channels", 1, 0, 16, "lepe_weight"},
        {"lepe_weight_kernel", 1, 2, 5, "[C, 1, 3, 3]"},
        {"lepe_bias_channels", 2, 0, 31, "lepe_bias"},
    };
    for (auto const& c : cases)
    {
        DimsExprs bad[3] = {in[0], in[1], in[2]};
        bad[c.index].d[c.dim] = eb.num(c.value);
        gFinder.mLogger.clear();
        DimsExprs out[1];
        int32_t const rc = plugin->getOutputShapes(bad, 3, nullptr, 0, out, 1, eb);
        check(rc != 0 && contains(gFinder.mLogger.errors(), c.message), "shapes.reject_" + c.name,
            gFinder.mLogger.errors());
    }
    {
        DimsExprs bad[1] = {in[0]};
        bad[0].nbDims = 3;
        gFinder.mLogger.clear();
        DimsExprs out[1];
        int32_t const rc = plugin->getOutputShapes(bad, 1, nullptr, 0, out, 1, eb);
        check(rc != 0 && contains(gFinder.mLogger.errors(), "must be 4-D"), "shapes.reject_qkv_rank");
    }
}

void testOutputTypes(ElfattPluginCreator& creator)
{
    Fields f;
    auto plugin = create(creator, f.build());
    if (!plugin)
    {
        return;
    }
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    {
        DataType in[3] = {t, t, t};
        DataType out[1] = {DataType::kINT32};
        check(plugin->getOutputDataTypes(out, 1, in, 3) == 0 && out[0] == t,
            "types.output_follows_input_" + std::to_string(static_cast<int>(t)));
    }
    {
        DataType in[3] = {DataType::kHALF, DataType::kFLOAT, DataType::kHALF};
        DataType out[1];
        gFinder.mLogger.clear();
        check(plugin->getOutputDataTypes(out, 1, in, 3) != 0 && contains(gFinder.mLogger.errors(), "share one type"),
            "types.reject_mixed");
    }
    {
        DataType in[1] = {DataType::kINT8};
        DataType out[1];
        gFinder.mLogger.clear();
        check(plugin->getOutputDataTypes(out, 1, in, 1) != 0 && contains(gFinder.mLogger.errors(), "INT8"),
            "types.reject_int8");
    }
}

void testFormatCombinations(ElfattPluginCreator& creator)
{
    Fields f;
    auto plugin = create(creator, f.build());
    if (!plugin)
    {
        return;
    }
    int32_t const nbTypes = EnumMax<DataType>();
    int32_t const nbFormats = EnumMax<TensorFormat>();
    auto supported = [](DataType t) {
        return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
    };
    int32_t mismatches = 0;
    int32_t accepted = 0;
    std::string firstMismatch;
    for (int32_t nbInputs : {1, 3})
    {
        int32_t const nbIO = nbInputs + 1;
        for (int32_t pos = 0; pos < nbIO; ++pos)
        {
            for (int32_t t0 = 0; t0 < nbTypes; ++t0)
            {
                // Earlier positions hold a combination the plugin accepted (TensorRT's protocol).
                if (pos > 0 && !supported(static_cast<DataType>(t0)))
                {
                    continue;
                }
                for (int32_t t = 0; t < nbTypes; ++t)
                {
                    for (int32_t fmt = 0; fmt < nbFormats; ++fmt)
                    {
                        if (pos == 0 && t != t0)
                        {
                            continue;
                        }
                        std::vector<DynamicPluginTensorDesc> io(nbIO);
                        for (int32_t i = 0; i < pos; ++i)
                        {
                            io[i].desc = desc({1, 4, 4, 12}, static_cast<DataType>(t0), TensorFormat::kLINEAR);
                        }
                        io[pos].desc = desc({1, 4, 4, 12}, static_cast<DataType>(t), static_cast<TensorFormat>(fmt));
                        bool const expected = static_cast<TensorFormat>(fmt) == TensorFormat::kLINEAR
                            && supported(static_cast<DataType>(t)) && (pos == 0 || t == t0);
                        bool const got = plugin->supportsFormatCombination(pos, io.data(), nbInputs, 1);
                        accepted += got ? 1 : 0;
                        if (got != expected)
                        {
                            ++mismatches;
                            if (firstMismatch.empty())
                            {
                                firstMismatch = "nbInputs=" + std::to_string(nbInputs) + " pos=" + std::to_string(pos)
                                    + " t0=" + std::to_string(t0) + " t=" + std::to_string(t)
                                    + " fmt=" + std::to_string(fmt) + " got=" + std::to_string(got);
                            }
                        }
                    }
                }
            }
        }
    }
    // 3 types at pos 0, and for each later position exactly the same type: (1 + 1) * 3 + (1 + 3) * 3.
    check(mismatches == 0 && accepted == 18, "formats.exactly_same_type_linear",
        firstMismatch + " accepted=" + std::to_string(accepted));
    std::vector<DynamicPluginTensorDesc> io(2);
    check(!plugin->supportsFormatCombination(2, io.data(), 1, 1), "formats.reject_pos_out_of_range");
    check(!plugin->supportsFormatCombination(-1, io.data(), 1, 1), "formats.reject_negative_pos");
}

void testConfigureAndWorkspace(ElfattPluginCreator& creator)
{
    Fields f; // 2 global + 2 local heads
    f.windowH = 8;
    f.windowW = 8;
    auto plugin = create(creator, f.build());
    if (!plugin)
    {
        return;
    }
    int64_t const c3 = 3 * 64;
    std::vector<DynamicPluginTensorDesc> in = {
        dyn({-1, -1, -1, c3}, {1, 8, 8, c3}, {2, 32, 32, c3}, {4, 64, 96, c3}),
        dyn({64, 1, 3, 3}, {64, 1, 3, 3}, {64, 1, 3, 3}, {64, 1, 3, 3}),
        dyn({64}, {64}, {64}, {64}),
    };
    std::vector<DynamicPluginTensorDesc> out = {dyn({-1, -1, -1, 64}, {1, 8, 8, 64}, {2, 32, 32, 64}, {4, 64, 96, 64})};
    gFinder.mLogger.clear();
    check(plugin->configurePlugin(in.data(), 3, out.data(), 1) == 0, "configure.valid_3_inputs",
        gFinder.mLogger.errors());
    {
        auto fresh = create(creator, f.build());
        check(fresh && fresh->configurePlugin(in.data(), 1, out.data(), 1) == 0, "configure.valid_1_input",
            gFinder.mLogger.errors());
        gFinder.mLogger.clear();
        check(fresh && fresh->configurePlugin(in.data(), 3, out.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "has_lepe=0"),
            "configure.reject_changed_input_count", gFinder.mLogger.errors());
    }
    {
        // A profile whose max shape the kernels cannot run (sizes overflow) fails the build in configurePlugin
        // (getWorkspaceSize cannot fail a build: its 0 would let it succeed and fail at run time).
        auto fresh = create(creator, f.build());
        auto huge = in;
        huge[0].max = dims({int64_t{1} << 22, int64_t{1} << 22, int64_t{1} << 22, c3});
        gFinder.mLogger.clear();
        check(fresh && fresh->configurePlugin(huge.data(), 3, out.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "profile's max shape [4194304, 4194304, 4194304, 192]")
                && contains(gFinder.mLogger.errors(), "smaller --shapes"),
            "configure.reject_unrunnable_max_shape", gFinder.mLogger.errors());
        gFinder.mLogger.clear();
        check(fresh && fresh->getWorkspaceSize(huge.data(), 3, out.data(), 1) == 0
                && contains(gFinder.mLogger.errors(), "getWorkspaceSize: the optimization profile's max shape"),
            "workspace.unrunnable_max_shape_logged", gFinder.mLogger.errors());
    }
    {
        auto bad = in;
        bad[1].desc.type = DataType::kHALF;
        gFinder.mLogger.clear();
        check(plugin->configurePlugin(bad.data(), 3, out.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "share one type"),
            "configure.reject_mixed_types", gFinder.mLogger.errors());
    }
    {
        auto bad = in;
        bad[2].desc.dims = dims({63});
        gFinder.mLogger.clear();
        check(plugin->configurePlugin(bad.data(), 3, out.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "lepe_bias"),
            "configure.reject_lepe_bias_shape", gFinder.mLogger.errors());
    }
    {
        auto bad = in;
        bad[1].desc.dims = dims({64, 3, 3});
        gFinder.mLogger.clear();
        check(plugin->configurePlugin(bad.data(), 3, out.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "lepe_weight"),
            "configure.reject_lepe_weight_rank", gFinder.mLogger.errors());
    }
    {
        auto bad = in;
        bad[0].desc.dims = dims({-1, -1, -1, 3 * 62});
        gFinder.mLogger.clear();
        check(plugin->configurePlugin(bad.data(), 1, out.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "C = 62 is not divisible by the head count global_heads + "
                                                      "local_heads = 4"),
            "configure.reject_heads_divisibility", gFinder.mLogger.errors());
    }
    {
        auto badOut = out;
        badOut[0].desc.format = TensorFormat::kHWC8;
        gFinder.mLogger.clear();
        check(plugin->configurePlugin(in.data(), 3, badOut.data(), 1) != 0
                && contains(gFinder.mLogger.errors(), "kLINEAR"),
            "configure.reject_format", gFinder.mLogger.errors());
    }

    size_t const ws = plugin->getWorkspaceSize(in.data(), 3, out.data(), 1);
    elfatt::AttentionParams maxParams;
    maxParams.batch = 4;
    maxParams.height = 64;
    maxParams.width = 96;
    maxParams.channels = 64;
    maxParams.globalHeads = 2;
    maxParams.localHeads = 2;
    maxParams.windowH = 8;
    maxParams.windowW = 8;
    maxParams.scale = f.scale;
    maxParams.dtype = elfatt::DataType::kFLOAT;
    maxParams.hasLepe = true;
    check(ws > 0, "workspace.nonzero_with_global_heads", "got 0");
    check(ws == elfatt::workspaceSize(maxParams), "workspace.from_max_shapes",
        std::to_string(ws) + " vs " + std::to_string(elfatt::workspaceSize(maxParams)));
    elfatt::AttentionParams optParams = maxParams;
    optParams.batch = 2;
    optParams.height = 32;
    optParams.width = 32;
    if (elfatt::workspaceSize(optParams) != elfatt::workspaceSize(maxParams))
    {
        check(ws != elfatt::workspaceSize(optParams), "workspace.not_from_opt_shapes");
    }
    // FP16 descs: the dtype reaches the kernels' workspace query.
    {
        auto half = in;
        for (auto& d : half)
        {
            d.desc.type = DataType::kHALF;
        }
        maxParams.dtype = elfatt::DataType::kHALF;
        check(plugin->getWorkspaceSize(half.data(), 3, out.data(), 1) == elfatt::workspaceSize(maxParams),
            "workspace.half_matches_kernel_query");
    }
    if (!elfatt::test::usesRealPlan())
    {
        elfatt::AttentionParams const& p = elfatt::test::lastWorkspaceParams();
        check(p.batch == 4 && p.height == 64 && p.width == 96 && p.channels == 64, "workspace.stub_saw_max_dims");
    }
}

void testRuntime(ElfattPluginCreator& creator)
{
    Fields f;
    f.globalHeads = 1;
    f.localHeads = 3;
    f.windowH = 4;
    f.windowW = 0;
    f.scale = 0.25F;
    auto plugin = create(creator, f.build());
    if (!plugin)
    {
        return;
    }
    void* ws = reinterpret_cast<void*>(0x1000);
    auto* stream = reinterpret_cast<cudaStream_t>(0x2000);
    {
        // A fresh runtime plugin does not know its input count before onShapeChange.
        PluginTensorDesc in[1] = {desc({2, 5, 6, 48})};
        PluginTensorDesc out[1] = {desc({2, 5, 6, 16})};
        void const* inputs[1] = {reinterpret_cast<void*>(0x10)};
        void* outputs[1] = {reinterpret_cast<void*>(0x20)};
        gFinder.mLogger.clear();
        check(plugin->enqueue(in, out, inputs, outputs, ws, stream) != 0
                && contains(gFinder.mLogger.errors(), "before onShapeChange"),
            "enqueue.reject_before_onShapeChange");
    }
    PluginTensorDesc in[3] = {desc({2, 5, 6, 48}, DataType::kHALF), desc({16, 1, 3, 3}, DataType::kHALF),
        desc({16}, DataType::kHALF)};
    PluginTensorDesc out[1] = {desc({2, 5, 6, 16}, DataType::kHALF)};
    gFinder.mLogger.clear();
    check(plugin->onShapeChange(in, 3, out, 1) == 0, "onShapeChange.valid", gFinder.mLogger.errors());
    void const* inputs[3] = {reinterpret_cast<void*>(0x10), reinterpret_cast<void*>(0x11), reinterpret_cast<void*>(0x12)};
    void* outputs[1] = {reinterpret_cast<void*>(0x20)};
    elfatt::test::lastEnqueue() = elfatt::test::EnqueueRecord{};
    check(plugin->enqueue(in, out, inputs, outputs, ws, stream) == 0, "enqueue.success", gFinder.mLogger.errors());
    elfatt::test::EnqueueRecord const& r = elfatt::test::lastEnqueue();
    elfatt::AttentionParams const& p = r.params;
    check(r.calls == 1 && p.batch == 2 && p.height == 5 && p.width == 6 && p.channels == 16 && p.globalHeads == 1
            && p.localHeads == 3 && p.windowH == 4 && p.windowW == 0 && p.scale == 0.25F
            && p.dtype == elfatt::DataType::kHALF && p.hasLepe,
        "enqueue.params_mapped");
    check(r.qkv == inputs[0] && r.lepeWeight == inputs[1] && r.lepeBias == inputs[2] && r.out == outputs[0]
            && r.workspace == ws && r.stream == stream,
        "enqueue.pointers_passed");

    // One input: no LePE pointers (another plugin: the input count of one is fixed once known).
    auto plugin1 = create(creator, f.build());
    PluginTensorDesc in1[1] = {desc({1, 3, 3, 48}, DataType::kBF16)};
    PluginTensorDesc out1[1] = {desc({1, 3, 3, 16}, DataType::kBF16)};
    check(plugin1->onShapeChange(in1, 1, out1, 1) == 0, "onShapeChange.valid_1_input", gFinder.mLogger.errors());
    check(plugin1->enqueue(in1, out1, inputs, outputs, ws, stream) == 0 && !r.params.hasLepe
            && r.lepeWeight == nullptr && r.lepeBias == nullptr && r.params.dtype == elfatt::DataType::kBF16,
        "enqueue.no_lepe");
    gFinder.mLogger.clear();
    check(plugin->onShapeChange(in1, 1, out1, 1) != 0 && contains(gFinder.mLogger.errors(), "has_lepe=1"),
        "onShapeChange.reject_changed_input_count", gFinder.mLogger.errors());

    elfatt::test::setEnqueueResult(cudaErrorInvalidValue);
    gFinder.mLogger.clear();
    check(plugin1->enqueue(in1, out1, inputs, outputs, ws, stream) != 0
            && contains(gFinder.mLogger.errors(), "cudaErrorInvalidValue"),
        "enqueue.kernel_error_logged", gFinder.mLogger.errors());
    elfatt::test::setEnqueueResult(cudaSuccess);

    {
        PluginTensorDesc badOut[1] = {desc({2, 5, 6, 15}, DataType::kHALF)};
        gFinder.mLogger.clear();
        check(plugin->onShapeChange(in, 3, badOut, 1) != 0 && contains(gFinder.mLogger.errors(), "output shape"),
            "onShapeChange.reject_output_shape", gFinder.mLogger.errors());
    }
    {
        PluginTensorDesc badIn[3] = {in[0], desc({16, 1, 3, 3}, DataType::kHALF), desc({8}, DataType::kHALF)};
        gFinder.mLogger.clear();
        check(plugin->onShapeChange(badIn, 3, out, 1) != 0 && contains(gFinder.mLogger.errors(), "lepe_bias"),
            "onShapeChange.reject_lepe_bias", gFinder.mLogger.errors());
    }
    {
        PluginTensorDesc badIn[1] = {desc({2, 5, 6, 49}, DataType::kHALF)};
        gFinder.mLogger.clear();
        check(plugin->onShapeChange(badIn, 1, out, 1) != 0 && contains(gFinder.mLogger.errors(), "3C = 49"),
            "onShapeChange.reject_channels", gFinder.mLogger.errors());
    }
    {
        PluginTensorDesc empty[1] = {desc({0, 5, 6, 48}, DataType::kFLOAT)};
        PluginTensorDesc emptyOut[1] = {desc({0, 5, 6, 16}, DataType::kFLOAT)};
        check(plugin1->onShapeChange(empty, 1, emptyOut, 1) == 0
                && plugin1->enqueue(empty, emptyOut, inputs, outputs, ws, stream) == 0 && r.params.batch == 0,
            "enqueue.empty_batch_passed_to_kernels", gFinder.mLogger.errors());
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// PersistentCounters against a fake CUDA runtime

struct FakeCuda
{
    int device{0};
    cudaError_t deviceResult{cudaSuccess};
    cudaError_t mallocResult{cudaSuccess};
    cudaStreamCaptureStatus capture{cudaStreamCaptureStatusNone};
    cudaStreamCaptureMode mode{cudaStreamCaptureModeGlobal};
    cudaStreamCaptureMode modeAtMalloc{cudaStreamCaptureModeGlobal};
    std::vector<cudaStreamCaptureMode> modesAtFree;
    int mallocs{0};
    int frees{0};
    int memsets{0};
    int lastErrorReads{0};
    int setDevices{0};
    size_t lastMallocBytes{0};
    size_t lastMemsetBytes{0};
    void* lastMemsetPtr{nullptr};
    cudaStream_t lastMemsetStream{nullptr};
    std::vector<void*> freed;
    std::vector<std::unique_ptr<unsigned char[]>> blocks;
};
FakeCuda gFake;

elfatt::trt::CounterCudaApi const kFAKE_API{
    [](int* device) {
        *device = gFake.device;
        return gFake.deviceResult;
    },
    [](int device) {
        ++gFake.setDevices;
        gFake.device = device;
        return cudaSuccess;
    },
    [](void** ptr, size_t bytes) {
        ++gFake.mallocs;
        gFake.lastMallocBytes = bytes;
        gFake.modeAtMalloc = gFake.mode;
        if (gFake.mallocResult != cudaSuccess)
        {
            return gFake.mallocResult;
        }
        gFake.blocks.emplace_back(new unsigned char[bytes]);
        *ptr = gFake.blocks.back().get();
        return cudaSuccess;
    },
    [](void* ptr) {
        ++gFake.frees;
        gFake.freed.push_back(ptr);
        gFake.modesAtFree.push_back(gFake.mode);
        return cudaSuccess;
    },
    [](void* ptr, int, size_t bytes, cudaStream_t stream) {
        ++gFake.memsets;
        gFake.lastMemsetPtr = ptr;
        gFake.lastMemsetBytes = bytes;
        gFake.lastMemsetStream = stream;
        return cudaSuccess;
    },
    [](cudaStream_t, cudaStreamCaptureStatus* status) {
        *status = gFake.capture;
        return cudaSuccess;
    },
    [](cudaStreamCaptureMode* mode) {
        std::swap(*mode, gFake.mode);
        return cudaSuccess;
    },
    []() {
        ++gFake.lastErrorReads;
        return cudaSuccess;
    },
};

void testPersistentCounters()
{
    using elfatt::trt::PersistentCounters;
    cudaStream_t const stream = reinterpret_cast<cudaStream_t>(0x5);
    gFake = FakeCuda{};
    void* larger = nullptr;
    void* first = nullptr;
    {
        PersistentCounters c(kFAKE_API);
        check(c.acquire(0, stream) == nullptr && gFake.mallocs == 0, "counters.none_needed");
        first = c.acquire(24, stream);
        check(first != nullptr && gFake.mallocs == 1 && gFake.lastMallocBytes == PersistentCounters::kMIN_BYTES
                && gFake.memsets == 1 && gFake.lastMemsetPtr == first
                && gFake.lastMemsetBytes == PersistentCounters::kMIN_BYTES && gFake.lastMemsetStream == stream,
            "counters.allocated_and_zeroed_in_stream_once");
        check(gFake.modeAtMalloc == cudaStreamCaptureModeRelaxed && gFake.mode == cudaStreamCaptureModeGlobal,
            "counters.allocated_in_relaxed_capture_mode_then_restored");
        void* const again = c.acquire(24, stream);
        check(again == first && gFake.mallocs == 1 && gFake.memsets == 1, "counters.reused_without_memset");
        c.markDirty();
        check(c.acquire(24, stream) == first && gFake.memsets == 2, "counters.zeroed_again_after_a_failure");
        larger = c.acquire(PersistentCounters::kMIN_BYTES + 4, stream);
        // a graph captured with `first` may still replay: it is kept, not freed, until the destructor
        check(larger != nullptr && larger != first && gFake.frees == 0 && c.retired() == 1 && gFake.mallocs == 2
                && gFake.lastMallocBytes == 2 * PersistentCounters::kMIN_BYTES && gFake.memsets == 3,
            "counters.grow_retires_the_smaller_without_freeing");
        PersistentCounters copy(c);
        check(copy.capacity() == 0 && c.capacity() == 2 * PersistentCounters::kMIN_BYTES,
            "counters.copy_owns_nothing");
        gFake.capture = cudaStreamCaptureStatusActive;
        check(copy.acquire(24, stream) == nullptr && gFake.mallocs == 2, "counters.no_allocation_while_capturing");
        check(c.acquire(24, stream) == larger && gFake.memsets == 3, "counters.clean_ones_usable_while_capturing");
        c.markDirty();
        check(c.acquire(24, stream) == nullptr && gFake.memsets == 3, "counters.no_memset_of_dirty_ones_while_capturing");
        gFake.capture = cudaStreamCaptureStatusNone;
        gFake.device = 1;
        check(c.acquire(24, stream) == nullptr && gFake.mallocs == 2 && gFake.frees == 0,
            "counters.other_device_left_alone");
        gFake.deviceResult = cudaErrorNoDevice;
        int const reads = gFake.lastErrorReads;
        check(copy.acquire(24, stream) == nullptr && gFake.lastErrorReads == reads + 1, "counters.no_device");
        gFake.deviceResult = cudaSuccess;
        gFake.mallocResult = cudaErrorMemoryAllocation;
        check(copy.acquire(24, stream) == nullptr && gFake.lastErrorReads == reads + 2 && copy.capacity() == 0
                && gFake.mode == cudaStreamCaptureModeGlobal,
            "counters.allocation_failure_cleared");
        gFake.mallocResult = cudaSuccess;
        // gFake.device is 1 now: the destructor frees on the buffers' device 0 and switches back
    }
    bool const bothFreed = gFake.frees == 2 && gFake.freed.size() == 2
        && ((gFake.freed[0] == first && gFake.freed[1] == larger) || (gFake.freed[0] == larger && gFake.freed[1] == first));
    check(bothFreed && gFake.device == 1 && gFake.setDevices == 2, "counters.freed_by_the_destructor_on_their_device",
        std::to_string(gFake.frees) + " frees, " + std::to_string(gFake.setDevices) + " setDevice calls");
    bool const relaxedFrees = gFake.modesAtFree.size() == 2 && gFake.modesAtFree[0] == cudaStreamCaptureModeRelaxed
        && gFake.modesAtFree[1] == cudaStreamCaptureModeRelaxed && gFake.mode == cudaStreamCaptureModeGlobal;
    check(relaxedFrees, "counters.freed_in_relaxed_capture_mode_then_restored");
}

//! The plugin's own use of its counters (through the default API, here the fake): passed to the kernels with
//! their size, zeroed once, zeroed again after a failed enqueue, and a clone has its own.
void testPluginCounters(ElfattPluginCreator& creator)
{
    gFake = FakeCuda{};
    {
        Fields f;
        f.globalHeads = 1;
        f.localHeads = 3;
        f.windowH = 4;
        auto plugin = create(creator, f.build());
        // float16, head dim 32: kernels v2's shape (the real planner gives state only there)
        PluginTensorDesc in[3] = {desc({2, 5, 6, 384}, DataType::kHALF), desc({128, 1, 3, 3}, DataType::kHALF),
            desc({128}, DataType::kHALF)};
        PluginTensorDesc out[1] = {desc({2, 5, 6, 128}, DataType::kHALF)};
        void const* inputs[3] = {reinterpret_cast<void*>(0x10), reinterpret_cast<void*>(0x11),
            reinterpret_cast<void*>(0x12)};
        void* outputs[1] = {reinterpret_cast<void*>(0x20)};
        void* ws = reinterpret_cast<void*>(0x1000);
        cudaStream_t stream = reinterpret_cast<cudaStream_t>(0x2000);
        check(plugin != nullptr && plugin->onShapeChange(in, 3, out, 1) == 0, "plugin_counters.setup",
            gFinder.mLogger.errors());
        elfatt::test::EnqueueRecord const& r = elfatt::test::lastEnqueue();
        bool ok = plugin->enqueue(in, out, inputs, outputs, ws, stream) == 0;
        void* const state = r.state;
        check(ok && state != nullptr && r.stateBytes == elfatt::stateSize(r.params) && r.stateBytes > 0
                && gFake.mallocs == 1 && gFake.memsets == 1 && gFake.lastMemsetStream == stream,
            "plugin_counters.passed_to_the_kernels_zeroed_in_stream");
        ok = plugin->enqueue(in, out, inputs, outputs, ws, stream) == 0;
        check(ok && r.state == state && gFake.memsets == 1, "plugin_counters.no_memset_on_later_enqueues");
        elfatt::test::setEnqueueResult(cudaErrorLaunchFailure);
        check(plugin->enqueue(in, out, inputs, outputs, ws, stream) != 0, "plugin_counters.failed_enqueue_reported");
        elfatt::test::setEnqueueResult(cudaSuccess);
        ok = plugin->enqueue(in, out, inputs, outputs, ws, stream) == 0;
        check(ok && r.state == state && gFake.memsets == 2, "plugin_counters.zeroed_again_after_a_failed_enqueue");
        std::unique_ptr<IPluginV3> clone(plugin->clone());
        auto* runtime = clone == nullptr ? nullptr
            : static_cast<IPluginV3OneRuntime*>(clone->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        ok = runtime != nullptr && runtime->onShapeChange(in, 3, out, 1) == 0
            && runtime->enqueue(in, out, inputs, outputs, ws, stream) == 0;
        check(ok && r.state != nullptr && r.state != state && gFake.mallocs == 2, "plugin_counters.clone_has_its_own");
        gFake.capture = cudaStreamCaptureStatusActive;
        std::unique_ptr<IPluginV3> capturing(plugin->clone());
        runtime = capturing == nullptr ? nullptr
            : static_cast<IPluginV3OneRuntime*>(capturing->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        ok = runtime != nullptr && runtime->onShapeChange(in, 3, out, 1) == 0
            && runtime->enqueue(in, out, inputs, outputs, ws, stream) == 0;
        check(ok && r.state == nullptr && r.stateBytes == 0 && gFake.mallocs == 2,
            "plugin_counters.memset_path_when_first_enqueued_under_capture");
        gFake.capture = cudaStreamCaptureStatusNone;
    }
    check(gFake.frees == 2, "plugin_counters.freed_with_the_instances", std::to_string(gFake.frees) + " frees");
}

void testLoggerRouting(ElfattPluginCreator& creator)
{
    Fields f;
    f.globalHeads = -7;
    // Finder without a logger: the fallback source gets the message.
    gFinder.mReturnNull = true;
    gFallbackLogger.clear();
    auto p1 = create(creator, f.build());
    check(p1 == nullptr && contains(gFallbackLogger.errors(), "'global_heads'"), "logger.fallback_when_finder_empty");
    // Finder that throws (findLogger is not noexcept in TensorRT 10): no exception escapes, fallback used.
    gFinder.mReturnNull = false;
    gFinder.mThrow = true;
    gFallbackLogger.clear();
    auto p2 = create(creator, f.build());
    check(p2 == nullptr && contains(gFallbackLogger.errors(), "'global_heads'"), "logger.finder_exception_contained");
    gFinder.mThrow = false;
    gFallbackLogger.clear();
    gFinder.mLogger.clear();
    auto p3 = create(creator, f.build());
    check(p3 == nullptr && contains(gFinder.mLogger.errors(), "[ElfattAttention]") && gFallbackLogger.errors().empty(),
        "logger.finder_preferred");
}

} // namespace

int main()
{
    std::printf("TensorRT headers %d.%d.%d, kernels: %s\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH,
        elfatt::test::usesRealPlan() ? "real plan.cpp" : "stubs");
    elfatt::trt::setPluginLoggerFinder(&gFinder);
    elfatt::trt::setFallbackLoggerSource(&fallbackSource);
    // The plugins' counters go through the fake CUDA runtime (the test's streams are fake handles, which the
    // real cudaStreamIsCapturing must not see on a machine with a GPU); testPluginCounters checks their use.
    elfatt::trt::setDefaultCounterCudaApi(&kFAKE_API);
    ElfattPluginCreator& creator = elfatt::trt::getElfattPluginCreator();
    testCreatorBasics(creator);
    testValidCreate(creator);
    testBadFields(creator);
    testSerialization(creator);
    testOutputShapes(creator);
    testOutputTypes(creator);
    testFormatCombinations(creator);
    testConfigureAndWorkspace(creator);
    testRuntime(creator);
    testPersistentCounters();
    testPluginCounters(creator);
    testLoggerRouting(creator);
    elfatt::trt::setPluginLoggerFinder(nullptr);
    std::printf("SUMMARY %d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
