/*
 * ringbuf.c - the channel: lock, ring, parking.
 *
 * The struct, its invariants (I1..I8) and the wait/wake rules (W1..W11) are
 * in ringbuf.h; the code that carries out a rule names it.
 *
 * Commits.  The invariants hold whenever the lock is free, because every
 * critical section commits its change last, with a single store.  A send
 * copies the record into free space, then stores the new sendpos (the
 * commit), then updates the fields derived from it: sendx, used, qcount,
 * sent (publish()).  A receive copies the payload out, then stores the new
 * recvpos, then updates recvx, used, qcount, received (release_head()).
 *
 * Crash safety.  The lock is a robust mutex: when its owner dies, the kernel
 * marks it and the next locker gets EOWNERDEAD, at once if it was waiting.
 * That is immune to pid reuse (the kernel walks the dead thread's own list of
 * held robust locks; no pid is compared).  The new owner runs recover():
 * whatever the dead process managed to store, sendpos and recvpos are each
 * either the old or the new value, and the derived fields are recomputed
 * from them (a walk over the committed records gives qcount).  So a send that
 * did not reach its commit store never happened, a send that did is never
 * lost, and a receive that did not reach its commit store leaves the message
 * queued.  A waiter that dies while parked is struck off by W9.
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
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>

/* Pin the layout: it is an ABI between every process that maps a segment. */
_Static_assert(offsetof(struct rb_hdr, magic) == 0, "magic first");
_Static_assert(offsetof(struct rb_hdr, version) == 8, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, data_off) == 12, "identity line: the same in every version");
_Static_assert(RB_MAX_CAPACITY + RB_HOLDS <= UINT32_MAX, "held_msgs (32 bits) never wraps (L3)");
_Static_assert(offsetof(struct rb_hdr, dataqsiz) == 16, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, size) == 24, "identity line: the same in every version");
_Static_assert(offsetof(struct rb_hdr, lock) == RB_CACHELINE, "lock on its own line");
_Static_assert(offsetof(struct rb_hdr, used) + 8 <= offsetof(struct rb_hdr, sendpos),
               "lock line ends before the sender line");
_Static_assert(offsetof(struct rb_hdr, sendpos) % RB_CACHELINE == 0, "sender line aligned");
_Static_assert(offsetof(struct rb_hdr, recvpos) - offsetof(struct rb_hdr, sendpos) == RB_CACHELINE,
               "sender fields fit one line");
_Static_assert(offsetof(struct rb_hdr, send_mask) - offsetof(struct rb_hdr, recvpos) == RB_CACHELINE,
               "receiver fields fit one line");
_Static_assert(offsetof(struct rb_hdr, tasks_done) - offsetof(struct rb_hdr, send_mask) == RB_CACHELINE,
               "parking fields fit one line");
_Static_assert(offsetof(struct rb_hdr, peak_used) - offsetof(struct rb_hdr, tasks_done) == RB_CACHELINE,
               "task fields fit one line");
_Static_assert(offsetof(struct rb_hdr, send_waiters) - offsetof(struct rb_hdr, peak_used) == RB_CACHELINE,
               "statistics fit one line");
_Static_assert(sizeof(struct rb_hold) == 32, "holds are 32 bytes");
_Static_assert(sizeof(struct rb_waiter) == 24, "waiter slots are 24 bytes");
_Static_assert(RB_WAITER_SLOTS == 64, "one mask bit per waiter slot");
_Static_assert(sizeof(struct rb_hdr) <= RB_DATA_OFF, "header fits before the ring");
_Static_assert(RB_DATA_OFF % 4096 == 0 && RB_REC_HDR == 8, "ring page-aligned, 8-byte records");

/* Relaxed atomic access for fields read outside the lock or changed outside
 * it (see "Memory order" in ringbuf.h), so that no access is a data race and
 * the compiler never loads a shared field twice. */
#define LOAD(f)      __atomic_load_n(&(f), __ATOMIC_RELAXED)
#define STORE(f, v)  __atomic_store_n(&(f), (v), __ATOMIC_RELAXED)
#define INC(f)       __atomic_fetch_add(&(f), 1, __ATOMIC_RELAXED)

/* How long a blocked call spins on the hints before parking: a park and its
 * wake cost two system calls and a context switch each way, and a peer on
 * another core usually answers sooner.  RB_SPIN_NS to start with and after
 * long waits; up to RB_SPIN_MAX_NS while this handle's waits on that side
 * end soon after it would have parked (learn_spin). */
#define RB_SPIN_NS    20000
#define RB_SPIN_MAX_NS 100000
/* For how much of the spin it is pure; after that it yields the CPU between
 * looks, since the peer it waits for may be runnable on this very CPU. */
#define RB_SPIN_BUSY_NS 2000
/* How often to try a busy lock before sleeping on it. */
#define RB_LOCK_SPINS 64
/* While the lock stays held, a waiter for it returns to Python this often
 * (RB_EINTR), so that signal handlers and Ctrl-C run. */
#define RB_LOCK_SLICE_NS 50000000LL
/* The slice of a call that must not hold its thread long: one whose
 * deadline is less than a slice away (a non-blocking call, an asyncio
 * task's attempt), and the steps of a wait made elsewhere (W14), whose
 * thread runs an event loop. */
#define RB_LOCK_BRIEF_NS 1000000LL
/* How long past its deadline a call waits for a lock that stays held (by a
 * stopped or looping peer); a lock held for one copy is long free by then. */
#define RB_LOCK_GRACE_NS 1000000000LL
/* W8: the longest a parked waiter sleeps before looking again. */
#define RB_RECHECK_NS 1000000000LL
/* The period this process uses: RB_RECHECK_NS, unless a test lengthened it
 * (rb_debug_recheck) so that a wake-up that should have been made and was
 * not shows as a wait that does not end, rather than as one a second late.
 * Set before the process (and the children it forks, which inherit it)
 * uses any channel; read relaxed. */
static int64_t recheck_ns = RB_RECHECK_NS;
#define RECHECK_NS __atomic_load_n(&recheck_ns, __ATOMIC_RELAXED)
/* W9: a slot not stamped for this long belongs to a dead (or stopped)
 * process: a live one re-stamps it at least every RECHECK_NS. */
#define RB_REAP_NS (3 * RECHECK_NS)

/* park_select's private answer: a case turned out ready while counting in. */
#define RB_EAGAIN_INTERNAL (-1)

/* Test hook (rb_debug_crash_at): where this process should die, or 0. */
static int crash_point;
#define CRASH_POINT(p)                          \
    do {                                        \
        if (crash_point == (p))                 \
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

/* Who this process is: its pid (getpid() is a system call; cached for
 * lock_owner) and a random id that names it in the waiter slots.  The id,
 * unlike a pid, does not repeat across pid namespaces that share /dev/shm.
 * Both are renewed in a fork child. */
#define RB_SHARED_OWNER 0xffffffffu
static pid_t self_pid;
static uint32_t self_id;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_refresh(void)
{
    uint32_t id = 0;

    self_pid = getpid();
    while (id == 0 || id == RB_SHARED_OWNER) {
        if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            id = (uint32_t)self_pid * 2654435761u ^ (uint32_t)ts.tv_nsec;
        }
    }
    self_id = id;
}

/* Every handle of this process, so that a fork child can give each its own
 * lock description and tag (L4): a child that shared its parent's would
 * keep the parent's holds alive, and its own holds would look like them. */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rb_chan *handles;
static uint64_t all_gens;  /* the process's begins so far: generations are unique, from 1 (0 names no hold) */
static int64_t now_ns(void);

/* This thread's id (gettid), cached; a fork child's thread starts afresh. */
static __thread int32_t my_tid;

static int32_t self_tid(void)
{
    if (my_tid == 0)
        my_tid = (int32_t)syscall(SYS_gettid);
    return my_tid;
}

/* A handle's tag (L4): random, in [1, RB_TAG_LIMIT). */
static uint64_t new_tag(void)
{
    uint64_t t = 0;

    while (t == 0) {
        if (getrandom(&t, sizeof t, 0) != (ssize_t)sizeof t)
            t = (uint64_t)now_ns() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)self_pid;
        t %= RB_TAG_LIMIT;
    }
    return t;
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&handles_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&handles_lock);
}

/* Give `fd` an open file description of its own: open its file again
 * through /proc/self/fd (the name may be unlinked by now) onto the same
 * descriptor number.  Returns 0, or -1 if it cannot (no /proc, no descriptor
 * left), fd unchanged.  A handle keeps its liveness lock (L4) on such a
 * description, never on the one its mappings were made through: a mapping
 * holds its description open, and a fork child inherits the mappings, so a
 * lock taken there would outlive its process for as long as a child lived. */
static int own_description(int fd)
{
    char path[32] = "/proc/self/fd/";
    char digits[12];
    int n = 0, len = 14, rest = fd, nfd, rc = -1;

    do
        digits[n++] = (char)('0' + rest % 10);
    while ((rest /= 10) > 0);
    while (n > 0)
        path[len++] = digits[--n];
    path[len] = 0;
    if ((nfd = open(path, O_RDWR | O_CLOEXEC)) >= 0) {
        rc = dup3(nfd, fd, O_CLOEXEC) >= 0 ? 0 : -1;
        close(nfd);
    }
    return rc;
}

static struct rb_hdr *map_segment(int fd, uint64_t size, size_t *map_len, int *mirrored);

/* In the child, for each handle: a description of its own, so that the
 * parent's liveness lock, if it took one, is not kept alive through the
 * child's descriptor; and a mapping of its own for the holds it will take,
 * so that the buffers it inherited over its parent's holds (which stay
 * mapped where they are, never unmapped) are told apart from them when
 * they die (rb_release finds no handle there).  A child that cannot do
 * both neither takes holds nor reclaims others' (own_fd 0): through its
 * parent's description a parent's lock would look like its own. */
static void fork_child(void)
{
    self_refresh();
    my_tid = 0;
    for (struct rb_chan *ch = handles; ch; ch = ch->next) {
        struct rb_hdr *again = NULL;
        size_t map_len;
        int mirrored, nfd;

        memset(ch->mine, 0, sizeof ch->mine);  /* the parent's holds are not the child's */
        for (int i = 0; i < RB_HOLDS; i++)  /* ... and count as ended, should a settle name one */
            ch->mine[i].done = all_gens;
        ch->live = 0;  /* no lock is held on a new description */
        ch->tag = new_tag();
        ch->own_fd = 0;
        /* Mapped through a description that is then closed: the mapping
         * keeps it, with no lock on it (own_description).  A detached handle
         * (its Python handle gone, kept for buffers still alive) takes no
         * more holds: a description of its own is all it needs. */
        if (own_description(ch->fd) != 0 || ch->detached || (nfd = fcntl(ch->fd, F_DUPFD_CLOEXEC, 0)) < 0)
            continue;
        if (own_description(nfd) == 0)
            again = map_segment(nfd, ch->size, &map_len, &mirrored);
        close(nfd);
        if (again == NULL || mirrored != ch->mirrored) {
            if (again != NULL)
                munmap(again, map_len);
            continue;
        }
        /* The inherited mapping is left to the buffers over the parent's
         * holds, if there were any; otherwise nothing can be using it. */
        if (ch->pins == 0)
            munmap(ch->hdr, ch->map_len);
        ch->hdr = again;
        ch->data = (uint8_t *)again + RB_DATA_OFF;
        ch->map_len = map_len;
        ch->pins = 0;
        ch->own_fd = 1;
    }
    pthread_mutex_unlock(&handles_lock);
}

