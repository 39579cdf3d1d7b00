"""docs/config.md is generated from the config schema and must be in sync with it."""

from __future__ import annotations

import re
from pathlib import Path

from fluidserve import docs
from fluidserve.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _leaf_paths(model, prefix=""):
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        sub = docs._submodel(field.annotation)
        yield prefix + name
        if sub is not None:
            yield from _leaf_paths(sub, prefix + name + ".")


def test_docs_config_md_is_in_sync_with_the_schema():
    shipped = (ROOT / "docs" / docs.FILE_NAME).read_text()
    assert shipped == docs.render(), "docs/config.md is out of date: run python -m fluidserve docs"


def test_every_field_is_documented_with_a_description():
    text = docs.render()
    cells = [re.split(r"(?<!\\)\|", line) for line in text.splitlines() if line.startswith("| `")]
    rows = {c[1].strip().strip("`"): c[5].strip() for c in cells}
    paths = list(_leaf_paths(Config))
    assert set(paths) == set(rows)  # every field of the schema, nothing else
    assert "workload.trace.rate_scale" in rows and "divide inter-arrival times" in rows["workload.trace.rate_scale"]
    undocumented = [p for p, d in rows.items() if not d]
    assert undocumented == [], f"fields without a description: {undocumented}"
    assert "| `fluid.bin_s` | float | `10.0` | > 0 |" in text


def test_check_flag_reports_an_out_of_date_file(tmp_path, capsys):
    from fluidserve.__main__ import main

    (tmp_path / docs.FILE_NAME).write_text("stale\n")
    assert main(["docs", "--output-dir", str(tmp_path), "--check"]) == 1
    assert (tmp_path / docs.FILE_NAME).read_text() == "stale\n"
    assert main(["docs", "--output-dir", str(tmp_path)]) == 0
    assert main(["docs", "--output-dir", str(tmp_path), "--check"]) == 0
