"""Batched decoding: greedy answers for evaluation and PMC's reference, sampled answers for PMC's candidates,
beam-search answers and greedy token continuations for ICU's forgetting checks.

Prompts are left-padded so every row's answer starts at the same position; answers are decoded without special
tokens and stripped, which is what ROUGE scores.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pmc.batches import eval_mode, longest_first, pad_left
from pmc.prompts import PromptFormat


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    fmt: PromptFormat,
    questions: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    num_samples: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    desc: str | None = None,
) -> list[list[str]]:
    """One list of answers per question: greedy (one answer) when temperature is None, or beam search over num_beams
    beams when num_beams > 1; else num_samples samples drawn with temperature and top-p from the global torch RNG
    (seeded by the run)."""
    sampling = temperature is not None
    if not sampling and num_samples != 1:
        raise ValueError("greedy decoding gives one answer per question; pass a temperature to sample several")
    if sampling and num_beams != 1:
        raise ValueError("beam search is deterministic; pass temperature=None with num_beams > 1")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    answers: list[list[str]] = []
    starts = range(0, len(questions), batch_size)
    with eval_mode(model):
        for start in tqdm(starts, desc=desc or "generate", leave=False, disable=desc is None):
            prompts = [fmt.prompt_ids(tokenizer, q) for q in questions[start : start + batch_size]]
            input_ids, attention_mask = pad_left(prompts, pad_id)
            width = input_ids.shape[1]
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                num_beams=num_beams,
                temperature=temperature,
                top_p=top_p if sampling else None,
                top_k=0 if sampling else None,
                num_return_sequences=num_samples,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for i in range(len(prompts)):
                answers.append([t.strip() for t in texts[i * num_samples : (i + 1) * num_samples]])
    return answers


def greedy_answers(model, tokenizer, fmt: PromptFormat, questions: list[str], **kwargs) -> list[str]:
    return [a[0] for a in generate_answers(model, tokenizer, fmt, questions, **kwargs)]


@torch.no_grad()
def greedy_continuations(
    model, prompts: list[list[int]], lengths: list[int], *, pad_id: int, eos_id: int, batch_size: int = 32,
    desc: str | None = None,
) -> list[list[int]]:
    """Per token-id prompt, its greedy continuation of lengths[i] new tokens, cut before the first end-of-sequence.

    Prompts wanting similar numbers of tokens share a batch (longest first), which decodes as many tokens as its
    longest request; a row keeps its first lengths[i], the same tokens greedy decoding of exactly that length gives.
    """
    device = next(model.parameters()).device
    continuations: list[list[int]] = [[] for _ in prompts]
    with eval_mode(model):
        for batch in tqdm(longest_first(lengths, batch_size), desc=desc or "generate", leave=False,
                          disable=desc is None):
            input_ids, attention_mask = pad_left([prompts[i] for i in batch], pad_id)
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max(lengths[i] for i in batch),
                do_sample=False,
                num_beams=1,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )
            for i, row in zip(batch, out[:, input_ids.shape[1] :].tolist()):
                row = row[: lengths[i]]
                continuations[i] = row[: row.index(eos_id)] if eos_id in row else row
    return continuations
