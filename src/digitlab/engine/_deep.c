/* A whole training epoch of a dense net with BatchNormalization, Dropout and Adam in one C call: the book's
 * deep net (chapter 9) on the fast engine.
 *
 * _train.c runs plain SGD without Dropout on several threads; this file runs the nets it cannot: any
 * hidden Dense layer may be followed by a BatchNormalization (after its activation, as models.py builds
 * the deep net) and any layer above the first may have a Dropout on its input, trained with Adam or plain
 * SGD. Every batch of the epoch here: the sparse first layer (_kernels.c), the layers above it, the loss and
 * the activations (_dense.c), then this file's BatchNormalization, Dropout, gradients and optimizer update,
 * with the formulas of numpy_backend.py (Keras's own, JAX backend) in float32:
 *
 *   BatchNormalization, training: mean = sum(x) / rows, var = sum((x - mean)^2) / rows (in row order),
 *     x_hat = (x - mean) * (1 / sqrt(var + epsilon)), y = x_hat * gamma + beta; the moving statistics
 *     moving = moving * momentum + batch * (1 - momentum). Backward: dbeta = sum(g), dgamma =
 *     sum(g * x_hat), dx = (g - dbeta / rows - x_hat * dgamma / rows) * gamma / sqrt(var + epsilon).
 *   Adam: m += (g - m) * (1 - beta_1), v += (g^2 - v) * (1 - beta_2), w -= m * alpha / (sqrt(v) + epsilon),
 *     alpha = rate * sqrt(1 - beta_2^t) / (1 - beta_1^t), computed by the caller for each step of the epoch.
 *   Dropout: each kept value is divided by the keep rate (1 - rate), as Keras does; the masks are this
 *     file's own (a hash of the seed, the step, the layer and the entry, so a resumed run draws the same
 *     ones), not Keras's: with Dropout a run is trained as fit trains it in distribution, not bit for bit.
 *
 * The two loops that carry the arithmetic, the kernels' gradients and the optimizer update, have AVX2 versions
 * (chosen as _kernels.c chooses its own: digitlab_kernels_simd_on) that do each lane's operations in the
 * portable version's order, without fused multiply-adds, so both give the same bits; so do the elementwise
 * loops (TWIN: an AVX2 copy of the same source) and the Dropout's hash (8 lanes in AVX-512 where the CPU has it).
 *
 * Threads share each batch as _train.c's do (its barrier and start, _threads.h; run_deep): each takes its rows
 * through the net and back; the per-unit sums over the batch's rows (BatchNormalization's mean and variance, its
 * backward sums, every kernel's and bias's gradient) run over all the rows in row order, split between the
 * threads by unit, input or pixel or computed by each for itself, so every thread count gives the one-thread
 * bits (8 barriers a batch for the book's net: one a BatchNormalization forward, one a layer backward, one
 * after the updates).
 *
 * Evaluation (moving statistics): digitlab_infer_deep, natively (deep.evaluate) and in the browser. Where an
 * epoch goes: digitlab_train_epoch_deep_timed's profile (digitlab bench --profile --model deep). The browser's
 * engine builds this file too (Makefile target `wasm`): it uses no C library function beyond _wasm.c's malloc,
 * free, clock and threads.
 *
 * Over 450 lines as one concern: an epoch's phases read the same shared buffers (DeepEpoch), and each loop's
 * AVX2 version sits beside the portable one whose bits it must keep.
 */

#define _GNU_SOURCE /* syscall() and clock_gettime() under -std=c99 (_threads.h) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_engine.h"  /* The codes, Entry and the functions of _kernels.c and _dense.c. */
#include "_threads.h" /* Threads, the barrier, the pixels' split: shared with _train.c. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#define AVX2 __attribute__((target("avx2")))
#endif

/* The elementwise loops and the per-unit sums over a batch's rows (BatchNormalization, Dropout, ReLU's gradient, the
 * biases' sums) are written once, as an always-inlined body, and TWIN(name, parameters, arguments) makes `name` of
 * it: on x86-64 it calls an AVX2 copy where digitlab_kernels_simd_on() says so (GCC vectorizes the same loops 8
 * wide; no fused multiply-adds under -ffp-contract=off, every lane doing the portable operations in their order, so
 * both copies give the same bits), else the body itself, compiled for the baseline (SSE2, or WebAssembly). */
#define BODY static inline __attribute__((always_inline))
#ifdef HAVE_X86
#define TWIN(name, parameters, arguments)                                                                           \
    AVX2 static void name##_avx2 parameters { name##_body arguments; }                                              \
    static void name parameters {                                                                                   \
        if (digitlab_kernels_simd_on()) name##_avx2 arguments;                                                      \
        else name##_body arguments;                                                                                 \
    }
#else
#define TWIN(name, parameters, arguments)                                                                           \
    static void name parameters { name##_body arguments; }
#endif

#define MAX_LAYERS 16
#define OPTIMIZER_SGD 0
#define OPTIMIZER_ADAM 1
/* Per layer, in `arrays`: kernel, bias, gamma, beta, moving mean, moving variance (the last four NULL without
 * a BatchNormalization); in `slots`: the first and second moments of the first four (Adam only). */
#define ARRAYS 6
#define TRAINED 4

/* Where an epoch goes (digitlab bench --profile --model deep): seconds per thread and phase, added to the caller's
 * `profile` array (threads x DEEP_PHASES doubles) when it is not NULL; when it is NULL nothing is timed. */
enum {
    DEEP_FIRST_FORWARD,  /* The first layer's sparse product and the transpose of the thread's rows it builds. */
    DEEP_ABOVE,          /* The thread's rows forward: the layers above, activations, Dropout, normalizing. */
    DEEP_STATISTICS,     /* BatchNormalization's batch statistics (over every row) and its moving ones. */
    DEEP_LOSS,           /* The loss, the answers and the last layer's gradient; gathering the targets and labels. */
    DEEP_BACKWARD,       /* The thread's rows backward: each layer's gradient below, Dropout, BatchNormalization. */
    DEEP_FIRST_GRADIENT, /* The first layer's kernel gradient on the thread's pixels (every row), summed apart. */
    DEEP_GRADIENTS,      /* The other kernels' and the biases' gradients, BatchNormalization's sums. */
    DEEP_FIRST_UPDATE,   /* The optimizer on the thread's pixels of the first layer's kernel (Adam in AVX-512: with
                          * the gradient, summed where it is used: digitlab_sparse_adam_rows). */
    DEEP_OTHER_UPDATES,  /* The optimizer on its share of the other arrays, the kernels' transposes, the loss. */
    DEEP_WAIT,           /* Waiting at the barriers (for the slowest thread). */
    DEEP_SETUP,          /* Buffers, the kernels' transposes, starting and joining the threads. */
    DEEP_PHASES
};

int digitlab_deep_profile_phases(void) { return DEEP_PHASES; }

/* A uniform float in [0, 1) from 24 bits of a 64-bit mix (SplitMix64's finalizer) of the four numbers. */
static float uniform(uint32_t seed, int64_t step, int64_t layer, int64_t entry) {
    uint64_t z = ((uint64_t)seed << 32) ^ (uint64_t)step * 0x9E3779B97F4A7C15ull;
    z ^= ((uint64_t)layer << 56) ^ (uint64_t)entry * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* BatchNormalization in training, the batch's statistics from all its `rows` x `units` values x, in row order:
 * mean and (biased) var, and 1 / sqrt(var + epsilon) into scale. Every thread computes them all for itself
 * (a few microseconds: cheaper than a barrier more), so the threads have the one-thread bits. */
BODY void norm_statistics_body(const float *restrict x, int64_t rows, int64_t units, float epsilon,
                               float *restrict mean, float *restrict var, float *restrict scale) {
    const float count = (float)rows;
    memset(mean, 0, sizeof(float) * units);
    memset(var, 0, sizeof(float) * units);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) mean[u] += x[r * units + u];
    for (int64_t u = 0; u < units; u++) mean[u] /= count;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) {
            const float centered = x[r * units + u] - mean[u];
            var[u] += centered * centered;
        }
    for (int64_t u = 0; u < units; u++) {
        var[u] /= count;
        scale[u] = 1.0f / __builtin_sqrtf(var[u] + epsilon);
    }
}
TWIN(norm_statistics,
     (const float *restrict x, int64_t rows, int64_t units, float epsilon, float *restrict mean, float *restrict var,
      float *restrict scale),
     (x, rows, units, epsilon, mean, var, scale))

