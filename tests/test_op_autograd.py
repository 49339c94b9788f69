"""Derivatives of the PyTorch op (elfatt::attention) beyond first-order backward: double backward,
forward-mode AD, the torch.func transforms and empty inputs, all against the float64 reference."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functionalize, grad, hessian, jacfwd, jacrev, jvp, vmap

from _naive_elfatt import rel_l2
from elfatt_deploy.op import elfatt_attention, elfatt_attention_reference

# (global_heads, local_heads, window): every window leaves a partial block on a 3 x 3 or 3 x 5 grid
CASES = [(1, 1, (2, 2)), (0, 2, (2, 3)), (1, 2, (0, 2))]
IDS = ["mixed-2x2", "local-2x3", "stripes-0x2"]


def draw(rng, batch=1, height=3, width=5, channels=4, heads=2, dtype=torch.float64):
    channels = channels * heads // 2
    t = lambda *shape, s=1.0: torch.from_numpy(rng.standard_normal(shape) * s).to(dtype)  # noqa: E731
    return t(batch, height, width, 3 * channels), t(channels, 1, 3, 3, s=0.3), t(channels, s=0.1)


def op_fn(gh, lh, window):
    return lambda x, w, b: elfatt_attention(x, w, b, global_heads=gh, local_heads=lh, window=window)


def ref_fn(gh, lh, window):
    return lambda x, w, b: elfatt_attention_reference(x, w, b, gh, lh, *window, 0.0)


def assert_close(got, want, tol, what):
    got, want = (got,) if torch.is_tensor(got) else tuple(got), (want,) if torch.is_tensor(want) else tuple(want)
    assert len(got) == len(want), what
    for i, (g, r) in enumerate(zip(got, want)):
        assert g.shape == r.shape, (what, i, g.shape, r.shape)
        err = rel_l2(g.detach().double().numpy(), r.detach().double().numpy())
        assert err <= tol, f"{what}[{i}]: rel L2 {err:.3g} > {tol}"


@pytest.mark.parametrize("gh,lh,window", CASES, ids=IDS)
def test_gradgradcheck(rng, gh, lh, window):
    x, w, b = (t.requires_grad_() for t in draw(rng, height=3, width=3, heads=gh + lh))
    assert torch.autograd.gradgradcheck(op_fn(gh, lh, window), (x, w, b))
    # forward over reverse in fast mode (random projections): the full check takes minutes
    assert torch.autograd.gradgradcheck(op_fn(gh, lh, window), (x, w, b), check_fwd_over_rev=True, fast_mode=True)


def test_gradcheck_forward_ad_and_batched(rng):
    x, w, b = (t.requires_grad_() for t in draw(rng, height=3, width=3))
    assert torch.autograd.gradcheck(op_fn(1, 1, (2, 2)), (x, w, b), check_forward_ad=True, check_batched_grad=True,
                                    check_batched_forward_grad=True)


def second_order(fn, x, w, b):
    """The fuzzing repro: a loss that holds the first-order gradient (create_graph=True)."""
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    out = fn(x, w, b)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    assert gx.requires_grad
    return torch.autograd.grad(out.sum() + gx.square().sum(), (x, w, b))


@pytest.mark.parametrize("gh,lh,window", CASES, ids=IDS)
def test_second_order_grads_match_reference(rng, gh, lh, window):
    x, w, b = draw(rng, batch=2, height=5, width=7, channels=8, heads=gh + lh)
    want = second_order(ref_fn(gh, lh, window), x, w, b)
    assert_close(second_order(op_fn(gh, lh, window), x, w, b), want, 1e-10, "float64")
    x32, w32, b32 = (t.float() for t in (x, w, b))
    assert_close(second_order(op_fn(gh, lh, window), x32, w32, b32), want, 1e-5, "float32")


def test_third_order_backward_matches_reference(rng):
    def third(fn, x, w, b):
        x = x.clone().requires_grad_()
        (g1,) = torch.autograd.grad(fn(x, w, b).square().sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), x, create_graph=True)
        return torch.autograd.grad(g2.square().sum(), x)

    x, w, b = draw(rng, height=2, width=3)
    assert_close(third(op_fn(1, 1, (2, 2)), x, w, b), third(ref_fn(1, 1, (2, 2)), x, w, b), 1e-10, "d3/dx3")


@pytest.mark.parametrize("which", [(0, 1, 2), (0,), (1,)], ids=["all", "qkv", "weight"])
def test_forward_ad_matches_reference(rng, which):
    gh, lh, window = CASES[0]
    primals = draw(rng, batch=2, height=5, width=7, channels=8)
    tangents = tuple(torch.randn_like(p) for p in primals)

    def tangent_of(fn):
        with fwAD.dual_level():
            args = [fwAD.make_dual(p, t) if i in which else p for i, (p, t) in enumerate(zip(primals, tangents))]
            out = fwAD.unpack_dual(fn(*args))
        assert out.tangent is not None
        return out.tangent

    want = tangent_of(ref_fn(gh, lh, window))
    assert want.abs().max() > 0
    assert_close(tangent_of(op_fn(gh, lh, window)), want, 1e-10, "fwAD tangent")
    selected = lambda ts: tuple(t if i in which else torch.zeros_like(t) for i, t in enumerate(ts))  # noqa: E731
    _, got = jvp(op_fn(gh, lh, window), primals, selected(tangents))
    assert_close(got, want, 1e-10, "torch.func.jvp")


def test_reverse_over_forward_matches_reference(rng):
    """d/dx of a forward-AD tangent (autograd's reverse mode over forward mode), against functorch's on the
    reference (the reference's own forward-AD formulas do not support reverse mode over them)."""
    x, w, b = draw(rng, batch=2, height=5, width=7, channels=8)
    t = torch.randn_like(x)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(op_fn(1, 1, (2, 3))(fwAD.make_dual(xr, t), wr, b)).tangent
    got = torch.autograd.grad(tangent.square().sum(), (xr, wr))
    ref = ref_fn(1, 1, (2, 3))
    want = grad(lambda xx, ww: jvp(lambda q: ref(q, ww, b), (xx,), (t,))[1].square().sum(), argnums=(0, 1))(x, w)
    assert_close(got, want, 1e-10, "reverse over forward")


@pytest.mark.parametrize("transform", [jacrev, jacfwd], ids=["jacrev", "jacfwd"])
def test_jacobians_match_reference(rng, transform):
    gh, lh, window = CASES[1]
    x, w, b = draw(rng, heads=2)
    assert_close(transform(op_fn(gh, lh, window), argnums=(0, 1, 2))(x, w, b),
                 transform(ref_fn(gh, lh, window), argnums=(0, 1, 2))(x, w, b), 1e-10, transform.__name__)


def test_hessian_matches_reference(rng):
    x, w, b = draw(rng, height=2, width=3)
    loss = lambda fn: (lambda x, w: fn(x, w, b).square().sum())  # noqa: E731
    got = hessian(loss(op_fn(1, 1, (2, 2))), argnums=(0, 1))(x, w)
    want = hessian(loss(ref_fn(1, 1, (2, 2))), argnums=(0, 1))(x, w)
    for i in range(2):
        assert_close(got[i], want[i], 1e-10, f"hessian row {i}")


@pytest.mark.parametrize("in_dims", [(0, None, None), (2, None, None), (0, 0, None), (None, 0, 0)],
                         ids=["qkv", "qkv-dim2", "qkv-weight", "lepe-only"])
def test_vmap_matches_reference(rng, in_dims):
    x, w, b = draw(rng, batch=2)
    batched = []
    for t, dim in zip((x, w, b), in_dims):
        if dim is None:
            batched.append(t)
        else:
            stack = torch.stack([t + 0.1 * torch.randn_like(t) for _ in range(3)])
            batched.append(stack.movedim(0, dim))
    got = vmap(op_fn(1, 1, (2, 3)), in_dims)(*batched)
    pick = lambda t, d, i: t if d is None else t.select(d, i)  # noqa: E731
    want = torch.stack([ref_fn(1, 1, (2, 3))(*(pick(t, d, i) for t, d in zip(batched, in_dims))) for i in range(3)])
    assert_close(got, want, 1e-10, "vmap")


def test_vmap_of_grad_and_grad_of_vmap(rng):
    x, w, b = draw(rng)
    xs = torch.stack([x + 0.1 * torch.randn_like(x) for _ in range(3)])
    op, ref = op_fn(0, 2, (2, 3)), ref_fn(0, 2, (2, 3))
    loss = lambda fn: (lambda q: fn(q, w, b).square().sum())  # noqa: E731
    assert_close(vmap(grad(loss(op)))(xs), vmap(grad(loss(ref)))(xs), 1e-10, "vmap(grad)")
    assert_close(grad(lambda q: vmap(loss(op))(q).sum())(xs), grad(lambda q: vmap(loss(ref))(q).sum())(xs), 1e-10,
                 "grad(vmap)")


def test_vmap_over_an_empty_dim_gives_an_empty_output(rng):
    x, w, b = draw(rng)
    out = vmap(op_fn(1, 1, (2, 2)), (0, 0, None))(x.expand(0, *x.shape), w.expand(0, *w.shape), b)
    assert out.shape == (0, 1, 3, 5, 4)


def test_functionalize_matches_the_op(rng):
    x, w, b = draw(rng)
    assert torch.equal(functionalize(op_fn(1, 1, (2, 2)))(x, w, b), op_fn(1, 1, (2, 2))(x, w, b))


@pytest.mark.parametrize("shape", [(0, 4, 4, 12), (2, 0, 4, 12), (2, 4, 0, 12)], ids=["B0", "H0", "W0"])
def test_empty_input_backward_gives_zero_grads(shape):
    qkv = torch.randn(shape, requires_grad=True)
    w, b = torch.randn(4, 1, 3, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    elfatt_attention(qkv, w, b, global_heads=1, local_heads=1, window=(2, 2)).sum().backward()
    assert qkv.grad.shape == shape and w.grad.shape == (4, 1, 3, 3) and b.grad.shape == (4,)
    assert not w.grad.any() and not b.grad.any()
    out = elfatt_attention(qkv, w, b, global_heads=1, local_heads=1, window=(2, 2))
    gq, gw = torch.autograd.grad(out.sum(), (qkv, w), create_graph=True)
    assert gq.shape == shape and gw.shape == (4, 1, 3, 3) and not gw.any()
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(elfatt_attention(fwAD.make_dual(qkv.detach(), torch.ones(shape)),
                                                    global_heads=1, local_heads=1, window=(2, 2))).tangent
    assert tangent is not None and tangent.shape == shape[:3] + (4,)


def test_backward_computes_only_the_grads_asked_for(rng):
    x, w, b = draw(rng)
    w.requires_grad_()
    op_fn(1, 1, (2, 2))(x, w, b).square().sum().backward()
    want = torch.func.grad(lambda ww: ref_fn(1, 1, (2, 2))(x, ww, b).square().sum())(w)
    assert x.grad is None and b.grad is None
    assert_close(w.grad, want, 1e-10, "lepe_weight grad")
