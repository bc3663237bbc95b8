/*
 * ringbuf.h - a bounded channel in one shared-memory segment.
 *
 * The segment is Go's hchan made real across processes: a lock, a ring of
 * variable-length records bounded both in messages (dataqsiz) and in bytes
 * (size), the read and write positions, and the number of senders and
 * receivers parked on it.  A send or receive is a memcpy and an index update
 * under the lock; a sender that finds no room, or a receiver that finds
 * nothing, parks on a futex word in the segment.
 *
 * Segment layout (an ABI between processes, pinned by the static asserts in
 * ringbuf.c and versioned by RB_LAYOUT_VERSION):
 *
 *   offset 0             struct rb_hdr (four cache lines)
 *   offset RB_DATA_OFF   the ring: `size` bytes of records
 *
 * A record is an 8-byte length followed by the payload, padded to a multiple
 * of 8.  Record headers are never split by the end of the ring (size and every
 * position are multiples of 8); a payload may be, and is then copied in two
 * pieces.
 *
 * This header is the whole C API Python sees.  C returns status codes and never
 * touches Python objects; Python owns timeouts in seconds, retries after
 * signals and exceptions.
 */
#ifndef RINGBUF_H
#define RINGBUF_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#define RB_MAGIC          0x31465542474e4952ULL /* the bytes "RINGBUF1" on little-endian */
#define RB_LAYOUT_VERSION 3
#define RB_CACHELINE      64
#define RB_DATA_OFF       4096  /* the ring starts page-aligned */
#define RB_REC_HDR        8     /* bytes of length before each payload */

#define RB_MIN_SIZE       64ULL
#define RB_MAX_SIZE       (1ULL << 40)
#define RB_MAX_CAPACITY   (1ULL << 32)
#define RB_NAME_MAX       200   /* without the leading '/' shm_open wants */
#define RB_WAITER_SLOTS   64    /* waiter slots per side: one per process with
                                 * waiters parked there, the last one shared */

/* Deadlines are absolute CLOCK_MONOTONIC nanoseconds.  RB_FOREVER never
 * expires; a deadline that has passed makes the call non-blocking: it still
 * waits for the lock (held only for one message's copy), then decides on
 * room or data.  A held lock delays a call at most RB_LOCK_GRACE_NS past its
 * deadline (see lock() in ringbuf.c). */
#define RB_FOREVER        (-1LL)

/* Status codes.  Python maps each one to an exception through one table. */
enum rb_status {
    RB_OK = 0,
    RB_ETIMEDOUT = 1,   /* deadline passed (also: non-blocking call found no room / no data) */
    RB_EINTR = 2,       /* returned early so that Python can run signal handlers (a signal
                         * arrived, or the lock stayed held for a while); nothing was done:
                         * retry with the same deadline */
    RB_ECLOSED = 3,     /* send on a closed channel, or receive on a closed, drained one */
    RB_ETOOBIG = 4,     /* the message can never fit in this ring */
    RB_ESMALLBUF = 5,   /* the next message is longer than the buffer given; it stays queued */
    RB_ECORRUPT = 6,    /* a header field or record failed its bounds check */
    RB_EINCOMPAT = 7,   /* not a ringbuf segment, another layout version, or too small */
    RB_EINVAL = 8,      /* bad argument (name, capacity, size) */
    RB_ESYS = 9,        /* a system call failed; errno says why */
    RB_ECHANGED = 10,   /* rb_recv_at: the peeked message was taken by another receiver */
    RB_ERECOVERED = 11  /* the lock was taken over from a dead owner and the header
                         * repaired; nothing else was done: call again */
};

/* One piece of a message to send (rb_sendv). */
struct rb_iov {
    const void *base;
    uint64_t len;
};

/* The parked waiters of one process on one side (see W1-W3 below).  `word`
 * is the whole truth about them, changed only by single atomic operations:
 *   bits 63..32  owner: a random id of the process (RB_SHARED_OWNER for the
 *                last slot, which every process that finds no free slot shares;
 *                0 when the slot is free)
 *   bits 31..24  generation: bumped each time the slot is taken, so that a
 *                waiter struck off by a reaper cannot count itself out of a
 *                later owner's count
 *   bits 23..0   count: parked waiters of that owner */
