/*
 * elfatt-deploy: the loadLibrary entry points, the one registration style of
 * libelfatt_trt_plugin_vc.so (named after NVIDIA's libnvinfer_vc_plugin, which ships its
 * plugins the same way).
 *
 * IPluginRegistry::loadLibrary (Python: registry.load_library), trtexec --dynamicPlugins and an
 * engine serialized with trtexec --setPluginsToSerialize dlopen the library, call
 * setLoggerFinder() and getCreators(), and register the returned creators themselves (and
 * deregisterLibrary() removes them). The library registers nothing on its own: no static
 * initializer touches the registry, so loadLibrary never finds the creator already there because
 * of this library. The exported symbols are exactly these two (elfatt_trt_plugin_vc.map).
 * Tools that only dlopen a library take libelfatt_trt_plugin.so instead
 * (elfattPluginStaticRegistration.cpp). See docs/plugin.md.
 */
#include "elfattPlugin.h"
#include "elfattPluginLogger.h"

#include <NvInferRuntime.h>

#if defined(__GNUC__)
#define ELFATT_TRT_EXPORT __attribute__((visibility("default")))
#else
#define ELFATT_TRT_EXPORT
#endif

namespace
{

//! Messages before setLoggerFinder (or when the finder has no logger) go to libnvinfer's logger.
nvinfer1::ILogger* libnvinferLogger() noexcept
{
    return ::getLogger();
}

} // namespace

//! Entry point of IPluginRegistry::loadLibrary: the creators of this library (one).
extern "C" ELFATT_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    try
    {
        elfatt::trt::setFallbackLoggerSource(&libnvinferLogger);
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
