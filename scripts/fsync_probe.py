#!/usr/bin/env python3
"""fdatasync cost on one filesystem, the way the WAL pays it: a 160-byte write, then fdatasync.

    scripts/fsync_probe.py [DIR] [--parallel N] [--iterations K]

Prints p50/p99 for appending to a growing file and for overwriting a preallocated, zero-filled
one (no file-size change to journal), each in N processes at once (the replicas of a local
cluster share one disk). DIR defaults to the system temp dir, where the benchmark's nodes live.
"""
import argparse
import multiprocessing
import os
import tempfile
import time


def probe(args):
    directory, prealloc, iterations = args
    path = os.path.join(directory, f"probe-{os.getpid()}-{int(prealloc)}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        if prealloc:
            os.write(fd, b"\0" * (4 << 20))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        times = []
        for _ in range(iterations):
            os.write(fd, b"x" * 160)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=tempfile.gettempdir())
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=400)
    args = parser.parse_args()
    for prealloc in (False, True):
        with multiprocessing.Pool(args.parallel) as pool:
            jobs = [(args.dir, prealloc, args.iterations)] * args.parallel
            results = pool.map(probe, jobs)
        kind = "preallocated" if prealloc else "append"
        for p50, p99 in results:
            print(f"{kind:>12}  x{args.parallel}  p50 {p50:.3f} ms  p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
