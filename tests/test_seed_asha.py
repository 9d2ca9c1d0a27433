"""Early stopping over seed groups (xling_ray.tune.early_stopping): a configuration's seeds are
judged together, on their mean at a rung of training examples, and stopped or kept as one.

The scheduler is driven with Tune's own ``Trial`` objects and constructed results, through a
stand-in for Tune's controller that applies its decisions as Tune does (PAUSE, STOP,
``stop_trial``); one real sweep on the tiny model closes the file."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import yaml
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from xling_ray.config import ConfigError
from xling_ray.tune.early_stopping import STATE_FILE, SeedGroupASHA, load_stopped, stopped_label
from xling_ray.tune.search import SeedGroups
from xling_ray.tune.space import SchedulerConfig, SearchSpace, load_search_space

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


class Controller:
    """What a scheduler reaches of Tune's controller (``get_trials``, ``stop_trial``), applying
    decisions as Tune does: PAUSE pauses the trial, STOP ends it (the scheduler and the searcher
    are told it completed with its last result); ``stop_trial`` of a paused or pending trial tells
    the scheduler it was removed and the searcher it completed without a result."""

    def __init__(self, scheduler: SeedGroupASHA, searcher=None):
        self.scheduler, self.searcher = scheduler, searcher
        self.trials: list[Trial] = []

    def get_trials(self) -> list[Trial]:
        return self.trials

    def add(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        return trial

    def stop_trial(self, trial: Trial) -> None:
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            if self.searcher is not None:
                self.searcher.on_trial_complete(trial.trial_id)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
            if self.searcher is not None:
                self.searcher.on_trial_complete(trial.trial_id, result=trial.last_result)
        trial.set_status(Trial.TERMINATED)

    def report(self, trial: Trial, examples: int, gap: float, **metrics) -> str:
        """``trial`` reports ``gap`` at ``examples`` training examples; returns the decision, applied."""
        trial.set_status(Trial.RUNNING)
        result = {"examples_seen": examples, "gap": gap, **metrics}
        decision = self.scheduler.on_trial_result(self, trial, result)
        trial.update_last_result(dict(result))
        if decision == PAUSE:
            trial.set_status(Trial.PAUSED)
        elif decision == STOP:
            self.stop_trial(trial)
        return decision


def _trial(trial_id: str, lr: float, seed_index: int) -> Trial:
    return Trial("run_trial", config={"train.lr": lr, TRIAL_INDEX: seed_index}, trial_id=trial_id, stub=True)


class Recording(Searcher):
    """The inner searcher of SeedGroups here: a new learning rate per configuration; records what
    it is told (``told``: completions, ``pruned``: configurations stopped early)."""

    def __init__(self):
        super().__init__(metric="gap", mode="min")
        self.told, self.pruned, self.n = [], [], 0

    def suggest(self, trial_id):
        self.n += 1
        return {"train.lr": self.n * 1e-4}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, result, error))

    def prune(self, trial_id, rung, values):
        self.pruned.append((trial_id, rung, values))


def _groups(seeds: int) -> SeedGroups:
    return SeedGroups(Recording(), seeds=seeds, metrics=["gap"])


def _sweep(seeds: int = 2, grace: int = 1000, max_t: int = 4000, rf: float = 2, run_dir=None):
    """A scheduler over SeedGroups, its controller, and ``new_config()``, which suggests a
    configuration's seeds through SeedGroups and adds them as Tune would."""
    groups = _groups(seeds)
    scheduler = SeedGroupASHA("gap", "min", grace_period=grace, max_t=max_t, reduction_factor=rf, seeds=seeds,
                              groups=groups, run_dir=run_dir)
    controller = Controller(scheduler, groups)
    counter = iter(range(10_000))

    def new_config() -> list[Trial]:
        out = []
        for _ in range(seeds):
            trial_id = f"t_{next(counter):05d}"
            config = groups.suggest(trial_id)
            out.append(controller.add(Trial("run_trial", config=config, trial_id=trial_id, stub=True)))
        return out

    return scheduler, controller, groups, new_config


