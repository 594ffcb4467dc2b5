"""Types shared by the metric suites: the context they score in, their results, and the Suite base class whose
dataclass fields are a suite's settings (conf/eval/<suite>.yaml), built and checked by `build_suites`."""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
import types
import typing
from dataclasses import dataclass, field
from statistics import mean
from typing import ClassVar, Iterable, Mapping

from pmc.core.errors import ConfigError
from pmc.core.generation import greedy_answers
from pmc.core.records import QABenchmark


@dataclass
class EvalContext:
    """What every suite needs besides the models.

    One context scores one fixed set of models: greedy answers are remembered per model and question, so suites
    asking the same questions (paper and tofu both score the plain forget/retain/utility questions) decode once,
    and the questions every selected suite will ask (`plan_greedy_answers`) are decoded together, in one call per
    model (`greedy_answers`); answer log-probabilities are remembered per model and (question, answer) pair
    (`scoring.answer_logprobs`: TOFU's truth ratio and the analyses' least-likely attack score the same forget
    options). Build a fresh context if a model's weights change.

    A suite's own settings are the fields of its Suite object, not part of the context.
    """

    tokenizer: object
    prompt_format: object  # pmc.core.prompts.PromptFormat
    benchmark: QABenchmark
    max_new_tokens: int
    batch_size: int  # rows decoded at once (greedy answers, the analyses' samples)
    max_length: int | None = None  # token budget of a scored question+answer; None: the model's context size
    scoring_batch_size: int | None = None  # rows scored at once (token log-probabilities); None: batch_size
    # greedy answers' budget as prompt + answer tokens (the official evaluation's max_length) instead of max_new_tokens
    generation_max_length: int | None = None
    _planned: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    # (id(model), kind) -> (model, what is remembered of it): `memo`
    _memos: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # seconds spent decoding greedy answers (every model): results.json's timings_s "eval.greedy_answers"
    decoding_s: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.scoring_batch_size is None:
            self.scoring_batch_size = self.batch_size

    def answer_length(self) -> dict:
        """The length argument of greedy decoding: max_length (prompt included; the official evaluation's) when
        set, else max_new_tokens."""
        if self.generation_max_length is not None:
            return {"max_length": self.generation_max_length}
        return {"max_new_tokens": self.max_new_tokens}

    def plan_greedy_answers(self, questions: Iterable[str]) -> None:
        """The questions the selected suites will ask every model for greedy answers (Suite.greedy_questions): the
        first request for a model decodes them all."""
        self._planned = tuple(dict.fromkeys(questions))

    def memo(self, model, kind: str) -> dict:
        """What this context remembers of `model` under `kind` (greedy answers by question, answer log-probabilities
        by pair). The model is kept beside it, so its id cannot be reused by another model while the context lives."""
        entry = self._memos.get((id(model), kind))
        if entry is None or entry[0] is not model:
            entry = self._memos[id(model), kind] = (model, {})
        return entry[1]

    def greedy_answers(self, model, questions: list[str], desc: str | None = None) -> list[str]:
        """Greedy answers (max_new_tokens, or generation_max_length tokens with the prompt; batch_size rows at a
        time), each question decoded once per model.

        A request with questions not decoded yet decodes them together with every planned question not decoded
        yet, in one call, longest prompt first. A decoding pass costs a small model on a GPU about the same for 8
        rows as for 512, so the suites' splits (6 of them, from 20 to 400 questions) go through a few full batches
        instead of one part-filled batch each, and a question asked twice (the paper's retain draws with
        replacement) is decoded once. Rows of similar prompt length share a batch, so little goes to padding."""
        known = self.memo(model, "greedy answers")
        missing = [q for q in dict.fromkeys(questions) if q not in known]
        if missing:
            pool = list(dict.fromkeys([*missing, *(q for q in self._planned if q not in known)]))
            length = {q: len(self.prompt_format.prompt_ids(self.tokenizer, q)) for q in pool}
            pool.sort(key=length.__getitem__, reverse=True)
            if desc and len(pool) > len(missing):
                desc = f"{desc} + {len(pool) - len(missing)} planned questions"
            start = time.perf_counter()
            answers = greedy_answers(model, self.tokenizer, self.prompt_format, pool, batch_size=self.batch_size,
                                     desc=desc, **self.answer_length())
            self.decoding_s += time.perf_counter() - start
            known.update(zip(pool, answers, strict=True))
        return [known[q] for q in questions]


@dataclass
class SuiteResult:
    summary: dict[str, float]
    examples: dict[str, list[dict]] = field(default_factory=dict)  # split -> one dict per example


def to_score(models: dict, known: Mapping[str, SuiteResult] | None) -> dict:
    """The models a suite still has to score: those without a result in `known`."""
    return {name: model for name, model in models.items() if name not in (known or {})}


# --- suites and their settings --------------------------------------------------------------------------------------

TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


