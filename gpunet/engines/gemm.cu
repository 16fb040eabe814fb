// gemm.cu: a whole training step in our own kernels (no cuBLAS, whose CuPy wrappers refuse stream capture),
// so graph.py can capture an epoch of steps into one CUDA graph. Shapes are batch-first as in network.py:
// the batch has N rows, layer i maps n_{i-1} -> n_i, every array is row-major and contiguous.
//
//   gather_rows   Xb[r, :] = X[order[lo + r], :],                 X (n, wx), T (n, wt), order (n,) int64,
//                 Tb[r, :] = T[order[lo + r], :]                  Xb (N, wx), Tb (N, wt): one launch for both
//   forward       A_i = f(A_{i-1} @ W_i + b_i)                    A_{i-1} (N, n_{i-1}), W_i (n_{i-1}, n_i),
//                                                                 b_i (n_i,), A_i (N, n_i)
//   forward_keep  the same, and Z_i = A_{i-1} @ W_i + b_i kept    Z_i (N, n_i): for a hidden activation whose
//                                                                 derivative reads its input (act_from_input)
//   output_delta  loss[r] = L(Y_r, T_r), delta_L = s * dL/dZ_L,  Y = A_L, T, delta_L (N, n_L), loss (N,)
//                 s = lr / N (lr folded in, plain SGD) or 1 / N. Where the output layer's forward kept
//                 Z_L (softmax output; sigmoid output with cross-entropy; an output whose derivative reads
//                 Z_L), A_L holds Z_L on entry and Y = f(Z_L) in place on exit; cross-entropy then comes from
//                 the logits, as in activations.py's FUSED: logsumexp(z) sum(t) - sum(t z), or sum
//                 softplus(z) - t z.
//                 (graph.py passes each step its rows' slice of an epoch-long loss buffer)
//   forward_output  the output layer's forward, then output_delta on each row, in one launch: for an output
//                 layer of one column tile (n_L <= TILE, R = 1), whose blocks each hold whole rows of A_L.
//                 Both parts are the separate kernels' code (forward_tile, output_row).
//   loss_total    total += sum_r loss[r]   (total = 0 first when first != 0)     loss (N,), total (1,)
//                 (graph.py: once an epoch, over the epoch's rows)
//   backward      delta_{i-1} = (delta_i @ W_i^T) * f'(A_{i-1})   delta_i (N, n_i), W_i (n_{i-1}, n_i),
//                                                                 A_{i-1}, delta_{i-1} (N, n_{i-1}); A_{i-1}
//                                                                 is Z_{i-1} where f' reads the input
//   weight_grad   dW_i = A_{i-1}^T @ delta_i, then by MODE:       A_{i-1} (N, n_{i-1}), delta_i (N, n_i),
//                   GRAD_WRITE   dW_i written (for other optimisers)         W_i, dW_i (n_{i-1}, n_i)
//                   SGD_FOLDED   W_i -= dW_i (lr already in delta)
//                   SGD_DECAY    W_i -= lr * (dW_i + weight_decay * W_i)
//                 and the bias in the same launch: db_i = sum_r delta_i[r, :] is row n_{i-1} of
//                 [A_{i-1}, 1]^T @ delta_i (a row of ones appended to A^T), then b_i -= db_i,
//                 b_i -= lr * db_i, or db_i written (biases never decay)     b_i, db_i (n_i,)
//   weight_grads  weight_grad for up to MAX_LAYERS layers in one launch (a table of their arguments, by
//                 value), each block running weight_grad's code (weight_grad_tile) on one tile of one layer
//
// graph.py's step uses forward_output (where the output product is one column tile) and weight_grads: 2L + 1
// launches, every value computed by the same code, in the same order, as forward, output_delta and
// weight_grad one at a time.
//
// lr lives in device memory as one double (graph.py writes it before each replay), so a captured graph
// serves every epoch's learning rate. Each product is one thread per output element (RTILE x RTILE
// elements a thread for large products: the template parameter R), each element summing its
// products in order k = 0, 1, ..., K - 1: tests/transcriptions.py transcribes that order in NumPy.
// No host headers: NVRTC has none.
#include "common.cuh"