/* moving = moving * momentum + batch * (1 - momentum), for the mean and the variance (one thread does it). */
static void norm_move(float *const *arrays, const float *settings, const float *mean, const float *var,
                      int64_t units) {
    float *moving_mean = arrays[4], *moving_var = arrays[5];
    const float momentum = settings[0], rest = settings[1];
    for (int64_t u = 0; u < units; u++) {
        moving_mean[u] = moving_mean[u] * momentum + mean[u] * rest;
        moving_var[u] = moving_var[u] * momentum + var[u] * rest;
    }
}

/* x_hat = (x - mean) * scale, the normalized value, for unit u of row r of x, with the `units`, `mean` and `scale`
 * of the function that uses it. It is computed where it is used, not kept: written to a buffer of its own and read
 * again by the other thread's sums, it cost the second thread more than the arithmetic (docs/engine.md, "The ninth
 * round"). The same operations every time: the same bits. */
#define X_HAT(x, r, u) (((x)[(r) * units + (u)] - mean[u]) * scale[u])

/* The layer's output for `rows` rows of x: y = x_hat * gamma + beta. */
BODY void norm_apply_body(const float *restrict x, int64_t rows, int64_t units, const float *restrict gamma,
                          const float *restrict beta, const float *restrict mean, const float *restrict scale,
                          float *restrict y) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) y[r * units + u] = X_HAT(x, r, u) * gamma[u] + beta[u];
}
TWIN(norm_apply,
     (const float *restrict x, int64_t rows, int64_t units, const float *restrict gamma, const float *restrict beta,
      const float *restrict mean, const float *restrict scale, float *restrict y),
     (x, rows, units, gamma, beta, mean, scale, y))

/* BatchNormalization's backward sums over all the batch's `rows` of g (the gradient with respect to its output),
 * in row order: beta's gradient sum(g) and gamma's sum(g * x_hat), x_hat from the layer's input x and the batch's
 * statistics. Every thread computes them for itself. */
BODY void norm_sums_body(const float *restrict g, const float *restrict x, const float *restrict mean,
                         const float *restrict scale, int64_t rows, int64_t units, float *restrict grad_gamma,
                         float *restrict grad_beta) {
    memset(grad_gamma, 0, sizeof(float) * units);
    memset(grad_beta, 0, sizeof(float) * units);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) {
            grad_beta[u] += g[r * units + u];
            grad_gamma[u] += g[r * units + u] * X_HAT(x, r, u);
        }
}
TWIN(norm_sums,
     (const float *restrict g, const float *restrict x, const float *restrict mean, const float *restrict scale,
      int64_t rows, int64_t units, float *restrict grad_gamma, float *restrict grad_beta),
     (g, x, mean, scale, rows, units, grad_gamma, grad_beta))

/* The gradient with respect to the layer's input, into dx, for `count` rows of g and x of a batch of `rows`:
 * dx = ((g - sum(g) / rows) - x_hat * (sum(g x_hat) / rows)) * (scale * gamma), the three per-unit factors
 * computed once into `factors` (3 x units floats; in the loop they cost a division per value). */
BODY void norm_gradient_body(const float *restrict g, const float *restrict x, int64_t count, int64_t rows,
                             int64_t units, const float *restrict gamma, const float *restrict mean,
                             const float *restrict scale, const float *restrict grad_gamma,
                             const float *restrict grad_beta, float *restrict factors, float *restrict dx) {
    const float total = (float)rows;
    float *restrict mean_g = factors, *restrict mean_gx = factors + units, *restrict times = factors + 2 * units;
    for (int64_t u = 0; u < units; u++) {
        mean_g[u] = grad_beta[u] / total;
        mean_gx[u] = grad_gamma[u] / total;
        times[u] = scale[u] * gamma[u];
    }
    for (int64_t r = 0; r < count; r++)
        for (int64_t u = 0; u < units; u++) {
            const float shifted = g[r * units + u] - mean_g[u];
            dx[r * units + u] = (shifted - X_HAT(x, r, u) * mean_gx[u]) * times[u];
        }
}
TWIN(norm_gradient,
     (const float *restrict g, const float *restrict x, int64_t count, int64_t rows, int64_t units,
      const float *restrict gamma, const float *restrict mean, const float *restrict scale,
      const float *restrict grad_gamma, const float *restrict grad_beta, float *restrict factors, float *restrict dx),
     (g, x, count, rows, units, gamma, mean, scale, grad_gamma, grad_beta, factors, dx))

#ifdef HAVE_X86
/* One block of kernel_gradient_avx2, 4 inputs x 16 units, its eight sums in named registers: with an array and a
 * loop over the inputs, GCC kept them on the stack (a store and a load a row each: 3x slower). The same operations
 * in the same order. */
