import pytest

from xling_ray.metrics import summarize, transfer_gap

# XTREME (Hu et al., 2020), mBERT rows of the XNLI and PAWS-X tables.
MBERT_XNLI = {"en": 80.8, "ar": 64.3, "bg": 68.0, "de": 70.0, "el": 65.3, "es": 73.5, "fr": 73.4, "hi": 58.9,
              "ru": 67.8, "sw": 49.7, "th": 54.1, "tr": 60.9, "ur": 57.2, "vi": 69.3, "zh": 67.8}
MBERT_PAWSX = {"en": 94.0, "de": 85.7, "es": 87.4, "fr": 87.0, "ja": 73.0, "ko": 69.6, "zh": 77.0}


def test_xtreme_mbert_rows():
    assert transfer_gap(MBERT_XNLI) == pytest.approx(16.5)
    assert transfer_gap(MBERT_PAWSX) == pytest.approx(14.05)
    s = summarize({"xnli": MBERT_XNLI, "pawsx": MBERT_PAWSX})
    assert s["gap_xnli"] == pytest.approx(16.5)
    assert s["gap_pawsx"] == pytest.approx(14.05)
    assert s["gap"] == pytest.approx(15.275)
    assert round(s["gap"], 1) == 15.3


def test_hand_computed_summary():
    s = summarize({"xnli": {"en": 90.0, "fr": 80.0, "de": 70.0}, "pawsx": {"en": 60.0, "ja": 50.0}})
    assert s["gap_xnli"] == pytest.approx(15.0)      # 90 - (80 + 70) / 2
    assert s["gap_pawsx"] == pytest.approx(10.0)     # 60 - 50
    assert s["gap"] == pytest.approx(12.5)
    assert s["acc_en"] == pytest.approx(75.0)
    assert s["acc_target"] == pytest.approx(200.0 / 3)  # pooled over fr, de, ja
    assert s["acc_xnli_target"] == pytest.approx(75.0)
    assert s["acc_xnli_fr"] == 80.0


def test_single_task_headline_is_that_task():
    s = summarize({"pawsx": {"en": 90.0, "de": 85.0, "ko": 75.0}})
    assert s["gap"] == s["gap_pawsx"] == pytest.approx(10.0)
    assert "gap_xnli" not in s


def test_gap_needs_english_and_a_target():
    with pytest.raises(ValueError, match="source language 'en'"):
        transfer_gap({"fr": 1.0})
    with pytest.raises(ValueError, match="no target language"):
        transfer_gap({"en": 1.0})
