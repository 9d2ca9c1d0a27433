"""The training step, batching and the loop, with a tiny random model on real data."""
from __future__ import annotations


import pytest
import torch

from xling_ray.config import LossConfig
from xling_ray.data import get_benchmark, load_train_set
from xling_ray.losses import StepContext, classification_loss
from xling_ray.metrics import transfer_gap
from xling_ray.models import load_model, load_tokenizer
from xling_ray.train import LocalSession, NonFiniteLossError, run_recipe, training_step
from xling_ray.train import loop as loop_module
from xling_ray.data.batches import collate, encode, epoch_batches, eval_batches


@pytest.fixture(scope="module")
def xnli_batch(tiny_recipe):
    tok = load_tokenizer(tiny_recipe.model)
    data = encode(tok, load_train_set(tiny_recipe.data, "xnli"), tiny_recipe.model.max_length)
    return collate(data, list(range(16)), tok.pad_token_id), data, tok


def _model(recipe, task="xnli", seed=0):
    torch.manual_seed(seed)
    return load_model(recipe.model, num_labels=get_benchmark(task).num_labels)


class _Term:
    """A loss term for tests: value given by ``fn``, weight from a closure."""

    needs = frozenset()

    def __init__(self, name, w, fn):
        self.name, self._w, self.fn, self.calls = name, w, fn, 0

    def weight(self, config):
        return self._w

    def __call__(self, ctx: StepContext):
        self.calls += 1
        return self.fn(ctx)


def test_step_lowers_the_loss_on_a_fixed_batch(tiny_recipe, xnli_batch):
    batch, _, _ = xnli_batch
    model = _model(tiny_recipe)
    model.eval()  # no dropout: the same batch gives the same loss, so any drop is the update's
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = training_step(model, batch, LossConfig(), terms=())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_step_without_terms_is_plain_cross_entropy(tiny_recipe, xnli_batch):
    batch, _, _ = xnli_batch
    model = _model(tiny_recipe).eval()
    out = training_step(model, batch, LossConfig(), terms=())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(out.loss, classification_loss(logits, batch["labels"]))
    assert set(out.parts) == {"ce"}


def test_a_term_adds_its_weighted_value_and_weight_zero_is_never_evaluated(tiny_recipe, xnli_batch):
    batch, _, _ = xnli_batch
    model = _model(tiny_recipe).eval()
    off = _Term("off", 0.0, lambda ctx: torch.tensor(float("nan")))
    on = _Term("on", 0.25, lambda ctx: ctx.outputs.logits.pow(2).mean())
    out = training_step(model, batch, LossConfig(), terms=(off, on))
    plain = training_step(model, batch, LossConfig(), terms=())
    assert off.calls == 0 and on.calls == 1
    assert torch.allclose(out.loss, plain.loss + 0.25 * out.parts["on"])
    assert set(out.parts) == {"ce", "on"}


def test_epoch_batches_are_deterministic_and_shard_evenly():
    a = epoch_batches(103, 8, seed=1, epoch=0)
    assert a == epoch_batches(103, 8, seed=1, epoch=0)
    assert a != epoch_batches(103, 8, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(103))
    r0 = [i for b in epoch_batches(103, 8, 1, 0, rank=0, world_size=2) for i in b]
    r1 = [i for b in epoch_batches(103, 8, 1, 0, rank=1, world_size=2) for i in b]
    assert len(r0) == len(r1) == 51 and not set(r0) & set(r1)


def test_eval_batches_cover_every_example_once_and_sort_by_length(xnli_batch):
    _, data, _ = xnli_batch
    shards = [eval_batches(data, 5, rank, 3) for rank in range(3)]
    seen = sorted(i for s in shards for b in s for i in b)
    assert seen == list(range(len(data)))
    lengths = [len(data.input_ids[i]) for b in shards[0] for i in b]
    assert lengths == sorted(lengths)


def test_collate_pads_with_the_pad_id_and_masks_it(xnli_batch):
    batch, data, tok = xnli_batch
    for row in range(len(batch["input_ids"])):
        n = len(data.input_ids[row])
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()


def test_run_reports_every_language_and_the_gaps_match_them(tiny_recipe):
    session = LocalSession()
    last = run_recipe(tiny_recipe, session)
    assert [r["epoch"] for r in session.reports] == [1.0, 2.0]
    xnli = {k.removeprefix("acc_xnli_"): v for k, v in last.items() if k.startswith("acc_xnli_") and k != "acc_xnli_target"}
    pawsx = {k.removeprefix("acc_pawsx_"): v for k, v in last.items() if k.startswith("acc_pawsx_") and k != "acc_pawsx_target"}
    assert len(xnli) == 15 and len(pawsx) == 7 and len(set(xnli) | set(pawsx)) == 17
    assert last["gap_xnli"] == pytest.approx(transfer_gap(xnli))
    assert last["gap_pawsx"] == pytest.approx(transfer_gap(pawsx))
    assert last["gap"] == pytest.approx((last["gap_xnli"] + last["gap_pawsx"]) / 2)
    # 12 examples per language: accuracies are multiples of 100/12.
    assert all(abs(v * 12 / 100 - round(v * 12 / 100)) < 1e-9 for v in xnli.values())


