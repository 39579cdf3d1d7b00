"""What one engine step returns through the public API (times in seconds, memory in blocks)."""

from __future__ import annotations

from dataclasses import dataclass, field

# request states shared by both schedulers (``ReplicaEngine.request_state``)
WAITING, PREFILLING, DECODING, SWAPPED, DONE, REJECTED, ABORTED = range(7)
STATE_NAMES = ("waiting", "prefilling", "decoding", "swapped", "done", "rejected", "aborted")


@dataclass
class StepRecord:
    """One executed engine step.

    Handles are the values :meth:`ReplicaEngine.submit` returned. ``emitted`` are the requests
    that produced one output token at ``end_s`` (``first_token`` those whose first one it is);
    ``finished`` completed at ``end_s``.
    """

    index: int
    start_s: float
    end_s: float
    prefill_tokens: int
    decode_tokens: int
    kv_tokens: int
    prefill_attention_tokens: int
    num_waiting: int
    num_running: int
    num_swapped: int
    kv_blocks_used: int
    kv_blocks_total: int
    admitted: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)
    first_token: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s
