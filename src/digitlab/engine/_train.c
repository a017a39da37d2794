/* A whole training epoch of a dense net in one C call: the fast engine's fused path.
 *
 * For a keras.Sequential of Dense layers trained with plain SGD (no momentum, no Dropout),
 * with a first layer that runs on the images' nonzero pixels (_kernels.c), every batch of the
 * epoch is done here: the sparse first layer, the other Dense layers, the loss (mean squared
 * error, or categorical cross-entropy on a softmax output), the backward pass and the SGD update,
 * with the formulas of numpy_backend.py (Keras's own, JAX backend) in float32. Python calls it
 * once per epoch and model, with the GIL released (ctypes), so threads over seeds run on every
 * core and no per-batch interpreter work is left. Within one model's epoch, `threads` pthreads
 * share every batch (run_worker): rows for the forward and backward passes through every layer,
 * then pixels for the first layer's update and units for the other layers' and the biases'; each
 * sum runs in the same order for any number of threads, so the results are the same bits.
 *
 * The browser's engine is this file too, built for WebAssembly (Makefile target `wasm`): engine.js calls
 * digitlab_train_epoch once an epoch, and its threads are Web Workers on a shared memory (_wasm.c's
 * pthread_create and pthread_join).
 *
 * Activations: 0 linear, 1 sigmoid, 2 relu, 3 tanh, 4 softmax (the last layer only, as spec.py checks).
 * Losses: 0 mean squared error, 1 categorical cross-entropy.
 *
 * It runs past 450 lines as one concern, the fused epoch: its threads' phases, the barrier between them, the
 * profile, and validation on the same threads; splitting them would spread one schedule over several files.
 */

#define _GNU_SOURCE /* syscall() and clock_gettime() under -std=c99 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_engine.h"  /* The codes, Entry and the functions of _kernels.c and _dense.c. */
#include "_threads.h" /* Threads, the barrier, the pixels' split: shared with _deep.c. */

#define MAX_LAYERS 16

/* Where an epoch goes (digitlab bench --profile): seconds per thread and phase, added to the caller's
 * `profile` array (threads x PHASES doubles) when it is not NULL; when it is NULL nothing is timed. */
enum {
    PHASE_FIRST_FORWARD, /* The first layer's sparse product, its bias and activation, and the transpose of the
                          * thread's rows of the batch (for the first layer's update), which it builds. */
    PHASE_ABOVE,         /* The layers above the first, forward. */
    PHASE_LOSS,          /* The loss, the answers and the last layer's gradient; gathering the targets and labels. */
    PHASE_BACKWARD,      /* The backward pass down to the first layer's pre-activation gradient. */
    PHASE_WAIT_ROWS,     /* Waiting at the barrier after the rows (for the slowest thread). */
    PHASE_FIRST_UPDATE,  /* The first layer's SGD update on the pixels the batch touches. */
    PHASE_OTHER_UPDATES, /* The other layers' kernels, every bias, the loss sum. */
    PHASE_WAIT_UPDATES,  /* Waiting at the barrier after the updates. */
    PHASE_SETUP,         /* Buffers, the kernels' transposes, starting and joining the threads. */
    PHASES
};

int digitlab_profile_phases(void) { return PHASES; }

/* kernel_t[l] = the transpose of dense layer l's kernel (units x inputs), for l = 1 ... layers - 1, each in
 * its widest x widest slot of `transposes`: the backward pass reads them, the updates keep them current. */
static void transpose_kernels(int64_t layers, const int64_t *units, float *const *kernels, int64_t widest,
                              float *transposes, float **kernel_t) {
    for (int64_t l = 1; l < layers; l++) {
        kernel_t[l] = transposes + l * widest * widest;
        for (int64_t i = 0; i < units[l]; i++)
            for (int64_t u = 0; u < units[l + 1]; u++) kernel_t[l][u * units[l] + i] = kernels[l][i * units[l + 1] + u];
    }
}

/* ------------------------------------------------------------------------------ the epoch */