AVX2 static void full_block_avx2(const float *a, int64_t stride, const float *g, int64_t rows, int64_t units,
                                 float *grad) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int64_t r = 0; r < rows; r++) {
        const float *source = g + r * units, *values = a + r * stride;
        const __m256 g0 = _mm256_loadu_ps(source), g1 = _mm256_loadu_ps(source + 8);
        const __m256 v0 = _mm256_broadcast_ss(values), v1 = _mm256_broadcast_ss(values + 1),
                     v2 = _mm256_broadcast_ss(values + 2), v3 = _mm256_broadcast_ss(values + 3);
        s0 = _mm256_add_ps(s0, _mm256_mul_ps(v0, g0));
        s1 = _mm256_add_ps(s1, _mm256_mul_ps(v0, g1));
        s2 = _mm256_add_ps(s2, _mm256_mul_ps(v1, g0));
        s3 = _mm256_add_ps(s3, _mm256_mul_ps(v1, g1));
        s4 = _mm256_add_ps(s4, _mm256_mul_ps(v2, g0));
        s5 = _mm256_add_ps(s5, _mm256_mul_ps(v2, g1));
        s6 = _mm256_add_ps(s6, _mm256_mul_ps(v3, g0));
        s7 = _mm256_add_ps(s7, _mm256_mul_ps(v3, g1));
    }
    _mm256_storeu_ps(grad, s0);
    _mm256_storeu_ps(grad + 8, s1);
    _mm256_storeu_ps(grad + units, s2);
    _mm256_storeu_ps(grad + units + 8, s3);
    _mm256_storeu_ps(grad + 2 * units, s4);
    _mm256_storeu_ps(grad + 2 * units + 8, s5);
    _mm256_storeu_ps(grad + 3 * units, s6);
    _mm256_storeu_ps(grad + 3 * units + 8, s7);
}

/* kernel_gradient's AVX2 version: blocks of 4 inputs x 16 (then 8) units in registers across the rows, then the
 * last units by 8 inputs; returns the units done (all of them). */
AVX2 static int64_t kernel_gradient_avx2(const float *a, int64_t stride, const float *g, int64_t rows,
                                         int64_t inputs, int64_t units, float *grad) {
    int64_t u = 0;
    for (int width = 16; width >= 8; width -= 8)
        for (; u + width <= units; u += width) {
            const int blocks = width / 8;
            for (int64_t i = 0; i < inputs; i += 4) {
                const int count = inputs - i < 4 ? (int)(inputs - i) : 4;
                if (count == 4 && blocks == 2) {
                    full_block_avx2(a + i, stride, g + u, rows, units, grad + i * units + u);
                    continue;
                }
                __m256 s[8];
                for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
                for (int64_t r = 0; r < rows; r++) {
                    const float *source = g + r * units + u;
                    const __m256 g0 = _mm256_loadu_ps(source), g1 = blocks > 1 ? _mm256_loadu_ps(source + 8) : g0;
                    for (int k = 0; k < count; k++) {
                        const __m256 value = _mm256_broadcast_ss(a + r * stride + i + k);
                        s[2 * k] = _mm256_add_ps(s[2 * k], _mm256_mul_ps(value, g0));
                        s[2 * k + 1] = _mm256_add_ps(s[2 * k + 1], _mm256_mul_ps(value, g1));
                    }
                }
                for (int k = 0; k < count; k++) {
                    _mm256_storeu_ps(grad + (i + k) * units + u, s[2 * k]);
                    if (blocks > 1) _mm256_storeu_ps(grad + (i + k) * units + u + 8, s[2 * k + 1]);
                }
            }
        }
    /* The last units (fewer than 8: the output layer's 10 are 8 + 2), 8 inputs at a time, which lie together. */
    for (; u < units; u++) {
        int64_t i = 0;
        for (; i + 8 <= inputs; i += 8) {
            __m256 sum = _mm256_setzero_ps();
            for (int64_t r = 0; r < rows; r++)
                sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_loadu_ps(a + r * stride + i),
                                                       _mm256_broadcast_ss(g + r * units + u)));
            float lanes[8];
            _mm256_storeu_ps(lanes, sum);
            for (int k = 0; k < 8; k++) grad[(i + k) * units + u] = lanes[k];
        }
        for (; i < inputs; i++) {
            float sum = 0.0f;
            for (int64_t r = 0; r < rows; r++) sum += a[r * stride + i] * g[r * units + u];
            grad[i * units + u] = sum;
        }
    }
    return u;
}

/* Adam's update in AVX2, lane by lane as `update` does it; returns the weights done (a multiple of 8). */
AVX2 static int64_t adam_avx2(float *weight, float *m, float *v, const float *grad, int64_t size, float rest_1,
                              float rest_2, float epsilon, float step_size) {
    const int64_t done = size - size % 8;
    const __m256 r1 = _mm256_set1_ps(rest_1), r2 = _mm256_set1_ps(rest_2), eps = _mm256_set1_ps(epsilon),
                 alpha = _mm256_set1_ps(step_size);
    for (int64_t k = 0; k < done; k += 8)
        ADAM_LANES(_mm256, __m256, _mm256_loadu_ps(grad + k), m + k, v + k, weight + k, r1, r2, eps, alpha);
    return done;
}
#endif

/* grad = a.T @ g (inputs x units), each sum over the rows in order; a's rows lie `stride` floats apart (a thread
 * takes some of the inputs: any split gives the same bits). */
static void kernel_gradient(const float *a, int64_t stride, const float *g, int64_t rows, int64_t inputs,
                            int64_t units, float *grad) {
    int64_t done = 0;
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) done = kernel_gradient_avx2(a, stride, g, rows, inputs, units, grad);
#endif
    if (done == units) return;
    for (int64_t i = 0; i < inputs; i++) memset(grad + i * units + done, 0, sizeof(float) * (units - done));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < inputs; i++) {
            const float value = a[r * stride + i];
            float *row = grad + i * units;
            const float *source = g + r * units;
            for (int64_t u = done; u < units; u++) row[u] += value * source[u];
        }
}

/* One optimizer step on `size` weights: Adam (slots m and v; hyper: 1 - beta_1, 1 - beta_2, epsilon) with
 * this step's alpha, or plain SGD with the rate (as numpy_backend.py's _update). */
static void update(float *weight, float *m, float *v, const float *grad, int64_t size, int32_t optimizer,
                   const float *hyper, float step_size) {
    if (optimizer == OPTIMIZER_SGD) {
        for (int64_t k = 0; k < size; k++) weight[k] -= grad[k] * step_size;
        return;
    }
    const float rest_1 = hyper[0], rest_2 = hyper[1], epsilon = hyper[2];
    int64_t k = 0;
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) k = adam_avx2(weight, m, v, grad, size, rest_1, rest_2, epsilon, step_size);
#endif
    for (; k < size; k++) {
        m[k] += (grad[k] - m[k]) * rest_1;
        v[k] += (grad[k] * grad[k] - v[k]) * rest_2;
        const float step = m[k] * step_size / (__builtin_sqrtf(v[k]) + epsilon);
        weight[k] -= step;
    }
}

/* gradient *= the activation's derivative (from its output). ReLU's is a select here, which compilers turn
 * into vector blends (a zero where the output is not positive, +0 where _dense.c's product gives -0 for a
 * negative gradient: the same value); the others are _dense.c's. */
BODY void relu_gradient_body(float *restrict gradient, const float *restrict output, int64_t size) {
    for (int64_t k = 0; k < size; k++) gradient[k] = output[k] > 0.0f ? gradient[k] : 0.0f;
}
TWIN(relu_gradient, (float *restrict gradient, const float *restrict output, int64_t size), (gradient, output, size))

