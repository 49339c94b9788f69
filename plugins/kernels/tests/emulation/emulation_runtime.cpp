/*
 * elfatt-deploy kernels: the runtime of the host emulation (test builds only).
 *
 * Launches (threads, blocks, barriers, shared memory), the kernel-name lookup used in
 * messages, and the few CUDA runtime functions the kernel sources call, defined here
 * because the emulation links no CUDA library. See elfatt_host_emulation.h.
 */
#include "elfatt_host_emulation.h"
#include "emulation_ptx.h"
#include "emulation_trace.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace elfatt
{
namespace emulation
{
namespace trace
{
Hooks const* gHooks = nullptr;
} // namespace trace

namespace detail
{
namespace
{

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

int64_t envInt(char const* name, int64_t fallback, int64_t lo, int64_t hi)
{
    char const* value = std::getenv(name);
    if (value == nullptr || *value == '\0')
    {
        return fallback;
    }
    char* end = nullptr;
    long long const parsed = std::strtoll(value, &end, 10);
    if (end == value || *end != '\0' || parsed < lo || parsed > hi)
    {
        std::fprintf(stderr, "host emulation: %s=%s is not an integer in [%lld, %lld]\n", name, value,
            static_cast<long long>(lo), static_cast<long long>(hi));
        std::abort();
    }
    return parsed;
}

unsigned maxBlocks()
{
    static unsigned const kVALUE = static_cast<unsigned>(envInt("ELFATT_EMULATION_MAX_BLOCKS", 3, 1, 1 << 20));
    return kVALUE;
}

std::chrono::milliseconds barrierTimeout()
{
    static std::chrono::milliseconds const kTIMEOUT = [] {
        char const* value = std::getenv("ELFATT_EMULATION_BARRIER_TIMEOUT_S");
        if (value == nullptr || *value == '\0')
        {
            return std::chrono::milliseconds(20000);
        }
        char* end = nullptr;
        double const seconds = std::strtod(value, &end);
        if (end == value || *end != '\0' || !(seconds >= 0.01 && seconds <= 3600.0))
        {
            std::fprintf(stderr, "host emulation: ELFATT_EMULATION_BARRIER_TIMEOUT_S=%s is not a number of seconds in "
                                 "[0.01, 3600]\n",
                value);
            std::abort();
        }
        return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
    }();
    return kTIMEOUT;
}

//! The barrier timeout for messages, e.g. "20" or "0.3".
std::string timeoutText()
{
    char text[32];
    std::snprintf(text, sizeof(text), "%g", static_cast<double>(barrierTimeout().count()) / 1000.0);
    return text;
}

int32_t spinYields()
{
    static int32_t const kVALUE = static_cast<int32_t>(envInt("ELFATT_EMULATION_SPIN", 32, 0, 1 << 20));
    return kVALUE;
}

//! Who runs when. kFREE: every thread of the block runs concurrently (OS scheduling). kFORWARD /
//! kREVERSE: one warp at a time, always the lowest- (highest-) numbered warp that is not waiting
//! at __syncthreads (its lanes run concurrently): each warp runs alone from one __syncthreads to
//! the next, so a missing barrier between warps that exchange shared memory shows up every time
//! (in one of the two orders), and a deadlock is reported at once.
enum class Schedule
{
    kFREE,
    kFORWARD,
    kREVERSE,
};

Schedule schedule()
{
    static Schedule const kVALUE = [] {
        char const* value = std::getenv("ELFATT_EMULATION_SCHEDULE");
        if (value == nullptr || *value == '\0' || std::strcmp(value, "free") == 0)
        {
            return Schedule::kFREE;
        }
        if (std::strcmp(value, "forward") == 0)
        {
            return Schedule::kFORWARD;
        }
        if (std::strcmp(value, "reverse") == 0)
        {
            return Schedule::kREVERSE;
        }
        std::fprintf(stderr, "host emulation: ELFATT_EMULATION_SCHEDULE=%s is not free, forward or reverse\n", value);
        std::abort();
    }();
    return kVALUE;
}

char const* scheduleName()
{
    switch (schedule())
    {
    case Schedule::kFREE: return "free";
    case Schedule::kFORWARD: return "forward";
    case Schedule::kREVERSE: return "reverse";
    }
    return "?";
}

bool traceLaunches()
{
    static bool const kVALUE = envInt("ELFATT_EMULATION_TRACE", 0, 0, 1) != 0;
    return kVALUE;
}

//! Largest dynamic + static shared memory one block may use after opting in, per architecture.
int64_t sharedOptinBytes(int32_t sm)
{
    switch (sm)
    {
    case 70: return 96 * 1024;
    case 72: return 48 * 1024;
    case 75: return 64 * 1024;
    case 80:
    case 87: return 163 * 1024;
    case 86:
    case 89:
    case 120:
    case 121: return 99 * 1024;
    case 90:
    case 100:
    case 101:
    case 103:
    case 110: return 227 * 1024;
    default: return 48 * 1024;
    }
}

int32_t multiprocessors(int32_t sm)
{
    switch (sm)
    {
    case 87: return 16; // AGX Orin
    case 80: return 108;
    case 86: return 84;
    case 89: return 128;
    case 90: return 132;
    case 100: return 148;
    default: return 80;
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel names and static __shared__ arrays from the ELF symbol table
// ---------------------------------------------------------------------------------------------

struct ElfSymbol
{
    uint64_t value;
    uint64_t size;
    std::string name;
    bool function;
    bool writable;
};

struct ElfImage
{
    bool relative{false}; //!< ET_DYN: symbol values are offsets from the load base
    std::vector<ElfSymbol> symbols;
};

ElfImage readElf(std::string const& path)
{
    ElfImage image;
    std::vector<char> bytes;
    if (std::FILE* file = std::fopen(path.c_str(), "rb"))
    {
        char chunk[1 << 16];
        for (size_t got; (got = std::fread(chunk, 1, sizeof(chunk), file)) > 0;)
        {
            bytes.insert(bytes.end(), chunk, chunk + got);
        }
        std::fclose(file);
    }
    if (bytes.size() < sizeof(Elf64_Ehdr) || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0
        || bytes[EI_CLASS] != ELFCLASS64)
    {
        return image;
    }
    Elf64_Ehdr header;
    std::memcpy(&header, bytes.data(), sizeof(header));
    image.relative = header.e_type == ET_DYN;
    if (header.e_shoff == 0 || header.e_shentsize != sizeof(Elf64_Shdr)
        || header.e_shoff + static_cast<uint64_t>(header.e_shnum) * sizeof(Elf64_Shdr) > bytes.size())
    {
        return image;
    }
    std::vector<Elf64_Shdr> sections(header.e_shnum);
    std::memcpy(sections.data(), bytes.data() + header.e_shoff, header.e_shnum * sizeof(Elf64_Shdr));
    for (Elf64_Shdr const& section : sections)
    {
        if (section.sh_type != SHT_SYMTAB || section.sh_link >= sections.size())
        {
            continue;
        }
        Elf64_Shdr const& strings = sections[section.sh_link];
        if (section.sh_offset + section.sh_size > bytes.size() || strings.sh_offset + strings.sh_size > bytes.size())
        {
            continue;
        }
        size_t const count = section.sh_size / sizeof(Elf64_Sym);
        for (size_t i = 0; i < count; ++i)
        {
            Elf64_Sym sym;
            std::memcpy(&sym, bytes.data() + section.sh_offset + i * sizeof(Elf64_Sym), sizeof(sym));
            int const type = ELF64_ST_TYPE(sym.st_info);
            if ((type != STT_FUNC && type != STT_OBJECT) || sym.st_name >= strings.sh_size
                || sym.st_shndx == SHN_UNDEF || sym.st_shndx >= sections.size())
            {
                continue;
            }
            ElfSymbol entry;
            entry.value = sym.st_value;
            entry.size = sym.st_size;
            entry.name = std::string(bytes.data() + strings.sh_offset + sym.st_name);
            entry.function = type == STT_FUNC;
            entry.writable = (sections[sym.st_shndx].sh_flags & SHF_WRITE) != 0;
            image.symbols.push_back(std::move(entry));
        }
    }
    return image;
}

struct StaticShared
{
    char* address;
    size_t bytes;
};

struct KernelInfo
{
    std::string name;                 //!< e.g. localTiledKernel<float, 16>
    std::vector<StaticShared> shared; //!< the kernel's static __shared__ arrays
    size_t staticSharedBytes{0};
    int64_t maxDynamicShared{48 * 1024}; //!< raised by cudaFuncSetAttribute
};

std::string shortName(std::string const& mangled)
{
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> demangled(
        abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status), std::free);
    std::string name = (status == 0 && demangled) ? std::string(demangled.get()) : mangled;
    for (std::string const cut : {"(anonymous namespace)::", "elfatt::detail::", "elfatt::"})
    {
        for (size_t at = name.find(cut); at != std::string::npos; at = name.find(cut))
        {
            name.erase(at, cut.size());
        }
    }
    if (name.rfind("void ", 0) == 0)
    {
        name.erase(0, 5);
    }
    size_t const paren = name.find('(');
    return paren == std::string::npos ? name : name.substr(0, paren);
}

std::mutex gKernelMutex;

KernelInfo& kernelInfo(void const* kernel)
{
    static std::map<void const*, KernelInfo> infos;
    static std::map<std::string, ElfImage> images;
    std::lock_guard<std::mutex> lock(gKernelMutex);
    auto found = infos.find(kernel);
    if (found != infos.end())
    {
        return found->second;
    }
    KernelInfo& info = infos[kernel];
    char fallback[32];
    std::snprintf(fallback, sizeof(fallback), "kernel@%p", kernel);
    info.name = fallback;
    Dl_info dl{};
    if (dladdr(kernel, &dl) == 0)
    {
        return info;
    }
    std::string path = (dl.dli_fname != nullptr && dl.dli_fname[0] == '/') ? dl.dli_fname : "/proc/self/exe";
    if (images.find(path) == images.end())
    {
        images[path] = readElf(path);
    }
    ElfImage const& image = images[path];
    uintptr_t const base = image.relative ? reinterpret_cast<uintptr_t>(dl.dli_fbase) : 0;
    uintptr_t const address = reinterpret_cast<uintptr_t>(kernel) - base;
    std::string mangled;
    for (ElfSymbol const& sym : image.symbols)
    {
        if (sym.function && address >= sym.value && address < sym.value + (sym.size > 0 ? sym.size : 1))
        {
            mangled = sym.name;
            break;
        }
    }
    if (mangled.empty())
    {
        return info;
    }
    info.name = shortName(mangled);
    // Function-local statics of the kernel (= its __shared__ arrays) are _ZZ<encoding>E<name>.
    if (mangled.rfind("_Z", 0) == 0)
    {
        std::string const prefix = "_ZZ" + mangled.substr(2) + "E";
        for (ElfSymbol const& sym : image.symbols)
        {
            if (!sym.function && sym.writable && sym.size > 0 && sym.name.rfind(prefix, 0) == 0)
            {
                info.shared.push_back(StaticShared{reinterpret_cast<char*>(base + sym.value), sym.size});
                info.staticSharedBytes += sym.size;
            }
        }
    }
    return info;
}

// ---------------------------------------------------------------------------------------------
// Barriers
// ---------------------------------------------------------------------------------------------

enum class Site
{
    kSYNCTHREADS,
    kBLOCK_END,   //!< between two blocks: every thread finished the previous one
    kBLOCK_START, //!< after shared memory was poisoned for the next block
    kSYNCWARP,
    kSHUFFLE,
    kWARP_INSTRUCTION, //!< mma.sync / ldmatrix (warpGather)
};

char const* siteName(Site site)
{
    switch (site)
    {
    case Site::kSYNCTHREADS: return "__syncthreads()";
    case Site::kBLOCK_END: return "the end of the block (kernel returned)";
    case Site::kBLOCK_START: return "the start of the block";
    case Site::kSYNCWARP: return "__syncwarp()";
    case Site::kSHUFFLE: return "__shfl_*_sync()";
    case Site::kWARP_INSTRUCTION: return "a warp-wide instruction (mma.sync / ldmatrix)";
    }
    return "?";
}

std::string describe(Site site, std::source_location const* where)
{
    std::string text = siteName(site);
    if (where != nullptr && where->line() != 0)
    {
        text += " at ";
        text += where->file_name();
        text += ":" + std::to_string(where->line());
    }
    return text;
}

//! The serial schedules' turn: which warp may run (kFORWARD / kREVERSE only).
class Scheduler
{
public:
    void init(unsigned warps, Schedule schedule)
    {
        mSchedule = schedule;
        mWarps = warps;
        mState.assign(warps, State{});
        mWake.reset(new std::condition_variable[warps]);
        mRunning = pick();
    }

    bool serial() const
    {
        return mSchedule != Schedule::kFREE;
    }

    std::mutex& mutex()
    {
        return mMutex;
    }

    //! A lane of `warp` arrived at the block barrier; true when that was the warp's last lane.
    bool laneWaits(unsigned warp)
    {
        return ++mState[warp].waiting == 32;
    }

    //! The block barrier completed: every warp that has not finished may run again.
    void barrierDone()
    {
        for (State& state : mState)
        {
            state.waiting = 0;
        }
    }

    //! A lane of `warp` finished the kernel; true when that was the warp's last lane.
    bool laneFinished(unsigned warp)
    {
        return ++mState[warp].finished == 32;
    }

    //! Hands the turn to the first runnable warp in schedule order (under mutex()). False when no
    //! warp can run although some have not finished: they wait at a barrier never completed.
    bool passTurn()
    {
        mRunning = pick();
        if (mRunning == kNONE)
        {
            for (State const& state : mState)
            {
                if (state.finished < 32)
                {
                    return false;
                }
            }
            return true;
        }
        mWake[mRunning].notify_all();
        return true;
    }

    //! Sleeps (under mutex() via lock) until it is warp's turn and done() holds.
    template <typename Done>
    void waitTurn(unsigned warp, std::unique_lock<std::mutex>& lock, Done done, char const* where);

private:
    static constexpr unsigned kNONE = ~0U;

    struct State
    {
        unsigned waiting{0};  //!< lanes waiting at the block barrier
        unsigned finished{0}; //!< lanes done with the kernel
    };

    unsigned pick() const
    {
        for (unsigned i = 0; i < mWarps; ++i)
        {
            unsigned const warp = mSchedule == Schedule::kREVERSE ? mWarps - 1 - i : i;
            if (mState[warp].waiting < 32 && mState[warp].finished < 32)
            {
                return warp;
            }
        }
        return kNONE;
    }

    std::mutex mMutex;
    std::unique_ptr<std::condition_variable[]> mWake; //!< one per warp
    std::vector<State> mState;
    Schedule mSchedule{Schedule::kFREE};
    unsigned mWarps{0};
    unsigned mRunning{kNONE};
};

class Barrier
{
public:
    void init(unsigned expected, bool warp)
    {
        mExpected = expected;
        mWarp = warp;
    }

    //! Waits until all expected threads arrived. Threads of one generation must all wait at the
    //! same kind of barrier (block barriers: at the same __syncthreads() too), else it aborts.
    void arriveAndWait(Site site, std::source_location const* where);

    //! "N thread(s) at <site>" while some wait here, else empty.
    std::string waiting() const
    {
        return mArrived == 0 ? std::string()
                             : std::to_string(mArrived) + " at " + describe(mSite, mHasWhere ? &mWhere : nullptr);
    }

private:
    //! Records the site of this arrival; aborts if it differs from the others' (lock held).
    void checkSite(Site site, std::source_location const* where, std::unique_lock<std::mutex>& lock);
    void arriveSerial(Site site, std::source_location const* where, Scheduler& scheduler);

    std::mutex mMutex;
    std::condition_variable mCv;
    unsigned mExpected{0};
    bool mWarp{false};
    unsigned mArrived{0};
    std::atomic<uint64_t> mGeneration{0};
    Site mSite{Site::kSYNCTHREADS};
    std::source_location mWhere{}; //!< a copy: the arriving thread's source_location lives in its call
    bool mHasWhere{false};
};

struct Warp
{
    Barrier barrier;
    uint64_t slots[2][32]{}; //!< shuffle exchange, double buffered (one barrier per shuffle)
    //! warpGather deposits, double buffered like slots: lane, then bytes (+ the instruction's name).
    struct Deposit
    {
        unsigned char bytes[kWARP_GATHER_BYTES];
        char const* what;
    };
    Deposit deposits[2][32]{};
};

} // namespace

struct LaunchState
{
    KernelInfo* kernel{nullptr};
    unsigned block{0};
    unsigned grid{0};
    unsigned emulatedGrid{0};
    std::vector<unsigned> blockList; //!< the blocks to run, in order (tracing build: a sample of the real grid)
    void* dynamicSmem{nullptr};
    size_t dynamicSmemBytes{0};
    Barrier blockBarrier;
    std::unique_ptr<Warp[]> warps;
    Scheduler scheduler;

    //! What every waiting thread waits for (deadlock and timeout messages).
    std::string waiting() const
    {
        std::string text = blockBarrier.waiting();
        for (unsigned w = 0; w < block / 32; ++w)
        {
            std::string const lanes = warps[w].barrier.waiting();
            if (!lanes.empty())
            {
                text += (text.empty() ? "" : "; ") + std::string("warp ") + std::to_string(w) + ": " + lanes;
            }
        }
        return text.empty() ? "nothing" : text;
    }
};

namespace
{

//! The CPU threads that play the CUDA threads of a block: started on demand, kept for the
//! next launches (starting hundreds of threads per launch costs ~0.2 ms each under ASan),
//! never destroyed (detached; they sleep between launches and end with the process).
class WorkerPool
{
public:
    //! Runs job(0) .. job(count - 1) on count different threads and waits for all of them.
    void run(unsigned count, std::function<void(unsigned)> const& job)
    {
        std::lock_guard<std::mutex> serial(mLaunchMutex);
        std::unique_lock<std::mutex> lock(mMutex);
        while (mThreads < count)
        {
            try
            {
                std::thread(&WorkerPool::loop, this, mThreads, mGeneration).detach();
            }
            catch (std::exception const& error)
            {
                std::fprintf(stderr, "host emulation: cannot start thread %u: %s\n", mThreads, error.what());
                std::abort();
            }
            ++mThreads;
        }
        mJob = &job;
        mCount = count;
        mRemaining = count;
        ++mGeneration;
        mStart.notify_all();
        mDone.wait(lock, [this] { return mRemaining == 0; });
        mJob = nullptr;
    }

private:
    void loop(unsigned index, uint64_t seen)
    {
        std::unique_lock<std::mutex> lock(mMutex);
        for (;;)
        {
            mStart.wait(lock, [&] { return mGeneration != seen; });
            seen = mGeneration;
            if (index >= mCount)
            {
                continue;
            }
            std::function<void(unsigned)> const* job = mJob;
            lock.unlock();
            (*job)(index);
            lock.lock();
            if (--mRemaining == 0)
            {
                mDone.notify_one();
            }
        }
    }

    std::mutex mLaunchMutex;
    std::mutex mMutex;
    std::condition_variable mStart;
    std::condition_variable mDone;
    unsigned mThreads{0};
    unsigned mCount{0};
    unsigned mRemaining{0};
    uint64_t mGeneration{0};
    std::function<void(unsigned)> const* mJob{nullptr};
};

WorkerPool& workerPool()
{
    static WorkerPool* const kPOOL = new WorkerPool; // never destroyed: its threads outlive main
    return *kPOOL;
}

} // namespace

thread_local cudaError_t tLastError = cudaSuccess;

namespace
{

thread_local uint64_t tShuffleCount = 0;
thread_local uint64_t tGatherCount = 0;

std::mutex gFailMutex;

[[noreturn]] void failV(char const* format, va_list args)
{
    std::lock_guard<std::mutex> lock(gFailMutex); // one message, even when several threads fail
    std::fprintf(stderr, "host emulation: ");
    std::vfprintf(stderr, format, args);
    LaunchState const* launch = tLaunch;
    if (launch != nullptr)
    {
        std::fprintf(stderr, " [in %s, block %u of %u emulated (grid %u), thread %u]", launch->kernel->name.c_str(),
            tBlockIdx.x, launch->emulatedGrid, launch->grid, tThreadIdx.x);
    }
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    std::abort();
}

[[noreturn]] void failf(char const* format, ...)
{
    va_list args;
    va_start(args, format);
    failV(format, args);
}

void Barrier::checkSite(Site site, std::source_location const* where, std::unique_lock<std::mutex>& lock)
{
    if (mArrived == 0)
    {
        mSite = site;
        mHasWhere = where != nullptr;
        mWhere = where != nullptr ? *where : std::source_location{};
        return;
    }
    bool sameSite = mSite == site;
    if (sameSite && site == Site::kSYNCTHREADS)
    {
        sameSite = std::strcmp(mWhere.file_name(), where->file_name()) == 0 && mWhere.line() == where->line()
            && mWhere.column() == where->column();
    }
    // __syncwarp() may be called from different places by the lanes of a warp (sm_70+).
    if (!sameSite)
    {
        std::string const mine = describe(site, where);
        std::string const theirs = describe(mSite, mHasWhere ? &mWhere : nullptr);
        unsigned const arrived = mArrived;
        lock.unlock();
        failf("divergent %s barrier: this thread is at %s while %u other thread(s) wait at %s",
            mWarp ? "warp" : "block", mine.c_str(), arrived, theirs.c_str());
    }
}

template <typename Done>
void Scheduler::waitTurn(unsigned warp, std::unique_lock<std::mutex>& lock, Done done, char const* where)
{
    auto const deadline = std::chrono::steady_clock::now() + barrierTimeout();
    while (mRunning != warp || !done())
    {
        if (mWake[warp].wait_until(lock, deadline) == std::cv_status::timeout && (mRunning != warp || !done()))
        {
            std::string const waits = tLaunch->waiting();
            lock.unlock();
            failf("barrier timeout (divergent __syncthreads/__syncwarp?): thread waited %s s %s; waiting: %s",
                timeoutText().c_str(), where, waits.c_str());
        }
    }
}

[[noreturn]] void deadlock(std::unique_lock<std::mutex>& lock, char const* what)
{
    std::string const waits = tLaunch->waiting();
    lock.unlock();
    failf("deadlock (divergent __syncthreads?): %s, and no other warp can run; waiting: %s", what, waits.c_str());
}

//! Block barrier under a serial schedule: the warp keeps the turn until all its lanes wait here.
void Barrier::arriveSerial(Site site, std::source_location const* where, Scheduler& scheduler)
{
    unsigned const warp = tThreadIdx.x / 32;
    std::unique_lock<std::mutex> lock(scheduler.mutex());
    checkSite(site, where, lock);
    uint64_t const generation = mGeneration.load(std::memory_order_relaxed);
    bool const warpDone = scheduler.laneWaits(warp);
    if (++mArrived == mExpected)
    {
        mArrived = 0;
        mGeneration.store(generation + 1, std::memory_order_relaxed);
        scheduler.barrierDone();
        scheduler.passTurn();
    }
    else if (warpDone && !scheduler.passTurn())
    {
        deadlock(lock, ("warp " + std::to_string(warp) + " arrived at " + describe(site, where)).c_str());
    }
    scheduler.waitTurn(
        warp, lock, [&] { return mGeneration.load(std::memory_order_relaxed) != generation; }, "at a barrier");
}

void Barrier::arriveAndWait(Site site, std::source_location const* where)
{
    if (!mWarp && tLaunch->scheduler.serial())
    {
        arriveSerial(site, where, tLaunch->scheduler);
        return;
    }
    std::unique_lock<std::mutex> lock(mMutex);
    checkSite(site, where, lock);
    uint64_t const generation = mGeneration.load(std::memory_order_relaxed);
    if (++mArrived == mExpected)
    {
        mArrived = 0;
        mGeneration.store(generation + 1, std::memory_order_release);
        lock.unlock();
        mCv.notify_all();
        return;
    }
    lock.unlock();
    // Cheap path first: yield a while (threads of an emulated block arrive close together),
    // then sleep on the condition variable until the deadline.
    for (int32_t spin = 0; spin < spinYields(); ++spin)
    {
        if (mGeneration.load(std::memory_order_acquire) != generation)
        {
            return;
        }
        std::this_thread::yield();
    }
    lock.lock();
    auto const deadline = std::chrono::steady_clock::now() + barrierTimeout();
    while (mGeneration.load(std::memory_order_relaxed) == generation)
    {
        if (mCv.wait_until(lock, deadline) == std::cv_status::timeout
            && mGeneration.load(std::memory_order_relaxed) == generation)
        {
            std::string const at = describe(mSite, mHasWhere ? &mWhere : nullptr);
            unsigned const arrived = mArrived;
            lock.unlock();
            failf("barrier timeout (divergent __syncthreads/__syncwarp?): %u of %u threads of the %s waited %s s at %s",
                arrived, mExpected, mWarp ? "warp" : "block", timeoutText().c_str(), at.c_str());
        }
    }
}

LaunchState& currentLaunch(char const* what)
{
    if (tLaunch == nullptr)
    {
        failf("%s called outside an emulated kernel", what);
    }
    return *tLaunch;
}

void poisonShared(LaunchState& launch)
{
    // 0xFF bytes: float NaN, integer -1. Real shared memory holds garbage at block start.
    std::memset(launch.dynamicSmem, 0xFF, launch.dynamicSmemBytes);
    for (StaticShared const& shared : launch.kernel->shared)
    {
        std::memset(shared.address, 0xFF, shared.bytes);
    }
}

} // namespace

void fail(char const* format, ...) noexcept
{
    va_list args;
    va_start(args, format);
    failV(format, args);
}

int32_t emulatedSm() noexcept
{
    static int32_t const kSM = static_cast<int32_t>(envInt("ELFATT_EMULATION_SM", 90, 10, 1000));
    return kSM;
}

void* dynamicSharedBase() noexcept
{
    return currentLaunch("dynamic shared memory").dynamicSmem;
}

int32_t currentLane(char const* what) noexcept
{
    (void) currentLaunch(what);
    return static_cast<int32_t>(tThreadIdx.x % 32);
}

void syncThreads(std::source_location const& where) noexcept
{
    if (trace::gHooks != nullptr)
    {
        trace::gHooks->sync(trace::Sync::kBLOCK, __builtin_return_address(0));
    }
    currentLaunch("__syncthreads").blockBarrier.arriveAndWait(Site::kSYNCTHREADS, &where);
}

namespace
{

Warp& currentWarp(unsigned mask, char const* what)
{
    LaunchState& launch = currentLaunch(what);
    if (mask != 0xffffffffU)
    {
        failf("%s with mask 0x%08x: the emulation runs whole warps only (mask 0xffffffff)", what, mask);
    }
    return launch.warps[tThreadIdx.x / 32];
}

} // namespace

void syncWarp(unsigned mask, std::source_location const& where) noexcept
{
    if (trace::gHooks != nullptr)
    {
        trace::gHooks->sync(trace::Sync::kWARP, __builtin_return_address(0));
    }
    currentWarp(mask, "__syncwarp").barrier.arriveAndWait(Site::kSYNCWARP, &where);
}

uint64_t warpExchange(unsigned mask, uint64_t value, int32_t srcLane, std::source_location const& where) noexcept
{
    if (trace::gHooks != nullptr)
    {
        trace::gHooks->sync(trace::Sync::kSHUFFLE, __builtin_return_address(0));
    }
    Warp& warp = currentWarp(mask, "__shfl_*_sync");
    unsigned const lane = tThreadIdx.x % 32;
    // Double buffered: a lane can write this buffer again only two shuffles later, after the
    // next barrier, which every lane reaches only after reading from this one.
    uint64_t (&slots)[32] = warp.slots[tShuffleCount++ & 1];
    slots[lane] = value;
    warp.barrier.arriveAndWait(Site::kSHUFFLE, &where);
    return slots[srcLane];
}

void warpGather(void const* mine, size_t bytes, void* all, char const* what, std::source_location const& where) noexcept
{
    if (bytes > kWARP_GATHER_BYTES)
    {
        failf("warpGather: %zu bytes per lane exceed %zu", bytes, kWARP_GATHER_BYTES);
    }
    Warp& warp = currentWarp(0xffffffffU, what);
    unsigned const lane = tThreadIdx.x % 32;
    // Same double-buffering argument as warpExchange, with its own parity counter.
    Warp::Deposit (&deposits)[32] = warp.deposits[tGatherCount++ & 1];
    std::memcpy(deposits[lane].bytes, mine, bytes);
    deposits[lane].what = what;
    warp.barrier.arriveAndWait(Site::kWARP_INSTRUCTION, &where);
    for (unsigned other = 0; other < 32; ++other)
    {
        if (std::strcmp(deposits[other].what, what) != 0)
        {
            failf("divergent warp-wide instruction: lane %u is at %s while lane %u is at %s (every lane of the "
                  "warp must execute the same .sync.aligned instruction)",
                lane, what, other, deposits[other].what);
        }
        std::memcpy(static_cast<unsigned char*>(all) + other * bytes, deposits[other].bytes, bytes);
    }
}

bool isShared(void const* ptr, size_t bytes) noexcept
{
    LaunchState const& launch = currentLaunch("isShared");
    auto const inside = [&](void const* base, size_t size) {
        uintptr_t const p = reinterpret_cast<uintptr_t>(ptr);
        uintptr_t const b = reinterpret_cast<uintptr_t>(base);
        return p >= b && bytes <= size && p - b <= size - bytes;
    };
    if (launch.dynamicSmemBytes > 0 && inside(launch.dynamicSmem, launch.dynamicSmemBytes))
    {
        return true;
    }
    for (StaticShared const& shared : launch.kernel->shared)
    {
        if (inside(shared.address, shared.bytes))
        {
            return true;
        }
    }
    return false;
}

namespace
{

std::mutex gArgumentLaunchersMutex;

std::map<void const*, ArgumentArrayLauncher>& argumentLaunchers()
{
    static std::map<void const*, ArgumentArrayLauncher> launchers;
    return launchers;
}

} // namespace

void registerArgumentArrayLauncher(void const* kernel, ArgumentArrayLauncher launcher) noexcept
{
    std::lock_guard<std::mutex> lock(gArgumentLaunchersMutex);
    argumentLaunchers()[kernel] = launcher;
}

ArgumentArrayLauncher findArgumentArrayLauncher(void const* kernel) noexcept
{
    std::lock_guard<std::mutex> lock(gArgumentLaunchersMutex);
    auto const found = argumentLaunchers().find(kernel);
    return found == argumentLaunchers().end() ? nullptr : found->second;
}

char const* kernelName(void const* kernel)
{
    return kernelInfo(kernel).name.c_str();
}

cudaError_t runLaunch(void const* kernel, unsigned grid, unsigned block, size_t smemBytes,
    std::function<void()> const& body, bool programmaticDependent) noexcept
{
    KernelInfo& info = kernelInfo(kernel);
    if (grid == 0 || block == 0 || block > 1024)
    {
        std::fprintf(stderr, "host emulation: launch of %s with grid %u, block %u: invalid configuration\n",
            info.name.c_str(), grid, block);
        return tLastError = cudaErrorInvalidConfiguration;
    }
    if (block % 32 != 0)
    {
        std::fprintf(stderr,
            "host emulation: launch of %s with block %u: not a multiple of 32 (the emulation runs whole warps only)\n",
            info.name.c_str(), block);
        return tLastError = cudaErrorInvalidConfiguration;
    }
    int32_t const sm = emulatedSm();
    int64_t const dynamicLimit = info.maxDynamicShared;
    if (static_cast<int64_t>(smemBytes) > dynamicLimit
        || static_cast<int64_t>(smemBytes + info.staticSharedBytes) > sharedOptinBytes(sm))
    {
        std::fprintf(stderr,
            "host emulation: launch of %s: %zu bytes of dynamic shared memory (+ %zu static) exceed the limit (%lld "
            "dynamic without cudaFuncSetAttribute(MaxDynamicSharedMemorySize), %lld in all on sm_%d)\n",
            info.name.c_str(), smemBytes, info.staticSharedBytes, static_cast<long long>(dynamicLimit),
            static_cast<long long>(sharedOptinBytes(sm)), sm);
        return tLastError = cudaErrorInvalidValue;
    }
    if (info.staticSharedBytes > 48 * 1024)
    {
        std::fprintf(stderr, "host emulation: %s declares %zu bytes of static shared memory (limit 48 KiB)\n",
            info.name.c_str(), info.staticSharedBytes);
        return tLastError = cudaErrorInvalidValue;
    }

    LaunchState launch;
    launch.kernel = &info;
    launch.block = block;
    launch.grid = grid;
    launch.emulatedGrid = grid < maxBlocks() ? grid : maxBlocks();
    launch.dynamicSmemBytes = smemBytes;
    for (unsigned b = 0; b < launch.emulatedGrid; ++b)
    {
        launch.blockList.push_back(b);
    }
    // Exactly smemBytes (ASan flags any access past it), 128-byte aligned.
    launch.dynamicSmem = ::operator new(smemBytes, std::align_val_t{128}, std::nothrow);
    if (launch.dynamicSmem == nullptr)
    {
        return tLastError = cudaErrorMemoryAllocation;
    }
    launch.blockBarrier.init(block, false);
    launch.scheduler.init(block / 32, schedule());
    launch.warps.reset(new Warp[block / 32]);
    for (unsigned w = 0; w < block / 32; ++w)
    {
        launch.warps[w].barrier.init(32, true);
    }
    if (traceLaunches())
    {
        std::fprintf(stderr,
            "host emulation: launch %s grid=%u (emulated %u) block=%u dynamicSmem=%zu staticSmem=%zu schedule=%s "
            "dependency=%s\n",
            info.name.c_str(), grid, launch.emulatedGrid, block, smemBytes, info.staticSharedBytes, scheduleName(),
            programmaticDependent ? "programmatic" : "stream");
    }
    poisonShared(launch);
    ptx::resetCounts();
    trace::LaunchInfo traced{info.name.c_str(), grid, block, smemBytes, info.staticSharedBytes, {}, programmaticDependent};
    if (trace::gHooks != nullptr)
    {
        // Tracing build: the tracer may pick a sample of the real grid (gridDim.x = grid).
        traced.shared.push_back(trace::SharedRange{launch.dynamicSmem, smemBytes});
        for (StaticShared const& shared : info.shared)
        {
            traced.shared.push_back(trace::SharedRange{shared.address, shared.bytes});
        }
        if (trace::gHooks->selectBlocks(traced, launch.blockList))
        {
            launch.emulatedGrid = grid;
        }
        trace::gHooks->launchBegin(traced);
    }

    std::function<void(unsigned)> const worker = [&launch, &body](unsigned tid) {
        tLaunch = &launch;
        tThreadIdx = uint3{tid, 0, 0};
        tBlockDim = dim3(launch.block, 1, 1);
        tGridDim = dim3(launch.emulatedGrid, 1, 1);
        tShuffleCount = 0;
        tGatherCount = 0;
        Scheduler& scheduler = launch.scheduler;
        if (scheduler.serial())
        {
            std::unique_lock<std::mutex> lock(scheduler.mutex());
            scheduler.waitTurn(tid / 32, lock, [] { return true; }, "to start");
        }
        for (size_t i = 0; i < launch.blockList.size(); ++i)
        {
            if (i > 0)
            {
                launch.blockBarrier.arriveAndWait(Site::kBLOCK_END, nullptr);
                if (tid == 0)
                {
                    if (trace::gHooks != nullptr)
                    {
                        trace::gHooks->blockEnd(launch.blockList[i - 1]);
                    }
                    poisonShared(launch);
                }
                launch.blockBarrier.arriveAndWait(Site::kBLOCK_START, nullptr);
            }
            tBlockIdx = uint3{launch.blockList[i], 0, 0};
            body();
            ptx::endOfBlock(); // no cp.async may outlive its block
        }
        if (scheduler.serial())
        {
            std::unique_lock<std::mutex> lock(scheduler.mutex());
            if (scheduler.laneFinished(tid / 32) && !scheduler.passTurn())
            {
                deadlock(lock, ("warp " + std::to_string(tid / 32) + " finished the kernel").c_str());
            }
        }
        tLaunch = nullptr;
    };
    if (!launch.blockList.empty())
    {
        workerPool().run(block, worker);
    }
    if (traceLaunches())
    {
        std::fprintf(stderr, "host emulation: counted %s %s\n", info.name.c_str(), ptx::formatCounts().c_str());
        std::string const grid = ptx::formatGridCounts();
        if (!grid.empty())
        {
            std::fprintf(stderr, "host emulation: griddepcontrol %s %s\n", info.name.c_str(), grid.c_str());
        }
    }
    if (trace::gHooks != nullptr)
    {
        if (!launch.blockList.empty())
        {
            trace::gHooks->blockEnd(launch.blockList.back());
        }
        trace::gHooks->launchEnd();
    }
    ::operator delete(launch.dynamicSmem, std::align_val_t{128});
    return cudaSuccess;
}

//! cudaFuncSetAttribute(MaxDynamicSharedMemorySize): raises the kernel's dynamic limit.
cudaError_t setMaxDynamicShared(void const* kernel, int value)
{
    KernelInfo& info = kernelInfo(kernel);
    if (value < 0 || value > sharedOptinBytes(emulatedSm()))
    {
        std::fprintf(stderr, "host emulation: cudaFuncSetAttribute(%s, MaxDynamicSharedMemorySize, %d) exceeds sm_%d's "
                             "%lld bytes\n",
            info.name.c_str(), value, emulatedSm(), static_cast<long long>(sharedOptinBytes(emulatedSm())));
        return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> lock(gKernelMutex);
    info.maxDynamicShared = value > 48 * 1024 ? value : 48 * 1024;
    return cudaSuccess;
}

} // namespace detail
} // namespace emulation
} // namespace elfatt

// -------------------------------------------------------------------------------------------------
// CUDA runtime functions the sources may call (declarations in cuda_runtime_api.h). The emulation
// does not link libcudart.
// -------------------------------------------------------------------------------------------------
namespace emu = ::elfatt::emulation::detail;

cudaError_t cudaGetLastError(void)
{
    cudaError_t const error = emu::tLastError;
    emu::tLastError = cudaSuccess;
    return error;
}

cudaError_t cudaPeekAtLastError(void)
{
    return emu::tLastError;
}

cudaError_t cudaGetDevice(int* device)
{
    if (device == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device)
{
    if (value == nullptr || device != 0)
    {
        return cudaErrorInvalidValue;
    }
    int32_t const sm = emu::emulatedSm();
    switch (attr)
    {
    case cudaDevAttrComputeCapabilityMajor: *value = sm / 10; break;
    case cudaDevAttrComputeCapabilityMinor: *value = sm % 10; break;
    case cudaDevAttrMultiProcessorCount: *value = emu::multiprocessors(sm); break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxGridDimX: *value = 0x7fffffff; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(emu::sharedOptinBytes(sm)); break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
        *value = static_cast<int>(emu::sharedOptinBytes(sm)) + 1024;
        break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = sm == 86 || sm == 89 || sm >= 120 ? 1536 : 2048; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 65536; break;
    default: *value = 0; break;
    }
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream)
{
    (void) stream; // launches are synchronous here: stream order is program order
    if (devPtr == nullptr && count > 0)
    {
        return cudaErrorInvalidValue;
    }
    if (count > 0)
    {
        std::memset(devPtr, value, count);
    }
    if (emu::traceLaunches())
    {
        std::fprintf(stderr, "host emulation: memset %zu bytes\n", count);
    }
    if (::elfatt::emulation::trace::gHooks != nullptr && ::elfatt::emulation::trace::gHooks->memset != nullptr)
    {
        ::elfatt::emulation::trace::gHooks->memset(count);
    }
    return cudaSuccess;
}

// cudaLaunchKernelEx: cuda_runtime.h's variadic template (compiled here by g++ too) packs the
// arguments into an array of pointers and calls this function. The kernel must have been
// registered (emulation::registerKernel, done by detail::launchKernelDependent) so that the array can be
// unpacked into its parameter types; the launch then runs like any other (emulation::launch).
// Only 1-D grids and blocks (what the library launches) and the attribute
// cudaLaunchAttributeProgrammaticStreamSerialization are emulated; any other attribute is
// refused. PDL needs sm_90 (CUDA C++ Programming Guide, "Programmatic Dependent Launch and
// Synchronization"): asking for it on an emulated older device is refused too (the emulation's
// own check: the library must launch such a kernel normally there).
// cudaLaunchConfig_t's fields gridDim and blockDim: not the emulated built-in variables here.
#pragma push_macro("gridDim")
#pragma push_macro("blockDim")
#undef gridDim
#undef blockDim
cudaError_t cudaLaunchKernelExC(cudaLaunchConfig_t const* config, void const* func, void** args)
{
    if (config == nullptr || func == nullptr || (config->numAttrs > 0 && config->attrs == nullptr))
    {
        return emu::tLastError = cudaErrorInvalidValue;
    }
    emu::ArgumentArrayLauncher const launcher = emu::findArgumentArrayLauncher(func);
    if (launcher == nullptr)
    {
        std::fprintf(stderr,
            "host emulation: cudaLaunchKernelEx of %s, which was not registered (launch through "
            "detail::launchKernelDependent, which calls emulation::registerKernel)\n",
            emu::kernelName(func));
        return emu::tLastError = cudaErrorInvalidDeviceFunction;
    }
    if (config->gridDim.y != 1 || config->gridDim.z != 1 || config->blockDim.y != 1 || config->blockDim.z != 1)
    {
        std::fprintf(stderr, "host emulation: cudaLaunchKernelEx of %s: only 1-D grids and blocks are emulated\n",
            emu::kernelName(func));
        return emu::tLastError = cudaErrorInvalidConfiguration;
    }
    bool programmatic = false;
    for (unsigned i = 0; i < config->numAttrs; ++i)
    {
        cudaLaunchAttribute const& attribute = config->attrs[i];
        switch (attribute.id)
        {
        case cudaLaunchAttributeIgnore: break;
        case cudaLaunchAttributeProgrammaticStreamSerialization:
            programmatic = attribute.val.programmaticStreamSerializationAllowed != 0;
            break;
        default:
            std::fprintf(stderr, "host emulation: cudaLaunchKernelEx of %s: launch attribute %d is not emulated\n",
                emu::kernelName(func), static_cast<int>(attribute.id));
            return emu::tLastError = cudaErrorInvalidValue;
        }
    }
    if (programmatic && emu::emulatedSm() < 90)
    {
        std::fprintf(stderr,
            "host emulation: cudaLaunchKernelEx of %s with programmatic stream serialization on sm_%d: PDL needs "
            "sm_90\n",
            emu::kernelName(func), emu::emulatedSm());
        return emu::tLastError = cudaErrorInvalidValue;
    }
    return launcher(func, config->gridDim.x, config->blockDim.x, config->dynamicSmemBytes, programmatic, args);
}
#pragma pop_macro("blockDim")
#pragma pop_macro("gridDim")

cudaError_t cudaFuncSetAttribute(void const* func, enum cudaFuncAttribute attr, int value)
{
    if (func == nullptr)
    {
        return cudaErrorInvalidDeviceFunction;
    }
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize)
    {
        return emu::setMaxDynamicShared(func, value);
    }
    return cudaSuccess;
}

char const* cudaGetErrorName(cudaError_t error)
{
    switch (error)
    {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    default: return "cudaError (other)";
    }
}

char const* cudaGetErrorString(cudaError_t error)
{
    switch (error)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    default: return "unrecognized error code (host emulation)";
    }
}
