"""distill.mimic, distill.kd and distill.neurons: the losses against hand computations,
F.kl_div-free KL sums and the high-temperature limit; MUNGE against a brute-force neighbour
search; the neuron selection against sklearn's ANOVA F and a hand-made case; and, with zoo
teachers on real images, that each method moves the student towards its teacher."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.feature_selection import f_classif
from torch import nn

from workbench import data, train, zoo
from workbench.distill.logits import (
    KD,
    METHODS,
    Mimic,
    Neurons,
    classifier_of,
    fisher_ratio,
    munge,
    nearest_neighbours,
    select_neurons,
    transfer_set,
)
from workbench.distill.losses import TeacherLoss, frozen, kd_loss, mimic_loss


@pytest.fixture(scope="module")
def lenet300():
    return frozen(zoo.pretrained("lenet300"))


@pytest.fixture(scope="module")
def mnist_train_2k():
    return data.mnist("train").subset(2048, seed=1)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_methods_table():
    assert {cls.id for cls in METHODS} == {"distill.mimic", "distill.kd", "distill.neurons"}


# ------------------------------------------------------------------ mimic


def test_mimic_loss_is_half_the_squared_logit_error_averaged_over_the_batch():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 1.0]])
    # by hand: row 1: (1 + 4 + 0) / 2 = 2.5; row 2: (9 + 16 + 0) / 2 = 12.5; mean 7.5
    loss = mimic_loss(s, t)
    assert loss.item() == pytest.approx(7.5)
    loss.backward()
    assert torch.allclose(s.grad, (s.detach() - t) / 2)      # d/ds = (s - t) / batch


def test_mimic_student_comes_closer_to_the_teacher_logits(lenet300, mnist_train_2k,
                                                          mnist_test_small):
    method = Mimic(width=64, epochs=4, batch_size=32)
    untrained = method.make_student(lenet300, mnist_train_2k)
    with train.quiet():
        student = method.apply(lenet300, mnist_train_2k)
    x, _ = mnist_test_small.tensors()
    with torch.no_grad():
        t = lenet300(x)
        before = mimic_loss(untrained.eval()(x), t).item()
        after = mimic_loss(student(x), t).item()
        agree = (student(x).argmax(1) == t.argmax(1)).float().mean().item()
    assert after < 0.2 * before
    assert agree > 0.85


def test_mimic_never_reads_the_labels(lenet300, mnist_train_small):
    shuffled = data.Dataset("mnist", "train", mnist_train_small.images,
                            mnist_train_small.labels[torch.randperm(512)])
    method = Mimic(**Mimic.smoke, transfer="munge")
    with train.quiet():
        a, b = method.apply(lenet300, mnist_train_small), method.apply(lenet300, shuffled)
    assert same_weights(a, b)


def test_nearest_neighbours_against_brute_force():
    x = torch.randn(40, 7, generator=torch.Generator().manual_seed(0))
    got = nearest_neighbours(x)
    for i in range(len(x)):
        dist = [(x[i] - x[j]).norm().item() if j != i else float("inf") for j in range(len(x))]
        assert got[i].item() == min(range(len(x)), key=dist.__getitem__)


def test_munge_extremes_and_transfer_set(mnist_train_small):
    images = mnist_train_small.images[:200]
    assert torch.equal(munge(images, swap=0.0, spread=5.0), images)
    # every pixel swapped, with no spread: the image becomes its nearest neighbour
    swapped = munge(images, swap=1.0, spread=1e6)
    partner = nearest_neighbours(images.reshape(200, -1).float())
    assert torch.equal(swapped, images[partner])
    some = munge(images, swap=0.5, spread=5.0, seed=3)
    assert some.dtype == torch.uint8 and not torch.equal(some, images)
    assert torch.equal(some, munge(images, swap=0.5, spread=5.0, seed=3))
    made = transfer_set(mnist_train_small, copies=2, swap=0.5, spread=5.0)
    assert len(made) == 3 * 512 and torch.equal(made.images[:512], mnist_train_small.images)
    assert torch.equal(made.labels, mnist_train_small.labels.repeat(3))


# ------------------------------------------------------------------ kd


def hand_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """sum_i p_i (log p_i - log q_i), averaged over rows, from exp and sums only."""
    def softmax(z):
        e = torch.exp(z / t - (z / t).max(1, keepdim=True).values)
        return e / e.sum(1, keepdim=True)
    p, q = softmax(teacher), softmax(student)
    return (p * (p.log() - q.log())).sum(1).mean()


def test_teacher_loss_is_the_hard_loss_mixed_with_t2_times_kl():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(16, 10, generator=g, dtype=torch.float64) * 3
    t = torch.randn(16, 10, generator=g, dtype=torch.float64) * 5
    y = torch.randint(0, 10, (16,), generator=g)
    for temp in (1.0, 4.0, 20.0):
        assert kd_loss(s, t, temp).item() == pytest.approx(temp ** 2 * hand_kl(s, t, temp).item(),
                                                            rel=1e-9)
    teacher = nn.Identity()          # the "teacher" answers with its input: x = t
    hard = F.cross_entropy(s, y)
    mixed = TeacherLoss(teacher, 4.0, 0.7).loss(None, t, y, s, hard)
    assert mixed.item() == pytest.approx(0.3 * hard.item() + 0.7 * 16 * hand_kl(s, t, 4).item(),
                                         rel=1e-9)


def test_t2_keeps_the_soft_gradient_size_whatever_the_temperature():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 10, generator=g, dtype=torch.float64) * 4
    v = torch.randn(8, 10, generator=g, dtype=torch.float64) * 4

    def grad(temp, scaled=True):
        s = z.clone().requires_grad_()
        loss = kd_loss(s, v, temp) / (1 if scaled else temp ** 2)
        loss.backward()
        return s.grad
    # the high-temperature limit (Hinton et al. section 2.1): with T^2, the gradient is
    # ((z - mean z) - (v - mean v)) / (classes * batch), i.e. logit matching
    centred = (z - z.mean(1, keepdim=True)) - (v - v.mean(1, keepdim=True))
    assert torch.allclose(grad(2000.0), centred / (10 * 8), rtol=1e-2, atol=1e-4)
    sizes = [grad(temp).norm().item() for temp in (10.0, 20.0, 40.0)]
    assert max(sizes) / min(sizes) < 1.1
    # without T^2 the soft gradient shrinks as 1 / T^2: doubling T divides it by about 4
    ratio = grad(20.0, scaled=False).norm() / grad(40.0, scaled=False).norm()
    assert ratio.item() == pytest.approx(4.0, rel=0.05)


def test_kd_weight_zero_is_plain_training_and_weight_one_reads_no_label(lenet300,
                                                                        mnist_train_small):
    method = KD(width=32, epochs=1, weight=0.0, temperature=4.0)
    with train.quiet():
        taught = method.apply(lenet300, mnist_train_small)
        plain = method.make_student(lenet300, mnist_train_small)
        train.fit(plain, mnist_train_small, method.recipe())
        assert same_weights(taught, plain)
        mixed = KD(width=32, epochs=1, weight=0.5).apply(lenet300, mnist_train_small)
        assert not same_weights(mixed, plain)
        shuffled = data.Dataset("mnist", "train", mnist_train_small.images,
                                mnist_train_small.labels.flip(0))
        soft_only = KD(width=32, epochs=1, weight=1.0)
        assert same_weights(soft_only.apply(lenet300, mnist_train_small),
                            soft_only.apply(lenet300, shuffled))


# ------------------------------------------------------------------ neurons


def test_fisher_ratio_is_sklearn_anova_f_up_to_its_degrees_of_freedom():
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (300,), generator=g)
    features = torch.randn(300, 6, generator=g) + labels[:, None] * torch.linspace(0, 1, 6)
    f, _ = f_classif(features.numpy(), labels.numpy())
    n, k = 300, 4
    assert torch.allclose(fisher_ratio(features, labels) * (n - k) / (k - 1),
                          torch.tensor(f, dtype=torch.float32), rtol=1e-4)


def test_selection_finds_the_neurons_that_separate_the_classes():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(3).repeat(100)
    features = torch.randn(300, 6, generator=g).abs()       # 0, 3: noise
    features[:, 1] += 3.0 * labels                           # strongly class-dependent
    features[:, 4] += 2.0 * (labels == 2)                    # separates class 2
    features[:, 2] += 0.5 * labels                           # weakly
    features[:, 5] = 0.0                                     # a dead neuron
    assert fisher_ratio(features, labels)[5] == 0
    assert select_neurons(features, labels, keep=2 / 6).tolist() == [1, 4]
    assert select_neurons(features, labels, keep=0.5).tolist() == [1, 2, 4]
    assert select_neurons(features, labels, keep=1.0).tolist() == list(range(6))
    drawn = select_neurons(features, labels, keep=0.5, how="random", seed=4)
    assert len(drawn.unique()) == 3


class AuxLast(nn.Module):
    """The classifier is declared before an auxiliary Linear that runs first."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(5, 3)
        self.aux = nn.Linear(4, 5)

    def forward(self, x):
        return self.classifier(torch.relu(self.aux(x.flatten(1))))


