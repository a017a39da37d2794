/* A whole training epoch of a dense net with BatchNormalization, Dropout and Adam in one C call: the book's
 * deep net (chapter 9) on the fast engine.
 *
 * _train.c runs plain SGD without Dropout on several threads; this file runs the nets it cannot: any
 * hidden Dense layer may be followed by a BatchNormalization (after its activation, as models.py builds
 * the deep net) and any layer above the first may have a Dropout on its input, trained with Adam or plain
 * SGD. One thread, every batch of the epoch here: the sparse first layer (_kernels.c), the layers above it,
 * the loss and the activations (_dense.c), then this file's BatchNormalization, Dropout, gradients and
 * optimizer update, with the formulas of numpy_backend.py (Keras's own, JAX backend) in float32:
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
 * portable version's order, without fused multiply-adds, so both give the same bits.
 *
 * Evaluation (moving statistics) runs in numpy_backend.py. The browser's engine builds this file too
 * (Makefile target `wasm`): it uses no C library function beyond _wasm.c's malloc and free.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#define AVX2 __attribute__((target("avx2")))
#endif

#define MAX_LAYERS 16
#define OPTIMIZER_SGD 0
#define OPTIMIZER_ADAM 1
/* Per layer, in `arrays`: kernel, bias, gamma, beta, moving mean, moving variance (the last four NULL without
 * a BatchNormalization); in `slots`: the first and second moments of the first four (Adam only). */
#define ARRAYS 6
#define TRAINED 4
#define RELU 2

typedef struct {
    int32_t row;
    float value;
} Entry;
void digitlab_sparse_forward(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                             int64_t first, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                             int64_t units, float *out, int64_t row0, int32_t *offsets, Entry *entries);
void digitlab_sparse_weight_gradient(int32_t *offsets, Entry *entries, int64_t inputs, const float *dz,
                                     int64_t units, float *grad, float *weight, float rate);
void digitlab_dense_forward(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                            int64_t units, float *out);
void digitlab_dense_backward(const float *g, int64_t rows, int64_t units, const float *kernel_t, int64_t inputs,
                             float *below);
void digitlab_dense_activate(float *values, int64_t rows, int64_t units, int32_t activation);
void digitlab_dense_activation_gradient(float *gradient, const float *output, int64_t size, int32_t activation);
int digitlab_kernels_simd_on(void);
void digitlab_dense_loss(const float *outputs, const float *targets, const int64_t *labels, const int64_t *index,
                         int64_t rows, int64_t batch_rows, int64_t classes, int32_t loss, int32_t activation,
                         float clip, float *gradient, int64_t *correct, double *row_losses);

/* A uniform float in [0, 1) from 24 bits of a 64-bit mix (SplitMix64's finalizer) of the four numbers. */
static float uniform(uint32_t seed, int64_t step, int64_t layer, int64_t entry) {
    uint64_t z = ((uint64_t)seed << 32) ^ (uint64_t)step * 0x9E3779B97F4A7C15ull;
    z ^= ((uint64_t)layer << 56) ^ (uint64_t)entry * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* BatchNormalization in training, for `rows` x `units` values x: fills x_hat and y, the batch's 1 / sqrt(var +
 * epsilon) into scale, and moves the moving statistics. `mean` and `var` are `units` floats of scratch. */
static void norm_forward(const float *x, int64_t rows, int64_t units, float *const *arrays, const float *settings,
                         float *x_hat, float *y, float *mean, float *var, float *scale) {
    const float *gamma = arrays[2], *beta = arrays[3], momentum = settings[0], rest = settings[1],
                epsilon = settings[2], count = (float)rows;
    float *moving_mean = arrays[4], *moving_var = arrays[5];
    memset(mean, 0, sizeof(float) * units);
    memset(var, 0, sizeof(float) * units);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) mean[u] += x[r * units + u];
    for (int64_t u = 0; u < units; u++) mean[u] /= count;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) {
            const float centered = x[r * units + u] - mean[u];
            x_hat[r * units + u] = centered;
            var[u] += centered * centered;
        }
    for (int64_t u = 0; u < units; u++) {
        var[u] /= count;
        moving_mean[u] = moving_mean[u] * momentum + mean[u] * rest;
        moving_var[u] = moving_var[u] * momentum + var[u] * rest;
        scale[u] = 1.0f / __builtin_sqrtf(var[u] + epsilon);
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) {
            const float normalized = x_hat[r * units + u] * scale[u];
            x_hat[r * units + u] = normalized;
            y[r * units + u] = normalized * gamma[u] + beta[u];
        }
}

