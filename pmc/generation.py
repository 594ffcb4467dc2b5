"""Batched decoding: greedy answers for evaluation and PMC's reference, sampled answers for PMC's candidates.

Prompts are left-padded so every row's answer starts at the same position; answers are decoded without special
tokens, the prompt format's answer tag is removed (Phi writes "Answer: " itself) and the text stripped, which is
what ROUGE scores.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pmc.batches import eval_mode
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
    desc: str | None = None,
) -> list[list[str]]:
    """One list of answers per question: greedy (one answer) when temperature is None, else num_samples samples
    drawn with temperature, top-p and top-k (0 = no top-k) from the global torch RNG (seeded by the run).

    Length: exactly one of max_new_tokens (answer tokens) or max_length (prompt + answer tokens, the official
    `max_length`, unlearning/pmc.py L195 and inference.py L28). max_length counts each row's own prompt; the official
    code counts the left-padded batch width, so there every row of a batch gets max_length minus its longest prompt."""
    sampling = temperature is not None
    if not sampling and num_samples != 1:
        raise ValueError("greedy decoding gives one answer per question; pass a temperature to sample several")
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
            width = max(len(p) for p in prompts)
            input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max(budgets),
                do_sample=sampling,
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
