import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lora_recycle.adapters.lora import LoraModule
from lora_recycle.models.merged_linear import MergedLoraLinear, strategy_costs


def make_layer(strategy, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(12, 10)
    base.requires_grad_(False)
    loras = [LoraModule(torch.randn(3, 12), torch.randn(10, 3), 0.5), None,
             LoraModule(torch.randn(5, 12), torch.randn(10, 5), 2.0 / 5**0.5)]
    return MergedLoraLinear(base, loras, strategy)


def dense_reference(layer, x, coefs):
    W = layer.base.weight.clone()
    start = 0
    for i, rank in enumerate(layer.ranks):
        if rank:
            A = layer.A_cat[start : start + rank]
            B = layer.B_cat[:, start : start + rank]
            W = W + coefs[i] * layer.scales[start] * B @ A
            start += rank
    return x @ W.T + layer.base.bias


@pytest.mark.parametrize("strategy", ["factored", "materialized", "hybrid"])
def test_strategies_equal_dense_reference_and_each_other(strategy):
    layer = make_layer(strategy)
    reference_layer = make_layer("factored")
    x = torch.randn(2, 7, 12)
    coefs = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
    layer.coefficients = coefs
    out = layer(x)
    torch.testing.assert_close(out, dense_reference(layer, x, coefs.detach()), atol=1e-5, rtol=1e-5)
    loss = (out.sin() * torch.arange(10.0)).sum()
    loss.backward()
    grad = coefs.grad.clone()
    ref_coefs = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
    reference_layer.coefficients = ref_coefs
    (reference_layer(x).sin() * torch.arange(10.0)).sum().backward()
    torch.testing.assert_close(grad, ref_coefs.grad, atol=1e-4, rtol=1e-4)
    assert grad[1] == 0  # the adapter without this module gets no gradient


def test_hybrid_input_gradient():
    x = torch.randn(4, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layer, ref = make_layer("hybrid"), make_layer("factored")
    layer.coefficients = ref.coefficients = torch.tensor([0.2, 0.0, -0.4])
    layer(x).square().sum().backward()
    ref(x2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)


def test_auto_picks_the_cheapest():
    layer = make_layer("auto")
    costs = strategy_costs(layer.rank_sum, 4096, 10, 12)
    assert layer.choose_strategy(4096) == min(costs, key=costs.get)
    layer.A_cat.requires_grad_(True)
    assert layer.choose_strategy(4096) != "hybrid"


def test_no_coefficients_is_the_bare_base():
    layer = make_layer("auto")
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), layer.base(x))


@pytest.mark.parametrize("strategy", ["factored", "materialized", "hybrid"])
def test_cached_bf16_factors_give_what_autocast_casting_gives(strategy):
    """Under bf16 autocast the frozen factors are cast once and cached: outputs and coefficient gradients are
    bit for bit those of casting them on every call, and a changed factor is re-cast."""
    layer = make_layer(strategy)
    x = torch.randn(2, 7, 12)

    def run(cached: bool):
        coefs = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
        layer.coefficients = coefs
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            if cached:
                out = layer(x)
            else:  # the formula with the fp32 factors, which autocast casts at each matmul
                col = layer.column_weights()
                if strategy == "factored":
                    out = layer.base(x) + F.linear(F.linear(x, layer.A_cat) * col.to(x.dtype), layer.B_cat)
                else:
                    weight = torch.addmm(layer.base.weight, layer.B_cat * col, layer.A_cat)
                    out = F.linear(x, weight, layer.base.bias)
        out.float().sum().backward()
        return out.detach(), coefs.grad

    out, grad = run(cached=True)
    reference_out, reference_grad = run(cached=False)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference_out)
    if strategy == "hybrid":  # its own gradient formula, in bf16: agrees to bf16 rounding
        torch.testing.assert_close(grad, reference_grad, rtol=2e-2, atol=1e-3)
    else:
        assert torch.equal(grad, reference_grad)
    with torch.no_grad():
        layer.A_cat.mul_(2.0)  # a changed factor (e.g. a restored snapshot) is cast again
    assert torch.equal(run(cached=True)[0], run(cached=False)[0])
