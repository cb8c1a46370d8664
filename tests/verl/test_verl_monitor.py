"""The hacking detectors in verl (runs in the environment of the `verl` extra; skipped without verl): the
reward manager records what they read, the ``pure_sync`` trainer logs purerl's monitoring set and flags
into verl's metrics and ``metrics.jsonl``, ``purerl monitor`` replays that stream, and a guard's stop ends
verl's loop after the step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

verl = pytest.importorskip("verl", reason="needs the verl extra, in an environment of its own (see .ci/run)")

sys.path.insert(0, str(Path(__file__).parent))  # tests/verl/verl_support.py (pytest runs with --import-mode=importlib)
from verl_support import PLUGIN, ROOT, FakeTransferQueue, KVBatch, compose, layout_info, pure  # noqa: E402

from purerl.integrations.verl.monitoring import heldout_row, info_metrics  # noqa: E402


def _info(scores, acc, vr=None, length=10, truncated=False, repetition=0.0) -> dict:
    info = layout_info(scores, list(range(len(scores))), vr)
    info.update({"acc": acc, "pure_length": length, "pure_truncated": truncated, "pure_repetition": repetition})
    return info


def test_the_monitoring_set_from_the_reward_managers_records():
    """2 prompts x 2: accuracy 2/4 (3/4 graded right or wrong, one without an answer), the PRM's value the
    min step score, its ranking of right above wrong answers, on the rewarded prompt and off it."""
    infos = [_info([0.9, 0.8], 1.0, vr=1.0, length=8), _info([0.7, -0.5], 0.0, vr=0.0, length=12),
             _info([0.6], None, length=4, truncated=True), _info([], 1.0, length=2, repetition=0.5)]  # fmt: skip
    m = info_metrics(infos, ["a", "a", "b", "b"], with_prm=True)
    assert m["reward/accuracy"] == 0.5 and m["reward/pass_at_k"] == 1.0 and m["reward/no_answer"] == 0.25
    assert m["reward/accuracy_vr"] == 0.5 and m["reward/accuracy_novr"] == 0.5
    assert m["response/steps"] == 1.25 and m["response/zero_steps"] == 0.25 and m["response/one_step"] == 0.25
    assert m["response/length"] == 6.5 and m["response/truncated"] == 0.25 and m["response/repetition"] == 0.125
    assert m["prm/min_raw"] == pytest.approx((0.8 - 0.5 + 0.6) / 3)  # the zero-step answer has no value
    assert m["prm/grade_auroc"] == 1.0  # the right answer (0.8) above both others (-0.5, 0.6)
    assert "prm/min_raw" not in info_metrics(infos, None, with_prm=False)


def test_heldout_accuracy_from_verls_validation_metrics():
    val = {"val-core/lighteval/MATH/acc/mean@1": 0.5, "val-core/gsm8k/acc/mean@1": 0.7, "val-aux/x/reward/mean@1": 9}
    assert heldout_row(val, 64) == {"eval/accuracy": pytest.approx(0.6), "eval/size": 64.0}
    assert heldout_row({"val-core/x/acc/mean@4": 0.5}, 64) == {}


def test_the_reward_manager_records_length_truncation_and_repetition(bpe_tokenizer, prm_folder):
    from purerl.config import PRMConfig
    from purerl.integrations.verl.reward import step_info
    from purerl.prm.loading import load_prm

    ids = bpe_tokenizer("2+1=3.\n\n2+1=3.\n\nSo 3.", add_special_tokens=False)["input_ids"]
    prm = load_prm(PRMConfig(path=str(prm_folder)))
    cut = step_info(bpe_tokenizer, prm, "q", ids, "\n\n")
    done = step_info(bpe_tokenizer, prm, "q", [*ids, bpe_tokenizer.eos_token_id], "\n\n")
    assert (cut["pure_length"], cut["pure_truncated"], done["pure_length"], done["pure_truncated"]) == (
        len(ids), True, len(ids) + 1, False)  # fmt: skip
    assert cut["pure_repetition"] == pytest.approx(1 / 3)  # the second step repeats the first


def _steps(trainer, monkeypatch, batches):
    from verl.trainer.ppo.v1 import trainer_base

    logged = []
    for step, infos in enumerate(batches, 1):
        rows = {"uid": [f"p{i // 2}" for i in range(len(infos))], "response_mask": [torch.ones(4) for _ in infos],
                "rm_scores": [torch.zeros(4) for _ in infos],
                "extra_fields": [{"reward_extra_info": info} for info in infos]}  # fmt: skip
        monkeypatch.setattr(trainer_base, "tq", FakeTransferQueue(rows))
        trainer.global_steps = step
        metrics = {}
        trainer._compute_advantage(KVBatch(len(infos)), metrics)
        logged.append(metrics)
    return logged


def test_pure_sync_logs_flags_writes_a_stream_and_a_guard_stops_verls_loop(tmp_path, monkeypatch):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from purerl.integrations.verl.trainer import PureTrainerSync

    config = compose(*PLUGIN, "data.max_response_length=8", "actor_rollout_ref.rollout.n=2",
                     f"trainer.default_local_dir={tmp_path}",
                     *pure("run.monitor.calibration=2", "run.guards.zero_steps=stop"))  # fmt: skip
    trainer = PureTrainerSync(config)
    healthy = [_info([0.5, 0.4], 1.0), _info([0.3, -0.6], 0.0), _info([0.6, 0.2, 0.1], 1.0), _info([0.2], 0.0)]
    empty = [_info([], None), _info([], None), _info([], None), _info([0.5], 1.0)]  # 3 of 4 without a step
    logged = _steps(trainer, monkeypatch, [healthy, healthy, healthy, empty])
    assert logged[0]["pure/reward/accuracy"] == 0.5 and "pure/prm/grade_auroc" in logged[0]
    assert [("pure/hack/zero_steps" in m) for m in logged] == [False, False, False, True]
    assert trainer.pure_watch.stop_reason == "hacking flag(s) zero_steps at step 4 (run.guards: stop)"
    monkeypatch.setattr(PPOTrainerSync, "on_step_end", lambda self: None)  # verl's weight sync needs its workers
    trainer.total_training_steps = 10
    trainer.on_step_end()
    assert trainer.total_training_steps == 4  # verl's loop condition ends the run after this step
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[3]["hack/zero_steps"] == 1.0
    out = subprocess.run([sys.executable, "-m", "purerl", "monitor", str(tmp_path), "--json",
                          "run.monitor.calibration=2", "run.guards.zero_steps=stop"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"flags": {"zero_steps": {"first_step": 4, "action": "stop"}}, "stop_step": 4}
