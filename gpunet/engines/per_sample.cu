// Per-sample SGD for a chunk of K rows in one launch: the sequential loop of gram_chunk
// (gpunet/engines/plain.py) for a network with one hidden layer, n_in-H-O.
//
// Before the launch (per_sample.py, as plain.first_layer does): Z1 = X W1 + b1 and G = lr (X X^T + 1).
// For each row t = 0..K-1, in order, with W2, b2 as updated by rows 0..t-1:
//   z1     = Z1_t - sum_{k<t} G_{t,k} delta1_k          the first layer as rows 0..t-1 left it
//   A1     = f(z1)                                       (1, H), f the hidden activation HIDDEN
//   Z2     = A1 W2 + b2, Y_t = g(Z2)                     (1, H) @ (H, O) -> (1, O), g = out_act
//   delta2 = dLoss/dZ2                                   fused (cross-entropy) or g'(Y) * dLoss/dY, g' at Y
//                                                        or, where g's derivative reads its input, at Z2
//   dA1    = delta2 W2^T                                 with W2 before its update
//   W2    -= lr A1^T delta2,  b2 -= lr delta2
//   delta1_t = f'(A1) * dA1                              written to D, read back by the later rows; f' at
//                                                        z1 where it reads the input (act_from_input), which
//                                                        row t of D holds until delta1_t replaces it
// With dropout on the hidden layer's output (the _dropout kernels, DROP), row t, as step step0 + t of one row:
//   In1    = A1 * m1_t                                   m1_t the mask of layer input 1, row 0, step step0 + t
//                                                        (dropout.cuh), which Z2 and W2's update read;
//   dA1   *= m1_t                                        before f' (d(A1 * m1)/dA1 = m1); f' reads A1 before
//                                                        dropout, kept in row t of D (z1 already is, where f'
//                                                        reads the input). The inputs' dropout is the host's
//                                                        (X times its mask before Z1, G and W1's update).
// After the launch: W1 -= lr X^T D, b1 -= lr sum_t D_t (one product), loss from Z2 and Y (cross-entropy
// from the logits Z2, as Network.per_sample_loss does).
//
// IN_KERNEL (PerSampleEpochs in per_sample.py, fewer launches a chunk): Z1 comes without b1 and G as X X^T;
// the kernel adds b1 to Z1 and scales G to lr (G + 1) as it reads them (the same operations, in the same
// order, as the host's), and at the end updates b1 -= lr sum_t D_t itself, each unit summing its column of
// D in row order. W1's update stays one product after the launch.
//
// Arguments (row-major, F = float or double):
//   Z1 (K, H), G (K, K), T (K, O) targets          in
//   W2 (H, O), b2 (O,)                              in/out, updated in place
//   b1 (H,)                                         in/out with IN_KERNEL, else not read
//   D (K, H) delta1, Y (K, O) outputs and Z2o (K, O) logits, before each row's step    out
//   lr, out_act (ACT_CODES, or GPUNET_SOFTMAX), loss (GPUNET_LOSS_*)
//   seed_lo, seed_hi, step0, threshold, scale      the _dropout kernels only: the mask's key words, the
//                                                  step count before row 0, round((1 - rate) 2^32), 1 / (1 - rate)
//
// One block runs the whole chunk (the rows depend on each other). Thread tid owns the hidden units
// j = tid, tid + blockDim.x, ...: it alone reads and writes A1[j], column j of D and row j of W2, so
// those need no barrier. W2 (stored transposed, W2s[o * H + j], so a warp's accesses are consecutive),
// b2, A1 and the reductions' partial sums live in shared memory for the whole chunk: two barriers a row.
// Warp 0 does the output layer, lane o owning outputs o, o + 32, ...
#include "common.cuh"
#include "dropout.cuh"

// sum over o < O of v(o), by warp 0: lane sums o = lane, lane + 32, ... in order, then warp_sum_down;
// broadcast to every lane.
template <typename F, typename V>
__device__ __forceinline__ F output_sum(int O, int lane, V v) {
    F s = F(0);
    for (int o = lane; o < O; o += 32) s += v(o);
    return __shfl_sync(0xffffffffu, warp_sum_down(s), 0);
}

