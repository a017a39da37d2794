/* The dense layers above the first, in C, for the fused epoch (_train.c): forward, backward, the loss,
 * the activations and the SGD updates, each with an AVX2+FMA version and a portable one.
 *
 * Which runs follows digitlab_kernels_simd_on() (_kernels.c): AVX2 where the CPU has it and
 * DIGITLAB_KERNEL_SCALAR does not forbid it. Within a version every sum runs in one fixed order,
 * whatever rows or units a thread is given, so any number of threads gives the same bits:
 *
 *   forward:  out[r, u]  = sum over i ascending of a[r, i] * kernel[i, u], then + bias[u];
 *   backward: below[r, i] = sum over u ascending of g[r, u] * kernel[i, u];
 *   update:   kernel[i, u] -= rate * (sum over rows r ascending of a[r, i] * g[r, u]);
 *             bias[u] -= rate * (sum over rows r ascending of g[r, u]).
 *
 * The AVX2 versions fuse each multiply-add (FMA) and the portable ones round the product first;
 * so the two versions differ in the last bits, and each is tested against Keras fit. The AVX2
 * versions keep a block of outputs in registers across the whole sum: four rows by sixteen units
 * forward, sixty-four inputs backward and in the update (the kernel's transpose, `kernel_t`, keeps the
 * backward pass's reads contiguous; the update writes both).
 *
 * The portable versions are also the WebAssembly build's, where SIMD128 versions of the hot kernels (no FMA:
 * each lane does the portable version's operations in its order) give the same bits. exp, tanh and log are
 * this file's own (exp_portable, tanh_portable, log_portable: Cephes's formulas in float, within 2 ulp):
 * the C libraries' expf and tanhf differ in the last bit on some inputs, so the native portable path and the
 * browser's engine compute them with this one source to train to the same bits.
 *
 * Activations: 0 linear, 1 sigmoid, 2 relu, 3 tanh, 4 softmax. Losses: 0 mean squared error,
 * 1 categorical cross-entropy.
 *
 * It runs past 450 lines as one concern, the dense layers' arithmetic: each kernel in its portable, AVX2 and
 * SIMD128 versions side by side (they must keep each other's order of sums), and the exp, tanh and log they share.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_engine.h" /* The codes, and digitlab_kernels_simd_on() of _kernels.c. */

#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#define HAVE_SIMD128 1
#endif

/* ------------------------------------------------------------------------------ exp, tanh and log */

/* 2^n for a whole n in -126 ... 128 (128 gives infinity), from its bits. */
static inline float power_of_two(float n) {
    union {
        int32_t bits;
        float value;
    } scale = {((int32_t)n + 127) * (1 << 23)};
    return scale.value;
}

/* exp(x), Cephes's expf as exp_avx2 computes it but with each product rounded: x = n ln2 + r, |r| <= ln2 / 2
 * (ln2 in two parts, so n ln2 is exact), exp(r) by its degree-7 polynomial, times 2^n. */
static inline float exp_portable(float x) {
    x = x < -87.3365448f ? -87.3365448f : (x > 88.3762626f ? 88.3762626f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    x -= n * 0.693359375f;
    x -= n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * (x * x) + (x + 1.0f);
    return y * power_of_two(n);
}

/* tanh(x), Cephes's tanhf: an odd polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1) above, +-1 past 44. */
static inline float tanh_portable(float x) {
    const float z = x < 0.0f ? -x : x;
    if (z >= 0.625f) {
        const float t = z > 44.0f ? 1.0f : 1.0f - 2.0f / (exp_portable(z + z) + 1.0f);
        return x < 0.0f ? -t : t;
    }
    if (x == 0.0f) return x;
    const float s = x * x;
    float p = -5.70498872745e-3f;
    p = p * s + 2.06390887954e-2f;
    p = p * s - 5.37397155531e-2f;
    p = p * s + 1.33314422036e-1f;
    p = p * s - 3.33332819422e-1f;
    return p * s * x + x;
}

/* log(x) for x > 0 (the loss's clipped probabilities), Cephes's logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log(m) by its polynomial in m - 1, plus e ln2 (in two parts). Not for zero, negatives, infinities or NaN. */
static inline float log_portable(float x) {
    union {
        float value;
        int32_t bits;
    } parts = {x};
    int32_t e = ((parts.bits >> 23) & 0xff) - 126; /* x = m 2^e with m in [0.5, 1). */
    parts.bits = (parts.bits & 0x807fffff) | 0x3f000000;
    float m = parts.value;
    if (m < 0.707106781186547524f) {
        e -= 1;
        m = m + m - 1.0f;
    } else {
        m = m - 1.0f;
    }
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    const float fe = (float)e;
    y += fe * -2.12194440e-4f;
    y += -0.5f * z;
    float result = m + y;
    result += fe * 0.693359375f;
    return result;
}

/* Asks for the target and label of row r + 8 to be brought into cache while row r's loss is computed: the
 * images of a batch lie at random places, and a burst of prefetches for the whole batch measured no gain. */
static inline void prefetch_targets(const float *targets, const int64_t *labels, const int64_t *index, int64_t r,
                                    int64_t rows, int64_t classes) {
#ifdef __GNUC__
    if (r + 8 >= rows) return;
    const int64_t image = index[r + 8];
    __builtin_prefetch(targets + image * classes);
    __builtin_prefetch(targets + image * classes + classes - 1);
    __builtin_prefetch(labels + image);
#else
    (void)targets, (void)labels, (void)index, (void)r, (void)rows, (void)classes;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1

#define AVX2 __attribute__((target("avx2,fma")))

/* The lanes below `count` (0 ... 8) set. */
AVX2 static inline __m256i lanes_below(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Stores the first `count` (0 ... 8) lanes of v at dst: a whole store where all lanes go, else halves, pairs
 * and single lanes. Masked stores (vmaskmovps) are microcoded on AMD's Zen 2 and 3, and a copy through a
 * buffer became a `rep movs`: both measured slower. */
AVX2 static inline void store_lanes(float *dst, __m256 v, int64_t count) {
    if (count >= 8) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    __m128 part = _mm256_castps256_ps128(v);
    if (count >= 4) {
        _mm_storeu_ps(dst, part);
        dst += 4, count -= 4, part = _mm256_extractf128_ps(v, 1);
    }
    if (count >= 2) {
        _mm_storel_pi((__m64 *)dst, part);
        dst += 2, count -= 2, part = _mm_movehl_ps(part, part);
    }
    if (count >= 1) _mm_store_ss(dst, part);
}

/* The sum of a vector's lanes, always in the same order. */
AVX2 static inline float lane_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

AVX2 static inline float lane_max(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* exp(x) for eight floats, Cephes's expf (within 2 ulp of the exact value): x = n ln2 + r, |r| <= ln2 / 2,
 * exp(r) by its degree-7 polynomial, times 2^n. */
AVX2 static inline __m256 exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365448f)), _mm256_set1_ps(88.3762626f));
    const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(scale));
}

