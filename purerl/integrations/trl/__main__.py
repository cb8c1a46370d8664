"""``python -m purerl.integrations.trl CONFIG.yaml [key=value ...]``: PURE inside TRL's GRPOTrainer.

Also ``accelerate launch [--num_processes N ...] -m purerl.integrations.trl CONFIG.yaml [key=value ...]``.
The YAML is the one ``purerl train`` reads, plus an optional ``trl:`` section of GRPOConfig keys purerl
does not own; ``trl.KEY=VALUE`` overrides reach that section, other overrides are purerl keys
(:mod:`purerl.integrations.trl.config`). With no policy and no data it trains the built-in task's policy
with the built-in PRM. A bad key, value or path answers with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "purerl.integrations.trl"


def build_trainer(cfg, args, trainer_class=None, **kwargs):
    """The policy, data, reward function and :class:`PureGRPOTrainer` (or ``trainer_class``, e.g. TRL's own
    GRPOTrainer) of a purerl config ``cfg`` and its GRPOConfig ``args`` (:func:`grpo_config`); ``kwargs`` go to
    the trainer (e.g. ``prm``, ``rollout_func``)."""
    import torch

    from purerl.config import task_name
    from purerl.config.validation import check_machine
    from purerl.integrations.trl.data import build_dataset
    from purerl.integrations.trl.trainer import PureGRPOTrainer
    from purerl.models.builtin import policy_path
    from purerl.models.loading import load_policy, quiet_transformers
    from purerl.registry import TASKS

    check_machine(cfg)  # devices and model paths, before anything loads
    quiet_transformers()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    task = TASKS.resolve(task_name(cfg)).from_config(cfg)
    if getattr(task, "math_grading", False):
        from purerl.grading import start_worker

        start_worker()  # math-verify's helper process, started while the models load
    p = cfg.policy
    model, tokenizer = load_policy(policy_path(cfg), dtype=p.dtype, trust_remote_code=p.trust_remote_code)
    dataset, reward = build_dataset(task, cfg, tokenizer)
    if p.lora_rank > 0:
        from peft import LoraConfig

        lora = LoraConfig(r=p.lora_rank, lora_alpha=p.lora_alpha, lora_dropout=0.0,
                          target_modules=list(p.lora_targets), task_type="CAUSAL_LM")  # fmt: skip
        kwargs.setdefault("peft_config", lora)
    trainer_class = trainer_class or PureGRPOTrainer
    if issubclass(trainer_class, PureGRPOTrainer):  # else plain TRL (benchmarks): same model, data and reward
        kwargs = {"purerl": cfg, "task": task, **kwargs}
    return trainer_class(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                         processing_class=tokenizer, **kwargs)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="PURE inside TRL's GRPOTrainer, from the purerl YAML `purerl train` reads plus a `trl:` "
        "section of GRPOConfig keys purerl does not own.",
    )
    parser.add_argument("config", nargs="?", help="a purerl YAML config (defaults when left out)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides: algo.mode=min, trl.bf16=true")
    return parser


def _say(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once, not once per process
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def prepare(argv: list[str] | None = None):
    """``(cfg, args, trainer)`` of a command line, the start-up lines said; raises ``ValueError`` /
    ``OSError`` for a bad key, value or path."""
    from purerl.config import save_config
    from purerl.integrations.trl.config import grpo_config, load_route_config, startup_lines

    ns = _parser().parse_args(argv)
    if ns.config and "=" in ns.config:  # `python -m purerl.integrations.trl run.steps=5`: no file
        ns.overrides, ns.config = [ns.config, *ns.overrides], None
    cfg, trl = load_route_config(ns.config, ns.overrides)
    args = grpo_config(cfg, trl)
    for line in startup_lines(cfg, args):
        _say(line)
    trainer = build_trainer(cfg, args)
    if trainer.accelerator.is_main_process:
        os.makedirs(cfg.run.out_dir, exist_ok=True)
        save_config(cfg, os.path.join(cfg.run.out_dir, "config.yaml"))
    return cfg, args, trainer


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, _, trainer = prepare(argv)
    except (ValueError, OSError) as err:  # a bad key, value, path or data file: one line, no traceback
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    trainer.train()
    stopped = getattr(getattr(trainer, "pure_guards", None), "stopped", None)
    if stopped:  # a guard stopped the run: no final/ from hacked weights, as purerl train
        print(f"{PROG}: {stopped}", file=sys.stderr)
        return 3
    trainer.save_model(os.path.join(cfg.run.out_dir, "final"))  # the policy and its tokenizer, as purerl train's
    return 0


if __name__ == "__main__":
    sys.exit(main())
