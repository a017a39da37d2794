/* What the engine's multi-threaded epochs share (_train.c's shallow nets, _deep.c's BatchNormalization nets):
 * the threads themselves (pthreads natively; in WebAssembly _wasm.c's, on Web Workers), a clock and the profile's
 * lap (digitlab bench --profile), the barrier at which one network's threads meet between the phases of a batch,
 * how they are started together, and how the first layer's pixels are split between them.
 *
 * Included by those two files only (each gets its own static copy of these small functions). Each needs
 * _GNU_SOURCE defined before its first #include (syscall() and clock_gettime() under -std=c99).
 */

#ifndef DIGITLAB_THREADS_H
#define DIGITLAB_THREADS_H

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#ifdef __wasm__
/* WebAssembly: the C library has no threads; _wasm.c starts them in Web Workers where memory is shared. */
typedef struct WasmThread *pthread_t;
int pthread_create(pthread_t *thread, const void *attributes, void *(*start)(void *), void *argument);
int pthread_join(pthread_t thread, void **result);
#else
#include <pthread.h>
#endif
#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define MAX_THREADS 64

static inline int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Adds the time since *mark to phase `phase` of `profile` (a thread's row; NULL: nothing is timed) and moves the mark on. */
static inline void lap(double *profile, int phase, int64_t *mark) {
    if (!profile) return;
    const int64_t now = now_ns();
    profile[phase] += (double)(now - *mark) * 1e-9;
    *mark = now;
}

/* A barrier for the threads of one epoch. It spins first: with a core per thread the wait is a few
 * microseconds (the threads' shares differ a little), and sleeping at once measured 1.3x slower. Past
 * SPIN_NS a thread sleeps (a futex on Linux, memory.atomic.wait32 in WebAssembly, else it yields), so
 * that when other programs hold the cores the thread it waits for gets one: spinning there made two
 * threads 2x slower than one. Set up as (Barrier){threads, 0, threads, 0}. */
#if defined(__linux__) || defined(__wasm_atomics__)
#define BARRIER_SLEEPS 1
#endif
#define SPIN_NS 200000
typedef struct {
    int count, sense, threads, sleepers;
} Barrier;

static inline void barrier_sleep(Barrier *barrier, int old_sense) {
#ifdef BARRIER_SLEEPS
    /* Sleeps only while sense still holds old_sense (the kernel checks it), so a wake cannot be missed:
     * the last thread stores sense, then reads sleepers; a sleeper adds itself, then the kernel reads sense. */
    __atomic_add_fetch(&barrier->sleepers, 1, __ATOMIC_SEQ_CST);
#ifdef __linux__
    syscall(SYS_futex, &barrier->sense, FUTEX_WAIT_PRIVATE, old_sense, NULL, NULL, 0);
#else
    __builtin_wasm_memory_atomic_wait32(&barrier->sense, old_sense, -1);
#endif
    __atomic_sub_fetch(&barrier->sleepers, 1, __ATOMIC_SEQ_CST);
#else
    (void)barrier;
    (void)old_sense;
    sched_yield();
#endif
}

/* Waits until every thread of the barrier has come; *local_sense is the thread's own (0 at first). */
static inline void barrier_wait(Barrier *barrier, int *local_sense) {
    if (barrier->threads == 1) return;
    *local_sense = !*local_sense;
    if (__atomic_sub_fetch(&barrier->count, 1, __ATOMIC_ACQ_REL) == 0) {
        __atomic_store_n(&barrier->count, barrier->threads, __ATOMIC_RELAXED);
        __atomic_store_n(&barrier->sense, *local_sense, __ATOMIC_SEQ_CST);
#ifdef __linux__
        if (__atomic_load_n(&barrier->sleepers, __ATOMIC_SEQ_CST) > 0)
            syscall(SYS_futex, &barrier->sense, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#elif defined(BARRIER_SLEEPS)
        if (__atomic_load_n(&barrier->sleepers, __ATOMIC_SEQ_CST) > 0)
            __builtin_wasm_memory_atomic_notify(&barrier->sense, UINT32_MAX);
#endif
        return;
    }
    int64_t deadline = 0;
    for (int spins = 1; __atomic_load_n(&barrier->sense, __ATOMIC_ACQUIRE) != *local_sense; spins++) {
        if (spins % 64 == 0) {
            const int64_t now = now_ns();
            if (!deadline) deadline = now + SPIN_NS;
            else if (now > deadline) barrier_sleep(barrier, !*local_sense);
        }
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_ia32_pause();
#endif
    }
}

/* Starts an epoch's threads: run(workers + t * size) on threads t = 1 ... threads - 1 (thread 0 is the caller's),
 * each of which waits for *go (wait_to_go) so that all begin together, and sets up the barrier for them. Returns
 * how many run, the caller's included. Where a thread cannot be started it returns 1: the started ones are sent
 * off with no batches to do (*batches_left, the epoch's images, reads 0 while they leave) and joined, and the
 * caller gives worker 0 all of the work (the results do not depend on the threads). Sets *go. */
static inline int start_threads(int threads, void *(*run)(void *), void *workers, size_t size, pthread_t *handles,
                                int *go, int64_t *batches_left, Barrier *barrier) {
    *barrier = (Barrier){threads, 0, threads, 0};
    int started = 1;
    for (; started < threads; started++)
        if (pthread_create(&handles[started], NULL, run, (char *)workers + size * started) != 0) break;
    if (started < threads) {
        const int64_t images = *batches_left;
        *batches_left = 0;
        __atomic_store_n(go, 1, __ATOMIC_RELEASE);
        for (int t = 1; t < started; t++) pthread_join(handles[t], NULL);
        *batches_left = images;
        *barrier = (Barrier){1, 0, 1, 0};
        started = 1;
    }
    __atomic_store_n(go, 1, __ATOMIC_RELEASE);
    return started;
}

static inline void wait_to_go(const int *go) {
    while (!__atomic_load_n(go, __ATOMIC_ACQUIRE)) sched_yield();
}

static inline void join_threads(int started, pthread_t *handles) {
    for (int t = 1; t < started; t++) pthread_join(handles[t], NULL);
}

/* Pixel boundaries for `threads` threads with about equal numbers of nonzero entries each, counted
 * over the data's first (up to 4096) images, read in storage order (the epoch's first images in its
 * order lie at random places: counting them cost about 1 ms an epoch). The middle of the image holds
 * most of the ink. Any boundaries give the same results: each pixel's sum runs over the rows in order. */
static inline void split_pixels(const int64_t *starts, const uint16_t *cols, int64_t n, int64_t inputs,
                                int64_t threads, int64_t *bounds) {
    int64_t *counts = calloc(inputs, sizeof(int64_t)), total = 0;
    bounds[0] = 0;
    for (int64_t t = 1; t <= threads; t++) bounds[t] = inputs * t / threads;
    if (!counts) return;
    const int64_t sample = n < 4096 ? n : 4096;
    for (int64_t j = starts[0]; j < starts[sample]; j++) counts[cols[j]]++, total++;
    if (total > 0) {
        int64_t seen = 0, t = 1;
        for (int64_t p = 0; p < inputs && t < threads; p++) {
            seen += counts[p];
            while (t < threads && seen * threads >= total * t) bounds[t++] = p + 1;
        }
        for (; t < threads; t++) bounds[t] = inputs;
    }
    free(counts);
}

#endif
