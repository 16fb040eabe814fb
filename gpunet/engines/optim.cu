// One optimiser step over the whole network in one launch (gpunet/engines/flat.py), the rules of gpunet/optim.py:
//
//   g = g + wd * p                       for the weights only: the first n_weights entries (flat.py puts them first)
//   RULE 0, SGD:      p = p - lr * g
//   RULE 1, momentum: buf = mu * buf + g;  p = p - lr * buf    (PyTorch's; buf is passed in m, v is unused)
//   RULE 2, Adam:     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//                     p = p - (lr / (1 - b1^t)) * m / (sqrt(v / (1 - b2^t)) + eps)
//
// p, g, m, v: (P,) flat buffers, the parameters and their state as views into them (all of one dtype T).
// lr (double) and step (the steps taken before this one, t - 1) are read from device memory, so a captured
// CUDA graph replays with the current values; the last block to finish advances step (done counts blocks).
// gpunet/engines/reference.py transcribes the loop in NumPy; the tests hold it to gpunet/optim.py.
#include "activations.cuh"

#define GPUNET_RULE_SGD 0
#define GPUNET_RULE_MOMENTUM 1
#define GPUNET_RULE_ADAM 2

template <typename T, int RULE>
__global__ void flat_step(T* p, T* g, T* m, T* v, long long size, long long n_weights, const double* lr,
                          unsigned int* step, unsigned int* done, double weight_decay, double beta1, double beta2,
                          double eps) {
    __shared__ unsigned int t;  // this step's count, 1 for the first
    if (threadIdx.x == 0) t = *step + 1u;
    __syncthreads();
    const T rate = T(*lr), decay = T(weight_decay);
    // Adam's bias corrections in double, as optim.py computes them on the host; beta1 is mu for momentum.
    const double m_hat_scale = RULE == GPUNET_RULE_ADAM ? 1.0 / (1.0 - pow(beta1, double(t))) : 1.0;
    const T v_hat_scale = RULE == GPUNET_RULE_ADAM ? T(1.0 / (1.0 - pow(beta2, double(t)))) : T(1);
    const T step_size = T(*lr * m_hat_scale);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < size; k += stride) {
        T gk = g[k];
        if (k < n_weights) gk += decay * p[k];  // d/dW of (wd / 2) ||W||^2
        if constexpr (RULE == GPUNET_RULE_SGD) {
            p[k] -= rate * gk;
        } else if constexpr (RULE == GPUNET_RULE_MOMENTUM) {
            const T bk = T(beta1) * m[k] + gk;
            m[k] = bk;
            p[k] -= rate * bk;
        } else {
            const T mk = T(beta1) * m[k] + T(1.0 - beta1) * gk;
            const T vk = T(beta2) * v[k] + T(1.0 - beta2) * (gk * gk);
            m[k] = mk;
            v[k] = vk;
            p[k] -= mk / (sqrt(vk * v_hat_scale) + T(eps)) * step_size;
        }
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