typedef struct {
    /* The data and the epoch's batch order. */
    const int64_t *starts;
    const uint16_t *cols;
    const float *vals;
    const uint8_t *levels; /* The pixels' levels (vals[j] = LEVEL_VALUES[levels[j]]: _kernels.c), or NULL. */
    const float *targets;
    const int64_t *labels, *order;
    int64_t n, batch, layers, inputs, widest;
    const int64_t *units;
    const int32_t *activations;
    float *const *kernels, *const *biases;
    int32_t loss;
    float rate, clip;
    /* Shared buffers, a batch of rows each: every layer's outputs, every layer's gradient with respect to
     * its pre-activations (delta[0]: the first layer's), each row's loss; each kernel's gradient. */
    float *layer_out[MAX_LAYERS];
    float *delta[MAX_LAYERS];
    double *row_losses;
    float *kernel_t[MAX_LAYERS];
    /* The batch's targets and labels in batch order (gather), and the numbers 0 ... batch - 1 to index them. */
    float *batch_targets;
    int64_t *batch_labels, *numbers;
    /* Each thread's transpose of its rows of the batch; all of them are read by every thread's update. */
    int32_t *offsets[MAX_THREADS];
    Entry *entries[MAX_THREADS];
    Barrier barrier;
    Balance balance;      /* Each batch's rows and first-layer pixels, cut between the threads by their speeds. */
    int64_t *pixel_count; /* count_pixels's prefix sums: where the pixels' shares are cut. */
    int64_t *ink[2];      /* The nonzero pixels of a batch's first r rows, r = 0 ... batch: even and odd batches. */
    int64_t row_cuts[2][MAX_THREADS + 1]; /* The first row of each thread's share: for even and odd batches. */
    int go;               /* Set once every thread is started: the workers wait for it. */
    double loss_sum;
} Epoch;

typedef struct {
    Epoch *epoch;
    int thread, threads;
    float *scratch, *update_scratch; /* A row of the first layer's units; of the widest layer's. */
    int64_t correct;
    double *profile; /* This thread's PHASES seconds, or NULL: not timed. */
} Worker;

/* Rows first <= r < last of the targets and labels of the images `index` into `batch_targets` and `batch_labels`
 * (classes floats, one label a row), in one tight loop: the images lie at random places, and the loss, reading
 * them there between its arithmetic, stalled on those reads (its prefetches notwithstanding); here they overlap. */
static void gather(const float *targets, const int64_t *labels, const int64_t *index, int64_t first, int64_t last,
                   int64_t classes, float *batch_targets, int64_t *batch_labels) {
    for (int64_t r = first; r < last; r++) {
        memcpy(batch_targets + r * classes, targets + index[r] * classes, sizeof(float) * classes);
        batch_labels[r] = labels[index[r]];
    }
}

/* Rows first <= r < last of a batch of `rows`, after the first layer: the layers above it, the loss, and
 * the backward pass down to the first layer's pre-activation gradient (delta[0]). Each row needs only its
 * own values and the kernels, which no thread changes until every thread has passed the next barrier. */
static void rows_forward_backward(Epoch *e, int64_t first, int64_t last, int64_t rows, int64_t *correct,
                                  double *profile, int64_t *mark) {
    const int64_t layers = e->layers, *units = e->units, count = last - first;
    if (count <= 0) return;
    for (int64_t l = 1; l < layers; l++) {
        float *out = e->layer_out[l] + first * units[l + 1];
        digitlab_dense_forward(e->layer_out[l - 1] + first * units[l], count, units[l], e->kernels[l], e->biases[l],
                               units[l + 1], out);
        digitlab_dense_activate(out, count, units[l + 1], e->activations[l]);
    }
    lap(profile, PHASE_ABOVE, mark);
    digitlab_dense_loss(e->layer_out[layers - 1] + first * units[layers], e->batch_targets + first * units[layers],
                        e->batch_labels + first, e->numbers, count, rows, units[layers], e->loss,
                        e->activations[layers - 1], e->clip, e->delta[layers - 1] + first * units[layers], correct,
                        e->row_losses + first);
    lap(profile, PHASE_LOSS, mark);
    for (int64_t l = layers - 1; l >= 1; l--) {
        float *below = e->delta[l - 1] + first * units[l];
        digitlab_dense_backward(e->delta[l] + first * units[l + 1], count, units[l + 1], e->kernel_t[l], units[l],
                                below);
        digitlab_dense_activation_gradient(below, e->layer_out[l - 1] + first * units[l], count * units[l],
                                           e->activations[l - 1]);
    }
    lap(profile, PHASE_BACKWARD, mark);
}

