/* The fast engine's sparse first layer, in C: MNIST's images are 81% zero pixels.
 *
 * Built at install time as a plain shared library (setup.py, with _train.c) and loaded with
 * ctypes by sparse.py, which releases the GIL around every call. The two products, each with an
 * AVX2+FMA version (chosen at run time, so the library runs on any x86-64) and a portable one:
 *
 *   forward:         out[r, :] = sum_j vals[j] * kernel[cols[j], :] + bias, over the nonzero
 *                    pixels j of image index[r] (CSR rows: starts, cols, vals).
 *   weight gradient: grad[p, :] = sum over the batch's images with pixel p nonzero of
 *                    value * dz[r, :], i.e. x_batch.T @ dz, through the batch's transpose
 *                    (built by a counting sort), accumulated per pixel in registers.
 *
 * The entry points: digitlab_sparse_forward (with the transpose) and
 * digitlab_sparse_weight_gradient (or the SGD update) for the NumPy backend's per-batch steps;
 * digitlab_sparse_forward_block, digitlab_sparse_transpose (of a range of the batch's rows) and
 * digitlab_sparse_sgd_rows (a range of pixels) for _train.c's threads.
 * Units are handled in blocks of 64 (eight AVX2 registers), then of 8, then one by one.
 */

#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* Asks for image `ahead` rows on to be brought into cache: the batch's images lie at random places. */
#define PREFETCH_AHEAD 2

static inline void prefetch_image(const int64_t *starts, const uint16_t *cols, const float *vals,
                                  const int64_t *index, int64_t first, int64_t r, int64_t rows) {
#ifdef __GNUC__
    if (r + PREFETCH_AHEAD >= rows) return;
    const int64_t image = index ? index[r + PREFETCH_AHEAD] : first + r + PREFETCH_AHEAD;
    for (int64_t j = starts[image]; j < starts[image + 1]; j += 16) {
        __builtin_prefetch(vals + j);
        if ((j & 31) == 0) __builtin_prefetch(cols + j);
    }
#else
    (void)starts; (void)cols; (void)vals; (void)index; (void)first; (void)r; (void)rows;
#endif
}

/* ---------------------------------------------------------------- portable scalar versions */

static void forward_scalar(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                           int64_t first, int64_t rows, const float *kernel, const float *bias, int64_t units,
                           int64_t stride, float *out) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t image = index ? index[r] : first + r;
        float *row = out + r * stride;
        prefetch_image(starts, cols, vals, index, first, r, rows);
        memset(row, 0, sizeof(float) * units);
        for (int64_t j = starts[image]; j < starts[image + 1]; j++) {
            const float value = vals[j];
            const float *weights = kernel + (int64_t)cols[j] * stride;
            for (int64_t u = 0; u < units; u++) row[u] += value * weights[u];
        }
        for (int64_t u = 0; u < units; u++) row[u] += bias[u];
    }
}

static void gradient_scalar(const int32_t *offsets, const int32_t *rows_t, const float *vals_t, int64_t inputs,
                            const float *dz, int64_t units, int64_t stride, float *grad, int accumulate) {
    for (int64_t p = 0; p < inputs; p++) {
        float *row = grad + p * stride;
        if (!accumulate) memset(row, 0, sizeof(float) * units);
        for (int32_t k = offsets[p]; k < offsets[p + 1]; k++) {
            const float value = vals_t[k];
            const float *source = dz + (int64_t)rows_t[k] * stride;
            for (int64_t u = 0; u < units; u++) row[u] += value * source[u];
        }
    }
}

/* ------------------------------------------------------------------------- AVX2 + FMA versions */

