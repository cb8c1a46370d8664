"""The built-in task's learned PRM: a tiny token-classification Llama, trained once and cached.

Like real PRMs (PURE-PRM-7B starts from Qwen2.5-Math-7B), it starts from the warm-started policy's
weights with a new 2-label head, and is trained in PURE's two stages on solutions of the policy's kind
(mistakes and filler steps, labelled exactly by the task); so, like real PRMs, it is only as good as
what it saw. A PRM trained from random weights (``init=None``) needs thousands of steps before it
judges arithmetic at all.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

from purerl.models import TinyModelConfig, cache_key, cached_folder, load_prm_model, new_prm, publish, task_tokenizer
from purerl.prm.token_classification import TokenClassificationPRM
from purerl.prm.train import PRMTrainConfig, step_accuracy, train_prm
from purerl.tasks import arithmetic

log = logging.getLogger(__name__)


def prm_examples(task: arithmetic.ArithmeticConfig, error_rate: float, corrupt_rate: float = 0.0):
    """A sampler of labelled solutions (prompt, steps, labels, first bad characters).

    ``error_rate``: wrong results; ``corrupt_rate``: the other mistakes of sampled outputs
    (:func:`arithmetic.corrupt_solution`). Labels come from the exact checker.
    """
    data_task = arithmetic.ArithmeticConfig(**{**asdict(task), "error_rate": error_rate})

    def sample(rng: random.Random):
        p = arithmetic.random_problem(rng, data_task)
        steps, _ = arithmetic.sample_solution(p, rng, data_task)
        steps = arithmetic.corrupt_solution(p, steps, rng, corrupt_rate) if corrupt_rate else steps
        bad = arithmetic.first_bad_chars(p, steps)
        return p.prompt, steps, [b is None for b in bad], bad

    return sample


def builtin_prm(
    task: arithmetic.ArithmeticConfig,
    size: TinyModelConfig,
    cfg: PRMTrainConfig,
    error_rate: float,
    init: Path | None = None,
    refresh: bool = False,
    corrupt_rate: float = 0.0,
) -> Path:
    """Folder of the built-in PRM (model + tokenizer), trained once per config and cached.

    ``init``: a causal LM folder whose backbone the PRM starts from (``size`` is then ignored).
    """
    key = cache_key(task, size, cfg, error_rate, init.name if init else None, corrupt_rate or None)
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

    def progress(step: int, loss: float) -> None:
        if step % 100 == 0:
            log.info("PRM step %d: loss %.3f", step, loss)

    losses = train_prm(model, tokenizer, sample, cfg, on_step=progress)
    rng = random.Random(10_000 + cfg.seed)
    quality = step_accuracy(TokenClassificationPRM(model, tokenizer), [sample(rng) for _ in range(500)])
    meta = {"seconds": time.time() - start, "final_loss": sum(losses[-20:]) / min(20, len(losses)), **quality}
    return publish(model, tokenizer, folder, "purerl_prm.json", meta, replace=refresh)
