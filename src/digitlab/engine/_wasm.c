/* The WebAssembly build's edge: what the browser's engine needs besides _kernels.c, _dense.c and _train.c.
 *
 * Built only for wasm32 (Makefile target `wasm`; the native library does not compile it), with no C library:
 * Debian's wasi-libc gives the headers, but its objects are not built for shared memory, so this file holds
 * the few functions the engine calls from one:
 *
 *   malloc, calloc, free:      a first-fit list of free blocks over the module's memory, for the engine's
 *                              buffers and the data the JavaScript side copies in (one thread allocates);
 *   clock_gettime, sched_yield: the clock from JavaScript (performance.now), and a yield that only spins;
 *   pthread_create, pthread_join: threads on Web Workers (engine-thread.js), where the build has shared memory
 *                              (-matomics): each Worker runs an instance of the module on the same memory,
 *                              with a stack of its own, and waits on its slot here; pthread_create hands a
 *                              free slot its function, pthread_join waits for it (memory.atomic.wait32, so
 *                              the engine runs in a Worker: the wait traps on a page's main thread). Without
 *                              shared memory, or with no Worker free, pthread_create fails and _train.c does
 *                              the epoch on the calling thread (the same results);
 *   the data from bytes:       uint8 pixels and labels into the rows, targets and labels _train.c reads
 *                              (pixel / 255 in float32, as data.to_inputs; one-hot float32 targets), a chunk
 *                              of images at a time (the page's memory holds the rows, not the pixels too);
 *   a forward pass:            the net's outputs for a few images (the drawing pad's answer).
 *
 * engine.js (src/digitlab/serve/static/engine/) is the JavaScript side; docs/browser-engine.md the API.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT(name) __attribute__((export_name(#name)))

/* ------------------------------------------------------------------------------ memory */

/* A block: its size in bytes (header included, a multiple of 16) and, while free, the next free block. Free
 * blocks are kept in address order, so that free() can join a block with its free neighbours. */
typedef struct Block {
    size_t size;
    struct Block *next;
    size_t pad[2]; /* The header is 16 bytes: the blocks' data stay 16-byte aligned, as SIMD128 loads like. */
} Block;

#define PAGE 65536
extern unsigned char __heap_base;
static Block *free_list = NULL;
static uintptr_t heap_end = 0;

/* Adds at least `bytes` of fresh memory to the free list (memory.grow); 0 when the memory cannot grow. */
static int grow(size_t bytes) {
    if (!heap_end) heap_end = ((uintptr_t)&__heap_base + 15) & ~(uintptr_t)15;
    const uintptr_t have = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE;
    const uintptr_t want = heap_end + bytes;
    if (want > have) {
        const size_t pages = (want - have + PAGE - 1) / PAGE;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    /* The memory above heap_end, up to the end of the pages, becomes one free block. */
    Block *block = (Block *)heap_end;
    block->size = (size_t)__builtin_wasm_memory_size(0) * PAGE - heap_end;
    heap_end += block->size;
    free(block + 1);
    return 1;
}

void *malloc(size_t bytes) {
    if (bytes > SIZE_MAX / 2) return NULL;
    const size_t size = (bytes + sizeof(Block) + 15) & ~(size_t)15;
    for (int attempt = 0; attempt < 2; attempt++) {
        for (Block **link = &free_list; *link; link = &(*link)->next) {
            Block *block = *link;
            if (block->size < size) continue;
            if (block->size - size >= 2 * sizeof(Block)) { /* Split: the rest stays free. */
                Block *rest = (Block *)((unsigned char *)block + size);
                rest->size = block->size - size;
                rest->next = block->next;
                block->size = size;
                *link = rest;
            } else {
                *link = block->next;
            }
            return block + 1;
        }
        if (!grow(size)) return NULL;
    }
    return NULL;
}

void *calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    void *data = malloc(count * size);
    if (data) memset(data, 0, count * size);
    return data;
}