/* ------------------------------------------------------------------------------ AVX2 + FMA */

/* Four rows by sixteen units (units u0 ... u0 + width - 1, width <= 16) in eight accumulators. */
AVX2 static void forward_block_avx2(const float *a, int64_t rows, int64_t inputs, const float *kernel,
                                    const float *bias, int64_t units, int64_t u0, int64_t width, float *out) {
    const int64_t first = width < 8 ? width : 8, second = width > 8 ? width - 8 : 0;
    const __m256i low = lanes_below(first), high = lanes_below(second);
    const int whole = width == 16;
    const __m256 b0 = _mm256_maskload_ps(bias + u0, low), b1 = _mm256_maskload_ps(bias + u0 + 8, high);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *x = a + r * inputs;
        __m256 p0 = _mm256_setzero_ps(), p1 = p0, q0 = p0, q1 = p0, s0 = p0, s1 = p0, t0 = p0, t1 = p0;
        for (int64_t i = 0; i < inputs; i++) {
            const float *k = kernel + i * units + u0;
            const __m256 k0 = whole ? _mm256_loadu_ps(k) : _mm256_maskload_ps(k, low);
            const __m256 k1 = whole ? _mm256_loadu_ps(k + 8) : _mm256_maskload_ps(k + 8, high);
            __m256 v = _mm256_broadcast_ss(x + i);
            p0 = _mm256_fmadd_ps(v, k0, p0), p1 = _mm256_fmadd_ps(v, k1, p1);
            v = _mm256_broadcast_ss(x + inputs + i);
            q0 = _mm256_fmadd_ps(v, k0, q0), q1 = _mm256_fmadd_ps(v, k1, q1);
            v = _mm256_broadcast_ss(x + 2 * inputs + i);
            s0 = _mm256_fmadd_ps(v, k0, s0), s1 = _mm256_fmadd_ps(v, k1, s1);
            v = _mm256_broadcast_ss(x + 3 * inputs + i);
            t0 = _mm256_fmadd_ps(v, k0, t0), t1 = _mm256_fmadd_ps(v, k1, t1);
        }
        float *o = out + r * units + u0;
        store_lanes(o, _mm256_add_ps(p0, b0), first), store_lanes(o + 8, _mm256_add_ps(p1, b1), second);
        o += units;
        store_lanes(o, _mm256_add_ps(q0, b0), first), store_lanes(o + 8, _mm256_add_ps(q1, b1), second);
        o += units;
        store_lanes(o, _mm256_add_ps(s0, b0), first), store_lanes(o + 8, _mm256_add_ps(s1, b1), second);
        o += units;
        store_lanes(o, _mm256_add_ps(t0, b0), first), store_lanes(o + 8, _mm256_add_ps(t1, b1), second);
    }
    for (; r < rows; r++) {
        const float *x = a + r * inputs;
        __m256 p0 = _mm256_setzero_ps(), p1 = p0;
        for (int64_t i = 0; i < inputs; i++) {
            const float *k = kernel + i * units + u0;
            const __m256 v = _mm256_broadcast_ss(x + i);
            p0 = _mm256_fmadd_ps(v, _mm256_maskload_ps(k, low), p0);
            p1 = _mm256_fmadd_ps(v, _mm256_maskload_ps(k + 8, high), p1);
        }
        float *o = out + r * units + u0;
        store_lanes(o, _mm256_add_ps(p0, b0), first), store_lanes(o + 8, _mm256_add_ps(p1, b1), second);
    }
}

AVX2 static void forward_avx2(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                              int64_t units, float *out) {
    for (int64_t u0 = 0; u0 < units; u0 += 16)
        forward_block_avx2(a, rows, inputs, kernel, bias, units, u0, units - u0 < 16 ? units - u0 : 16, out);
}

/* One row's `width` (<= 64) outputs from i0 on, in eight accumulators: out[i] = sum over k < count of
 * scale[k * scale_stride] * source[k * source_stride + i] (the FMAs in k order). `subtract`: out -= rate * sum. */
