/*
 * elfatt-deploy kernels: the tracer's interface to its driver (tracing build only; see
 * emulation_trace.cpp and trace_main.cpp).
 */
#pragma once

#include <cstddef>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace elfatt
{
namespace emulation
{
namespace trace
{

//! Sample of one launch: blocks to run and each one's weight (blocks of the grid it stands for).
struct LaunchSample
{
    std::vector<unsigned> blocks;
    std::vector<double> weights;
};

enum class Mode
{
    kDRY,    //!< run no block: list the launches
    kALL,    //!< every block of the real grid, weight 1
    kSAMPLE, //!< the blocks of the sample (launches it does not name run no block)
};

//! Output goes to out (JSON lines). Call before install().
void configure(Mode mode, std::map<unsigned, LaunchSample> samples, std::FILE* out);
//! A global buffer accesses are attributed to; pitch: bytes per row (0 for a 1-D buffer).
void addGlobalBuffer(std::string const& name, void const* base, size_t bytes, size_t pitch);
//! Sets emulation::trace::gHooks: from now on launches are traced.
void install();

} // namespace trace
} // namespace emulation
} // namespace elfatt