struct rb_waiter {
    uint64_t word;
    int64_t since_ns;           /* CLOCK_MONOTONIC time a waiter last counted in */
    int32_t pid;                /* the owner's pid, for observers only */
    uint32_t pad;
};

/*
 * The shared header.  Fields reuse hchan's names where the meaning matches.
 * Fields are grouped by who writes them, one cache line each: identity (the
 * creator, once), the lock line (both sides, every operation), the sender
 * line, the receiver line, the parking line (only on park and wake), the
 * task line (JoinableQueue) and, after them, the waiter slots.  With one
 * producer and one consumer only the lock line and the ring's data move
 * between cores per message.
 *
 * Invariants, true whenever `lock` is free (rb_check() asserts them all):
 *   I1  qcount <= dataqsiz
 *   I2  used <= size; sendx < size; recvx < size; all three multiples of 8
 *   I3  sendx == (recvx + used) mod size (checked by rb_check; an operation
 *       checks I1, I2 and I4 for the fields it uses, which is what keeps
 *       its memory accesses inside the ring)
 *   I4  qcount == 0  <=>  used == 0
 *   I5  walking qcount records from recvx covers exactly `used` bytes, and no
 *       record's length exceeds size - RB_REC_HDR
 *   I6  closed only ever goes from 0 to 1
 *   I7  used == sendpos - recvpos; sendx == sendpos mod size; recvx == recvpos
 *       mod size; qcount == sent - received
 *   I8  every waiter slot with a non-zero count has its bit set in its
 *       side's mask (send_mask, recv_mask)
 *
 * Every field that bounds a memory access (qcount, used, sendx, recvx, a
 * record's length) is read from shared memory once per critical section into
 * a local, checked there, and only the local is used: a process that writes
 * the header without the lock can change the shared copy, never the checked
 * one.
 *
 * The wait/wake protocol.  A sender waits for room, a receiver for data,
 * a joiner for the last task_done; each side has a futex word its waiters
 * sleep on and a mask of the waiter slots in use.  The code that carries out
 * a rule names it (W1, W2, ...).
 *   W1  Count in.  A waiter that decides to park does so under the lock: it
 *       adds itself to its process's slot on that side (taking a free slot,
 *       or the shared last slot when none is free), stamps the slot's time,
 *       sets the slot's bit in the side's mask, and reads the futex word.
 *   W2  Sleep.  It drops the lock and sleeps while the futex word still holds
 *       the value it read, for at most RB_RECHECK_NS at a time.
 *   W3  Count out.  However it wakes (woken, signal, time), it takes itself
 *       off its slot's count with one compare-and-swap that succeeds only
 *       while the slot has its owner and generation; the last one out frees
 *       the slot.  No lock is needed: the slot word is the whole truth, so no
 *       kill between two steps can skew a count.  sendq and recvq are never
 *       stored: they are the sums of the slot counts (rb_stats, inspect).
 *   W4  Wake.  A waker decides under the lock: if the side's mask is not 0, it
 *       sums the counts of the slots it names (clearing the bits of empty
 *       slots), and if any waiter is counted it bumps the futex word; it makes
 *       the wake system call after dropping the lock.  The bump comes after
 *       the sleeper's read (both under the lock), so either the sleeper is
 *       already queued in the kernel or its FUTEX_WAIT sees a changed word:
 *       no wake-up is lost.  A mask of 0 costs one load and no system call.
 *   W5  Whom.  A send of k messages wakes up to k receivers (any receiver can
 *       take any message).  A receive that frees room wakes one sender, as Go
 *       wakes one goroutine from sendq, and only if the room fits the
 *       smallest record a parked sender holds (W7).  Close, and a recovery
 *       from a dead lock owner, wake every waiter on both sides.
 *   W6  The baton.  The sender woken by W5 owes the wake-up to the others: if
 *       it sends and room is left that fits a parked sender, it wakes the
 *       next one; if its own record does not fit, it wakes the next one
 *       before parking again, while send_baton (set to the number of parked
 *       senders by each receive that frees room, less one per such pass)
 *       lasts, so two senders that both do not fit cannot wake each other
 *       forever.  A woken sender that gives up instead (deadline, signal,
 *       an error) hands the wake-up on too, bumping the word first.
 *   W7  send_min_need is a lower bound on the ring bytes any parked sender
 *       needs: each sender lowers it as it parks, and the first one to park
 *       when no sender is counted resets it.  Nobody is woken, or handed the
 *       baton, for room that fits none of them.
 *   W8  Re-check.  A waiter sleeps at most RB_RECHECK_NS, then retries.  A
 *       wake-up is owed only by a live process, but one can be killed after
 *       its commit and before its wake call, or after being woken and before
 *       acting on it; the re-check bounds what that costs the sleepers.  It
 *       is not how waiters normally wake.
 *   W9  Reap.  Under the lock, at every park and snapshot, a slot whose stamp
 *       is older than RB_REAP_NS (a live waiter re-stamps at least every
 *       RB_RECHECK_NS) is struck off: freed with a compare-and-swap, its
 *       count added to waiters_reaped.  A waiter of a stopped process that
 *       resumes finds the generation changed and does not count out twice.
 *   W10 A receiver that leaves a message it was woken for (its buffer was too
 *       small and it gave up) wakes another parked receiver (rb_pass_wake).
 *   W11 Joiners (no lock): a joiner reads tasks_futex, counts itself in
 *       joinq, then reads the unfinished count (sent - tasks_done); a
 *       task_done that makes it 0 then reads joinq and, if a joiner is
 *       counted, bumps tasks_futex and wakes them all.  All with sequential
 *       consistency, so either the joiner sees 0 or task_done sees the joiner.
 *
 * Memory order.  The lock orders everything written under it.  The commit
 * words are stored with release order and loaded with acquire order where
 * another process relies on what they publish: sendpos (release in
 * publish(), acquire in recover()), recvpos (release in release_head(),
 * acquire in recover()), magic (release in rb_create(), acquire in
 * rb_attach()).  Fields read outside the lock (spin hints, observers, the
 * kernel's futex compare, the slot words of W3) use relaxed atomics: each is
 * a hint re-read under the lock before anything is decided, except the slot
 * words, whose compare-and-swap is itself the decision.
 */