#ifdef HAVE_X86
__attribute__((target("avx2,fma")))
static void forward_avx2(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                         int64_t first, int64_t rows, const float *kernel, const float *bias, int64_t units,
                         int64_t stride, float *out) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = index ? index[r] : first + r;
        const int64_t begin = starts[image], end = starts[image + 1];
        float *row = out + r * stride;
        prefetch_image(starts, cols, vals, index, first, r, rows);
        int64_t u0 = 0;
        for (; u0 + 64 <= units; u0 += 64) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
                   a3 = _mm256_setzero_ps(), a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(),
                   a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
            for (int64_t j = begin; j < end; j++) {
                const __m256 value = _mm256_broadcast_ss(vals + j);
                const float *w = kernel + (int64_t)cols[j] * stride + u0;
                a0 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w), a0);
                a1 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 8), a1);
                a2 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 16), a2);
                a3 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 24), a3);
                a4 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 32), a4);
                a5 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 40), a5);
                a6 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 48), a6);
                a7 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 56), a7);
            }
            const float *b = bias + u0;
            float *o = row + u0;
            _mm256_storeu_ps(o, _mm256_add_ps(a0, _mm256_loadu_ps(b)));
            _mm256_storeu_ps(o + 8, _mm256_add_ps(a1, _mm256_loadu_ps(b + 8)));
            _mm256_storeu_ps(o + 16, _mm256_add_ps(a2, _mm256_loadu_ps(b + 16)));
            _mm256_storeu_ps(o + 24, _mm256_add_ps(a3, _mm256_loadu_ps(b + 24)));
            _mm256_storeu_ps(o + 32, _mm256_add_ps(a4, _mm256_loadu_ps(b + 32)));
            _mm256_storeu_ps(o + 40, _mm256_add_ps(a5, _mm256_loadu_ps(b + 40)));
            _mm256_storeu_ps(o + 48, _mm256_add_ps(a6, _mm256_loadu_ps(b + 48)));
            _mm256_storeu_ps(o + 56, _mm256_add_ps(a7, _mm256_loadu_ps(b + 56)));
        }
        for (; u0 + 8 <= units; u0 += 8) {
            __m256 a = _mm256_setzero_ps();
            for (int64_t j = begin; j < end; j++)
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(vals + j),
                                    _mm256_loadu_ps(kernel + (int64_t)cols[j] * stride + u0), a);
            _mm256_storeu_ps(row + u0, _mm256_add_ps(a, _mm256_loadu_ps(bias + u0)));
        }
        for (int64_t u = u0; u < units; u++) {
            float a = 0.0f;
            for (int64_t j = begin; j < end; j++) a += vals[j] * kernel[(int64_t)cols[j] * stride + u];
            row[u] = a + bias[u];
        }
    }
}

__attribute__((target("avx2,fma")))
static void gradient_avx2(const int32_t *offsets, const int32_t *rows_t, const float *vals_t, int64_t inputs,
                          const float *dz, int64_t units, int64_t stride, float *grad, int accumulate) {
    for (int64_t p = 0; p < inputs; p++) {
        const int32_t begin = offsets[p], end = offsets[p + 1];
        float *row = grad + p * stride;
        if (begin == end) {
            if (!accumulate) memset(row, 0, sizeof(float) * units);
            continue;
        }
        int64_t u0 = 0;
        for (; u0 + 64 <= units; u0 += 64) {
            float *o = row + u0;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
                   a3 = _mm256_setzero_ps(), a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(),
                   a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
            if (accumulate) {
                a0 = _mm256_loadu_ps(o), a1 = _mm256_loadu_ps(o + 8), a2 = _mm256_loadu_ps(o + 16);
                a3 = _mm256_loadu_ps(o + 24), a4 = _mm256_loadu_ps(o + 32), a5 = _mm256_loadu_ps(o + 40);
                a6 = _mm256_loadu_ps(o + 48), a7 = _mm256_loadu_ps(o + 56);
            }
            for (int32_t k = begin; k < end; k++) {
                const __m256 value = _mm256_broadcast_ss(vals_t + k);
                const float *s = dz + (int64_t)rows_t[k] * stride + u0;
                a0 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s), a0);
                a1 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 8), a1);
                a2 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 16), a2);
                a3 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 24), a3);
                a4 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 32), a4);
                a5 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 40), a5);
                a6 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 48), a6);
                a7 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 56), a7);
            }
            _mm256_storeu_ps(o, a0);
            _mm256_storeu_ps(o + 8, a1);
            _mm256_storeu_ps(o + 16, a2);
            _mm256_storeu_ps(o + 24, a3);
            _mm256_storeu_ps(o + 32, a4);
            _mm256_storeu_ps(o + 40, a5);
            _mm256_storeu_ps(o + 48, a6);
            _mm256_storeu_ps(o + 56, a7);
        }
        for (; u0 + 8 <= units; u0 += 8) {
            __m256 a = accumulate ? _mm256_loadu_ps(row + u0) : _mm256_setzero_ps();
            for (int32_t k = begin; k < end; k++)
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(vals_t + k),
                                    _mm256_loadu_ps(dz + (int64_t)rows_t[k] * stride + u0), a);
            _mm256_storeu_ps(row + u0, a);
        }
        for (int64_t u = u0; u < units; u++) {
            float a = accumulate ? row[u] : 0.0f;
            for (int32_t k = begin; k < end; k++) a += vals_t[k] * dz[(int64_t)rows_t[k] * stride + u];
            row[u] = a;
        }
    }
}
#endif

