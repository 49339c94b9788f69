"""Published hardware figures of the devices the performance model predicts for, and its assumptions.

Every figure is cited with the NVIDIA document it comes from (docs/kernels.md lists them too).
The assumptions (achievable fractions, latency, launch overhead) are not published figures:
they are the model's, listed in its output, and the same for every kernel it predicts.
"""

from __future__ import annotations

import dataclasses

CUDA_GUIDE = ("https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html"
              "#features-and-technical-specifications-technical-specifications-per-compute-capability")
CUDA_GUIDE_THROUGHPUT = "https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#arithmetic-instructions"
CUDA_GUIDE_PDL = ("https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html"
                  "#programmatic-dependent-launch-and-synchronization")


@dataclasses.dataclass(frozen=True)
class SmLimits:
    """Per-SM limits of a compute capability (CUDA C++ Programming Guide, technical specifications)."""

    sm: int
    max_threads: int
    max_blocks: int
    registers: int = 65536
    register_unit: int = 256        # registers are allocated per warp in units of 256
    shared_bytes: int = 0           # shared memory per SM usable by blocks
    shared_per_block_reserved: int = 1024  # the runtime reserves 1 KB of shared memory per block
    fp32_lanes: int = 128           # FP32 FMA per clock per SM
    sfu_lanes: int = 16             # exp2 / rcp per clock per SM (arithmetic instruction throughput table)
    schedulers: int = 4             # warp instructions issued per clock per SM
    shared_wavefronts_per_clock: int = 1  # 32 banks x 4 bytes = 128 bytes per clock


SM87 = SmLimits(sm=87, max_threads=1536, max_blocks=16, shared_bytes=164 * 1024)
SM90 = SmLimits(sm=90, max_threads=2048, max_blocks=32, shared_bytes=228 * 1024)


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    limits: SmLimits
    sms: int
    clock_ghz: float                # SM clock of the FP32 peak below
    dram_gbs: float                 # peak DRAM bandwidth, GB/s
    tensor_tflops: float            # dense fp16/bf16 tensor-core peak with fp32 accumulation
    fp32_tflops: float
    l2_mib: float
    sources: tuple[str, ...]
    # Assumptions (see ASSUMPTIONS):
    dram_fraction: float = 0.90
    tensor_fraction: float = 0.70   # mma.sync (warp-level) on Hopper cannot reach the wgmma peak
    dram_latency_ns: float = 700.0
    l2_latency_cycles: float = 200.0  # an L2 hit, at or below the measured figures (L2_LATENCY_SOURCES)
    launch_us: float = 2.0
    #: FlashAttention-2 forward, non-causal, head dim 64, TFLOP/s by sequence length (published).
    fa2_tflops: tuple[tuple[int, float], ...] = ()
    fa2_fraction: float | None = None  # where no per-length curve is published: fraction of tensor peak
    fa2_source: str = ""

    @property
    def programmatic_launch(self) -> bool:
        """Programmatic dependent launch (griddepcontrol, cudaLaunchAttributeProgrammaticStreamSerialization):
        compute capability 9.0 and newer (CUDA C++ Programming Guide, "Programmatic Dependent Launch and
        Synchronization"); the library uses it there only."""
        return self.limits.sm >= 90


L2_LATENCY_SOURCES = (
    "https://arxiv.org/abs/2606.22588 (L2-hit latency measured on an NVIDIA L40 from every SM: 222-339 "
    "cycles, near 279 on average)",
    "https://pmc.ncbi.nlm.nih.gov/articles/PMC10448217/ (Table 3: L2 cache latency 200 clock cycles for "
    "V100, A100 and H100)",
)

FA3_PAPER = ("https://arxiv.org/abs/2407.08608 (FlashAttention-3, Shah et al. 2024, Fig. 'Attention forward "
             "speed, head dim 64 (H100 80GB SXM5)', no causal mask: FlashAttention-2 TFLOP/s)")
FA2_PAPER = ("https://arxiv.org/abs/2307.08691 (FlashAttention-2, Dao 2023: forward pass at 50-73% of the "
             "theoretical maximum FLOP/s on A100; the low end is used for Ampere sm_87)")
FA2_H100 = ((512, 180.0), (1024, 229.0), (2048, 262.0), (4096, 284.0), (8192, 295.0), (16384, 299.0))

