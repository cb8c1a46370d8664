"""Configs: every shipped YAML loads; overrides apply; bad input names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from purerl.config import TrainConfig, load_config, save_config
from purerl.config.loading import ConfigError

CONFIGS = sorted(
    path
    for pattern in ("*.yaml", "trl/*.yaml", "engines/*.yaml")
    for path in (Path(__file__).parent.parent / "configs").glob(pattern)
)
"""Every purerl config, the engines' included: one file serves purerl train, TRL (its ``trl:`` section) and verl."""


def test_there_are_shipped_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_yaml_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(None, ["algo.mode=sum", "run.steps=7", "policy.sft.lr=1e-4", "prm.path=null"])
    assert (cfg.algo.mode, cfg.run.steps, cfg.policy.sft.lr, cfg.prm.path) == ("sum", 7, 1e-4, None)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo.mode=max"], r"algo.mode='max': choose one of \['min', 'soft_min', 'sum'\]"),
        (["algo.modes=min"], r"algo: unknown key\(s\) \['modes'\]"),
        (["run.steps=ten"], "run.steps: expected an integer, got 'ten'"),
        (["rollout.k=0"], "rollout.k must be positive"),
        (["steps"], "not key=value"),
        (["algo.vr_fraction=2"], r"algo.vr_fraction must lie in \[0, 1\]"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("algo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_the_default_run_uses_the_shipped_models(monkeypatch, tmp_path):
    """A fresh machine (empty cache) must not retrain anything for `purerl train` with defaults."""
    import purerl.models.builtin_prm
    import purerl.models.warmstart
    from purerl.models.builtin import policy_path, prm_path
    from purerl.models.loading import ASSETS

    def would_train(*args, **kwargs):
        raise AssertionError("purerl/assets lacks a default model: run `purerl prepare --ship`")

    monkeypatch.setattr(purerl.models.warmstart, "sft", would_train)
    monkeypatch.setattr(purerl.models.builtin_prm, "train_prm", would_train)
    monkeypatch.setenv("PURERL_CACHE", str(tmp_path))
    cfg = load_config()
    assert Path(policy_path(cfg)).parent == ASSETS
    assert Path(prm_path(cfg)).parent == ASSETS
    assert not any(tmp_path.iterdir())


def test_the_paper_config_holds_the_paper_settings():
    """configs/paper.yaml: the authors' training settings, loaded and validated (never run on a CPU)."""
    cfg = load_config(Path(__file__).parent.parent / "configs" / "paper.yaml")
    r, a = cfg.rollout, cfg.algo
    assert (r.prompts_per_step, r.k, r.max_new_tokens) == (64, 8, 7168) and a.minibatches == 1  # mini-batch 512
    assert (a.mode, a.temperature, a.lr, a.clip_ratio) == ("soft_min", 0.1, 1e-6, 0.2)
    assert (a.kl_coef, a.kl_estimator, a.kl_in_reward, a.whiten) == (0.001, "k3", True, True)
    assert (a.reward, a.vr_fraction) == ("prm+vr", 0.1) and cfg.prm.path == "jinachris/PURE-PRM-7B"
    assert cfg.policy.path == "Qwen/Qwen2.5-Math-7B" and cfg.data.separator == "\n\n"


def test_every_key_fixed_on_resume_is_a_config_key():
    """run_control.FIXED_ON_RESUME names real keys (it once named policy.lora_dropout, which no config has),
    and a changed LoRA target list is refused on resume, allowed or not."""
    import dataclasses

    from purerl.training.run_control import FIXED_ON_RESUME, resume_changes

    cfg = dataclasses.asdict(TrainConfig())
    for key in FIXED_ON_RESUME:
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    changed = {**cfg, "policy": {**cfg["policy"], "lora_targets": ["q_proj"]}}
    with pytest.raises(ValueError, match=r"policy\.lora_targets cannot change on resume"):
        resume_changes(cfg, changed, ["policy"])