/* One thread's share of the SGD updates of the layers above the first and of every bias: units
 * u0 <= u < u1 of each (kernel columns, and the rows of its transpose), every sum over the batch's rows
 * in row order, so any split gives the same bits. `scratch` holds `widest` floats. */
static void update_units(Epoch *e, int thread, int threads, int64_t rows, float *scratch) {
    const int64_t layers = e->layers, *units = e->units;
    for (int64_t l = 0; l < layers; l++) {
        const int64_t in = units[l], out = units[l + 1], u0 = out * thread / threads, u1 = out * (thread + 1) / threads;
        if (u1 <= u0) continue;
        if (l > 0)
            digitlab_dense_sgd_units(e->layer_out[l - 1], e->delta[l], rows, in, out, u0, u1, e->kernels[l],
                                     e->kernel_t[l], e->rate, scratch);
        digitlab_dense_sgd_bias(e->delta[l], rows, out, u0, u1, e->biases[l], e->rate);
    }
}

/* The batch's rows are cut where its nonzero pixels reach each thread's share of them: the first layer's forward
 * and update, most of the epoch, take time by the pixels, and a batch's 64-image halves differ in them by a few
 * percent, at random, which would move the cuts at random if they were counted in rows. count_ink: the running
 * count of the batch from image `start` of the order on (the last thread does it during the batch before, where
 * its time counts in its share); cut_rows: the cuts of a batch of `rows` rows, by its parity's balance cuts. */
static void count_ink(const Epoch *e, int64_t start, int parity) {
    const int64_t rows = e->n - start < e->batch ? e->n - start : e->batch, *index = e->order + start;
    int64_t *ink = e->ink[parity];
    ink[0] = 0;
    for (int64_t r = 0; r < rows; r++) ink[r + 1] = ink[r] + e->starts[index[r] + 1] - e->starts[index[r]];
}

static void cut_rows(Epoch *e, int64_t rows, int parity) {
    const int threads = e->balance.threads;
    int64_t *cuts = e->row_cuts[parity];
    cuts[0] = 0, cuts[threads] = rows;
    /* The rows' ink is a prefix as the pixels' entries are: the same search. */
    for (int t = 1; t < threads; t++) cuts[t] = pixel_cut(e->ink[parity], rows, e->balance.cuts[parity][t]);
}

/* One thread's share of every batch: its rows of the batch through the whole net and back (the first
 * layer's forward product, the transpose of those rows, the layers above, the loss, the backward pass);
 * then, once every row is done, its pixels of the first layer's kernel (from every thread's transpose in
 * row order) and its units of the other kernels and of the biases. Each sum runs in the same order
 * whatever the number of threads and wherever the batch is cut between them (Balance): every thread count
 * gives the same bits. */
