"""Attack options as users give them: every `--option` example in the README, presets and config files,
through the real command line; bad keys and values are one-line errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adversary.attacks import attack_names, build_attack
from adversary.cli.attack import option
from splitleak.errors import SplitleakError

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDERS = {"K": "3", "T": "2.5", "S": "1", "N": "0", "F": "0.2", "R": "2"}


def readme_options() -> list[str]:
    """KEY=VALUE of every `--option` in the README, a placeholder value (K, T, ...) given a sample."""
    found = re.findall(r"--option ([a-z][\w.]*=[^`\s]+)", README.read_text())
    return sorted({f"{k}={PLACEHOLDERS.get(v, v)}" for k, v in (item.split("=", 1) for item in found)})


@pytest.mark.parametrize("text", readme_options())
def test_every_readme_option_is_accepted_by_some_attack(text: str) -> None:
    key, value = option(text)
    accepted = []
    for name in attack_names():
        try:
            build_attack(name, options={key: value})
            accepted.append(name)
        except SplitleakError:
            pass
    assert accepted, f"no attack takes --option {text}"


def test_readme_has_option_examples() -> None:
    assert {"lambda_tv=0.3", "variant=guidance", "pixel.steps=0", "pixel_steps=0"} <= set(readme_options())


@pytest.mark.parametrize("options,message", [
    ({"warp": "9"}, "unknown option 'warp'"), ({"lambda_tv": "lots"}, "lambda_tv='lots': expected a number"),
    ({"iterations": "1.5"}, "expected an integer"), ({"lr": "nan"}, "expected a number"),
])
def test_bad_options_name_the_key(options, message) -> None:
    with pytest.raises(SplitleakError, match=message):
        build_attack("do", options=options)


def test_presets_and_config_files(tmp_path: Path) -> None:
    assert build_attack("dmb", preset="paper").config.pixel.steps == 0
    assert build_attack("dmb").config.pixel.steps == 400
    with pytest.raises(SplitleakError, match="unknown preset 'fast'"):
        build_attack("dmb", preset="fast")
    file = tmp_path / "dmb.yaml"
    file.write_text("preset: paper\niterations: 7\npixel: {steps: 12}\n")
    attack = build_attack("dmb", config_file=str(file), options={"pixel.steps": "3"})
    assert (attack.config.iterations, attack.config.pixel.steps, attack.config.refine.share) == (7, 3, 0.0)
    file.write_text("- a list\n")
    with pytest.raises(SplitleakError, match="mapping"):
        build_attack("dmb", config_file=str(file))
    with pytest.raises(SplitleakError, match="cannot read"):
        build_attack("dmb", config_file=str(tmp_path / "missing.yaml"))


def test_cli_runs_a_preset_config_file_and_options(tmp_path: Path, capsys) -> None:
    from splitleak.cli.main import main
    from tests.test_adversary import make_recording  # a real recording of a tiny head

    rec, _ = make_recording(tmp_path)
    file = tmp_path / "do.yaml"
    file.write_text("lambda_tv: 0.3\n")
    out = tmp_path / "out"
    code = main(["attack", "--recording", str(rec), "--attack", "do", "--out", str(out), "--iterations", "2",
                 "--preset", "best", "--config", str(file), "--option", "restarts=1", "--max-frames", "1"])
    assert code == 0 and (out / "metrics.json").is_file()
    assert '"lambda_tv": 0.3' in (out / "config.json").read_text()
    capsys.readouterr()  # the run's progress bar
    bad = main(["attack", "--recording", str(rec), "--attack", "do", "--out", str(tmp_path / "bad"),
                "--option", "restarts=two"])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad == 2 and len(err) == 1 and "restarts='two'" in err[0]


@pytest.mark.parametrize("name", attack_names())
def test_every_attack_is_configured_by_one_small_typed_config(name: str) -> None:
    import dataclasses
    import inspect

    from adversary.attacks import get_attack

    cls = get_attack(name)
    assert list(inspect.signature(cls.__init__).parameters) == ["self", "config", "options"]
    assert len(dataclasses.fields(cls.Config)) <= 8, [f.name for f in dataclasses.fields(cls.Config)]
    assert dataclasses.fields(cls.Config) and cls.Config.__dataclass_params__.frozen
