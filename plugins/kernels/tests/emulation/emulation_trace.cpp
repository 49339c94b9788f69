/*
 * elfatt-deploy kernels: the tracer of the host emulation's tracing build (test builds only).
 *
 * The kernel sources are compiled with gcc's -fsanitize=thread instrumentation (no libtsan is
 * linked): every load and store in kernel code calls __tsan_readN / __tsan_writeN, defined
 * here. fmaf / expf / exp2f are wrapped at link time (-Wl,--wrap=...), the emulation's wmma
 * and barriers report through emulation_trace.h. Each event is kept per emulated thread with
 * its instruction (the return address into kernel code); accesses outside the global buffers
 * and shared memory (the stack: registers on the device) are dropped.
 *
 * When every thread of a block has finished, the block's events are grouped into warp
 * instructions: the k-th execution of instruction pc by the lanes of one warp is one warp
 * instruction (SIMT with reconvergence: lanes that skip an iteration are inactive lanes of it).
 * Per warp instruction:
 *   global memory: 32-byte sectors touched (requested), and per buffer the distinct sectors
 *     of the block (per row phase of a row-major buffer, as runs of sectors for a 1-D one:
 *     for the footprint over the grid);
 *   shared memory: wavefronts with bank conflicts, 32 banks of 4 bytes; accesses of 8 bytes
 *     are served in two half-warp phases, of 16 bytes in four quarter-warp phases; in a phase
 *     the wavefronts are the largest number of distinct 4-byte words any bank holds (the
 *     same word is a broadcast); "ideal" is what the same bytes would cost without conflicts;
 *   fmaf / expf / exp2f calls, wmma m x n x k operations, barriers and shuffles.
 * Output: JSON lines on the file named by ELFATT_TRACE_OUT, one per traced block and one per
 * launch (with the per-instruction table, weighted by the blocks' weights, whether the launch was
 * a programmatic (PDL) dependent of the one before it, and how many griddepcontrol.launch_dependents
 * the traced threads executed), and one per cudaMemsetAsync (a stream operation, with the index of
 * the launch that follows it).
 */
#include "emulation_trace.h"
#include "emulation_tracer.h"

