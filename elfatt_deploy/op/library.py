"""Registration of ``elfatt::attention`` as a PyTorch custom op.

The eager implementation (all devices) is the reference in ``reference.py``;
the CUDA kernels of ``plugins/`` register themselves for the "cuda" dispatch
key through ``cuda_backend.py`` when they can be built. The fake
implementation lets torch.export / torch.compile trace the op, and autograd
recomputes the reference for the derivatives: backward (any order: a
``create_graph=True`` backward is itself differentiable), forward-mode AD
(``torch.autograd.forward_ad``, ``torch.func.jvp``) and the torch.func transforms
(grad, vjp, jacrev, jacfwd, hessian, vmap, functionalize).
"""

from __future__ import annotations

from typing import Optional

import torch

from .reference import elfatt_attention_reference
from .spec import REFERENCE_DTYPES, ElfattAttrs, validate_inputs

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def check_op_inputs(
    qkv: torch.Tensor,
    lepe_weight: Optional[torch.Tensor],
    lepe_bias: Optional[torch.Tensor],
    global_heads: int,
    local_heads: int,
    window_h: int,
    window_w: int,
    scale: float,
) -> int:
    """Validates the op's inputs against the contract; returns C."""
    if not isinstance(qkv, torch.Tensor):
        raise ValueError(f"qkv must be a torch.Tensor [B, H, W, 3C], got {type(qkv).__name__}")
    attrs = ElfattAttrs(global_heads, local_heads, window_h, window_w, scale)  # validate_attrs checks its type
    for name, tensor, shape in (("lepe_weight", lepe_weight, "[C, 1, 3, 3]"), ("lepe_bias", lepe_bias, "[C]")):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor {shape} or None, got {type(tensor).__name__}; "
                             f"convert it with torch.as_tensor(...) on qkv's device")
        if tensor is not None and tensor.device != qkv.device:
            raise ValueError(f"{name} is on {tensor.device} but qkv is on {qkv.device}; move both to the same device")
    return validate_inputs(
        tuple(qkv.shape),
        dtype_name(qkv.dtype),
        None if lepe_weight is None else tuple(lepe_weight.shape),
        None if lepe_bias is None else tuple(lepe_bias.shape),
        attrs,
        allowed_dtypes=REFERENCE_DTYPES,
        lepe_dtypes=tuple(None if t is None else dtype_name(t.dtype) for t in (lepe_weight, lepe_bias)),
    )


