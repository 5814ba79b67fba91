/* gptkit's CPU kernels for decoding, built and loaded by gptkit/models/native.py: the products of a decode
 * step, y (M, N) = x (M, K) @ W (N, K)^T, times a scale per output row (int8 weights), plus a bias, for its few
 * rows M (`gptkit_gemv`), and its attention over the KV cache (`gptkit_attend`, at the end).
 *
 * One decode step reads every weight once and does one multiply-add with it per row: the time is the time
 * to stream the weights from memory. torch 2.13's CPU kernels for such products stream them at 22-44% of
 * the machine's copy bandwidth (MKL's sgemv, the generic bfloat16 loop, _weight_int8pack_mm); these loops
 * read each weight row once, widen it to float32 in registers and accumulate in float32, on OpenMP threads
 * that each take a contiguous band of rows.
 *
 * Weights: float32, bfloat16 or int8 (with a float32 scale per output row). Activations, bias and output:
 * float32 or bfloat16 (bfloat16 inputs are widened exactly; outputs are rounded to nearest even once, after
 * the bias, as torch's own bfloat16 products round). Every product and sum is float32.
 */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GPTKIT_AVX2 1
#endif

enum { GPTKIT_F32 = 0, GPTKIT_BF16 = 1, GPTKIT_I8 = 2 };

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN, as torch writes it */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float widen_f32(float w) { return w; }
static inline float widen_i8(int8_t w) { return (float)w; }

