/*
 * ringbuf_api.h - the C API of ringbuf: what Python calls, declarations only.
 *
 * C returns status codes and never touches Python objects; Python owns
 * timeouts in seconds, retries after signals, and exceptions.  The struct in
 * shared memory, its invariants and the wait/wake rules are in ringbuf.h.
 *
 * csrc/build_ffi.py reads this file as cffi's cdef, so that every
 * declaration is written once.  Keep to what cffi parses: `#define NAME value`
 * (cffi is told `...` and takes the value from the compiler), enums, structs
 * and prototypes; other preprocessor lines are dropped.
 */
#ifndef RINGBUF_API_H
#define RINGBUF_API_H

#include <stdint.h>

/* Every segment starts with this mark (the bytes "RINGBUF1" on
 * little-endian) and its layout version, in every layout. */
#define RB_MAGIC          0x31465542474e4952ULL
#define RB_LAYOUT_VERSION 5
#define RB_DATA_OFF       4096  /* the ring starts page-aligned after the header */
#define RB_MIN_SIZE       64ULL
#define RB_MAX_SIZE       (1ULL << 40)
/* Below 2**32 by RB_HOLDS and one, so that held_msgs (32 bits: messages lent
 * or viewed, L3, at most the capacity and one per hold) never wraps. */
#define RB_MAX_CAPACITY   ((1ULL << 32) - 17)
#define RB_NAME_MAX       200   /* without the leading '/' shm_open wants */
#define RB_WAITER_SLOTS   64    /* waiter slots per side: one per process with
                                 * waiters parked there, the last one shared */
#define RB_SELECT_MAX     64    /* cases in one rb_select */
#define RB_UNBUFFERED     1     /* rb_create flag: capacity 0, Go's rendezvous */
#define RB_HOLDS          16    /* loans and views out at once, per channel (RB_MAX_CAPACITY) */
#define RB_HOLD_LOAN      1
#define RB_HOLD_VIEW      2
#define RB_HOLD_VOID      3     /* its owner died before it held anything */

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
    RB_ERECOVERED = 11, /* the lock was taken over from a dead owner and the header
                         * repaired; nothing else was done: call again */
    RB_ENOSYS = 12,     /* rb_select would have to park, and the kernel has no
                         * futex_waitv (Linux 5.16 or later) */
    RB_EREADY = 13,     /* rb_wait_begin: the operation can proceed now; nothing
                         * was counted */
    RB_ESELF = 14,      /* a loan or view would wait for a hold, and every hold
                         * of the channel is this thread's: it would wait for itself */
    RB_EHELD = 15       /* rb_hold_settle: the loan is still out, its memory still in use;
                         * it is aborted when released */
};

/* One piece of a message to send (rb_sendv). */
struct rb_iov {
    const void *base;
    uint64_t len;
};

/* What one case of rb_select does on its channel: receive one message
 * (send 0), or send the message made of iov[0..niov). */
struct rb_case {
    uint32_t send;
    uint32_t niov;
    const struct rb_iov *iov;
};

/* This process's handle on one channel (defined in ringbuf.h). */
struct rb_chan;

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
    uint64_t peak_used;
    uint64_t peak_qcount;
    uint64_t held;              /* ring bytes loans and views hold */
    uint32_t loans;             /* loans out */
    uint32_t views;             /* views out */
    uint64_t loans_taken;
    uint64_t views_taken;
    uint64_t loans_reclaimed;   /* loans of dead holders aborted */
    uint64_t views_reclaimed;   /* views of dead holders queued again */
};

/* One loan or view out (rb_holds). */
struct rb_hold_info {
    uint32_t kind;              /* RB_HOLD_LOAN or RB_HOLD_VIEW */
    int32_t pid;                /* its holder */
    uint64_t bytes;             /* ring bytes it holds */
};

/* Where a loan or view begun is (rb_loan_begin, rb_view_begin): filled in
 * only when the begin succeeds, before it returns, so that a caller
 * interrupted right after the call can still find and end the hold. */
struct rb_where {
    char *addr;                 /* the payload in this process */
    uint64_t off;
    uint64_t len;               /* its length */
    uint64_t gen;               /* names this hold (with its number) and no
                                 * other of the process, before or after */
    uint32_t hold;              /* the hold number */
    uint32_t pad;
    const struct rb_chan *ch;   /* the handle whose hold it is */
};

/* An asynchronous waiter's claim (W14): counted in on one side of a
 * channel, to wait on `word` (an address) while it holds `seen`. */
struct rb_wait {
    uint64_t word;
    uint32_t seen;
    uint32_t send;
    uint32_t slot;
    uint32_t owner;
    uint32_t gen;
    uint32_t left;              /* counted out already (rb_wait_leave) */
};

/* Who is parked on one side: one entry per waiter slot in use. */
struct rb_parked {
    int32_t pid;                /* the process (the last to park, for the shared slot) */
    uint32_t count;             /* its waiters parked there */
};

/* One field of the shared header, for observers and tests that read or write
 * the segment directly: its name, byte offset and size.  For the waiter slot
 * arrays (send_waiters, recv_waiters) the entry is the first slot's word;
 * for `holds`, the first hold (struct rb_hold in ringbuf.h: pos, bytes,
 * owner, pid, kind at offsets 0, 8, 16, 24, 28). */