struct rb_hdr {
    /* Line 0: identity.  Written once by the creator; magic is stored last,
     * with release order, so an attacher that sees the magic sees the rest.
     * The hot paths use the copies in struct rb_chan and never read it. */
    uint64_t magic;
    uint32_t version;           /* RB_LAYOUT_VERSION */
    uint32_t data_off;          /* RB_DATA_OFF */
    uint64_t dataqsiz;          /* capacity: the bound on queued messages */
    uint64_t size;              /* bytes in the ring */
    int32_t  creator_pid;

    /* Line 1: the lock and the state both sides change under it. */
    _Alignas(RB_CACHELINE)
    pthread_mutex_t lock;       /* robust, process-shared.  Protects every field
                                 * below but the slot words (W3) and the task
                                 * line.  Held only for bookkeeping and the
                                 * memcpy of one message (or one batch); never
                                 * across a sleep or a wake system call
                                 * (waiters are chosen under the lock and woken
                                 * after it drops). */
    int32_t  lock_owner;        /* pid holding the lock, 0 when free; a hint for
                                 * observers, the mutex itself is the truth */
    uint32_t closed;            /* 0 open, 1 closed (I6) */
    uint64_t qcount;            /* messages queued */
    uint64_t used;              /* ring bytes those messages occupy */

    /* Line 2: written by senders only. */
    _Alignas(RB_CACHELINE)
    uint64_t sendpos;           /* bytes ever published: storing it is the commit
                                 * of a send (see recover() in ringbuf.c) */
    uint64_t sendx;             /* byte offset of the next record to write
                                 * (sendpos mod size, kept to avoid a division) */
    uint64_t sent;              /* total messages sent; a spinning receiver
                                 * watches it change */
    uint64_t send_parks;        /* times a sender parked */
    uint64_t recvq_wakes;       /* wake calls made for parked receivers (W5, W10) */
    uint64_t baton_passes;      /* wake-ups a woken sender handed on (W6) */

    /* Line 3: written by receivers only. */
    _Alignas(RB_CACHELINE)
    uint64_t recvpos;           /* bytes ever released: storing it is the commit
                                 * of a receive */
    uint64_t recvx;             /* byte offset of the next record to read
                                 * (recvpos mod size) */
    uint64_t received;          /* total messages received; a spinning sender
                                 * watches it change */
    uint64_t recv_parks;        /* times a receiver parked */
    uint64_t sendq_wakes;       /* wake calls made for parked senders by
                                 * receives that freed room (W5) */

