/*
 * scribble.c - a peer that writes the shared header without the lock.
 *
 * The C core promises that nothing written into the segment can make it read
 * or write outside the segment: every field that bounds a memory access is
 * read once under the lock, checked, and only the checked copy is used.  This
 * harness attacks exactly the window between a check and a use.  Scribbler
 * threads flip sendx, recvx, used and qcount to far-away or just-out-of-range
 * values and back with compare-and-swap loops, without the lock, while a
 * sender and a receiver thread run every operation that indexes the ring.
 * Operations may fail (RB_ECORRUPT, bogus lengths); the harness only requires
 * that no access leaves the segment, which AddressSanitizer (a wild read or
 * write faults, or lands in memory ASan guards) and UndefinedBehaviorSanitizer
 * check.
 *
 * A second part aims at one window the threads above rarely open: a receive
 * that empties the queue and then steps over an aborted loan to publish the
 * message committed behind it (L5), with recvx flipped between the check of
 * its positions and the read of the ring that follows.  Round after round,
 * on a fresh channel each time.
 *
 * Built and run by tests/test_sanitizers.py.
 *
 *     scribble NAME SECONDS
 */
#define _GNU_SOURCE
#include "ringbuf.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIZE 4096
static struct rb_chan *ch;
static volatile int stop, quiet;
static unsigned long ops[2], done[2];  /* operations tried, and those that succeeded */

static int64_t deadline_in(int64_t ns)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + ns;
}

/* Flip *field to one bad value after another and back, without the lock. */
struct target {
    uint64_t *field;
    uint64_t bad[6];
};

/* Each scribbler thread works on its targets in turn. */
struct scribbler {
    struct target *targets[4];
};

