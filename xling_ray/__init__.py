"""xling-ray: find the fine-tuning recipe under which a multilingual encoder,
trained on English only, transfers best to other languages.

Pipeline, one subpackage each: data -> models -> losses -> train -> tune -> leaderboard.
"""
__version__ = "0.1.0"
