"""A teacher's soft targets in the retraining of any compression method (``kd_teacher``)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from workbench import METHODS, data, zoo
from workbench.distill.losses import TeacherLoss, kd_loss, mimic_loss
from workbench.method import TrainingBase, TrainingMethod, clone_model

RETRAINERS = sorted(mid for mid, cls in METHODS.items() if issubclass(cls, TrainingMethod))
KD_FIELDS = {"kd_teacher", "kd_temperature", "kd_weight"}


def small_iterative(**changes):
    # Iterative magnitude pruning with one short round: a retraining method of the house.
    settings = {"sparsity": 0.5, "rounds": 1, "epochs": 1, "batch_size": 64, "lr": 0.01}
    return METHODS["prune.iterative"](**{**settings, **changes})


@pytest.fixture(scope="module")
def lenet300():
    return zoo.pretrained("lenet300")


@pytest.fixture
def teacher_calls(monkeypatch):
    """(teacher, batch) of every TeacherLoss call while the test runs."""
    calls = []
    original = TeacherLoss.loss

    def record(self, model, x, *args):
        calls.append((self.teacher, x))
        return original(self, model, x, *args)

    monkeypatch.setattr(TeacherLoss, "loss", record)
    return calls


@pytest.fixture(scope="module")
def train_small():
    return data.mnist("train").subset(256, seed=1)


# ------------------------------------------------------------------ the losses


def test_kd_loss_is_t_squared_times_kl_div():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 3
    for temperature in (1.0, 4.0, 20.0):
        expected = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1),
                            reduction="batchmean") * temperature ** 2
        assert torch.isclose(kd_loss(s, t, temperature), expected)


def test_mimic_loss_is_half_the_squared_distance_per_example():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # (1 + 4) / 2 and (9 + 16) / 2, averaged over the two examples
    assert mimic_loss(s, t).item() == pytest.approx((2.5 + 12.5) / 2)


def test_teacher_loss_mixes_hard_and_soft_terms(lenet300):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 28, 28, generator=g), torch.tensor([1, 2, 3, 4])
    logits = torch.randn(4, 10, generator=g)
    hard = F.cross_entropy(logits, y)
    with torch.no_grad():
        teacher_logits = lenet300(x)
    got = TeacherLoss(lenet300, 3.0, 0.25).loss(None, x, y, logits, hard)
    assert torch.isclose(got, 0.75 * hard + 0.25 * kd_loss(logits, teacher_logits, 3.0))


# ------------------------------------------------------------------ every retraining method


@pytest.mark.parametrize("method_id", RETRAINERS)
def test_every_retraining_method_takes_a_teacher(method_id):
    cls = METHODS[method_id]
    names = {f.name for f in dataclasses.fields(cls)}
    assert KD_FIELDS <= names
    default = cls()
    assert not KD_FIELDS & set(default.settings())      # no teacher, no clutter in tables
    taught = cls(kd_teacher="input", kd_weight=0.7, epochs=1)
    assert taught.settings()["kd_teacher"] == "input" and taught.settings()["kd_weight"] == 0.7


def test_distillation_methods_have_no_retraining_teacher():
    # A distillation method's teacher is the network it is applied to; the retraining knobs
    # would say it twice.
    for mid, cls in METHODS.items():
        if mid.startswith("distill."):
            assert issubclass(cls, TrainingBase) and not issubclass(cls, TrainingMethod)


@pytest.mark.parametrize("bad", [{"kd_teacher": "nobody"}, {"kd_teacher": 3},
                                 {"kd_weight": 1.5}, {"kd_temperature": 0.5}])
def test_bad_teacher_settings_name_the_field(bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        small_iterative(**bad)


def test_a_zoo_teacher_for_other_images_is_refused_before_any_work(lenet300, train_small):
    with pytest.raises(ValueError, match="kd_teacher='resnet20' takes images of shape"):
        small_iterative(kd_teacher="resnet20").apply(lenet300, train_small)


# ------------------------------------------------------------------ what the teacher does


def test_weight_zero_is_exactly_training_without_a_teacher(lenet300, train_small):
    plain = small_iterative().apply(lenet300, train_small)
    zero = small_iterative(kd_teacher="input", kd_weight=0.0).apply(lenet300, train_small)
    for a, b in zip(plain.state_dict().values(), zero.state_dict().values()):
        assert torch.equal(a, b)


def test_weight_one_never_reads_the_labels(lenet300, train_small):
    # With the whole loss on the teacher's soft targets, scrambled labels train the same
    # network: the teacher, not the labels, drives the retraining.
    scrambled = dataclasses.replace(train_small, labels=train_small.labels.roll(1))
    taught = small_iterative(kd_teacher="input", kd_weight=1.0)
    a, b = taught.apply(lenet300, train_small), taught.apply(lenet300, scrambled)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                  b.state_dict().values()))
    untaught = small_iterative()
    c = untaught.apply(lenet300, train_small)
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                      c.state_dict().values()))


def test_the_input_teacher_is_the_network_before_compression(lenet300, train_small,
                                                             teacher_calls):
    before = clone_model(lenet300)
    small_iterative(kd_teacher="input").apply(lenet300, train_small)
    assert teacher_calls, "the teacher never answered"
    with torch.no_grad():
        for teacher, x in teacher_calls[:3]:
            assert torch.allclose(before(x), teacher(x))
    for p, q in zip(before.state_dict().values(), lenet300.state_dict().values()):
        assert torch.equal(p, q)                      # and the caller's network is untouched


def test_structured_pruning_finetunes_with_the_teacher_too(teacher_calls, train_small):
    # Channel pruning fine-tunes through prune.structured.finetune, not self.fit directly.
    lenet5 = zoo.pretrained("lenet5")
    method = METHODS["prune.l1_filter"](**{**METHODS["prune.l1_filter"].smoke,
                                          "kd_teacher": "input"})
    method.apply(lenet5, train_small)
    assert teacher_calls


def test_a_bad_teacher_inside_a_pipeline_names_its_step():
    with pytest.raises(ValueError, match=r"step 1 \(quant.trained_kmeans\).*kd_teacher"):
        METHODS["pipeline.hybrid"](steps=(("prune.iterative", {}),
                                          ("quant.trained_kmeans", {"kd_teacher": "nobody"})))


def test_a_pipeline_step_is_taught_by_its_zoo_teacher(lenet300, train_small, teacher_calls):
    steps = (("prune.iterative", {"sparsity": 0.5, "rounds": 1, "epochs": 1}),
             ("quant.trained_kmeans", {"k": 4, "epochs": 1, "kd_teacher": "lenet300"}))
    METHODS["pipeline.hybrid"](steps=steps).apply(lenet300, train_small)
    teachers = [t for t, _ in teacher_calls]
    assert teachers and all(t is teachers[0] for t in teachers)   # only the second step
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(teachers[0](x), lenet300(x))           # the dense zoo network


def test_hybrid_runs_distill_then_prune_then_quantize(lenet300, train_small):
    steps = (("distill.kd", {"student": "mlp", "width": 32, "depth": 1, "epochs": 1}),
             ("prune.magnitude", {"sparsity": 0.5}),
             ("quant.kmeans", {"k": 4}))
    out = METHODS["pipeline.hybrid"](steps=steps).apply(lenet300, train_small)
    weights = [m.weight.detach() for m in out.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(w.shape) for w in weights] == [(32, 784), (10, 32)]      # the student
    for w in weights:
        assert (w == 0).float().mean() >= 0.5 - 1e-6                        # pruned
        assert len(torch.unique(w[w != 0])) <= 4                           # 4 shared values


def test_steps_after_a_distillation_are_checked_against_the_student(train_small):
    # The student replaces the teacher: its layer names, not the teacher's, are the ones a
    # later step may name, and an error names the step.
    lenet5 = zoo.pretrained("lenet5")
    student = {"student": "mlp", "width": 16, "depth": 1, "epochs": 1}
    good = METHODS["pipeline.hybrid"](steps=(("distill.kd", student),
                                             ("prune.magnitude", {"layers": ("net.1",)})))
    out = good.apply(lenet5, train_small)
    assert (out.net[1].weight == 0).float().mean() > 0.5
    bad = METHODS["pipeline.hybrid"](steps=(("distill.kd", student),
                                            ("prune.magnitude", {"layers": ("features.0",)})))
    with pytest.raises(ValueError, match=r"step 1 \(prune.magnitude\).*features.0"):
        bad.apply(lenet5, train_small)


@pytest.fixture(scope="module")
def cifar_small():
    return data.cifar10("train").subset(128, seed=0)


@pytest.mark.parametrize("method_id", RETRAINERS)
def test_every_retraining_method_asks_its_teacher_when_it_trains(method_id, lenet300,
                                                                  train_small, cifar_small,
                                                                  teacher_calls):
    # kd_teacher must reach each method's own training loop, not only its fields.
    cls = METHODS[method_id]
    method = cls(**{**cls.smoke, "epochs": max(1, cls.smoke.get("epochs", 1)),
                    "kd_teacher": "input"})
    bases = [(lenet300, train_small), (zoo.pretrained("lenet5"), train_small),
             (zoo.pretrained("resnet20"), cifar_small)]
    model, images = next((m, d) for m, d in bases if method.supports(m))
    method.apply(model, images)
    assert teacher_calls, f"{method_id} trained without asking its teacher"
