/*
 * ringbuf.c - the channel: lock, ring, parking.
 *
 * Invariants (see struct rb_hdr for I1..I7): they hold whenever the lock is
 * free, because every critical section commits its change last, with a single
 * store.  A send copies the record into free space, then stores the new
 * sendpos (the commit), then updates the caches derived from it: sendx, used,
 * qcount, sent (publish()).  A receive copies the payload out, then stores the
 * new recvpos, then updates recvx, used, qcount, received (release_head()).
 *
 * Crash safety.  The lock is a robust mutex: when its owner dies, the kernel
 * marks it and the next locker gets EOWNERDEAD, at once if it was waiting.
 * That is immune to pid reuse (the kernel walks the dead thread's own list of
 * held robust locks; no pid is compared).  The new owner runs rb_recover():
 * whatever the dead process managed to store, sendpos and recvpos are each
 * either the old or the new value, and the caches are recomputed from them (a
 * walk over the committed records gives qcount).  So a send that did not
 * reach its commit store never happened, a send that did is never lost, and a
 * receive that did not reach its commit store leaves the message queued.
 *
 * Every field read from the shared header is checked against the bounds this
 * process validated at attach time (hdr_sane, and the record length check in
 * rb_recv) before it is used to index the ring.
 *
 * Waiting: a sender without room reads send_futex under the lock, counts
 * itself in sendq, drops the lock and sleeps on send_futex while it still
 * holds the value read.  A receiver that frees room bumps send_futex under the
 * lock if sendq > 0, drops the lock, then wakes.  Because the bump happens
 * under the lock after the sleeper's read, either the sleeper is already in
 * the kernel's queue when the wake comes, or its FUTEX_WAIT sees a changed
 * word and returns at once: no wake-up is lost.  Receivers mirror this on
 * recv_futex.  When nobody is counted as parked no system call is made.
 *
 * Whom to wake: any receiver can take any message, so a send of k messages
 * wakes up to k receivers.  Senders are woken one at a time, as Go wakes one
 * goroutine from sendq, so that hundreds of parked senders do not all rush
 * the lock for the room one receive freed.  Records differ in size, though:
 * the sender woken may not fit while another parked one would.  So the wake
 * is a baton.  A woken sender that sends passes it on if room is left and
 * senders are still parked; a woken sender that does not fit passes it on
 * before parking again, as long as send_baton allows.  Each receive that
 * frees room sets send_baton to the number of parked senders, and each
 * unfitting pass spends one, so the baton visits every parked sender once
 * (the kernel wakes sleepers on one word in FIFO order) and two senders that
 * both do not fit cannot wake each other forever.  Nobody is woken, or
 * passed to, unless the room fits the smallest record a parked sender holds
 * (send_min_need): once a sender that was not parked takes the room, the
 * baton stops instead of visiting every sleeper for nothing.  Should a
 * sender that fits still be missed, its periodic re-check (RB_RECHECK_NS,
 * see park()) finds the room.  A woken waiter always retries its operation before looking at
 * its deadline, and passes the baton on when it gives up, so a wake is never
 * spent on a waiter that then leaves.
 */
#define _GNU_SOURCE
#include "ringbuf.h"
#include "futex.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* Pin the layout: it is an ABI between every process that maps a segment. */
_Static_assert(offsetof(struct rb_hdr, magic) == 0, "magic first");
_Static_assert(offsetof(struct rb_hdr, version) == 8, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, data_off) == 12, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, dataqsiz) == 16, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, size) == 24, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, lock) == RB_CACHELINE, "lock on its own line");
_Static_assert(offsetof(struct rb_hdr, used) + 8 <= offsetof(struct rb_hdr, sendpos),
               "lock line ends before the sender line");
_Static_assert(offsetof(struct rb_hdr, sendpos) % RB_CACHELINE == 0, "sender line aligned");
_Static_assert(offsetof(struct rb_hdr, recvpos) - offsetof(struct rb_hdr, sendpos) == RB_CACHELINE,
               "sender fields fit one line");
_Static_assert(offsetof(struct rb_hdr, sendq) - offsetof(struct rb_hdr, recvpos) == RB_CACHELINE,
               "receiver fields fit one line");
_Static_assert(offsetof(struct rb_hdr, tasks) - offsetof(struct rb_hdr, sendq) == RB_CACHELINE,
               "parking fields fit one line");
_Static_assert(offsetof(struct rb_hdr, send_waiters) - offsetof(struct rb_hdr, tasks) == RB_CACHELINE,
               "task fields fit one line");
_Static_assert(sizeof(struct rb_hdr) <= RB_DATA_OFF, "header fits before the ring");
_Static_assert(RB_DATA_OFF % 4096 == 0 && RB_REC_HDR == 8, "ring page-aligned, 8-byte records");

/* Fields that are read outside the lock (spin hints, observers, the kernel's
 * futex compare) or changed outside it (sendq/recvq on the way out of a sleep
 * interrupted by a signal) go through these, so that no access is a data
 * race.  Relaxed order suffices: each is a hint that is re-read under the
 * lock before anything is decided, and the lock orders everything else. */
#define LOAD(f)      __atomic_load_n(&(f), __ATOMIC_RELAXED)
#define STORE(f, v)  __atomic_store_n(&(f), (v), __ATOMIC_RELAXED)
#define INC(f)       __atomic_fetch_add(&(f), 1, __ATOMIC_RELAXED)

/* How long a blocked call spins on the hints before parking.  A park and its
 * wake cost two system calls and a context switch each way; when the other
 * side is running on another core, the condition usually changes sooner. */