static void self_init(void)
{
    self_refresh();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
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

static int recover(struct rb_chan *ch);
static void unlock(struct rb_chan *ch);
struct pos;
static void set_held(struct rb_chan *ch, struct pos *p);
static void advance(struct rb_chan *ch, struct pos *p);

/*
 * Take the lock.  It is held only for bookkeeping and one copy, so every call
 * waits for it, a non-blocking one included, and decides on room or data
 * once it has it.  The wait is cut into slices of `slice` ns (< 0: of
 * RB_LOCK_SLICE_NS, or RB_LOCK_BRIEF_NS for a deadline less than a slice
 * away, so that a call that was not to wait returns soon while a stuck peer
 * holds the lock): after each, RB_EINTR sends the caller back to Python to
 * run signal handlers and retry (pthread_mutex_lock itself never returns for
 * a signal).  A call with a deadline gives up with RB_ETIMEDOUT once
 * RB_LOCK_GRACE_NS past it.
 */
static int lock_sliced(struct rb_chan *ch, int64_t deadline, int64_t slice)
{
    struct rb_hdr *h = ch->hdr;
    int r = EBUSY, rc;

    for (int i = 0; i < RB_LOCK_SPINS && r == EBUSY; i++) {
        r = pthread_mutex_trylock(&h->lock);
        if (r == EBUSY)
            cpu_relax();
    }
    if (r == EBUSY) {
        int64_t now = now_ns(), until;
        int64_t limit = deadline > INT64_MAX - RB_LOCK_GRACE_NS ? INT64_MAX : deadline + RB_LOCK_GRACE_NS;
        struct timespec ts;

        if (slice < 0)
            slice = deadline >= 0 && deadline - now < RB_LOCK_SLICE_NS ? RB_LOCK_BRIEF_NS : RB_LOCK_SLICE_NS;
        until = now + slice;
        if (deadline >= 0 && now >= limit)
            return RB_ETIMEDOUT;
        if (deadline >= 0 && limit < until)
            until = limit;
        ts = to_timespec(until);
        r = pthread_mutex_clocklock(&h->lock, CLOCK_MONOTONIC, &ts);
        if (r == ETIMEDOUT)
            return deadline >= 0 && now_ns() >= limit ? RB_ETIMEDOUT : RB_EINTR;
    }
    if (r == EOWNERDEAD) {
        /* The owner died inside a critical section: repair, wake everyone
         * (W5: a wake-up it owed may never have been made), drop the lock and
         * tell the caller to start its operation again. */
        pthread_mutex_consistent(&h->lock);
        STORE(h->lock_owner, self_pid);
        rc = recover(ch);
        unlock(ch);
        futex_wake(&h->send_futex, WAKE_ALL);
        futex_wake(&h->recv_futex, WAKE_ALL);
        futex_wake(&h->ack_futex, WAKE_ALL);
        futex_wake(&h->hold_futex, WAKE_ALL);
        return rc;
    }
    if (r == 0) {
        STORE(h->lock_owner, self_pid);
        return RB_OK;
    }
    if (r == ENOTRECOVERABLE)
        return RB_ECORRUPT;
    errno = r;
    return RB_ESYS;
}

/* Take the lock for a call with this deadline (lock_sliced). */
static int lock(struct rb_chan *ch, int64_t deadline)
{
    return lock_sliced(ch, deadline, -1);
}

/* W14: the lock for a step of a wait made elsewhere, whose thread runs an
 * event loop: RB_EINTR after RB_LOCK_BRIEF_NS, and the task looks again
 * later. */
static int lock_briefly(struct rb_chan *ch)
{
    return lock_sliced(ch, RB_FOREVER, RB_LOCK_BRIEF_NS);
}

static void unlock(struct rb_chan *ch)
{
    STORE(ch->hdr->lock_owner, 0);
    pthread_mutex_unlock(&ch->hdr->lock);
}

/* ---- positions, read once ----------------------------------------------- */

/* The fields one side's critical section works with, read from the header
 * once under the lock and checked against this process's copy of the bounds
 * (I1, I2, I4) before any of them indexes the ring.  Only these locals are
 * used afterwards.  I3 is left to rb_check, so that a sender need not read
 * the receiver's line, nor a receiver the sender's. */
struct pos {
    uint64_t qcount;
    uint64_t used;
    uint64_t x;                 /* where a sender writes (sendx, or resvpos's
                                 * offset while records are lent: L1), or
                                 * recvx for a receiver */
    uint64_t held;              /* L3 */
    uint64_t held_msgs;
    uint64_t lent;              /* a sender's: resvpos - sendpos */
    uint32_t woke;              /* receivers to wake for records advance()
                                 * published on a receiver's behalf (L5) */
};

static int read_pos(const struct rb_chan *ch, const uint64_t *xfield, struct pos *p)
{
    const struct rb_hdr *h = ch->hdr;

    p->qcount = LOAD(h->qcount);
    p->used = LOAD(h->used);
    p->x = __atomic_load_n(xfield, __ATOMIC_RELAXED);
    p->held = LOAD(h->held);
    p->held_msgs = LOAD(h->held_msgs);
    p->lent = 0;
    p->woke = 0;
    if (p->qcount > ch->dataqsiz || p->used > ch->size || p->x >= ch->size || ((p->used | p->x) & 7) != 0 ||
        (p->qcount == 0) != (p->used == 0) || p->held > ch->size - p->used || (p->held & 7) != 0 ||
        p->held_msgs > ch->dataqsiz - p->qcount)
        return 0;
    if (p->held_msgs != 0 && xfield == &h->sendx) {
        /* L1: behind the lent records. */
        p->lent = LOAD(h->resvpos) - LOAD(h->sendpos);
        if (p->lent > p->held)
            return 0;
        p->x = wrap(ch, p->x + p->lent);
    }
    return 1;
}

/* Room for a record of `need` ring bytes, counting what loans and views hold
 * (L3). */
static int room_for(const struct rb_chan *ch, const struct pos *p, uint64_t need)
{
    return p->qcount + p->held_msgs < ch->dataqsiz && p->used + p->held + need <= ch->size;
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

/* The length of the record at ring offset off (< size), read once, and
 * whether it is sound: no longer than the ring allows, and within the `left`
 * bytes that the queued records occupy from there (I5). */
static int record_len(const struct rb_chan *ch, uint64_t off, uint64_t left, uint64_t *len)
{
    ring_get(ch, off, len, RB_REC_HDR);
    return *len <= ch->size - RB_REC_HDR && RB_REC_HDR + align8(*len) <= left;
}

/* L1, L5, lock held: whether a message committed before now waits behind a
 * loan still out (a record in [sendpos, resvpos) neither lent nor aborted).
 * A closed channel is not drained while one does: its send completed before
 * the close, so receivers wait for the loan's end to let it through (which
 * wakes them), as they would for any message queued before the close.  Each
 * step passes at least one record header, checked against resvpos: at most
 * size / 8 steps. */
static int waits_behind_loan(const struct rb_chan *ch, const struct pos *p)
{
    const struct rb_hdr *h = ch->hdr;
    uint64_t sp, rv, w, len, bytes;

    if (p->held_msgs == 0)
        return 0;
    sp = LOAD(h->sendpos);
    rv = LOAD(h->resvpos);
    if (rv < sp || rv - sp > ch->size)
        return 0;  /* unsound: rb_check reports it */
    while (sp < rv) {
        ring_get(ch, sp % ch->size, &w, RB_REC_HDR);
        len = w & ~RB_REC_FLAGS;
        if (len > ch->size - RB_REC_HDR || (bytes = RB_REC_HDR + align8(len)) > rv - sp)
            return 0;
        if ((w & RB_REC_FLAGS) == 0)
            return 1;
        sp += bytes;
    }
    return 0;
}

/* Walk the records from ring offset off over `used` bytes: how many there
 * are, or -1 if they do not tile `used` exactly or exceed `limit` records. */
static int64_t walk_records(const struct rb_chan *ch, uint64_t off, uint64_t used, uint64_t limit)
{
    uint64_t walked = 0, count = 0, len;

    while (walked < used) {
        if (count >= limit || !record_len(ch, off, used - walked, &len))
            return -1;
        walked += RB_REC_HDR + align8(len);
        off = wrap(ch, off + RB_REC_HDR + align8(len));
        count++;
    }
    return (int64_t)count;
}

/* Walk the records of [sendpos, resvpos) (L1) from ring offset off over
 * `bytes`: how many, and in *committed how many are messages, or -1 if
 * they do not tile it or there are more than RB_MAX_CAPACITY. */
static int64_t walk_lent(const struct rb_chan *ch, uint64_t off, uint64_t bytes, uint64_t *committed)
{
    uint64_t walked = 0, count = 0, w, len;

    *committed = 0;
    while (walked < bytes) {
        ring_get(ch, off, &w, RB_REC_HDR);
        len = w & ~RB_REC_FLAGS;
        if (count >= ch->dataqsiz || len > ch->size - RB_REC_HDR || (w & RB_REC_FLAGS) == RB_REC_FLAGS ||
            RB_REC_HDR + align8(len) > bytes - walked)
            return -1;
        *committed += (w & RB_REC_FLAGS) == 0;
        walked += RB_REC_HDR + align8(len);
        off = wrap(ch, off + RB_REC_HDR + align8(len));
        count++;
    }
    return (int64_t)count;
}

/* ---- waiter slots (W1, W3, W4, W9) -------------------------------------- */

#define SLOT_OWNER(w)  ((uint32_t)((w) >> 32))
#define SLOT_GEN(w)    ((uint32_t)((w) >> 16) & 0xffffu)
#define SLOT_COUNT(w)  ((uint32_t)(w) & 0xffffu)
#define SLOT_FREE(gen) ((uint64_t)((gen) & 0xffffu) << 16)
#define SLOT_MAX_COUNT 0xffffu

/* One side of the channel, as parking sees it. */
struct side {
    uint32_t *futex;            /* the word its waiters sleep on */
    uint64_t *mask;             /* send_mask or recv_mask */
    struct rb_waiter *slots;
};

static struct side senders(struct rb_hdr *h)
{
    return (struct side){ &h->send_futex, &h->send_mask, h->send_waiters };
}

static struct side receivers(struct rb_hdr *h)
{
    return (struct side){ &h->recv_futex, &h->recv_mask, h->recv_waiters };
}

/* A parked waiter's claim on its slot: what W3 compares against. */
struct ticket {
    int slot;
    uint32_t owner, gen;
};

/* W1, lock held: count the caller into its process's slot (or a free one, or
 * the shared last one) and mark the slot in the side's mask. */
static struct ticket count_in(struct side s)
{
    const int shared = RB_WAITER_SLOTS - 1;
    uint64_t mask = LOAD(*s.mask);
    int mine = -1, fresh = -1;
    struct ticket t;
    uint64_t w;

    /* This process's slot, if it has one, has waiters, so its bit is set
     * (I8): only the set bits are looked at.  A free slot is looked for
     * among the clear bits first (a slot without waiters is free). */
    for (uint64_t m = mask & ~(1ULL << shared); m != 0 && mine < 0; m &= m - 1) {
        int i = __builtin_ctzll(m);

        w = __atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED);
        if (SLOT_OWNER(w) == self_id && SLOT_COUNT(w) < SLOT_MAX_COUNT)
            mine = i;
    }
    for (int i = 0; i < shared && mine < 0 && fresh < 0; i++) {
        if (mask & 1ULL << i)
            continue;
        if (SLOT_OWNER(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED)) == 0)
            fresh = i;
    }
    for (int i = 0; i < shared && mine < 0 && fresh < 0; i++)  /* every bit set: any free slot */
        if (SLOT_OWNER(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED)) == 0)
            fresh = i;
    t.slot = mine >= 0 ? mine : fresh >= 0 ? fresh : shared;
    t.owner = t.slot == shared ? RB_SHARED_OWNER : self_id;
    w = __atomic_load_n(&s.slots[t.slot].word, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t nw;

        if (SLOT_OWNER(w) == 0)  /* take it: a new generation, a count of one */
            nw = (uint64_t)t.owner << 32 | SLOT_FREE(SLOT_GEN(w) + 1) | 1;
        else if (SLOT_COUNT(w) < SLOT_MAX_COUNT)
            nw = w + 1;
        else
            nw = w;  /* the shared slot is full (65535 waiters): this one goes uncounted */
        /* Others only ever count out (W3) or, under this lock, reap: retry
         * with what they left. */
        if (__atomic_compare_exchange_n(&s.slots[t.slot].word, &w, nw, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            t.gen = SLOT_GEN(nw);
            break;
        }
    }
    /* W9: a process's slot is stamped at every count-in; the shared slot only
     * when it is taken, so that a dead sharer's count cannot outlive it by
     * more than RB_REAP_NS however often live sharers park. */
    if (t.slot != shared || SLOT_COUNT(__atomic_load_n(&s.slots[t.slot].word, __ATOMIC_RELAXED)) == 1)
        STORE(s.slots[t.slot].since_ns, now_ns());
    STORE(s.slots[t.slot].pid, self_pid);
    STORE(*s.mask, LOAD(*s.mask) | 1ULL << t.slot);
    return t;
}

