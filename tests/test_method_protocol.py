"""What the method layer promises the application: one name per method (results.json and the W&B tags), and retain
batches only for methods with a retain term; a retain setting on a method without one is one clear config error."""

from __future__ import annotations

import random
import sys
import types
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from baselines.flat import FLAT
from baselines.graddiff import GradDiff
from baselines.gradient_ascent import GradientAscent
from baselines.icu import ICU
from baselines.npo import NPO
from pmc.checks import check_unlearning_config
from pmc.core.errors import ConfigError
from pmc.core.models import train_tokenizer
from pmc.core.prompts import PromptFormat
from pmc.core.records import QABenchmark, QARecord
from pmc.loggers import WandbLogger
from pmc.methods.base import ForgetObjective, RetainRegularised, RunContext
from pmc.methods.collapse import PartialModelCollapse
from pmc.optimisation import TrainingConfig
from pmc.trainer import unlearn

METHOD_CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml"))


# --- one name per method --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHOD_CONFIGS)
def test_each_method_config_names_the_method_as_its_class_does(make_config, method):
    cfg = make_config(f"method={method}")
    assert cfg.method.name == get_class(cfg.method.handler._target_).name


def test_wandb_tags_name_the_method_as_results_json_does(make_config, tmp_path, monkeypatch):
    """results.json's "method" is cfg.method.name (pmc.run); the W&B run gets the same string as a tag, not the
    handler's class name."""
    started = {}
    fake = types.ModuleType("wandb")
    fake.Settings = lambda **kwargs: kwargs
    fake.init = lambda **kwargs: started.update(kwargs) or types.SimpleNamespace()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = OmegaConf.to_container(make_config("method=ga", "logger=wandb"), resolve=True)
    WandbLogger(tags=["sweep"]).start(config, tmp_path, ["method=ga"])
    assert started["tags"] == ["sweep", "ga", config["model"]["name"]]
    assert "GradientAscent" not in started["tags"]


# --- retain terms ---------------------------------------------------------------------------------------------------


def test_methods_without_a_retain_term_do_not_inherit_one():
    for method in (GradientAscent(), FLAT(), ICU()):
        assert not method.uses_retain and not isinstance(method, RetainRegularised)
        assert not hasattr(method, "retain_weight") and not hasattr(method, "retain_loss")
    assert isinstance(GradientAscent(), ForgetObjective) and isinstance(FLAT(), ForgetObjective)
    assert GradDiff().uses_retain and NPO().uses_retain and PartialModelCollapse().uses_retain
    assert not NPO(retain_weight=0.0).uses_retain  # plain NPO: no retain term, no retain batches


@pytest.mark.parametrize("method, override, cls", [
    ("ga", "+method.handler.retain_weight=1.0", "GradientAscent"),
    ("flat", "+method.handler.retain_loss=kl", "FLAT"),
    ("icu", "+method.handler.retain_weight=0.5", "ICU"),
])
def test_a_retain_setting_on_a_method_without_one_is_one_config_error(make_config, method, override, cls):
    key = override.split("=")[0].lstrip("+")
    with pytest.raises(ConfigError) as e:
        check_unlearning_config(make_config(f"method={method}", override))
    assert str(e.value) == f"{key}: {cls} has no retain term, so it takes no retain setting"
    check_unlearning_config(make_config("method=graddiff", "method.handler.retain_weight=2.0"))  # has one


FORGET = [QARecord(f"Forget question {i}?", f"Forget answer {i}.") for i in range(5)]
RETAIN = [QARecord(f"Retain question {i}?", f"Retain answer {i}.") for i in range(4)]


class RecordingAscent(GradientAscent):
    """Gradient ascent that records the retain argument and the forget questions of every micro-batch."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer, self.seen = tokenizer, []

    def loss(self, model, forget, retain=None):
        texts = self.tokenizer.batch_decode(forget.input_ids, skip_special_tokens=True)
        self.seen.append((retain, [text.split("\n")[0].removeprefix("Question: ") for text in texts]))
        return {"loss": model.weight.sum() * 0.0}


def test_a_method_without_a_retain_term_gets_no_retain_batches_and_draws_no_partners():
    tokenizer = train_tokenizer([t for r in FORGET + RETAIN for t in (r.question, r.answer)]
                                + ["Question: \nAnswer:"], vocab_size=300)
    bench = QABenchmark(name="ga", forget=list(FORGET), retain=list(RETAIN), eval_sets={})
    run = RunContext(torch.nn.Linear(1, 1), tokenizer, PromptFormat(), bench, max_new_tokens=8,
                     generation_batch_size=2)
    method = RecordingAscent(tokenizer)
    unlearn(method, run, TrainingConfig(epochs=2, learning_rate=1e-3, batch_size=2), seed=0)
    assert all(retain is None for retain, _ in method.seen)
    # the epoch orders are the seeded RNG's consecutive permutations: no partner was drawn between them
    rng = random.Random(0)
    orders = [rng.sample(range(5), 5) for _ in range(2)]
    assert [q for _, questions in method.seen for q in questions] == [FORGET[i].question for o in orders for i in o]
