/* The fast engine's sparse first layer, in C: MNIST's images are 81% zero pixels.
 *
 * Built at install time as a plain shared library (setup.py, with _dense.c and _train.c) and loaded
 * with ctypes by sparse.py, which releases the GIL around every call; also built for WebAssembly (Makefile
 * target `wasm`, the browser's engine). The two products, each with an AVX2+FMA version (chosen at run
 * time, so the library runs on any x86-64), a SIMD128 version in WebAssembly builds with SIMD (no FMA:
 * each lane does the portable version's operations, in its order, so the bits are the portable
 * version's) and a portable one:
 *
 *   forward:         out[r, :] = sum_j vals[j] * kernel[cols[j], :] + bias, over the nonzero
 *                    pixels j of image index[r] (CSR rows: starts, cols, vals), in pixel order;
 *   weight gradient: grad[p, :] = sum over the batch's images with pixel p nonzero of
 *                    value * dz[r, :], i.e. x_batch.T @ dz, in row order, through the batch's transpose.
 *
 * The transpose (offsets, and one Entry per nonzero pixel: its batch row and value, pixel by pixel)
 * is built by the forward pass itself: a first pass counts each pixel's entries, then each image,
 * while it is in cache for its product, writes its entries in place. The entry points:
 * digitlab_sparse_forward (with or without the transpose; the NumPy backend's batches, validation)
 * and digitlab_sparse_forward_levels (the same, reading the rows' one-byte levels in place of their values
 * where they have them: each thread's rows in _train.c and _deep.c), digitlab_sparse_weight_gradient (or the
 * SGD update) for the NumPy backend's per-batch steps, digitlab_sparse_sgd_rows (a range of pixels, from the
 * transposes of several row ranges) for _train.c's threads, and digitlab_sparse_adam_rows (the same, with Adam, for
 * _deep.c's on AVX-512). Units are handled in blocks of 64 (eight AVX2
 * registers), then of 8, then one by one.
 *
 * Where the CPU has AVX-512F, the AVX2 path runs its first layer for 64 units (the book's nets) in AVX-512, with
 * the same FMAs in every lane, so the same bits: two images at a time forward and two pixels at a time in the
 * update, their chains interleaved in 8 of the 32 registers (forward_avx512, sgd_pair_avx512). Tiling the kernel
 * by pixels so that a tile's weight rows serve a group of images from L1 was measured and dropped on every path
 * (docs/engine.md, "The first layer against its limit").
 *
 * It runs past 450 lines as one concern, the first layer: each product in its portable, AVX2, AVX-512 and
 * SIMD128 versions side by side, so that a change to one order of sums is made in all of them at once.
 */

#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */
#include <stdint.h>

#include "_engine.h" /* Entry, and the declarations of what this file exports to the others. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#elif defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define HAVE_SIMD128 1
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

/* Writes image row r's nonzero pixels into the transpose: at each pixel's cursor, which moves on. */
static inline void scatter_image(const uint16_t *cols, const float *vals, int64_t begin, int64_t end, int32_t row,
                                 int32_t *cursor, Entry *entries) {
    for (int64_t j = begin; j < end; j++) {
        Entry *entry = entries + cursor[cols[j]]++;
        entry->row = row;
        entry->value = vals[j];
    }
}

/* The value of a pixel of level k (0 ... 255) of uint8 images: k / 255 in float32, as NumPy divides and
 * digitlab_csr_fill_u8 enters it (the compiler folds each quotient, correctly rounded). Where the rows come with
 * their levels (one byte a pixel in place of four: digitlab_csr_fill), the AVX2 and AVX-512 forwards of a
 * training batch read them. */
#define LEVEL1(k) (float)(k) / 255.0f
#define LEVEL4(k) LEVEL1(k), LEVEL1(k + 1), LEVEL1(k + 2), LEVEL1(k + 3)
#define LEVEL16(k) LEVEL4(k), LEVEL4(k + 4), LEVEL4(k + 8), LEVEL4(k + 12)
#define LEVEL64(k) LEVEL16(k), LEVEL16(k + 16), LEVEL16(k + 32), LEVEL16(k + 48)
static const float LEVEL_VALUES[256] = {LEVEL64(0), LEVEL64(64), LEVEL64(128), LEVEL64(192)};
#undef LEVEL64
#undef LEVEL16
#undef LEVEL4
#undef LEVEL1

/* Pixel j's value, in a forward that has `levels` (NULL: none) and `vals`: the same float either way. */
#define VALUE(j) (levels ? LEVEL_VALUES[levels[j]] : vals[j])

/* ---------------------------------------------------------------- portable scalar versions */

static void forward_scalar(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                           int64_t first, int64_t rows, const float *kernel, const float *bias, int64_t units,
                           float *out, int64_t row0, int32_t *cursor, Entry *entries) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = index ? index[r] : first + r;
        const int64_t begin = starts[image], end = starts[image + 1];
        float *row = out + r * units;
        prefetch_image(starts, cols, vals, index, first, r, rows);
        if (cursor) scatter_image(cols, vals, begin, end, (int32_t)(row0 + r), cursor, entries);
        memset(row, 0, sizeof(float) * units);
        for (int64_t j = begin; j < end; j++) {
            const float value = vals[j];
            const float *weights = kernel + (int64_t)cols[j] * units;
            for (int64_t u = 0; u < units; u++) row[u] += value * weights[u];
        }
        for (int64_t u = 0; u < units; u++) row[u] += bias[u];
    }
}

