// The elementwise work of one training step, fused; the products stay with cuBLAS (gpunet/engines/fused.py).
// Batch-first, row-major, the names of network.py:
//
//   bias_act<T, ACT>            A_i = f(Z_i + b_i), in place of Z_i             Z_i (N, n_i), b_i (n_i,)
//   output_layer<T, OUT, LOSS>  Y = f(Z_L + b_L), loss_n = L(Y_n, T_n),
//                               delta_L = scale * dL_n/dZ_L, in place of Z_L   Z_L, T (N, n_L), loss (N,)
//                               cross-entropy from the logits z = Z_L + b_L, as activations.py FUSED:
//                                 softmax  loss_n = logsumexp(z) * sum t - sum t z
//                                 sigmoid  loss_n = sum softplus(z) - t z,  softplus(z) = max(z, 0) + log1p(exp(-|z|))
//   delta_bias<T, ACT, UPDATE>  delta_i = dA_i * f'(A_i), in place of dA_i,
//                               db_i = sum_n delta_i (UPDATE: b_i -= sum_n delta_i)  dA_i, A_i (N, n_i), db_i (n_i,)
//   dropout_apply<T>            Out = In * mask: 0 for a dropped unit, scale = 1 / (1 - rate)   In, Out (N, n)
//                               for a kept one (dropout.cuh), row r and unit j of layer input `layer` in
//                               step *step0 + offset; In == Out in place (graph mode's delta_{i-1})
//
// scale is lr / N for plain SGD (the learning rate folded into the deltas) and 1 / N otherwise.
// tests/transcriptions.py transcribes each loop, in this order, in NumPy; the tests hold it to network.py.
// Indices are 64-bit: N * n_i may pass 2^31.
#include "common.cuh"
#include "dropout.cuh"

// A_i = f(Z_i + b_i): one thread per element, grid-stride.
template <typename T, int ACT>
__global__ void bias_act(T* Z, const T* b, long long rows, int cols) {
    const long long total = rows * cols, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total; k += stride) {
        Z[k] = act_forward<ACT>(Z[k] + b[k % cols]);
    }
}

// A_i = f(Z_i + b_i) with the input kept, Zk_i = Z_i + b_i: for an activation whose derivative reads its
// input (act_from_input<ACT>()), which delta_bias then reads in place of A_i.
template <typename T, int ACT>
__global__ void bias_act_keep(T* Z, const T* b, T* Zk, long long rows, int cols) {
    const long long total = rows * cols, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total; k += stride) {
        const T zk = Z[k] + b[k % cols];
        Zk[k] = zk;
        Z[k] = act_forward<ACT>(zk);
    }
}

