"""Ahead-of-time compilation of every kernel for a CUDA target, without a GPU (a CI check of the compiled path).

``python -m sdmp_fast.kernels.aot [--arch 90]`` compiles each kernel specialisation the trainer can launch to
PTX and, with the ``ptxas`` that ships in triton's wheel (``triton/backends/nvidia/bin``), to a cubin, and
prints their sizes: every mixing op for fp32, fp16 and bf16 views, and the augmentation passes of every launch
group of the MoCo v3 (bilinear crop) and DINO (bicubic crop) recipes at 224 px (globals) and 96 px (DINO's
locals), with fp32 and bf16 output, taken from :func:`sdmp_fast.kernels.augment.launch_plan` (what the launcher
runs; those recipes always blur, so the passes that fuse the finish without blur are checked by the interpreter
parity only). The crop's tiling depends on the canvas width: a 500 px canvas (ImageNet's usual width) stands for
all. Must run without ``TRITON_INTERPRET``: kernels decorated under the interpreter cannot be compiled.
"""
from __future__ import annotations

import argparse
import inspect
import json

import triton
from triton.backends.compiler import GPUTarget

from sdmp_fast.augment.recipes import dino_recipe, mocov3_recipe
from sdmp_fast.kernels import augment, mixing

_NORM = {k: "fp32" for k in ("thr", "m0", "m1", "m2", "s0", "s1", "s2")}
_INTS = lambda *names: {k: "i32" for k in names}  # noqa: E731
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# each method's own resize filter: MoCo v3's bilinear crop and DINO's bicubic one are both compiled
RECIPES = {"mocov3": mocov3_recipe(224, 0.08, MEAN, STD, interpolation="bilinear"),
           "dino": dino_recipe(224, 96, 10, (0.4, 1.0), (0.05, 0.4), MEAN, STD, interpolation="bicubic")}
CANVAS_WIDTH = 500
# argument types of each augmentation kernel but its output ("dst_ptr")
_AUGMENT_SIGS = {
    "crop": {"img_ptr": "*u8", "box_ptr": "*i64", "fac_ptr": "*fp32", "flag_ptr": "*u8", "part_ptr": "*fp32",
             **_INTS("N", "B", "sib", "sic", "sih", "siw"), **_NORM},
    "colour": {"src_ptr": "*fp32", "fac_ptr": "*fp32", "flag_ptr": "*u8", "part_ptr": "*fp32", **_INTS("N"), **_NORM},
    "blur_rows": {"src_ptr": "*fp32", "fac_ptr": "*fp32", **_INTS("N", "HALF")},
    "blur_cols": {"src_ptr": "*fp32", "fac_ptr": "*fp32", "flag_ptr": "*u8", **_INTS("N", "HALF"), **_NORM},
}


def _mix_variants() -> list[tuple[str, object, dict, dict]]:
    out = []
    for op, code in mixing.OP_CODES.items():
        # the views' dtype in and out: float32 (every loader), float16 (data.dali_fp16), bfloat16
        for src, dst in (("fp32", "fp32"), ("fp16", "fp16"), ("bf16", "bf16")):
            sig = {"x_ptr": f"*{src}", "out_ptr": f"*{dst}", "lam_ptr": "*fp32", "top_ptr": "*i64",
                   "left_ptr": "*i64", "height_ptr": "*i64", "width_ptr": "*i64",
                   **_INTS("B", "C", "H", "W", "sxb", "sxc", "sxh", "sxw")}
            out.append((f"mix/{op}/{src}->{dst}", mixing.mix_kernel, sig, {"OP": code, "BLOCK": mixing.BLOCK}))
    return out


def specialisations() -> list[tuple[str, object, dict, dict]]:
    """(label, kernel, signature, constexprs) of every compiled variant checked, without duplicates."""
    out, seen = _mix_variants(), set()
    for name, recipe in RECIPES.items():
        for members in augment.view_groups(recipe):
            specs = [recipe.views[v] for v in members]
            plan = augment.launch_plan(specs, CANVAS_WIDTH)
            for kernel, constexprs in plan.items():
                for dst in ("fp32", "bf16"):
                    if dst == "bf16" and kernel != list(plan)[-1]:
                        continue  # an intermediate pass: float32 whatever the output
                    sig = {**_AUGMENT_SIGS[kernel], "dst_ptr": f"*{dst}"}
                    key = (kernel, json.dumps(sig, sort_keys=True), json.dumps(constexprs, sort_keys=True))
                    if key not in seen:
                        seen.add(key)
                        out.append((f"augment/{name}/{specs[0].size}/{kernel}/{dst}", augment.KERNELS[kernel], sig,
                                    constexprs))
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
    print(json.dumps({"triton": triton.__version__, "arch": args.arch, "kernels": compile_all(args.arch)}))


if __name__ == "__main__":
    main()
