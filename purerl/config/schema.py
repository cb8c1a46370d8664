"""The configuration's schema: one dataclass per subsystem, each field with a default and a one-line
docstring under it (documented once); YAML files under ``configs/`` hold values only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from purerl.io.data import DataConfig
from purerl.pipeline.monitor import MonitorSettings
from purerl.registry import DEFAULT_TEMPERATURE
from purerl.tasks.arithmetic import ArithmeticConfig
from purerl.training.run_control import GuardConfig


@dataclass(frozen=True)
class TinyModelConfig:
    """Size of a tiny Llama built from scratch (random init)."""

    hidden_size: int = 64
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    intermediate_size: int = 256
    """MLP width."""
    max_positions: int = 256
    """Longest sequence (prompt + response)."""


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning of the warm start."""

    steps: int = 1500
    """Optimizer steps (the tiny policy's rewriting "clicks" after about 1,000: greedy held-out
    accuracy 0.34 at 900 steps, 0.72 at 1,050, in a 1,800-step run)."""
    batch_size: int = 64
    """Solutions per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up over 5% of the steps, cosine decay); 3e-3 never learns."""
    seed: int = 0
    """Seed of the weights and of the sampled solutions."""


@dataclass(frozen=True)
class PRMStagesConfig:
    """Two-stage PRM training."""

    head_steps: int = 50
    """Stage 1: optimizer steps on the classification head only."""
    full_steps: int = 3000
    """Stage 2: optimizer steps on all weights (the built-in PRM starts to tell right from wrong
    results after about 700 with dense labels; checking copied remainders took 3,000 with data v4)."""
    batch_size: int = 64
    """Labelled solutions per step."""
    head_lr: float = 1e-3
    """Stage-1 learning rate."""
    lr: float = 1e-3
    """Stage-2 peak learning rate (cosine); 2e-3 never learns the built-in task."""
    seed: int = 0
    """Seed of the weights and of the sampled training solutions."""
    dense_labels: bool = True
    """Also label every token of a step ("still a prefix of a correct step"), where examples say where
    each step goes wrong; otherwise only the separator token after each step is labelled (the
    built-in PRM: step accuracy 0.80 with marker labels only, 0.86 with dense labels, 1,000 steps)."""