#include "elfatt_host_emulation.h"
#include "emulation_ptx.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace elfatt
{
namespace emulation
{
namespace trace
{

//! A global buffer the tracer classifies accesses into (registered by the driver).
struct GlobalBuffer
{
    std::string name;
    uintptr_t base;
    size_t bytes;
    size_t pitch; //!< bytes per row (0: one-dimensional)
};

namespace
{

} // namespace

enum Kind : uint8_t
{
    kREAD = 0,
    kWRITE = 1,
    kFMA = 2,
    kEXP = 3,
    kMMA = 4,
    kBAR = 5,
    kSYNCWARP = 6,
    kSHFL = 7,
    kWAIT = 8, //!< cp.async.wait_group: addr = chain << 32 | bytes in flight, bytes = bytes landing, buffer = copies,
               //!< group = 1 + the newest group landing (0: none)
    kCOMMIT = 9, //!< cp.async.commit_group: group = its ordinal (a timeline mark, not an instruction of the tables)
    kL2LOAD = 10, //!< an ld.global.cg is issued (a timeline mark; the read after it is its access)
    kL2WAIT = 11, //!< the thread waits for one L2 round trip: an atomic with a result, a fence (a timeline mark)
};

void math(uint8_t kind, void const* site);

namespace
{

//! Events that are marks of the timeline only, not instructions of the tables.
bool timelineOnly(uint8_t kind)
{
    return kind == kCOMMIT || kind == kL2LOAD || kind == kL2WAIT;
}

struct Event
{
    uintptr_t pc;
    uintptr_t addr; //!< kMMA: m << 40 | n << 24 | k << 8 | inBytes
    uint32_t bytes;
    uint8_t kind;
    uint8_t space; //!< 0 global, 1 shared
    uint16_t buffer;
    uint32_t group{0}; //!< kWAIT, kCOMMIT: see the kinds
};

constexpr unsigned kMAX_THREADS = 1024;

struct State
{
    Mode mode{Mode::kDRY};
    std::map<unsigned, LaunchSample> samples;
    std::FILE* out{nullptr};
    std::vector<GlobalBuffer> buffers;
    std::vector<SharedRange> shared;
    bool active{false}; //!< a launch is being traced
    unsigned launchIndex{0};
    std::string kernel;
    unsigned grid{0};
    unsigned block{0};
    size_t dynamicSmem{0};
    size_t staticSmem{0};
    bool programmaticDependent{false};
    LaunchSample const* sample{nullptr};
    std::vector<Event> events[kMAX_THREADS];
    unsigned blocksDone{0};
    uintptr_t imageBase{0};

    struct PcStat
    {
        uint8_t kind;
        uint8_t space;
        double instr{0};
        double lanes{0};
        double sectors{0};
        double wavefronts{0};
        double ideal{0};
        double flops{0};
    };
    std::map<std::pair<uintptr_t, int>, PcStat> pcs; //!< (pc, kind/space class) -> weighted totals
};

State& state()
{
    static State* const kSTATE = new State; // never destroyed: emulated threads may outlive main
    return *kSTATE;
}

bool classify(uintptr_t addr, uint8_t& space, uint16_t& buffer)
{
    State const& s = state();
    for (SharedRange const& range : s.shared)
    {
        uintptr_t const base = reinterpret_cast<uintptr_t>(range.base);
        if (addr >= base && addr < base + range.bytes)
        {
            space = 1;
            buffer = 0;
            return true;
        }
    }
    for (size_t i = 0; i < s.buffers.size(); ++i)
    {
        if (addr >= s.buffers[i].base && addr < s.buffers[i].base + s.buffers[i].bytes)
        {
            space = 0;
            buffer = static_cast<uint16_t>(i);
            return true;
        }
    }
    return false;
}

inline bool recording()
{
    return state().active && detail::tLaunch != nullptr && detail::tThreadIdx.x < kMAX_THREADS;
}

inline void record(uintptr_t pc, uintptr_t addr, uint32_t bytes, uint8_t kind)
{
    if (!recording())
    {
        return;
    }
    Event event{pc, addr, bytes, kind, 0, 0, 0};
    if (kind == kREAD || kind == kWRITE)
    {
        if (!classify(addr, event.space, event.buffer))
        {
            return; // the stack, thread-locals, kernel parameters: registers on the device
        }
    }
    state().events[detail::tThreadIdx.x].push_back(event);
}

// -------------------------------------------------------------------------------------------------
// Metrics of one warp instruction
// -------------------------------------------------------------------------------------------------

struct Lane
{
    uint32_t lane;
    uintptr_t addr;
    uint32_t bytes;
};

//! Distinct 32-byte sectors of the lanes' byte ranges.
void sectorsOf(std::vector<Lane> const& lanes, std::vector<uint64_t>& sectors)
{
    sectors.clear();
    for (Lane const& l : lanes)
    {
        for (uint64_t s = l.addr >> 5; s <= (l.addr + l.bytes - 1) >> 5; ++s)
        {
            sectors.push_back(s);
        }
    }
    std::sort(sectors.begin(), sectors.end());
    sectors.erase(std::unique(sectors.begin(), sectors.end()), sectors.end());
}

//! Shared-memory wavefronts (with conflicts) and the conflict-free count for the same bytes.
void wavefrontsOf(std::vector<Lane> const& lanes, double& wavefronts, double& ideal)
{
    uint32_t width = 0;
    for (Lane const& l : lanes)
    {
        width = std::max(width, l.bytes);
    }
    // Lanes per phase: 32 for <= 4-byte accesses, 16 for 8 bytes, 8 for 16 bytes.
    uint32_t const perPhase = width <= 4 ? 32U : (width <= 8 ? 16U : 8U);
    std::vector<uint64_t> words[32 / 8];
    std::vector<uint64_t> phaseWords;
    wavefronts = 0;
    ideal = 0;
    for (uint32_t phase = 0; phase < 32 / perPhase; ++phase)
    {
        phaseWords.clear();
        for (Lane const& l : lanes)
        {
            if (l.lane / perPhase != phase)
            {
                continue;
            }
            for (uint64_t w = l.addr >> 2; w <= (l.addr + l.bytes - 1) >> 2; ++w)
            {
                phaseWords.push_back(w);
            }
        }
        if (phaseWords.empty())
        {
            continue;
        }
        std::sort(phaseWords.begin(), phaseWords.end());
        phaseWords.erase(std::unique(phaseWords.begin(), phaseWords.end()), phaseWords.end());
        uint32_t perBank[32] = {};
        uint32_t worst = 0;
        for (uint64_t w : phaseWords)
        {
            worst = std::max(worst, ++perBank[w % 32]);
        }
        wavefronts += worst;
        ideal += static_cast<double>((phaseWords.size() + 31) / 32);
    }
    (void) words;
}

struct BufferTouch
{
    std::vector<uint64_t> read;  //!< sectors (relative to the buffer's base)
    std::vector<uint64_t> write;
};

struct BlockMetrics
{
    double gldInstr{0}, gldSectors{0}, gldBytes{0};
    double gstInstr{0}, gstSectors{0}, gstBytes{0};
    double ldsInstr{0}, ldsWavefronts{0}, ldsIdeal{0}, ldsBytes{0};
    double stsInstr{0}, stsWavefronts{0}, stsIdeal{0}, stsBytes{0};
    double fmaInstr{0}, fmaLanes{0}, expInstr{0}, expLanes{0};
    double mmaInstr{0}, mmaFlops{0}, hmma16816{0};
    double bar{0}, syncwarp{0}, shfl{0};
    //! cp.async waits of a warp that wait for copies (forced), the bytes the warp's lanes had in flight
    //! at them, the global bytes and copy instructions they waited for, and the longest copy chain of a
    //! thread of the block (see Hooks::asyncWait)
    double asyncWaits{0}, asyncInFlight{0}, asyncBytes{0}, asyncCopies{0}, asyncChain{0};
    double warps{0};
    std::map<uint16_t, BufferTouch> touched;
};

struct GroupKey
{
    uintptr_t pc;
    uint32_t warp;
    uint32_t occurrence;
    bool operator==(GroupKey const& o) const
    {
        return pc == o.pc && warp == o.warp && occurrence == o.occurrence;
    }
};

struct GroupKeyHash
{
    size_t operator()(GroupKey const& k) const
    {
        return std::hash<uint64_t>()(k.pc * 0x9E3779B97F4A7C15ULL ^ (uint64_t{k.warp} << 32 | k.occurrence));
    }
};

struct Group
{
    uint8_t kind;
    uint8_t space;
    uint16_t buffer;
    uintptr_t extra; //!< kMMA: the packed shape
    uint32_t copies{0}; //!< kWAIT: the most copies a lane waits for
    std::vector<Lane> lanes;
};

void jsonTouch(std::FILE* out, std::vector<uint64_t>& sectors, GlobalBuffer const& buffer)
{
    std::sort(sectors.begin(), sectors.end());
    sectors.erase(std::unique(sectors.begin(), sectors.end()), sectors.end());
    std::fprintf(out, "{\"unique\": %zu, \"phases\": [", sectors.size());
    if (buffer.pitch > 0 && buffer.pitch % 32 == 0)
    {
        uint64_t const perRow = buffer.pitch / 32;
        std::map<uint64_t, uint64_t> rows; // phase -> distinct rows (sectors are sorted and distinct)
        for (uint64_t s : sectors)
        {
            ++rows[s % perRow];
        }
        bool first = true;
        for (auto const& [phase, count] : rows)
        {
            std::fprintf(out, "%s[%llu, %llu]", first ? "" : ", ", static_cast<unsigned long long>(phase),
                static_cast<unsigned long long>(count));
            first = false;
        }
        std::fprintf(out, "]}");
        return;
    }
    // A one-dimensional buffer: the sectors themselves, as [first, last + 1) runs, so that the footprint
    // over the grid can be the union of what the blocks touch (blocks of a kind may share sectors).
    std::fprintf(out, "], \"runs\": [");
    bool first = true;
    for (size_t i = 0; i < sectors.size();)
    {
        size_t j = i + 1;
        while (j < sectors.size() && sectors[j] == sectors[j - 1] + 1)
        {
            ++j;
        }
        std::fprintf(out, "%s[%llu, %llu]", first ? "" : ", ", static_cast<unsigned long long>(sectors[i]),
            static_cast<unsigned long long>(sectors[j - 1] + 1));
        first = false;
        i = j;
    }
    std::fprintf(out, "]}");
}

//! Instructions of the model's issue count (bench/kernels_model.py observed_instructions) an event
//! stands for: a global or shared access, fmaf, expf, a barrier or a shuffle 1, a matrix multiply its
//! m16n8k16 units; __syncwarp, commit and wait marks 0.
uint32_t issueUnits(Event const& e)
{
    switch (e.kind)
    {
    case kREAD:
    case kWRITE:
    case kFMA:
    case kEXP:
    case kBAR:
    case kSHFL: return 1;
    case kMMA: return static_cast<uint32_t>(((e.addr >> 40) & 0xFFFF) * ((e.addr >> 24) & 0xFFFF) * ((e.addr >> 8) & 0xFFFF)
                   / (16 * 8 * 16));
    default: return 0;
    }
}

//! Each warp's timeline, as JSON: for the lane with the most events (its program order), the marks
//! [instructions since the previous mark, what, argument]: what 0 = cp.async.commit_group (argument:
//! the group's ordinal), 1 = a cp.async.wait_group that waits for copies (the newest group landing),
//! 2 = __syncthreads, 3 = the end of the block, 4 = the first of L2-only loads issued back to back (no
//! other traced instruction between them), 5 = the warp waits for the L2 round trip of the loads since
//! the last 4 (at its next traced instruction after them, a barrier, a cp.async mark or the end), or
//! for an atomic or a fence (then a 4 comes right before it). bench/kernels_model.py runs these
//! timelines against the DRAM and L2 latencies (the critical path of a block).
std::string warpTimelines(State const& s)
{
    std::string out = "[";
    char text[64];
    for (unsigned warp = 0; warp * 32 < s.block; ++warp)
    {
        unsigned lane0 = warp * 32;
        for (unsigned tid = lane0; tid < std::min(s.block, lane0 + 32); ++tid)
        {
            if (s.events[tid].size() > s.events[lane0].size())
            {
                lane0 = tid;
            }
        }
        out += warp == 0 ? "[" : ", [";
        uint64_t units = 0;
        bool first = true;
        auto mark = [&](int what, uint32_t argument) {
            std::snprintf(text, sizeof(text), "%s[%llu, %d, %u]", first ? "" : ", ",
                static_cast<unsigned long long>(units), what, argument);
            out += text;
            units = 0;
            first = false;
        };
        bool loadsInFlight = false; //!< L2-only loads issued since the last mark 5
        bool loadAccess = false;    //!< the next event is the access of an L2-only load
        auto awaitLoads = [&]() {
            if (loadsInFlight)
            {
                mark(5, 0);
                loadsInFlight = false;
            }
        };
        for (Event const& e : s.events[lane0])
        {
            if (e.kind == kL2LOAD)
            {
                if (!loadsInFlight)
                {
                    mark(4, 0);
                    loadsInFlight = true;
                }
                loadAccess = true;
                continue;
            }
            bool const isLoadAccess = loadAccess && e.kind == kREAD;
            loadAccess = false;
            if (!isLoadAccess && (issueUnits(e) > 0 || e.kind == kCOMMIT || e.kind == kWAIT || e.kind == kL2WAIT))
            {
                awaitLoads(); // the value of the loads is used here at the latest
            }
            if (e.kind == kL2WAIT)
            {
                mark(4, 0);
                mark(5, 0);
                continue;
            }
            units += issueUnits(e);
            if (e.kind == kCOMMIT)
            {
                mark(0, e.group);
            }
            else if (e.kind == kWAIT && e.group > 0)
            {
                mark(1, e.group - 1);
            }
            else if (e.kind == kBAR)
            {
                mark(2, 0);
            }
        }
        awaitLoads();
        mark(3, 0);
        out += "]";
    }
    return out + "]";
}

char const* kindName(uint8_t kind, uint8_t space);

void finishBlock(unsigned block)
{
    State& s = state();
    double const weight = s.sample != nullptr ? [&] {
        for (size_t i = 0; i < s.sample->blocks.size(); ++i)
        {
            if (s.sample->blocks[i] == block)
            {
                return s.sample->weights[i];
            }
        }
        return 1.0;
    }()
                                              : 1.0;
    std::string const timeline = warpTimelines(s);
    std::unordered_map<GroupKey, Group, GroupKeyHash> groups;
    std::vector<GroupKey> order;
    for (unsigned tid = 0; tid < s.block; ++tid)
    {
        std::unordered_map<uintptr_t, uint32_t> occurrences;
        for (Event const& e : s.events[tid])
        {
            if (timelineOnly(e.kind))
            {
                continue; // a mark of the timeline only
            }
            // Each kind is its own instruction stream at a pc (a call site may report several kinds).
            uintptr_t const pcKey = e.pc * 16 + e.kind;
            GroupKey const key{pcKey, tid / 32, occurrences[pcKey]++};
            auto [it, inserted] = groups.try_emplace(key);
            if (inserted)
            {
                it->second.kind = e.kind;
                it->second.space = e.space;
                it->second.buffer = e.buffer;
                it->second.extra = e.kind == kMMA ? e.addr : 0;
                order.push_back(key);
            }
            it->second.lanes.push_back(Lane{tid % 32, e.addr, e.bytes});
            if (e.kind == kWAIT)
            {
                it->second.copies = std::max(it->second.copies, static_cast<uint32_t>(e.buffer));
            }
        }
        s.events[tid].clear();
    }

    BlockMetrics m;
    m.warps = s.block / 32;
    std::vector<uint64_t> sectors;
    //! (pc, class) -> this block's instructions of the model's issue count there (issueUnits), unweighted:
    //! the model prices them at their call site's SASS ratio (the block's own cycles per instruction)
    std::map<std::pair<uintptr_t, int>, double> blockUnits;
    for (GroupKey const& key : order)
    {
        Group const& g = groups[key];
        uintptr_t const pc = key.pc / 16;
        double const lanes = static_cast<double>(g.lanes.size());
        if (uint32_t const units = issueUnits(Event{pc, g.extra, 0, g.kind, g.space, 0, 0}); units > 0)
        {
            blockUnits[{pc, g.kind * 2 + g.space}] += units;
        }
        State::PcStat& stat = s.pcs[{pc, g.kind * 2 + g.space}];
        stat.kind = g.kind;
        stat.space = g.space;
        stat.instr += weight;
        stat.lanes += weight * lanes;
        switch (g.kind)
        {
        case kREAD:
        case kWRITE:
        {
            double bytes = 0;
            for (Lane const& l : g.lanes)
            {
                bytes += l.bytes;
            }
            if (g.space == 0)
            {
                sectorsOf(g.lanes, sectors);
                double const n = static_cast<double>(sectors.size());
                BufferTouch& touch = m.touched[g.buffer];
                uint64_t const base = s.buffers[g.buffer].base >> 5;
                std::vector<uint64_t>& into = g.kind == kREAD ? touch.read : touch.write;
                for (uint64_t sec : sectors)
                {
                    into.push_back(sec - base);
                }
                (g.kind == kREAD ? m.gldInstr : m.gstInstr) += 1;
                (g.kind == kREAD ? m.gldSectors : m.gstSectors) += n;
                (g.kind == kREAD ? m.gldBytes : m.gstBytes) += bytes;
                stat.sectors += weight * n;
            }
            else
            {
                double wavefronts = 0;
                double ideal = 0;
                wavefrontsOf(g.lanes, wavefronts, ideal);
                (g.kind == kREAD ? m.ldsInstr : m.stsInstr) += 1;
                (g.kind == kREAD ? m.ldsWavefronts : m.stsWavefronts) += wavefronts;
                (g.kind == kREAD ? m.ldsIdeal : m.stsIdeal) += ideal;
                (g.kind == kREAD ? m.ldsBytes : m.stsBytes) += bytes;
                stat.wavefronts += weight * wavefronts;
                stat.ideal += weight * ideal;
            }
            break;
        }
        case kFMA:
            m.fmaInstr += 1;
            m.fmaLanes += lanes;
            stat.flops += weight * 2 * lanes;
            break;
        case kEXP:
            m.expInstr += 1;
            m.expLanes += lanes;
            break;
        case kMMA:
        {
            double const mm = static_cast<double>((g.extra >> 40) & 0xFFFF);
            double const nn = static_cast<double>((g.extra >> 24) & 0xFFFF);
            double const kk = static_cast<double>((g.extra >> 8) & 0xFFFF);
            m.mmaInstr += 1;
            m.mmaFlops += 2 * mm * nn * kk;
            m.hmma16816 += mm * nn * kk / (16.0 * 8.0 * 16.0);
            stat.flops += weight * 2 * mm * nn * kk;
            break;
        }
        case kBAR: m.bar += 1; break;
        case kSYNCWARP: m.syncwarp += 1; break;
        case kSHFL: m.shfl += 1; break;
        case kWAIT:
        {
            double inFlight = 0;
            double landing = 0;
            for (Lane const& l : g.lanes)
            {
                inFlight += static_cast<double>(l.addr & 0xFFFFFFFFULL);
                landing += l.bytes;
                m.asyncChain = std::max(m.asyncChain, static_cast<double>(l.addr >> 32));
            }
            if (landing > 0)
            {
                m.asyncWaits += 1;
                m.asyncInFlight += inFlight;
                m.asyncBytes += landing;
                m.asyncCopies += g.copies;
            }
            break;
        }
        default: break;
        }
    }

    std::FILE* out = s.out;
    std::fprintf(out,
        "{\"type\": \"block\", \"launch\": %u, \"block\": %u, \"weight\": %.17g, \"warps\": %.17g, "
        "\"gld_instr\": %.17g, \"gld_sectors\": %.17g, \"gld_bytes\": %.17g, \"gst_instr\": %.17g, \"gst_sectors\": %.17g, "
        "\"gst_bytes\": %.17g, \"lds_instr\": %.17g, \"lds_wavefronts\": %.17g, \"lds_ideal\": %.17g, \"lds_bytes\": %.17g, "
        "\"sts_instr\": %.17g, \"sts_wavefronts\": %.17g, \"sts_ideal\": %.17g, \"sts_bytes\": %.17g, \"fma_instr\": %.17g, "
        "\"fma_lanes\": %.17g, \"exp_instr\": %.17g, \"exp_lanes\": %.17g, \"mma_instr\": %.17g, \"mma_flops\": %.17g, "
        "\"hmma16816\": %.17g, \"bar\": %.17g, \"syncwarp\": %.17g, \"shfl\": %.17g, \"async_waits\": %.17g, "
        "\"async_in_flight\": %.17g, \"async_bytes\": %.17g, \"async_copies\": %.17g, \"async_chain\": %.17g, "
        "\"buffers\": {",
        s.launchIndex, block, weight, m.warps, m.gldInstr, m.gldSectors, m.gldBytes, m.gstInstr, m.gstSectors,
        m.gstBytes, m.ldsInstr, m.ldsWavefronts, m.ldsIdeal, m.ldsBytes, m.stsInstr, m.stsWavefronts, m.stsIdeal,
        m.stsBytes, m.fmaInstr, m.fmaLanes, m.expInstr, m.expLanes, m.mmaInstr, m.mmaFlops, m.hmma16816, m.bar,
        m.syncwarp, m.shfl, m.asyncWaits, m.asyncInFlight, m.asyncBytes, m.asyncCopies, m.asyncChain);
    bool first = true;
    for (auto& [index, touch] : m.touched)
    {
        GlobalBuffer const& buffer = s.buffers[index];
        std::fprintf(out, "%s\"%s\": {\"read\": ", first ? "" : ", ", buffer.name.c_str());
        jsonTouch(out, touch.read, buffer);
        std::fprintf(out, ", \"write\": ");
        jsonTouch(out, touch.write, buffer);
        std::fprintf(out, "}");
        first = false;
    }
    std::fprintf(out, "}, \"pcs\": [");
    first = true;
    for (auto const& [key, units] : blockUnits)
    {
        std::fprintf(out, "%s[%llu, \"%s\", %.17g]", first ? "" : ", ",
            static_cast<unsigned long long>(key.first - s.imageBase), kindName(static_cast<uint8_t>(key.second / 2),
            static_cast<uint8_t>(key.second % 2)), units);
        first = false;
    }
    std::fprintf(out, "], \"timeline\": %s}\n", timeline.c_str());
    ++s.blocksDone;
}

char const* kindName(uint8_t kind, uint8_t space)
{
    switch (kind)
    {
    case kREAD: return space == 0 ? "global_load" : "shared_load";
    case kWRITE: return space == 0 ? "global_store" : "shared_store";
    case kFMA: return "fmaf";
    case kEXP: return "exp";
    case kMMA: return "mma";
    case kBAR: return "syncthreads";
    case kSYNCWARP: return "syncwarp";
    case kSHFL: return "shfl";
    case kWAIT: return "cp_async_wait";
    default: return "?";
    }
}

void jsonString(std::FILE* out, std::string const& text)
{
    std::fputc('"', out);
    for (char c : text)
    {
        if (c == '"' || c == '\\')
        {
            std::fputc('\\', out);
        }
        std::fputc(c, out);
    }
    std::fputc('"', out);
}

// -------------------------------------------------------------------------------------------------
// Hooks
// -------------------------------------------------------------------------------------------------

bool selectBlocks(LaunchInfo const& launch, std::vector<unsigned>& blocks)
{
    State& s = state();
    blocks.clear();
    s.sample = nullptr;
    switch (s.mode)
    {
    case Mode::kDRY: break;
    case Mode::kALL:
        for (unsigned b = 0; b < launch.grid; ++b)
        {
            blocks.push_back(b);
        }
        break;
    case Mode::kSAMPLE:
    {
        auto const found = s.samples.find(s.launchIndex);
        if (found != s.samples.end())
        {
            s.sample = &found->second;
            for (unsigned b : found->second.blocks)
            {
                if (b >= launch.grid)
                {
                    std::fprintf(stderr, "trace: sample block %u of launch %u is outside the grid (%u)\n", b,
                        s.launchIndex, launch.grid);
                    std::exit(2);
                }
                blocks.push_back(b);
            }
        }
        break;
    }
    }
    return true;
}

void launchBegin(LaunchInfo const& launch)
{
    State& s = state();
    s.kernel = launch.kernel;
    s.grid = launch.grid;
    s.block = launch.block;
    s.dynamicSmem = launch.dynamicSmemBytes;
    s.staticSmem = launch.staticSmemBytes;
    s.programmaticDependent = launch.programmaticDependent;
    s.shared = launch.shared;
    s.pcs.clear();
    s.blocksDone = 0;
    if (launch.block > kMAX_THREADS)
    {
        std::fprintf(stderr, "trace: block of %u threads\n", launch.block);
        std::exit(2);
    }
    s.active = true;
}

void blockEnd(unsigned block)
{
    finishBlock(block);
}

void launchEnd()
{
    State& s = state();
    s.active = false;
    std::FILE* out = s.out;
    std::fprintf(out, "{\"type\": \"launch\", \"launch\": %u, \"kernel\": ", s.launchIndex);
    jsonString(out, s.kernel);
    std::fprintf(out,
        ", \"grid\": %u, \"block\": %u, \"dynamic_smem\": %zu, \"static_smem\": %zu, \"traced_blocks\": %u, "
        "\"programmatic_dependent\": %s, \"launch_dependents\": %llu, \"pcs\": [",
        s.grid, s.block, s.dynamicSmem, s.staticSmem, s.blocksDone, s.programmaticDependent ? "true" : "false",
        static_cast<unsigned long long>(
            ptx::gCounts[static_cast<int32_t>(ptx::Op::kGRID_LAUNCH)].load(std::memory_order_relaxed)));
    bool first = true;
    for (auto const& [key, stat] : s.pcs)
    {
        std::fprintf(out,
            "%s{\"pc\": %llu, \"kind\": \"%s\", \"instr\": %.17g, \"lanes\": %.17g, \"sectors\": %.17g, "
            "\"wavefronts\": %.17g, \"ideal\": %.17g, \"flops\": %.17g}",
            first ? "" : ", ", static_cast<unsigned long long>(key.first - s.imageBase),
            kindName(stat.kind, stat.space), stat.instr, stat.lanes, stat.sectors, stat.wavefronts, stat.ideal,
            stat.flops);
        first = false;
    }
    std::fprintf(out, "]}\n");
    std::fflush(out);
    ++s.launchIndex;
}

void sync(Sync kind, void const* site)
{
    record(reinterpret_cast<uintptr_t>(site), 0, 0,
        kind == Sync::kBLOCK ? kBAR : (kind == Sync::kWARP ? kSYNCWARP : kSHFL));
}

void access(void const* addr, uint32_t bytes, bool write, void const* site)
{
    record(reinterpret_cast<uintptr_t>(site), reinterpret_cast<uintptr_t>(addr), bytes, write ? kWRITE : kREAD);
}

void mma(int32_t m, int32_t n, int32_t k, int32_t inBytes, void const* site)
{
    uintptr_t const packed = (static_cast<uintptr_t>(m) << 40) | (static_cast<uintptr_t>(n) << 24)
        | (static_cast<uintptr_t>(k) << 8) | static_cast<uintptr_t>(inBytes & 0xFF);
    record(reinterpret_cast<uintptr_t>(site), packed, 0, kMMA);
}

void asyncWait(uint64_t inFlightBytes, uint32_t landingBytes, uint32_t landingCopies, uint32_t chain, uint32_t dependsOn,
    void const* site)
{
    if (!recording())
    {
        return;
    }
    Event event{reinterpret_cast<uintptr_t>(site), (static_cast<uintptr_t>(chain) << 32) | (inFlightBytes & 0xFFFFFFFFULL),
        landingBytes, kWAIT, 0, static_cast<uint16_t>(std::min<uint32_t>(landingCopies, 0xFFFF)), dependsOn};
    state().events[detail::tThreadIdx.x].push_back(event);
}

void asyncCommit(uint32_t group, void const* site)
{
    if (!recording())
    {
        return;
    }
    state().events[detail::tThreadIdx.x].push_back(Event{reinterpret_cast<uintptr_t>(site), 0, 0, kCOMMIT, 0, 0, group});
}

//! A stream operation between launches: {"type": "memset", "bytes": N, "before_launch": index of
//! the next launch}.
void memsetOp(size_t bytes)
{
    State& s = state();
    std::fprintf(s.out, "{\"type\": \"memset\", \"bytes\": %zu, \"before_launch\": %u}\n", bytes, s.launchIndex);
    std::fflush(s.out);
}

} // namespace

//! A wrapped math call (fmaf: kFMA, expf / exp2f: kEXP) of the calling emulated thread.
void math(uint8_t kind, void const* site)
{
    record(reinterpret_cast<uintptr_t>(site), 0, 0, kind);
}

namespace
{

void l2RoundTrip(L2Trip what)
{
    if (!recording())
    {
        return;
    }
    state().events[detail::tThreadIdx.x].push_back(Event{0, 0, 0, what == L2Trip::kLOAD ? kL2LOAD : kL2WAIT, 0, 0, 0});
}

Hooks const kHOOKS{selectBlocks, launchBegin, blockEnd, launchEnd, sync, access, mma, memsetOp, asyncWait, asyncCommit,
    l2RoundTrip};

} // namespace

void configure(Mode mode, std::map<unsigned, LaunchSample> samples, std::FILE* out)
{
    State& s = state();
    s.mode = mode;
    s.samples = std::move(samples);
    s.out = out;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void const*>(&configure), &info) != 0)
    {
        s.imageBase = reinterpret_cast<uintptr_t>(info.dli_fbase);
    }
}

void addGlobalBuffer(std::string const& name, void const* base, size_t bytes, size_t pitch)
{
    if (base != nullptr && bytes > 0)
    {
        state().buffers.push_back(GlobalBuffer{name, reinterpret_cast<uintptr_t>(base), bytes, pitch});
    }
}

void install()
{
    gHooks = &kHOOKS;
}

} // namespace trace
} // namespace emulation
} // namespace elfatt