AVX2 static inline void sum_rows_avx2(const float *scale, int64_t scale_stride, const float *source,
                                      int64_t source_stride, int64_t count, int64_t width, float *out, int subtract,
                                      float rate) {
    __m256i mask[8];
    for (int c = 0; c < 8; c++) mask[c] = lanes_below(width - 8 * c < 0 ? 0 : (width - 8 * c > 8 ? 8 : width - 8 * c));
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    if (width == 64) {
        for (int64_t k = 0; k < count; k++) {
            const __m256 v = _mm256_broadcast_ss(scale + k * scale_stride);
            const float *s = source + k * source_stride;
            a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s), a0), a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 8), a1);
            a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 16), a2), a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 24), a3);
            a4 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 32), a4), a5 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 40), a5);
            a6 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 48), a6), a7 = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 56), a7);
        }
    } else {
        for (int64_t k = 0; k < count; k++) {
            const __m256 v = _mm256_broadcast_ss(scale + k * scale_stride);
            const float *s = source + k * source_stride;
            a0 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s, mask[0]), a0);
            a1 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 8, mask[1]), a1);
            a2 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 16, mask[2]), a2);
            a3 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 24, mask[3]), a3);
            a4 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 32, mask[4]), a4);
            a5 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 40, mask[5]), a5);
            a6 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 48, mask[6]), a6);
            a7 = _mm256_fmadd_ps(v, _mm256_maskload_ps(s + 56, mask[7]), a7);
        }
    }
    const __m256 sums[8] = {a0, a1, a2, a3, a4, a5, a6, a7}, step = _mm256_set1_ps(rate);
    for (int c = 0; c < 8 && 8 * c < width; c++) {
        __m256 value = sums[c];
        if (subtract) value = _mm256_sub_ps(_mm256_maskload_ps(out + 8 * c, mask[c]), _mm256_mul_ps(value, step));
        store_lanes(out + 8 * c, value, width - 8 * c);
    }
}

AVX2 static void backward_avx2(const float *g, int64_t rows, int64_t units, const float *kernel_t, int64_t inputs,
                               float *below) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i0 = 0; i0 < inputs; i0 += 64)
            sum_rows_avx2(g + r * units, 1, kernel_t + i0, inputs, units, inputs - i0 < 64 ? inputs - i0 : 64,
                          below + r * inputs + i0, 0, 0.0f);
}

AVX2 static void sgd_units_avx2(const float *a, const float *g, int64_t rows, int64_t inputs, int64_t units,
                                int64_t u0, int64_t u1, float *kernel, float *kernel_t, float rate) {
    for (int64_t u = u0; u < u1; u++) {
        float *row = kernel_t + u * inputs;
        for (int64_t i0 = 0; i0 < inputs; i0 += 64)
            sum_rows_avx2(g + u, units, a + i0, inputs, rows, inputs - i0 < 64 ? inputs - i0 : 64, row + i0, 1, rate);
        for (int64_t i = 0; i < inputs; i++) kernel[i * units + u] = row[i];
    }
}

AVX2 static void sgd_bias_avx2(const float *g, int64_t rows, int64_t units, int64_t u0, int64_t u1, float *bias,
                               float rate) {
    for (int64_t u = u0; u < u1; u += 8) {
        const __m256i mask = lanes_below(u1 - u < 8 ? u1 - u : 8);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t r = 0; r < rows; r++) sum = _mm256_add_ps(sum, _mm256_maskload_ps(g + r * units + u, mask));
        const __m256 step = _mm256_mul_ps(sum, _mm256_set1_ps(rate));
        store_lanes(bias + u, _mm256_sub_ps(_mm256_maskload_ps(bias + u, mask), step), u1 - u);
    }
}

/* values = 1 / (1 + exp(-values)), eight at a time, the last few in a part of a vector: every value with
 * exp_avx2, wherever it lies in `values` (exp_portable rounds each product, so a scalar tail would give a value
 * other bits at the end of a thread's rows than in their middle: the threads' cuts would change the results).
 * Returns size. */
AVX2 static int64_t sigmoid_avx2(float *values, int64_t size) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= size; k += 8) {
        const __m256 e = exp_avx2(_mm256_sub_ps(zero, _mm256_loadu_ps(values + k)));
        _mm256_storeu_ps(values + k, _mm256_div_ps(one, _mm256_add_ps(e, one)));
    }
    if (k < size) {
        const __m256 e = exp_avx2(_mm256_sub_ps(zero, _mm256_maskload_ps(values + k, lanes_below(size - k))));
        store_lanes(values + k, _mm256_div_ps(one, _mm256_add_ps(e, one)), size - k);
    }
    return size;
}

AVX2 static void softmax_avx2(float *values, int64_t rows, int64_t units) {
    const __m256 lowest = _mm256_set1_ps(-INFINITY);
    for (int64_t r = 0; r < rows; r++) {
        float *row = values + r * units;
        __m256 top = lowest;
        for (int64_t u = 0; u < units; u += 8) {
            const __m256i mask = lanes_below(units - u < 8 ? units - u : 8);
            top = _mm256_max_ps(top, _mm256_blendv_ps(lowest, _mm256_maskload_ps(row + u, mask),
                                                      _mm256_castsi256_ps(mask)));
        }
        const __m256 most = _mm256_set1_ps(lane_max(top));
        __m256 sum = _mm256_setzero_ps();
        for (int64_t u = 0; u < units; u += 8) {
            const __m256i mask = lanes_below(units - u < 8 ? units - u : 8);
            const __m256 e = _mm256_and_ps(exp_avx2(_mm256_sub_ps(_mm256_maskload_ps(row + u, mask), most)),
                                           _mm256_castsi256_ps(mask));
            store_lanes(row + u, e, units - u);
            sum = _mm256_add_ps(sum, e);
        }
        const __m256 total = _mm256_set1_ps(lane_sum(sum));
        for (int64_t u = 0; u < units; u += 8) {
            const __m256i mask = lanes_below(units - u < 8 ? units - u : 8);
            store_lanes(row + u, _mm256_div_ps(_mm256_maskload_ps(row + u, mask), total), units - u);
        }
    }
}