/* grad[p, :] (= or +=) the sum of value * dz[row, :] over pixel p's entries, for pixels 0 ... inputs - 1. */
static void gradient_scalar(const int32_t *offsets, const Entry *entries, int64_t inputs, const float *dz,
                            int64_t units, int64_t stride, float *grad, int accumulate) {
    for (int64_t p = 0; p < inputs; p++) {
        float *row = grad + p * stride;
        if (!accumulate) memset(row, 0, sizeof(float) * units);
        for (int32_t k = offsets[p]; k < offsets[p + 1]; k++) {
            const float value = entries[k].value;
            const float *source = dz + (int64_t)entries[k].row * stride;
            for (int64_t u = 0; u < units; u++) row[u] += value * source[u];
        }
    }
}

/* ------------------------------------------------------------------------- AVX2 + FMA versions */

#ifdef HAVE_X86
/* Pixel j's share of a 64-unit block: its weight row times its value, into the eight accumulators. */
#define FMA64(j)                                                                                                  \
    do {                                                                                                          \
        const __m256 value = _mm256_set1_ps(VALUE(j));                                                            \
        const float *w = kernel + (int64_t)cols[j] * units + u0;                                                  \
        a0 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w), a0);                                                      \
        a1 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 8), a1);                                                  \
        a2 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 16), a2);                                                 \
        a3 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 24), a3);                                                 \
        a4 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 32), a4);                                                 \
        a5 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 40), a5);                                                 \
        a6 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 48), a6);                                                 \
        a7 = _mm256_fmadd_ps(value, _mm256_loadu_ps(w + 56), a7);                                                 \
    } while (0)

/* The image's transpose entries are written in the first pass over its pixels, beside the FMAs (a loop
 * of its own measured 8% slower: there the cursors' loads and stores are all the loop does). */
__attribute__((target("avx2,fma")))
static void forward_avx2(const int64_t *restrict starts, const uint16_t *restrict cols, const float *restrict vals,
                         const uint8_t *restrict levels, const int64_t *restrict index, int64_t first, int64_t rows,
                         const float *restrict kernel, const float *restrict bias, int64_t units,
                         float *restrict out, int64_t row0, int32_t *restrict cursor, Entry *restrict entries) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = index ? index[r] : first + r;
        const int64_t begin = starts[image], end = starts[image + 1];
        const int32_t batch_row = (int32_t)(row0 + r);
        float *row = out + r * units;
        int scatter = cursor != NULL;
        prefetch_image(starts, cols, vals, index, first, r, rows);
        int64_t u0 = 0;
        for (; u0 + 64 <= units; u0 += 64) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
                   a3 = _mm256_setzero_ps(), a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(),
                   a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
            if (scatter) {
                for (int64_t j = begin; j < end; j++) {
                    Entry *entry = entries + cursor[cols[j]]++;
                    entry->row = batch_row, entry->value = VALUE(j);
                    FMA64(j);
                }
                scatter = 0;
            } else {
                for (int64_t j = begin; j < end; j++) FMA64(j);
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
        /* Fewer than 64 units left (or in all): blocks of 8, then one by one; the entries in the first pass. */
        if (scatter) scatter_image(cols, vals, begin, end, batch_row, cursor, entries);
        for (; u0 + 8 <= units; u0 += 8) {
            __m256 a = _mm256_setzero_ps();
            for (int64_t j = begin; j < end; j++)
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(vals + j),
                                    _mm256_loadu_ps(kernel + (int64_t)cols[j] * units + u0), a);
            _mm256_storeu_ps(row + u0, _mm256_add_ps(a, _mm256_loadu_ps(bias + u0)));
        }
        for (int64_t u = u0; u < units; u++) {
            float a = 0.0f;
            for (int64_t j = begin; j < end; j++) a += vals[j] * kernel[(int64_t)cols[j] * units + u];
            row[u] = a + bias[u];
        }
    }
}
#undef FMA64

__attribute__((target("avx2,fma")))
static void gradient_avx2(const int32_t *offsets, const Entry *entries, int64_t inputs, const float *dz,
                          int64_t units, int64_t stride, float *grad, int accumulate) {
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
                const __m256 value = _mm256_broadcast_ss(&entries[k].value);
                const float *s = dz + (int64_t)entries[k].row * stride + u0;
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
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(&entries[k].value),
                                    _mm256_loadu_ps(dz + (int64_t)entries[k].row * stride + u0), a);
            _mm256_storeu_ps(row + u0, a);
        }
        for (int64_t u = u0; u < units; u++) {
            float a = accumulate ? row[u] : 0.0f;
            for (int32_t k = begin; k < end; k++) a += entries[k].value * dz[(int64_t)entries[k].row * stride + u];
            row[u] = a;
        }
    }
}

/* Plain SGD on pixel p's kernel row, units in blocks of 64: weight[u] -= rate * sum, where the sum runs over
 * the batch rows of every part in order (as gradient_avx2 accumulates them, FMA by FMA), in eight registers.
 * Returns the units it did (a multiple of 64); the caller does the rest. */