static int use_avx2(void) {
#ifdef HAVE_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------------------- the entry points */

/* 1 when the AVX2+FMA versions run, 0 for the portable ones; nonzero `scalar_only` disables AVX2. */
static int force_scalar = 0;

int digitlab_kernels_simd(int scalar_only) {
    force_scalar = scalar_only;
    return !force_scalar && use_avx2();
}

/* What digitlab_kernels_simd last chose, for _train.c: 1 when the AVX2+FMA versions run. */
int digitlab_kernels_simd_on(void) {
    return !force_scalar && use_avx2();
}

/* out = x[index] @ kernel + bias (index NULL: rows first ... first + rows - 1). When `offsets` is not
 * NULL it also builds the batch's transpose for digitlab_sparse_weight_gradient, by a counting sort:
 * offsets (inputs + 1 ints) and, per pixel, the batch rows where it is nonzero (rows_t) and the
 * values (vals_t), each with room for the batch's nonzeros. */
void digitlab_sparse_forward(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                             int64_t first, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                             int64_t units, float *out, int32_t *offsets, int32_t *rows_t, float *vals_t) {
    if (offsets) memset(offsets, 0, sizeof(int32_t) * (inputs + 1));
    /* In slices of 16 images: the slice's data is still in cache when the transpose reads it again. */
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        const int64_t count = rows - r0 < 16 ? rows - r0 : 16;
        const int64_t *slice = index ? index + r0 : NULL;
#ifdef HAVE_X86
        if (!force_scalar && use_avx2())
            forward_avx2(starts, cols, vals, slice, first + r0, count, kernel, bias, units, units, out + r0 * units);
        else
#endif
            forward_scalar(starts, cols, vals, slice, first + r0, count, kernel, bias, units, units, out + r0 * units);
        if (offsets) {
            for (int64_t r = r0; r < r0 + count; r++) {
                const int64_t image = index ? index[r] : first + r;
                for (int64_t j = starts[image]; j < starts[image + 1]; j++) offsets[cols[j] + 1]++;
            }
        }
    }
    if (!offsets) return;
    for (int64_t p = 0; p < inputs; p++) offsets[p + 1] += offsets[p];
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = index ? index[r] : first + r;
        for (int64_t j = starts[image]; j < starts[image + 1]; j++) {
            const int32_t at = offsets[cols[j]]++;
            rows_t[at] = (int32_t)r;
            vals_t[at] = vals[j];
        }
    }
    /* The cursors moved each pixel's start to the next pixel's: shift them back. */
    memmove(offsets + 1, offsets, sizeof(int32_t) * inputs);
    offsets[0] = 0;
}

/* The forward product for a block of `width` units only (kernel, bias and out point at the block's first
 * unit; `stride` is the full width of their rows), without the transpose: for threads that share a layer. */
void digitlab_sparse_forward_block(const int64_t *starts, const uint16_t *cols, const float *vals,
                                   const int64_t *index, int64_t rows, const float *kernel, const float *bias,
                                   int64_t width, int64_t stride, float *out) {
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        const int64_t count = rows - r0 < 16 ? rows - r0 : 16;
#ifdef HAVE_X86
        if (!force_scalar && use_avx2())
            forward_avx2(starts, cols, vals, index + r0, 0, count, kernel, bias, width, stride, out + r0 * stride);
        else
#endif
            forward_scalar(starts, cols, vals, index + r0, 0, count, kernel, bias, width, stride, out + r0 * stride);
    }
}

/* The transpose of the batch rows first_row ... last_row - 1 (see digitlab_sparse_forward), by a counting
 * sort: offsets (inputs + 1 ints) and, per pixel, the rows where it is nonzero (in row order) and the
 * values. Threads that share a batch each build the part of their rows. */
void digitlab_sparse_transpose(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                               int64_t first_row, int64_t last_row, int64_t inputs, int32_t *offsets,
                               int32_t *rows_t, float *vals_t) {
    memset(offsets, 0, sizeof(int32_t) * (inputs + 1));
    for (int64_t r = first_row; r < last_row; r++)
        for (int64_t j = starts[index[r]]; j < starts[index[r] + 1]; j++) offsets[cols[j] + 1]++;
    for (int64_t p = 0; p < inputs; p++) offsets[p + 1] += offsets[p];
    for (int64_t r = first_row; r < last_row; r++) {
        for (int64_t j = starts[index[r]]; j < starts[index[r] + 1]; j++) {
            const int32_t at = offsets[cols[j]]++;
            rows_t[at] = (int32_t)r;
            vals_t[at] = vals[j];
        }
    }
    memmove(offsets + 1, offsets, sizeof(int32_t) * inputs);
    offsets[0] = 0;
}

/* Plain SGD on the first layer's kernel rows first_pixel ... last_pixel - 1, from the transposes of
 * `parts` consecutive row ranges of the batch (in row order, so each pixel's sum runs over the batch's
 * rows in order, as with one transpose): weight -= (x_batch.T @ dz) * rate on the pixels the batch
 * touches. `scratch` holds `units` floats. */
