"""Target-language pools: file and hub loaders, benchmark pools and the leakage guard.

The benchmark tests run on the real offline files (shared/data).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from xling_ray.data import DataError, LocalSource, PairDataset
from xling_ray.data.pools import (
    LeakageError,
    ParallelPool,
    TextPool,
    benchmark_pools,
    check_no_leakage,
    eval_ids_after,
    first_ids,
    hub_text_pool,
    id_order,
    parallel_file_pool,
    skip_first,
    text_file_pool,
)

from conftest import DATA_DIR

XNLI_POOL_LANGS = ("fr", "sw", "ur")
TAKE = 1245  # a multiple of 3: XNLI's premise triples stay whole


@pytest.fixture(scope="module")
def shared() -> LocalSource:
    assert DATA_DIR.is_dir(), f"offline data not found at {DATA_DIR} (set XLING_TEST_DATA_DIR)"
    return LocalSource(DATA_DIR)


@pytest.fixture(scope="module")
def xnli_eval(shared) -> dict[str, dict[str, PairDataset]]:
    return {"xnli": {lang: shared.load_eval("xnli", lang) for lang in ("en", *XNLI_POOL_LANGS)}}


@pytest.fixture(scope="module")
def xnli_pools(shared) -> dict[str, ParallelPool]:
    return benchmark_pools(shared, "xnli", XNLI_POOL_LANGS, take_first=TAKE)


def skipped(eval_sets, n):
    return {task: {lang: skip_first(d, n) for lang, d in by_lang.items()} for task, by_lang in eval_sets.items()}


# ---------------------------------------------------------------- benchmark pools


def test_pool_and_eval_part_are_disjoint(shared, xnli_pools, xnli_eval):
    held_out = skipped(xnli_eval, TAKE)
    after = eval_ids_after(shared, "xnli", "validation", TAKE)
    assert len(after) == 2490 - TAKE
    for lang, pool in xnli_pools.items():
        assert pool.language == lang and pool.source == "xnli/validation"
        pool_examples = {i.split(":")[0] for i in pool.ids}
        assert pool_examples == {str(i) for i in range(TAKE)}  # every example gives at least its hypothesis
        assert not pool_examples & set(held_out["xnli"][lang].ids)
        assert not pool_examples & after
        assert set(held_out["xnli"][lang].ids) == after
    check_no_leakage(xnli_pools, held_out)  # passes


def test_guard_fires_on_shared_ids(xnli_pools, xnli_eval):
    with pytest.raises(LeakageError) as err:
        check_no_leakage({"sw": xnli_pools["sw"]}, xnli_eval)
    msg = str(err.value)
    assert "'sw'" in msg and "xnli" in msg and "id '0'" in msg
    # One example of overlap is enough.
    with pytest.raises(LeakageError, match="id '1244'"):
        check_no_leakage({"sw": xnli_pools["sw"]}, skipped(xnli_eval, TAKE - 1))


def test_guard_fires_on_shared_text(xnli_pools, xnli_eval):
    held_out = skipped(xnli_eval, TAKE)
    leaked = held_out["xnli"]["fr"].text_b[7]
    pool = TextPool("fr", ("1", "2"), ("Une phrase sans rapport.", "  " + leaked.replace(" ", "  ") + "\n"), "my.txt")
    with pytest.raises(LeakageError) as err:
        check_no_leakage({"fr": pool}, held_out)
    msg = str(err.value)
    assert "'fr'" in msg and "xnli" in msg and "hypothesis" in msg and repr(held_out["xnli"]["fr"].ids[7]) in msg
    # The same text in another language's pool is not a leak of that language.
    check_no_leakage({"sw": TextPool("sw", ("1",), (leaked,), "my.txt")}, held_out)
    # A benchmark pool's target side turned into a TextPool keeps the id check.
    with pytest.raises(LeakageError, match="'ur'"):
        check_no_leakage({"ur": xnli_pools["ur"].target_pool()}, xnli_eval)


def test_guard_checks_english_side_of_parallel_pools(xnli_eval):
    held_out = skipped(xnli_eval, TAKE)
    english = held_out["xnli"]["en"].text_a[0]
    pool = ParallelPool("sw", ("1",), ("Sentensi nyingine kabisa.",), (english,), "pairs.txt")
    with pytest.raises(LeakageError, match="English side"):
        check_no_leakage({"sw": pool}, held_out)
    check_no_leakage({"sw": pool}, held_out, check_english=False)


def test_guard_compares_ids_of_the_same_task_and_split(xnli_pools, shared):
    pawsx = {"pawsx": {"en": shared.load_eval("pawsx", "en")}}
    check_no_leakage(xnli_pools, pawsx)  # pawsx ids "4", "6", ... are other examples
    test_split = {"xnli": {"fr": PairDataset("xnli", "fr", "test", ("0",), ("Bonjour à tous.",), ("Salut.",), (0,))}}
    check_no_leakage({"fr": xnli_pools["fr"]}, test_split)


def test_parallel_pairs_are_translations(shared, xnli_pools):
    en = shared.load_eval("xnli", "en")
    for lang, pool in xnli_pools.items():
        tgt = shared.load_eval("xnli", lang)
        for entry, t, e in zip(pool.ids, pool.target, pool.english):
            id_, side = entry.split(":")
            row = tgt.ids.index(id_)
            assert t == (tgt.text_a if side == "a" else tgt.text_b)[row]
            assert e == (en.text_a if side == "a" else en.text_b)[en.ids.index(id_)]


def test_premises_are_deduplicated(xnli_pools):
    pool = xnli_pools["fr"]
    assert len(pool) == TAKE + TAKE // 3  # 1245 hypotheses + 415 premises
    premises = [i for i in pool.ids if i.endswith(":a")]
    assert premises == [f"{3 * k}:a" for k in range(TAKE // 3)]
    assert len(set(pool.target)) == len(pool)
    text = pool.target_pool()
    assert isinstance(text, TextPool) and text.texts == pool.target and text.ids == pool.ids
    assert text.source == pool.source and text.language == "fr"


def test_benchmark_pools_id_order_and_sampling(shared):
    pools = benchmark_pools(shared, "pawsx", ["de", "ja"], take_first=10, max_size=8, seed=1)
    en = shared.load_eval("pawsx", "en")
    first = id_order(en.ids)[:10]
    assert first_ids(en, 10) == tuple(first)
    for pool in pools.values():
        assert len(pool) == 8 and {i.split(":")[0] for i in pool.ids} <= set(first)
    again = benchmark_pools(shared, "pawsx", ["de"], take_first=10, max_size=8, seed=1)
    assert again["de"] == pools["de"]
    assert benchmark_pools(shared, "pawsx", ["de"], take_first=10, max_size=8, seed=2)["de"] != pools["de"]
    with pytest.raises(DataError, match="'ar'"):
        benchmark_pools(shared, "pawsx", ["ar"], take_first=10)
    with pytest.raises(DataError, match="2000"):
        benchmark_pools(shared, "pawsx", ["de"], take_first=5000)


def test_id_order_and_skip_first():
    assert id_order(["10", "9", "b", "a", "100"]) == ["9", "10", "100", "a", "b"]
    data = PairDataset("pawsx", "de", "validation", ("10", "2", "9", "x"), ("a", "b", "c", "d"), ("e", "f", "g", "h"), (0, 1, 0, 1))
    assert skip_first(data, 0) is data
    left = skip_first(data, 2)  # "2" and "9" go; the others keep their order
    assert left.ids == ("10", "x") and left.text_a == ("a", "d") and left.labels == (0, 1)
    with pytest.raises(DataError, match="leaves none"):
        skip_first(data, 4)
    with pytest.raises(DataError):
        skip_first(data, 5)


# ---------------------------------------------------------------- file and hub loaders


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_text_file_pool(tmp_path):
    path = write(tmp_path, "sw.txt", "Habari ya asubuhi.\n\n  Ninakupenda.  \r\n   \nAsante sana.\n")
    pool = text_file_pool(path, "sw")
    assert pool.ids == ("1", "3", "5") and pool.texts == ("Habari ya asubuhi.", "Ninakupenda.", "Asante sana.")
    assert pool.language == "sw" and pool.source == str(path)
    small = text_file_pool(path, "sw", max_size=2, seed=3)
    assert len(small) == 2 and small == text_file_pool(path, "sw", max_size=2, seed=3)
    assert list(small.ids) == sorted(small.ids, key=int)


def test_text_file_pool_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing\.txt.*'sw'.*not found"):
        text_file_pool(tmp_path / "missing.txt", "sw")
    with pytest.raises(DataError, match=r"blank\.txt.*no sentences.*'sw'"):
        text_file_pool(write(tmp_path, "blank.txt", "\n  \n"), "sw")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt.*UTF-8"):
        text_file_pool(bad, "fr")
    with pytest.raises(DataError, match="language"):
        text_file_pool(write(tmp_path, "ok.txt", "x\n"), "")


def test_parallel_file_pool(tmp_path):
    path = write(tmp_path, "ur.txt", "یہ ایک کتاب ہے ||| This is a book\n\nمیں گھر جا رہا ہوں ||| I am going home\n")
    pool = parallel_file_pool(path, "ur")
    assert pool.ids == ("1", "3")
    assert pool.target == ("یہ ایک کتاب ہے", "میں گھر جا رہا ہوں") and pool.english == ("This is a book", "I am going home")
    assert pool.target_pool().texts == pool.target


@pytest.mark.parametrize(
    "line",
    ["no separator here", "a ||| b ||| c", "a|||b", "a ||| b|||c", " ||| English only", "Cible seule ||| "],
)
def test_parallel_file_pool_errors(tmp_path, line):
    path = write(tmp_path, "fr.txt", f"Bonjour ||| Hello\n{line}\n")
    with pytest.raises(DataError, match=rf"fr\.txt:2 .*'fr'"):
        parallel_file_pool(path, "fr")


def test_hub_text_pool(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, *args, split=None, **kw):
        calls.append((path, args, split))
        if path == "offline/none":
            raise ConnectionError("hub unreachable")
        return datasets.Dataset.from_dict({"text": ["Merhaba dünya.", "  ", None, "Nasılsın?", "İyiyim."], "n": [1, 2, 3, 4, 5]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pool = hub_text_pool("some/corpus", "tr", "train", "text", "tr")
    assert calls[-1] == ("some/corpus", ("tr",), "train")
    assert pool.ids == ("0", "3", "4") and pool.texts == ("Merhaba dünya.", "Nasılsın?", "İyiyim.")
    assert pool.source == "hub:some/corpus/tr/train:text" and pool.language == "tr"
    assert len(hub_text_pool("some/corpus", None, "train", "text", "tr", max_size=2, seed=0)) == 2
    assert calls[-1] == ("some/corpus", (), "train")
    with pytest.raises(DataError, match=r"no column 'sentence'.*\['text', 'n'\]"):
        hub_text_pool("some/corpus", "tr", "train", "sentence", "tr")
    with pytest.raises(DataError, match=r"row 0: column 'n'"):
        hub_text_pool("some/corpus", "tr", "train", "n", "tr")
    with pytest.raises(DataError, match="could not load.*'tr'.*hub unreachable"):
        hub_text_pool("offline/none", "tr", "train", "text", "tr")