# ---------------------------------------------------------------- judging a group


def test_a_group_whose_mean_is_poor_is_stopped_whole_though_one_seed_is_good():
    scheduler, ctl, groups, new_config = _sweep(seeds=2)
    a0, a1 = new_config()
    assert ctl.report(a0, 1024, 2.0) == PAUSE  # waits, paused, for its configuration's other seed
    assert ctl.report(a1, 1024, 2.0) == CONTINUE  # the first configuration at a rung: nothing to cut
    assert ctl.scheduler.choose_trial_to_run(ctl) is a0  # kept: its waiting seed resumes first
    b0, b1 = new_config()
    # b0 alone is better than both of a's seeds; b's mean (0.5 + 9.0) / 2 = 4.75 is worse than a's 2.0.
    assert ctl.report(b0, 1024, 0.5) == PAUSE
    assert b0.status == Trial.PAUSED and ctl.scheduler.choose_trial_to_run(ctl) is a0  # b0 waits, a0 may go on
    assert ctl.report(b1, 1056, 9.0) == STOP
    assert b0.status == b1.status == Trial.TERMINATED  # the good seed is stopped with its configuration
    where = scheduler.stopped()[b0.trial_id]
    assert where["rung"] == 1000 and where["value"] == pytest.approx(4.75) and where["per_seed"] == [0.5, 9.0]
    assert stopped_label(where) == "1000 examples: gap 4.75"
    # Optuna's side is told once, when the configuration's last seed has ended: pruned, with its mean.
    assert groups.searcher.pruned == [(b0.trial_id, 1000, {"gap": pytest.approx(4.75)})]
    assert groups.searcher.told == []
    # A later report of a stopped configuration's seed (a resumed sweep) is stopped again.
    assert scheduler.on_trial_result(ctl, b1, {"examples_seen": 1100, "gap": 0.1}) == STOP


def test_a_good_group_is_promoted_whole_and_its_waiting_seed_resumes_before_new_trials():
    scheduler, ctl, groups, new_config = _sweep(seeds=3)
    a = new_config()
    for trial in a[:2]:
        assert ctl.report(trial, 1024, 3.0) == PAUSE
    assert ctl.report(a[2], 1024, 3.0) == CONTINUE
    b = new_config()
    # b's seeds 2.5, 3.5, 1.0: one is worse than every seed of a, the mean 2.33 is better than a's 3.0.
    assert ctl.report(b[1], 1024, 3.5) == PAUSE
    assert ctl.report(b[0], 1024, 2.5) == PAUSE
    later = new_config()  # created, not started
    # b[0] and b[1] wait: neither is chosen while b is not judged; a's kept seeds resume first, then the
    # pending trials in order, b's last seed first.
    assert ctl.scheduler.choose_trial_to_run(ctl) in a[:2]
    for trial in a[:2]:
        trial.set_status(Trial.RUNNING)
    assert ctl.scheduler.choose_trial_to_run(ctl) is b[2]
    assert ctl.report(b[2], 1024, 1.0) == CONTINUE
    assert ctl.scheduler.choose_trial_to_run(ctl) in b[:2]  # kept: its waiting seeds before `later`
    assert scheduler.stopped() == {} and all(t.status != Trial.TERMINATED for t in b)
    assert all(t.status == Trial.PENDING for t in later)
    # The next rung (2000) is judged on the mean again, among the configurations that reached it.
    for trial in b[:2]:
        assert ctl.report(trial, 2048, 2.0) == PAUSE
    assert ctl.report(b[2], 2048, 2.0) == CONTINUE  # the first group at 2000


