"""PURE inside TRL's GRPOTrainer (the `trl` extra): the advantages TRL trains on are PURE's, computed
again here from the completions by purerl.algo.credit alone; a run on the built-in task end to end; and the
same step on two processes (gloo, a prompt's completions on both) against one process on the same
global batch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl", reason="needs the trl extra: pip install 'purerl[trl]'")

from purerl.algo.credit import pure_advantages
from purerl.pipeline.rewards import has_ground_truth
from purerl.pipeline.steps import decode_with_offsets, segment_batch
from purerl.tasks import arithmetic

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("trl_worker.py")


@pytest.fixture(scope="module")
def worker(load_script):
    """tests/trl_worker.py: the configuration and recording trainer every test here shares."""
    return load_script(WORKER)


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}


def test_the_advantages_trl_trains_on_are_pure_advantages(tmp_path, monkeypatch, worker):
    """One TRL step in this process; then PURE's advantages of the recorded completions, computed
    from scratch with purerl.algo.credit (decode, split, PRM scores, grades, VR share), equal TRL's."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    script, args = worker._config(str(tmp_path), 1)
    trainer = worker.build_trainer(script, args, trainer_class=worker.Recording)
    trainer.records = []
    trainer.train()
    (record,) = trainer.records
    ids = record["completion_ids"]
    tok = trainer.processing_class
    texts, offsets = decode_with_offsets(tok, ids)
    steps = segment_batch(texts, offsets, "\n\n")
    problems = record["prompts"]  # raw template: the prompt is the bare problem
    step_rewards = steps.pack(trainer.prm.score(problems, steps.steps))
    answers = {row["problem"]: row["answer"] for row in trainer.train_dataset}
    graded = [arithmetic.extract_answer(t) == answers[p] for t, p in zip(texts, problems)]
    vr = torch.tensor([float(g) if has_ground_truth(p, 0.5) else math.nan for g, p in zip(graded, problems)])
    width = max(len(r) for r in ids)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in ids])
    group_ids = torch.arange(len(ids)) // 4
    expected, _ = pure_advantages(step_rewards, steps.step_mask, steps.step_ends, mask, group_ids, vr,
                                  mode="soft_min", max_len=32)  # fmt: skip
    assert vr.isnan().any() and not vr.isnan().all()  # some prompts carry verifiable rewards, some do not
    assert torch.equal(record["advantages"], expected)
    logged = trainer.state.log_history[0]
    for key in ("pure/prm/min_raw", "pure/response/steps", "pure/response/zero_steps", "pure/response/truncated",
                "pure/hack/length_to_cap", "pure/prm/sum_raw", "pure/advantages/mean"):  # fmt: skip
        assert key in logged, key