void digitlab_sparse_sgd_rows(int32_t *const *offsets, int32_t *const *rows_t, float *const *vals_t, int64_t parts,
                              int64_t first_pixel, int64_t last_pixel, const float *dz, int64_t units,
                              float *scratch, float *weight, float rate) {
    const int simd = !force_scalar && use_avx2();
    for (int64_t p = first_pixel; p < last_pixel; p++) {
        int touched = 0;
        for (int64_t part = 0; part < parts; part++) {
            const int32_t pair[2] = {offsets[part][p], offsets[part][p + 1]};
            if (pair[0] == pair[1]) continue;
#ifdef HAVE_X86
            if (simd)
                gradient_avx2(pair, rows_t[part], vals_t[part], 1, dz, units, units, scratch, touched);
            else
#endif
                gradient_scalar(pair, rows_t[part], vals_t[part], 1, dz, units, units, scratch, touched);
            touched = 1;
        }
        if (!touched) continue;
        float *row = weight + p * units;
        for (int64_t u = 0; u < units; u++) {
            const float step = scratch[u] * rate;
            row[u] -= step;
        }
    }
    (void)simd;
}

/* grad = x_batch.T @ dz from the transpose the forward pass built. With `weight` not NULL it is
 * plain SGD instead, as Keras computes it: weight -= grad * rate, on the pixels the batch touches
 * (the others have a zero gradient, which leaves their weights as they are); grad is then scratch
 * of `units` floats. */
void digitlab_sparse_weight_gradient(const int32_t *offsets, const int32_t *rows_t, const float *vals_t,
                                     int64_t inputs, const float *dz, int64_t units, float *grad, float *weight,
                                     float rate) {
    if (!weight) {
#ifdef HAVE_X86
        if (!force_scalar && use_avx2()) {
            gradient_avx2(offsets, rows_t, vals_t, inputs, dz, units, units, grad, 0);
            return;
        }
#endif
        gradient_scalar(offsets, rows_t, vals_t, inputs, dz, units, units, grad, 0);
        return;
    }
    for (int64_t p = 0; p < inputs; p++) {
        if (offsets[p] == offsets[p + 1]) continue;
        /* One pixel's gradient row (offsets shifted so that the kernels see pixel 0 only). */
        const int32_t pair[2] = {offsets[p], offsets[p + 1]};
#ifdef HAVE_X86
        if (!force_scalar && use_avx2())
            gradient_avx2(pair, rows_t, vals_t, 1, dz, units, units, grad, 0);
        else
#endif
            gradient_scalar(pair, rows_t, vals_t, 1, dz, units, units, grad, 0);
        float *row = weight + p * units;
        for (int64_t u = 0; u < units; u++) {
            const float step = grad[u] * rate;
            row[u] -= step;
        }
    }
}

/* ------------------------------------------------------------------------ a bandwidth probe */

/* Sums a buffer of `bytes` (a multiple of 256) `repeats` times; with AVX2 in eight vector accumulators. */
#ifdef HAVE_X86
__attribute__((target("avx2"))) static float read_avx2(const float *data, int64_t count) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t k = 0; k < count; k += 64) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(data + k));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(data + k + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(data + k + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(data + k + 24));
        a4 = _mm256_add_ps(a4, _mm256_loadu_ps(data + k + 32));
        a5 = _mm256_add_ps(a5, _mm256_loadu_ps(data + k + 40));
        a6 = _mm256_add_ps(a6, _mm256_loadu_ps(data + k + 48));
        a7 = _mm256_add_ps(a7, _mm256_loadu_ps(data + k + 56));
    }
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                                     _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#endif

static float read_scalar(const float *data, int64_t count) {
    float lanes[8] = {0};
    for (int64_t k = 0; k < count; k += 8)
        for (int i = 0; i < 8; i++) lanes[i] += data[k + i];
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

/* This machine's read bandwidth, in bytes per second, for a working set of `bytes` (a multiple of 256) at
 * `data`: the best of `repeats` timed passes, each reading the buffer enough times to take ~0.1 ms. One
 * thread, the AVX2 loads the kernels use where they run. The bench times it at the sizes of L1, L2 and
 * memory, for the limits of its profile (`digitlab bench --profile`). */
double digitlab_read_bandwidth(const float *data, int64_t bytes, int64_t repeats) {
    const int64_t count = bytes / (int64_t)sizeof(float);
    int64_t inner = 1 + (int64_t)(4 << 20) / (bytes + 1);
    volatile float sink = 0.0f;
    double best = 0.0;
    for (int64_t pass = 0; pass <= repeats; pass++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int64_t k = 0; k < inner; k++) {
#ifdef HAVE_X86
            if (!force_scalar && use_avx2())
                sink += read_avx2(data, count);
            else
#endif
                sink += read_scalar(data, count);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (pass > 0 && seconds > 0.0 && (double)bytes * (double)inner / seconds > best)
            best = (double)bytes * (double)inner / seconds; /* Pass 0 only brings the buffer into cache. */
    }
    (void)sink;
    return best;
}
