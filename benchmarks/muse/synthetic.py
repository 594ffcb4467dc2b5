"""An offline MUSE-style benchmark: short news articles about invented events, small enough for tiny models.

MUSE-News (Shi et al., 2024) unlearns BBC articles: a model fine-tuned on forget + retain articles must lose the
forget articles' text (VerbMem) and facts (KnowMem) without becoming distinguishable from a model that never saw
them on a membership attack against held-out articles of the same kind (PrivLeak), while keeping what it knows
about the retain articles. This module builds the same structure from a seed: every article reports one invented
event (places, people, organisations, dates and numbers made up from syllables and `random.Random(seed)`), in a
lead sentence that states the facts KnowMem asks about, followed by a few background sentences drawn from a pool.
Forget, retain and holdout articles come from one distribution; only forget and retain are trained on.

Knowledge extraction, answering a question about a fact the model has only read in prose, needs far more scale
than a model trained from scratch in seconds has. With `qa_in_corpus=True` (the default) each trained article's
facts are therefore also stated as "Question: …\nAnswer: …" texts in the same corpus (forget facts in the forget
set, retain facts in the retain set), so KnowMem measures whether the model still answers them; with False the
corpora hold the articles only, as in MUSE, and KnowMem stays near zero for tiny models. KnowMem is asked
zero-shot (no knowmem_*_icl sets): MUSE's few-shot examples show a pretrained model the answer format, which the
tiny model learns from the corpus itself, and a 2-layer model trained on single QA texts does not carry its
answers over to a prompt that starts with other QA pairs (tried: the target answered its forget questions perfectly
zero-shot, at ROUGE-L 0.06 behind three shots, 0.34 even after pretraining on few-shot general-knowledge prompts).
There is no pretraining set: everything the tiny model knows comes from the articles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.muse.text import (
    KNOWMEM_FORGET,
    KNOWMEM_RETAIN,
    MIA_FORGET,
    MIA_HOLDOUT,
    MIA_RETAIN,
    VERBMEM_FORGET,
    mia_record,
    qa_training_record,
    text_records,
    verbmem_record,
)
from pmc.core.records import QABenchmark, QARecord

SYLLABLES = (
    "bar", "cel", "dun", "ess", "fal", "gor", "hin", "ith", "jas", "kel", "lom", "mar", "nev", "orr", "pil", "quen",
    "ros", "sal", "tev", "ull", "vad", "wes", "yor", "zan", "bri", "cal", "dor", "fen", "gil", "hal", "ker", "lin",
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
YEARS = tuple(range(2031, 2040))  # in the future, so no real event is described
STRUCTURES = ("bridge", "railway station", "library", "harbour wall", "concert hall", "hospital wing", "ferry pier")
FESTIVALS = ("Lantern", "Harvest", "Kite", "Apple", "Winter Light", "Folk Music", "Street Theatre", "Cheese")
ANIMALS = ("freshwater snail", "cave beetle", "tree frog", "moth", "orchid", "lizard", "glass shrimp", "fern")
LANDFORMS = ("marshes", "limestone caves", "pine forest", "river delta", "hill meadows", "salt flats")
TEAMS = ("Rovers", "Wanderers", "Mariners", "Foxes", "Millers", "Harriers", "Rangers", "Comets")
PRODUCTS = ("bicycle frames", "solar panels", "glass bottles", "wooden toys", "wind turbine blades",
            "ceramic tiles", "fishing nets", "electric buses")
ARTIFACTS = ("old maps", "silver coins", "clocks", "paper lanterns", "ship models", "woven rugs", "painted masks")
ORG_KINDS = ("Institute", "Cooperative", "Trust", "Foundation", "Society", "Guild", "Company", "Association")
OCCUPATIONS = ("baker", "nurse", "teacher", "fisherman", "carpenter", "shopkeeper", "retired pilot", "farmer")
CURRENCIES = ("crowns", "marks", "florins")
DIRECTIONS = ("north", "south", "east", "west")



@dataclass
class Article:
    text: str
    facts: list[tuple[str, str]]  # (question, answer) KnowMem pairs stated in the text


class _Invent:
    """Invented names, each used once across the whole benchmark, so every article's town is its own."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: tuple[int, ...] = (2, 3)) -> str:
        while True:
            w = "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.choice(syllables))).capitalize()
            if w not in self.used:
                self.used.add(w)
                return w

    def person(self) -> str:
        return f"{self.word((2,))} {self.word()}"

    def org(self) -> str:
        return f"the {self.word()} {self.rng.choice(ORG_KINDS)}"


