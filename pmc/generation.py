"""Batched decoding: greedy answers for evaluation and PMC's reference, sampled answers for PMC's candidates.

Prompts are left-padded so every row's answer starts at the same position; answers are decoded without special
tokens and stripped, which is what ROUGE scores.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pmc.batches import eval_mode
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
    desc: str | None = None,
) -> list[list[str]]:
    """One list of answers per question: greedy (one answer) when temperature is None, else num_samples samples
    drawn with temperature and top-p from the global torch RNG (seeded by the run)."""
    sampling = temperature is not None
    if not sampling and num_samples != 1:
        raise ValueError("greedy decoding gives one answer per question; pass a temperature to sample several")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    answers: list[list[str]] = []
    starts = range(0, len(questions), batch_size)
    with eval_mode(model):
        for start in tqdm(starts, desc=desc or "generate", leave=False, disable=desc is None):
            prompts = [fmt.prompt_ids(tokenizer, q) for q in questions[start : start + batch_size]]
            width = max(len(p) for p in prompts)
            input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
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