void free(void *data) {
    if (!data) return;
    Block *block = (Block *)data - 1, *before = NULL, *after = free_list;
    while (after && after < block) before = after, after = after->next;
    block->next = after;
    if (after && (unsigned char *)block + block->size == (unsigned char *)after) {
        block->size += after->size;
        block->next = after->next;
    }
    if (before && (unsigned char *)before + before->size == (unsigned char *)block) {
        before->size += block->size;
        before->next = block->next;
    } else if (before) {
        before->next = block;
    } else {
        free_list = block;
    }
}

EXPORT(digitlab_malloc) void *digitlab_malloc(size_t bytes) { return malloc(bytes); }
EXPORT(digitlab_free) void digitlab_free(void *data) { free(data); }

/* ------------------------------------------------------------------------------ the clock */

__attribute__((import_module("env"), import_name("now_ms"))) double now_ms(void); /* performance.now() */

struct __clockid {
    int32_t id;
};
const struct __clockid _CLOCK_MONOTONIC = {1}; /* wasi-libc's CLOCK_MONOTONIC is its address. */

int clock_gettime(clockid_t clock, struct timespec *time) {
    (void)clock;
    const double ms = now_ms();
    time->tv_sec = (time_t)(ms / 1000.0);
    time->tv_nsec = (long)((ms - 1000.0 * (double)time->tv_sec) * 1e6);
    return 0;
}

int sched_yield(void) { return 0; }

/* ------------------------------------------------------------------------------ threads on Workers */

/* One Worker's slot: FREE, then TAKEN by pthread_create (its function and argument set), DONE when the
 * function has returned, FREE again once pthread_join has its result. The Worker waits on `state`. */
enum { FREE = 0, TAKEN = 1, DONE = 2 };
#define SLOTS 64
typedef struct WasmThread {
    int32_t state;
    void *(*start)(void *);
    void *argument, *result;
} WasmThread;
static WasmThread slots[SLOTS];
static int32_t workers = 0; /* How many Workers wait on slots 0 ... workers - 1 (engine.js sets it). */

/* The address of slot k's state, on which Worker k waits (engine-thread.js); NULL past the slots. */
EXPORT(digitlab_thread_slot) int32_t *digitlab_thread_slot(int32_t k) {
    return k >= 0 && k < SLOTS ? &slots[k].state : NULL;
}

/* How many Workers are ready (engine.js, once they have started); returns how many the build can use:
 * 0 without shared memory. */
EXPORT(digitlab_thread_workers) int32_t digitlab_thread_workers(int32_t count) {
#ifdef __wasm_atomics__
    workers = count < 0 ? 0 : (count > SLOTS ? SLOTS : count);
#else
    (void)count;
#endif
    return workers;
}

/* Worker k runs its slot's function (engine-thread.js calls this when the slot is TAKEN). */
EXPORT(digitlab_thread_run) void digitlab_thread_run(int32_t k) {
    WasmThread *thread = &slots[k];
    thread->result = thread->start(thread->argument);
    __atomic_store_n(&thread->state, DONE, __ATOMIC_SEQ_CST);
#ifdef __wasm_atomics__
    __builtin_wasm_memory_atomic_notify(&thread->state, 1);
#endif
}

typedef WasmThread *pthread_t;
int pthread_create(pthread_t *handle, const void *attributes, void *(*start)(void *), void *argument);
int pthread_join(pthread_t handle, void **result);

int pthread_create(pthread_t *handle, const void *attributes, void *(*start)(void *), void *argument) {
    (void)attributes;
    for (int32_t k = 0; k < workers; k++) {
        WasmThread *thread = &slots[k];
        if (__atomic_load_n(&thread->state, __ATOMIC_ACQUIRE) != FREE) continue;
        thread->start = start, thread->argument = argument, thread->result = NULL;
        __atomic_store_n(&thread->state, TAKEN, __ATOMIC_SEQ_CST);
#ifdef __wasm_atomics__
        __builtin_wasm_memory_atomic_notify(&thread->state, 1);
#endif
        *handle = thread;
        return 0;
    }
    return EAGAIN;
}