H100_SOURCES = (
    "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 SXM: 3.35 TB/s, "
    "FP16 tensor 1979 TFLOPS with sparsity = 989.4 dense, FP32 67 TFLOPS)",
    "https://resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper (132 SMs on SXM5, 128 FP32 "
    "lanes/SM, 50 MB L2, 228 KB shared memory per SM)",
    CUDA_GUIDE,
)
H200_SOURCES = (
    "https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM: 4.8 TB/s HBM3e, FP16 tensor 1979 TFLOPS with "
    "sparsity = 989.4 dense, FP32 67 TFLOPS; same GH100 SM configuration as H100 SXM)",
    "https://resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper",
    CUDA_GUIDE,
)
ORIN_SOURCES = (
    "https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/nvidia-jetson-agx-orin-technical-"
    "brief.pdf (AGX Orin 64GB: 2048 CUDA cores and 64 tensor cores in 16 SMs, 1.3 GHz max GPU clock, 204.8 "
    "GB/s LPDDR5, 4 MB L2, 5.3 FP32 TFLOPS, GPU 170 sparse INT8 TOPS = 42.5 dense FP16 TFLOPS)",
    CUDA_GUIDE,
)

DEVICES = {
    "H100-SXM": Device("H100-SXM", SM90, sms=132, clock_ghz=1.98, dram_gbs=3350.0, tensor_tflops=989.4,
                       fp32_tflops=66.9, l2_mib=50, sources=H100_SOURCES, fa2_tflops=FA2_H100,
                       fa2_source=FA3_PAPER),
    "H200": Device("H200", SM90, sms=132, clock_ghz=1.98, dram_gbs=4800.0, tensor_tflops=989.4, fp32_tflops=66.9,
                   l2_mib=50, sources=H200_SOURCES, fa2_tflops=FA2_H100,
                   fa2_source=FA3_PAPER + "; the H100 figures are used for the H200 (same SMs and clocks: "
                   "attention at these lengths is compute-bound)"),
    "Orin-AGX-64GB-MAXN": Device("Orin-AGX-64GB-MAXN", SM87, sms=16, clock_ghz=1.3, dram_gbs=204.8,
                                 tensor_tflops=42.5, fp32_tflops=5.3, l2_mib=4, sources=ORIN_SOURCES,
                                 tensor_fraction=0.80, dram_fraction=0.80, dram_latency_ns=600.0, launch_us=4.0,
                                 fa2_fraction=0.50, fa2_source=FA2_PAPER),
}

