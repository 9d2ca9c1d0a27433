"""What users see of a configuration early stopping stopped: the leaderboard's ``stopped_at`` and
status ``STOPPED`` (CSV, Markdown, printed), its rank after every configuration that trained to its
end, the progress line, MLflow's pruned mark and the HTML report."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from xling_ray.leaderboard.table import (Leaderboard, format_leaderboard, group_configs, load_leaderboard, rank_one,
                                         write_leaderboard)
from xling_ray.tune.early_stopping import stopped_label

#: Where early stopping stopped configuration "b": its rung and its seeds' mean gap there.
STOPPED = {"b": {"rung": 1000, "metric": "gap", "value": 0.4, "seeds": 2, "per_seed": [0.3, 0.5]}}


def _trials() -> pd.DataFrame:
    """Configuration a trained to its end (gap 3.0); b was stopped at its first rung, where its gap
    (0.4, on the subset evaluated during the epoch) happens to be lower than a's final one."""
    rows = []
    for config, gaps, epoch in (("a", (2.0, 4.0), 1.0), ("b", (0.3, 0.5), 0.25)):
        for seed, gap in enumerate(gaps):
            rows.append({"trial_id": f"{config}{seed}", "status": "TERMINATED", "config_id": config, "seed": seed,
                         "gap": gap, "acc_en": 60.0, "acc_target": 55.0, "collapsed": 0.0, "epoch": epoch,
                         "train.lr": 1e-4 if config == "a" else 3e-4, "error": ""})
    return pd.DataFrame(rows)


def test_a_stopped_configuration_is_marked_and_ranks_after_every_finished_one():
    configs = group_configs(_trials(), stopped=STOPPED)
    assert list(configs["config_id"]) == ["a", "b"]  # b's lower gap is a rung's, not an end's
    a, b = configs.iloc[0], configs.iloc[1]
    assert (a["status"], a["stopped_at"]) == ("TERMINATED", "")
    assert (b["status"], b["stopped_at"]) == ("STOPPED", "1000 examples: gap 0.40")
    assert rank_one(configs)["config_id"] == "a"
    # Only b: stopped, it is no result to call the best.
    assert rank_one(group_configs(_trials()[_trials()["config_id"] == "b"], stopped=STOPPED)) is None
    assert stopped_label({"rung": 1500.0, "metric": "acc_en", "value": 51.234}) == "1500 examples: acc_en 51.23"


def test_csv_markdown_and_printed_leaderboards_show_stopped_at(tmp_path):
    trials = _trials()
    board = Leaderboard(group_configs(trials, stopped=STOPPED), trials)
    write_leaderboard(board, tmp_path)
    back = load_leaderboard(tmp_path)
    assert list(back.configs["stopped_at"].fillna("")) == ["", "1000 examples: gap 0.40"]
    assert list(back.configs["status"]) == ["TERMINATED", "STOPPED"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "stopped_at" in md and "1000 examples: gap 0.40" in md
    assert "- stopped_at: early stopping (sweep.scheduler asha) stopped the configuration" in md
    printed = format_leaderboard(board)
    assert "stopped_at" in printed and "1000 examples: gap 0.40" in printed
    # Without early stopping the CSV keeps an empty column and the printed view leaves it out.
    plain = Leaderboard(group_configs(trials), trials)
    assert "stopped_at" in plain.configs and not plain.configs["stopped_at"].astype(bool).any()
    assert "stopped_at" not in format_leaderboard(plain)


def test_export_refuses_a_stopped_configuration_and_says_where_it_stopped(tmp_path):
    from xling_ray.config import ConfigError
    from xling_ray.leaderboard.export import export_config
    from xling_ray.tune.space import SearchSpace
    from xling_ray.tune.sweep import save_space

    save_space(SearchSpace(search={"train.lr": {"loguniform": [1e-5, 1e-3]}}), str(tmp_path))
    trials = _trials()
    board = Leaderboard(group_configs(trials, stopped=STOPPED), trials)
    with pytest.raises(ConfigError, match="rank 2 .b. is STOPPED.*stopped it at 1000 examples: gap 0.40"):
        export_config(tmp_path, rank=2, board=board)


class _Scheduler:
    """What the progress line and MLflow ask the sweep's scheduler: which configuration a trial is of,
    and what it stopped."""

    def config_of(self, trial_id: str) -> str:
        return trial_id[0]

    def stopped(self) -> dict:
        return dict(STOPPED)


def test_the_progress_line_counts_stopped_configurations_and_says_where_a_trial_stopped():
    from test_progress import Clock, FakeTrial

    from xling_ray.tune.progress import SweepProgress

    out = io.StringIO()
    progress = SweepProgress("gap", "min", stream=out, clock=Clock(), early_stopping=_Scheduler())
    progress.setup(num_samples=4)
    trials = [FakeTrial("a0", "TERMINATED", {"gap": 3.0, "time_total_s": 60.0}, config={"train.lr": 1e-4}),
              FakeTrial("b0", "TERMINATED", {"gap": 0.3, "time_total_s": 9.0}, config={"train.lr": 3e-4}),
              FakeTrial("b1", "PAUSED", {"gap": 0.5}, config={"train.lr": 3e-4, "__trial_index__": 1})]
    progress.on_trial_complete(0, trials, trials[1])
    assert out.getvalue().splitlines() == [
        "[2/4 done, 0 failed] trial b0 stopped early at 1000 examples (config b, mean gap 0.40 of 2 seed(s) there)"]
    line = progress.status_line(trials)
    assert "| 1 stopped early | 1 waiting |" in line
    assert "best gap 3.00 (config a0)" in line  # b's 0.3 and 0.4 are a rung's figures


def test_mlflow_marks_a_stopped_trial_pruned(tmp_path):
    from test_progress import FakeTrial

    from xling_ray.tune.tracking import MLflowTracking, mlflow_client

    uri = f"file:{tmp_path / 'mlruns'}"
    tracking = MLflowTracking(uri, str(tmp_path / "run"), early_stopping=_Scheduler())
    tracking.setup()
    kept, stopped = (FakeTrial("a0", "RUNNING", config={"train.lr": 1e-4}),
                     FakeTrial("b0", "RUNNING", config={"train.lr": 3e-4}))
    for t in (kept, stopped):
        tracking.on_trial_start(0, [kept, stopped], t)
        tracking.on_trial_complete(1, [kept, stopped], t)
    client = mlflow_client(uri)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([tracking._experiment_id])
            if "trial_id" in r.data.tags}
    assert runs["b0"].info.status == "KILLED"
    assert runs["b0"].data.tags["pruned"] == "true" and runs["b0"].data.tags["stopped_at"] == "1000 examples: gap 0.40"
    assert runs["a0"].info.status == "FINISHED" and "pruned" not in runs["a0"].data.tags


def test_the_html_report_names_the_stopped_configurations():
    from xling_ray.report.html import _stopped_note

    configs = group_configs(_trials(), stopped=STOPPED).assign(rank=[1, 2])
    note = "".join(_stopped_note(configs))
    assert "Stopped early" in note and "#2 b at 1000 examples: gap 0.40" in note
    assert _stopped_note(group_configs(_trials())) == []