def test_a_configuration_with_a_collapsed_seed_is_judged_worst_whatever_its_gap():
    """A collapsed model's gap is near 0, the best a gap looks: judged on its mean, b (0.1 and 2.0)
    would beat a (3.0). It is stopped instead, and Optuna is told it collapsed (infeasible)."""
    scheduler, ctl, groups, new_config = _sweep(seeds=2)
    a0, a1 = new_config()
    ctl.report(a0, 1024, 3.0, collapsed=0.0)
    assert ctl.report(a1, 1024, 3.0, collapsed=0.0) == CONTINUE
    b0, b1 = new_config()
    assert ctl.report(b0, 1024, 0.1, collapsed=1.0) == PAUSE
    assert ctl.report(b1, 1024, 2.0, collapsed=0.0) == STOP
    where = scheduler.stopped()[b0.trial_id]
    assert where["value"] == pytest.approx(1.05) and where["collapsed"] is True
    assert stopped_label(where) == "1000 examples: gap 1.05, collapsed"
    assert groups.searcher.pruned == [(b0.trial_id, 1000, {"gap": pytest.approx(1.05), "collapsed": 1.0})]
    # A configuration that learned is kept however poor its gap beside collapsed ones: c (5.0) is worse
    # than a, but of the recorded values (a's 3.0 and b's "collapsed") it is not in the worse half.
    c0, c1 = new_config()
    ctl.report(c0, 1024, 5.0, collapsed=0.0)
    assert ctl.report(c1, 1024, 5.0, collapsed=0.0) == CONTINUE
    assert [j["collapsed"] for j in scheduler.state()["judged"]] == [False, True, False]


def test_configurations_that_all_collapsed_at_a_rung_tie_and_none_is_stopped():
    """Early in training every model may still predict the majority class: nothing to judge on."""
    scheduler, ctl, groups, new_config = _sweep(seeds=2)
    for gaps in [(0.0, 0.2), (-0.5, 0.0), (0.1, 0.1)]:
        first, second = new_config()
        ctl.report(first, 1024, gaps[0], collapsed=1.0)
        assert ctl.report(second, 1024, gaps[1], collapsed=1.0) == CONTINUE
    assert scheduler.stopped() == {}


def test_a_seed_that_failed_is_not_waited_for():
    scheduler, ctl, groups, new_config = _sweep(seeds=2)
    a0, a1 = new_config()
    ctl.report(a0, 1024, 2.0)
    ctl.report(a1, 1024, 2.0)
    b0, b1 = new_config()
    assert ctl.report(b0, 1024, 8.0) == PAUSE
    b1.set_status(Trial.RUNNING)
    scheduler.on_trial_error(ctl, b1)
    assert b0.status == Trial.PAUSED  # Tune has not marked it failed yet: it might be retried
    b1.set_status(Trial.ERROR)
    assert scheduler.choose_trial_to_run(ctl) is a0  # b judged on b0 alone (8.0 > a's 2.0): stopped
    assert b0.status == Trial.TERMINATED and scheduler.stopped()[b0.trial_id]["seeds"] == 1


def test_the_plain_baseline_is_never_stopped():
    groups = SeedGroups(Recording(), seeds=1, metrics=["gap"], baseline={"train.lr": 5e-5},
                        run_baseline=True, baseline_metric="gap")
    scheduler = SeedGroupASHA("gap", "min", grace_period=1000, max_t=4000, seeds=1, groups=groups)
    ctl = Controller(scheduler, groups)
    trials = [ctl.add(Trial("run_trial", config=groups.suggest(t), trial_id=t, stub=True)) for t in ("a", "b")]
    assert groups.is_reference("a") and not groups.is_reference("b")
    assert ctl.report(trials[1], 1000, 1.0) == CONTINUE
    assert ctl.report(trials[0], 1000, 9.0) == CONTINUE  # worse than the cutoff, but the floor is measured on it


