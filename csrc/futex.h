/*
 * futex.h - the two futex operations ringbuf needs, on words in shared memory.
 *
 * These are shared futexes (no FUTEX_PRIVATE_FLAG): the kernel keys them by the
 * page and offset in the segment, so a sleeper in one process is found by a
 * waker in another that maps the same segment at a different address.
 */
#ifndef RINGBUF_FUTEX_H
#define RINGBUF_FUTEX_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * Sleep while *word == expected, until woken, a signal, or the absolute
 * CLOCK_MONOTONIC deadline `abs` (NULL: no deadline).  FUTEX_WAIT_BITSET is
 * used rather than FUTEX_WAIT because its timeout is absolute: a wait resumed
 * after a signal keeps the caller's deadline instead of starting a new one.
 *
 * Returns 0 when woken (or spuriously), else an errno: EAGAIN when the word
 * had already changed, ETIMEDOUT, EINTR.
 */
static inline int futex_wait(uint32_t *word, uint32_t expected, const struct timespec *abs)
{
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, abs, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    return r == 0 ? 0 : errno;
}

/* Wake at most n sleepers on word; returns how many were woken. */
static inline int futex_wake(uint32_t *word, int n)
{
    long r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}

#define WAKE_ALL INT_MAX

#endif
