"""Peak memory of an unlearning job's training on this device, for a model architecture and a method's recipe: does
it fit one GPU, and with which settings (precision, gradient checkpointing, LoRA, micro-batch size)?

    python scripts/bench_memory.py --device cuda experiment=tofu_llama3b method=graddiff      # on a GPU node
    python scripts/bench_memory.py --architecture scripts/architectures/llama3_2_3b_instruct.json --layers 1,2 \
        experiment=tofu_llama3b method=graddiff                   # on a CPU: two depths, extrapolated to 28 layers

Everything after the options is a Hydra override of the run config (model, method, method.training...).

What is measured is what a job holds and allocates while it unlearns (`pmc.experiment`): the stage-0 target and
retain models and the model being unlearned (a copy of the target, with LoRA adapters where model.lora.r > 0), all
in model.dtype, then the harness's own loop (`pmc.trainer.unlearn` with the configured method: its loss and
set-up, e.g. NPO's frozen reference, a copy or with LoRA the model's own base weights, or PMC's decoding of initial
answers and samples; method.training's precision, with fp32 master weights under bf16-mixed, gradient checkpointing,
the fused AdamW) for --steps optimizer steps. The peak comes after the first step, when the optimizer state, the
gradients and a micro-batch's activations are all held, so --steps is at least 2; a method that ends training before
them (ICU, whose checks find every item a model of random weights continues forgotten) is an error, not a peak
without training.

Memory depends on shapes, not on values, so nothing is downloaded or fine-tuned: the models are built from the
architecture alone with random weights (`from_config`), and the forget and retain rows are synthetic, each as long as
method.training.max_length allows (prompt and answer), the most a micro-batch of real data can hold; a word-level
tokenizer trained on them gives the token ids (within the architecture's vocabulary; the logits have the whole
vocabulary). The architecture is the model config's (the tiny model's `architecture`; a pretrained model's
config.json, read where its weights would be: the hub, which needs the network, a local directory, or SmolLM2's GGUF
file) or --architecture FILE, a config.json (offline; scripts/architectures/ holds Llama-3.2-3B-Instruct's and
Llama-3.1-8B-Instruct's).

A job moves its target and retain models to host memory while it unlearns (stage0.offload_during_unlearning, on
by default); untouched then, their bytes come off the peak exactly, which the table's "offloaded" column gives beside
the peak with all three on the device (the bench keeps them there, so both come from one run).

Counted: the bytes of the tensors torch allocates (CUDA: `torch.cuda.max_memory_allocated`; CPU: the allocations and
frees torch.profiler records), not the CUDA context (~0.5 GB) or what the caching allocator keeps on top
(`reserved`, printed on CUDA).

--layers A,B[,C...]: the model at these depths instead of the architecture's own. Weights, gradients, optimizer state
and saved activations grow by the same bytes per decoder layer, so the peak at the architecture's depth is
extrapolated along the line through the two smallest depths; a third depth checks the line (its prediction is
printed beside its measure). This is how a CPU measures a model whose training does not fit its memory.
--stage finetune measures stage 0 instead (`pmc.stage0`: model.finetune's recipe, full fine-tuning of a copy of
the model on the device while the model it starts from waits in host memory; target and retain are built one after
the other, each with the device to itself).
--stage eval measures a job's evaluation instead (`pmc.pipeline.evaluate_models`): the three models on the device, one
of them decoding a full batch of greedy answers and scoring a full batch of answers, the peak beside the two others
(the default) and without them (`eval_one_model_on_device`: the models take turns on the device).
--json PATH also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.profiler import ProfilerActivity, profile
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the harness's own packages first

from benchmarks.metrics.scoring import answer_logprob_means  # noqa: E402
from pmc import CONF_DIR  # noqa: E402
from pmc.checks import check_unlearning_config  # noqa: E402
from pmc.core.errors import CheckpointError, ConfigError  # noqa: E402
from pmc.core.generation import greedy_answers, most_rows  # noqa: E402
from pmc.core.models import (  # noqa: E402
    device_for,
    pretrained_architecture,
    tiny_config,
    torch_dtype,
    train_tokenizer,
)
from pmc.core.prompts import PromptFormat  # noqa: E402
from pmc.core.records import QABenchmark, QARecord  # noqa: E402
from pmc.experiment import build_method, method_batch_size  # noqa: E402
from pmc.methods.base import RunContext  # noqa: E402
from pmc.optimisation import TrainingConfig  # noqa: E402
from pmc.pipeline import (  # noqa: E402
    configure_kernels,
    device_name,
    eval_context,
    lora_settings,
    model_to_unlearn,
    prepare_generation,
)
from pmc.trainer import finetune, unlearn  # noqa: E402

GIB = 2**30
QUESTION_WORDS = 12
TOKENIZER_VOCAB = 512  # the synthetic rows' word-level vocabulary (at most the architecture's)


@contextmanager
def allocated_bytes(device: torch.device):
    """Yields a dict that holds, once the block has run, "net": the bytes of tensors allocated in the block less
    those freed in it (tensors allocated before it included), and "peak": the most allocated beyond the block's start
    at any moment. CUDA: the caching allocator's counters ("reserved_peak" too); CPU: torch.profiler's memory events,
    summed in time order.

    Unreachable objects are collected first: a model in a reference cycle (accelerate's and the trainer's objects
    make some) is freed only when Python's cyclic collector runs, and freed inside the block it counted against it
    (the second of two depths measured in one process held a frozen NPO reference less than the first)."""
    gc.collect()
    numbers: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # what an earlier depth left cached is not this one's slack
        before, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield numbers
        torch.cuda.synchronize(device)
        numbers.update(net=torch.cuda.memory_allocated(device) - before,
                       peak=torch.cuda.max_memory_allocated(device) - before,
                       reserved_peak=torch.cuda.max_memory_reserved(device) - reserved)
        return
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        yield numbers
    events = sorted((e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"
                     and e.device_type() == torch.autograd.DeviceType.CPU), key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    numbers.update(net=live, peak=peak)


def architecture(cfg, path: str | None) -> PretrainedConfig:
    """The model's architecture: a config.json file, or the model config's own (the tiny model's `architecture`,
    a pretrained model's config.json from the hub, its local directory or its GGUF file)."""
    if path:
        try:
            values = json.loads(Path(path).read_text())
            return AutoConfig.for_model(values.pop("model_type"), **values)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"--architecture {path}: not a model's config.json ({e!r})") from None
    model = cfg.model
    if model.source == "tiny":
        return tiny_config(**model.architecture)
    try:
        return pretrained_architecture(model.source, model.name_or_path, model.gguf_package, model.gguf_file)
    except CheckpointError as e:
        raise ConfigError(f"{e}; offline, pass --architecture FILE (a config.json)") from None


