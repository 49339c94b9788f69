/*
 * Minimal stand-in for CUDA's cuda_runtime_api.h, used ONLY by the CPU tests to
 * compile plan.cpp (which needs just these two types from the real header) on
 * machines without a CUDA toolkit. Never used for a real build.
 */
#pragma once

typedef enum cudaError
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1
} cudaError_t;

typedef struct CUstream_st* cudaStream_t;
