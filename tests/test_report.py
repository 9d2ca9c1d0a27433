"""The HTML sweep report, from a real tiny sweep, opened in a real headless browser."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from xling_ray.cli import main
from xling_ray.leaderboard import build_leaderboard
from xling_ray.leaderboard.table import LANGUAGE_COLUMNS
from xling_ray.report import figures
from xling_ray.report.html import render_report
from xling_ray.report.run import heatmap_frame, load_report, param_importances, trial_label

from conftest import TINY_MODEL

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def run_dir(tiny_recipe, tmp_path_factory) -> Path:
    """Two configurations x two seeds of the tiny model, two epochs each, evaluated every 48 training
    examples (6 per language during an epoch, all 12 at its end); the first configuration is the
    space's first point."""
    import ray

    tmp = tmp_path_factory.mktemp("report")
    doc = {
        "recipe": tiny_recipe.with_updates({"train.epochs": 2, "train.eval_every_examples": 48,
                                            "train.eval_subset_per_language": 6}).model_dump(),
        "search": {"train.lr": {"loguniform": [1e-4, 1e-3]}, "train.batch_size": {"choice": [8, 16]}},
        "sweep": {"num_samples": 2, "seeds": 2, "seed": 0,
                  "points_to_evaluate": [{"train.lr": 3e-4, "train.batch_size": 16}]},
    }
    (tmp / "space.yaml").write_text(yaml.safe_dump(doc))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["sweep", str(tmp / "space.yaml"), "--storage", str(tmp / "runs"), "--name", "r", "--quiet"]) == 0
    finally:
        ray.shutdown()
    return tmp / "runs" / "r"


