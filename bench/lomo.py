"""Leave-one-model-out on the real vLLM runs: fit the efficiencies on one model, predict the other.

    python bench/lomo.py [--data ../shared/data/vllm_h100_runs] [--out-dir tests/validation/fixtures/lomo]

For each model of the development runs, ``calibrate from-runs`` fits the serving preset on that
model's runs only and ``validate`` predicts every run with it; prints the MAPE (non-overloaded
stages) per (fitted on, predicted) pair and metric, writes each preset to
``OUT_DIR/H100-SXM_fit_on_<model>.yaml`` (the test ``tests/validation/test_lomo_shared.py`` checks
the goals with them) and ``OUT_DIR/lomo.json``, and the wall time of each fit.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from fluidserve import specs
from fluidserve.calibration.from_runs import DEFAULT_FIT, fit_efficiencies
from fluidserve.validation import report
from fluidserve.validation.cli import predict_all
from fluidserve.validation.preset import vllm_start_preset
from fluidserve.validation.runs import read_run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "vllm_h100_runs"))
    ap.add_argument("--out-dir", default=str(ROOT / "tests" / "validation" / "fixtures" / "lomo"))
    ap.add_argument("--gpu", default="H100-SXM")
    args = ap.parse_args()
    data = Path(args.data)
    runs = [read_run(d) for d in sorted(data.glob("2026*")) if d.is_dir()]
    if not runs:
        raise SystemExit(f"no runs under {data}; give --data DIR")
    models = [specs.model(r.model, models_dir=data / "model_configs") for r in runs]
    by_model: dict[str, list[int]] = {}
    for i, m in enumerate(models):
        by_model.setdefault(m.name, []).append(i)
    # start and fixed values: the roofline defaults with vLLM's overheads (not the shipped fit)
    base = vllm_start_preset(args.gpu)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = []
    for train, idx in by_model.items():
        t0 = time.perf_counter()
        res = fit_efficiencies([runs[i] for i in idx], [models[i] for i in idx], args.gpu, DEFAULT_FIT, base,
                               progress=False)
        wall = time.perf_counter() - t0
        preset = replace(res["preset"], provenance={
            "kind": f"leave-one-model-out: fitted on {train} only (bench/lomo.py)",
            "runs": res["runs"], "fitted": list(DEFAULT_FIT), "parameters": res["parameters"]})
        preset.write(out_dir / f"{args.gpu}_fit_on_{train}.yaml")
        for test, jdx in by_model.items():
            rows = report.rows([runs[j] for j in jdx],
                               predict_all([runs[j] for j in jdx], [models[j] for j in jdx], args.gpu, preset))
            errs = report.mape(rows)
            table.append({"fitted_on": train, "predicted": test, "fit_wall_s": wall, "evaluations": res["evaluations"],
                          **{k: errs[k] for k in report.MAIN_METRICS}})
            print(f"fit on {train:<28} predict {test:<28} E2E {errs['e2e_mean']:5.1f}%  TTFT {errs['ttft_mean']:5.1f}%  "
                  f"TPOT {errs['tpot_mean']:5.1f}%   (fit {wall:.0f} s, {res['evaluations']} simulations)", flush=True)
    (out_dir / "lomo.json").write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