/* W3, no lock: count the caller out, unless a reaper struck it off already. */
static void count_out(struct side s, struct ticket t)
{
    uint64_t w = __atomic_load_n(&s.slots[t.slot].word, __ATOMIC_RELAXED), nw;

    do {
        if (SLOT_OWNER(w) != t.owner || SLOT_GEN(w) != t.gen || SLOT_COUNT(w) == 0)
            return;
        nw = SLOT_COUNT(w) == 1 ? SLOT_FREE(t.gen) : w - 1;
    } while (!__atomic_compare_exchange_n(&s.slots[t.slot].word, &w, nw, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

static void reap(struct rb_hdr *h, struct side s);

/* W4, lock held: how many waiters are counted on this side.  Clears the mask
 * bits of slots found empty; none can be refilled meanwhile, since only a
 * lock holder counts in.  While any waiter is counted, it also runs W9's
 * reap, at most once per RB_RECHECK_NS, so that a dead waiter's count does
 * not outlive it when nobody parks. */
static uint32_t parked(struct rb_hdr *h, struct side s)
{
    static __thread unsigned calls;
    uint64_t mask = LOAD(*s.mask), keep = 0;
    uint32_t n = 0;
    int64_t now;

    if (mask == 0)
        return 0;
    /* The clock is read one call in 64: reaping is a matter of seconds. */
    if ((++calls & 63) == 0 && (now = now_ns()) >= LOAD(h->next_reap_ns)) {
        STORE(h->next_reap_ns, now + RECHECK_NS);
        reap(h, senders(h));
        reap(h, receivers(h));
        mask = LOAD(*s.mask);
    }
    for (uint64_t m = mask; m != 0; m &= m - 1) {  /* the set bits only */
        int i = __builtin_ctzll(m);
        uint32_t c = SLOT_COUNT(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED));

        if (c > 0) {
            keep |= 1ULL << i;
            n += c;
        }
    }
    if (keep != mask)
        STORE(*s.mask, keep);
    return n;
}

/* W9, lock held: strike off the slots not stamped for RB_REAP_NS. */
static void reap(struct rb_hdr *h, struct side s)
{
    uint64_t mask = LOAD(*s.mask);
    int64_t stale = now_ns() - RB_REAP_NS;

    for (int i = 0; mask != 0 && i < RB_WAITER_SLOTS; i++) {
        uint64_t w;

        if (!(mask & 1ULL << i) || LOAD(s.slots[i].since_ns) >= stale)
            continue;
        w = __atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED);
        while (SLOT_COUNT(w) > 0 &&
               !__atomic_compare_exchange_n(&s.slots[i].word, &w, SLOT_FREE(SLOT_GEN(w)), 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
            ;
        if (SLOT_COUNT(w) > 0)
            STORE(h->waiters_reaped, h->waiters_reaped + SLOT_COUNT(w));
    }
}

/* After a recovery (lock held): I8 again, whatever the dead owner left. */
static void remask(struct side s)
{
    uint64_t mask = 0;

    for (int i = 0; i < RB_WAITER_SLOTS; i++)
        if (SLOT_COUNT(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED)) > 0)
            mask |= 1ULL << i;
    STORE(*s.mask, mask);
}

/*
 * Rebuild the derived fields from the two commit words (lock held, owner
 * dead).  Returns RB_ERECOVERED, or RB_ECORRUPT if the commit words or the
 * records between them do not make sense (then nothing is changed).
 */
static int recover(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    /* Acquire: pairs with the release stores of the commits (publish(),
     * release_head()), so the records they cover are seen whole. */
    uint64_t sp = __atomic_load_n(&h->sendpos, __ATOMIC_ACQUIRE);
    uint64_t rp = __atomic_load_n(&h->recvpos, __ATOMIC_ACQUIRE);
    uint64_t rv = __atomic_load_n(&h->resvpos, __ATOMIC_ACQUIRE);
    uint64_t fp = __atomic_load_n(&h->freepos, __ATOMIC_ACQUIRE);
    uint64_t sent = LOAD(h->sent), received = LOAD(h->received), committed, total;
    int64_t count, lent;

    if (((sp | rp | rv | fp) & 7) != 0)
        return RB_ECORRUPT;
    if (rp > sp) {
        /* L5: a step over an aborted record, half done. */
        uint64_t w;

        if (rp - sp > ch->size || rv < rp)
            return RB_ECORRUPT;
        ring_get(ch, sp % ch->size, &w, RB_REC_HDR);
        if (!(w & RB_REC_SKIP) || RB_REC_HDR + align8(w & ~RB_REC_FLAGS) != rp - sp)
            return RB_ECORRUPT;
        sp = rp;
        __atomic_store_n(&h->sendpos, sp, __ATOMIC_RELEASE);
    }
    if (rv < sp) {  /* L3: a send with nothing lent, stored up to sendpos */
        rv = sp;
        __atomic_store_n(&h->resvpos, rv, __ATOMIC_RELEASE);
    }
    if (fp > rp || sp - rp > ch->size || rv - fp > ch->size)
        return RB_ECORRUPT;
    /* Every record between the commit words was written in full before its
     * commit store, so the walks must land exactly on sendpos and resvpos. */
    if ((count = walk_records(ch, rp % ch->size, sp - rp, ch->dataqsiz)) < 0 ||
        (lent = walk_lent(ch, sp % ch->size, rv - sp, &committed)) < 0)
        return RB_ECORRUPT;
    STORE(h->sendx, sp % ch->size);
    STORE(h->recvx, rp % ch->size);
    STORE(h->used, sp - rp);
    STORE(h->qcount, (uint64_t)count);
    STORE(h->lent_count, (uint64_t)lent);
    /* L4: a hold taken by a section that died before its commit store holds
     * nothing (a loan at or past resvpos, a view at or past recvpos): it is
     * voided, to be freed by L6 once its owner's liveness lock is gone.  Not
     * freed here: the kernel releases a dead owner's robust mutex before its
     * files, so the lock may outlive this recovery by a moment. */
    for (int i = 0; i < RB_HOLDS; i++) {
        uint64_t pos = LOAD(h->holds[i].pos);
        uint32_t kind = LOAD(h->holds[i].kind);

        if (LOAD(h->holds[i].owner) != 0 &&
            ((kind == RB_HOLD_LOAN && (pos < sp || pos >= rv)) || (kind == RB_HOLD_VIEW && (pos < fp || pos >= rp)) ||
             (kind != RB_HOLD_LOAN && kind != RB_HOLD_VIEW)))
            STORE(h->holds[i].kind, RB_HOLD_VOID);
    }
    set_held(ch, NULL);
    /* L7.  Only the dead owner's side can have missed its total. */
    total = (uint64_t)count + committed + (LOAD(h->held_msgs) - (uint64_t)lent);
    if (sent - received < total)
        STORE(h->sent, received + total);
    else if (sent - received > total)
        STORE(h->received, sent - total);
    /* L5: the owner may have died between a change that makes records
     * publishable and its advance(); lock() wakes everyone after this. */
    advance(ch, NULL);
    remask(senders(h));
    remask(receivers(h));
    INC(h->send_futex);
    INC(h->recv_futex);
    INC(h->ack_futex);
    INC(h->hold_futex);
    STORE(h->recoveries, h->recoveries + 1);
    return RB_ERECOVERED;
}

/* ---- spinning and parking --------------------------------------------- */

/* The pace of a spin: pure for RB_SPIN_BUSY_NS, then yielding the CPU
 * between looks, for RB_SPIN_NS in all or until the deadline.  The caller
 * looks at what it waits for, then calls pace(), until pace() says stop. */
struct pace {
    int64_t busy, until;
    unsigned looks;
};

static struct pace start_pace(int64_t now, int64_t budget, int64_t deadline)
{
    struct pace p = { now + RB_SPIN_BUSY_NS, now + budget, 0 };

    if (deadline >= 0 && deadline < p.until)
        p.until = deadline;
    return p;
}

static int pace(struct pace *p)
{
    cpu_relax();
    if (++p->looks % 32 == 0) {
        int64_t now = now_ns();

        if (now >= p->until)
            return 0;
        if (now >= p->busy)
            sched_yield();
    }
    return 1;
}

/* Spin without the lock until `*counter` (the other side's running total,
 * read as `seen` under the lock) or `*futex` (bumped by close) moves, or the
 * spin budget or the deadline runs out; the caller then retries under the
 * lock.  Both words sit off the lock line, so spinning does not slow down the
 * very lock holder it is waiting for.  Past RB_SPIN_BUSY_NS it yields the
 * CPU between looks: the peer it waits for may be runnable on this very CPU. */
static void spin(const uint64_t *counter, uint64_t seen, const uint32_t *futex, int64_t start, int64_t budget,
                 int64_t deadline)
{
    uint32_t fseen = LOAD(*futex);
    struct pace p = start_pace(start, budget, deadline);

    do
        if (LOAD(*counter) != seen || LOAD(*futex) != fseen)
            return;
    while (pace(&p));
}

/* The spin budget of one side of a handle (ch->spin_ns), learnt from the
 * waits that ended well, each `waited` ns from the start of its spin.  A
 * wait the spin saw end moves the budget a quarter of the way to twice its
 * length (so the budget follows such waits down, with a margin).  A wait
 * that had to park but took no longer than RB_SPIN_MAX_NS, the wake-up's
 * latency included, raises the budget to its length at once: the next such
 * wait spins through, and its peer makes no wake system call.  A longer
 * wait halves the budget: a peer that keeps the caller waiting that long is
 * worth a park.  So a failed spin costs at most RB_SPIN_MAX_NS of CPU, and
 * fails again only after waits grew.  The threads of a process share a
 * handle's budgets; relaxed atomics, since a stale budget is harmless. */
static void learn_spin(int64_t *budget, int64_t waited, int parked)
{
    int64_t b = LOAD(*budget);

    if (waited > RB_SPIN_MAX_NS)
        b /= 2;
    else if (!parked)
        b += (2 * waited - b) / 4;
    else if (waited > b)
        b = waited;
    STORE(*budget, b < RB_SPIN_NS ? RB_SPIN_NS : b > RB_SPIN_MAX_NS ? RB_SPIN_MAX_NS : b);
}

/* Bump a side's futex word and wake one of its sleepers, without the lock:
 * a wake-up handed on by a waiter that is leaving (W6, W10).  The bump makes
 * a sleeper that read the word before it, but is not yet asleep, return at
 * once instead of missing the wake. */
static void hand_on(uint32_t *futex)
{
    INC(*futex);
    futex_wake(futex, 1);
}

/*
 * Park the caller on side `s` (lock held on entry, dropped here): W9 reap,
 * W1 count in and read the word, drop the lock, wake one sleeper on `wake`
 * if it is not NULL (the caller bumped that word under the lock: W6 hands a
 * wake-up on, W13 calls a sender to a receiver; when it is our own word the
 * bump came before we read it, so that wake cannot be meant for us), W2
 * sleep, W3 count out.
 *
 * Returns RB_OK when woken, RB_ETIMEDOUT when the sleep ran out (the
 * deadline, or a W8 re-check), RB_EINTR on a signal.
 */
static int park(struct rb_chan *ch, struct side s, uint32_t *wake, int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;
    int64_t until = now_ns() + RECHECK_NS;
    struct ticket t;
    struct timespec ts;
    uint32_t seq;
    int r;

    reap(h, senders(h));
    reap(h, receivers(h));
    t = count_in(s);
    seq = LOAD(*s.futex);
    CRASH_POINT(RB_CRASH_PARK_COUNTED);
    unlock(ch);
    if (wake)
        futex_wake(wake, 1);

    if (deadline >= 0 && deadline < until)
        until = deadline;
    ts = to_timespec(until);
    r = futex_wait(s.futex, seq, &ts);
    CRASH_POINT(RB_CRASH_PARK_WOKEN);
    count_out(s, t);
    /* 0: woken.  EAGAIN: the word moved before we slept, so a wake-up was
     * meant for this side and may have found nobody else asleep; count it as
     * ours. */
    if (r == 0 || r == EAGAIN)
        return RB_OK;
    return r == EINTR ? RB_EINTR : RB_ETIMEDOUT;
}

/* ---- waiting for room or data ----------------------------------------- */

static int reclaim(struct rb_chan *ch);
static void unlock_and_wake_all(struct rb_chan *ch);

/* W5, W7, lock held: is a sender parked whose record may fit the room `p`
 * describes?  send_min_need is a lower bound on every parked sender's need,
 * so when this says no, waking one would be wasted. */
static int room_for_parked_sender(struct rb_chan *ch, const struct pos *p)
{
    struct rb_hdr *h = ch->hdr;

    return LOAD(h->send_mask) != 0 && room_for(ch, p, h->send_min_need) && parked(h, senders(h)) > 0;
}

/* W6, lock held: a woken sender hands its wake-up on if there is room for a
 * parked sender.  Returns whether to make the wake call after unlocking. */
static int pass_baton(struct rb_chan *ch, const struct pos *p)
{
    struct rb_hdr *h = ch->hdr;

    if (!room_for_parked_sender(ch, p))
        return 0;
    INC(h->send_futex);
    h->baton_passes++;
    return 1;
}

/* W6, lock held: a woken sender whose record does not fit: hand the wake-up
 * on while the budget lasts. */
static int spend_baton(struct rb_chan *ch, const struct pos *p)
{
    struct rb_hdr *h = ch->hdr;

    if (h->send_baton == 0 || !pass_baton(ch, p))
        return 0;
    h->send_baton--;
    return 1;
}

/* W7, lock held: a sender about to park for `need` bytes. */
static void note_need(struct rb_chan *ch, uint64_t need)
{
    struct rb_hdr *h = ch->hdr;

    if (parked(h, senders(h)) == 0 || need < h->send_min_need)
        h->send_min_need = need;
}

/* Drop the lock, then make the wake call a sender owes (`wake`) if any. */
static void unlock_and_pass(struct rb_chan *ch, int wake)
{
    unlock(ch);
    if (wake)
        futex_wake(&ch->hdr->send_futex, 1);
}

/*
 * Take the lock and return RB_OK still holding it once there is room for a
 * record of `need` bytes, with the checked positions in *p; otherwise return
 * a status with the lock dropped.  The order of the checks is the order of
 * precedence: a damaged header, then closed, then room, then the deadline,
 * then spin once, then park.  *woken says whether the caller was woken for
 * the room it got; if so, it owes the baton once it has sent (W6).
 */
static int lock_room(struct rb_chan *ch, uint64_t need, int64_t deadline, int *woken, struct pos *p)
{
    struct rb_hdr *h = ch->hdr;
    int spun = 0, parked = 0, baton = 0, wake = 0, rc;
    int64_t started = 0;

    for (;;) {
        if ((rc = lock(ch, deadline)) != RB_OK) {
            if (baton)  /* W6: leaving with a wake-up in hand */
                hand_on(&h->send_futex);
            return rc;
        }
        if (!read_pos(ch, &h->sendx, p)) {
            rc = RB_ECORRUPT;
            break;
        }

        /* Closed: no more sends, whatever the room (close woke everyone). */
        if (LOAD(h->closed)) {
            rc = RB_ECLOSED;
            break;
        }

        /* Room in the buffer: the caller copies and publishes. */
        if (room_for(ch, p, need)) {
            if (spun)
                learn_spin(&ch->spin_ns[RB_SIDE_SEND], now_ns() - started, parked);
            *woken = baton;
            return RB_OK;
        }

        /* W6: woken, but this record does not fit. */
        if (baton) {
            baton = 0;
            wake = spend_baton(ch, p);
        }

        /* L6: loans or views hold room; if a dead holder's does, take it back. */
        if (p->held_msgs != 0 && reclaim(ch)) {
            wake = 0;  /* everyone is woken */
            unlock_and_wake_all(ch);
            continue;
        }

        /* No room and no time left (a non-blocking call lands here at once). */
        if (expired(deadline)) {
            rc = RB_ETIMEDOUT;
            break;
        }

        /* No room yet: spin once until a receive, then park. */
        if (!spun) {
            uint64_t seen = LOAD(h->received);

            unlock_and_pass(ch, wake);
            wake = 0;
            started = now_ns();
            spin(&h->received, seen, &h->send_futex, started, LOAD(ch->spin_ns[RB_SIDE_SEND]), deadline);
            spun = 1;
            continue;
        }
        note_need(ch, need);
        h->send_parks++;
        parked = 1;
        rc = park(ch, senders(h), wake ? &h->send_futex : NULL, deadline);
        wake = 0;
        if (rc == RB_EINTR)
            return rc;
        baton = rc == RB_OK;
    }
    unlock_and_pass(ch, wake);
    return rc;
}

/* W13, lock held: a receiver about to park on an unbuffered channel calls a
 * parked sender, which may be a selector whose send case waits for a
 * receiver to come.  Returns the word to wake one sleeper on, or NULL. */
static uint32_t *call_sender(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;

    if (!ch->unbuffered || parked(h, senders(h)) == 0)
        return NULL;
    INC(h->send_futex);
    return &h->send_futex;
}

/* The mirror image: return RB_OK holding the lock once a message is queued,
 * with the checked positions in *p. */
static int lock_nonempty(struct rb_chan *ch, int64_t deadline, struct pos *p)
{
    struct rb_hdr *h = ch->hdr;
    int spun = 0, parked = 0, woken = 0, rc;
    int64_t started = 0;

    for (;;) {
        if ((rc = lock(ch, deadline)) != RB_OK) {
            if (woken)  /* W10: leaving with a wake-up that may be for a message */
                hand_on(&h->recv_futex);
            return rc;
        }
        if (!read_pos(ch, &h->recvx, p)) {
            rc = RB_ECORRUPT;
            break;
        }

        /* Data in the buffer: the caller copies it out and releases it. */
        if (p->qcount > 0) {
            if (spun)
                learn_spin(&ch->spin_ns[RB_SIDE_RECV], now_ns() - started, parked);
            return RB_OK;
        }

        /* L6: messages may wait behind a dead holder's loan. */
        if (p->held_msgs != 0 && reclaim(ch)) {
            unlock_and_wake_all(ch);
            continue;
        }

        /* Closed and drained: the end of the stream. */
        if (LOAD(h->closed) && !waits_behind_loan(ch, p)) {
            rc = RB_ECLOSED;
            break;
        }

        /* Empty and no time left. */
        if (expired(deadline)) {
            rc = RB_ETIMEDOUT;
            break;
        }

        /* Empty: spin once until a send, then park. */
        if (!spun) {
            uint64_t seen = LOAD(h->sent);

            unlock(ch);
            started = now_ns();
            spin(&h->sent, seen, &h->recv_futex, started, LOAD(ch->spin_ns[RB_SIDE_RECV]), deadline);
            spun = 1;
            continue;
        }
        h->recv_parks++;
        parked = 1;
        if ((rc = park(ch, receivers(h), call_sender(ch), deadline)) == RB_EINTR)
            return rc;
        woken = rc == RB_OK;
    }
    unlock(ch);
    return rc;
}

/* ---- publishing and releasing records (lock held) ----------------------- */

/* Write one record made of parts iov[0..n) (total `len` bytes) at ring
 * offset `off` (checked); returns the offset after it.  Nothing is visible to
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

/* W4, W5, lock held: `count` messages were just published; returns how many
 * parked receivers to wake after the lock is dropped. */
static int receivers_to_wake(struct rb_hdr *h, uint64_t count)
{
    uint32_t waiting;

    if (count == 0 || (waiting = parked(h, receivers(h))) == 0)
        return 0;
    INC(h->recv_futex);
    h->recvq_wakes++;
    return count < waiting ? (int)count : (int)waiting;
}

/* The commit point of a send: `count` records of `bytes` ring bytes, written
 * from p->x up to `end`, become visible, and *p is advanced past them.  A
 * sender that dies before the sendpos store leaves no trace (its bytes lie
 * in free space); after it, recover() completes the rest.  Behind a loan
 * (L1) the commit is the resvpos store instead, and the records wait there
 * for advance().  Returns how many parked receivers to wake after the lock
 * is dropped (W5). */
static int publish(struct rb_chan *ch, struct pos *p, uint64_t end, uint64_t count, uint64_t bytes)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t pos;

    CRASH_POINT(RB_CRASH_SEND_BEFORE_COMMIT);
    if (p->lent != 0) {
        /* L1, L7: committed behind a loan.  Release: pairs with recover(). */
        __atomic_store_n(&h->resvpos, LOAD(h->resvpos) + bytes, __ATOMIC_RELEASE);
        CRASH_POINT(RB_CRASH_SEND_AFTER_COMMIT);
        STORE(h->lent_count, LOAD(h->lent_count) + count);
        STORE(h->sent, LOAD(h->sent) + count);
        set_held(ch, NULL);
        p->x = end;
        p->lent += bytes;
        p->held += bytes;
        p->held_msgs += count;
        return 0;
    }
    /* The commit.  Release: the record bytes are in place before it; pairs
     * with the acquire load in recover(). */
    pos = LOAD(h->sendpos) + bytes;
    __atomic_store_n(&h->sendpos, pos, __ATOMIC_RELEASE);
    CRASH_POINT(RB_CRASH_SEND_AFTER_COMMIT);
    STORE(h->resvpos, pos);  /* L3: nothing is lent */
    STORE(h->sendx, end);
    STORE(h->used, p->used + bytes);
    STORE(h->qcount, p->qcount + count);
    STORE(h->sent, LOAD(h->sent) + count);
    p->x = end;
    p->used += bytes;
    p->qcount += count;
    if (p->used > LOAD(h->peak_used))
        STORE(h->peak_used, p->used);
    if (p->qcount > LOAD(h->peak_qcount))
        STORE(h->peak_qcount, p->qcount);
    return receivers_to_wake(h, count);
}

/* lock_nonempty(), then read and check the head record's length: RB_OK with
 * the lock held, or a status with it dropped. */
static int lock_head(struct rb_chan *ch, int64_t deadline, struct pos *p, uint64_t *len)
{
    int rc;

    if ((rc = lock_nonempty(ch, deadline, p)) != RB_OK)
        return rc;
    if (!record_len(ch, p->x, p->used, len)) {
        unlock(ch);
        return RB_ECORRUPT;
    }
    return RB_OK;
}

/* Release the head record (of payload length len): the commit point of a
 * receive, or of a send taken back (W13: then it counts as never sent).
 * Advances *p past it. */
static void release_head(struct rb_chan *ch, struct pos *p, uint64_t len, int received)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t bytes = RB_REC_HDR + align8(len);

    CRASH_POINT(RB_CRASH_RECV_BEFORE_COMMIT);
    /* The commit.  Release: the payload was copied out before it; pairs with
     * the acquire load in recover(). */
    __atomic_store_n(&h->recvpos, LOAD(h->recvpos) + bytes, __ATOMIC_RELEASE);
    CRASH_POINT(RB_CRASH_RECV_AFTER_COMMIT);
    p->x = wrap(ch, p->x + bytes);
    p->used -= bytes;
    p->qcount -= 1;
    STORE(h->recvx, p->x);
    STORE(h->used, p->used);
    STORE(h->qcount, p->qcount);
    if (received)
        STORE(h->received, LOAD(h->received) + 1);
    else
        STORE(h->sent, LOAD(h->sent) - 1);
    if (p->held_msgs == 0) {
        STORE(h->freepos, LOAD(h->recvpos));  /* L3: no view holds room */
        return;
    }
    /* L2: freed only once no earlier view holds it; L5: a queue just
     * emptied may let lent records through. */
    set_held(ch, p);
    if (p->used == 0)
        advance(ch, p);
}

/* W5, lock held, after a receive freed room: whether to wake one sender, who
 * then carries the baton (W6) over up to every parked sender. */
static int owe_sender(struct rb_chan *ch, const struct pos *p)
{
    struct rb_hdr *h = ch->hdr;

    if (!room_for_parked_sender(ch, p))
        return 0;
    INC(h->send_futex);
    h->send_baton = parked(h, senders(h));
    h->sendq_wakes++;
    return 1;
}

/* Drop the lock, then wake `receivers` parked receivers and, if `sender`, one
 * parked sender.  After a wake call, yield the CPU once: the kernel tends to
 * put the woken process on this CPU, where it would wait for us to block or
 * be preempted.  No wake call, and no yield, when nobody is parked. */
static void unlock_and_wake(struct rb_chan *ch, int receivers, int sender)
{
    unlock(ch);
    if (receivers > 0)
        futex_wake(&ch->hdr->recv_futex, receivers);
    if (sender)
        futex_wake(&ch->hdr->send_futex, 1);
    if (receivers > 0 || sender)
        sched_yield();
}

/* After a receive released records (lock held): W5 wakes a sender for the
 * room, W13 acknowledges the sender of an unbuffered channel's message, L5
 * wakes the receivers of what advance() published; then the lock is
 * dropped and the wake calls made. */
static void after_receive(struct rb_chan *ch, const struct pos *p)
{
    struct rb_hdr *h = ch->hdr;
    int acker = 0;

    if (ch->unbuffered && parked(h, senders(h)) > 0) {
        INC(h->ack_futex);
        h->sendq_wakes++;
        acker = 1;
    }
    unlock_and_wake(ch, (int)p->woke, owe_sender(ch, p));
    if (acker)
        futex_wake(&h->ack_futex, WAKE_ALL);
}

/* ---- send ---------------------------------------------------------------- */

/* The length of the message made of iov[0..n), or RB_ETOOBIG's marker
 * UINT64_MAX if it can never fit this ring. */
static uint64_t message_len(const struct rb_chan *ch, const struct rb_iov *iov, uint32_t n)
{
    uint64_t len = 0, max = ch->size - RB_REC_HDR;

    for (uint32_t i = 0; i < n; i++) {
        if (iov[i].len > max - len)
            return UINT64_MAX;
        len += iov[i].len;
    }
    return len;
}

/* Lock held, room checked (*p): write and publish one record, drop the lock
 * and wake.  Returns the message's number (the new `sent`), which W13 waits
 * on for an unbuffered channel. */
static uint64_t send_locked(struct rb_chan *ch, struct pos *p, const struct rb_iov *iov, uint32_t n, uint64_t len,
                            int woken)
{
    uint64_t need = RB_REC_HDR + align8(len), end = put_record(ch, p->x, iov, n, len), seq;
    int receivers = publish(ch, p, end, 1, need);

    seq = LOAD(ch->hdr->sent);
    unlock_and_wake(ch, receivers, woken && pass_baton(ch, p));
    return seq;
}

/* W13, lock held: take back message `seq` of an unbuffered channel, unless a
 * receiver took it already (then the send succeeded: RB_OK).  Otherwise it is
 * the one record queued; it is released as never sent, and `why` returned. */
