"""Batched decoding: greedy answers for evaluation and PMC's reference, sampled answers for PMC's candidates,
beam-search answers and greedy token continuations for ICU's forgetting checks.

Prompts are left-padded so every row's answer starts at the same position; answers are decoded without special
tokens, the prompt format's answer tag is removed (Phi writes "Answer: " itself) and the text stripped, which is
what ROUGE scores.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pmc.batches import eval_mode, longest_first, pad_left
from pmc.errors import ConfigError
from pmc.prompts import PromptFormat

# transformers' GenerationConfig default, which the official PMC sampler gets by passing no top_k
# (unlearning/pmc.py L192-202); passed explicitly so it does not depend on the model's generation_config.json.
DEFAULT_TOP_K = 50


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    fmt: PromptFormat,
    questions: list[str],
    *,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    num_samples: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int = DEFAULT_TOP_K,
    num_beams: int = 1,
    desc: str | None = None,
) -> list[list[str]]:
    """One list of answers per question: greedy (one answer) when temperature is None, or beam search over num_beams
    beams when num_beams > 1; else num_samples samples drawn with temperature, top-p and top-k (0 = no top-k) from
    the global torch RNG (seeded by the run).

    Length: exactly one of max_new_tokens (answer tokens) or max_length (prompt + answer tokens, the official
    `max_length`, unlearning/pmc.py L195 and inference.py L28). max_length counts each row's own prompt; the official
    code counts the left-padded batch width, so there every row of a batch gets max_length minus its longest prompt."""
    sampling = temperature is not None
    if not sampling and num_samples != 1:
        raise ValueError("greedy decoding gives one answer per question; pass a temperature to sample several")
    if sampling and num_beams != 1:
        raise ValueError("beam search is deterministic; pass temperature=None with num_beams > 1")
    if (max_new_tokens is None) == (max_length is None):
        raise ConfigError(f"generation needs exactly one of max_new_tokens, max_length; got {max_new_tokens}, "
                          f"{max_length}")
    answer_tag = getattr(fmt, "answer_tag", "")  # stand-in formats (analyses' prefilled continuations) carry none
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    answers: list[list[str]] = []
    starts = range(0, len(questions), batch_size)
    with eval_mode(model):
        for start in tqdm(starts, desc=desc or "generate", leave=False, disable=desc is None):
            prompts = [fmt.prompt_ids(tokenizer, q) for q in questions[start : start + batch_size]]
            if max_length is None:
                budgets = [max_new_tokens] * len(prompts)
            else:
                budgets = [max_length - len(p) for p in prompts]
                if min(budgets) < 1:
                    raise ConfigError(f"generation max_length={max_length} leaves no room for an answer after a "
                                      f"{max(len(p) for p in prompts)}-token prompt; raise it")
            input_ids, attention_mask = pad_left(prompts, pad_id)
            width = input_ids.shape[1]
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max(budgets),
                do_sample=sampling,
                num_beams=num_beams,
                temperature=temperature,
                top_p=top_p if sampling else None,
                top_k=top_k if sampling else None,
                num_return_sequences=num_samples,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            # row r is sample r % num_samples of question r // num_samples; each keeps its own budget of tokens
            rows = [row[: budgets[r // num_samples]].tolist() for r, row in enumerate(out[:, width:])]
            # the tag is removed only when present: the official evaluation rule (unlearning/inference.py L42-47); the
            # official sampler slices len(tag) characters off unconditionally (unlearning/pmc.py L212-215), which
            # would cut real text from a generation without the tag
            texts = [t.removeprefix(answer_tag).strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]
            for i in range(len(prompts)):
                answers.append(texts[i * num_samples : (i + 1) * num_samples])
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
