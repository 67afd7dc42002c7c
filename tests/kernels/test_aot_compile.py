"""Every kernel variant the trainer can launch compiles ahead of time for sm_90 (PTX and cubin) without a GPU,
under this environment's triton and under triton 3.6 (the GPU machines'); the doctor's check does the same."""
from __future__ import annotations

import pytest
from triton_versions import VERSIONS, env_for

from sdmp_fast.health.kernels import compile_for_arch
from sdmp_fast.kernels.aot import specialisations

CROP_FILTERS = {label: constexprs["CUBIC"] for label, _, _, constexprs in specialisations() if "/crop/" in label}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_kernel_variant_compiles_for_sm90_without_a_gpu(tmp_path, version):
    # a fresh process without TRITON_INTERPRET: kernels decorated under the interpreter cannot be compiled
    report, triton_version = compile_for_arch(90, env_for(version, TRITON_CACHE_DIR=str(tmp_path / "cache")))
    assert triton_version.startswith("3.6.") if version == "3.6" else True, triton_version
    for op in ("mixup", "cutmix", "resizemix"):
        for dtypes in ("fp32->fp32", "fp16->fp16", "bf16->bf16"):
            assert f"mix/{op}/{dtypes}" in report
    for size in (224, 96):  # global and local views; every pass, and each output dtype of the last one
        for kernel in ("crop/fp32", "colour/fp32", "blur_rows/fp32", "blur_cols/fp32", "blur_cols/bf16"):
            assert any(label.endswith(f"/{size}/{kernel}") for label in report), (size, kernel)
    # the crop of each filter: MoCo v3's bilinear at 224 px, DINO's bicubic at 224 and 96 px
    for label, cubic in (("augment/mocov3/224/crop/fp32", False), ("augment/dino/224/crop/fp32", True),
                         ("augment/dino/96/crop/fp32", True)):
        assert label in report and CROP_FILTERS[label] is cubic, label
    assert len(report) == 20
    for label, sizes in report.items():
        assert sizes["ptx"] > 0 and sizes["cubin"] > 0, (label, sizes)  # cubin: ptxas from triton's wheel ran
