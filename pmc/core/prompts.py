"""How a question becomes a prompt, per model family (the format lives in the model config).

Prompt and answer are tokenised separately and concatenated, so the boundary between them is exact: training
masks every prompt token, and generation starts right where the answer would.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from pmc.core.errors import ConfigError

# tokenizer -> {(prompt format, "prompt" or "answer", text): token ids}; an entry goes with its tokenizer
_TOKEN_IDS: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class PromptFormat:
    """`plain`: question_template filled in; `chat`: the tokenizer's chat template with an optional system prompt
    (Llama-3.2-Instruct, SmolLM2-Instruct) and `chat_template_kwargs` passed to it (Llama's `date_string`, which
    the template otherwise sets to today's date, so prompts would change with the day of the run).

    answer_prefix goes before every trained answer text. answer_tag is the part of it the model writes itself at
    the start of an answer (Phi: the prompt is "Question: …\\n" and the trained answer "Answer: …", tag included in
    the labels as in the official encoding, unlearning/encoding.py L19-21); it is removed from decoded
    generations when they start with it (pmc.core.generation), before answers are scored or trained on."""

    style: str = "plain"
    question_template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "
    system_prompt: str | None = None
    answer_tag: str = ""
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.style not in ("plain", "chat", "raw"):
            raise ConfigError(f"model.prompt.style must be 'plain', 'chat' or 'raw', got {self.style!r}")
        if "{question}" not in self.question_template:
            raise ConfigError("model.prompt.question_template must contain '{question}'")
        if not self.answer_prefix.startswith(self.answer_tag):
            raise ConfigError(f"model.prompt.answer_tag {self.answer_tag!r} must begin answer_prefix "
                              f"{self.answer_prefix!r}: the model only writes the tag it was trained on")
        kwargs = self.chat_template_kwargs or {}
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ConfigError(f"model.prompt.chat_template_kwargs must map names to values, got {kwargs!r}")
        if kwargs and self.style != "chat":
            raise ConfigError(f"model.prompt.chat_template_kwargs is only used by style 'chat', not {self.style!r}")
        object.__setattr__(self, "chat_template_kwargs", dict(kwargs))  # a plain dict, also from a DictConfig

    def __hash__(self) -> int:
        """Formats key tokenisation memos: hash every field, chat_template_kwargs by its items."""
        values = (getattr(self, f.name) for f in fields(self))
        return hash(tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in values))

    def prompt_ids(self, tokenizer, question: str) -> list[int]:
        """The question's prompt ids (remembered: `_remembered`)."""
        return self._remembered(tokenizer, "prompt", question, self._tokenise_prompt)

    def answer_ids(self, tokenizer, answer: str) -> list[int]:
        """Answer tokens followed by end-of-sequence, so a trained model learns to stop (remembered: `_remembered`)."""
        return self._remembered(tokenizer, "answer", answer, self._tokenise_answer)

    def _remembered(self, tokenizer, kind: str, text: str, tokenise) -> list[int]:
        """tokenise(tokenizer, text) on first use, then remembered for this tokenizer object (a tokenizer is never
        changed after it is built, so the ids cannot go stale): training encodes every record every epoch, the
        suites score and decode the same pairs and questions for every model, PMC samples answers to the same forget
        questions at every step. Each caller gets its own list."""
        memo = _TOKEN_IDS.setdefault(tokenizer, {})
        key = (self, kind, text)
        if key not in memo:
            memo[key] = tuple(tokenise(tokenizer, text))
        return list(memo[key])

    def _tokenise_prompt(self, tokenizer, question: str) -> list[int]:
        if self.style == "raw":
            return tokenizer(question)["input_ids"]
        if self.style == "plain":
            return tokenizer(self.question_template.format(question=question))["input_ids"]
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": question})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             **self.chat_template_kwargs)  # official: unlearning/encoding.py L126-132
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def _tokenise_answer(self, tokenizer, answer: str) -> list[int]:
        ids = tokenizer(self.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        return ids + [tokenizer.eos_token_id]


# Text benchmarks train and score continuations of plain text, whatever the model's chat or QA format.
RAW_TEXT = PromptFormat(style="raw", question_template="{question}", answer_prefix="")
