"""The benchmarks: where each one's files live, locally and on the hub.

One frozen ``Benchmark`` per task, registered in ``BENCHMARKS``; adding a
benchmark means adding one object there. Sources read these specs and never
hard-code a dataset name or column.
"""
from __future__ import annotations

from dataclasses import dataclass

from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES

#: Splits an evaluation set can be read from (``test`` only if its files exist).
EVAL_SPLITS = ("validation", "test")


class DataError(ValueError):
    """Benchmark data that is missing or malformed; the message says where."""


@dataclass(frozen=True)
class HubSpec:
    """How to get one table from the Hugging Face hub.

    ``config`` and ``split`` are templates filled with ``lang`` and ``split``.
    ``id_column=None`` means the hub rows have no id: the row index is the id,
    which matches the local files (same id = same example in every language).
    """

    path: str
    config: str | None
    split: str
    text_a: str
    text_b: str
    label: str = "label"
    id_column: str | None = None
    #: Drop rows with label -1 (MultiNLI's pairs without annotator agreement).
    drop_unlabelled: bool = False

    def config_for(self, lang: str) -> str | None:
        return None if self.config is None else self.config.format(lang=lang)

    def split_for(self, split: str) -> str:
        return self.split.format(split=split)


@dataclass(frozen=True)
class Benchmark:
    """A sentence-pair classification benchmark with an English training set."""

    name: str
    languages: tuple[str, ...]
    text_columns: tuple[str, str]
    label_names: tuple[str, ...]
    #: Paths relative to the data root; ``{split}`` and ``{lang}`` are filled in.
    eval_file: str
    train_file: str
    train_name: str
    hub_eval: HubSpec
    hub_train: HubSpec
    #: Labelled pairs of the published English training set (the hub's ``hub_train``).
    train_full_size: int = 0

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def eval_file_for(self, language: str, split: str) -> str:
        return self.eval_file.format(split=split, lang=language)

    def check_language(self, language: str) -> None:
        if language not in self.languages:
            raise DataError(
                f"language '{language}' is not in task '{self.name}'; "
                f"it has: {', '.join(self.languages)}"
            )


XNLI = Benchmark(
    name="xnli",
    languages=XNLI_LANGUAGES,
    text_columns=("premise", "hypothesis"),
    label_names=("entailment", "neutral", "contradiction"),
    eval_file="xnli/{split}-{lang}.tsv",
    train_file="train/mnli-en.tsv",
    train_name="MultiNLI",
    hub_eval=HubSpec("facebook/xnli", "{lang}", "{split}", "premise", "hypothesis"),
    # MultiNLI uses XNLI's label order (0 entailment, 1 neutral, 2 contradiction).
    hub_train=HubSpec("nyu-mll/multi_nli", None, "train", "premise", "hypothesis", drop_unlabelled=True),
    train_full_size=392_702,
)

PAWSX = Benchmark(
    name="pawsx",
    languages=PAWSX_LANGUAGES,
    text_columns=("sentence1", "sentence2"),
    label_names=("not_paraphrase", "paraphrase"),
    eval_file="pawsx/{split}-{lang}.tsv",
    train_file="train/paws-en.tsv",
    train_name="PAWS-X English train",
    hub_eval=HubSpec("google-research-datasets/paws-x", "{lang}", "{split}", "sentence1", "sentence2", id_column="id"),
    hub_train=HubSpec("google-research-datasets/paws-x", "en", "train", "sentence1", "sentence2", id_column="id"),
    train_full_size=49_401,
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (XNLI, PAWSX)}


def get_benchmark(task: str) -> Benchmark:
    try:
        return BENCHMARKS[task]
    except KeyError:
        raise DataError(f"unknown task '{task}'; known: {', '.join(BENCHMARKS)}") from None