static void *scribbler(void *arg)
{
    struct scribbler *sc = arg;
    unsigned i = 0;

    while (!stop) {
        struct target *t = sc->targets[i % 4];
        uint64_t good = __atomic_load_n(t->field, __ATOMIC_RELAXED), bad = t->bad[i / 4 % 6];

        i++;
        if (good == bad)
            continue;
        if (__atomic_compare_exchange_n(t->field, &good, bad, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            for (int spin = 0; spin < 200; spin++)
                __asm__ __volatile__("" ::: "memory");
            /* Put it back unless an operation rewrote it meanwhile. */
            __atomic_compare_exchange_n(t->field, &bad, good, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        }
        /* Quiet phases leave the header sound, so that operations also get
         * through and the ring holds records to read when the flips resume. */
        while (quiet && !stop)
            sched_yield();
    }
    return NULL;
}

/* The second part: recvx flipped between its value and a far-away one. */
static struct rb_hdr *lent_target;
static volatile uint64_t lent_good;
static unsigned long lent_passes;  /* the scribbler's passes, each ending here */

static void *lent_scribbler(void *arg)
{
    (void)arg;
    while (!stop) {
        struct rb_hdr *h = __atomic_load_n(&lent_target, __ATOMIC_ACQUIRE);

        if (!h)
            sched_yield();
        for (int i = 0; h && i < 64; i++) {
            __atomic_store_n(&h->recvx, lent_good, __ATOMIC_RELAXED);
            __atomic_store_n(&h->recvx, 1ULL << 40, __ATOMIC_RELAXED);
        }
        __atomic_add_fetch(&lent_passes, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* Stop scribbling on the channel before it is unmapped: the pass under way
 * when the target was cleared is over once the count moved past it. */
static void lent_untarget(void)
{
    unsigned long seen;

    __atomic_store_n(&lent_target, NULL, __ATOMIC_SEQ_CST);
    seen = __atomic_load_n(&lent_passes, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&lent_passes, __ATOMIC_ACQUIRE) < seen + 2)
        sched_yield();
}

/* Rounds of: a message queued, a loan, a message sent behind it, the loan
 * aborted, then the two messages received (or an error) while recvx flips.
 * Returns how many rounds received both. */
static unsigned long lent_rounds(const char *name, unsigned long rounds)
{
    unsigned long both = 0;
    pthread_t t;

    stop = 0;
    pthread_create(&t, NULL, lent_scribbler, NULL);
    for (unsigned long r = 0; r < rounds; r++) {
        struct rb_chan *c;
        struct rb_where w;
        uint8_t buf[256];
        uint64_t lens[4], need;
        int64_t n;

        if (rb_create(name, 16, SIZE, 0600, &c) != RB_OK) {
            fprintf(stderr, "rb_create: round %lu\n", r);
            exit(2);
        }
        rb_unlink(name);
        memset(&w, 0, sizeof w);
        if (rb_send(c, "Q", 1, RB_FOREVER) != RB_OK || rb_loan_begin(c, 8, RB_FOREVER, &w) != RB_OK ||
            rb_send(c, "M", 1, RB_FOREVER) != RB_OK) {
            fprintf(stderr, "setting up round %lu failed\n", r);
            exit(2);
        }
        rb_hold_release(c, &w);  /* aborted, not the last reserved: stepped over later */
        lent_good = __atomic_load_n(&c->hdr->recvx, __ATOMIC_RELAXED);
        __atomic_store_n(&lent_target, c->hdr, __ATOMIC_RELEASE);
        if (r % 2)
            n = rb_recv_batch(c, buf, sizeof buf, lens, 4, &need, 0);
        else if ((n = rb_recv(c, buf, sizeof buf, &need, 0)) >= 0)
            n = rb_recv(c, buf, sizeof buf, &need, 0) >= 0 ? 2 : 1;
        lent_untarget();
        both += n == 2;
        rb_detach(c);
    }
    stop = 1;
    pthread_join(t, NULL);
    return both;
}

static void *sender(void *arg)
{
    static uint8_t payload[SIZE];
    struct rb_iov iov[3] = { { payload, 10 }, { payload, 300 }, { payload, 1 } };
    const uint64_t lens[3] = { 10, 300, 1 };
    uint64_t sent;
    unsigned i = 0;

    (void)arg;
    while (!stop) {
        int64_t soon = deadline_in(1000000);
        int rc = RB_OK;

        switch (i++ % 3) {
        case 0: rc = rb_send(ch, payload, i % 700, soon); break;
        case 1: rc = rb_sendv(ch, iov, 3, soon); break;
        case 2: rc = rb_send_batch(ch, payload, lens, 3, &sent, soon); break;
        }
        ops[0]++;
        done[0] += rc == RB_OK;
    }
    return NULL;
}

static void *receiver(void *arg)
{
    static uint8_t buf[SIZE];
    uint64_t lens[8], need, token;
    unsigned i = 0;

    (void)arg;
    while (!stop) {
        int64_t soon = deadline_in(1000000);
        struct rb_stats st;
        int64_t n = 0;

        switch (i++ % 5) {
        case 0: n = rb_recv(ch, buf, sizeof buf, &need, soon); break;
        case 1: n = rb_recv_batch(ch, buf, sizeof buf, lens, 8, &need, soon); break;
        case 2:
            n = rb_peek(ch, buf, 64, &token, soon);
            if (n >= 0)
                n = -rb_recv_at(ch, token, 0, buf, (uint64_t)n < sizeof buf ? (uint64_t)n : sizeof buf);
            break;
        case 3: n = -rb_check(ch); break;
        case 4: n = -rb_stats(ch, &st); rb_observe(ch, &st); break;
        }
        ops[1]++;
        done[1] += n >= 0;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t threads[4];
    struct target targets[4];
    int rc;

    if (argc != 3) {
        fprintf(stderr, "usage: scribble NAME SECONDS\n");
        return 2;
    }
    if ((rc = rb_create(argv[1], 64, SIZE, 0600, &ch)) != RB_OK) {
        fprintf(stderr, "rb_create: status %d\n", rc);
        return 2;
    }
    /* Far beyond the ring in both directions of the address space (as an
     * unsigned offset wraps), just past its end, and misaligned. */
    struct target init[4] = {
        { &ch->hdr->sendx, { SIZE * 4096ULL, 1ULL << 40, SIZE, SIZE + 8, (uint64_t)-4096, 12 } },
        { &ch->hdr->recvx, { SIZE * 4096ULL, 1ULL << 40, SIZE, SIZE + 8, (uint64_t)-4096, 12 } },
        { &ch->hdr->used, { SIZE * 2, (uint64_t)-8, SIZE + 8, 8, 0, 1ULL << 40 } },
        { &ch->hdr->qcount, { 0, 1, 1000, (uint64_t)-1, 63, 64 } },
    };
    memcpy(targets, init, sizeof targets);
    /* One scribbler on the sender's fields, one on the receiver's: the
     * positions most of the time, the counts now and then. */
    struct scribbler scribblers[2] = {
        { { &targets[0], &targets[0], &targets[0], &targets[2] } },
        { { &targets[1], &targets[1], &targets[1], &targets[3] } },
    };
    pthread_create(&threads[0], NULL, scribbler, &scribblers[0]);
    pthread_create(&threads[1], NULL, scribbler, &scribblers[1]);
    pthread_create(&threads[2], NULL, sender, NULL);
    pthread_create(&threads[3], NULL, receiver, NULL);
    /* Alternate 40 ms of scribbling with 10 ms of quiet. */
    struct timespec loud = { .tv_sec = 0, .tv_nsec = 40000000 }, calm = { .tv_sec = 0, .tv_nsec = 10000000 };
    for (long n = atol(argv[2]) * 20; n > 0; n--) {
        quiet = 0;
        nanosleep(&loud, NULL);
        quiet = 1;
        nanosleep(&calm, NULL);
    }
    stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    rb_unlink(argv[1]);
    rb_detach(ch);
    unsigned long both = lent_rounds(argv[1], 20000);
    printf("clean: %lu of %lu sender and %lu of %lu receiver operations succeeded against the scribblers; "
           "%lu of 20000 rounds received both messages around an aborted loan\n",
           done[0], ops[0], done[1], ops[1], both);
    return 0;
}
