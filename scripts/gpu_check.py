"""GPU check (run on a CUDA machine): fla's kernels against the torch forms in fp32 and bf16, and a bf16
forward/backward of converted tiny models on the fla path. Prints one line per check and exits 1 on failure.

    python scripts/gpu_check.py            # needs CUDA, Triton and flash-linear-attention
    python scripts/gpu_check.py --cpu      # the same checks with torch's chunked forms in place of fla (dry run)
"""

import sys
import time

import torch

from linearize.kernels.delta_rule.dispatch import TORCH_FORMS as DELTA_FORMS
from linearize.kernels.delta_rule.dispatch import gated_delta
from linearize.kernels.linear_attn.dispatch import TORCH_FORMS, fla_simple_gla, linear_attn, normalized_linear_attn
from linearize.kernels.window_attn.chunk import chunk_window_attn
from linearize.kernels.window_attn.naive import naive_window_attn

FLA = "chunk" if "--cpu" in sys.argv else "fla"  # --cpu: exercise the script itself without a GPU
TOL = {torch.float32: 2e-3, torch.bfloat16: 3e-2}  # max abs error relative to the reference's max magnitude
failures = []


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


def check(name, err, tol):
    status = "OK" if err <= tol else "FAIL"
    if status == "FAIL":
        failures.append(name)
    print(f"{name:<66} rel err {err:.2e}  tol {tol:.0e}  {status}", flush=True)


def kernel_checks(dev, linear=True):
    g = torch.Generator(device=dev).manual_seed(0)
    B, T, H = 2, 300, 4
    for K, V in ((64, 64), (128, 65)) if linear else ():
        q = torch.randn(B, T, H, K, device=dev, generator=g)
        k = torch.randn(B, T, H, K, device=dev, generator=g) * K**-0.5
        v = torch.randn(B, T, H, V, device=dev, generator=g)
        s0 = torch.randn(B, H, K, V, device=dev, generator=g) * 0.1
        gates = {
            "no decay": None,
            "fixed decay": torch.full((B, T, H), -0.05, device=dev),
            "data gate": -torch.rand(B, T, H, device=dev, generator=g) * 0.2,
            "per-key gate (gla)": -torch.rand(B, T, H, K, device=dev, generator=g) * 0.2,
        }
        for gname, gate in gates.items():
            ref, ref_s = TORCH_FORMS["naive"](q, k, v, gate, K**-0.5, s0, True)
            for dtype in (torch.float32, torch.bfloat16):
                o, s = linear_attn(q.to(dtype), k.to(dtype), v.to(dtype), gate, K**-0.5, s0, True, mode=FLA)
                tag = f"K={K} V={V} {gname} {str(dtype)[6:]}"
                check(f"fla chunk vs naive, output, {tag}", rel_err(o, ref), TOL[dtype])
                check(f"fla chunk vs naive, state,  {tag}", rel_err(s, ref_s), TOL[dtype])
                step_ref, _ = TORCH_FORMS["recurrent"](
                    q[:, :1], k[:, :1], v[:, :1], None if gate is None else gate[:, :1], K**-0.5, ref_s, True
                )
                step, _ = linear_attn(
                    q[:, :1].to(dtype),
                    k[:, :1].to(dtype),
                    v[:, :1].to(dtype),
                    None if gate is None else gate[:, :1],
                    K**-0.5,
                    ref_s,
                    True,
                    mode=FLA,
                )
                check(f"fla fused_recurrent vs recurrent, decode step, {tag}", rel_err(step, step_ref), TOL[dtype])
        # Gated delta rule (gdn): L2-normalised keys, beta in (0, 1).
        kn = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev, generator=g), dim=-1)
        qn = torch.nn.functional.normalize(q, dim=-1)
        beta = torch.rand(B, T, H, device=dev, generator=g)
        gd = -torch.rand(B, T, H, device=dev, generator=g) * 0.2
        d_ref, d_s = DELTA_FORMS["recurrent"](qn, kn, v, beta, gd, K**-0.5, s0, True)
        for dtype in (torch.float32, torch.bfloat16):
            o, s = gated_delta(qn.to(dtype), kn.to(dtype), v.to(dtype), beta, gd, K**-0.5, s0, True, mode=FLA)
            check(f"gated delta rule, fla vs recurrent, K={K} V={V} {str(dtype)[6:]}", rel_err(o, d_ref), TOL[dtype])
            check(
                f"gated delta rule state, fla vs recurrent, K={K} V={V} {str(dtype)[6:]}", rel_err(s, d_s), TOL[dtype]
            )
    fq, fk = torch.rand(B, T, H, 128, device=dev, generator=g), torch.rand(B, T, H, 128, device=dev, generator=g)
    v = torch.randn(B, T, H, 64, device=dev, generator=g)
    ref, _ = normalized_linear_attn(fq, fk, v, mode="naive")
    for dtype in (torch.float32, torch.bfloat16):
        o, _ = normalized_linear_attn(fq.to(dtype), fk.to(dtype), v.to(dtype), mode=FLA)
        check(f"fla normalised linear attention vs naive, {str(dtype)[6:]}", rel_err(o, ref), TOL[dtype])
        qq, kk = torch.randn_like(v), torch.randn_like(v)
        a = torch.rand(H, device=dev)
        w_ref, w_s = naive_window_attn(qq, kk, fq, fk, v, a, 64, 0.125)
        w, w_state = chunk_window_attn(
            qq.to(dtype), kk.to(dtype), fq.to(dtype), fk.to(dtype), v.to(dtype), a, 64, 0.125, linear_mode=FLA
        )
        check(f"lolcats window+linear, chunk on fla vs naive, {str(dtype)[6:]}", rel_err(w, w_ref), TOL[dtype])
        check(
            f"lolcats window+linear state, chunk on fla vs naive, {str(dtype)[6:]}", rel_err(w_state, w_s), TOL[dtype]
        )


