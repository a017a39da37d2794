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

/* One turn of a spin-wait: x86's pause (the other hyperthread gets the core's resources meanwhile); elsewhere
 * nothing. */
static inline void spin_pause(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_ia32_pause();
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
        spin_pause();
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

/* Shares of each batch that follow the threads' speeds. Two cores are not always alike: on this virtual machine
 * one core ran the engine's rows 25% slower than the other for whole runs, whichever thread it held (what the
 * host does, the guest cannot see), and a laptop's or phone's cores may be fast and slow ones, which the
 * browser's Workers land on as they come. With an even split the fast thread waits at every barrier for the
 * slow one. So each thread times its share of every batch (balance_record), thread 0 moves a later batch's cuts
 * towards equal times (balance_next, while no thread reads that batch's cuts), and every thread cuts the batch's
 * rows, and the first layer's pixels, at the same places (balance_cut, pixel_cut). The results do not depend on
 * the cuts: every sum runs over all the rows in order, whichever thread holds them. Each epoch starts even (its
 * threads are new, and may have landed on other cores). */
#define BALANCE_FLOOR 0.25 /* The least share a thread is given, times the even one: its speed stays measured. */
#define BALANCE_GAIN 0.2   /* How far one batch's times move the cuts towards equal times (1: all the way). */
#define BALANCE_RATIO 1.33 /* A batch's mean time over a thread's counts as at most this, and at least its inverse:
                            * a thread the system stopped for a moment (a time slice of milliseconds for other work)
                            * loses a little of its share, not most of it. */
typedef struct {
    int threads;
    double cuts[2][MAX_THREADS + 1]; /* Where thread t's share starts, as a fraction: for even and odd batches. */
    int64_t ns[MAX_THREADS];         /* Each thread's time on its share of the last batch it recorded. */
} Balance;

static inline void balance_init(Balance *balance, int threads) {
    balance->threads = threads;
    for (int t = 0; t <= threads; t++) balance->cuts[0][t] = balance->cuts[1][t] = (double)t / threads;
    for (int t = 0; t < threads; t++) balance->ns[t] = 0;
}

/* Where thread t's share of `size` things starts in batch `batch_number` (thread `threads`: size, the end). */
static inline int64_t balance_cut(const Balance *balance, int64_t batch_number, int t, int64_t size) {
    if (t <= 0) return 0;
    if (t >= balance->threads) return size;
    return (int64_t)((double)size * balance->cuts[batch_number & 1][t] + 0.5);
}

/* Thread t's share of a batch took `ns` nanoseconds (its work, not its waits at the barriers). */
static inline void balance_record(Balance *balance, int t, int64_t ns) { balance->ns[t] = ns; }

/* Thread 0, once every thread has recorded its share of batch `measured` and while no thread reads the cuts of
 * batch `target` (the next one, or the one after): those cuts, each thread's share of `measured` moved towards
 * the share that would have taken the threads' mean time (a thread's time is not all in proportion to its share:
 * some of it is the same for each, as the deep net's statistics over every row), none below BALANCE_FLOOR of an
 * even share. */
static inline void balance_next(Balance *balance, int64_t measured, int64_t target) {
    const int threads = balance->threads;
    const double *was = balance->cuts[measured & 1];
    double share[MAX_THREADS], mean = 0.0, sum = 0.0;
    for (int t = 0; t < threads; t++) {
        if (balance->ns[t] <= 0) return; /* Not timed (a clock too coarse): the cuts stay. */
        mean += (double)balance->ns[t] / threads;
    }
    for (int t = 0; t < threads; t++) {
        double ratio = mean / (double)balance->ns[t];
        ratio = ratio > BALANCE_RATIO ? BALANCE_RATIO : ratio < 1.0 / BALANCE_RATIO ? 1.0 / BALANCE_RATIO : ratio;
        share[t] = (was[t + 1] - was[t]) * (1.0 + BALANCE_GAIN * (ratio - 1.0));
        sum += share[t];
    }
    /* The shares as fractions of the batch; a share below the floor is raised to it, the others taken down alike. */
    const double least = BALANCE_FLOOR / threads;
    for (int pass = 0; pass < threads; pass++) {
        double held = 0.0, rest = 0.0;
        for (int t = 0; t < threads; t++) {
            share[t] /= sum;
            if (share[t] <= least) share[t] = least, held += least;
            else rest += share[t];
        }
        if (held == 0.0 || rest == 0.0) break;
        for (int t = 0; t < threads; t++)
            if (share[t] > least) share[t] *= (1.0 - held) / rest;
        sum = 1.0;
    }
    double *next = balance->cuts[target & 1];
    next[0] = 0.0;
    for (int t = 0; t < threads; t++) next[t + 1] = next[t] + share[t];
    next[threads] = 1.0;
}

/* The first layer's pixels are split between the threads by their nonzero entries (the middle of the image holds
 * most of the ink): prefix[p] = the entries of pixels below p, for p = 0 ... inputs, counted over the data's first
 * (up to 4096) images, read in storage order (the epoch's first images in its order lie at random places: counting
 * them cost about 1 ms an epoch). */
static inline void count_pixels(const int64_t *starts, const uint16_t *cols, int64_t n, int64_t inputs,
                                int64_t *prefix) {
    for (int64_t p = 0; p <= inputs; p++) prefix[p] = 0;
    const int64_t sample = n < 4096 ? n : 4096;
    for (int64_t j = starts[0]; j < starts[sample]; j++) prefix[cols[j] + 1]++;
    for (int64_t p = 0; p < inputs; p++) prefix[p + 1] += prefix[p];
}

/* The first pixel of a share that starts at `fraction` of the entries (0: pixel 0; 1: inputs, the end), `prefix`
 * counting the entries of the pixels before each; _train.c cuts a batch's rows by their ink with it too. Any cuts
 * give the same results: each pixel's sum runs over the rows in order. */
static inline int64_t pixel_cut(const int64_t *prefix, int64_t inputs, double fraction) {
    if (fraction <= 0.0) return 0;
    if (fraction >= 1.0) return inputs;
    const double total = (double)prefix[inputs];
    if (total <= 0.0) return (int64_t)((double)inputs * fraction + 0.5);
    int64_t low = 1, high = inputs; /* The least p with prefix[p] >= fraction * total. */
    while (low < high) {
        const int64_t middle = (low + high) / 2;
        if ((double)prefix[middle] >= fraction * total) high = middle;
        else low = middle + 1;
    }
    return low;
}

#endif
