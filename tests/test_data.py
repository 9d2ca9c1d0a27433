"""The data package on the real offline files (shared/data) and on small files written here."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from xling_ray.config import ALL_LANGUAGES, PAWSX_LANGUAGES, XNLI_LANGUAGES, DataConfig
from xling_ray.data import (
    BENCHMARKS,
    DataError,
    DataSource,
    HubSource,
    LocalSource,
    PairDataset,
    clear_caches,
    load_eval_sets,
    load_train_set,
    open_source,
)

from conftest import DATA_DIR as SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    # Each test sees no XLING_DATA_DIR unless it sets one, and no table cached by another test.
    monkeypatch.delenv("XLING_DATA_DIR", raising=False)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture(scope="module")
def shared() -> LocalSource:
    # Missing data is a broken setup, not a reason to pass quietly.
    assert SHARED_DATA.is_dir(), f"offline data not found at {SHARED_DATA} (set XLING_TEST_DATA_DIR)"
    return LocalSource(SHARED_DATA)


def cfg(**kw) -> DataConfig:
    kw.setdefault("data_dir", str(SHARED_DATA))
    return DataConfig(**kw)


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


XNLI_HEADER = ["id", "premise", "hypothesis", "label"]
XNLI_ROWS = [["0", "A man sleeps.", "Someone rests.", "0"], ["1", "A man sleeps.", "He runs.", "2"], ["2", "A dog.", "An animal?", "1"]]


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize("lang", XNLI_LANGUAGES)
def test_xnli_counts_and_labels(shared, lang):
    ds = shared.load_eval("xnli", lang, "validation")
    assert (ds.task, ds.language, ds.split, len(ds)) == ("xnli", lang, "validation", 2490)
    assert Counter(ds.labels) == {0: 830, 1: 830, 2: 830}
    assert all(ds.text_a) and all(ds.text_b)


@pytest.mark.parametrize("lang", PAWSX_LANGUAGES)
def test_pawsx_counts_and_labels(shared, lang):
    ds = shared.load_eval("pawsx", lang, "validation")
    assert len(ds) == 2000
    assert set(ds.labels) == {0, 1}


def test_train_sets(shared):
    mnli, paws = shared.load_train("xnli"), shared.load_train("pawsx")
    assert (len(mnli), mnli.language, mnli.split) == (15001, "en", "train")
    assert set(mnli.labels) == {0, 1, 2}
    assert len(paws) == 8000 and set(paws.labels) == {0, 1}


@pytest.mark.parametrize("task", ["xnli", "pawsx"])
def test_same_ids_in_every_language(shared, task):
    en = shared.load_eval(task, "en", "validation")
    assert len(set(en.ids)) == len(en)
    for lang in BENCHMARKS[task].languages:
        assert shared.load_eval(task, lang, "validation").ids == en.ids, lang


def test_all_17_languages():
    sets = load_eval_sets(cfg(languages=ALL_LANGUAGES))
    assert set(sets["xnli"]) == set(XNLI_LANGUAGES) and len(sets["xnli"]) == 15
    assert set(sets["pawsx"]) == set(PAWSX_LANGUAGES) and len(sets["pawsx"]) == 7
    assert len(set(XNLI_LANGUAGES) | set(PAWSX_LANGUAGES)) == 17
    assert all(len(d) == 2490 for d in sets["xnli"].values())
    assert all(len(d) == 2000 for d in sets["pawsx"].values())


def test_cap_is_deterministic_and_parallel():
    a = load_eval_sets(cfg(eval_max_per_language=60, seed=3))
    b = load_eval_sets(cfg(eval_max_per_language=60, seed=3))
    c = load_eval_sets(cfg(eval_max_per_language=60, seed=4))
    for task, by_lang in a.items():
        en = by_lang["en"]
        assert len(en) == 60
        assert en.ids == b[task]["en"].ids and en.ids != c[task]["en"].ids
        for lang, ds in by_lang.items():
            assert ds.ids == en.ids, (task, lang)
            if task == "xnli":  # PAWS-X labels were re-annotated per language, so only XNLI's are shared
                assert ds.labels == en.labels, (task, lang)
        # Chosen rows keep the file's order.
        full = [i for i in load_eval_sets(cfg(tasks=(task,), languages=("en",)))[task]["en"].ids if i in set(en.ids)]
        assert list(en.ids) == full


def test_a_heldout_part_is_disjoint_from_the_searched_part_and_aligned_across_languages():
    base = dict(eval_skip_first={"xnli": 300}, heldout={"xnli": 500, "pawsx": 400}, seed=2)
    search = load_eval_sets(cfg(**base))
    held = load_eval_sets(cfg(**base, eval_part="heldout"))
    full = load_eval_sets(cfg(eval_skip_first={"xnli": 300}))
    for task, n in (("xnli", 500), ("pawsx", 400)):
        s_ids, h_ids = set(search[task]["en"].ids), set(held[task]["en"].ids)
        assert len(h_ids) == n and not s_ids & h_ids
        assert s_ids | h_ids == set(full[task]["en"].ids)  # together: everything the pool left
        for lang, ds in held[task].items():
            assert ds.ids == held[task]["en"].ids, (task, lang)
    # A cap applies inside the part.
    capped = load_eval_sets(cfg(**base, eval_part="heldout", eval_max_per_language=50))
    assert len(capped["xnli"]["en"]) == 50 and set(capped["xnli"]["en"].ids) <= set(held["xnli"]["en"].ids)
    with pytest.raises(ValueError, match="data.heldout sets nothing aside for"):
        DataConfig(tasks=("xnli", "pawsx"), heldout={"xnli": 10}, eval_part="heldout")


def test_only_english_of_a_task_is_still_loaded():
    sets = load_eval_sets(cfg(languages=("en", "ja", "ar")))
    assert list(sets["xnli"]) == ["en", "ar"]
    assert list(sets["pawsx"]) == ["en", "ja"]
    assert list(load_eval_sets(cfg(languages=("en",), tasks=("pawsx",)))) == ["pawsx"]


def test_train_cap():
    a = load_train_set(cfg(train_size=500, seed=1), "xnli")
    assert len(a) == 500 and a == load_train_set(cfg(train_size=500, seed=1), "xnli")
    assert a.ids != load_train_set(cfg(train_size=500, seed=2), "xnli").ids
    assert len(load_train_set(cfg(train_size=10**6), "pawsx")) == 8000
    assert len(load_train_set(cfg(), "pawsx")) == 8000


def test_subsample(shared):
    ds = shared.load_eval("pawsx", "en", "validation")
    assert ds.subsample(len(ds), 0) is ds and ds.subsample(10**6, 0) is ds
    s = ds.subsample(7, 11)
    assert len(s) == 7 and s == ds.subsample(7, 11)
    assert list(s.ids) == [i for i in ds.ids if i in set(s.ids)]
    assert "n=2000" in repr(ds)


def test_missing_language(shared):
    with pytest.raises(DataError, match=r"'ja'.*'xnli'") as err:
        shared.load_eval("xnli", "ja", "validation")
    assert "en, fr, es" in str(err.value)
    with pytest.raises(DataError, match="unknown task 'mlqa'"):
        shared.load_eval("mlqa", "en", "validation")
    with pytest.raises(DataError, match="split 'train'"):
        shared.load_eval("xnli", "en", "train")


# ---------------------------------------------------------------- small files written here


def test_missing_file(tmp_path):
    write_tsv(tmp_path / "xnli" / "validation-en.tsv", XNLI_HEADER, XNLI_ROWS)
    src = LocalSource(tmp_path)
    assert len(src.load_eval("xnli", "en", "validation")) == 3
    with pytest.raises(DataError, match=r"validation-de\.tsv.*file not found.*language 'de'"):
        src.load_eval("xnli", "de", "validation")
    with pytest.raises(DataError, match=r"mnli-en\.tsv"):
        src.load_train("xnli")
    with pytest.raises(DataError, match="does not exist"):
        LocalSource(tmp_path / "nowhere")


def test_missing_column(tmp_path):
    write_tsv(tmp_path / "xnli" / "validation-fr.tsv", ["id", "premise", "label"], [["0", "x", "1"]])
    with pytest.raises(DataError, match=r"validation-fr\.tsv: line 1.*'hypothesis'.*language 'fr'"):
        LocalSource(tmp_path).load_eval("xnli", "fr", "validation")


@pytest.mark.parametrize("bad", ["3", "-1", "1.0", "", "neutral"])
def test_bad_label(tmp_path, bad):
    rows = [r[:] for r in XNLI_ROWS]
    rows[1][3] = bad
    write_tsv(tmp_path / "xnli" / "validation-de.tsv", XNLI_HEADER, rows)
    with pytest.raises(DataError, match=r"validation-de\.tsv: line 3: column 'label'.*language 'de'"):
        LocalSource(tmp_path).load_eval("xnli", "de", "validation")


def test_ragged_row_and_duplicate_id(tmp_path):
    write_tsv(tmp_path / "xnli" / "validation-de.tsv", XNLI_HEADER, XNLI_ROWS + [["3", "tab\tinside", "b", "0"]])
    with pytest.raises(DataError, match=r"validation-de\.tsv: line 5: 5 fields"):
        LocalSource(tmp_path).load_eval("xnli", "de", "validation")
    write_tsv(tmp_path / "pawsx" / "validation-ko.tsv", ["id", "sentence1", "sentence2", "label"], [["1", "a", "b", "0"], ["1", "c", "d", "1"]])
    with pytest.raises(DataError, match=r"validation-ko\.tsv: line 3: column 'id'"):
        LocalSource(tmp_path).load_eval("pawsx", "ko", "validation")


def test_no_quoting(tmp_path):
    rows = [["0", '"He said', 'hi" she said "', "1"], ["1", "'q'", '""', "0"]]
    write_tsv(tmp_path / "xnli" / "validation-en.tsv", XNLI_HEADER, rows)
    ds = LocalSource(tmp_path).load_eval("xnli", "en", "validation")
    assert ds.text_a == ('"He said', "'q'") and ds.text_b == ('hi" she said "', '""')


def test_rewritten_file_is_read_again(tmp_path):
    path = write_tsv(tmp_path / "xnli" / "validation-en.tsv", XNLI_HEADER, XNLI_ROWS)
    src = LocalSource(tmp_path)
    assert len(src.load_eval("xnli", "en", "validation")) == 3
    write_tsv(path, XNLI_HEADER, XNLI_ROWS[:2])
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse-clock filesystems
    assert len(src.load_eval("xnli", "en", "validation")) == 2


def test_test_split_local(tmp_path):
    write_tsv(tmp_path / "xnli" / "test-en.tsv", XNLI_HEADER, XNLI_ROWS)
    write_tsv(tmp_path / "xnli" / "test-de.tsv", XNLI_HEADER, [[i, f"de {a}", f"de {b}", y] for i, a, b, y in XNLI_ROWS][::-1])
    sets = load_eval_sets(DataConfig(data_dir=str(tmp_path), tasks=("xnli",), languages=("en", "de"), split="test"))
    en, de = sets["xnli"]["en"], sets["xnli"]["de"]
    assert en.split == de.split == "test"
    assert de.ids == en.ids == ("0", "1", "2")  # aligned to English even though de's file is reversed
    assert de.labels == en.labels and de.text_a[0] == "de A man sleeps."


def test_missing_translation_names_language(tmp_path):
    write_tsv(tmp_path / "xnli" / "validation-en.tsv", XNLI_HEADER, XNLI_ROWS)
    write_tsv(tmp_path / "xnli" / "validation-sw.tsv", XNLI_HEADER, XNLI_ROWS[:2])
    with pytest.raises(DataError, match="missing in language 'sw'"):
        load_eval_sets(DataConfig(data_dir=str(tmp_path), tasks=("xnli",), languages=("en", "sw")))


def test_open_source(tmp_path, monkeypatch):
    assert isinstance(open_source(None), HubSource)
    monkeypatch.setenv("XLING_DATA_DIR", str(tmp_path))
    src = open_source(None)
    assert isinstance(src, LocalSource) and src.root == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert open_source(str(other)).root == other  # an explicit directory beats the variable
    monkeypatch.setenv("XLING_DATA_DIR", "")
    assert isinstance(open_source(None), HubSource)
    assert isinstance(src, DataSource) and isinstance(HubSource(), DataSource)


# ---------------------------------------------------------------- the hub, faked


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    calls: list[tuple] = []
    tables = {
        ("facebook/xnli", "de", "validation"): {
            "premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [2, 0, 1]},
        ("nyu-mll/multi_nli", None, "train"): {
            "promptID": [7, 8, 9, 10], "pairID": ["7e", "8n", "9x", "10c"], "premise": ["a", "b", "c", "d"],
            "hypothesis": ["A", "B", "C", "D"], "genre": ["g"] * 4, "label": [0, 1, -1, 2]},
        ("google-research-datasets/paws-x", "ja", "validation"): {
            "id": [5, 9], "sentence1": ["s1", "t1"], "sentence2": ["s2", "t2"], "label": [1, 0]},
        ("google-research-datasets/paws-x", "en", "train"): {
            "id": [1, 2, 3], "sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [0, 1, 1]},
    }

    def load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if (path, name, split) not in tables:
            raise ConnectionError("Couldn't reach the Hugging Face Hub")
        return datasets.Dataset.from_dict(tables[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_xnli_uses_row_index_as_id(fake_hub):
    ds = HubSource().load_eval("xnli", "de", "validation")
    assert fake_hub == [("facebook/xnli", "de", "validation")]
    assert ds == PairDataset("xnli", "de", "validation", ("0", "1", "2"), ("p0", "p1", "p2"), ("h0", "h1", "h2"), (2, 0, 1))


def test_hub_mnli_drops_unlabelled(fake_hub):
    ds = HubSource().load_train("xnli")
    assert fake_hub == [("nyu-mll/multi_nli", None, "train")]
    assert ds.ids == ("0", "1", "3")  # row index before filtering, like the local file's ids
    assert ds.text_a == ("a", "b", "d") and ds.text_b == ("A", "B", "D") and ds.labels == (0, 1, 2)


def test_hub_pawsx(fake_hub):
    ev = HubSource().load_eval("pawsx", "ja", "validation")
    assert (ev.ids, ev.text_a, ev.text_b, ev.labels) == (("5", "9"), ("s1", "t1"), ("s2", "t2"), (1, 0))
    tr = HubSource().load_train("pawsx")
    assert fake_hub[-1] == ("google-research-datasets/paws-x", "en", "train")
    assert (tr.language, tr.split, tr.labels) == ("en", "train", (0, 1, 1))


def test_hub_errors_are_data_errors(fake_hub):
    with pytest.raises(DataError, match=r"'facebook/xnli' config 'fr' split 'test'.*--data-dir.*XLING_DATA_DIR"):
        HubSource().load_eval("xnli", "fr", "test")
    with pytest.raises(DataError, match="'ja'"):
        HubSource().load_eval("xnli", "ja", "validation")


def test_hub_missing_column(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"premise": ["p"], "label": [0]}))
    with pytest.raises(DataError, match=r"facebook/xnli.*'hypothesis'"):
        HubSource().load_eval("xnli", "en", "validation")