// -------------------------------------------------------------------------------------------------
// gcc -fsanitize=thread callbacks (the kernel sources' loads and stores) and wrapped math
// -------------------------------------------------------------------------------------------------
namespace tr = ::elfatt::emulation::trace;

#define ELFATT_TSAN_ACCESS(N)                                                                                      \
    extern "C" void __tsan_read##N(void* addr)                                                                     \
    {                                                                                                              \
        tr::access(addr, N, false, __builtin_return_address(0));                                                   \
    }                                                                                                              \
    extern "C" void __tsan_write##N(void* addr)                                                                    \
    {                                                                                                              \
        tr::access(addr, N, true, __builtin_return_address(0));                                                    \
    }                                                                                                              \
    extern "C" void __tsan_unaligned_read##N(void* addr)                                                           \
    {                                                                                                              \
        tr::access(addr, N, false, __builtin_return_address(0));                                                   \
    }                                                                                                              \
    extern "C" void __tsan_unaligned_write##N(void* addr)                                                          \
    {                                                                                                              \
        tr::access(addr, N, true, __builtin_return_address(0));                                                    \
    }                                                                                                              \
    extern "C" void __tsan_volatile_read##N(void* addr)                                                            \
    {                                                                                                              \
        tr::access(addr, N, false, __builtin_return_address(0));                                                   \
    }                                                                                                              \
    extern "C" void __tsan_volatile_write##N(void* addr)                                                           \
    {                                                                                                              \
        tr::access(addr, N, true, __builtin_return_address(0));                                                    \
    }