#define TILE 16             // a TILE x TILE block computes a TILE x TILE tile of the product (R = 1)
#define KTILE 256           // the slice of k a float block stages per pass: KTILE / TILE loads a thread in flight
#define KTILE_DOUBLE 128    // a double block's (either way both operands' slices take 33 KB of shared memory)
#define RTILE 4             // R = RTILE: each thread computes RTILE x RTILE elements, a block a 64 x 64 tile
#define KTILE_R 32          // the slice of k such a block stages per pass (64 x 32 of each operand)
#define LOSS_THREADS 256    // loss_total's one block; a power of two for its tree
#define MAX_LAYERS 8        // weight_grads: the most layers one launch takes (graph.py launches more in parts)
#define GRAD_WRITE 0
#define SGD_FOLDED 1
#define SGD_DECAY 2

// 16 bytes of T, for one shared-memory read of 4 floats or 2 doubles.
template <typename T>
struct Vec16;
template <>
struct Vec16<float> {
    using type = float4;
};
template <>
struct Vec16<double> {
    using type = double2;
};

template <typename T>
__device__ __forceinline__ T quiet_nan() {
    if constexpr (sizeof(T) == 4) {
        return __int_as_float(0x7fc00000);
    } else {
        return __longlong_as_double(0x7ff8000000000000LL);
    }
}

// C[row, col] = sum_k A[row, k] B[k, col] for this thread's element of the block's tile of C (M, Nc).
// A is (M, K), stored as (K, M) when TRANS_A; B is (K, Nc), stored as (Nc, K) when TRANS_B. The block
// stages KT-wide slices of k in shared memory (KTILE for float, KTILE_DOUBLE for double), each thread
// loading KT / TILE elements of each operand into registers at once (independent loads, in flight
// together), the next slice's while the products of this one run. Loads run along the stored rows, so
// neighbouring threads read neighbouring addresses. Both slices sit k-contiguous in shared memory, so a
// thread reads V = 16 / sizeof(T) of its row's and its column's k's at once: a product over few rows has
// one block an SM, and its speed is that SM's shared-memory reads. Each thread adds its products in order
// k = 0, 1, ..., K - 1, as with any slice width or read width (the measured effect of each: docs/benchmarks.md).
// Every thread of the block must call this (it synchronises); out-of-range ones get a value to ignore.
// ONES_ROW (with TRANS_A): A has a row M of ones after its M stored rows, so the block row holding row M
// computes sum_k B[k, col] in order k = 0, 1, ...: 1 * B[k, col] + acc rounds as B[k, col] + acc does.
template <typename T, bool TRANS_A, bool TRANS_B, bool ONES_ROW = false>
__device__ __forceinline__ T tile_product(int bx, int by, const T* A, const T* B, int M, int Nc, int K) {
    constexpr int KT = sizeof(T) == 4 ? KTILE : KTILE_DOUBLE;
    constexpr int V = 16 / sizeof(T);  // elements in 16 bytes: one shared-memory read of Vec
    using Vec = typename Vec16<T>::type;
    // Both slices k-contiguous, each row 16-byte aligned; the V-element pad puts row i + 1 four banks on
    __shared__ __align__(16) T As[TILE][KT + V];  // As[i][kk] = A[r0 + i, k0 + kk]
    __shared__ __align__(16) T Bs[TILE][KT + V];  // Bs[j][kk] = B[k0 + kk, c0 + j]
    constexpr int LOADS = KT / TILE;  // elements of each operand a thread stages per pass
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int r0 = by * TILE, c0 = bx * TILE;
    T a[LOADS], b[LOADS];  // the slice from k0 on, loaded into registers: every load issued before any is used
    auto load = [&](int k0) {
#pragma unroll
        for (int q = 0; q < LOADS; ++q) {
            if constexpr (TRANS_A) {
                const int r = r0 + tx, k = k0 + ty + q * TILE;
                a[q] = (r < M && k < K) ? A[(size_t)k * M + r] : (ONES_ROW && r == M && k < K) ? T(1) : T(0);
            } else {
                const int r = r0 + ty, k = k0 + tx + q * TILE;
                a[q] = (r < M && k < K) ? A[(size_t)r * K + k] : T(0);
            }
            if constexpr (TRANS_B) {
                const int c = c0 + ty, k = k0 + tx + q * TILE;
                b[q] = (c < Nc && k < K) ? B[(size_t)c * K + k] : T(0);
            } else {
                const int c = c0 + tx, k = k0 + ty + q * TILE;
                b[q] = (c < Nc && k < K) ? B[(size_t)k * Nc + c] : T(0);
            }
        }
    };
    T acc = T(0);
    load(0);
    for (int k0 = 0; k0 < K; k0 += KT) {
#pragma unroll
        for (int q = 0; q < LOADS; ++q) {
            if constexpr (TRANS_A) {
                As[tx][ty + q * TILE] = a[q];
            } else {
                As[ty][tx + q * TILE] = a[q];
            }
            if constexpr (TRANS_B) {
                Bs[ty][tx + q * TILE] = b[q];
            } else {
                Bs[tx][ty + q * TILE] = b[q];
            }
        }
        __syncthreads();
        if (k0 + KT < K) load(k0 + KT);  // the next slice's loads, in flight while this one's products run
        const int kmax = K - k0 < KT ? K - k0 : KT;
        const T* as = As[ty];
        const T* bs = Bs[tx];
        int kk = 0;
        for (; kk + V <= kmax; kk += V) {  // V products from two 16-byte reads, added in order
            const Vec av = *reinterpret_cast<const Vec*>(as + kk);
            const Vec bv = *reinterpret_cast<const Vec*>(bs + kk);
            if constexpr (V == 4) {
                acc += av.x * bv.x;
                acc += av.y * bv.y;
                acc += av.z * bv.z;
                acc += av.w * bv.w;
            } else {
                acc += av.x * bv.x;
                acc += av.y * bv.y;
            }
        }
        for (; kk < kmax; ++kk) {
            acc += as[kk] * bs[kk];
        }
        __syncthreads();
    }
    return acc;
}