__attribute__((target("avx2,fma")))
static int64_t sgd_pixel_avx2(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t p,
                              const float *dz, int64_t units, float *row, float rate) {
    int touched = 0;
    for (int64_t part = 0; part < parts && !touched; part++) touched = offsets[part][p] < offsets[part][p + 1];
    if (!touched) return units; /* No image of the batch has this pixel: a zero gradient leaves the row. */
    const __m256 step = _mm256_set1_ps(rate);
    int64_t u0 = 0;
    for (; u0 + 64 <= units; u0 += 64) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t part = 0; part < parts; part++) {
            const Entry *own = entries[part];
            for (int32_t k = offsets[part][p]; k < offsets[part][p + 1]; k++) {
                const __m256 value = _mm256_broadcast_ss(&own[k].value);
                const float *s = dz + (int64_t)own[k].row * units + u0;
                a0 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s), a0);
                a1 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 8), a1);
                a2 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 16), a2);
                a3 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 24), a3);
                a4 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 32), a4);
                a5 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 40), a5);
                a6 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 48), a6);
                a7 = _mm256_fmadd_ps(value, _mm256_loadu_ps(s + 56), a7);
            }
        }
        float *o = row + u0;
        _mm256_storeu_ps(o, _mm256_sub_ps(_mm256_loadu_ps(o), _mm256_mul_ps(a0, step)));
        _mm256_storeu_ps(o + 8, _mm256_sub_ps(_mm256_loadu_ps(o + 8), _mm256_mul_ps(a1, step)));
        _mm256_storeu_ps(o + 16, _mm256_sub_ps(_mm256_loadu_ps(o + 16), _mm256_mul_ps(a2, step)));
        _mm256_storeu_ps(o + 24, _mm256_sub_ps(_mm256_loadu_ps(o + 24), _mm256_mul_ps(a3, step)));
        _mm256_storeu_ps(o + 32, _mm256_sub_ps(_mm256_loadu_ps(o + 32), _mm256_mul_ps(a4, step)));
        _mm256_storeu_ps(o + 40, _mm256_sub_ps(_mm256_loadu_ps(o + 40), _mm256_mul_ps(a5, step)));
        _mm256_storeu_ps(o + 48, _mm256_sub_ps(_mm256_loadu_ps(o + 48), _mm256_mul_ps(a6, step)));
        _mm256_storeu_ps(o + 56, _mm256_sub_ps(_mm256_loadu_ps(o + 56), _mm256_mul_ps(a7, step)));
    }
    return u0;
}
#endif

/* ------------------------------------------------------------------------- AVX-512 versions */

#ifdef HAVE_X86
/* Zen 4 runs AVX-512 on 256-bit units, so its arithmetic is no faster than AVX2's; what it saves is instructions:
 * a pixel's 64 units are four loads and four FMAs, not eight. Each lane does forward_avx2's FMAs in its order, so
 * the bits are the AVX2 version's. These take only whole blocks of 64 units (units % 64 == 0: the book's nets);
 * other widths run the AVX2 versions. */
/* Pixel j's share of an image's 64 units, into its four accumulators x0 ... x3. */
#define FMA64_512(j, x0, x1, x2, x3)                                                                              \
    do {                                                                                                          \
        const __m512 value = _mm512_set1_ps(VALUE(j));                                                            \
        const float *w = kernel + (int64_t)cols[j] * 64;                                                          \
        x0 = _mm512_fmadd_ps(value, _mm512_loadu_ps(w), x0);                                                      \
        x1 = _mm512_fmadd_ps(value, _mm512_loadu_ps(w + 16), x1);                                                 \
        x2 = _mm512_fmadd_ps(value, _mm512_loadu_ps(w + 32), x2);                                                 \
        x3 = _mm512_fmadd_ps(value, _mm512_loadu_ps(w + 48), x3);                                                 \
    } while (0)

/* Pixel j's transpose entry for batch row `row`, at its cursor in `at` (when the transpose is built). */
#define SCATTER(j, at, number)                                                                                     \
    do {                                                                                                          \
        if (at) {                                                                                                 \
            Entry *entry = entries + (at)[cols[j]]++;                                                             \
            entry->row = (int32_t)(number), entry->value = VALUE(j);                                              \
        }                                                                                                         \
    } while (0)

/* Stores an image's sums plus the bias. */
#define STORE64_512(o, x0, x1, x2, x3)                                                                            \
    do {                                                                                                          \
        _mm512_storeu_ps((o), _mm512_add_ps(x0, _mm512_loadu_ps(bias)));                                          \
        _mm512_storeu_ps((o) + 16, _mm512_add_ps(x1, _mm512_loadu_ps(bias + 16)));                                \
        _mm512_storeu_ps((o) + 32, _mm512_add_ps(x2, _mm512_loadu_ps(bias + 32)));                                \
        _mm512_storeu_ps((o) + 48, _mm512_add_ps(x3, _mm512_loadu_ps(bias + 48)));                                \
    } while (0)

/* forward_avx2 for 64 units, two images at a time: row r of the first half of the rows and row half + r of the
 * second, their FMA chains interleaved (eight of the 32 registers), so that one image's loads overlap the
 * other's. Each image's sum runs over its pixels in order, FMA by FMA as in forward_avx2: the same bits. The
 * transpose's entries of the first half go to the cursors in `cursor` and those of the second to `second`
 * (each pixel's first-half entries end where its second-half ones start), so each pixel's entries stay in row
 * order. */
