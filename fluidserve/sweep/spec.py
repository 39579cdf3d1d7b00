"""The sweep file: a base config, fixed overrides and axes over dotted config fields.

    name: rate_x_memory             # names the sweep folder <output_dir>/<name>/
    base: default.yaml              # base config, relative to this file
    set: {workload.num_requests: 500}   # fixed overrides (dotted path -> value)
    engines: both                   # fluid | sim | both
    output_dir: results             # optional; --output-dir wins
    axes:
      - field: workload.arrival_rate
        values: [100, 150, 200]                      # explicit values
      - field: system.M_total
        grid: {start: 8000, stop: 32000, num: 4, scale: log}   # linspace / geomspace
      - field: batch_time.d0_s
        sample: {distribution: uniform, low: 0.005, high: 0.01}
    samples: 20                     # random draws of the `sample` axes (needed iff there are any)
    seed: 0                         # seed of those draws

Points are the Cartesian product of the ``values``/``grid`` axes, crossed with ``samples``
joint draws of the ``sample`` axes. Everything is checked by :func:`load_sweep` before any
point runs: an unknown field path, an empty axis, a value of the wrong type (each axis value
is validated on the base config, and then every point's full config) raise
:class:`~fluidserve.errors.InputError` naming the axis. Integer fields get integer grid and
sample values (duplicates after rounding are dropped).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fluidserve.config import Config, check_overrides_apply, config_from_dict, format_validation_error, set_dotted
from fluidserve import guards
from fluidserve.errors import InputError
from fluidserve.yamlio import read_yaml

ENGINES = {"fluid": ("fluid",), "sim": ("sim",), "both": ("fluid", "sim")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GridSpec(_Strict):
    """``num`` values from ``start`` to ``stop`` (inclusive), evenly or geometrically spaced."""

    start: float
    stop: float
    num: int = Field(..., ge=1)
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _check(self) -> "GridSpec":
        if not (math.isfinite(self.start) and math.isfinite(self.stop)):
            raise ValueError(f"grid start and stop must be finite numbers (got {self.start}, {self.stop})")
        guards.check_sweep_points(self.num, f"grid num = {self.num:,}")
        if self.scale == "log" and (self.start <= 0 or self.stop <= 0):
            raise ValueError(f"a log grid needs start and stop > 0 (got {self.start}, {self.stop})")
        return self

    def values(self) -> list[float]:
        fn = np.geomspace if self.scale == "log" else np.linspace
        return [float(v) for v in fn(self.start, self.stop, self.num)]


class SampleSpec(_Strict):
    """A random draw per sample: uniform / loguniform on [low, high], or a choice among values."""

    distribution: Literal["uniform", "loguniform", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "SampleSpec":
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("a 'choice' sample needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a '{self.distribution}' sample needs 'low' and 'high'")
            if not self.low < self.high:
                raise ValueError(f"sample low ({self.low}) must be < high ({self.high})")
            if self.distribution == "loguniform" and self.low <= 0:
                raise ValueError(f"a loguniform sample needs low > 0 (got {self.low})")
        return self

    def draw(self, rng: np.random.Generator, n: int) -> list[Any]:
        if self.distribution == "choice":
            idx = rng.integers(0, len(self.values), size=n)
            return [self.values[i] for i in idx]
        if self.distribution == "uniform":
            return [float(v) for v in rng.uniform(self.low, self.high, size=n)]
        return [float(v) for v in np.exp(rng.uniform(np.log(self.low), np.log(self.high), size=n))]


class Axis(_Strict):
    """One swept field: exactly one of ``values``, ``grid`` or ``sample``."""

    field: str
    values: list[Any] | None = None
    grid: GridSpec | None = None
    sample: SampleSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Axis":
        given = [k for k in ("values", "grid", "sample") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of values, grid or sample (got {', '.join(given) or 'none'})")
        if self.values is not None and len(self.values) == 0:
            raise ValueError("the axis is empty (values: [])")
        return self

    @property
    def random(self) -> bool:
        return self.sample is not None


class SweepFile(_Strict):
    name: str = "sweep"
    base: str
    set: dict[str, Any] = Field(default_factory=dict)
    engines: Literal["fluid", "sim", "both"] = "sim"
    output_dir: str | None = None
    axes: list[dict[str, Any]] = Field(..., min_length=1)
    samples: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class Point:
    """One point of the sweep: its axis values, its validated config and a stable id."""

    index: int
    params: dict[str, Any]
    config: Config
    point_id: str


@dataclass
class Sweep:
    """A validated sweep: every point's config is already checked."""

    name: str
    source: str
    engines: tuple[str, ...]
    axes: list[Axis]
    points: list[Point]
    output_dir: str | None
    base_config: Config
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> list[str]:
        return [a.field for a in self.axes]