@dataclass
class PolicyConfig:
    """The policy being trained."""

    path: str | None = None
    """A local folder, hub id, ``.gguf`` file or known name (``smollm2-135m-instruct``) of a causal LM;
    None: the built-in task's warm-started tiny Llama."""
    dtype: str = "float32"
    """Weights dtype (``float32``, ``bfloat16``, ``float16``); GGUF files are dequantised to it."""
    device: str = "cpu"
    """Where the policy (and its rollouts and credit tensors) live: ``cpu``, ``cuda``, ``cuda:1``."""
    trust_remote_code: bool = False
    """Run a hub model's own Python code (off unless you trust it)."""
    lora_rank: int = 0
    """LoRA rank through peft (0: train all weights). With LoRA the reference policy is the base
    weights with the adapter switched off: no second copy of the model in memory."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get LoRA adapters."""
    size: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Size of the built-in policy (ignored with ``path``)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Warm start of the built-in policy (ignored with ``path``)."""


@dataclass
class PRMConfig:
    """The process reward model."""

    kind: str = "token_classification"
    """Adapter (``purerl.registry.PRMS``): ``token_classification`` (PURE-PRM / TRL PRMTrainer models),
    ``qwen_prm`` (Qwen2.5-Math-PRM), ``math_shepherd`` or ``rule`` (the built-in task's exact step
    checker)."""
    path: str | None = None
    """Folder or hub id of the PRM; None: the built-in task's PRM (trained once, cached; a
    ``token_classification`` model, so other model kinds need a path)."""
    separator: str = "\n"
    """token_classification: the marker after each step where its score is read (PURE-PRM: "\\n")."""
    score_map: str = "none"
    """``affine`` maps [0, 1] scores (qwen_prm, math_shepherd) to [-1, 1] so min-form sees failing
    steps as negative; ``none`` keeps the format's range (see docs/real-models.md)."""
    dtype: str = "float32"
    """Weights dtype of the PRM."""
    device: str = "cpu"
    """Where the PRM runs (its scores come back as Python floats)."""
    trust_remote_code: bool = False
    """Run the PRM's own Python code (Qwen2.5-Math-PRM ships its model class as remote code)."""
    init_from_policy: bool = True
    """Start the built-in PRM from the warm-started policy's weights (as real PRMs start from an LM)."""
    size: TinyModelConfig = field(default_factory=lambda: TinyModelConfig(num_layers=2))
    """Size of the built-in PRM when it starts from random weights."""
    train: PRMStagesConfig = field(default_factory=PRMStagesConfig)
    """Two-stage training of the built-in PRM."""
    data_error_rate: float = 0.5
    """Share of wrong operation steps in the built-in PRM's training solutions (balanced classes): 30%
    of them wrong results, 70% wrong rewrites of what is left (``prm.builtin.REWRITE_SHARE``)."""
    data_corrupt_rate: float = 0.2
    """Share of steps given a sampling policy's other mistakes (wrong operation, fragments, early
    answers) in the built-in PRM's training data; 0 gives a PRM with those blind spots."""
    data_policy_samples: int = 4096
    """Solutions sampled from the warm-started policy and labelled by the task's checker, for an
    optional last stage of the built-in PRM's training (the PRM800K recipe: label the policy's own
    samples). Off by default (``adapt_steps: 0``): it raised the PRM's recall of the policy's wrong
    steps from 0.73 to 0.80 but did not stop the min-form hack (docs/builtin-models.md)."""
    data_policy_share: float = 0.7
    """Share of each batch of that stage drawn from the policy's samples (the rest: generated
    solutions)."""
    adapt_steps: int = 0
    """Optimizer steps of that stage (all weights); 0 skips it. 1000 in the experiment above."""
    adapt_lr: float = 5e-4
    """Peak learning rate of that stage (cosine)."""


@dataclass
class DataSection:
    """Real problems instead of the built-in task (``purerl.io.data`` field mapping)."""

    train: DataConfig = field(default_factory=DataConfig)
    """Training problems; an empty path keeps the built-in arithmetic task. Verifiable rewards come
    only from rows with an ``answer`` (``ref_answer``: metrics only), on ``algo.vr_fraction`` of them."""
    heldout: DataConfig = field(default_factory=DataConfig)
    """Held-out problems for evaluation (first ``run.eval_size``); empty path: no evaluation."""
    separator: str = "\n\n"
    """Step separator of the policy's responses."""
    task: str | None = None
    """The task (``purerl.registry.TASKS``): ``arithmetic`` (built in) or ``dataset`` (``train.path``'s
    problems); None picks ``dataset`` when ``train.path`` is set, else ``arithmetic``."""


@dataclass
class RolloutConfig:
    """Sampling responses."""

    prompts_per_step: int = 16
    """Prompts per RL step."""
    k: int = 8
    """Responses sampled per prompt (the group size K)."""
    max_new_tokens: int = 80
    """Length cap of a response (N in the baseline's normalisation)."""
    min_new_tokens: int = 0
    """EOS is not sampled before this many tokens (transformers' ``min_new_tokens``; 0: off). Equal to
    ``max_new_tokens`` it fixes the work of a step (benchmarks, as TRL's peer script does)."""
    temperature: float = 1.0
    """Sampling temperature."""
    template: str = "raw"
    """How a problem becomes the policy's prompt (``purerl.tasks.prompts``): ``raw`` (the built-in task's
    text), ``chat`` (the model's chat template), ``qwen_math_cot`` or ``plain``."""
    system: str | None = None
    """System message of the ``chat`` / ``qwen_math_cot`` templates (None: "Please reason step by
    step, and put your final answer within \\boxed{}.")."""
    backend: str = "hf"
    """Generation backend (``purerl.registry.ROLLOUT_BACKENDS``): ``hf`` is transformers ``generate``."""
    context: int = 0
    """Positions a prompt plus its response may use (0: the policy config's ``max_position_embeddings``)."""