def test_the_command_trains_the_built_in_task(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "purerl.integrations.trl", "--config", str(ROOT / "configs" / "trl" / "builtin.yaml"),
           "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "16",
           "--gradient_accumulation_steps", "1", "--num_generations", "4", "--max_completion_length", "40",
           "--num_problems", "64", "--use_cpu", "true"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert "pure/prm/min_raw" in run.stdout + run.stderr
    bad = subprocess.run([*cmd[:5], "--output_dir", str(out), "--credit_mode", "max"], capture_output=True,
                         text=True, timeout=600, env=ENV, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "credit_mode='max': choose one of" in bad.stderr
    missing = subprocess.run([*cmd[:5], "--output_dir", str(out), "--task", "dataset", "--data_path", "nope.jsonl"],
                             capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "nope.jsonl: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, worker, free_port):
    """accelerate launch, 2 CPU processes over gloo, 12 completions (3 prompts x K = 4, so one prompt's
    completions sit on both processes): the advantages equal, bit for bit, those of one process that
    trains on the same completions. The weights after the step agree to within 5% of the step (AdamW's
    first step moves a weight by lr * g / (|g| + eps), about lr = 1e-3): DDP averages two half-batch
    gradients where one process sums one batch, so the gradients differ in their last bits, and for the
    few weights whose gradient is near eps that moves the step by a visible share."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port), str(WORKER), "record", str(tmp_path)]  # fmt: skip
    run = subprocess.run(launch, capture_output=True, text=True, timeout=600, env=ENV)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    replay = subprocess.run([sys.executable, str(WORKER), "replay", str(tmp_path)], capture_output=True, text=True,
                            timeout=600, env=ENV)  # fmt: skip
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    parts = [torch.load(tmp_path / f"record-rank{r}.pt")[0] for r in (0, 1)]
    whole = torch.load(tmp_path / "replay-rank0.pt")[0]
    assert len(parts[0]["completion_ids"]) == len(parts[1]["completion_ids"]) == 6
    start = 0
    for part in parts:
        adv = part["advantages"]
        rows = whole["advantages"][start : start + adv.shape[0]]
        assert torch.equal(adv, rows[:, : adv.shape[1]]) and (rows[:, adv.shape[1] :] == 0).all()
        start += adv.shape[0]
    before = worker.initial_weights()
    two, one = torch.load(tmp_path / "record-weights.pt"), torch.load(tmp_path / "replay-weights.pt")
    step = max((two[k] - before[k]).abs().max().item() for k in two)
    gap = max((two[k] - one[k]).abs().max().item() for k in two)
    assert step > 1e-4 and gap < 0.05 * step, (step, gap)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs" / "trl").glob("*.yaml")))
def test_every_shipped_trl_config_parses(name):
    """Each configs/trl/*.yaml is read and checked by TRL's own parser (bf16 switched off only because
    TRL refuses it on a machine without a GPU)."""
    from trl import TrlParser

    from purerl.integrations.trl import PureGRPOConfig, PureScriptArguments

    argv = ["--config", str(ROOT / "configs" / "trl" / name), "--bf16", "false"]
    TrlParser((PureScriptArguments, PureGRPOConfig)).parse_args_and_config(args=argv)


def test_the_paper_config_holds_the_paper_settings():
    """configs/trl/paper.yaml: 8 GPUs, vLLM, ZeRO-3, the paper's batch, lr, KL, credit and lengths."""
    from trl import TrlParser

    from purerl.integrations.trl import PureGRPOConfig, PureScriptArguments

    argv = ["--config", str(ROOT / "configs" / "trl" / "paper.yaml"), "--bf16", "false"]
    script, args = TrlParser((PureScriptArguments, PureGRPOConfig)).parse_args_and_config(args=argv)
    assert (args.credit_mode, args.credit_temperature, args.beta, args.learning_rate) == ("soft_min", 0.1, 1e-3, 1e-6)
    assert args.max_completion_length == 7168 and args.num_generations == 8 and args.use_vllm
    per_step = args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps  # 8 GPUs
    assert per_step == 512 and per_step // args.num_generations == 64  # 64 prompts x 8 samples a step
    assert script.model_name_or_path == "Qwen/Qwen2.5-Math-7B" and args.prm_path == "jinachris/PURE-PRM-7B"


def test_a_dataset_through_purerl_data(tmp_path, monkeypatch, worker):
    """`task: dataset` reads problems with purerl.io.data; rows without an answer get no verifiable reward;
    the problem text (not the chat prompt) goes to the PRM."""
    import json

    from trl import TrlParser

    from purerl.integrations.trl import PureGRPOConfig, PureScriptArguments
    from purerl.integrations.trl.__main__ import build_trainer

    data = tmp_path / "math.jsonl"
    rows = [{"problem": f"Q: (1+{i}) mod 10\nA:\n", "answer": str((1 + i) % 10) if i % 2 else None} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    argv = [*worker.ARGS, "--output_dir", str(tmp_path / "run"), "--per_device_train_batch_size", "8", "--task",
            "dataset", "--data_path", str(data), "--vr_fraction", "1.0"]  # fmt: skip
    script, args = TrlParser((PureScriptArguments, PureGRPOConfig)).parse_args_and_config(args=argv)
    trainer = build_trainer(script, args, trainer_class=worker.Recording)
    trainer.records = []
    trainer.train()
    (record,) = trainer.records
    answered = {r["problem"]: r["answer"] is not None for r in rows}
    no_reward = [math.isnan(v) for v in trainer._pure_rewards[:, 0].tolist()]
    assert no_reward == [not answered[p] for p in record["prompts"]]  # the reward function skips them
    assert {r["problem"]: r["answer"] for r in trainer.train_dataset}["Q: (1+1) mod 10\nA:\n"] == ["2"]
    logged = trainer.state.log_history[0]
    assert "pure/prm/min_raw" in logged and "rewards/purerl_accuracy/mean" in logged


def test_pass_at_k_counts_whole_groups_across_processes():
    """A prompt whose completions sit on two processes counts once, solved if any of them is right."""
    from types import SimpleNamespace

    from purerl.integrations.trl.trainer import PureGRPOTrainer
    from purerl.pipeline.rewards import RewardBatch

    # the gathered batch of two processes: group 1 straddles them, solved only on the second
    halves = [([0, 0, 1], [False, True, False]), ([1, 2, 2], [True, False, False])]
    batches = [RewardBatch(["p"] * 3, torch.tensor(g), torch.ones(3, 2)) for g, _ in halves]
    for batch, (_, right) in zip(batches, halves):
        batch.correct = right
    gathered = torch.cat([torch.stack([b.group_ids.double(), torch.tensor([float(c) for c in b.correct],
                          dtype=torch.float64)], -1) for b in batches])  # fmt: skip
    fake = SimpleNamespace(accelerator=SimpleNamespace(gather=lambda x: gathered))
    assert PureGRPOTrainer._pass_at_k(fake, batches[0]) == pytest.approx(2 / 3)


def test_masking_truncated_completions_is_refused():
    from purerl.integrations.trl import PureGRPOConfig

    with pytest.raises(ValueError, match="mask_truncated_completions is not supported"):
        PureGRPOConfig(output_dir="x", max_completion_length=8, mask_truncated_completions=True, use_cpu=True)
