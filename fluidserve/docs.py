"""``python -m fluidserve docs``: the reference of every config field, generated from the schema.

    python -m fluidserve docs [--output-dir docs] [--check] [--json]

Walks the pydantic models of :mod:`fluidserve.config` (one table per section: dotted field,
type, default, allowed range, description) and writes ``DIR/config.md``. ``--check`` writes
nothing and exits 1 when the file differs from what the schema gives (the test suite runs the
same comparison, so the shipped ``docs/config.md`` stays in sync with the code).
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fluidserve.errors import cli_errors
from fluidserve.jsonout import to_json

FILE_NAME = "config.md"

#: descriptions of fields whose schema has none (a ``description=`` in config.py wins).
DESCRIPTIONS = {
    "name": "names the experiment folder <output_dir>/<timestamp>_<name>/",
    "output_dir": "folder of experiment folders (--output-dir wins)",
    "system.mode": "preemption: swapping moves a victim's KV to CPU, recompute frees it and re-prefills later",
    "system.gpu_memory_utilization": "fraction of GPU memory for weights + KV cache when M_total is derived",
    "system.tensor_parallel": "GPUs per replica (tensor parallel) when M_total is derived from the presets",
    "system.chunked_prefill": "split prompts into chunks that fit the token budget B",
    "batch_time.d0_s": "fixed cost per engine step, s",
    "batch_time.d1_prefill_s": "cost per prompt token computed in the step, s",
    "batch_time.d1_decode_s": "cost per decoding request in the step, s",
    "batch_time.d2_kv_s": "cost per KV token read by the decoding requests, s",
    "policy.queue_policy": "admission order of waiting requests (priority: lower value first)",
    "policy.victim_policy": "which running request is preempted when KV memory runs out",
    "workload.source": "synthetic (a scenario) or trace (workload.trace)",
    "workload.scenario": "length distributions and default rate of the synthetic workload",
    "workload.arrival_process": "inter-arrival law of the synthetic workload",
    "workload.num_requests": "requests of a synthetic workload (not used for traces: use workload.trace.max_requests)",
    "workload.mmpp.rate_low": "arrival rate in the low state, req/s",
    "workload.mmpp.rate_high": "arrival rate in the high state, req/s",
    "workload.mmpp.mean_low_s": "mean sojourn in the low state, s",
    "workload.mmpp.mean_high_s": "mean sojourn in the high state, s",
    "workload.trace.path": "trace file (CSV), relative to the working directory or to the config file",
    "workload.trace.format": "column layout: azure (Azure LLM inference), burstgpt, generic (arrival_time, prefill_length, decode_length)",
    "workload.trace.max_requests": "keep only the first N requests of the window",
    "cluster.replicas": "engine replicas behind the router",
    "cluster.router": "how requests are spread over replicas",
    "cluster.weights": "one finite weight >= 0 per replica (router weighted)",
    "workload.shared_prefix.num_groups": "number of shared system prompts (each request gets one of them)",
    "fluid.enabled": "solve the fluid model after the simulator in the main job",
    "fluid.rtol": "relative tolerance of the ODE solver",
    "fluid.atol": "absolute tolerance of the ODE solver",
}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "null"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    return getattr(ann, "__name__", str(ann))


def _submodel(ann: Any) -> type[BaseModel] | None:
    for a in (ann, *typing.get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _range(field) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sym in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value:g}" if isinstance(value, float) else f"{sym} {value}")
    return ", ".join(parts)


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default if field.default is not PydanticUndefined else field.default_factory()
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value!r}`" if value is not None else "`None`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, list[dict[str, str]]]]:
    """(section path, rows) for ``model`` and every nested section, in declaration order."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}{name}"
        sub = _submodel(field.annotation)
        if sub is not None:
            nested.append((path, sub))
            doc = (sub.__doc__ or "").strip()
            summary = field.description or (doc.splitlines()[0] if doc else "")
            rows.append({"field": path, "type": "section", "default": _default(field), "range": "",
                         "description": _cell(summary) + f" (see `{path}` below)"})
            continue
        rows.append({"field": path, "type": _type_name(field.annotation), "default": _default(field),
                     "range": _range(field), "description": _cell(field.description or DESCRIPTIONS.get(path, ""))})
    out = [(prefix.rstrip(".") or "(top level)", rows)]
    for path, sub in nested:
        out += field_rows(sub, path + ".")
    return out


def render() -> str:
    """The Markdown reference of :class:`fluidserve.config.Config`."""
    from fluidserve.config import Config

    lines = [
        "# Config reference",
        "",
        "Every field of a run config (`python -m fluidserve.run --config FILE`), generated from the",
        "pydantic schema in `fluidserve/config.py` by `python -m fluidserve docs` (do not edit by hand;",
        "a test checks that this file is in sync). Fields are set in the YAML file or with",
        "`--set section.field=value`. Unknown keys, wrong types and out-of-range values are refused",
        "at load with one line naming the dotted field. Times are in seconds, token counts in tokens.",
        "",
    ]
    for section, rows in field_rows(Config):
        lines += [f"## `{section}`" if section != "(top level)" else "## Top level", ""]
        doc = None
        if section != "(top level)":
            node: Any = Config
            for key in section.split("."):
                node = _submodel(node.model_fields[key].annotation)
            doc = (node.__doc__ or "").strip()
        if doc:
            lines += [" ".join(doc.split()), ""]
        lines += ["| field | type | default | range | description |", "|---|---|---|---|---|"]
        lines += [f"| `{r['field']}` | {r['type']} | {r['default']} | {r['range']} | {r['description']} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="docs", help=f"where {FILE_NAME} goes (default: docs)")
    parser.add_argument("--check", action="store_true", help=f"write nothing; exit 1 if {FILE_NAME} is out of date")
    parser.add_argument("--json", action="store_true", help="print one JSON object (path, fields, up_to_date)")


@cli_errors
def main(args: argparse.Namespace) -> int:
    text = render()
    path = Path(args.output_dir) / FILE_NAME
    current = path.read_text() if path.is_file() else None
    up_to_date = current == text
    if not args.check and not up_to_date:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    fields = sum(1 for line in text.splitlines() if line.startswith("| `"))
    if args.json:
        print(to_json({"path": str(path), "fields": fields, "up_to_date": up_to_date, "checked": args.check}))
    elif args.check:
        print(f"{path}: {'up to date' if up_to_date else 'OUT OF DATE (run python -m fluidserve docs)'}", file=sys.stderr)
    else:
        print(f"wrote {path} ({fields} fields)" if not up_to_date else f"{path} is up to date ({fields} fields)")
    return 1 if args.check and not up_to_date else 0