__attribute__((target("avx512f,avx2,fma")))
static void forward_avx512(const int64_t *restrict starts, const uint16_t *restrict cols, const float *restrict vals,
                           const uint8_t *restrict levels, const int64_t *restrict index, int64_t first, int64_t rows,
                           const float *restrict kernel, const float *restrict bias, float *restrict out, int64_t row0,
                           int32_t *restrict cursor, int32_t *restrict second, Entry *restrict entries) {
    const int64_t half = rows / 2;
    for (int64_t r = 0; r < half; r++) {
        const int64_t r1 = half + r, image = index ? index[r] : first + r, other = index ? index[r1] : first + r1;
        const int64_t begin = starts[image], end = starts[image + 1], begin1 = starts[other], end1 = starts[other + 1];
        if (!cursor) {
            prefetch_image(starts, cols, vals, index, first, r, rows);
            prefetch_image(starts, cols, vals, index, first, r1, rows);
        }
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        const int64_t both = end - begin < end1 - begin1 ? end - begin : end1 - begin1;
        for (int64_t k = 0; k < both; k++) {
            SCATTER(begin + k, cursor, row0 + r);
            FMA64_512(begin + k, a0, a1, a2, a3);
            SCATTER(begin1 + k, second, row0 + r1);
            FMA64_512(begin1 + k, b0, b1, b2, b3);
        }
        for (int64_t j = begin + both; j < end; j++) {
            SCATTER(j, cursor, row0 + r);
            FMA64_512(j, a0, a1, a2, a3);
        }
        for (int64_t j = begin1 + both; j < end1; j++) {
            SCATTER(j, second, row0 + r1);
            FMA64_512(j, b0, b1, b2, b3);
        }
        STORE64_512(out + r * 64, a0, a1, a2, a3);
        STORE64_512(out + r1 * 64, b0, b1, b2, b3);
    }
    if (rows > 2 * half) { /* An odd number of rows: the last one alone, the last of the second half. */
        const int64_t r = rows - 1, image = index ? index[r] : first + r;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t j = starts[image]; j < starts[image + 1]; j++) {
            SCATTER(j, second, row0 + r);
            FMA64_512(j, a0, a1, a2, a3);
        }
        STORE64_512(out + r * 64, a0, a1, a2, a3);
    }
}
#undef FMA64_512
#undef SCATTER
#undef STORE64_512

/* The gradient sum of pixel p (into a0 ... a3, 64 units) and of pixel q (b0 ... b3) over their entries in part
 * `part`, each in row order: the two pixels' chains interleaved, so that the loads of one overlap the other's. */
#define DZ64_512(k, a0, a1, a2, a3)                                                                               \
    do {                                                                                                          \
        const __m512 value = _mm512_set1_ps(own[k].value);                                                        \
        const float *s = dz + (int64_t)own[k].row * 64;                                                           \
        a0 = _mm512_fmadd_ps(value, _mm512_loadu_ps(s), a0);                                                      \
        a1 = _mm512_fmadd_ps(value, _mm512_loadu_ps(s + 16), a1);                                                 \
        a2 = _mm512_fmadd_ps(value, _mm512_loadu_ps(s + 32), a2);                                                 \
        a3 = _mm512_fmadd_ps(value, _mm512_loadu_ps(s + 48), a3);                                                 \
    } while (0)

/* The gradient sums of pixel p (into s[0 ... 3], 64 units) and, unless `single`, of pixel p + 1 (s[4 ... 7]) over
 * their entries in every part, each in row order: the two pixels' chains interleaved, so that the loads of one
 * overlap the other's. touched[k]: whether any image of the batch has the pixel. Inlined, the sums stay in
 * registers. */
__attribute__((target("avx512f,avx2,fma"))) static inline __attribute__((always_inline)) void
pair_sums_avx512(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t p, int single, const float *dz,
                 __m512 *s, int *touched) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    touched[0] = touched[1] = 0;
    for (int64_t part = 0; part < parts; part++) {
        const Entry *own = entries[part];
        const int32_t k0 = offsets[part][p], k1 = offsets[part][p + 1], k2 = single ? k1 : offsets[part][p + 2];
        const int32_t both = k1 - k0 < k2 - k1 ? k1 - k0 : k2 - k1;
        touched[0] |= k1 > k0, touched[1] |= k2 > k1;
        for (int32_t k = 0; k < both; k++) {
            DZ64_512(k0 + k, a0, a1, a2, a3);
            DZ64_512(k1 + k, b0, b1, b2, b3);
        }
        for (int32_t k = k0 + both; k < k1; k++) DZ64_512(k, a0, a1, a2, a3);
        for (int32_t k = k1 + both; k < k2; k++) DZ64_512(k, b0, b1, b2, b3);
    }
    s[0] = a0, s[1] = a1, s[2] = a2, s[3] = a3, s[4] = b0, s[5] = b1, s[6] = b2, s[7] = b3;
}

/* Plain SGD on the kernel rows of pixels p and p + 1 (64 units: the caller checks), as sgd_pixel_avx2 does each:
 * weight -= rate * sum, the sum over the batch rows of every part in order, each FMA in every lane as there, so
 * the bits are the AVX2 version's. The two pixels' sums take 8 of the 32 registers. */
__attribute__((target("avx512f,avx2,fma")))
static void sgd_pair_avx512(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t p, const float *dz,
                            float *rows, float rate) {
    __m512 s[8];
    int touched[2];
    pair_sums_avx512(offsets, entries, parts, p, 0, dz, s, touched);
    const __m512 step = _mm512_set1_ps(rate);
    for (int pixel = 0; pixel < 2; pixel++) {
        if (!touched[pixel]) continue; /* No image of the batch has the pixel: a zero gradient leaves its row. */
        float *row = rows + 64 * pixel;
        for (int c = 0; c < 4; c++)
            _mm512_storeu_ps(row + 16 * c, _mm512_sub_ps(_mm512_loadu_ps(row + 16 * c),
                                                         _mm512_mul_ps(s[4 * pixel + c], step)));
    }
}

