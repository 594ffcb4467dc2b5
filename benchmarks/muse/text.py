"""What the MUSE loader, the synthetic generator and the `muse` metric suite share: how text becomes records, how
a KnowMem question becomes a prompt, and the names of the evaluation sets.

A MUSE benchmark is `raw_text`: a record's "question" is a prefix of a text and its "answer" the continuation,
leading whitespace included, so question + answer is the text itself (see `pmc.core.prompts.RAW_TEXT`).
"""

from __future__ import annotations

import re

from pmc.core.records import QARecord

# Evaluation sets of a MUSE benchmark (QABenchmark.eval_sets keys):
VERBMEM_FORGET = "verbmem_forget"  # question = a forget text's opening, answer = its true continuation
KNOWMEM_FORGET = "knowmem_forget"  # question / answer about facts stated in the forget texts (bare strings)
KNOWMEM_RETAIN = "knowmem_retain"  # ... in the retain texts
KNOWMEM_FORGET_ICL = "knowmem_forget_icl"  # few-shot examples put before every forget question (may be absent)
KNOWMEM_RETAIN_ICL = "knowmem_retain_icl"  # ... before every retain question (may be absent)
MIA_FORGET = "mia_forget"  # whole texts, QARecord(question="", answer=text): members of the target model
MIA_HOLDOUT = "mia_holdout"  # same distribution, never trained on: non-members for every model
MIA_RETAIN = "mia_retain"  # retain texts (members of every model); optional
REQUIRED_SETS = (VERBMEM_FORGET, KNOWMEM_FORGET, KNOWMEM_RETAIN, MIA_FORGET, MIA_HOLDOUT)

# MUSE's KnowMem prompt (muse_bench knowmem): each shot "Question: q\nAnswer: a\n\n", then the question. MUSE ends
# the prompt with "Answer: " (a trailing space); it ends here at "Answer:" so that the answer's first word is one
# token with its leading space, as in training (BPE tokenizers split a trailing space into a token of its own).
QA_SHOT = "Question: {question}\nAnswer: {answer}\n\n"
QA_PROMPT = "Question: {question}\nAnswer:"


def knowmem_prompt(question: str, shots: list[tuple[str, str]] = ()) -> str:
    """The few-shot KnowMem prompt for `question`, the shots (question, answer) in order before it."""
    return "".join(QA_SHOT.format(question=q, answer=a) for q, a in shots) + QA_PROMPT.format(question=question)


def qa_training_record(question: str, answer: str) -> QARecord:
    """A QA pair as plain text in the KnowMem format, for corpora that state their facts as QA (synthetic MUSE)."""
    return QARecord(question=QA_PROMPT.format(question=question), answer=" " + answer)


def mia_record(text: str) -> QARecord:
    """A whole text to be scored by the membership attacks."""
    return QARecord(question="", answer=text)


def words_with_spacing(text: str) -> list[str]:
    """The text's words, each with the whitespace that follows it, so "".join(...) gives the text back (stripped)."""
    return re.findall(r"\S+\s*", text.strip())


def split_prefix(words: list[str], prefix_words: int) -> QARecord:
    """Prefix (`prefix_words` words, fewer for short texts) / continuation record of a run of words: the prefix
    without its trailing whitespace, the continuation starting with that whitespace."""
    if len(words) < 2:
        raise ValueError("a prefix/continuation record needs at least two words")
    n = max(1, min(prefix_words, len(words) - 1))
    head = "".join(words[:n])
    question = head.rstrip()
    return QARecord(question=question, answer=head[len(question):] + "".join(words[n:]).rstrip())


def text_records(text: str, max_words: int, prefix_words: int) -> list[QARecord]:
    """A text cut into chunks of at most `max_words` words, each a prefix/continuation training record.

    question + answer of the chunks, in order, gives the text back (whitespace between chunks aside). A last chunk
    of a single word is dropped (nothing to continue); an empty text gives no records.
    """
    if max_words < 2 or prefix_words < 1:
        raise ValueError(f"max_words must be at least 2 and prefix_words at least 1, got {max_words}, {prefix_words}")
    words = words_with_spacing(text)
    chunks = [words[i : i + max_words] for i in range(0, len(words), max_words)]
    return [split_prefix(chunk, prefix_words) for chunk in chunks if len(chunk) >= 2]


def verbmem_record(text: str, prompt_fraction: float = 0.5) -> QARecord:
    """The opening `prompt_fraction` of a text's words as the prompt, the rest as the true continuation."""
    words = words_with_spacing(text)
    return split_prefix(words, max(1, int(len(words) * prompt_fraction)))
