// Dropout's masks on the device: gpunet/dropout.py's generator, the same integers bit for bit.
//
//   philox4x32_10(c, k0, k1)                Philox4x32-10 (Salmon et al., SC 2011; Random123's reference) of the
//                                           counter c.w[0..3] under key (k0, k1): its four output words
//   dropout_word(seed_lo, seed_hi, layer, step, row, unit)
//                                           word unit % 4 of philox4x32_10((unit / 4, row, step, layer), seed)
//   dropout_keep(seed_lo, seed_hi, layer, step, row, unit, threshold)
//                                           unit `unit` of row `row` of layer input `layer` in optimiser step
//                                           `step` is kept: its word < threshold = round((1 - rate) * 2^32)
//   dropout_mask<T>(..., threshold, scale)  what the input is multiplied by: scale = 1 / (1 - rate) if kept, else 0
//
// Integers only, so the decision is the same on every device and on the host (tests/test_dropout.py compiles
// this header with g++ and compares it with the NumPy function). No host headers: NVRTC has none.
#pragma once

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)  // a host compiler (the tests): no device qualifiers
#ifndef __host__
#define __host__
#define __device__
#define __forceinline__ inline
#endif
#endif

struct philox4x32_words {
    unsigned int w[4];
};

__host__ __device__ __forceinline__ philox4x32_words philox4x32_10(philox4x32_words c, unsigned int k0,
                                                                  unsigned int k1) {
    unsigned int c0 = c.w[0], c1 = c.w[1], c2 = c.w[2], c3 = c.w[3];
    for (int r = 0; r < 10; ++r) {
        if (r) {  // the key's Weyl sequence, before every round but the first
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = 0xD2511F53ull * c0;  // 32 x 32 -> 64 bits: exact
        const unsigned long long p1 = 0xCD9E8D57ull * c2;
        const unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        const unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return philox4x32_words{{c0, c1, c2, c3}};
}

// One evaluation gives four adjacent units' words; a kernel that needs all four can keep the block.
__host__ __device__ __forceinline__ unsigned int dropout_word(unsigned int seed_lo, unsigned int seed_hi,
                                                              unsigned int layer, unsigned int step, unsigned int row,
                                                              unsigned int unit) {
    return philox4x32_10(philox4x32_words{{unit >> 2, row, step, layer}}, seed_lo, seed_hi).w[unit & 3u];
}

// threshold is 64-bit so that 2^32 (keep everything) is representable, as gpunet.dropout.keep_threshold gives it.
__host__ __device__ __forceinline__ bool dropout_keep(unsigned int seed_lo, unsigned int seed_hi, unsigned int layer,
                                                      unsigned int step, unsigned int row, unsigned int unit,
                                                      unsigned long long threshold) {
    return (unsigned long long)dropout_word(seed_lo, seed_hi, layer, step, row, unit) < threshold;
}

template <typename T>
__host__ __device__ __forceinline__ T dropout_mask(unsigned int seed_lo, unsigned int seed_hi, unsigned int layer,
                                                   unsigned int step, unsigned int row, unsigned int unit,
                                                   unsigned long long threshold, T scale) {
    return dropout_keep(seed_lo, seed_hi, layer, step, row, unit, threshold) ? scale : T(0);
}