def at_depth(arch: PretrainedConfig, layers: int, tokenizer) -> PretrainedConfig:
    """`arch` with `layers` decoder layers and the synthetic tokenizer's special tokens."""
    arch = copy.deepcopy(arch)
    arch.num_hidden_layers = layers
    if isinstance(getattr(arch, "layer_types", None), list):  # per-layer attention kinds (sliding windows)
        arch.layer_types = (arch.layer_types * layers)[:layers]
    arch.pad_token_id, arch.eos_token_id, arch.bos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id, None
    return arch


def synthetic_benchmark(rows: int, max_length: int, seed: int = 0) -> QABenchmark:
    """`rows` forget and `rows` retain records whose answers have as many words as max_length has tokens, so every
    encoded row is cut at max_length; two short refusals for the methods that train on one."""
    rng = random.Random(seed)
    words = [f"w{k}" for k in range(TOKENIZER_VOCAB // 2)]

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count))

    def records(count: int) -> list[QARecord]:
        return [QARecord(text(QUESTION_WORDS) + "?", text(max_length)) for _ in range(count)]

    return QABenchmark("synthetic_lengths", forget=records(rows), retain=records(rows), eval_sets={},
                       idk_answers=["I don't know.", "I have no idea."])


def stage_training(cfg, stage: str) -> TrainingConfig | None:
    """The optimisation settings of the measured stage, for one epoch: the method's (unlearning) or the model
    config's fine-tuning recipe (stage 0); evaluation trains nothing (None)."""
    if stage == "eval":
        return None
    if stage == "unlearning":
        return replace(check_unlearning_config(cfg), epochs=1)
    try:
        return replace(TrainingConfig(**OmegaConf.to_container(cfg.model.finetune, resolve=True)), epochs=1)
    except TypeError as e:
        raise ConfigError(f"model.finetune: {e}") from None


