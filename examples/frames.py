"""Large arrays without copying them through the lock: a camera process
writes each frame straight into the ring (a loan), and an analysis process
reads it where it lies (a view).

The channel stays what it always is: bounded (at most 4 frames in it, so the
camera waits when analysis falls behind), ordered, and safe when a process
dies. Only the writing and the reading of the frames' bytes happen outside
the lock.

    python examples/frames.py
"""

from __future__ import annotations

import multiprocessing

import numpy as np

import ringbuf

SHAPE = (480, 640, 3)  # 900 KiB a frame
FRAMES = 200


def camera(frames: ringbuf.Channel) -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, size=SHAPE, dtype=np.uint8)
    for i in range(FRAMES):
        with frames.loan_array(SHAPE, np.uint8) as frame:  # waits for room, like send
            np.copyto(frame, scene)                       # the one copy, outside the lock
            frame[0, 0, 0] = i % 256                      # a frame number, to check the order
        # published here: the analysis process can read it now
    frames.close()


def main() -> None:
    ctx = multiprocessing.get_context("fork")
    frames = ringbuf.Channel(capacity=4, size=4 * 1024 * 1024)
    proc = ctx.Process(target=camera, args=(frames,))
    proc.start()
    try:
        numbers, dark = [], 0
        while True:
            try:
                with frames.recv_view() as frame:  # a read-only view of the ring
                    numbers.append(int(frame[0, 0, 0]))
                    dark += int((frame[1:] < 16).sum())  # the analysis reads the frame in place
            except ringbuf.Closed:
                break
            del frame  # its room is freed once nothing made from it is left
        proc.join()
        stats = frames.stats()
        print(f"frames: {len(numbers)} in order: {numbers == [i % 256 for i in range(FRAMES)]}")
        print(f"dark pixels counted: {dark}")
        print(f"loans {stats.loans_taken}, views {stats.views_taken}, still held: {stats.loans + stats.views}")
        print(f"most frames in the ring at once: {stats.peak_qcount} (capacity {frames.capacity})")
    finally:
        frames.close()
        frames.unlink()


if __name__ == "__main__":
    main()
