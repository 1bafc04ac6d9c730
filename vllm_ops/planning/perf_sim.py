"""vLLM's scheduler, stepped: how requests of one replica share engine steps.

A small event simulation of vLLM's V1 scheduler for fixed input/output lengths (what ``vllm bench
serve`` and ``vllm-ops bench`` send): every step gives each running decode request one token, then
fills the rest of the ``max_num_batched_tokens`` budget with prompt tokens first-come first-served
(chunked prefill, mixed into the decode step). A waiting request is admitted when a slot is free
under ``max_num_seqs`` and the KV cache can hold it: each admitted request is counted to hold
``input_len + output_len`` tokens (``kv_reserve`` "whole") or its mean length over its life,
``input_len + output_len / 2`` ("mean"): vLLM allocates blocks as requests grow and preempts when they
run out, which settles near one of the two by release (planning/versions.py ``kv_reserve``; preemption's
recompute itself is not modelled).
Requests that move together (admitted or finished in the same step) are kept as one cohort, and
runs of pure decode steps are summed in one go, so a plan's prediction costs milliseconds.

Prefix cache: ``prompt_cached`` tokens of every prompt are served from vLLM's prefix cache (whole KV
blocks: shared system prompts, a benchmark that repeats its prompts); only the rest is prefilled, and
it attends to the cached part as well.

Closed loop (``concurrency``): C clients each send the next request when the previous one ends.
Open loop (``rate``): arrivals at exponential gaps from a fixed seed. The first-token time of a
request includes the wait in the queue; TPOT is (last token - first token) / (output_len - 1).
"""
from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from typing import Callable

StepFn = Callable[[int, float, int, float], float]


@dataclass
class SimResult:
    ttft_ms: float | None
    tpot_ms: float | None
    e2e_ms: float | None
    requests: int                 # requests counted in the means
    duration_ms: float            # from the first counted arrival to the last counted finish
    mean_running: float           # time-weighted decode batch
    max_running: int
    limit: int                    # running requests allowed (min of max_num_seqs and KV capacity)
    queued_max: int               # longest wait queue seen
    mean_step_ms: float
    itl_median_ms: float | None = None   # median gap between two tokens of one request (per decode token)


@dataclass
class _Pre:
    n: int
    done: int                     # prompt tokens done over the cohort
    finished: int                 # requests whose prompt is done
    arrival: float
    counted: bool


@dataclass
class _Tally:
    """The sums behind the means (requests sent after the warm-up only)."""
    ttft_sum: float = 0.0
    tpot_sum: float = 0.0
    e2e_sum: float = 0.0
    counted: int = 0
    counted_tpot: int = 0
    first_arrival: float | None = None
    last_finish: float = 0.0

    def first_token(self, n: int, t: float, arrival: float) -> None:
        self.ttft_sum += n * (t - arrival)
        self.counted += n
        if self.first_arrival is None or arrival < self.first_arrival:
            self.first_arrival = arrival

    def result(self, t: float, steps: int, busy_weighted: float, max_running: int, limit: int, queued_max: int,
               gaps: list[tuple[float, float, int]]) -> "SimResult":
        c = self.counted
        return SimResult(
            ttft_ms=self.ttft_sum / c if c else None,
            tpot_ms=self.tpot_sum / self.counted_tpot if self.counted_tpot else None,
            e2e_ms=self.e2e_sum / c if c else None, requests=c,
            duration_ms=max(self.last_finish - (self.first_arrival or 0.0), 1e-9),
            mean_running=busy_weighted / t if t else 0.0, max_running=max_running, limit=limit,
            queued_max=queued_max, mean_step_ms=t / steps if steps else 0.0, itl_median_ms=_weighted_median(gaps))

    def finished(self, n: int, t: float, arrival: float, first: float | None = None, ln: int = 0) -> None:
        if first is not None:
            self.tpot_sum += n * (t - first) / (ln - 1)
            self.counted_tpot += n
        self.e2e_sum += n * (t - arrival)
        self.last_finish = t


