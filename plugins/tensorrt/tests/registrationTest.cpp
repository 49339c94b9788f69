/*
 * elfatt-deploy: loads libelfatt_trt_plugin.so against the stand-in libnvinfer
 * (fakeNvinfer.cpp) in one of several orders and checks that exactly one
 * ElfattAttention creator ends up registered and usable. Usage:
 *   registrationTest <plugin.so> <scenario>
 * scenarios: dlopen, loadlibrary, dlopen_then_loadlibrary, loadlibrary_then_dlopen,
 *            loadlibrary_twice, two_copies <copy.so>, deregister_library
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

void* plainDlopen(char const* path)
{
    void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr)
    {
        std::printf("dlopen error: %s\n", dlerror());
    }
    return h;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::fprintf(stderr, "usage: %s <plugin.so> <scenario> [copy.so]\n", argv[0]);
        return 2;
    }
    char const* lib = argv[1];
    std::string const scenario = argv[2];
    IPluginRegistry& reg = *getPluginRegistry();
    if (scenario == "dlopen")
    {
        check(plainDlopen(lib) != nullptr, "dlopen");
        check(countElfatt() == 1, "static registration registered one creator");
    }
    else if (scenario == "loadlibrary")
    {
        check(reg.loadLibrary(lib) != nullptr, "loadLibrary accepted the library");
        check(countElfatt() == 1, "one creator after loadLibrary");
    }
    else if (scenario == "dlopen_then_loadlibrary")
    {
        check(plainDlopen(lib) != nullptr, "dlopen");
        check(reg.loadLibrary(lib) != nullptr, "loadLibrary accepted the already loaded library");
        check(countElfatt() == 1, "one creator");
    }
    else if (scenario == "loadlibrary_then_dlopen")
    {
        check(reg.loadLibrary(lib) != nullptr, "loadLibrary");
        check(plainDlopen(lib) != nullptr, "dlopen after loadLibrary");
        check(countElfatt() == 1, "one creator");
    }
    else if (scenario == "loadlibrary_twice")
    {
        check(reg.loadLibrary(lib) != nullptr, "first loadLibrary");
        check(reg.loadLibrary(lib) == nullptr, "second loadLibrary refused (creator exists)");
        check(countElfatt() == 1, "still one creator");
    }
    else if (scenario == "two_copies" && argc > 3)
    {
        check(plainDlopen(lib) != nullptr, "dlopen first copy");
        check(plainDlopen(argv[3]) != nullptr, "dlopen second copy (skips static registration quietly)");
        check(countElfatt() == 1, "one creator");
    }
    else if (scenario == "deregister_library")
    {
        void* h = reg.loadLibrary(lib);
        check(h != nullptr, "loadLibrary");
        reg.deregisterLibrary(h);
        check(countElfatt() == 0, "no creator after deregisterLibrary");
        check(reg.loadLibrary(lib) != nullptr, "loadLibrary again");
        check(countElfatt() == 1, "one creator again");
    }
    else
    {
        std::fprintf(stderr, "unknown scenario %s\n", scenario.c_str());
        return 2;
    }
    check(creatorWorks(), "registered creator creates a plugin");
    std::printf("SUMMARY %d failed\n", gFailures);
    return gFailures == 0 ? 0 : 1;
}
