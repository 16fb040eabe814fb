// One optimiser step over the whole network in one launch (gpunet/engines/flat.py), each rule as declared in
// gpunet/optim.py and generated into optim_rules.cuh:
//
//   g = g + wd * p        for the weights only (the first n_weights entries: flat.py puts them first),
//                         where the rule couples its decay (L2); a decoupled rule applies wd itself
//   p, m, v = rule(p, g, m, v)   e.g. SGD p -= lr g; momentum buf = mu buf + g, p -= lr buf; Adam with its
//                         bias corrections 1 / (1 - b1^t) and 1 / (1 - b2^t)
//
// p, g, m, v: (P,) flat buffers, the parameters and their state as views into them (all of one dtype T); m and
// v are the rule's first and second state buffers (momentum's buf in m), p where it has none.
// lr (double) and step (the steps taken before this one, t - 1) are read from device memory, so a captured
// CUDA graph replays with the current values; the last block to finish advances step (done counts blocks).
#include "optim_rules.cuh"

template <typename T, int RULE>
__global__ void flat_step(T* p, T* g, T* m, T* v, long long size, long long n_weights, const double* lr,
                          unsigned int* step, unsigned int* done, double weight_decay, double beta1, double beta2,
                          double eps) {
    __shared__ unsigned int t;  // this step's count, 1 for the first
    if (threadIdx.x == 0) t = *step + 1u;
    __syncthreads();
    const T rate = T(*lr), decay = T(weight_decay);
    // The bias corrections in double, as optim.py computes them on the host.
    const double m_hat_scale = rule_bias_corrected<RULE>() ? 1.0 / (1.0 - pow(beta1, double(t))) : 1.0;
    const T v_hat_scale = rule_bias_corrected<RULE>() ? T(1.0 / (1.0 - pow(beta2, double(t)))) : T(1);
    const T step_size = T(*lr * m_hat_scale);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < size; k += stride) {
        T gk = g[k];
        if (rule_couples_decay<RULE>() && k < n_weights) gk += decay * p[k];  // d/dW of (wd / 2) ||W||^2
        rule_update<T, RULE>(p[k], gk, m[k], v[k], rate, decay, k < n_weights, *lr, weight_decay, beta1, beta2, eps,
                             v_hat_scale, step_size);
    }
    __syncthreads();  // every thread of this block is past its read of t
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(done, 1u) == gridDim.x - 1u) {  // the last block: every block has read step
            *step = t;
            *done = 0u;  // ready for the next launch
        }
    }
}