#define RB_SPIN_NS    20000
/* For how much of it the spin is pure; after that it calls sched_yield()
 * between looks.  The other side may be runnable on this very CPU: the
 * kernel likes to put a woken process on its waker's CPU, and with two
 * processes per core that is common.  Spinning there only delays the peer it
 * waits for, by the whole spin; yielding lets it run.  The first couple of
 * microseconds stay pure, because a peer on another CPU answers in that
 * time and a system call would only slow the look down.  (Measured: the
 * round trip to a parked echo process went from 98-104 us to 35-37 us, below
 * a pipe's 40-42 us; the hot round trip did not move beyond the noise.) */
#define RB_SPIN_BUSY_NS 2000
/* How often to try a busy lock before sleeping on it. */
#define RB_LOCK_SPINS 64
/* The longest a parked waiter sleeps before looking again (see park()). */
#define RB_RECHECK_NS 1000000000LL
/* A waiter's slot this old belongs to a process that is dead (or stopped):
 * a live one frees and retakes its slot at least every RB_RECHECK_NS. */
#define RB_REAP_NS (3 * RB_RECHECK_NS)

/* Test hook (rb_debug_crash_at): where this process should die, or 0. */
static int rb_crash_point;
#define CRASH_POINT(p)                          \
    do {                                        \
        if (rb_crash_point == (p))              \
            kill(getpid(), SIGKILL);            \
    } while (0)

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* getpid() is a system call; the pid for lock_owner is cached and refreshed
 * in fork children. */
static pid_t rb_pid;
static pthread_once_t rb_pid_once = PTHREAD_ONCE_INIT;
static void pid_refresh(void) { rb_pid = getpid(); }
static void pid_init(void)
{
    pid_refresh();
    pthread_atfork(NULL, NULL, pid_refresh);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec to_timespec(int64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL };
    return ts;
}

static int expired(int64_t deadline)
{
    return deadline >= 0 && now_ns() >= deadline;
}

static uint64_t align8(uint64_t n) { return (n + 7) & ~7ULL; }

/* x < 2 * size: bring it back into [0, size). */
static uint64_t wrap(const struct rb_chan *ch, uint64_t x)
{
    return x >= ch->size ? x - ch->size : x;
}

/* ---- the lock ---------------------------------------------------------- */

static int rb_recover(struct rb_chan *ch);
static void rb_unlock(struct rb_chan *ch);

static int rb_lock(struct rb_chan *ch, int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;
    int r = EBUSY, rc;

    for (int i = 0; i < RB_LOCK_SPINS && r == EBUSY; i++) {
        r = pthread_mutex_trylock(&h->lock);
        if (r == EBUSY)
            cpu_relax();
    }
    if (r == EBUSY) {
        /* The holder only copies one message, so a call without a deadline
         * (or a non-blocking one) simply waits for it. */
        if (deadline <= 0) {
            r = pthread_mutex_lock(&h->lock);
        } else {
            struct timespec ts = to_timespec(deadline);
            r = pthread_mutex_clocklock(&h->lock, CLOCK_MONOTONIC, &ts);
        }
    }
    if (r == EOWNERDEAD) {
        /* The owner died inside a critical section: repair, wake everyone
         * (a wake-up it owed may never have been made), drop the lock and
         * tell the caller to start its operation again. */
        pthread_mutex_consistent(&h->lock);
        STORE(h->lock_owner, rb_pid);
        rc = rb_recover(ch);
        rb_unlock(ch);
        rb_futex_wake(&h->send_futex, RB_WAKE_ALL);
        rb_futex_wake(&h->recv_futex, RB_WAKE_ALL);
        return rc;
    }
    if (r == 0) {
        STORE(h->lock_owner, rb_pid);
        return RB_OK;
    }
    if (r == ETIMEDOUT)
        return RB_ETIMEDOUT;
    if (r == ENOTRECOVERABLE)
        return RB_ECORRUPT;
    errno = r;
    return RB_ESYS;
}

static void rb_unlock(struct rb_chan *ch)
{
    STORE(ch->hdr->lock_owner, 0);
    pthread_mutex_unlock(&ch->hdr->lock);
}

/* I1, I2 and I4 for the fields an operation uses (`x` is its own position,
 * sendx or recvx), checked against this process's copy of the bounds under
 * the lock before any position is used.  With these, every access stays
 * inside the ring whatever a peer wrote; I3 is left to rb_check so that a
 * sender need not read the receiver's line, nor a receiver the sender's. */
static int hdr_sane(const struct rb_chan *ch, uint64_t x)
{
    const struct rb_hdr *h = ch->hdr;
    uint64_t q = h->qcount, used = h->used;

    return q <= ch->dataqsiz && used <= ch->size && x < ch->size && ((used | x) & 7) == 0 &&
           (q == 0) == (used == 0);
}

/* ---- copying in and out of the ring ------------------------------------ */

/* Copy n <= size bytes to ring offset off (< size), wrapping at the end.
 * Returns the offset after them. */
static uint64_t ring_put(const struct rb_chan *ch, uint64_t off, const void *src, uint64_t n)
{
    uint64_t first = ch->size - off < n ? ch->size - off : n;

    memcpy(ch->data + off, src, first);
    if (n > first)
        memcpy(ch->data, (const uint8_t *)src + first, n - first);
    return wrap(ch, off + n);
}

static uint64_t ring_get(const struct rb_chan *ch, uint64_t off, void *dst, uint64_t n)
{
    uint64_t first = ch->size - off < n ? ch->size - off : n;

    memcpy(dst, ch->data + off, first);
    if (n > first)
        memcpy((uint8_t *)dst + first, ch->data, n - first);
    return wrap(ch, off + n);
}

/*
 * Rebuild the derived fields from the two commit words (lock held, owner
 * dead).  Returns RB_ERECOVERED, or RB_ECORRUPT if the commit words or the
 * records between them do not make sense (then nothing is changed).
 */
