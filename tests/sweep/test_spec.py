"""Sweep files: expansion into points, stable ids, and errors before any point runs."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidserve.errors import InputError
from fluidserve.sweep import cli, load_sweep, sweep_from_dict
from fluidserve.sweep.spec import field_annotation

from .conftest import ROOT, sweep_dict


def run_cli(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args(argv))


def test_grid_and_values_expand_to_the_product_with_integer_rounding(write_sweep):
    sw = load_sweep(write_sweep())
    assert len(sw.points) == 6
    totals = sorted({p.params["system.M_total"] for p in sw.points})
    # geomspace(4000, 16000, 3) = 4000, 8000, 16000; an int field gets ints
    assert totals == [4000, 8000, 16000]
    assert all(isinstance(t, int) for t in totals)
    assert {p.params["workload.arrival_rate"] for p in sw.points} == {100, 200}
    for p in sw.points:
        assert p.config.system.M_total == p.params["system.M_total"]
        assert p.config.workload.arrival_rate == p.params["workload.arrival_rate"]
        assert p.config.workload.num_requests == 120  # the sweep's `set`
    assert len({p.point_id for p in sw.points}) == 6
    assert [p.index for p in sw.points] == list(range(6))


def test_point_ids_are_stable_across_loads_and_independent_of_other_points(write_sweep):
    a = load_sweep(write_sweep("a.yaml"))
    b = load_sweep(write_sweep("b.yaml", axes=[{"field": "workload.arrival_rate", "values": [200]},
                                                {"field": "system.M_total", "values": [8000]}]))
    ids_a = {(p.params["workload.arrival_rate"], p.params["system.M_total"]): p.point_id for p in a.points}
    assert ids_a[(200, 8000)] == b.points[0].point_id
    assert load_sweep(write_sweep("a.yaml")).points[3].point_id == a.points[3].point_id


def test_random_samples_are_seeded_and_within_bounds(write_sweep):
    axes = [{"field": "workload.arrival_rate", "values": [100, 150]},
            {"field": "batch_time.d0_s", "sample": {"distribution": "loguniform", "low": 0.004, "high": 0.012}},
            {"field": "system.max_num_seqs", "sample": {"distribution": "uniform", "low": 32, "high": 256}}]
    sw = load_sweep(write_sweep(axes=axes, samples=5, seed=3))
    assert len(sw.points) == 10
    d0 = [p.params["batch_time.d0_s"] for p in sw.points]
    assert all(0.004 <= v <= 0.012 for v in d0)
    assert d0[:5] == d0[5:]  # the same draws in every grid cell
    assert all(isinstance(p.params["system.max_num_seqs"], int) for p in sw.points)
    again = load_sweep(write_sweep("again.yaml", axes=axes, samples=5, seed=3))
    assert [p.point_id for p in again.points] == [p.point_id for p in sw.points]
    other = load_sweep(write_sweep("other.yaml", axes=axes, samples=5, seed=4))
    assert other.points[0].params["batch_time.d0_s"] != d0[0]


@pytest.mark.parametrize(
    ("axes", "extra", "needle"),
    [
        ([{"field": "system.M_totl", "values": [1000]}], {}, "unknown config field 'system.M_totl'"),
        ([{"field": "sytem.M_total", "values": [1000]}], {}, "the config has no field 'sytem'"),
        ([{"field": "system", "values": [1]}], {}, "'system' is a section"),
        ([{"field": "system.B.x", "values": [1]}], {}, "'system.B' is a value"),
        ([{"field": "workload.arrival_rate", "values": []}], {}, "axis 'workload.arrival_rate'"),
        ([{"field": "system.M_total", "grid": {"start": 1, "stop": 2, "num": 0}}], {}, "axis 'system.M_total'"),
        ([{"field": "system.M_total", "values": [8000, "lots"]}], {}, "axis 'system.M_total' value 'lots'"),
        ([{"field": "system.mode", "values": ["swapping", "spill"]}], {}, "axis 'system.mode' value 'spill'"),
        ([{"field": "workload.arrival_rate", "values": [-5]}], {}, "axis 'workload.arrival_rate' value -5"),
        ([{"field": "system.B", "values": [1], "grid": {"start": 1, "stop": 2, "num": 2}}], {},
         "axis 'system.B'"),
        ([{"field": "system.B", "values": [1024]}, {"field": "system.B", "values": [2048]}], {}, "given twice"),
        ([{"field": "batch_time.d0_s", "sample": {"distribution": "uniform", "low": 0.01, "high": 0.005}}],
         {"samples": 3}, "axis 'batch_time.d0_s'"),
        ([{"field": "batch_time.d0_s", "sample": {"distribution": "uniform", "low": 0.001, "high": 0.005}}],
         {}, "give 'samples: N'"),
        ([{"field": "system.B", "values": [1024]}], {"samples": 3}, "no axis has 'sample'"),
        ([{"field": "policy.victim_policy", "values": ["LIFO", "FIFO"]}], {"engines": "fluid"},
         "cannot run on the fluid engine"),
    ],
)
def test_bad_specs_fail_before_any_point_runs(write_sweep, tmp_path, capsys, axes, extra, needle):
    path = write_sweep(axes=axes, **extra)
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    assert run_cli(["--config", str(path), "--output-dir", str(out), "--quiet"]) == 2
    assert needle in " ".join(capsys.readouterr().err.split())
    assert not out.exists()  # nothing ran, nothing was written


def test_bad_top_level_keys_and_base(tmp_path):
    with pytest.raises(InputError, match="engines"):
        sweep_from_dict(sweep_dict(engines="gpu"), "s.yaml", tmp_path)
    with pytest.raises(InputError, match="base config not found"):
        sweep_from_dict(sweep_dict(base="missing.yaml"), "s.yaml", tmp_path)
    with pytest.raises(InputError, match="unknown key"):
        sweep_from_dict(sweep_dict(axis=[]), "s.yaml", tmp_path)
    with pytest.raises(InputError, match="unknown config field 'system.Mtotal'"):
        sweep_from_dict(sweep_dict(set={"system.Mtotal": 5}), "s.yaml", tmp_path)
    with pytest.raises(InputError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.yaml")


def test_combined_point_errors_name_the_point(tmp_path):
    # each value is valid alone on the base (start_s 0), but a point with start >= end is not
    data = sweep_dict(set={"workload.source": "trace",
                           "workload.trace": {"path": str(ROOT / "fluidserve/data/azure_llm_2023_conv.csv"),
                                              "format": "azure", "end_s": 60}},
                      axes=[{"field": "workload.trace.start_s", "values": [0, 30]},
                            {"field": "workload.trace.end_s", "values": [60, 20]}])
    with pytest.raises(InputError, match=r"point \(workload.trace.start_s=30, workload.trace.end_s=20\)"):
        sweep_from_dict(data, "s.yaml", tmp_path)


def test_field_annotation_walks_optional_sections():
    assert field_annotation("workload.mmpp.rate_low") is float
    assert field_annotation("seed") is int
    with pytest.raises(InputError, match="has no field 'base_dir'"):
        field_annotation("base_dir")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rates=st.lists(st.integers(10, 400), min_size=1, max_size=4),
       blocks=st.lists(st.sampled_from([8, 16, 32]), min_size=1, max_size=3))
def test_points_are_the_product_of_distinct_values_with_unique_ids(tmp_path, rates, blocks):
    data = sweep_dict(axes=[{"field": "workload.arrival_rate", "values": rates},
                            {"field": "system.block_size", "values": blocks}])
    sw = sweep_from_dict(data, "s.yaml", tmp_path)
    assert len(sw.points) == len(set(rates)) * len(set(blocks))
    assert len({p.point_id for p in sw.points}) == len(sw.points)
    assert {(p.params["workload.arrival_rate"], p.params["system.block_size"]) for p in sw.points} == \
        {(r, b) for r in rates for b in blocks}
    assert math.isclose(sw.points[0].config.workload.arrival_rate, rates[0])
