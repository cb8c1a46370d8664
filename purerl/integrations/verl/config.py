"""The verl plugin's one config: the same purerl YAML ``purerl train`` reads, referenced from verl's
``algorithm`` section, and the settings verl owns.

``algorithm.pure.config=PATH`` names the YAML (Hydra: ``+algorithm.pure.config=configs/paper.yaml``);
purerl keys given inline under ``algorithm.pure`` override it (``+algorithm.pure.algo.mode=min``,
``+algorithm.pure.prm.path=...``). Both go through :func:`purerl.config.load_config`, so every value
is checked as ``purerl train`` checks it, with the same one-line errors naming the purerl key. The
reference lives under ``algorithm`` because verl hands an advantage estimator that section only; the
reward manager and the ``pure_sync`` trainer read it from the whole config.

verl owns sampling, the policy and the optimizer: where the purerl YAML sets a key that verl has its
own key for (:data:`ENGINE_OWNED`, the KL settings) and the two disagree, :func:`check_engine_settings`
refuses at start-up with one line naming the verl key; :func:`startup_line` says in one line what runs.
A relative ``algorithm.pure.config`` is read from each verl process's working directory (the driver
makes it absolute); on several nodes give a path every node can read.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from purerl.config import ConfigError, TrainConfig, load_config

PLUGIN_SETTINGS = {"algorithm.adv_estimator": "pure", "reward.reward_manager.name": "pure",
                   "trainer.v1.trainer_mode": "pure_sync"}  # fmt: skip
"""The three settings that select the plugin's parts; they work only together."""

OLD_KEYS = {
    "algorithm.pure.mode": "algorithm.pure.algo.mode", "algorithm.pure.temperature": "algorithm.pure.algo.temperature",
    "algorithm.pure.vr_coef": "algorithm.pure.algo.vr_coef", "algorithm.pure.whiten": "algorithm.pure.algo.whiten",
    "algorithm.pure.max_len": "data.max_response_length", "reward.pure.reward": "algorithm.pure.algo.reward",
    "reward.pure.vr_fraction": "algorithm.pure.algo.vr_fraction",
    "reward.pure.separator": "algorithm.pure.data.separator",
    "reward.pure.prm_kind": "algorithm.pure.prm.kind", "reward.pure.prm_path": "algorithm.pure.prm.path",
    "reward.pure.prm_dtype": "algorithm.pure.prm.dtype", "reward.pure.prm_device": "algorithm.pure.prm.device",
    "reward.pure.prm_score_map": "algorithm.pure.prm.score_map",
    "reward.pure.prm_separator": "algorithm.pure.prm.separator",
    "reward.pure.prm_trust_remote_code": "algorithm.pure.prm.trust_remote_code",
}  # fmt: skip
"""The plugin's former keys -> the keys that replaced them (an old key is a one-line error naming its new one)."""

ENGINE_OWNED = (
    ("rollout.k", "actor_rollout_ref.rollout.n", "sampling"),
    ("rollout.max_new_tokens", "data.max_response_length", "sampling"),
    ("rollout.temperature", "actor_rollout_ref.rollout.temperature", "sampling"),
    ("rollout.prompts_per_step", "data.train_batch_size", "sampling"),
    ("policy.path", "actor_rollout_ref.model.path", "the policy"),
    ("algo.lr", "actor_rollout_ref.actor.optim.lr", "the optimizer"),
    ("algo.ppo_epochs", "actor_rollout_ref.actor.ppo_epochs", "the optimizer"),
    ("algo.grad_clip", "actor_rollout_ref.actor.grad_clip", "the optimizer"),
)
"""purerl keys verl has a key of its own for: (purerl key, verl key, what verl owns). Also checked:
``algo.clip_ratio`` (verl's effective ``clip_ratio_low`` / ``clip_ratio_high``), ``algo.minibatches``
(``data.train_batch_size / actor.ppo_mini_batch_size``) and the KL keys (:func:`check_kl`)."""