/* The loss of rows whose last layer is a softmax over at most 16 classes with mean squared error (the book's
 * net): each row's classes in two vectors. The argmax is the first largest, as in the portable loop; each row's
 * loss is summed in double, lane pairs first. Returns how many rows it did (all, or none where it does not apply). */
AVX2 static int64_t mse_softmax_avx2(const float *outputs, const float *targets, const int64_t *labels,
                                     const int64_t *index, int64_t rows, int64_t batch_rows, int64_t classes,
                                     float *gradient, int64_t *correct, double *row_losses) {
    if (classes > 16 || classes < 1) return 0;
    const __m256i low = lanes_below(classes < 8 ? classes : 8), high = lanes_below(classes > 8 ? classes - 8 : 0);
    const __m256 scale = _mm256_set1_ps(2.0f / (float)classes / (float)batch_rows), lowest = _mm256_set1_ps(-INFINITY);
    int64_t right = 0;
    for (int64_t r = 0; r < rows; r++) {
        prefetch_targets(targets, labels, index, r, rows, classes);
        const float *p = outputs + r * classes, *t = targets + index[r] * classes;
        const __m256 p0 = _mm256_maskload_ps(p, low), p1 = _mm256_maskload_ps(p + 8, high);
        /* The answer: the first class holding the largest output. */
        const __m256 q0 = _mm256_blendv_ps(lowest, p0, _mm256_castsi256_ps(low));
        const __m256 q1 = _mm256_blendv_ps(lowest, p1, _mm256_castsi256_ps(high));
        const __m256 top = _mm256_set1_ps(lane_max(_mm256_max_ps(q0, q1)));
        const unsigned hits = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(q0, top, _CMP_EQ_OQ)) |
                              (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(q1, top, _CMP_EQ_OQ)) << 8;
        right += hits && (int64_t)__builtin_ctz(hits) == labels[index[r]];
        /* The error, its square summed in double, and the gradient of the mean. */
        const __m256 e0 = _mm256_sub_ps(p0, _mm256_maskload_ps(t, low));
        const __m256 e1 = _mm256_sub_ps(p1, _mm256_maskload_ps(t + 8, high));
        const __m256 s0 = _mm256_mul_ps(e0, e0), s1 = _mm256_mul_ps(e1, e1);
        __m256d sum = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(s0)),
                                    _mm256_cvtps_pd(_mm256_extractf128_ps(s0, 1)));
        sum = _mm256_add_pd(sum, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(s1)),
                                               _mm256_cvtps_pd(_mm256_extractf128_ps(s1, 1))));
        __m128d half = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd(sum, 1));
        half = _mm_add_sd(half, _mm_unpackhi_pd(half, half));
        row_losses[r] = _mm_cvtsd_f64(half) / (double)classes;
        __m256 g0 = _mm256_mul_ps(e0, scale), g1 = _mm256_mul_ps(e1, scale);
        /* Through the softmax: g = (g - sum(p * g)) * p. */
        const __m256 dot = _mm256_set1_ps(lane_sum(_mm256_add_ps(_mm256_mul_ps(p0, g0), _mm256_mul_ps(p1, g1))));
        g0 = _mm256_mul_ps(_mm256_sub_ps(g0, dot), p0), g1 = _mm256_mul_ps(_mm256_sub_ps(g1, dot), p1);
        float *g = gradient + r * classes;
        store_lanes(g, g0, classes), store_lanes(g + 8, g1, classes - 8);
    }
    *correct += right;
    return rows;
}

AVX2 static void sigmoid_gradient_avx2(float *gradient, const float *output, int64_t size) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t k = 0;
    for (; k + 8 <= size; k += 8) {
        const __m256 o = _mm256_loadu_ps(output + k);
        _mm256_storeu_ps(gradient + k, _mm256_mul_ps(_mm256_loadu_ps(gradient + k), _mm256_mul_ps(_mm256_sub_ps(one, o), o)));
    }
    for (; k < size; k++) gradient[k] *= (1.0f - output[k]) * output[k];
}
#endif

/* ------------------------------------------------------------------------------ SIMD128 (WebAssembly) */

#ifdef HAVE_SIMD128
/* Each lane does the portable version's operations in its order (no FMA: a multiply, then an add), so these
 * give the portable versions' bits; they keep a block of outputs in registers across each sum. */

/* sum + a * b, the product rounded before the add (as the portable code computes it; not an FMA). */
static inline v128_t add_product(v128_t sum, v128_t a, v128_t b) { return wasm_f32x4_add(sum, wasm_f32x4_mul(a, b)); }

/* The first `count` (1-4) floats at p in a vector's first lanes, zeros in the others (no read past them). */
static inline v128_t load_lanes(const float *p, int64_t count) {
    if (count >= 4) return wasm_v128_load(p);
    if (count == 3) return wasm_f32x4_replace_lane(wasm_v128_load64_zero(p), 2, p[2]);
    return count == 2 ? wasm_v128_load64_zero(p) : wasm_v128_load32_zero(p);
}

