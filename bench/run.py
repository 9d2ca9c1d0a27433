"""The cost of a sweep, part by part, against the alternative a user would pick; writes bench/RESULTS.md.

    python bench/run.py --data-dir ../shared/data [--only eval,overhead,peer,early,methods] [--scale small|medium]
    python bench/run.py --report        # rebuild RESULTS.md from bench/results/*.json only

Each item runs in its own process (its own Ray, its own memory) and writes
``bench/results/<item>.json``; RESULTS.md is then written from every result file
present, so the items can run in stages. ``--scale`` picks the sizes below (see each
script's flags); ``--set ITEM="--flag value ..."`` adds flags to one item.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from _common import BENCH, RESULTS_DIR, fmt, load, parser, table, verdict

SCRIPTS = {"eval": "eval_speed.py", "overhead": "trial_overhead.py", "peer": "peer_search.py",
           "early": "early_stopping.py", "methods": "method_step_cost.py"}
#: Sizes that finish each item in about 5-15 minutes on 2 loaded cores ("small") or want a quiet machine ("medium").
SCALES = {
    "small": {"eval": "--per-language 200 --layers 4", "overhead": "--trials 3 --train-size 32 --per-language 10",
              "peer": "--trials 3 --train-size 160 --per-language 20 --layers 3",
              "early": "",  # the quickstart budget as shipped: hours on 2 cores
              "methods": "--layers 4 --max-length 64 --steps 3"},
    "medium": {"eval": "--per-language 200", "overhead": "--trials 5 --train-size 64 --per-language 50",
               "peer": "--trials 6 --train-size 1000 --per-language 100 --layers 6",
               "early": "--num-samples 12",
               "methods": "--max-length 64"},
}
TRIAL_S = 300.0  # the reference trial: 5 minutes


def run_items(items: list[str], data_dir: str, scale: str, extra: dict[str, str]) -> None:
    for item in items:
        cmd = [sys.executable, str(BENCH / SCRIPTS[item]), "--data-dir", data_dir,
               *shlex.split(SCALES[scale][item]), *shlex.split(extra.get(item, ""))]
        print("+", " ".join(cmd), flush=True)
        # The step costs are measured on one thread, as before (bench/README.md).
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if item == "methods" else None
        subprocess.run(cmd, check=False, env=env)


def _head(title: str, script: str, result: dict) -> list[str]:
    return [f"## {title} (`bench/{script}`)", "", f"    {result['command']}", ""]


def write_report(early: dict | None = None, path: Path | None = None) -> str:
    """RESULTS.md (or ``path``) from ``bench/results/*.json``; ``early``: item 4's results where they are
    not (yet) ``bench/results/early_stopping.json`` (``bench/early_stopping.py`` passes its own)."""
    from early_stopping import item_four

    ov, peer, methods = (load(k) for k in ("overhead", "peer", "methods"))
    early = early if early is not None else load("early_stopping")
    evals = [(p.stem, json.loads(p.read_text())) for p in sorted(RESULTS_DIR.glob("eval*.json")) if p.stem != "eval_clock"]
    ev = evals[0][1] if evals else None
    measured = [r for r in [r for _, r in evals] + [ov, peer, early, methods] if r and "machine" in r]
    loads = [r["machine"]["load_1min_at_start"] for r in measured] or [float("nan")]
    machines = {f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in measured}
    out = ["# Benchmarks: the cost of a sweep", "",
           "Written by `python bench/run.py` from its own measurements (`bench/results/*.json`); do not edit by hand.", "",
           f"Machine: {'; '.join(sorted(machines)) or 'n/a'}; torch CPU, no GPU. Every figure here was measured on that "
           "CPU machine; GPU throughput (training step and evaluation of the offline model and an XLM-R-base-size "
           "model) is part c of the GPU bundle (`bench/gpu/`), not measured yet ([gpu/RESULTS.md](gpu/RESULTS.md)).",
           "",
           "The machine is shared with other engineers' jobs (1-minute load averages of "
           f"{min(loads):.1f}-{max(loads):.1f} on 2 cores at the items' starts), and items ran side by side to fit the "
           "time, so absolute times are slower than on a quiet machine and drift: every comparison runs both sides in "
           "the same script, interleaved set by set or in ABBA order where it can be, and is reported as a ratio. "
           "Under that load OpenMP threads of a 2-thread torch stall each other, so every item uses 1 thread per trial.",
           "", "## Summary", "", "| # | item | goal | measured | verdict |", "|---|---|---|---|---|"]
    sections = []

    for name, ev in evals:
        rows = {r["evaluator"]: r for r in ev["rows"]}
        ours, dyn = rows["ours"], rows["Trainer, dynamic padding"]
        equal = ours["predictions_differing_from_padded_trainer"] == 0
        ok = ours["throughput_x_padded_trainer"] >= 1.5 and equal
        s = ev["scale"]
        out.append(f"| 1 | 17-language evaluation throughput vs padded `Trainer.evaluate` ({s.get('layers', 12)} layers, "
                   f"{s['per_language']} pairs per set, batch {s['batch_size']}) | >= 1.5x, equal accuracy | "
                   f"{ours['throughput_x_padded_trainer']:.2f}x ({ours['end_to_end_x_padded_trainer']:.2f}x with "
                   f"per-trial tokenisation); {ours['predictions_differing_from_padded_trainer']} of {ours['pairs']} "
                   f"predictions differ (classes predicted: {len(ours['predicted_classes'])}) | {verdict(ok)} |")
        sec = _head(f"1. Evaluation, {s.get('layers', 12)} layers, {s['per_language']} pairs per set", "eval_speed.py", ev) + [
               f"`bench/results/{name}.json`. Offline model ({s.get('layers', 12)} layers), classifier head seeded, {s['per_language']} pairs per language set x "
               f"{s['sets']} sets (XNLI 15 + PAWS-X 7) = {s['pairs']} pairs, max length {s['max_length']}, batch "
               f"{s['batch_size']}, {s['threads']} torch thread(s); mean pair length {s['mean_tokens']:.1f} tokens. "
               "The three evaluators run set by set in turn (after an untimed warm-up), so load drift weighs on all.", ""]
        sec += table(["evaluator", "tokenisation per trial (s)", "forward passes (s)", "pairs/s", "x padded Trainer",
                      "end to end x padded Trainer", "predictions differing from padded Trainer",
                      "max accuracy diff (points)"],
                     [[r["evaluator"], f"{r['tokenise_s']:.2f}", f"{r['eval_s']:.1f}", f"{r['pairs_per_s']:.1f}",
                       f"{r['throughput_x_padded_trainer']:.2f}", f"{r['end_to_end_x_padded_trainer']:.2f}",
                       r["predictions_differing_from_padded_trainer"],
                       f"{r['max_abs_accuracy_diff_vs_padded_trainer']:.2f}"] for r in ev["rows"]])
        tk, full = ev["tokenisation"], ev.get("full_tokenisation")
        sec += ["", f"Tokenisation of these sets: {tk['no_cache_s']:.2f} s without the cache, {tk['cold_cache_s']:.2f} s "
                f"filling it (the sweep's first trial), {tk['warm_cache_s']:.3f} s reading it (every later trial). "
                + (f"The full validation sets ({full['pairs']} pairs): {full['no_cache_s']:.1f} s to tokenise, "
                   f"{full['cold_cache_s']:.1f} s to fill the cache, {full['warm_cache_s']:.2f} s to read it: what each "
                   "trial after the first saves. " if full else "") +
                "Against the dynamic-padding Trainer (the Trainer's "
                f"default collator) ours is {ours['pairs_per_s'] / dyn['pairs_per_s']:.2f}x: most of the gain over "
                "the padded loop is not padding to `max_length`, which dynamic padding also avoids; sorting by length "
                "only helps when a set spans several batches (" + str(-(-s['per_language'] // s['batch_size']))
                + " per set here).", ""]
        if len(ours["predicted_classes"]) == 1:
            sec += ["Here the seeded, untrained head predicts one class for every pair, so equal predictions say little "
                    "about equal accuracy; the run that predicts several classes is the check.", ""]
        if not ok:
            sec += ["**Goal missed.** " + ("Predictions differ from the padded loop; see the table. " if not equal else "")
                    + "What pays here is the share of padding the padded loop computes (mean length against "
                    "`max_length`); at short `max_length` or with a Trainer that pads dynamically the margin shrinks. "
                    "What would close it: SDPA attention at evaluation (the model loads with eager attention so that "
                    "attention terms can read the maps), or bf16 on a GPU.", ""]
        sections.append("\n".join(sec))

    if ov:
        def steady_overhead(side: str) -> float:
            """Mean overhead of trials 2.. (trial 1 also starts Ray) over all runs of a side."""
            values = [t["overhead_s"] for r in ov[f"{side}_runs"] for t in (r["trials"][1:] or r["trials"])]
            return sum(values) / len(values)

        mean_ours = steady_overhead("ours")
        share = mean_ours / TRIAL_S
        line = f"| 2 | per-trial overhead (previous trial's end -> first step) | <= 5 % of a 5-min trial (15 s) | " \
               f"{mean_ours:.1f} s = {100 * share:.1f} % (mean of trials 2.. over {len(ov['ours_runs'])} sweep(s))"
        for side, label in (("ours_fresh", "a fresh process per trial"), ("ray_train", "Ray Train worker group")):
            if side in ov:
                other = steady_overhead(side)
                line += f"; {label}: {other:.1f} s (ours takes {mean_ours / other:.2f}x its time)"
        out.append(line + f" | {verdict(share <= 0.05)} |")
        s = ov["scale"]
        sec = _head("2. Per-trial overhead", "trial_overhead.py", ov) + [
               f"A local sweep of {s['trials']} trials of the quickstart recipe (offline model, {s['layers']} layers, "
               f"frozen word embeddings, length 64), {s['train_size']} English pairs per task, {s['per_language']} "
               f"evaluation pairs per language, {s['cpus_per_trial']} CPU per trial, one trial at a time: start-up "
               "dominates. The tokenisation cache is emptied for this recipe first, so trial 1 tokenises and the "
               "others read it. Times are wall-clock stamps written by the trial processes themselves. Each side ran "
               f"{s['repeats']} sweep(s), in ABBA order.", ""]
        labels = {"ours": "ours: one worker inside the trial process, the process reused for the next trial",
                  "ours_fresh": "before: one worker inside the trial process, a fresh process per trial",
                  "ray_train": "alternative: one-worker Ray Train TorchTrainer per trial"}
        runs = [(name, r) for name in labels for r in ov.get(f"{name}_runs", [])]
        for name, r in runs:
            sec += [f"**{labels[name]}** "
                    f"(sweep wall time {r['wall_s']:.0f} s; after the last trial {r['after_last_trial_s']:.1f} s)", ""]
            sec += table(["trial", "previous end -> trial process entered (s)", "entered -> first step (s)",
                          "overhead (s)", "trial (s)"],
                         [[t["trial"]] + [f"{t[k]:.1f}" for k in ("since_previous_exit_to_enter_s", "enter_to_first_step_s",
                                                                  "overhead_s", "trial_s")] for t in r["trials"]]) + [""]
        sec += ["Trial 1's \"previous end\" is the sweep's start, so its first column includes starting Ray. "
                "\"Entered -> first step\" is the loop's own set-up: the tokenizer (read once per process), two "
                "models (one per task; safetensors are memory-mapped, so a warm read is ~0.1 s), the evaluation and "
                "training sets (cache), optimisers. A reused process skips starting Python and importing torch, "
                "transformers and Ray (`TuneConfig(reuse_actors=True)`; Tune's `FunctionTrainable.reset_config` "
                "starts the next trial in the same actor).", ""]
        if share > 0.05:
            sec += ["**Goal missed.** What remains is Tune's own work between trials (the searcher's suggestion, "
                    "saving the finished trial's checkpoint and the experiment state) and the loop's set-up.", ""]
        sections.append("\n".join(sec))

    if peer:
        ours, theirs = peer["xling_ray"], peer["peer"]
        ow = [r["wall_s"] for r in peer["xling_ray_runs"]]
        pw = [r["wall_s"] for r in peer["peer_runs"]]
        overlap = min(ow) <= max(pw) and min(pw) <= max(ow)
        ok = ours["wall_s"] < theirs["wall_s"] and ours["best_gap"] <= theirs["best_gap"]
        # A model that predicts one class for every pair has a gap of exactly 0 (the languages share ids and
        # labels), and a gap of 0 is hard to beat: when that is the best on both sides, the gap half says nothing.
        nothing_learned = ours["best_gap"] == 0.0 and theirs["best_gap"] == 0.0
        said = (f"wall time {verdict(ours['wall_s'] < theirs['wall_s'])}"
                f"{' (within the run-to-run spread)' if overlap else ''}; gap "
                + ("**not shown** (both sides' best is a model that predicts one class: gap exactly 0)" if nothing_learned
                   else verdict(ours["best_gap"] <= theirs["best_gap"])))
        out.append(f"| 3 | sweep vs `Trainer.hyperparameter_search(backend=\"ray\")`, same space and budget | less wall "
                   f"time, equal or better gap | mean wall: ours takes {sum(ow) / len(ow) / (sum(pw) / len(pw)):.2f}x the "
                   f"peer's; best gap {ours['best_gap']:.2f} vs {theirs['best_gap']:.2f} | {said} |")
        s = peer["scale"]
        sec = _head("3. Against the peer", "peer_search.py", peer) + [
               f"XNLI only (a Trainer fine-tunes one model), 15 languages, {s['per_language']} pairs each (the same ids "
               f"on both sides), {s['train_size']} English pairs, one epoch, offline model cut to {s['layers']} layers, "
               f"frozen word embeddings, length 64; {s['trials']} trials, one at a time, {s['cpus']} CPU each; the "
               "quickstart's space; Optuna TPE with seed 0 on both sides. Each side ran "
               f"{s['repeats']} time(s), in ABBA order.", ""]
        runs = [("xling-ray sweep", x) for x in peer["xling_ray_runs"]] + \
               [("Trainer.hyperparameter_search", x) for x in peer["peer_runs"]]
        sec += table(["", "wall time (s)", "best gap", "its acc_en", "its configuration", "gaps of all trials"], [
            [name, f"{r['wall_s']:.0f}", f"{r['best_gap']:.2f}", fmt(r["best_acc_en"]),
             ", ".join(f"{k}={v:.3g}" for k, v in r["best_config"].items() if not k.startswith("__")),
             ", ".join(fmt(g) for g in r["gaps"])] for name, r in runs])
        sec += ["", f"Best gaps {ours['best_gap']:.2f} (ours) and {theirs['best_gap']:.2f} (peer). " + (
                f"The sides' wall times overlap (ours {min(ow):.0f}-{max(ow):.0f} s, peer {min(pw):.0f}-{max(pw):.0f} s): "
                "at this size the difference is within the run-to-run spread of this machine. " if overlap else "")
                + "The peer tokenises once in the driver and ships the datasets to every trial pickled, and saves a "
                "full checkpoint (model and optimizer) at the end of each trial; ours reads the tokenisation cache and "
                "loads the data files in each trial, sorts evaluation batches by length, and keeps only "
                "`progress.json` for a finished trial.", ""]
        if nothing_learned:
            sec += ["**The gap half of the goal is not shown**: at this budget the best trial on both sides is a model "
                    "that predicts one class for every pair, whose gap is exactly 0; ranking by gap alone prefers such "
                    "a model to one that learned a little (`sweep.constraint` on English accuracy is the guard). XNLI barely leaves chance within the "
                    "few hundred steps 2 CPU cores allow per trial. What would close it: a GPU machine, where trials of "
                    "thousands of steps are minutes.", ""]
        elif not ok:
            sec += ["**Goal missed**: see the table; with so few trials and so small a budget the best gap is decided by "
                    "noise, more trials at a larger budget are needed to separate the two.", ""]
        sections.append("\n".join(sec))

    row, section = item_four(early)  # measured, or how to measure it
    out.append(row)
    sections.append(section)

    if methods:
        worst = max(r["x_baseline"] for r in methods["rows"] if r["baseline"])
        out.append(f"| 5 | regularizer step time over the step with the same encoder passes | <= 1.1x | worst {worst:.3f}x | "
                   f"{verdict(worst <= 1.1)} |")
        s = methods["scale"]
        sec = _head("5. Regularizer cost", "method_step_cost.py", methods) + [
               f"Offline model cut to {s['layers']} layers, frozen word embeddings, no attention dropout, length "
               f"{s['max_length']}, batch {s['batch_size']}, {s['torch_threads']} thread(s), median of {s['steps']} steps.", ""]
        sec += table(["step", "seconds", "x plain CE", "x its baseline"], [
            [r["step"], f"{r['seconds']:.2f}", f"{r['x_plain']:.2f}",
             f"{r['x_baseline']:.3f}" if r["baseline"] else "(baseline)"] for r in methods["rows"]])
        sections.append("\n".join(sec + [""]))

    if ov:
        o = ov["ours"]
        peaks = [t["trial_process_peak_rss_mb"] for t in o["trials"]]
        at_exit = [t["sweep_tree_rss_mb_at_exit"] for t in o["trials"]]
        growth = peaks[-1] - peaks[0]
        out.append(f"| 6 | peak RSS: a trial / the whole local sweep; growth across trials | no growth | trial "
                   f"{max(peaks):.0f} MB, sweep {o['sweep_tree_peak_rss_mb']:.0f} MB; trial peak growth "
                   f"{growth:+.0f} MB over {len(peaks)} trials | {verdict(growth <= 0.05 * peaks[0])} |")
        sec = ["## 6. Memory (from the item-2 sweep, ours)", "",
               "Peak RSS of each trial's process (`getrusage`), and the sum of the RSS of the driver and all its "
               "descendants (Ray's daemons, the trial actors), sampled every 0.5 s; shared pages count once per "
               "process, so the sum overstates it.", ""]
        sec += table(["trial", "trial process RSS at its start (MB)", "trial process peak RSS (MB)",
                      "sweep peak RSS during the trial (MB)", "sweep RSS at the trial's end (MB)"],
                     [[t["trial"]] + [fmt(t.get(k), ".0f") for k in ("trial_process_rss_at_enter_mb", "trial_process_peak_rss_mb",
                                                                    "sweep_tree_peak_rss_mb_in_window", "sweep_tree_rss_mb_at_exit")]
                      for t in o["trials"]])
        sec += ["", f"Whole sweep peak: {o['sweep_tree_peak_rss_mb']:.0f} MB. The trials run one after another in "
                "the same reused process, whose peak RSS is a running maximum: a later trial that held more than "
                "the first would raise it, so the growth above is what a leak across trials would show. A trial "
                "hands its memory back when it ends (`gc.collect()` and glibc's `malloc_trim`): each trial runs in a "
                "new thread of the reused actor, and without the trim glibc keeps the memory a finished thread "
                "freed in that thread's arena, so the process grew with every trial. Sweep RSS "
                f"at trial ends: {', '.join(fmt(x, '.0f') for x in at_exit)} MB.", ""]
        sections.append("\n".join(sec))

    missing = [k for k, r in zip(("eval", "overhead", "peer", "early stopping (item 4)", "methods"),
                                 (ev, ov, peer, early, methods)) if not r]
    out += ["", "Not measured in this run: " + (", ".join(missing) if missing else "nothing of items 1-6")
            + "; GPU figures (no GPU machine).", ""]
    text = "\n".join(out + sections)
    (Path(path) if path is not None else BENCH / "RESULTS.md").write_text(text)
    return text


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--only", default=",".join(SCRIPTS), help=f"comma-separated items of {list(SCRIPTS)}")
    p.add_argument("--scale", choices=list(SCALES), default="small")
    p.add_argument("--set", action="append", default=[], metavar='ITEM="--flag value"', help="extra flags for one item")
    p.add_argument("--report", action="store_true", help="only rebuild RESULTS.md from bench/results/")
    args = p.parse_args()
    if not args.report:
        items = [i.strip() for i in args.only.split(",") if i.strip()]
        unknown = sorted(set(items) - set(SCRIPTS))
        if unknown:
            p.error(f"--only: unknown item(s) {unknown}; known: {list(SCRIPTS)}")
        extra = dict(s.split("=", 1) for s in args.set)
        run_items(items, args.data_dir, args.scale, extra)
    print(write_report())


if __name__ == "__main__":
    main()