def test_with_one_seed_it_decides_as_tunes_asha():
    """Plain ASHA, one seed per configuration: the same decisions as Ray's ASHAScheduler on the
    same results, rung by rung, whatever the order they arrive in."""
    rng = random.Random(3)
    ours = SeedGroupASHA("gap", "min", grace_period=1000, max_t=9000, reduction_factor=3, seeds=1)
    tunes = ASHAScheduler(time_attr="examples_seen", metric="gap", mode="min", max_t=9000, grace_period=1000,
                          reduction_factor=3)
    trials = [_trial(f"t{i}", 1e-4 * (i + 1), 0) for i in range(12)]
    for t in trials:
        ours.on_trial_add(None, t)
        tunes.on_trial_add(None, t)
    clock = {t.trial_id: 0 for t in trials}
    live = list(trials)
    decisions = []
    while live:
        t = rng.choice(live)
        clock[t.trial_id] += rng.choice([700, 1000, 1400])
        result = {"examples_seen": clock[t.trial_id], "gap": rng.uniform(0, 10)}
        a, b = ours.on_trial_result(None, t, dict(result)), tunes.on_trial_result(None, t, dict(result))
        decisions.append((a, b))
        if a == STOP:
            live.remove(t)
    assert all(a == b for a, b in decisions)
    stopped_early = [a for a, _ in decisions if a == STOP]
    assert len(stopped_early) == 12 and any(ours.stopped())  # some stopped at a rung, the rest at max_t


# ---------------------------------------------------------------- resume


def _play(ctl, new_config, values):
    """Configurations in turn, each seed reporting its value at 1024 examples."""
    for seed_values in values:
        for trial, v in zip(new_config(), seed_values):
            ctl.report(trial, 1024, v)


def test_decisions_survive_save_and_restore(tmp_path):
    """A resumed sweep: the scheduler restored from its saved state, Tune's trials added again,
    makes the decisions the uninterrupted one makes."""
    values = [(2.0, 2.0), (0.5, 9.0), (1.0, 1.5)]
    scheduler, ctl, groups, new_config = _sweep(seeds=2)
    _play(ctl, new_config, values)
    path = tmp_path / "state.json"
    scheduler.save(str(path))
    assert list(scheduler.stopped()) == ["t_00002"]  # (0.5 + 9.0) / 2 > 2.0; (1.0 + 1.5) / 2 kept

    restored, ctl2, groups2, new_config2 = _sweep(seeds=2)
    restored.restore(str(path))
    assert restored.stopped() == scheduler.stopped()
    # Tune adds the restored trials again (their SeedGroups restored too: the same ids and configurations).
    again = [t for _ in values for t in new_config2()]
    assert [t.trial_id for t in again] == [t.trial_id for t in ctl.trials]
    # A seed of the stopped configuration restarted from an earlier checkpoint reaches the rung again:
    # stopped again, without a new judgement; a kept one goes on.
    assert ctl2.report(again[3], 1024, 0.1) == STOP
    assert ctl2.report(again[4], 1024, 1.0) == CONTINUE
    assert restored.state()["judged"] == scheduler.state()["judged"]
    # A new configuration meets the same cutoffs as in the sweep that was never interrupted.
    for seed_values in [(2.4, 2.6), (1.2, 1.6)]:
        for (t1, t2), v in zip(zip(new_config(), new_config2()), seed_values):
            assert ctl.report(t1, 1024, v) == ctl2.report(t2, 1024, v)
    assert restored.stopped() == scheduler.stopped() and "t_00006" in restored.stopped()


def test_a_resumed_scheduler_judges_collapse_as_the_uninterrupted_one(tmp_path):
    scheduler, ctl, groups, new_config = _sweep(seeds=2)
    for gaps, flags in [((3.0, 3.0), (0.0, 0.0)), ((0.1, 2.0), (1.0, 0.0))]:
        for trial, gap, flag in zip(new_config(), gaps, flags):
            ctl.report(trial, 1024, gap, collapsed=flag)
    path = tmp_path / "state.json"
    scheduler.save(str(path))
    restored, ctl2, groups2, new_config2 = _sweep(seeds=2)
    restored.restore(str(path))
    for _ in range(2):
        new_config2()  # Tune adds the restored trials again
    assert restored.stopped() == scheduler.stopped() and list(restored.stopped()) == ["t_00002"]
    # A new configuration that collapsed meets the same cutoff (the replayed values hold b's "collapsed").
    for (t1, t2), (gap, flag) in zip(zip(new_config(), new_config2()), [(0.0, 1.0), (1.0, 0.0)]):
        assert ctl.report(t1, 1024, gap, collapsed=flag) == ctl2.report(t2, 1024, gap, collapsed=flag)
    assert "t_00004" in scheduler.stopped() and restored.stopped() == scheduler.stopped()