def test_same_seed_same_result_and_resume_reproduces_an_uninterrupted_run(tiny_recipe, tmp_path):
    recipe = tiny_recipe.with_updates({"train.eval_every_steps": 2, "data.tasks": ["pawsx"]})
    reference = LocalSession()
    run_recipe(recipe, reference)
    again = LocalSession()
    run_recipe(recipe, again)
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("_s")}  # noqa: E731 (timings differ)
    assert [strip(r) for r in again.reports] == [strip(r) for r in reference.reports]

    class Killed(Exception):
        pass

    class DiesAfterTwoReports(LocalSession):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            if len(self.reports) == 2:
                raise Killed

    with pytest.raises(Killed):
        run_recipe(recipe, DiesAfterTwoReports(checkpoint_root=str(tmp_path)))
    resumed = LocalSession(checkpoint_root=str(tmp_path))
    run_recipe(recipe, resumed)
    assert len(resumed.reports) == len(reference.reports) - 2
    for got, want in zip(resumed.reports, reference.reports[2:]):
        assert {k: v for k, v in strip(got).items() if k.startswith(("acc_", "gap"))} == \
               {k: v for k, v in strip(want).items() if k.startswith(("acc_", "gap"))}

    # The run's final checkpoint keeps no optimizer or weights, only its progress; restored
    # from it (a driver killed after the last report), the run reports its last metrics again.
    final = tmp_path / "latest"
    assert (final / "progress.json").is_file() and not (final / "state.pt").exists()
    after_the_end = LocalSession(checkpoint_root=str(tmp_path))
    last = run_recipe(recipe, after_the_end)
    assert after_the_end.reports == [last] and strip(last) == strip(reference.reports[-1])


def test_loss_means_divide_each_part_by_the_steps_that_logged_it():
    means = loop_module.LossMeans()
    for ce in (1.0, 2.0, 6.0):  # a task with three steps ...
        means.add("xnli", {"ce": torch.tensor(ce), "xite": torch.tensor(ce / 2)})
    means.add("pawsx", {"ce": torch.tensor(10.0)})  # ... and one with one step
    assert means.means() == {"loss_xnli_ce": pytest.approx(3.0), "loss_xnli_xite": pytest.approx(1.5),
                             "loss_pawsx_ce": pytest.approx(10.0)}
    assert loop_module.LossMeans().means() == {}


def test_tasks_of_different_sizes_report_each_tasks_own_mean_loss(tiny_recipe, monkeypatch):
    """XNLI with 48 examples takes 3 steps an epoch, PAWS-X with 16 one: each reported loss is the
    mean of its own task's steps since the last report (not the sum over half of all steps)."""
    real_load, real_step, real_build = loop_module.load_train_set, loop_module.training_step, loop_module.build_tasks
    monkeypatch.setattr(loop_module, "load_train_set",
                        lambda cfg, task: real_load(cfg, task).subsample(16 if task == "pawsx" else 48, 0))
    task_of, seen = {}, {"xnli": [], "pawsx": []}

    def build(recipe, session):
        tasks, pad_id = real_build(recipe, session)
        task_of.update({id(t.forward_model): t.task for t in tasks})
        return tasks, pad_id

    def step(model, batch, config, **kw):
        result = real_step(model, batch, config, **kw)
        seen[task_of[id(model)]].append(float(result.parts["ce"]))
        return result

    monkeypatch.setattr(loop_module, "build_tasks", build)
    monkeypatch.setattr(loop_module, "training_step", step)
    session = LocalSession()
    run_recipe(tiny_recipe, session)  # 2 epochs, a report after each
    assert [len(v) for v in seen.values()] == [6, 2]
    for epoch, report in enumerate(session.reports):
        xnli, pawsx = seen["xnli"][3 * epoch : 3 * epoch + 3], seen["pawsx"][epoch : epoch + 1]
        assert report["loss_xnli_ce"] == pytest.approx(sum(xnli) / 3, rel=1e-6)
        assert report["loss_pawsx_ce"] == pytest.approx(pawsx[0], rel=1e-6)