static void activation_gradient(float *gradient, const float *output, int64_t size, int32_t activation) {
    if (activation != RELU) digitlab_dense_activation_gradient(gradient, output, size, activation);
    else relu_gradient(gradient, output, size);
}

/* sums[u] = the sum of g[r, u] over the `rows` rows in order, for units u0 <= u < u1 (a bias's gradient). */
BODY void sum_rows_body(const float *restrict g, int64_t rows, int64_t units, int64_t u0, int64_t u1,
                        float *restrict sums) {
    memset(sums + u0, 0, sizeof(float) * (u1 - u0));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = u0; u < u1; u++) sums[u] += g[r * units + u];
}
TWIN(sum_rows, (const float *restrict g, int64_t rows, int64_t units, int64_t u0, int64_t u1, float *restrict sums),
     (g, rows, units, u0, u1, sums))

/* Rows first <= i < last of kernel (inputs x units) into kernel_t (its transpose, units x inputs). */
static void transpose(const float *kernel, int64_t inputs, int64_t units, int64_t first, int64_t last,
                      float *kernel_t) {
    for (int64_t i = first; i < last; i++)
        for (int64_t u = 0; u < units; u++) kernel_t[u * inputs + i] = kernel[i * units + u];
}

/* ------------------------------------------------------------------------------ the epoch */

typedef struct {
    /* The data, the epoch's batch order, the net and its settings: digitlab_train_epoch_deep's arguments. */
    const int64_t *starts;
    const uint16_t *cols;
    const float *vals;
    const uint8_t *levels; /* The pixels' levels, or NULL: digitlab_sparse_forward_levels. */
    const float *targets;
    const int64_t *labels, *order;
    int64_t n, batch, layers, widest, step;
    const int64_t *units;
    const int32_t *activations;
    const float *dropout, *norm, *step_sizes, *hyper;
    float *const *arrays, *const *slots;
    int32_t optimizer, loss;
    uint32_t seed;
    float clip;
    /* Shared buffers, a batch of rows each, per layer: the activation's output, the BatchNormalization's output,
     * the gradient with respect to its output (above the BatchNormalization), the one with respect to the
     * pre-activations, and the Dropout's output; each layer's input (one of those, or the Dropout's). */
    float *out[MAX_LAYERS], *normed[MAX_LAYERS], *upper[MAX_LAYERS], *delta[MAX_LAYERS];
    float *dropped[MAX_LAYERS];
    const float *input[MAX_LAYERS];
    unsigned char *masks[MAX_LAYERS];
    float *grad[MAX_LAYERS][TRAINED], *kernel_t[MAX_LAYERS];
    double *row_losses;
    /* The batch's targets and labels in batch order (gather), and the numbers 0 ... batch - 1 to index them. */
    float *batch_targets;
    int64_t *batch_labels, *numbers;
    /* Each thread's transpose of its rows of the batch; every thread reads all of them for its pixels. */
    int32_t *offsets[MAX_THREADS];
    Entry *entries[MAX_THREADS];
    Barrier barrier;
    Balance balance;      /* Each batch's rows and first-layer pixels, cut between the threads by their speeds. */
    int64_t *pixel_count; /* count_pixels's prefix sums: where the pixels' shares are cut. */
    int go;               /* Set once every thread is started: the workers wait for it. */
    double loss_sum;
} DeepEpoch;

typedef struct {
    DeepEpoch *epoch;
    int thread, threads;
    int64_t batch_number;            /* The batch it is at: its cuts (Balance). */
    int64_t first_pixel, last_pixel; /* The first layer's kernel rows this thread updates in this batch. */
    int64_t waited;                  /* Nanoseconds at the barriers in this batch (not its share's time). */
    /* This thread's own copies of each layer's batch statistics (mean, var, 1 / sqrt(var + epsilon)) and of the
     * BatchNormalization's backward sums (thread 0's are the gradients gamma and beta are updated with). */
    float *mean[MAX_LAYERS], *var[MAX_LAYERS], *scale[MAX_LAYERS], *sum_gamma[MAX_LAYERS], *sum_beta[MAX_LAYERS];
    float *scratch; /* A row of the first layer's units. */
    float *factors; /* 3 x the widest layer's units: norm_gradient's per-unit factors. */
    float *columns; /* A batch of rows of the widest layer: the inputs its kernel's gradient reads (input_columns). */
    int64_t correct;
    double *profile; /* This thread's DEEP_PHASES seconds, or NULL: not timed. */
} __attribute__((aligned(64))) DeepWorker; /* Each on lines of its own: a thread writes its own during a batch. */

/* This thread's share [*first, *last) of the batch's `rows`, cut by the threads' speeds (Balance). */
static void share_rows(int64_t rows, const DeepWorker *w, int64_t *first, int64_t *last) {
    *first = balance_cut(&w->epoch->balance, w->batch_number, w->thread, rows);
    *last = balance_cut(&w->epoch->balance, w->batch_number, w->thread + 1, rows);
}

/* This thread's even share [*first, *last) of a layer's `size` inputs or units: the same every batch, so each
 * thread keeps writing the same rows and columns of the small layers' arrays (a few percent of the epoch). */
static void share(int64_t size, const DeepWorker *w, int64_t *first, int64_t *last) {
    *first = size * w->thread / w->threads;
    *last = size * (w->thread + 1) / w->threads;
}

/* barrier_wait, its time counted in w->waited where the threads' shares follow their speeds. */
static void meet(DeepWorker *w, int *sense) {
    if (w->threads == 1) return;
    const int64_t arrived = now_ns();
    barrier_wait(&w->epoch->barrier, sense);
    w->waited += now_ns() - arrived;
}

/* value where kept is 1, +0 where it is 0: mask ? value : 0.0f without a branch (the masks are random: as a
 * branch, mispredicted half the time, the Dropout took 15% of the epoch), by masking the bits. */
static inline float kept_or_zero(float value, unsigned char kept) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    bits &= 0u - (uint32_t)kept;
    memcpy(&value, &bits, sizeof bits);
    return value;
}

/* out[k] = values[k] / keep where mask[k] is 1, +0 where it is 0, for `size` values: the Dropout forward (values:
 * its input) and backward (values: the gradient with respect to its output). */
BODY void keep_scaled_body(const float *values, const unsigned char *restrict mask, int64_t size, float keep,
                           float *out) {
    for (int64_t k = 0; k < size; k++) out[k] = kept_or_zero(values[k] / keep, mask[k]);
}
TWIN(keep_scaled,
     (const float *values, const unsigned char *restrict mask, int64_t size, float keep, float *out),
     (values, mask, size, keep, out))

/* Inputs i0 <= i < i1 of a layer for all `rows` rows of the batch, into dest (rows x (i1 - i0)), computed again from
 * x, the activation's output of the layer below (`units` wide), with the forward's operations: its
 * BatchNormalization's output x_hat * gamma + beta (gamma NULL: none), then the Dropout's value / keep where the
 * mask keeps it (mask NULL: none). The kernel's gradient reads them here, not the forward's buffers: those stay
 * with the thread that wrote them (docs/engine.md, "The ninth round"). */
