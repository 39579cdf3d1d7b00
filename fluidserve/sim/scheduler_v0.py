"""The ``vllm_v0`` scheduler: the seed's vLLM V0-like engine (swapping or recompute).

Mirrors vLLM V0's ``Scheduler._schedule_default`` (vllm/core/scheduler.py: running, then
swapped, then waiting; ``_preempt`` by swap or recompute). Semantics of one engine step ``s``
starting at time ``t`` (see README "Simulator semantics"):

1. Arrivals with ``arrival_time <= t`` join the waiting queue.
2. Every decoding request needs room for one more KV token. A request at decode iteration
   ``g`` holds ``ceil((P + g) / block_size)`` blocks and needs a new one when
   ``(P + g) % block_size == 0``. While the blocks do not fit, a victim chosen by
   ``victim_policy`` is preempted: ``swapping`` moves its KV to CPU (swap time = bytes /
   bandwidth, added to the step) and queues it as swapped; ``recompute`` frees its KV and puts
   it at the head of the waiting queue, to re-prefill prompt + generated tokens. With chunked
   prefill, requests whose prompt is still being prefilled are preempted first (by recompute,
   latest admitted first): they hold their prompt's blocks but cannot make the batch grow.
3. Only if nothing was preempted in this step: swapped requests swap back in (arrival order)
   while their blocks fit; waiting requests are admitted only when no request stays swapped
   (batch priority RUNNING > SWAPPED > WAITING).
4. Waiting requests are admitted in queue order while their prompt blocks fit, the number of
   sequences stays within ``max_num_seqs`` and the token budget ``B`` (one token per decoding
   sequence plus prefill tokens) allows; admission stops at the first request that does not fit
   (head-of-line blocking). With chunked prefill a prompt may be split over several steps.
5. The step lasts ``BatchTimeModel.step_time(prefill, decode, kv)`` plus swap time. A request
   prefilled in step ``s`` decodes iteration 0 in step ``s + 1`` and completes at the end of its
   iteration ``D - 1``.

The hot loop does no Python work per running request per step: block growth is counted per
residue class of ``step - prompt`` modulo the block size, the KV token sum is kept as
``sum(P + g0 - s0) + n_decoding * s``, and completions are kept in a step-indexed calendar.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from fluidserve.batch_time import BatchTimeModel
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.policies import V0_VICTIMS
from fluidserve.sim.records import ABORTED, DECODING, DONE, PREFILLING, REJECTED, SWAPPED, WAITING, StepRecord


class VllmV0Engine(ReplicaEngine):
    """A replica under the seed's V0 semantics. Feed it with :meth:`submit`, advance it with :meth:`run`.

    Args:
        batch_time: the step-time model (seconds).
        M_total: KV capacity in tokens; ``M_total // block_size`` blocks are usable.
        block_size: KV block size in tokens.
        B: max batched tokens per step.
        max_num_seqs: max sequences (decoding + prefilling) in the running batch.
        mode: ``"swapping"`` or ``"recompute"``.
        victim_policy: ``"LIFO" | "FIFO" | "random" | "LRU"``.
        queue_policy: ``"FCFS" | "priority"``.
        chunked_prefill: allow splitting prompts over steps.
        swap_s_per_token: seconds to move one token's KV between GPU and CPU.
        record_events: keep events and memory events.
        snapshot_every: record one batch snapshot every N steps.
        replica: index written into the records.
        seed: seed of the random victim policy.
    """

    scheduler = "vllm_v0"

    def __init__(
        self,
        batch_time: BatchTimeModel,
        M_total: int,
        block_size: int = 16,
        B: int = 2048,
        max_num_seqs: int = 256,
        mode: str = "swapping",
        victim_policy: str = "LIFO",
        queue_policy: str = "FCFS",
        chunked_prefill: bool = False,
        swap_s_per_token: float = 0.0,
        record_events: bool = True,
        snapshot_every: int = 1,
        replica: int = 0,
        seed: int = 0,
        max_steps: int | None = None,
        scheduler: str = "vllm_v0",
    ) -> None:
        if mode not in ("swapping", "recompute"):
            raise ValueError(f"mode must be 'swapping' or 'recompute', got {mode!r}")
        if victim_policy not in V0_VICTIMS:
            raise ValueError(f"unknown victim_policy {victim_policy!r}")
        if queue_policy not in ("FCFS", "priority"):
            raise ValueError(f"unknown queue_policy {queue_policy!r}")
        self.bt = batch_time
        self.bs = int(block_size)
        self.total_blocks = int(M_total) // self.bs
        self.M_total = int(M_total)
        self.B = int(B)
        self.max_num_seqs = int(max_num_seqs)
        self.mode = mode
        self.victim_policy = victim_policy
        self.queue_policy = queue_policy
        self.chunked = bool(chunked_prefill)
        self.swap_s_per_token = float(swap_s_per_token)
        self.record_events = bool(record_events)
        self.snapshot_every = int(snapshot_every)
        self.replica = int(replica)
        self.max_steps = max_steps

        # per-request arrays, indexed by local id (submission order = arrival order)
        self.gid: list[int] = []
        self.arr: list[float] = []
        self.P0: list[int] = []
        self.D0: list[int] = []
        self.prio: list[int] = []
        self.state: list[int] = []
        self.g0: list[int] = []  # decode iterations done when the current decode period began
        self.s0: list[int] = []  # step at which the current decode period began
        self.pf_left: list[int] = []  # prompt tokens still to prefill (chunked prefill)
        self.blocks: list[int] = []  # blocks held at the last (re)allocation
        self.ver: list[int] = []  # bumped whenever the request leaves the decoding set
        self.enter_t: list[float] = []  # first entry into running (nan until then)
        self.ft_step: list[int] = []  # step whose end is the first token (-1 until known)
        self.comp_t: list[float] = []
        self.swaps: list[int] = []
        self.preempts: list[int] = []
        self.reject_reason: dict[int, str] = {}
        self.prefilled: set[int] = set()  # waiting requests whose prompt KV is already present

        # queues
        self.pending: deque[int] = deque()  # submitted, not yet arrived (arrival > clock)
        self.wait_head: deque[int] = deque()  # recompute victims, served first
        self.wait_main: deque[int] = deque() if queue_policy == "FCFS" else []  # type: ignore[assignment]
        self.swapped_heap: list[int] = []
        self.prefilling: deque[int] = deque()  # admitted, prompt not finished (chunked prefill)
        # decoding set bookkeeping
        self.n_dec = 0
        self.kv_base = 0  # sum over decoding of (P0 + g0 - s0)
        self.cnt = [0] * self.bs  # decoding requests per residue (s0 - P0 - g0) mod bs
        self.calendar: dict[int, list[int]] = {}
        self.victims = V0_VICTIMS[victim_policy](seed)

        self.dec_members: set[int] = set()  # decoding requests (for step records)
        self._one = False
        self._record: StepRecord | None = None
        self.t = 0.0
        self.step_index = 0
        self.used = 0  # blocks in use
        self.n_wait = 0
        self.n_swapped = 0
        self.n_done = 0
        self.n_rejected = 0

        # records
        self.step_end: list[float] = []
        self.snapshots: list[tuple] = []
        self.events: list[tuple] = []
        self.mem_events: list[tuple] = []

    # ------------------------------------------------------------------ input
    def submit(
        self, gid: int, arrival_s: float, prefill_tokens: int, decode_tokens: int, priority: int = 0,
        prefilled: bool = False, prefix_group: int = -1, prefix_length: int = 0,
    ) -> int:
        """Queue a request that arrives at ``arrival_s`` (requests must come in arrival order).

        ``prefilled=True`` (disaggregated decode instances): the prompt's KV arrives with the
        request, so on admission it takes ``ceil((P + 1) / block_size)`` blocks and one decode slot
        of the token budget and decodes iteration 0 in that same step, with no prefill step. If it is
        later preempted in recompute mode, it re-prefills locally like any other request.
        """
        i = len(self.gid)
        if prefilled:
            self.prefilled.add(i)
        self.gid.append(gid)
        self.arr.append(float(arrival_s))
        self.P0.append(int(prefill_tokens))
        self.D0.append(int(decode_tokens))
        self.prio.append(int(priority))
        self.state.append(WAITING)
        self.g0.append(0)
        self.s0.append(0)
        self.pf_left.append(0)
        self.blocks.append(0)
        self.ver.append(0)
        self.enter_t.append(math.nan)
        self.ft_step.append(-1)
        self.comp_t.append(math.nan)
        self.swaps.append(0)
        self.preempts.append(0)
        self.pending.append(i)
        return i

    @property
    def n_running(self) -> int:
        return self.n_dec + len(self.prefilling)

    def output_tokens(self, handle: int) -> int:
        """Output tokens emitted by the end of the last executed step."""
        i = handle
        st = self.state[i]
        if st == DONE:
            return self.D0[i]
        step = self.step_index - 1
        if st == DECODING and self.s0[i] <= step:
            return self.g0[i] + step - self.s0[i] + 1
        return self.g0[i]

    def abort(self, handle: int) -> bool:
        """Drop a request that has not finished; frees its KV. Returns False if it had ended."""
        i = handle
        st = self.state[i]
        if st in (DONE, REJECTED, ABORTED):
            return False
        if i in self.pending:
            self.pending.remove(i)
        elif st == WAITING:
            if i in self.wait_head:
                self.wait_head.remove(i)
            elif self.queue_policy == "FCFS":
                self.wait_main.remove(i)
            else:
                self.wait_main = [x for x in self.wait_main if x[1] != i]
                heapq.heapify(self.wait_main)
            self.n_wait -= 1
            self.prefilled.discard(i)
        elif st == SWAPPED:
            self.swapped_heap.remove(i)
            heapq.heapify(self.swapped_heap)
            self.n_swapped -= 1
        elif st == PREFILLING:
            self.prefilling.remove(i)
            self.used -= self.blocks[i]
        else:
            g = self.g0[i] + self.step_index - self.s0[i]
            self._stop_decoding(i)
            self.used -= -(-(self.P0[i] + g) // self.bs)
        self.state[i] = ABORTED
        return True

    # ------------------------------------------------------------ helpers
    def _reject_reason(self, P: int, D: int) -> str | None:
        bs = self.bs
        if -(-(P + D) // bs) > self.total_blocks:
            return f"needs {-(-(P + D) // bs)} KV blocks ({P + D} tokens) > total {self.total_blocks} blocks"
        if not self.chunked and P > self.B:
            return f"prompt of {P} tokens > token budget B={self.B} (chunked prefill off)"
        return None

    def _arrive(self, i: int) -> None:
        """Move request i from pending into the waiting queue, or reject it."""
        reason = self._reject_reason(self.P0[i], self.D0[i])
        if reason is not None:
            self.state[i] = REJECTED
            self.reject_reason[i] = reason
            self.n_rejected += 1
            if self.record_events:
                self.events.append((self.arr[i], "reject", self.gid[i], self.replica))
            return
        if self.queue_policy == "FCFS":
            self.wait_main.append(i)
        else:
            heapq.heappush(self.wait_main, (self.prio[i], i))  # type: ignore[arg-type]
        self.n_wait += 1

    def _start_decoding(self, i: int, s0: int, g0: int) -> None:
        self.state[i] = DECODING
        self.s0[i] = s0
        self.g0[i] = g0
        P = self.P0[i]
        self.n_dec += 1
        self.kv_base += P + g0 - s0
        self.cnt[(s0 - P - g0) % self.bs] += 1
        sc = s0 + self.D0[i] - 1 - g0
        cal = self.calendar.get(sc)
        if cal is None:
            self.calendar[sc] = [i]
        else:
            cal.append(i)
        if g0 == 0:
            self.ft_step[i] = s0
        self.dec_members.add(i)
        self.victims.add(i, self.ver[i])

    def _stop_decoding(self, i: int) -> None:
        """Remove i from the decoding set (its calendar and victim entries go stale)."""
        P = self.P0[i]
        self.n_dec -= 1
        self.kv_base -= P + self.g0[i] - self.s0[i]
        self.cnt[(self.s0[i] - P - self.g0[i]) % self.bs] -= 1
        self.ver[i] += 1
        self.dec_members.discard(i)
        self.victims.remove(i)

    def _pick_victim(self) -> int:
        state, ver = self.state, self.ver
        return self.victims.pick(lambda i, v: state[i] == DECODING and ver[i] == v)

    def _wait_peek(self) -> int | None:
        if self.wait_head:
            return self.wait_head[0]
        if self.wait_main:
            return self.wait_main[0] if self.queue_policy == "FCFS" else self.wait_main[0][1]  # type: ignore[index]
        return None

    def _wait_pop(self) -> None:
        if self.wait_head:
            self.wait_head.popleft()
        elif self.queue_policy == "FCFS":
            self.wait_main.popleft()  # type: ignore[union-attr]
        else:
            heapq.heappop(self.wait_main)  # type: ignore[arg-type]
        self.n_wait -= 1

    # ------------------------------------------------------------ main loop
    def run(self, until: float = math.inf, progress=None) -> None:
        """Advance the engine: execute every step that starts before ``until``.

        ``progress`` is an optional callable taking the number of newly completed requests.
        """
        step_time = self.bt.step_time
        bs = self.bs
        total_blocks = self.total_blocks
        B = self.B
        max_seqs = self.max_num_seqs
        recompute = self.mode == "recompute"
        chunked = self.chunked
        swap_spt = self.swap_s_per_token
        rec = self.record_events
        snap_every = self.snapshot_every
        rep = self.replica
        P0, D0, state, gid = self.P0, self.D0, self.state, self.gid
        arr, g0a, s0a, blocks = self.arr, self.g0, self.s0, self.blocks
        pending, calendar, cnt = self.pending, self.calendar, self.cnt
        prefilling = self.prefilling
        prefilled = self.prefilled
        events, mem_events, snapshots, step_end = self.events, self.mem_events, self.snapshots, self.step_end
        enter_t, comp_t = self.enter_t, self.comp_t
        max_steps = self.max_steps
        one = self._one
        done_since_report = 0

        while True:
            t = self.t
            s = self.step_index
            # 1. arrivals
            while pending and arr[pending[0]] <= t:
                self._arrive(pending.popleft())
            if not (self.n_dec or prefilling or self.n_wait or self.n_swapped):
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
                record = self._record = StepRecord(s, t, t, 0, 0, 0, 0, 0, 0, 0, 0, total_blocks)
            # 2. growth of decoding requests; preempt while it does not fit
            swap_tokens = 0
            preempted = False
            needed = cnt[s % bs]
            while self.used + needed > total_blocks:
                if prefilling:
                    # a chunked prefill in progress holds its whole prompt's blocks but cannot grow:
                    # preempt the most recently admitted one first (always by recompute, its KV is
                    # incomplete), otherwise two long requests can evict each other forever
                    v = prefilling.pop()
                    before = self.used
                    self.used -= blocks[v]
                    blocks[v] = 0
                    self.pf_left[v] = 0
                    state[v] = WAITING
                    self.wait_head.appendleft(v)
                    self.n_wait += 1
                    self.preempts[v] += 1
                    preempted = True
                    if one:
                        record.preempted.append(v)
                    if rec:
                        events.append((t, "preempt", gid[v], rep))
                        mem_events.append((t, "free", gid[v], before * bs, self.used * bs, "preempt_prefill"))
                    continue
                v = self._pick_victim()
                P = P0[v]
                g = g0a[v] + s - s0a[v]
                held = -(-(P + g) // bs)
                needs_block = (P + g) % bs == 0
                self._stop_decoding(v)
                if needs_block:
                    needed -= 1
                before = self.used
                self.used -= held
                preempted = True
                if one:
                    record.preempted.append(v)
                if recompute:
                    state[v] = WAITING
                    g0a[v] = g  # re-prefill P + g tokens, then continue at iteration g
                    self.wait_head.appendleft(v)
                    self.n_wait += 1
                    self.preempts[v] += 1
                    if rec:
                        events.append((t, "preempt", gid[v], rep))
                        mem_events.append((t, "free", gid[v], before * bs, self.used * bs, "preempt_recompute"))
                else:
                    state[v] = SWAPPED
                    g0a[v] = g
                    blocks[v] = held
                    heapq.heappush(self.swapped_heap, v)
                    self.n_swapped += 1
                    self.swaps[v] += 1
                    swap_tokens += P + g
                    if rec:
                        events.append((t, "swap_out", gid[v], rep))
                        mem_events.append((t, "swap_out", gid[v], before * bs, self.used * bs, "memory_full"))
            self.used += needed

            budget = B - self.n_dec
            n_seqs = self.n_dec + len(prefilling)
            prefill_tokens = 0
            prefill_seqs = 0  # sequences that process prompt tokens in this step

            if not preempted:
                # 3. swap in
                sh = self.swapped_heap
                while sh and n_seqs < max_seqs and budget >= 1:
                    v = sh[0]
                    P = P0[v]
                    g = g0a[v]
                    need = -(-(P + g + 1) // bs)
                    if self.used + need > total_blocks:
                        break
                    heapq.heappop(sh)
                    self.n_swapped -= 1
                    before = self.used
                    self.used += need
                    swap_tokens += P + g
                    # it decodes iteration g in this step: join with s0 = s
                    self._start_decoding(v, s, g)
                    budget -= 1
                    n_seqs += 1
                    if rec:
                        events.append((t, "swap_in", gid[v], rep))
                        mem_events.append((t, "swap_in", gid[v], before * bs, self.used * bs, "swap_in"))
                # 4a. continue chunked prefills
                if chunked and prefilling:
                    for v in prefilling:
                        if budget <= 0:
                            break
                        c = min(self.pf_left[v], budget)
                        self.pf_left[v] -= c
                        budget -= c
                        prefill_tokens += c
                        prefill_seqs += 1
                # 4b. admit waiting
                if not self.n_swapped:
                    while self.n_wait and n_seqs < max_seqs and budget > 0:
                        v = self._wait_peek()
                        P = P0[v]
                        g = g0a[v]
                        if prefilled and v in prefilled:
                            # KV handed over by a prefill instance: decode iteration g in this step
                            need = -(-(P + g + 1) // bs)
                            if self.used + need > total_blocks:
                                break
                            self._wait_pop()
                            prefilled.discard(v)
                            before = self.used
                            self.used += need
                            blocks[v] = need
                            if enter_t[v] != enter_t[v]:
                                enter_t[v] = t
                            if one:
                                record.admitted.append(v)
                            if rec:
                                events.append((t, "admit", gid[v], rep))
                                mem_events.append((t, "allocate", gid[v], before * bs, self.used * bs, "admit_prefilled"))
                            self._start_decoding(v, s, g)
                            budget -= 1
                            n_seqs += 1
                            continue
                        ptoks = P + g  # recompute victims re-prefill their generated tokens
                        if not chunked and ptoks > budget:
                            # a recompute victim longer than B may run alone in an empty step
                            if not (ptoks > B and n_seqs == 0 and prefill_tokens == 0):
                                break
                        need = -(-ptoks // bs)
                        if self.used + need > total_blocks:
                            break
                        self._wait_pop()
                        before = self.used
                        self.used += need
                        blocks[v] = need
                        if enter_t[v] != enter_t[v]:  # nan: first entry into running
                            enter_t[v] = t
                        if one:
                            record.admitted.append(v)
                        if rec:
                            events.append((t, "admit", gid[v], rep))
                            mem_events.append((t, "allocate", gid[v], before * bs, self.used * bs, "admit"))
                        n_seqs += 1
                        prefill_seqs += 1
                        if chunked:
                            c = min(ptoks, budget)
                            state[v] = PREFILLING
                            self.pf_left[v] = ptoks - c
                            prefilling.append(v)
                            budget -= c
                            prefill_tokens += c
                        else:
                            state[v] = PREFILLING
                            budget -= ptoks
                            prefill_tokens += ptoks
                            prefilling.append(v)

            # 5. step time
            n_dec = self.n_dec
            # requests swapped in this step have s0 = s, so kv_base already holds P + g - s for them
            kv_tokens = self.kv_base + n_dec * s
            if n_dec == 0 and prefill_tokens == 0 and swap_tokens == 0 and not preempted:
                raise RuntimeError(f"engine stalled at step {s}, t={t:.6f}s: nothing could run (a bug)")
            dt = step_time(prefill_tokens, n_dec, kv_tokens, 0) + swap_spt * swap_tokens
            t_end = t + dt
            if one:
                g0s = g0a
                for v in self.dec_members:
                    record.emitted.append(v)
                    if g0s[v] + s - s0a[v] == 0:
                        record.first_token.append(v)

            # finished prefills start decoding in the next step
            if prefilling:
                if chunked:
                    # chunks go to prefilling requests in FIFO order, so the finished ones are a prefix
                    while prefilling and self.pf_left[prefilling[0]] == 0:
                        v = prefilling.popleft()
                        self._start_decoding(v, s + 1, g0a[v])
                else:
                    for v in prefilling:
                        self._start_decoding(v, s + 1, g0a[v])
                    prefilling.clear()

            # completions at the end of this step
            finished = calendar.pop(s, None)
            if finished:
                for v in finished:
                    if state[v] != DECODING or s0a[v] + D0[v] - 1 - g0a[v] != s:
                        continue
                    self._stop_decoding(v)
                    state[v] = DONE
                    before = self.used
                    self.used -= -(-(P0[v] + D0[v]) // bs)
                    comp_t[v] = t_end
                    self.n_done += 1
                    done_since_report += 1
                    if one:
                        record.finished.append(v)
                    if rec:
                        events.append((t_end, "complete", gid[v], rep))
                        mem_events.append((t_end, "free", gid[v], before * bs, self.used * bs, "complete"))

            step_end.append(t_end)
            if s % snap_every == 0:
                snapshots.append(
                    (
                        t, s, n_dec + prefill_seqs,
                        prefill_tokens + n_dec, prefill_tokens, n_dec, kv_tokens, dt,
                        self.n_wait, self.n_dec + len(prefilling), self.n_swapped, self.n_done,
                        self.used * bs, self.used / total_blocks if total_blocks else 0.0, rep,
                    )
                )
            self.t = t_end
            self.step_index = s + 1
            if one:
                record.end_s = t_end
                record.prefill_tokens = prefill_tokens
                record.decode_tokens = n_dec
                record.kv_tokens = kv_tokens
                record.num_waiting = self.n_wait
                record.num_running = self.n_dec + len(prefilling)
                record.num_swapped = self.n_swapped
                record.kv_blocks_used = self.used
                break
            if progress is not None and done_since_report >= 2000:
                progress(done_since_report)
                done_since_report = 0
        if progress is not None and done_since_report:
            progress(done_since_report)