def _open_arrivals(rate: float | None, concurrency: int | None, stagger_ms: float, num_requests: int,
                   seed: int) -> deque[float]:
    """Arrival times (ms): exponential gaps at ``rate`` (open loop), or one client every
    ``stagger_ms`` (closed loop started staggered)."""
    arrivals: deque[float] = deque()
    if rate is not None:
        rng = random.Random(seed)
        t_a = 0.0
        for _ in range(num_requests):
            arrivals.append(t_a)
            t_a += rng.expovariate(rate) * 1e3
    if concurrency is not None and stagger_ms > 0:
        for i in range(min(int(concurrency), num_requests)):
            arrivals.append(i * stagger_ms)
    return arrivals


def _prefill(pre: deque[_Pre], budget: int, isl: int, cached: int = 0) -> tuple[int, float]:
    """Fill ``budget`` with prompt tokens, first come first served: (tokens, their summed context).
    ``isl`` is the part of a prompt computed; ``cached`` tokens before it come from the prefix cache."""
    n_tok = 0
    pre_ctx = 0.0
    for c in pre:
        if budget <= 0:
            break
        need = c.n * isl - c.done
        take = min(need, budget)
        if take <= 0:
            continue
        pre_ctx += take * (cached + (c.done % isl + take / 2.0 if c.n == 1 else isl / 2.0))
        c.done += take
        budget -= take
        n_tok += take
    return n_tok, pre_ctx


def _decode_run(step: StepFn, n_dec: int, sum_ctx: float, steps_to_finish: int, t: float,
                next_in: float | None) -> tuple[float, int]:
    """A run of pure decode steps up to the next finish (or the next request the scheduler will see,
    at ``next_in`` ms): (ms, steps)."""
    k = max(steps_to_finish, 1)
    d0 = step(n_dec, sum_ctx, 0, 0.0)
    if next_in is not None:
        k = max(1, min(k, int((next_in - t) / d0) + 1))
    d1 = step(n_dec, sum_ctx + (k - 1) * n_dec, 0, 0.0) if k > 1 else d0
    return (d0 + d1) / 2.0 * k, k


def _admit(pre: deque[_Pre], waiting: deque[list], free: int) -> int:
    """Move waiting requests into prefill while slots are free; how many moved."""
    took = 0
    while free > 0 and waiting:
        w = waiting[0]
        take = min(free, w[0])
        pre.append(_Pre(take, 0, 0, w[1], w[2]))
        took += take
        free -= take
        w[0] -= take
        if w[0] == 0:
            waiting.popleft()
    return took


def _output_lengths(new: int, osl: int, jitter: float, rng: random.Random) -> list[int]:
    if jitter > 0:
        return [max(2, int(round(osl * (1 + jitter * (2 * rng.random() - 1))))) for _ in range(new)]
    return [osl]


class _Frontend:
    """vLLM's API server, one process in front of the scheduler: it takes requests one at a time, ``admit_ms``
    each (parse, tokenise, hand over), so a wave of c requests reaches the scheduler spread over c x admit_ms;
    the wait counts in their TTFT (measured from the client's send). 0: requests reach it at once.
    :meth:`deliver` hands the scheduler what reached it by a time (with async scheduling, the start of the step
    that just ran: the next step was planned then)."""

    def __init__(self, admit_ms: float):
        self.admit_ms = float(admit_ms)
        self.free = 0.0
        self.inbox: deque[tuple] = deque()            # (ready_ms, arrival_ms, counted, requests)

    def send(self, n: int, t: float, counted: bool) -> None:
        """Requests in order of sending: none is handed over before one sent earlier (the inbox stays sorted, so
        :meth:`deliver` can stop at its first request not yet through)."""
        if not self.admit_ms > 0:
            self.free = max(self.free, t)
            self.inbox.append((self.free, t, counted, n))
            return
        for _ in range(n):
            self.free = max(self.free, t) + self.admit_ms
            self.inbox.append((self.free, t, counted, 1))

    def deliver(self, waiting: deque[list], t: float) -> None:
        while self.inbox and self.inbox[0][0] <= t:
            _ready, arrival, counted, n = self.inbox.popleft()
            waiting.append([n, arrival, counted])

    def next_event(self, arrivals: deque[float]) -> float | None:
        """When the scheduler will next see a new request: the next arrival or the next one handed over."""
        times = [x for x in (arrivals[0] if arrivals else None, self.inbox[0][0] if self.inbox else None)
                 if x is not None]
        return min(times) if times else None