# ---------------------------------------------------------------------------------------------
# field paths and types


def _unwrap(annotation) -> list:
    """The member types of an annotation (Optional / Union / X | None unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def field_annotation(dotted: str, allow_section: bool = False):
    """The annotation of a leaf config field (or of a section, if allowed); InputError names the path."""
    model: type[BaseModel] = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields or fields[part].exclude:
            where = ".".join(parts[:i]) or "the config"
            known = ", ".join(k for k, f in fields.items() if not f.exclude)
            raise InputError(f"unknown config field '{dotted}': {where} has no field '{part}' (fields: {known})")
        members = _unwrap(fields[part].annotation)
        sub = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        last = i == len(parts) - 1
        if last:
            if sub and not allow_section:
                raise InputError(f"config field '{dotted}' is a section, not a value; sweep one of its fields")
            return fields[part].annotation
        if not sub:
            raise InputError(f"unknown config field '{dotted}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
        model = sub[0]
    raise InputError(f"empty config field path {dotted!r}")  # pragma: no cover - split never gives []


def _is_integer_field(annotation) -> bool:
    members = _unwrap(annotation)
    return int in members and float not in members


def _cast(values: list[Any], integer: bool) -> list[Any]:
    if not integer:
        return values
    out: list[Any] = []
    for v in values:
        iv = int(round(v))
        if iv not in out:
            out.append(iv)
    return out


# ---------------------------------------------------------------------------------------------
# point ids


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_id(cfg: Config) -> str:
    """Stable 16-hex id of a config: a hash of its full validated content (paths as written)."""
    return hashlib.sha256(_canonical(cfg.to_yaml_dict()).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# loading


def _read_yaml(path: Path) -> Any:
    data = read_yaml(path, "sweep")
    if not isinstance(data, dict):
        raise InputError(f"{path}: a sweep file is a mapping (name, base, axes, ...)")
    return data


def _axis_label(i: int, raw: dict) -> str:
    name = raw.get("field") if isinstance(raw, dict) else None
    return f"axis '{name}'" if name else f"axis #{i + 1}"


def parse_axes(raw_axes: list, source: str) -> list[Axis]:
    axes = []
    for i, raw in enumerate(raw_axes):
        label = _axis_label(i, raw)
        if not isinstance(raw, dict):
            raise InputError(f"{source}: {label}: expected a mapping with 'field' and values/grid/sample")
        try:
            axes.append(Axis.model_validate(raw))
        except ValidationError as exc:
            raise InputError(format_validation_error(exc, f"{source}: {label}")) from None
    seen = set()
    for axis in axes:
        if axis.field in seen:
            raise InputError(f"{source}: axis '{axis.field}' is given twice")
        seen.add(axis.field)
    return axes


def sweep_from_dict(data: dict, source: str = "<sweep>", base_dir: Path | None = None) -> Sweep:
    """Validate a sweep mapping and expand it into points (no point runs here)."""
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, source)) from None
    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    base_path = Path(spec.base)
    if not base_path.is_absolute():
        base_path = base_dir / base_path
    if not base_path.is_file():
        raise InputError(f"{source}: base config not found: {spec.base} (looked at {base_path})")
    base_data = read_yaml(base_path, "config")
    if not isinstance(base_data, dict):
        raise InputError(f"{base_path}: config file is empty or not a mapping")
    cfg_base_dir = str(base_path.parent.resolve())
    for dotted, value in spec.set.items():
        field_annotation(dotted, allow_section=True)
        set_dotted(base_data, dotted, value)
    base_cfg = config_from_dict(base_data, f"{base_path} with the sweep's 'set'", cfg_base_dir)

    axes = parse_axes(spec.axes, source)
    fixed_axes, random_axes = [a for a in axes if not a.random], [a for a in axes if a.random]
    if random_axes and spec.samples is None:
        raise InputError(f"{source}: axis '{random_axes[0].field}' is sampled: give 'samples: N' (draws per grid cell)")
    if spec.samples is not None and not random_axes:
        raise InputError(f"{source}: 'samples' is given but no axis has 'sample'")

    grid_values: list[list[Any]] = []
    for axis in fixed_axes:
        integer = _is_integer_field(field_annotation(axis.field))
        values = axis.values if axis.values is not None else _cast(axis.grid.values(), integer)
        for v in values:
            _check_value(base_data, axis.field, v, source, cfg_base_dir)
        grid_values.append(values)
    total = math.prod(len(v) for v in grid_values) * (spec.samples or 1)
    guards.check_sweep_points(total, f"{source}: the axes ({' x '.join(str(len(v)) for v in grid_values)}"
                              + (f" x {spec.samples} samples" if spec.samples else "") + ")")
    draws: list[dict[str, Any]] = [{}]
    if random_axes:
        rng = np.random.default_rng(spec.seed)
        columns = {}
        for axis in random_axes:
            integer = _is_integer_field(field_annotation(axis.field))
            drawn = axis.sample.draw(rng, spec.samples)
            if integer and axis.sample.distribution != "choice":
                drawn = [int(round(v)) for v in drawn]
            for v in dict.fromkeys(map(_canonical, drawn)):
                _check_value(base_data, axis.field, json.loads(v), source, cfg_base_dir)
            columns[axis.field] = drawn
        draws = [{f: columns[f][i] for f in columns} for i in range(spec.samples)]

    points: list[Point] = []
    seen: set[str] = set()
    for combo in itertools.product(*grid_values):
        for draw in draws:
            params = {a.field: v for a, v in zip(fixed_axes, combo)}
            params.update(draw)
            params = {a.field: params[a.field] for a in axes}
            data_i = json.loads(json.dumps(base_data))
            for dotted, value in params.items():
                set_dotted(data_i, dotted, value)
            desc = ", ".join(f"{k}={v!r}" for k, v in params.items())
            try:
                cfg = config_from_dict(data_i, f"{source}: point ({desc})", cfg_base_dir)
            except InputError as exc:
                raise InputError(str(exc)) from None
            check_overrides_apply(cfg, [*spec.set, *params], f"{source}: point ({desc}):")
            pid = config_id(cfg)
            if pid in seen:
                continue
            seen.add(pid)
            points.append(Point(len(points), params, cfg, pid))
    engines = ENGINES[spec.engines]
    if "fluid" in engines:
        _check_fluid_supported(points, source)
    return Sweep(spec.name, source, engines, axes, points, spec.output_dir, base_cfg, dict(spec.set))


def _check_value(base_data: dict, dotted: str, value: Any, source: str, cfg_base_dir: str) -> None:
    """Validate one axis value on the base config; errors name the axis and the value."""
    data = json.loads(json.dumps(base_data))
    set_dotted(data, dotted, value)
    try:
        config_from_dict(data, "", cfg_base_dir)
    except InputError as exc:
        msg = str(exc).removeprefix(": ")
        raise InputError(f"{source}: axis '{dotted}' value {value!r} is invalid: {msg}") from None


def _check_fluid_supported(points: list[Point], source: str) -> None:
    """The fluid engine's scope check on every point, before anything runs."""
    try:
        from fluidserve.fluid.params import check_supported
    except ImportError:  # pragma: no cover - the fluid package is part of fluidserve
        return
    from fluidserve.errors import UnsupportedError

    for p in points:
        try:
            check_supported(p.config)
        except UnsupportedError as exc:
            desc = ", ".join(f"{k}={v!r}" for k, v in p.params.items())
            raise InputError(f"{source}: point ({desc}) cannot run on the fluid engine: {exc}") from None


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Load, validate and expand a sweep file; ``overrides`` set top-level sweep keys."""
    path = Path(path)
    data = _read_yaml(path)
    data.update(overrides or {})
    return sweep_from_dict(data, str(path), path.parent)
