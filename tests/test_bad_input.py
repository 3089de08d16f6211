"""Bad input never crashes: one line per problem naming the field and the fix, exit 2, nothing started.

Each case is a mistake a user (or an attacker) can make in a sweep file, a data file or a flag; the
fast ones are checked in process, the terminal-facing ones through the real console entry point.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.resolve import resolve_sweep
from orchestrator.spec import SpecError, load_spec
from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep


def _problems(path: Path, workdir: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        resolve_sweep(load_spec(path), path, workdir)
    for line in info.value.lines:
        assert "\n" not in line and len(line) < 600, line
    return info.value.lines


def _expect(data_dir: Path, spec: dict, needle: str, workdir: Path | None = None) -> list[str]:
    lines = _problems(write_sweep(data_dir, spec), workdir or data_dir / "work")
    assert any(needle in line for line in lines), lines
    return lines


FILE_CASES = [
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a UTF-8 text file"),
    ("duplicate key", b"name: a\nname: b\n", "key 'name' appears twice"),
    ("list key", b"? [a, b]\n: 1\n", "a key must be a plain name"),
    (
        "alias bomb",
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nname: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        "once anchors",
    ),
]


@pytest.mark.parametrize(("case", "content", "needle"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_sweep_file_shape(tmp_path, case, content, needle):
    path = tmp_path / "sweep.yaml"
    path.write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert time.perf_counter() - started < 1.0
    assert len(info.value.lines) == 1 and needle in info.value.lines[0], info.value.lines


SPEC_CASES = [
    ({"search__seed": -1}, "search.seed: Input should be greater than or equal to 0"),
    ({"train__seed": 2**40}, "train.seed: Input should be less than"),
    (
        {"search__space__learning_rate": {"type": "loguniform", "low": 1e-5, "high": float("inf")}},
        "search.space.learning_rate.high: Input should be a finite number",
    ),
    ({"train__weight_decay": float("nan")}, "train.weight_decay: Input should be a finite number"),
    ({"data__label_column": "text"}, "text_column and label_column are both 'text'"),
    ({"data__max_length": 600}, "data.max_length: 600 exceeds the model's 512 positions; use at most 512"),
    ({"tracking": {"uri": "garbage"}}, "tracking.uri: 'garbage' is not an MLflow store"),
    ({"tracking": {"uri": "http://"}}, "names no host"),
]


def test_merge_keys_may_override_what_they_merge(tmp_path):
    from orchestrator.spec import _read_yaml

    path = tmp_path / "sweep.yaml"
    path.write_text("base: &b {epochs: 2, batch_size: 8}\ntrain: {<<: *b, epochs: 3}\n")
    assert _read_yaml(path)["train"] == {"epochs": 3, "batch_size": 8}


@pytest.mark.parametrize(("overrides", "needle"), SPEC_CASES)
def test_sweep_values(data_dir, overrides, needle):
    _expect(data_dir, sweep_dict(**overrides), needle)


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("tracking.uri", "http://alice:s3cr3t-planted@127.0.0.1:5000"),
        ("tracking.uri", "postgresql://alice:s3cr3t-planted@db/mlflow"),
        ("storage", "s3://AKIAEXAMPLE:s3cr3t-planted@bucket/sweeps"),
        ("storage", "s3://bucket/sweeps?secret_key=s3cr3t-planted"),
    ],
)
def test_credentials_in_uris_are_refused_and_never_echoed(data_dir, field, uri):
    spec = sweep_dict(**({"tracking": {"uri": uri}} if field == "tracking.uri" else {"storage": uri}))
    lines = _expect(data_dir, spec, f"{field}: ")
    assert any("carries a credential" in line for line in lines), lines
    assert not any("s3cr3t-planted" in line for line in lines), lines


def test_storage_and_workdir_must_be_writable_directories(data_dir):
    """Checked where the sweep runs (a submitted sweep names the head's paths), before Ray starts."""
    from orchestrator.runner import run_sweep

    blocker = data_dir / "plain-file"
    blocker.write_text("not a directory")
    for spec, workdir, needle in [
        (sweep_dict(storage=str(blocker / "runs")), data_dir / "work", f"storage: {blocker} is a file"),
        (sweep_dict(), blocker / "work", f"--workdir: {blocker} is a file"),
    ]:
        path = write_sweep(data_dir, spec)
        r = resolve_sweep(load_spec(path), path, workdir)
        with pytest.raises(SpecError, match=needle):
            run_sweep(r, Console(file=io.StringIO()))


def test_model_config_without_model_type(data_dir):
    model = data_dir / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 8}))
    _expect(data_dir, sweep_dict(model=str(model)), "has no usable config.json")


def test_unreachable_hub_id_is_one_quick_line(data_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    lines = _expect(data_dir, sweep_dict(model="nobody/no-such-model"), "HF_HUB_OFFLINE is set")
    assert time.perf_counter() - started < 10
    assert sum("no-such-model" in line for line in lines) == 1, lines


def test_fixed_concurrency_that_cannot_fit_is_refused_before_ray(data_dir):
    from orchestrator.runner import _check_local_fit

    path = write_sweep(data_dir, sweep_dict(search__max_concurrent_trials=512, search__num_trials=1024))
    r = resolve_sweep(load_spec(path), path, data_dir / "work")
    with pytest.raises(SpecError, match="search.max_concurrent_trials: 512 trials at once do not fit"):
        _check_local_fit(r)


def test_cli_prints_user_text_verbatim_and_caps_echoes(tmp_path):
    """Markup in a label or a --set value is neither interpreted nor a crash; long echoes are capped."""
    write_csv(tmp_path / "train.csv", [(t, f"[/b]{y}") for t, y in review_rows(24, seed=1)])
    write_csv(tmp_path / "dev.csv", [(t, f"[/b]{y}") for t, y in review_rows(8, seed=2)])
    path = write_sweep(tmp_path, sweep_dict())
    ok = cli("validate", str(path), timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "labels [/b]negative, [/b]positive" in ok.stdout

    bad = cli("validate", str(path), "--set", "search.num_trials=[red]" + "x" * 5000, timeout=120)
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
    assert "(got '[red]xxx" in bad.stderr  # verbatim, and cut short
    assert max(len(line) for line in bad.stderr.splitlines()) < 600