BODY void input_columns_body(const float *restrict x, int64_t rows, int64_t units, int64_t i0, int64_t i1,
                             const float *restrict mean, const float *restrict scale, const float *restrict gamma,
                             const float *restrict beta, const unsigned char *restrict mask, float keep,
                             float *restrict dest) {
    const int64_t width = i1 - i0;
    for (int64_t r = 0; r < rows; r++) {
        float *to = dest + r * width - i0;
        if (gamma)
            for (int64_t u = i0; u < i1; u++) to[u] = X_HAT(x, r, u) * gamma[u] + beta[u];
        else
            for (int64_t u = i0; u < i1; u++) to[u] = x[r * units + u];
        if (mask)
            for (int64_t u = i0; u < i1; u++) to[u] = kept_or_zero(to[u] / keep, mask[r * units + u]);
    }
}
TWIN(input_columns,
     (const float *restrict x, int64_t rows, int64_t units, int64_t i0, int64_t i1, const float *restrict mean,
      const float *restrict scale, const float *restrict gamma, const float *restrict beta,
      const unsigned char *restrict mask, float keep, float *restrict dest),
     (x, rows, units, i0, i1, mean, scale, gamma, beta, mask, keep, dest))
#undef X_HAT

#ifdef HAVE_X86
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
/* 1 where the CPU has AVX-512 F, DQ (64-bit lane multiplies), BW and VL (byte masks), checked once. */
static int has_avx512dq(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    return cached;
}

/* z * multiplier in each 64-bit lane, the low 64 bits (vpmullq). */
AVX512 static inline __m512i times_512(__m512i z, uint64_t multiplier) {
    return _mm512_mullo_epi64(z, _mm512_set1_epi64((long long)multiplier));
}

/* The masks of entries first <= k < last, 8 at a time, as `uniform` draws them (the same 64-bit integers, the same
 * float and comparison in each lane): the hash measured 20% of the deep net's own code in scalar form. Returns the
 * entries done (a multiple of 8 past first). */
AVX512 static int64_t masks_avx512(uint32_t seed, int64_t step, int64_t layer, int64_t first, int64_t last,
                                   float keep, unsigned char *mask) {
    const uint64_t base = ((uint64_t)seed << 32) ^ (uint64_t)step * 0x9E3779B97F4A7C15ull ^ ((uint64_t)layer << 56);
    const __m512i lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), top = _mm512_set1_epi64((long long)base);
    const __m512 unit = _mm512_set1_ps(1.0f / 16777216.0f), threshold = _mm512_set1_ps(keep);
    int64_t k = first;
    for (; k + 8 <= last; k += 8) {
        __m512i z = _mm512_add_epi64(_mm512_set1_epi64(k), lanes);
        z = _mm512_xor_si512(top, times_512(z, 0xD1B54A32D192ED03ull));
        z = times_512(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), 0xBF58476D1CE4E5B9ull);
        z = times_512(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), 0x94D049BB133111EBull);
        z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
        /* The top 24 bits as a float (exact), times 2^-24, against the keep rate. */
        const __m256 drawn = _mm256_mul_ps(_mm512_cvtepi64_ps(_mm512_srli_epi64(z, 40)), _mm512_castps512_ps256(unit));
        const __mmask8 kept = _mm256_cmp_ps_mask(drawn, _mm512_castps512_ps256(threshold), _CMP_LT_OQ);
        _mm_storel_epi64((__m128i *)(mask + k), _mm_maskz_set1_epi8(kept, 1));
    }
    return k;
}
#endif

/* Layer l's Dropout (rate > 0) on rows first <= r < last of its input `values` (`in` wide) into e->dropped[l]:
 * each kept value divided by the keep rate; the mask (numbered by batch row and input, as one thread numbers
 * it) is kept for the backward pass. */
static void drop(DeepEpoch *e, int64_t l, int64_t step, const float *values, int64_t first, int64_t last) {
    const int64_t in = e->units[l];
    const float keep = 1.0f - e->dropout[l];
    unsigned char *mask = e->masks[l];
    int64_t k = first * in;
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on() && has_avx512dq()) k = masks_avx512(e->seed, step, l, k, last * in, keep, mask);
#endif
    for (; k < last * in; k++) mask[k] = uniform(e->seed, step, l, k) < keep;
    keep_scaled(values + first * in, mask + first * in, (last - first) * in, keep, e->dropped[l] + first * in);
}

/* Rows first <= r < last of the batch's targets and labels (its images `index`) into e->batch_targets and
 * e->batch_labels, in one tight loop: the images lie at random places, and the loss, reading them there between its
 * arithmetic, waited on those reads for half its time (its prefetches notwithstanding); here they overlap. */
static void gather(DeepEpoch *e, const int64_t *index, int64_t first, int64_t last) {
    const int64_t classes = e->units[e->layers];
    for (int64_t r = first; r < last; r++) {
        memcpy(e->batch_targets + r * classes, e->targets + index[r] * classes, sizeof(float) * classes);
        e->batch_labels[r] = e->labels[index[r]];
    }
}

/* One thread's share of every batch. Rows: its rows of the batch through the whole net (the first layer's
 * sparse product builds their transpose) and back. At each BatchNormalization the threads meet, and each
 * computes the batch's statistics (forward) or sums (backward) over every row, in row order, for itself. Before
 * each layer's gradient they meet again: each sums over every row for its inputs of the kernel (its pixels of the
 * first layer's, from every thread's transpose in row order) and its units of the bias; then each updates its
 * share of every array. Each sum runs in the same order whatever the number of threads: the same bits. */