// The register-tiled product for large products (R = RTILE): thread (tx, ty) computes the RTILE x RTILE
// elements at rows r0 + ty + i TILE and columns c0 + tx + j TILE of the block's (TILE RTILE)-square tile, so
// each element it loads from shared memory serves RTILE products. Each element still adds its products in
// order k = 0, 1, ..., K - 1, as tile_product's do (the slice width moves values, not arithmetic): the
// results are tile_product's, bit for bit. Same operands, storage, ONES_ROW and synchronisation rules.
template <typename T, bool TRANS_A, bool TRANS_B, bool ONES_ROW = false>
__device__ __forceinline__ void tile_product_r(int bx, int by, const T* A, const T* B, int M, int Nc, int K,
                                               T (&acc)[RTILE][RTILE]) {
    constexpr int W = TILE * RTILE;                 // the block tile's rows and columns
    constexpr int THREADS = TILE * TILE;
    constexpr int LOADS = W * KTILE_R / THREADS;    // elements of each operand a thread stages per pass
    __shared__ T As[W][KTILE_R + 1];                // As[i][kk] = A[r0 + i, k0 + kk]
    __shared__ T Bs[KTILE_R][W + 1];                // Bs[kk][j] = B[k0 + kk, c0 + j]
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TILE + tx;
    const int r0 = by * W, c0 = bx * W;
#pragma unroll
    for (int i = 0; i < RTILE; ++i)
#pragma unroll
        for (int j = 0; j < RTILE; ++j) acc[i][j] = T(0);
    for (int k0 = 0; k0 < K; k0 += KTILE_R) {
#pragma unroll
        for (int q = 0; q < LOADS; ++q) {
            const int e = tid + q * THREADS;
            if constexpr (TRANS_A) {  // stored (K, M): consecutive threads along the rows of A
                const int i = e % W, kk = e / W, r = r0 + i, k = k0 + kk;
                As[i][kk] = (r < M && k < K) ? A[(size_t)k * M + r] : (ONES_ROW && r == M && k < K) ? T(1) : T(0);
            } else {                  // stored (M, K): consecutive threads along k
                const int kk = e % KTILE_R, i = e / KTILE_R, r = r0 + i, k = k0 + kk;
                As[i][kk] = (r < M && k < K) ? A[(size_t)r * K + k] : T(0);
            }
            if constexpr (TRANS_B) {  // stored (Nc, K): consecutive threads along k
                const int kk = e % KTILE_R, j = e / KTILE_R, c = c0 + j, k = k0 + kk;
                Bs[kk][j] = (c < Nc && k < K) ? B[(size_t)c * K + k] : T(0);
            } else {                  // stored (K, Nc): consecutive threads along the columns
                const int j = e % W, kk = e / W, c = c0 + j, k = k0 + kk;
                Bs[kk][j] = (c < Nc && k < K) ? B[(size_t)k * Nc + c] : T(0);
            }
        }
        __syncthreads();
        const int kmax = K - k0 < KTILE_R ? K - k0 : KTILE_R;
        for (int kk = 0; kk < kmax; ++kk) {
            T a[RTILE], b[RTILE];
#pragma unroll
            for (int i = 0; i < RTILE; ++i) a[i] = As[ty + i * TILE][kk];
#pragma unroll
            for (int j = 0; j < RTILE; ++j) b[j] = Bs[kk][tx + j * TILE];
#pragma unroll
            for (int i = 0; i < RTILE; ++i)
#pragma unroll
                for (int j = 0; j < RTILE; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
}

// Xb[r, c] = X[order[lo + r], c] for the first N * wx threads, Tb[r, c] = Tg[order[lo + r], c] for the next
// N * wt; an index outside [0, n_rows) gives a NaN row, which the loss reports.
template <typename T>
__global__ void gather_rows(const T* X, const T* Tg, const long long* order, int lo, int N, int wx, int wt,
                            int n_rows, T* Xb, T* Tb) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long n_x = (long long)N * wx;
    if (i >= n_x + (long long)N * wt) return;
    const bool is_x = i < n_x;
    const long long e = is_x ? i : i - n_x;  // the element of Xb or Tb
    const int width = is_x ? wx : wt;
    const int r = (int)(e / width), c = (int)(e % width);
    const long long src = order[lo + r];
    (is_x ? Xb : Tb)[e] = (src >= 0 && src < n_rows) ? (is_x ? X : Tg)[src * width + c] : quiet_nan<T>();
}

// Each product kernel below computes one element a thread (R = 1, tile_product) or RTILE x RTILE
// (R = RTILE, tile_product_r), then applies its epilogue to each: element(r, c, value). (bx, by) is the
// block's tile of C: blockIdx, except in weight_grads, whose one grid holds every layer's tiles.
template <typename T, bool TRANS_A, bool TRANS_B, bool ONES_ROW, int R, typename Epilogue>
__device__ __forceinline__ void product(int bx, int by, const T* A, const T* B, int M, int Nc, int K,
                                        Epilogue element) {
    if constexpr (R == 1) {
        const T v = tile_product<T, TRANS_A, TRANS_B, ONES_ROW>(bx, by, A, B, M, Nc, K);
        element(by * TILE + threadIdx.y, bx * TILE + threadIdx.x, v);
    } else {
        T acc[RTILE][RTILE];
        tile_product_r<T, TRANS_A, TRANS_B, ONES_ROW>(bx, by, A, B, M, Nc, K, acc);
#pragma unroll
        for (int i = 0; i < RTILE; ++i)
#pragma unroll
            for (int j = 0; j < RTILE; ++j)
                element(by * TILE * RTILE + threadIdx.y + i * TILE, bx * TILE * RTILE + threadIdx.x + j * TILE,
                        acc[i][j]);
    }
}

// A_i = f(Z_i), Z_i = A_{i-1} @ W_i + b_i: (N, n_in) @ (n_in, n_out) + (n_out,); the block's tile, forward's
// and forward_output's.
template <typename T, int ACT, int R>
__device__ __forceinline__ void forward_tile(const T* A_prev, const T* W, const T* b, T* A, int N, int n_in,
                                             int n_out) {
    product<T, false, false, false, R>(blockIdx.x, blockIdx.y, A_prev, W, N, n_out, n_in, [&](int r, int j, T Z) {
        if (r < N && j < n_out) A[(size_t)r * n_out + j] = act_forward<ACT, T>(Z + b[j]);
    });
}

template <typename T, int ACT, int R>
__global__ void forward(const T* A_prev, const T* W, const T* b, T* A, int N, int n_in, int n_out) {
    forward_tile<T, ACT, R>(A_prev, W, b, A, N, n_in, n_out);
}

// forward, keeping Z_i = A_{i-1} @ W_i + b_i in Zk (N, n_out) beside A_i = f(Z_i): for a hidden activation whose
// derivative reads its input (act_from_input<ACT>()), which backward then reads in place of A_i.
template <typename T, int ACT, int R>
__global__ void forward_keep(const T* A_prev, const T* W, const T* b, T* A, T* Zk, int N, int n_in, int n_out) {
    product<T, false, false, false, R>(blockIdx.x, blockIdx.y, A_prev, W, N, n_out, n_in, [&](int r, int j, T Z) {
        if (r < N && j < n_out) {
            const size_t idx = (size_t)r * n_out + j;
            const T z = Z + b[j];
            Zk[idx] = z;
            A[idx] = act_forward<ACT, T>(z);
        }
    });
}

// One row of the output layer, y = Y_r, t = T_r, d = delta_r (n_out each): y = f(Z_r) in place where A_L holds
// Z_r (see the top), loss = L(Y_r, T_r) or, for cross-entropy, L(Z_r, T_r), d = s dL/dZ_r. Run by one thread,
// output_delta's and forward_output's.
template <typename T, int OUT, int LOSS>
__device__ __forceinline__ void output_row(T* y, const T* t, T* d, T& loss, T s, int n_out) {
    if constexpr (act_from_input<OUT>()) {  // y holds Z on entry: Y = f(Z) in place, Z kept in d for f'(Z) below
        for (int j = 0; j < n_out; ++j) {
            d[j] = y[j];
            y[j] = act_forward<OUT, T>(d[j]);
        }
    } else if constexpr (OUT == GPUNET_SOFTMAX) {  // Y = exp(Z - max Z) / sum exp(Z - max Z), y holds Z on entry
        T m = y[0];
        for (int j = 1; j < n_out; ++j) m = y[j] > m ? y[j] : m;
        T e = T(0), tsum = T(0), tz = T(0);
        for (int j = 0; j < n_out; ++j) {
            tsum += t[j];
            tz += t[j] * y[j];
            y[j] = exp(y[j] - m);
            e += y[j];
        }
        for (int j = 0; j < n_out; ++j) y[j] = y[j] / e;
        if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY) {  // -sum t log softmax(z) = logsumexp(z) sum(t) - sum(t z)
            loss = (m + log(e)) * tsum - tz;
            for (int j = 0; j < n_out; ++j) d[j] = (y[j] * tsum - t[j]) * s;  // dL/dZ = y sum(t) - t
        }
    } else if constexpr (LOSS == GPUNET_LOSS_CROSS_ENTROPY) {  // sigmoid: y holds Z on entry
        T L = T(0);
        for (int j = 0; j < n_out; ++j) {  // -t log y - (1 - t) log(1 - y) = softplus(z) - t z
            const T z = y[j];
            const T softplus = (z > T(0) ? z : T(0)) + log1p(exp(-fabs(z)));  // log(1 + exp(z)), no overflow
            L += softplus - t[j] * z;
            y[j] = act_forward<GPUNET_SIGMOID, T>(z);
            d[j] = (y[j] - t[j]) * s;  // dL/dZ = y - t
        }
        loss = L;
    }
    if constexpr (LOSS == GPUNET_LOSS_SQUARED) {  // 1/2 sum (t - y)^2
        T L = T(0);
        for (int j = 0; j < n_out; ++j) {
            const T e = t[j] - y[j];
            L += e * e;
        }
        loss = T(0.5) * L;
    } else if constexpr (LOSS == GPUNET_LOSS_ABSOLUTE) {  // sum |t - y|
        T L = T(0);
        for (int j = 0; j < n_out; ++j) L += fabs(t[j] - y[j]);
        loss = L;
    }
    if constexpr (act_from_input<OUT>()) {  // dL/dY through f'(Z), Z read from d (the first branch above)
        for (int j = 0; j < n_out; ++j) {
            d[j] = act_backward_from_input<OUT, T>(d[j], loss_grad<T, LOSS>(y[j], t[j]) * s);
        }
    } else if constexpr (LOSS != GPUNET_LOSS_CROSS_ENTROPY) {  // dL/dY = y - t or sign(y - t), then through f
        for (int j = 0; j < n_out; ++j) d[j] = loss_grad<T, LOSS>(y[j], t[j]) * s;
        if constexpr (OUT == GPUNET_SOFTMAX) {  // dZ_j = y_j (dY_j - sum_k dY_k y_k)
            T dot = T(0);
            for (int j = 0; j < n_out; ++j) dot += d[j] * y[j];
            for (int j = 0; j < n_out; ++j) d[j] = y[j] * (d[j] - dot);
        } else {
            for (int j = 0; j < n_out; ++j) d[j] = act_backward<OUT, T>(y[j], d[j]);
        }
    }
}

// The plain path's lr / N (or 1 / N), rounded once.
template <typename T>
__device__ __forceinline__ T delta_scale(const double* lr, int fold_lr, int N) {
    return T(fold_lr ? lr[0] / N : 1.0 / N);
}

// One thread per row r of Y = A_L (N, n_out): output_row.
template <typename T, int OUT, int LOSS>
__global__ void output_delta(T* Y, const T* Tg, T* delta, T* loss, const double* lr, int fold_lr, int N, int n_out) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= N) return;
    const size_t row = (size_t)r * n_out;
    output_row<T, OUT, LOSS>(Y + row, Tg + row, delta + row, loss[r], delta_scale<T>(lr, fold_lr, N), n_out);
}