def test_the_classifier_is_found_from_the_structure():
    assert classifier_of(zoo.pretrained("lenet300"), (1, 28, 28)) == "net.5"
    assert classifier_of(zoo.pretrained("lenet5"), (1, 28, 28)) == "classifier.4"
    assert classifier_of(zoo.pretrained("resnet20"), (3, 32, 32)) == "head.2"
    assert classifier_of(AuxLast(), (1, 2, 2)) == "classifier"


def test_neurons_bad_layer_names_the_field(lenet300):
    with pytest.raises(ValueError, match=r"Neurons.layer.*no_such.*net\.5"):
        Neurons(layer="no_such").apply(lenet300, None)


def test_neuron_targets_are_the_teachers_selected_penultimate_neurons():
    teacher = frozen(zoo.pretrained("resnet20"))
    cifar = data.cifar10("train").subset(300, seed=0)
    method = Neurons(width=8, depth=1, keep=0.25, selection_images=300)
    student = method.make_student(teacher, cifar)
    hook = method.neuron_loss(student, teacher, cifar)
    x, labels = cifar.tensors()
    with torch.no_grad():     # ResNet-20's pooled features, computed without any hook
        pooled = teacher.head[:2](teacher.stages(teacher.stem(x)))
    assert hook.teacher_layer == "head.2" and len(hook.selected) == 16
    assert torch.equal(hook.selected, select_neurons(pooled, labels, 0.25))
    assert torch.allclose(hook.targets(x[:32]), pooled[:32, hook.selected], atol=1e-5)
    assert isinstance(hook.regressor, nn.Linear) and hook.regressor.in_features == 32
    # as many student neurons as selected: regressed directly
    same = Neurons(width=16, keep=0.16, selection_images=300)   # 16 of the teacher's 100
    lenet_teacher = frozen(zoo.pretrained("lenet300"))
    mnist = data.mnist("train").subset(300, seed=0)
    direct = same.neuron_loss(same.make_student(lenet_teacher, mnist), lenet_teacher, mnist)
    assert isinstance(direct.regressor, nn.Identity)


