/*
 * elfatt-deploy: a stand-in libnvinfer.so for testing how libelfatt_trt_plugin.so
 * registers itself, on machines without TensorRT. NOT TensorRT: it implements
 * only getPluginRegistry(), getLogger() and a small in-memory IPluginRegistry
 * whose loadLibrary models the documented behaviour of TensorRT's: dlopen the
 * library, call its setLoggerFinder() and getCreators(), refuse the library when
 * one of its creators' name/version/namespace is already registered, else
 * register them; a library without getCreators is refused, as TensorRT does. Built against the TensorRT 11 headers (the registry interface
 * differs between versions).
 */
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

class StderrLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        std::fprintf(stderr, "[fake-nvinfer %d] %s\n", static_cast<int>(severity), msg);
    }
};

StderrLogger gLogger;

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &gLogger;
    }
};

Finder gFinder;

std::string key(IPluginCreatorInterface const& c)
{
    auto const& v3 = static_cast<IPluginCreatorV3One const&>(c);
    return std::string(v3.getPluginNamespace()) + "::" + v3.getPluginName() + "/" + v3.getPluginVersion();
}

class FakeRegistry : public IPluginRegistry
{
public:
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return true;
    }
    void setParentSearchEnabled(bool const) override {}

    PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept override
    {
        void* handle = dlopen(pluginPath, RTLD_LAZY | RTLD_LOCAL);
        if (handle == nullptr)
        {
            std::fprintf(stderr, "[fake-nvinfer] dlopen failed: %s\n", dlerror());
            return nullptr;
        }
        using SetFinder = void (*)(ILoggerFinder*);
        using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
        auto setFinder = reinterpret_cast<SetFinder>(dlsym(handle, "setLoggerFinder"));
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
        if (getCreators == nullptr)
        {
            std::fprintf(stderr, "[fake-nvinfer] SymbolAddress for getCreators could not be loaded\n");
            dlclose(handle);
            return nullptr;
        }
        if (setFinder != nullptr)
        {
            setFinder(&gFinder);
        }
        int32_t nb = 0;
        IPluginCreatorInterface* const* creators = getCreators(nb);
        for (int32_t i = 0; i < nb; ++i)
        {
            if (mCreators.count(key(*creators[i])) != 0)
            {
                std::fprintf(stderr, "[fake-nvinfer] Cannot register the library as plugin creator of %s exists already\n",
                    key(*creators[i]).c_str());
                dlclose(handle);
                return nullptr;
            }
        }
        for (int32_t i = 0; i < nb; ++i)
        {
            mCreators[key(*creators[i])] = creators[i];
            mLibraryCreators[handle].push_back(creators[i]);
        }
        return handle;
    }

    void deregisterLibrary(PluginLibraryHandle handle) noexcept override
    {
        for (IPluginCreatorInterface* c : mLibraryCreators[handle])
        {
            deregisterCreator(*c);
        }
        mLibraryCreators.erase(handle);
        dlclose(handle);
    }

    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const) noexcept override
    {
        ++mRegisterCalls;
        if (mCreators.count(key(creator)) != 0)
        {
            std::fprintf(stderr, "[fake-nvinfer] registerCreator: %s already registered\n", key(creator).c_str());
            return false;
        }
        mCreators[key(creator)] = &creator;
        return true;
    }

    IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override
    {
        mList.clear();
        for (auto const& kv : mCreators)
        {
            mList.push_back(kv.second);
        }
        *numCreators = static_cast<int32_t>(mList.size());
        return mList.data();
    }

    IPluginCreatorInterface* getCreator(
        AsciiChar const* const name, AsciiChar const* const version, AsciiChar const* const ns) noexcept override
    {
        auto it = mCreators.find(std::string(ns) + "::" + name + "/" + version);
        return it == mCreators.end() ? nullptr : it->second;
    }

    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override
    {
        for (auto it = mCreators.begin(); it != mCreators.end(); ++it)
        {
            if (it->second == &creator)
            {
                mCreators.erase(it);
                return true;
            }
        }
        return false;
    }

    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return 0;
    }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept override
    {
        return getAllCreators(numCreators);
    }

    int32_t mRegisterCalls{0};

private:
    std::map<std::string, IPluginCreatorInterface*> mCreators;
    std::map<void*, std::vector<IPluginCreatorInterface*>> mLibraryCreators;
    mutable std::vector<IPluginCreatorInterface*> mList;
};

FakeRegistry& registry()
{
    static FakeRegistry sRegistry;
    return sRegistry;
}

} // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    return &registry();
}

extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept
{
    return &gLogger;
}

//! For tests that load the plugin from Python (ctypes, as Polygraphy --plugins does): how many creators of this
//! name are registered.
extern "C" __attribute__((visibility("default"))) int32_t fakeNvinferCountCreators(char const* name) noexcept
{
    int32_t nb = 0;
    IPluginCreatorInterface* const* all = registry().getAllCreators(&nb);
    int32_t count = 0;
    for (int32_t i = 0; i < nb; ++i)
    {
        count += std::strcmp(static_cast<IPluginCreatorV3One const*>(all[i])->getPluginName(), name) == 0 ? 1 : 0;
    }
    return count;
}