static int rb_recover(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t sp = __atomic_load_n(&h->sendpos, __ATOMIC_ACQUIRE);
    uint64_t rp = __atomic_load_n(&h->recvpos, __ATOMIC_ACQUIRE);
    uint64_t used, off, walked = 0, count = 0, len;

    if (sp < rp || sp - rp > ch->size || ((sp | rp) & 7) != 0)
        return RB_ECORRUPT;
    used = sp - rp;
    off = rp % ch->size;
    /* Every record between the commit words was written in full before its
     * commit store, so the walk must land exactly on sendpos. */
    while (walked < used) {
        ring_get(ch, off, &len, RB_REC_HDR);
        if (len > ch->size - RB_REC_HDR || RB_REC_HDR + align8(len) > used - walked || count >= ch->dataqsiz)
            return RB_ECORRUPT;
        walked += RB_REC_HDR + align8(len);
        off = wrap(ch, off + RB_REC_HDR + align8(len));
        count++;
    }
    h->sendx = sp % ch->size;
    h->recvx = rp % ch->size;
    STORE(h->used, used);
    STORE(h->qcount, count);
    /* Only the dead owner's side can have missed its total. */
    if (h->sent - h->received < count)
        STORE(h->sent, h->received + count);
    else if (h->sent - h->received > count)
        STORE(h->received, h->sent - count);
    INC(h->send_futex);
    INC(h->recv_futex);
    h->recoveries++;
    return RB_ERECOVERED;
}

/* ---- spinning and parking --------------------------------------------- */

static int room_for(const struct rb_chan *ch, uint64_t need)
{
    const struct rb_hdr *h = ch->hdr;
    return h->qcount < ch->dataqsiz && h->used + need <= ch->size;
}

/* Spin without the lock until `*counter` (the other side's running total,
 * read as `seen` under the lock) or `*futex` (bumped by close) moves, or the
 * spin budget or the deadline runs out; the caller then retries under the
 * lock.  Both words sit off the lock line, so spinning does not slow down the
 * very lock holder it is waiting for; past RB_SPIN_BUSY_NS it yields the CPU
 * between looks. */
static void spin(const uint64_t *counter, uint64_t seen, const uint32_t *futex, int64_t deadline)
{
    uint32_t fseen = LOAD(*futex);
    int64_t now = now_ns(), busy = now + RB_SPIN_BUSY_NS, until = now + RB_SPIN_NS;

    if (deadline >= 0 && deadline < until)
        until = deadline;
    for (unsigned i = 1;; i++) {
        if (LOAD(*counter) != seen || LOAD(*futex) != fseen)
            return;
        cpu_relax();
        if (i % 64 == 0) {
            now = now_ns();
            if (now >= until)
                return;
            if (now >= busy)
                sched_yield();
        }
    }
}

/* Count a waiter out: decrement, but never below zero (a count is only ever
 * too high when a peer scribbled on the slots; then it must not wrap). */
