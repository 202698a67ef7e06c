"""One timing routine for the whole workbench: warm, on a stated thread count, and, when two
networks are compared, interleaved, with the spread of the ratio stated.

Why. A forward pass timed alone is biased by when it is timed. The first network timed in a
process runs cold: its first calls allocate buffers, the kernels (oneDNN, MKL) choose and build
their code, the thread pool starts. And a machine shared with other work drifts: two medians
taken a few seconds apart can differ by more than a pruned network gains. So a "speedup" made
of two separately taken medians may be nothing but the order of measurement (a lossless
re-encoding once came out "1.31x faster" than the network it copies).

What this module does about it:

- ``time_model``: ``WARMUP`` forward passes first, not counted (first-call allocation and
  kernel selection are excluded), then at least ``MIN_BLOCKS`` blocks of calls, each about a
  fifth of ``min_run_time``: the median time per call and its interquartile range.
  ``bench latency_zoo`` checks it against ``torch.utils.benchmark``'s ``blocked_autorange``.
- ``compare(a, b)``: both networks warmed alike, then ``pairs`` pairs of short blocks, A then
  B, then B then A, and so on, so that drift and load hit both alike and neither always goes
  first. A block is ``block_time`` seconds of calls (at least ``BLOCK_CALLS``), each call timed
  on its own, and the block's figure is its median call: a call that the scheduler interrupted
  (another process took the core) does not count, however long the block. Each pair gives one
  ratio, time of B over time of A ("A is x times faster"); the result is their median and
  interquartile range. When that range includes 1 the result is *no measurable change*, shown
  in words, not as a number; so is a median within ``TOLERANCE`` of 1: differences that small
  come with where the weights lie in memory: an identical copy of a network can run a few
  percent faster or slower than its original. When the two networks' weights together about
  fill a core's cache it can be much more (probably where their pages fall decides how often
  they evict each other), so the tests of this routine compare a network with itself.
  ``compare_calls`` does the same for any two functions (a dense and a sparse matmul, two
  runtimes). ``benchmark.Timer`` does not time these blocks: its ``timeit`` adds two untimed
  calls to each, and a block's mean carries every interruption, so that on a busy machine a
  shorter block looked faster, and a network came out 2x faster than itself.
- The thread count is fixed for the measurement (``torch.set_num_threads``, restored after) and
  recorded in every result, with the machine's 1-minute load average and number of CPUs, so that
  a reader can discount a figure taken on a busy machine.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

WARMUP = 5          # forward passes before any timing, not counted
PAIRS = 30          # A/B pairs of blocks in a comparison
BLOCK_TIME = 0.02   # seconds per block, and at least
BLOCK_CALLS = 5     # calls per block, so that its median call is an uninterrupted one
MIN_BLOCKS = 5      # blocks behind a time_model figure, so that its spread means something
TOLERANCE = 0.05    # a ratio within 5% of 1 is no measurable change, whatever its spread


@dataclass
class Timing:
    """One network's time per forward pass (ms): median and interquartile range."""
    median_ms: float
    iqr_ms: float
    batch: int
    threads: int
    warmup: int
    load_avg: float     # the machine's 1-minute load average when the timing ended
    cpus: int

    def row(self) -> dict:
        return asdict(self)


@dataclass
class Comparison:
    """How many times faster A runs than B (time of B / time of A: above 1, A is faster),
    the median of the per-pair ratios and their interquartile range ``spread``."""
    speedup: float
    spread: tuple[float, float]
    significant: bool   # False when the spread includes 1 or the ratio is within TOLERANCE
    a_ms: float         # median call of each (median over its blocks), from the same run
    b_ms: float
    batch: int | None   # images per call (None: not a network's forward pass)
    threads: int
    pairs: int
    warmup: int
    load_avg: float
    cpus: int

    @property
    def display(self) -> str:
        lo, hi = self.spread
        if not self.significant:
            within = "" if lo <= 1 <= hi else f", within {TOLERANCE:.0%}"
            return f"no measurable change (IQR {lo:.2f}-{hi:.2f}{within})"
        if self.speedup > 1:
            return f"{self.speedup:.2f}x faster (IQR {lo:.2f}-{hi:.2f})"
        # "0.12x slower" reads as nearly the same speed: say how many times slower it is
        return f"{1 / self.speedup:.2f}x slower (speedup {self.speedup:.2f}, IQR {lo:.2f}-{hi:.2f})"

    def row(self) -> dict:
        return {**asdict(self), "spread": list(self.spread), "display": self.display}