@pytest.fixture(scope="module")
def report_file(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    return out


def test_the_report_has_every_part_and_needs_no_network(run_dir, report_file):
    page = report_file.read_text()
    trials = build_leaderboard(run_dir).trials
    assert len(trials) == 4
    rows = re.search(r"<table id='trials'.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    assert rows.count("<tr") == 4
    for trial_id in trials["trial_id"]:
        assert f">{trial_id}<" in rows
    for part in ("Leaderboard", "mean &plusmn; standard deviation over seeds", "Accuracy per trial and language",
                 "Pareto front", "Hyperparameter importances", "Learning curves", "What the top configurations change"):
        assert part in page
    assert "<th class='en'>acc_en</th>" in page  # the English column stands out
    # Heatmap, gap against target accuracy, learning curves, and importances when the trials differ
    # (the tiny model often learns nothing, and then every configuration has the same gap).
    importances = load_report(str(run_dir)).importances
    assert page.count("src='data:image/png;base64,") == 3 + bool(importances)
    assert bool(importances) or "Not available: " in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched
    # Seed spread: each configuration's gap as mean ± std over its two seeds.
    configs = re.search(r"<table id='configs'.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    assert configs.count("<tr") == 2 and configs.count(" ± ") >= 2
    # Error bars: each configuration's gap_se and gap_se_total in the table, the gap's bars on the figure,
    # and which configurations are within noise of rank 1 in the notes.
    head = re.search(r"<table id='configs'.*?<thead>(.*?)</thead>", page, re.S).group(1)
    assert "gap_se</th>" in head and "gap_se_total</th>" in head and "gap_vs_1</th>" in head
    assert "The bars are ± the gap's standard error (gap_se_total" in page
    assert html.escape("within noise of rank 1 (gap minus rank 1's, 95% paired bootstrap over 12 xnli + 12 pawsx "
                       "shared ids") in page


def test_the_heatmap_shows_the_leaderboards_accuracies(run_dir):
    report = load_report(str(run_dir))
    board = build_leaderboard(run_dir)
    heat = heatmap_frame(report.trials)
    assert list(heat.columns) == LANGUAGE_COLUMNS  # 15 XNLI then 7 PAWS-X columns: the 17 languages by task
    expected = board.trials.set_index("trial_id").loc[heat.index, LANGUAGE_COLUMNS]
    np.testing.assert_array_equal(heat.to_numpy(), expected.to_numpy(float))
    # The figure draws exactly these numbers, row i = trial i of the ranked table.
    labels = [trial_label(r, report.multi_seed) for _, r in report.trials.iterrows()]
    fig = figures.accuracy_heatmap(report.trials, list(heat.columns), labels)
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[0].get_array()), heat.to_numpy())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == labels
    figures.plt.close(fig)
    # Rows follow the leaderboard's ranking.
    assert list(report.trials["rank"]) == sorted(report.trials["rank"])


def test_importances_curves_and_the_config_difference(run_dir):
    report = load_report(str(run_dir), top=3)
    assert len(report.curves) == 4  # both configurations' two seeds
    trials = report.trials.set_index("trial_id")
    for label, curve in report.curves.items():
        # 96 training examples an epoch (48 per task); every 48: at batch 16 (32 a round) the rounds that pass
        # 48, 96, 144, 192; at batch 8 (16 a round) exactly those. Epoch ends are full evaluations.
        batch = trials.loc[label.split()[1], "train.batch_size"]
        seen = [64, 96, 160, 192] if batch == 16 else [48, 96, 144, 192]
        assert list(curve["examples_seen"]) == seen and curve["gap"].notna().all()
        assert list(curve["epoch"]) == pytest.approx([s / 96 for s in seen])
        assert list(curve["eval_full"]) == [0, 1, 0, 1]
        fig = figures.learning_curves({label: curve})
        assert list(fig.axes[0].lines[0].get_xdata()) == seen and fig.axes[0].get_xlabel() == "training examples seen"
        figures.plt.close(fig)
    diff = report.config_diff.set_index("setting")
    # The baseline is the space's first point, which ran; not the recipe's lr (5e-4), which no trial ran.
    assert diff.loc["train.lr", "baseline"] == pytest.approx(3e-4)
    assert "train.batch_size" not in diff.index or diff.loc["train.batch_size", "baseline"] == 16  # a row where one differs
    assert report.baseline_note.startswith("the space's first point")
    best = build_leaderboard(run_dir).configs.iloc[0]
    assert diff.loc["train.lr", f"#1 {best['config_id']}"] == pytest.approx(best["train.lr"])
    ran = build_leaderboard(run_dir).configs["train.lr"].tolist()
    assert any(v == pytest.approx(3e-4) for v in ran)


def test_the_config_difference_compares_with_the_plain_baseline_the_sweep_ran():
    """`constraint.baseline: plain`: the baseline column is the plain configuration as it ran (its weight 0)."""
    from xling_ray.leaderboard.table import Leaderboard
    from xling_ray.report.run import config_difference, diff_baseline
    from xling_ray.tune.space import SearchSpace

    space = SearchSpace.model_validate({
        "recipe": {"train": {"lr": 2e-5}},
        "search": {"train.lr": {"loguniform": [1e-5, 1e-3]}, "losses.xlinglearn.w_dispersion": {"uniform": [0.0, 1.0]}},
        "sweep": {"constraint": {"metric": "acc_en", "baseline": "plain", "delta": 2},
                  "points_to_evaluate": [{"train.lr": 3e-4, "losses.xlinglearn.w_dispersion": 0.5}]}})
    configs = pd.DataFrame({"config_id": ["a", "p"], "rank": [1, 2], "status": "TERMINATED", "gap": [1.0, 2.0],
                            "train.lr": [1e-4, 3e-4], "losses.xlinglearn.w_dispersion": [0.7, 0.0],
                            "baseline": [False, True]})
    board = Leaderboard(configs, configs)
    settings, note = diff_baseline(board, space)
    assert settings["train.lr"] == pytest.approx(3e-4) and settings["losses.xlinglearn.w_dispersion"] == 0.0
    assert note.startswith("the plain baseline the sweep ran (configuration p")
    diff = config_difference(board, space, list(space.search), top=1).set_index("setting")
    assert diff.loc["train.lr", "baseline"] == pytest.approx(3e-4) and diff.loc["train.lr", "#1 a"] == pytest.approx(1e-4)
    assert diff.loc["losses.xlinglearn.w_dispersion", "baseline"] == 0.0
    # Without the plain configuration among the rows, and without a first point: the fixed recipe, said so.
    bare = SearchSpace.model_validate({"recipe": {"train": {"lr": 2e-5}}, "search": {"train.lr": {"loguniform": [1e-5, 1e-3]}}})
    assert diff_baseline(Leaderboard(configs.drop(columns="baseline"), configs), bare) == (
        {}, "the sweep's fixed recipe with none of the searched settings applied (the space names no point to try "
            "first, so no trial need have run it)")


def test_importances_come_from_a_study_rebuilt_from_the_leaderboard():
    """lr decides the gap, batch size does nothing: fANOVA must say so, with the space's
    distributions or, for a run without a saved space, ones inferred from the values."""
    from xling_ray.leaderboard.table import Leaderboard
    from xling_ray.tune.space import SearchSpace

    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-5, -3, 24)
    configs = pd.DataFrame({"config_id": [f"c{i}" for i in range(24)], "status": "TERMINATED",
                            "gap": 20 + 3 * np.log10(lr), "train.lr": lr,
                            "train.batch_size": rng.choice([8, 16], 24)})
    configs.loc[0, "status"] = "RUNNING"  # unfinished: left out
    board = Leaderboard(configs, configs)
    space = SearchSpace.model_validate({"search": {"train.lr": {"loguniform": [1e-5, 1e-3]},
                                                   "train.batch_size": {"choice": [8, 16]}}})
    for s in (space, None):
        imp, note = param_importances(board, s, ["train.lr", "train.batch_size"])
        assert list(imp)[0] == "train.lr" and imp["train.lr"] > 0.9, (s, imp)
        assert sum(imp.values()) == pytest.approx(1.0) and "23 finished" in note
    imp, note = param_importances(Leaderboard(configs.head(2), configs.head(2)), space, ["train.lr"])
    assert imp == {} and "at least 2 finished" in note