static void *run_worker(void *argument) {
    Worker *w = argument;
    Epoch *e = w->epoch;
    const int64_t units = e->units[1];
    const int t = w->thread;
    double *profile = w->profile;
    int sense = 0;
    wait_to_go(&e->go);
    int64_t mark = profile ? now_ns() : 0;
    for (int64_t start = 0, batch_number = 0; start < e->n; start += e->batch, batch_number++) {
        const int64_t rows = e->n - start < e->batch ? e->n - start : e->batch;
        const int64_t *index = e->order + start;
        const int64_t *row_cuts = e->row_cuts[batch_number & 1];
        const int64_t first = w->threads > 1 ? row_cuts[t] : 0, last = w->threads > 1 ? row_cuts[t + 1] : rows;
        const double *cuts = e->balance.cuts[batch_number & 1];
        const int64_t first_pixel = pixel_cut(e->pixel_count, e->inputs, cuts[t]);
        const int64_t last_pixel = pixel_cut(e->pixel_count, e->inputs, cuts[t + 1]);
        const int64_t began = now_ns();
        float *out = e->layer_out[0] + first * units;
        gather(e->targets, e->labels, index, first, last, e->units[e->layers], e->batch_targets, e->batch_labels);
        lap(profile, PHASE_LOSS, &mark);
        /* The first layer's product for this thread's rows, and their transpose (for the update). */
        digitlab_sparse_forward_levels(e->starts, e->cols, e->vals, e->levels, index + first, 0, last - first,
                                       e->inputs, e->kernels[0], e->biases[0], units, out, first,
                                       e->offsets[w->thread], e->entries[w->thread]);
        if (last > first) digitlab_dense_activate(out, last - first, units, e->activations[0]);
        lap(profile, PHASE_FIRST_FORWARD, &mark);
        rows_forward_backward(e, first, last, rows, &w->correct, profile, &mark);
        const int64_t next = start + e->batch, next_rows = e->n - next < e->batch ? e->n - next : e->batch;
        if (t == w->threads - 1 && t > 0 && next < e->n) count_ink(e, next, (int)((batch_number + 1) & 1));
        balance_record(&e->balance, t, now_ns() - began);
        barrier_wait(&e->barrier, &sense);
        lap(profile, PHASE_WAIT_ROWS, &mark);
        if (t == 0 && w->threads > 1 && next < e->n) {
            balance_next(&e->balance, batch_number, batch_number + 1);
            cut_rows(e, next_rows, (int)((batch_number + 1) & 1));
        }
        digitlab_sparse_sgd_rows(e->offsets, e->entries, w->threads, first_pixel, last_pixel, e->delta[0], units,
                                 w->scratch, e->kernels[0], e->rate);
        lap(profile, PHASE_FIRST_UPDATE, &mark);
        update_units(e, t, w->threads, rows, w->update_scratch);
        if (t == 0)
            for (int64_t r = 0; r < rows; r++) e->loss_sum += e->row_losses[r];
        lap(profile, PHASE_OTHER_UPDATES, &mark);
        barrier_wait(&e->barrier, &sense); /* The next batch reads every updated kernel and the row losses' room. */
        lap(profile, PHASE_WAIT_UPDATES, &mark);
    }
    return NULL;
}

/* One epoch of plain SGD over the images in `order` (n of them, batches of `batch`), in place on
 * kernels[l] (units[l] x units[l + 1]) and biases[l]; units[0] is the number of inputs. `threads`
 * threads share the first layer's units (1: this thread alone; the results are the same). Adds the
 * epoch's loss sum and correct answers to *loss_sum and *correct, and, where `profile` is not NULL,
 * each thread's seconds per phase to profile[thread * PHASES + phase]. Returns 0, or -1 when memory or
 * a thread could not be had (nothing is changed then). The rows' `levels` (digitlab_sparse_forward_levels)
 * may be NULL; the browser's engine (engine.js) calls digitlab_train_epoch, which has none. */