/* Stores the first `count` (1-4) lanes of v at p. */
static inline void store_lanes_simd128(float *p, v128_t v, int64_t count) {
    if (count >= 4) return wasm_v128_store(p, v);
    if (count >= 2) wasm_v128_store64_lane(p, v, 0);
    else wasm_v128_store32_lane(p, v, 0);
    if (count == 3) p[2] = wasm_f32x4_extract_lane(v, 2);
}

/* forward_simd128 for fewer than sixteen units (the softmax layer's ten): every unit in one of four vectors,
 * the last one's lanes past `units` zero, two rows at a time, so that their sums run side by side (one sum
 * after another, each a chain of dependent adds, was 5x slower than the AVX2 path). Each lane adds its
 * products in the portable order. */
static void forward_narrow_simd128(const float *a, int64_t rows, int64_t inputs, const float *kernel,
                                   const float *bias, int64_t units, float *out) {
    const int64_t blocks = (units + 3) / 4;
    for (int64_t r = 0; r < rows; r += 2) {
        const float *x0 = a + r * inputs, *x1 = r + 1 < rows ? x0 + inputs : x0;
        v128_t acc0[4], acc1[4];
        for (int c = 0; c < 4; c++) acc0[c] = acc1[c] = wasm_f32x4_splat(0.0f);
        for (int64_t i = 0; i < inputs; i++) {
            const float *k = kernel + i * units;
            const v128_t v0 = wasm_f32x4_splat(x0[i]), v1 = wasm_f32x4_splat(x1[i]);
            for (int c = 0; c < 4; c++)
                if (c < blocks) {
                    const v128_t w = load_lanes(k + 4 * c, units - 4 * c);
                    acc0[c] = add_product(acc0[c], v0, w);
                    acc1[c] = add_product(acc1[c], v1, w);
                }
        }
        for (int c = 0; c < 4; c++)
            if (c < blocks) {
                const v128_t b = load_lanes(bias + 4 * c, units - 4 * c);
                store_lanes_simd128(out + r * units + 4 * c, wasm_f32x4_add(acc0[c], b), units - 4 * c);
                if (r + 1 < rows)
                    store_lanes_simd128(out + (r + 1) * units + 4 * c, wasm_f32x4_add(acc1[c], b), units - 4 * c);
            }
    }
}

/* out[r, :] = a[r, :] @ kernel + bias, per row: units in blocks of sixteen, then four, then one by one. */
static void forward_simd128(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                            int64_t units, float *out) {
    if (units < 16) {
        forward_narrow_simd128(a, rows, inputs, kernel, bias, units, out);
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *x = a + r * inputs;
        float *o = out + r * units;
        int64_t u0 = 0;
        for (; u0 + 16 <= units; u0 += 16) {
            v128_t acc[4];
            for (int c = 0; c < 4; c++) acc[c] = wasm_f32x4_splat(0.0f);
            for (int64_t i = 0; i < inputs; i++) {
                const v128_t v = wasm_f32x4_splat(x[i]);
                const float *k = kernel + i * units + u0;
                for (int c = 0; c < 4; c++) acc[c] = add_product(acc[c], v, wasm_v128_load(k + 4 * c));
            }
            for (int c = 0; c < 4; c++)
                wasm_v128_store(o + u0 + 4 * c, wasm_f32x4_add(acc[c], wasm_v128_load(bias + u0 + 4 * c)));
        }
        for (; u0 + 4 <= units; u0 += 4) {
            v128_t acc = wasm_f32x4_splat(0.0f);
            for (int64_t i = 0; i < inputs; i++)
                acc = add_product(acc, wasm_f32x4_splat(x[i]), wasm_v128_load(kernel + i * units + u0));
            wasm_v128_store(o + u0, wasm_f32x4_add(acc, wasm_v128_load(bias + u0)));
        }
        for (int64_t u = u0; u < units; u++) {
            float sum = 0.0f;
            for (int64_t i = 0; i < inputs; i++) sum += x[i] * kernel[i * units + u];
            o[u] = sum + bias[u];
        }
    }
}

/* out[i] for i < width: the sum over k < count of scale[k * scale_stride] * source[k * source_stride + i], in
 * k order; `subtract`: out[i] -= rate * that sum instead. Thirty-two outputs at a time in eight vectors (sixteen,
 * for 64, spilled in V8: the backward pass and the updates were 1.3-1.5x slower). */
static void sum_rows_simd128(const float *scale, int64_t scale_stride, const float *source, int64_t source_stride,
                             int64_t count, int64_t width, float *out, int subtract, float rate) {
    const v128_t step = wasm_f32x4_splat(rate);
    int64_t i0 = 0;
    for (; i0 + 32 <= width; i0 += 32) {
        v128_t acc[8];
        for (int c = 0; c < 8; c++) acc[c] = wasm_f32x4_splat(0.0f);
        for (int64_t k = 0; k < count; k++) {
            const v128_t v = wasm_f32x4_splat(scale[k * scale_stride]);
            const float *s = source + k * source_stride + i0;
            for (int c = 0; c < 8; c++) acc[c] = add_product(acc[c], v, wasm_v128_load(s + 4 * c));
        }
        for (int c = 0; c < 8; c++) {
            v128_t value = acc[c];
            if (subtract) value = wasm_f32x4_sub(wasm_v128_load(out + i0 + 4 * c), wasm_f32x4_mul(value, step));
            wasm_v128_store(out + i0 + 4 * c, value);
        }
    }
    for (; i0 + 4 <= width; i0 += 4) {
        v128_t acc = wasm_f32x4_splat(0.0f);
        for (int64_t k = 0; k < count; k++)
            acc = add_product(acc, wasm_f32x4_splat(scale[k * scale_stride]),
                              wasm_v128_load(source + k * source_stride + i0));
        if (subtract) acc = wasm_f32x4_sub(wasm_v128_load(out + i0), wasm_f32x4_mul(acc, step));
        wasm_v128_store(out + i0, acc);
    }
    for (int64_t i = i0; i < width; i++) {
        float sum = 0.0f;
        for (int64_t k = 0; k < count; k++) sum += scale[k * scale_stride] * source[k * source_stride + i];
        if (subtract) {
            const float update = sum * rate;
            out[i] -= update;
        } else {
            out[i] = sum;
        }
    }
}

