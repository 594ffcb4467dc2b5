"""How a question becomes a prompt, per model family (the format lives in the model config).

Prompt and answer are tokenised separately and concatenated, so the boundary between them is exact: training
masks every prompt token, and generation starts right where the answer would.
"""

from __future__ import annotations

from dataclasses import dataclass

from pmc.errors import ConfigError


@dataclass(frozen=True)
class PromptFormat:
    """`plain`: question_template filled in (Phi's "Question: …\\nAnswer:"); `chat`: the tokenizer's chat template
    with an optional system prompt (Llama-3.2-Instruct, SmolLM2-Instruct). answer_prefix goes before the answer
    text (a space after "Answer:" for plain prompts)."""

    style: str = "plain"
    question_template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "
    system_prompt: str | None = None

    def __post_init__(self):
        if self.style not in ("plain", "chat", "raw"):
            raise ConfigError(f"model.prompt.style must be 'plain', 'chat' or 'raw', got {self.style!r}")
        if "{question}" not in self.question_template:
            raise ConfigError("model.prompt.question_template must contain '{question}'")

    def prompt_ids(self, tokenizer, question: str) -> list[int]:
        if self.style == "raw":
            return tokenizer(question)["input_ids"]
        if self.style == "plain":
            return tokenizer(self.question_template.format(question=question))["input_ids"]
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": question})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer_ids(self, tokenizer, answer: str) -> list[int]:
        """Answer tokens followed by end-of-sequence, so a trained model learns to stop."""
        ids = tokenizer(self.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        return ids + [tokenizer.eos_token_id]


# Text benchmarks train and score continuations of plain text, whatever the model's chat or QA format.
RAW_TEXT = PromptFormat(style="raw", question_template="{question}", answer_prefix="")
