"""FitNets and FSP: the stages found from the structure, the hint loss against a hand
computation on the zoo teachers' real maps (read with torch hooks), stage 1 of each method
(the error goes down; FitNets leaves the upper layers alone), FSP matrices against a loop over
positions, their invariances, and the knobs' errors."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from workbench import data, measure, train, zoo
from workbench.distill.base import ThinNet
from workbench.distill.hints import (
    FSP,
    FitNets,
    FSPLoss,
    GuidedPart,
    HintLoss,
    fsp_matrices,
    hint_error,
)
from workbench.distill.hints_tensors import (
    fsp_loss,
    fsp_matrix,
    regressor_geometry,
    run_until,
    stage_fsp,
    stage_layers,
)
from workbench.distill.losses import TeacherLoss
from workbench.models import LeNet5, ResNet20


@pytest.fixture(scope="module")
def mnist():
    train_set = data.mnist("train")
    return train_set.subset(512, seed=0), train_set.subset(256, seed=1)


@pytest.fixture(scope="module")
def cifar():
    train_set = data.cifar10("train")
    return train_set.subset(256, seed=0), train_set.subset(128, seed=1)


def output_of(model, name, x):
    """The output of module ``name`` on ``x``, read with a plain torch forward hook."""
    got = {}
    handle = model.get_submodule(name).register_forward_hook(
        lambda m, i, o: got.update(input=i[0].detach(), output=o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return got


def test_stages_are_found_from_the_structure():
    assert stage_layers(LeNet5(), (1, 28, 28)) == ["features.0", "features.1", "features.2",
                                                   "features.3"]
    for blocks in (3, 1):
        assert stage_layers(ResNet20(blocks), (3, 32, 32)) == ["stages.0", "stages.1",
                                                               "stages.2"]
    assert stage_layers(ThinNet(1, 8, 3), (1, 28, 28)) == ["stages.0", "stages.1", "stages.2"]


def test_regressor_maps_the_student_map_onto_the_teacher_size():
    for n_s, n_t in [(14, 12), (28, 8), (32, 8), (16, 16), (7, 12), (9, 4)]:
        (k,), (s,), (t,) = regressor_geometry((n_s,), (n_t,))
        assert t == min(n_s, n_t) and (n_s - k) // s + 1 == t and k >= s >= 1
    # FitNets' own rule at stride 1: kernel n_s - n_t + 1
    assert regressor_geometry((14, 14), (12, 12))[0] == (3, 3)


def test_fitnets_default_student_is_about_a_fourteenth_of_lenet5():
    teacher = zoo.pretrained("lenet5")
    student = FitNets().make_student(teacher, data.mnist("test"))
    ratio = measure.count_params(teacher)[0] / measure.count_params(student)[0]
    assert isinstance(student, ThinNet) and 12 < ratio < 16


def test_hint_loss_matches_a_hand_computation_on_real_maps(mnist):
    train_set, _ = mnist
    teacher = zoo.pretrained("lenet5").eval()
    method = FitNets()
    student = method.make_student(teacher, train_set).eval()
    hint, guided = method.layers(student, teacher, train_set.shape)
    assert (hint, guided) == ("features.1", "stages.1")       # the middle stages
    regressor = method.regressor(student, teacher, train_set.shape, hint, guided)
    assert (regressor.in_channels, regressor.out_channels, regressor.kernel_size) == \
        (16, 20, (3, 3))                                       # 14x14x16 -> 12x12x20
    x, y = next(iter(train_set.loader(32)))
    t = output_of(teacher, hint, x)["output"].double()
    g = output_of(student, guided, x)["output"].double()
    w, b = regressor.weight.detach().double(), regressor.bias.detach().double()
    r = torch.zeros(len(x), 20, 12, 12, dtype=torch.float64)  # the valid convolution by hand
    for i in range(3):
        for j in range(3):
            r += torch.einsum("oc,bchw->bohw", w[:, :, i, j], g[:, :, i:i + 12, j:j + 12])
    r += b.view(1, -1, 1, 1)
    by_hand = 0.5 * ((r - t) ** 2).sum() / r.numel()

    upper_runs = []
    student.stages[2].register_forward_hook(lambda *a: upper_runs.append(1))
    part = GuidedPart(student, guided, regressor, 10).eval()
    with torch.no_grad():
        logits = part(x)
        ours = HintLoss(teacher, hint, (12, 12)).loss(part, x, y, logits, None)
    assert torch.allclose(ours.double(), by_hand, rtol=1e-5)
    assert not upper_runs and torch.equal(logits, torch.zeros(32, 10))


def test_stage1_lowers_the_hint_error_and_leaves_the_upper_layers(mnist):
    train_set, held_out = mnist
    teacher = zoo.pretrained("lenet5").eval()
    method = FitNets(hint_epochs=2, batch_size=32)
    student = method.make_student(teacher, train_set)
    hint, guided = method.layers(student, teacher, train_set.shape)
    regressor = method.regressor(student, teacher, train_set.shape, hint, guided)
    before = hint_error(student, teacher, regressor, guided, hint, held_out)
    state = copy.deepcopy(student.state_dict())
    with train.quiet():
        history = method.train_hints(student, teacher, train_set, regressor, hint, guided)
    after = hint_error(student, teacher, regressor, guided, hint, held_out)
    assert after < 0.7 * before and history[-1]["loss"] < history[0]["loss"]
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, state[k])}
    assert changed and all(k.startswith(("stages.0.", "stages.1.")) for k in changed)
    assert any(k.startswith("stages.1.") for k in changed)     # up to the guided layer


def test_fitnets_checks_layer_names_against_the_networks(mnist):
    train_set, _ = mnist
    with pytest.raises(ValueError, match="hint_layer.*classifier.1.*allowed.*features.1"):
        FitNets(hint_layer="classifier.1").apply(LeNet5(), train_set)
    with pytest.raises(ValueError, match="guided_layer.*'nope'.*allowed.*stages.1"):
        FitNets(guided_layer="nope", epochs=0).apply(LeNet5(), train_set)
    with pytest.raises(ValueError, match="no feature map"):
        FitNets(student="mlp", width=16, epochs=0).apply(LeNet5(), train_set)
    assert not FitNets().supports(zoo.pretrained("lenet300"))


def test_fsp_matrix_against_a_loop_over_positions_on_resnet20(cifar):
    _, held_out = cifar
    teacher = zoo.pretrained("resnet20").eval()
    x, _ = next(iter(held_out.loader(4)))
    maps = output_of(teacher, "stages.1", x)
    f1 = F.avg_pool2d(maps["input"], 2).double()      # 16 x 16 x 16, pooled from 32 x 32
    f2 = maps["output"].double()                      # 32 x 16 x 16
    expected = torch.zeros(4, 16, 32, dtype=torch.float64)
    for h in range(16):
        for w in range(16):
            expected += f1[:, :, h, w, None] * f2[:, None, :, h, w]
    expected /= 16 * 16
    assert torch.allclose(fsp_matrix(f1, f2), expected, rtol=1e-10)
    assert torch.allclose(stage_fsp(maps["input"], maps["output"]).double(), expected,
                          rtol=1e-4, atol=1e-6)
    ours = fsp_matrices(teacher, ["stages.0", "stages.1", "stages.2"], x)
    assert [tuple(g.shape) for g in ours] == [(4, 16, 16), (4, 16, 32), (4, 32, 64)]
    assert torch.allclose(ours[1].double(), expected, rtol=1e-4, atol=1e-6)


def test_fsp_invariances_on_real_maps(cifar):
    _, held_out = cifar
    teacher = zoo.pretrained("resnet20").eval()
    x, _ = next(iter(held_out.loader(2)))
    f = output_of(teacher, "stages.2", x)["output"].double()
    g = fsp_matrix(f, f)
    assert torch.allclose(g, g.transpose(1, 2))                       # symmetric
    assert torch.linalg.eigvalsh(g).min() > -1e-9 * g.abs().max()     # PSD
    f1 = output_of(teacher, "stages.1", x)["output"].double()[:, :, ::2, ::2]
    shuffle = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    permuted = [m.flatten(2)[:, :, shuffle].view_as(m) for m in (f1, f)]
    assert torch.allclose(fsp_matrix(*permuted), fsp_matrix(f1, f))   # order of positions
    assert torch.allclose(fsp_matrix(3 * f1, f), 3 * fsp_matrix(f1, f))
    assert fsp_loss([g], [g]).item() == 0.0


def test_fsp_stage1_lowers_the_fsp_loss(cifar):
    train_set, held_out = cifar
    teacher = zoo.pretrained("resnet20").eval()
    method = FSP(fsp_epochs=4, batch_size=32)
    student = method.make_student(teacher, train_set)
    assert student.config["blocks_per_stage"] == [1, 1, 1] and student.config["width"] == 16
    t_stages, s_stages = method.stages(student, teacher, train_set.shape)
    assert t_stages == s_stages == ["stages.0", "stages.1", "stages.2"]
    projections = method.projections(student, teacher, train_set.shape, t_stages, s_stages)
    assert not list(projections.parameters())                 # equal widths: no projection
    x, _ = next(iter(held_out.loader(128)))

    def loss_now():
        with torch.no_grad():
            return fsp_loss(fsp_matrices(teacher, t_stages, x),
                            fsp_matrices(student.eval(), s_stages, x)).item()
    before = loss_now()
    with train.quiet():
        method.train_fsp(student, teacher, train_set, t_stages, s_stages, projections)
    assert loss_now() < 0.7 * before


def test_fsp_projects_narrower_students_and_matches_the_deepest_stages(mnist):
    train_set, _ = mnist
    teacher = LeNet5()
    method = FSP(width=8)
    student = method.make_student(teacher, train_set)           # thin: 3 stages, LeNet-5 4
    t_stages, s_stages = method.stages(student, teacher, train_set.shape)
    assert t_stages == ["features.1", "features.2", "features.3"]
    projections = method.projections(student, teacher, train_set.shape, t_stages, s_stages)
    shapes = [[(p.in_channels, p.out_channels) for p in pair] for pair in projections]
    assert shapes == [[(1, 20), (8, 20)], [(8, 20), (16, 50)], [(16, 50), (32, 50)]]
    named = FSP(teacher_stages=("features.3", "features.1"), student_stages=("stages.2",
                                                                             "stages.0"))
    assert named.stages(student, teacher, train_set.shape) == (
        ["features.1", "features.3"], ["stages.0", "stages.2"])   # in forward order
    with pytest.raises(ValueError, match="teacher_stages has 2 names and student_stages 1"):
        FSP(teacher_stages=("features.1", "features.3"), student_stages=("stages.2",),
            epochs=0).apply(teacher, train_set)
    with pytest.raises(ValueError, match="teacher_stages.*'head'.*allowed"):
        FSP(teacher_stages=("head",)).apply(ResNet20(), data.cifar10("test").subset(32))


def test_run_until_stops_before_the_rest():
    model = ResNet20(1).eval()
    ran = []
    model.head.register_forward_hook(lambda *a: ran.append("head"))
    out, seen = run_until(model, "stages.1", torch.zeros(2, 3, 32, 32), record=("stages.0",))
    assert out.shape == (2, 32, 16, 16) and set(seen) == {"stages.0", "stages.1"}
    assert not ran and not model.stages[1]._forward_hooks


def recorded_fits(monkeypatch, cls):
    """Every ``cls.fit`` call while the test runs: (model, hooks, recipe changes, optimized
    parameters), the real training still done."""
    calls, original = [], cls.fit

    def record(self, model, data, hooks=(), optimizer=None, **changes):
        params = [p for group in optimizer.param_groups for p in group["params"]] \
            if optimizer else None
        calls.append((model, list(hooks), changes, params))
        return original(self, model, data, hooks=hooks, optimizer=optimizer, **changes)

    monkeypatch.setattr(cls, "fit", record)
    return calls


def test_fitnets_teach_is_hints_then_kd(monkeypatch, mnist):
    train_set, _ = mnist
    teacher = zoo.pretrained("lenet5")
    calls = recorded_fits(monkeypatch, FitNets)
    method = FitNets(epochs=1, hint_epochs=1, width=4, depth=1, temperature=3.0, kd_weight=0.3)
    with train.quiet():
        student = method.apply(teacher, train_set)
    (part, hooks1, changes1, params1), (model2, hooks2, _, params2) = calls
    assert isinstance(part, GuidedPart) and [type(h) for h in hooks1] == [HintLoss]
    assert changes1["epochs"] == 1 and hooks1[0].hint == "features.1"
    lower = {id(p) for p in student.stages[:2].parameters()} | \
        {id(p) for p in part.regressor.parameters()}
    assert {id(p) for p in params1} == lower             # lower layers and the regressor only
    assert model2 is student and params2 is None and [type(h) for h in hooks2] == [TeacherLoss]
    assert (hooks2[0].temperature, hooks2[0].weight) == (3.0, 0.3)
    assert not any(p is q for p in part.regressor.parameters() for q in student.parameters())


def test_fsp_teach_is_the_fsp_stage_then_the_labels(monkeypatch, cifar):
    train_set, _ = cifar
    teacher = zoo.pretrained("resnet20")
    calls = recorded_fits(monkeypatch, FSP)
    with train.quiet():
        student = FSP(epochs=1, fsp_epochs=1, width=16, fsp_lr=0.002).apply(teacher,
                                                                          train_set)
    (model1, hooks1, changes1, params1), (model2, hooks2, changes2, _) = calls
    assert model1 is student is model2
    assert [type(h) for h in hooks1] == [FSPLoss] and hooks1[0].t_stages == hooks1[0].s_stages
    assert changes1 == {"epochs": 1, "lr": 0.002} and len(params1) == \
        len(list(student.parameters()))
    assert hooks2 == [] and changes2 == {}


def test_fsp_and_teachers_refuse_what_does_not_fit(mnist, cifar):
    train_set, _ = mnist
    with pytest.raises(ValueError, match="FSP.student='mlp' has no feature map"):
        FSP(student="mlp", epochs=0).apply(LeNet5(), train_set)
    with pytest.raises(ValueError, match=r"teacher ResNet20 takes images of shape \(3, 32, 32\)"
                                         r", not the data's \(1, 28, 28\)"):
        FSP().apply(zoo.pretrained("resnet20"), train_set)
    grey = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 10))   # no input_shape
    with pytest.raises(ValueError, match=r"teacher Sequential cannot read the data's images "
                                         r"of shape \(3, 32, 32\)"):
        FitNets().apply(grey, cifar[0])
