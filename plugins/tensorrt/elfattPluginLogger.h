/*
 * elfatt-deploy: logging for the ElfattAttention TensorRT plugin.
 *
 * This translation unit needs no TensorRT library (headers only), so the plugin
 * classes and the header-only test driver can link without libnvinfer.
 *
 * Where a message goes, in order of preference:
 *  1. the ILogger of the ILoggerFinder that TensorRT passed to setLoggerFinder()
 *     (IPluginRegistry::loadLibrary / trtexec --dynamicPlugins),
 *  2. the logger returned by the fallback source, which the registration TU
 *     (elfattPluginStaticRegistration.cpp, elfattPluginCreators.cpp) points at libnvinfer's getLogger(), the way
 *     TensorRT's own plugin library falls back when no finder was given,
 *  3. stderr, for warnings and errors (info/verbose need a logger): an error is
 *     never dropped silently.
 */
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace elfatt
{
namespace trt
{

using Severity = nvinfer1::ILogger::Severity;

//! Signature of a function that returns a process-wide logger (or nullptr).
using LoggerSource = nvinfer1::ILogger* (*) () noexcept;

//! Stores the finder given by TensorRT (nullptr clears it). Thread safe, never throws.
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Sets the fallback used when no finder is set or the finder has no logger.
void setFallbackLoggerSource(LoggerSource source) noexcept;

//! Returns the logger messages go to now, or nullptr when they go to stderr.
nvinfer1::ILogger* getPluginLogger() noexcept;

//! Logs msg (prefixed with the plugin name) at the given severity. Never throws.
void logMessage(Severity severity, char const* msg) noexcept;
void logMessage(Severity severity, std::string const& msg) noexcept;

inline void logError(std::string const& msg) noexcept
{
    logMessage(Severity::kERROR, msg);
}

inline void logWarning(std::string const& msg) noexcept
{
    logMessage(Severity::kWARNING, msg);
}

inline void logVerbose(std::string const& msg) noexcept
{
    logMessage(Severity::kVERBOSE, msg);
}

} // namespace trt
} // namespace elfatt