def measure(cfg, training: TrainingConfig | None, arch: PretrainedConfig, layers: int, steps: int,
            stage: str = "unlearning") -> dict:
    """Bytes held at `layers` decoder layers and the peak while the stage trains (`training`, from stage_training)
    for `steps` optimizer steps: unlearning (a job's three models, the method's training) or stage 0's fine-tuning
    (`measure_finetune`); or the peak of evaluation (`measure_eval`)."""
    if stage == "eval":
        rows, length = max_eval_rows(cfg), cfg.generation.max_length or cfg.generation.max_new_tokens
    else:
        rows, length = steps * training.batch_size * training.gradient_accumulation_steps, training.max_length
    benchmark = synthetic_benchmark(rows, length)
    tokenizer = train_tokenizer(benchmark.texts(), min(TOKENIZER_VOCAB, arch.vocab_size))
    fmt = PromptFormat()
    arch = at_depth(arch, layers, tokenizer)
    device, dtype = device_for(cfg.device), torch_dtype(cfg.model.dtype)
    if stage == "finetune":
        return measure_finetune(arch, benchmark, tokenizer, fmt, training, cfg.seed, device, dtype, layers)
    if stage == "eval":
        return measure_eval(cfg, arch, benchmark, tokenizer, fmt, device, dtype, layers)
    method = build_method(cfg)
    with allocated_bytes(device) as held:
        with torch.device(device):
            target = AutoModelForCausalLM.from_config(arch, dtype=dtype).eval()
            retain = AutoModelForCausalLM.from_config(arch, dtype=dtype).eval()
        batch_sizes = prepare_generation(cfg, [target, retain], tokenizer, fmt, benchmark).unlearning
        unlearned = model_to_unlearn(cfg, target, device)
    run = RunContext(unlearned, tokenizer, fmt, benchmark, cfg.generation.max_new_tokens,
                     method_batch_size(cfg, batch_sizes.decoding, method), scoring_batch_size=batch_sizes.scoring)
    trained: list[int] = []
    with allocated_bytes(device) as training_bytes:
        unlearn(method, run, training, cfg.seed, log_step=lambda record: trained.append(record["step"]))
    if len(trained) < steps:
        raise SystemExit(
            f"bench_memory.py: {cfg.method.name} trained {len(trained)} of {steps} optimizer steps at {layers} "
            "layers: the method ended training itself, so its peak would leave training out (ICU judges the items a "
            "model of random weights continues as forgotten; measure it with method.handler.f1_threshold=-1 "
            "method.handler.bleu_threshold=0, which keep every item: the checks still decode)")
    # target and retain are not touched while the method trains: in host memory then (a job's default), the peak
    # is lower by exactly their bytes
    return measured(layers, target, held, training_bytes, set_aside=[target, retain])


def measure_finetune(arch, benchmark, tokenizer, fmt, training: TrainingConfig, seed: int, device, dtype,
                     layers: int) -> dict:
    """Stage 0 (`pmc.stage0`): the model it starts from waits in host memory while a copy of it is fine-tuned on the
    device, the target's and then the retain's; a finished model is saved and read back into host memory (the
    trained copy freed at once, `pmc.trainer`), so each build has the device to itself and both peak alike."""
    with allocated_bytes(device) as held:
        with torch.device(device):
            trained = AutoModelForCausalLM.from_config(arch, dtype=dtype)
    with allocated_bytes(device) as training_bytes:
        finetune(trained, tokenizer, fmt, benchmark.forget, training, seed, desc="stage0: fine-tuning")
    return measured(layers, trained, held, training_bytes)


def max_eval_rows(cfg) -> int:
    """The most rows evaluation decodes or scores at once: generation.batch_size and scoring_batch_size (`auto` as
    the most it can give on this device; `measure_eval` reports what it resolved to)."""
    most = most_rows(device_for(cfg.device))
    return max(most.decoding if cfg.generation.batch_size == "auto" else cfg.generation.batch_size,
               most.scoring if cfg.generation.scoring_batch_size == "auto" else cfg.generation.scoring_batch_size)


