"""dse.train.zerocost: synflow, NASWOT, grad_norm and snip against hand computations on tiny nets with known
weights and inputs, and against torch.autograd run directly; then a real dse Point scored on real data."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dse.train import zerocost


def linear(w, bias=None) -> nn.Linear:
    """A Linear layer with these weights (and bias, or none)."""
    w = torch.tensor(w, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def test_synflow_of_a_bias_free_linear_net_is_depth_times_the_path_norm():
    """R = 1^T |W2| |W1| 1 = [0.5 2] . [3.5 6] = 13.75; each layer's sum of w dR/dw equals R, so the score is
    2 R = 27.5. The net's own weights stay as they were (signs included)."""
    net = nn.Sequential(linear([[1, -2, 0.5], [-1, 3, 2]]), nn.ReLU(), linear([[-0.5, 2]]))
    before = copy.deepcopy(net.state_dict())
    assert zerocost.synflow(net, (3,)) == pytest.approx(27.5, rel=1e-12)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_synflow_of_a_conv_with_batchnorm_in_eval_mode():
    """One 3x3 conv, padding 1, on a 3x3 image of ones: tap (a, b) meets a real pixel at r(a) r(b) output
    positions, r = (2, 3, 2). BatchNorm in eval mode at its initial statistics (mean 0, var 1) with gamma -2
    and beta 0.5 becomes y |gamma| / sqrt(1 + eps) + |beta|, so R = sum_p (.) and
    w dR/dw summed = |gamma| / sqrt(1 + eps) * sum_ab |w_ab| r(a) r(b)."""
    w = [[1.0, -2.0, 0.5], [0.25, -1.0, 3.0], [-0.75, 2.0, 1.5]]
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w).view(1, 1, 3, 3))
        bn.weight.fill_(-2.0)
        bn.bias.fill_(0.5)
    r = (2, 3, 2)
    by_hand = 2.0 / math.sqrt(1 + bn.eps) * sum(abs(w[a][b]) * r[a] * r[b] for a in range(3) for b in range(3))
    net = nn.Sequential(conv, bn, nn.Flatten())
    assert zerocost.synflow(net, (1, 3, 3)) == pytest.approx(by_hand, rel=1e-12)
    assert net.training  # the copy was put in eval mode, not the net


def test_naswot_is_the_log_determinant_of_the_agreement_kernel():
    """Pre-activations W x with W = [[1, 0], [0, 1], [1, 1]]: x1 = (1, 1) -> (1, 1, 2), code 111;
    x2 = (1, -2) -> (1, -2, -1), code 100; x3 = (-1, 2) -> (-1, 2, 1), code 011. Hamming distances 2, 1, 3 of
    N_A = 3 units, so K = [[3, 1, 2], [1, 3, 0], [2, 0, 3]] and det K = 27 - 3 - 12 = 12."""
    net = nn.Sequential(linear([[1, 0], [0, 1], [1, 1]]), nn.ReLU(), linear([[1, 0, 1], [0, 1, -1]], [0.1, 0.2]))
    x = torch.tensor([[1.0, 1.0], [1.0, -2.0], [-1.0, 2.0]])
    y = torch.tensor([0, 1, 0])
    assert zerocost.data_scores(net, x, y)["naswot"] == pytest.approx(math.log(12), rel=1e-12)
    codes = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1]])
    assert zerocost.kernel_logdet([codes[:, :1], codes[:, 1:]]) == pytest.approx(math.log(12), rel=1e-12)


def test_naswot_of_identical_codes_is_minus_infinity():
    """Two inputs with the same code make two equal rows of K: det 0."""
    assert zerocost.kernel_logdet(torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 1]])) == -math.inf


def small_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_grad_norm_and_snip_equal_autograd_computed_directly():
    """The gradient of the mean cross-entropy in train mode (BatchNorm on the batch's statistics) with dropout
    off, taken here with torch.autograd.grad on a copy whose dropout is removed; grad_norm = its Euclidean norm
    over the conv and linear weights, snip = sum |w * g|."""
    net = small_net()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 2, 5, 5, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = copy.deepcopy(net)
    plain[3] = nn.Identity()
    plain.train()
    ws = [plain[0].weight, plain[6].weight]
    grads = torch.autograd.grad(nn.functional.cross_entropy(plain(x), y), ws)
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    snip = sum(float((g.double() * w.detach().double()).abs().sum()) for g, w in zip(grads, ws))
    found = zerocost.data_scores(net, x, y)
    assert found["grad_norm"] == pytest.approx(norm, rel=1e-6)
    assert found["snip"] == pytest.approx(snip, rel=1e-6)
    assert all(p.grad is None for p in net.parameters())  # gradients cleared
    again = zerocost.data_scores(net, x, y)  # deterministic: dropout's draws do not enter
    assert again == found


def test_a_real_point_scores_finite_and_deterministic_for_a_seed():
    """A resnext point of the default study's space, built by dse as a trial builds it, on Fashion-MNIST-shaped
    synthetic data; the same seed gives the same scores, another seed other ones (timing is in bench/)."""
    from dse.space.parse import load
    from dse.train import datasets

    data = datasets.load("synthetic", subset=200, seed=0)
    space = load("resnext").with_geometry(image_size=data.image_size, in_chans=data.in_chans,
                                          num_classes=data.num_classes)
    point = space.point({"depth": 11, "cardinality": 2, "bottleneck_width": 4, "width": 32})
    first = zerocost.measure(point, data, seed=0)
    assert set(zerocost.SCORES) <= set(first) and first["batch"] == zerocost.BATCH
    assert all(isinstance(first[k], float) and math.isfinite(first[k]) for k in zerocost.SCORES)
    assert first["synflow"] > 0 and first["grad_norm"] > 0 and first["snip"] > 0
    second = zerocost.measure(point, data, seed=0)
    assert {k: second[k] for k in zerocost.SCORES} == {k: first[k] for k in zerocost.SCORES}
    other = zerocost.measure(point, data, seed=1)
    assert other["synflow"] != first["synflow"]  # another initialization
    assert zerocost.for_trial(point, object()) is None  # no data in memory: no scores, no error


def test_the_scored_net_is_the_one_a_fit_with_the_same_seed_starts_from():
    """dse.train.fit seeds with Lightning's seed_everything and then builds; zerocost.initial must give the same
    weights, and leave torch's global generator where it was."""
    import lightning.pytorch as pl

    from dse.network import build
    from dse.space.parse import load
    from dse.train import datasets

    data = datasets.load("synthetic", subset=100, seed=0)
    space = load("resnext").with_geometry(image_size=data.image_size, in_chans=data.in_chans,
                                          num_classes=data.num_classes)
    point = space.point({"depth": 11, "cardinality": 2, "bottleneck_width": 4, "width": 32})
    pl.seed_everything(5, verbose=False)
    fitted = build(point, data.num_classes, data.in_chans, data.image_size).state_dict()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    scored = zerocost.initial(point, data, seed=5).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert fitted.keys() == scored.keys() and all(torch.equal(fitted[k], scored[k]) for k in fitted)
