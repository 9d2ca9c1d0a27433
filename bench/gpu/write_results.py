"""Write ``bench/gpu/RESULTS.md`` from the files GPU runs of the bundle wrote.

    python bench/gpu/write_results.py                       # every folder under bench/gpu/results/
    python bench/gpu/write_results.py RESULTS_DIR [...] [-o FILE]

Each results folder holds what ``run.py`` wrote into ``--out`` (``env.json``, ``part_a.json``,
``part_b.json``, ``part_c.json``, ``log.txt``), one folder per run (e.g.
``bench/gpu/results/2026-12-01-a100/``). Part b's runs are merged over the folders (a second run
may run the runs the first did not reach). Every figure on the page is read from those files;
with none, the page says that no GPU figure is measured. A dry run's files (``run.py --dry-run``)
give a page titled as such: CPU and a tiny random model, not GPU figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
sys.path[:0] = [str(REPO), str(HERE.parent)]  # the product, bench/ (its _common)

from _common import fmt, table  # noqa: E402
from xling_ray.leaderboard.table import LANGUAGE_COLUMNS  # noqa: E402

METHOD_ORDER = ["plain", "xlinglearn", "ding2022", "xite", "adjustment", "continual"]

AWAITING = """# GPU results (`bench/gpu/`)

**No GPU figure is measured yet.** No run of the GPU bundle on a GPU is recorded under
`bench/gpu/results/`. The bundle is built and run on CPU in the test suite (`tests/test_gpu_kit.py`:
`prepare.py --no-wheels --max-mib 64` and `run.py --dry-run --budget-s 900` with the tiny random model), so
its steps are checked, but the GPU path (bf16 autocast on CUDA, GPU workers, nccl) has not run on a GPU.

What a GPU run measures, most important first (`bench/gpu/run.py`, each part its share of `--budget-s`):

a. the product's training loop (`run_recipe`) on the GPU with bf16 through its local session (the bundle
   carries no Ray): quickstart trials one at a time against 4 packed onto the GPU (each capped to a quarter
   of its memory, as `--gpus-per-trial 0.25` packs them under Ray): trials per hour and GPU memory per
   trial; and the loop on a DDP-wrapped model over an nccl group of one rank;
