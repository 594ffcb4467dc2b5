"""The one training loop: stage-0 fine-tuning and every unlearning method run through `optimise`.

`optimise` knows nothing about methods: it gets the micro-batches of each epoch and a function from a micro-batch
to named loss terms, and does the optimisation the references' HF Trainer does (AdamW with weight decay on weights
only, warm-up then linear decay, gradient accumulation and clipping, fp32 master weights under bf16 autocast), the
non-finite-loss check, the per-step log and the progress bar.

One `accelerate.Accelerator` owns precision, devices and distribution, so the same loop runs on a CPU, one GPU, or
several under DDP, FSDP or DeepSpeed ZeRO-3 (an accelerate config: conf/accelerate/, see pmc.distributed).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sized

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, TorchDynamoPlugin, send_to_device
from tqdm.auto import tqdm

from pmc.checkpoint import Checkpoints, read_state
from pmc.core.batches import encode_pairs, epoch_order, pair_length
from pmc.core.errors import ConfigError, TrainingDiverged
from pmc.core.losses import answer_nll, one_forward
from pmc.core.models import dimensions_apart, enable_tf32
from pmc.core.records import QARecord
from pmc.core.rng import rng_state, set_rng_state
from pmc.distributed import world_size
from pmc.methods.base import ForgetExample, Method, RunContext
from pmc.optimisation import (
    OPTIMIZERS,
    PRECISIONS,
    LearningRateSchedule,
    TrainingConfig,
    decay_parameter_groups,
    optimizer_steps_per_epoch,
    warmup_steps,
)

StepLog = Callable[[dict], None]


@dataclass
class CallerState:
    """What a checkpoint keeps of the caller of `optimise` besides the training state: `save()` gives it as JSON
    when a checkpoint is written, `restore(state)` puts it back before training resumes. After a mid-epoch restore,
    `epoch_batches(epoch)` must give that epoch's micro-batches as they were, without redoing its per-epoch work."""

    save: Callable[[], dict]
    restore: Callable[[dict], None]