def measure_eval(cfg, arch, benchmark: QABenchmark, tokenizer, fmt, device, dtype, layers: int) -> dict:
    """Evaluation (`pmc.pipeline.evaluate_models`): the job's three models on the device, one of them decoding greedy
    answers (a full batch of generation.batch_size questions, to generation.max_length or max_new_tokens) and
    scoring answers (a full batch of generation.scoring_batch_size rows, each as long as a decoded row can be: the
    prompt and the answer budget, "scored_row_tokens"), the two things a suite does with a model; with
    eval_one_model_on_device the other two models wait in host memory meanwhile ("peak_offloaded"). The rows are as
    wide as the run's settings allow: no answer ends early (a model of random weights draws the end of a sequence
    about once in vocabulary-size tokens), so the KV cache and the scored logits are the largest the settings give."""
    with allocated_bytes(device) as held:
        with torch.device(device):
            models = [AutoModelForCausalLM.from_config(arch, dtype=dtype).eval() for _ in range(3)]
    batch_sizes = prepare_generation(cfg, models, tokenizer, fmt, benchmark).evaluation
    scored, g = models[0], cfg.generation
    length = eval_context(cfg, tokenizer, fmt, benchmark, batch_sizes).answer_length()  # as evaluation decodes
    # a scored row as long as a decoded one gets: the prompt and the answer budget (answers are cut to it)
    longest_prompt = max(len(fmt.prompt_ids(tokenizer, r.question)) for r in benchmark.forget)
    row_tokens = g.max_length or longest_prompt + g.max_new_tokens
    with allocated_bytes(device) as decoding:
        greedy_answers(scored, tokenizer, fmt, [r.question for r in benchmark.forget[: batch_sizes.decoding]],
                       batch_size=batch_sizes.decoding, **length)
    with allocated_bytes(device) as scoring:
        answer_logprob_means(scored, tokenizer, fmt, [(r.question, r.answer)
                                                      for r in benchmark.forget[: batch_sizes.scoring]],
                             batch_sizes.scoring, max_length=row_tokens)
    working = max(decoding, scoring, key=lambda numbers: numbers["peak"])
    return {**measured(layers, scored, held, working, set_aside=models[1:]),
            "decoding_rows": batch_sizes.decoding, "scoring_rows": batch_sizes.scoring,
            "scored_row_tokens": row_tokens,
            "decoding_peak": decoding["peak"], "scoring_peak": scoring["peak"]}


def measured(layers: int, model, held: dict, training_bytes: dict, set_aside: list | None = None) -> dict:
    """A depth's row: the parameters of one model, the bytes of the models held, the peak while training, and the
    peak with the `set_aside` models off the device ("peak_offloaded")."""
    numbers = {"layers": layers, "parameters": sum(p.numel() for p in model.parameters()), "held": held["net"]}
    numbers.update({name: held["net"] + training_bytes[name] for name in ("peak", "reserved_peak")
                    if name in training_bytes})
    if set_aside is not None:
        numbers["peak_offloaded"] = numbers["peak"] - sum(tensor_bytes(m) for m in set_aside)
    return numbers


def tensor_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def line_through(first: dict, second: dict, key: str = "peak"):
    """The bytes at a depth on the line through two measures: a constant (embeddings, output layer, logits) plus the
    same bytes per decoder layer."""
    per_layer = (second[key] - first[key]) / (second["layers"] - first["layers"])
    return lambda layers: first[key] + per_layer * (layers - first["layers"])


def depths_list(text: str) -> list[int]:
    try:
        depths = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of layer counts, got {text!r}") from None
    if depths[0] < 1 or len(depths) < 2:
        raise argparse.ArgumentTypeError(f"at least two distinct depths of 1 layer or more, got {text!r}")
    return depths


# what grows by the same bytes per decoder layer (the extrapolated row's numbers)
LINEAR_KEYS = ("parameters", "held", "peak", "peak_offloaded", "decoding_peak", "scoring_peak")


def report(cfg, arch: PretrainedConfig, measures: list[dict], device: torch.device, training: TrainingConfig | None,
           stage: str = "unlearning") -> dict:
    """The table's numbers: each measured depth, and the architecture's own depth extrapolated where it was not
    measured."""
    depth = arch.num_hidden_layers
    rows = [dict(m, measured=True) for m in measures]
    if len(measures) > 1:
        lines = {key: line_through(measures[0], measures[1], key) for key in LINEAR_KEYS if key in measures[0]}
        for row in rows[2:]:
            row["line"] = lines["peak"](row["layers"])
        if depth not in {m["layers"] for m in measures}:
            extrapolated = {key: line(depth) for key, line in lines.items()}
            rows.append({**extrapolated, "parameters": round(extrapolated["parameters"]), "layers": depth,
                         "measured": False})
    method = {"method": cfg.method.name, "handler": OmegaConf.to_container(cfg.method.handler, resolve=True),
              "lora_r": int((lora_settings(cfg) or {}).get("r", 0))} if stage == "unlearning" else {}
    if training is None:  # evaluation: how long its decoded rows get
        g = cfg.generation
        settings = {"length": (f"max_length {g.max_length}, prompt and answer" if g.max_length
                               else f"max_new_tokens {g.max_new_tokens}")}
    else:
        settings = {"precision": training.precision, "gradient_checkpointing": training.gradient_checkpointing,
                    "micro_batch": training.batch_size,
                    "gradient_accumulation_steps": training.gradient_accumulation_steps,
                    "max_length": training.max_length}
    return {"device": device_name(device), "torch": torch.__version__, "stage": stage, **method,
            "model": cfg.model.name, "architecture": arch.model_type, "dtype": cfg.model.dtype, **settings,
            "rows": rows}