/* Adam on the kernel rows of pixel p and, unless `single`, of p + 1 (64 units), with their gradients summed as
 * sgd_pair_avx512 sums them and used at once: _deep.c's update (adam_avx2), lane by lane, on each row. A row whose
 * gradient and moments are all +0 (a pixel no image has had yet: MNIST has 67 that no training image has) would
 * stay as it is, bit for bit (m and v +0, a step of +0 / epsilon), so it is left alone. */
__attribute__((target("avx512f,avx2,fma")))
static void adam_pair_avx512(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t p, int single,
                             const float *dz, float *weight, float *m, float *v, const float *hyper, float step_size) {
    __m512 s[8];
    int touched[2];
    pair_sums_avx512(offsets, entries, parts, p, single, dz, s, touched);
    const __m512 r1 = _mm512_set1_ps(hyper[0]), r2 = _mm512_set1_ps(hyper[1]), eps = _mm512_set1_ps(hyper[2]),
                 alpha = _mm512_set1_ps(step_size);
    for (int pixel = 0; pixel < 2 - single; pixel++) {
        if (!touched[pixel]) {
            __m512i bits = _mm512_setzero_si512();
            for (int c = 0; c < 4; c++) {
                const int64_t k = 64 * pixel + 16 * c;
                bits = _mm512_or_si512(bits, _mm512_or_si512(_mm512_loadu_si512(m + k), _mm512_loadu_si512(v + k)));
            }
            if (!_mm512_test_epi32_mask(bits, bits)) continue;
        }
        for (int c = 0; c < 4; c++) {
            const int64_t k = 64 * pixel + 16 * c;
            ADAM_LANES(_mm512, __m512, s[4 * pixel + c], m + k, v + k, weight + k, r1, r2, eps, alpha);
        }
    }
}
#undef DZ64_512

/* 1 where the CPU has AVX-512F (checked once). */
static int has_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f");
    }
    return cached;
}
#endif

/* ------------------------------------------------------------------------- SIMD128 versions */

#ifdef HAVE_SIMD128
/* Eight vectors of four: 32 units in registers (sixteen, 64 units, measured 1.1-1.2x slower in V8: x86-64 has
 * sixteen vector registers, and the accumulators spilled). Each lane adds its products in the portable order
 * (a plain multiply, then an add), so the results are the portable version's bits. */
#define BLOCK 8

/* acc[c] += value * w[4c ... 4c + 3] for the block's vectors. */
static inline void add_products(v128_t *acc, v128_t value, const float *w) {
    for (int c = 0; c < BLOCK; c++) /* The product rounded before the add: not an FMA. */
        acc[c] = wasm_f32x4_add(acc[c], wasm_f32x4_mul(value, wasm_v128_load(w + 4 * c)));
}

static void forward_simd128(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                            int64_t first, int64_t rows, const float *kernel, const float *bias, int64_t units,
                            float *out, int64_t row0, int32_t *cursor, Entry *entries) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t image = index ? index[r] : first + r;
        const int64_t begin = starts[image], end = starts[image + 1];
        const int32_t batch_row = (int32_t)(row0 + r);
        float *row = out + r * units;
        int scatter = cursor != NULL;
        int64_t u0 = 0;
        for (; u0 + 4 * BLOCK <= units; u0 += 4 * BLOCK) {
            v128_t acc[BLOCK];
            for (int c = 0; c < BLOCK; c++) acc[c] = wasm_f32x4_splat(0.0f);
            if (scatter) { /* The image's transpose entries, in the first pass over its pixels (as forward_avx2). */
                for (int64_t j = begin; j < end; j++) {
                    Entry *entry = entries + cursor[cols[j]]++;
                    entry->row = batch_row, entry->value = vals[j];
                    add_products(acc, wasm_f32x4_splat(vals[j]), kernel + (int64_t)cols[j] * units + u0);
                }
                scatter = 0;
            } else {
                for (int64_t j = begin; j < end; j++)
                    add_products(acc, wasm_f32x4_splat(vals[j]), kernel + (int64_t)cols[j] * units + u0);
            }
            for (int c = 0; c < BLOCK; c++)
                wasm_v128_store(row + u0 + 4 * c, wasm_f32x4_add(acc[c], wasm_v128_load(bias + u0 + 4 * c)));
        }
        if (scatter) scatter_image(cols, vals, begin, end, batch_row, cursor, entries);
        /* Fewer than 32 units left (or in all): blocks of 4, then one by one. */
        for (; u0 + 4 <= units; u0 += 4) {
            v128_t acc = wasm_f32x4_splat(0.0f);
            for (int64_t j = begin; j < end; j++)
                acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_splat(vals[j]),
                                                         wasm_v128_load(kernel + (int64_t)cols[j] * units + u0)));
            wasm_v128_store(row + u0, wasm_f32x4_add(acc, wasm_v128_load(bias + u0)));
        }
        for (int64_t u = u0; u < units; u++) {
            float a = 0.0f;
            for (int64_t j = begin; j < end; j++) a += vals[j] * kernel[(int64_t)cols[j] * units + u];
            row[u] = a + bias[u];
        }
    }
}