// The output layer's forward (epilogue ACT, forward's) and then output_delta, in one launch of a one-column-tile
// grid (n_out <= TILE, R = 1, forward's geometry): once the block has written its TILE rows of Y = A_L, thread
// x = 0 of each row runs output_row on it. The arguments: forward's, then output_delta's after Y.
template <typename T, int ACT, int OUT, int LOSS>
__global__ void forward_output(const T* A_prev, const T* W, const T* b, T* Y, int n_in, const T* Tg, T* delta,
                               T* loss, const double* lr, int fold_lr, int N, int n_out) {
    forward_tile<T, ACT, 1>(A_prev, W, b, Y, N, n_in, n_out);
    __syncthreads();  // the block's rows of Y written and visible to its threads (every thread gets here)
    const int r = blockIdx.y * TILE + threadIdx.y;
    if (threadIdx.x != 0 || r >= N) return;
    const size_t row = (size_t)r * n_out;
    output_row<T, OUT, LOSS>(Y + row, Tg + row, delta + row, loss[r], delta_scale<T>(lr, fold_lr, N), n_out);
}

// total += sum_r loss[r] (total = 0 first when first != 0). One block of LOSS_THREADS: thread t sums rows
// t, t + LOSS_THREADS, ... in order, then a tree halves the partial sums; deterministic, no atomics.
template <typename T>
__global__ void loss_total(const T* loss, int N, int first, T* total) {
    __shared__ T part[LOSS_THREADS];
    const int t = threadIdx.x;
    T s = T(0);
    for (int r = t; r < N; r += LOSS_THREADS) s += loss[r];
    part[t] = s;
    __syncthreads();
    for (int half = LOSS_THREADS / 2; half > 0; half /= 2) {
        if (t < half) part[t] += part[t + half];
        __syncthreads();
    }
    if (t == 0) total[0] = (first ? T(0) : total[0]) + part[0];
}