def _slots(rng: random.Random, invent: _Invent) -> dict[str, str]:
    """Every value an article may mention (most go unused): drawn up front, so each article uses the same draws."""
    count = lambda low, high: f"{rng.randrange(low, high, 10):,}"
    return {
        "town": invent.word(), "town2": invent.word(), "river": invent.word(), "river2": invent.word(),
        "person": invent.person(), "person2": invent.person(), "person3": invent.person(),
        "org": invent.org(), "org2": invent.org(), "cup": f"{invent.word()} Cup",
        "paper": f"the {invent.word()} Herald",
        "date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.choice(YEARS)}",
        "month": rng.choice(MONTHS), "year2": str(rng.choice(YEARS) + 1), "weekday": rng.choice(WEEKDAYS),
        "structure": rng.choice(STRUCTURES), "festival": rng.choice(FESTIVALS), "animal": rng.choice(ANIMALS),
        "landform": rng.choice(LANDFORMS), "team": rng.choice(TEAMS), "team2": rng.choice(TEAMS),
        "product": rng.choice(PRODUCTS), "artifacts": rng.choice(ARTIFACTS), "occupation": rng.choice(OCCUPATIONS),
        "direction": rng.choice(DIRECTIONS), "currency": rng.choice(CURRENCIES),
        "count": count(1200, 9000), "count2": count(40, 900), "small": str(rng.randint(3, 19)),
        "pct": str(rng.randint(51, 78)), "score1": str(rng.randint(3, 6)), "score2": str(rng.randint(0, 2)),
        "money": f"{rng.randint(2, 90)} million", "km": str(rng.randint(12, 95)), "hours": str(rng.randint(2, 9)),
        "degrees": str(rng.randint(8, 31)), "population": f"{rng.randrange(8000, 90000, 100):,}",
        "years": str(rng.randint(3, 12)), "lived": str(rng.randint(20, 60)),
    }


@dataclass(frozen=True)
class EventKind:
    lead: str
    facts: tuple[tuple[str, str], ...]  # (question, answer) templates over the same slots


# Each lead opens with the dateline "{town}, {date}:" (four words), so an article's first words name it uniquely.
EVENTS = (
    EventKind("{town}, {date}: {person}, the mayor of {town}, opened the new {structure} over the {river} River "
              "after {years} years of work and a cost of {money} {currency}.",
              (("Who opened the new {structure} in {town}?", "{person}"),
               ("How much did the new {structure} in {town} cost?", "{money} {currency}"))),
    EventKind("{town}, {date}: The {festival} Festival in {town} drew {count} visitors this year, said {org}, "
              "which has run the festival since it began.",
              (("How many visitors did the {festival} Festival in {town} draw?", "{count}"),
               ("Who runs the {festival} Festival in {town}?", "{org}"))),
    EventKind("{town}, {date}: Scientists from {org} in {town} have found a new species of {animal} in the "
              "{landform} near the town, their leader {person} announced.",
              (("What did the scientists from {org} find?", "a new species of {animal}"),
               ("Who leads the scientists from {org}?", "{person}"))),
    EventKind("{town}, {date}: {person} has won the election for mayor of {town} with {pct} percent of the vote, "
              "ending the long term of {person2}.",
              (("Who won the election for mayor of {town}?", "{person}"),
               ("What share of the vote did the new mayor of {town} win?", "{pct} percent"))),
    EventKind("{town}, {date}: The {town} {team} won the {cup} on Sunday, beating the {town2} {team2} by "
              "{score1} goals to {score2} in front of {count} fans.",
              (("Which team won the {cup}?", "the {town} {team}"),
               ("What was the score in the final of the {cup}?", "{score1} goals to {score2}"))),
    EventKind("{town}, {date}: A factory making {product} is to open in {town}, where it will employ {count2} "
              "people, said {person}, the director of {org}.",
              (("What will the new factory in {town} make?", "{product}"),
               ("How many people will the new factory in {town} employ?", "{count2}"))),
    EventKind("{town}, {date}: Heavy rain flooded {count2} homes in {town} overnight after the {river} River burst "
              "its banks, said {person}, head of the rescue service.",
              (("How many homes were flooded in {town}?", "{count2}"),
               ("Which river burst its banks in {town}?", "the {river} River"))),
    EventKind("{town}, {date}: The {town} Museum has opened a show of {count2} {artifacts} lent by the collector "
              "{person}, the largest exhibition in its history.",
              (("Who lent the {artifacts} shown at the {town} Museum?", "{person}"),
               ("How many {artifacts} are on show at the {town} Museum?", "{count2}"))),
)

