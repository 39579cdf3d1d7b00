"""The ``vllm_v1`` scheduler: vLLM V1's ``Scheduler.schedule`` (vllm/v1/core/sched/scheduler.py).

Every request has ``num_computed_tokens`` catching up with ``num_tokens`` = prompt + outputs.
One engine step starting at time ``t``:

1. arrivals with ``arrival_time <= t`` join the waiting queue (FCFS, or a heap by
   ``(priority, arrival)`` under ``policy: priority``);
2. **running first**, in order of entry into running, under one token budget
   ``B = max_num_batched_tokens``: a decoding request takes 1 token, a request in chunked prefill
   ``min(remaining, budget)``; the loop stops when the budget is spent. Its KV blocks are
   allocated chunk by chunk (``KVCacheManager.allocate_slots``); when they do not fit, the victim
   (FCFS: the last request to enter running, ``self.running.pop()``; priority: the largest
   ``(priority, arrival)``) is preempted by recompute: its blocks are freed,
   ``num_computed_tokens = 0``, and it goes back to the head of the waiting queue
   (``_preempt_request``); if the victim is the request itself, the loop stops;
3. **waiting next**, only if nothing was preempted in this step, while the budget lasts and
   fewer than ``max_num_seqs`` requests run: the head's prefix-cache hit is looked up, it takes
   ``min(num_tokens - cached, budget)`` tokens (with chunked prefill; otherwise it must fit whole),
   and it is admitted only if its **whole** sequence fits in the free blocks
   (``scheduler_reserve_full_isl``); the first request that does not fit stops admission;
4. the step lasts ``BatchTimeModel.step_time(prefill, decode, kv, prefill_attention)``; a request
   whose prefill (prompt, or prompt + outputs after a preemption) completes samples its next
   output token at the end of the step, so ``max_tokens = D`` takes the prefill step plus D - 1
   decode steps; a request finishes at the end of the step that samples its D-th token.

``num_gpu_blocks = N`` gives N - 1 usable blocks (vLLM's null block). Prefix caching lives in
:class:`~fluidserve.sim.kv_cache.KVCacheManager`.

The hot loop keeps the previous engine's trick: while every decoding request fits the budget and
its next block fits the cache (and no priority policy), the step does no Python work per running
request (block growth counted per residue class of ``step - num_computed`` modulo the block size,
KV sum kept incrementally, completions in a step calendar). Otherwise it walks the running list
as vLLM does. With threshold-free chunking at most one request is in chunked prefill, and it is
the last one in running.
"""

from __future__ import annotations

import math
from collections import deque

from fluidserve.batch_time import BatchTimeModel
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.kv_cache import KVCacheManager
from fluidserve.sim.policies import V1_POLICIES
from fluidserve.sim.records import ABORTED, DECODING, DONE, PREFILLING, REJECTED, WAITING, StepRecord