KL_NAMES = {"k1": "k1", "kl": "k1", "k2": "k2", "mse": "k2", "k3": "k3", "low_var_kl": "k3", "abs": "abs"}
"""purerl's and verl's names of a KL estimator -> one name."""
VERL_KL_NAMES = {"k1": "kl", "k2": "mse", "k3": "low_var_kl", "abs": "abs"}
"""One name -> verl's (``algorithm.kl_penalty``, ``actor.kl_loss_type``)."""


@dataclass(frozen=True)
class PureConfig:
    """The purerl config of a verl run and which of its keys were given (in the YAML or inline)."""

    cfg: TrainConfig
    given: frozenset[str]
    """Dotted purerl keys set explicitly, e.g. ``rollout.k``; every other value is purerl's default."""
    path: str | None = None
    """``algorithm.pure.config``."""


def check_plugin_config(config) -> None:
    """Refuse a verl config that selects some of the plugin's parts but not all (:data:`PLUGIN_SETTINGS`)."""
    given = {key: OmegaConf.select(config, key) for key in PLUGIN_SETTINGS}
    if given != PLUGIN_SETTINGS and any(given[k] == v for k, v in PLUGIN_SETTINGS.items()):
        wanted = ", ".join(f"{k}={v}" for k, v in PLUGIN_SETTINGS.items())
        got = ", ".join(f"{k}={v}" for k, v in given.items())
        raise ValueError(f"purerl's verl plugin needs all of {wanted}; got {got}")


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _old_key_error(old: str) -> ConfigError:
    new = OLD_KEYS.get(old)
    if new is None:
        return ConfigError(f"{old} is no longer read: the verl plugin reads purerl's config under algorithm.pure "
                           "(algorithm.pure.config=PATH and purerl keys such as algorithm.pure.prm.path)")  # fmt: skip
    if new == "data.max_response_length":
        return ConfigError(f"{old} is no longer read: N is verl's data.max_response_length; set that")
    return ConfigError(f"{old} is no longer read: set {new} (Hydra: +{new}=VALUE)")


def pure_config(algorithm) -> PureConfig:
    """The purerl config of verl's ``algorithm`` section (``algorithm.pure``), checked as ``purerl
    train`` checks it; a :class:`purerl.config.ConfigError` of one line for a bad or an old key."""
    raw = _plain((algorithm.get("pure") if algorithm is not None else None) or {})
    if not isinstance(raw, dict):
        raise ConfigError(f"algorithm.pure must be a mapping (config=PATH and purerl keys), got {raw!r}")
    raw = dict(raw)
    path = raw.pop("config", None)
    sections = {f.name for f in fields(TrainConfig)}
    for key in raw:
        if key not in sections:
            if f"algorithm.pure.{key}" in OLD_KEYS:
                raise _old_key_error(f"algorithm.pure.{key}")
            raise ConfigError(f"algorithm.pure: unknown key {key!r}; known: config (a purerl YAML) and purerl's "
                              f"sections {sorted(sections)}")  # fmt: skip
    overrides = tuple(f"{key}={json.dumps(value)}" for key, value in _flatten(raw))
    stamp = os.stat(path).st_mtime_ns if path and os.path.isfile(path) else None
    return _load(None if path is None else str(path), overrides, stamp)


@functools.lru_cache(maxsize=8)
def _load(path: str | None, overrides: tuple[str, ...], stamp: int | None) -> PureConfig:
    """Cached per file version: the estimator reads the config at every step."""
    cfg = load_config(path, list(overrides))
    given = {key.split("=", 1)[0] for key in overrides}
    if path is not None:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        given |= {key for key, _ in _flatten(tree)}
    return PureConfig(cfg, frozenset(given), path)