#ifdef GPTKIT_AVX2
static inline __m256 load8_f32(const float *w) { return _mm256_loadu_ps(w); }
static inline __m256 load8_bf16(const uint16_t *w) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
static inline __m256 load8_i8(const int8_t *w) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)w)));
}
static inline float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* 32 weights a step into four independent sums (the adds' latency would otherwise bound the loop) */
#define VECTOR_STEPS(LOAD8, WIDEN_FN)                                         \
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;               \
    for (; k + 32 <= K; k += 32) {                                            \
        a0 = _mm256_fmadd_ps(LOAD8(w + k), _mm256_loadu_ps(x + k), a0);       \
        a1 = _mm256_fmadd_ps(LOAD8(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);   \
        a2 = _mm256_fmadd_ps(LOAD8(w + k + 16), _mm256_loadu_ps(x + k + 16), a2); \
        a3 = _mm256_fmadd_ps(LOAD8(w + k + 24), _mm256_loadu_ps(x + k + 24), a3); \
    }                                                                         \
    s = sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#else
/* 16 independent sums in a fixed-length inner loop: what compilers vectorize for any target */
#define VECTOR_STEPS(LOAD8, WIDEN_FN)                                           \
    float acc[16] = {0};                                                        \
    for (; k + 16 <= K; k += 16)                                                \
        for (int j = 0; j < 16; j++) acc[j] += WIDEN_FN(w[k + j]) * x[k + j];   \
    for (int j = 0; j < 16; j++) s += acc[j];
#endif

#define DEFINE_DOT(NAME, T, LOAD8, WIDEN_FN)               \
    static inline float NAME(const T *w, const float *x, long K) { \
        long k = 0;                                          \
        float s = 0.0f;                                      \
        VECTOR_STEPS(LOAD8, WIDEN_FN)                        \
        for (; k < K; k++) s += WIDEN_FN(w[k]) * x[k];       \
        return s;                                            \
    }

DEFINE_DOT(dot_f32, float, load8_f32, widen_f32)
DEFINE_DOT(dot_bf16, uint16_t, load8_bf16, bf16_to_f32)
DEFINE_DOT(dot_i8, int8_t, load8_i8, widen_i8)

static inline float dot(const void *W, int wtype, long n, const float *x, long K) {
    switch (wtype) {
    case GPTKIT_BF16: return dot_bf16((const uint16_t *)W + n * K, x, K);
    case GPTKIT_I8: return dot_i8((const int8_t *)W + n * K, x, K);
    default: return dot_f32((const float *)W + n * K, x, K);
    }
}

static inline float load_io(const void *p, int io, long i) {
    return io == GPTKIT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void store_io(void *p, int io, long i, float value) {
    if (io == GPTKIT_BF16)
        ((uint16_t *)p)[i] = f32_to_bf16(value);
    else
        ((float *)p)[i] = value;
}

/* Returns 0, or -1 when a temporary could not be allocated (nothing was written to y then). */
int gptkit_gemv(const void *W, int wtype, const float *scale, const void *x, const void *bias, void *y, int io,
                long M, long N, long K, int threads) {
    const float *xf = (const float *)x;
    float *widened = NULL;
    if (io == GPTKIT_BF16) {
        widened = (float *)malloc((size_t)(M * K) * sizeof(float));
        if (widened == NULL) return -1;
        for (long i = 0; i < M * K; i++) widened[i] = bf16_to_f32(((const uint16_t *)x)[i]);
        xf = widened;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        for (long m = 0; m < M; m++) {
            float s = dot(W, wtype, n, xf + m * K, K);
            if (scale != NULL) s *= scale[n];
            if (bias != NULL) s += load_io(bias, io, n);
            store_io(y, io, m * N + n, s);
        }
    }
    free(widened);
    return 0;
}

/* One decode step's attention: for each row b and head h, the query q[b, h] (D,) against the S cached keys and
 * values k[b, h, s], v[b, h, s] (D,), slots where mask[b, s] is 0 left out: softmax(q.k * scale) @ v, in float32,
 * into out (B, H, D) contiguous. q, k, v are strided (their last dimension contiguous); the mask is bytes (bool),
 * contiguous over s, with row stride mask_b (0 when every row shares one). A row that sees no slot gets NaN, as
 * torch's softmax over nothing but -inf gives. Returns 0, or -1 when its float32 workspace could not be allocated.
 */
int gptkit_attend(const void *q, const void *k, const void *v, const uint8_t *mask, void *out, int io, long B,
                  long H, long S, long D, long q_b, long q_h, long k_b, long k_h, long k_s, long v_b, long v_h,
                  long v_s, long mask_b, float scale, int threads) {
    float *work = (float *)malloc((size_t)(B * H * (S + 2 * D)) * sizeof(float));
    if (work == NULL) return -1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long bh = 0; bh < B * H; bh++) {
        long b = bh / H, h = bh % H;
        float *p = work + bh * (S + 2 * D), *qf = p + S, *acc = qf + D;
        const uint8_t *seen = mask + b * mask_b;
        for (long d = 0; d < D; d++) qf[d] = load_io(q, io, b * q_b + h * q_h + d);
        float top = -__builtin_inff();
        for (long s = 0; s < S; s++) {
            float score = -__builtin_inff();
            if (seen[s]) {
                long at = b * k_b + h * k_h + s * k_s;
                score = (io == GPTKIT_BF16 ? dot_bf16((const uint16_t *)k + at, qf, D)
                                           : dot_f32((const float *)k + at, qf, D)) * scale;
            }
            p[s] = score;
            if (score > top) top = score;
        }
        float total = 0.0f;
        for (long s = 0; s < S; s++) total += (p[s] = expf(p[s] - top));
        for (long d = 0; d < D; d++) acc[d] = 0.0f;
        for (long s = 0; s < S; s++) {
            if (p[s] == 0.0f) continue;
            long at = b * v_b + h * v_h + s * v_s;
            if (io == GPTKIT_BF16) {
                const uint16_t *row = (const uint16_t *)v + at;
                for (long d = 0; d < D; d++) acc[d] += p[s] * bf16_to_f32(row[d]);
            } else {
                const float *row = (const float *)v + at;
                for (long d = 0; d < D; d++) acc[d] += p[s] * row[d];
            }
        }
        for (long d = 0; d < D; d++) store_io(out, io, bh * D + d, acc[d] / total);
    }
    free(work);
    return 0;
}