ELFATT_TSAN_ACCESS(1)
ELFATT_TSAN_ACCESS(2)
ELFATT_TSAN_ACCESS(4)
ELFATT_TSAN_ACCESS(8)
ELFATT_TSAN_ACCESS(16)
#undef ELFATT_TSAN_ACCESS

extern "C" void __tsan_read_range(void* addr, unsigned long size)
{
    tr::access(addr, static_cast<uint32_t>(size), false, __builtin_return_address(0));
}
extern "C" void __tsan_write_range(void* addr, unsigned long size)
{
    tr::access(addr, static_cast<uint32_t>(size), true, __builtin_return_address(0));
}
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void*, void*) {}
extern "C" void __tsan_vptr_read(void*) {}

extern "C" float __real_fmaf(float, float, float);
extern "C" float __real_expf(float);
extern "C" float __real_exp2f(float);

extern "C" float __wrap_fmaf(float a, float b, float c)
{
    tr::math(tr::kFMA, __builtin_return_address(0));
    return __real_fmaf(a, b, c);
}
extern "C" float __wrap_expf(float x)
{
    tr::math(tr::kEXP, __builtin_return_address(0));
    return __real_expf(x);
}
extern "C" float __wrap_exp2f(float x)
{
    tr::math(tr::kEXP, __builtin_return_address(0));
    return __real_exp2f(x);
}

