"""Types shared by the metric suites."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.records import QABenchmark


@dataclass
class EvalContext:
    tokenizer: object
    prompt_format: object  # pmc.prompts.PromptFormat
    benchmark: QABenchmark
    max_new_tokens: int
    batch_size: int


@dataclass
class SuiteResult:
    summary: dict[str, float]
    examples: dict[str, list[dict]] = field(default_factory=dict)  # split -> one dict per example
