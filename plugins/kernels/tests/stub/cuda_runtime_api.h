/*
 * Minimal stand-in for CUDA's cuda_runtime_api.h, used ONLY by the CPU tests to
 * compile plan.cpp (which needs just these two types from the real header) and the
 * PyTorch binding's host test build (which also names the two error-text functions;
 * plugins/torch/tests/host_test_stubs.cpp defines them) on machines without a CUDA
 * toolkit. Never used for a real build.
 */
#pragma once

typedef enum cudaError
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1
} cudaError_t;

typedef struct CUstream_st* cudaStream_t;

#ifdef __cplusplus
extern "C"
{
#endif
char const* cudaGetErrorName(cudaError_t error);
char const* cudaGetErrorString(cudaError_t error);
#ifdef __cplusplus
}
#endif