b. plain fine-tuning and each method's default configuration at the full budget
   (`search_spaces/budgets/full.yaml`, XTREME's protocol), 3 seeds each, evaluated on the held-out
   validation examples: per-language accuracy, gaps, mean ± std;
c. training-step and 17-language evaluation throughput of the offline model and of an XLM-R-base-size model,
   bf16 against fp32.

How to run it: `bench/README.md`, section "On a GPU". This page is written by
`python bench/gpu/write_results.py` from the files a run writes.
"""


def load_dir(path: Path) -> dict[str, Any]:
    files = {name: path / f"{name}.json" for name in ("env", "part_a", "part_b", "part_c")}
    return {"dir": path, **{name: json.loads(f.read_text()) for name, f in files.items() if f.is_file()}}


def cell(x: Any, digits: int = 2) -> str:
    """A cell of this page: a float to ``digits`` places, – where a run recorded no figure."""
    return fmt(x, f".{digits}f", missing="–")


def mean_std(values: list[float], digits: int = 2) -> str:
    """Mean ± sample standard deviation of the values present (one value: itself)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return cell(values[0] if values else None, digits)
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# ------------------------------------------------------------------------- sections


def section_machine(folders: list[dict]) -> list[str]:
    lines = ["## The machine and the runs", ""]
    for c in folders:
        env = c.get("env")
        if not env:
            continue
        if env.get("setup_error"):
            lines += [f"**{c['dir'].name}**: setup failed, nothing was measured: `{env['setup_error']}`", ""]
            continue
        pk, man, install = env.get("packages", {}), env.get("kit_manifest") or {}, env.get("install", {})
        size = man.get("size", {})
        lines += [f"**{c['dir'].name}** ({env.get('date')}): "
                  f"GPU {env.get('gpu') or 'none'}; {env.get('cpu_count')} CPU cores; Python {env.get('python')}; "
                  f"torch {pk.get('torch')} (CUDA {env.get('torch_cuda')}); transformers {pk.get('transformers')}; "
                  f"carried: pydantic {pk.get('pydantic')}, optuna {pk.get('optuna')}, POT {pk.get('pot')}.", "",
                  f"- command: `{env.get('command')}`",
                  f"- bundle: `{man.get('command', '?')}` on {man.get('prepared', '?')}; "
                  f"{cell(size.get('total_mib'), 1)} MiB with the working tree"
                  + (f" (cap {size['max_mib']:g} MiB)" if size.get("max_mib") else "")
                  + ("; whole English training sets" if man.get("train_full") else "; the offline training sets"),
                  f"- setup {cell(env.get('setup_seconds'), 1)} s (wheels {install.get('status', '–')} "
                  f"{cell(install.get('seconds'), 1)} s, model {cell(env.get('model_seconds'), 1)} s, "
                  f"tokenising {cell(env.get('warm_seconds'), 1)} s); whole run {cell(env.get('total_seconds'), 1)} s; "
                  f"parts: " + ", ".join(f"{k} {v}" for k, v in (env.get("summary") or {}).items()), ""]
    return lines


def section_a(a: dict | None) -> list[str]:
    lines = ["## a. The product's GPU path: trials one at a time and packed", ""]
    if not a:
        return lines + ["Not measured (no part_a.json).", ""]
    lines += [f"Status: {a.get('status')}; budget {a.get('budget_s')} s; space `{a.get('space')}`; "
              f"{a.get('session')}."] + [f"- {n}" for n in a.get("notes", [])] + [""]
    rows, trials = [], []
    for phase in ("sequential", "packed", "ddp"):
        r = a.get(phase)
        if not r:
            continue
        ok = [t for t in r["trials"] if t.get("status") == "ok"]
        peak = lambda k: cell(max((t[k] for t in ok if t.get(k) is not None), default=None), 0)  # noqa: E731
        rows.append([phase, r["processes"], cell(r.get("memory_fraction")), f"{r['trials_ok']} / {r['trials_started']}",
                     cell(r.get("wall_s"), 1), cell(r.get("trials_per_hour"), 0), cell(r.get("mean_trial_s"), 1),
                     peak("peak_allocated_mib"), peak("peak_reserved_mib"), cell(r.get("gpu_used_peak_mib"), 0),
                     cell(r.get("gpu_used_peak_mib_per_process"), 0)])
        trials += [[phase, t.get("process"), t.get("config_index"),
                    ", ".join(f"{k.split('.')[-1]} {fmt(v, '.3g')}" for k, v in t.get("settings", {}).items()),
                    t.get("status"), cell(t.get("seconds"), 1), cell(t.get("setup_s"), 1), cell(t.get("time_eval_s"), 1),
                    cell(t.get("gap")), cell(t.get("acc_en"), 1), cell(t.get("acc_target"), 1),
                    cell(t.get("peak_allocated_mib"), 0), t.get("error", "")[:120] if t.get("error") else ""]
                   for t in r["trials"]]
    lines += table(["phase", "processes", "memory cap", "trials ok / started", "wall s", "trials / hour",
                    "mean trial s", "peak allocated MiB (max over trials)", "peak reserved MiB",
                    "nvidia-smi peak MiB (GPU)", "nvidia-smi peak / process"], rows, cell) + [""]
    lines += ["Every trial:", ""] + table(
        ["phase", "process", "config", "settings", "status", "s", "setup s", "eval s", "gap", "acc_en", "acc_target",
         "peak allocated MiB", "error"], trials, cell) + [""]
    ddp = a.get("ddp")
    if ddp:
        sess = next((t.get("session") for t in ddp["trials"] if t.get("session")), None)
        lines += [f"DDP check: {ddp['trials_ok']} of {ddp['trials_started']} trial(s) ran with the model wrapped in "
                  f"DistributedDataParallel over a process group of one rank (backend {sess.get('backend') if sess else '?'}).", ""]
    return lines


def merged_b(folders: list[dict]) -> tuple[dict | None, list[dict]]:
    parts = [c["part_b"] for c in folders if c.get("part_b")]
    if not parts:
        return None, []
    runs: dict[str, dict] = {}
    for p in parts:
        for r in p.get("runs", []):
            if r.get("name") not in runs or r.get("status") == "ok":
                runs[r["name"]] = r
    return parts[0], list(runs.values())


def section_b(folders: list[dict]) -> list[str]:
    lines = ["## b. Plain fine-tuning and each method's default configuration at the full budget", ""]
    first, runs = merged_b(folders)
    if first is None:
        return lines + ["Not measured (no part_b.json).", ""]
    proto = first.get("protocol", {})
    lines += [f"Protocol: {proto.get('budget')}: {proto.get('train')}; {proto.get('recipe')}, "
              f"{proto.get('max_length')} tokens, {proto.get('seeds')} seed(s); "
              f"evaluation: {proto.get('evaluation')}; plain: {proto.get('plain')}; methods: {proto.get('methods')}. "
              f"{first.get('processes')} runs at a time on the GPU ({first.get('processes_why', '–')}). Only runs "
              "that finished count in the tables; a run killed at the budget shows its last evaluation (epoch) "
              "under every run.", ""]
    ok = [r for r in runs if r.get("status") == "ok"]
    by_method: dict[str, list[dict]] = {}
    for r in ok:
        by_method.setdefault(r["method"], []).append(r)
    methods = [m for m in METHOD_ORDER if m in by_method] + sorted(set(by_method) - set(METHOD_ORDER))
    rows = []
    for m in methods:
        rs = by_method[m]
        col = lambda k: [r["metrics"].get(k) for r in rs]  # noqa: E731
        rows.append([m, len(rs), mean_std(col("gap")), mean_std(col("gap_xnli")), mean_std(col("gap_pawsx")),
                     mean_std(col("acc_en"), 1), mean_std(col("acc_target"), 1),
                     cell(statistics.mean(r["seconds"] for r in rs) / 60, 1),
                     cell(max((r["peak_allocated_mib"] for r in rs if r.get("peak_allocated_mib") is not None),
                             default=None), 0)])
    lines += table(["method", "seeds ok", "gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "minutes per run",
                    "peak allocated MiB"], rows, cell) + ["", "(mean ± sample standard deviation over seeds; accuracies in %, "
                                                       "gaps in points)", ""]
    if "plain" in by_method and len(by_method["plain"]) > 1:
        import pandas as pd

        from part_b import study_module

        study = study_module()
        frames = {m: pd.DataFrame([r["metrics"] for r in by_method[m]]) for m in methods if len(by_method[m]) > 1}
        plain = frames.pop("plain")
        rows = [[m] + [f"{d:+.2f} ± {se:.2f}" for d, se, _ in (study.spread_test(df[k], plain[k])
                                                              for k in ("gap", "acc_target"))]
                + [study.verdict(df, plain)] for m, df in frames.items()]
        if rows:
            lines += ["Against plain fine-tuning (bench/study's screen: a difference counts when it exceeds twice its "
                      "standard error over seeds):", ""]
            lines += table(["method", "gap - plain", "acc_target - plain", "verdict"], rows, cell) + [""]
    rows = [[m] + [cell(statistics.mean(r["metrics"][c] for r in by_method[m]), 1)
                   if all(c in r["metrics"] for r in by_method[m]) else "–" for c in LANGUAGE_COLUMNS] for m in methods]
    lines += ["Accuracy (%) per language, mean over seeds:", ""]
    lines += table(["method"] + [c.removeprefix("acc_") for c in LANGUAGE_COLUMNS], rows, cell) + [""]
    rows = [[r.get("name"), r.get("status"), cell(r.get("seconds"), 1)]
            + [cell(r.get("metrics", {}).get(k), d) for k, d in (("epoch", 2), ("gap", 2), ("acc_en", 1), ("acc_target", 1))]
            + [cell(r.get("peak_allocated_mib"), 0), (r.get("error") or "")[:160]] for r in runs]
    lines += ["Every run:", ""] + table(["run", "status", "s", "epoch", "gap", "acc_en", "acc_target",
                                         "peak allocated MiB", "error"], rows, cell) + [""]
    not_run = sorted({n for c in folders if c.get("part_b") for n in c["part_b"].get("not_run", [])} - set(r["name"] for r in runs))
    if not_run:
        lines += [f"Not run (the budget was spent): {', '.join(not_run)}.", ""]
    return lines


def section_c(c: dict | None) -> list[str]:
    lines = ["## c. Throughput: one training step and the 17-language evaluation", ""]
    if not c:
        return lines + ["Not measured (no part_c.json).", ""]
    s = c.get("settings", {})
    lines += [f"Status: {c.get('status')}. Training batch {s.get('batch')} (at most {s.get('length')} tokens), median of "
              f"{s.get('steps')} steps after {s.get('warmup')}; evaluation of {s.get('eval_per_language')} pairs per "
              f"language set, batch {s.get('eval_batch')}."] + [f"- {n}" for n in c.get("notes", [])] + [""]
    rows = [[i["model"], f"{i.get('parameters', 0) / 1e6:.0f} M", i["precision"], i.get("status"),
             cell(i.get("step_median_s"), 4), cell(i.get("train_seqs_per_s"), 0), cell(i.get("mean_padded_length"), 0),
             i.get("eval_pairs"), cell(i.get("eval_s"), 2), cell(i.get("eval_seqs_per_s"), 0),
             cell(i.get("peak_allocated_mib"), 0)] for i in c.get("items", [])]
    lines += table(["model", "parameters", "precision", "status", "step s", "train seq/s", "padded length",
                    "eval pairs", "eval s", "eval seq/s", "peak allocated MiB"], rows, cell) + [""]
    ok = {(i["model"], i["precision"]): i for i in reversed(c.get("items", [])) if i.get("status") == "ok"}
    ratios = [[model] + [f"{ok[model, 'bf16'][k] / ok[model, 'fp32'][k]:.2f}x" for k in ("train_seqs_per_s", "eval_seqs_per_s")]
              for model in dict.fromkeys(i["model"] for i in c.get("items", [])) if {(model, "bf16"), (model, "fp32")} <= set(ok)]
    if ratios:
        lines += ["bf16 against fp32:", ""] + table(["model", "train", "eval"], ratios, cell) + [""]
    if c.get("skipped"):
        lines += [f"Skipped (the budget was spent): {', '.join(c['skipped'])}.", ""]
    return lines


def render(dirs: list[Path]) -> str:
    folders = [load_dir(d) for d in dirs if (d / "env.json").is_file()]
    if not folders:
        return AWAITING
    dry = any((c.get("env") or {}).get("dry_run") for c in folders)
    title = ("# GPU bundle: DRY RUN results (CPU, tiny random model: NOT GPU figures)" if dry
             else "# GPU results (`bench/gpu/`): measured on a GPU")
    lines = [title, "",
             "Written by `python bench/gpu/write_results.py` from the files of the run(s): "
             + ", ".join(f"`{c['dir'].name}/`" for c in folders) + ". Every figure below is read from those files.", ""]
    if dry:
        lines += ["These files come from `run.py --dry-run`: the same steps on this machine's CPU with the test suite's "
                  "tiny random model. They check the bundle's plumbing; their times and accuracies say nothing about a GPU.", ""]
    lines += section_machine(folders)
    lines += section_a(next((c["part_a"] for c in folders if c.get("part_a")), None))
    lines += section_b(folders)
    lines += section_c(next((c["part_c"] for c in folders if c.get("part_c")), None))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", help="results folders (default: every folder under bench/gpu/results/)")
    p.add_argument("-o", "--output", default=str(RESULTS_MD))
    args = p.parse_args(argv)
    dirs = [Path(d) for d in args.dirs] or (sorted(d for d in RESULTS_DIR.iterdir() if d.is_dir())
                                            if RESULTS_DIR.is_dir() else [])
    text = render(dirs)
    Path(args.output).write_text(text)
    print(f"Written: {args.output}" + (" (no GPU results recorded)" if text == AWAITING else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
