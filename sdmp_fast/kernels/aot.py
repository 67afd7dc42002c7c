"""Ahead-of-time compilation of every kernel for a CUDA target, without a GPU (a CI check of the compiled path).

``python -m sdmp_fast.kernels.aot [--arch 90]`` compiles each kernel specialisation the code launches
(every mixing op; the augmentation passes with every stage switched on, and the fused no-contrast /
no-blur crop) to PTX and, with the ``ptxas`` that ships in triton's wheel
(``triton/backends/nvidia/bin``), to a cubin, and prints their sizes. Must run without
``TRITON_INTERPRET``: kernels decorated under the interpreter cannot be compiled.
"""
from __future__ import annotations

import argparse
import inspect
import json

import triton
from triton.backends.compiler import GPUTarget

from sdmp_fast.kernels import augment, mixing

_NORM = {k: "fp32" for k in ("thr", "m0", "m1", "m2", "s0", "s1", "s2")}
_INTS = lambda *names: {k: "i32" for k in names}  # noqa: E731


def specialisations() -> list[tuple[str, object, dict, dict]]:
    """(label, kernel, signature, constexprs) of every compiled variant checked."""
    out = []
    for op, code in mixing.OP_CODES.items():
        for src, dst in (("fp32", "fp32"), ("bf16", "bf16")):
            sig = {"x_ptr": f"*{src}", "out_ptr": f"*{dst}", "lam_ptr": "*fp32", "top_ptr": "*i64",
                   "left_ptr": "*i64", "height_ptr": "*i64", "width_ptr": "*i64",
                   **_INTS("B", "C", "H", "W", "sxb", "sxc", "sxh", "sxw")}
            out.append((f"mix/{op}/{src}->{dst}", mixing.mix_kernel, sig, {"OP": code, "BLOCK": mixing.BLOCK}))
    S = 224
    block, kx = augment.crop_tiling(500, S)
    stages = dict(BRIGHT=True, SAT=True, HUE=True, GRAY=True, SOL=True)
    crop_sig = {"img_ptr": "*u8", "box_ptr": "*i64", "fac_ptr": "*fp32", "flag_ptr": "*u8", "part_ptr": "*fp32",
                **_INTS("N", "B", "sib", "sic", "sih", "siw"), **_NORM}
    for label, dst, contrast, finish in (("crop", "fp32", True, False), ("crop+finish", "bf16", False, True)):
        out.append((f"augment/{label}", augment.crop_kernel, {**crop_sig, "dst_ptr": f"*{dst}"},
                    dict(S=S, BLOCK=block, KX=kx, CONTRAST=contrast, FINISH=finish, **stages)))
    nt = triton.cdiv(S * S, block)
    out.append(("augment/colour", augment.colour_kernel,
                {"src_ptr": "*fp32", "fac_ptr": "*fp32", "flag_ptr": "*u8", "part_ptr": "*fp32", "dst_ptr": "*fp32",
                 **_INTS("N"), **_NORM},
                dict(S=S, BLOCK=augment.BLOCK, NT=nt, NT_POW2=triton.next_power_of_2(nt), SAT=True, HUE=True,
                     GRAY=True, FINISH=False, SOL=True)))
    out.append(("augment/blur_rows", augment.blur_rows_kernel,
                {"src_ptr": "*fp32", "fac_ptr": "*fp32", "dst_ptr": "*fp32", **_INTS("N", "HALF")},
                dict(S=S, BLOCK=augment.BLOCK)))
    out.append(("augment/blur_cols", augment.blur_cols_kernel,
                {"src_ptr": "*fp32", "fac_ptr": "*fp32", "flag_ptr": "*u8", "dst_ptr": "*bf16", **_INTS("N", "HALF"),
                 **_NORM},
                dict(S=S, BLOCK=augment.BLOCK, SOL=True)))
    return out


def _source(kernel, signature: dict, constexprs: dict):
    """A triton.compiler.ASTSource with the arguments in the kernel's order and constexprs marked as such."""
    names = kernel.arg_names
    missing = [n for n in names if n not in signature and n not in constexprs]
    if missing:
        raise ValueError(f"{kernel.__name__}: no type for {missing}")
    sig = {n: ("constexpr" if n in constexprs else signature[n]) for n in names}
    params = inspect.signature(triton.compiler.ASTSource).parameters
    if "constexprs" in params:  # triton >= 3.2 (3.6 - 3.8 in this project's range)
        return triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return triton.compiler.ASTSource(fn=kernel, signature=sig, constants=constexprs)  # pragma: no cover


def compile_all(arch: int = 90) -> dict[str, dict[str, int]]:
    """Compile every specialisation for ``sm_<arch>``; {label: {"ptx": chars, "cubin": bytes, "regs": n}}."""
    target = GPUTarget("cuda", arch, 32)
    report = {}
    for label, kernel, signature, constexprs in specialisations():
        compiled = triton.compile(_source(kernel, signature, constexprs), target=target)
        meta = compiled.metadata
        report[label] = {"ptx": len(compiled.asm.get("ptx", "")), "cubin": len(compiled.asm.get("cubin", b"")),
                         "shared": int(getattr(meta, "shared", 0) or 0)}
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for H100/H200")
    args = ap.parse_args(argv)
    print(json.dumps(compile_all(args.arch)))


if __name__ == "__main__":
    main()
