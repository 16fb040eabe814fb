// Activations on the device, the same table as gpunet/activations.py:
//   forward  A = f(Z)
//   backward dZ = dA * f'(Z), with f' read off the output A (sigma' = A (1 - A), tanh' = 1 - A^2,
//            relu' = [A > 0], leaky relu' = 1 where A > 0 else LEAKY_SLOPE).
// ACT is one of the codes below; gpunet/engines/__init__.py ACT_CODES maps the names to them.
// The output and loss codes below are every kernel's too (OUTPUT_CODES, LOSS_CODES there).
// Included by the kernels of this folder (NVRTC gets -I<this folder>); no host headers.
#pragma once

#define GPUNET_SIGMOID 0
#define GPUNET_TANH 1
#define GPUNET_RELU 2
#define GPUNET_LEAKY_RELU 3
#define GPUNET_IDENTITY 4
#define GPUNET_LEAKY_SLOPE 0.01
#define GPUNET_SOFTMAX 5  // output only: a row operation, not in the elementwise table below
#define GPUNET_LOSS_SQUARED 0
#define GPUNET_LOSS_ABSOLUTE 1
#define GPUNET_LOSS_CROSS_ENTROPY 2  // fused with a softmax or sigmoid output

template <int ACT, typename T>
__device__ __forceinline__ T act_forward(T z) {
    if constexpr (ACT == GPUNET_SIGMOID) {
        return T(0.5) * tanh(T(0.5) * z) + T(0.5);  // 1 / (1 + exp(-z)) without overflow
    } else if constexpr (ACT == GPUNET_TANH) {
        return tanh(z);
    } else if constexpr (ACT == GPUNET_RELU) {
        return z > T(0) ? z : T(0);
    } else if constexpr (ACT == GPUNET_LEAKY_RELU) {
        return z > T(0) ? z : T(GPUNET_LEAKY_SLOPE) * z;
    } else {
        return z;
    }
}

template <int ACT, typename T>
__device__ __forceinline__ T act_backward(T a, T da) {
    if constexpr (ACT == GPUNET_SIGMOID) {
        return da * a * (T(1) - a);
    } else if constexpr (ACT == GPUNET_TANH) {
        return da * (T(1) - a * a);
    } else if constexpr (ACT == GPUNET_RELU) {
        return a > T(0) ? da : T(0);
    } else if constexpr (ACT == GPUNET_LEAKY_RELU) {
        return a > T(0) ? da : T(GPUNET_LEAKY_SLOPE) * da;
    } else {
        return da;
    }
}