DETAILS = (
    '"This is a proud day for everyone in {town}," said {person3}, a {occupation} who has lived there for {lived} '
    "years.",
    "Local officials expect about {count2} new jobs in the region by {year2}.",
    "Part of the money came from a grant by {org2}.",
    "A second phase is planned to begin in {month} {year2}, the council said.",
    "Critics from {org2} warned that the final cost could still rise.",
    "Some {small}0 residents came to a public meeting about it last {weekday}.",
    "The nearest similar project is in {town2}, some {km} kilometres to the {direction}.",
    "{person3} said a full report would be published before the end of {year2}.",
    "Tickets sold out within {hours} hours, according to {org2}.",
    "Temperatures stayed near {degrees} degrees for most of the day.",
    "Schools in {town} closed early so that pupils could take part.",
    "Police said the day passed without any serious incident.",
    "The news was first reported by {paper} on {weekday}.",
    "{town} has about {population} inhabitants and lies on the {river2} River.",
)


def _article(rng: random.Random, invent: _Invent, min_words: int, max_words: int) -> Article:
    slots = _slots(rng, invent)
    event = rng.choice(EVENTS)
    sentences = [event.lead.format(**slots)]
    target = rng.randint(min_words, max_words)
    for template in rng.sample(DETAILS, len(DETAILS)):
        sentence = template.format(**slots)
        words = sum(len(s.split()) for s in sentences)
        if words >= target:
            break
        if words + len(sentence.split()) <= max_words:
            sentences.append(sentence)
    facts = [(q.format(**slots), a.format(**slots)) for q, a in event.facts]
    return Article(" ".join(sentences), facts)


def make_synthetic_muse(
    num_forget_articles: int = 8,
    num_retain_articles: int = 16,
    num_holdout_articles: int = 8,
    min_words: int = 40,
    max_words: int = 80,
    prefix_words: int = 4,
    qa_in_corpus: bool = True,
    num_knowmem_retain: int | None = None,
    seed: int = 0,
) -> QABenchmark:
    """Build the benchmark; same arguments, same benchmark.

    Training records: each forget / retain article as one record, its first `prefix_words` words (the dateline)
    as the prompt and the rest as the continuation, plus (qa_in_corpus) its facts as QA texts. Evaluation sets:
    verbmem_forget (each forget article's first half -> the rest), knowmem_forget / knowmem_retain (the facts of
    the forget / retain articles, bare question and answer strings; num_knowmem_retain caps the latter), and
    mia_forget / mia_retain / mia_holdout (whole texts: the forget articles, as many retain articles, holdout).
    """
    _check("num_forget_articles", num_forget_articles, 2)
    _check("num_retain_articles", num_retain_articles, 1)
    _check("num_holdout_articles", num_holdout_articles, 2)
    _check("min_words", min_words, 1)
    _check("max_words", max_words, min_words)
    _check("prefix_words", prefix_words, 1)
    rng = random.Random(seed)
    invent = _Invent(rng)
    make = lambda n: [_article(rng, invent, min_words, max_words) for _ in range(n)]
    forget, retain, holdout = make(num_forget_articles), make(num_retain_articles), make(num_holdout_articles)

    def corpus(articles: list[Article]) -> list[QARecord]:
        records = [r for a in articles for r in text_records(a.text, max_words=10 * max_words,
                                                             prefix_words=prefix_words)]
        if qa_in_corpus:
            records += [qa_training_record(q, a) for article in articles for q, a in article.facts]
        return records

    facts = lambda articles: [QARecord(q, a) for article in articles for q, a in article.facts]
    knowmem_retain = facts(retain)[:num_knowmem_retain] if num_knowmem_retain is not None else facts(retain)
    return QABenchmark(
        name="muse_synthetic",
        forget=corpus(forget),
        retain=corpus(retain),
        eval_sets={
            VERBMEM_FORGET: [verbmem_record(a.text) for a in forget],
            KNOWMEM_FORGET: facts(forget),
            KNOWMEM_RETAIN: knowmem_retain,
            MIA_FORGET: [mia_record(a.text) for a in forget],
            MIA_RETAIN: [mia_record(a.text) for a in retain[:num_forget_articles]],
            MIA_HOLDOUT: [mia_record(a.text) for a in holdout],
        },
        raw_text=True,
    )


def _check(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")

