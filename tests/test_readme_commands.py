"""Every command in README.md runs as written.

Each `python -m pmc.run` / `python -m pmc.evaluate` line of the README's bash blocks is dry-run in this process:
its overrides are composed exactly as Hydra would compose them (for a sweep: every value of every swept key, the
experiment's own `hydra.sweeper.params` grid included) and each composed config goes through the run's config
checks, which is everything a run does before reading data. Install commands are skipped with their reason, and the
SLURM dry run is executed as written (one subprocess)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from conftest import CONF_DIR, REPO
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from pmc.checks import check_unlearning_config, check_value
from pmc.pipeline import check_config

README = REPO / "README.md"
ENTRY_POINTS = {"pmc.run": "config", "pmc.evaluate": "evaluate"}
NOT_DRY_RUN = {  # commands the test does not run, and why
    "make": "installs packages and runs the pipeline end to end (the e2e tests cover the run itself)",
    "pip": "installs packages",
    "export": "sets the environment of the commands after it (their dry runs read no data)",
}
SHELL_OPERATORS = {"<", ">", ">>", "|", ";", "&", "(", ")"}


def shell_words(line: str) -> list[str]:
    """A line's words as the shell splits them, with operators (&&, <, |, ...) as words of their own."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks (and `python -m pmc...` quoted in its prose), as words:
    continuation lines joined, comments dropped, `a && b` split."""
    text = README.read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"(?<!`)`(python -m pmc\.\w+[^`]*)`", text)  # commands quoted in the prose
    commands = []
    for line in lines:
        command: list[str] = []
        for word in shell_words(line) + ["&&"]:
            if word != "&&":
                command.append(word)
            elif command:
                if command not in commands:
                    commands.append(command)
                command = []
    return commands


def dry_run(module: str, args: list[str]) -> int:
    """Compose and check every job the command would run; returns how many configs were checked."""
    multirun = bool({"-m", "--multirun"} & set(args))
    assert not (multirun and "--cfg" in args), "Hydra refuses -m together with --cfg"
    if "--cfg" in args:  # `--cfg job|hydra|all` only prints the config it composes
        at = args.index("--cfg")
        args = args[:at] + args[at + 2:]
    args = [a for a in args if a not in ("-m", "--multirun")]
    assert not [a for a in args if a.startswith("-")], f"unknown flags in {args}"
    parser = OverridesParser.create()
    overrides = parser.parse_overrides(args)
    swept = [o for o in overrides if o.is_sweep_override()]
    assert multirun or not swept, f"sweep values {[o.input_line for o in swept]} need -m"
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    choices = {o.get_key_element(): list(o.sweep_string_iterator()) for o in swept}
    config_name = ENTRY_POINTS[module]

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        first = [f"{key}={values[0]}" for key, values in choices.items()]
        if multirun:  # the experiment's own grid, for the keys the command line does not sweep
            base = compose(config_name, overrides=fixed + first, return_hydra_config=True)
            params = base.hydra.sweeper.get("params")
            grid = OmegaConf.to_container(params) if params else {}
            for o in parser.parse_overrides([f"{k}={v}" for k, v in grid.items()]):
                choices.setdefault(o.get_key_element(), list(o.sweep_string_iterator()))
        variants = [[f"{k}={values[0]}" for k, values in choices.items()]]
        for key, values in choices.items():  # each value of each swept key, the others at their first value
            for value in values[1:]:
                variants.append([f"{k}={value if k == key else v[0]}" for k, v in choices.items()])
        for variant in variants:
            cfg = compose(config_name, overrides=fixed + variant)
            check_config(cfg)
            if module == "pmc.run":
                check_unlearning_config(cfg)
            else:
                check_value("checkpoint", cfg.checkpoint, str)
    return len(variants)


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    assert sum(c[:3] == ["python", "-m", "pmc.run"] for c in COMMANDS) >= 8


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_runs_as_written(words):
    operators = [w for w in words if w in SHELL_OPERATORS]
    assert not operators, f"{' '.join(words)!r}: the shell reads {operators} as redirection or pipe, not as text"
    if words[0] in NOT_DRY_RUN:
        pytest.skip(f"{words[0]}: {NOT_DRY_RUN[words[0]]}")
    assert words[:2] == ["python", "-m"] and words[2] in ENTRY_POINTS, f"no dry run for {' '.join(words)!r}"
    assert "..." not in words, f"{' '.join(words)!r} has a '...' placeholder"
    assert dry_run(words[2], words[3:]) >= 1


def test_readme_slurm_dry_run_as_written():
    [words] = [c for c in COMMANDS if "hydra/launcher=slurm" in c and "--cfg" in c]
    done = subprocess.run([sys.executable, *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    launcher = done.stdout.split("  launcher:\n", 1)[1]
    assert "SlurmLauncher" in launcher and "partition: gpu" in launcher and "max_num_timeout: 3" in launcher
    assert "source ~/venv/bin/activate" in launcher