// The hidden layer's dropout for a chunk: the mask's key and the step count before its row 0 (DROP only).
template <typename F>
struct HiddenDropout {
    unsigned int seed_lo, seed_hi, step0;
    unsigned long long threshold;
    F scale;

    // unit j's mask in row t: layer input 1 (the hidden layer's output), the row's own step, row 0 of its batch
    __device__ __forceinline__ F mask(int t, int j) const {
        return dropout_mask<F>(seed_lo, seed_hi, 1u, step0 + (unsigned int)t, 0u, (unsigned int)j, threshold, scale);
    }
};

// The kernels' body. OUT_FROM_INPUT: the output activation's derivative reads Z2 (act_backward_code_from_input,
// at the row's Z2o, which this lane wrote); else it is read off Y (act_backward_code), softmax, or fused.
// DROP: the hidden layer's output dropped by `drop`'s masks (unread otherwise).
template <typename F, int HIDDEN, bool IN_KERNEL, bool OUT_FROM_INPUT, bool DROP = false>
__device__ __forceinline__ void chunk(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                      F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ b1, F* __restrict__ D,
                                      F* __restrict__ Y, F* __restrict__ Z2o,
                                      int K, int H, int O, F lr, int out_act, int loss,
                                      HiddenDropout<F> drop = HiddenDropout<F>{}) {
    extern __shared__ __align__(16) unsigned char shared[];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, n_warps = blockDim.x / 32;
    F* W2s = reinterpret_cast<F*>(shared);  // (O, H): W2 transposed
    F* A1 = W2s + O * H;                     // (H,)
    F* red = A1 + H;                         // (n_warps, O): each warp's share of Z2
    F* delta2 = red + n_warps * O;           // (O,)
    F* y = delta2 + O;                       // (O,)
    F* b2s = y + O;                          // (O,)

    for (int i = tid; i < H * O; i += blockDim.x) W2s[(i % O) * H + i / O] = W2[i];
    for (int o = tid; o < O; o += blockDim.x) b2s[o] = b2[o];
    __syncthreads();

    for (int t = 0; t < K; ++t) {
        // z1 = Z1_t - sum_{k<t} G_tk delta1_k; A1 = f(z1). Each thread only its own units j.
        for (int j = tid; j < H; j += blockDim.x) {
            F correction = F(0);
            for (int k = 0; k < t; ++k) {
                F g = G[t * K + k];
                if (IN_KERNEL) g = lr * (g + F(1));
                correction += g * D[k * H + j];
            }
            F z1 = Z1[t * H + j];
            if (IN_KERNEL) z1 += b1[j];
            z1 -= correction;
            if constexpr (act_from_input<HIDDEN>()) D[t * H + j] = z1;  // kept in D_t (this thread's) for f'(z1)
            if constexpr (DROP) {  // A1 kept in D_t for f'(A1), In1 = A1 * m1_t in shared memory
                const F a = act_forward<HIDDEN>(z1);
                if constexpr (!act_from_input<HIDDEN>()) D[t * H + j] = a;
                A1[j] = a * drop.mask(t, j);
            } else {
                A1[j] = act_forward<HIDDEN>(z1);
            }
        }
        // Z2 = A1 W2: each thread's units in order, then the warp, then (warp 0, below) the warps in order.
        for (int o = 0; o < O; ++o) {
            F partial = F(0);
            for (int j = tid; j < H; j += blockDim.x) partial += A1[j] * W2s[o * H + j];
            partial = warp_sum_down(partial);
            if (lane == 0) red[warp * O + o] = partial;
        }
        __syncthreads();

        if (warp == 0) {  // the output layer: Y_t and delta2, then b2's update
            for (int o = lane; o < O; o += 32) {
                F z2 = red[o];
                for (int w = 1; w < n_warps; ++w) z2 += red[w * O + o];
                z2 += b2s[o];
                Z2o[t * O + o] = z2;
                y[o] = OUT_FROM_INPUT ? act_forward_code_from_input(out_act, z2) : act_forward_code(out_act, z2);
            }
            __syncwarp();
            if (out_act == GPUNET_SOFTMAX) {  // y = exp(z - max z) / sum exp(z - max z)
                F m = y[0];
                for (int o = lane; o < O; o += 32) m = fmax(m, y[o]);
                m = warp_max_all(m);
                for (int o = lane; o < O; o += 32) y[o] = exp(y[o] - m);
                __syncwarp();
                const F s = output_sum<F>(O, lane, [&](int o) { return y[o]; });
                for (int o = lane; o < O; o += 32) y[o] = y[o] / s;
                __syncwarp();
            }
            const F* Tt = T + t * O;
            if (loss == GPUNET_LOSS_CROSS_ENTROPY) {
                // softmax: d/dZ of -sum t log y = y sum(t) - t; sigmoid (binary): y - t
                const F t_sum = out_act == GPUNET_SOFTMAX ? output_sum<F>(O, lane, [&](int o) { return Tt[o]; })
                                                          : F(1);
                for (int o = lane; o < O; o += 32) delta2[o] = y[o] * t_sum - Tt[o];
            } else if (out_act == GPUNET_SOFTMAX) {  // dZ_o = y_o (g_o - sum_p g_p y_p)
                const F gy = output_sum<F>(O, lane, [&](int o) { return loss_grad_code(loss, y[o], Tt[o]) * y[o]; });
                for (int o = lane; o < O; o += 32) delta2[o] = y[o] * (loss_grad_code(loss, y[o], Tt[o]) - gy);
            } else if constexpr (OUT_FROM_INPUT) {  // g' at z2, written by this lane above
                for (int o = lane; o < O; o += 32) {
                    const F g = loss_grad_code(loss, y[o], Tt[o]);
                    delta2[o] = act_backward_code_from_input(out_act, Z2o[t * O + o], g);
                }
            } else {
                for (int o = lane; o < O; o += 32) delta2[o] = act_backward_code(out_act, y[o], loss_grad_code(loss, y[o], Tt[o]));
            }
            for (int o = lane; o < O; o += 32) {
                Y[t * O + o] = y[o];
                b2s[o] -= lr * delta2[o];
            }
        }
        __syncthreads();

        // dA1 = delta2 W2^T with W2 before its update; W2 -= lr A1^T delta2; delta1_t = f'(A1) dA1.
        // (DROP: a is In1, dA1 times m1_t, and f' at what D_t keeps.)
        for (int j = tid; j < H; j += blockDim.x) {
            const F a = A1[j];
            F dA = F(0);
            for (int o = 0; o < O; ++o) {
                const F w = W2s[o * H + j];
                dA += delta2[o] * w;
                W2s[o * H + j] = w - lr * (a * delta2[o]);
            }
            if constexpr (DROP) {
                D[t * H + j] = act_backward_at<HIDDEN>(D[t * H + j], dA * drop.mask(t, j));
            } else {
                D[t * H + j] = act_backward_at<HIDDEN>(act_from_input<HIDDEN>() ? D[t * H + j] : a, dA);
            }
        }
    }
    __syncthreads();
    for (int i = tid; i < H * O; i += blockDim.x) W2[i] = W2s[(i % O) * H + i / O];
    for (int o = tid; o < O; o += blockDim.x) b2[o] = b2s[o];
    if (IN_KERNEL) {  // b1 -= lr sum_t D_t: each unit its own column of D, rows in order (no barrier needed)
        for (int j = tid; j < H; j += blockDim.x) {
            F s = F(0);
            for (int t = 0; t < K; ++t) s += D[t * H + j];
            b1[j] -= lr * s;
        }
    }
}

