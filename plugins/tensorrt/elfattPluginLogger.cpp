/*
 * elfatt-deploy: logging for the ElfattAttention TensorRT plugin (see the header).
 */
#include "elfattPluginLogger.h"

#include <cstdio>
#include <mutex>

namespace elfatt
{
namespace trt
{
namespace
{

constexpr char const* kLOG_PREFIX = "[ElfattAttention] ";

//! Shared state, a function-local static so it is ready before any static initializer uses it.
struct LoggerState
{
    std::mutex mMutex;
    nvinfer1::ILoggerFinder* mFinder{nullptr};
    LoggerSource mFallback{nullptr};
};

LoggerState& loggerState() noexcept
{
    static LoggerState sState;
    return sState;
}

char const* severityTag(Severity severity) noexcept
{
    switch (severity)
    {
    case Severity::kINTERNAL_ERROR: return "F";
    case Severity::kERROR: return "E";
    case Severity::kWARNING: return "W";
    case Severity::kINFO: return "I";
    case Severity::kVERBOSE: return "V";
    }
    return "?";
}

} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    try
    {
        LoggerState& state = loggerState();
        std::lock_guard<std::mutex> lock(state.mMutex);
        state.mFinder = finder;
    }
    catch (...)
    {
        std::fputs("[E] [ElfattAttention] setLoggerFinder: could not lock the logger state\n", stderr);
    }
}

void setFallbackLoggerSource(LoggerSource source) noexcept
{
    try
    {
        LoggerState& state = loggerState();
        std::lock_guard<std::mutex> lock(state.mMutex);
        state.mFallback = source;
    }
    catch (...)
    {
        std::fputs("[E] [ElfattAttention] could not lock the logger state\n", stderr);
    }
}

nvinfer1::ILogger* getPluginLogger() noexcept
{
    nvinfer1::ILoggerFinder* finder{nullptr};
    LoggerSource fallback{nullptr};
    try
    {
        LoggerState& state = loggerState();
        std::lock_guard<std::mutex> lock(state.mMutex);
        finder = state.mFinder;
        fallback = state.mFallback;
    }
    catch (...)
    {
        return nullptr;
    }
    nvinfer1::ILogger* logger{nullptr};
    if (finder != nullptr)
    {
        try
        {
            // findLogger() is not noexcept in TensorRT 10.x: never let it escape.
            logger = finder->findLogger();
        }
        catch (...)
        {
            logger = nullptr;
        }
    }
    if (logger == nullptr && fallback != nullptr)
    {
        logger = fallback();
    }
    return logger;
}

void logMessage(Severity severity, char const* msg) noexcept
{
    char const* text = (msg != nullptr) ? msg : "(null message)";
    try
    {
        std::string const full = std::string(kLOG_PREFIX) + text;
        nvinfer1::ILogger* logger = getPluginLogger();
        if (logger != nullptr)
        {
            logger->log(severity, full.c_str());
            return;
        }
        if (severity == Severity::kINFO || severity == Severity::kVERBOSE)
        {
            return; // stderr gets warnings and errors only
        }
        std::fprintf(stderr, "[%s] %s\n", severityTag(severity), full.c_str());
    }
    catch (...)
    {
        std::fprintf(stderr, "[%s] %s%s\n", severityTag(severity), kLOG_PREFIX, text);
    }
}

void logMessage(Severity severity, std::string const& msg) noexcept
{
    logMessage(severity, msg.c_str());
}

} // namespace trt
} // namespace elfatt