def test_a_nan_loss_fails_the_run(tiny_recipe, monkeypatch):
    nan = _Term("nan", 1.0, lambda ctx: torch.tensor(float("nan")))
    real_step = loop_module.training_step
    monkeypatch.setattr(loop_module, "training_step", lambda m, b, c, **kw: real_step(m, b, c, terms=(nan,), **kw))
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        run_recipe(tiny_recipe.with_updates({"data.tasks": ["pawsx"]}), LocalSession())


def test_embedding_diagnostics_are_logged_at_each_evaluation(tiny_recipe):
    """With a learning rate too small to move the weights, the logged diagnostics equal
    those of the model as loaded, computed directly."""
    from xling_ray.data import open_source
    from xling_ray.models import load_model, load_tokenizer
    from xling_ray.train.diagnostics import METRICS, diagnostics_table, embed_parallel, parallel_sentences, summary_metrics
    from xling_ray.train.loop import model_config_for, seed_everything

    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": 1, "train.lr": 1e-12,
                                       "train.diagnostics_per_language": 8})
    session = LocalSession()
    last = run_recipe(recipe, session)
    assert {f"diag_pawsx_{m}" for m in METRICS} <= set(last)
    assert 0 <= last["diag_pawsx_retrieval_en_to_x"] <= 100 and 0 <= last["diag_pawsx_alignment"] <= 2
    seed_everything(recipe.train.seed)  # as build_tasks does for the first task
    model = load_model(model_config_for(recipe), num_labels=2)
    sentences = parallel_sentences("pawsx", ["en", "de", "es", "fr", "ja", "ko", "zh"], 8, "validation", recipe.data.seed,
                                   open_source(recipe.data.data_dir))
    assert set(sentences.texts) == {"en", "de", "es", "fr", "ja", "ko", "zh"}
    direct = summary_metrics(diagnostics_table({"pawsx": embed_parallel(model, load_tokenizer(recipe.model), sentences,
                                                                         max_length=recipe.model.max_length)}))
    for key, value in direct.items():
        assert last[key] == pytest.approx(value, abs=1e-4), key


def test_a_checkpoint_holding_a_crafted_pickle_is_refused_in_one_line_without_running_it(tmp_path):
    """Checkpoints live in shared storage, writable by whoever can write to the bucket: they are
    read with ``weights_only=True``, so a pickle that would run code is refused, unrun."""
    import os

    from xling_ray.train.loop import UnsafeCheckpointError, load_checkpoint_state

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    ckpt = tmp_path / "checkpoint_000000"
    ckpt.mkdir()
    torch.save({"pawsx": {"model": {}}, "rng": Payload()}, ckpt / "state.pt")
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint_state(str(ckpt))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{ckpt / 'state.pt'}: refused")
    assert "system" in message  # names what it would have called
    assert not marker.exists()
    # What xling-ray writes itself (tensors, numbers, RNG states as tensors) loads back whole.
    torch.save({"pawsx": {"model": {"w": torch.ones(2)}, "optimizer": {"param_groups": [{"lr": 1e-4, "betas": (0.9, 0.99)}]}},
                "rng": {"torch": torch.get_rng_state(), "numpy": loop_module._numpy_rng_state(),
                        "python": __import__("random").getstate()}}, ckpt / "state.pt")
    state = load_checkpoint_state(str(ckpt))
    assert torch.equal(state["pawsx"]["model"]["w"], torch.ones(2))
    import numpy as np

    before = np.random.get_state()
    np.random.rand(3)
    loop_module._set_numpy_rng_state(state["rng"]["numpy"])
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]