@dataclass
class TrainingSession:
    """What one `optimise` call trains with: the Accelerator and the model, optimizer and scheduler it prepared
    (the objects accelerate's save_state / load_state checkpoint), and the schedule's size."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: LearningRateSchedule  # the scheduler's multiplier, re-sized when an epoch's step count changes
    steps_per_epoch: int  # of the first epoch
    total_steps: int  # as first planned: the first epoch's steps times training.epochs
    forward_before: object = None  # the model's own instance-level forward before accelerate wrapped it (usually none)


def _new_accelerator(training: TrainingConfig, on_cpu: bool) -> Accelerator:
    """An Accelerator with this run's precision and accumulation. accelerate keeps one AcceleratorState per process
    and refuses a second precision, but stage 0 and unlearning may differ (and tests run many), so the previous
    state is dropped first; in a multi-process run the process group (PartialState) is kept."""
    AcceleratorState._reset_state(reset_partial_state=world_size() == 1)
    # The scheduler is stepped once per optimizer step here: accelerate's default would step it once per process,
    # as if each process saw 1/num_processes of the data (every process sees every micro-batch here).
    return Accelerator(mixed_precision=PRECISIONS[training.precision], cpu=on_cpu,
                       gradient_accumulation_steps=training.gradient_accumulation_steps,
                       step_scheduler_with_optimizer=False,
                       dynamo_plugin=_compilation(training.compile_backend, training.compile_mode,
                                                  training.compile_regional))


def _compilation(backend: str | None, mode: str | None, regional: bool = True) -> TorchDynamoPlugin:
    """training.compile's backend and mode as accelerate's torch.compile settings. A small model on a GPU waits for
    the host to launch its kernels; compiled, each decoder layer runs as a few fused kernels, and with inductor's
    reduce-overhead mode as one CUDA graph. Regional compilation compiles the repeated decoder layer once (seconds),
    not the whole model (`regional=False`, training.compile_regional: one graph for the whole model, a longer
    compile); dynamic shapes, because every micro-batch is padded to its own longest row (or to a multiple of
    training.pad_to_multiple_of: CUDA graphs are recorded per shape). The mode is always passed, so accelerate's
    ACCELERATE_DYNAMO_MODE cannot change it unseen. The prepared model is compiled, the model itself stays eager (PMC
    samples with it)."""
    if backend is None:
        return TorchDynamoPlugin(backend="no")
    return TorchDynamoPlugin(backend=backend, mode=mode or "default", use_regional_compilation=regional,
                             dynamic=True)


def start_session(model: torch.nn.Module, training: TrainingConfig, micro_batches_per_epoch: int) -> TrainingSession:
    """Prepare training: fp32 master copies of the trainable weights, the optimizer and schedule, and accelerate's
    wrapping of all three (device placement, autocast, DDP / FSDP / DeepSpeed)."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    if training.gradient_checkpointing:
        _activation_checkpointing(model, enable=True)
    accelerator = _new_accelerator(training, on_cpu=next(model.parameters()).device.type == "cpu")
    enable_tf32(accelerator.device)
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None:  # DeepSpeed takes these from its own config, not from the loop's calls
        deepspeed.deepspeed_config.update({"train_micro_batch_size_per_gpu": training.batch_size,
                                           "gradient_clipping": training.max_grad_norm})
    steps_per_epoch = optimizer_steps_per_epoch(micro_batches_per_epoch, training.gradient_accumulation_steps)
    total = steps_per_epoch * training.epochs
    warmup = warmup_steps(training, micro_batches_per_epoch, total)
    optimizer = OPTIMIZERS[training.optimizer](
        decay_parameter_groups(model, training.weight_decay), lr=training.learning_rate, betas=training.adam_betas,
        eps=training.adam_epsilon, fused=training.fused_optimizer,
    )
    schedule = LearningRateSchedule(training.schedule, warmup, total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    forward_before = model.__dict__.get("forward")
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return TrainingSession(accelerator, prepared, optimizer, scheduler, schedule, steps_per_epoch, total,
                           forward_before)


def _activation_checkpointing(model: torch.nn.Module, enable: bool) -> None:
    """Switch transformers' activation (gradient) checkpointing, named `activation_checkpointing_*` since
    transformers 5.x and `gradient_checkpointing_*` before."""
    if hasattr(model, "activation_checkpointing_enable"):
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif hasattr(model, "gradient_checkpointing_enable"):
        if enable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()
    else:
        raise ConfigError(f"training.gradient_checkpointing: {type(model).__name__} does not support it")


def _finish_session(session: TrainingSession, model: torch.nn.Module, training: TrainingConfig,
                    storage_dtypes: dict) -> None:
    """The model as evaluation expects it: accelerate's autocast wrapper removed, trained weights back in the
    dtype the model is stored in, activations no longer recomputed, eval mode."""
    session.accelerator.unwrap_model(session.model, keep_fp32_wrapper=False)
    # Under mixed precision that unwrapping sets model.forward to the innermost function under every `__wrapped__`,
    # past transformers' own decorators (return_dict=False, renamed keywords), as a method bound to the model in its
    # own __dict__: a reference cycle that kept a trained model's weights (a finished stage-0 model on the GPU)
    # until Python's cyclic collector ran. The model gets back the forward it had before (its class's).
    if session.forward_before is None:
        model.__dict__.pop("forward", None)
    else:
        model.forward = session.forward_before
    if session.accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        for parameter in model.parameters():  # sharded parameters stay as the engine keeps them
            parameter.data = parameter.data.to(storage_dtypes[parameter])
    if training.gradient_checkpointing:
        _activation_checkpointing(model, enable=False)
    model.eval()
    if session.accelerator.device.type == "cuda" and session.accelerator.distributed_type != DistributedType.DEEPSPEED:
        session.accelerator.free_memory()  # optimizer state (2 fp32 copies of the weights) freed before evaluation


def optimise(
    model,
    training: TrainingConfig,
    epoch_batches: Callable[[int], Iterable],
    compute_loss: Callable[[torch.nn.Module, object], dict[str, torch.Tensor]],
    log_step: StepLog | None = None,
    desc: str = "train",
    checkpoints: Checkpoints | None = None,
    caller_state: CallerState | None = None,
) -> None:
    """Run training.epochs epochs. epoch_batches(epoch) gives that epoch's micro-batches as a sequence; they are
    taken one at a time by index (a method may build each with the current weights), and moved to the training
    device. They are built, and epoch_batches called after the first epoch, under accelerate's autocast as the loss
    is computed, so what a method decodes while training (PMC's samples, ICU's checks) runs at the training
    precision: under bf16-mixed in bf16 (with a bf16 KV cache) as the official DeepSpeed runs decode with their bf16
    weights, not in the fp32 master weights' precision. epoch_batches(0) itself (the first epoch's own work) runs
    before the master weights exist, with the weights as stored (bf16 for the hub models).
    compute_loss(model, micro_batch) gets the model as accelerate wrapped it. Epochs may differ in length (ICU trains
    on the items it has not forgotten yet): the learning-rate schedule is sized from the first epoch's optimizer
    steps and re-sized at the start of an epoch whose step count differs (LearningRateSchedule); an empty epoch ends
    training (e.g. ICU has forgotten every item).

    With `checkpoints`, a checkpoint is written at every epoch boundary and every `checkpoints.every_steps` optimizer
    steps (none sooner than `checkpoints.min_interval_s` after the previous one), and training resumes from the
    newest one: the same micro-batch, weights, optimizer, schedule and RNG states as the interrupted run had there,
    so the rest of training is the same (pmc.checkpoint). The end of the last epoch is checkpointed whatever
    `min_interval_s` says: resumed from there, training is over, the weights are loaded and nothing else."""
    if training.epochs == 0:
        model.eval()
        return
    accumulation = training.gradient_accumulation_steps
    resume_from = checkpoints.latest() if checkpoints else None
    storage_dtypes = {parameter: parameter.dtype for parameter in model.parameters()}
    if resume_from is None:
        micro_batches: Sized = epoch_batches(0)
        first_count, first_epoch, start, step = len(micro_batches), 0, 0, 0
    else:  # the schedule is sized as in the interrupted run, without redoing epoch 0's per-epoch work
        first_count = read_state(resume_from)["position"]["first_epoch_micro_batches"]
    session = start_session(model, training, first_count)
    accelerator, prepared = session.accelerator, session.model
    if resume_from is not None:
        state = checkpoints.load(accelerator, resume_from)
        position = state["position"]
        first_epoch, start, step = position["epoch"], position["micro_batch"], position["step"]
        if first_epoch < training.epochs:
            if caller_state:
                caller_state.restore(state["caller"])
            print(f"{desc}: resuming from {resume_from} (epoch {first_epoch + 1}, optimizer step {step})", flush=True)
            micro_batches = epoch_batches(first_epoch)
        else:  # training was over: the weights are what the caller needs, its state is not (it may not be set up)
            print(f"{desc}: training had finished, weights from {resume_from} (optimizer step {step})", flush=True)

    def save_checkpoint(epoch: int, next_micro_batch: int, always: bool = False) -> None:
        if not (always or checkpoints.due()):
            return
        position = {"epoch": epoch, "micro_batch": next_micro_batch, "step": step,
                    "first_epoch_micro_batches": first_count}
        checkpoints.save(accelerator, position, caller_state.save() if caller_state else {})

    prepared.train()
    try:
        with tqdm(total=session.total_steps, initial=step, desc=desc, leave=False,
                  disable=not accelerator.is_main_process) as bar:
            for epoch in range(first_epoch, training.epochs):
                if epoch != first_epoch:
                    with accelerator.autocast():  # the epoch's own work too (PMC's sample_every=epoch, ICU's checks)
                        micro_batches = epoch_batches(epoch)
                    start = 0
                count = len(micro_batches)
                if not count:
                    break
                if not start:
                    accelerator.step = 0  # accumulate()'s micro-batch counter: groups restart with every epoch
                    # the remaining epochs planned at this one's size (a no-op while every epoch has the same)
                    session.schedule.resize(step, step + optimizer_steps_per_epoch(count, accumulation)
                                            * (training.epochs - epoch))
                    bar.total = session.schedule.total
                logged: dict[str, float] = {}
                # resuming mid-epoch: the micro-batches already trained on are skipped without being built
                for index in range(start, count):
                    with accelerator.autocast():  # a method builds it at the training precision (PMC: its samples)
                        micro_batch = micro_batches[index]
                    group_size = min(accumulation, count - index // accumulation * accumulation)
                    if index % accumulation == 0:
                        # the epoch's last group may be shorter: advance the counter so accumulate() syncs after it
                        accelerator.step += accumulation - group_size
                    with accelerator.accumulate(prepared):
                        with accelerator.autocast(), dimensions_apart():
                            terms = compute_loss(prepared, send_to_device(micro_batch, accelerator.device))
                        values = host_values(terms)
                        if not math.isfinite(values["loss"]):
                            raise TrainingDiverged(
                                f"{desc}: loss became {values['loss']} at epoch {epoch + 1}, step {step + 1}; "
                                "lower the learning rate or check the data"
                            )
                        # divided by `accumulation` even in a short group: HF Trainer's (and DeepSpeed's) weighting
                        accelerator.backward(terms["loss"])
                        for name, value in values.items():
                            logged[name] = logged.get(name, 0.0) + value / group_size
                        if accelerator.sync_gradients:
                            if training.max_grad_norm:
                                accelerator.clip_grad_norm_(prepared.parameters(), training.max_grad_norm)
                            lr = session.scheduler.get_last_lr()[0]
                            session.optimizer.step()
                            session.scheduler.step()
                            session.optimizer.zero_grad(set_to_none=True)
                            step += 1
                            if log_step:
                                log_step({"step": step, "epoch": epoch + 1, "lr": lr, **logged})
                            bar.update(1)
                            bar.set_postfix(loss=f"{logged['loss']:.3f}")
                            logged = {}
                            if (checkpoints and checkpoints.every_steps and step % checkpoints.every_steps == 0
                                    and index + 1 < count):
                                save_checkpoint(epoch, index + 1)
                if checkpoints:  # the last epoch's end always: a run stopped while it evaluates resumes there
                    save_checkpoint(epoch + 1, 0, always=epoch + 1 == training.epochs)
    finally:
        _finish_session(session, model, training, storage_dtypes)


def host_values(terms: dict) -> dict[str, float]:
    """Every named loss term as a float, those on the loss's device copied to the host together: one wait for the
    device per micro-batch, not one per term (a GPU that waits for the host between its kernels idles)."""
    device = terms["loss"].device
    together = [name for name, value in terms.items() if torch.is_tensor(value) and value.device == device]
    values = {name: float(value) for name, value in terms.items() if name not in together}  # host tensors, numbers
    if together:  # in float64 (exact for every narrower float, as float() reads it) where the device has it
        wide = torch.float32 if device.type == "mps" else torch.float64
        stacked = torch.stack([terms[name].detach().to(wide).reshape(()) for name in together])
        values.update(zip(together, stacked.tolist()))
    return {name: values[name] for name in terms}


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def finetune(
    model, tokenizer, fmt, records: list[QARecord], training: TrainingConfig, seed: int,
    log_step: StepLog | None = None, desc: str = "finetune", checkpoints: Checkpoints | None = None,
) -> None:
    """Plain supervised fine-tuning on QA records (stage 0: target, retain and tiny-model pre-training)."""
    rng = random.Random(seed)
    pairs = [(r.question, r.answer) for r in records]
    plan: dict = {}  # this epoch's order, kept by checkpoints so a mid-epoch resume trains the same micro-batches

    lengths = [pair_length(tokenizer, fmt, q, a) for q, a in pairs] if training.group_by_length else None

    def epoch_batches(epoch):
        if plan.get("epoch") != epoch:
            plan.update(epoch=epoch, order=epoch_order(rng, len(pairs), training.batch_size, lengths))
        shuffled = [pairs[i] for i in plan["order"]]
        return [encode_pairs(tokenizer, fmt, c, training.max_length, training.pad_to_multiple_of)
                for c in _chunks(shuffled, training.batch_size)]

    def restore(state):
        set_rng_state(rng, state["rng"])
        plan.clear()
        plan.update(state["plan"])

    optimise(model, training, epoch_batches, lambda model, batch: {"loss": answer_nll(model, batch)}, log_step, desc,
             checkpoints, CallerState(lambda: {"rng": rng_state(rng), "plan": dict(plan)}, restore))


class LazyMicroBatches:
    """One epoch's micro-batches as a sized sequence: the count is known up front, micro-batch k is built only when
    the loop asks for it, so a method chooses its forget targets with the weights of the step that trains on them
    (PMC samples per micro-batch), and a resumed epoch builds none before its checkpoint's. Each k once: asked again,
    it is built (and sampled) again."""

    def __init__(self, count: int, build: Callable[[int], object]):
        self._count, self._build = count, build

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, k: int):
        return self._build(k)


def unlearn(
    method: Method, run: RunContext, training: TrainingConfig, seed: int, log_step: StepLog | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, float]:
    """Unlearn run.model with `method`: each epoch, every forget example once, each paired with a random retain
    example when the method has a retain term (`method.uses_retain`; the others get retain=None and draw none).

    The forget order and retain partners of an epoch are drawn from the seeded RNG when the epoch starts; each
    micro-batch is built when the training loop reaches it, its forget rows from `method.forget_batch_examples`.
    That plan (the epoch's forget examples, their order in micro-batches, the retain partners) is kept by
    checkpoints with the method's state, so a mid-epoch resume redoes no per-epoch work and builds only the
    micro-batches still to train. Before the first micro-batch of each optimizer step the method sees the forget rows
    of all the step's micro-batches (`method.on_optimizer_step_start`); a checkpoint is always at a step's start.
    A resumed run sets the method up but takes its state from the checkpoint (`method.init_state` is not called:
    PMC's initial answers are not decoded, nor compiled for, a second time); resumed from the checkpoint at the end
    of training (a job stopped while evaluating), the method is not set up at all.

    Returns the method's own timings (`method.timings()`, e.g. PMC's sampling) and `setup`, the seconds before the
    first step (setting the method up and its initial state), for results.json's timings_s."""
    rng = random.Random(seed)
    retain = run.benchmark.retain
    start = time.perf_counter()
    resuming = checkpoints is not None and checkpoints.latest() is not None
    if not (resuming and checkpoints.finished(training.epochs)):  # else only the trained weights are loaded
        method.setup(run)
        if not resuming:
            method.init_state(run)
    setup_s = time.perf_counter() - start
    encode = lambda pairs: encode_pairs(run.tokenizer, run.prompt_format, pairs, training.max_length,
                                        training.pad_to_multiple_of)
    plan: dict = {}
    accumulation = training.gradient_accumulation_steps

    def epoch_batches(epoch):
        run.epoch = epoch
        if plan.get("epoch") != epoch:
            method.on_epoch_start(run)
            examples = method.forget_examples(run)
            # grouped by the lengths the rows have now (PMC: the cached answers; "" before the first sampling)
            lengths = [pair_length(run.tokenizer, run.prompt_format, e.question, e.answer)
                       for e in examples] if training.group_by_length else None
            order = epoch_order(rng, len(examples), training.batch_size, lengths)
            chunks = _chunks(order, training.batch_size)
            partners = [[rng.randrange(len(retain)) for _ in chunk] for chunk in chunks] if method.uses_retain else None
            plan.update(epoch=epoch, examples=[[e.question, e.answer, e.paired] for e in examples], chunks=chunks,
                        partners=partners)
        examples = [ForgetExample(q, a, tuple(paired) if paired else None) for q, a, paired in plan["examples"]]
        chunks, partners = plan["chunks"], plan["partners"]

        def build(k):
            if k % accumulation == 0:  # the first micro-batch of an optimizer step (`optimise` groups them so)
                method.on_optimizer_step_start(run, examples, [i for chunk in chunks[k:k + accumulation]
                                                               for i in chunk])
            rows = method.forget_batch_examples(run, examples, chunks[k])
            forget = encode([(e.question, e.answer) for e in rows])
            if rows[0].paired is not None:
                forget.paired = encode([e.paired for e in rows])
            retain_batch = encode([(retain[i].question, retain[i].answer) for i in partners[k]]) if partners else None
            return forget, retain_batch

        return LazyMicroBatches(len(chunks), build)

    def save() -> dict:
        return {"rng": rng_state(rng), "method": method.state_dict(), "plan": dict(plan)}

    def restore(state: dict) -> None:
        set_rng_state(rng, state["rng"])
        method.load_state_dict(state["method"])
        plan.clear()
        plan.update(state["plan"])

    def loss(model, pair) -> dict[str, torch.Tensor]:
        forget, retain_batch = pair
        joined = [forget, forget.paired, retain_batch] if training.joint_forward else []
        with one_forward(model, joined):
            return method.loss(model, forget, retain_batch)

    optimise(
        run.model, training, epoch_batches, loss, log_step, f"unlearn[{method.name}]", checkpoints,
        CallerState(save, restore),
    )
    return {"setup": round(setup_s, 3), **method.timings()}