// An output activation read off Y (and softmax, and the fused cross-entropies): out_act one of act_backward_code's.
template <typename F, int HIDDEN, bool IN_KERNEL>
__global__ void per_sample_chunk(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                 F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ b1, F* __restrict__ D,
                                 F* __restrict__ Y, F* __restrict__ Z2o,
                                 int K, int H, int O, F lr, int out_act, int loss) {
    chunk<F, HIDDEN, IN_KERNEL, false>(Z1, G, T, W2, b2, b1, D, Y, Z2o, K, H, O, lr, out_act, loss);
}

// An output activation whose derivative reads Z2: out_act one of act_backward_code_from_input's.
template <typename F, int HIDDEN, bool IN_KERNEL>
__global__ void per_sample_chunk_z2(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                    F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ b1, F* __restrict__ D,
                                    F* __restrict__ Y, F* __restrict__ Z2o,
                                    int K, int H, int O, F lr, int out_act, int loss) {
    chunk<F, HIDDEN, IN_KERNEL, true>(Z1, G, T, W2, b2, b1, D, Y, Z2o, K, H, O, lr, out_act, loss);
}

// The two kernels with the hidden layer's output dropped (DROP): the same arguments, then the mask's.
template <typename F, int HIDDEN, bool IN_KERNEL>
__global__ void per_sample_chunk_dropout(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                         F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ b1,
                                         F* __restrict__ D, F* __restrict__ Y, F* __restrict__ Z2o,
                                         int K, int H, int O, F lr, int out_act, int loss, unsigned int seed_lo,
                                         unsigned int seed_hi, unsigned int step0, unsigned long long threshold,
                                         F scale) {
    chunk<F, HIDDEN, IN_KERNEL, false, true>(Z1, G, T, W2, b2, b1, D, Y, Z2o, K, H, O, lr, out_act, loss,
                                             HiddenDropout<F>{seed_lo, seed_hi, step0, threshold, scale});
}