    /* Line 4: parking.  Both sides read the masks on every operation (is
     * anyone parked on the other side?) but they are written only when
     * somebody parks, wakes or recovers, so while messages flow the line
     * stays cached. */
    _Alignas(RB_CACHELINE)
    uint64_t send_mask;         /* bit i: send_waiters[i] may count parked senders (I8) */
    uint64_t recv_mask;         /* bit i: recv_waiters[i] may count parked receivers */
    uint32_t send_futex;        /* senders sleep on it; a receiver that frees
                                 * room (or close) bumps it to wake them */
    uint32_t recv_futex;        /* receivers sleep on it; a sender (or close)
                                 * bumps it to wake them */
    uint64_t recoveries;        /* times a lock was taken over from a dead owner */
    uint64_t waiters_reaped;    /* parked waiters struck off because they died (W9) */
    uint64_t send_min_need;     /* W7 */
    uint32_t send_baton;        /* W6: how many more unfitting passes */

    /* Line 5: unfinished tasks, for ringbuf.JoinableQueue only.  Every message
     * sent counts as a task, so the unfinished count is sent - tasks_done and
     * a put is counted by its own commit: no death can skew the two.  Changed
     * with atomic operations, without the lock (W11). */
    _Alignas(RB_CACHELINE)
    uint64_t tasks_done;        /* task_done() calls; never more than sent */
    uint32_t joinq;             /* joiners parked (or about to park) */
    uint32_t tasks_futex;       /* joiners sleep on it; bumped when the count reaches 0 */

    /* Lines 6 on: who is parked (W1, W3, W9). */
    _Alignas(RB_CACHELINE)
    struct rb_waiter send_waiters[RB_WAITER_SLOTS];
    struct rb_waiter recv_waiters[RB_WAITER_SLOTS];
};

/* A process-local handle.  The bounds used for every check are copied here at
 * attach time, after validation, so that a peer scribbling on the shared
 * header cannot widen them. */
struct rb_chan {
    struct rb_hdr *hdr;
    uint8_t *data;              /* hdr + RB_DATA_OFF */
    size_t map_len;
    uint64_t dataqsiz;
    uint64_t size;
};

/* A snapshot of the header: consistent when taken under the lock
 * (rb_stats), approximate when not (rb_observe).  sendq and recvq are the
 * sums of the waiter slots' counts (W3). */
struct rb_stats {
    uint64_t dataqsiz;
    uint64_t size;
    uint64_t qcount;
    uint64_t used;
    uint64_t sendx;
    uint64_t recvx;
    uint32_t sendq;
    uint32_t recvq;
    uint32_t closed;
    int32_t lock_owner;
    int32_t creator_pid;
    uint64_t sent;
    uint64_t received;
    uint64_t send_parks;
    uint64_t recv_parks;
    uint64_t recvq_wakes;
    uint64_t sendq_wakes;
    uint64_t baton_passes;
    uint64_t recoveries;
    uint64_t waiters_reaped;
    uint64_t tasks_done;
};

/* Who is parked on one side: one entry per waiter slot in use. */
struct rb_parked {
    int32_t pid;                /* the process (the last to park, for the shared slot) */
    uint32_t count;             /* its waiters parked there */
};

/* Create the segment /NAME exclusively with permissions `mode` (exactly:
 * the umask does not apply) and map it.  `size` must be a multiple of 8 in
 * [RB_MIN_SIZE, RB_MAX_SIZE]; capacity in [1, RB_MAX_CAPACITY]. */
int rb_create(const char *name, uint64_t capacity, uint64_t size, uint32_t mode, struct rb_chan **out);
/* Map an existing segment and validate its header. */
int rb_attach(const char *name, struct rb_chan **out);
/* Unmap; the handle is freed.  Never call it while another thread uses ch. */
void rb_detach(struct rb_chan *ch);
/* Remove the name; processes that have it mapped keep using it. */
int rb_unlink(const char *name);

/* Send one message of len bytes. */
int rb_send(struct rb_chan *ch, const void *buf, uint64_t len, int64_t deadline_ns);
/* Send one message made of the n pieces iov[0..n), copied straight from each
 * piece into the ring under one lock hold. */