static void backward_simd128(const float *g, int64_t rows, int64_t units, const float *kernel_t, int64_t inputs,
                             float *below) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i0 = 0; i0 < inputs; i0 += 64)
            sum_rows_simd128(g + r * units, 1, kernel_t + i0, inputs, units, inputs - i0 < 64 ? inputs - i0 : 64,
                             below + r * inputs + i0, 0, 0.0f);
}

static void sgd_units_simd128(const float *a, const float *g, int64_t rows, int64_t inputs, int64_t units,
                              int64_t u0, int64_t u1, float *kernel, float *kernel_t, float rate) {
    for (int64_t u = u0; u < u1; u++) {
        float *row = kernel_t + u * inputs;
        for (int64_t i0 = 0; i0 < inputs; i0 += 64)
            sum_rows_simd128(g + u, units, a + i0, inputs, rows, inputs - i0 < 64 ? inputs - i0 : 64, row + i0, 1,
                             rate);
        for (int64_t i = 0; i < inputs; i++) kernel[i * units + u] = row[i];
    }
}

static void sgd_bias_simd128(const float *g, int64_t rows, int64_t units, int64_t u0, int64_t u1, float *bias,
                             float rate) {
    const v128_t step = wasm_f32x4_splat(rate);
    int64_t u = u0;
    for (; u + 4 <= u1; u += 4) {
        v128_t sum = wasm_f32x4_splat(0.0f);
        for (int64_t r = 0; r < rows; r++) sum = wasm_f32x4_add(sum, wasm_v128_load(g + r * units + u));
        wasm_v128_store(bias + u, wasm_f32x4_sub(wasm_v128_load(bias + u), wasm_f32x4_mul(sum, step)));
    }
    for (; u < u1; u++) {
        float sum = 0.0f;
        for (int64_t r = 0; r < rows; r++) sum += g[r * units + u];
        const float update = sum * rate;
        bias[u] -= update;
    }
}

/* exp_portable on four lanes, operation for operation. */
static inline v128_t exp_simd128(v128_t x) {
    const v128_t low = wasm_f32x4_splat(-87.3365448f), high = wasm_f32x4_splat(88.3762626f);
    x = wasm_v128_bitselect(low, x, wasm_f32x4_lt(x, low));
    x = wasm_v128_bitselect(high, x, wasm_f32x4_gt(x, high));
    const v128_t n = wasm_f32x4_floor(add_product(wasm_f32x4_splat(0.5f), x, wasm_f32x4_splat(1.44269504088896341f)));
    x = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f)));
    x = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(-2.12194440e-4f)));
    v128_t y = wasm_f32x4_splat(1.9875691500e-4f);
    y = add_product(wasm_f32x4_splat(1.3981999507e-3f), y, x);
    y = add_product(wasm_f32x4_splat(8.3334519073e-3f), y, x);
    y = add_product(wasm_f32x4_splat(4.1665795894e-2f), y, x);
    y = add_product(wasm_f32x4_splat(1.6666665459e-1f), y, x);
    y = add_product(wasm_f32x4_splat(5.0000001201e-1f), y, x);
    y = add_product(wasm_f32x4_add(x, wasm_f32x4_splat(1.0f)), y, wasm_f32x4_mul(x, x));
    const v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
    return wasm_f32x4_mul(y, scale);
}

/* values = 1 / (exp(-values) + 1), four at a time; returns how many it did (a multiple of 4). */
static int64_t sigmoid_simd128(float *values, int64_t size) {
    const v128_t one = wasm_f32x4_splat(1.0f);
    int64_t k = 0;
    for (; k + 4 <= size; k += 4) {
        const v128_t e = exp_simd128(wasm_f32x4_neg(wasm_v128_load(values + k)));
        wasm_v128_store(values + k, wasm_f32x4_div(one, wasm_f32x4_add(e, one)));
    }
    return k;
}

/* The softmax of each row, as the portable loop computes it: the largest value and the sum one by one in the
 * row's order, the exponentials (exp_portable's operations) and the divisions four at a time. */
static void softmax_simd128(float *values, int64_t rows, int64_t units) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = values + r * units, top = row[0], sum = 0.0f;
        for (int64_t u = 1; u < units; u++) top = row[u] > top ? row[u] : top;
        const v128_t most = wasm_f32x4_splat(top);
        int64_t u = 0;
        for (; u + 4 <= units; u += 4)
            wasm_v128_store(row + u, exp_simd128(wasm_f32x4_sub(wasm_v128_load(row + u), most)));
        for (; u < units; u++) row[u] = exp_portable(row[u] - top);
        for (u = 0; u < units; u++) sum += row[u];
        const v128_t total = wasm_f32x4_splat(sum);
        for (u = 0; u + 4 <= units; u += 4) wasm_v128_store(row + u, wasm_f32x4_div(wasm_v128_load(row + u), total));
        for (; u < units; u++) row[u] /= sum;
    }
}