struct rb_field {
    const char *name;
    uint32_t offset;
    uint32_t size;
};

/* Create the segment /NAME exclusively with permissions `mode` (exactly:
 * the umask does not apply) and map it.  `size` must be a multiple of 8 in
 * [RB_MIN_SIZE, RB_MAX_SIZE]; capacity in [0, RB_MAX_CAPACITY], 0 making an
 * unbuffered channel (W13): a send returns once a receiver took it. */
int rb_create(const char *name, uint64_t capacity, uint64_t size, uint32_t mode, struct rb_chan **out);
/* Map an existing segment and validate its header. */
int rb_attach(const char *name, struct rb_chan **out);
/* Unmap; the handle is freed.  Never call it while another thread uses ch. */
void rb_detach(struct rb_chan *ch);
/* Remove the name; processes that have it mapped keep using it. */
int rb_unlink(const char *name);
/* The segment's file, as (device, inode) into out[0..2): unlike its name,
 * which may be removed and then taken by a newer segment, it names this
 * segment for as long as the segment exists.  (0, 0) if it could not be
 * read when the segment was mapped. */
void rb_file_id(const struct rb_chan *ch, uint64_t out[2]);

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
/* Go's select: perform exactly one of the n cases, case i being on chans[i]
 * and doing cases[i] (cases NULL: every case receives), one that can proceed
 * (chosen uniformly at random among those that can), waiting for one until
 * the deadline.  *chosen names the case for every status but RB_ETIMEDOUT,
 * RB_EINTR and RB_ERECOVERED (then nothing was done).  RB_OK: done; for a
 * receive case the message is in buf[0..*len_out).  RB_ECLOSED: a receive
 * case's channel is closed and drained (a case that proceeds), or a send
 * case's channel is closed.  RB_ESMALLBUF: a receive case's next message is
 * *len_out bytes, longer than cap; it stays queued.  RB_ETOOBIG: a send case
 * can never fit (checked before anything else).  A send case on an
 * unbuffered channel proceeds only once a receiver takes its message; with
 * `offered` not NULL it is published instead and RB_EREADY returned, its
 * number in *offered, for the caller to wait for the acknowledgement itself
 * (rb_ack_begin, rb_take_back). */
int rb_select(struct rb_chan *const *chans, const struct rb_case *cases, uint32_t n, void *buf, uint64_t cap,
              uint64_t *chosen, uint64_t *len_out, uint64_t *offered, int64_t deadline_ns);
/* rb_select with every case a receive: no case array.  Returns the length
 * of the message received from chans[out[1]] into buf, or minus a status
 * (out[1] then names the case as rb_select's *chosen does; RB_ESMALLBUF
 * puts the message's length in out[0]). */
int64_t rb_select_recv(struct rb_chan *const *chans, uint32_t n, void *buf, uint64_t cap, uint64_t *out,
                       int64_t deadline_ns);
/* W14: the first half of a park, for a waiter that sleeps elsewhere (an
 * asyncio task, through one helper thread per process).  Counts the caller
 * in on the senders' side (send, for a message of len bytes) or the
 * receivers' side of ch and fills *w.  self_recv: the caller is counted in
 * on ch's receivers' side already (a select's receive case), so that a send
 * on an unbuffered channel does not take it for a receiver.  RB_EREADY,
 * with nothing counted, if the operation can proceed now (or must fail now:
 * closed, damaged).  RB_EINTR if the lock stayed held for a millisecond (a
 * stuck peer): the caller's thread runs an event loop, so it looks again
 * later. */
int rb_wait_begin(struct rb_chan *ch, int send, uint64_t len, uint32_t self_recv, struct rb_wait *w);
/* W14: the second half, in two steps.  rb_wait_leave counts the waiter out
 * (once; before the caller tries its operation again).  rb_wait_end counts
 * it out if rb_wait_leave did not; then, `served` saying whether the waiter
 * did its operation on this side, a wake-up it may have taken is handed on
 * (W12) if not, and if so, a sender passes the baton (W6). */
void rb_wait_leave(struct rb_chan *ch, struct rb_wait *w);
void rb_wait_end(struct rb_chan *ch, const struct rb_wait *w, int served);
/* W13 in steps, for an unbuffered channel's sender that waits elsewhere:
 * rb_offer publishes the message made of iov[0..n) if there is room by the
 * deadline (RB_OK, its number in *seq) without waiting for a receiver to
 * take it.  rb_ack_begin then says RB_OK if the message was taken, or counts
 * the caller in on the senders' side to wait on ack_futex (*w, RB_EREADY
 * meaning "not yet": wait, rb_wait_end, ask again), or takes the message back
 * and says RB_ECLOSED, or RB_EINTR as rb_wait_begin.  rb_take_back takes it
 * back unless it was taken: RB_OK (it was: the send succeeded) or
 * RB_ETIMEDOUT (taken back), or RB_EINTR as rb_wait_begin (nothing done:
 * call it again). */
