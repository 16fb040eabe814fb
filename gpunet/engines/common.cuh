// What every kernel of this folder shares: the activation and loss codes and the activations' device
// functions (activations.cuh, generated from gpunet/activations.py), the warp reductions, and the losses'
// gradient with respect to the output, dL/dY, for the losses not fused with their output activation.
//
//   warp_sum_xor(x), warp_max_xor(x)   over the 32 lanes by a xor butterfly: every lane ends with the result
//   warp_sum_down(x)                   halving the distance each step: lane 0 ends with the total
//   warp_max_all(x)                    fmax over the lanes by a xor butterfly: every lane ends with it
//   loss_grad<T, LOSS>(y, t)           squared y - t, absolute sign(y - t); the loss a template parameter
//   loss_grad_code(loss, y, t)         the same, the loss a run-time code (the per-sample kernel's)
//
// Included by the kernels of this folder (NVRTC gets -I<this folder>); no host headers. The loss gradients
// are __host__ __device__: a test compiles them for the host and holds them to gpunet/activations.py.
#pragma once

#include "activations.cuh"

template <typename T, int LOSS>
__host__ __device__ __forceinline__ T loss_grad(T y, T t) {
    if constexpr (LOSS == GPUNET_LOSS_SQUARED) {
        return y - t;
    } else {
        const T d = y - t;
        return T((d > T(0)) - (d < T(0)));
    }
}

template <typename F>
__host__ __device__ __forceinline__ F loss_grad_code(int loss, F y, F t) {
    F d = y - t;
    if (loss == GPUNET_LOSS_ABSOLUTE) return F(d > F(0)) - F(d < F(0));
    return d;
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)  // the warp's shuffles exist on the device only

template <typename T>
__device__ __forceinline__ T warp_sum_xor(T x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

template <typename T>
__device__ __forceinline__ T warp_max_xor(T x) {
    for (int o = 16; o > 0; o >>= 1) {
        const T y = __shfl_xor_sync(0xffffffffu, x, o);
        x = y > x ? y : x;
    }
    return x;
}

template <typename F>
__device__ __forceinline__ F warp_sum_down(F v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

template <typename F>
__device__ __forceinline__ F warp_max_all(F v) {
    for (int offset = 16; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

#endif
