"""Every command line of README.md's ``bash`` blocks works as written.

Run in-process (tiny overrides appended: one step or epoch, batch 8, small heads, no k-NN report, no random-init
fine-tuning arm; ``runs/x`` and ``runs/default`` / ``RUN`` become a temporary folder and the 2-step run of
tests/conftest.py):
``python -m sdmp_fast.<command>`` lines that name no data set outside the repository, i.e. ``--help``,
``--print-config``, the Fashion-MNIST configs (on the test image folder), ``--out runs/x run.stop_after`` and its
``--resume auto``, and the evaluation commands on ``runs/default``.
Parsed only, with the reason:
* a path under /data or /path/to (ImageNet, CIFAR, shards): a data set the test machine has not; the command is
  checked with ``--print-config`` (arguments, keys, values and their checks) or, for the writers
  (``loaders.write_beton``, ``loaders.shards``), by their argument parser;
* ``torchrun`` / ``srun torchrun`` lines: several processes or a cluster; the ``sdmp_fast`` part with
  ``--print-config``;
* ``make pretrain`` / ``make test``: ten minutes of training / this suite itself; the Makefile targets exist.
Skipped: lines holding ``...`` (excerpts) and shell assignments (``head=$(...)``).
"""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = {"sdmp_fast.pretrain": ["run.max_steps=1", "data.batch_size=8", "data.num_workers=0", "method.hidden_dim=64",
                               "method.out_dim=32", "method.dino_out_dim=128", "method.dino_hidden_dim=64",
                               "method.dino_bottleneck_dim=32", "data.local_crops=2", "run.knn=false",
                               "run.log_every=1"],
        "sdmp_fast.knn": ["knn.bank=24", "data.num_workers=0"],
        "sdmp_fast.linear": ["run.epochs=1", "data.batch_size=8", "data.num_workers=0"],
        "sdmp_fast.finetune": ["run.max_steps=1", "data.batch_size=8", "data.num_workers=0", "run.random_init=false",
                               "run.eval_every=0"]}
ELSEWHERE = ("/data", "/path/to")


def readme_commands() -> list[str]:
    """The command lines of README.md's bash blocks (continuations joined, comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def plan(line: str) -> tuple[str, str, list[str]]:
    """(what the test does: run, print-config, parse, make or skip; the module or target; its arguments)."""
    words = shlex.split(line)
    if words[0] == "make":
        return "make", words[1], []
    if "..." in line or re.match(r"^\w+=\$\(", line):
        return "skip", line, []
    i = words.index("-m")
    module, argv = words[i + 1], words[i + 2:]
    if module.startswith("loaders."):
        return "parse", module, argv
    if words[0] != ".venv/bin/python" or any(a.startswith(ELSEWHERE) or "=/" in a for a in argv):
        return "print-config", module, argv
    return "run", module, argv


def test_every_readme_command_runs_or_parses(mocov3_run, image_folder, tmp_path, capsys):
    done: dict[str, list[str]] = {"run": [], "print-config": [], "parse": [], "make": [], "skip": []}
    makefile = (ROOT / "Makefile").read_text()
    for line in readme_commands():
        how, module, argv = plan(line)
        done[how].append(line)
        argv = [{"runs/default": str(mocov3_run), "RUN": str(mocov3_run), "runs/x": str(tmp_path / "x")}.get(a, a)
                for a in argv]
        if how == "make":
            assert re.search(rf"^{module}:", makefile, flags=re.M), line
        elif how == "parse":
            importlib.import_module(module).parser().parse_args(argv)
        elif how in ("run", "print-config"):
            extra = ["--print-config"] if how == "print-config" else TINY[module]
            if how == "run" and module == "sdmp_fast.pretrain" and "--data" not in argv:
                extra = ["--data", str(image_folder), *extra]
            if how == "run" and "--out" not in argv and "--help" not in argv and "--print-config" not in argv:
                extra = [*extra, "--out", str(tmp_path / f"out{len(done['run'])}")]
            main = importlib.import_module(module).main
            try:
                status = main([*argv, *extra])
            except SystemExit as e:  # --help
                status = e.code
            assert status == 0, (line, capsys.readouterr().err[-2000:])
    capsys.readouterr()
    # what each kind covers (README.md changes: say here what its new lines are)
    assert any("--config configs/fashion_mnist_mocov3.yaml" in x for x in done["run"])
    assert any("--resume auto" in x for x in done["run"]) and any("sdmp_fast.finetune" in x for x in done["run"])
    assert any("torchrun" in x for x in done["print-config"]) and any("write_beton" in x for x in done["parse"])
    assert len(done["make"]) == 2 and all(len(v) for k, v in done.items())
