/* What the engine's C files share: the codes of activations and losses, the transpose's Entry, and the
 * functions each file exports to the others (_kernels.c: the sparse first layer; _dense.c: the layers
 * above it). Included by _kernels.c, _dense.c, _train.c and _deep.c, so each declaration is written once
 * and the compiler checks every definition against it.
 */

#ifndef DIGITLAB_ENGINE_H
#define DIGITLAB_ENGINE_H

#include <stdint.h>
#include <stdlib.h>

/* Activations and losses, as spec.py codes them. */
#define LINEAR 0
#define SIGMOID 1
#define RELU 2
#define TANH 3
#define SOFTMAX 4
#define MEAN_SQUARED_ERROR 0
#define CROSSENTROPY 1

/* One nonzero pixel of a batch's transpose: its row in the batch and its value. */
typedef struct {
    int32_t row;
    float value;
} Entry;

/* A page: where the epochs' buffers start (aligned_block), as numpy_backend.PAGE does the weights. */
#define PAGE_BYTES 4096

/* `bytes` at a multiple of `alignment` (a power of two) within a block from malloc, stored in *block (what to
 * free), or NULL. The epochs' buffers stream beside the weights and Adam's slots, which the Python side makes
 * page-aligned (numpy_backend.page_aligned): aligned alike, none of their 64-float rows spans an extra line. */
static inline void *aligned_block(size_t bytes, size_t alignment, void **block) {
    *block = malloc(bytes + alignment);
    return *block ? (void *)(((uintptr_t)*block + alignment - 1) & ~(uintptr_t)(alignment - 1)) : NULL;
}

/* Adam's update of one register of weights at w, their moments at m and v and their gradient g, lane by lane as
 * _deep.c's portable `update` does it (no fused multiply-add): m += (g - m) * r1, v += (g * g - v) * r2,
 * w -= m * alpha / (sqrt(v) + eps). P and T: _mm256 and __m256 (_deep.c's AVX2 update) or _mm512 and __m512
 * (_kernels.c's first layer in AVX-512). */
#define ADAM_LANES(P, T, g, m, v, w, r1, r2, eps, alpha)                                                           \
    do {                                                                                                          \
        T m_ = P##_loadu_ps(m), v_ = P##_loadu_ps(v);                                                             \
        m_ = P##_add_ps(m_, P##_mul_ps(P##_sub_ps(g, m_), r1));                                                   \
        v_ = P##_add_ps(v_, P##_mul_ps(P##_sub_ps(P##_mul_ps(g, g), v_), r2));                                    \
        const T step_ = P##_div_ps(P##_mul_ps(m_, alpha), P##_add_ps(P##_sqrt_ps(v_), eps));                      \
        P##_storeu_ps(m, m_);                                                                                     \
        P##_storeu_ps(v, v_);                                                                                     \
        P##_storeu_ps(w, P##_sub_ps(P##_loadu_ps(w), step_));                                                     \
    } while (0)

/* From _kernels.c: the sparse first layer (AVX2, AVX-512 or portable, as digitlab_kernels_simd_on() says). */
int digitlab_kernels_simd_on(void);
void digitlab_sparse_forward(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                             int64_t first, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                             int64_t units, float *out, int64_t row0, int32_t *offsets, Entry *entries);
void digitlab_sparse_forward_levels(const int64_t *starts, const uint16_t *cols, const float *vals,
                                    const uint8_t *levels, const int64_t *index, int64_t first, int64_t rows,
                                    int64_t inputs, const float *kernel, const float *bias, int64_t units, float *out,
                                    int64_t row0, int32_t *offsets, Entry *entries);
void digitlab_sparse_sgd_rows(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t first_pixel,
                              int64_t last_pixel, const float *dz, int64_t units, float *scratch, float *weight,
                              float rate);
int digitlab_sparse_adam_rows(int32_t *const *offsets, Entry *const *entries, int64_t parts, int64_t first_pixel,
                              int64_t last_pixel, const float *dz, int64_t units, float *weight, float *m, float *v,
                              const float *hyper, float step_size);

/* From _dense.c: the layers above the first. */
void digitlab_dense_forward(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                            int64_t units, float *out);
void digitlab_dense_backward(const float *g, int64_t rows, int64_t units, const float *kernel_t, int64_t inputs,
                             float *below);
void digitlab_dense_sgd_units(const float *a, const float *g, int64_t rows, int64_t inputs, int64_t units, int64_t u0,
                              int64_t u1, float *kernel, float *kernel_t, float rate, float *scratch);
void digitlab_dense_sgd_bias(const float *g, int64_t rows, int64_t units, int64_t u0, int64_t u1, float *bias,
                             float rate);
void digitlab_dense_activate(float *values, int64_t rows, int64_t units, int32_t activation);
void digitlab_dense_activation_gradient(float *gradient, const float *output, int64_t size, int32_t activation);
void digitlab_dense_loss(const float *outputs, const float *targets, const int64_t *labels, const int64_t *index,
                         int64_t rows, int64_t batch_rows, int64_t classes, int32_t loss, int32_t activation,
                         float clip, float *gradient, int64_t *correct, double *row_losses);

#endif
