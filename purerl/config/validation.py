"""Check a :class:`purerl.config.TrainConfig` before anything is built.

Every config error is raised here, with the key it concerns, before a model, tokenizer or dataset is
loaded: choices come from the registries (``purerl.registry``: nothing there imports torch until an
entry is used), numbers are range-checked, and each component checks the settings it owns (a task its
data, a PRM kind its path and the task it can score); a new check is one more call in :func:`check`.
Nothing here imports transformers, nor torch except to ask about a device other than ``cpu``.

:func:`check_machine` is the second gate, run right before the first model loads (``build_policy``):
the devices exist on this machine and the model paths exist (a config that names ``cuda`` still loads
on a laptop, to be read or checked). Its helpers :func:`check_device` and :func:`check_model_path`
check the command line's ``--device`` / ``--policy`` / ``--prm`` / ``--tokenizer`` too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from purerl.config.separators import check_separator
from purerl.registry import KL_ESTIMATORS, PRMS, ROLLOUT_BACKENDS, TASKS, TRANSFORMS, load_plugins

if TYPE_CHECKING:
    from purerl.config.schema import PRMConfig, TrainConfig

REWARDS = ("prm", "vr", "prm+vr")
"""``algo.reward``: process rewards only, verifiable rewards only, or both (PURE's PRM+VR)."""
SCORE_MAPS = ("none", "affine")
"""``prm.score_map``: keep a PRM's score range, or map [0, 1] scores to [-1, 1]."""
DTYPES = ("float32", "bfloat16", "float16", "auto")
"""``policy.dtype`` / ``prm.dtype``: weights dtypes (``auto``: float32)."""


def check(cfg: TrainConfig) -> None:
    """Raise :class:`purerl.config.ConfigError` naming the first key whose value does not fit."""
    from purerl.config.loading import ConfigError
    from purerl.config.schema import task_name

    try:
        load_plugins(cfg.plugins)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_choices(cfg, task_name(cfg))
    _check_numbers(cfg)
    _check_run_safety(cfg.run)
    task = TASKS.resolve(task_name(cfg))
    try:
        task.check_config(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        check_separator("data.separator", cfg.data.separator, "\n\n")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.algo.reward != "vr":
        check_prm(cfg.prm, task)
    _check_refresh(cfg)


def _check_refresh(cfg: TrainConfig) -> None:
    """``refresh.*``: the PRM refresh needs a PRM that has weights, and labels the run has."""
    from purerl.config.loading import ConfigError

    r = cfg.refresh
    if r.labels not in ("vr", "all"):
        raise ConfigError(f"refresh.labels={r.labels!r}: choose vr (the prompts whose grade is a verifiable reward) "
                          "or all (every prompt with a gold answer)")  # fmt: skip
    if r.objective not in ("mil", "pairwise"):
        raise ConfigError(f"refresh.objective={r.objective!r}: choose mil or pairwise")
    if r.blame not in ("min", "last"):
        raise ConfigError(f"refresh.blame={r.blame!r}: choose min or last")
    if r.weighting not in ("classes", "answers"):
        raise ConfigError(f"refresh.weighting={r.weighting!r}: choose classes or answers")
    if r.gate not in ("none", "kept", "start"):
        raise ConfigError(f"refresh.gate={r.gate!r}: choose none, kept or start")
    for key in ("lr", "updates", "batch_size", "buffer", "grad_clip"):
        if not getattr(r, key) > 0:
            raise ConfigError(f"refresh.{key} must be > 0, got {getattr(r, key)}")
    for key in ("positive_weight", "anchor", "lora_rank"):
        if getattr(r, key) < 0:
            raise ConfigError(f"refresh.{key} must be >= 0, got {getattr(r, key)}")
    if not r.enabled:
        return
    if cfg.algo.reward == "vr":
        raise ConfigError("refresh.enabled=true with algo.reward=vr: there is no PRM to refresh")
    if cfg.prm.kind == "rule":
        raise ConfigError("refresh.enabled=true with prm.kind=rule: a rule checks steps by program and has no "
                          "weights to train; refresh a model PRM (token_classification, qwen_prm or "
                          "math_shepherd)")  # fmt: skip
    if r.labels == "vr" and cfg.algo.reward == "prm":
        raise ConfigError("refresh.labels=vr learns from the prompts whose grade is a verifiable reward, and "
                          "algo.reward=prm has none; set refresh.labels=all (or algo.reward=prm+vr)")  # fmt: skip


def check_prm(spec: PRMConfig, task=None) -> None:
    """Raise :class:`purerl.config.ConfigError` naming the ``prm.*`` key when the PRM spec cannot work
    with ``task`` (a task class or instance; None: no task, so no exact step checker): the kind and the
    score map against the registries, then the adapter's own ``check_config``. Every route that loads
    a PRM (:func:`purerl.prm.loading.load_prm`) calls it; it loads nothing."""
    from purerl.config.loading import ConfigError

    for key, value, allowed in (("prm.kind", spec.kind, PRMS), ("prm.score_map", spec.score_map, SCORE_MAPS)):
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: choose one of {sorted(allowed)}")
    if spec.dtype not in DTYPES:
        raise ConfigError(f"prm.dtype={spec.dtype!r}: choose one of {sorted(DTYPES)}")
    try:
        PRMS.resolve(spec.kind).check_config(spec, task)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_choices(cfg: TrainConfig, task: str) -> None:
    from purerl.config.loading import ConfigError
    from purerl.tasks.prompts import TEMPLATES

    choices = {
        "algo.reward": (cfg.algo.reward, REWARDS),
        "algo.mode": (cfg.algo.mode, TRANSFORMS),
        "algo.kl_estimator": (cfg.algo.kl_estimator, KL_ESTIMATORS),
        "rollout.template": (cfg.rollout.template, TEMPLATES),
        "rollout.backend": (cfg.rollout.backend, ROLLOUT_BACKENDS),
        "data.task": (task, TASKS),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: choose one of {sorted(allowed)}")


def _check_numbers(cfg: TrainConfig) -> None:
    from purerl.config.loading import ConfigError

    r, a, run = cfg.rollout, cfg.algo, cfg.run
    at_least = {
        "rollout.k": (r.k, 1), "rollout.prompts_per_step": (r.prompts_per_step, 1),
        "rollout.max_new_tokens": (r.max_new_tokens, 1), "rollout.context": (r.context, 0),
        "rollout.min_new_tokens": (r.min_new_tokens, 0),
        "algo.minibatches": (a.minibatches, 1),
        "algo.ppo_epochs": (a.ppo_epochs, 1), "run.steps": (run.steps, 1), "run.eval_size": (run.eval_size, 1),
        "run.eval_every": (run.eval_every, 1), "run.checkpoint_every": (run.checkpoint_every, 1),
        "run.samples_every": (run.samples_every, 1), "run.eval_samples": (run.eval_samples, 0),
        "run.threads": (run.threads, 0),
    }  # fmt: skip
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{key} must be {'positive' if low == 1 else '>= 0'}, got {value}")
    if a.mode == "soft_min" and not a.temperature > 0:
        raise ConfigError(f"algo.temperature must be > 0 for algo.mode=soft_min (PURE Eq. 5), got {a.temperature}")
    if r.context and r.max_new_tokens >= r.context:
        raise ConfigError(
            f"rollout.max_new_tokens={r.max_new_tokens} leaves no room for a prompt in rollout.context={r.context}"
        )
    if r.min_new_tokens > r.max_new_tokens:
        raise ConfigError(
            f"rollout.min_new_tokens={r.min_new_tokens} exceeds rollout.max_new_tokens={r.max_new_tokens}"
        )
    if not r.temperature > 0:
        raise ConfigError(f"rollout.temperature must be > 0, got {r.temperature}")
    if not 0.0 <= a.vr_fraction <= 1.0:
        raise ConfigError(f"algo.vr_fraction must lie in [0, 1], got {a.vr_fraction}")
    for key, value in {"algo.lr": a.lr, "algo.clip_ratio": a.clip_ratio, "algo.grad_clip": a.grad_clip}.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if not a.kl_coef >= 0:
        raise ConfigError(f"algo.kl_coef must be >= 0, got {a.kl_coef}")
    if (r.prompts_per_step * r.k) % a.minibatches:
        raise ConfigError(
            f"algo.minibatches={a.minibatches} must divide the batch, rollout.prompts_per_step * rollout.k = "
            f"{r.prompts_per_step * r.k}"
        )


def check_machine(cfg: TrainConfig) -> None:
    """Raise :class:`purerl.config.ConfigError` naming the key when a device of ``cfg`` does not exist on
    this machine or a model path cannot be found: the policy's always, the PRM's when rewards use it.
    Loads no model (torch only to ask about a device other than ``cpu``)."""
    from purerl.config.loading import ConfigError

    sections = {"policy": cfg.policy}
    if cfg.algo.reward != "vr":
        sections["prm"] = cfg.prm
    try:
        for name, section in sections.items():
            check_device(f"{name}.device", section.device)
            check_model_path(f"{name}.path", section.path)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _setting(key: str, value: object) -> str:
    """``policy.path='x'`` for a config key, ``--policy 'x'`` for a command line flag."""
    return f"{key} {value!r}" if key.startswith("-") else f"{key}={value!r}"


DEVICE_HINT = "use cpu, cuda, cuda:N or mps"


def check_device(key: str, value: str) -> None:
    """Raise ``ValueError`` naming ``key`` unless torch knows device ``value`` and this machine has it.

    ``cpu`` answers without importing torch; ``cuda`` needs a CUDA build of torch and a visible GPU,
    ``cuda:N`` more than N GPUs, ``mps`` Apple's backend; other types must report themselves available.
    """
    if value == "cpu":
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{_setting(key, value)}: not a device torch knows; {DEVICE_HINT}") from None
    if device.type == "cpu":
        return
    if device.type == "cuda" and torch.version.cuda is None and torch.version.hip is None:
        raise ValueError(f"{_setting(key, value)}: this torch ({torch.__version__}) is a CPU-only build without "
                         f"CUDA; use cpu, or install a CUDA build of torch")  # fmt: skip
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{_setting(key, value)}: MPS is not available here (Apple silicon only); {DEVICE_HINT}")
        return
    backend = getattr(torch, device.type, None)
    if not callable(getattr(backend, "device_count", None)):
        raise ValueError(f"{_setting(key, value)}: purerl cannot run a model on {device.type!r}; {DEVICE_HINT}")
    count = backend.device_count()
    if count == 0:
        where = "the driver and CUDA_VISIBLE_DEVICES" if device.type == "cuda" else "the driver"
        raise ValueError(f"{_setting(key, value)}: no {device.type} device is visible here (check {where}); "
                         f"{DEVICE_HINT}")  # fmt: skip
    if device.index is not None and device.index >= count:
        raise ValueError(f"{_setting(key, value)}: only {count} {device.type} device(s) are visible "
                         f"({device.type}:0 to {device.type}:{count - 1})")  # fmt: skip


MODEL_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt")
"""Names ending so are model files, never hub ids."""
_HUB_PART = r"(?![-.])(?!.*(?:--|\.\.))[\w.-]{1,96}(?<![-.])"
HUB_ID = re.compile(rf"{_HUB_PART}(?:/{_HUB_PART})?", re.ASCII)
"""A Hugging Face hub id: ``name`` or ``org/name``; letters, digits, ``-``, ``_`` and ``.``, not at either
end of a part, no ``--`` or ``..`` (huggingface_hub's ``validate_repo_id``)."""


def is_local_path(value: str) -> bool:
    """Whether a model reference can only be a local file or folder, not a hub id.

    The rule: a value that does not read as a hub id (:data:`HUB_ID`) is a local path, e.g. one that
    starts with ``/``, ``.`` or ``~``, holds a backslash or more than one ``/``; so is a hub-like value
    ending in a model-file suffix (:data:`MODEL_SUFFIXES`), or an ``org/name`` whose ``org`` is a folder
    here (``runs/policy`` where ``runs/`` exists).

    >>> [is_local_path(v) for v in ("Qwen/Qwen2.5-Math-7B", "gpt2", "./policy", "/m/x", "a/b/c", "m.gguf")]
    [False, False, True, True, True, True]
    """
    if not HUB_ID.fullmatch(value) or value.lower().endswith(MODEL_SUFFIXES):
        return True
    return "/" in value and Path(value.split("/")[0]).is_dir()


HUB_SECONDS = 2.0
"""How long the Hugging Face hub may take to say whether a model id exists (one request, no retries)."""
FOLDER_FILES = {"model": ("config.json", "adapter_config.json"),
                "tokenizer": ("tokenizer_config.json", "tokenizer.json", "config.json")}  # fmt: skip
"""A folder holds a model (or a tokenizer) if it holds one of these (what ``save_pretrained`` writes)."""


def check_model_path(key: str, value: str | None, what: str = "model") -> None:
    """Raise ``ValueError`` naming ``key`` when model reference ``value`` cannot be found, before any
    model loads: a local path (:func:`is_local_path`) that does not exist, a folder without a saved
    model (``what``: ``model`` or ``tokenizer``, :data:`FOLDER_FILES`), or a hub id that is neither a
    folder here nor in the Hugging Face cache while the hub cannot be reached, has no such model, or
    ``HF_HUB_OFFLINE=1`` forbids downloading it. The hub is asked once, for at most
    :data:`HUB_SECONDS`. Known short names (``purerl.models.names.KNOWN_MODELS``) and None (a
    built-in model) pass."""
    from purerl.models.names import KNOWN_MODELS, resolve_model

    if not value:
        return
    path = Path(value).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in FOLDER_FILES[what]):
            empty = "an empty folder" if not any(path.iterdir()) else f"a folder without {FOLDER_FILES[what][0]}"
            raise ValueError(f"{_setting(key, value)}: {empty}, not a saved {what} (a folder written by "
                             "save_pretrained, or a hub id)")  # fmt: skip
        return
    if path.exists():
        return
    if value.lower() in KNOWN_MODELS:
        try:
            resolve_model(value)  # finds the package that ships it; imports nothing heavy
        except FileNotFoundError as err:
            raise ValueError(f"{_setting(key, value)}: {err}") from None
        return
    if is_local_path(value):
        raise ValueError(f"{_setting(key, value)}: no such file or folder")
    if _in_hub_cache(value):
        return
    if _hub_offline():
        raise ValueError(f"{_setting(key, value)}: not a local folder nor in the Hugging Face cache, and "
                         f"HF_HUB_OFFLINE=1 forbids downloading it")  # fmt: skip
    _ask_hub(key, value)


_ON_THE_HUB: set[tuple[str, str]] = set()
"""``(endpoint, model id)`` pairs the hub confirmed in this process (a run checks its paths more than once)."""


def _ask_hub(key: str, value: str) -> None:
    """Raise ``ValueError`` naming ``key`` unless the Hugging Face hub knows model ``value`` (one request)."""
    from huggingface_hub import HfApi, constants

    if (constants.ENDPOINT, value) in _ON_THE_HUB:
        return
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    local = "or point it at a local folder that holds the model (a path such as ./models/name)"
    try:
        HfApi(endpoint=constants.ENDPOINT).model_info(value, timeout=HUB_SECONDS)
        _ON_THE_HUB.add((constants.ENDPOINT, value))
    except GatedRepoError:
        raise ValueError(f"{_setting(key, value)}: a gated model on the Hugging Face hub: accept its terms on its "
                         f"page and log in (hf auth login), {local}") from None  # fmt: skip
    except RepositoryNotFoundError:
        raise ValueError(f"{_setting(key, value)}: no such model on the Hugging Face hub (or a private one: log "
                         f"in with hf auth login); check the id, {local}") from None  # fmt: skip
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "an error")
        raise ValueError(f"{_setting(key, value)}: the Hugging Face hub answered {status} for it; try again "
                         f"later, {local}") from None  # fmt: skip
    except Exception as err:  # no network, no DNS, a proxy or firewall, no answer in time
        reason = f"no answer within {HUB_SECONDS:g} s" if "timeout" in type(err).__name__.lower() else (
            str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)  # fmt: skip
        raise ValueError(f"{_setting(key, value)}: not a local folder nor in the Hugging Face cache, and the "
                         f"Hugging Face hub ({constants.ENDPOINT}) cannot be reached ({reason}); connect to "
                         f"the network, {local}") from None  # fmt: skip


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "").strip().upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of ``repo_id`` (what an offline load can use)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _check_run_safety(run) -> None:
    """``run.keep_checkpoints``, ``run.guards`` (purerl.training.run_control) and ``run.monitor``."""
    from purerl.config.loading import ConfigError
    from purerl.pipeline.monitor import FLAGS
    from purerl.training.run_control import GUARD_ACTIONS

    if run.keep_checkpoints < 1:
        raise ConfigError(f"run.keep_checkpoints must be positive, got {run.keep_checkpoints}")
    g, m = run.guards, run.monitor
    for flag in FLAGS:
        if getattr(g, flag) not in GUARD_ACTIONS:
            raise ConfigError(f"run.guards.{flag}={getattr(g, flag)!r}: choose one of {list(GUARD_ACTIONS)}")
    if not 0 < g.rollback_lr_factor <= 1:
        raise ConfigError(f"run.guards.rollback_lr_factor must lie in (0, 1], got {g.rollback_lr_factor}")
    if g.max_rollbacks < 0:
        raise ConfigError(f"run.guards.max_rollbacks must be >= 0, got {g.max_rollbacks}")
    if m.calibration < 2 or m.window < 1:
        raise ConfigError(f"run.monitor: calibration must be >= 2 and window >= 1, got {m.calibration} and {m.window}")
    for key in ("z", "z_eval", "min_shrink"):
        if not getattr(m, key) > 0:
            raise ConfigError(f"run.monitor.{key} must be > 0, got {getattr(m, key)}")
