"""Scheduling policies: the order of the waiting queue and the choice of preemption victims.

The engines own the request state and the bookkeeping; these small classes decide.

``vllm_v1`` (vLLM's ``SchedulingPolicy``, vllm/v1/core/sched/request_queue.py and the victim
choice in ``Scheduler.schedule``):

* :class:`Fcfs`: waiting in arrival order, a preempted request back at the head
  (``FCFSRequestQueue.prepend_request``); the victim is the last request in running
  (``self.running.pop()``).
* :class:`Priority`: waiting by ``(priority, arrival)`` (``PriorityRequestQueue``); the victim is
  the running request with the largest ``(priority, arrival)`` (lowest priority, latest arrival).

``vllm_v0`` victim policies (the seed's; vLLM V0 preempted the last in running): each keeps the
decoding requests in a structure with lazy deletion (an entry is stale once the request's
version changed):

* :class:`LifoVictims` latest arrival, :class:`FifoVictims` earliest arrival,
  :class:`LruVictims` oldest entry into running, :class:`RandomVictims` uniform (seeded).
"""

from __future__ import annotations

import heapq
import random
from collections import deque


# ---------------------------------------------------------------- vllm_v1
class FcfsQueue(deque):
    """vLLM's ``FCFSRequestQueue``: arrival order; preempted requests go back to the head."""

    add = deque.append
    prepend = deque.appendleft
    pop = deque.popleft

    def peek(self) -> int:
        return self[0]


class PriorityQueue(list):
    """vLLM's ``PriorityRequestQueue``: smallest ``(priority, arrival)`` first, preempted ones too."""

    def __init__(self, prio: list[int], arr: list[float]) -> None:
        super().__init__()
        self.prio, self.arr = prio, arr

    def add(self, i: int) -> None:
        heapq.heappush(self, (self.prio[i], self.arr[i], i))

    prepend = add

    def peek(self) -> int:
        return self[0][2]

    def pop(self) -> int:
        return heapq.heappop(self)[2]

    def remove(self, i: int) -> None:
        self[:] = [x for x in self if x[2] != i]
        heapq.heapify(self)


class Fcfs:
    """``policy: FCFS``."""

    name = "FCFS"
    victim_is_last = True  # the engine may skip walking the running list when nothing is preempted

    def waiting_queue(self, prio: list[int], arr: list[float]) -> FcfsQueue:
        return FcfsQueue()

    def victim(self, order: list[int], prio: list[int], arr: list[float]) -> int:
        """Position in ``order`` (running, in order of entry) of the request to preempt."""
        return len(order) - 1


class Priority:
    """``policy: priority`` (lower value served first)."""

    name = "priority"
    victim_is_last = False

    def waiting_queue(self, prio: list[int], arr: list[float]) -> PriorityQueue:
        return PriorityQueue(prio, arr)

    def victim(self, order: list[int], prio: list[int], arr: list[float]) -> int:
        # max(self.running, key=(priority, arrival_time)): the first of equal maxima
        return max(range(len(order)), key=lambda k: (prio[order[k]], arr[order[k]], -k))


V1_POLICIES = {"FCFS": Fcfs, "priority": Priority}


# ---------------------------------------------------------------- vllm_v0
class LifoVictims:
    """The decoding request that arrived last."""

    def __init__(self, seed: int = 0) -> None:
        self.h: list[tuple[int, int]] = []

    def add(self, i: int, ver: int) -> None:
        heapq.heappush(self.h, (-i, ver))

    def remove(self, i: int) -> None:
        """Entries go stale through the version; nothing to do."""

    def pick(self, live) -> int:
        h = self.h
        while True:
            ni, v = heapq.heappop(h)
            if live(-ni, v):
                return -ni


class FifoVictims(LifoVictims):
    """The decoding request that arrived first."""

    def add(self, i: int, ver: int) -> None:
        heapq.heappush(self.h, (i, ver))

    def pick(self, live) -> int:
        h = self.h
        while True:
            i, v = heapq.heappop(h)
            if live(i, v):
                return i


class LruVictims:
    """The decoding request that entered running (or swapped back in) longest ago."""

    def __init__(self, seed: int = 0) -> None:
        self.q: deque[tuple[int, int]] = deque()

    def add(self, i: int, ver: int) -> None:
        self.q.append((i, ver))

    def remove(self, i: int) -> None:
        """Entries go stale through the version; nothing to do."""

    def pick(self, live) -> int:
        q = self.q
        while True:
            i, v = q.popleft()
            if live(i, v):
                return i


class RandomVictims:
    """A decoding request drawn uniformly (``random.Random(seed)``)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def add(self, i: int, ver: int) -> None:
        self.pos[i] = len(self.items)
        self.items.append(i)

    def remove(self, i: int) -> None:
        pos = self.pos.pop(i)
        last = self.items.pop()
        if last != i:
            self.items[pos] = last
            self.pos[last] = pos

    def pick(self, live) -> int:
        return self.items[self.rng.randrange(len(self.items))]


V0_VICTIMS = {"LIFO": LifoVictims, "FIFO": FifoVictims, "LRU": LruVictims, "random": RandomVictims}