KV_RESERVE = ("whole", "mean")


def reserved_tokens(input_len: int, output_len: int, kv_reserve: str = "whole") -> int:
    """The KV cache tokens one running request is counted to hold: its whole length, or its mean length over its
    life (``kv_reserve`` "mean": the prompt and half the output)."""
    if kv_reserve not in KV_RESERVE:
        raise ValueError(f"kv_reserve {kv_reserve!r}: one of {KV_RESERVE}")
    return int(input_len) + (int(output_len) if kv_reserve == "whole" else (int(output_len) + 1) // 2)


def running_limit(input_len: int, output_len: int, max_num_seqs: int, kv_capacity_tokens: int,
                  kv_reserve: str = "whole") -> int:
    """Requests that can run at once: max_num_seqs, and as many as the KV cache holds at
    :func:`reserved_tokens` each (0 when not one request's whole length fits)."""
    if int(kv_capacity_tokens) < int(input_len) + int(output_len):
        return 0
    return min(int(max_num_seqs), int(kv_capacity_tokens) // reserved_tokens(input_len, output_len, kv_reserve))


class _HeldSends:
    """Closed-loop clients that send their next request up to ``jitter_ms`` after the last one ended (uniform, from
    a fixed seed): a load generator's own delays, which spread a wave that fixed lengths would keep together."""

    def __init__(self, jitter_ms: float, seed: int):
        self.jitter_ms = float(jitter_ms)
        self.rng = random.Random(seed + 2)
        self.heap: list[tuple[float, bool]] = []      # (send time, counted)

    def hold(self, n: int, t: float, first: int, warmup: int) -> bool:
        """Hold back ``n`` sends made at ``t`` (request numbers from ``first``); False with no jitter."""
        if not self.jitter_ms > 0:
            return False
        for i in range(n):
            heapq.heappush(self.heap, (t + self.rng.random() * self.jitter_ms, first + i >= warmup))
        return True

    def release(self, t: float, front: "_Frontend") -> int:
        """Send what is due by ``t``, in time order; how many."""
        k = 0
        while self.heap and self.heap[0][0] <= t:
            ts, counted = heapq.heappop(self.heap)
            front.send(1, ts, counted)
            k += 1
        return k

    def next_event(self, other: float | None) -> float | None:
        return other if not self.heap or (other is not None and other <= self.heap[0][0]) else self.heap[0][0]


def _prompt_split(isl: int, prompt_cached: int) -> tuple[int, int]:
    """(cached, prefilled) tokens of a prompt; rounding to whole blocks and keeping the last token
    computed is the caller's rule (performance.cached_prompt_tokens), checked here."""
    cached = int(prompt_cached)
    if cached and not 0 < cached < isl:
        raise ValueError(f"prompt_cached {cached} outside 0..{isl - 1}")
    return cached, isl - cached


class _Run:
    """The state of one :func:`simulate` run and its moves: requests reaching the scheduler, a run of pure decode
    steps, a step with prompt tokens, the first tokens it gives and the requests that end."""

    def __init__(self, step: StepFn, isl: int, osl: int, cached: int, isl_c: int, limit: int, concurrency: int | None,
                 num_requests: int, warmup: int, osl_jitter: float, seed: int, plan_ahead: bool,
                 front: _Frontend, held: _HeldSends, arrivals: deque[float]):
        self.step, self.isl, self.osl, self.cached, self.isl_c, self.limit = step, isl, osl, cached, isl_c, limit
        self.concurrency, self.num_requests, self.warmup = concurrency, num_requests, warmup
        self.osl_jitter, self.plan_ahead, self.front, self.held, self.arrivals = osl_jitter, plan_ahead, front, held, arrivals
        self.jrng = random.Random(seed + 1)
        self.waiting: deque[list] = deque()          # [n, arrival_ms, counted]
        self.pre: deque[_Pre] = deque()
        self.dec: list[tuple] = []                   # heap of (finish_step, seq, n, first_ms, counted, arrival, osl)
        self.seq = self.sent = self.n_wait = 0
        self.last_dt = 0.0                           # the step that just ran (plan_ahead's cut-off)
        self.t = 0.0
        self.stepno = self.n_dec = self.n_pre_req = self.done = self.steps_run = self.max_running = 0
        self.queued_max = 0
        self.sum_ctx = self.busy_weighted = 0.0
        self.tally = _Tally()
        self.gaps: list[tuple[float, float, int]] = []   # (ms per step, decode tokens, steps): ITL median, trace

    def send(self, n: int, t_now: float) -> None:
        """Closed-loop clients send ``n`` requests at ``t_now`` (held back by their jitter, if any)."""
        n = min(n, self.num_requests - self.sent)
        if n > 0 and not self.held.hold(n, t_now, self.sent, self.warmup):
            self.front.send(n, t_now, self.sent >= self.warmup)
            self.n_wait += n
        self.sent += max(n, 0)

    def intake(self) -> float | None:
        """Open-loop arrivals and held sends due by now reach the API server, what it has handed over joins the
        queue, and the queue moves into prefill while slots are free; when the scheduler will next see a request."""
        t, front, arrivals = self.t, self.front, self.arrivals
        while arrivals and arrivals[0] <= t:
            front.send(1, arrivals.popleft(), self.sent >= self.warmup)
            self.sent += 1
            self.n_wait += 1
        self.n_wait += self.held.release(t, front)
        front.deliver(self.waiting, t - self.last_dt if self.plan_ahead else t)
        took = _admit(self.pre, self.waiting, self.limit - self.n_dec - self.n_pre_req)
        self.n_pre_req += took
        self.n_wait -= took
        if self.waiting:
            self.queued_max = max(self.queued_max, self.n_wait)
        return self.held.next_event(front.next_event(arrivals))

    def decode_run(self, nxt: float | None) -> None:
        """Pure decode steps up to the next finish or the next request the scheduler sees."""
        n_dec = self.n_dec
        dt, k = _decode_run(self.step, n_dec, self.sum_ctx, self.dec[0][0] - self.stepno, self.t, nxt)
        self.last_dt = dt / k
        self.t += dt
        self.busy_weighted += n_dec * dt
        self.gaps.append((dt / k, n_dec * k, k))
        self.stepno += k
        self.steps_run += k
        self.sum_ctx += n_dec * k

    def prefill_step(self, n_tok: int, pre_ctx: float) -> None:
        """One step with ``n_tok`` prompt tokens beside the running decodes."""
        n_dec = self.n_dec
        dt = self.last_dt = self.step(n_dec, self.sum_ctx, n_tok, pre_ctx)
        self.t += dt
        self.busy_weighted += n_dec * dt
        self.gaps.append((dt, n_dec, 1))
        self.stepno += 1
        self.steps_run += 1
        self.sum_ctx += n_dec

    def first_tokens(self) -> None:
        """Prompts finished in the step that just ran: their first token now, then decode (or done, one token)."""
        pre, isl_c, t = self.pre, self.isl_c, self.t
        while pre:
            c = pre[0]
            fin = min(c.done // isl_c, c.n) if isl_c else c.n
            new = fin - c.finished
            if new > 0:
                c.finished = fin
                self.n_pre_req -= new
                if c.counted:
                    self.tally.first_token(new, t, c.arrival)
                if self.osl <= 1:
                    self.done += new
                    if c.counted:
                        self.tally.finished(new, t, c.arrival)
                    if self.concurrency is not None:
                        self.send(new, t)
                else:
                    self._start_decode(c, new)
            if c.finished >= c.n:
                pre.popleft()
            else:
                break

    def _start_decode(self, c: _Pre, new: int) -> None:
        lens = _output_lengths(new, self.osl, self.osl_jitter, self.jrng)
        for ln in lens:
            m = new if len(lens) == 1 else 1
            self.seq += 1
            heapq.heappush(self.dec, (self.stepno + ln - 1, self.seq, m, self.t, c.counted, c.arrival, ln))
        self.n_dec += new
        self.sum_ctx += new * (self.isl + 1)

    def finish_due(self) -> None:
        """Requests whose last token came in this step end; closed-loop clients send their next."""
        dec, t = self.dec, self.t
        while dec and dec[0][0] <= self.stepno:
            _, _, n, first, cnt, arr, ln = heapq.heappop(dec)
            self.n_dec -= n
            self.sum_ctx -= n * (self.isl + ln)
            self.done += n
            if cnt:
                self.tally.finished(n, t, arr, first, ln)
            if self.concurrency is not None:
                self.send(n, t)


def simulate(step: StepFn, *, input_len: int, output_len: int, max_num_seqs: int, max_batched_tokens: int,
             kv_capacity_tokens: int, concurrency: int | None = None, rate: float | None = None,
             num_requests: int = 0, warmup: int = 0, seed: int = 0, stagger_ms: float = 0.0,
             osl_jitter: float = 0.0, prompt_cached: int = 0, admit_ms: float = 0.0, plan_ahead: bool = False,
             send_jitter_ms: float = 0.0, kv_reserve: str = "whole", max_steps: int = 2_000_000,
             trace: list[tuple[float, int]] | None = None) -> SimResult:
    """Run ``num_requests`` requests; the first ``warmup`` sent are left out of the means. Closed loop: the C clients
    start together (``stagger_ms`` 0: a benchmark's first wave) or one every ``stagger_ms`` (the steady state).
    ``osl_jitter`` j > 0: output lengths uniform over ``output_len * [1-j, 1+j]`` (same mean: requests that started
    together drift apart), 0: exactly ``output_len``. ``send_jitter_ms``: a closed-loop client's next request up to
    this late (:class:`_HeldSends`). ``admit_ms``: the API server's serial cost per request (:class:`_Frontend`).
    ``plan_ahead``: async scheduling plans step k+1 as step k starts (a request arriving mid-step waits one more).
    ``kv_reserve``: what a running request is counted to hold in the KV cache (:func:`reserved_tokens`).
    ``trace``: a list that gets (ms per step, steps) for every step or run of decode steps."""
    isl, osl = int(input_len), int(output_len)
    cached, isl_c = _prompt_split(isl, prompt_cached)
    limit = running_limit(isl, osl, max_num_seqs, kv_capacity_tokens, kv_reserve)
    if limit < 1:
        raise ValueError("not even one request fits")
    budget_cap = int(max_batched_tokens)
    r = _Run(step, isl, osl, cached, isl_c, limit, concurrency, num_requests, warmup, osl_jitter, seed, plan_ahead,
             _Frontend(admit_ms), _HeldSends(send_jitter_ms, seed),
             _open_arrivals(rate, concurrency, stagger_ms, num_requests, seed))
    if concurrency is not None and not stagger_ms > 0:
        r.send(int(concurrency), 0.0)
    while r.done < num_requests and r.steps_run < max_steps:
        nxt = r.intake()
        if not r.pre and not r.n_dec:
            r.last_dt = 0.0                         # idle: the next step is planned when work arrives
            if nxt is not None:
                r.t = max(r.t, nxt)
                continue
            break                                   # nothing left to run
        n_tok, pre_ctx = _prefill(r.pre, max(budget_cap - r.n_dec, 0), isl_c, cached)
        if n_tok == 0 and r.n_dec:
            r.decode_run(nxt)
        else:
            r.prefill_step(n_tok, pre_ctx)
            r.first_tokens()
        r.max_running = max(r.max_running, r.n_dec + r.n_pre_req)
        r.finish_due()
    if trace is not None:
        trace.extend((ms, k) for ms, _tok, k in r.gaps)
    return r.tally.result(r.t, r.stepno, r.busy_weighted, r.max_running, limit, r.queued_max, r.gaps)


def _weighted_median(pairs: list[tuple[float, float, int]]) -> float | None:
    total = sum(w for _v, w, _k in pairs)
    if not total:
        return None
    acc = 0.0
    for v, w, _k in sorted(pairs):
        acc += w
        if acc >= total / 2:
            return v
    return None  # pragma: no cover