static void *run_deep(void *argument) {
    DeepWorker *w = argument;
    DeepEpoch *e = w->epoch;
    const int64_t layers = e->layers, *units = e->units, inputs = units[0], classes = units[layers];
    const int t = w->thread;
    int sense = 0;
    double *profile = w->profile;
    wait_to_go(&e->go);
    int64_t mark = profile ? now_ns() : 0;
    int64_t step = e->step, batch_number = 0;
    for (int64_t start = 0; start < e->n; start += e->batch, batch_number++, step++) {
        const int64_t rows = e->n - start < e->batch ? e->n - start : e->batch;
        const int64_t *index = e->order + start;
        const double *cuts = e->balance.cuts[batch_number & 1];
        const int64_t began = now_ns();
        w->batch_number = batch_number, w->waited = 0;
        w->first_pixel = pixel_cut(e->pixel_count, inputs, cuts[t]);
        w->last_pixel = pixel_cut(e->pixel_count, inputs, cuts[t + 1]);
        int64_t r0, r1;
        int first_updated = 0; /* Its pixels of the first layer's kernel updated with their gradient (Adam rows). */
        share_rows(rows, w, &r0, &r1);
        const int64_t count = r1 - r0;
        gather(e, index, r0, r1);
        lap(profile, DEEP_LOSS, &mark);
        /* Forward. */
        digitlab_sparse_forward_levels(e->starts, e->cols, e->vals, e->levels, index + r0, 0, count, inputs,
                                       e->arrays[0], e->arrays[1], units[1], e->out[0] + r0 * units[1], r0,
                                       e->offsets[t], e->entries[t]);
        lap(profile, DEEP_FIRST_FORWARD, &mark);
        for (int64_t l = 0; l < layers; l++) {
            const int64_t in = units[l], width = units[l + 1];
            float *const *mine = e->arrays + ARRAYS * l;
            float *out = e->out[l] + r0 * width;
            if (l > 0) {
                if (e->dropout[l] > 0.0f) drop(e, l, step, e->normed[l - 1] ? e->normed[l - 1] : e->out[l - 1], r0, r1);
                digitlab_dense_forward(e->input[l] + r0 * in, count, in, mine[0], mine[1], width, out);
            }
            digitlab_dense_activate(out, count, width, e->activations[l]);
            if (mine[2]) {
                lap(profile, DEEP_ABOVE, &mark);
                meet(w, &sense); /* Every row's output, for the statistics. */
                lap(profile, DEEP_WAIT, &mark);
                norm_statistics(e->out[l], rows, width, e->norm[3 * l + 2], w->mean[l], w->var[l], w->scale[l]);
                if (t == 0) norm_move(mine, e->norm + 3 * l, w->mean[l], w->var[l], width);
                lap(profile, DEEP_STATISTICS, &mark);
                norm_apply(out, count, width, mine[2], mine[3], w->mean[l], w->scale[l], e->normed[l] + r0 * width);
            }
        }
        lap(profile, DEEP_ABOVE, &mark);
        digitlab_dense_loss(e->out[layers - 1] + r0 * classes, e->batch_targets + r0 * classes, e->batch_labels + r0,
                            e->numbers, count, rows, classes, e->loss, e->activations[layers - 1], e->clip,
                            e->delta[layers - 1] + r0 * classes, &w->correct, e->row_losses + r0);
        lap(profile, DEEP_LOSS, &mark);
        /* Backward: every gradient first, then the updates. One barrier a layer: past it, every row's delta[l] is
         * there for the kernel's and the bias's sums, and every row's gradient below for the BatchNormalization's. */
        for (int64_t l = layers - 1; l >= 0; l--) {
            const int64_t in = units[l], width = units[l + 1];
            const int normed = l > 0 && e->arrays[ARRAYS * (l - 1) + 2] != NULL;
            float *below = l == 0 ? NULL : (normed ? e->upper[l - 1] : e->delta[l - 1]) + r0 * in;
            if (l > 0) {
                digitlab_dense_backward(e->delta[l] + r0 * width, count, width, e->kernel_t[l], in, below);
                if (e->dropout[l] > 0.0f)
                    keep_scaled(below, e->masks[l] + r0 * in, count * in, 1.0f - e->dropout[l], below);
            }
            lap(profile, DEEP_BACKWARD, &mark);
            meet(w, &sense);
            lap(profile, DEEP_WAIT, &mark);
            if (l == 0) {
                /* Adam on this thread's pixels of the first layer's kernel, each gradient row used as it is summed
                 * from the threads' transposes, where the CPU can (nothing reads the kernel before the next batch);
                 * else the gradient, through _train.c's SGD of pixel ranges: on zeros with the rate -1 it leaves
                 * 0 - sum * -1, the sum itself, exactly (the sums start at +0, so never end at -0), with the bits
                 * of one transpose; the update below then takes it. */
                float *const *moments = e->slots;
                first_updated = e->optimizer == OPTIMIZER_ADAM &&
                                digitlab_sparse_adam_rows(e->offsets, e->entries, w->threads, w->first_pixel,
                                                          w->last_pixel, e->delta[0], width, e->arrays[0], moments[0],
                                                          moments[1], e->hyper, e->step_sizes[batch_number]);
                if (!first_updated) {
                    float *grad = e->grad[0][0] + w->first_pixel * width;
                    memset(grad, 0, sizeof(float) * (w->last_pixel - w->first_pixel) * width);
                    digitlab_sparse_sgd_rows(e->offsets, e->entries, w->threads, w->first_pixel, w->last_pixel,
                                             e->delta[0], width, w->scratch, e->grad[0][0], -1.0f);
                }
                lap(profile, first_updated ? DEEP_FIRST_UPDATE : DEEP_FIRST_GRADIENT, &mark);
            } else {
                int64_t i0, i1;
                share(in, w, &i0, &i1);
                const float *inputs_here = e->input[l] + i0;
                int64_t stride = in;
                if (e->input[l] != e->out[l - 1]) { /* A BatchNormalization's or a Dropout's output. */
                    float *const *below_arrays = e->arrays + ARRAYS * (l - 1);
                    input_columns(e->out[l - 1], rows, in, i0, i1, w->mean[l - 1], w->scale[l - 1], below_arrays[2],
                                  below_arrays[3], e->dropout[l] > 0.0f ? e->masks[l] : NULL, 1.0f - e->dropout[l],
                                  w->columns);
                    inputs_here = w->columns, stride = i1 - i0;
                }
                kernel_gradient(inputs_here, stride, e->delta[l], rows, i1 - i0, width, e->grad[l][0] + i0 * width);
            }
            int64_t u0, u1;
            share(width, w, &u0, &u1);
            sum_rows(e->delta[l], rows, width, u0, u1, e->grad[l][1]);
            if (normed)
                norm_sums(e->upper[l - 1], e->out[l - 1], w->mean[l - 1], w->scale[l - 1], rows, in,
                          w->sum_gamma[l - 1], w->sum_beta[l - 1]);
            lap(profile, DEEP_GRADIENTS, &mark);
            if (l == 0) break;
            if (normed) {
                norm_gradient(below, e->out[l - 1] + r0 * in, count, rows, in, e->arrays[ARRAYS * (l - 1) + 2],
                              w->mean[l - 1], w->scale[l - 1], w->sum_gamma[l - 1], w->sum_beta[l - 1], w->factors,
                              e->delta[l - 1] + r0 * in);
            }
            activation_gradient(e->delta[l - 1] + r0 * in, e->out[l - 1] + r0 * in, count * in,
                                e->activations[l - 1]);
        }
        lap(profile, DEEP_BACKWARD, &mark);
        /* The updates: this thread's pixels of the first layer's kernel, its inputs of the others' (and of their
         * transposes), its units of every bias, gamma and beta. Every gradient is whole: the first layer's kernel's
         * and bias's shares are the ones this thread just summed. */
        const float step_size = e->step_sizes[batch_number];
        for (int64_t l = 0; l < layers; l++) {
            const int64_t in = units[l], width = units[l + 1];
            int64_t i0, i1, u0, u1;
            share(in, w, &i0, &i1);
            share(width, w, &u0, &u1);
            if (l == 0) i0 = w->first_pixel, i1 = w->last_pixel;
            for (int part = 0; part < TRAINED; part++) {
                float *weight = e->arrays[ARRAYS * l + part];
                if (!weight || (l == 0 && part == 0 && first_updated)) continue;
                float *const *moments = e->slots + 2 * (TRAINED * l + part);
                const int64_t first = part == 0 ? i0 * width : u0, size = part == 0 ? (i1 - i0) * width : u1 - u0;
                update(weight + first, moments[0] ? moments[0] + first : NULL, moments[1] ? moments[1] + first : NULL,
                       e->grad[l][part] + first, size, e->optimizer, e->hyper, step_size);
            }
            if (l > 0) transpose(e->arrays[ARRAYS * l], in, width, i0, i1, e->kernel_t[l]);
            lap(profile, l == 0 ? DEEP_FIRST_UPDATE : DEEP_OTHER_UPDATES, &mark);
        }
        if (t == 0)
            for (int64_t r = 0; r < rows; r++) e->loss_sum += e->row_losses[r];
        balance_record(&e->balance, t, now_ns() - began - w->waited);
        lap(profile, DEEP_OTHER_UPDATES, &mark);
        meet(w, &sense); /* The next batch reads every updated array and the row losses' room. */
        /* Every thread's share of this batch is timed, and the next batch's cuts are in use: the one after it. */
        if (t == 0 && w->threads > 1) balance_next(&e->balance, batch_number, batch_number + 2);
        lap(profile, DEEP_WAIT, &mark);
    }
    return NULL;
}

