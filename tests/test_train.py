"""`purerl train` end to end on the tiny config: the real CLI, logs, plots, checkpoints, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def cache(tiny_cache):
    return tiny_cache


def train(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PURERL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "purerl", "train", TINY, "run.threads=1", *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def first_phases(trainer):
    """A trainer's batch after sampling, segmentation, grading and rewards."""
    batch = trainer.next_batch()
    trainer.sample(batch)
    trainer.segment(batch)
    trainer.rewards(batch)
    return batch


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "perf/"))}


def test_smoke_run_writes_everything(cache, tmp_path):
    run = tmp_path / "run"
    out = train(cache, f"run.out_dir={run}", "algo.mode=soft_min")
    assert "held-out greedy accuracy" in out.stdout and "hacking flags raised" in out.stdout
    for name in ("metrics.jsonl", "samples.jsonl", "config.yaml", "summary.json", "plots.png"):
        assert (run / name).exists(), name
    assert (run / "final" / "config.json").exists()
    assert (run / "checkpoints" / "step-000004" / "trainer_state.pt").exists()
    assert any((run / "tensorboard").iterdir())
    steps = [r["step"] for r in rows(run)]
    assert steps == [0, 1, 2, 3, 4]  # the evaluation at the start, then one row a step
    last = rows(run)[-1]
    for key in ("reward/accuracy", "reward/pass_at_k", "prm/min_raw", "prm/sum_transformed", "response/steps",
                "response/length", "response/truncated", "response/zero_steps", "response/repetition",
                "actor/kl", "actor/entropy", "actor/clip_frac", "advantages/mean", "returns/mean",
                "time/rollout", "perf/tokens_per_second", "eval/accuracy"):  # fmt: skip
        assert key in last, key
    assert "mode: soft_min" in (run / "config.yaml").read_text()