static int take_back(struct rb_chan *ch, uint64_t seq, int why)
{
    struct rb_hdr *h = ch->hdr;
    struct pos p;
    uint64_t len;

    if (LOAD(h->received) >= seq) {
        unlock(ch);
        return RB_OK;
    }
    if (!read_pos(ch, &h->recvx, &p) || p.qcount != 1 || LOAD(h->sent) != seq || !record_len(ch, p.x, p.used, &len)) {
        unlock(ch);
        return RB_ECORRUPT;
    }
    release_head(ch, &p, len, 0);
    unlock_and_wake(ch, 0, owe_sender(ch, &p));
    return why;
}

/*
 * W13: wait until a receiver takes message `seq` of an unbuffered channel.
 * RB_OK once it is taken.  A sender that gives up takes the message back
 * (take_back) and returns why: RB_ECLOSED, RB_ETIMEDOUT at the deadline or at
 * `offer` (a select's send case offers its message for at most a re-check
 * period, -1: no such limit), RB_EINTR on a signal.  Taking it back needs
 * the lock, so that wait does not return early for signals.
 */
static int await_taken(struct rb_chan *ch, uint64_t seq, int64_t deadline, int64_t offer)
{
    struct rb_hdr *h = ch->hdr;
    int64_t until;
    int spun = 0, rc, why = RB_OK;

    for (;;) {
        uint64_t seen = LOAD(h->received);

        if (seen >= seq)
            return RB_OK;
        if (!spun) {
            spin(&h->received, seen, &h->ack_futex, now_ns(), RB_SPIN_NS, deadline);
            spun = 1;
            continue;
        }
        if (why == RB_OK && (rc = lock(ch, deadline)) != RB_OK) {
            if (rc == RB_ERECOVERED)
                continue;
            why = rc;  /* RB_EINTR or RB_ETIMEDOUT: take it back below */
        }
        if (why != RB_OK) {
            while ((rc = lock(ch, RB_FOREVER)) == RB_EINTR || rc == RB_ERECOVERED)
                ;
            if (rc != RB_OK)
                return rc;
            return take_back(ch, seq, why);
        }
        if (LOAD(h->received) >= seq) {
            unlock(ch);
            return RB_OK;
        }
        if (LOAD(h->closed))
            return take_back(ch, seq, RB_ECLOSED);
        if (expired(deadline) || (offer >= 0 && now_ns() >= offer))
            return take_back(ch, seq, RB_ETIMEDOUT);
        {
            struct ticket t;
            struct timespec ts;
            uint32_t word;
            int r;

            reap(h, senders(h));
            t = count_in(senders(h));
            word = LOAD(h->ack_futex);
            unlock(ch);
            until = now_ns() + RECHECK_NS;
            if (deadline >= 0 && deadline < until)
                until = deadline;
            if (offer >= 0 && offer < until)
                until = offer;
            ts = to_timespec(until);
            r = futex_wait(&h->ack_futex, word, &ts);
            count_out(senders(h), t);
            if (r == EINTR)
                why = RB_EINTR;
        }
    }
}

/* Wait for room and publish the message made of iov[0..n): the send, but for
 * an unbuffered channel's wait for a receiver to take it (W13).  Its number
 * goes to *seq. */
static int offer(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, uint64_t *seq, int64_t deadline)
{
    uint64_t len = message_len(ch, iov, n);
    struct pos p;
    int rc, woken;

    if (len == UINT64_MAX)
        return RB_ETOOBIG;
    if ((rc = lock_room(ch, RB_REC_HDR + align8(len), deadline, &woken, &p)) != RB_OK)
        return rc;
    *seq = send_locked(ch, &p, iov, n, len, woken);
    return RB_OK;
}

int rb_sendv(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, int64_t deadline)
{
    uint64_t seq;
    int rc = offer(ch, iov, n, &seq, deadline);

    if (rc != RB_OK || !ch->unbuffered)
        return rc;
    return await_taken(ch, seq, deadline, -1);
}

int rb_send(struct rb_chan *ch, const void *buf, uint64_t len, int64_t deadline)
{
    struct rb_iov one = { buf, len };

    return rb_sendv(ch, &one, 1, deadline);
}

int rb_send_batch(struct rb_chan *ch, const void *data, const uint64_t *lens, uint64_t n, uint64_t *sent_out,
                  int64_t deadline)
{
    const uint8_t *src = data;
    uint64_t done = 0;
    int rc = RB_OK, woken, receivers;

    *sent_out = 0;
    for (uint64_t i = 0; i < n; i++)
        if (lens[i] > ch->size - RB_REC_HDR)
            return RB_ETOOBIG;
    if (ch->unbuffered) {  /* W13: each one is a rendezvous of its own */
        for (; done < n && rc == RB_OK; done += rc == RB_OK) {
            rc = rb_send(ch, src, lens[done], deadline);
            src += lens[done];
        }
        *sent_out = done;
        return rc;
    }

    while (done < n) {
        uint64_t count = 0, bytes = 0, off;
        struct pos p;

        /* Wait for room for the next message, then write as many as fit and
         * publish them together.  The fit test adds what this batch has
         * written but not yet published to the checked counts. */
        if ((rc = lock_room(ch, RB_REC_HDR + align8(lens[done]), deadline, &woken, &p)) != RB_OK)
            break;
        off = p.x;
        do {
            struct rb_iov one = { src, lens[done] };

            off = put_record(ch, off, &one, 1, lens[done]);
            src += lens[done];
            bytes += RB_REC_HDR + align8(lens[done]);
            count++;
            done++;
        } while (done < n && p.qcount + p.held_msgs + count < ch->dataqsiz &&
                 p.used + p.held + bytes + RB_REC_HDR + align8(lens[done]) <= ch->size);
        receivers = publish(ch, &p, off, count, bytes);
        unlock_and_wake(ch, receivers, woken && pass_baton(ch, &p));
        *sent_out = done;
    }
    return rc;
}

/* ---- receive --------------------------------------------------------------- */

int64_t rb_recv(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *need_out, int64_t deadline)
{
    struct pos p;
    uint64_t len;
    int rc;

    if ((rc = lock_head(ch, deadline, &p, &len)) != RB_OK)
        return -rc;
    if (len > cap) {
        *need_out = len;
        unlock(ch);
        return -RB_ESMALLBUF;
    }
    ring_get(ch, wrap(ch, p.x + RB_REC_HDR), buf, len);
    release_head(ch, &p, len, 1);
    after_receive(ch, &p);
    return (int64_t)len;
}

int64_t rb_recv_batch(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *lens, uint64_t max_items,
                      uint64_t *need_out, int64_t deadline)
{
    uint64_t count = 0, off = 0, len;
    struct pos p;
    int rc;

    if (max_items == 0)
        return 0;
    if ((rc = lock_nonempty(ch, deadline, &p)) != RB_OK)
        return -rc;
    /* Take queued records while they fit the buffer, without waiting for
     * more once the first is in hand. */
    while (count < max_items && p.qcount > 0) {
        if (!record_len(ch, p.x, p.used, &len)) {
            if (count == 0) {
                unlock(ch);
                return -RB_ECORRUPT;
            }
            break;  /* deliver what was good; the next call reports it */
        }
        if (len > cap - off) {
            if (count == 0) {
                *need_out = len;
                unlock(ch);
                return -RB_ESMALLBUF;
            }
            break;
        }
        ring_get(ch, wrap(ch, p.x + RB_REC_HDR), (uint8_t *)buf + off, len);
        release_head(ch, &p, len, 1);
        lens[count++] = len;
        off += len;
    }
    after_receive(ch, &p);
    return (int64_t)count;
}

int64_t rb_peek(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *token_out, int64_t deadline)
{
    struct pos p;
    uint64_t len;
    int rc;

    if ((rc = lock_head(ch, deadline, &p, &len)) != RB_OK)
        return -rc;
    ring_get(ch, wrap(ch, p.x + RB_REC_HDR), buf, len < cap ? len : cap);
    /* The head message's position: rb_recv_at() checks that the head is
     * still this message (each record has its own). */
    *token_out = LOAD(ch->hdr->recvpos);
    unlock(ch);
    return (int64_t)len;
}

int rb_recv_at(struct rb_chan *ch, uint64_t token, uint64_t skip, void *dst, uint64_t n)
{
    struct pos p;
    uint64_t len;
    int rc;

    if ((rc = lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    if (!read_pos(ch, &ch->hdr->recvx, &p))
        rc = RB_ECORRUPT;
    else if (p.qcount == 0 || LOAD(ch->hdr->recvpos) != token)
        rc = RB_ECHANGED;  /* another receiver took the peeked message first */
    else if (!record_len(ch, p.x, p.used, &len))
        rc = RB_ECORRUPT;
    else if (skip > len || n > len - skip)
        rc = RB_EINVAL;
    if (rc != RB_OK) {
        unlock(ch);
        return rc;
    }
    /* p.x < size and skip <= len <= size - 8: the sum is below 2 * size. */
    ring_get(ch, wrap(ch, p.x + RB_REC_HDR + skip), dst, n);
    release_head(ch, &p, len, 1);
    after_receive(ch, &p);
    return RB_OK;
}

/* ---- loans and views (L1..L7) ---------------------------------------------- */

/* L2, L3, lock held: recompute freepos from the views out, and the copies
 * held and held_msgs from the commit words.  Positions of holds outside
 * [freepos, recvpos) are not trusted to move freepos.  A caller that goes
 * on with its positions (p, else NULL) gets the values stored, as computed
 * here: never read back from the header, which a process writing without
 * the lock could have changed in between. */
static void set_held(struct rb_chan *ch, struct pos *p)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t rp = LOAD(h->recvpos), fp = LOAD(h->freepos), least = rp, views = 0;
    uint64_t lent = LOAD(h->resvpos) - LOAD(h->sendpos);

    for (int i = 0; i < RB_HOLDS; i++) {
        uint64_t pos = LOAD(h->holds[i].pos);

        if (LOAD(h->holds[i].owner) == 0 || LOAD(h->holds[i].kind) != RB_HOLD_VIEW || pos < fp || pos >= rp)
            continue;
        views++;
        if (pos < least)
            least = pos;
    }
    uint64_t held = lent + (rp - least);
    uint32_t held_msgs = (uint32_t)(LOAD(h->lent_count) + views);

    if (least != fp)
        __atomic_store_n(&h->freepos, least, __ATOMIC_RELEASE);
    STORE(h->held, held);
    STORE(h->held_msgs, held_msgs);
    if (p) {
        p->held = held;
        p->held_msgs = held_msgs;
    }
}

/* L5, lock held: publish the committed records at sendpos, up to the first
 * one still lent, and step over aborted ones while the queue is empty.  A
 * receiver passes its positions (*p, updated); the receivers to wake for
 * what was published are added to p->woke.  Its checked used, qcount and x
 * (read_pos) are the ones carried on, and what it gets back is computed
 * here from them: a receiver goes on to read the ring at p->x, so nothing
 * it is given is read back from the header. */
static void advance(struct rb_chan *ch, struct pos *p)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t sp = LOAD(h->sendpos), rv = LOAD(h->resvpos), rp = LOAD(h->recvpos), lc = LOAD(h->lent_count);
    uint64_t used = p ? p->used : LOAD(h->used), qcount = p ? p->qcount : LOAD(h->qcount), published = 0;
    uint64_t x = p ? p->x : 0;

    if (rv < sp || rv - sp > ch->size || sp - rp != used || qcount > ch->dataqsiz)
        return;  /* unsound: rb_check reports it */
    while (sp < rv && lc > 0) {
        uint64_t w, len, bytes;

        ring_get(ch, sp % ch->size, &w, RB_REC_HDR);
        len = w & ~RB_REC_FLAGS;
        if (len > ch->size - RB_REC_HDR || (bytes = RB_REC_HDR + align8(len)) > rv - sp || (w & RB_REC_LENT))
            break;
        if (w & RB_REC_SKIP) {
            if (used != 0)
                break;
            /* recvpos first: recover() finishes a step it finds half done. */
            __atomic_store_n(&h->recvpos, sp + bytes, __ATOMIC_RELEASE);
            __atomic_store_n(&h->sendpos, sp + bytes, __ATOMIC_RELEASE);
            sp += bytes;
            x = sp % ch->size;  /* the queue is empty: recvx and sendx meet */
            STORE(h->recvx, x);
            STORE(h->sendx, x);
        } else {
            if (qcount >= ch->dataqsiz)
                break;
            sp += bytes;
            __atomic_store_n(&h->sendpos, sp, __ATOMIC_RELEASE);
            STORE(h->sendx, sp % ch->size);
            used += bytes;
            qcount++;
            published++;
            STORE(h->used, used);
            STORE(h->qcount, qcount);
            if (used > LOAD(h->peak_used))
                STORE(h->peak_used, used);
            if (qcount > LOAD(h->peak_qcount))
                STORE(h->peak_qcount, qcount);
        }
        STORE(h->lent_count, --lc);
    }
    set_held(ch, p);
    if (p) {
        p->x = x;
        p->used = used;
        p->qcount = qcount;
        p->woke += (uint32_t)receivers_to_wake(h, published);
    } else if (published) {
        /* The caller wakes everyone (unlock_and_wake_all). */
        INC(h->recv_futex);
        h->recvq_wakes++;
    }
}

/* L4: make sure this handle holds its liveness lock, the byte named by its
 * tag.  Taken once, at the first hold, and kept until the handle's file is
 * closed (or, in a fork child, replaced).  Another description holding that
 * byte can only be a handle that drew the same tag: this handle has never
 * held anything under its tag yet, so it draws another. */
static int be_live(struct rb_chan *ch)
{
    for (int tries = 0; !ch->live; tries++) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                            .l_start = RB_LIVENESS_OFF + (off_t)ch->tag, .l_len = 1 };

        if (fcntl(ch->fd, F_OFD_SETLK, &fl) == 0)
            ch->live = 1;
        else if ((errno == EAGAIN || errno == EACCES) && tries < 8)
            ch->tag = new_tag();
        else
            return RB_ESYS;
    }
    return RB_OK;
}

/* L6: does the handle whose tag is `owner` (another handle's) still live?
 * An owner outside [1, RB_TAG_LIMIT) names no handle (the field was
 * scribbled on): dead.  When the kernel cannot tell, it is taken to live. */
static int holder_alive(struct rb_chan *ch, uint64_t owner)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };

    if (owner == 0 || owner >= RB_TAG_LIMIT)
        return 0;
    fl.l_start = RB_LIVENESS_OFF + (off_t)owner;
    if (fcntl(ch->fd, F_OFD_GETLK, &fl) != 0)
        return 1;
    return fl.l_type != F_UNLCK;
}

/* L4, lock held: a free hold, or -1. */
static int free_hold(struct rb_hdr *h)
{
    for (int i = 0; i < RB_HOLDS; i++)
        if (LOAD(h->holds[i].owner) == 0)
            return i;
    return -1;
}

/* L4, lock held: free hold i, the commit of its end.  Returns whether every
 * hold was taken before, in which case both sides are to be woken. */
static int release_hold(struct rb_chan *ch, int i)
{
    struct rb_hdr *h = ch->hdr;
    int was_full = free_hold(h) < 0;

    STORE(h->holds[i].owner, 0);
    if (was_full)
        INC(h->hold_futex);
    return was_full;
}

/* Lock held: bump both sides' words, drop the lock, wake every sleeper.
 * For the rare changes that may concern anyone: a hold ended or reclaimed. */
static void unlock_and_wake_all(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;

    INC(h->send_futex);
    INC(h->recv_futex);
    INC(h->hold_futex);
    unlock(ch);
    futex_wake(&h->send_futex, WAKE_ALL);
    futex_wake(&h->recv_futex, WAKE_ALL);
    futex_wake(&h->hold_futex, WAKE_ALL);
}

/* End loan i (lock held): publish it (`publish`, and the channel open) or
 * abort it, then let what waits behind it through (L5), with *p (a
 * receiver's positions, or NULL: see advance()) told whom to wake.
 * RB_ECLOSED if it was to be published on a closed channel (it is aborted),
 * RB_ECORRUPT if its record is not where it should be (the hold is freed
 * all the same). */
static int end_loan(struct rb_chan *ch, int i, int publish_it, struct pos *p)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t pos = LOAD(h->holds[i].pos), bytes = LOAD(h->holds[i].bytes);
    uint64_t sp = LOAD(h->sendpos), rv = LOAD(h->resvpos), w, len;
    int rc = RB_OK;

    if (pos < sp || pos >= rv || bytes > rv - pos || bytes < RB_REC_HDR || (bytes & 7) != 0) {
        release_hold(ch, i);
        return RB_ECORRUPT;
    }
    ring_get(ch, pos % ch->size, &w, RB_REC_HDR);
    len = w & ~RB_REC_FLAGS;
    if ((w & RB_REC_LENT) && RB_REC_HDR + align8(len) == bytes) {  /* else ended already (L4) */
        if (publish_it && !LOAD(h->closed)) {
            ring_put(ch, pos % ch->size, &len, RB_REC_HDR);
            STORE(h->sent, LOAD(h->sent) + 1);  /* L7 */
        } else {
            if (publish_it)
                rc = RB_ECLOSED;
            if (pos + bytes == rv) {  /* the last reserved: give its room back */
                __atomic_store_n(&h->resvpos, pos, __ATOMIC_RELEASE);
                STORE(h->lent_count, LOAD(h->lent_count) - 1);
            } else {
                w = len | RB_REC_SKIP;
                ring_put(ch, pos % ch->size, &w, RB_REC_HDR);
            }
        }
    }
    release_hold(ch, i);
    advance(ch, p);
    return rc;
}