/* One epoch over the images in `order` (n of them, batches of `batch`), in place on the arrays and slots.
 * units[0] is the number of inputs, units[l + 1] layer l's width. Per layer: activations[l]; dropout[l], the
 * rate on its input (0: none; layer 0 takes none); norm[3 l ... 3 l + 2], its BatchNormalization's momentum,
 * 1 - momentum and epsilon (arrays[ARRAYS l + 2] NULL: none). `step_sizes` holds each batch's Adam alpha (or
 * the SGD rate) in order; `hyper` Adam's 1 - beta_1, 1 - beta_2 and epsilon. `step` is the step count before
 * the epoch (the Dropout masks' numbering). `threads` threads share each batch (below 1: one; the results are
 * the same bits for any number). Adds the loss sum and correct answers to *loss_sum and *correct, and, where
 * `profile` is not NULL, each thread's seconds per phase to profile[thread * DEEP_PHASES + phase]. Returns 0, or
 * -1 when memory could not be had (nothing is changed then). `levels`: the rows' levels, or NULL
 * (digitlab_sparse_forward_levels). */
int digitlab_train_epoch_deep_timed(const int64_t *starts, const uint16_t *cols, const float *vals,
                                    const uint8_t *levels, int64_t most_per_row, const float *targets,
                                    const int64_t *labels, const int64_t *order, int64_t n, int64_t batch,
                                    int64_t layers, const int64_t *units, const int32_t *activations,
                                    const float *dropout, const float *norm, float *const *arrays,
                                    float *const *slots, int32_t optimizer, const float *step_sizes,
                                    const float *hyper, int64_t step, uint32_t seed, int32_t loss, float clip,
                                    double *loss_sum, int64_t *correct, int32_t threads, double *profile) {
    const int64_t entered = profile ? now_ns() : 0;
    if (threads < 1) threads = 1;
    if (layers < 1 || layers > MAX_LAYERS || batch < 1 || threads > MAX_THREADS) return -1;
    DeepEpoch e = {starts, cols, vals, levels, targets, labels, order, n, batch, layers, 1, step, units, activations,
                   dropout, norm, step_sizes, hyper, arrays, slots, optimizer, loss, seed, clip};
    int64_t total = 0;
    for (int64_t l = 1; l <= layers; l++) {
        total += units[l];
        e.widest = units[l] > e.widest ? units[l] : e.widest;
    }
    const int64_t inputs = units[0], widest = e.widest, capacity = batch * most_per_row + 1;
    /* Per layer, a batch of rows each: out, normed, upper, delta (4 x total), and the Dropout's output. */
    void *blocks[2]; /* Where the two page-aligned buffers lie, to free. */
    float *buffers =
        aligned_block(sizeof(float) * batch * (4 * total + layers * widest), PAGE_BYTES, &blocks[0]);
    unsigned char *masks = malloc((size_t)(batch * widest * layers));
    float *grads = aligned_block(sizeof(float) * (inputs * units[1] + widest * widest * layers + 4 * total), PAGE_BYTES,
                                 &blocks[1]);
    float *transposes = malloc(sizeof(float) * widest * widest * layers);
    /* Each thread's statistics, a row, and norm_gradient's factors. */
    const int64_t own_size = 5 * total + units[1] + 3 * e.widest + batch * e.widest;
    float *own = malloc(sizeof(float) * own_size * threads);
    e.row_losses = malloc(sizeof(double) * batch);
    e.batch_targets = malloc(sizeof(float) * batch * units[layers]);
    e.batch_labels = malloc(sizeof(int64_t) * batch * 2);
    int32_t *offsets = malloc(sizeof(int32_t) * (inputs + 1) * threads);
    Entry *entries = malloc(sizeof(Entry) * capacity * threads);
    e.pixel_count = malloc(sizeof(int64_t) * (inputs + 1));
    int failed = !buffers || !masks || !grads || !transposes || !own || !e.row_losses || !offsets || !entries ||
                 !e.batch_targets || !e.batch_labels || !e.pixel_count;
    if (!failed) {
        e.numbers = e.batch_labels + batch;
        for (int64_t r = 0; r < batch; r++) e.numbers[r] = r;
        float *next = buffers, *next_grad = grads + inputs * units[1];
        for (int64_t l = 0; l < layers; l++) {
            const int64_t width = units[l + 1];
            e.out[l] = next, e.normed[l] = next + batch * width;
            e.upper[l] = next + 2 * batch * width, e.delta[l] = next + 3 * batch * width;
            next += 4 * batch * width;
            if (!arrays[ARRAYS * l + 2]) e.normed[l] = NULL;
            e.masks[l] = masks + l * batch * widest;
            e.grad[l][0] = l == 0 ? grads : next_grad;
            next_grad += l == 0 ? 0 : units[l] * width;
        }
        for (int64_t l = 0; l < layers; l++) {
            for (int part = 1; part < TRAINED; part++, next_grad += units[l + 1]) e.grad[l][part] = next_grad;
            e.kernel_t[l] = transposes + l * widest * widest;
            if (l > 0) transpose(arrays[ARRAYS * l], units[l], units[l + 1], 0, units[l], e.kernel_t[l]);
            if (l > 0) {
                e.dropped[l] = next + (l - 1) * batch * widest;
                e.input[l] = dropout[l] > 0.0f ? e.dropped[l] : e.normed[l - 1] ? e.normed[l - 1] : e.out[l - 1];
            }
        }
        DeepWorker workers[MAX_THREADS];
        if (threads > 1) count_pixels(starts, cols, n, inputs, e.pixel_count); /* One thread: 0 and 1 cut. */
        balance_init(&e.balance, threads);
        for (int t = 0; t < threads; t++) {
            DeepWorker *w = &workers[t];
            *w = (DeepWorker){&e, t, threads};
            w->profile = profile ? profile + DEEP_PHASES * t : NULL;
            float *mine = own + own_size * t;
            for (int64_t l = 0; l < layers; l++) {
                const int64_t width = units[l + 1];
                w->mean[l] = mine, w->var[l] = mine + width, w->scale[l] = mine + 2 * width;
                w->sum_gamma[l] = t == 0 ? e.grad[l][2] : mine + 3 * width;
                w->sum_beta[l] = t == 0 ? e.grad[l][3] : mine + 4 * width;
                mine += 5 * width;
            }
            w->scratch = mine;
            w->factors = mine + units[1];
            w->columns = w->factors + 3 * e.widest;
            e.offsets[t] = offsets + (inputs + 1) * t;
            e.entries[t] = entries + capacity * t;
        }
        pthread_t handles[MAX_THREADS];
        const int started =
            start_threads(threads, run_deep, workers, sizeof(DeepWorker), handles, &e.go, &e.n, &e.barrier);
        if (started < threads) /* Alone: every row and pixel. */
            workers[0].threads = 1, balance_init(&e.balance, 1);
        double before = 0.0;
        if (profile)
            for (int phase = 0; phase < DEEP_PHASES; phase++) before += profile[phase];
        run_deep(&workers[0]);
        join_threads(started, handles);
        if (profile) {
            /* Thread 0's time in this call that no phase of its batches holds. */
            double timed = -before;
            for (int phase = 0; phase < DEEP_PHASES; phase++) timed += profile[phase];
            profile[DEEP_SETUP] += (double)(now_ns() - entered) * 1e-9 - timed;
        }
        *loss_sum += e.loss_sum;
        for (int t = 0; t < threads; t++) *correct += workers[t].correct;
    }
    free(blocks[0]);
    free(masks);
    free(blocks[1]);
    free(transposes);
    free(own);
    free(e.row_losses);
    free(e.batch_targets);
    free(e.batch_labels);
    free(offsets);
    free(entries);
    free(e.pixel_count);
    return failed ? -1 : 0;
}