static int64_t sigmoid_gradient_simd128(float *gradient, const float *output, int64_t size) {
    const v128_t one = wasm_f32x4_splat(1.0f);
    int64_t k = 0;
    for (; k + 4 <= size; k += 4) {
        const v128_t o = wasm_v128_load(output + k);
        wasm_v128_store(gradient + k,
                        wasm_f32x4_mul(wasm_v128_load(gradient + k), wasm_f32x4_mul(wasm_f32x4_sub(one, o), o)));
    }
    return k;
}
#endif

/* ------------------------------------------------------------------------------ the portable versions */

static void forward_portable(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                             int64_t units, float *out) {
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * units;
        memset(o, 0, sizeof(float) * units);
        for (int64_t i = 0; i < inputs; i++) {
            const float x = a[r * inputs + i], *k = kernel + i * units;
            for (int64_t u = 0; u < units; u++) o[u] += x * k[u];
        }
        for (int64_t u = 0; u < units; u++) o[u] += bias[u];
    }
}

static void backward_portable(const float *g, int64_t rows, int64_t units, const float *kernel_t, int64_t inputs,
                              float *below) {
    for (int64_t r = 0; r < rows; r++) {
        float *b = below + r * inputs;
        memset(b, 0, sizeof(float) * inputs);
        for (int64_t u = 0; u < units; u++) {
            const float value = g[r * units + u], *w = kernel_t + u * inputs;
            for (int64_t i = 0; i < inputs; i++) b[i] += value * w[i];
        }
    }
}

/* `scratch` holds `inputs` floats. */
static void sgd_units_portable(const float *a, const float *g, int64_t rows, int64_t inputs, int64_t units,
                               int64_t u0, int64_t u1, float *kernel, float *kernel_t, float rate, float *scratch) {
    for (int64_t u = u0; u < u1; u++) {
        memset(scratch, 0, sizeof(float) * inputs);
        for (int64_t r = 0; r < rows; r++) {
            const float value = g[r * units + u], *x = a + r * inputs;
            for (int64_t i = 0; i < inputs; i++) scratch[i] += x[i] * value;
        }
        float *row = kernel_t + u * inputs;
        for (int64_t i = 0; i < inputs; i++) {
            const float step = scratch[i] * rate;
            row[i] -= step;
            kernel[i * units + u] = row[i];
        }
    }
}

static void sgd_bias_portable(const float *g, int64_t rows, int64_t units, int64_t u0, int64_t u1, float *bias,
                              float rate) {
    for (int64_t u = u0; u < u1; u++) {
        float sum = 0.0f;
        for (int64_t r = 0; r < rows; r++) sum += g[r * units + u];
        const float step = sum * rate;
        bias[u] -= step;
    }
}

/* ------------------------------------------------------------------------------ the entry points */

/* out[r, :] = a[r, :] @ kernel + bias for `rows` rows; kernel is inputs x units, row-major. */
void digitlab_dense_forward(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                            int64_t units, float *out) {
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) {
        forward_avx2(a, rows, inputs, kernel, bias, units, out);
        return;
    }
#elif defined(HAVE_SIMD128)
    if (digitlab_kernels_simd_on()) {
        forward_simd128(a, rows, inputs, kernel, bias, units, out);
        return;
    }
#endif
    forward_portable(a, rows, inputs, kernel, bias, units, out);
}

/* below[r, :] = g[r, :] @ kernel.T, through kernel_t (units x inputs, the kernel's transpose). */
void digitlab_dense_backward(const float *g, int64_t rows, int64_t units, const float *kernel_t, int64_t inputs,
                             float *below) {
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) {
        backward_avx2(g, rows, units, kernel_t, inputs, below);
        return;
    }
#elif defined(HAVE_SIMD128)
    if (digitlab_kernels_simd_on()) {
        backward_simd128(g, rows, units, kernel_t, inputs, below);
        return;
    }
#endif
    backward_portable(g, rows, units, kernel_t, inputs, below);
}

/* Plain SGD on units u0 <= u < u1 of a dense layer (kernel inputs x units, kernel_t its transpose, both
 * updated): kernel[:, u] -= rate * (a.T @ g)[:, u], each sum over the rows in order. `scratch`: `inputs` floats. */
void digitlab_dense_sgd_units(const float *a, const float *g, int64_t rows, int64_t inputs, int64_t units, int64_t u0,
                              int64_t u1, float *kernel, float *kernel_t, float rate, float *scratch) {
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) {
        sgd_units_avx2(a, g, rows, inputs, units, u0, u1, kernel, kernel_t, rate);
        return;
    }
#elif defined(HAVE_SIMD128)
    if (digitlab_kernels_simd_on()) {
        sgd_units_simd128(a, g, rows, inputs, units, u0, u1, kernel, kernel_t, rate);
        return;
    }
#endif
    sgd_units_portable(a, g, rows, inputs, units, u0, u1, kernel, kernel_t, rate, scratch);
}

/* bias[u] -= rate * (sum of g[r, u] over the rows in order), for u0 <= u < u1. */
void digitlab_dense_sgd_bias(const float *g, int64_t rows, int64_t units, int64_t u0, int64_t u1, float *bias,
                             float rate) {
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) {
        sgd_bias_avx2(g, rows, units, u0, u1, bias, rate);
        return;
    }
#elif defined(HAVE_SIMD128)
    if (digitlab_kernels_simd_on()) {
        sgd_bias_simd128(g, rows, units, u0, u1, bias, rate);
        return;
    }
#endif
    sgd_bias_portable(g, rows, units, u0, u1, bias, rate);
}

