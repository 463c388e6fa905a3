"""The trainer: schedules keep group ratios, divergence is caught, checkpoints resume bit-exactly."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, OptimSettings, TrainError, TrainSettings, evaluate, lr_factor, train


@pytest.fixture(scope="module")
def data():
    return load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))


def spec(data, width=32):
    return ModelSpec("gpt", width, 2, 32, 2, {"vocab_size": data.vocab_size, "n_head": 4, "block_size": 32})


SMALL = TrainSettings(steps=12, batch_size=4, seq_len=16, eval_every=0, eval_batches=1)


def test_schedule_shapes():
    assert lr_factor(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)  # warmup starts at 1/10
    assert lr_factor(9, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    with pytest.raises(TrainError, match="cosine, linear or constant"):
        lr_factor(50, 100, 10, "exp", 0.1)


def test_trains_and_loss_falls(data):
    result = train(spec(data, 64), "mup", data, HParams(lr=1e-2), TrainSettings(steps=60, batch_size=8, seq_len=32,
                                                                                 eval_every=0))
    assert not result.diverged and math.isfinite(result.val_loss)
    assert result.val_loss < math.log(data.vocab_size) - 0.5  # learned something beyond uniform


def test_divergence_is_caught(data):
    result = train(spec(data), "mup", data, HParams(lr=2.0 ** 3), SMALL)
    assert result.diverged and math.isnan(result.val_loss)
    assert "loss" in result.reason and "step" in result.reason


class Interrupt(Exception):
    pass


def test_resume_is_bit_exact(data, tmp_path):
    settings = TrainSettings(steps=12, batch_size=4, seq_len=16, eval_every=0, eval_batches=1, checkpoint_every=4)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = train(spec(data), "completep", data, HParams(lr=3e-3), settings, run_dir=tmp_path / "a")

    def stop_at_7(row):
        if row["step"] == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(spec(data), "completep", data, HParams(lr=3e-3), settings, run_dir=tmp_path / "b", on_metrics=stop_at_7)
    resumed = train(spec(data), "completep", data, HParams(lr=3e-3),
                    TrainSettings(**{**settings.__dict__, "resume": True}), run_dir=tmp_path / "b")
    assert [r["train_loss"] for r in resumed.curve] == [r["train_loss"] for r in straight.curve]
    assert resumed.val_loss == straight.val_loss
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_runs_checkpoint(data, tmp_path):
    train(spec(data), "mup", data, HParams(lr=3e-3), SMALL, run_dir=tmp_path)
    with pytest.raises(TrainError, match="different run"):
        train(spec(data), "mup", data, HParams(lr=1e-2), TrainSettings(**{**SMALL.__dict__, "resume": True}),
              run_dir=tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_checkpoint_names_its_path_and_both_ways_on(data, tmp_path, damage):
    settings = TrainSettings(**{**SMALL.__dict__, "checkpoint_every": 4})
    straight = train(spec(data), "mup", data, HParams(lr=3e-3), settings, run_dir=tmp_path)
    path, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    assert previous.exists()  # the one before the last is kept
    content = path.read_bytes()
    path.write_bytes({"truncated": content[: len(content) // 2], "empty": b"", "garbage": b"not a checkpoint"}[damage])
    resume = TrainSettings(**{**settings.__dict__, "resume": True})
    with pytest.raises(TrainError) as err:
        train(spec(data), "mup", data, HParams(lr=3e-3), resume, run_dir=tmp_path)
    message = str(err.value)
    assert str(path) in message and f"mv {previous} {path}" in message and "train.resume=false" in message
    assert "weights_only" not in message.split("(")[0]  # the reason is quoted, torch's advice is not the headline
    previous.replace(path)  # the way on the message gives: resume from the previous checkpoint
    again = train(spec(data), "mup", data, HParams(lr=3e-3), resume, run_dir=tmp_path)
    assert again.val_loss == straight.val_loss


def test_resuming_a_finished_run_evaluates_again_and_keeps_its_last_loss(data, tmp_path):
    """The final checkpoint resumed (a rerun killed during the report): no step runs, the result is unchanged."""
    straight = train(spec(data), "mup", data, HParams(lr=3e-3), SMALL, run_dir=tmp_path)
    again = train(spec(data), "mup", data, HParams(lr=3e-3), TrainSettings(**{**SMALL.__dict__, "resume": True}),
                  run_dir=tmp_path)
    assert (again.val_loss, again.train_loss, again.steps) == (straight.val_loss, straight.train_loss, straight.steps)
    assert again.curve == straight.curve


def test_schedulefree_evaluates_saves_and_resumes_at_its_averaged_weights(data, tmp_path):
    """Schedule-free AdamW trains at y and evaluates at its average x: the validation loss and the checkpoint
    both use x, and a resumed run (x converted back to y) continues like the uninterrupted one."""
    settings = TrainSettings(steps=12, batch_size=4, seq_len=16, eval_every=0, eval_batches=1, checkpoint_every=4,
                             schedule="constant")
    optim = OptimSettings(name="schedulefree_adamw")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = train(spec(data), "mup", data, HParams(lr=3e-3), settings, optim, run_dir=tmp_path / "a")
    model = spec(data).parametrized("mup", width=32)
    model.load_state_dict(torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"])
    saved_loss = evaluate(model, data, settings, torch.device("cpu"), {"device_type": "cpu", "enabled": False})
    assert saved_loss == pytest.approx(straight.val_loss, abs=1e-6)

    def stop_at_7(row):
        if row["step"] == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(spec(data), "mup", data, HParams(lr=3e-3), settings, optim, run_dir=tmp_path / "b", on_metrics=stop_at_7)
    resumed = train(spec(data), "mup", data, HParams(lr=3e-3), TrainSettings(**{**settings.__dict__, "resume": True}),
                    optim, run_dir=tmp_path / "b")
    assert [r["train_loss"] for r in resumed.curve] == pytest.approx([r["train_loss"] for r in straight.curve],
                                                                       abs=1e-4)
    assert resumed.val_loss == pytest.approx(straight.val_loss, abs=1e-4)


def test_a_searched_clip_threshold_replaces_the_run_s(data):
    """HParams.grad_clip (tuned with the LR) wins over train.grad_clip; None keeps the run's."""
    settings = TrainSettings(**{**SMALL.__dict__, "grad_clip": 0.5})
    run = lambda clip: train(spec(data), "mup", data, HParams(lr=1e-2, grad_clip=clip), settings).val_loss  # noqa: E731
    assert run(None) == run(0.5)  # the same threshold either way: bit-identical on CPU
    assert run(1e-4) != run(None)  # a threshold that binds at every step trains differently