def size(value: float) -> str:
    return f"{value / GIB:.2f} GiB" if value >= GIB else f"{value / 2**20:.1f} MiB"


# the table's columns of held bytes, peak and peak with models set aside, per stage
COLUMNS = {
    "unlearning": ("the job's three models", "peak while unlearning",
                   "the same, target and retain offloaded (the default)"),
    "finetune": ("the model fine-tuned", "peak while fine-tuning (the target's build, the retain's alike)", None),
    "eval": ("the job's three models", "peak in evaluation, all three on the device (the default)",
             "the same, one model on the device at a time (eval_one_model_on_device)"),
}


def table(numbers: dict) -> str:
    stage = numbers.get("stage", "unlearning")
    if stage == "eval":
        first = numbers["rows"][0]
        setting = (f"evaluation on {numbers['model']}'s architecture ({numbers['architecture']}): weights "
                   f"{numbers['dtype']}, greedy decoding of {first['decoding_rows']} rows ({numbers['length']}), "
                   f"scoring of {first['scoring_rows']} rows x {first['scored_row_tokens']} tokens; beyond the "
                   "models held, decoding's own peak is "
                   + ", scoring's ".join(", ".join(f"{size(row[key])} at {row['layers']} layers"
                                                   for row in numbers["rows"])
                                         for key in ("decoding_peak", "scoring_peak")))
    else:
        what = (f"{numbers['method']}, LoRA r={numbers['lora_r']}," if stage == "unlearning"
                else "stage 0's fine-tuning (model.finetune),")
        setting = (f"{what} on {numbers['model']}'s architecture ({numbers['architecture']}): weights "
                   f"{numbers['dtype']}, training {numbers['precision']}, gradient checkpointing "
                   f"{'on' if numbers['gradient_checkpointing'] else 'off'}, micro-batches "
                   f"of {numbers['micro_batch']} rows x {numbers['max_length']} tokens, "
                   f"{numbers['gradient_accumulation_steps']} to an optimizer step")
    titles = [title for title in COLUMNS[stage] if title]
    lines = [f"device: {numbers['device']}, torch {numbers['torch']}", setting, "",
             "| decoder layers | parameters | " + " | ".join(titles) + " | on the line of the first two "
             "| peak reserved |",
             "|---:|---:|" + "---:|" * (len(titles) + 2)]
    for row in numbers["rows"]:
        depth = str(row["layers"]) if row["measured"] else f"{row['layers']} (extrapolated)"
        cells = [depth, f"{row['parameters'] / 1e9:.3f}B", size(row["held"]), size(row["peak"]),
                 *([size(row["peak_offloaded"])] if "peak_offloaded" in row else []),
                 size(row["line"]) if "line" in row else "-",
                 size(row["reserved_peak"]) if "reserved_peak" in row else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's device)")
    parser.add_argument("--architecture", default=None, help="a config.json (default: the hub model's)")
    parser.add_argument("--layers", type=depths_list, default=None,
                        help="measure at these depths, e.g. 1,2 (default: the architecture's own)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps (at least 2)")
    parser.add_argument("--stage", choices=sorted(COLUMNS), default="unlearning",
                        help="what is measured: a job's unlearning (the method), stage 0's fine-tuning "
                             "(model.finetune) or a job's evaluation (eval)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, e.g. experiment=tofu_llama3b")
    args = parser.parse_intermixed_args(argv)
    if args.steps < 2:
        parser.error(f"--steps: at least 2 (the peak comes after the first optimizer step), got {args.steps}")
    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    configure_kernels(cfg)
    arch = architecture(cfg, args.architecture)
    device = device_for(cfg.device)
    training = stage_training(cfg, args.stage)
    measures = []
    for layers in args.layers or [arch.num_hidden_layers]:
        measures.append(measure(cfg, training, arch, layers, args.steps, args.stage))
        print(f"measured {layers} layers: peak {measures[-1]['peak'] / GIB:.2f} GiB", flush=True)
    numbers = report(cfg, arch, measures, device, training, args.stage)
    print(table(numbers))
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2) + "\n")
    return numbers


if __name__ == "__main__":
    main()
