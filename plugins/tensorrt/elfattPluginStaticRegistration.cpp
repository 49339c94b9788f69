/*
 * elfatt-deploy: static registration, the one registration style of libelfatt_trt_plugin.so.
 *
 * A static initializer registers the ElfattAttention creator with
 * getPluginRegistry()->registerCreator(creator, "") when the library is loaded, and removes it
 * again when the library is unloaded. This is what every tool that only dlopens a plugin
 * library relies on: dlopen, ctypes.CDLL, Polygraphy --plugins, trtexec --staticPlugins,
 * Triton's TensorRT backend (plugins=, or LD_PRELOAD), DeepStream's custom-lib-path and ONNX
 * Runtime's trt_extra_plugin_lib_paths. The library exports no symbol of its own
 * (elfatt_trt_plugin.map): it has no getCreators, so IPluginRegistry::loadLibrary refuses it;
 * that path takes libelfatt_trt_plugin_vc.so (elfattPluginCreators.cpp), built from the same
 * objects. See docs/plugin.md.
 *
 * The initializer skips registration quietly when a creator of the same name, version and
 * namespace is already registered (another copy of this library, or the _vc library loaded
 * first), so loading never produces a registry error of its own; whether it registered is
 * logged at verbose level.
 */
#include "elfattPlugin.h"
#include "elfattPluginLogger.h"

#include <NvInferRuntime.h>

#include <cstring>
#include <exception>

namespace elfatt
{
namespace trt
{
namespace
{

//! The fallback logger, as TensorRT's own plugin library uses when no logger finder was given.
nvinfer1::ILogger* libnvinferLogger() noexcept
{
    return ::getLogger();
}

bool isOurCreator(nvinfer1::IPluginCreatorInterface const* creator) noexcept
{
    if (creator == nullptr)
    {
        return false;
    }
    nvinfer1::InterfaceInfo const info = creator->getInterfaceInfo();
    if (info.kind == nullptr || std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return false;
    }
    auto const* v3 = static_cast<nvinfer1::IPluginCreatorV3One const*>(creator);
    char const* name = v3->getPluginName();
    char const* version = v3->getPluginVersion();
    char const* ns = v3->getPluginNamespace();
    return name != nullptr && version != nullptr && ns != nullptr && std::strcmp(name, kPLUGIN_NAME) == 0
        && std::strcmp(version, kPLUGIN_VERSION) == 0 && std::strcmp(ns, kPLUGIN_NAMESPACE) == 0;
}

//! Whether a creator with our name, version and namespace is registered (scanned: a miss logs nothing).
bool isNameRegistered(nvinfer1::IPluginRegistry& registry) noexcept
{
    int32_t nbCreators = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = registry.getAllCreators(&nbCreators);
    for (int32_t i = 0; creators != nullptr && i < nbCreators; ++i)
    {
        if (isOurCreator(creators[i]))
        {
            return true;
        }
    }
    return false;
}

//! Registers on load; on unload removes the registry's pointer to a creator that is about to be destroyed.
class StaticRegistrar
{
public:
    StaticRegistrar() noexcept
    {
        try
        {
            setFallbackLoggerSource(&libnvinferLogger);
            nvinfer1::IPluginRegistry* registry = getPluginRegistry();
            if (registry == nullptr)
            {
                logError("static registration: getPluginRegistry() returned null; the plugin is not registered");
                return;
            }
            if (isNameRegistered(*registry))
            {
                logVerbose("static registration skipped: a creator ElfattAttention version 1 is already registered");
                return;
            }
            mRegistered = registry->registerCreator(getElfattPluginCreator(), kPLUGIN_NAMESPACE);
            if (mRegistered)
            {
                logVerbose("registered plugin creator ElfattAttention version 1 (static registration)");
            }
            else
            {
                logWarning("static registration: the plugin registry refused the creator ElfattAttention version 1");
            }
        }
        catch (std::exception const& e)
        {
            logMessage(Severity::kERROR, "static registration failed with an exception:");
            logMessage(Severity::kERROR, e.what());
        }
        catch (...)
        {
            logMessage(Severity::kERROR, "static registration failed: unknown exception");
        }
    }

    ~StaticRegistrar()
    {
        if (!mRegistered)
        {
            return;
        }
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry != nullptr)
        {
            registry->deregisterCreator(getElfattPluginCreator());
        }
    }

    StaticRegistrar(StaticRegistrar const&) = delete;
    StaticRegistrar& operator=(StaticRegistrar const&) = delete;
    StaticRegistrar(StaticRegistrar&&) = delete;
    StaticRegistrar& operator=(StaticRegistrar&&) = delete;

private:
    bool mRegistered{false};
};

StaticRegistrar gStaticRegistrar{};

} // namespace
} // namespace trt
} // namespace elfatt
