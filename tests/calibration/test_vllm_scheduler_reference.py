"""The vLLM scheduler reference script's own parts that need no vLLM: trace reading, prompt ids, CLI errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "calibration" / "vllm_scheduler_reference.py"


@pytest.fixture(scope="module")
def ref():
    spec = importlib.util.spec_from_file_location("vllm_scheduler_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_group_members_share_exactly_their_prefix(ref):
    a = {"group": 3, "plen": 40, "P": 100}
    b = {"group": 3, "plen": 40, "P": 70}
    c = {"group": 4, "plen": 40, "P": 100}
    solo = {"group": -1, "plen": 0, "P": 100}
    ta, tb, tc = ref.prompt_token_ids(0, a), ref.prompt_token_ids(1, b), ref.prompt_token_ids(2, c)
    t5, t6 = ref.prompt_token_ids(5, solo), ref.prompt_token_ids(6, solo)
    assert (len(ta), len(tb), len(tc)) == (100, 70, 100)
    assert ta[:40] == tb[:40] and ta[40] != tb[40]  # same system prompt, then private tokens
    assert ta[0] != tc[0]  # another group differs from the first token on
    assert t5[0] != t6[0] and t5[0] not in ta[:40]  # no group: nothing shared with anybody
    assert all(0 <= x < 128256 for x in ta + tb + tc + t5)  # inside Llama-3.1's vocabulary


def test_read_trace_sorts_and_validates(ref, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrival_time,prefill_length,decode_length,prefix_group,prefix_length,priority\n"
                 "0.5,10,2,,,1\n0.25,20,3,0,16,0\n")
    rows = ref.read_trace(p)
    assert [r["arrival_s"] for r in rows] == [0.25, 0.5]
    assert (rows[0]["group"], rows[0]["plen"], rows[1]["group"], rows[1]["plen"], rows[1]["priority"]) == (0, 16, -1, 0, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_time,prefill_length,decode_length\n0,5,0\n")
    with pytest.raises(ref.InputError, match="row 1"):
        ref.read_trace(bad)


def test_cli_without_vllm_exits_2_with_one_line(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_time,prefill_length,decode_length\n0,5,2\n")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--trace", str(trace), "--num-gpu-blocks", "10", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "vllm is not installed" in lines[0] and "pip install vllm" in lines[0]