int pthread_join(pthread_t thread, void **result) {
    for (int32_t state; (state = __atomic_load_n(&thread->state, __ATOMIC_ACQUIRE)) != DONE;) {
#ifdef __wasm_atomics__
        __builtin_wasm_memory_atomic_wait32(&thread->state, state, -1);
#endif
    }
    if (result) *result = thread->result;
    __atomic_store_n(&thread->state, FREE, __ATOMIC_SEQ_CST);
#ifdef __wasm_atomics__
    __builtin_wasm_memory_atomic_notify(&thread->state, 1);
#endif
    return 0;
}

/* ------------------------------------------------------------------------------ the data from bytes */

/* The nonzero pixels of `rows` images of `columns` uint8 pixels, as _train.c reads them: starts[1 ... rows]
 * (starts[0], the first image's start, is the caller's: 0, or where the images before this chunk end), then,
 * given room, their columns and values pixel / 255 (float32, as data.to_inputs computes them) at
 * cols[starts[r]] and vals[starts[r]]. Returns starts[rows]; fills cols and vals when not NULL. */
EXPORT(digitlab_bytes_rows)
int64_t digitlab_bytes_rows(const uint8_t *pixels, int64_t rows, int64_t columns, int64_t *starts, uint16_t *cols,
                            float *vals) {
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = pixels + r * columns;
        int64_t at = starts[r];
        for (int64_t c = 0; c < columns; c++) {
            if (!row[c]) continue;
            if (cols) cols[at] = (uint16_t)c, vals[at] = (float)row[c] / 255.0f;
            at++;
        }
        starts[r + 1] = at;
    }
    return starts[rows];
}

/* One-hot float32 targets (rows x classes) and int64 labels from uint8 labels (as data.to_targets). */
EXPORT(digitlab_bytes_targets)
void digitlab_bytes_targets(const uint8_t *bytes, int64_t rows, int64_t classes, float *targets, int64_t *labels) {
    memset(targets, 0, sizeof(float) * rows * classes);
    for (int64_t r = 0; r < rows; r++) {
        labels[r] = bytes[r];
        if (bytes[r] < classes) targets[r * classes + bytes[r]] = 1.0f;
    }
}

/* ------------------------------------------------------------------------------ a forward pass */

void digitlab_sparse_forward(const int64_t *starts, const uint16_t *cols, const float *vals, const int64_t *index,
                             int64_t first, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                             int64_t units, float *out, int64_t row0, int32_t *offsets, void *entries);
void digitlab_dense_forward(const float *a, int64_t rows, int64_t inputs, const float *kernel, const float *bias,
                            int64_t units, float *out);
void digitlab_dense_activate(float *values, int64_t rows, int64_t units, int32_t activation);

/* The net's outputs (rows x units[layers]) for images given by their rows (starts, cols, vals), as the
 * validation computes them. Returns 0, or -1 when memory could not be had. */
EXPORT(digitlab_predict)
int32_t digitlab_predict(const int64_t *starts, const uint16_t *cols, const float *vals, int64_t rows, int64_t layers,
                         const int64_t *units, const int32_t *activations, float *const *kernels,
                         float *const *biases, float *outputs) {
    int64_t widest = 0;
    for (int64_t l = 1; l <= layers; l++) widest = units[l] > widest ? units[l] : widest;
    float *here = malloc(sizeof(float) * rows * widest), *there = malloc(sizeof(float) * rows * widest);
    if (!here || !there) {
        free(here), free(there);
        return -1;
    }
    digitlab_sparse_forward(starts, cols, vals, NULL, 0, rows, units[0], kernels[0], biases[0], units[1], here, 0, NULL,
                            NULL);
    digitlab_dense_activate(here, rows, units[1], activations[0]);
    for (int64_t l = 1; l < layers; l++) {
        digitlab_dense_forward(here, rows, units[l], kernels[l], biases[l], units[l + 1], there);
        digitlab_dense_activate(there, rows, units[l + 1], activations[l]);
        float *swap = here;
        here = there, there = swap;
    }
    memcpy(outputs, here, sizeof(float) * rows * units[layers]);
    free(here), free(there);
    return 0;
}
