/*
 * elfatt-deploy: loads the two plugin libraries against the stand-in libnvinfer (fakeNvinfer.cpp)
 * the way each tool does, and checks how many ElfattAttention creators end up registered and that
 * the registered one works. Usage:
 *   registrationTest <libelfatt_trt_plugin.so> <libelfatt_trt_plugin_vc.so> <scenario> [copy.so]
 *
 * libelfatt_trt_plugin.so (static registration) is what dlopen-only loaders take: plain dlopen with
 * every flag combination (trtexec --staticPlugins: RTLD_LAZY; ctypes.CDLL / Polygraphy --plugins:
 * RTLD_NOW | RTLD_LOCAL by default, RTLD_GLOBAL on request; Triton plugins=, DeepStream custom-lib-path
 * and ONNX Runtime's trt_extra_plugin_lib_paths dlopen too), and LD_PRELOAD (Triton's alternative).
 * libelfatt_trt_plugin_vc.so (getCreators) is what IPluginRegistry::loadLibrary takes (trtexec
 * --dynamicPlugins; an engine built with --setPluginsToSerialize carries a copy that TensorRT loads
 * with loadLibrary from a file of its own).
 */
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>

using namespace nvinfer1;

namespace
{

int32_t gFailures = 0;

void check(bool ok, char const* what)
{
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    gFailures += ok ? 0 : 1;
}

int32_t countElfatt()
{
    int32_t nb = 0;
    IPluginCreatorInterface* const* all = getPluginRegistry()->getAllCreators(&nb);
    int32_t count = 0;
    for (int32_t i = 0; i < nb; ++i)
    {
        auto const* v3 = static_cast<IPluginCreatorV3One const*>(all[i]);
        count += std::strcmp(v3->getPluginName(), "ElfattAttention") == 0 ? 1 : 0;
    }
    return count;
}

bool creatorWorks()
{
    auto* c = static_cast<IPluginCreatorV3One*>(getPluginRegistry()->getCreator("ElfattAttention", "1", ""));
    if (c == nullptr)
    {
        return false;
    }
    int32_t g = 1;
    int32_t l = 1;
    PluginField fields[] = {PluginField("global_heads", &g, PluginFieldType::kINT32, 1),
        PluginField("local_heads", &l, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fc{2, fields};
    IPluginV3* plugin = c->createPlugin("attn", &fc, TensorRTPhase::kBUILD);
    bool const ok = plugin != nullptr && plugin->getCapabilityInterface(PluginCapabilityType::kBUILD) != nullptr;
    delete plugin;
    return ok;
}

void* open(char const* path, int flags)
{
    void* h = dlopen(path, flags);
    if (h == nullptr)
    {
        std::printf("dlopen error: %s\n", dlerror());
    }
    return h;
}

int flagsFor(std::string const& mode)
{
    if (mode == "lazy_local")
    {
        return RTLD_LAZY | RTLD_LOCAL;
    }
    if (mode == "now_local")
    {
        return RTLD_NOW | RTLD_LOCAL;
    }
    if (mode == "lazy_global")
    {
        return RTLD_LAZY | RTLD_GLOBAL;
    }
    return RTLD_NOW | RTLD_GLOBAL;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 4)
    {
        std::fprintf(stderr, "usage: %s <static.so> <vc.so> <scenario> [copy.so]\n", argv[0]);
        return 2;
    }
    char const* staticLib = argv[1];
    char const* vcLib = argv[2];
    std::string const scenario = argv[3];
    char const* extra = argc > 4 ? argv[4] : nullptr;
    IPluginRegistry& reg = *getPluginRegistry();
    bool expectCreator = true;
    if (scenario.rfind("dlopen_", 0) == 0 && scenario != "dlopen_vc")
    {
        check(open(staticLib, flagsFor(scenario.substr(7))) != nullptr, "dlopen of the static-registration library");
        check(countElfatt() == 1, "its static initializer registered one creator");
    }
    else if (scenario == "preloaded")
    {
        // LD_PRELOAD=libelfatt_trt_plugin.so: registered before main runs, nothing loaded here
        check(countElfatt() == 1, "LD_PRELOAD registered one creator before main");
    }
    else if (scenario == "unload_static")
    {
        void* h = open(staticLib, RTLD_NOW | RTLD_LOCAL);
        check(h != nullptr && countElfatt() == 1, "dlopen registered the creator");
        check(h != nullptr && dlclose(h) == 0, "dlclose");
        check(countElfatt() == 0, "unloading removed the creator (no dangling pointer in the registry)");
        expectCreator = false;
    }
    else if (scenario == "two_static_copies" && extra != nullptr)
    {
        check(open(staticLib, RTLD_NOW | RTLD_LOCAL) != nullptr, "dlopen first copy");
        check(open(extra, RTLD_NOW | RTLD_LOCAL) != nullptr, "dlopen second copy (skips registration quietly)");
        check(countElfatt() == 1, "one creator");
    }
    else if (scenario == "loadlibrary_static")
    {
        check(reg.loadLibrary(staticLib) == nullptr, "loadLibrary refuses the static-registration library (no getCreators)");
        expectCreator = false;
    }
    else if (scenario == "dlopen_vc")
    {
        check(open(vcLib, RTLD_NOW | RTLD_LOCAL) != nullptr, "dlopen of the getCreators library");
        check(countElfatt() == 0, "it registers nothing by itself");
        expectCreator = false;
    }
    else if (scenario == "loadlibrary_vc")
    {
        check(reg.loadLibrary(vcLib) != nullptr, "loadLibrary accepted the getCreators library");
        check(countElfatt() == 1, "one creator after loadLibrary");
    }
    else if (scenario == "loadlibrary_vc_twice")
    {
        check(reg.loadLibrary(vcLib) != nullptr, "first loadLibrary");
        check(reg.loadLibrary(vcLib) == nullptr, "second loadLibrary refused (creator exists)");
        check(countElfatt() == 1, "still one creator");
    }
    else if (scenario == "deregister_vc")
    {
        void* h = reg.loadLibrary(vcLib);
        check(h != nullptr, "loadLibrary");
        reg.deregisterLibrary(h);
        check(countElfatt() == 0, "no creator after deregisterLibrary");
        check(reg.loadLibrary(vcLib) != nullptr, "loadLibrary again");
        check(countElfatt() == 1, "one creator again");
    }
    else if (scenario == "serialized_copy" && extra != nullptr)
    {
        // --setPluginsToSerialize: the engine carries the library; TensorRT writes it to a file of its own and
        // loads that with loadLibrary when the engine is deserialized.
        check(reg.loadLibrary(extra) != nullptr, "loadLibrary of a copy at another path");
        check(countElfatt() == 1, "one creator");
    }
    else if (scenario == "static_then_vc")
    {
        check(open(staticLib, RTLD_NOW | RTLD_LOCAL) != nullptr, "dlopen static");
        check(reg.loadLibrary(vcLib) == nullptr, "loadLibrary of the other build refused: the creator exists");
        check(countElfatt() == 1, "one creator");
    }
    else if (scenario == "vc_then_static")
    {
        check(reg.loadLibrary(vcLib) != nullptr, "loadLibrary");
        check(open(staticLib, RTLD_NOW | RTLD_LOCAL) != nullptr, "dlopen static (skips registration quietly)");
        check(countElfatt() == 1, "one creator");
    }
    else
    {
        std::fprintf(stderr, "unknown scenario %s\n", scenario.c_str());
        return 2;
    }
    if (expectCreator)
    {
        check(creatorWorks(), "registered creator creates a plugin");
    }
    std::printf("SUMMARY %d failed\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