template <typename F, int HIDDEN, bool IN_KERNEL>
__global__ void per_sample_chunk_z2_dropout(const F* __restrict__ Z1, const F* __restrict__ G,
                                            const F* __restrict__ T, F* __restrict__ W2, F* __restrict__ b2,
                                            F* __restrict__ b1, F* __restrict__ D, F* __restrict__ Y,
                                            F* __restrict__ Z2o, int K, int H, int O, F lr, int out_act, int loss,
                                            unsigned int seed_lo, unsigned int seed_hi, unsigned int step0,
                                            unsigned long long threshold, F scale) {
    chunk<F, HIDDEN, IN_KERNEL, true, true>(Z1, G, T, W2, b2, b1, D, Y, Z2o, K, H, O, lr, out_act, loss,
                                            HiddenDropout<F>{seed_lo, seed_hi, step0, threshold, scale});
}

// --- many models, one block each ----------------------------------------------------------------------------
// per_sample_chunk for `models` networks of one shape at once (gpunet.many.train_many's per-sample path): block m
// runs model m's chunk through the same body, so each model's loop order is its solo launch's. Its arguments are
// the solo kernel's at an offset of m strides (in elements):
//   Z1, D (models, K, H) and Y, Z2o (models, K, O)     K H and K O a model
//   G: one (K, K) for all (g_stride 0: one batch and one lr) or (models, K, K), g_stride K K
//   T: one (K, O) for all (t_stride 0: a shared batch) or (models, K, O), t_stride K O
//   W2, b2: model 0's in the stacked parameters (gpunet/engines/stack.py: row m of P is model m's flat buffer),
//           p_stride the length of a row
//   lr (models,): each model's learning rate
// The _dropout forms take each model's mask: seeds (models, 2) its key's words (lo, hi), thresholds and scales
// (models,), and the step count before row 0, one for all (the models have taken as many steps). A model that
// drops nothing has threshold 2^32 and scale 1: every unit kept, times 1, the numbers of the kernel without.
// No IN_KERNEL form: b1, G's scaling and the first layer's update are the host's, as for per_sample_chunk.
template <typename F, int HIDDEN, bool OUT_FROM_INPUT, bool DROP>
__device__ __forceinline__ void many_chunk(const F* __restrict__ Z1, const F* __restrict__ G,
                                           const F* __restrict__ T, F* __restrict__ W2, F* __restrict__ b2,
                                           F* __restrict__ D, F* __restrict__ Y, F* __restrict__ Z2o,
                                           int K, int H, int O, long long g_stride, long long t_stride,
                                           long long p_stride, const F* __restrict__ lr, int out_act, int loss,
                                           const unsigned int* __restrict__ seeds,
                                           const unsigned long long* __restrict__ thresholds,
                                           const F* __restrict__ scales, unsigned int step0) {
    const long long m = blockIdx.x;
    HiddenDropout<F> drop{};
    if constexpr (DROP) drop = HiddenDropout<F>{seeds[2 * m], seeds[2 * m + 1], step0, thresholds[m], scales[m]};
    const long long kh = (long long)K * H, ko = (long long)K * O;
    chunk<F, HIDDEN, false, OUT_FROM_INPUT, DROP>(Z1 + m * kh, G + m * g_stride, T + m * t_stride, W2 + m * p_stride,
                                                  b2 + m * p_stride, nullptr, D + m * kh, Y + m * ko, Z2o + m * ko,
                                                  K, H, O, lr[m], out_act, loss, drop);
}