@contextmanager
def _threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _call_times(call, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


@contextmanager
def _eval(*models: nn.Module):
    """Eval mode and no autograd for the measurement; each model's mode restored after."""
    modes = [m.training for m in models]
    try:
        with torch.no_grad():
            yield [m.eval() for m in models]
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _block(call, number: int) -> float:
    """Seconds per call of ``number`` calls of ``call`` timed together."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def _input(input_shape, batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))


def time_model(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
               threads: int | None = None, min_run_time: float = 0.3,
               warmup: int = WARMUP, seed: int = 0) -> Timing:
    """Warm time per forward pass of ``model`` at ``batch`` on ``threads`` threads (default:
    torch's current setting): ``warmup`` passes (at least one), whose fastest sets the block
    size, about ``min_run_time / MIN_BLOCKS`` seconds of calls (at least one call); then blocks
    until there are ``MIN_BLOCKS`` and ``min_run_time`` is spent. The median of the blocks'
    times per call, and their interquartile range."""
    threads = threads or torch.get_num_threads()
    x = _input(input_shape, batch, seed)
    with _eval(model) as (net,), _threads(threads):
        call = lambda: net(x)          # noqa: E731
        # Our own blocks, not benchmark.Timer's: blocked_autorange grows a block tenfold until
        # the timer's overhead is 1e-4 of it, so a network of a few ms could get blocks of ten
        # calls, and five such blocks took up to ten times the min_run_time asked for; each
        # Timer.timeit also adds two untimed calls (the live widgets time a network per move).
        # The fastest warm-up call sizes the blocks: the first one is cold.
        warmup = max(warmup, 1)
        number = max(1, round(min_run_time / MIN_BLOCKS / min(_call_times(call, warmup))))
        times, spent = [], 0.0
        while len(times) < MIN_BLOCKS or spent < min_run_time:
            times.append(_block(call, number))
            spent += times[-1] * number
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(median * 1e3, (q3 - q1) * 1e3, batch, threads, warmup,
                  round(os.getloadavg()[0], 2), os.cpu_count())


def compare(model_a: nn.Module, model_b: nn.Module, input_shape: tuple[int, ...],
            batch: int = 1, threads: int = 1, pairs: int = PAIRS,
            block_time: float = BLOCK_TIME, warmup: int = WARMUP, seed: int = 0) -> Comparison:
    """How many times faster ``model_a`` runs than ``model_b`` on the same input of ``batch``
    images, timed interleaved in this process (``compare_calls``). One thread by default: on
    cores shared with other work, several threads mostly wait for each other."""
    x = _input(input_shape, batch, seed)
    with _eval(model_a, model_b) as (a, b):
        return compare_calls(lambda: a(x), lambda: b(x), threads, pairs, block_time, warmup,
                             batch)


def compare_calls(call_a, call_b, threads: int = 1, pairs: int = PAIRS,
                  block_time: float = BLOCK_TIME, warmup: int = WARMUP,
                  batch: int | None = None) -> Comparison:
    """How many times faster ``call_a()`` runs than ``call_b()`` (any two functions without
    arguments, e.g. a dense and a sparse matmul): ``warmup`` calls of each, then ``pairs``
    pairs of blocks (A B, B A, A B, ...), each block's median call; the per-pair ratios'
    median and interquartile range."""
    if pairs < 4:
        raise ValueError(f"pairs={pairs}; allowed: at least 4 (a spread needs several pairs)")
    with _threads(threads):
        # the warm-up calls also tell how many calls make a block of ``block_time``
        calls = [max(BLOCK_CALLS, math.ceil(block_time / statistics.median(warm)))
                 for warm in (_call_times(c, warmup) for c in (call_a, call_b))]
        times = [[], []]
        for i in range(pairs):
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                times[k].append(statistics.median(_call_times((call_a, call_b)[k], calls[k])))
    ratios = [b / a for a, b in zip(*times)]
    lo, mid, hi = statistics.quantiles(ratios, n=4, method="inclusive")
    return Comparison(speedup=round(mid, 3), spread=(round(lo, 3), round(hi, 3)),
                      significant=not lo <= 1 <= hi
                      and abs(math.log(mid)) > math.log(1 + TOLERANCE),
                      a_ms=statistics.median(times[0]) * 1e3,
                      b_ms=statistics.median(times[1]) * 1e3, batch=batch, threads=threads,
                      pairs=pairs, warmup=warmup, load_avg=round(os.getloadavg()[0], 2),
                      cpus=os.cpu_count())