/* Plain SGD on pixel p's kernel row, units in blocks of 32, as sgd_pixel_avx2: weight -= sum * rate, the sum
 * over the batch rows of every part in order. Returns the units it did (a multiple of 32). */
static int64_t sgd_pixel_simd128(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t p,
                                 const float *dz, int64_t units, float *row, float rate) {
    int touched = 0;
    for (int64_t part = 0; part < parts && !touched; part++) touched = offsets[part][p] < offsets[part][p + 1];
    if (!touched) return units; /* No image of the batch has this pixel: a zero gradient leaves the row. */
    const v128_t step = wasm_f32x4_splat(rate);
    int64_t u0 = 0;
    for (; u0 + 4 * BLOCK <= units; u0 += 4 * BLOCK) {
        v128_t acc[BLOCK];
        for (int c = 0; c < BLOCK; c++) acc[c] = wasm_f32x4_splat(0.0f);
        for (int64_t part = 0; part < parts; part++) {
            const Entry *own = entries[part];
            for (int32_t k = offsets[part][p]; k < offsets[part][p + 1]; k++)
                add_products(acc, wasm_f32x4_splat(own[k].value), dz + (int64_t)own[k].row * units + u0);
        }
        float *o = row + u0;
        for (int c = 0; c < BLOCK; c++)
            wasm_v128_store(o + 4 * c, wasm_f32x4_sub(wasm_v128_load(o + 4 * c), wasm_f32x4_mul(acc[c], step)));
    }
    return u0;
}
#undef BLOCK
#endif