// One warp per row n: Y_n = f(Z_n + b), loss[n], then delta_n written over Z_n. Lane l walks columns l, l + 32, ...
// Cross-entropy is summed from the logits z_j = Z_nj + b_j while they are read, before Y overwrites them.
template <typename T, int OUT, int LOSS>
__global__ void output_layer(T* Z, const T* b, const T* Tgt, T* loss, long long rows, int cols, T scale) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long n = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; n < rows; n += warps) {
        T* z = Z + n * cols;
        const T* t = Tgt + n * cols;
        T l = T(0), t_sum = T(0), t_dot_z = T(0), g_dot_y = T(0);  // the row's loss, sum t, sum t z, sum dA Y
        if constexpr (OUT == GPUNET_SOFTMAX) {  // Y = exp(z - max z) / sum exp(z - max z)
            T m = z[0] + b[0];  // every lane reads column 0 before any lane writes (warp_max_xor syncs them)
            for (int j = lane; j < cols; j += 32) {
                const T v = z[j] + b[j];
                m = v > m ? v : m;
            }
            m = warp_max_xor(m);
            T s = T(0);
            for (int j = lane; j < cols; j += 32) {
                const T zj = z[j] + b[j];
                if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY) {
                    t_sum += t[j];
                    t_dot_z += t[j] * zj;
                }
                z[j] = exp(zj - m);
                s += z[j];
            }
            s = warp_sum_xor(s);
            if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY) {
                t_sum = warp_sum_xor(t_sum);
                l = (m + log(s)) * t_sum - warp_sum_xor(t_dot_z);  // logsumexp(z) * sum t - sum t z, shifted by m
            }
            for (int j = lane; j < cols; j += 32) z[j] = z[j] / s;
        } else if constexpr (act_from_input<OUT>()) {  // f' reads z: each column's loss and delta in one pass
            for (int j = lane; j < cols; j += 32) {
                const T zj = z[j] + b[j], y = act_forward<OUT>(zj), tj = t[j];
                if constexpr (LOSS == GPUNET_LOSS_SQUARED) {
                    l += (tj - y) * (tj - y);
                } else {
                    const T d = tj - y;
                    l += d < T(0) ? -d : d;
                }
                z[j] = act_backward_from_input<OUT>(zj, loss_grad<T, LOSS>(y, tj) * scale);
            }
        } else {
            for (int j = lane; j < cols; j += 32) {
                const T zj = z[j] + b[j];
                if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY) {  // sigmoid: softplus(z) - t z
                    l += ((zj > T(0) ? zj : T(0)) + log1p(exp(-(zj < T(0) ? -zj : zj)))) - t[j] * zj;
                }
                z[j] = act_forward<OUT>(zj);
            }
        }
        if constexpr (LOSS != GPUNET_LOSS_CROSS_ENTROPY && !act_from_input<OUT>()) {
            for (int j = lane; j < cols; j += 32) {
                const T y = z[j], tj = t[j];
                if constexpr (LOSS == GPUNET_LOSS_SQUARED) {
                    l += (tj - y) * (tj - y);
                } else {
                    const T d = tj - y;
                    l += d < T(0) ? -d : d;
                }
                if constexpr (OUT == GPUNET_SOFTMAX) g_dot_y += loss_grad<T, LOSS>(y, tj) * scale * y;
            }
            if constexpr (OUT == GPUNET_SOFTMAX) g_dot_y = warp_sum_xor(g_dot_y);
        }
        if constexpr (!(OUT == GPUNET_SOFTMAX && LOSS == GPUNET_LOSS_CROSS_ENTROPY)) l = warp_sum_xor(l);
        if (lane == 0) loss[n] = LOSS == GPUNET_LOSS_SQUARED ? T(0.5) * l : l;
        for (int j = lane; j < cols && !act_from_input<OUT>(); j += 32) {  // (written above where f' reads z)
            const T y = z[j], tj = t[j];
            if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY && OUT == GPUNET_SOFTMAX) {
                z[j] = (y * t_sum - tj) * scale;  // y * sum(t) - t
            } else if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY) {
                z[j] = (y - tj) * scale;  // sigmoid: y - t
            } else if constexpr (OUT == GPUNET_SOFTMAX) {
                z[j] = y * (loss_grad<T, LOSS>(y, tj) * scale - g_dot_y);  // Y_j (dA_j - sum_k dA_k Y_k)
            } else {
                z[j] = act_backward<OUT>(y, loss_grad<T, LOSS>(y, tj) * scale);
            }
        }
    }
}

// Block (32, R): thread (x, y) walks column j = 32 * blockIdx.x + x down rows y, y + R, ...; the R partial
// sums of a column then meet in shared memory by halving. R is a power of two <= 32 (fused.py delta_bias_geometry).
template <typename T, int ACT, bool UPDATE>
__global__ void delta_bias(T* dA, const T* A, T* db, long long rows, int cols) {
    extern __shared__ __align__(16) unsigned char shared[];
    T* part = reinterpret_cast<T*>(shared);  // (R, 32)
    const int j = blockIdx.x * 32 + threadIdx.x;
    T s = T(0);
    if (j < cols) {
        for (long long r = threadIdx.y; r < rows; r += blockDim.y) {
            const long long k = r * cols + j;
            const T d = act_backward_at<ACT>(A[k], dA[k]);  // A holds the layer's input where f' reads it
            if constexpr (ACT != GPUNET_IDENTITY) dA[k] = d;
            s += d;
        }
    }
    part[threadIdx.y * 32 + threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.y >> 1; h > 0; h >>= 1) {
        if (threadIdx.y < h) part[threadIdx.y * 32 + threadIdx.x] += part[(threadIdx.y + h) * 32 + threadIdx.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && j < cols) {
        if constexpr (UPDATE) db[j] -= part[threadIdx.x];
        else db[j] = part[threadIdx.x];
    }
}

// Out = In * mask, one thread per element, grid-stride (In may be Out: no __restrict__). Graph mode launches it
// on a layer input A_l (into its dropped copy In_l, which the products read) and on delta_l after the backward
// product (d(A_l * mask)/dA_l = mask). The step is read from device memory at every launch (the count before
// the epoch, written by the host each epoch) plus this step's place in the epoch: a captured graph replays
// every epoch with the masks of that epoch's steps, the plain path's keys.
template <typename T>
__global__ void dropout_apply(const T* In, T* Out, long long rows, int cols, unsigned int seed_lo,
                              unsigned int seed_hi, unsigned int layer, const long long* step0, unsigned int offset,
                              unsigned long long threshold, T scale) {
    const unsigned int step = (unsigned int)step0[0] + offset;  // mod 2^32, as gpunet.dropout keys it
    const long long total = rows * cols, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total; k += stride) {
        const unsigned int r = (unsigned int)(k / cols), j = (unsigned int)(k % cols);
        Out[k] = In[k] * dropout_mask<T>(seed_lo, seed_hi, layer, step, r, j, threshold, scale);
    }
}