/* BatchNormalization's backward pass, in place on g (rows x units): the gradient with respect to its output
 * becomes the one with respect to its input; gamma's and beta's gradients go to grad_gamma and grad_beta. */
static void norm_backward(float *g, const float *x_hat, int64_t rows, int64_t units, const float *gamma,
                          const float *scale, float *grad_gamma, float *grad_beta) {
    const float count = (float)rows;
    memset(grad_gamma, 0, sizeof(float) * units);
    memset(grad_beta, 0, sizeof(float) * units);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) {
            grad_beta[u] += g[r * units + u];
            grad_gamma[u] += g[r * units + u] * x_hat[r * units + u];
        }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t u = 0; u < units; u++) {
            const float shifted = g[r * units + u] - grad_beta[u] / count;
            g[r * units + u] = (shifted - x_hat[r * units + u] * (grad_gamma[u] / count)) * (scale[u] * gamma[u]);
        }
}

#ifdef HAVE_X86
/* kernel_gradient's AVX2 version: blocks of 4 inputs x 16 (then 8) units in registers across the rows, then the
 * last units by 8 inputs; returns the units done (all of them). */
AVX2 static int64_t kernel_gradient_avx2(const float *a, const float *g, int64_t rows, int64_t inputs,
                                         int64_t units, float *grad) {
    int64_t u = 0;
    for (int width = 16; width >= 8; width -= 8)
        for (; u + width <= units; u += width) {
            const int blocks = width / 8;
            for (int64_t i = 0; i < inputs; i += 4) {
                const int count = inputs - i < 4 ? (int)(inputs - i) : 4;
                __m256 s[8];
                for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
                for (int64_t r = 0; r < rows; r++) {
                    const float *source = g + r * units + u;
                    const __m256 g0 = _mm256_loadu_ps(source), g1 = blocks > 1 ? _mm256_loadu_ps(source + 8) : g0;
                    for (int k = 0; k < count; k++) {
                        const __m256 value = _mm256_broadcast_ss(a + r * inputs + i + k);
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
                sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_loadu_ps(a + r * inputs + i),
                                                       _mm256_broadcast_ss(g + r * units + u)));
            float lanes[8];
            _mm256_storeu_ps(lanes, sum);
            for (int k = 0; k < 8; k++) grad[(i + k) * units + u] = lanes[k];
        }
        for (; i < inputs; i++) {
            float sum = 0.0f;
            for (int64_t r = 0; r < rows; r++) sum += a[r * inputs + i] * g[r * units + u];
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
    for (int64_t k = 0; k < done; k += 8) {
        const __m256 g = _mm256_loadu_ps(grad + k);
        __m256 mk = _mm256_loadu_ps(m + k), vk = _mm256_loadu_ps(v + k);
        mk = _mm256_add_ps(mk, _mm256_mul_ps(_mm256_sub_ps(g, mk), r1));
        vk = _mm256_add_ps(vk, _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(g, g), vk), r2));
        const __m256 step = _mm256_div_ps(_mm256_mul_ps(mk, alpha), _mm256_add_ps(_mm256_sqrt_ps(vk), eps));
        _mm256_storeu_ps(m + k, mk);
        _mm256_storeu_ps(v + k, vk);
        _mm256_storeu_ps(weight + k, _mm256_sub_ps(_mm256_loadu_ps(weight + k), step));
    }
    return done;
}
#endif

