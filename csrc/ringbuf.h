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
 *   offset 0             struct rb_hdr (six cache lines, then the waiter slots)
 *   offset RB_DATA_OFF   the ring: `size` bytes of records
 *
 * A record is an 8-byte length followed by the payload, padded to a multiple
 * of 8.  Record headers are never split by the end of the ring (size and every
 * position are multiples of 8); a payload may be, and is then copied in two
 * pieces.
 *
 * This header holds the struct, its invariants and the wait/wake rules; the
 * functions Python calls are declared in ringbuf_api.h, which it includes.
 */
#ifndef RINGBUF_H
#define RINGBUF_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "ringbuf_api.h"

#define RB_CACHELINE      64
#define RB_REC_HDR        8     /* bytes of length before each payload */
/* Flags in a record's length word, only ever in [sendpos, resvpos) (L1). */
#define RB_REC_LENT       (1ULL << 63)  /* a loan still being written */
#define RB_REC_SKIP       (1ULL << 62)  /* an aborted loan */
#define RB_REC_FLAGS      (RB_REC_LENT | RB_REC_SKIP)
/* The bytes of the segment's file whose locks say a hold's owner lives (L4):
 * far past its end, where no data is.  A handle's byte is
 * RB_LIVENESS_OFF + its tag, and a tag is below RB_TAG_LIMIT, so that the
 * offset fits an off_t. */
#define RB_LIVENESS_OFF   (1LL << 60)
#define RB_TAG_LIMIT      (1ULL << 59)

/* The parked waiters of one process on one side (see W1-W3 below).  `word`
 * is the whole truth about them, changed only by single atomic operations:
 *   bits 63..32  owner: a random id of the process (RB_SHARED_OWNER for the
 *                last slot, which every process that finds no free slot shares;
 *                0 when the slot is free)
 *   bits 31..16  generation: bumped each time the slot is taken, so that a
 *                waiter struck off by a reaper cannot count itself out of a
 *                later owner's count
 *   bits 15..0   count: parked waiters of that owner (a process with more
 *                takes another slot) */
struct rb_waiter {
    uint64_t word;
    int64_t since_ns;           /* CLOCK_MONOTONIC time a waiter last counted in */
    int32_t pid;                /* the owner's pid, for observers only */
    uint32_t pad;
};

/* One loan or view (L4), changed only under the lock.  A hold whose owner
 * is 0 is free.  Its owner is alive while it holds the byte
 * RB_LIVENESS_OFF + owner of the segment's file with an open-file-description
 * lock (fcntl F_OFD_SETLK) on a description that only its process refers to
 * (not the one the segment is mapped through, which fork children inherit
 * with the mappings), so the kernel drops it when the process dies. */
