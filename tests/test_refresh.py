"""The online PRM refresh (docs/refresh.md): the objective and its gradients on a hand-made batch, every
trainable PRM kind (and LoRA) learning from grades, its settings refused in one line, its state through
resume and roll-back, and a dataset run with a non-built-in PRM."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from purerl.algo.prm_refresh import refresh_loss


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_objective_and_its_gradients_by_hand():
    """Three answers: a wrong one (lowest step -1.0), a right one of two steps, a wrong one of one step, and a
    row without steps. Loss = [softplus(-1) + softplus(0.5)] / 2 + 2 * [softplus(-1) + softplus(-3)] / 2.
    Gradients: a wrong answer's lowest step sigmoid(z) / 2 (two wrong answers), nothing on its other steps;
    each step of the right answer 2 * -sigmoid(-z) / 2 (its two steps, one right answer)."""
    z = torch.tensor([[2.0, -1.0, 0.5], [1.0, 3.0, 9.0], [0.5, 7.0, 7.0], [4.0, 4.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    correct = torch.tensor([False, True, False, True])
    loss, metrics = refresh_loss(z, mask, correct, positive_weight=2.0)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (sp(-1.0) + sp(0.5)) / 2 + 2 * (sp(-1.0) + sp(-3.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = torch.zeros(4, 3)
    grad[0, 1] = _sigmoid(-1.0) / 2
    grad[2, 0] = _sigmoid(0.5) / 2
    grad[1, 0], grad[1, 1] = -2 * _sigmoid(-1.0) / 2, -2 * _sigmoid(-3.0) / 2
    assert_close(z.grad, grad, atol=1e-6, rtol=0)
    assert metrics["wrong_min_p"].item() == pytest.approx((_sigmoid(-1.0) + _sigmoid(0.5)) / 2)
    assert metrics["right_p"].item() == pytest.approx((_sigmoid(1.0) + _sigmoid(3.0)) / 2)
    # no wrong answer: that term is 0, and the right answers' is the mean over the three with steps
    only_right, _ = refresh_loss(z, mask, torch.ones(4, dtype=torch.bool))
    rows = [(sp(-2.0) + sp(1.0) + sp(-0.5)) / 3, (sp(-1.0) + sp(-3.0)) / 2, sp(-0.5)]
    assert only_right.item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    only_wrong, _ = refresh_loss(z, mask, torch.zeros(4, dtype=torch.bool))
    assert only_wrong.item() == pytest.approx((sp(-1.0) + sp(1.0) + sp(0.5)) / 3, rel=1e-6)


def test_blame_smoothing_and_the_anchor_by_hand():
    """A wrong answer [a, c, d] whose prompt has a right answer [a, b]: only c and d are blamable (a is on the
    right path), so the lowest of them (d: -2.0) is pushed; with the anchor the wrong answer's other steps
    (a and c, which the grade does not blame) are held to the earlier PRM's probabilities; smoothing s makes
    the targets s and 1 - s."""
    z = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.5, -2.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    correct = torch.tensor([True, False])
    blame = torch.tensor([[False, False, False], [False, True, True]])
    earlier = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.5, 0.0]])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    loss, metrics = refresh_loss(z, mask, correct, 1.0, blame, earlier, anchor_weight=0.5, smoothing=0.1)
    wrong = sp(-2.0) - 0.1 * -2.0  # BCE with target 0.1 on the blamed step
    right = ((sp(-1.0) + 0.1 * 1.0) + (sp(-2.0) + 0.1 * 2.0)) / 2  # target 0.9 on both steps
    anchor = ((sp(3.0) - 0.5 * 3.0) + (sp(0.5) - _sigmoid(1.5) * 0.5)) / 2  # BCE to the earlier PRM on a, c
    assert loss.item() == pytest.approx(wrong + right + 0.5 * anchor, rel=1e-6)
    assert metrics["anchor"].item() == pytest.approx(anchor, rel=1e-6)
    loss.backward()
    assert z.grad[1, 0].item() == pytest.approx(0.5 * (_sigmoid(3.0) - 0.5) / 2, rel=1e-6)  # anchored only
    assert z.grad[1, 2].item() == pytest.approx(_sigmoid(-2.0) - 0.1, rel=1e-6)  # blamed: towards 0.1
    assert z.grad[1, 1].item() == pytest.approx(0.5 * (_sigmoid(0.5) - _sigmoid(1.5)) / 2, rel=1e-6)
    assert z.grad[0, 0].item() == pytest.approx((_sigmoid(1.0) - 0.9) / 2, rel=1e-6)  # right: towards 0.9


def test_blaming_the_last_step_by_hand():
    """blame=last: a wrong answer's final step is pushed towards wrong, whatever the others score (here its
    first step, -1.0, is the lowest, and is left alone); a wrong answer whose final step is not blamable (a
    right answer wrote the same steps) is left out; a right answer's steps as with min. Loss =
    softplus(0.5) (row 0's last step) + [softplus(-1) + softplus(-3)] / 2 (row 1)."""
    z = torch.tensor([[-1.0, 2.0, 0.5], [1.0, 3.0, 9.0], [0.5, 7.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    correct = torch.tensor([False, True, False])
    blame = torch.tensor([[True, True, True], [False, False, False], [False, False, False]])
    loss, metrics = refresh_loss(z, mask, correct, 1.0, blame, blame="last")
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert loss.item() == pytest.approx(sp(0.5) + (sp(-1.0) + sp(-3.0)) / 2, rel=1e-6)
    loss.backward()
    grad = torch.zeros(3, 3)
    grad[0, 2] = _sigmoid(0.5)
    grad[1, 0], grad[1, 1] = -_sigmoid(-1.0) / 2, -_sigmoid(-3.0) / 2
    assert_close(z.grad, grad, atol=1e-6, rtol=0)
    assert metrics["wrong_min_p"].item() == pytest.approx(_sigmoid(0.5))
    min_loss, _ = refresh_loss(z.detach(), mask, correct, 1.0, blame)  # the min reading blames -1.0 instead
    assert min_loss.item() == pytest.approx(sp(-1.0) + (sp(-1.0) + sp(-3.0)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="blame='first': choose min or last"):
        refresh_loss(z, mask, correct, blame="first")


def test_weighting_every_answer_the_same_by_hand():
    """weighting=answers: one wrong answer (lowest step -1.0) and three right ones of one step each (z = 1, 2,
    3): loss = [softplus(-1) + softplus(-1) + softplus(-2) + softplus(-3)] / 4, where weighting=classes
    gives the wrong answer a weight of 1 against 1/3 for each right one."""
    z = torch.tensor([[2.0, -1.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 0]], dtype=torch.bool)
    correct = torch.tensor([False, True, True, True])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    loss, _ = refresh_loss(z, mask, correct, weighting="answers")
    assert loss.item() == pytest.approx((sp(-1.0) + sp(-1.0) + sp(-2.0) + sp(-3.0)) / 4, rel=1e-6)
    loss.backward()
    assert z.grad[0, 1].item() == pytest.approx(_sigmoid(-1.0) / 4, rel=1e-6)
    assert z.grad[3, 0].item() == pytest.approx(-_sigmoid(-3.0) / 4, rel=1e-6)
    classes, _ = refresh_loss(z.detach(), mask, correct)
    assert classes.item() == pytest.approx(sp(-1.0) + (sp(-1.0) + sp(-2.0) + sp(-3.0)) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="weighting='steps': choose classes or answers"):
        refresh_loss(z, mask, correct, weighting="steps")


def test_the_pairwise_objective_and_its_gradients_by_hand():
    """Group 0: right answers A (value min(1, 2) = 1) and B (value 0), wrong C (value 0.5); group 1: a wrong
    answer alone (no pair). Pairs (A, C) and (B, C): loss = [softplus(0.5 - 1) + softplus(0.5 - 0)] / 2;
    the gradient reaches only each answer's lowest step."""
    from purerl.algo.prm_refresh import pairwise_refresh_loss

    z = torch.tensor([[1.0, 2.0], [0.0, 3.0], [4.0, 0.5], [-1.0, 9.0]], requires_grad=True)
    mask = torch.ones(4, 2, dtype=torch.bool)
    loss, metrics = pairwise_refresh_loss(z, mask, torch.tensor([True, True, False, False]), torch.tensor([0, 0, 0, 1]))
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert loss.item() == pytest.approx((sp(-0.5) + sp(0.5)) / 2, rel=1e-6)
    assert metrics["pairs"].item() == 2 and metrics["pair_accuracy"].item() == 0.5
    loss.backward()
    grad = torch.zeros(4, 2)
    grad[0, 0], grad[1, 0] = -_sigmoid(-0.5) / 2, -_sigmoid(0.5) / 2
    grad[2, 1] = (_sigmoid(-0.5) + _sigmoid(0.5)) / 2
    assert_close(z.grad, grad, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ every trainable kind

RIGHT = ["2+3=5.", "The answer is \\boxed{5}."]
WRONG = ["2+3=6.", "The answer is \\boxed{6}."]


def _graded(n: int = 16):
    """Half right, half wrong answers to one prompt, as the pipeline grades them."""
    prompts = ["What is 2+3?"] * n
    steps = [RIGHT if i % 2 == 0 else WRONG for i in range(n)]
    return prompts, steps, [i % 2 == 0 for i in range(n)]


@pytest.mark.parametrize(
    ("kind", "fixture", "lora"),
    [("token_classification", "prm_folder", 0), ("token_classification", "prm_folder", 4),
     ("qwen_prm", "qwen_prm_folder", 0), ("math_shepherd", "shepherd_folder", 0),
     ("math_shepherd", "shepherd_folder", 4)],
    ids=["token_classification", "token_classification-lora", "qwen_prm", "math_shepherd", "math_shepherd-lora"],
)  # fmt: skip
def test_every_trainable_kind_learns_from_grades(request, kind, fixture, lora):
    """The refresh on a tiny PRM of each format, loaded by the one loader: from the same graded answers it
    lowers the wrong answers' lowest step score and raises the right answers' scores; with LoRA only the
    adapters (and a classification head) move, and the merged model scores as the adapted one."""
    from purerl.config import PRMConfig
    from purerl.config.schema import RefreshConfig
    from purerl.prm.loading import load_prm
    from purerl.training.refresh import PRMRefresher

    prm = load_prm(PRMConfig(kind=kind, path=str(request.getfixturevalue(fixture))))
    prompts, steps, correct = _graded()
    before = prm.score(prompts[:2], steps[:2])
    base = {n: p.detach().clone() for n, p in prm.model.named_parameters()}
    cfg = RefreshConfig(enabled=True, lr=1e-2, updates=10, batch_size=8, lora_rank=lora)
    refresher = PRMRefresher(cfg, prm, seed=0)
    assert refresher.observe(prompts, steps, correct, [True] * len(prompts)) == 16
    first = refresher.update()
    for _ in range(3):
        last = refresher.update()
    assert last["refresh/loss"] < first["refresh/loss"]
    after = prm.score(prompts[:2], steps[:2])
    assert after[0][0] > before[0][0] and min(after[1]) < min(before[1])  # right up, wrong's lowest down
    if lora:
        assert all(("lora_" in n or "modules_to_save" in n) for n in refresher.names)
        merged = refresher.merged_model()
        moved = [n for n, p in merged.named_parameters() if not torch.equal(p, base[n])]
        assert moved and set(dict(merged.named_parameters())) == set(base)  # base names again, some weights moved
        plain = copy.copy(prm)
        plain.model = merged.eval()
        assert_close(torch.tensor(plain.score(prompts[:2], steps[:2])), torch.tensor(after), atol=1e-5, rtol=0)


def test_the_gate_goes_back_from_an_update_that_ranks_worse_and_keeps_one_that_ranks_better(prm_folder):
    """refresh.gate: an update learned from inverted grades ranks the next, correctly graded answers worse
    than the PRM before it, so the gate restores that PRM (weights and optimizer state); an update learned
    from the true grades ranks them at least as well and is kept."""
    from purerl.algo.prm_refresh import ordered_pairs
    from purerl.config import PRMConfig
    from purerl.config.schema import RefreshConfig
    from purerl.prm.loading import load_prm
    from purerl.training.refresh import PRMRefresher

    prm = load_prm(PRMConfig(path=str(prm_folder)))
    prompts, steps, correct = _graded()
    refresher = PRMRefresher(RefreshConfig(enabled=True, gate="kept", lr=1e-2, updates=10, batch_size=8), prm, seed=0)
    weights = lambda model: {n: p.detach().clone() for n, p in model.named_parameters()}  # noqa: E731
    start, opt = weights(prm.model), copy.deepcopy(refresher.optimizer.state_dict())
    refresher.observe(prompts, steps, [not c for c in correct], [True] * 16)  # nothing trained yet: kept
    refresher.update()  # learns the inverted grades
    items = [{"prompt": p, "steps": s} for p, s in zip(prompts, steps)]
    assert ordered_pairs(refresher._values(items, prm.model), correct, prompts)[1] < ordered_pairs(
        refresher._values(items, refresher.kept), correct, prompts)[1]  # fmt: skip
    refresher.observe(prompts, steps, correct, [True] * 16)
    assert refresher.rejected == 1 and refresher.gate_metrics["refresh/gate_now"] < 0.5
    assert all(torch.equal(v, start[k]) for k, v in weights(prm.model).items())  # back to the kept PRM
    assert refresher.optimizer.state_dict()["state"] == opt["state"]
    refresher.buffer = refresher.buffer[-16:]  # the true grades only
    refresher.update()
    refresher.observe(prompts, steps, correct, [True] * 16)
    assert refresher.rejected == 1  # ranks as well or better: kept
    assert all(torch.equal(v, dict(refresher.kept.named_parameters())[k]) for k, v in weights(prm.model).items())
    assert not all(torch.equal(v, start[k]) for k, v in weights(prm.model).items())


@pytest.mark.parametrize("lora", [0, 4], ids=["frozen-copy", "lora-base"])
def test_the_anchor_targets_are_the_prm_as_it_was(prm_folder, lora):
    """refresh.anchor: the targets stored with each answer are the starting PRM's step log-odds (a frozen copy,
    or under LoRA the base with its adapters off), also after the refresh has moved the PRM."""
    from purerl.config import PRMConfig
    from purerl.config.schema import RefreshConfig
    from purerl.prm.loading import load_prm
    from purerl.training.refresh import PRMRefresher

    prm = load_prm(PRMConfig(path=str(prm_folder)))
    prompts, steps, correct = _graded()
    with torch.no_grad():
        z, mask = prm.step_log_odds(prompts[:2], steps[:2])
    start = [row[m].tolist() for row, m in zip(z, mask)]
    cfg = RefreshConfig(enabled=True, anchor=1.0, lr=1e-2, updates=5, batch_size=8, lora_rank=lora)
    refresher = PRMRefresher(cfg, prm, seed=0)
    refresher.observe(prompts, steps, correct, [True] * 16)
    refresher.update()
    with torch.no_grad():
        z, mask = prm.step_log_odds(prompts[:2], steps[:2])
    moved = [row[m].tolist() for row, m in zip(z, mask)]
    assert max(abs(a - b) for r, e in zip(moved, start) for a, b in zip(r, e)) > 1e-3  # the PRM moved
    refresher.observe(prompts[:2], steps[:2], correct[:2], [True, True])
    for item, expected in zip(refresher.buffer[-2:], start):
        assert item["anchor"] == pytest.approx(expected, abs=1e-5)


def test_the_start_gate_goes_back_to_the_starting_prm_when_it_ranks_best(prm_folder):
    """refresh.gate=start: when the kept PRM has drifted as badly as the current one (here an update from
    inverted grades, copied into the kept PRM as if a noisy step had let it through), the PRM the run started
    with orders the new answers best, and both the current and the kept PRM go back to it, with a fresh
    optimizer."""
    from purerl.config import PRMConfig
    from purerl.config.schema import RefreshConfig
    from purerl.prm.loading import load_prm
    from purerl.training.refresh import PRMRefresher

    prm = load_prm(PRMConfig(path=str(prm_folder)))
    prompts, steps, correct = _graded()
    refresher = PRMRefresher(RefreshConfig(enabled=True, gate="start", lr=1e-2, updates=10, batch_size=8), prm, 0)
    start = {n: p.detach().clone() for n, p in prm.model.named_parameters()}
    refresher.observe(prompts, steps, [not c for c in correct], [True] * 16)
    refresher.update()
    with torch.no_grad():
        kept = dict(refresher.kept.named_parameters())
        for name, param in prm.model.named_parameters():
            kept[name].copy_(param)
    refresher.observe(prompts, steps, correct, [True] * 16)
    m = refresher.gate_metrics
    assert m["refresh/gate_start"] > m["refresh/gate_now"] and m["refresh/gate_start"] > m["refresh/gate_kept"]
    assert refresher.rejected == 1 and refresher.optimizer.state_dict()["state"] == {}
    for model in (prm.model, refresher.kept):
        assert all(torch.equal(p, start[n]) for n, p in model.named_parameters())


def test_the_rule_prm_and_runs_without_labels_are_refused_in_one_line():
    from purerl.config import ConfigError, load_config

    cases = {
        ("prm.kind=rule", "refresh.enabled=true"): "refresh.enabled=true with prm.kind=rule",
        ("algo.reward=vr", "refresh.enabled=true"): "there is no PRM to refresh",
        ("algo.reward=prm", "refresh.enabled=true"): "refresh.labels=vr learns from the prompts",
        ("refresh.labels=some",): "refresh.labels='some'",
        ("refresh.objective=kl",): "refresh.objective='kl': choose mil or pairwise",
        ("refresh.blame=first",): "refresh.blame='first': choose min or last",
        ("refresh.weighting=steps",): "refresh.weighting='steps': choose classes or answers",
        ("refresh.gate=maybe",): "refresh.gate='maybe': choose none, kept or start",
        ("refresh.lr=0",): "refresh.lr must be > 0",
        ("refresh.anchor=-1",): "refresh.anchor must be >= 0",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
            load_config(None, list(overrides))
    load_config(None, ["algo.reward=prm", "refresh.enabled=true", "refresh.labels=all"])  # PRM-only: every grade


# ----------------------------------------------------------------------- inside purerl train

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
RUN = ["run.threads=1", "run.tensorboard=false", "run.checkpoint_every=1", "run.monitor.calibration=2",
       "run.guards.heldout_drop=warn", "run.guards.accuracy_drop=warn", "refresh.enabled=true",
       "refresh.labels=all", "refresh.batch_size=8", "refresh.updates=2", "refresh.lr=1e-3"]  # fmt: skip
"""4 tiny steps, a checkpoint each, the PRM refreshed from every grade after each step."""


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "refresh/seconds"))} for r in rows]


def _prm_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "final_prm" / "model.safetensors")


def _train(cfg, **kwargs):
    from purerl.training.trainer import Trainer

    trainer = Trainer(cfg, **kwargs)
    trainer.train()
    return trainer


class Rolled:
    """Makes a trainer see half its answers empty at step 3, once (its zero_steps guard rolls back)."""

    @staticmethod
    def trainer(cfg):
        from purerl.training.trainer import Trainer

        class Injected(Trainer):
            injected = False

            def train_step(self):
                metrics = super().train_step()
                if self.step == 3 and not self.injected:
                    Injected.injected = True
                    metrics["response/zero_steps"] = 0.5
                return metrics

        return Injected(cfg)


@pytest.mark.parametrize("gate", ["none", "start"], ids=["plain", "gate"])
def test_a_refreshed_run_resumes_and_rolls_back_to_the_same_metrics(tiny_cache, tmp_path, monkeypatch, gate):
    """The refreshed PRM, its optimizer, buffer and sampling RNG (and with refresh.gate the PRM last kept)
    are in every checkpoint: a run stopped after step 2 and resumed, and a run rolled back from step 3 to
    step 2 (at the same learning rate), end with the metrics and the refreshed PRM of the uninterrupted run."""
    from purerl.config import load_config

    run = [*RUN, f"refresh.gate={gate}"]

    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    straight = _train(load_config(TINY, [*run, f"run.out_dir={tmp_path / 'a'}"]))
    rows = _rows(tmp_path / "a")
    assert straight.refresher.updates == 2 * sum(1 for r in rows if r.get("refresh/updates"))
    assert any(r.get("refresh/loss") for r in rows) and (tmp_path / "a" / "final_prm" / "config.json").exists()
    _train(load_config(TINY, [*run, "run.steps=2", f"run.out_dir={tmp_path / 'b'}"]))
    _train(load_config(TINY, [*run, f"run.out_dir={tmp_path / 'b'}"]), resume=True)
    assert _rows(tmp_path / "b") == rows
    same = _prm_weights(tmp_path / "a")
    assert all(torch.equal(v, same[k]) for k, v in _prm_weights(tmp_path / "b").items())
    rolled = [*run, "run.guards.zero_steps=rollback", "run.guards.rollback_lr_factor=1.0"]
    guarded = [*run, "run.guards.zero_steps=rollback"]  # the same cadence of checkpoints, never triggered
    _train(load_config(TINY, [*guarded, f"run.out_dir={tmp_path / 'c'}"]))
    trainer = Rolled.trainer(load_config(TINY, [*rolled, f"run.out_dir={tmp_path / 'd'}"]))
    trainer.train()
    events = [json.loads(line) for line in (tmp_path / "d" / "events.jsonl").read_text().splitlines()]
    assert [e["to"] for e in events if e["event"] == "rollback"] == [2]
    assert _rows(tmp_path / "d") == _rows(tmp_path / "c")
    reference = _prm_weights(tmp_path / "c")
    assert all(torch.equal(v, reference[k]) for k, v in _prm_weights(tmp_path / "d").items())


def test_a_dataset_run_refreshes_a_prm_of_its_own_from_the_rows_with_an_answer(tiny_cache, prm_folder, tmp_path,
                                                                               monkeypatch, caplog):  # fmt: skip
    """Dataset problems through purerl.data, a token-classification PRM from a folder (not the built-in one):
    only the row with a reward answer feeds the refresh (the ref_answer row grades for the metrics only),
    and final_prm/ loads as prm.path with weights that moved."""
    from safetensors.torch import load_file

    from purerl.config import load_config

    data = tmp_path / "math.jsonl"
    rows = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "ref_answer": "4"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    out = tmp_path / "run"
    cfg = load_config(TINY, [*RUN, f"data.train.path={data}", f"data.heldout.path={data}", f"prm.path={prm_folder}",
                             "rollout.prompts_per_step=4", "refresh.batch_size=4", f"run.out_dir={out}"])  # fmt: skip
    with caplog.at_level("WARNING", logger="purerl.training.refresh"):
        trainer = _train(cfg)
    assert "the online PRM refresh is experimental" in caplog.text  # docs/refresh.md: measured to do harm
    assert {b["prompt"] for b in trainer.refresher.buffer} == {"What is 1+1?"}
    assert trainer.refresher.updates > 0
    before, after = load_file(prm_folder / "model.safetensors"), load_file(out / "final_prm" / "model.safetensors")
    assert any(not torch.equal(after[k], before[k]) for k in before)
    from purerl.config import PRMConfig
    from purerl.prm.loading import load_prm

    reloaded = load_prm(PRMConfig(path=str(out / "final_prm")))
    assert reloaded.score(["What is 1+1?"], [["1+1=2.", "\\boxed{2}"]]) == trainer.prm.score(
        ["What is 1+1?"], [["1+1=2.", "\\boxed{2}"]])  # fmt: skip
    meta = json.loads((out / "final_prm" / "purerl_prm.json").read_text())
    assert meta == {"refreshed_from": str(prm_folder), "kind": "token_classification",
                    "updates": trainer.refresher.updates, "separator": "\n"}  # fmt: skip
    from purerl.prm.token_classification import TokenClassificationPRM

    with pytest.raises(ValueError, match="records that this PRM reads its scores at '\\\\n'"):
        TokenClassificationPRM.check_config(PRMConfig(path=str(out / "final_prm"), separator=";"), trainer.task)