def attention_reference(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    """The op's eager implementation on any device: the contract's checks, then the reference."""
    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    return elfatt_attention_reference(
        qkv.contiguous(), lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale
    )


#: The op's schema (docs/op-spec.md: the PyTorch binding). Registered with ``torch.library.Library`` rather
#: than ``torch.library.custom_op``: the latter wraps the eager kernel in ``torch._disable_dynamo``, which
#: imports torch._dynamo (about 1 s) on the first call of the op in every process.
SCHEMA = ("attention(Tensor qkv, Tensor? lepe_weight, Tensor? lepe_bias, int global_heads, int local_heads, "
          "int window_h, int window_w, float scale) -> Tensor")

_LIBRARY = torch.library.Library("elfatt", "DEF")  # noqa: TOR901 (kept alive by the module)
_LIBRARY.define(SCHEMA)


def _attention_eager(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    return attention_reference(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)


_LIBRARY.impl("attention", _attention_eager, "CompositeExplicitAutograd")


def _attention_fake(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    check_op_inputs(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    b, h, w, c3 = qkv.shape
    return qkv.new_empty((b, h, w, c3 // 3))


torch.library.register_fake("elfatt::attention", _attention_fake, lib=_LIBRARY)


def _functorch_active() -> bool:
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check()) if check is not None else False


def _reference_of(attrs, present):
    """The reference as a function of the given tensors only (``present``: which of qkv, lepe_weight,
    lepe_bias are passed; the absent ones are None)."""
    def fn(*tensors):
        it = iter(tensors)
        qkv, weight, bias = (next(it) if p else None for p in present)
        return elfatt_attention_reference(qkv.contiguous(), weight, bias, *attrs)
    return fn


def _vmap(info, in_dims, qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    """torch.vmap of the op: a batched qkv alone folds into the op's batch axis; a batched LePE weight or
    bias runs the op once per vmapped item."""
    attrs = (global_heads, local_heads, window_h, window_w, scale)
    qkv_dim, weight_dim, bias_dim = in_dims[:3]
    if weight_dim is None and bias_dim is None:
        x = qkv.movedim(qkv_dim, 0)
        n, b = x.shape[:2]
        out = attention.default(x.reshape(n * b, *x.shape[2:]), lepe_weight, lepe_bias, *attrs)
        return out.reshape(n, b, *out.shape[1:]), 0

    def pick(t, dim, i):
        if t is None or dim is None:
            return t
        if info.batch_size == 0:  # zeros of one item's shape: the op still checks it and gives the shape
            return t.new_zeros(t.shape[:dim] + t.shape[dim + 1:])
        return t.select(dim, i)

    outs = [attention.default(pick(qkv, qkv_dim, i), pick(lepe_weight, weight_dim, i), pick(lepe_bias, bias_dim, i),
                              *attrs) for i in range(max(info.batch_size, 1))]
    return (torch.stack(outs) if info.batch_size else outs[0].new_empty((0, *outs[0].shape))), 0


def _vjp(fn, primals, wanted, cotangent):
    """The vector-Jacobian product of ``fn`` at ``primals`` for the ``wanted`` ones (zeros where the output
    does not depend on one: an empty grid). Differentiable when grad mode is on (a ``create_graph=True``
    backward). Plain autograd outside the torch.func transforms (torch.func.vjp imports torch._dynamo,
    seconds on the first backward of a process); torch.func.vjp inside them."""
    if _functorch_active():
        _, vjp = torch.func.vjp(fn, *primals)
        return [g for g, w in zip(vjp(cotangent), wanted) if w]
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = [p if create_graph and p.requires_grad else p.detach().requires_grad_(w)
                  for p, w in zip(primals, wanted)]
        targets = [t for t, w in zip(leaves, wanted) if w]
        out = fn(*leaves)
        grads = (torch.autograd.grad(out, targets, cotangent, create_graph=create_graph, allow_unused=True)
                 if out.requires_grad else (None,) * len(targets))
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, targets)]


def _jvp(fn, primals, tangents):
    """The Jacobian-vector product of ``fn`` as the vjp of its (linear) vjp: reverse mode only, so it works
    inside an open forward-AD level (torch.func.jvp there would nest forward AD, which torch lacks), and
    differentiable when grad mode is on."""
    if _functorch_active():
        out, vjp = torch.func.vjp(fn, *primals)
        _, vjp_of_vjp = torch.func.vjp(vjp, torch.zeros_like(out))
        return vjp_of_vjp(tuple(tangents))[0]
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = [p if create_graph and p.requires_grad else p.detach().requires_grad_() for p in primals]
        out = fn(*leaves)
        if not out.requires_grad:
            return torch.zeros_like(out)
        cotangent = torch.zeros_like(out, requires_grad=True)
        grads = torch.autograd.grad(out, leaves, cotangent, create_graph=True, allow_unused=True)
        pairs = [(g, t) for g, t in zip(grads, tangents) if g is not None and g.requires_grad]
        out_t = None
        if pairs:
            (out_t,) = torch.autograd.grad([g for g, _ in pairs], cotangent, [t for _, t in pairs],
                                           create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(out) if out_t is None else out_t


class _Attention(torch.autograd.Function):
    """The op's derivatives, all through the reference on the saved inputs: any order of backward,
    forward-mode AD, and (with the FuncTorchDynamicLayerFrontMode kernel below) the torch.func transforms."""

    @staticmethod
    def forward(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
        with torch._C._AutoDispatchBelowAutograd():
            return attention.default(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w,
                                     scale)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        qkv, lepe_weight, lepe_bias, *attrs = inputs
        ctx.save_for_backward(qkv, lepe_weight, lepe_bias)
        ctx.save_for_forward(qkv, lepe_weight, lepe_bias)
        ctx.attrs = tuple(attrs)

    @staticmethod
    def backward(ctx, grad_out):
        tensors = ctx.saved_tensors
        present = tuple(t is not None for t in tensors)
        wanted = [bool(n) for n, t in zip(ctx.needs_input_grad[:3], tensors) if t is not None]
        grads = iter(_vjp(_reference_of(ctx.attrs, present), [t for t in tensors if t is not None], wanted, grad_out)
                     if any(wanted) else ())
        result = [next(grads) if (t is not None and n) else None for t, n in zip(tensors, ctx.needs_input_grad[:3])]
        return (*result, None, None, None, None, None)

    @staticmethod
    def jvp(ctx, qkv_t, lepe_weight_t, lepe_bias_t, *_attrs_t):
        tensors = ctx.saved_tensors
        present = tuple(t is not None for t in tensors)
        primals = [t for t in tensors if t is not None]
        tangents = [torch.zeros_like(t) if dt is None else dt
                    for t, dt in zip(tensors, (qkv_t, lepe_weight_t, lepe_bias_t)) if t is not None]
        return _jvp(_reference_of(ctx.attrs, present), primals, tangents)

    vmap = staticmethod(_vmap)


def _needs_autograd(tensors) -> bool:
    """Whether a call must record derivatives: a tensor requires grad (grad mode on), or a forward-AD
    level is open (autograd.Function itself then looks for tangents)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return True
    return torch.autograd.forward_ad._current_level >= 0 and torch._C._is_fwd_grad_enabled()


def _attention_autograd(keyset, qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    if _needs_autograd((qkv, lepe_weight, lepe_bias)):
        return _Attention.apply(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    with torch._C._AutoDispatchBelowAutograd():
        return attention.default.redispatch(keyset & torch._C._after_autograd_keyset, qkv, lepe_weight, lepe_bias,
                                            global_heads, local_heads, window_h, window_w, scale)


def _attention_functorch(qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale):
    """Under a torch.func transform (grad, vjp, jvp, vmap and their compositions) the op is the
    autograd.Function above, which functorch runs level by level with its rules for each transform;
    torch.func.functionalize (no rule for autograd.Function) runs the op, which mutates nothing, one level
    down."""
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter  # noqa: PLC0415

    args = (qkv, lepe_weight, lepe_bias, global_heads, local_heads, window_h, window_w, scale)
    interpreter = retrieve_current_functorch_interpreter()
    if interpreter.key() == torch._C._functorch.TransformType.Functionalize:
        from torch._subclasses.functional_tensor import FunctorchFunctionalizeAPI  # noqa: PLC0415

        api = FunctorchFunctionalizeAPI(interpreter)
        unwrapped = api.unwrap_tensors(args)
        with api.redispatch_to_next():
            out = attention.default(*unwrapped)
        return api.wrap_tensors(out)
    return _Attention.apply(*args)


_LIBRARY.impl("attention", _attention_autograd, "Autograd", with_keyset=True)
try:  # torch.func support uses functorch internals: a PyTorch without them still gets the op and plain autograd
    _LIBRARY.impl("attention", _attention_functorch, "FuncTorchDynamicLayerFrontMode")
except (RuntimeError, AttributeError, ValueError) as _exc:  # pragma: no cover (PyTorch versions other than CI's)
    import warnings as _warnings

    _warnings.warn(f"elfatt::attention: torch.func transforms are not supported with PyTorch {torch.__version__} "
                   f"({_exc}); plain autograd (any order) and forward-mode AD still are", RuntimeWarning)


#: the op (an OpOverloadPacket): ``attention(qkv, lepe_weight, lepe_bias, global_heads, ...)``
attention = torch.ops.elfatt.attention
