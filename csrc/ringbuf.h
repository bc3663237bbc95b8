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
#define RB_LAYOUT_VERSION 2
#define RB_CACHELINE      64
#define RB_DATA_OFF       4096  /* the ring starts page-aligned */
#define RB_REC_HDR        8     /* bytes of length before each payload */

#define RB_MIN_SIZE       64ULL
#define RB_MAX_SIZE       (1ULL << 40)
#define RB_MAX_CAPACITY   (1ULL << 32)
#define RB_NAME_MAX       200   /* without the leading '/' shm_open wants */
#define RB_WAITER_SLOTS   32    /* parked waiters tracked per side */

/* Deadlines are absolute CLOCK_MONOTONIC nanoseconds.  RB_FOREVER never
 * expires; any deadline already in the past makes the call non-blocking. */
#define RB_FOREVER        (-1LL)

/* Status codes.  Python maps each one to an exception through one table. */
enum rb_status {
    RB_OK = 0,
    RB_ETIMEDOUT = 1,   /* deadline passed (also: non-blocking call found no room / no data) */
    RB_EINTR = 2,       /* a signal arrived while parked; retry with the same deadline */
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

/* One parked waiter, so that one who dies while parked can be struck off
 * (see reap() in ringbuf.c). */
struct rb_waiter {
    uint64_t token;             /* 0: free; else (pid << 32 | serial) of the waiter */
    int64_t since_ns;           /* CLOCK_MONOTONIC time it parked */
};

/*
 * The shared header.  Fields reuse hchan's names where the meaning matches.
 * Fields are grouped by who writes them, one cache line each: identity (the
 * creator, once), the lock line (both sides, every operation), the sender
 * line, the receiver line, and the parking line (only on park and wake).  With
 * one producer and one consumer only the lock line and the ring's data move
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
 *
 * Parking: recvq/sendq count the receivers/senders that are parked or about
 * to park.  A waiter increments before it sleeps and decrements after, and
 * sleeps at most a second at a time.  One that dies while parked leaves its
 * count behind until it is reaped, a few seconds later; meanwhile that costs
 * the other side a wake system call that wakes nobody, never a lost wake-up,
 * because the kernel wakes only live sleepers.
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
                                 * below.  Held only for bookkeeping and the
                                 * memcpy of one message; never across a sleep
                                 * or a wake system call (waiters are chosen
                                 * under the lock and woken after it drops). */
    int32_t  lock_owner;        /* pid holding the lock, 0 when free; a hint for
                                 * observers, the mutex itself is the truth */
    uint32_t closed;            /* 0 open, 1 closed (I6) */
    uint64_t qcount;            /* messages queued */
    uint64_t used;              /* ring bytes those messages occupy */

    /* Line 2: written by senders only. */
    _Alignas(RB_CACHELINE)
    uint64_t sendpos;           /* bytes ever published: storing it is the commit
                                 * of a send (see rb_recover in ringbuf.c) */
    uint64_t sendx;             /* byte offset of the next record to write
                                 * (sendpos mod size, kept to avoid a division) */
    uint64_t sent;              /* total messages sent; a spinning receiver
                                 * watches it change */
    uint64_t send_parks;        /* times a sender parked */
    uint64_t send_wakes;        /* wake system calls made by senders */

    /* Line 3: written by receivers only. */
    _Alignas(RB_CACHELINE)
    uint64_t recvpos;           /* bytes ever released: storing it is the commit
                                 * of a receive */
    uint64_t recvx;             /* byte offset of the next record to read
                                 * (recvpos mod size) */
    uint64_t received;          /* total messages received; a spinning sender
                                 * watches it change */
    uint64_t recv_parks;        /* times a receiver parked */
    uint64_t recv_wakes;        /* wake system calls made by receivers */

    /* Line 4: parking.  Both sides read it on every operation (is anyone
     * parked on the other side?) but it is written only when somebody parks,
     * wakes or recovers, so while messages flow it stays cached, unshared
     * writes elsewhere do not evict it. */
    _Alignas(RB_CACHELINE)
    uint32_t sendq;             /* senders parked (or about to park) for room */
    uint32_t recvq;             /* receivers parked (or about to park) for data */
    uint32_t send_futex;        /* senders sleep on it; a receiver that frees
                                 * room (or close) bumps it to wake them */
    uint32_t recv_futex;        /* receivers sleep on it; a sender (or close)
                                 * bumps it to wake them */
    uint64_t recoveries;        /* times a lock was taken over from a dead owner */
    uint64_t waiters_reaped;    /* parked waiters struck off because they died */
    uint64_t send_min_need;     /* a lower bound on the ring bytes any parked sender
                                 * needs: the smallest need among those that
                                 * parked since sendq was last 0.  Nobody is
                                 * woken for room that fits none of them. */
    uint32_t send_baton;        /* how many more times a woken sender whose record
                                 * does not fit may hand its wake-up on to the
                                 * next parked sender; every receive that frees
                                 * room resets it to sendq (see "Whom to wake") */

    /* Line 5: unfinished tasks, for ringbuf.JoinableQueue only.  Changed with
     * atomic operations, without the lock: put adds one, task_done takes one
     * away, join waits for zero. */
    _Alignas(RB_CACHELINE)
    uint64_t tasks;             /* tasks put and not yet marked done */
    uint32_t joinq;             /* joiners parked (or about to park) */
    uint32_t tasks_futex;       /* joiners sleep on it; bumped when tasks reaches 0 */

    /* Lines 6 on: who is parked.  A waiter takes a slot under the lock as it
     * parks and frees it as it wakes (a compare-and-swap on its token, so
     * that exactly one of it and a reaper counts it out).  sendq and recvq
     * count the slotted waiters and any that found every slot taken. */
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

/* A consistent snapshot of the header, taken under the lock. */
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
    uint64_t send_wakes;
    uint64_t recv_wakes;
    uint64_t recoveries;
    uint64_t waiters_reaped;
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
 * if any of them can never fit. */
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
/* JoinableQueue's count of unfinished tasks: add delta (+1 per put, -1 per
 * task_done).  RB_EINVAL, with the count unchanged, if it would go below 0. */
int rb_tasks_add(struct rb_chan *ch, int64_t delta);
/* Wait until the count of unfinished tasks is zero. */
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
/* Pids of the parked senders (side 0) or receivers (side 1) that hold a
 * waiter slot, without the lock.  Returns how many were written. */
int rb_waiter_pids(struct rb_chan *ch, int side, int32_t *pids, int max);
/* Assert the invariants under the lock: RB_OK or RB_ECORRUPT. */
int rb_check(struct rb_chan *ch);
/* Largest payload this ring can ever hold. */
uint64_t rb_max_message(struct rb_chan *ch);

/* For tests: take the lock and return still holding it, as a process that is
 * killed inside a critical section would.  The only way to release it is to
 * exit. */
int rb_debug_hold_lock(struct rb_chan *ch);
/* For tests: make this process SIGKILL itself, lock held, at one point of
 * the next send or receive (RB_CRASH_*), or never (0). */
enum rb_crash_point {
    RB_CRASH_SEND_BEFORE_COMMIT = 1,  /* record written, sendpos not yet stored */
    RB_CRASH_SEND_AFTER_COMMIT = 2,   /* sendpos stored, the rest not yet */
    RB_CRASH_RECV_BEFORE_COMMIT = 3,  /* payload copied out, recvpos not yet stored */
    RB_CRASH_RECV_AFTER_COMMIT = 4    /* recvpos stored, the rest not yet */
};
void rb_debug_crash_at(int point);

#endif
