"""Word alignments in Pharaoh format (fast_align, awesome-align): read and write."""
from __future__ import annotations

import os
from typing import Iterable

from xling_ray.methods.adjustment.words import Alignment


def read_pharaoh(path: str | os.PathLike, n_pairs: int, english_first: bool = False) -> list[Alignment]:
    """Word alignments in Pharaoh format, one line per sentence pair:
    whitespace-separated ``i-j`` tokens, 0-based word indices (of
    ``text.split()``), i a word of the target sentence and j a word of the
    English one (fast_align run on ``target ||| english``). An empty line is a
    pair with no alignment. ``english_first=True`` reads files written the other
    way round (``english ||| target``) and swaps each pair.

    Only plain ``i-j`` is accepted (not gold-standard ``i?j`` or ``i-j-p``
    with a probability); duplicates are dropped, order kept.

    Raises ValueError naming the file and line for a malformed token, and when
    the file has not exactly ``n_pairs`` lines (the alignments would then be
    shifted against the sentences).
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if len(lines) != n_pairs:
        raise ValueError(
            f"{path}: {len(lines)} alignment lines for {n_pairs} sentence pairs; "
            "the file must have exactly one line per pair (an empty line for a pair with no alignment)"
        )
    out: list[Alignment] = []
    for lineno, line in enumerate(lines, start=1):
        seen: dict[tuple[int, int], None] = {}
        for token in line.strip().split():
            i, sep, j = token.partition("-")
            if not (sep and i.isdigit() and j.isdigit() and i.isascii() and j.isascii()):
                raise ValueError(
                    f"{path}, line {lineno}: malformed alignment {token!r}; expected 'i-j' with 0-based word indices"
                )
            pair = (int(j), int(i)) if english_first else (int(i), int(j))
            seen[pair] = None
        out.append(list(seen))
    return out


def write_pharaoh(path: str | os.PathLike, alignments: Iterable[Iterable[tuple[int, int]]]) -> None:
    """Write alignments (target word, English word) as :func:`read_pharaoh` reads them."""
    with open(path, "w", encoding="utf-8") as fh:
        for alignment in alignments:
            fh.write(" ".join(f"{i}-{j}" for i, j in alignment) + "\n")
