"""``accelerate launch -m purerl.integrations.trl --config CONFIG.yaml [--key value ...]``: PURE with TRL.

One process: ``python -m purerl.integrations.trl --config CONFIG.yaml``. The YAML holds TRL's
GRPOConfig keys, PURE's (:class:`PureGRPOConfig`) and the script's (:class:`PureScriptArguments`);
flags override it. With no policy and no data it trains the built-in task's policy with its PRM.
"""

from __future__ import annotations

import sys


def build_trainer(script, args, trainer_class=None, **kwargs):
    """The policy, data, reward function and :class:`PureGRPOTrainer` (or ``trainer_class``) of a parsed
    configuration; ``kwargs`` go to the trainer (e.g. ``prm``, ``rollout_func``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from purerl.integrations.trl.data import VerifiableReward, build_dataset
    from purerl.integrations.trl.trainer import PureGRPOTrainer
    from purerl.models.loading import torch_dtype_of

    if args.prm_kind == "rule" and args.pure_reward != "vr" and script.task != "arithmetic":
        raise ValueError("prm_kind=rule checks the built-in task's steps; a dataset needs a model PRM (prm_path)")
    path = script.model_name_or_path
    if path is None:
        from purerl.config import load_config
        from purerl.models.builtin import builtin_policy_path

        path = builtin_policy_path(load_config())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype_of(script.model_dtype))
    dataset, grader = build_dataset(script)
    reward = VerifiableReward(grader, args.ground_truth_column)
    trainer_class = trainer_class or PureGRPOTrainer
    return trainer_class(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                         processing_class=tokenizer, **kwargs)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from trl import TrlParser

    from purerl.integrations.trl.config import PureGRPOConfig, PureScriptArguments

    parser = TrlParser((PureScriptArguments, PureGRPOConfig))
    try:
        script, args = parser.parse_args_and_config(args=argv)
        trainer = build_trainer(script, args)
    except (ValueError, OSError) as err:  # a bad key, value, path or data file: one line, no traceback
        print(f"purerl.integrations.trl: error: {err}", file=sys.stderr)
        return 2
    trainer.train()
    trainer.save_model(args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