@dataclass
class Suite:
    """A metric suite. Subclasses are dataclasses whose fields are the suite's settings (typed, with the reference's
    values as defaults; nested dataclasses group related settings) and check their values in `__post_init__`;
    `conf/eval/<name>.yaml` names the class in `_target_` and lists the same settings.

    `evaluate(models, ctx, known)` scores several models at once (some metrics compare models, e.g. TOFU's forget
    quality needs the retain model) and returns, per model, a flat summary and per-example values from which every
    summary number can be recomputed. `known` holds results already at hand for some of the models (the stage-0
    models' from the eval cache, pmc.eval_cache); the suite scores only the others and returns their results,
    taking what a comparison needs from the known results (or, where it needs the model itself, from `models`).
    """

    name: ClassVar[str]  # the suite's name: eval=[<name>], results.json's metrics[model][<name>]

    def evaluate(self, models: dict, ctx: EvalContext,
                 known: Mapping[str, SuiteResult] | None = None) -> dict[str, SuiteResult]:
        raise NotImplementedError

    def greedy_questions(self, ctx: EvalContext) -> dict[str, list[str]]:
        """Per split, the questions this suite asks every model for greedy answers through `ctx.greedy_answers`;
        the pipeline plans them all (EvalContext.plan_greedy_answers) so that they are decoded together."""
        return {}

    def settings(self) -> dict:
        """The suite as its config node: `_target_` and every setting (defaults included, nested ones as dicts), what
        its results depend on besides the context (the eval cache keys on it)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", **dataclasses.asdict(self)}

    def invalid(self, key: str, value, what: str) -> ConfigError:
        """The one-line error for a setting whose value cannot work."""
        return ConfigError(f"eval.{self.name}.{key} must be {what}, got {value!r}")


def _suite_classes() -> dict[str, type]:
    """Every suite class that names itself, by name: the shipped ones (imported here: the package loads them on
    first use, benchmarks.metrics.SHIPPED_SUITES), and any other whose module is imported."""
    from benchmarks.metrics import SHIPPED_SUITES

    for module in SHIPPED_SUITES.values():
        importlib.import_module(module)
    return _named_subclasses(Suite)


def _named_subclasses(base: type) -> dict[str, type]:
    found = {}
    for cls in base.__subclasses__():
        if "name" in vars(cls):
            found[cls.name] = cls
        found.update(_named_subclasses(cls))
    return found


def _describe(kind) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    return TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind)))


def _typed(value, kind, where: str):
    """`value` as a setting of type `kind` (an int is taken for a float), or a ConfigError naming `where`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _typed(value, option, where)
            except ConfigError:
                pass
    elif dataclasses.is_dataclass(kind):
        if isinstance(value, Mapping):
            return settings_from(kind, value, where)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is type(None):
        if value is None:
            return value
    elif isinstance(value, kind):
        return value
    what = (f"a mapping of settings ({', '.join(f.name for f in dataclasses.fields(kind))})"
            if dataclasses.is_dataclass(kind) else _describe(kind))
    raise ConfigError(f"{where} must be {what}, got {value!r}")


def settings_from(cls: type, values: Mapping, where: str):
    """`cls(**values)` with every key known and every value of its field's type (nested dataclasses from nested
    mappings); unset fields keep their defaults. `where` prefixes the keys in errors (eval.<suite>)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown setting; known: {', '.join(known)}")
        kwargs[key] = _typed(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def _suite_class(path, where: str) -> type:
    module, _, attribute = str(path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attribute) if module else None
    except ModuleNotFoundError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Suite) and "name" in vars(cls)):
        raise ConfigError(f"{where}._target_ must name a metric suite class "
                          f"(e.g. benchmarks.metrics.paper.PaperSuite), got {path!r}")
    return cls


def build_suites(selected: Mapping) -> dict[str, Suite]:
    """The run config's `eval` node (one entry per selected conf/eval/<name>.yaml: `_target_` and settings) as
    Suite objects, in selection order; every key and type is checked, so a bad setting fails here with one line.

    An entry without `_target_` holds settings for a suite that is not selected (an experiment sets an option of a
    suite that a later choice of `eval=[...]` leaves out) and is skipped; under any other name it is an error."""
    suites: dict[str, Suite] = {}
    for name, node in (selected or {}).items():
        where = f"eval.{name}"
        if not isinstance(node, Mapping):
            raise ConfigError(f"{where} must be a metric suite's settings (select suites with eval=[paper,...]), "
                              f"got {node!r}")
        if "_target_" not in node:
            if name in _suite_classes():
                continue
            raise ConfigError(f"{where}: no such metric suite; available: {', '.join(sorted(_suite_classes()))}")
        values = {key: value for key, value in node.items() if key != "_target_"}
        suites[name] = settings_from(_suite_class(node["_target_"], where), values, where)
    return suites


def mean_or_nan(values) -> float:
    """The mean, NaN when there is nothing to average."""
    values = list(values)
    return mean(values) if values else math.nan