void digitlab_dense_activate(float *values, int64_t rows, int64_t units, int32_t activation) {
    const int64_t size = rows * units;
#if defined(HAVE_X86) || defined(HAVE_SIMD128)
    const int simd = digitlab_kernels_simd_on();
#endif
    switch (activation) {
    case SIGMOID: {
        int64_t k = 0;
#ifdef HAVE_X86
        if (simd) k = sigmoid_avx2(values, size);
#elif defined(HAVE_SIMD128)
        if (simd) k = sigmoid_simd128(values, size);
#endif
        for (; k < size; k++) values[k] = 1.0f / (exp_portable(-values[k]) + 1.0f);
        break;
    }
    case RELU:
        for (int64_t k = 0; k < size; k++) values[k] = values[k] > 0.0f ? values[k] : 0.0f;
        break;
    case TANH:
        for (int64_t k = 0; k < size; k++) values[k] = tanh_portable(values[k]);
        break;
    case SOFTMAX:
#ifdef HAVE_X86
        if (simd) {
            softmax_avx2(values, rows, units);
            break;
        }
#elif defined(HAVE_SIMD128)
        if (simd) {
            softmax_simd128(values, rows, units);
            break;
        }
#endif
        for (int64_t r = 0; r < rows; r++) {
            float *row = values + r * units, top = row[0], sum = 0.0f;
            for (int64_t u = 1; u < units; u++) top = row[u] > top ? row[u] : top;
            for (int64_t u = 0; u < units; u++) {
                row[u] = exp_portable(row[u] - top);
                sum += row[u];
            }
            for (int64_t u = 0; u < units; u++) row[u] /= sum;
        }
        break;
    default:
        break;
    }
}

/* gradient *= the activation's derivative, written in terms of its output (not softmax: the loss does it). */
void digitlab_dense_activation_gradient(float *gradient, const float *output, int64_t size, int32_t activation) {
    switch (activation) {
    case SIGMOID: {
        int64_t k = 0;
#ifdef HAVE_X86
        if (digitlab_kernels_simd_on()) {
            sigmoid_gradient_avx2(gradient, output, size);
            break;
        }
#elif defined(HAVE_SIMD128)
        if (digitlab_kernels_simd_on()) k = sigmoid_gradient_simd128(gradient, output, size);
#endif
        for (; k < size; k++) gradient[k] *= (1.0f - output[k]) * output[k];
        break;
    }
    case RELU:
        for (int64_t k = 0; k < size; k++) gradient[k] *= output[k] > 0.0f ? 1.0f : 0.0f;
        break;
    case TANH:
        for (int64_t k = 0; k < size; k++) gradient[k] *= 1.0f - output[k] * output[k];
        break;
    default:
        break;
    }
}

/* For `rows` rows of a batch of `batch_rows`: each row's loss (float64, as Keras reports it) into
 * row_losses, the right answers added to *correct, and dLoss/d(pre-activation) of the last layer
 * (the batch's mean loss) into `gradient`. */
void digitlab_dense_loss(const float *outputs, const float *targets, const int64_t *labels, const int64_t *index,
                         int64_t rows, int64_t batch_rows, int64_t classes, int32_t loss, int32_t activation,
                         float clip, float *gradient, int64_t *correct, double *row_losses) {
#ifdef HAVE_X86
    if (loss == MEAN_SQUARED_ERROR && activation == SOFTMAX && digitlab_kernels_simd_on() &&
        mse_softmax_avx2(outputs, targets, labels, index, rows, batch_rows, classes, gradient, correct, row_losses))
        return;
#endif
    for (int64_t r = 0; r < rows; r++) {
        prefetch_targets(targets, labels, index, r, rows, classes);
        const float *p = outputs + r * classes, *t = targets + index[r] * classes;
        float *g = gradient + r * classes;
        int64_t best = 0;
        for (int64_t c = 1; c < classes; c++)
            if (p[c] > p[best]) best = c;
        *correct += best == labels[index[r]];
        double sum = 0.0;
        if (loss == MEAN_SQUARED_ERROR) {
            const float scale = 2.0f / (float)classes / (float)batch_rows;
            for (int64_t c = 0; c < classes; c++) {
                g[c] = p[c] - t[c];
                sum += (double)(g[c] * g[c]);
                g[c] *= scale;
            }
            row_losses[r] = sum / (double)classes;
        } else {
            /* Keras: normalize by the row sum, clip to [clip, 1 - clip], -sum(t log p); the clip
             * passes no gradient for entries outside the interval. */
            float row_sum = 0.0f, weighted = 0.0f;
            for (int64_t c = 0; c < classes; c++) row_sum += p[c];
            for (int64_t c = 0; c < classes; c++) {
                const float q = p[c] / row_sum;
                const float kept = q < clip ? clip : (q > 1.0f - clip ? 1.0f - clip : q);
                /* A zero target adds +-0 to the sum (log of the clipped kept is finite): no log to take. */
                if (t[c] != 0.0f) sum += (double)(log_portable(kept) * t[c]);
                g[c] = (q >= clip && q <= 1.0f - clip) ? t[c] / kept * (-1.0f / (float)batch_rows) : 0.0f;
                weighted += g[c] * p[c];
            }
            row_losses[r] = -sum;
            weighted /= row_sum;
            for (int64_t c = 0; c < classes; c++) g[c] = (g[c] - weighted) / row_sum;
        }
        if (activation == SOFTMAX) {
            float dot = 0.0f;
            for (int64_t c = 0; c < classes; c++) dot += p[c] * g[c];
            for (int64_t c = 0; c < classes; c++) g[c] = (g[c] - dot) * p[c];
        }
    }
    if (activation != SOFTMAX) digitlab_dense_activation_gradient(gradient, outputs, rows * classes, activation);
}