// Atomics (function-local static guards of the .cu files' host code, and the kernels' atomicAdd /
// __threadfence, which the emulation maps onto gcc's __atomic builtins): performed as asked. An atomic
// of kernel code is traced as a read and a write of its bytes (a global RED/ATOM on the device).
#define ELFATT_TSAN_ATOMIC(BITS, TYPE)                                                                             \
    extern "C" TYPE __tsan_atomic##BITS##_load(TYPE const volatile* addr, int)                                   \
    {                                                                                                              \
        tr::access(const_cast<TYPE const*>(addr), BITS / 8, false, __builtin_return_address(0));                   \
        return __atomic_load_n(addr, __ATOMIC_SEQ_CST);                                                            \
    }                                                                                                              \
    extern "C" void __tsan_atomic##BITS##_store(TYPE volatile* addr, TYPE value, int)                            \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        __atomic_store_n(addr, value, __ATOMIC_SEQ_CST);                                                           \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_exchange(TYPE volatile* addr, TYPE value, int)                         \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_exchange_n(addr, value, __ATOMIC_SEQ_CST);                                                 \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_fetch_add(TYPE volatile* addr, TYPE value, int)                        \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_fetch_add(addr, value, __ATOMIC_SEQ_CST);                                                  \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_fetch_sub(TYPE volatile* addr, TYPE value, int)                        \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_fetch_sub(addr, value, __ATOMIC_SEQ_CST);                                                  \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_fetch_and(TYPE volatile* addr, TYPE value, int)                        \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_fetch_and(addr, value, __ATOMIC_SEQ_CST);                                                  \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_fetch_or(TYPE volatile* addr, TYPE value, int)                         \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_fetch_or(addr, value, __ATOMIC_SEQ_CST);                                                   \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_fetch_xor(TYPE volatile* addr, TYPE value, int)                        \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_fetch_xor(addr, value, __ATOMIC_SEQ_CST);                                                  \
    }                                                                                                              \
    extern "C" int __tsan_atomic##BITS##_compare_exchange_strong(                                                 \
        TYPE volatile* addr, TYPE* expected, TYPE desired, int, int)                                              \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_compare_exchange_n(addr, expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);    \
    }                                                                                                              \
    extern "C" int __tsan_atomic##BITS##_compare_exchange_weak(                                                   \
        TYPE volatile* addr, TYPE* expected, TYPE desired, int, int)                                              \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        return __atomic_compare_exchange_n(addr, expected, desired, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);     \
    }                                                                                                              \
    extern "C" TYPE __tsan_atomic##BITS##_compare_exchange_val(                                                   \
        TYPE volatile* addr, TYPE expected, TYPE desired, int, int)                                               \
    {                                                                                                              \
        tr::access(const_cast<TYPE*>(addr), BITS / 8, true, __builtin_return_address(0));                          \
        __atomic_compare_exchange_n(addr, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);          \
        return expected;                                                                                           \
    }

ELFATT_TSAN_ATOMIC(8, uint8_t)
ELFATT_TSAN_ATOMIC(16, uint16_t)
ELFATT_TSAN_ATOMIC(32, uint32_t)
ELFATT_TSAN_ATOMIC(64, uint64_t)
#undef ELFATT_TSAN_ATOMIC

extern "C" void __tsan_atomic_thread_fence(int)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
extern "C" void __tsan_atomic_signal_fence(int)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