int digitlab_train_epoch_levels(const int64_t *starts, const uint16_t *cols, const float *vals, const uint8_t *levels,
                                int64_t most_per_row, const float *targets, const int64_t *labels,
                                const int64_t *order, int64_t n, int64_t batch, int64_t layers, const int64_t *units,
                                const int32_t *activations, float *const *kernels, float *const *biases, int32_t loss,
                                float rate, float clip, int64_t threads, double *loss_sum, int64_t *correct,
                                double *profile) {
    if (layers < 1 || layers > MAX_LAYERS || batch < 1 || threads < 1 || threads > MAX_THREADS) return -1;
    const int64_t entered = profile ? now_ns() : 0;
    Epoch e = {starts, cols, vals, levels, targets, labels, order, n, batch, layers, units[0], 0, units, activations,
               kernels, biases, loss, rate, clip};
    int64_t total = 0;
    for (int64_t l = 1; l <= layers; l++) {
        e.widest = units[l] > e.widest ? units[l] : e.widest;
        total += units[l];
    }
    const int64_t widest = e.widest, inputs = units[0], capacity = batch * most_per_row;
    void *blocks[2]; /* Where the two aligned buffers lie, to free. */
    float *outputs = aligned_block(sizeof(float) * batch * total, PAGE_BYTES, &blocks[0]);
    float *deltas = aligned_block(sizeof(float) * batch * total, PAGE_BYTES, &blocks[1]);
    float *transposes = malloc(sizeof(float) * widest * widest * layers);
    e.row_losses = malloc(sizeof(double) * batch);
    e.batch_targets = malloc(sizeof(float) * batch * units[layers]);
    e.batch_labels = malloc(sizeof(int64_t) * batch * 2);
    /* Per thread: the transpose of its rows (room for a whole batch: a thread may be left to do all),
     * and a row of scratch for the update. */
    int32_t *offsets = malloc(sizeof(int32_t) * (inputs + 1) * threads);
    Entry *entries = malloc(sizeof(Entry) * capacity * threads);
    float *scratch = malloc(sizeof(float) * (units[1] + widest) * threads);
    e.pixel_count = malloc(sizeof(int64_t) * (inputs + 1));
    e.ink[0] = malloc(sizeof(int64_t) * (batch + 1) * 2);
    e.ink[1] = e.ink[0] ? e.ink[0] + batch + 1 : NULL;
    int failed = !outputs || !deltas || !transposes || !e.row_losses || !offsets || !entries || !scratch ||
                 !e.batch_targets || !e.batch_labels || !e.pixel_count || !e.ink[0];
    if (!failed) {
        e.numbers = e.batch_labels + batch;
        for (int64_t r = 0; r < batch; r++) e.numbers[r] = r;
        e.layer_out[0] = outputs;
        e.delta[0] = deltas;
        for (int64_t l = 1; l < layers; l++) {
            e.layer_out[l] = e.layer_out[l - 1] + batch * units[l];
            e.delta[l] = e.delta[l - 1] + batch * units[l];
        }
        /* Each dense layer's kernel, transposed; update_units keeps them in step with its updates. */
        transpose_kernels(layers, units, kernels, widest, transposes, e.kernel_t);
        Worker workers[MAX_THREADS];
        if (threads > 1) count_pixels(starts, cols, n, inputs, e.pixel_count); /* One thread: 0 and 1 cut. */
        balance_init(&e.balance, (int)threads);
        count_ink(&e, 0, 0);
        cut_rows(&e, n < batch ? n : batch, 0);
        for (int t = 0; t < threads; t++) {
            float *own = scratch + (units[1] + widest) * t;
            workers[t] = (Worker){&e, t, (int)threads, own, own + units[1], 0, profile ? profile + PHASES * t : NULL};
            e.offsets[t] = offsets + (inputs + 1) * t;
            e.entries[t] = entries + capacity * t;
        }
        pthread_t handles[MAX_THREADS];
        const int started =
            start_threads((int)threads, run_worker, workers, sizeof(Worker), handles, &e.go, &e.n, &e.barrier);
        if (started < threads) /* Alone: every row and pixel. */
            workers[0].threads = 1, balance_init(&e.balance, 1);
        double before = 0.0;
        if (profile)
            for (int phase = 0; phase < PHASES; phase++) before += profile[phase];
        run_worker(&workers[0]);
        join_threads(started, handles);
        *loss_sum += e.loss_sum;
        for (int t = 0; t < threads; t++) *correct += workers[t].correct;
        if (profile) {
            /* Thread 0's time in this call that no phase of its batches holds. */
            double timed = -before;
            for (int phase = 0; phase < PHASES; phase++) timed += profile[phase];
            profile[PHASE_SETUP] += (double)(now_ns() - entered) * 1e-9 - timed;
        }
    }
    free(blocks[0]);
    free(blocks[1]);
    free(transposes);
    free(e.row_losses);
    free(e.batch_targets);
    free(e.batch_labels);
    free(offsets);
    free(entries);
    free(scratch);
    free(e.pixel_count);
    free(e.ink[0]);
    return failed ? -1 : 0;
}