// delta_{i-1} = dA * f'(A_{i-1}), dA = delta_i @ W_i^T: (N, n_i) @ (n_i, n_prev) -> (N, n_prev)
template <typename T, int ACT, int R>
__global__ void backward(const T* delta, const T* W, const T* A_prev, T* delta_prev, int N, int n_prev, int n_i) {
    product<T, false, true, false, R>(blockIdx.x, blockIdx.y, delta, W, N, n_prev, n_i, [&](int r, int j, T dA) {
        if (r < N && j < n_prev) {
            const size_t idx = (size_t)r * n_prev + j;
            delta_prev[idx] = act_backward_at<ACT, T>(A_prev[idx], dA);  // A_prev: Z_{i-1} where f' reads it
        }
    });
}

// [dW_i; db_i] = [A_{i-1}, 1]^T @ delta_i: (n_prev + 1, N) @ (N, n_i) -> (n_prev + 1, n_i), the grid covering
// n_prev + 1 rows; then the update by MODE (see the top): rows j < n_prev are W's, row n_prev is b's, summed
// in order r = 0, 1, ..., N - 1. dW, db are only written in GRAD_WRITE mode, W, b only in the SGD modes; lr
// is read in SGD_DECAY mode. The block's tile (bx, by): weight_grad's and weight_grads'.
template <typename T, int MODE, int R>
__device__ __forceinline__ void weight_grad_tile(int bx, int by, const T* A_prev, const T* delta, T* W, T* dW, T* b,
                                                 T* db, const double* lr, T weight_decay, int N, int n_prev,
                                                 int n_i) {
    product<T, true, false, true, R>(bx, by, A_prev, delta, n_prev, n_i, N, [&](int j, int k, T g) {
        if (k >= n_i || j > n_prev) return;
        if (j < n_prev) {
            const size_t idx = (size_t)j * n_i + k;
            if constexpr (MODE == GRAD_WRITE) {
                dW[idx] = g;
            } else if constexpr (MODE == SGD_FOLDED) {
                W[idx] -= g;
            } else {
                W[idx] -= T(lr[0]) * (g + weight_decay * W[idx]);
            }
        } else if constexpr (MODE == GRAD_WRITE) {  // j == n_prev: the bias
            db[k] = g;
        } else if constexpr (MODE == SGD_FOLDED) {
            b[k] -= g;
        } else {
            b[k] -= T(lr[0]) * g;
        }
    });
}

