"""Part c: throughput. Training-step and 17-language evaluation sequences per second of the
offline model and of an XLM-R-base-size model built from its config (random weights), bf16 and
fp32."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common import Context, Workers, measured, write_json  # first: it puts bench/ and the repository on sys.path

import kit
from _common import TINY_MODEL, eval_seconds, median_step_seconds, step_batches


def part_c(ctx: Context, budget: float) -> dict[str, Any]:
    prof = ctx.profile
    out = ctx.out / "part_c.json"
    start = time.time()
    spec = {"out": str(out), "device": prof.device, "model_dir": str(ctx.model_dir), "data_dir": str(ctx.data_dir),
            "kit_model": str(ctx.kit / "model"), "soft_deadline": start + 0.85 * budget, "budget_s": round(budget),
            "dry": ctx.dry, "threads": prof.threads, **prof.c}
    ctx.log(f"part c: throughput, {budget:.0f} s")
    workers = Workers(ctx)
    workers.start("c", spec, "c-throughput")
    finished = workers.wait_all(start + budget, "part c's budget is spent")
    result = json.loads(out.read_text()) if out.is_file() else {"part": "c", "items": []}
    if result.get("status") != "done":
        result["status"] = "partial"
        result["exit_codes"] = {n: p.returncode for p, n, _ in finished}
        write_json(out, result)
    return result


def worker_c(spec: dict) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, XLMRobertaConfig

    from xling_ray.config import DataConfig, LossConfig, ModelConfig
    from xling_ray.data import load_eval_sets, load_train_set
    from xling_ray.models import load_model, load_tokenizer
    from xling_ray.data.batches import EncodedSet, encode

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])
    device = torch.device(spec["device"])
    result: dict[str, Any] = {
        "part": "c", "status": "running", "budget_s": spec["budget_s"], "items": [],
        "settings": {k: spec[k] for k in ("batch", "length", "warmup", "steps", "eval_per_language", "eval_batch")},
        "notes": ["train step: forward, backward and AdamW on real MNLI pairs (batch padded to its longest pair, at "
                  "most `length` tokens); eval: xling_ray.train.evaluate over XNLI's 15 and PAWS-X's 7 language sets "
                  "(17 languages), `eval_per_language` pairs each, length-sorted batches",
                  "bf16: torch.autocast(bfloat16) over fp32 weights, as the product's loop; fp32: no autocast, "
                  f"float32 matmul precision {torch.get_float32_matmul_precision()!r}",
                  "attention: eager (the product loads every model with attn_implementation='eager')"],
    }
    write_json(out, result)
    old_ids = torch.tensor(kit.old_ids(Path(spec["kit_model"])), dtype=torch.long)
    model_cfg = ModelConfig(name=spec["model_dir"], max_length=spec["length"],
                            **({"random_init": True, "config_overrides": TINY_MODEL} if spec["dry"] else {}))
    tok = load_tokenizer(model_cfg)
    data_cfg = DataConfig(data_dir=spec["data_dir"], eval_max_per_language=spec["eval_per_language"])
    n_train = spec["batch"] * (spec["warmup"] + spec["steps"])
    train = encode(tok, load_train_set(DataConfig(data_dir=spec["data_dir"], train_size=n_train), "xnli"), spec["length"])
    evals = {}
    for task, per in load_eval_sets(data_cfg).items():
        for lang, d in per.items():
            evals[f"{task}-{lang}"] = encode(tok, d, spec["length"])
    n_pairs = sum(len(e) for e in evals.values())
    pad = tok.pad_token_id

    def remap(e: EncodedSet) -> EncodedSet:  # pruned ids -> XLM-R's (e5 uses XLM-R's sentencepiece vocabulary)
        return EncodedSet(e.task, e.language, tuple(tuple(old_ids[list(s)].tolist()) for s in e.input_ids), e.labels)

    def models():
        yield "offline e5-small (pruned vocabulary)" + (" [dry run: tiny random]" if spec["dry"] else ""), \
            lambda: load_model(model_cfg, num_labels=3), False
        cfg = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, num_labels=3)
        if spec["dry"]:
            for k, v in TINY_MODEL.items():
                setattr(cfg, k, v)
        yield "XLM-R-base size from config (random weights)" + (" [dry run: tiny]" if spec["dry"] else ""), \
            lambda: AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager"), True

    steps = step_batches(train, spec["batch"], spec["warmup"] + spec["steps"], pad)
    for name, build, xlmr in models():
        if time.time() > spec["soft_deadline"]:
            result["skipped"] = result.get("skipped", []) + [name]
            break
        torch.manual_seed(0)
        if xlmr:  # built on the GPU: random init of 278M parameters is slow on the CPU
            with torch.device(device):
                model = build()
        else:
            model = build().to(device)
        params = sum(p.numel() for p in model.parameters())
        sets = {k: remap(e) for k, e in evals.items()} if xlmr else evals
        for precision in ("bf16", "fp32"):
            if time.time() > spec["soft_deadline"]:
                result["skipped"] = result.get("skipped", []) + [f"{name} {precision}"]
                continue
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else None
            item: dict[str, Any] = {"model": name, "parameters": params, "precision": precision}
            with measured(item, device):
                batches = [{k: old_ids[v] if xlmr and k == "input_ids" else v for k, v in b.items()} for b in steps]
                step = median_step_seconds(model, batches, LossConfig(), lr=1e-5, warmup=spec["warmup"],
                                           autocast=autocast)
                item.update(step_median_s=round(step, 5), train_seqs_per_s=round(spec["batch"] / step, 1),
                            mean_padded_length=round(float(np.mean([s["input_ids"].shape[1] for s in steps])), 1))
                seconds = eval_seconds(model, sets, spec["eval_batch"], pad, device, autocast)
                item.update(eval_pairs=n_pairs, eval_sets=len(sets), eval_s=round(seconds, 3),
                            eval_seqs_per_s=round(n_pairs / seconds, 1), status="ok")
            result["items"].append(item)
            write_json(out, result)
            print(json.dumps({k: v for k, v in item.items() if k != "traceback"}), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["status"] = "done" if not result.get("skipped") else "partial"
    write_json(out, result)
