"""The first call of the op in a process does not pay for torch._dynamo (issue 15: 1.2-2.5 s before)."""

import subprocess
import sys
import textwrap


def test_the_first_eager_call_imports_no_dynamo():
    script = textwrap.dedent("""
        import sys, torch
        from elfatt_deploy.op import elfatt_attention
        qkv = torch.randn(1, 9, 11, 3 * 32)
        out = elfatt_attention(qkv, torch.randn(32, 1, 3, 3), torch.randn(32), global_heads=1, local_heads=1,
                               window=(4, 4))
        out.sum()
        grad_qkv = qkv.clone().requires_grad_()
        elfatt_attention(grad_qkv, global_heads=1, local_heads=1, window=(4, 4)).sum().backward()
        print(tuple(out.shape), grad_qkv.grad is not None, "torch._dynamo" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(1,", "9,", "11,", "32)", "True", "False"], done.stdout