def read_pure(config) -> PureConfig:
    """:func:`pure_config` of a whole verl config; refuses the former ``reward.pure`` section."""
    reward = OmegaConf.select(config, "reward.pure") if isinstance(config, DictConfig) else None
    if reward:
        raise _old_key_error(f"reward.pure.{next(iter(reward))}")
    return pure_config(config.get("algorithm") if config is not None else None)


def _same(a, b) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, str) and isinstance(b, str):
        return os.path.expanduser(a) == os.path.expanduser(b)
    return a == b


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _refusal(key: str, value, verl_key: str, verl_value, owner: str, set_what: str | None = None) -> ValueError:
    return ValueError(f"{key}={_show(value)} but {verl_key}={_show(verl_value)}: verl owns {owner}; set "
                      f"{set_what or verl_key}, or drop {key} from the purerl config")  # fmt: skip


def _get(cfg: TrainConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check_engine_settings(pure: PureConfig, config) -> None:
    """Raise ``ValueError`` (one line naming the verl key) for a purerl key given explicitly that
    disagrees with verl's own key for it (:data:`ENGINE_OWNED`, the clip, minibatches, the KL)."""
    for key, verl_key, owner in ENGINE_OWNED:
        verl_value = OmegaConf.select(config, verl_key)
        if key in pure.given and not _same(_get(pure.cfg, key), verl_value):
            raise _refusal(key, _get(pure.cfg, key), verl_key, verl_value, owner)
    actor = config.actor_rollout_ref.actor
    clip = pure.cfg.algo.clip_ratio
    for side in ("low", "high"):
        bound = actor.get(f"clip_ratio_{side}")
        bound = actor.clip_ratio if bound is None else bound
        if "algo.clip_ratio" in pure.given and not _same(clip, bound):
            verl_key = f"actor_rollout_ref.actor.clip_ratio_{side}"
            raise _refusal("algo.clip_ratio", clip, verl_key, bound, "the optimizer",
                           "actor_rollout_ref.actor.clip_ratio_low and clip_ratio_high (verl's clip_ratio is "
                           "only their fallback)")  # fmt: skip
    minibatches = int(config.data.train_batch_size) // max(1, int(actor.ppo_mini_batch_size))
    if "algo.minibatches" in pure.given and pure.cfg.algo.minibatches != minibatches:
        raise _refusal("algo.minibatches", pure.cfg.algo.minibatches,
                       "data.train_batch_size / actor_rollout_ref.actor.ppo_mini_batch_size", minibatches,
                       "the optimizer", "actor_rollout_ref.actor.ppo_mini_batch_size")  # fmt: skip
    check_kl(pure, config)


def verl_kl(config) -> dict[str, tuple[float, str]]:
    """What KL verl runs: ``{"reward" | "loss": (coef, estimator)}`` for each place it is on with a
    nonzero coefficient (estimators by :data:`KL_NAMES`; a name verl has and purerl does not stays verl's)."""
    alg, actor = config.algorithm, config.actor_rollout_ref.actor
    runs = {}
    if alg.use_kl_in_reward and float(alg.kl_ctrl.kl_coef) > 0:
        runs["reward"] = (float(alg.kl_ctrl.kl_coef), KL_NAMES.get(alg.kl_penalty, alg.kl_penalty))
    if actor.use_kl_loss and float(actor.kl_loss_coef) > 0:
        runs["loss"] = (float(actor.kl_loss_coef), KL_NAMES.get(actor.kl_loss_type, actor.kl_loss_type))
    return runs


KL_KEYS = {"reward": ("algorithm.use_kl_in_reward", "algorithm.kl_ctrl.kl_coef", "algorithm.kl_penalty"),
           "loss": ("actor_rollout_ref.actor.use_kl_loss", "actor_rollout_ref.actor.kl_loss_coef",
                    "actor_rollout_ref.actor.kl_loss_type")}  # fmt: skip
"""Where verl puts the KL: (its switch, its coefficient, its estimator)."""


def check_kl(pure: PureConfig, config) -> None:
    """The KL keys given in the purerl config against what verl runs (:func:`verl_kl`)."""
    algo, given, runs = pure.cfg.algo, pure.given, verl_kl(config)
    place = "reward" if algo.kl_in_reward else "loss"
    other = "loss" if place == "reward" else "reward"
    switch, coef_key, estimator_key = KL_KEYS[place]
    where = f"in the {place}"
    if "algo.kl_coef" in given and algo.kl_coef == 0 and runs:
        on = next(iter(runs))
        raise _refusal("algo.kl_coef", 0.0, KL_KEYS[on][0], True, "the KL penalty", f"{KL_KEYS[on][0]}=false")
    if algo.kl_coef == 0:
        return
    if "algo.kl_in_reward" in given and other in runs:
        raise _refusal("algo.kl_in_reward", algo.kl_in_reward, KL_KEYS[other][0], True, "the KL penalty",
                       f"{KL_KEYS[other][0]}=false")  # fmt: skip
    if given & {"algo.kl_in_reward", "algo.kl_coef"} and place not in runs:
        key = "algo.kl_in_reward" if "algo.kl_in_reward" in given else "algo.kl_coef"
        raise _refusal(key, _get(pure.cfg, key), switch, False, "the KL penalty",
                       f"{switch}=true and {coef_key}={algo.kl_coef} ({algo.kl_coef} {where})")  # fmt: skip
    if place not in runs:
        return
    coef, estimator = runs[place]
    if "algo.kl_coef" in given and not _same(algo.kl_coef, coef):
        raise _refusal("algo.kl_coef", algo.kl_coef, coef_key, coef, "the KL penalty")
    if "algo.kl_estimator" in given and KL_NAMES[algo.kl_estimator] != estimator:
        raise _refusal("algo.kl_estimator", algo.kl_estimator, estimator_key, VERL_KL_NAMES.get(estimator, estimator),
                       "the KL penalty", f"{estimator_key}={VERL_KL_NAMES[KL_NAMES[algo.kl_estimator]]}")  # fmt: skip


def _describe_kl(runs: dict[str, tuple[float, str]]) -> str:
    if not runs:
        return "none (algorithm.use_kl_in_reward=false, actor_rollout_ref.actor.use_kl_loss=false)"
    return " and ".join(f"{coef:g} {VERL_KL_NAMES.get(est, est)} in the {place}" for place, (coef, est) in runs.items())


def startup_line(pure: PureConfig, config) -> tuple[str, bool]:
    """One line saying what runs (credit, N, verifiable rewards, KL) and whether purerl's KL default,
    which the purerl config did not set, differs from the KL verl runs (then verl's runs)."""
    algo = pure.cfg.algo
    runs = verl_kl(config)
    place = "reward" if algo.kl_in_reward else "loss"
    wanted = {} if algo.kl_coef == 0 else {place: (algo.kl_coef, KL_NAMES[algo.kl_estimator])}
    differs = set(runs) != set(wanted) or any(not _same(runs[p][0], wanted[p][0]) or runs[p][1] != wanted[p][1]
                                              for p in runs)  # fmt: skip
    credit = f"{algo.mode}" + (f" (T={algo.temperature:g})" if algo.mode == "soft_min" else "")
    vr = {"prm": "no VR", "vr": "VR only"}.get(algo.reward, f"VR on {algo.vr_fraction:.0%} of the prompts")
    line = (f"purerl on verl: {credit} credit, whiten {'on' if algo.whiten else 'off'}, {algo.reward} ({vr}), "
            f"N = data.max_response_length = {config.data.max_response_length}; KL: {_describe_kl(runs)}")  # fmt: skip
    if differs:
        line += (f" - verl's, not purerl's default ({_describe_kl(wanted)}), which the purerl config does not set; "
                 f"set {', '.join(KL_KEYS[place])} for purerl's")  # fmt: skip
    return line, differs