def test_evaluations_run_on_the_examples_seen_clock_with_a_subset_during_the_epoch(tiny_recipe, tmp_path):
    # 48 pairs per task at batch 16: 3 rounds an epoch, each 2 x 16 = 32 examples; 2 epochs, 192 in all.
    # Every 40 examples: the rounds that pass 40, 80, 120, 160 (64, 96, 128, 160), and each epoch's end.
    recipe = tiny_recipe.with_updates({"train.eval_every_examples": 40, "train.eval_subset_per_language": 5})
    reference = LocalSession()
    run_recipe(recipe, reference)
    reports = reference.reports
    assert [r["examples_seen"] for r in reports] == [64, 96, 128, 160, 192]
    assert [r["epoch"] for r in reports] == pytest.approx([2 / 3, 1.0, 4 / 3, 5 / 3, 2.0])
    assert [r["eval_full"] for r in reports] == [0, 1, 0, 0, 1]
    for r in reports:  # 5 examples per language during the epoch, all 12 at its end
        per = 12 if r["eval_full"] else 5
        accs = [v for k, v in r.items() if k.startswith(("acc_xnli_", "acc_pawsx_")) and not k.endswith("_target")]
        assert len(accs) == 22 and all(abs(v * per / 100 - round(v * per / 100)) < 1e-9 for v in accs)
    # The end of training is the same run as without the clock: evaluating changes no weight.
    plain = LocalSession()
    run_recipe(tiny_recipe, plain)
    strip = lambda r: {k: v for k, v in r.items() if k.startswith(("acc_", "gap"))}  # noqa: E731
    assert strip(plain.reports[-1]) == strip(reports[-1]) and strip(plain.reports[0]) == strip(reports[1])

    class Killed(Exception):
        pass

    class DiesAfterThreeReports(LocalSession):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            if len(self.reports) == 3:
                raise Killed

    from xling_ray.noise import PREDICTIONS_FILE

    with pytest.raises(Killed):
        run_recipe(recipe, DiesAfterThreeReports(checkpoint_root=str(tmp_path)))
    # The mid-epoch checkpoint keeps no predictions: they would be of the subset, not of every evaluated id.
    assert (tmp_path / "latest" / "progress.json").is_file() and not (tmp_path / "latest" / PREDICTIONS_FILE).exists()
    resumed = LocalSession(checkpoint_root=str(tmp_path))
    run_recipe(recipe, resumed)  # from the mid-epoch checkpoint at 128 examples: each later evaluation once
    assert [r["examples_seen"] for r in resumed.reports] == [160, 192]
    assert [strip(r) for r in resumed.reports] == [strip(r) for r in reports[3:]]
    assert (tmp_path / "latest" / PREDICTIONS_FILE).is_file()  # the end of the last epoch: every id's


def test_the_evaluation_subset_takes_the_same_positions_in_every_language():
    from xling_ray.data.batches import EncodedSet

    def parallel(lang: str) -> EncodedSet:  # position i carries token i in every language
        return EncodedSet("xnli", lang, tuple((i,) for i in range(30)), tuple(i % 3 for i in range(30)))

    sets = {lang: parallel(lang) for lang in ("en", "de", "sw")}
    quick = loop_module.eval_subset(sets, 7, seed=0)
    picked = [tuple(ids[0] for ids in d.input_ids) for d in quick.values()]
    assert len(set(picked)) == 1 and len(picked[0]) == 7 and list(picked[0]) == sorted(picked[0])
    assert quick["de"].labels == tuple(i % 3 for i in picked[0])
    assert loop_module.eval_subset(sets, 7, seed=1)["en"].input_ids != quick["en"].input_ids
    assert loop_module.eval_subset(sets, 30, seed=0) is None and loop_module.eval_subset(sets, None, seed=0) is None


def test_train_size_per_task_gives_each_task_its_own_pairs_and_schedule(tiny_recipe, monkeypatch):
    """data.train_size {xnli: 48, pawsx: 16}: XNLI takes 3 steps an epoch and PAWS-X one; each
    task's warm-up and decay span its own steps (its learning rate reaches 0 at its last step)."""
    recipe = tiny_recipe.with_updates({"data.train_size": {"xnli": 48, "pawsx": 16}, "train.epochs": 1,
                                       "train.warmup_ratio": 0.0})
    built = []
    real_build = loop_module.build_tasks

    def build(recipe, session):
        tasks, pad_id = real_build(recipe, session)
        built.extend(tasks)
        return tasks, pad_id

    monkeypatch.setattr(loop_module, "build_tasks", build)
    last = run_recipe(recipe, LocalSession())
    assert {t.task: len(t.train) for t in built} == {"xnli": 48, "pawsx": 16}
    assert {t.task: t.scheduler.last_epoch for t in built} == {"xnli": 3, "pawsx": 1}  # steps taken
    assert all(t.scheduler.get_last_lr()[0] == 0.0 for t in built)  # each schedule ran to its own end
    assert last["examples_seen"] == 64 and last["epoch"] == 1.0


def test_train_size_per_task_must_name_every_task_and_sizes_are_positive():
    from xling_ray.config import DataConfig

    with pytest.raises(ValueError, match=r"data.train_size gives no size for \['pawsx'\]"):
        DataConfig(train_size={"xnli": 100})
    with pytest.raises(ValueError, match=r"data.train_size.pawsx: 0 training examples"):
        DataConfig(train_size={"xnli": 100, "pawsx": 0})
    with pytest.raises(ValueError, match=r"data.train_size: -1 training examples"):
        DataConfig(train_size=-1)
    one = DataConfig(tasks=("xnli",), train_size={"xnli": 100, "pawsx": 300})  # a size for a task left out is unused
    assert one.train_size_of("xnli") == 100 and DataConfig(train_size=7).train_size_of("pawsx") == 7