/* 1 where the CPU has AVX2 and FMA (x86-64, checked once) or the WebAssembly build has SIMD128. */
static int use_avx2(void) {
#ifdef HAVE_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
#elif defined(HAVE_SIMD128)
    return 1;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------------------- the entry points */

/* 1 when the AVX2+FMA (or SIMD128) versions run, 0 for the portable ones; nonzero `scalar_only` disables them. */
static int force_scalar = 0;

int digitlab_kernels_simd(int scalar_only) {
    force_scalar = scalar_only;
    return !force_scalar && use_avx2();
}

/* What digitlab_kernels_simd last chose, for _dense.c and _train.c: 1 when the AVX2+FMA versions run. */
int digitlab_kernels_simd_on(void) {
    return !force_scalar && use_avx2();
}

/* 1 when the first layer's AVX-512 versions run (for 64 units: the AVX2 path's bits, on a CPU with AVX-512F and
 * the AVX2 versions on); `allowed` 0 keeps the AVX2 ones (DIGITLAB_KERNEL_AVX512=0, sparse.py; the tests). */
#ifdef HAVE_X86
static int allow_avx512 = 1;

static int avx512_on(void) { return allow_avx512 && !force_scalar && use_avx2() && has_avx512(); }

int digitlab_kernels_avx512(int allowed) {
    allow_avx512 = allowed;
    return avx512_on();
}
#else
int digitlab_kernels_avx512(int allowed) {
    (void)allowed;
    return 0;
}
#endif

/* out = x[index] @ kernel + bias for `rows` images (index NULL: images first ... first + rows - 1), out
 * being rows x units. When `offsets` is not NULL it also builds these rows' transpose, numbered as batch
 * rows row0 ... row0 + rows - 1: offsets (inputs + 1 ints; pixel p's entries are offsets[p] ... offsets[p + 1]
 * - 1, in row order) and `entries` (room for the rows' nonzero pixels). */
void digitlab_sparse_forward(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                             int64_t first, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                             int64_t units, float *out, int64_t row0, int32_t *offsets, Entry *entries) {
    digitlab_sparse_forward_levels(starts, cols, vals, NULL, index, first, rows, inputs, kernel, bias, units, out, row0,
                                   offsets, entries);
}

/* digitlab_sparse_forward for rows that may come with their pixels' levels (`levels` not NULL: vals[j] =
 * LEVEL_VALUES[levels[j]]). A training batch's forward (its transpose built; AVX2 or AVX-512, units a multiple of
 * 64) reads the levels in place of the values: MNIST's rows are 54 MB, read at random, and the values two thirds
 * of them. A byte a pixel made the book's C epoch 1.04-1.14x faster on two threads of the 2-core Zen 4, the
 * deep net's 1.03-1.06x (docs/engine.md, "The sixth round"). The same bits. */
void digitlab_sparse_forward_levels(const int64_t *starts, const uint16_t *cols, const float *vals,
                                    const uint8_t *levels, const int64_t *index, int64_t first, int64_t rows,
                                    int64_t inputs, const float *kernel, const float *bias, int64_t units, float *out,
                                    int64_t row0, int32_t *offsets, Entry *entries) {
#ifdef HAVE_X86
    const int simd = digitlab_kernels_simd_on(), wide = units == 64 && avx512_on();
    /* Only the AVX2 and AVX-512 forwards of a batch read them, in whole blocks of 64 units. */
    if (!offsets || units % 64 != 0 || !simd) levels = NULL;
#else
    levels = NULL;
#endif
    int32_t *second = NULL; /* The AVX-512 version's cursors for the second half of the rows. */
    if (offsets) {
        /* Each pixel's count, then its start: the images then write their entries at each pixel's cursor.
         * The count runs ahead of the forward, so it asks for the images' rows to be brought into cache:
         * where they start 8 images on, their columns and values 4 on (the images lie at random places;
         * this made the forward with its transpose 1.2-1.4x faster than prefetching from the forward alone). */
        memset(offsets, 0, sizeof(int32_t) * (inputs + 1));
        for (int64_t r = 0; r < rows; r++) {
            const int64_t image = index ? index[r] : first + r;
#ifdef HAVE_X86
            /* The counts of the first half of the rows: where the second half's entries start. */
            if (wide && r == rows / 2 && (second = malloc(sizeof(int32_t) * (inputs + 1))))
                memcpy(second, offsets, sizeof(int32_t) * (inputs + 1));
#endif
#ifdef __GNUC__
            if (index && r + 8 < rows) __builtin_prefetch(starts + index[r + 8]);
            if (r + 4 < rows) {
                const int64_t ahead = index ? index[r + 4] : first + r + 4;
                for (int64_t j = starts[ahead]; j < starts[ahead + 1]; j += 32) __builtin_prefetch(cols + j);
                if (levels)
                    for (int64_t j = starts[ahead]; j < starts[ahead + 1]; j += 64) __builtin_prefetch(levels + j);
                else
                    for (int64_t j = starts[ahead]; j < starts[ahead + 1]; j += 16) __builtin_prefetch(vals + j);
            }
#endif
            for (int64_t j = starts[image]; j < starts[image + 1]; j++) offsets[cols[j] + 1]++;
        }
        for (int64_t p = 0; p < inputs; p++) offsets[p + 1] += offsets[p];
        if (second)
            for (int64_t p = 0; p < inputs; p++) second[p] = offsets[p] + second[p + 1];
    }
#ifdef HAVE_X86
    if (wide && (second || !offsets))
        forward_avx512(starts, cols, vals, levels, index, first, rows, kernel, bias, out, row0, offsets, second,
                       entries);
    else if (simd)
        forward_avx2(starts, cols, vals, levels, index, first, rows, kernel, bias, units, out, row0, offsets, entries);
    else
#elif defined(HAVE_SIMD128)
    if (!force_scalar)
        forward_simd128(starts, cols, vals, index, first, rows, kernel, bias, units, out, row0, offsets, entries);
    else
#endif
        forward_scalar(starts, cols, vals, index, first, rows, kernel, bias, units, out, row0, offsets, entries);
    if (offsets) {
        /* The cursors moved each pixel's start to the next pixel's (the second half's cursors, where there are
         * two): shift them back. */
        if (second) memcpy(offsets, second, sizeof(int32_t) * inputs);
        memmove(offsets + 1, offsets, sizeof(int32_t) * inputs);
        offsets[0] = 0;
    }
#ifdef HAVE_X86
    free(second);
#endif
}

/* Plain SGD on the first layer's kernel rows first_pixel ... last_pixel - 1, from the transposes of
 * `parts` consecutive row ranges of the batch (in row order, so each pixel's sum runs over the batch's
 * rows in order, as with one transpose): weight -= (x_batch.T @ dz) * rate on the pixels the batch
 * touches. `scratch` holds `units` floats. */
void digitlab_sparse_sgd_rows(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t first_pixel,
                              int64_t last_pixel, const float *dz, int64_t units, float *scratch, float *weight,
                              float rate) {
#if defined(HAVE_X86) || defined(HAVE_SIMD128)
    const int simd = !force_scalar && use_avx2();
#endif
    int64_t p = first_pixel;
#ifdef HAVE_X86
    if (units == 64 && avx512_on())
        for (; p + 2 <= last_pixel; p += 2) sgd_pair_avx512(offsets, entries, parts, p, dz, weight + p * units, rate);
#endif
    for (; p < last_pixel; p++) {
        int64_t u0 = 0;
#ifdef HAVE_X86
        /* Blocks of 64 units: the sums stay in registers across the parts, and the update is done there. */
        if (simd)
            u0 = sgd_pixel_avx2(offsets, entries, parts, p, dz, units, weight + p * units, rate);
#elif defined(HAVE_SIMD128)
        if (simd) u0 = sgd_pixel_simd128(offsets, entries, parts, p, dz, units, weight + p * units, rate);
#endif
        if (u0 == units) continue;
        int touched = 0;
        for (int64_t part = 0; part < parts; part++) {
            const int32_t pair[2] = {offsets[part][p], offsets[part][p + 1]};
            if (pair[0] == pair[1]) continue;
#ifdef HAVE_X86
            if (simd)
                gradient_avx2(pair, entries[part], 1, dz + u0, units - u0, units, scratch, touched);
            else
#endif
                gradient_scalar(pair, entries[part], 1, dz + u0, units - u0, units, scratch, touched);
            touched = 1;
        }
        if (!touched) continue;
        float *row = weight + p * units + u0;
        for (int64_t u = 0; u < units - u0; u++) {
            const float step = scratch[u] * rate;
            row[u] -= step;
        }
    }
}

/* Adam on the first layer's kernel rows first_pixel ... last_pixel - 1 (64 units), each row's gradient summed from
 * the transposes of `parts` row ranges as digitlab_sparse_sgd_rows sums it and used at once, never stored: m and v
 * its slots, hyper Adam's 1 - beta_1, 1 - beta_2 and epsilon, step_size this step's alpha (_deep.c's update, the
 * same bits). An untouched pixel's gradient is +0, as a zeroed gradient row would hold. A gradient kernel written
 * out and read back was 3 x 200 KB of traffic a batch beside the update's own (docs/engine.md, "The ninth round").
 * Returns 1, or 0 where this CPU has no AVX-512 or units is not 64: the caller then sums and updates apart. */
int digitlab_sparse_adam_rows(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t first_pixel,
                              int64_t last_pixel, const float *dz, int64_t units, float *weight, float *m, float *v,
                              const float *hyper, float step_size) {
#ifdef HAVE_X86
    if (units != 64 || !avx512_on()) return 0;
    for (int64_t p = first_pixel; p < last_pixel; p += 2) {
        const int single = p + 1 == last_pixel;
        adam_pair_avx512(offsets, entries, parts, p, single, dz, weight + p * 64, m + p * 64, v + p * 64, hyper,
                         step_size);
    }
    return 1;
#else
    (void)offsets, (void)entries, (void)parts, (void)first_pixel, (void)last_pixel, (void)dz, (void)units;
    (void)weight, (void)m, (void)v, (void)hyper, (void)step_size;
    return 0;
#endif
}

/* grad = x_batch.T @ dz from the transpose the forward pass built. With `weight` not NULL it is
 * plain SGD instead, as Keras computes it: weight -= grad * rate, on the pixels the batch touches
 * (the others have a zero gradient, which leaves their weights as they are); grad is then scratch
 * of `units` floats. */
void digitlab_sparse_weight_gradient(int32_t *offsets, Entry *entries, int64_t inputs, const float *dz,
                                     int64_t units, float *grad, float *weight, float rate) {
    if (!weight) {
#ifdef HAVE_X86
        if (!force_scalar && use_avx2()) {
            gradient_avx2(offsets, entries, inputs, dz, units, units, grad, 0);
            return;
        }
#endif
        gradient_scalar(offsets, entries, inputs, dz, units, units, grad, 0);
        return;
    }
    digitlab_sparse_sgd_rows(&offsets, &entries, 1, 0, inputs, dz, units, grad, weight, rate);
}

/* ------------------------------------------------------------------------ building the CSR rows */

/* Writes value v's level k (v = LEVEL_VALUES[k]) to *level and returns 1; 0 (nothing written) when v has none. */
static inline int32_t level_of_float(float v, uint8_t *level) {
    const int k = v > 0.0f && v <= 1.0f ? (int)(v * 255.0f + 0.5f) : 0; /* 0: none (v is not 0). */
    if (LEVEL_VALUES[k] != v) return 0;
    *level = (uint8_t)k;
    return 1;
}
static inline int32_t level_of_byte(uint8_t v, uint8_t *level) {
    *level = v;
    return 1;
}

/* Two passes over a matrix x (rows x columns, row-major) of TYPE: digitlab_csr_countSUFFIX sets starts[r + 1] -
 * starts[r] = the nonzero entries of row r, starts[0] = 0, and returns their total; digitlab_csr_fillSUFFIX
 * writes their column numbers and values (VALUE of the entry v), row by row, columns ascending. Where `levels` is
 * not NULL it also writes each value's level (LEVEL(v, where): LEVEL_VALUES[level] is the value) and returns 1
 * when every value has one, 0 otherwise (then the levels are not to be used). */
#define CSR_ROWS(SUFFIX, TYPE, VALUE, LEVEL)                                                                   \
    int64_t digitlab_csr_count##SUFFIX(const TYPE *x, int64_t rows, int64_t columns, int64_t *starts) {           \
        starts[0] = 0;                                                                                         \
        for (int64_t r = 0; r < rows; r++) {                                                                   \
            const TYPE *row = x + r * columns;                                                                 \
            int64_t count = 0;                                                                                 \
            for (int64_t c = 0; c < columns; c++) count += row[c] != 0;                                        \
            starts[r + 1] = starts[r] + count;                                                                 \
        }                                                                                                      \
        return starts[rows];                                                                                   \
    }                                                                                                          \
    int32_t digitlab_csr_fill##SUFFIX(const TYPE *x, int64_t rows, int64_t columns, const int64_t *starts,       \
                                      uint16_t *cols, float *vals, uint8_t *levels) {                          \
        int32_t all = levels != NULL;                                                                          \
        for (int64_t r = 0; r < rows; r++) {                                                                   \
            const TYPE *row = x + r * columns;                                                                 \
            int64_t at = starts[r];                                                                            \
            for (int64_t c = 0; c < columns; c++) {                                                            \
                const TYPE v = row[c];                                                                         \
                if (v == 0) continue;                                                                          \
                if (all) all = LEVEL(v, levels + at);                                                          \
                cols[at] = (uint16_t)c, vals[at++] = (VALUE);                                                  \
            }                                                                                                  \
        }                                                                                                      \
        return all;                                                                                            \
    }

/* A float32 matrix (as NumPy's nonzero: -0.0 is zero, NaN is not), its values as they are; levels where every
 * value is k / 255 in float32 (the inputs the book makes of uint8 images). */
CSR_ROWS(, float, v, level_of_float)
/* uint8 images, each nonzero v entered as v / 255 in float32 (LEVEL_VALUES[v]), correctly rounded as NumPy divides:
 * the rows of `data.to_inputs(images)` without its float32 matrix (4 bytes a pixel, the start's largest block of
 * new memory); their levels are the bytes. */
CSR_ROWS(_u8, uint8_t, LEVEL_VALUES[v], level_of_byte)
#undef CSR_ROWS

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
