"""The training loop: seeded, hookable, and its accuracy is plain argmax accuracy."""
from __future__ import annotations

import pytest
import torch

from workbench import models, train
from workbench.train import Hook, Recipe

# 512 images in batches of 64: 8 steps per epoch. (4 steps would hit the OneCycle bug below.)
QUICK = dict(epochs=1, lr=0.05, batch_size=64, seed=3)


def fresh(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("lenet300")


def fit(model, data, hooks=(), **kw):
    return train.fit(model, data, Recipe(**{**QUICK, **kw}), hooks=hooks, progress=False)


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_same_seed_same_weights(mnist_train_small):
    a, b = fresh(), fresh()
    history_a = fit(a, mnist_train_small)
    history_b = fit(b, mnist_train_small)
    assert same_weights(a, b)
    assert history_a == history_b
    assert not same_weights(a, fresh())                         # it did train
    c = fresh()
    fit(c, mnist_train_small, seed=4)                           # another shuffling order
    assert not same_weights(a, c)
    assert not a.training                                       # left in eval mode


def test_history_rows(mnist_train_small, mnist_test_small):
    model = fresh()
    history = train.fit(model, mnist_train_small, Recipe(**{**QUICK, "epochs": 2}),
                        test=mnist_test_small, progress=False)
    assert [row["epoch"] for row in history] == [1, 2]
    assert set(history[0]) == {"epoch", "loss", "train_acc", "test_acc"}
    assert history[-1]["test_acc"] == train.evaluate(model, mnist_test_small)
    assert history[1]["loss"] < history[0]["loss"]


class Counter(Hook):
    def __init__(self):
        self.losses, self.steps, self.epochs = 0, 0, []

    def loss(self, model, x, y, logits, loss):
        self.losses += 1
        assert logits.shape == (len(y), 10) and x.shape[0] == len(y)
        return loss

    def after_step(self, model):
        assert not torch.is_grad_enabled()
        self.steps += 1

    def after_epoch(self, model, epoch):
        assert not torch.is_grad_enabled()
        self.epochs.append(epoch)


def test_hooks_are_called_once_per_step_and_epoch(mnist_train_small):
    counter = Counter()
    model = fresh()
    fit(model, mnist_train_small, hooks=[counter], epochs=2, batch_size=100)
    steps = 2 * -(-512 // 100)                                   # 6 batches per epoch
    assert counter.losses == counter.steps == steps == 12
    assert counter.epochs == [0, 1]
    # A hook that only observes changes nothing.
    plain = fresh()
    fit(plain, mnist_train_small, epochs=2, batch_size=100)
    assert same_weights(model, plain)


class L1Penalty(Hook):
    def __init__(self, strength):
        self.strength, self.calls = strength, 0

    def loss(self, model, x, y, logits, loss):
        self.calls += 1
        return loss + self.strength * sum(p.abs().sum() for p in model.parameters())


def test_loss_hook_penalty_changes_training(mnist_train_small):
    plain, penalized = fresh(), fresh()
    fit(plain, mnist_train_small)
    hook = L1Penalty(1e-3)
    fit(penalized, mnist_train_small, hooks=[hook])
    assert hook.calls == 8
    assert not same_weights(plain, penalized)
    l1 = lambda m: sum(p.abs().sum().item() for p in m.parameters())  # noqa: E731
    assert l1(penalized) < l1(plain)


def test_after_step_hook_acts_on_the_weights(mnist_train_small):
    class ZeroFirstRow(Hook):
        def after_step(self, model):
            model.net[1].weight[0].zero_()

    model = fresh()
    fit(model, mnist_train_small, hooks=[ZeroFirstRow()])
    assert torch.count_nonzero(model.net[1].weight[0]) == 0
    assert torch.count_nonzero(model.net[1].weight[1]) > 0


def test_frozen_parameters_are_not_trained(mnist_train_small):
    model = fresh()
    model.net[1].weight.requires_grad_(False)
    frozen = model.net[1].weight.clone()
    fit(model, mnist_train_small)
    assert torch.equal(model.net[1].weight, frozen)


@pytest.mark.parametrize("kw, word", [
    ({"schedule": "step"}, "schedule"),
    ({"epochs": -1}, "epochs"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"batch_size": 0}, "batch_size"),
])
def test_recipe_validation(kw, word):
    with pytest.raises(ValueError, match=word):
        Recipe(**kw)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_every_schedule_trains(mnist_train_small, schedule):
    model = fresh()
    before = train.evaluate(model, mnist_train_small)
    history = fit(model, mnist_train_small, schedule=schedule, epochs=2)
    assert history[1]["loss"] < history[0]["loss"]
    assert train.evaluate(model, mnist_train_small) > before + 0.3


# OneCycleLR divides by zero when its warm-up is shorter than a step (4 steps at 25%); every
# short run length must train.
@pytest.mark.parametrize("epochs, batch_size", [(1, 512), (1, 256), (1, 171), (1, 128), (4, 512)])
def test_onecycle_short_runs(mnist_train_small, epochs, batch_size):
    model = fresh()
    history = fit(model, mnist_train_small, schedule="onecycle", epochs=epochs,
                  batch_size=batch_size)
    assert len(history) == epochs and not same_weights(model, fresh())


def test_zero_epochs_leaves_model_unchanged(mnist_train_small):
    model = fresh()
    assert fit(model, mnist_train_small, epochs=0) == []
    assert same_weights(model, fresh())


def test_evaluate_equals_manual_argmax_accuracy(mnist_test_small):
    model = fresh(5)
    model.train()
    x, y = mnist_test_small.tensors()
    with torch.no_grad():
        manual = (model.eval()(x).argmax(1) == y).float().mean().item()
    model.train()
    assert train.evaluate(model, mnist_test_small, batch_size=77) == pytest.approx(manual, abs=0)
    assert model.training                                       # mode restored
    predicted = train.predict(model, mnist_test_small, batch_size=128)
    assert predicted.shape == (500,) and predicted.dtype == torch.int64


def test_evaluate_uses_eval_mode():
    """Dropout is off during evaluation: two evaluations agree even for a training model."""
    from workbench import data
    torch.manual_seed(0)
    model = models.build("lenet300", dropout=0.5).train()
    ds = data.mnist("test").subset(200, seed=1)
    assert train.evaluate(model, ds) == train.evaluate(model, ds)
    with torch.no_grad():
        manual = (model.eval()(ds.tensors()[0]).argmax(1) == ds.labels).float().mean().item()
    assert train.evaluate(model, ds) == manual


class StopAfter(train.Hook):
    """Interrupts a run after ``epochs`` epochs, as a session that stops would."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def after_epoch(self, model, epoch):
        if epoch + 1 == self.epochs + 1:      # raised in the next epoch, before it is saved
            raise KeyboardInterrupt


def test_a_resumed_run_ends_as_the_uninterrupted_one(mnist_train_small, tmp_path):
    """Three epochs in one go, and one epoch + a stop + a resumed run, give the same weights
    (dropout on: the saved random state matters) and the same history."""
    recipe = Recipe(**{**QUICK, "epochs": 3})
    torch.manual_seed(0)
    whole = models.build("lenet300", dropout=0.5)
    torch.manual_seed(0)
    parts = models.build("lenet300", dropout=0.5)
    expected = train.fit(whole, mnist_train_small, recipe, progress=False)
    state = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train.fit(parts, mnist_train_small, recipe, hooks=[StopAfter(1)], progress=False,
                  resume=state)
    assert len(torch.load(state, weights_only=True)["history"]) == 1   # plain data: safe to load
    torch.manual_seed(0)
    resumed = models.build("lenet300", dropout=0.5)          # a new process: fresh weights
    history = train.fit(resumed, mnist_train_small, recipe, progress=False, resume=state)
    assert same_weights(resumed, whole)
    assert history == expected


def test_a_state_saved_with_another_recipe_is_not_resumed(mnist_train_small, tmp_path, capsys):
    state = tmp_path / "run.pt"
    train.fit(fresh(), mnist_train_small, Recipe(**{**QUICK, "epochs": 1}), progress=False,
              resume=state)
    model = fresh()
    history = train.fit(model, mnist_train_small, Recipe(**{**QUICK, "epochs": 1, "lr": 0.02}),
                        progress=False, resume=state)
    assert len(history) == 1 and "another recipe" in capsys.readouterr().err


def test_a_state_file_that_cannot_be_read_is_named_and_the_run_starts_afresh(
        mnist_train_small, tmp_path, capsys):
    state = tmp_path / "run.pt"
    train.fit(fresh(), mnist_train_small, Recipe(**{**QUICK, "epochs": 1}), progress=False,
              resume=state)
    truncated = state.read_bytes()[:1000]
    state.write_bytes(truncated)
    history = train.fit(fresh(), mnist_train_small, Recipe(**{**QUICK, "epochs": 1}),
                        progress=False, resume=state)
    assert len(history) == 1
    assert f"{state}: cannot be read" in capsys.readouterr().err
    assert len(torch.load(state, weights_only=True)["history"]) == 1    # written anew
    assert (tmp_path / "run.pt.unreadable").read_bytes() == truncated   # and nothing lost


class BatchSizes(Hook):
    """The number of examples each training step sees."""

    def __init__(self):
        self.seen = []

    def loss(self, model, x, y, logits, loss):
        self.seen.append(len(y))
        return loss


def mlp(batch_norm: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    norm = [torch.nn.BatchNorm1d(16)] if batch_norm else []
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), *norm,
                               torch.nn.ReLU(), torch.nn.Linear(16, 10))


def one_cycle_lr_at_the_end(lr: float, total: int) -> float:
    """The learning rate after ``total`` steps of a OneCycle schedule of ``total`` steps
    (set up as fit does)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total,
                                                   pct_start=max(0.25, 2 / total))
    for _ in range(total):
        optimizer.step()
        schedule.step()
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_last_batch_of_one_is_left_out_only_with_batch_norm(mnist_train_small, batch_norm):
    """65 examples in batches of 32: the last batch holds one, on which BatchNorm1d in
    training mode raises; a network with BatchNorm skips it, and its schedule counts only the
    steps it takes; one without trains on it as before."""
    data = mnist_train_small.subset(65, seed=1)
    model, counter = mlp(batch_norm), BatchSizes()
    if batch_norm:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            model.train()(data.tensors()[0][:1])            # what PyTorch does with one
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    recipe = Recipe(epochs=2, lr=0.05, batch_size=32, seed=3)
    train.fit(model, data, recipe, hooks=[counter], optimizer=optimizer, progress=False)
    assert counter.seen == ([32, 32] * 2 if batch_norm else [32, 32, 1] * 2)
    assert train.steps_per_epoch(model, data, 32) == (2 if batch_norm else 3)
    steps = len(counter.seen)
    assert optimizer.param_groups[0]["lr"] == one_cycle_lr_at_the_end(0.05, steps)
    assert one_cycle_lr_at_the_end(0.05, steps) != one_cycle_lr_at_the_end(0.05, steps + 2)


def test_one_example_cannot_train_a_network_with_batch_norm(mnist_train_small):
    one = mnist_train_small.subset(1)
    with pytest.raises(ValueError, match="train has 1 example"):
        train.fit(mlp(True), one, Recipe(epochs=1, batch_size=32), progress=False)
    assert len(train.fit(mlp(False), one, Recipe(epochs=1, batch_size=32), progress=False)) == 1