/* L6, lock held: give back the record of dead view i, once it is the
 * earliest view.  Returns whether anything changed. */
static int give_back(struct rb_chan *ch, int i)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t pos = LOAD(h->holds[i].pos), bytes = LOAD(h->holds[i].bytes);
    uint64_t rp = LOAD(h->recvpos), fp = LOAD(h->freepos), rv, room;
    uint8_t *copy;
    int overlap;

    if (pos >= rp || pos < fp || rp - fp > ch->size || bytes > rp - pos || bytes < RB_REC_HDR || (bytes & 7) != 0) {
        /* Died before its take committed (the record is still queued), or
         * unsound: nothing to give back. */
        release_hold(ch, i);
        set_held(ch, NULL);
        return 1;
    }
    if (pos != fp)
        return 0;  /* an earlier view holds room: wait for it */
    if ((copy = malloc(bytes)) == NULL)
        return 0;
    ring_get(ch, pos % ch->size, copy, bytes);
    rv = LOAD(h->resvpos);
    room = ch->size - (rv - fp);
    /* Where there is room without it, the copy is queued before the hold is
     * freed, so a death in between leaves the view to reclaim again (and, at
     * worst, delivers it twice).  In a full ring its own room is needed: the
     * hold is freed first, and a reclaimer that died before the resvpos
     * store would lose the message, a window of a few instructions. */
    overlap = room < bytes;
    if (overlap) {
        release_hold(ch, i);
        set_held(ch, NULL);
    }
    ring_put(ch, rv % ch->size, copy, bytes);
    __atomic_store_n(&h->resvpos, rv + bytes, __ATOMIC_RELEASE);
    STORE(h->lent_count, LOAD(h->lent_count) + 1);
    if (!overlap)
        release_hold(ch, i);
    free(copy);
    STORE(h->views_reclaimed, LOAD(h->views_reclaimed) + 1);
    set_held(ch, NULL);
    advance(ch, NULL);
    return 1;
}

/* L6, lock held: end the holds of other handles whose owners are dead.
 * Returns whether anything changed (the caller then wakes both sides). */
static int reclaim(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    int changed = 0;

    if (!ch->own_fd)  /* its lock description is another process's: it cannot tell */
        return 0;
    for (int i = 0; i < RB_HOLDS; i++) {
        uint64_t owner = LOAD(h->holds[i].owner);

        if (owner == 0 || owner == ch->tag || holder_alive(ch, owner))
            continue;
        if (LOAD(h->holds[i].kind) == RB_HOLD_VOID) {
            release_hold(ch, i);
            changed = 1;
        } else if (LOAD(h->holds[i].kind) == RB_HOLD_VIEW) {
            changed |= give_back(ch, i);
        } else {
            end_loan(ch, i, 0, NULL);
            STORE(h->loans_reclaimed, LOAD(h->loans_reclaimed) + 1);
            changed = 1;
        }
    }
    return changed;
}

/* L4, lock held, no hold free: reclaim, or park like a waiter on side `s`
 * until a hold ends.  Returns RB_OK to try again (lock dropped either way),
 * or why not. */
static int wait_for_hold(struct rb_chan *ch, uint32_t *wake, int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;
    int64_t until = now_ns() + RECHECK_NS;
    struct timespec ts;
    uint32_t seq;
    int r;

    if (reclaim(ch)) {
        unlock_and_wake_all(ch);
        return RB_OK;
    }
    seq = LOAD(h->hold_futex);
    unlock(ch);
    if (wake)
        futex_wake(wake, 1);
    if (expired(deadline))
        return RB_ETIMEDOUT;
    if (deadline >= 0 && deadline < until)
        until = deadline;
    ts = to_timespec(until);
    r = futex_wait(&h->hold_futex, seq, &ts);
    return r == EINTR ? RB_EINTR : RB_OK;
}

/* Take a free hold for this handle (lock held), its liveness lock first
 * (L4).  Returns its index, -1 if none is free, or -RB_ESYS - 1. */
static int take_hold(struct rb_chan *ch, uint64_t pos, uint64_t bytes, uint32_t kind)
{
    struct rb_hdr *h = ch->hdr;
    int i = free_hold(h);

    if (i < 0)
        return -1;
    if (be_live(ch) != RB_OK)
        return -RB_ESYS - 1;
    STORE(h->holds[i].pos, pos);
    STORE(h->holds[i].bytes, bytes);
    STORE(h->holds[i].pid, self_pid);
    STORE(h->holds[i].kind, kind);
    STORE(h->holds[i].owner, ch->tag);
    return i;
}

/* Lock held, no hold free: is every hold this thread's (taken through any
 * handle of this process on this channel)?  Then waiting for one would be
 * waiting for itself (RB_ESELF).  A record's OUT bit and tid change only
 * under this channel's lock, held here (rb_hold_intent's and
 * rb_hold_settle's changes without it touch only the PUBLISH bit). */
static int all_mine(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    int n = 0;

    pthread_mutex_lock(&handles_lock);
    for (int i = 0; i < RB_HOLDS; i++) {
        uint64_t owner = LOAD(h->holds[i].owner);

        for (struct rb_chan *c = handles; c; c = c->next)
            if (c->tag == owner && c->dev == ch->dev && c->ino == ch->ino &&
                (__atomic_load_n(&c->mine[i].state, __ATOMIC_RELAXED) & RB_MINE_OUT) &&
                __atomic_load_n(&c->mine[i].tid, __ATOMIC_RELAXED) == self_tid()) {
                n++;
                break;
            }
    }
    pthread_mutex_unlock(&handles_lock);
    return n == RB_HOLDS;
}

/* Lock held: hold i was just taken by this handle at pos; note it as its
 * own, out, to be aborted if it is a loan, until released (rb_hold_release
 * or rb_release), keeping the mapping.  Returns its generation. */
static uint64_t note_mine(struct rb_chan *ch, int i, uint64_t pos)
{
    struct rb_mine *m = &ch->mine[i];
    uint64_t gen = __atomic_add_fetch(&all_gens, 1, __ATOMIC_RELAXED);

    __atomic_store_n(&m->pos, pos, __ATOMIC_RELAXED);
    __atomic_store_n(&m->tid, self_tid(), __ATOMIC_RELAXED);
    __atomic_store_n(&m->state, gen << 2 | RB_MINE_OUT, __ATOMIC_RELEASE);
    __atomic_fetch_add(&ch->pins, 1, __ATOMIC_RELAXED);
    return gen;
}

static int can_hold(const struct rb_chan *ch)
{
    return ch->mirrored && !ch->unbuffered && ch->own_fd;
}

int rb_loan_begin(struct rb_chan *ch, uint64_t len, int64_t deadline, struct rb_where *w)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t need, word = len | RB_REC_LENT, pos;
    struct pos p;
    int rc, woken, i;

    if (!can_hold(ch))
        return RB_EINVAL;
    if (len > ch->size - RB_REC_HDR)
        return RB_ETOOBIG;
    need = RB_REC_HDR + align8(len);
    for (;;) {
        if ((rc = lock_room(ch, need, deadline, &woken, &p)) != RB_OK)
            return rc;
        pos = LOAD(h->sendpos) + p.lent;
        if ((i = take_hold(ch, pos, need, RB_HOLD_LOAN)) >= 0)
            break;
        if (i < -1 || all_mine(ch)) {
            unlock_and_pass(ch, woken && pass_baton(ch, &p));
            return i < -1 ? RB_ESYS : RB_ESELF;
        }
        /* W6: a wake-up for room it leaves goes on to another sender. */
        if ((rc = wait_for_hold(ch, woken && pass_baton(ch, &p) ? &h->send_futex : NULL, deadline)) != RB_OK)
            return rc;
    }
    ring_put(ch, p.x, &word, RB_REC_HDR);
    /* L1: the reservation's commit.  Release: pairs with recover(). */
    __atomic_store_n(&h->resvpos, pos + need, __ATOMIC_RELEASE);
    STORE(h->lent_count, LOAD(h->lent_count) + 1);
    STORE(h->loans_taken, LOAD(h->loans_taken) + 1);
    set_held(ch, NULL);
    w->gen = note_mine(ch, i, pos);
    w->off = wrap(ch, p.x + RB_REC_HDR);
    w->addr = (char *)ch->data + w->off;
    w->len = len;
    w->hold = (uint32_t)i;
    w->ch = ch;
    p.held += need;
    p.held_msgs += 1;
    unlock_and_pass(ch, woken && pass_baton(ch, &p));
    return RB_OK;
}

/* This handle's hold i of `kind` at pos, or -1 (lock held). */
static int own_hold(struct rb_chan *ch, uint32_t i, uint64_t pos, uint32_t kind)
{
    struct rb_hdr *h = ch->hdr;

    return i < RB_HOLDS && LOAD(h->holds[i].owner) == ch->tag && LOAD(h->holds[i].kind) == kind &&
           LOAD(h->holds[i].pos) == pos ? (int)i : -1;
}

int rb_view_begin(struct rb_chan *ch, int64_t deadline, struct rb_where *w)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t len, bytes, pos, off;
    struct pos p;
    int rc, i, wake;

    if (!can_hold(ch))
        return RB_EINVAL;
    /* The hold first, then the take's commit: a view that dies in between
     * holds a record still queued, which recover() voids. */
    for (;;) {
        if ((rc = lock_head(ch, deadline, &p, &len)) != RB_OK)
            return rc;
        bytes = RB_REC_HDR + align8(len);
        pos = LOAD(h->recvpos);
        if ((i = take_hold(ch, pos, bytes, RB_HOLD_VIEW)) >= 0)
            break;
        if (i < -1 || all_mine(ch)) {
            unlock(ch);
            return i < -1 ? RB_ESYS : RB_ESELF;
        }
        /* W10: the message it leaves goes to another parked receiver. */
        wake = parked(h, receivers(h)) > 0;
        if (wake)
            INC(h->recv_futex);
        if ((rc = wait_for_hold(ch, wake ? &h->recv_futex : NULL, deadline)) != RB_OK)
            return rc;
    }
    CRASH_POINT(RB_CRASH_RECV_BEFORE_COMMIT);
    __atomic_store_n(&h->recvpos, pos + bytes, __ATOMIC_RELEASE);
    CRASH_POINT(RB_CRASH_RECV_AFTER_COMMIT);
    off = wrap(ch, p.x + RB_REC_HDR);
    p.x = wrap(ch, p.x + bytes);
    p.used -= bytes;
    p.qcount -= 1;
    STORE(h->recvx, p.x);
    STORE(h->used, p.used);
    STORE(h->qcount, p.qcount);
    STORE(h->views_taken, LOAD(h->views_taken) + 1);
    set_held(ch, &p);
    if (p.used == 0)
        advance(ch, &p);
    w->gen = note_mine(ch, i, pos);
    w->off = off;
    w->addr = (char *)ch->data + off;
    w->len = len;
    w->hold = (uint32_t)i;
    w->ch = ch;
    /* W5: stepping over an aborted record (L5) may have freed room. */
    unlock_and_wake(ch, (int)p.woke, owe_sender(ch, &p));
    return RB_OK;
}

/* For rb_hold_settle: a release of a loan to publish, hold `hold` named
 * gen, failed with status rc (not published).  Noted while the hold is
 * still taken (under the lock, or where nothing frees it), so before any
 * later hold can take the same record: whoever sees that later hold's end
 * (its `done`) sees this too.  Kept per record, so a hold kept out
 * meanwhile (a view an array keeps) never overwrites it.  One word per
 * record: a later loan of the same record that fails too, before this one
 * is settled, overwrites it, and this one then settles as published.  That
 * takes a failure other than RB_ECLOSED first (no loan begins on a closed
 * channel), that is a damaged record, and another thread's whole loan
 * between this release and its settle. */
static void note_failed(struct rb_chan *ch, uint32_t hold, uint64_t gen, int rc)
{
    __atomic_store_n(&ch->mine[hold].failed, gen << 8 | (uint64_t)(rc & 0xff), __ATOMIC_RELAXED);
}

/* The release of hold `hold` named gen has finished: raise the record's
 * `done` to gen.  Only raised: this runs after the lock is dropped, so a
 * later hold of the same record may have finished first (it began after
 * this hold's end was committed, so `done` >= gen still means that).
 * Release: pairs with rb_hold_settle's acquire. */
