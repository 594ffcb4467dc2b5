"""Config checks that run before anything slow: a wrong key or a wrongly-typed value fails before any data or model
is loaded (the ~10 s of importing torch and transformers on a laptop, not stage 0), naming the key.

Values meant for a constructor (`method.handler`, `logger`, `benchmark`: whatever their `_target_` builds) are
checked against that constructor's signature and type annotations, and `method.training` / `model.finetune` /
`model.pretrain` against TrainingConfig's fields, so `method.handler.num_samples=abc` reads
"method.handler.num_samples must be an int, got 'abc'" before stage 0 starts rather than a TypeError after it.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pmc.core.errors import ConfigError
from pmc.core.models import DTYPES, LORA_KEYS, SOURCES
from pmc.core.prompts import PromptFormat
from pmc.optimisation import TrainingConfig

TYPE_NAMES = {int: "an int", float: "a number", bool: "true or false", str: "a string", type(None): "null",
              list: "a list", tuple: "a list", dict: "a mapping"}

# the run's own keys (the config groups are checked through what they build)
RUN_KEYS = {
    "experiment_name": str, "seed": int, "device": str, "cache_dir": str, "compile_cache_dir": str | None,
    "deterministic": bool,
    "eval": dict, "eval_one_model_on_device": bool, "save_unlearned": bool, "method.name": str,
    "generation.max_new_tokens": int, "generation.max_length": int | None,
    "stage0.seed": int, "stage0.target_path": str | None, "stage0.retain_path": str | None, "stage0.side_by_side": bool,
    "stage0.offload_during_unlearning": bool,
}
LORA_TYPES = {"r": int, "alpha": float, "dropout": float, "target_modules": str | list[str]}
TINY_ARCHITECTURE = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings")


def describe(annotation) -> str:
    """'an int', 'a number or null', 'a list of strings', ... for error messages."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, typing.get_origin(typing.Sequence)):
        element = typing.get_args(annotation)[0] if typing.get_args(annotation) else Any
        return "a list" if element is Any else f"a list of {describe(element).split(' ', 1)[-1]}s"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return TYPE_NAMES.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))


def matches(value, annotation) -> bool:
    """Does a config value (plain Python after OmegaConf.to_container) fit the annotation? Unknown kinds pass."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, typing.get_origin(typing.Sequence)):
        if not isinstance(value, (list, tuple)):
            return False
        element = args[0] if args else Any
        return all(matches(v, element) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is type(None) or annotation is None:
        return value is None
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_value(key: str, value, annotation) -> None:
    if not matches(value, annotation):
        raise ConfigError(f"{key} must be {describe(annotation)}, got {value!r}")


def check_call(target, kwargs: dict, prefix: str) -> None:
    """kwargs as `target(**kwargs)` would get them: unknown names, missing required ones, wrong types."""
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that cannot be evaluated here: check names only
        hints = {}
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    name = getattr(target, "__qualname__", str(target))
    for key, value in kwargs.items():
        if key not in parameters:
            if not takes_any:
                accepted = ", ".join(p for p, parameter in parameters.items()
                                     if parameter.kind is not inspect.Parameter.VAR_POSITIONAL)
                raise ConfigError(f"{prefix}.{key}: not an option of {name} (options: {accepted})")
            continue
        check_value(f"{prefix}.{key}", value, hints.get(key, Any))
    for key, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if required and key not in kwargs:
            raise ConfigError(f"{prefix}.{key} is required by {name}: pass {prefix}.{key}=...")


def check_target(node: dict, prefix: str) -> None:
    """A `_target_` node: the target must import, the other keys must fit its signature."""
    path = node.get("_target_")
    if not isinstance(path, str):
        raise ConfigError(f"{prefix}._target_ must name the class or function to build, got {path!r}")
    check_call(locate(path, f"{prefix}._target_"), {k: v for k, v in node.items() if not k.startswith("_")}, prefix)


def locate(path: str, key: str):
    """The object a dotted path names (what hydra.utils.get_object finds, without its multi-line log message)."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        module_name = ".".join(parts[:end])
        try:
            found = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as e:
            if not (e.name and module_name.startswith(e.name)):  # the module exists but one of its imports does not
                raise
    else:
        raise ConfigError(f"{key}: cannot import {path!r} (no module {parts[0]!r})")
    for attribute in parts[end:]:
        if not hasattr(found, attribute):
            raise ConfigError(f"{key}: cannot import {path!r} ({found.__name__} has no {attribute!r})")
        found = getattr(found, attribute)
    return found


