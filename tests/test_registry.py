import subprocess
import sys

import pytest

from sdmp_fast.registry import MissingBackend, Registry


def test_register_build_and_errors():
    reg = Registry("widget")

    @reg.register("a", help="the a widget")
    def make_a(x=1):
        return ("a", x)

    assert reg.build("a", x=3) == ("a", 3)
    assert reg.names() == ["a"] and reg.describe() == [("a", "the a widget")]
    with pytest.raises(KeyError, match="unknown widget 'b'; registered: a"):
        reg.get("b")
    with pytest.raises(KeyError, match="registered twice"):
        reg.register("a")(make_a)


def test_lazy_entries_import_on_first_use():
    reg = Registry("widget")
    reg.register_lazy("json", "json:dumps")
    reg.register_lazy("missing", "no_such_backend_pkg.mod:build", install="pip install no-such-backend")
    assert reg.get("json")([1]) == "[1]"
    reg.register_lazy("declared", "no_such_backend_pkg.mod:build", meta={"reads": ("folder",)})
    assert reg.meta("declared") == {"reads": ("folder",)} and reg.meta("json") is None  # nothing imported
    with pytest.raises(KeyError, match="unknown widget 'other'"):
        reg.meta("other")
    with pytest.raises(MissingBackend, match="Install it with: pip install no-such-backend"):
        reg.build("missing")


def test_importing_the_packages_imports_no_optional_backend():
    code = ("import sys, sdmp_fast, loaders; "
            "bad = [m for m in ('nvidia.dali', 'ffcv', 'triton', 'timm') if m in sys.modules]; "
            "import sdmp_fast.pretrain; "  # pulls timm, and timm itself imports triton: only DALI and FFCV are ours to keep out
            "bad += [m for m in ('nvidia.dali', 'ffcv') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_lists_registries(capsys):
    from sdmp_fast.pretrain import main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("torch", "synthetic", "mocov3", "dino", "vit_tiny_p4", "vit_small", "vit_small_dino", "resnet50", "configs/"):
        assert name in out
