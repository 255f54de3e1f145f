"""scripts/bench.py without running it: its options, the commands and variables of the
by-hand baselines, and issue 16's target table. Nothing is installed or timed here (tests
never assert speed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kboot_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_of_the_two_targets_parses(bench: ModuleType) -> None:
    args = bench.build_parser().parse_args(
        ["--quick", "--runs", "3", "--profiles", "numpy", "jax-cpu"]
    )
    assert (args.quick, args.runs, args.profiles) == (True, 3, ["numpy", "jax-cpu"])
    defaults = bench.build_parser().parse_args([])
    assert defaults.quick is False and defaults.profiles == ["numpy", "jax-cpu"]


def test_careful_user_compiles_bytecode_and_b_does_not(bench: ModuleType) -> None:
    careful = bench.uv_install("/v/bin/python", ["keras"], compile_bytecode=True)
    plain = bench.uv_install("/v/bin/python", ["keras"], compile_bytecode=False)
    assert careful[1:3] == ["pip", "install"] and "--compile-bytecode" in careful
    assert "--compile-bytecode" not in plain
    assert careful[-3:] == ["--python", "/v/bin/python", "keras"]


def test_first_imports_run_as_a_user_runs_each_environment(bench: ModuleType) -> None:
    caller = {
        "PATH": "/usr/bin",
        "KERAS_HOME": "/scratch/keras-home",
        "KERAS_BACKEND": "torch",
        "PYTHONDONTWRITEBYTECODE": "1",  # the caller's shell: never leaks into "default"
    }
    environs = bench.import_environs(caller, "jax")
    assert set(environs) == {(s, m) for s in ("pip", "k") for m in ("nowrite", "default")}
    for side in ("pip", "k"):
        assert environs[side, "nowrite"]["PYTHONDONTWRITEBYTECODE"] == "1"
        assert "PYTHONDONTWRITEBYTECODE" not in environs[side, "default"]
        assert environs[side, "default"]["PATH"] == "/usr/bin"
    for mode in ("nowrite", "default"):
        assert environs["pip", mode]["KERAS_BACKEND"] == "jax"
        assert environs["pip", mode]["KERAS_HOME"] == "/scratch/keras-home"
        # kboot's environment: its own keras.json, found through its start-up file
        assert "KERAS_BACKEND" not in environs["k", mode]
        assert "KERAS_HOME" not in environs["k", mode]


def test_target_table_holds_issue_16s_limits(bench: ModuleType) -> None:
    limits = {(top, bottom): limit for _, top, bottom, limit in bench.TARGETS}
    assert limits == {
        ("k_nowrite", "pip_nowrite"): 1.10,
        ("k_default", "pip_default"): 1.10,
        ("k", "c"): 1.05,
    }


def test_verdicts_pass_at_the_limit_and_miss_beyond_it(bench: ModuleType) -> None:
    medians = {
        "k_nowrite": 2.2,  # 1.10 of pip: at the limit
        "pip_nowrite": 2.0,
        "k_default": 2.3,  # 1.15: beyond
        "pip_default": 2.0,
        "k": 10.0,
        "c": 10.0,
    }
    found = [(round(ratio, 3), met, cpu) for _, ratio, _, met, cpu in bench.verdicts(medians)]
    assert found == [(1.1, True, None), (1.15, False, None), (1.0, True, None)]
    medians.update(k_cpu=12.0, c_cpu=10.0)  # the CPU twin, where measured
    assert bench.verdicts(medians)[2][4] == pytest.approx(1.2)


def test_bench_help_runs(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.build_parser().parse_args(["--help"])
    assert exited.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("quick", [True, False])
def test_report_names_each_target(
    quick: bool,
    bench: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The report's code path with the measured steps replaced by fixed figures."""
    kboot_python = tmp_path / "k" / "bin" / "python"
    monkeypatch.setattr(bench, "by_hand_pip", lambda *a: (10.0, tmp_path / "a" / "bin" / "python"))
    monkeypatch.setattr(bench, "by_hand_careful", lambda *a: (8.0, 2.0))
    steps = {"install": 6.0, "smoke": 2.0, "rest": 0.4}
    monkeypatch.setattr(bench, "with_kboot", lambda *a: (8.8, steps, kboot_python))
    imports = {"k_nowrite": 2.0, "pip_nowrite": 2.0, "k_default": 2.0, "pip_default": 1.5}
    imports |= {f"{key}_cpu": 1.0 for key in list(imports)}
    monkeypatch.setattr(bench, "first_imports", lambda *a: dict(imports))
    clock = iter(range(0, 1000, 3))  # each variant "spends" 3 CPU seconds
    monkeypatch.setattr(bench, "cpu", lambda: float(next(clock)))
    monkeypatch.setattr(bench, "by_hand_uv", lambda *a: (9.0, 1.5))
    options = ["--quick"] if quick else []
    args = bench.build_parser().parse_args([*options, "--runs", "1", "--profiles", "numpy"])
    overheads: list[tuple[str, float, float]] = []
    bench.baselines(args, tmp_path, {}, overheads)
    out = capsys.readouterr().out
    assert "PYTHONDONTWRITEBYTECODE=1: kboot/pip venv: 1.00 (target <= 1.10) PASS" in out
    assert "first import keras: kboot/pip venv: 1.33 (target <= 1.10) MISS" in out
    assert "kboot create / careful user (c): 1.10 (target <= 1.05) MISS" in out
    assert "kboot/pip venv: 1.33 (target <= 1.10) MISS; CPU time ratio 1.00" in out
    assert "import + one op 2.00 s" in out
    if quick:  # no (b): neither its column nor the probe's overhead against its import
        assert "CPU seconds: a 4.00, c 3.00, k 3.00; kboot/c 1.00" in out
        assert overheads == []
    else:
        assert "CPU seconds: a 4.00, b 3.00, c 3.00, k 3.00; kboot/c 1.00" in out
        assert overheads == [("numpy", 2.0 - 1.5, 0.0)]
