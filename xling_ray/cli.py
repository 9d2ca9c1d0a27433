"""``xling-ray``: the command line.

    xling-ray sweep SPACE.yaml [--data-dir D] [--num-samples N] [--storage DIR] [--name NAME] [--address ADDR]
    xling-ray leaderboard RUN_DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xling_ray.config import ConfigError


def _sweep(args: argparse.Namespace) -> int:
    from xling_ray.leaderboard import build_leaderboard, format_leaderboard, write_leaderboard
    from xling_ray.tune import load_search_space, run_sweep

    overrides = {}
    if args.data_dir:
        overrides["recipe.data.data_dir"] = args.data_dir
    if args.num_samples:
        overrides["sweep.num_samples"] = args.num_samples
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set recipe.train.epochs=1")
        import yaml

        overrides[key] = yaml.safe_load(value)
    space = load_search_space(args.space, overrides)
    name = args.name or f"{Path(args.space).stem}-{__import__('time').strftime('%Y%m%d-%H%M%S')}"
    run_dir = run_sweep(space, storage=args.storage, name=name, address=args.address, verbose=0 if args.quiet else 1)
    board = build_leaderboard(run_dir)
    csv, md = write_leaderboard(board, run_dir)
    print(f"\nLeaderboard of {run_dir} (ranked by transfer gap, lower is better):\n")
    print(format_leaderboard(board))
    print(f"\nWritten: {csv}\n         {md}")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from xling_ray.leaderboard import build_leaderboard, format_leaderboard, write_leaderboard

    board = build_leaderboard(args.run_dir)
    csv, md = write_leaderboard(board, args.run_dir)
    print(format_leaderboard(board))
    print(f"\nWritten: {csv}\n         {md}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xling-ray", description="Sweep fine-tuning recipes for cross-lingual transfer.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run (or resume) a Ray Tune + Optuna sweep over a search space")
    s.add_argument("space", help="search space YAML, e.g. search_spaces/quickstart.yaml")
    s.add_argument("--data-dir", help="local benchmark folder (default: $XLING_DATA_DIR, else the Hugging Face hub)")
    s.add_argument("--num-samples", type=int, help="number of trials (overrides sweep.num_samples)")
    s.add_argument("--storage", default="./xling_runs", help="where runs are written (default ./xling_runs)")
    s.add_argument("--name", help="run name; an existing interrupted run of this name is resumed")
    s.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. recipe.train.epochs=1")
    s.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    s.set_defaults(func=_sweep)

    lb = sub.add_parser("leaderboard", help="rebuild the leaderboard of a finished or interrupted run")
    lb.add_argument("run_dir")
    lb.set_defaults(func=_leaderboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"xling-ray: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