ASSUMPTIONS = [
    "time of a launch = the largest of its ceilings (DRAM, tensor, FP32, SFU, shared-memory wavefronts, "
    "instruction issue, DRAM latency, copy chain) + a fixed launch overhead; ceilings overlap perfectly inside a launch",
    "the launches and stream operations of one enqueue run one after another in one stream (v1: 4 launches at "
    "fp16 with global and local heads, no memset; v2: 2 launches, traced as the TensorRT plugin runs them, with "
    "the plugin instance's persistent chunk counters (enqueueWithState: zeroed once, left zeroed by the kernels), "
    "so no memset; each operation listed in the table's bound column)",
    "a cudaMemsetAsync in the stream (v2 without persistent state, as the PyTorch binding calls it: the per-(b, "
    "head) chunk counters, a few bytes) costs as much as one launch overhead (2 us on H100/H200, 4 us on Orin) "
    "and overlaps nothing: assumed, not measured (a stream-ordered operation the next launch waits for, executed "
    "by the device like a small kernel); its bytes are not counted; reported as memset_path_us / "
    "memset_path_fraction",
    "programmatic dependent launch (PDL) on sm_90 (H100, H200): a launch made with cudaLaunchAttribute"
    "ProgrammaticStreamSerialization right after a kernel whose blocks execute griddepcontrol.launch_dependents "
    "(both seen in the trace) has its launch overhead overlapped with that kernel's execution, at most that "
    "execution time (CUDA C++ Programming Guide, 'Programmatic Dependent Launch and Synchronization': the "
    "secondary kernel can be launched before the primary finishes); its work still runs after the primary's "
    "(griddepcontrol.wait waits for the whole primary grid; the part before the wait is not credited); no "
    f"overlap on Orin (sm_87 has no PDL: the library launches plainly there) nor after a memset ({CUDA_GUIDE_PDL})",
    "achievable fraction of peak DRAM bandwidth: 0.90 on H100/H200 (HBM3/HBM3e), 0.80 on Orin (LPDDR5)",
    "achievable fraction of the dense tensor-core peak with mma.sync / wmma: 0.70 on sm_90 (the published "
    "peak needs wgmma), 0.80 on sm_87; FP32, SFU, shared memory and issue: the full per-clock rates",
    "DRAM bytes = the launch's compulsory footprint (each distinct 32-byte sector once; reuse between blocks "
    "of a launch is assumed to hit in L2, reuse between launches is not); writes count like reads",
    "DRAM latency (Little's law cap on bandwidth): 700 ns on sm_90, 600 ns on Orin; bytes in flight per SM = "
    "resident warps x, for reads made by cp.async, the bytes a warp's lanes had in flight at the waits that "
    "waited for copies (measured by the trace), for the other reads the average bytes of one plain global "
    "load instruction x 2 in flight per warp, for the writes the average bytes of one global store "
    "instruction x 2 (assumed: stores do not hold a warp, so this is pessimistic; the reads' part and the "
    "writes' part are added as times); no per-SM cap on outstanding requests (none is published)",
    "copy chain (a lower bound): cp.async copies issued after a wait that waited for copies land one DRAM "
    "latency later at the soonest; the longest chain of a traced block, and the busiest SM's share of all "
    "chains run as many at a time as blocks are resident, x the DRAM latency (an L2 hit would be sooner)",
    "critical path of a block (a lower bound, 'path' in the bound column): each warp's traced program order "
    "(emulation_trace.cpp warpTimelines) run with one instruction issued per clock per warp (each traced "
    "instruction x the SASS ratio of the block's call sites, its own instructions priced as the launch's are), "
    "each cp.async group landing one DRAM latency after its commit, "
    "a wait until its group has landed, an L2 round trip no cp.async covers (L2-only loads, __ldcg, issued "
    "back to back and used at the next traced instruction; an atomic with its result; a __threadfence) "
    "taking 200 cycles from its issue (an L2 hit at or below the measured figures: "
    + "; ".join(L2_LATENCY_SOURCES) + "), __syncthreads releasing the block's warps when the last arrives; no "
    "contention for the schedulers, no other latency; the longest traced block, and the busiest SM's share of "
    "all blocks' paths run as many at a time as blocks are resident (it includes the copy chain's round trips)",
    "blocks spread evenly over the SMs; the busiest SM runs ceil(grid / SMs) blocks, all resident blocks "
    "share its throughput",
    "instructions issued = the warp instructions the trace counts (memory, fmaf, exp, mma, barriers, "
    "shuffles), each x the SASS ratio of its call site (all instructions / traced-class instructions of "
    "the longest inline chain the host trace (addr2line -i) and the listing (nvcc -lineinfo, nvdisasm -g -gi) "
    "agree on, or of a line 1-2 away under the same callers; sites the listing does not name x the "
    "kernel's overall ratio); without nvdisasm the traced count alone (a lower bound)",
    "launch overhead: 2 us per launch on H100/H200, 4 us on Orin (not measured here)",
    "FlashAttention-2 comparison: 4 N^2 d FLOPs per head at the published FA2 efficiency for that sequence "
    "length (H100 curve for H100/H200; 50% of peak on Orin), at least the same memory floor, one launch; "
    "the head-dim-64 curve also for CSWin's d=32 (FA2 is less efficient at d=32: favours FA2)",
    "not seen by the trace: register-only work (integer and address arithmetic, conversions, plain float "
    "adds/multiplies except through the SASS ratio), L1/L2 hit rates and L2 bandwidth, tensor-core "
    "pipeline latency, warp scheduling stalls, DRAM page effects",
]


def occupancy(limits: SmLimits, threads: int, registers: int, shared_bytes: int) -> tuple[int, str]:
    """Resident blocks per SM and the limiting resource."""
    warps = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // limits.register_unit) * limits.register_unit
    by = {
        "threads": limits.max_threads // max(threads, 1),
        "blocks": limits.max_blocks,
        "registers": limits.registers // (regs_per_warp * warps),
        "shared memory": limits.shared_bytes // (shared_bytes + limits.shared_per_block_reserved)
        if shared_bytes > 0 else limits.max_blocks,
    }
    which = min(by, key=by.get)
    return by[which], which


def fa2_tflops(device: Device, tokens: int) -> float:
    """FlashAttention-2 forward TFLOP/s at this sequence length (published curve, log-linear in between)."""
    if device.fa2_tflops:
        import math

        curve = device.fa2_tflops
        if tokens <= curve[0][0]:
            return curve[0][1]
        if tokens >= curve[-1][0]:
            return curve[-1][1]
        for (n0, t0), (n1, t1) in zip(curve, curve[1:]):
            if n0 <= tokens <= n1:
                f = (math.log(tokens) - math.log(n0)) / (math.log(n1) - math.log(n0))
                return t0 + f * (t1 - t0)
    return device.tensor_tflops * (device.fa2_fraction or 0.0)
