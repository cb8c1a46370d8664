"""The built-in task's learned PRM: a tiny token-classification Llama, trained once and cached.

Like real PRMs (PURE-PRM-7B starts from Qwen2.5-Math-7B), it starts from the warm-started policy's
weights with a new 2-label head, and is trained in PURE's two stages on solutions of the policy's kind
(mistakes and filler steps, labelled exactly by the task) and on the warm-started policy's own
samples, labelled by the task's exact checker (as PRM800K labels a policy's samples); so, like real
PRMs, it is only as good as what it saw, and a policy that drifts away from it can fool it. A PRM
trained from random weights (``init=None``) needs thousands of steps before it judges arithmetic.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

from purerl.models.loading import (
    TinyModelConfig,
    cache_key,
    cached_folder,
    load_prm_model,
    new_prm,
    publish,
    task_tokenizer,
)
from purerl.models.prm_stages import PRMStagesConfig, step_accuracy, train_prm
from purerl.prm.token_classification import TokenClassificationPRM
from purerl.tasks import arithmetic

log = logging.getLogger(__name__)

DATA_VERSION = 4
"""Version of the generated training data (its kinds of mistakes); part of the PRM's cache key, so
changing what the data contains makes a new PRM instead of reusing a stale one. v3: half of the
mistakes are in the rewrite of what is left, half of those drop its end, and the solution carries on
from the shortened expression (v2's dropped ends were followed by steps that did not, so the PRM
learned to flag the step after a drop, not a drop that the policy then follows consistently). v4:
70% of the mistakes in the rewrite, 60% of those miscopies (v3's PRM scored miscopied operands like
correct steps). See docs/builtin-models.md."""
REWRITE_SHARE = 0.7
"""Share of the data's mistakes made in rewriting what is left (:func:`arithmetic.sample_solution`)."""
DROP_SHARE = 0.4
"""Share of those that drop the end of what is left."""


def prm_examples(task: arithmetic.ArithmeticConfig, error_rate: float, corrupt_rate: float = 0.0):
    """A sampler of labelled solutions (prompt, steps, labels, first bad characters).

    ``error_rate``: wrong results; ``corrupt_rate``: the other mistakes of sampled outputs
    (:func:`arithmetic.corrupt_solution`). Labels come from the exact checker.
    """
    data_task = arithmetic.ArithmeticConfig(**{**asdict(task), "error_rate": error_rate})

    def sample(rng: random.Random):
        p = arithmetic.random_problem(rng, data_task)
        steps, _ = arithmetic.sample_solution(p, rng, data_task, REWRITE_SHARE, DROP_SHARE)
        steps = arithmetic.corrupt_solution(p, steps, rng, corrupt_rate) if corrupt_rate else steps
        bad = arithmetic.first_bad_chars(p, steps)
        return p.prompt, steps, [b is None for b in bad], bad

    return sample


def policy_examples(policy: Path, task: arithmetic.ArithmeticConfig, n: int, seed: int, batch: int = 128):
    """``n`` solutions sampled (temperature 1, the rollout's default length cap) from the causal LM in
    ``policy`` on training problems, labelled by the exact checker; responses without any step are
    dropped."""
    import torch

    from purerl.config import RolloutConfig
    from purerl.models.loading import load_policy
    from purerl.pipeline.steps import split_steps
    from purerl.rollout import sample_answers
    from purerl.rollout.hf import HFGenerate

    model, tokenizer = load_policy(policy)
    backend = HFGenerate(model.eval(), tokenizer)
    rng = random.Random(f"prm-policy-data-{seed}")
    torch.manual_seed(seed)
    examples = []
    while len(examples) < n:
        problems = [arithmetic.draw_problem(rng, task) for _ in range(batch)]
        answers = sample_answers(backend, [p.prompt for p in problems], max_new_tokens=RolloutConfig.max_new_tokens)
        for p, text in zip(problems, answers.texts):
            steps = [s.text for s in split_steps(text, arithmetic.SEPARATOR)]
            if steps:
                bad = arithmetic.first_bad_chars(p, steps)
                examples.append((p.prompt, steps, [b is None for b in bad], bad))
    return examples[:n]