def check_training(values, prefix: str) -> TrainingConfig:
    """A TrainingConfig from a config node, every field's type checked first (its own checks do the values)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix} must be a mapping of training settings, got {values!r}")
    check_call(TrainingConfig, values, prefix)
    return TrainingConfig(**values)


def check_device(name: str) -> None:
    try:
        device = torch.device(name if name != "auto" else "cpu")
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}, but torch sees no CUDA device here (device=auto picks what there is)")


def check_model(model: dict) -> None:
    if model.get("source") not in SOURCES:
        raise ConfigError(f"model.source must be one of {SOURCES}, got {model.get('source')!r}")
    if model.get("dtype") not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {model.get('dtype')!r}")
    check_call(PromptFormat, model.get("prompt") or {}, "model.prompt")
    lora = model.get("lora") or {}
    if set(lora) - LORA_KEYS:
        raise ConfigError(f"model.lora takes {sorted(LORA_KEYS)}, got {sorted(lora)}")
    for key, annotation in LORA_TYPES.items():
        if key in lora:
            check_value(f"model.lora.{key}", lora[key], annotation)
    check_training(model.get("finetune"), "model.finetune")
    if model["source"] == "tiny":
        check_training(model.get("pretrain"), "model.pretrain")
        architecture = model.get("architecture") or {}
        for key in TINY_ARCHITECTURE:
            value = architecture.get(key)
            if not matches(value, int) or value < 1:
                raise ConfigError(f"model.architecture.{key} must be a positive int, got {value!r}")


def plain(node) -> dict:
    """A config node as plain Python, interpolations resolved; a `???` value raises MissingMandatoryValue."""
    return OmegaConf.to_container(node, resolve=True, throw_on_missing=True) if node is not None else {}


def check_run_config(cfg: DictConfig) -> None:
    """The run's own keys, device, model and benchmark: what pmc.run and pmc.evaluate share."""
    for key, annotation in RUN_KEYS.items():  # one at a time: an unresolvable `seed=${x}` is reported as `seed`
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        check_value(key, plain(value) if OmegaConf.is_config(value) else value, annotation)
    values = plain(cfg)
    # generation.batch_size and scoring_batch_size (ints or "auto") are checked with the other decoding settings
    # (pipeline.check_config)
    if cfg.generation.max_new_tokens < 1:
        raise ConfigError(f"generation.max_new_tokens must be at least 1, got {cfg.generation.max_new_tokens}")
    if cfg.generation.max_length is not None and cfg.generation.max_length < 2:
        raise ConfigError(f"generation.max_length (prompt + answer tokens) must be at least 2, got "
                          f"{cfg.generation.max_length}")
    check_device(cfg.device)
    check_model(values["model"])
    check_target(values.get("benchmark") or {}, "benchmark")


def check_retain_settings(handler: dict) -> None:
    """A retain setting (retain_weight, retain_loss, ...) given to a method without a retain term gets an error of
    its own, rather than the generic unknown-option one."""
    path = handler.get("_target_")
    if not isinstance(path, str):
        return  # check_target reports it
    target = locate(path, "method.handler._target_")
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # takes any keyword
    for key in handler:
        if key.startswith("retain_") and key not in parameters:
            raise ConfigError(f"method.handler.{key}: {getattr(target, '__qualname__', path)} has no retain term, "
                              "so it takes no retain setting")


def check_unlearning_config(cfg: DictConfig) -> TrainingConfig:
    """The logger and the method (its handler's arguments and its training settings); returns the latter."""
    check_target(plain(cfg.get("logger")), "logger")
    handler = plain(OmegaConf.select(cfg, "method.handler"))
    check_retain_settings(handler)
    check_target(handler, "method.handler")
    return check_training(plain(OmegaConf.select(cfg, "method.training")), "method.training")