def model_checks(dev):
    from transformers import LlamaConfig, LlamaForCausalLM

    from linearize.convert.convert import convert

    torch.manual_seed(0)
    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=512,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    ids = torch.randint(0, 512, (2, 512), device=dev)
    calib = torch.randint(0, 512, (2, 128))
    targets = (
        ("lolcats", None),
        ("supra", None),
        ("hedgehog", "1"),
        ("mamba", "every:2"),
        ("recurformer", None),
        ("gla", None),
        ("gdn", "0"),
    )
    only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--targets=")), None)
    for target, keep in targets:
        if only and target not in only:
            continue
        extra = {"calibration": calib, "recency_fraction": 0.5} if target == "recurformer" else {}
        model = convert(base, target, keep_attention=keep, **extra).to(dev)
        for m in model.mixers().values():
            m.mode = "chunk"
        with torch.no_grad():
            ref = model(ids).logits.float()  # fp32, torch chunked forms
        for m in model.mixers().values():
            m.mode = "auto" if FLA == "fla" else "chunk"  # fla on CUDA
        model = model.to(torch.bfloat16).train()
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        sync()
        t0 = time.time()
        out = model(ids, labels=ids)
        out.loss.backward()
        sync()
        dt = time.time() - t0
        grads = [
            p.grad for m in model.mixers().values() for n, p in m.named_parameters() if n in m.new_parameter_names()
        ]
        finite = all(torch.isfinite(gr).all().item() for gr in grads) and torch.isfinite(out.loss).item()
        print(
            f"{target} bf16 fwd+bwd on fla: loss {out.loss.item():.4f}, {len(grads)} new-param grads finite={finite}, "
            f"{ids.numel() / dt:.0f} tok/s (first call, includes Triton compile)",
            flush=True,
        )
        if not finite:
            failures.append(f"{target} bf16 backward")
        check(f"{target} bf16 logits on fla vs fp32 torch forms", rel_err(out.logits.detach(), ref), 1e-1)


def main():
    import transformers

    dev = "cpu" if FLA == "chunk" else "cuda"
    if dev == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device (run with --cpu for a dry run of the script)")
        if fla_simple_gla() is None:
            sys.exit("gpu_check: flash-linear-attention (with Triton) is not importable")
        import fla

        print(
            f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, "
            f"fla {getattr(fla, '__version__', '?')}",
            flush=True,
        )
    else:
        print(f"dry run on CPU: torch chunked forms stand in for fla; torch {torch.__version__}", flush=True)
    # --models-first: the hybrid and model checks before the plain kernels (fla autotunes every new
    # shape, so a first run on a fresh machine takes minutes; this order gets the rest in sooner).
    if any(a.startswith("--targets=") for a in sys.argv):
        model_checks(dev)
    elif "--models-first" in sys.argv:
        kernel_checks(dev, linear=False)
        model_checks(dev)
    else:
        kernel_checks(dev)
        model_checks(dev)
    print(f"{len(failures)} failed" if failures else "all GPU checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