def test_a_uri_and_an_interrupted_run(run_dir, tmp_path):
    """Storage given as a URI; a copy of the run with one trial's results gone (as if the
    driver died before that trial reported) still renders, one row per trial."""
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    victim = sorted(p for p in broken.iterdir() if p.is_dir() and p.name.startswith("run_trial"))[0]
    for f in ("result.json", "progress.csv"):
        (victim / f).unlink()
    out = tmp_path / "r.html"
    assert main(["report", f"file://{broken}", "-o", str(out)]) == 0
    page = out.read_text()
    rows = re.search(r"<table id='trials'.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    assert rows.count("<tr") == 4 and "Learning curves" in page


def test_an_empty_run_renders_with_notes():
    from xling_ray.leaderboard.table import Leaderboard
    from xling_ray.report.run import RunReport

    empty = pd.DataFrame(columns=["trial_id", "status", "config_id", "seed"])
    page = render_report(RunReport("/runs/x", Leaderboard(empty, empty), None, empty.assign(rank=[]), []))
    assert "No trials yet" in page and "<img" not in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_a_headless_browser_renders_the_table_and_the_figures(run_dir, report_file, tmp_path):
    """Opens the report in Debian's chromium (installed by .ci/run), takes a screenshot and
    reads the DOM after load: one table row per trial, every figure decoded, not a blank page."""
    from PIL import Image

    browser = _chromium()
    if browser is None:  # a failure, not a skip: the check would silently not happen
        pytest.fail("chromium is not installed: `apt-get install chromium` (.ci/run installs it)")
    url = report_file.resolve().as_uri()

    def run(*extra: str) -> str:
        with tempfile.TemporaryDirectory() as profile:
            done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                                  capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    shot = tmp_path / "report.png"
    run(f"--screenshot={shot}", "--window-size=1400,2400", "--hide-scrollbars")
    dom = run("--dump-dom", "--virtual-time-budget=5000")

    trials = build_leaderboard(run_dir).trials
    body = re.search(r'<table id="trials".*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    assert len(re.findall(r"<tr[ >]", body)) == len(trials) == 4
    figures_loaded = re.search(r'data-figures-loaded="(\d+)"', dom)
    assert figures_loaded and figures_loaded.group(1) == re.search(r'data-figures="(\d+)"', dom).group(1)
    assert int(figures_loaded.group(1)) >= 3

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2400, 1400)
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    saturated = (image.max(-1).astype(int) - image.min(-1)) > 60  # figure colours, not text's greys
    assert colours > 500, f"{colours} distinct colours: a blank or text-only page"
    assert saturated.mean() > 0.01, f"only {saturated.mean():.2%} coloured pixels: the figures did not render"


def _best_checkpoint(run: Path) -> tuple[str, Path]:
    best = build_leaderboard(run).configs.iloc[0]["trial_ids"].split()[0]
    folder = next(p for p in run.iterdir() if p.name.startswith(f"run_trial_{best}"))
    return best, max(folder.glob("checkpoint_*"))


def test_diagnose_a_sweep_run_needs_weights_in_the_trials_checkpoint(run_dir, data_dir, tmp_path, capsys):
    """A finished trial keeps no weights: the error says how to get a model folder. An
    unfinished trial's ``state.pt`` (trainable parameters) is loaded over the recipe's model;
    exported ``models/<task>/`` folders are used as they are."""
    from xling_ray.models import load_model, load_tokenizer
    from xling_ray.report.diagnostics import load_encoder, resolve_encoders

    with pytest.raises(FileNotFoundError, match="xling-ray export .* xling-ray train"):
        resolve_encoders(str(run_dir))

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    best, ckpt = _best_checkpoint(run)
    torch.manual_seed(7)
    trained = {task: load_model(TINY_MODEL, n).state_dict() for task, n in (("xnli", 3), ("pawsx", 2))}
    torch.save({task: {"model": sd} for task, sd in trained.items()}, ckpt / "state.pt")
    pretrained, tuned = resolve_encoders(str(run))
    assert best in tuned.origin and set(tuned.tasks) == {"xnli", "pawsx"}
    assert pretrained.config_for("xnli") == TINY_MODEL  # the recipe's model is the baseline
    model, _ = load_encoder(tuned.config_for("xnli"), 3, tuned.state["xnli"])
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), trained["xnli"][name]), name
    rc = main(["diagnose", str(run), "--data-dir", str(data_dir), "--languages", "en", "de", "ja",
               "-n", "12", "--max-length", "32", "-o", str(tmp_path / "d")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "d" / "diagnostics.csv")
    assert set(table["model"]) == {"pretrained", "fine-tuned"} and len(table) == 6
    assert f"fine-tuned: trial {best}" in capsys.readouterr().out

    (ckpt / "state.pt").unlink()
    load_model(TINY_MODEL, 3).save_pretrained(ckpt / "models" / "xnli")
    load_tokenizer(TINY_MODEL).save_pretrained(ckpt / "models" / "xnli")
    _, tuned = resolve_encoders(str(run))
    assert tuned.tasks == ("xnli",) and (Path(tuned.config_for("xnli").name) / "config.json").is_file()