int digitlab_train_epoch(const int64_t *starts, const uint16_t *cols, const float *vals, int64_t most_per_row,
                         const float *targets, const int64_t *labels, const int64_t *order, int64_t n,
                         int64_t batch, int64_t layers, const int64_t *units, const int32_t *activations,
                         float *const *kernels, float *const *biases, int32_t loss, float rate, float clip,
                         int64_t threads, double *loss_sum, int64_t *correct, double *profile) {
    return digitlab_train_epoch_levels(starts, cols, vals, NULL, most_per_row, targets, labels, order, n, batch, layers,
                                       units, activations, kernels, biases, loss, rate, clip, threads, loss_sum,
                                       correct, profile);
}

/* ------------------------------------------------------------------------------ validation */

typedef struct {
    const int64_t *starts;
    const uint16_t *cols;
    const float *vals;
    const float *targets;
    const int64_t *labels, *index;
    int64_t first, last, layers, chunk;
    const int64_t *units;
    const int32_t *activations;
    float *const *kernels, *const *biases;
    int32_t loss;
    float clip;
    float *outputs, *gradient; /* This thread's buffers: chunk x (all layers' units), chunk x classes. */
    double *row_losses;
    int64_t correct;
} Check;

/* One thread's rows of the validation images, in chunks: forward through every layer, then each row's
 * loss (into row_losses) and whether its answer is right. */
static void *run_check(void *argument) {
    Check *c = argument;
    const int64_t layers = c->layers, *units = c->units;
    float *out[MAX_LAYERS];
    out[0] = c->outputs;
    for (int64_t l = 1; l < layers; l++) out[l] = out[l - 1] + c->chunk * units[l];
    for (int64_t start = c->first; start < c->last; start += c->chunk) {
        const int64_t rows = c->last - start < c->chunk ? c->last - start : c->chunk;
        const int64_t *index = c->index + start;
        digitlab_sparse_forward(c->starts, c->cols, c->vals, index, 0, rows, units[0], c->kernels[0], c->biases[0],
                                units[1], out[0], 0, NULL, NULL);
        digitlab_dense_activate(out[0], rows, units[1], c->activations[0]);
        for (int64_t l = 1; l < layers; l++) {
            digitlab_dense_forward(out[l - 1], rows, units[l], c->kernels[l], c->biases[l], units[l + 1], out[l]);
            digitlab_dense_activate(out[l], rows, units[l + 1], c->activations[l]);
        }
        digitlab_dense_loss(out[layers - 1], c->targets, c->labels, index, rows, rows, units[layers], c->loss,
                            c->activations[layers - 1], c->clip, c->gradient, &c->correct, c->row_losses + start);
    }
    return NULL;
}

/* Validation of a dense net on the images in `index` (n of them): each image's loss into row_losses
 * (as Keras computes it; the caller sums them in order) and the number of right answers into *correct.
 * `threads` threads share the images; the results do not depend on their number. Returns 0, or -1 when
 * memory could not be had. */
