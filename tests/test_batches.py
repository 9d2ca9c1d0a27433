"""Length-bucketed evaluation and the tokenisation cache."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from conftest import TINY_MODEL
from xling_ray.config import DataConfig
from xling_ray.data import load_eval_sets
from xling_ray.models import load_model, load_tokenizer
from xling_ray.data.batches import encode, eval_batches
from xling_ray.train.cache import cache_key, encode_cached
from xling_ray.train.evaluate import evaluate, predict


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_MODEL)


@pytest.fixture(scope="module")
def sets(data_dir):
    return load_eval_sets(DataConfig(data_dir=str(data_dir), tasks=("xnli",), languages=("en", "de", "sw"),
                                     eval_max_per_language=30))["xnli"]


def padded_predictions(model, tok, data, max_length: int, batch_size: int) -> list[int]:
    """The plain loop: dataset order, every pair padded to ``max_length``."""
    enc = tok(list(data.text_a), list(data.text_b), truncation=True, max_length=max_length, padding="max_length",
              return_tensors="pt")
    out = []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            logits = model(input_ids=enc["input_ids"][i : i + batch_size],
                           attention_mask=enc["attention_mask"][i : i + batch_size]).logits
            out += logits.argmax(-1).tolist()
    return out


def test_bucketed_evaluation_matches_padded_loop(tok, sets):
    torch.manual_seed(0)
    model = load_model(TINY_MODEL, num_labels=3).eval()
    length = TINY_MODEL.max_length
    encoded = {lang: encode(tok, d, length) for lang, d in sets.items()}
    # Length-sorted batches really are padded less than max_length.
    widths = [max(len(encoded["en"].input_ids[i]) for i in idx) for idx in eval_batches(encoded["en"], 8)]
    assert min(widths) < length
    for lang, d in sets.items():
        ours = predict(model, encoded[lang], 8, tok.pad_token_id, torch.device("cpu"))
        assert ours == padded_predictions(model, tok, d, length, 8), lang
    result = evaluate(model, encoded, 8, tok.pad_token_id, torch.device("cpu"))
    for lang, d in sets.items():
        padded = padded_predictions(model, tok, d, length, 8)
        assert result.accuracy[lang] == pytest.approx(100.0 * sum(p == y for p, y in zip(padded, d.labels)) / len(d))
        assert result.top_class[lang] == pytest.approx(100.0 * max(Counter(padded).values()) / len(d))


def test_cache_returns_the_same_encodings(tok, sets, tmp_path):
    d = sets["de"]
    first = encode_cached(tok, d, 48, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = encode_cached(tok, d, 48, tmp_path)
    assert first == again == encode(tok, d, 48)
    assert encode_cached(tok, d, 48, None) == first


def test_cache_is_invalidated_by_max_length_data_and_tokenizer(tok, sets, tmp_path):
    d = sets["de"]
    key = cache_key(tok, d, 48)
    assert cache_key(tok, d, 32) != key
    assert cache_key(tok, sets["sw"], 48) != key
    changed = dataclasses.replace(d, text_a=("another premise",) + d.text_a[1:])
    assert cache_key(tok, changed, 48) != key
    relabelled = dataclasses.replace(d, labels=((d.labels[0] + 1) % 3,) + d.labels[1:])
    assert cache_key(tok, relabelled, 48) != key
    # A tokenizer with another vocabulary (saved to a folder of its own) gets another key.
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path / "tok")
    same = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert cache_key(same, d, 48) == cache_key(same, d, 48)
    same.add_tokens(["xlingraytoken"])
    same.save_pretrained(tmp_path / "tok2")
    other = AutoTokenizer.from_pretrained(tmp_path / "tok2")
    assert cache_key(other, d, 48) != cache_key(AutoTokenizer.from_pretrained(tmp_path / "tok"), d, 48)
    # Written under the new key: the stale entry is never read.
    encoded = encode_cached(tok, changed, 48, tmp_path / "c")
    assert encoded.input_ids[0] != encode(tok, d, 48).input_ids[0]
    assert encoded == encode(tok, changed, 48)


def test_unreadable_cache_entry_is_rewritten(tok, sets, tmp_path):
    d = sets["en"]
    path = tmp_path / f"{cache_key(tok, d, 48)}.npz"
    path.write_bytes(b"not a numpy file")
    assert encode_cached(tok, d, 48, tmp_path) == encode(tok, d, 48)
    assert encode_cached(tok, d, 48, tmp_path) == encode(tok, d, 48)
    assert path.stat().st_size > 100


def test_recipe_sets_are_the_training_then_evaluation_sets_with_the_prefix(tiny_recipe):
    from xling_ray.train.cache import recipe_sets

    recipe = tiny_recipe.with_updates({"data.languages": ["en", "de"], "model.text_prefix": "query: "})
    tok, sets = recipe_sets(recipe)
    # 2 tasks: their training sets (48 pairs each), then each task's 2 evaluation sets (12 pairs each).
    assert [(d.task, d.split, d.language, len(d)) for d in sets] == [
        ("xnli", "train", "en", 48), ("pawsx", "train", "en", 48),
        ("xnli", "validation", "en", 12), ("xnli", "validation", "de", 12),
        ("pawsx", "validation", "en", 12), ("pawsx", "validation", "de", 12)]
    assert all(t.startswith("query: ") for d in sets for t in d.text_a + d.text_b)
    assert tok.pad_token_id == load_tokenizer(TINY_MODEL).pad_token_id