class VllmV1Engine(ReplicaEngine):
    """A replica under vLLM V1 scheduling (see the module docstring for the rules).

    Args:
        batch_time: the step-time model.
        num_gpu_blocks: KV blocks including the null block (N - 1 hold KV).
        block_size: tokens per block.
        B: ``max_num_batched_tokens``, the token budget of one step.
        max_num_seqs: most requests in running.
        policy: ``"FCFS"`` or ``"priority"`` (vLLM's ``--scheduling-policy``).
        chunked_prefill: vLLM's ``enable_chunked_prefill`` (on in V1).
        enable_prefix_caching: vLLM's default is on.
        record_events, snapshot_every, replica, max_steps: as in the seed's engine.
    """

    scheduler = "vllm_v1"

    def __init__(
        self,
        batch_time: BatchTimeModel,
        num_gpu_blocks: int | None = None,
        block_size: int = 16,
        B: int = 2048,
        max_num_seqs: int = 256,
        policy: str = "FCFS",
        chunked_prefill: bool = True,
        enable_prefix_caching: bool = True,
        record_events: bool = True,
        snapshot_every: int = 1,
        replica: int = 0,
        max_steps: int | None = None,
        M_total: int | None = None,
        scheduler: str = "vllm_v1",
    ) -> None:
        if num_gpu_blocks is None:
            if M_total is None:
                raise ValueError("give num_gpu_blocks or M_total")
            num_gpu_blocks = int(M_total) // int(block_size)
        if num_gpu_blocks < 2:
            raise ValueError(f"num_gpu_blocks must be >= 2 (one is vLLM's null block), got {num_gpu_blocks}")
        if policy not in V1_POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(V1_POLICIES)}")
        self.bt = batch_time
        self.bs = int(block_size)
        self.num_gpu_blocks = int(num_gpu_blocks)
        self.total_blocks = self.num_gpu_blocks - 1
        self.M_total = self.total_blocks * self.bs
        self.B = int(B)
        self.max_num_seqs = int(max_num_seqs)
        self.policy = policy
        self.chunked = bool(chunked_prefill)
        self.record_events = bool(record_events)
        self.snapshot_every = int(snapshot_every)
        self.replica = int(replica)
        self.max_steps = max_steps

        self.gid: list[int] = []
        self.arr: list[float] = []
        self.P0: list[int] = []
        self.D0: list[int] = []
        self.prio: list[int] = []
        self.pgroup: list[int] = []
        self.plen: list[int] = []
        self.state: list[int] = []
        self.c: list[int] = []  # num_computed_tokens (decoding: at s0)
        self.o: list[int] = []  # output tokens (decoding: at s0)
        self.s0: list[int] = []  # step at which the current decode period began
        self.nb: list[int] = []  # blocks held (not decoding)
        self.enter_t: list[float] = []
        self.ft_step: list[int] = []
        self.comp_t: list[float] = []
        self.swaps: list[int] = []
        self.preempts: list[int] = []
        self.cached_tokens: list[int] = []  # prefix-cache hit tokens at first admission
        self.reject_reason: dict[int, str] = {}
        self.prefilled: set[int] = set()

        self.kv = KVCacheManager(self.num_gpu_blocks, self.bs, enable_prefix_caching, self.pgroup, self.plen)
        self.pending: deque[int] = deque()
        self.sched_policy = V1_POLICIES[policy]()
        self.waiting = self.sched_policy.waiting_queue(self.prio, self.arr)
        self.running: dict[int, None] = {}
        self.partial = -1  # the request in chunked prefill (always the last in running), or -1
        self.n_dec = 0
        self.kv_base = 0  # sum over decoding of (c0 - s0)
        self.cnt = [0] * self.bs  # decoding requests per residue (s0 - c0) mod bs
        self.calendar: dict[int, list[int]] = {}

        self.t = 0.0
        self.step_index = 0
        self.n_done = 0
        self.n_rejected = 0
        self.step_end: list[float] = []
        self.snapshots: list[tuple] = []
        self.events: list[tuple] = []
        self.mem_events: list[tuple] = []
        self._one = False
        self._record: StepRecord | None = None
        self._walk_always = False  # tests: take vLLM's request-by-request loop in every step

    # ------------------------------------------------------------------ input
    def submit(self, gid: int, arrival_s: float, prefill_tokens: int, decode_tokens: int, priority: int = 0,
               prefilled: bool = False, prefix_group: int = -1, prefix_length: int = 0) -> int:
        i = len(self.gid)
        if prefilled:
            self.prefilled.add(i)
        self.gid.append(gid)
        self.arr.append(float(arrival_s))
        self.P0.append(int(prefill_tokens))
        self.D0.append(int(decode_tokens))
        self.prio.append(int(priority))
        self.pgroup.append(int(prefix_group))
        self.plen.append(min(int(prefix_length), int(prefill_tokens)))
        self.state.append(WAITING)
        self.c.append(0)
        self.o.append(0)
        self.s0.append(0)
        self.nb.append(0)
        self.enter_t.append(math.nan)
        self.ft_step.append(-1)
        self.comp_t.append(math.nan)
        self.swaps.append(0)
        self.preempts.append(0)
        self.cached_tokens.append(0)
        self.pending.append(i)
        return i

    # ------------------------------------------------------------------ views
    @property
    def n_wait(self) -> int:
        return len(self.waiting)

    @property
    def n_running(self) -> int:
        return len(self.running)

    n_swapped = 0

    @property
    def used(self) -> int:
        return self.kv.used

    def output_tokens(self, handle: int) -> int:
        i = handle
        if self.state[i] == DECODING:
            return self.o[i] + max(0, self.step_index - self.s0[i])
        return self.o[i]

    def prefix_cache_hit_rate(self) -> float:
        return self.kv.hit_rate()

    # ------------------------------------------------------------ helpers
    def _reject_reason(self, P: int, D: int) -> str | None:
        need = -(-(P + D - 1) // self.bs)  # the last sampled token never enters the KV cache
        if need > self.total_blocks:
            return f"needs {need} KV blocks ({P + D - 1} tokens) > total {self.total_blocks} blocks"
        if not self.chunked and P + D - 1 > self.B:
            # vLLM needs max_num_batched_tokens >= max_model_len without chunked prefill: a
            # preempted request re-prefills prompt + outputs in one step
            return f"{P + D - 1} tokens > token budget B={self.B} (chunked prefill off)"
        return None

    def _arrive(self, i: int) -> None:
        reason = self._reject_reason(self.P0[i], self.D0[i])
        if reason is not None:
            self.state[i] = REJECTED
            self.reject_reason[i] = reason
            self.n_rejected += 1
            if self.record_events:
                self.events.append((self.arr[i], "reject", self.gid[i], self.replica))
            return
        self.waiting.add(i)

    def _start_decoding(self, i: int, s0: int, c0: int, o0: int) -> None:
        self.state[i] = DECODING
        self.s0[i] = s0
        self.c[i] = c0
        self.o[i] = o0
        self.n_dec += 1
        self.kv_base += c0 - s0
        self.cnt[(s0 - c0) % self.bs] += 1
        sc = s0 + self.D0[i] - 1 - o0
        cal = self.calendar.get(sc)
        if cal is None:
            self.calendar[sc] = [i]
        else:
            cal.append(i)

    def _stop_decoding(self, i: int, s: int, scheduled: bool) -> None:
        """Take i out of the decoding set at step s; its c/o/nb become explicit again.

        ``scheduled``: its token of step s was allocated (its blocks cover c + 1 tokens).
        """
        c0, s0 = self.c[i], self.s0[i]
        self.n_dec -= 1
        self.kv_base -= c0 - s0
        self.cnt[(s0 - c0) % self.bs] -= 1
        c_now = c0 + s - s0
        alloc = c_now + 1 if scheduled else c_now
        self.nb[i] = -(-alloc // self.bs)
        self.o[i] += s - s0
        self.c[i] = alloc  # tokens covered by allocations (what the prefix cache may hold)
        self.state[i] = PREFILLING  # transient: the caller sets the real state

    def _preempt(self, v: int, t: float) -> None:
        """``Scheduler._preempt_request``: free the KV, num_computed_tokens = 0, back to waiting."""
        before = self.kv.used
        self.kv.free(v, self.nb[v], min(self.c[v], self.P0[v] + self.o[v]), reusable=True)
        if self.partial == v:
            self.partial = -1
        del self.running[v]
        self.state[v] = WAITING
        self.c[v] = 0
        self.nb[v] = 0
        self.preempts[v] += 1
        self.waiting.prepend(v)
        if self.record_events:
            self.events.append((t, "preempt", self.gid[v], self.replica))
            self.mem_events.append((t, "free", self.gid[v], before * self.bs, self.kv.used * self.bs, "preempt_recompute"))
        if self._one:
            self._record.preempted.append(v)

    def _finish(self, i: int, t_end: float) -> None:
        before = self.kv.used
        self.kv.free(i, self.nb[i], min(self.c[i], self.P0[i] + self.D0[i]))
        del self.running[i]
        self.state[i] = DONE
        self.comp_t[i] = t_end
        self.n_done += 1
        if self.record_events:
            self.events.append((t_end, "complete", self.gid[i], self.replica))
            self.mem_events.append((t_end, "free", self.gid[i], before * self.bs, self.kv.used * self.bs, "complete"))
        if self._one:
            self._record.finished.append(i)

    def abort(self, handle: int) -> bool:
        i = handle
        st = self.state[i]
        if st in (DONE, REJECTED, ABORTED):
            return False
        if i in self.pending:
            self.pending.remove(i)
        elif st == WAITING:
            self.waiting.remove(i)
        else:
            if st == DECODING:  # its calendar entry goes stale with the state change
                self._stop_decoding(i, self.step_index, False)
            self.kv.free(i, self.nb[i], min(self.c[i], self.P0[i] + self.o[i]))
            if self.partial == i:
                self.partial = -1
            del self.running[i]
        self.state[i] = ABORTED
        return True

    # ------------------------------------------------------------ main loop
    def run(self, until: float = math.inf, progress=None) -> None:
        """Execute every step that starts before ``until``."""
        bt = self.bt
        bs = self.bs
        B = self.B
        max_seqs = self.max_num_seqs
        chunked = self.chunked
        pol = self.sched_policy
        fcfs = pol.victim_is_last
        rec = self.record_events
        snap_every = self.snapshot_every
        rep = self.replica
        P0, D0, state, gid, arr = self.P0, self.D0, self.state, self.gid, self.arr
        ca, oa, s0a, nb = self.c, self.o, self.s0, self.nb
        pending, calendar, cnt = self.pending, self.calendar, self.cnt
        running, waiting, kv = self.running, self.waiting, self.kv
        prefilled = self.prefilled
        pgroup = self.pgroup
        events, mem_events, snapshots, step_end = self.events, self.mem_events, self.snapshots, self.step_end
        enter_t, comp_t, ft_step = self.enter_t, self.comp_t, self.ft_step
        max_steps = self.max_steps
        one = self._one
        carried: list[int] = []  # preemptions of a schedule that ran nothing (step records)
        done_report = 0

        while True:
            t = self.t
            s = self.step_index
            while pending and arr[pending[0]] <= t:
                self._arrive(pending.popleft())
            if not (running or waiting):
                if not pending:
                    break
                nxt = arr[pending[0]]
                if nxt >= until:
                    break
                self.t = nxt
                continue
            if t >= until:
                break
            if max_steps is not None and s >= max_steps:
                raise RuntimeError(f"simulation exceeded sim.max_steps={max_steps}")
            if one:
                record = self._record = StepRecord(s, t, t, 0, 0, 0, 0, 0, 0, 0, 0, self.total_blocks)
                if carried:
                    record.preempted.extend(carried)
                    carried = []

            budget = B
            preempted = False
            prefill_tokens = 0
            pat = 0  # sum over prefill chunks of c * (k + c)
            n_prefill_seqs = 0
            done_prefill: list[int] = []  # chunks that complete a prefill in this step
            needed = cnt[s % bs]
            n_dec = self.n_dec
            if fcfs and n_dec <= budget and needed <= kv.usable - kv.used and not self._walk_always:
                # ---- fast path: every decoding request takes its token
                kv.grow_decoding(needed)
                budget -= n_dec
                dec_sched = n_dec
                kv_tokens = self.kv_base + n_dec * s
                dec_list = None
                p = self.partial
                if p >= 0 and budget > 0:
                    c_i = ca[p]
                    n_i = P0[p] + oa[p]
                    num_new = min(n_i - c_i, budget)
                    need = -(-(c_i + num_new) // bs) - nb[p]
                    if need > kv.usable - kv.used:
                        self._preempt(p, t)  # the last in running is itself: it cannot be scheduled
                        preempted = True
                    else:
                        kv.grow(p, need, c_i + num_new)
                        nb[p] += need
                        if num_new == 1 and c_i >= P0[p] and c_i == n_i - 1:
                            dec_sched += 1  # the last token of a re-prefill is a decode
                            kv_tokens += c_i
                        else:
                            prefill_tokens += num_new
                            pat += num_new * (c_i + num_new)
                            n_prefill_seqs += 1
                        budget -= num_new
                        ca[p] = c_i + num_new
                        if ca[p] == n_i:
                            done_prefill.append(p)
            else:
                # ---- vLLM's running loop, request by request
                dec_list = []
                order = list(running)
                sched: dict[int, int] = {}
                as_decode: set[int] = set()
                dec_sched = 0
                kv_tokens = 0
                idx = 0
                while idx < len(order) and budget > 0:
                    i = order[idx]
                    decoding = state[i] == DECODING
                    if decoding:
                        c_i = ca[i] + s - s0a[i]
                        num_new = 1
                        need = 1 if c_i % bs == 0 else 0
                    else:
                        c_i = ca[i]
                        n_i = P0[i] + oa[i]
                        num_new = min(n_i - c_i, budget)
                        need = -(-(c_i + num_new) // bs) - nb[i]
                    ok = True
                    while need > kv.usable - kv.used:
                        v = order.pop(pol.victim(order, self.prio, arr))
                        if v in sched:  # scheduled earlier in this step: give its tokens back
                            tok = sched.pop(v)
                            budget += tok
                            idx -= 1
                            if state[v] == DECODING:
                                dec_sched -= 1
                                kv_tokens -= ca[v] + s - s0a[v]
                                dec_list.remove(v)
                                self._stop_decoding(v, s, True)
                            else:
                                k0 = ca[v] - tok
                                if v in as_decode:
                                    dec_sched -= 1
                                    kv_tokens -= k0
                                else:
                                    prefill_tokens -= tok
                                    pat -= tok * (k0 + tok)
                                    n_prefill_seqs -= 1
                                if v in done_prefill:
                                    done_prefill.remove(v)
                        elif state[v] == DECODING:
                            self._stop_decoding(v, s, False)
                        self._preempt(v, t)
                        preempted = True
                        if v == i:
                            ok = False
                            break
                    if not ok:
                        break
                    if decoding:
                        kv.grow_decoding(need)
                        dec_sched += 1
                        kv_tokens += c_i
                        dec_list.append(i)
                        sched[i] = 1
                        budget -= 1
                    else:
                        kv.grow(i, need, c_i + num_new)
                        nb[i] += need
                        if num_new == 1 and c_i >= P0[i] and c_i == n_i - 1:
                            dec_sched += 1  # the last token of a re-prefill is a decode
                            kv_tokens += c_i
                            as_decode.add(i)
                        else:
                            prefill_tokens += num_new
                            pat += num_new * (c_i + num_new)
                            n_prefill_seqs += 1
                        budget -= num_new
                        ca[i] = c_i + num_new
                        sched[i] = num_new
                        if ca[i] == n_i:
                            done_prefill.append(i)
                    idx += 1
                skipped = [i for i in order[idx:] if state[i] == DECODING]

            prefilled_now: list[int] = []
            if not preempted:
                while waiting and budget > 0:
                    if len(running) >= max_seqs:
                        break
                    i = waiting.peek()
                    if prefilled and i in prefilled:
                        # KV handed over by a prefill instance: decode token 1 in this step
                        P = P0[i]
                        need = -(-(P + 1) // bs)
                        if need > kv.usable - kv.used:
                            break
                        waiting.pop()
                        prefilled.discard(i)
                        before = kv.used
                        kv.admit(i, [], need, P)
                        nb[i] = need
                        ca[i] = P + 1
                        running[i] = None
                        state[i] = PREFILLING
                        if enter_t[i] != enter_t[i]:
                            enter_t[i] = t
                        dec_sched += 1
                        kv_tokens += P
                        budget -= 1
                        prefilled_now.append(i)
                        if rec:
                            events.append((t, "admit", gid[i], rep))
                            mem_events.append((t, "allocate", gid[i], before * bs, kv.used * bs, "admit_prefilled"))
                        if one:
                            record.admitted.append(i)
                        continue
                    n_i = P0[i] + oa[i]
                    hits = kv.lookup(i, n_i) if kv.caching and (pgroup[i] >= 0 or self.preempts[i]) else ()
                    n_hit = len(hits)
                    h_tok = n_hit * bs
                    num_new = n_i - h_tok
                    if not chunked and num_new > budget:
                        break
                    if num_new > budget:
                        num_new = budget
                    free = kv.usable - kv.used
                    ev = kv.num_evictable(hits) if n_hit else 0
                    if -(-n_i // bs) - n_hit + ev > free:  # the whole sequence must fit
                        break
                    need = -(-(h_tok + num_new) // bs) - n_hit
                    waiting.pop()
                    before = kv.used
                    kv.query_tokens += n_i
                    kv.admit(i, hits, need, h_tok + num_new)
                    nb[i] = n_hit + need
                    running[i] = None
                    state[i] = PREFILLING
                    if enter_t[i] != enter_t[i]:
                        enter_t[i] = t
                        self.cached_tokens[i] = h_tok
                    ca[i] = h_tok + num_new
                    if num_new == 1 and h_tok >= P0[i] and h_tok == n_i - 1:
                        dec_sched += 1  # a resumed request whose cache hit leaves one token: a decode
                        kv_tokens += h_tok
                    else:
                        prefill_tokens += num_new
                        pat += num_new * (h_tok + num_new)
                        n_prefill_seqs += 1
                    budget -= num_new
                    if ca[i] == n_i:
                        done_prefill.append(i)
                    else:
                        self.partial = i
                    if rec:
                        events.append((t, "admit", gid[i], rep))
                        mem_events.append((t, "allocate", gid[i], before * bs, kv.used * bs, "admit"))
                    if one:
                        record.admitted.append(i)

            if not (dec_sched or prefill_tokens):
                if not preempted:
                    raise RuntimeError(f"engine stalled at step {s}, t={t:.6f}s: nothing could run (a bug)")
                # vLLM runs no model step when nothing is scheduled and schedules again at once
                if one:
                    carried = record.preempted
                continue
            if dec_list is not None:
                # decoding requests the loop did not reach sit this step out
                for i in skipped:
                    c_i = ca[i] + s - s0a[i]
                    o_i = oa[i] + s - s0a[i]
                    self._stop_decoding(i, s, False)
                    self._start_decoding(i, s + 1, c_i, o_i)
            dt = bt.step_time(prefill_tokens, dec_sched, kv_tokens, pat)
            t_end = t + dt
            if one:
                if dec_list is None:
                    dec_list = [i for i in running if state[i] == DECODING]
                record.emitted.extend(dec_list)

            # prefills that completed sample their next token at the end of the step
            for i in done_prefill:
                if self.partial == i:
                    self.partial = -1
                o_i = oa[i] + 1
                oa[i] = o_i
                if one:
                    record.emitted.append(i)
                if ft_step[i] < 0:
                    ft_step[i] = s
                    if one:
                        record.first_token.append(i)
                if o_i >= D0[i]:
                    self._finish(i, t_end)
                    done_report += 1
                else:
                    self._start_decoding(i, s + 1, ca[i], o_i)
            for i in prefilled_now:
                ft_step[i] = s
                if one:
                    record.emitted.append(i)
                    record.first_token.append(i)
                if D0[i] == 1:
                    oa[i] = 1
                    self._finish(i, t_end)
                    done_report += 1
                else:
                    self._start_decoding(i, s + 1, P0[i] + 1, 1)

            finished = calendar.pop(s, None)
            if finished:
                for i in finished:
                    if state[i] != DECODING or s0a[i] + D0[i] - 1 - oa[i] != s:
                        continue
                    self._stop_decoding(i, s, True)
                    oa[i] += 1
                    self._finish(i, t_end)
                    done_report += 1

            step_end.append(t_end)
            if s % snap_every == 0:
                used = kv.used
                snapshots.append((
                    t, s, dec_sched + n_prefill_seqs, prefill_tokens + dec_sched, prefill_tokens, dec_sched,
                    kv_tokens, dt, len(waiting), len(running), 0, self.n_done,
                    used * bs, used / self.total_blocks, rep,
                ))
            self.t = t_end
            self.step_index = s + 1
            if one:
                record.end_s = t_end
                record.prefill_tokens = prefill_tokens
                record.decode_tokens = dec_sched
                record.kv_tokens = kv_tokens
                record.prefill_attention_tokens = pat
                record.num_waiting = len(waiting)
                record.num_running = len(running)
                record.kv_blocks_used = kv.used
                break
            if progress is not None and done_report >= 2000:
                progress(done_report)
                done_report = 0
        if progress is not None and done_report:
            progress(done_report)