def mixed_examples(sample, pool: list, share: float):
    """A sampler that draws from ``pool`` with probability ``share`` and from ``sample`` otherwise."""
    if not pool or share <= 0:
        return sample

    def draw(rng: random.Random):
        return rng.choice(pool) if rng.random() < share else sample(rng)

    return draw


def _progress(step: int, loss: float) -> None:
    if step % 100 == 0:
        log.info("PRM step %d: loss %.3f", step, loss)


def builtin_prm(
    task: arithmetic.ArithmeticConfig,
    size: TinyModelConfig,
    cfg: PRMStagesConfig,
    error_rate: float,
    init: Path | None = None,
    refresh: bool = False,
    corrupt_rate: float = 0.0,
    separator: str = "\n",
) -> Path:
    """Folder of the built-in PRM trained on generated solutions (model + tokenizer), cached.

    ``init``: a causal LM folder whose backbone the PRM starts from (``size`` is then ignored).
    """
    extra = [separator] if separator != "\n" else []
    key = cache_key(task, size, cfg, error_rate, init.name if init else None, corrupt_rate or None, *extra,
                    DATA_VERSION, arithmetic.FORMAT)  # fmt: skip
    folder, ready = cached_folder(f"prm-{key}", refresh)
    if ready:
        return folder
    start = time.time()
    if init is not None:
        model, tokenizer = load_prm_model(init, num_labels=2)
    else:
        tokenizer = task_tokenizer(task)
        model = new_prm(tokenizer, size, cfg.seed)
    sample = prm_examples(task, error_rate, corrupt_rate)
    log.info("training the built-in PRM: %d + %d steps (cached in %s)", cfg.head_steps, cfg.full_steps, folder)
    losses = train_prm(model, tokenizer, sample, cfg, separator=separator, on_step=_progress)
    rng = random.Random(10_000 + cfg.seed)
    quality = step_accuracy(TokenClassificationPRM(model, tokenizer, separator), [sample(rng) for _ in range(500)])
    meta = {"seconds": time.time() - start, "final_loss": sum(losses[-20:]) / min(20, len(losses)), **quality}
    return publish(model, tokenizer, folder, "purerl_prm.json", meta, replace=refresh)


def adapted_prm(
    base: Path,
    policy: Path,
    task: arithmetic.ArithmeticConfig,
    error_rate: float,
    corrupt_rate: float,
    samples: int,
    share: float,
    steps: int,
    lr: float,
    refresh: bool = False,
    separator: str = "\n",
    seed: int = 0,
) -> Path:
    """The PRM ``base`` trained further on the policy's own samples (``share`` of each batch; the rest
    generated solutions), labelled by the task's exact checker: the PRM800K recipe of labelling what
    the policy writes. Cached like the other built-in models."""
    key = cache_key(
        "adapt", base.name, policy.name, samples, share, steps, lr, error_rate, corrupt_rate, separator, seed
    )
    folder, ready = cached_folder(f"prm-{key}", refresh)
    if ready:
        return folder
    start = time.time()
    model, tokenizer = load_prm_model(base)
    log.info("sampling %d solutions from %s for the PRM's training data", samples, policy)
    pool = policy_examples(policy, task, samples, seed)
    sample = mixed_examples(prm_examples(task, error_rate, corrupt_rate), pool, share)
    log.info("training the built-in PRM on the policy's samples: %d steps (cached in %s)", steps, folder)
    cfg = PRMStagesConfig(head_steps=0, full_steps=steps, lr=lr, seed=seed)
    losses = train_prm(model, tokenizer, sample, cfg, separator=separator, on_step=_progress)
    prm = TokenClassificationPRM(model, tokenizer, separator)
    rng = random.Random(10_000 + seed)
    quality = step_accuracy(prm, [prm_examples(task, error_rate, corrupt_rate)(rng) for _ in range(500)])
    quality.update(
        {f"policy_{k}": v for k, v in step_accuracy(prm, policy_examples(policy, task, 500, seed + 1)).items()}
    )
    meta = {"seconds": time.time() - start, "final_loss": sum(losses[-20:]) / min(20, len(losses)), "base": base.name,
            **quality}  # fmt: skip
    return publish(model, tokenizer, folder, "purerl_prm.json", meta, replace=refresh)