struct rb_hold {
    uint64_t pos;               /* where its record starts: a byte position
                                 * like sendpos, not an offset */
    uint64_t bytes;             /* its record's ring bytes, header included */
    uint64_t owner;             /* the holder handle's tag; 0: free */
    int32_t pid;                /* the holder's pid, for observers */
    uint32_t kind;              /* RB_HOLD_LOAN, RB_HOLD_VIEW, or RB_HOLD_VOID
                                 * (its owner died before it held anything) */
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
 *       from a dead lock owner, wake every waiter on both sides, every
 *       sender waiting for an acknowledgement (W13) and every loan or view
 *       waiting for a free hold (L4).
 *   W6  The baton.  The sender woken by W5 owes the wake-up to the others: if
 *       it sends and room is left that fits a parked sender (W7), it wakes
 *       the next one; if its own record does not fit, it wakes the next one
 *       before parking again, if the room fits a parked sender and while
 *       send_baton (set to the number of parked senders by each receive that
 *       frees room, less one per such pass) lasts, so two senders that both
 *       do not fit cannot wake each other forever.  A woken sender whose
 *       wait for the lock fails (a stuck peer, a signal) hands the wake-up
 *       on unconditionally, bumping the word first, since it cannot look.
 *   W7  send_min_need is a lower bound on the ring bytes any parked sender
 *       needs: each sender lowers it as it parks, and the first one to park
 *       when no sender is counted resets it.  Nobody is woken, or handed the
 *       baton, for room that fits none of them.
 *   W8  Re-check.  A waiter sleeps at most RB_RECHECK_NS, then retries.  A
 *       wake-up is owed only by a live process, but one can be killed after
 *       its commit and before its wake call, or after being woken and before
 *       acting on it; the re-check bounds what that costs the sleepers.  It
 *       is not how waiters normally wake.
 *   W9  Reap.  Under the lock, at every park and snapshot, and from W4's
 *       count at most once per RB_RECHECK_NS while anyone is counted, a slot
 *       whose stamp is older than RB_REAP_NS is struck off: freed with a
 *       compare-and-swap, its count added to waiters_reaped.  A process's
 *       slot is stamped at every count-in, and a live waiter counts in at
 *       least every RB_RECHECK_NS.  The shared slot is stamped only when
 *       taken: it is struck off RB_REAP_NS later whoever still shares it, so
 *       that a dead sharer's count cannot outlive it; live sharers then go
 *       uncounted (a wake may miss them) until their next re-check counts
 *       them in again.  A waiter of a stopped process that resumes finds
 *       the generation changed and does not count out twice.
 *   W10 A receiver that leaves a message it was woken for (its buffer was too
 *       small and it gave up, or its wait for the lock failed) wakes another
 *       parked receiver (rb_pass_wake, hand_on).
 *   W11 Joiners (no lock): a joiner reads tasks_futex, counts itself in
 *       joinq, then reads the unfinished count (sent - tasks_done); a
 *       task_done that makes it 0 then reads joinq and, if a joiner is
 *       counted, bumps tasks_futex and wakes them all.  All with sequential
 *       consistency, so either the joiner sees 0 or task_done sees the joiner.
 *       joinq is a plain count: a joiner killed while parked leaves it one
 *       too high for good, which costs each later task_done that reaches 0 a
 *       wake system call that wakes nobody, never a lost wake-up.  A close
 *       that drops the queued messages (rb_close_and_drop) counts them done
 *       and wakes the joiners the same way.
 *   W12 A selector (rb_select, rb_select_recv) is a waiter on every side its
 *       cases name at once: it counts itself in on each (W1, one lock at a
 *       time, never two), reads each futex word, and sleeps on all of them
 *       with futex_waitv.  A wake-up on any side may have been meant for it
 *       and no one else, so after it wakes, whatever case it then performs
 *       (or none: timeout, signal), it hands on the wake-up of every side
 *       whose word moved and that it did not serve: to a receiver if a
 *       message is still queued and one is parked (as W10), to a sender
 *       through the baton's budget (W6, W7), so selectors that cannot use a
 *       room cannot pass it back and forth forever.  On an unbuffered channel
 *       with nothing in flight and a receiver counted, the wake-up may be
 *       that receiver's call (W13), which no baton pays for: it calls another
 *       parked sender instead.  That cannot circle: while a receiver is
 *       counted and the channel is empty, a woken sender's send is ready, so
 *       each hand-on follows a waiter that did another case or gave up.  A
 *       receiver counted that never takes (stopped, dead until W9 reaps it, a
 *       task whose loop is held up) makes each hand-on follow an offer taken
 *       back after a re-check period: slow, bounded, never a storm.  The side
 *       it served, if its word moved, it treats as a plain waiter woken
 *       there: a send case passes the baton (W6).  Counted in on a receive
 *       case of an unbuffered channel, it calls a parked sender as a plain
 *       receiver does (W13).
 *   W13 Unbuffered channels hold one message in flight.  Its sender, having
 *       published it, counts itself in on the senders' side and sleeps on
 *       ack_futex until `received` passes its message; every receive on an
 *       unbuffered channel that finds a sender counted bumps ack_futex and
 *       wakes all its sleepers (there is at most one in flight to ack).  A
 *       sender that gives up (deadline, signal, close) takes its message back
 *       under the lock unless a receiver took it first: then it succeeded.
 *       A receiver about to park (a selector's receive case included, W12)
 *       calls one parked sender (call_sender): that may be a selector whose
 *       send case waits for a receiver to be counted in.
 *       A sender that waits elsewhere (a task, W14) does the same in steps:
 *       rb_offer publishes, rb_ack_begin counts it in on ack_futex (or says
 *       taken, or takes back on close), rb_take_back gives up.
 *   W14 A waiter that sleeps elsewhere (an asyncio task) parks in two halves:
 *       rb_wait_begin is W9 and W1 under the lock (or RB_EREADY if its
 *       operation can proceed now); the caller then waits on the word by its
 *       own means (one helper thread per process, in futex_waitv on every
 *       word its tasks await, W8's re-check included), counts out (W3,
 *       rb_wait_leave) and tries its operation again; rb_wait_end then does
 *       W12's hand-on if the word moved and the operation did not happen on
 *       this side, or W6's baton pass if a sender sent.  The operation itself
 *       is done by the task, so a task cancelled while it waits has done
 *       nothing.  It counts out before its attempt, as park_select does, so
 *       that the attempt never counts the task itself as a waiter: a task
 *       that selects a send and a receive on one unbuffered channel would
 *       otherwise offer its message to its own receive wait.  For the same
 *       reason it counts in its receive sides first and tells rb_wait_begin
 *       of a send side on a channel it waits to receive from (self_recv).
 *       As park_select, it counts in on each side of a channel once (a
 *       select may name a channel twice), a senders' side for the smallest
 *       of its messages there: the first to fit, the need W7 must know.
 *
 * Loans and views: zero-copy sends and receives.  A loan is room reserved at
 * the tail for a sender to write its message in place, outside the lock; a
 * view is a message taken from the head for a receiver to read in place.
 * The lock still covers every change of positions and counts; only the
 * holder's own writing or reading of the bytes happens without it.  Four
 * commit words bound the ring's regions, in byte positions:
 *
 *     freepos <= recvpos <= sendpos <= resvpos <= freepos + size
 *     [freepos, recvpos)   records taken by views, held or already released
 *     [recvpos, sendpos)   queued messages (I1..I7, as without loans)
 *     [sendpos, resvpos)   loaned records and the records queued behind them
 *
 *   L1  A record in [sendpos, resvpos) is one of: a loan still being written
 *       (its length word has RB_REC_LENT set), an aborted loan (RB_REC_SKIP),
 *       or a message committed behind a loan (a plain length).  lent_count
 *       counts them.  A send that finds lent_count > 0 writes its record at
 *       resvpos and commits it there: messages are delivered in the order
 *       their room was reserved, whoever finishes writing first.
 *   L2  freepos is the start of the earliest record a live view holds, or
 *       recvpos when none does.  A receive that takes the head while views
 *       are out leaves its bytes in [freepos, recvpos) until freepos passes
 *       them: room is freed in order, once every earlier view is released.
 *   L3  held = (resvpos - sendpos) + (recvpos - freepos) and held_msgs =
 *       lent_count + views out are copies, in the parking line that every
 *       operation reads anyway, of what the commit words and holds say.
 *       Room is size - used - held bytes and dataqsiz - qcount - held_msgs
 *       messages: capacity bounds messages in every state.  held_msgs == 0
 *       is the common path: there resvpos == sendpos and freepos == recvpos,
 *       and send and receive keep them so with one store each on their own
 *       line.
 *   L4  A hold (loan or view) is taken under the lock: its owner's liveness
 *       lock first (a handle takes the lock on its byte at its first hold
 *       and keeps it while it is open, so a hold costs no system call), then
 *       its fields, owner last, then the commit store of what it holds
 *       (resvpos for a loan, recvpos for a view).  It is ended under the
 *       lock: its record first (a loan's length word), then owner set to 0,
 *       the end's commit.  recover() voids a
 *       hold whose commit store never happened; L6 frees it.  At most
 *       RB_HOLDS are out at once.  A caller that finds none free reads
 *       hold_futex under the lock and sleeps on it (W8's re-check included),
 *       counted on neither side, so that no wake-up meant for room or data
 *       goes to it; before it sleeps it hands on (W6, W10) the wake-up it may
 *       have been woken for.  The end of a hold that frees the last one bumps
 *       hold_futex and wakes all its sleepers.
 *   L5  Advance.  Whenever the record at sendpos may have become
 *       publishable (a loan ends, a receive empties the queue), advance()
 *       moves sendpos over the committed records there, waking receivers as
 *       a send does (W4, W5), up to the first record still lent.  An aborted
 *       record at sendpos is stepped over only while the queue is empty:
 *       then recvpos and sendpos move past it together (recvpos first, so
 *       recover() can tell a half-done step and finish it).  Until the queue
 *       drains, what is behind it waits, which receivers draining the queue
 *       always resolve.  A closed channel is not drained while a message
 *       committed before the close waits behind a loan (waits_behind_loan):
 *       receivers wait for that loan's end, which lets it through.
 *   L6  Reclaim.  Whoever waits for room or data while holds are out (and
 *       each W8 re-check), and every rb_stats, tests the liveness locks of
 *       the owners of other handles' holds (fcntl F_OFD_GETLK: a lock cannot
 *       outlive its process, and no pid is compared, so pid reuse cannot
 *       fool it; an owner outside [1, RB_TAG_LIMIT) names no handle and
 *       counts as dead).  A
 *       void hold is freed.  A dead loan is aborted (its record marked
 *       RB_REC_SKIP, or its room given back if it was the last reserved).  A dead view's receive never completed: its
 *       record is queued again at resvpos (behind any loans), without
 *       counting as sent again, once it is the earliest view (then the room
 *       it frees is room enough).  A hold is thus reclaimed within
 *       RB_RECHECK_NS of its holder's death for anyone waiting on it.
 *   L7  Counts.  A send is counted in `sent` when it commits (a loan: when it
 *       is published, whether or not it can be delivered yet); a view is
 *       counted in `received` when it ends.  So sent - received == qcount +
 *       views out + the committed records in [sendpos, resvpos).
 *
 * Memory order.  The lock orders everything written under it.  The commit
 * words are stored with release order and loaded with acquire order where
 * another process relies on what they publish: sendpos (release in
 * publish() and advance(), acquire in recover()), recvpos (release in
 * release_head() and take_view(), acquire in recover()), resvpos and freepos
 * (release where loans and views store them, acquire in recover()), magic (release in rb_create(), acquire in
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
    uint32_t flags;             /* RB_UNBUFFERED, or 0 */

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
    uint64_t resvpos;           /* bytes ever reserved (L1): sendpos plus the
                                 * records after it that loans hold or that
                                 * wait behind a loan; storing it is the
                                 * commit of a loan's reservation */
    uint64_t lent_count;        /* records in [sendpos, resvpos) (L1) */

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
    uint64_t freepos;           /* bytes ever freed (L2): recvpos less the
                                 * records before it that views hold */

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
    uint64_t held;              /* ring bytes outside `used` that loans and
                                 * views hold: (resvpos - sendpos) + (recvpos
                                 * - freepos); 0 on the common path (L3) */
    uint32_t held_msgs;         /* lent_count + views outstanding (L3) */
    uint32_t pad4;
    uint64_t send_min_need;     /* W7 */
    uint32_t send_baton;        /* W6: how many more unfitting passes */
    uint32_t ack_futex;         /* W13: an unbuffered channel's sender waits on
                                 * it for a receiver to take its message */
    int64_t  next_reap_ns;      /* W9: when W4's count next runs a reap */

    /* Line 5: unfinished tasks, for ringbuf.JoinableQueue only.  Every message
     * sent counts as a task, so the unfinished count is sent - tasks_done and
     * a put is counted by its own commit: no death can skew the two.  Changed
     * with atomic operations, without the lock (W11). */
    _Alignas(RB_CACHELINE)
    uint64_t tasks_done;        /* task_done() calls; never more than sent */
    uint32_t joinq;             /* joiners parked (or about to park) */
    uint32_t tasks_futex;       /* joiners sleep on it; bumped when the count reaches 0 */
    uint32_t hold_futex;        /* L4: callers waiting for a free hold sleep
                                 * on it; bumped when a hold frees the last */

    /* Line 6: statistics, written rarely. */
    _Alignas(RB_CACHELINE)
    uint64_t peak_used;         /* the most ring bytes ever in use at once */
    uint64_t peak_qcount;       /* the most messages ever queued at once */
    uint64_t recoveries;        /* times a lock was taken over from a dead owner */
    uint64_t waiters_reaped;    /* parked waiters struck off because they died (W9) */
    uint64_t loans_taken;       /* loans ever taken (rb_loan_begin) */
    uint64_t views_taken;       /* views ever taken (rb_view_begin) */
    uint64_t loans_reclaimed;   /* loans of dead holders aborted (L6) */
    uint64_t views_reclaimed;   /* views of dead holders given back (L6) */

    /* Lines 7 on: who is parked (W1, W3, W9). */
    _Alignas(RB_CACHELINE)
    struct rb_waiter send_waiters[RB_WAITER_SLOTS];
    struct rb_waiter recv_waiters[RB_WAITER_SLOTS];

    /* Then who holds loans and views (L4). */
    struct rb_hold holds[RB_HOLDS];
};

/* A handle's own record of one of its holds (struct rb_chan's mine),
 * process-local.  `state` is the whole truth about the hold while it is
 * out, changed only by single atomic operations: the hold's generation (a
 * count of the process's begins, so that no two holds ever share a name)
 * << 2, RB_MINE_OUT while it is out, RB_MINE_PUBLISH if a loan's release is
 * to publish it.  The begin sets it, under the channel lock; rb_hold_intent
 * and rb_hold_settle change the intent of the hold they name
 * (compare-and-swap), without the lock; the release clears RB_MINE_OUT of
 * the hold it names (compare-and-swap), under the lock, and so takes the
 * intent.  `pos` and `tid` are set with `state`, by the begin, and read with
 * atomic loads by rb_release.  What a release did is left for
 * rb_hold_settle in `done` (the highest generation of the record whose
 * release has finished: each one's end is committed before the next hold
 * of the record begins) and `failed` (noted before the record can be taken
 * again; one word, which a later failure of the record overwrites: see
 * note_failed). */
#define RB_MINE_OUT       2u
#define RB_MINE_PUBLISH   1u
struct rb_mine {
    uint64_t state;
    uint64_t pos;               /* its record's position, for rb_release */
    uint64_t done;              /* the highest generation of this record
                                 * whose release has finished: only raised */
    uint64_t failed;            /* gen << 8 | status of the latest release of
                                 * a loan to publish that failed */
    int32_t tid;                /* the thread that took it (gettid), for RB_ESELF */
    uint32_t pad;
};

/* The two sides of a handle's spin budgets (struct rb_chan's spin_ns). */
#define RB_SIDE_SEND 0
#define RB_SIDE_RECV 1

/* A process-local handle.  The bounds used for every check are copied here at
 * attach time, after validation, so that a peer scribbling on the shared
 * header cannot widen them. */
struct rb_chan {
    struct rb_hdr *hdr;
    uint8_t *data;              /* hdr + RB_DATA_OFF */
    size_t map_len;
    uint64_t dataqsiz;          /* 1 for an unbuffered channel: one message in flight */
    uint64_t size;
    int unbuffered;             /* flags & RB_UNBUFFERED */
    int mirrored;               /* the ring is mapped twice, back to back, so
                                 * that a record is contiguous in memory even
                                 * where it wraps: what loans and views need */
    int fd;                     /* the segment's file, opened again after
                                 * the mapping (own_description), for this
                                 * handle's liveness lock (L4) */
    int own_fd;                 /* fd's lock description is this process's
                                 * alone (a fork child that could not open
                                 * its own neither holds nor reclaims) */
    int live;                   /* this handle holds its liveness lock: taken
                                 * at its first hold, kept while fd is open */
    uint64_t tag;               /* names this handle's holds and its liveness
                                 * byte; random, in [1, RB_TAG_LIMIT), renewed
                                 * in a fork child along with fd's lock
                                 * description */
    int64_t spin_ns[2];         /* how long a blocked call spins before it
                                 * parks, waiting for room (RB_SIDE_SEND) or
                                 * for a message (RB_SIDE_RECV): learn_spin() */
    struct rb_mine mine[RB_HOLDS];  /* this handle's holds, by number */
    dev_t dev;                  /* the segment's file, to tell this process's */
    ino_t ino;                  /* handles of one channel (RB_ESELF) */
    int pins;                   /* holds begun and not yet released: the
                                 * mapping stays while any is (rb_release) */
    int detached;               /* rb_detach came while pins > 0: the last
                                 * release finishes it */
    struct rb_chan *next;       /* every handle of the process, for fork and
                                 * for rb_release to find a payload's handle */
};

#endif
