"""PURE inside TRL's GRPOTrainer (the `trl` extra), configured by the purerl YAML `purerl train` reads.

The advantages TRL trains on are checked against purerl.algo.credit.pure_advantages fed by a reference
computed here without the pipeline (steps from prefix decoding, the task's exact step checker, the
sha256 VR share, k3 from the recorded log-probs, whitening); the same config gives the same advantages
through `purerl train`'s pipeline and the TRL route on fixed completions; the command runs end to end;
every bad setting answers with one line; two processes over gloo equal one.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl", reason="needs the trl extra: pip install 'purerl[trl]'")

from purerl.algo.credit import pure_advantages
from purerl.tasks import arithmetic

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("trl_worker.py")
BUILTIN = ROOT / "configs" / "trl" / "builtin.yaml"
PAPER = ROOT / "configs" / "trl" / "paper.yaml"
PROG = "purerl.integrations.trl"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}


@pytest.fixture(scope="module")
def worker(load_script):
    """tests/trl_worker.py: the configuration and recording trainer the tests here share."""
    return load_script(WORKER)


@pytest.fixture(autouse=True)
def _quiet_trl(monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")


# ------------------------------------------------------------------------- an independent reference


def reference_steps(tokenizer, ids: list[int], separator: str = "\n\n") -> tuple[str, list[str], list[int]]:
    """``(text, steps, step_ends)`` of one completion, without purerl.pipeline: the text the tokenizer
    decodes, its pieces between separators that hold more than whitespace, each ending at the first token
    whose decoded prefix covers the piece's last non-space character (steps ending on one token merge),
    the last one at the last token."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    covered = [len(tokenizer.decode(ids[: j + 1], skip_special_tokens=True)) for j in range(len(ids))]
    spans, start = [], 0
    for piece in text.split(separator):
        if piece.strip():
            spans.append((start, start + len(piece)))
        start += len(piece) + len(separator)
    merged, ends = [], []
    for begin, end in spans:
        last = begin + len(text[begin:end].rstrip()) - 1
        token = next(j for j, reach in enumerate(covered) if reach > last)
        if ends and token <= ends[-1]:
            merged[-1] = (merged[-1][0], end)
            continue
        merged.append((begin, end))
        ends.append(token)
    if ends:
        ends[-1] = len(ids) - 1
    return text, [text[b:e] for b, e in merged], ends


def reference_vr_share(prompt: str, fraction: float) -> bool:
    """The VR rule as has_ground_truth documents it: sha256 of "vr:" + prompt, first 4 bytes big-endian."""
    digest = hashlib.sha256(("vr:" + prompt).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < fraction * 10_000


def reference_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return (log_ratio.exp() - log_ratio - 1.0).clamp(-10.0, 10.0)


def reference_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    kept = values[mask.bool()]
    out = (values - kept.mean()) / torch.sqrt(kept.var(unbiased=True) + 1e-8)
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def reference_advantages(record: dict, tokenizer, *, k: int, fraction: float, kl_coef: float, max_len: int):
    """PURE's advantages of one recorded round, from purerl.algo.credit fed by the reference above."""
    ids, problems = record["completion_ids"], record["problems"]
    width = max(len(r) for r in ids)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in ids])
    rows = [reference_steps(tokenizer, r) for r in ids]
    depth = max(1, *(len(steps) for _, steps, _ in rows))
    step_rewards, step_mask, step_ends = torch.zeros(len(ids), depth), torch.zeros(len(ids), depth, dtype=torch.bool), \
        torch.zeros(len(ids), depth, dtype=torch.long)  # fmt: skip
    for i, ((_, steps, ends), problem) in enumerate(zip(rows, problems)):
        labels = arithmetic.rule_checker(problem, steps)  # the task's exact checker: +1 right, -1 wrong
        step_rewards[i, : len(steps)] = torch.tensor([1.0 if ok else -1.0 for ok in labels])
        step_mask[i, : len(steps)], step_ends[i, : len(steps)] = True, torch.tensor(ends, dtype=torch.long)
    right = [
        arithmetic.extract_answer(text) == arithmetic.parse_prompt(p).answer for (text, _, _), p in zip(rows, problems)
    ]
    vr = torch.tensor([float(ok) if reference_vr_share(p, fraction) else math.nan for ok, p in zip(right, problems)])
    penalty = -kl_coef * reference_k3(record["logprobs"], record["ref_logprobs"])
    group_ids = torch.arange(len(ids)) // k
    args = (step_rewards, step_mask, step_ends, mask, group_ids, vr)
    with_kl, _ = pure_advantages(*args, mode="soft_min", temperature=0.1, max_len=max_len, token_penalty=penalty)
    without_kl, _ = pure_advantages(*args, mode="soft_min", temperature=0.1, max_len=max_len)
    return reference_whiten(with_kl, mask), reference_whiten(without_kl, mask), vr


