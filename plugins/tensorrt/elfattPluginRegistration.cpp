/*
 * elfatt-deploy: how libelfatt_trt_plugin.so gets its ElfattAttention creator into
 * TensorRT's plugin registry, whichever way the library is loaded.
 *
 * This is the only translation unit that needs libnvinfer (getPluginRegistry,
 * getLogger). The exported symbols of the library are exactly the two entry
 * points below (visibility hidden + version script elfatt_trt_plugin.map).
 *
 * Two registration paths, one creator object (getElfattPluginCreator()):
 *
 *  (b) static registration: a static initializer (gStaticRegistrar) registers the
 *      creator with getPluginRegistry()->registerCreator(creator, "") when the
 *      library is loaded. This serves plain dlopen, ctypes.CDLL, Polygraphy
 *      --plugins and trtexec --staticPlugins, which only dlopen the library.
 *
 *  (a) IPluginRegistry::loadLibrary / trtexec --dynamicPlugins dlopen the library
 *      (running the static initializer above!), then call setLoggerFinder() and
 *      getCreators(), and register the returned creators themselves. loadLibrary
 *      refuses a library whose creators are already registered, so getCreators()
 *      first deregisters the creator that the static initializer registered: the
 *      registry then owns the registration (and deregisterLibrary() undoes it).
 *
 * Loading the same file both ways works in either order: dlopen returns the
 * same handle, the static initializer runs only once, and getCreators() hands
 * the statically registered creator over to loadLibrary. The static initializer
 * skips registration when a creator of the same name/version/namespace is
 * already in the registry (for example one from another copy of this library),
 * so it never produces a registry error of its own. See docs/plugin.md.
 */
#include "elfattPlugin.h"
#include "elfattPluginLogger.h"

#include <NvInferRuntime.h>

#include <cstring>
#include <exception>
#include <mutex>

#if defined(__GNUC__)
#define ELFATT_TRT_EXPORT __attribute__((visibility("default")))
#else
#define ELFATT_TRT_EXPORT
#endif

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

//! Whether a creator with our name, version and namespace is in the registry (scanned, so that a miss logs nothing).
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

//! State of the static registration, guarded by its mutex.
struct StaticRegistration
{
    std::mutex mMutex;
    bool mRegistered{false};
};

StaticRegistration& staticRegistration() noexcept
{
    static StaticRegistration sState;
    return sState;
}

void registerStatically() noexcept
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
        StaticRegistration& state = staticRegistration();
        std::lock_guard<std::mutex> lock(state.mMutex);
        if (state.mRegistered)
        {
            return;
        }
        if (isNameRegistered(*registry))
        {
            logVerbose("static registration skipped: a creator ElfattAttention version 1 is already registered");
            return;
        }
        if (registry->registerCreator(getElfattPluginCreator(), kPLUGIN_NAMESPACE))
        {
            state.mRegistered = true;
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

//! Undoes the static registration, if this library made it. Returns false on a registry error.
bool deregisterStatic(bool quiet) noexcept
{
    try
    {
        StaticRegistration& state = staticRegistration();
        std::lock_guard<std::mutex> lock(state.mMutex);
        if (!state.mRegistered)
        {
            return true;
        }
        state.mRegistered = false;
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr || !registry->deregisterCreator(getElfattPluginCreator()))
        {
            if (!quiet)
            {
                logWarning("could not deregister the statically registered creator ElfattAttention version 1");
            }
            return false;
        }
        if (!quiet)
        {
            logVerbose("handed the creator ElfattAttention version 1 over from static registration to loadLibrary");
        }
        return true;
    }
    catch (...)
    {
        if (!quiet)
        {
            logMessage(Severity::kERROR, "could not deregister the static creator: unknown exception");
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
        registerStatically();
    }
    ~StaticRegistrar()
    {
        deregisterStatic(/* quiet = */ true);
    }
    StaticRegistrar(StaticRegistrar const&) = delete;
    StaticRegistrar& operator=(StaticRegistrar const&) = delete;
    StaticRegistrar(StaticRegistrar&&) = delete;
    StaticRegistrar& operator=(StaticRegistrar&&) = delete;
};

StaticRegistrar gStaticRegistrar{};

} // namespace
} // namespace trt
} // namespace elfatt

//! Entry point of IPluginRegistry::loadLibrary (trtexec --dynamicPlugins): the creators of this library.
//! Deregisters the static registration first so that loadLibrary can register the creator itself.
extern "C" ELFATT_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    try
    {
        elfatt::trt::deregisterStatic(/* quiet = */ false);
        static nvinfer1::IPluginCreatorInterface* const sCreators[] = {&elfatt::trt::getElfattPluginCreator()};
        nbCreators = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
        return sCreators;
    }
    catch (...)
    {
        elfatt::trt::logMessage(elfatt::trt::Severity::kERROR, "getCreators failed: unknown exception");
    }
    nbCreators = 0;
    return nullptr;
}

//! Entry point of IPluginRegistry::loadLibrary: the logger finder of the loading TensorRT.
extern "C" ELFATT_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    elfatt::trt::setPluginLoggerFinder(finder);
}