@dataclass
class AlgoConfig:
    """Rewards, credit assignment and the PPO update."""

    reward: str = "prm+vr"
    """``prm`` (process rewards only), ``vr`` (verifiable rewards only) or ``prm+vr``."""
    mode: str = "soft_min"
    """Credit mode for process rewards (``purerl.registry.TRANSFORMS``): ``soft_min`` (PURE Eq. 5, the
    paper's), ``min`` (its T -> 0 limit, Eq. 3-4) or ``sum``."""
    temperature: float = DEFAULT_TEMPERATURE
    """soft_min temperature (> 0; the paper's 0.1)."""
    vr_fraction: float = 0.1
    """Share of training prompts that carry ground truth for VR (the paper's PRM+VR: 10%)."""
    vr_coef: float = 1.0
    """Weight of the verifiable advantage."""
    lr: float = 1e-4
    """AdamW learning rate of the policy (constant after a 5-step warm-up)."""
    clip_ratio: float = 0.2
    """PPO clip epsilon."""
    ppo_epochs: int = 1
    """Passes over each batch."""
    minibatches: int = 2
    """Minibatches per pass (with 1 epoch of 1 minibatch and no reference model the update is
    on-policy: its own forward gives the old log-probs, and no separate pass runs)."""
    grad_clip: float = 1.0
    """Max gradient norm."""
    kl_coef: float = 1e-3
    """Coefficient of the KL-to-reference term (0 disables the reference model)."""
    kl_estimator: str = "k3"
    """KL estimator (``purerl.registry.KL_ESTIMATORS``): ``k1``, ``k2`` or ``k3`` (low_var_kl)."""
    kl_in_reward: bool = True
    """Put ``-kl_coef * kl`` into the token rewards (the paper's) instead of the loss."""
    whiten: bool = True
    """Whiten the advantages over the batch's response tokens, the verifiable part included (the
    authors' ``adv_norm``; ``purerl.pipeline.rewards.CreditSettings.whiten``)."""


