"""cffi build script: compiles csrc/ into the private module ``ringbuf._rb``.

Out-of-line API mode: the C compiler sees ``ringbuf.h`` itself, so the cdef
below lists only what Python calls and lets the compiler supply the values
(``...``) instead of typing them twice.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
#define RB_FOREVER ...
#define RB_MIN_SIZE ...
#define RB_MAX_SIZE ...
#define RB_MAX_CAPACITY ...
#define RB_NAME_MAX ...
#define RB_WAITER_SLOTS ...
#define RB_DATA_OFF ...
#define RB_LAYOUT_VERSION ...

enum rb_status {
    RB_OK, RB_ETIMEDOUT, RB_EINTR, RB_ECLOSED, RB_ETOOBIG, RB_ESMALLBUF,
    RB_ECORRUPT, RB_EINCOMPAT, RB_EINVAL, RB_ESYS, RB_ECHANGED, RB_ERECOVERED, ...
};

struct rb_chan;

struct rb_iov {
    const void *base;
    uint64_t len;
};

struct rb_waiter {
    uint64_t word;
    int64_t since_ns;
    int32_t pid;
    ...;
};

struct rb_parked {
    int32_t pid;
    uint32_t count;
};

/* Only the fields Python reads by offset (tests, observers); the compiler
 * supplies the layout. */
struct rb_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t data_off;
    uint64_t dataqsiz;
    uint64_t size;
    uint32_t closed;
    uint64_t qcount;
    uint64_t used;
    uint64_t sendpos;
    uint64_t sendx;
    uint64_t recvpos;
    uint64_t recvx;
    uint64_t send_mask;
    uint64_t recv_mask;
    uint64_t tasks_done;
    struct rb_waiter send_waiters[...];
    struct rb_waiter recv_waiters[...];
    ...;
};

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
    ...;
};

int rb_create(const char *name, uint64_t capacity, uint64_t size, uint32_t mode, struct rb_chan **out);
int rb_attach(const char *name, struct rb_chan **out);
void rb_detach(struct rb_chan *ch);
int rb_unlink(const char *name);
int rb_send(struct rb_chan *ch, const void *buf, uint64_t len, int64_t deadline_ns);
int rb_sendv(struct rb_chan *ch, const struct rb_iov *iov, uint32_t n, int64_t deadline_ns);
int rb_send_batch(struct rb_chan *ch, const void *data, const uint64_t *lens, uint64_t n, uint64_t *sent_out,
                  int64_t deadline_ns);
int64_t rb_recv(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *need_out, int64_t deadline_ns);
int64_t rb_recv_batch(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *lens, uint64_t max_items,
                      uint64_t *need_out, int64_t deadline_ns);
int64_t rb_peek(struct rb_chan *ch, void *buf, uint64_t cap, uint64_t *token_out, int64_t deadline_ns);
int rb_recv_at(struct rb_chan *ch, uint64_t token, uint64_t skip, void *dst, uint64_t n);
void rb_pass_wake(struct rb_chan *ch);
int rb_task_done(struct rb_chan *ch);
int rb_tasks_join(struct rb_chan *ch, int64_t deadline_ns);
int rb_close(struct rb_chan *ch);
int rb_stats(struct rb_chan *ch, struct rb_stats *out);
void rb_observe(struct rb_chan *ch, struct rb_stats *out);
int rb_parked(struct rb_chan *ch, int side, struct rb_parked *out, int max);
int rb_check(struct rb_chan *ch);
uint64_t rb_max_message(struct rb_chan *ch);
int rb_debug_hold_lock(struct rb_chan *ch);
enum rb_crash_point { RB_CRASH_SEND_BEFORE_COMMIT, RB_CRASH_SEND_AFTER_COMMIT, RB_CRASH_RECV_BEFORE_COMMIT,
                      RB_CRASH_RECV_AFTER_COMMIT, RB_CRASH_PARK_COUNTED, RB_CRASH_PARK_WOKEN, ... };
void rb_debug_crash_at(int point);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "ringbuf._rb",
    '#include "ringbuf.h"',
    # setuptools wants source paths relative to setup.py.
    sources=["csrc/ringbuf.c"],
    include_dirs=[HERE],
    depends=[os.path.join("csrc", n) for n in ("ringbuf.h", "futex.h")],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra"],
    libraries=["rt", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