def test_the_advantages_trl_trains_on_are_pure_advantages(tmp_path, worker):
    """Two TRL steps in this process with the exact step checker as PRM (prm.kind=rule) and KL in the
    reward; the second round (the policy has moved away from the reference, so the KL penalty is real) is
    recomputed from scratch and equals what TRL trained on. TRL's own loss has no KL term (beta 0)."""
    extra = ["prm.kind=rule", "algo.kl_coef=0.1", "algo.lr=1e-2", "run.steps=2"]
    trainer = worker.recording_trainer(str(tmp_path), extra)
    trainer.train()
    assert len(trainer.records) == 2
    record = trainer.records[1]
    expected, without_kl, vr = reference_advantages(record, trainer.processing_class, k=4, fraction=0.5,
                                                    kl_coef=0.1, max_len=32)  # fmt: skip
    assert vr.isnan().any() and not vr.isnan().all()  # prompts with and without verifiable rewards
    assert (expected - without_kl).abs().max() > 1e-3  # the KL penalty changes the advantages
    torch.testing.assert_close(record["advantages"], expected, atol=1e-5, rtol=1e-5)
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert "kl" not in logged and "pure/actor/kl" in logged  # KL in the reward, none in TRL's loss
    for key in ("pure/prm/min_raw", "pure/response/steps", "pure/response/zero_steps", "pure/hack/length_to_cap",
                "pure/advantages/mean", "pure/reward/pass_at_k"):  # fmt: skip
        assert key in logged, key


def test_one_config_same_advantages_as_purerl_train(tmp_path, load_script):
    """configs/engines/builtin.yaml, the fixed completions of tests/engine_fixture.py (2 prompts x 4, the
    built-in PRM, VR on half of the prompts, the paper's default credit with fixed old / reference log-
    probs): purerl train's pipeline and the TRL route give the same advantages."""
    fx = load_script(Path(__file__).with_name("engine_fixture.py"))
    from purerl.config import load_config
    from purerl.integrations.trl import build_trainer, fixed_completions_credit, grpo_config, load_route_config

    overrides = [f"run.out_dir={tmp_path / 'run'}", "run.tensorboard=false"]
    cfg = load_config(fx.CONFIG, overrides)  # purerl train's reading of the file
    route_cfg, trl = load_route_config(fx.CONFIG, overrides)  # the TRL route's reading of the same file
    assert route_cfg == cfg and trl == {}
    trainer = build_trainer(route_cfg, grpo_config(route_cfg, trl))
    tokenizer = trainer.processing_class
    ids = fx.completion_ids(tokenizer)
    old, ref = fx.logprobs(ids)
    batch = fx.purerl_train_credit(cfg, tokenizer, ids)
    route = fixed_completions_credit(trainer, fx.PROBLEMS, ids, old, ref)
    assert 0 < int(torch.isnan(batch.verifiable_rewards).sum()) < len(ids)  # both kinds of prompt
    assert batch.kl.abs().max() > 0.01 and route.correct == batch.correct
    torch.testing.assert_close(route.advantages, batch.advantages, atol=1e-6, rtol=0)
    torch.testing.assert_close(route.returns, batch.returns, atol=1e-6, rtol=0)