template <typename T, int MODE, int R>
__global__ void weight_grad(const T* A_prev, const T* delta, T* W, T* dW, T* b, T* db, const double* lr,
                            T weight_decay, int N, int n_prev, int n_i) {
    weight_grad_tile<T, MODE, R>(blockIdx.x, blockIdx.y, A_prev, delta, W, dW, b, db, lr, weight_decay, N, n_prev,
                                 n_i);
}

// weight_grads: one layer's part of the launch, weight_grad's arguments and where its tiles sit in the grid.
template <typename T>
struct WeightGradLayer {
    const T* A_prev;
    const T* delta;
    T* W;
    T* dW;
    T* b;
    T* db;
    int n_prev, n_i;
    int first_block;  // the layer's tiles are blocks first_block, first_block + 1, ... of the 1-D grid,
    int tiles_x;      // row by row of its own (tiles_x, tiles_y) grid, weight_grad's
};

// Every layer's part, passed by value (graph.py packs it): at most MAX_LAYERS, count of them used, in order
// of first_block (layer[0].first_block = 0).
template <typename T>
struct WeightGradLayers {
    WeightGradLayer<T> layer[MAX_LAYERS];
    int count;
};
static_assert(sizeof(WeightGradLayer<float>) == 64 && sizeof(WeightGradLayer<double>) == 64, "graph.py's layout");
static_assert(sizeof(WeightGradLayers<float>) == 64 * MAX_LAYERS + 8, "graph.py's layout");

// Every layer's weight_grad in one launch, once every backward has read its W_i: block blockIdx.x finds its
// layer (the last whose first_block it has reached) and its tile there, and runs weight_grad's code on that
// tile, so each element is computed as the separate launch computes it. The layers' products read and write
// disjoint memory. Every layer at the same R (its shared memory and registers are the kernel's).
template <typename T, int MODE, int R>
__global__ void weight_grads(const WeightGradLayers<T> layers, const double* lr, T weight_decay, int N) {
    const int block = blockIdx.x;
    WeightGradLayer<T> L = layers.layer[0];
#pragma unroll
    for (int l = 1; l < MAX_LAYERS; ++l) {  // unrolled: constant indices keep the table in parameter space
        if (l < layers.count && block >= layers.layer[l].first_block) L = layers.layer[l];
    }
    const int tile = block - L.first_block;
    weight_grad_tile<T, MODE, R>(tile % L.tiles_x, tile / L.tiles_x, L.A_prev, L.delta, L.W, L.dW, L.b, L.db, lr,
                                 weight_decay, N, L.n_prev, L.n_i);
}