/* digitlab_train_epoch_deep_timed untimed: the browser's engine (engine-deep.js) calls this one. */
int digitlab_train_epoch_deep(const int64_t *starts, const uint16_t *cols, const float *vals, int64_t most_per_row,
                              const float *targets, const int64_t *labels, const int64_t *order, int64_t n,
                              int64_t batch, int64_t layers, const int64_t *units, const int32_t *activations,
                              const float *dropout, const float *norm, float *const *arrays, float *const *slots,
                              int32_t optimizer, const float *step_sizes, const float *hyper, int64_t step,
                              uint32_t seed, int32_t loss, float clip, double *loss_sum, int64_t *correct,
                              int32_t threads) {
    return digitlab_train_epoch_deep_timed(starts, cols, vals, NULL, most_per_row, targets, labels, order, n, batch,
                                           layers, units, activations, dropout, norm, arrays, slots, optimizer,
                                           step_sizes, hyper, step, seed, loss, clip, loss_sum, correct, threads,
                                           NULL);
}

/* Evaluation and predictions of such a net, as Keras infers: each BatchNormalization with its moving
 * statistics (norm.py's evaluate: scale = gamma / sqrt(moving variance + epsilon), y = x * scale + (beta -
 * moving mean * scale)) and no Dropout, in chunks of 256 images. The images are `index`'s n (NULL: 0 ... n - 1);
 * `arrays`, `units`, `activations` and `norm` as digitlab_train_epoch_deep takes them. With `outputs` (n x
 * classes) it writes the net's outputs there; with `targets` each image's loss into row_losses (the caller sums
 * them in order) and the right answers into *correct, as digitlab_evaluate does for nets without it. The
 * browser's engine calls it (engine.js) for validation and the drawing pad. Returns 0, or -1 when memory could
 * not be had. */
int digitlab_infer_deep(const int64_t *starts, const uint16_t *cols, const float *vals, const float *targets,
                        const int64_t *labels, const int64_t *index, int64_t n, int64_t layers, const int64_t *units,
                        const int32_t *activations, const float *norm, float *const *arrays, int32_t loss, float clip,
                        float *outputs, double *row_losses, int64_t *correct) {
    if (layers < 1 || layers > MAX_LAYERS) return -1;
    const int64_t chunk = 256, classes = units[layers];
    int64_t widest = 1;
    for (int64_t l = 1; l <= layers; l++) widest = units[l] > widest ? units[l] : widest;
    float *here = malloc(sizeof(float) * chunk * widest), *there = malloc(sizeof(float) * chunk * widest);
    float *gradient = malloc(sizeof(float) * chunk * classes), *scale = malloc(sizeof(float) * widest * 2);
    int64_t *numbers = index ? NULL : malloc(sizeof(int64_t) * chunk);
    const int failed = !here || !there || !gradient || !scale || (!index && !numbers);
    for (int64_t start = 0; !failed && start < n; start += chunk) {
        const int64_t rows = n - start < chunk ? n - start : chunk;
        const int64_t *rows_index = index ? index + start : numbers;
        if (!index)
            for (int64_t r = 0; r < rows; r++) numbers[r] = start + r;
        digitlab_sparse_forward(starts, cols, vals, rows_index, 0, rows, units[0], arrays[0], arrays[1], units[1],
                                here, 0, NULL, NULL);
        for (int64_t l = 0; l < layers; l++) {
            const int64_t width = units[l + 1];
            float *const *mine = arrays + ARRAYS * l;
            if (l > 0) {
                digitlab_dense_forward(here, rows, units[l], mine[0], mine[1], width, there);
                float *swap = here;
                here = there, there = swap;
            }
            digitlab_dense_activate(here, rows, width, activations[l]);
            if (!mine[2]) continue;
            float *shift = scale + widest;
            const float epsilon = norm[3 * l + 2];
            for (int64_t u = 0; u < width; u++) {
                scale[u] = mine[2][u] / __builtin_sqrtf(mine[5][u] + epsilon);
                shift[u] = mine[3][u] - mine[4][u] * scale[u];
            }
            for (int64_t r = 0; r < rows; r++)
                for (int64_t u = 0; u < width; u++) here[r * width + u] = here[r * width + u] * scale[u] + shift[u];
        }
        if (outputs) memcpy(outputs + start * classes, here, sizeof(float) * rows * classes);
        if (targets)
            digitlab_dense_loss(here, targets, labels, rows_index, rows, rows, classes, loss, activations[layers - 1],
                                clip, gradient, correct, row_losses + start);
    }
    free(here);
    free(there);
    free(gradient);
    free(scale);
    free(numbers);
    return failed ? -1 : 0;
}