def test_resume_continues_like_an_uninterrupted_run(cache, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(cache, f"run.out_dir={straight}")
    train(cache, f"run.out_dir={split}", "run.steps=2")
    train(cache, f"run.out_dir={split}", "--resume")
    a, b = rows(straight), rows(split)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    assert [comparable(r) for r in a] == [comparable(r) for r in b]


def test_lora_trains_only_the_adapter_and_resumes(cache, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    lora = ["policy.lora_rank=4", "policy.lora_alpha=8", "algo.lr=1e-3", "run.steps=2", "run.eval_every=1"]
    train(cache, f"run.out_dir={straight}", *lora)
    train(cache, f"run.out_dir={split}", *lora[:-2], "run.steps=1", "run.eval_every=1")
    train(cache, f"run.out_dir={split}", *lora, "--resume")
    assert [comparable(r) for r in rows(straight)] == [comparable(r) for r in rows(split)]
    assert (straight / "final" / "adapter_model.safetensors").exists()
    assert not (straight / "final" / "model.safetensors").exists()  # the adapter only, not a copy of the base
    assert rows(straight)[-1]["actor/kl"] > 0  # the reference (adapter off) differs from the trained policy


def test_vr_only_and_rule_prm(cache, tmp_path):
    train(cache, f"run.out_dir={tmp_path / 'vr'}", "algo.reward=vr", "run.steps=2")
    assert "prm/min_raw" not in rows(tmp_path / "vr")[-1]
    train(cache, f"run.out_dir={tmp_path / 'rule'}", "prm.kind=rule", "run.steps=2")
    assert rows(tmp_path / "rule")[-1]["prm/step_mean"] is not None


def test_bad_override_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "purerl", "train", "algo.mode=max"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 2
    assert "algo.mode='max'" in out.stderr and "Traceback" not in out.stderr


def test_compare_runs_arms_and_writes_a_table(cache, tmp_path):
    env = {**os.environ, "PURERL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "purerl", "compare", TINY, "run.steps=2", "--seeds", "0", "1",
         "--arms", "sum", "min", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    table = (tmp_path / "comparison.txt").read_text()
    assert table.splitlines()[1].startswith("sum") and table.splitlines()[2].startswith("min")
    assert (tmp_path / "comparison.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "min-seed0",
        "min-seed1",
        "sum-seed0",
        "sum-seed1",
    ]


def test_prepare_reports_the_built_in_models(cache):
    env = {**os.environ, "PURERL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "purerl", "prepare", TINY], capture_output=True, text=True,
                         timeout=600, env=env, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"policy: {cache}" in out.stdout and f"prm:    {cache}" in out.stdout
    assert "purerl_warmstart.json" in out.stdout and "step_accuracy" in out.stdout


def test_dataset_task_gives_verifiable_rewards_only_where_rows_have_an_answer(cache, tmp_path, monkeypatch):
    """PRM+VR on real data: rows with `answer` get VR, rows with only `ref_answer` get process rewards
    alone, and their ref_answer still grades them for the metrics."""
    from purerl.config import load_config
    from purerl.training.trainer import Trainer

    data = tmp_path / "math.jsonl"
    rows = [{"question": "What is 1+1?", "answer": "2", "ref_answer": "null"},
            {"question": "What is 2+2?", "answer": "null", "ref_answer": "4"}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("PURERL_CACHE", str(cache))
    overrides = [f"data.train.path={data}", f"data.heldout.path={data}", "algo.vr_fraction=1.0",
                 f"run.out_dir={tmp_path / 'run'}", "run.threads=1", "rollout.prompts_per_step=8"]  # fmt: skip
    cfg = load_config(TINY, overrides)
    trainer = Trainer(cfg)
    batch = first_phases(trainer)
    step_rewards, vr = batch.step_rewards, batch.verifiable_rewards
    with_answer = [p.reward_answer is not None for p in batch.problems]
    assert any(with_answer) and not all(with_answer)
    assert [not torch.isnan(v).item() for v in vr] == with_answer
    assert step_rewards.shape[0] == len(batch.prompts)
    p2 = next(p for p in batch.problems if p.reward_answer is None)
    assert trainer.task.grade(r"so \boxed{4}", p2) is True and trainer.task.grade("no idea", p2) is None
    assert len(trainer.heldout) == 2 and set(trainer.evaluate()) >= {"eval/accuracy", "eval/sampled_accuracy"}


def test_steps_to_reach_vr_only_counts_from_the_seed_mean_curves():
    from purerl.commands.compare import comparison_table, first_step_reaching

    def run(curve):  # held-out sampled and greedy accuracy every 10 steps, plus what the summary reads
        return [{"step": s, "eval/sampled_accuracy": a, "eval/accuracy": a, "steps_per_response": 4.0,
                 "response_length/mean": 30.0, "truncated_frac": 0.0} for s, a in curve]  # fmt: skip

    vr = [run([(0, 0.3), (10, 0.4), (20, 0.5), (30, 0.6)]), run([(0, 0.3), (10, 0.4), (20, 0.6), (30, 0.6)])]
    both = [run([(0, 0.3), (10, 0.62), (20, 0.7), (30, 0.7)]), run([(0, 0.3), (10, 0.5), (20, 0.7), (30, 0.7)])]
    # VR-only ends at 0.6 (mean); its seed mean reaches 0.6 only at step 30 (0.55 at 20); min+vr's mean
    # (0.56) is short at step 10 and reaches it at step 20.
    assert first_step_reaching(vr, 0.6) == 30 and first_step_reaching(both, 0.6) == 20
    assert first_step_reaching(both, 0.8) is None
    table = comparison_table({"vr": vr, "min+vr": both})
    assert "first reached at step 30 by VR-only, at step 20 by min+vr (67% of VR-only's steps)" in table
    assert "held-out greedy accuracy 0.600" in table
    short = [run([(0, 0.3), (10, 0.55), (20, 0.5), (30, 0.4)]), run([(0, 0.3), (10, 0.55), (20, 0.6), (30, 0.5)])]
    table = comparison_table({"vr": vr, "min+vr": short})
    assert "not within the run by min+vr (its best seed mean: 0.550 at step 10)" in table  # 0.55 at 10 and 20


def test_the_trainer_step_is_the_pipeline(cache, tmp_path, monkeypatch):
    """A trainer step's record equals the process-reward pipeline called directly on the same samples:
    what a TRL or verl integration calls gives the same credit as `purerl train`."""
    from purerl.config import load_config
    from purerl.pipeline import rewards as pipeline
    from purerl.pipeline.rewards import CreditSettings
    from purerl.training.trainer import Trainer

    monkeypatch.setenv("PURERL_CACHE", str(cache))
    overrides = [f"run.out_dir={tmp_path}", "run.threads=1", "algo.kl_in_reward=true", "algo.vr_fraction=0.5"]
    cfg = load_config(TINY, overrides)
    trainer = Trainer(cfg)
    batch = first_phases(trainer)
    trainer.logprobs(batch)
    pipeline.assign_credit(batch, trainer.settings)

    direct = pipeline.process_rewards(
        batch.prompts, batch.rollout.response_id_lists(), trainer.tokenizer, group_ids=batch.group_ids,
        response_mask=batch.rollout.response_mask, truncated=batch.rollout.truncated,
        separator=trainer.task.separator, prm=trainer.prm,
        grader=lambda i, text: trainer.task.grade(text, batch.problems[i]),
        has_truth=[pipeline.has_ground_truth(p, 0.5) for p in batch.prompts],
    )  # fmt: skip
    direct.logprobs, direct.ref_logprobs, direct.entropy = batch.logprobs, batch.ref_logprobs, batch.entropy
    pipeline.assign_credit(direct, CreditSettings.from_algo(cfg.algo, cfg.rollout.max_new_tokens))

    assert direct.texts == batch.texts and direct.correct == batch.correct
    assert direct.steps.steps == batch.steps.steps and direct.step_scores == batch.step_scores
    for name in ("step_rewards", "scored_mask", "advantages", "returns", "kl"):
        assert torch.equal(getattr(direct, name), getattr(batch, name)), name
    assert torch.equal(direct.steps.step_ends, batch.steps.step_ends)
    assert torch.allclose(direct.verifiable_rewards, batch.verifiable_rewards, equal_nan=True)
    assert batch.kl is not None and batch.verifiable_rewards.isnan().any()
    metrics = [pipeline.batch_metrics(b, trainer.settings) for b in (direct, batch)]
    assert json.dumps(metrics[0], sort_keys=True) == json.dumps(metrics[1], sort_keys=True)  # NaN where NaN


def test_compare_arms_take_overrides_and_yaml(tmp_path):
    from purerl.commands.compare import parse_arms

    arms = parse_arms(["min", "soft_min:T=0.01", "min+vr:algo.vr_fraction=0.5,algo.whiten=true"])
    assert arms["soft_min:T=0.01"] == ["algo.reward=prm", "algo.mode=soft_min", "algo.temperature=0.01"]
    assert arms["min+vr:algo.vr_fraction=0.5,algo.whiten=true"][-2:] == ["algo.vr_fraction=0.5", "algo.whiten=true"]
    assert list(parse_arms(None)) == ["sum", "min", "vr", "min+vr"]
    (tmp_path / "arms.yaml").write_text("cold: [algo.mode=soft_min, algo.temperature=1.0]\nhard: [algo.mode=min]\n")
    assert parse_arms([str(tmp_path / "arms.yaml")]) == {
        "cold": ["algo.mode=soft_min", "algo.temperature=1.0"], "hard": ["algo.mode=min"]}  # fmt: skip
    with pytest.raises(ValueError, match="unknown arm 'max'"):
        parse_arms(["max:T=1"])
    with pytest.raises(ValueError, match="is not key=value"):
        parse_arms(["min:T"])
    out = subprocess.run([sys.executable, "-m", "purerl", "compare", "--arms", "soft_min:T=0", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 2 and "arm soft_min:T=0: algo.temperature must be > 0" in out.stderr


def test_an_on_policy_update_skips_the_old_log_prob_pass_with_the_same_results(cache, tmp_path, monkeypatch):
    """One epoch of one minibatch without a reference: the update's own forward gives the old log-probs
    (detached) and the entropy, so the separate no-grad pass is skipped. The run matches one that makes
    that pass (ratio 1 either way, up to float rounding between the two forwards)."""
    from purerl.config import load_config
    from purerl.training import trainer as trainer_module
    from purerl.training.trainer import Trainer

    monkeypatch.setenv("PURERL_CACHE", str(cache))
    calls = []
    original = trainer_module.sequence_logprobs

    def counted(model, rollout, with_entropy=False):
        calls.append(torch.is_grad_enabled())
        return original(model, rollout, with_entropy=with_entropy)

    monkeypatch.setattr(trainer_module, "sequence_logprobs", counted)

    class TwoPasses(Trainer):
        on_policy = False

    results = {}
    for name, cls in (("one pass", Trainer), ("two passes", TwoPasses)):
        calls.clear()
        overrides = [f"run.out_dir={tmp_path / name.replace(' ', '_')}", "run.threads=1", "algo.minibatches=1",
                     "algo.kl_coef=0", "run.steps=2", "run.eval_every=100"]  # fmt: skip
        trainer = cls(load_config(TINY, overrides))
        history = trainer.train()
        results[name] = (history, calls[:], [p.detach().clone() for p in trainer.policy.parameters()])
    history, calls_one, weights = results["one pass"]
    history_two, calls_two, weights_two = results["two passes"]
    assert calls_one == [True, True]  # one forward a step, the update's
    assert calls_two == [False, True, False, True]
    steps = [r for r in history if "actor/loss" in r]
    steps_two = [r for r in history_two if "actor/loss" in r]
    assert len(steps) == 2
    for a, b in zip(steps, steps_two):
        for key in ("actor/loss", "actor/entropy", "actor/grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        assert a["actor/ratio_mean"] == 1.0 and b["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    for w, w_two in zip(weights, weights_two):
        torch.testing.assert_close(w, w_two, rtol=1e-4, atol=1e-6)