int rb_offer(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, uint64_t *seq, int64_t deadline_ns);
int rb_ack_begin(struct rb_chan *ch, uint64_t seq, struct rb_wait *w);
int rb_take_back(struct rb_chan *ch, uint64_t seq);
/* Sleep until one of the 32-bit words at the addresses words[0..n) differs
 * from expected[i], or the deadline; at most 128 distinct words.  now[i]
 * gets each word's value on return.  RB_OK (a word differs, perhaps
 * already), RB_ETIMEDOUT, RB_EINTR, RB_ENOSYS, RB_EINVAL (too many). */
int rb_waitv(const uint64_t *words, const uint32_t *expected, uint32_t n, uint32_t *now, int64_t deadline_ns);
/* Bump a 32-bit word and wake everyone sleeping on it (rb_waitv's callers
 * use a private word of theirs to be woken). */
void rb_wake_word(uint64_t word);
/* W12 for the asyncio helper: bump a channel's 32-bit word and wake one
 * sleeper on it, handing on a wake-up the helper took on a word it slept on
 * for a task that no longer waits there, which a waiter that is counted may
 * be owed. */
void rb_hand_on(uint64_t word);
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
/* Loans and views (ringbuf.h, L1..L7): zero-copy sends and receives of one
 * message, written or read in place, outside the lock, between the begin
 * and the release.  Only for a ring mapped for them
 * (RB_EINVAL otherwise: an unbuffered channel, or a size that is not a
 * multiple of the page size).  A begin fills *w: the hold is this handle's,
 * numbered w->hold, and the message's payload is at w->addr, contiguous
 * even where the ring wraps.  At most RB_HOLDS are out per
 * channel; a begin that finds none free waits like one that finds no room
 * (or no message), unless every one is this thread's (RB_ESELF).
 * rb_loan_begin waits for room for len bytes, as rb_send does;
 * rb_view_begin waits for a message, as rb_recv does.
 *
 * A hold ends when it is released, which is what the caller arranges for
 * the moment nothing in the process uses its memory any more (Python: the
 * death of the buffer over it, through rb_release).  Until then the
 * mapping stays, even past rb_detach.  What the release does is the hold's
 * intent: a loan is aborted (its room freed, nothing delivered) unless its
 * intent was set to publish it (rb_hold_intent), a view's room is freed.
 * A published loan is delivered after every message whose room was
 * reserved before it, once those are published too; a view's room is
 * freed once no earlier view holds room.  Releasing a hold twice is
 * harmless: the second release finds it gone (a hold is named by its
 * number and w->gen, which no other hold of the process shares) and does
 * nothing. */
int rb_loan_begin(struct rb_chan *ch, uint64_t len, int64_t deadline, struct rb_where *w);
int rb_view_begin(struct rb_chan *ch, int64_t deadline, struct rb_where *w);
/* The calls below name a hold by the *w a begin on the same handle filled
 * in.  Any other *w (all zero, as before a begin; another handle's) names
 * no hold: they do nothing with it (rb_hold_settle: RB_EINVAL). */
/* Set what releasing this handle's loan does: publish (1) or abort (0).
 * Returns 1 if the hold is still out, 0 if it was released already. */
int rb_hold_intent(struct rb_chan *ch, const struct rb_where *w, int publish);
/* Release a hold now, as its buffer's death would (nothing if it was
 * released already, or if *w names no hold). */
void rb_hold_release(struct rb_chan *ch, const struct rb_where *w);
/* Release the hold whose payload starts at p (a begin's w->addr) in whichever
 * handle of this process maps it: the destructor of the buffer over it. */
void rb_release(void *p);
/* Settle a loan whose block ended well, once its intent was set to publish
 * and the caller's objects over its memory were dropped: RB_EHELD if it is
 * still out (something else still uses its memory), its intent now to abort
 * it; otherwise how its release went, waiting for a release under way on
 * another thread to finish: RB_OK if it was published; RB_ECLOSED if the
 * channel was closed before (it was aborted instead); RB_ECORRUPT if the
 * lock or its record was damaged (not published).  RB_EINVAL if *w names
 * no hold. */
int rb_hold_settle(struct rb_chan *ch, const struct rb_where *w);
/* The loans and views out, read without the lock: up to max; returns how
 * many. */
int rb_holds(struct rb_chan *ch, struct rb_hold_info *out, int max);
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
/* Close and drop every message still queued, in one critical section: a
 * later receive finds the channel closed and drained at once.  Each message
 * dropped counts as received and as a task done (queue.Queue.shutdown with
 * immediate=True); *dropped says how many. */
int rb_close_and_drop(struct rb_chan *ch, uint64_t *dropped);
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
/* The shared header's fields: up to max of them into out; returns how many. */
int rb_header_fields(struct rb_field *out, int max);

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
/* For tests: the W8 re-check period of this process (and of the children it
 * forks after), ns; 0 or less restores the default (one second).  With a
 * long one, a missed wake-up leaves a waiter asleep instead of a second
 * late.  Every process of a test must use the same period: W9 strikes off
 * a waiter not stamped for three periods. */
void rb_debug_recheck(int64_t ns);

#endif