int rb_sendv(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, int64_t deadline_ns);
/* Send n messages in order: message i is the next lens[i] bytes of data.
 * Takes the lock once for as many as fit and waits for room for the rest.
 * *sent_out says how many were sent, also when the status is not RB_OK
 * (timeout, close, signal part way through).  RB_ETOOBIG, with nothing sent,
 * if any of them can never fit.  data and lens are the caller's memory: the
 * caller sees to it that data holds the sum of lens bytes. */
int rb_send_batch(struct rb_chan *ch, const void *data, const uint64_t *lens, uint64_t n, uint64_t *sent_out,
                  int64_t deadline_ns);

/* Receive one message into buf (cap bytes).  Returns its length (>= 0), or
 * minus a status.  If the message is longer than cap, returns -RB_ESMALLBUF,
 * stores the length in *need_out and leaves the message queued. */
int64_t rb_recv(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *need_out, int64_t deadline_ns);
/* Wait for at least one message, then receive up to max_items of those
 * queued, packed one after another into buf, lengths into lens[].  Returns
 * how many, or minus a status; -RB_ESMALLBUF (with *need_out) when not even
 * the first one fits. */
int64_t rb_recv_batch(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *lens, uint64_t max_items,
                      uint64_t *need_out, int64_t deadline_ns);
/* Wait for a message and copy up to cap bytes of it into buf without
 * receiving it.  Returns its full length, or minus a status; *token_out
 * identifies it for rb_recv_at(). */
int64_t rb_peek(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *token_out, int64_t deadline_ns);
/* Receive the peeked message `token`, copying only its bytes [skip, skip+n)
 * into dst.  RB_ECHANGED if another receiver took it first; never waits. */
int rb_recv_at(struct rb_chan *ch, uint64_t token, uint64_t skip, void *dst, uint64_t n);
/* JoinableQueue: every message sent is a task; mark one done.  RB_EINVAL,
 * with nothing changed, if every task sent is done already. */
int rb_task_done(struct rb_chan *ch);
/* Wait until every task sent is done. */
int rb_tasks_join(struct rb_chan *ch, int64_t deadline_ns);
/* A receiver leaves a queued message it was woken for (it raised instead):
 * wake another parked receiver, if any, so that the message is not stranded. */
void rb_pass_wake(struct rb_chan *ch);
/* Go's close: later sends fail, receivers drain then fail; wakes everyone. */
int rb_close(struct rb_chan *ch);
/* A snapshot of the header under the lock; RB_ECORRUPT if it is not sound. */
int rb_stats(struct rb_chan *ch, struct rb_stats *out);
/* The same snapshot read without the lock, for observers that must not
 * disturb the channel (inspect, top).  Approximate: fields are read one by
 * one while others may change them.  lock_owner tells who holds the lock. */
void rb_observe(struct rb_chan *ch, struct rb_stats *out);
/* Who is parked on the senders' (side 0) or receivers' (side 1) side: up to
 * max entries, one per waiter slot in use, read without the lock.  Returns
 * how many were written. */
int rb_parked(struct rb_chan *ch, int side, struct rb_parked *out, int max);
/* Assert the invariants under the lock: RB_OK or RB_ECORRUPT. */
int rb_check(struct rb_chan *ch);
/* Largest payload this ring can ever hold. */
uint64_t rb_max_message(struct rb_chan *ch);

/* For tests: take the lock and return still holding it, as a process that is
 * killed inside a critical section would.  The only way to release it is to
 * exit. */
int rb_debug_hold_lock(struct rb_chan *ch);
/* For tests: make this process SIGKILL itself at one point of the next
 * send, receive or park (RB_CRASH_*), or never (0). */
enum rb_crash_point {
    RB_CRASH_SEND_BEFORE_COMMIT = 1,  /* lock held: record written, sendpos not yet stored */
    RB_CRASH_SEND_AFTER_COMMIT = 2,   /* lock held: sendpos stored, the rest not yet */
    RB_CRASH_RECV_BEFORE_COMMIT = 3,  /* lock held: payload copied out, recvpos not yet stored */
    RB_CRASH_RECV_AFTER_COMMIT = 4,   /* lock held: recvpos stored, the rest not yet */
    RB_CRASH_PARK_COUNTED = 5,        /* lock held: counted in (W1), lock not yet dropped */
    RB_CRASH_PARK_WOKEN = 6           /* no lock: woken, not yet counted out (W3) */
};
void rb_debug_crash_at(int point);

#endif