static void count_out(uint32_t *count)
{
    uint32_t v = LOAD(*count);

    while (v > 0 && !__atomic_compare_exchange_n(count, &v, v - 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* One side of the channel, as parking sees it. */
struct rb_side {
    uint32_t *futex;            /* the word its waiters sleep on */
    uint32_t *count;            /* sendq or recvq */
    struct rb_waiter *slots;
};

static struct rb_side senders(struct rb_hdr *h)
{
    return (struct rb_side){ &h->send_futex, &h->sendq, h->send_waiters };
}

static struct rb_side receivers(struct rb_hdr *h)
{
    return (struct rb_side){ &h->recv_futex, &h->recvq, h->recv_waiters };
}

/* Lock held: strike off waiters whose slot is older than RB_REAP_NS. */
static void reap(struct rb_hdr *h, struct rb_side side)
{
    int64_t stale = now_ns() - RB_REAP_NS;

    for (int i = 0; i < RB_WAITER_SLOTS; i++) {
        uint64_t token = __atomic_load_n(&side.slots[i].token, __ATOMIC_ACQUIRE);

        if (token != 0 && LOAD(side.slots[i].since_ns) < stale &&
            __atomic_compare_exchange_n(&side.slots[i].token, &token, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            count_out(side.count);
            h->waiters_reaped++;
        }
    }
}

/*
 * Park the caller on `side` (lock held on entry, dropped here): read the
 * futex word, count the caller in (with a slot if one is free), drop the
 * lock, wake one other waiter if `pass`, sleep while the word still holds
 * what was read, then count it out.
 *
 * Returns RB_OK when woken, RB_ETIMEDOUT when the sleep ran out (the
 * deadline, or a periodic re-check), RB_EINTR on a signal.
 *
 * Sleep at most RB_RECHECK_NS at a time.  A wake-up is only ever owed by a
 * live process, but a process can be killed after its commit and before its
 * wake system call, or after being woken and before acting on it; the
 * periodic re-check bounds what such a death can cost the sleepers to
 * RB_RECHECK_NS.  It is not how waiters normally wake.
 */
static int park(struct rb_chan *ch, struct rb_side side, int pass, int64_t deadline)
{
    static uint32_t serial;
    uint32_t seq = LOAD(*side.futex);
    uint64_t token = (uint64_t)rb_pid << 32 | __atomic_add_fetch(&serial, 1, __ATOMIC_RELAXED);
    int64_t until = now_ns() + RB_RECHECK_NS;
    struct timespec ts;
    int slot = -1, r;

    reap(ch->hdr, senders(ch->hdr));
    reap(ch->hdr, receivers(ch->hdr));
    for (int i = 0; i < RB_WAITER_SLOTS && slot < 0; i++) {
        if (LOAD(side.slots[i].token) == 0) {  /* only freed outside the lock, never taken */
            STORE(side.slots[i].since_ns, now_ns());
            __atomic_store_n(&side.slots[i].token, token, __ATOMIC_RELEASE);
            slot = i;
        }
    }
    INC(*side.count);
    rb_unlock(ch);
    /* A baton handed on (the caller bumped the word before we read it, so
     * this wake cannot be meant for us, and we are not asleep yet). */
    if (pass)
        rb_futex_wake(side.futex, 1);

    if (deadline >= 0 && deadline < until)
        until = deadline;
    ts = to_timespec(until);
    r = rb_futex_wait(side.futex, seq, &ts);

    /* Count out, unless a reaper already did (we were stopped too long). */
    if (slot < 0 || __atomic_compare_exchange_n(&side.slots[slot].token, &token, 0, 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_RELAXED))
        count_out(side.count);
    /* 0: woken.  EAGAIN: the word moved before we slept, so a wake-up was
     * meant for this side and may have found nobody else asleep; count it as
     * ours. */
    if (r == 0 || r == EAGAIN)
        return RB_OK;
    return r == EINTR ? RB_EINTR : RB_ETIMEDOUT;
}

/* ---- waiting for room or data ----------------------------------------- */

/* Lock held: is a sender parked whose record may fit the room there is now?
 * send_min_need is a lower bound on every parked sender's need, so when this
 * says no, waking one would be wasted. */
static int room_for_parked_sender(const struct rb_chan *ch)
{
    return LOAD(ch->hdr->sendq) > 0 && room_for(ch, ch->hdr->send_min_need);
}

/* Lock held, called by a sender that was woken for room: hand the wake-up
 * on to the next parked sender if `pass` allows and there is room it may
 * fit.  Returns whether to make the wake call once the lock is dropped. */
static int pass_baton(struct rb_chan *ch, int pass)
{
    if (!pass || !room_for_parked_sender(ch))
        return 0;
    INC(ch->hdr->send_futex);
    ch->hdr->send_wakes++;
    return 1;
}

/*
 * Take the lock and return RB_OK still holding it once there is room for a
 * record of `need` bytes; otherwise return a status with the lock dropped.
 * The order of the checks is the order of precedence: a damaged header, then
 * closed, then room, then the deadline, then spin once, then park.
 * *woken says whether the caller was woken for the room it got; if so, it
 * owes the baton (see "Whom to wake") once it has sent.
 */
static int lock_room(struct rb_chan *ch, uint64_t need, int64_t deadline, int *woken)
{
    struct rb_hdr *h = ch->hdr;
    int spun = 0, wake = 0, rc;

    *woken = 0;
    for (;;) {
        if ((rc = rb_lock(ch, deadline)) != RB_OK) {
            /* Leaving with a wake-up in hand: hand it on as best we can
             * without the lock (the re-check covers one that finds nobody). */
            if (*woken)
                rb_futex_wake(&h->send_futex, 1);
            return rc;
        }
        if (!hdr_sane(ch, h->sendx)) {
            rb_unlock(ch);
            return RB_ECORRUPT;
        }

        /* Closed: no more sends, whatever the room (close woke everyone). */
        if (h->closed) {
            rb_unlock(ch);
            return RB_ECLOSED;
        }

        /* Room in the buffer: the caller copies and publishes. */
        if (room_for(ch, need))
            return RB_OK;

        /* Woken, but this record does not fit: the room may suit another
         * parked sender, so hand the wake-up on while the budget lasts. */
        if (*woken) {
            *woken = 0;
            wake = pass_baton(ch, h->send_baton > 0);
            if (wake)
                h->send_baton--;
        }

        /* No room and no time left (a non-blocking call lands here at once). */
        if (expired(deadline)) {
            rb_unlock(ch);
            if (wake)
                rb_futex_wake(&h->send_futex, 1);
            return RB_ETIMEDOUT;
        }

        /* No room yet: spin once until a receive, then park. */
        if (!spun) {
            uint64_t seen = LOAD(h->received);

            rb_unlock(ch);
            if (wake)
                rb_futex_wake(&h->send_futex, 1);
            wake = 0;
            spin(&h->received, seen, &h->send_futex, deadline);
            spun = 1;
            continue;
        }
        if (LOAD(h->sendq) == 0 || need < h->send_min_need)
            h->send_min_need = need;
        h->send_parks++;
        rc = park(ch, senders(h), wake, deadline);
        wake = 0;
        if (rc == RB_EINTR)
            return rc;
        *woken = rc == RB_OK;
    }
}

/* The mirror image: return RB_OK holding the lock once a message is queued. */
static int lock_nonempty(struct rb_chan *ch, int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;
    int spun = 0, rc;

    for (;;) {
        if ((rc = rb_lock(ch, deadline)) != RB_OK)
            return rc;
        if (!hdr_sane(ch, h->recvx)) {
            rb_unlock(ch);
            return RB_ECORRUPT;
        }

        /* Data in the buffer: the caller copies it out and releases it. */
        if (h->qcount > 0)
            return RB_OK;

        /* Closed and drained: the end of the stream. */
        if (h->closed) {
            rb_unlock(ch);
            return RB_ECLOSED;
        }

        /* Empty and no time left. */
        if (expired(deadline)) {
            rb_unlock(ch);
            return RB_ETIMEDOUT;
        }

        /* Empty: spin once until a send, then park. */
        if (!spun) {
            uint64_t seen = LOAD(h->sent);

            rb_unlock(ch);
            spin(&h->sent, seen, &h->recv_futex, deadline);
            spun = 1;
            continue;
        }
        h->recv_parks++;
        if ((rc = park(ch, receivers(h), 0, deadline)) == RB_EINTR)
            return rc;
    }
}

/* ---- publishing and releasing records (lock held) ----------------------- */

/* Write one record made of parts iov[0..n) (total `len` bytes) at ring
 * offset `off`; returns the offset after it.  Nothing is visible to
 * receivers until publish(). */
static uint64_t put_record(const struct rb_chan *ch, uint64_t off, const struct rb_iov *iov, uint32_t n,
                           uint64_t len)
{
    uint64_t end = wrap(ch, off + RB_REC_HDR + align8(len));

    off = ring_put(ch, off, &len, RB_REC_HDR);
    for (uint32_t i = 0; i < n; i++)
        off = ring_put(ch, off, iov[i].base, iov[i].len);
    return end;
}

/* The commit point of a send: `count` records of `bytes` ring bytes, written
 * from the old sendx up to `sendx`, become visible.  A sender that dies before
 * the sendpos store leaves no trace (its bytes lie in free space); after it,
 * rb_recover() completes the rest.  Returns how many parked receivers to wake
 * after the lock is dropped. */
static int publish(struct rb_chan *ch, uint64_t sendx, uint64_t count, uint64_t bytes)
{
    struct rb_hdr *h = ch->hdr;
    uint32_t parked = LOAD(h->recvq);

    CRASH_POINT(RB_CRASH_SEND_BEFORE_COMMIT);
    /* The commit.  Release order: the record bytes are in place before it. */
    __atomic_store_n(&h->sendpos, h->sendpos + bytes, __ATOMIC_RELEASE);
    CRASH_POINT(RB_CRASH_SEND_AFTER_COMMIT);
    h->sendx = sendx;
    STORE(h->used, h->used + bytes);
    STORE(h->qcount, h->qcount + count);
    STORE(h->sent, h->sent + count);
    if (parked == 0)
        return 0;
    INC(h->recv_futex);
    h->send_wakes++;
    return count < parked ? (int)count : (int)parked;
}

/* Read the head record's length and check it against the ring and `used`
 * (I5): it came from shared memory. */
static int head_len(const struct rb_chan *ch, uint64_t *len)
{
    const struct rb_hdr *h = ch->hdr;

    ring_get(ch, h->recvx, len, RB_REC_HDR);
    if (*len > ch->size - RB_REC_HDR || RB_REC_HDR + align8(*len) > h->used)
        return RB_ECORRUPT;
    return RB_OK;
}

/* lock_nonempty(), then read and check the head record's length: RB_OK with
 * the lock held, or a status with it dropped. */
static int lock_head(struct rb_chan *ch, int64_t deadline, uint64_t *len)
{
    int rc;

    if ((rc = lock_nonempty(ch, deadline)) != RB_OK)
        return rc;
    if ((rc = head_len(ch, len)) != RB_OK)
        rb_unlock(ch);
    return rc;
}

/* Release the head record (of payload length len): the commit point of a
 * receive.  Returns whether to wake a parked sender after the lock drops. */
static int release_head(struct rb_chan *ch, uint64_t len)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t bytes = RB_REC_HDR + align8(len);

    CRASH_POINT(RB_CRASH_RECV_BEFORE_COMMIT);
    /* The commit.  Release order: the payload was copied out before it. */
    __atomic_store_n(&h->recvpos, h->recvpos + bytes, __ATOMIC_RELEASE);
    CRASH_POINT(RB_CRASH_RECV_AFTER_COMMIT);
    h->recvx = wrap(ch, h->recvx + bytes);
    STORE(h->used, h->used - bytes);
    STORE(h->qcount, h->qcount - 1);
    STORE(h->received, h->received + 1);
    if (!room_for_parked_sender(ch))
        return 0;
    INC(h->send_futex);
    h->send_baton = LOAD(h->sendq);
    h->recv_wakes++;
    return 1;
}

/* Drop the lock, then wake `receivers` parked receivers and, if `sender`, one
 * parked sender.  After a wake call, yield the CPU once: the kernel tends to
 * put the woken process on this CPU, where it would wait for us to block or
 * be preempted.  (Round trip to a parked echo process: 61-67 us with the
 * yield against 74-76 us for a pipe in the same runs; without it, level with
 * the pipe.  It costs nothing when nobody is parked, since then no wake call
 * is made; 4x4 producers and consumers, which wake often, measured 436-531k
 * msg/s with it and 547-565k without.) */
static void unlock_and_wake(struct rb_chan *ch, int receivers, int sender)
{
    rb_unlock(ch);
    if (receivers > 0)
        rb_futex_wake(&ch->hdr->recv_futex, receivers);
    if (sender)
        rb_futex_wake(&ch->hdr->send_futex, 1);
    if (receivers > 0 || sender)
        sched_yield();
}

/* ---- send ---------------------------------------------------------------- */

int rb_sendv(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, int64_t deadline)
{
    uint64_t len = 0, max = ch->size - RB_REC_HDR, need, end;
    int rc, woken, receivers;

    for (uint32_t i = 0; i < n; i++) {
        if (iov[i].len > max - len)
            return RB_ETOOBIG;
        len += iov[i].len;
    }
    need = RB_REC_HDR + align8(len);
    if ((rc = lock_room(ch, need, deadline, &woken)) != RB_OK)
        return rc;
    end = put_record(ch, ch->hdr->sendx, iov, n, len);
    receivers = publish(ch, end, 1, need);
    unlock_and_wake(ch, receivers, pass_baton(ch, woken));
    return RB_OK;
}

int rb_send(struct rb_chan *ch, const void *buf, uint64_t len, int64_t deadline)
{
    struct rb_iov one = { buf, len };

    return rb_sendv(ch, &one, 1, deadline);
}

int rb_send_batch(struct rb_chan *ch, const void *data, const uint64_t *lens, uint64_t n, uint64_t *sent_out,
                  int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;
    const uint8_t *src = data;
    uint64_t done = 0;
    int rc = RB_OK, woken, receivers;

    *sent_out = 0;
    for (uint64_t i = 0; i < n; i++)
        if (lens[i] > ch->size - RB_REC_HDR)
            return RB_ETOOBIG;

    while (done < n) {
        uint64_t count = 0, bytes = 0, off;

        /* Wait for room for the next message, then write as many as fit and
         * publish them together.  The fit test adds what this batch has
         * written but not yet published to the committed counts. */
        if ((rc = lock_room(ch, RB_REC_HDR + align8(lens[done]), deadline, &woken)) != RB_OK)
            break;
        off = h->sendx;
        do {
            struct rb_iov one = { src, lens[done] };

            off = put_record(ch, off, &one, 1, lens[done]);
            src += lens[done];
            bytes += RB_REC_HDR + align8(lens[done]);
            count++;
            done++;
        } while (done < n && h->qcount + count < ch->dataqsiz &&
                 h->used + bytes + RB_REC_HDR + align8(lens[done]) <= ch->size);
        receivers = publish(ch, off, count, bytes);
        unlock_and_wake(ch, receivers, pass_baton(ch, woken));
        *sent_out = done;
    }
    return rc;
}

/* ---- receive --------------------------------------------------------------- */

int64_t rb_recv(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *need_out, int64_t deadline)
{
    uint64_t len;
    int rc;

    if ((rc = lock_head(ch, deadline, &len)) != RB_OK)
        return -rc;
    if (len > cap) {
        *need_out = len;
        rb_unlock(ch);
        return -RB_ESMALLBUF;
    }
    ring_get(ch, wrap(ch, ch->hdr->recvx + RB_REC_HDR), buf, len);
    unlock_and_wake(ch, 0, release_head(ch, len));
    return (int64_t)len;
}

int64_t rb_recv_batch(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *lens, uint64_t max_items,
                      uint64_t *need_out, int64_t deadline)
{
    uint64_t count = 0, off = 0, len;
    int rc, wake = 0;

    if (max_items == 0)
        return 0;
    if ((rc = lock_nonempty(ch, deadline)) != RB_OK)
        return -rc;
    /* Take queued records while they fit the buffer, without waiting for
     * more once the first is in hand. */
    while (count < max_items && ch->hdr->qcount > 0) {
        if (head_len(ch, &len) != RB_OK) {
            if (count == 0) {
                rb_unlock(ch);
                return -RB_ECORRUPT;
            }
            break;  /* deliver what was good; the next call reports it */
        }
        if (len > cap - off) {
            if (count == 0) {
                *need_out = len;
                rb_unlock(ch);
                return -RB_ESMALLBUF;
            }
            break;
        }
        ring_get(ch, wrap(ch, ch->hdr->recvx + RB_REC_HDR), (uint8_t *)buf + off, len);
        wake |= release_head(ch, len);
        lens[count++] = len;
        off += len;
    }
    unlock_and_wake(ch, 0, wake);
    return (int64_t)count;
}

int64_t rb_peek(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *token_out, int64_t deadline)
{
    uint64_t len;
    int rc;

    if ((rc = lock_head(ch, deadline, &len)) != RB_OK)
        return -rc;
    ring_get(ch, wrap(ch, ch->hdr->recvx + RB_REC_HDR), buf, len < cap ? len : cap);
    /* The head message's sequence number: rb_recv_at() checks that the head
     * is still this message. */
    *token_out = ch->hdr->received;
    rb_unlock(ch);
    return (int64_t)len;
}

int rb_recv_at(struct rb_chan *ch, uint64_t token, uint64_t skip, void *dst, uint64_t n)
{
    uint64_t len;
    int rc;

    if ((rc = rb_lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    if (!hdr_sane(ch, ch->hdr->recvx)) {
        rb_unlock(ch);
        return RB_ECORRUPT;
    }
    /* Another receiver took the peeked message first. */
    if (ch->hdr->qcount == 0 || ch->hdr->received != token) {
        rb_unlock(ch);
        return RB_ECHANGED;
    }
    if (head_len(ch, &len) != RB_OK) {
        rb_unlock(ch);
        return RB_ECORRUPT;
    }
    if (skip > len || n > len - skip) {
        rb_unlock(ch);
        return RB_EINVAL;
    }
    /* recvx < size and skip <= len <= size - 8: the sum is below 2 * size. */
    ring_get(ch, wrap(ch, ch->hdr->recvx + RB_REC_HDR + skip), dst, n);
    unlock_and_wake(ch, 0, release_head(ch, len));
    return RB_OK;
}

void rb_pass_wake(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    int wake = 0;

    if (rb_lock(ch, RB_FOREVER) != RB_OK)
        return;
    if (h->qcount > 0 && LOAD(h->recvq) > 0) {
        INC(h->recv_futex);
        h->send_wakes++;
        wake = 1;
    }
    unlock_and_wake(ch, wake, 0);
}

int rb_close(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    int rc;

    if ((rc = rb_lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    if (!h->closed) {
        STORE(h->closed, 1);
        INC(h->send_futex);
        INC(h->recv_futex);
    }
    rb_unlock(ch);
    /* Close is rare: wake both queues whatever the counts say. */
    rb_futex_wake(&h->send_futex, RB_WAKE_ALL);
    rb_futex_wake(&h->recv_futex, RB_WAKE_ALL);
    return RB_OK;
}

/* ---- unfinished tasks (JoinableQueue) ------------------------------------ */

/*
 * No lock: tasks, joinq and tasks_futex are changed with sequentially
 * consistent atomics, and the order is what prevents a lost wake-up.  A
 * joiner reads tasks_futex, counts itself in joinq, then reads tasks; a
 * task_done that takes tasks to zero then reads joinq.  In the single order of
 * these operations either the joiner's count comes first (task_done sees it,
 * bumps tasks_futex and wakes; a joiner not yet asleep finds the word changed)
 * or task_done's read of joinq comes first, and then its decrement precedes
 * the joiner's read of tasks, which sees zero.
 */
int rb_tasks_add(struct rb_chan *ch, int64_t delta)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t v = __atomic_load_n(&h->tasks, __ATOMIC_SEQ_CST), nv;

    do {
        if (delta < 0 && v < (uint64_t)(-delta))
            return RB_EINVAL;
        nv = v + (uint64_t)delta;
    } while (!__atomic_compare_exchange_n(&h->tasks, &v, nv, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    if (nv == 0 && __atomic_load_n(&h->joinq, __ATOMIC_SEQ_CST) > 0) {
        __atomic_fetch_add(&h->tasks_futex, 1, __ATOMIC_SEQ_CST);
        rb_futex_wake(&h->tasks_futex, RB_WAKE_ALL);
    }
    return RB_OK;
}

int rb_tasks_join(struct rb_chan *ch, int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;

    for (;;) {
        uint32_t seq = __atomic_load_n(&h->tasks_futex, __ATOMIC_SEQ_CST);
        /* As in park(): never sleep more than RB_RECHECK_NS, so that a
         * task_done() killed between its decrement and its wake costs at
         * most that. */
        int64_t until = now_ns() + RB_RECHECK_NS;
        struct timespec ts;
        int r;

        if (deadline >= 0 && deadline < until)
            until = deadline;
        ts = to_timespec(until);

        __atomic_fetch_add(&h->joinq, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&h->tasks, __ATOMIC_SEQ_CST) == 0) {
            __atomic_fetch_sub(&h->joinq, 1, __ATOMIC_SEQ_CST);
            return RB_OK;
        }
        if (expired(deadline)) {
            __atomic_fetch_sub(&h->joinq, 1, __ATOMIC_SEQ_CST);
            return RB_ETIMEDOUT;
        }
        r = rb_futex_wait(&h->tasks_futex, seq, &ts);
        __atomic_fetch_sub(&h->joinq, 1, __ATOMIC_SEQ_CST);
        if (r == EINTR)
            return RB_EINTR;
    }
}

/* ---- observing ---------------------------------------------------------- */

int rb_stats(struct rb_chan *ch, struct rb_stats *out)
{
    struct rb_hdr *h = ch->hdr;
    int rc;

    if ((rc = rb_lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    /* An exact snapshot promises a sound one (rb_observe shows raw values). */
    if (!hdr_sane(ch, h->sendx) || !hdr_sane(ch, h->recvx)) {
        rb_unlock(ch);
        return RB_ECORRUPT;
    }
    reap(h, senders(h));
    reap(h, receivers(h));
    out->dataqsiz = ch->dataqsiz;
    out->size = ch->size;
    out->qcount = h->qcount;
    out->used = h->used;
    out->sendx = h->sendx;
    out->recvx = h->recvx;
    out->sendq = LOAD(h->sendq);
    out->recvq = LOAD(h->recvq);
    out->closed = h->closed;
    out->lock_owner = 0;    /* we hold it; report the state others saw */
    out->creator_pid = h->creator_pid;
    out->sent = h->sent;
    out->received = h->received;
    out->send_parks = h->send_parks;
    out->recv_parks = h->recv_parks;
    out->send_wakes = h->send_wakes;
    out->recv_wakes = h->recv_wakes;
    out->recoveries = h->recoveries;
    out->waiters_reaped = h->waiters_reaped;
    rb_unlock(ch);
    return RB_OK;
}

void rb_observe(struct rb_chan *ch, struct rb_stats *out)
{
    struct rb_hdr *h = ch->hdr;

    out->dataqsiz = ch->dataqsiz;
    out->size = ch->size;
    out->qcount = LOAD(h->qcount);
    out->used = LOAD(h->used);
    out->sendx = LOAD(h->sendx);
    out->recvx = LOAD(h->recvx);
    out->sendq = LOAD(h->sendq);
    out->recvq = LOAD(h->recvq);
    out->closed = LOAD(h->closed);
    out->lock_owner = LOAD(h->lock_owner);
    out->creator_pid = LOAD(h->creator_pid);
    out->sent = LOAD(h->sent);
    out->received = LOAD(h->received);
    out->send_parks = LOAD(h->send_parks);
    out->recv_parks = LOAD(h->recv_parks);
    out->send_wakes = LOAD(h->send_wakes);
    out->recv_wakes = LOAD(h->recv_wakes);
    out->recoveries = LOAD(h->recoveries);
    out->waiters_reaped = LOAD(h->waiters_reaped);
}

int rb_waiter_pids(struct rb_chan *ch, int side, int32_t *pids, int max)
{
    struct rb_side s = side == 0 ? senders(ch->hdr) : receivers(ch->hdr);
    int n = 0;

    for (int i = 0; i < RB_WAITER_SLOTS && n < max; i++) {
        uint64_t token = LOAD(s.slots[i].token);

        if (token != 0)
            pids[n++] = (int32_t)(token >> 32);
    }
    return n;
}

int rb_check(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t off, seen = 0;
    int rc, ok;

    if ((rc = rb_lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    ok = hdr_sane(ch, h->sendx) && hdr_sane(ch, h->recvx) &&
         h->sendx == wrap(ch, h->recvx + h->used) && h->closed <= 1 &&
         h->sendpos - h->recvpos == h->used && h->sendpos % ch->size == h->sendx &&
         h->recvpos % ch->size == h->recvx && h->sent - h->received == h->qcount;
    off = h->recvx;
    for (uint64_t i = 0; ok && i < h->qcount; i++) {
        uint64_t len;

        ring_get(ch, off, &len, RB_REC_HDR);
        ok = len <= ch->size - RB_REC_HDR && seen + RB_REC_HDR + align8(len) <= h->used;
        if (ok) {
            seen += RB_REC_HDR + align8(len);
            off = wrap(ch, off + RB_REC_HDR + align8(len));
        }
    }
    ok = ok && seen == h->used;
    rb_unlock(ch);
    return ok ? RB_OK : RB_ECORRUPT;
}

uint64_t rb_max_message(struct rb_chan *ch)
{
    return ch->size - RB_REC_HDR;
}

int rb_debug_hold_lock(struct rb_chan *ch)
{
    return rb_lock(ch, RB_FOREVER);
}

void rb_debug_crash_at(int point)
{
    rb_crash_point = point;
}

/* ---- segments ----------------------------------------------------------- */

/* "/" + name into path; RB_EINVAL for an empty or too long name or one with
 * a '/' (shm_open names are a single component). */
static int shm_path(const char *name, char path[RB_NAME_MAX + 2])
{
    size_t n = strnlen(name, RB_NAME_MAX + 1);

    if (n == 0 || n > RB_NAME_MAX || strchr(name, '/'))
        return RB_EINVAL;
    path[0] = '/';
    memcpy(path + 1, name, n + 1);
    return RB_OK;
}

/* The bounds are passed in, already validated, rather than read again from
 * the shared header, which a peer could change in between. */
static int new_handle(struct rb_hdr *h, size_t map_len, uint64_t capacity, uint64_t size,
                      struct rb_chan **out)
{
    struct rb_chan *ch = malloc(sizeof *ch);

    if (!ch)
        return RB_ESYS;
    ch->hdr = h;
    ch->data = (uint8_t *)h + RB_DATA_OFF;
    ch->map_len = map_len;
    ch->dataqsiz = capacity;
    ch->size = size;
    *out = ch;
    return RB_OK;
}

int rb_create(const char *name, uint64_t capacity, uint64_t size, uint32_t mode, struct rb_chan **out)
{
    char path[RB_NAME_MAX + 2];
    pthread_mutexattr_t attr;
    struct rb_hdr *h;
    size_t map_len;
    int fd, err, rc;

    pthread_once(&rb_pid_once, pid_init);
    if (shm_path(name, path) != RB_OK || capacity < 1 || capacity > RB_MAX_CAPACITY ||
        size < RB_MIN_SIZE || size > RB_MAX_SIZE || size % 8 != 0 || (mode & ~0777u) != 0)
        return RB_EINVAL;
    map_len = RB_DATA_OFF + size;

    /* Created owner-only, then given the mode asked for (fchmod, unlike the
     * open, ignores the umask). */
    fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return RB_ESYS;
    if (mode != 0600 && fchmod(fd, mode) != 0)
        goto fail_fd;
    /* Reserve the pages now: on a full /dev/shm this fails here with ENOSPC
     * instead of killing a later sender with SIGBUS. */
    if (ftruncate(fd, (off_t)map_len) != 0 || (errno = posix_fallocate(fd, 0, (off_t)map_len)) != 0)
        goto fail_fd;
    h = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED)
        goto fail_fd;
    close(fd);

    h->version = RB_LAYOUT_VERSION;
    h->data_off = RB_DATA_OFF;
    h->dataqsiz = capacity;
    h->size = size;
    h->creator_pid = rb_pid;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    err = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (err != 0) {
        errno = err;
        goto fail_map;
    }
    /* Publish: pairs with the acquire load of magic in rb_attach. */
    __atomic_store_n(&h->magic, RB_MAGIC, __ATOMIC_RELEASE);

    if ((rc = new_handle(h, map_len, capacity, size, out)) != RB_OK)
        goto fail_map;
    return RB_OK;

fail_map:
    err = errno;
    munmap(h, map_len);
    shm_unlink(path);
    errno = err;
    return RB_ESYS;
fail_fd:
    err = errno;
    close(fd);
    shm_unlink(path);
    errno = err;
    return RB_ESYS;
}

int rb_attach(const char *name, struct rb_chan **out)
{
    char path[RB_NAME_MAX + 2];
    struct rb_hdr *h;
    struct stat st;
    uint64_t size, cap;
    size_t map_len;
    int fd, err;

    pthread_once(&rb_pid_once, pid_init);
    if (shm_path(name, path) != RB_OK)
        return RB_EINVAL;
    fd = shm_open(path, O_RDWR, 0);
    if (fd < 0)
        return RB_ESYS;
    if (fstat(fd, &st) != 0) {
        err = errno;
        close(fd);
        errno = err;
        return RB_ESYS;
    }
    if (st.st_size < RB_DATA_OFF) {
        close(fd);
        return RB_EINCOMPAT;
    }
    map_len = (size_t)st.st_size;
    h = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = errno;
    close(fd);
    if (h == MAP_FAILED) {
        errno = err;
        return RB_ESYS;
    }

    /* Pairs with the release store in rb_create: seeing the magic means
     * seeing the fields written before it.  Each field is read once. */
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RB_MAGIC ||
        h->version != RB_LAYOUT_VERSION || h->data_off != RB_DATA_OFF) {
        munmap(h, map_len);
        return RB_EINCOMPAT;
    }
    size = h->size;
    cap = h->dataqsiz;
    if (size < RB_MIN_SIZE || size > RB_MAX_SIZE || size % 8 != 0 ||
        cap < 1 || cap > RB_MAX_CAPACITY || map_len < RB_DATA_OFF + size) {
        munmap(h, map_len);
        return RB_EINCOMPAT;
    }
    if (new_handle(h, map_len, cap, size, out) != RB_OK) {
        munmap(h, map_len);
        errno = ENOMEM;
        return RB_ESYS;
    }
    return RB_OK;
}

void rb_detach(struct rb_chan *ch)
{
    if (!ch)
        return;
    munmap(ch->hdr, ch->map_len);
    free(ch);
}

int rb_unlink(const char *name)
{
    char path[RB_NAME_MAX + 2];

    if (shm_path(name, path) != RB_OK)
        return RB_EINVAL;
    return shm_unlink(path) == 0 ? RB_OK : RB_ESYS;
}