int digitlab_evaluate(const int64_t *starts, const uint16_t *cols, const float *vals, const float *targets,
                      const int64_t *labels, const int64_t *index, int64_t n, int64_t layers, const int64_t *units,
                      const int32_t *activations, float *const *kernels, float *const *biases, int32_t loss,
                      float clip, int64_t threads, double *row_losses, int64_t *correct) {
    if (layers < 1 || layers > MAX_LAYERS || threads < 1 || threads > MAX_THREADS) return -1;
    const int64_t chunk = 256;
    int64_t total = 0;
    for (int64_t l = 1; l <= layers; l++) total += units[l];
    float *outputs = malloc(sizeof(float) * chunk * total * threads);
    float *gradients = malloc(sizeof(float) * chunk * units[layers] * threads);
    int failed = !outputs || !gradients;
    if (!failed) {
        Check checks[MAX_THREADS];
        pthread_t handles[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        for (int64_t t = 0; t < threads; t++) {
            checks[t] = (Check){starts, cols, vals, targets, labels, index, n * t / threads, n * (t + 1) / threads,
                                layers, chunk, units, activations, kernels, biases, loss, clip,
                                outputs + chunk * total * t, gradients + chunk * units[layers] * t, row_losses, 0};
            /* Thread 0 is this one; a thread that cannot be started has its rows done here too. */
            if (t > 0) started[t] = pthread_create(&handles[t], NULL, run_check, &checks[t]) == 0;
        }
        run_check(&checks[0]);
        for (int64_t t = 1; t < threads; t++) {
            if (started[t])
                pthread_join(handles[t], NULL);
            else
                run_check(&checks[t]);
        }
        for (int64_t t = 0; t < threads; t++) *correct += checks[t].correct;
    }
    free(outputs);
    free(gradients);
    return failed ? -1 : 0;
}

#ifndef __wasm__
/* ------------------------------------------------------------------------------ the cores' hand-over */

/* The ball that digitlab_handover_ns passes: odd while it is the helper's turn, even while it is the caller's;
 * -1 until the helper runs. `stop` sends the helper off. A line of its own. */
typedef struct {
    int ball, stop;
} __attribute__((aligned(64))) Handover;

static void *return_ball(void *argument) {
    Handover *handover = argument;
    __atomic_store_n(&handover->ball, 0, __ATOMIC_RELEASE);
    for (;;) {
        int ball;
        while ((ball = __atomic_load_n(&handover->ball, __ATOMIC_ACQUIRE)) % 2 == 0) {
            if (__atomic_load_n(&handover->stop, __ATOMIC_ACQUIRE)) return NULL;
            spin_pause();
        }
        __atomic_store_n(&handover->ball, ball + 1, __ATOMIC_RELEASE);
    }
}

/* Spins until the ball reads `value`; 0, or -1 once the clock passes `deadline` (ns). */
static int wait_for_ball(const Handover *handover, int value, int64_t deadline) {
    for (int spins = 1; __atomic_load_n(&handover->ball, __ATOMIC_ACQUIRE) != value; spins++) {
        if (spins % 64 == 0 && now_ns() > deadline) return -1;
        spin_pause();
    }
    return 0;
}

/* How far apart the cores of a two-thread epoch are now: nanoseconds for a cache line to go from this thread to a
 * new one and back, the least over `chunks` chunks of 16 round trips (the least: a chunk that the scheduler
 * interrupts only takes longer). A virtual machine's host may run its two cores where that takes 300 ns in place
 * of 65 (docs/engine.md, the seventh and eighth rounds), and then two threads sharing a batch lose to one;
 * engine/cores.py reads it before the epochs where it could change their count, digitlab bench before and after
 * its rows. -1 when no thread could be started, or when the helper did not answer within
 * `limit_ns` all told (its core busy with other work: two threads would wait for it at every barrier too). */
double digitlab_handover_ns(int32_t chunks, int64_t limit_ns) {
    enum { ROUND_TRIPS = 16 };
    Handover handover = {-1, 0};
    pthread_t helper;
    if (chunks < 1 || pthread_create(&helper, NULL, return_ball, &handover) != 0) return -1.0;
    const int64_t deadline = now_ns() + limit_ns;
    int64_t best = -1;
    int ball = 0, failed = wait_for_ball(&handover, 0, deadline);
    for (int32_t chunk = 0; chunk < chunks && !failed; chunk++) {
        const int64_t began = now_ns();
        for (int trip = 0; trip < ROUND_TRIPS && !failed; trip++, ball += 2) {
            __atomic_store_n(&handover.ball, ball + 1, __ATOMIC_RELEASE);
            failed = wait_for_ball(&handover, ball + 2, deadline);
        }
        const int64_t took = now_ns() - began;
        if (!failed && (best < 0 || took < best)) best = took;
    }
    __atomic_store_n(&handover.stop, 1, __ATOMIC_RELEASE);
    pthread_join(helper, NULL);
    return failed || best < 0 ? -1.0 : (double)best / ROUND_TRIPS;
}
#endif