static void released(struct rb_chan *ch, uint32_t hold, uint64_t gen)
{
    struct rb_mine *m = &ch->mine[hold];
    uint64_t done = __atomic_load_n(&m->done, __ATOMIC_RELAXED);

    while (done < gen && !__atomic_compare_exchange_n(&m->done, &done, gen, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

/* Lock held, hold i this handle's loan (own_hold), named gen: publish or
 * abort it, drop the lock and wake whom it concerns.  A publish that
 * failed (RB_ECLOSED: the channel was closed, the loan aborted instead;
 * RB_ECORRUPT) is noted for rb_hold_settle before the unlock. */
static void end_loan_hold(struct rb_chan *ch, int i, uint64_t gen, int publish_it)
{
    struct rb_hdr *h = ch->hdr;
    struct pos p;
    int rc, all;

    if (!read_pos(ch, &h->recvx, &p)) {
        if (publish_it)
            note_failed(ch, (uint32_t)i, gen, RB_ECORRUPT);
        unlock(ch);
        return;
    }
    all = free_hold(h) < 0;  /* L4: freeing the last hold wakes everyone */
    rc = end_loan(ch, i, publish_it, &p);
    if (publish_it && rc != RB_OK)
        note_failed(ch, (uint32_t)i, gen, rc);  /* before the unlock: the record is free after it */
    if (all) {
        unlock_and_wake_all(ch);
        return;
    }
    /* W4, W5: receivers for what was published, a sender for room an abort
     * gave back; no system call when nobody is parked. */
    unlock_and_wake(ch, (int)p.woke, owe_sender(ch, &p));
}

/* Lock held, hold i this handle's view: free its room (L2), drop the lock
 * and wake a sender it may fit. */
static void end_view_hold(struct rb_chan *ch, int i)
{
    struct rb_hdr *h = ch->hdr;
    struct pos p;
    int all;

    all = release_hold(ch, i);
    STORE(h->received, LOAD(h->received) + 1);  /* L7 */
    set_held(ch, NULL);
    if (all) {
        unlock_and_wake_all(ch);
        return;
    }
    /* W5: the room it freed may fit a parked sender. */
    if (!read_pos(ch, &h->recvx, &p)) {
        unlock(ch);
        return;
    }
    unlock_and_wake(ch, 0, owe_sender(ch, &p));
}

/* One fewer hold keeps the mapping; the last one after rb_detach finishes
 * the detach.  Under handles_lock, so that rb_detach and this agree. */
static void finish_detach(struct rb_chan *ch);

static void unpin(struct rb_chan *ch)
{
    int last;

    pthread_mutex_lock(&handles_lock);
    last = __atomic_sub_fetch(&ch->pins, 1, __ATOMIC_RELAXED) == 0 && ch->detached;
    pthread_mutex_unlock(&handles_lock);
    if (last)
        finish_detach(ch);
}

/* Is this handle's hold `hold` the one named `gen`, and out?  Its record's
 * state in *state.  Relaxed: whoever names a hold saw its begin (the same
 * thread, or the GIL between), so no older state of the record is read;
 * the answer that counts is a compare-and-swap on the same word. */
static int is_out(struct rb_chan *ch, uint32_t hold, uint64_t gen, uint64_t *state)
{
    if (hold >= RB_HOLDS || gen == 0)
        return 0;
    *state = __atomic_load_n(&ch->mine[hold].state, __ATOMIC_RELAXED);
    return *state >> 2 == gen && (*state & RB_MINE_OUT);
}

static void release_mine(struct rb_chan *ch, uint32_t hold, uint64_t gen)
{
    struct rb_mine *m;
    uint64_t state;
    int rc, i;

    /* Released already (a second release, a stale one): nothing to lock
     * for.  The test that counts is the claim below, under the lock. */
    if (!is_out(ch, hold, gen, &state))
        return;
    m = &ch->mine[hold];
    /* The caller cannot go back to Python: wait as long as the lock takes,
     * and take it again after a recovery. */
    while ((rc = lock(ch, RB_FOREVER)) == RB_EINTR || rc == RB_ERECOVERED)
        ;
    /* Claim the release, taking the intent with it: from here rb_hold_intent
     * finds the hold gone.  Under the lock, so that no begin reuses the
     * slot's record before the hold's end is committed. */
    state = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
    do {
        if (state >> 2 != gen || !(state & RB_MINE_OUT)) {
            if (rc == RB_OK)
                unlock(ch);
            return;  /* released already */
        }
    } while (!__atomic_compare_exchange_n(&m->state, &state, state & ~(uint64_t)RB_MINE_OUT, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    if (rc != RB_OK) {
        /* A damaged lock: the hold goes when this process does (L6), and
         * nothing frees its record before.  Reported as damage: the lock's
         * errno belongs to this thread, not to whoever settles the loan. */
        if (state & RB_MINE_PUBLISH)
            note_failed(ch, hold, gen, RB_ECORRUPT);
        released(ch, hold, gen);
        unpin(ch);
        return;
    }
    if ((i = own_hold(ch, hold, __atomic_load_n(&m->pos, __ATOMIC_RELAXED), RB_HOLD_LOAN)) >= 0) {
        end_loan_hold(ch, i, gen, (state & RB_MINE_PUBLISH) != 0);
    } else if ((i = own_hold(ch, hold, __atomic_load_n(&m->pos, __ATOMIC_RELAXED), RB_HOLD_VIEW)) >= 0) {
        end_view_hold(ch, i);
    } else {
        /* Not where its begin left it (voided, or the header scribbled on):
         * nothing left to end, and a loan was not published. */
        if (state & RB_MINE_PUBLISH)
            note_failed(ch, hold, gen, RB_ECORRUPT);
        unlock(ch);
    }
    released(ch, hold, gen);
    unpin(ch);
}

void rb_release(void *p)
{
    struct rb_chan *found = NULL;
    uint32_t hold = 0;
    uint64_t gen = 0;

    /* The handle that maps p, and its hold whose payload starts there:
     * distinct records, so one at most.  Reading `mine` without the channel
     * lock only picks the candidate; release_mine claims it by its name
     * (its generation) under the lock, or finds it gone. */
    pthread_mutex_lock(&handles_lock);
    for (struct rb_chan *ch = handles; ch && !found; ch = ch->next) {
        uintptr_t a = (uintptr_t)p, d = (uintptr_t)ch->data;

        if (a < d || a - d >= ch->size)
            continue;
        for (uint32_t i = 0; i < RB_HOLDS; i++) {
            struct rb_mine *m = &ch->mine[i];

            uint64_t state = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);

            if ((state & RB_MINE_OUT) && (__atomic_load_n(&m->pos, __ATOMIC_RELAXED) + RB_REC_HDR) % ch->size == a - d) {
                found = ch;
                hold = i;
                gen = state >> 2;
                break;
            }
        }
    }
    pthread_mutex_unlock(&handles_lock);
    if (found)
        release_mine(found, hold, gen);
}

void rb_hold_release(struct rb_chan *ch, const struct rb_where *w)
{
    if (w->ch == ch)
        release_mine(ch, w->hold, w->gen);
}

/* Set the intent of this handle's hold `hold` named `gen`: 1 if it was
 * still out, 0 if it was released already (the intent came too late). */
static int set_intent(struct rb_chan *ch, uint32_t hold, uint64_t gen, int publish)
{
    uint64_t state, want;

    if (!is_out(ch, hold, gen, &state))
        return 0;
    do {
        if (state >> 2 != gen || !(state & RB_MINE_OUT))
            return 0;
        want = publish ? state | RB_MINE_PUBLISH : state & ~(uint64_t)RB_MINE_PUBLISH;
    } while (!__atomic_compare_exchange_n(&ch->mine[hold].state, &state, want, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    return 1;
}

int rb_hold_intent(struct rb_chan *ch, const struct rb_where *w, int publish)
{
    return w->ch == ch && set_intent(ch, w->hold, w->gen, publish);
}

int rb_hold_settle(struct rb_chan *ch, const struct rb_where *w)
{
    struct rb_mine *m;
    uint64_t word;

    if (w->ch != ch || w->hold >= RB_HOLDS || w->gen == 0)
        return RB_EINVAL;
    if (set_intent(ch, w->hold, w->gen, 0))
        return RB_EHELD;
    /* Claimed by a release (which took the intent with it).  That release
     * may still be under way on another thread (ending the record, waking
     * sleepers): wait for its `done`, or a later hold's of the same record.
     * It runs without waiting for anything, the lock being taken before the
     * claim.  Acquire: pairs with released(); a failure noted for this
     * generation (note_failed) happened before either, and is still there
     * unless a later failure of the record overwrote it (see note_failed). */
    m = &ch->mine[w->hold];
    while (__atomic_load_n(&m->done, __ATOMIC_ACQUIRE) < w->gen)
        sched_yield();
    word = __atomic_load_n(&m->failed, __ATOMIC_RELAXED);
    return word >> 8 == w->gen ? (int)(word & 0xff) : RB_OK;
}

int rb_holds(struct rb_chan *ch, struct rb_hold_info *out, int max)
{
    struct rb_hdr *h = ch->hdr;
    int n = 0;

    for (int i = 0; i < RB_HOLDS && n < max; i++) {
        if (LOAD(h->holds[i].owner) == 0 || LOAD(h->holds[i].kind) == RB_HOLD_VOID)
            continue;
        out[n].kind = LOAD(h->holds[i].kind);
        out[n].pid = LOAD(h->holds[i].pid);
        out[n].bytes = LOAD(h->holds[i].bytes);
        n++;
    }
    return n;
}

/* ---- select (W12) --------------------------------------------------------- */

/* futex_waitv(2), Linux 5.16 and later: sleep on several words at once. */
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
struct waitv {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};
#define WAITV_U32 2             /* FUTEX_32; no FUTEX_PRIVATE_FLAG: the words are shared */

/* One case as the implementation sees it: its channel, and what to do. */
struct sel_case {
    struct rb_chan *ch;
    int send;
    uint32_t niov;
    const struct rb_iov *iov;
};

/* A uniformly random number below n, from a per-thread xorshift generator. */
static uint32_t random_below(uint32_t n)
{
    static __thread uint64_t state;
    uint64_t x = state;

    if (x == 0 && (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x || x == 0))
        x = (uint64_t)now_ns() | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state = x;
    return (uint32_t)(((x >> 32) * (uint64_t)n) >> 32);
}

/* Lock held, positions checked: can case c proceed now?  A send case on a
 * closed channel "proceeds" to fail; one on an unbuffered channel needs a
 * receiver parked to take its message (W13), other than the caller's own
 * count on that side (self_recv: a select counted in on a receive case of
 * the same channel cannot take its own message). */
static int case_ready(struct rb_chan *ch, int send, const struct pos *p, uint64_t need, uint32_t self_recv)
{
    if (!send)
        return p->qcount > 0 || (LOAD(ch->hdr->closed) && !waits_behind_loan(ch, p));
    if (LOAD(ch->hdr->closed))
        return 1;
    return room_for(ch, p, need) && (!ch->unbuffered || parked(ch->hdr, receivers(ch->hdr)) > self_recv);
}

/* The same question without the lock, to skip channels that are plainly not
 * ready without taking their locks.  A wrong answer costs a lock or a round:
 * the park that follows asks again under each lock. */
static int case_hint(const struct rb_chan *ch, int send, uint64_t need)
{
    const struct rb_hdr *h = ch->hdr;

    if (LOAD(h->closed))
        return 1;
    if (!send)
        return LOAD(h->qcount) > 0;
    return LOAD(h->qcount) < ch->dataqsiz && LOAD(h->used) + need <= ch->size;
}

/* Spin on the cases' hints, as spin() does for one channel, until one looks
 * ready or the spin budget or the deadline runs out. */
static void spin_select(const struct sel_case *cases, const uint64_t *lens, uint32_t n, int64_t deadline)
{
    struct pace p = start_pace(now_ns(), RB_SPIN_NS, deadline);

    do
        for (uint32_t k = 0; k < n; k++)
            if (case_hint(cases[k].ch, cases[k].send, RB_REC_HDR + align8(lens[k])))
                return;
    while (pace(&p));
}

/* Try case c, which looked ready: RB_ETIMEDOUT if it cannot proceed now,
 * else what doing it gave (see rb_select). */
static int try_case(const struct sel_case *c, uint64_t len, void *buf, uint64_t cap, uint64_t *len_out,
                    uint64_t *offered, int64_t deadline, int woken)
{
    struct rb_chan *ch = c->ch;
    struct rb_hdr *h = ch->hdr;
    uint64_t need = RB_REC_HDR + align8(len), n, seq;
    struct pos p;
    int rc;

    if ((rc = lock(ch, deadline)) != RB_OK)
        return rc;
    if (!read_pos(ch, c->send ? &h->sendx : &h->recvx, &p)) {
        unlock(ch);
        return RB_ECORRUPT;
    }
    if (!case_ready(ch, c->send, &p, need, 0)) {
        if (p.held_msgs != 0 && reclaim(ch)) {  /* L6: a dead holder's room or message, taken back */
            unlock_and_wake_all(ch);
            return try_case(c, len, buf, cap, len_out, offered, deadline, woken);
        }
        unlock(ch);
        return RB_ETIMEDOUT;
    }
    if (c->send) {
        if (LOAD(h->closed)) {
            unlock(ch);
            return RB_ECLOSED;
        }
        seq = send_locked(ch, &p, c->iov, c->niov, len, woken);  /* W6: a woken sender passes the baton */
        if (ch->unbuffered && offered) {  /* the caller waits for the acknowledgement */
            *offered = seq;
            return RB_EREADY;
        }
        return ch->unbuffered ? await_taken(ch, seq, deadline, now_ns() + RECHECK_NS) : RB_OK;
    }
    if (p.qcount == 0) {  /* closed and drained */
        unlock(ch);
        return RB_ECLOSED;
    }
    if (!record_len(ch, p.x, p.used, &n)) {
        unlock(ch);
        return RB_ECORRUPT;
    }
    *len_out = n;
    if (n > cap) {
        unlock(ch);
        return RB_ESMALLBUF;
    }
    ring_get(ch, wrap(ch, p.x + RB_REC_HDR), buf, n);
    release_head(ch, &p, n, 1);
    after_receive(ch, &p);
    return RB_OK;
}

/* One side a selector sleeps on. */
struct select_wait {
    struct rb_chan *ch;
    int send;
    struct ticket t;
    uint32_t seen;
};

static struct side side_of(struct rb_chan *ch, int send)
{
    return send ? senders(ch->hdr) : receivers(ch->hdr);
}

/* W10, W12: hand on a wake-up that a waiter leaving one side of ch (a
 * receiver that left its message, a selector or a task that did something
 * else) may have taken: to a parked receiver if a message is queued, to a
 * parked sender through the baton's budget, or, on an empty unbuffered
 * channel with a receiver counted, to another parked sender (the
 * receiver's call, W13).  `brief`: for a task's wait
 * (W14), whose thread runs an event loop, the lock is waited for briefly;
 * without it, the wake-up is handed on unconditionally. */
static void hand_on_side(struct rb_chan *ch, int send, int brief)
{
    struct rb_hdr *h = ch->hdr;
    struct pos p;
    int wake = 0;

    if ((brief ? lock_briefly(ch) : lock(ch, RB_FOREVER)) != RB_OK) {
        hand_on(send ? &h->send_futex : &h->recv_futex);
        return;
    }
    if (send) {
        if (!read_pos(ch, &h->sendx, &p))
            wake = 0;
        else if (ch->unbuffered && p.qcount == 0 && parked(h, receivers(h)) > 0)
            wake = call_sender(ch) != NULL;  /* W13: a receiver's call, not used: call another */
        else
            wake = spend_baton(ch, &p);
    } else if (LOAD(h->qcount) > 0 && parked(h, receivers(h)) > 0) {
        INC(h->recv_futex);
        h->recvq_wakes++;
        wake = 1;
    }
    if (send)
        unlock_and_pass(ch, wake);
    else
        unlock_and_wake(ch, wake, 0);
}

/* Whether handles a and b are of one channel: a select may name a channel
 * through two handles (attached twice), and it waits on each side of a
 * channel once. */
static int same_chan(const struct rb_chan *a, const struct rb_chan *b)
{
    return a == b || a->hdr == b->hdr || (a->ino != 0 && a->dev == b->dev && a->ino == b->ino);
}

/* W12: hand on every moved side but the one served (skip_ch, skip_send). */
static void hand_on_moved(struct select_wait *w, int n, const struct rb_chan *skip_ch, int skip_send)
{
    for (int i = 0; i < n; i++)
        if (w[i].seen != LOAD(*side_of(w[i].ch, w[i].send).futex) &&
            !(skip_ch && same_chan(w[i].ch, skip_ch) && w[i].send == skip_send))
            hand_on_side(w[i].ch, w[i].send, 0);
}

/* Whether the side (ch, send) of the last park (w[0..n)) moved while the
 * select slept on it: then a wake-up made on that side may have been this
 * select's, and the case that serves it carries it on as a woken plain call
 * would (W6 for a send: the baton). */
static int moved(const struct select_wait *w, int n, const struct rb_chan *ch, int send)
{
    for (int i = 0; i < n; i++)
        if (same_chan(w[i].ch, ch) && w[i].send == send)
            return w[i].seen != LOAD(*side_of(w[i].ch, w[i].send).futex);
    return 0;
}

/* W12: count in on every case's side (once per side), each under its own
 * lock, unless one turns out to be ready; sleep on all their words; count
 * out.  RB_OK to poll again (woken, ready, or the sleep ran out), or a
 * status with every count undone.  *nw says how many sides are in w. */
static int park_select(const struct sel_case *cases, const uint64_t *lens, uint32_t n, int64_t deadline,
                       struct select_wait *w, int *nw)
{
    struct waitv v[RB_SELECT_MAX];
    int64_t until = now_ns() + RECHECK_NS;
    struct timespec ts;
    int rc = RB_OK;
    long r;

    *nw = 0;
    /* Receive cases first (pass 0), then send cases (pass 1): a receive
     * case's call to a parked sender (W13) then comes before this select
     * counts itself in as a sender, so that the call never wakes the select
     * itself, and a send case does not count this select's own receive case
     * of the same channel as a receiver for its message. */
    for (uint32_t k = 0; k < 2 * n && rc == RB_OK; k++) {
        uint32_t i = k % n;
        struct rb_chan *ch = cases[i].ch;
        struct rb_hdr *h = ch->hdr;
        int send = cases[i].send, dup = 0;
        uint64_t need = RB_REC_HDR + align8(lens[i]);
        uint32_t *call = NULL, self_recv = 0;
        struct pos p;

        if (send != (k >= n))
            continue;
        for (int j = 0; j < *nw; j++) {
            dup |= same_chan(w[j].ch, ch) && w[j].send == send;
            self_recv |= same_chan(w[j].ch, ch) && !w[j].send;
        }
        if ((rc = lock(ch, deadline)) != RB_OK)
            break;
        if (!read_pos(ch, send ? &h->sendx : &h->recvx, &p))
            rc = RB_ECORRUPT;
        else if (case_ready(ch, send, &p, need, send ? self_recv : 0))
            rc = RB_EAGAIN_INTERNAL;
        if (rc != RB_OK) {
            unlock(ch);
            break;
        }
        if (send) {
            note_need(ch, need);
            h->send_parks++;
        } else {
            h->recv_parks++;
        }
        if (!dup) {
            struct side s = side_of(ch, send);

            reap(h, senders(h));
            reap(h, receivers(h));
            w[*nw].ch = ch;
            w[*nw].send = send;
            w[*nw].t = count_in(s);
            w[*nw].seen = LOAD(*s.futex);
            v[*nw] = (struct waitv){ .val = w[*nw].seen, .uaddr = (uint64_t)(uintptr_t)s.futex, .flags = WAITV_U32 };
            (*nw)++;
            /* W13: counted in, a receive case calls a parked sender, as a
             * plain receive does before it parks. */
            if (!send)
                call = call_sender(ch);
        }
        unlock(ch);
        if (call)
            futex_wake(call, 1);
    }
    if (rc == RB_OK) {
        if (deadline >= 0 && deadline < until)
            until = deadline;
        ts = to_timespec(until);
        r = syscall(SYS_futex_waitv, v, (unsigned)*nw, 0, &ts, CLOCK_MONOTONIC);
        if (r < 0 && errno == ENOSYS)
            rc = RB_ENOSYS;
        else if (r < 0 && errno == EINTR)
            rc = RB_EINTR;
    }
    for (int k = 0; k < *nw; k++)
        count_out(side_of(w[k].ch, w[k].send), w[k].t);
    return rc == RB_EAGAIN_INTERNAL ? RB_OK : rc;
}

/* Poll the cases once.  Those that look ready are tried in a random order,
 * each next one drawn uniformly from those left, and the first that can
 * proceed is done, so each ready case is equally likely (a case that turns
 * ready during the poll is found by the next one, or by the park, which asks
 * under each lock).  RB_ETIMEDOUT if none could proceed; otherwise what
 * try_case gave, with *chosen naming the case. */
static int poll_cases(const struct sel_case *cases, const uint64_t *lens, uint32_t n, void *buf, uint64_t cap,
                      uint64_t *chosen, uint64_t *len_out, uint64_t *offered, int64_t deadline,
                      const struct select_wait *w, int nw)
{
    uint32_t ready[RB_SELECT_MAX], m = 0;

    /* A channel with loans or views out is looked at under its lock too,
     * where a dead holder's room or message is taken back (L6). */
    for (uint32_t i = 0; i < n; i++)
        if (case_hint(cases[i].ch, cases[i].send, RB_REC_HDR + align8(lens[i])) || LOAD(cases[i].ch->hdr->held_msgs))
            ready[m++] = i;
    while (m > 0) {
        uint32_t j = m == 1 ? 0 : random_below(m), i = ready[j];
        int rc;

        ready[j] = ready[--m];
        rc = try_case(&cases[i], lens[i], buf, cap, len_out, offered, deadline,
                      moved(w, nw, cases[i].ch, cases[i].send));
        if (rc != RB_ETIMEDOUT) {
            *chosen = i;
            return rc;
        }
    }
    return RB_ETIMEDOUT;
}

/* The select loop of rb_select and rb_select_recv, on cases already checked
 * (lens[i]: the length of case i's message, 0 for a receive). */
static int select_cases(const struct sel_case *cases, const uint64_t *lens, uint32_t n, void *buf, uint64_t cap,
                        uint64_t *chosen, uint64_t *len_out, uint64_t *offered, int64_t deadline)
{
    struct select_wait w[RB_SELECT_MAX];
    int nw = 0, spun = 0, rc;

    for (;;) {
        rc = poll_cases(cases, lens, n, buf, cap, chosen, len_out, offered, deadline, w, nw);
        if (rc == RB_EINTR || rc == RB_ERECOVERED) {  /* nothing was done */
            hand_on_moved(w, nw, NULL, 0);
            return rc;
        }
        if (rc != RB_ETIMEDOUT) {  /* W12: hand on every moved side but the one served */
            hand_on_moved(w, nw, cases[*chosen].ch, cases[*chosen].send);
            return rc;
        }
        /* Nothing could proceed: pass on what the last sleep was woken for (W12). */
        hand_on_moved(w, nw, NULL, 0);
        nw = 0;
        if (expired(deadline))
            return RB_ETIMEDOUT;
        /* Spin once before the first park, as a single-channel wait does. */
        if (!spun) {
            spin_select(cases, lens, n, deadline);
            spun = 1;
            continue;
        }
        if ((rc = park_select(cases, lens, n, deadline, w, &nw)) != RB_OK) {
            if (rc == RB_ERECOVERED)
                continue;
            hand_on_moved(w, nw, NULL, 0);
            return rc;
        }
    }
}

int rb_select(struct rb_chan *const *chans, const struct rb_case *ops, uint32_t n, void *buf, uint64_t cap,
              uint64_t *chosen, uint64_t *len_out, uint64_t *offered, int64_t deadline)
{
    struct sel_case cases[RB_SELECT_MAX];
    uint64_t lens[RB_SELECT_MAX];

    if (n == 0 || n > RB_SELECT_MAX)
        return RB_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        cases[i] = (struct sel_case){ chans[i], ops && ops[i].send, ops ? ops[i].niov : 0, ops ? ops[i].iov : NULL };
        lens[i] = cases[i].send ? message_len(cases[i].ch, cases[i].iov, cases[i].niov) : 0;
        if (lens[i] == UINT64_MAX) {
            *chosen = i;
            return RB_ETOOBIG;
        }
    }
    return select_cases(cases, lens, n, buf, cap, chosen, len_out, offered, deadline);
}

int64_t rb_select_recv(struct rb_chan *const *chans, uint32_t n, void *buf, uint64_t cap, uint64_t *out,
                       int64_t deadline)
{
    static const uint64_t no_message[RB_SELECT_MAX];  /* receive cases send nothing */
    struct sel_case cases[RB_SELECT_MAX];
    int rc;

    if (n == 0 || n > RB_SELECT_MAX)
        return -RB_EINVAL;
    for (uint32_t i = 0; i < n; i++)
        cases[i] = (struct sel_case){ chans[i], 0, 0, NULL };
    rc = select_cases(cases, no_message, n, buf, cap, &out[1], &out[0], NULL, deadline);
    return rc == RB_OK ? (int64_t)out[0] : -rc;
}

/* ---- waiting elsewhere (W14) ------------------------------------------------ */

int rb_wait_begin(struct rb_chan *ch, int send, uint64_t len, uint32_t self_recv, struct rb_wait *w)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t need = RB_REC_HDR + align8(len);
    uint32_t *call = NULL;
    struct ticket t;
    struct side s;
    struct pos p;
    int rc;

    if ((rc = lock_briefly(ch)) != RB_OK)
        return rc;
    if (!read_pos(ch, send ? &h->sendx : &h->recvx, &p) || case_ready(ch, send, &p, need, send ? self_recv != 0 : 0)) {
        unlock(ch);
        return RB_EREADY;  /* the operation itself reports a damaged header */
    }
    if (send) {
        note_need(ch, need);
        h->send_parks++;
    } else {
        h->recv_parks++;
        call = call_sender(ch);
    }
    reap(h, senders(h));
    reap(h, receivers(h));
    s = side_of(ch, send);
    t = count_in(s);
    *w = (struct rb_wait){ .word = (uint64_t)(uintptr_t)s.futex, .seen = LOAD(*s.futex), .send = (uint32_t)send,
                           .slot = (uint32_t)t.slot, .owner = t.owner, .gen = t.gen };
    unlock(ch);
    if (call)
        futex_wake(call, 1);
    return RB_OK;
}

void rb_wait_leave(struct rb_chan *ch, struct rb_wait *w)
{
    struct ticket t = { (int)w->slot, w->owner, w->gen };

    if (w->slot >= RB_WAITER_SLOTS || w->left)
        return;
    count_out(side_of(ch, w->send != 0), t);
    w->left = 1;
}

void rb_wait_end(struct rb_chan *ch, const struct rb_wait *w, int served)
{
    struct side s = side_of(ch, w->send != 0);
    struct ticket t = { (int)w->slot, w->owner, w->gen };
    struct pos p;

    if (w->slot >= RB_WAITER_SLOTS)
        return;
    if (!w->left)
        count_out(s, t);
    if (w->word == (uint64_t)(uintptr_t)&ch->hdr->ack_futex)
        return;  /* W13: an acknowledgement is for its one sender: nothing to hand on */
    if (LOAD(*s.futex) == w->seen)
        return;  /* nobody bumped the word: no wake-up was taken */
    if (!served) {
        hand_on_side(ch, w->send != 0, 1);  /* W12 */
    } else if (w->send) {  /* W6: a woken sender that sent */
        if (lock_briefly(ch) == RB_OK)
            unlock_and_pass(ch, read_pos(ch, &ch->hdr->sendx, &p) && pass_baton(ch, &p));
        else
            hand_on(&ch->hdr->send_futex);  /* it cannot look: hand the wake-up on unconditionally */
    }
}

int rb_offer(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, uint64_t *seq, int64_t deadline)
{
    return offer(ch, iov, n, seq, deadline);
}

int rb_ack_begin(struct rb_chan *ch, uint64_t seq, struct rb_wait *w)
{
    struct rb_hdr *h = ch->hdr;
    struct ticket t;
    int rc;

    if (LOAD(h->received) >= seq)
        return RB_OK;
    while ((rc = lock_briefly(ch)) == RB_ERECOVERED)
        ;
    if (rc != RB_OK)
        return rc;  /* RB_EINTR: the lock stays held; the task looks again later */
    if (LOAD(h->received) >= seq) {
        unlock(ch);
        return RB_OK;
    }
    if (LOAD(h->closed))
        return take_back(ch, seq, RB_ECLOSED);
    reap(h, senders(h));
    t = count_in(senders(h));
    *w = (struct rb_wait){ .word = (uint64_t)(uintptr_t)&h->ack_futex, .seen = LOAD(h->ack_futex), .send = 1,
                           .slot = (uint32_t)t.slot, .owner = t.owner, .gen = t.gen };
    unlock(ch);
    return RB_EREADY;
}

int rb_take_back(struct rb_chan *ch, uint64_t seq)
{
    int rc;

    while ((rc = lock_briefly(ch)) == RB_ERECOVERED)
        ;
    if (rc != RB_OK)
        return rc;  /* RB_EINTR: the lock stays held; the task tries again later */
    return take_back(ch, seq, RB_ETIMEDOUT);
}

int rb_waitv(const uint64_t *words, const uint32_t *expected, uint32_t n, uint32_t *now, int64_t deadline)
{
    struct waitv v[128];
    struct timespec ts;
    uint32_t nv = 0;
    int moved = 0;
    long r;

    /* Every word's value goes back, so that the caller can tell which moved. */
    for (uint32_t i = 0; i < n; i++)
        moved |= (now[i] = __atomic_load_n((uint32_t *)(uintptr_t)words[i], __ATOMIC_RELAXED)) != expected[i];
    if (moved)
        return RB_OK;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = 0;

        while (k < nv && v[k].uaddr != words[i])
            k++;
        if (k < nv)
            continue;
        if (nv == 128)
            return RB_EINVAL;
        v[nv++] = (struct waitv){ .val = expected[i], .uaddr = words[i], .flags = WAITV_U32 };
    }
    if (deadline >= 0)
        ts = to_timespec(deadline);
    r = syscall(SYS_futex_waitv, v, (unsigned)nv, 0, deadline >= 0 ? &ts : NULL, CLOCK_MONOTONIC);
    for (uint32_t i = 0; i < n; i++)
        now[i] = __atomic_load_n((uint32_t *)(uintptr_t)words[i], __ATOMIC_RELAXED);
    if (r >= 0 || errno == EAGAIN)
        return RB_OK;
    return errno == ETIMEDOUT ? RB_ETIMEDOUT : errno == EINTR ? RB_EINTR : errno == ENOSYS ? RB_ENOSYS : RB_ESYS;
}

void rb_wake_word(uint64_t word)
{
    uint32_t *w = (uint32_t *)(uintptr_t)word;

    INC(*w);
    futex_wake(w, WAKE_ALL);
}

void rb_hand_on(uint64_t word)
{
    hand_on((uint32_t *)(uintptr_t)word);
}

/* W10. */
void rb_pass_wake(struct rb_chan *ch)
{
    hand_on_side(ch, 0, 0);
}

/* Lock held, dropped here: close (I6) and wake every waiter of both sides
 * and of acknowledgements (W5: close is rare, so whatever the counts say),
 * and the joiners too if `joiners` (messages dropped may have finished the
 * last tasks). */
static void close_and_wake(struct rb_chan *ch, int joiners)
{
    struct rb_hdr *h = ch->hdr;

    STORE(h->closed, 1);
    INC(h->send_futex);
    INC(h->recv_futex);
    INC(h->ack_futex);
    INC(h->hold_futex);  /* a loan or view waiting for a free hold fails now too */
    if (joiners)
        __atomic_fetch_add(&h->tasks_futex, 1, __ATOMIC_SEQ_CST);
    unlock(ch);
    futex_wake(&h->send_futex, WAKE_ALL);
    futex_wake(&h->recv_futex, WAKE_ALL);
    futex_wake(&h->ack_futex, WAKE_ALL);
    futex_wake(&h->hold_futex, WAKE_ALL);
    if (joiners)
        futex_wake(&h->tasks_futex, WAKE_ALL);
}

int rb_close(struct rb_chan *ch)
{
    int rc;

    if ((rc = lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    close_and_wake(ch, 0);
    return RB_OK;
}

int rb_close_and_drop(struct rb_chan *ch, uint64_t *dropped)
{
    struct rb_hdr *h = ch->hdr;
    struct pos p;
    uint64_t len;
    int rc;

    *dropped = 0;
    if ((rc = lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    if (!read_pos(ch, &h->recvx, &p)) {
        unlock(ch);
        return RB_ECORRUPT;
    }
    /* Released one by one, each checked, as receives would. */
    while (p.qcount > 0 && record_len(ch, p.x, p.used, &len)) {
        release_head(ch, &p, len, 1);
        (*dropped)++;
    }
    /* L1, L7: messages committed behind a loan still out are dropped too,
     * as received: marked aborted, they are never delivered. */
    if (p.held_msgs != 0) {
        uint64_t sp = LOAD(h->sendpos), rv = LOAD(h->resvpos), w;

        while (rv > sp && rv - sp <= ch->size) {
            ring_get(ch, sp % ch->size, &w, RB_REC_HDR);
            len = w & ~RB_REC_FLAGS;
            if (len > ch->size - RB_REC_HDR || RB_REC_HDR + align8(len) > rv - sp)
                break;
            if ((w & RB_REC_FLAGS) == 0) {
                w = len | RB_REC_SKIP;
                ring_put(ch, sp % ch->size, &w, RB_REC_HDR);
                STORE(h->received, LOAD(h->received) + 1);
                (*dropped)++;
            }
            sp += RB_REC_HDR + align8(len);
        }
        advance(ch, NULL);
    }
    if (*dropped > 0) {  /* each dropped message's task is done, as far as any is unfinished */
        uint64_t done = __atomic_load_n(&h->tasks_done, __ATOMIC_SEQ_CST), sent = LOAD(h->sent), nd;

        do
            nd = done + *dropped < sent ? done + *dropped : sent;
        while (nd > done && !__atomic_compare_exchange_n(&h->tasks_done, &done, nd, 0, __ATOMIC_SEQ_CST,
                                                         __ATOMIC_SEQ_CST));
    }
    close_and_wake(ch, 1);
    return p.qcount > 0 ? RB_ECORRUPT : RB_OK;
}

/* ---- unfinished tasks (JoinableQueue, W11) ------------------------------- */

static uint64_t unfinished(struct rb_hdr *h, uint64_t done)
{
    uint64_t sent = __atomic_load_n(&h->sent, __ATOMIC_SEQ_CST);

    return sent > done ? sent - done : 0;
}

int rb_task_done(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t done = __atomic_load_n(&h->tasks_done, __ATOMIC_SEQ_CST);

    do {
        if (unfinished(h, done) == 0)
            return RB_EINVAL;
    } while (!__atomic_compare_exchange_n(&h->tasks_done, &done, done + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    if (unfinished(h, done + 1) == 0 && __atomic_load_n(&h->joinq, __ATOMIC_SEQ_CST) > 0) {
        __atomic_fetch_add(&h->tasks_futex, 1, __ATOMIC_SEQ_CST);
        futex_wake(&h->tasks_futex, WAKE_ALL);
    }
    return RB_OK;
}

int rb_tasks_join(struct rb_chan *ch, int64_t deadline)
{
    struct rb_hdr *h = ch->hdr;

    for (;;) {
        uint32_t seq = __atomic_load_n(&h->tasks_futex, __ATOMIC_SEQ_CST);
        /* W8: never sleep more than RB_RECHECK_NS, so that a task_done()
         * killed between its increment and its wake costs at most that. */
        int64_t until = now_ns() + RECHECK_NS;
        struct timespec ts;
        int r;

        if (deadline >= 0 && deadline < until)
            until = deadline;
        ts = to_timespec(until);

        __atomic_fetch_add(&h->joinq, 1, __ATOMIC_SEQ_CST);
        if (unfinished(h, __atomic_load_n(&h->tasks_done, __ATOMIC_SEQ_CST)) == 0) {
            __atomic_fetch_sub(&h->joinq, 1, __ATOMIC_SEQ_CST);
            return RB_OK;
        }
        if (expired(deadline)) {
            __atomic_fetch_sub(&h->joinq, 1, __ATOMIC_SEQ_CST);
            return RB_ETIMEDOUT;
        }
        r = futex_wait(&h->tasks_futex, seq, &ts);
        __atomic_fetch_sub(&h->joinq, 1, __ATOMIC_SEQ_CST);
        if (r == EINTR)
            return RB_EINTR;
    }
}

/* ---- observing ---------------------------------------------------------- */

/* Sum of one side's slot counts, read without the lock (approximate). */
static uint32_t observe_parked(struct side s)
{
    uint32_t n = 0;

    for (int i = 0; i < RB_WAITER_SLOTS; i++)
        n += SLOT_COUNT(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED));
    return n;
}

/* Every field of a snapshot, each read once; under the lock (rb_stats) the
 * result is consistent, without it (rb_observe) approximate. */
static void snapshot(struct rb_chan *ch, struct rb_stats *out)
{
    struct rb_hdr *h = ch->hdr;

    out->dataqsiz = ch->unbuffered ? 0 : ch->dataqsiz;
    out->size = ch->size;
    out->qcount = LOAD(h->qcount);
    out->used = LOAD(h->used);
    out->sendx = LOAD(h->sendx);
    out->recvx = LOAD(h->recvx);
    out->sendq = observe_parked(senders(h));
    out->recvq = observe_parked(receivers(h));
    out->closed = LOAD(h->closed);
    out->lock_owner = LOAD(h->lock_owner);
    out->creator_pid = LOAD(h->creator_pid);
    out->sent = LOAD(h->sent);
    out->received = LOAD(h->received);
    out->send_parks = LOAD(h->send_parks);
    out->recv_parks = LOAD(h->recv_parks);
    out->recvq_wakes = LOAD(h->recvq_wakes);
    out->sendq_wakes = LOAD(h->sendq_wakes);
    out->baton_passes = LOAD(h->baton_passes);
    out->recoveries = LOAD(h->recoveries);
    out->waiters_reaped = LOAD(h->waiters_reaped);
    out->tasks_done = LOAD(h->tasks_done);
    out->peak_used = LOAD(h->peak_used);
    out->peak_qcount = LOAD(h->peak_qcount);
    out->held = LOAD(h->held);
    out->loans = out->views = 0;
    for (int i = 0; i < RB_HOLDS; i++) {
        if (LOAD(h->holds[i].owner) == 0)
            continue;
        if (LOAD(h->holds[i].kind) == RB_HOLD_LOAN)
            out->loans++;
        else if (LOAD(h->holds[i].kind) == RB_HOLD_VIEW)
            out->views++;
    }
    out->loans_taken = LOAD(h->loans_taken);
    out->views_taken = LOAD(h->views_taken);
    out->loans_reclaimed = LOAD(h->loans_reclaimed);
    out->views_reclaimed = LOAD(h->views_reclaimed);
}

int rb_stats(struct rb_chan *ch, struct rb_stats *out)
{
    struct rb_hdr *h = ch->hdr;
    struct pos ps, pr;
    int rc;

    if ((rc = lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    /* An exact snapshot promises a sound one (rb_observe shows raw values). */
    if (!read_pos(ch, &h->sendx, &ps) || !read_pos(ch, &h->recvx, &pr)) {
        unlock(ch);
        return RB_ECORRUPT;
    }
    reap(h, senders(h));
    reap(h, receivers(h));
    if (pr.held_msgs != 0 && reclaim(ch)) {  /* L6 */
        unlock_and_wake_all(ch);
        return rb_stats(ch, out);
    }
    snapshot(ch, out);
    /* The fields checked above, as checked, not read a second time. */
    out->qcount = pr.qcount;
    out->used = pr.used;
    out->sendx = ps.x;
    out->recvx = pr.x;
    out->lock_owner = 0;    /* we hold it; report the state others saw */
    unlock(ch);
    return RB_OK;
}

void rb_observe(struct rb_chan *ch, struct rb_stats *out)
{
    snapshot(ch, out);
}

int rb_parked(struct rb_chan *ch, int side, struct rb_parked *out, int max)
{
    struct side s = side == 0 ? senders(ch->hdr) : receivers(ch->hdr);
    int n = 0;

    for (int i = 0; i < RB_WAITER_SLOTS && n < max; i++) {
        uint32_t c = SLOT_COUNT(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED));

        if (c > 0) {
            out[n].pid = LOAD(s.slots[i].pid);
            out[n].count = c;
            n++;
        }
    }
    return n;
}

/* I8 for one side (lock held). */
static int masks_cover(struct side s)
{
    uint64_t mask = LOAD(*s.mask);

    for (int i = 0; i < RB_WAITER_SLOTS; i++)
        if (SLOT_COUNT(__atomic_load_n(&s.slots[i].word, __ATOMIC_RELAXED)) > 0 && !(mask & 1ULL << i))
            return 0;
    return 1;
}

/* L5 for rb_check (lock held): what waits at sendpos waits for a reason:
 * nothing is lent, or the record there is still lent, or aborted with
 * messages queued before it, or the queue is full. */
static int stuck_at_sendpos(struct rb_chan *ch, uint64_t qcount, uint64_t used)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t w;

    if (LOAD(h->lent_count) == 0)
        return 1;
    ring_get(ch, LOAD(h->sendpos) % ch->size, &w, RB_REC_HDR);
    return (w & RB_REC_LENT) || ((w & RB_REC_SKIP) && used != 0) || qcount >= ch->dataqsiz;
}

int rb_check(struct rb_chan *ch)
{
    struct rb_hdr *h = ch->hdr;
    uint64_t sendpos, recvpos, resvpos, freepos, sent, received, committed = 0;
    int64_t lent = 0;
    struct pos ps, pr;
    int rc, ok;

    if ((rc = lock(ch, RB_FOREVER)) != RB_OK)
        return rc;
    sendpos = LOAD(h->sendpos);
    recvpos = LOAD(h->recvpos);
    sent = LOAD(h->sent);
    received = LOAD(h->received);
    resvpos = LOAD(h->resvpos);
    freepos = LOAD(h->freepos);
    ok = read_pos(ch, &h->sendx, &ps) && read_pos(ch, &h->recvx, &pr) && ps.qcount == pr.qcount &&
         ps.used == pr.used && LOAD(h->sendx) == wrap(ch, pr.x + pr.used) && LOAD(h->closed) <= 1 &&
         sendpos - recvpos == pr.used && sendpos % ch->size == LOAD(h->sendx) && recvpos % ch->size == pr.x &&
         walk_records(ch, pr.x, pr.used, pr.qcount) == (int64_t)pr.qcount &&
         masks_cover(senders(h)) && masks_cover(receivers(h)) &&
         /* L1..L3, L7 */
         freepos <= recvpos && resvpos >= sendpos && resvpos - freepos <= ch->size &&
         (lent = walk_lent(ch, sendpos % ch->size, resvpos - sendpos, &committed)) == (int64_t)LOAD(h->lent_count) &&
         pr.held == (resvpos - sendpos) + (recvpos - freepos) && pr.held_msgs >= (uint64_t)lent &&
         sent - received == pr.qcount + committed + (pr.held_msgs - (uint64_t)lent) &&
         stuck_at_sendpos(ch, pr.qcount, pr.used);
    unlock(ch);
    return ok ? RB_OK : RB_ECORRUPT;
}

uint64_t rb_max_message(struct rb_chan *ch)
{
    return ch->size - RB_REC_HDR;
}

#define FIELD(f) { #f, offsetof(struct rb_hdr, f), sizeof(((struct rb_hdr *)0)->f) }
#define SLOT0(f) { #f, offsetof(struct rb_hdr, f), sizeof(((struct rb_hdr *)0)->f[0].word) }
static const struct rb_field header_fields[] = {
    FIELD(magic), FIELD(version), FIELD(data_off), FIELD(dataqsiz), FIELD(size), FIELD(creator_pid), FIELD(flags),
    FIELD(lock),
    FIELD(lock_owner), FIELD(closed), FIELD(qcount), FIELD(used),
    FIELD(sendpos), FIELD(sendx), FIELD(sent), FIELD(send_parks), FIELD(recvq_wakes), FIELD(baton_passes),
    FIELD(resvpos), FIELD(lent_count),
    FIELD(recvpos), FIELD(recvx), FIELD(received), FIELD(recv_parks), FIELD(sendq_wakes), FIELD(freepos),
    FIELD(send_mask), FIELD(recv_mask), FIELD(send_futex), FIELD(recv_futex), FIELD(held), FIELD(held_msgs),
    FIELD(send_min_need), FIELD(send_baton), FIELD(ack_futex),
    FIELD(tasks_done), FIELD(joinq), FIELD(tasks_futex), FIELD(hold_futex),
    FIELD(peak_used), FIELD(peak_qcount), FIELD(recoveries), FIELD(waiters_reaped),
    FIELD(loans_taken), FIELD(views_taken), FIELD(loans_reclaimed), FIELD(views_reclaimed),
    SLOT0(send_waiters), SLOT0(recv_waiters),
    { "holds", offsetof(struct rb_hdr, holds), sizeof(struct rb_hold) },
};

int rb_header_fields(struct rb_field *out, int max)
{
    int n = 0;

    for (size_t i = 0; i < sizeof header_fields / sizeof header_fields[0] && n < max; i++)
        out[n++] = header_fields[i];
    return n;
}

int rb_debug_hold_lock(struct rb_chan *ch)
{
    int rc;

    while ((rc = lock(ch, RB_FOREVER)) == RB_EINTR)
        ;
    return rc;
}

void rb_debug_crash_at(int point)
{
    crash_point = point;
}

void rb_debug_recheck(int64_t ns)
{
    __atomic_store_n(&recheck_ns, ns > 0 ? ns : RB_RECHECK_NS, __ATOMIC_RELAXED);
}

/* ---- segments ----------------------------------------------------------- */

/* "/" + name into path; RB_EINVAL for an empty or too long name, one with
 * a '/' (shm_open names are a single component), or "." or ".." (the
 * directory itself and its parent). */
static int shm_path(const char *name, char path[RB_NAME_MAX + 2])
{
    size_t n = strnlen(name, RB_NAME_MAX + 1);

    if (n == 0 || n > RB_NAME_MAX || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return RB_EINVAL;
    path[0] = '/';
    memcpy(path + 1, name, n + 1);
    return RB_OK;
}

/* Map the header and ring of the segment open on fd (its ring `size`
 * bytes).  When the ring is a whole number of pages, it is mapped a second
 * time right after itself, so that a record that wraps is contiguous in
 * memory (*mirrored).  NULL (errno set) if mapping fails. */
static struct rb_hdr *map_segment(int fd, uint64_t size, size_t *map_len, int *mirrored)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len = RB_DATA_OFF + size;
    uint8_t *base;

    *mirrored = 0;
    if (page > 0 && size % (uint64_t)page == 0 && RB_DATA_OFF % page == 0) {
        /* Reserve the whole span, then map the file over it twice. */
        base = mmap(NULL, len + size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base != MAP_FAILED) {
            if (mmap(base, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != MAP_FAILED &&
                mmap(base + len, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, RB_DATA_OFF) !=
                    MAP_FAILED) {
                *map_len = len + size;
                *mirrored = 1;
                return (struct rb_hdr *)base;
            }
            munmap(base, len + size);
        }
    }
    base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return NULL;
    *map_len = len;
    return (struct rb_hdr *)base;
}

/* The bounds are passed in, already validated, rather than read again from
 * the shared header, which a peer could change in between.  The handle
 * keeps fd. */
static struct rb_chan *new_handle(struct rb_hdr *h, size_t map_len, uint64_t capacity, uint64_t size, uint32_t flags,
                                  int mirrored, int fd)
{
    struct stat st;
    struct rb_chan *ch = malloc(sizeof *ch);

    if (ch) {
        ch->hdr = h;
        ch->data = (uint8_t *)h + RB_DATA_OFF;
        ch->map_len = map_len;
        ch->dataqsiz = capacity;
        ch->size = size;
        ch->unbuffered = (flags & RB_UNBUFFERED) != 0;
        ch->mirrored = mirrored;
        ch->fd = fd;
        /* L4: the segment is mapped; the liveness lock goes on another
         * description (own_description).  Without one, no holds here. */
        ch->own_fd = own_description(fd) == 0;
        ch->live = 0;
        ch->tag = new_tag();
        ch->spin_ns[RB_SIDE_SEND] = ch->spin_ns[RB_SIDE_RECV] = RB_SPIN_NS;
        memset(ch->mine, 0, sizeof ch->mine);
        ch->pins = 0;
        ch->detached = 0;
        if (fstat(fd, &st) == 0) {
            ch->dev = st.st_dev;
            ch->ino = st.st_ino;
        } else {
            ch->dev = 0;
            ch->ino = 0;
        }
        pthread_mutex_lock(&handles_lock);
        ch->next = handles;
        handles = ch;
        pthread_mutex_unlock(&handles_lock);
    }
    return ch;
}

/*
 * rb_create and rb_attach share one error exit: each step that fails sets
 * rc (and errno, for RB_ESYS) and jumps to `fail`, which undoes what was
 * done (unmap, close, and for a create the name) and keeps errno.
 */
int rb_create(const char *name, uint64_t capacity, uint64_t size, uint32_t mode, struct rb_chan **out)
{
    char path[RB_NAME_MAX + 2];
    pthread_mutexattr_t attr;
    struct rb_hdr *h = NULL;
    size_t map_len = RB_DATA_OFF + size;
    uint32_t flags;
    int fd, err, rc = RB_ESYS, mirrored;

    pthread_once(&self_once, self_init);
    if (shm_path(name, path) != RB_OK || capacity > RB_MAX_CAPACITY ||
        size < RB_MIN_SIZE || size > RB_MAX_SIZE || size % 8 != 0 || (mode & ~0777u) != 0)
        return RB_EINVAL;

    /* Created owner-only, then given the mode asked for (fchmod, unlike the
     * open, ignores the umask). */
    fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return RB_ESYS;
    if (mode != 0600 && fchmod(fd, mode) != 0)
        goto fail;
    /* Reserve the pages now: on a full /dev/shm this fails here with ENOSPC
     * instead of killing a later sender with SIGBUS. */
    if (ftruncate(fd, (off_t)map_len) != 0 || (errno = posix_fallocate(fd, 0, (off_t)map_len)) != 0)
        goto fail;
    if ((h = map_segment(fd, size, &map_len, &mirrored)) == NULL)
        goto fail;

    /* W13: an unbuffered channel is a ring for one message in flight. */
    flags = capacity == 0 ? RB_UNBUFFERED : 0;
    capacity = capacity == 0 ? 1 : capacity;
    h->version = RB_LAYOUT_VERSION;
    h->data_off = RB_DATA_OFF;
    h->flags = flags;
    h->dataqsiz = capacity;
    h->size = size;
    h->creator_pid = self_pid;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    err = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (err != 0) {
        errno = err;
        goto fail;
    }
    /* Publish: pairs with the acquire load of magic in rb_attach. */
    __atomic_store_n(&h->magic, RB_MAGIC, __ATOMIC_RELEASE);
    if ((*out = new_handle(h, map_len, capacity, size, flags, mirrored, fd)) == NULL)
        goto fail;
    return RB_OK;

fail:
    err = errno;
    if (h != NULL)
        munmap(h, map_len);
    close(fd);
    shm_unlink(path);
    errno = err;
    return rc;
}

int rb_attach(const char *name, struct rb_chan **out)
{
    char path[RB_NAME_MAX + 2];
    struct rb_hdr *h = MAP_FAILED;
    struct stat st;
    size_t st_len;
    uint64_t size, cap;
    uint32_t flags;
    size_t map_len = 0;
    int fd, err, rc = RB_ESYS, mirrored;

    pthread_once(&self_once, self_init);
    if (shm_path(name, path) != RB_OK)
        return RB_EINVAL;
    fd = shm_open(path, O_RDWR, 0);
    if (fd < 0)
        return RB_ESYS;
    if (fstat(fd, &st) != 0)
        goto fail;
    rc = RB_EINCOMPAT;
    if (st.st_size < RB_DATA_OFF)
        goto fail;
    map_len = (size_t)st.st_size;
    rc = RB_ESYS;
    h = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED)
        goto fail;

    /* Pairs with the release store in rb_create: seeing the magic means
     * seeing the fields written before it.  Each field is read once. */
    rc = RB_EINCOMPAT;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RB_MAGIC || LOAD(h->version) != RB_LAYOUT_VERSION ||
        LOAD(h->data_off) != RB_DATA_OFF)
        goto fail;
    size = LOAD(h->size);
    cap = LOAD(h->dataqsiz);
    flags = LOAD(h->flags);
    if (size < RB_MIN_SIZE || size > RB_MAX_SIZE || size % 8 != 0 || cap < 1 || cap > RB_MAX_CAPACITY ||
        map_len < RB_DATA_OFF + size || (flags & ~(uint32_t)RB_UNBUFFERED) != 0 ||
        ((flags & RB_UNBUFFERED) && cap != 1))
        goto fail;
    /* Map it again with the bounds just checked (and mirrored if it can be),
     * then let the first mapping go. */
    rc = RB_ESYS;
    {
        struct rb_hdr *again = map_segment(fd, size, &st_len, &mirrored);

        if (again == NULL)
            goto fail;
        munmap(h, map_len);
        h = again;
        map_len = st_len;
    }
    errno = ENOMEM;
    if ((*out = new_handle(h, map_len, cap, size, flags, mirrored, fd)) == NULL)
        goto fail;
    return RB_OK;

fail:
    err = errno;
    if (h != MAP_FAILED)
        munmap(h, map_len);
    close(fd);
    errno = err;
    return rc;
}

void rb_detach(struct rb_chan *ch)
{
    int later;

    if (!ch)
        return;
    /* Holds not yet released keep the mapping: their buffers may still be
     * read or written.  The last release finishes the detach. */
    pthread_mutex_lock(&handles_lock);
    later = __atomic_load_n(&ch->pins, __ATOMIC_RELAXED) > 0;
    ch->detached = 1;
    pthread_mutex_unlock(&handles_lock);
    if (!later)
        finish_detach(ch);
}

static void finish_detach(struct rb_chan *ch)
{
    pthread_mutex_lock(&handles_lock);
    for (struct rb_chan **p = &handles; *p; p = &(*p)->next)
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    pthread_mutex_unlock(&handles_lock);
    close(ch->fd);  /* drops this handle's liveness lock, if it took it */
    munmap(ch->hdr, ch->map_len);
    free(ch);
}

void rb_file_id(const struct rb_chan *ch, uint64_t out[2])
{
    out[0] = (uint64_t)ch->dev;
    out[1] = (uint64_t)ch->ino;
}

int rb_unlink(const char *name)
{
    char path[RB_NAME_MAX + 2];

    if (shm_path(name, path) != RB_OK)
        return RB_EINVAL;
    return shm_unlink(path) == 0 ? RB_OK : RB_ESYS;
}