def test_taught_student_regresses_the_selected_neurons(lenet300, mnist_train_2k,
                                                       mnist_test_small):
    method = Neurons(width=64, epochs=2, lr=0.05, keep=0.25)
    student = method.make_student(lenet300, mnist_train_2k)
    before = method.neuron_loss(student, lenet300, mnist_train_2k).error(student,
                                                                         mnist_test_small)
    with train.quiet():
        hook = method.teach(student, lenet300, mnist_train_2k)   # same seed: same regressor
    after = hook.error(student, mnist_test_small)
    assert after < 0.3 * before
    assert train.evaluate(student, mnist_test_small) > 0.7      # and learns the task
    # the hook is gone: the student is a plain network again
    assert all(not m._forward_hooks for m in student.modules())


def test_kd_student_comes_closer_to_the_soft_targets_than_one_taught_by_labels(
        lenet300, mnist_train_2k, mnist_test_small):
    x, _ = mnist_test_small.tensors()
    gaps = {}
    for weight in (0.0, 1.0):
        with train.quiet():
            student = KD(width=32, epochs=2, weight=weight, temperature=4.0).apply(
                lenet300, mnist_train_2k)
        with torch.no_grad():
            gaps[weight] = kd_loss(student(x), lenet300(x), 4.0).item()
    assert gaps[1.0] < 0.7 * gaps[0.0]


def test_students_for_other_images_and_teachers_that_do_not_fit(lenet300, mnist_train_small):
    from workbench.distill.base import ThinNet, build_student
    assert isinstance(build_student("auto", None, 2, (1, 32, 32)), ThinNet)   # not a ResNet
    cifar = data.cifar10("train").subset(64, seed=0)
    with pytest.raises(ValueError, match=r"teacher LeNet300 takes images of shape "
                                         r"\(1, 28, 28\), not the data's \(3, 32, 32\)"):
        KD(**KD.smoke).apply(lenet300, cifar)