def _logged_rounds(stdout: str) -> list[dict]:
    """TRL's printed log entries that carry PURE's metrics."""
    entries = [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("{") and "pure/" in line]
    return [{k: None if v is None else float(v) for k, v in e.items()} for e in entries]


def test_the_command_trains_the_built_in_task(tmp_path, worker):
    """`python -m purerl.integrations.trl configs/trl/builtin.yaml` for 2 steps: the start-up line says
    the paper's credit, both rounds log finite PURE metrics, the weights move, the learning rate follows
    purerl's warm-up, and the run folder holds the purerl config it ran."""
    from safetensors.torch import load_file

    from purerl.config import load_config
    from purerl.integrations.trl import load_route_config

    out = tmp_path / "run"
    overrides = [f"run.out_dir={out}", "run.steps=2", "rollout.prompts_per_step=4", "rollout.k=4",
                 "rollout.max_new_tokens=40", "run.tensorboard=false"]  # fmt: skip
    run = subprocess.run([sys.executable, "-m", PROG, str(BUILTIN), *overrides], capture_output=True, text=True,
                         timeout=600, env=ENV, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stderr.startswith(f"{PROG}: PURE in TRL: soft_min T=0.1 credit, PRM + VR on 10% of the prompts, "
                                 f"whitening on, KL 0.001 k3 in the reward")  # fmt: skip
    rounds = _logged_rounds(run.stdout)
    assert len(rounds) == 2
    for entry in rounds:
        for key in ("pure/advantages/mean", "pure/prm/min_raw", "pure/actor/kl", "pure/response/steps", "loss"):
            assert math.isfinite(entry[key]), (key, entry[key])
        assert abs(entry["pure/advantages/mean"]) < 1e-5  # whitened
    after, before = load_file(out / "final" / "model.safetensors"), worker.initial_weights()
    assert max((after[k] - before[k]).abs().max().item() for k in after) > 1e-6
    assert load_config(out / "config.yaml") == load_route_config(BUILTIN, overrides)[0]


def test_a_guard_stops_trl_and_purerl_monitor_replays_its_stream(tmp_path):
    """Answers cut at 6 tokens: every one hits the length cap, so length_to_cap fires as soon as the detectors
    have calibrated (2 steps here); with its guard at stop the callback ends TRL's training after that step,
    exit 3 with one line and no final/; output_dir/metrics.jsonl is purerl train's format and `purerl monitor`
    finds the same flag at the same step."""
    out = tmp_path / "run"
    overrides = [f"run.out_dir={out}", "run.steps=5", "rollout.prompts_per_step=4", "rollout.k=4",
                 "rollout.max_new_tokens=6", "run.tensorboard=false", "run.monitor.calibration=2",
                 "run.guards.length_to_cap=stop"]  # fmt: skip
    run = subprocess.run([sys.executable, "-m", PROG, str(BUILTIN), *overrides], capture_output=True, text=True,
                         timeout=600, env=ENV, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{PROG}: hacking flag(s) length_to_cap at step 2 (run.guards: stop); last clean checkpoint: none" in (
        run.stderr.splitlines()
    )
    assert not (out / "final").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["hack/length_to_cap"] == 1.0
    assert rows[0]["response/truncated"] == 1.0 and "prm/grade_auroc" in rows[0]
    cmd = [sys.executable, "-m", "purerl", "monitor", str(out), "--json", "run.monitor.calibration=2",
           "run.guards.length_to_cap=stop"]  # fmt: skip
    replay = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    report = json.loads(replay.stdout)
    assert report["flags"]["length_to_cap"] == {"first_step": 2, "action": "stop"} and report["stop_step"] == 2


def test_the_learning_rate_follows_purerls_warm_up(tmp_path, worker):
    """TRL counts optimizer steps, purerl steps; with 2 minibatches a step the factor is purerl's
    (step + 1) / 5 for both of a step's optimizer steps."""
    from purerl.training.run_state import warmup

    trainer = worker.recording_trainer(str(tmp_path), ["algo.minibatches=2", "run.steps=3"])
    trainer.create_optimizer_and_scheduler(num_training_steps=6)
    factors = []
    for _ in range(6):
        factors.append(trainer.lr_scheduler.get_last_lr()[0] / 1e-3)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert factors == pytest.approx([warmup(s // 2) for s in range(6)]) == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6]


def test_the_routes_defaults_are_the_papers():
    """No config at all: soft-min T = 0.1, whitening, KL 1e-3 k3 in the reward (TRL's loss beta 0 at run
    time), PRM + VR on 10% of the prompts, the built-in PRM: AlgoConfig's defaults, read by this route."""
    from purerl.integrations.trl import load_route_config
    from purerl.integrations.trl.config import grpo_kwargs
    from purerl.pipeline.advantages import CreditSettings

    cfg, trl = load_route_config()
    s = CreditSettings.from_algo(cfg.algo, cfg.rollout.max_new_tokens)
    assert (s.mode, s.temperature, s.whiten, s.kl_in_reward, s.kl_coef, s.kl_estimator, s.process_rewards) == (
        "soft_min", 0.1, True, True, 1e-3, "k3", True)  # fmt: skip
    assert (cfg.algo.reward, cfg.algo.vr_fraction, cfg.prm.kind, cfg.prm.path) == (
        "prm+vr",
        0.1,
        "token_classification",
        None,
    )
    kwargs = grpo_kwargs(cfg, trl, processes=1)
    assert (kwargs["beta"], kwargs["num_generations"], kwargs["max_completion_length"], kwargs["loss_type"]) == (
        1e-3,
        8,
        80,
        "dapo",
    )
    assert kwargs["generation_batch_size"] == 128 and kwargs["max_steps"] == 240  # 120 steps x 2 minibatches


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    return lines[0]


def test_each_bad_prm_or_credit_setting_answers_with_one_line(bad_prm_or_credit, capsys):
    """conftest.BAD_PRM_AND_CREDIT: each bad override answers with exit 2 and one line naming the key (the
    line purerl train gives), before any model loads."""
    from purerl.integrations.trl.__main__ import main

    overrides, message = bad_prm_or_credit
    assert main(overrides) == 2
    assert re.search(message, _one_error_line(capsys))


def test_a_bad_setting_in_a_fresh_process_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", PROG, str(BUILTIN), "prm.kind=nope"], capture_output=True,
                         text=True, timeout=300, env=ENV, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    kinds = "['math_shepherd', 'qwen_prm', 'rule', 'token_classification']"
    assert run.stderr.strip().splitlines() == [f"{PROG}: error: prm.kind='nope': choose one of {kinds}"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trl.beta=0.1", "trl.beta: purerl owns this setting; set algo.kl_coef instead"),
        ("trl.num_generations=4", "trl.num_generations: purerl owns this setting; set rollout.k instead"),
        ("trl.learning_rate=1e-5", "trl.learning_rate: purerl owns this setting; set algo.lr instead"),
        ("trl.epsilon=0.3", "trl.epsilon: purerl owns this setting; set algo.clip_ratio instead"),
        ("trl.max_completion_length=64", "trl.max_completion_length: purerl owns this setting; set rollout.max_new"),
        ("trl.gradient_accumulation_steps=4", "set algo.minibatches"),
        ("trl.warmup_steps=10", "set algo.lr .purerl's schedule"),
        ("trl.report_to=wandb", "trl.report_to: wandb is purerl's setting; set run.wandb"),
        ("trl.generation_kwargs={temperature: 0.7}", "trl.generation_kwargs.temperature: .* set rollout.temperature"),
        ("trl.mask_truncated_completions=true", "trl.mask_truncated_completions: not with PURE"),
        ("trl.nope=1", "trl.nope: not a key of TRL's GRPOConfig"),
        ("trl.bf16=maybe", "trl.bf16: expected bool or null, got 'maybe'"),
        ("trl.per_device_train_batch_size=5", "do not split into algo.minibatches=2 minibatches"),
    ],
)
def test_a_trl_key_purerl_owns_or_that_does_not_fit_is_refused(override, message, capsys):
    """One owner per setting: a `trl:` key for a setting purerl owns names the purerl key to set."""
    from purerl.integrations.trl.__main__ import main

    assert main([str(BUILTIN), override]) == 2
    assert re.search(message, _one_error_line(capsys))


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "trl").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_trl_config_maps_onto_grpo_config(path):
    """Each configs/trl/*.yaml loads as a purerl config plus its trl section and builds TRL's GRPOConfig
    (bf16 and vLLM switched off only because this machine has no GPU)."""
    from purerl.integrations.trl import grpo_config, load_route_config

    cfg, trl = load_route_config(path, ["trl.bf16=false", "trl.use_vllm=false", "policy.device=cpu"])
    args = grpo_config(cfg, trl)
    assert args.num_generations == cfg.rollout.k and args.max_completion_length == cfg.rollout.max_new_tokens


def test_the_paper_config_holds_the_paper_settings():
    """configs/trl/paper.yaml on 8 GPUs: 64 prompts x 8 = 512 completions in one optimizer step (8 per GPU x
    8 GPUs x 8 accumulation), lr 1e-6, KL 1e-3 k3 in the reward, soft-min T = 0.1, whitening, VR on 10%,
    7168 tokens within vLLM's 8192, PURE-PRM-7B, the paper's data, vLLM colocated, bf16."""
    from purerl.integrations.trl import load_route_config, startup_lines
    from purerl.integrations.trl.config import grpo_kwargs
    from purerl.pipeline.advantages import CreditSettings

    cfg, trl = load_route_config(PAPER)
    kw = grpo_kwargs(cfg, trl, processes=8)
    assert (
        kw["per_device_train_batch_size"] * 8 * kw["gradient_accumulation_steps"] == kw["generation_batch_size"] == 512
    )
    assert (kw["num_generations"], kw["learning_rate"], kw["beta"], kw["max_completion_length"]) == (
        8,
        1e-6,
        1e-3,
        7168,
    )
    assert (kw["use_vllm"], kw["vllm_mode"], kw["vllm_max_model_length"], kw["bf16"], kw["use_cpu"]) == (
        True, "colocate", 8192, True, False)  # fmt: skip
    s = CreditSettings.from_algo(cfg.algo, cfg.rollout.max_new_tokens)
    assert (s.mode, s.temperature, s.whiten, s.kl_in_reward, s.kl_estimator, cfg.algo.vr_fraction) == (
        "soft_min", 0.1, True, True, "k3", 0.1)  # fmt: skip
    assert (cfg.policy.path, cfg.policy.dtype) == ("Qwen/Qwen2.5-Math-7B", "bfloat16")
    assert (cfg.prm.kind, cfg.prm.path, cfg.prm.dtype) == ("token_classification", "jinachris/PURE-PRM-7B", "bfloat16")
    assert cfg.data.train.path.endswith("math8k_pure.json")
    args = type("Args", (), {"world_size": 8, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 8,
                             "use_vllm": True})  # fmt: skip
    assert "8 process(es) x 8 x 8 accumulation" in startup_lines(cfg, args)[0]


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, worker, free_port):
    """accelerate launch, 2 CPU processes over gloo, 12 completions (3 prompts x K = 4, so one prompt's
    completions sit on both processes), the paper's default credit (whitening and KL in the reward): the
    advantages equal those of one process that trains on the same completions, to float32 rounding (one
    process whitens in float32, two from three all-reduced float64 sums). The weights after the step agree
    to within 5% of the step (AdamW's first step moves a weight by lr * g / (|g| + eps): DDP averages two
    half-batch gradients where one process sums one batch, so near-eps gradients move visibly)."""
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
    assert parts[0]["ref_logprobs"] is not None and parts[1]["logprobs"] is not None  # KL in the reward
    start, masks = 0, []
    for part in parts:
        adv = part["advantages"]
        rows = whole["advantages"][start : start + adv.shape[0]]
        torch.testing.assert_close(adv, rows[:, : adv.shape[1]], atol=1e-5, rtol=1e-5)
        assert (rows[:, adv.shape[1] :] == 0).all()
        masks.append(torch.tensor([[1.0] * len(r) + [0.0] * (adv.shape[1] - len(r)) for r in part["completion_ids"]]))
        start += adv.shape[0]
    kept = torch.cat([p["advantages"][m.bool()] for p, m in zip(parts, masks)])
    assert abs(kept.mean().item()) < 1e-5 and abs(kept.std().item() - 1.0) < 1e-4  # whitened over both processes
    before = worker.initial_weights()
    two, one = torch.load(tmp_path / "record-weights.pt"), torch.load(tmp_path / "replay-weights.pt")
    step = max((two[k] - before[k]).abs().max().item() for k in two)
    gap = max((two[k] - one[k]).abs().max().item() for k in two)
    assert step > 1e-4 and gap < 0.05 * step, (step, gap)


def test_a_dataset_through_purerl_data(tmp_path, worker):
    """`data.train.path` reads problems with purerl.io.data; rows without an answer get no verifiable
    reward; the bare problem text (not the policy prompt) goes to the PRM."""
    data = tmp_path / "math.jsonl"
    rows = [{"problem": f"Q: (1+{i}) mod 10\nA:\n", "answer": str((1 + i) % 10) if i % 2 else None} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = [f"data.train.path={data}", "algo.vr_fraction=1.0", "rollout.template=plain"]
    trainer = worker.recording_trainer(str(tmp_path / "run"), extra)
    trainer.train()
    (record,) = trainer.records
    answered = {r["problem"]: r["answer"] is not None for r in rows}
    assert record["prompts"][0].startswith("Question: Q: (1+")  # the policy's template
    assert all(p in answered for p in record["problems"])  # the PRM's text: the bare problem
    no_reward = [math.isnan(v) for v in trainer._pure_rewards[:, 0].tolist()]
    assert no_reward == [not answered[p] for p in record["problems"]]  # the reward function skips them
    logged = trainer.state.log_history[0]
    assert "pure/prm/min_raw" in logged and "rewards/purerl_accuracy/mean" in logged


def test_pass_at_k_counts_whole_groups_across_processes():
    """A prompt whose completions sit on two processes counts once, solved if any of them is right; the
    fake all-gather puts this process's rows (its input) before the other process's."""
    from purerl.integrations.trl.metrics import pass_at_k
    from purerl.pipeline.rewards import RewardBatch

    # group 1 straddles the processes and is solved only on the second; group 0 only here, unsolved
    mine = RewardBatch(["p"] * 3, torch.tensor([0, 0, 1]), torch.ones(3, 2))
    mine.correct = [False, None, False]
    other = torch.tensor([[1.0, 1.0], [2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    seen = []

    def gather(rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.clone())
        return torch.cat([rows, other])

    assert pass_at_k(mine, gather) == pytest.approx(1 / 3)
    assert seen[0].tolist() == [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]
    mine.correct = [True, False, False]  # now group 0 is solved here: 2 of 3
    assert pass_at_k(mine, gather) == pytest.approx(2 / 3)