/* grad = a.T @ g (inputs x units), each sum over the rows in order. */
static void kernel_gradient(const float *a, const float *g, int64_t rows, int64_t inputs, int64_t units,
                            float *grad) {
    int64_t done = 0;
#ifdef HAVE_X86
    if (digitlab_kernels_simd_on()) done = kernel_gradient_avx2(a, g, rows, inputs, units, grad);
#endif
    if (done == units) return;
    for (int64_t i = 0; i < inputs; i++) memset(grad + i * units + done, 0, sizeof(float) * (units - done));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < inputs; i++) {
            const float value = a[r * inputs + i];
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
static void activation_gradient(float *gradient, const float *output, int64_t size, int32_t activation) {
    if (activation != RELU) {
        digitlab_dense_activation_gradient(gradient, output, size, activation);
        return;
    }
    for (int64_t k = 0; k < size; k++) gradient[k] = output[k] > 0.0f ? gradient[k] : 0.0f;
}

static void transpose(const float *kernel, int64_t inputs, int64_t units, float *kernel_t) {
    for (int64_t i = 0; i < inputs; i++)
        for (int64_t u = 0; u < units; u++) kernel_t[u * inputs + i] = kernel[i * units + u];
}

/* One epoch over the images in `order` (n of them, batches of `batch`), in place on the arrays and slots.
 * units[0] is the number of inputs, units[l + 1] layer l's width. Per layer: activations[l]; dropout[l], the
 * rate on its input (0: none; layer 0 takes none); norm[3 l ... 3 l + 2], its BatchNormalization's momentum,
 * 1 - momentum and epsilon (arrays[ARRAYS l + 2] NULL: none). `step_sizes` holds each batch's Adam alpha (or
 * the SGD rate) in order; `hyper` Adam's 1 - beta_1, 1 - beta_2 and epsilon. `step` is the step count before
 * the epoch (the Dropout masks' numbering). Adds the loss sum and correct answers to *loss_sum and *correct.
 * Returns 0, or -1 when memory could not be had (nothing is changed then). */
int digitlab_train_epoch_deep(const int64_t *starts, const uint16_t *cols, const float *vals, int64_t most_per_row,
                              const float *targets, const int64_t *labels, const int64_t *order, int64_t n,
                              int64_t batch, int64_t layers, const int64_t *units, const int32_t *activations,
                              const float *dropout, const float *norm, float *const *arrays, float *const *slots,
                              int32_t optimizer, const float *step_sizes, const float *hyper, int64_t step,
                              uint32_t seed, int32_t loss, float clip, double *loss_sum, int64_t *correct) {
    if (layers < 1 || layers > MAX_LAYERS || batch < 1) return -1;
    int64_t total = 0, widest = 1; /* The widest layer's units (the inputs not counted). */
    for (int64_t l = 1; l <= layers; l++) {
        total += units[l];
        widest = units[l] > widest ? units[l] : widest;
    }
    const int64_t inputs = units[0];
    /* Per layer, a batch of rows each: the activation's output, the BatchNormalization's x_hat and output,
     * the gradient with respect to the pre-activations, and the Dropout's output (the layer's input). */
    float *buffers = malloc(sizeof(float) * batch * (4 * total + layers * widest));
    unsigned char *masks = malloc((size_t)(batch * widest * layers)); /* Each Dropout's kept entries (1). */
    float *grads = malloc(sizeof(float) * (inputs * units[1] + widest * widest * layers + 4 * total));
    float *transposes = malloc(sizeof(float) * widest * widest * layers);
    float *stats = malloc(sizeof(float) * (total + 2 * widest));
    double *row_losses = malloc(sizeof(double) * batch);
    int32_t *offsets = malloc(sizeof(int32_t) * (inputs + 1));
    Entry *entries = malloc(sizeof(Entry) * (batch * most_per_row + 1));
    int failed = !buffers || !masks || !grads || !transposes || !stats || !row_losses || !offsets || !entries;
    if (!failed) {
        float *out[MAX_LAYERS], *x_hat[MAX_LAYERS], *normed[MAX_LAYERS], *dropped[MAX_LAYERS], *delta[MAX_LAYERS];
        float *grad[MAX_LAYERS][TRAINED], *kernel_t[MAX_LAYERS], *scale[MAX_LAYERS], *scratch = stats + total;
        const float *input[MAX_LAYERS + 1];
        float *next = buffers, *next_grad = grads + inputs * units[1];
        for (int64_t l = 0; l < layers; l++) {
            const int64_t width = units[l + 1];
            out[l] = next, x_hat[l] = next + batch * width, normed[l] = next + 2 * batch * width;
            delta[l] = next + 3 * batch * width;
            next += 4 * batch * width;
            grad[l][0] = l == 0 ? grads : next_grad;
            next_grad += l == 0 ? 0 : units[l] * width;
        }
        for (int64_t l = 0; l < layers; l++) {
            for (int part = 1; part < TRAINED; part++, next_grad += units[l + 1]) grad[l][part] = next_grad;
            kernel_t[l] = transposes + l * widest * widest;
            if (l > 0) transpose(arrays[ARRAYS * l], units[l], units[l + 1], kernel_t[l]);
        }
        for (int64_t l = 0, offset = 0; l < layers; offset += units[l + 1], l++) scale[l] = stats + offset;
        for (int64_t l = 1; l < layers; l++) dropped[l] = next + (l - 1) * batch * widest;
        int64_t batch_number = 0;
        for (int64_t start = 0; start < n; start += batch, batch_number++, step++) {
            const int64_t rows = n - start < batch ? n - start : batch;
            const int64_t *index = order + start;
            /* Forward. */
            digitlab_sparse_forward(starts, cols, vals, index, 0, rows, inputs, arrays[0], arrays[1], units[1],
                                    out[0], 0, offsets, entries);
            for (int64_t l = 0; l < layers; l++) {
                const int64_t in = units[l], width = units[l + 1];
                float *const *mine = arrays + ARRAYS * l;
                if (l > 0) {
                    const float *values = input[l];
                    if (dropout[l] > 0.0f) {
                        const float keep = 1.0f - dropout[l];
                        unsigned char *mask = masks + l * batch * widest;
                        for (int64_t k = 0; k < rows * in; k++) mask[k] = uniform(seed, step, l, k) < keep;
                        for (int64_t k = 0; k < rows * in; k++) dropped[l][k] = mask[k] ? values[k] / keep : 0.0f;
                        values = dropped[l];
                    }
                    input[l] = values;
                    digitlab_dense_forward(values, rows, in, mine[0], mine[1], width, out[l]);
                }
                digitlab_dense_activate(out[l], rows, width, activations[l]);
                input[l + 1] = out[l];
                if (mine[2]) {
                    norm_forward(out[l], rows, width, mine, norm + 3 * l, x_hat[l], normed[l], scratch,
                                 scratch + widest, scale[l]);
                    input[l + 1] = normed[l];
                }
            }
            const int64_t classes = units[layers];
            digitlab_dense_loss(out[layers - 1], targets, labels, index, rows, rows, classes, loss,
                                activations[layers - 1], clip, delta[layers - 1], correct, row_losses);
            for (int64_t r = 0; r < rows; r++) *loss_sum += row_losses[r];
            /* Backward: every gradient first, then the updates. */
            for (int64_t l = layers - 1; l >= 0; l--) {
                const int64_t in = units[l], width = units[l + 1];
                if (l == 0)
                    digitlab_sparse_weight_gradient(offsets, entries, inputs, delta[0], width, grad[0][0], NULL, 0.0f);
                else
                    kernel_gradient(input[l], delta[l], rows, in, width, grad[l][0]);
                memset(grad[l][1], 0, sizeof(float) * width);
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t u = 0; u < width; u++) grad[l][1][u] += delta[l][r * width + u];
                if (l == 0) break;
                float *below = delta[l - 1];
                digitlab_dense_backward(delta[l], rows, width, kernel_t[l], in, below);
                if (dropout[l] > 0.0f) {
                    const float keep = 1.0f - dropout[l];
                    const unsigned char *mask = masks + l * batch * widest;
                    for (int64_t k = 0; k < rows * in; k++) below[k] = mask[k] ? below[k] / keep : 0.0f;
                }
                float *const *lower = arrays + ARRAYS * (l - 1);
                if (lower[2])
                    norm_backward(below, x_hat[l - 1], rows, in, lower[2], scale[l - 1], grad[l - 1][2],
                                  grad[l - 1][3]);
                activation_gradient(below, out[l - 1], rows * in, activations[l - 1]);
            }
            const float step_size = step_sizes[batch_number];
            for (int64_t l = 0; l < layers; l++) {
                const int64_t sizes[TRAINED] = {units[l] * units[l + 1], units[l + 1], units[l + 1], units[l + 1]};
                for (int part = 0; part < TRAINED; part++) {
                    float *weight = arrays[ARRAYS * l + part];
                    if (!weight) continue;
                    float *const *moments = slots + 2 * (TRAINED * l + part);
                    update(weight, moments[0], moments[1], grad[l][part], sizes[part], optimizer, hyper, step_size);
                }
                if (l > 0) transpose(arrays[ARRAYS * l], units[l], units[l + 1], kernel_t[l]);
            }
        }
    }
    free(buffers);
    free(masks);
    free(grads);
    free(transposes);
    free(stats);
    free(row_losses);
    free(offsets);
    free(entries);
    return failed ? -1 : 0;
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