@dataclass
class RefreshConfig:
    """The online PRM refresh: the PRM learns during RL from the outcome grades of the policy's answers
    (docs/refresh.md); off by default."""

    enabled: bool = False
    """Update the PRM during RL (a model PRM: token_classification, qwen_prm or math_shepherd)."""
    labels: str = "vr"
    """Whose grades it learns from: ``vr``, the prompts whose grade is a verifiable reward (the labels
    the paper's PRM+VR already uses); ``all``, every prompt with a gold answer."""
    objective: str = "mil"
    """``mil``: a wrong answer's lowest blamable step towards wrong, a right answer's steps towards right;
    ``pairwise``: within a prompt's group, right answers' min-form values above wrong answers' (docs/refresh.md)."""
    blame: str = "min"
    """Which step of a wrong answer is pushed towards wrong (``mil``): ``min``, its lowest-scored blamable
    step; ``last``, its final step (wrong for certain where a step's label means "the gold answer can
    still be reached", as Math-Shepherd labels and label-steps make them)."""
    weighting: str = "classes"
    """How wrong and right answers weigh (``mil``): ``classes``, each kind's term the mean over its answers
    (the two weigh the same whatever the accuracy); ``answers``, every answer the same."""
    gate: str = "none"
    """``kept``: keep an update only if it ranks the next step's graded answers (not yet trained on) at least
    as well as the PRM last kept, by the (right, wrong) pairs to one prompt whose min-form values are in
    order, else go back to that PRM (weights and optimizer); ``start``: as well as the PRM last kept and the
    one the run started with, else go back to the better of the two; ``none``: keep every update."""
    lr: float = 5e-4
    """AdamW learning rate of the PRM's weights (the tiny built-in-task PRMs; a 7B PRM wants far less)."""
    updates: int = 4
    """Optimizer steps of the PRM after each RL step (once the buffer holds ``batch_size`` answers)."""
    batch_size: int = 32
    """Answers per PRM optimizer step, drawn from the buffer."""
    buffer: int = 1024
    """Graded answers kept, the newest first out last (a replay buffer of the policy's recent answers)."""
    positive_weight: float = 1.0
    """Weight of the right answers' term (every step pushed towards correct) beside the wrong answers'
    (their lowest step pushed towards wrong)."""
    anchor: float = 0.0
    """Weight of the guard against forgetting: on the steps of wrong answers the grade does not blame,
    cross-entropy to the PRM as it was before the refresh (a frozen copy, or the base under LoRA)."""
    smoothing: float = 0.0
    """Label smoothing of the grades' targets (0.1: a wrong answer's blamed step towards p = 0.1, not 0)."""
    grad_clip: float = 1.0
    """Max gradient norm of a PRM step."""
    lora_rank: int = 0
    """LoRA rank of the PRM's update through peft (0: all weights)."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""


@dataclass
class RunConfig:
    """Length, evaluation, logging and checkpoints of a run."""

    steps: int = 120
    """RL steps."""
    seed: int = 0
    """Seed of sampling and data order."""
    out_dir: str = "runs/default"
    """Where logs, plots, samples and checkpoints go."""
    eval_every: int = 10
    """Held-out greedy accuracy every this many steps (and at the start and the end)."""
    eval_size: int = 128
    """Held-out problems per evaluation."""
    eval_samples: int = 4
    """Sampled answers per held-out problem for the sampled accuracy (0: greedy only)."""
    checkpoint_every: int = 20
    """Checkpoint every this many steps, at the end, and when stopped (SIGTERM, SIGINT, a guard)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept in ``checkpoints/`` (the newest clean one is kept as well)."""
    samples_every: int = 10
    """Log sampled completions every this many steps."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``pip install wandb``)."""
    tensorboard: bool = True
    """Also write TensorBoard event files (when tensorboard is installed)."""
    guards: GuardConfig = field(default_factory=GuardConfig)
    """What each hacking detector does when it fires (docs/hacking.md)."""
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    """How the hacking detectors calibrate to the run's start and noise (docs/hacking.md)."""


@dataclass
class TrainConfig:
    """Everything ``purerl train`` needs."""

    task: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    """The built-in arithmetic task."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy."""
    prm: PRMConfig = field(default_factory=PRMConfig)
    """The process reward model."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """Rewards, credit and the update."""
    data: DataSection = field(default_factory=DataSection)
    """Dataset problems (leave empty for the built-in task)."""
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    """The online PRM refresh (off by default)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Run length, logging, checkpoints."""
    plugins: list[str] = field(default_factory=list)
    """Python modules imported before the config is checked: they register PRM kinds, credit modes,
    tasks or rollout backends (``purerl.registry``; see docs/architecture.md)."""
    trl: dict = field(default_factory=dict)
    """TRL ``GRPOConfig`` keys purerl does not own (``bf16``, ``use_vllm``, ...), read by ``python -m
    purerl.integrations.trl`` only (checked there; docs/scaling.md), so one file serves every engine;
    ``purerl train`` (which says so in one line) and the verl plugin leave it alone."""


def task_name(cfg: TrainConfig) -> str:
    """The task a config trains on: ``data.task``, else ``dataset`` with a ``data.train.path``, else
    ``arithmetic``."""
    return cfg.data.task or ("dataset" if cfg.data.train.path else "arithmetic")


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