def test_the_state_lives_in_the_run_folder_and_a_resumed_scheduler_reads_it(tmp_path):
    import pickle

    scheduler, ctl, groups, new_config = _sweep(seeds=2, run_dir=str(tmp_path))
    pickled = pickle.dumps(scheduler)  # as Tune pickles it with the Tuner when the sweep starts
    _play(ctl, new_config, [(2.0, 2.0), (0.5, 9.0)])
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert list(saved["stopped"]) == ["t_00002"] and saved["stopped"]["t_00002"]["rung"] == 1000
    assert load_stopped(tmp_path) == saved["stopped"]
    resumed = pickle.loads(pickled)  # the resumed sweep's copy: it reads the run folder's state
    assert resumed.stopped() == scheduler.stopped()
    (tmp_path / "fifo").mkdir()
    assert load_stopped(tmp_path / "fifo") == {}  # a sweep without early stopping has no state


# ---------------------------------------------------------------- Optuna is told once, as pruned


def _optuna_sweep():
    """Two configurations x two seeds suggested by a random Optuna sampler through SeedGroups, their
    scheduler's controller, the four trials (added), and the Optuna study behind it all."""
    import optuna
    from ray import tune

    from xling_ray.tune.search import ConstrainedOptunaSearch, optuna_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = ConstrainedOptunaSearch(space={"train.lr": tune.loguniform(1e-5, 1e-3)}, metric="gap", mode="min",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
    groups = SeedGroups(inner, seeds=2, metrics=["gap"])
    scheduler = SeedGroupASHA("gap", "min", grace_period=1000, max_t=4000, seeds=2, groups=groups)
    ctl = Controller(scheduler, groups)
    trials = [ctl.add(Trial("run_trial", config=groups.suggest(f"t{i}"), trial_id=f"t{i}", stub=True))
              for i in range(4)]
    return ctl, trials, optuna_study(inner)


def test_optuna_marks_a_stopped_configuration_pruned_with_its_mean():
    import optuna

    ctl, trials, study = _optuna_sweep()
    for t, v in zip(trials, (2.0, 2.0, 0.5, 9.0)):
        ctl.report(t, 1024, v)
    for t in trials[:2]:  # the kept configuration trains to its end
        ctl.report(t, 4000, 1.5)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    pruned = study.trials[1]
    assert pruned.value == pytest.approx(4.75) and pruned.intermediate_values == {1000: pytest.approx(4.75)}
    assert pruned.user_attrs["stopped_at_examples"] == 1000 and pruned.user_attrs["gap_per_seed"] == [0.5, 9.0]
    assert study.trials[0].value == pytest.approx(1.5)


def test_optuna_counts_a_configuration_stopped_for_its_collapsed_seed_infeasible():
    import optuna

    ctl, trials, study = _optuna_sweep()
    for t, v, flag in zip(trials, (3.0, 3.0, 0.0, 2.0), (0.0, 0.0, 1.0, 0.0)):
        ctl.report(t, 1024, v, collapsed=flag)
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.value == pytest.approx(1.0)
    assert pruned.constraints == {"collapsed": 1.0} and pruned.user_attrs["collapsed"] is True


# ---------------------------------------------------------------- through Ray


def test_a_sweep_stops_a_poor_configuration_whole_at_its_first_rung(ray_local, tiny_recipe, tmp_path, capsys):
    """Two configurations x two seeds of the tiny model, PAWS-X, one epoch of 48 pairs evaluated every
    16 (rungs at 16 and 32). The first configuration (learning rate 1e-4: mean gap -6.94 at 16 pairs over
    seeds 1 and 2, neither collapsed) is judged first and kept; the second (2e-3: mean gap -9.72 there,
    better, but its seed 2 predicts one class) is judged worse for its collapsed seed and is stopped at
    16, both seeds. Measured with this recipe on the CPU (the trials are deterministic)."""
    from xling_ray.cli import main
    from xling_ray.leaderboard import read_leaderboard
    from xling_ray.tune.search import load_study

    import optuna

    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": 1, "train.eval_every_examples": 16,
                                       "train.eval_subset_per_language": 12, "train.seed": 1})
    doc = {"recipe": recipe.model_dump(mode="json"), "search": {"train.lr": {"loguniform": [1e-5, 1e-2]}},
           "sweep": {"num_samples": 2, "seeds": 2, "seed": 0, "metric": "gap", "mode": "min",
                     # one configuration at a time: the second is judged against the first
                     "max_concurrent_trials": 2,
                     "points_to_evaluate": [{"train.lr": 1e-4}, {"train.lr": 2e-3}],
                     "scheduler": {"type": "asha", "reduction_factor": 2}}}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "asha"]) == 0
    printed = capsys.readouterr().out
    run = tmp_path / "runs" / "asha"
    board = read_leaderboard(run / "leaderboard.csv")
    kept, stopped = (board[board["train.lr"].round(6) == lr].iloc[0] for lr in (1e-4, 2e-3))
    assert (kept["rank"], kept["status"]) == (1, "TERMINATED") and pd.isna(kept["stopped_at"])
    assert stopped["status"] == "STOPPED" and stopped["seeds"] == 2
    assert stopped["stopped_at"].endswith(", collapsed")
    rung, value = stopped["stopped_at"].removesuffix(", collapsed").split(" examples: gap ")
    assert rung == "16" and float(value) == pytest.approx(stopped["gap"], abs=0.01) and float(value) < -9
    trials = read_leaderboard(run / "leaderboard_trials.csv")
    of_stopped = trials[trials["config_id"] == stopped["config_id"]]
    assert len(of_stopped) == 2 and (of_stopped["epoch"] < 0.5).all()  # both seeds ended at the rung (16 of 48)
    assert (trials.loc[trials["config_id"] == kept["config_id"], "epoch"] == 1.0).all()
    assert "stopped_at" in printed and "1 stopped early" in printed
    # Optuna: the kept configuration complete with its mean, the stopped one pruned with its mean at the rung.
    study = load_study(run)
    states = {round(t.params["train.lr"], 6): t for t in study.trials}
    assert states[1e-4].state == optuna.trial.TrialState.COMPLETE
    assert states[1e-4].value == pytest.approx(kept["gap"])
    pruned = states[2e-3]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.value == pytest.approx(stopped["gap"])
    assert pruned.constraints.get("collapsed") == 1.0  # infeasible to the sampler, as a finished collapsed one
    assert pruned.intermediate_values == {16: pytest.approx(stopped["gap"])}
    # The run folder's record of it (keyed by the configuration's first seed; it names its trials).
    [where] = [w for w in load_stopped(run).values() if w["trial_ids"] == sorted(of_stopped["trial_id"])]
    assert where["rung"] == 16 and where["per_seed"] == pytest.approx(list(of_stopped.sort_values("trial_id")["gap"]))

    # Resumed (extended by a third configuration): the decisions made stay made, the stopped seeds are not
    # trained again (Tune's snapshot may hold one as paused), and the new configuration is judged on top.
    judged = json.loads((run / STATE_FILE).read_text())["judged"]
    assert main(["sweep", "--resume", str(run), "--num-samples", "3", "--quiet"]) == 0
    state = json.loads((run / STATE_FILE).read_text())
    assert state["judged"][:len(judged)] == judged and len(state["judged"]) > len(judged)
    assert [w["trial_ids"] for w in state["stopped"].values()].count(where["trial_ids"]) == 1
    again = read_leaderboard(run / "leaderboard.csv")
    assert len(again) == 3
    assert again.set_index("config_id").loc[stopped["config_id"], "stopped_at"] == stopped["stopped_at"]
    for trial_id in of_stopped["trial_id"]:
        [folder] = run.glob(f"run_trial_{trial_id}_*")
        assert len(pd.read_csv(folder / "progress.csv")) == 1  # its one report, at the rung
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in load_study(run).trials) >= 1