// An output read off Y (softmax and the fused cross-entropies too), and one whose derivative reads Z2.
template <typename F, int HIDDEN>
__global__ void per_sample_many(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ D, F* __restrict__ Y,
                                F* __restrict__ Z2o, int K, int H, int O, long long g_stride, long long t_stride,
                                long long p_stride, const F* __restrict__ lr, int out_act, int loss) {
    many_chunk<F, HIDDEN, false, false>(Z1, G, T, W2, b2, D, Y, Z2o, K, H, O, g_stride, t_stride, p_stride, lr,
                                        out_act, loss, nullptr, nullptr, nullptr, 0u);
}

template <typename F, int HIDDEN>
__global__ void per_sample_many_z2(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                   F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ D, F* __restrict__ Y,
                                   F* __restrict__ Z2o, int K, int H, int O, long long g_stride, long long t_stride,
                                   long long p_stride, const F* __restrict__ lr, int out_act, int loss) {
    many_chunk<F, HIDDEN, true, false>(Z1, G, T, W2, b2, D, Y, Z2o, K, H, O, g_stride, t_stride, p_stride, lr,
                                       out_act, loss, nullptr, nullptr, nullptr, 0u);
}

// The two with the hidden layer's output dropped (DROP): the same arguments, then each model's mask.
template <typename F, int HIDDEN>
__global__ void per_sample_many_dropout(const F* __restrict__ Z1, const F* __restrict__ G, const F* __restrict__ T,
                                        F* __restrict__ W2, F* __restrict__ b2, F* __restrict__ D, F* __restrict__ Y,
                                        F* __restrict__ Z2o, int K, int H, int O, long long g_stride,
                                        long long t_stride, long long p_stride, const F* __restrict__ lr, int out_act,
                                        int loss, const unsigned int* __restrict__ seeds,
                                        const unsigned long long* __restrict__ thresholds,
                                        const F* __restrict__ scales, unsigned int step0) {
    many_chunk<F, HIDDEN, false, true>(Z1, G, T, W2, b2, D, Y, Z2o, K, H, O, g_stride, t_stride, p_stride, lr,
                                       out_act, loss, seeds, thresholds, scales, step0);
}

template <typename F, int HIDDEN>
__global__ void per_sample_many_z2_dropout(const F* __restrict__ Z1, const F* __restrict__ G,
                                           const F* __restrict__ T, F* __restrict__ W2, F* __restrict__ b2,
                                           F* __restrict__ D, F* __restrict__ Y, F* __restrict__ Z2o, int K, int H,
                                           int O, long long g_stride, long long t_stride, long long p_stride,
                                           const F* __restrict__ lr, int out_act, int loss,
                                           const unsigned int* __restrict__ seeds,
                                           const unsigned long long* __restrict__ thresholds,
                                           const F* __restrict__ scales, unsigned int step0) {
    many_chunk<F, HIDDEN, true, true>(Z1, G, T, W2, b2, D, Y, Z2o, K, H, O, g_stride, t_stride, p_stride, lr,
                                      out_act, loss, seeds, thresholds, scales, step0);
}
