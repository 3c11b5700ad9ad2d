"""Multiplier.from_c: C/C++ functional models compiled, evaluated over the grid and checked."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mult_c_sources import (
    BF16_C,
    BROKEN_C,
    CUDA_FORCEINLINE_C,
    CUDA_QUALIFIED_C,
    CUDA_QUALIFIED_CC,
    DECLARED_ONLY_C,
    DOUBLE_C,
    DOUBLE_CC,
    EXACT_C,
    EXPONENT_DEPENDENT_C,
    MBM_CC,
    MITCHELL_C,
    TRUNC_INL,
    ZERO_C,
)
from mult_reference import as_bits, assert_same_bits, from_bits, normal_bits, reference_products

import approxsim
from approxsim.multipliers import CompilerNotFoundError
from approxsim.multipliers.cmodel import CModel, compile_model

MISMATCH_RE = re.compile(r"on (\d+) of (\d+) random operand pairs \(([0-9.e+-]+)%\)")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def src_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("c-sources")


@pytest.fixture(scope="module")
def mitchell_c(module_cache: Path, src_dir: Path) -> Iterator[tuple[Path, approxsim.Multiplier]]:
    """The Mitchell C model, built once for the module."""
    path = write(src_dir, "mitchell.c", MITCHELL_C)
    yield path, approxsim.Multiplier.from_c(path, "mitchell_mul", 7)


def assert_same_multiplier(got: approxsim.Multiplier, name: str) -> None:
    """Same LUT bits, M, rounding (so the same fingerprint) and the same products."""
    want = approxsim.get_multiplier(name)
    assert got.mantissa_bits == want.mantissa_bits
    assert got.rounding == want.rounding
    np.testing.assert_array_equal(as_bits(got.lut), as_bits(want.lut))
    assert got.fingerprint == want.fingerprint
    rng = np.random.default_rng(3)
    a, b = normal_bits(rng, 5000), normal_bits(rng, 5000)
    assert_same_bits(got(from_bits(a), from_bits(b)), reference_products(name, a, b), a, b)


# ----------------------------------------------------------------------------- models that build
def test_c_mitchell_with_pointer_punning_equals_mitchell7(mitchell_c) -> None:
    path, mult = mitchell_c
    assert_same_multiplier(mult, "mitchell7")
    prov = mult.provenance
    assert prov["builder"] == "c"
    assert prov["function"] == "mitchell_mul"
    assert prov["language"] == "c"
    assert prov["source_file"] == "mitchell.c"
    assert prov["source_sha256"] == hashlib.sha256(MITCHELL_C.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", prov["cache_key"])
    report = prov["decomposability"]
    assert report["mismatches"] == 0
    assert report["mismatch_rate"] == 0.0
    assert report["samples"] > 1000
    assert prov["accepted_mismatch"] is False
    assert mult.name == "mitchell_mul@mitchell.c"


@pytest.mark.parametrize("m", [3, 5])
def test_flags_reach_the_compiler(src_dir: Path, m: int) -> None:
    path = write(src_dir, "mitchell_flags.c", MITCHELL_C)
    mult = approxsim.Multiplier.from_c(path, "mitchell_mul", m, flags=[f"-DMBITS={m}"])
    assert_same_multiplier(mult, f"mitchell{m}")
    assert mult.provenance["flags"] == [f"-DMBITS={m}"]


def test_cpp_mbm_in_namespace_with_overload_equals_mbm7(src_dir: Path) -> None:
    path = write(src_dir, "mbm.cc", MBM_CC)
    mult = approxsim.Multiplier.from_c(path, "approx::mbm_mul", 7)
    assert mult.provenance["language"] == "c++"
    assert_same_multiplier(mult, "mbm7")


def test_cpp_template_in_inl_file_equals_trunc5(src_dir: Path) -> None:
    path = write(src_dir, "trunc.inl", TRUNC_INL)
    mult = approxsim.Multiplier.from_c(path, "trunc_mul5", 5, name="trunc-from-inl")
    assert mult.provenance["language"] == "c++"
    assert mult.name == "trunc-from-inl"
    assert_same_multiplier(mult, "trunc5")


def test_rounding_model_needs_nearest(src_dir: Path) -> None:
    path = write(src_dir, "bf16.c", BF16_C)
    mult = approxsim.Multiplier.from_c(path, "bf16_mul", 7, rounding="nearest")
    assert_same_multiplier(mult, "bf16")
    with pytest.raises(approxsim.NotDecomposableError, match="rounding='nearest'"):
        approxsim.Multiplier.from_c(path, "bf16_mul", 7, rounding="truncate")


def test_source_text_instead_of_a_path(mitchell_c) -> None:
    mult = approxsim.Multiplier.from_c(MITCHELL_C, "mitchell_mul", 7)
    assert mult.provenance["source_file"] is None
    assert mult.fingerprint == mitchell_c[1].fingerprint


def test_source_text_as_cpp(mitchell_c) -> None:
    mult = approxsim.Multiplier.from_c(MITCHELL_C, "mitchell_mul", 7, language="c++")
    assert mult.provenance["language"] == "c++"
    assert mult.fingerprint == mitchell_c[1].fingerprint


def test_path_given_as_string(mitchell_c) -> None:
    path, built = mitchell_c
    mult = approxsim.Multiplier.from_c(str(path), "mitchell_mul", 7)
    assert mult.fingerprint == built.fingerprint
    assert mult.provenance["source_file"] == "mitchell.c"


@pytest.mark.parametrize(
    ("filename", "text"),
    [("cuda_model.c", CUDA_QUALIFIED_C), ("cuda_model.cc", CUDA_QUALIFIED_CC)],
)
def test_cuda_qualifiers_compile(src_dir: Path, filename: str, text: str) -> None:
    path = write(src_dir, filename, text)
    mult = approxsim.Multiplier.from_c(path, "cuda_trunc_mul", 7)
    assert_same_multiplier(mult, "trunc7")


# ----------------------------------------------------------------------------- not decomposable
@pytest.mark.parametrize(
    ("filename", "text", "function"),
    [("exact.c", EXACT_C, "exact_mul"), ("odd.c", EXPONENT_DEPENDENT_C, "odd_mul")],
)
def test_not_decomposable_model_is_refused(
    src_dir: Path, filename: str, text: str, function: str
) -> None:
    path = write(src_dir, filename, text)
    with pytest.raises(approxsim.NotDecomposableError) as info:
        approxsim.Multiplier.from_c(path, function, 7)
    msg = str(info.value)
    assert f"{function}@{filename}" in msg
    assert "Counter-example" in msg
    assert re.search(r"model\([^)]*\[0x[0-9a-f]{8}\]", msg)
    found = MISMATCH_RE.search(msg)
    assert found is not None, msg
    mismatches, samples, percent = int(found[1]), int(found[2]), float(found[3])
    assert 0 < mismatches <= samples
    assert percent == pytest.approx(100 * mismatches / samples, rel=1e-2)
    assert "accept_mismatch=True" in msg

    mult = approxsim.Multiplier.from_c(path, function, 7, accept_mismatch=True)
    report = mult.provenance["decomposability"]
    assert report["mismatch_rate"] > 0
    assert report["mismatches"] == mismatches
    assert mult.provenance["accepted_mismatch"] is True
    assert "example" in report
    # On the grid itself both models are the exact product of 7-bit operands.
    np.testing.assert_array_equal(
        as_bits(mult.lut), as_bits(approxsim.get_multiplier("trunc7").lut)
    )


def test_invalid_lut_values_are_refused(src_dir: Path) -> None:
    path = write(src_dir, "zero.c", ZERO_C)
    with pytest.raises(approxsim.MultiplierError, match=r"entry \[0, 0\].*positive normal"):
        approxsim.Multiplier.from_c(path, "zero_mul", 4)


# ----------------------------------------------------------------------------- build failures
def test_compile_error_carries_compiler_output_and_command(src_dir: Path) -> None:
    path = write(src_dir, "broken.c", BROKEN_C)
    with pytest.raises(approxsim.CompilerError) as info:
        approxsim.Multiplier.from_c(path, "broken_mul", 7)
    assert type(info.value) is approxsim.CompilerError
    msg = str(info.value)
    assert "command:" in msg
    assert "-shared" in msg and "harness.c" in msg
    assert "compiler output:" in msg
    assert "expected expression" in msg  # the compiler's own diagnostic
    assert "broken.c:4" in msg  # ...pointing at the user's file and line


@pytest.mark.parametrize(
    ("filename", "text"), [("has_mitchell.c", MITCHELL_C), ("has_mbm.cc", MBM_CC)]
)
def test_function_not_found(src_dir: Path, filename: str, text: str) -> None:
    path = write(src_dir, filename, text)
    with pytest.raises(approxsim.FunctionNotFoundError, match="no_such_mul"):
        approxsim.Multiplier.from_c(path, "no_such_mul", 7)


@pytest.mark.parametrize("function", ["approx::no_such_mul", "no_such_ns::mbm_mul"])
def test_namespaced_function_not_found(src_dir: Path, function: str) -> None:
    path = write(src_dir, "ns_mbm.cc", MBM_CC)
    with pytest.raises(approxsim.FunctionNotFoundError):
        approxsim.Multiplier.from_c(path, function, 7)


@pytest.mark.parametrize(
    ("filename", "text", "function"),
    [("double.c", DOUBLE_C, "dmul"), ("double.cc", DOUBLE_CC, "n::dmul")],
)
def test_wrong_signature(src_dir: Path, filename: str, text: str, function: str) -> None:
    path = write(src_dir, filename, text)
    with pytest.raises(approxsim.WrongSignatureError, match=re.escape(function)):
        approxsim.Multiplier.from_c(path, function, 7)


def test_c_model_with_forceinline_builds(src_dir: Path) -> None:
    path = write(src_dir, "cuda_inline.c", CUDA_FORCEINLINE_C)
    mult = approxsim.Multiplier.from_c(path, "cuda_trunc_mul", 7)
    assert mult.fingerprint == approxsim.get_multiplier("trunc7").fingerprint


def test_declared_but_undefined_function_is_a_compiler_error(src_dir: Path) -> None:
    path = write(src_dir, "declared.c", DECLARED_ONLY_C)
    with pytest.raises(approxsim.CompilerError, match="ghost_mul"):
        approxsim.Multiplier.from_c(path, "ghost_mul", 7)


def test_path_string_with_parentheses(tmp_path: Path) -> None:
    folder = tmp_path / "models (v2)"
    folder.mkdir()
    path = write(folder, "mitchell.c", MITCHELL_C)
    mult = approxsim.Multiplier.from_c(str(path), "mitchell_mul", 7)
    assert mult.fingerprint == approxsim.get_multiplier("mitchell7").fingerprint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.c"):
        approxsim.Multiplier.from_c(tmp_path / "nope.c", "f", 7)
    with pytest.raises(FileNotFoundError, match="nope.c"):
        approxsim.Multiplier.from_c(str(tmp_path / "nope.c"), "f", 7)


@pytest.mark.parametrize("m", [0, 12, -1, "seven", 7.0, True, None])
def test_mantissa_bits_out_of_range(mitchell_c, m) -> None:
    with pytest.raises(approxsim.MultiplierError, match="mantissa_bits"):
        approxsim.Multiplier.from_c(mitchell_c[0], "mitchell_mul", m)


def test_compiler_not_found(mitchell_c) -> None:
    with pytest.raises(CompilerNotFoundError, match="no-such-cc-approxsim"):
        approxsim.Multiplier.from_c(
            mitchell_c[0], "mitchell_mul", 7, compiler="no-such-cc-approxsim"
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"language": "fortran"}, "language"),
        ({"rounding": "up"}, "rounding"),
        ({"check_samples": 0}, "check_samples"),
    ],
)
def test_bad_options(mitchell_c, kwargs: dict, match: str) -> None:
    with pytest.raises(approxsim.MultiplierError, match=match):
        approxsim.Multiplier.from_c(mitchell_c[0], "mitchell_mul", 7, **kwargs)


def test_invalid_function_name(mitchell_c) -> None:
    with pytest.raises(approxsim.MultiplierError, match="function name"):
        approxsim.Multiplier.from_c(mitchell_c[0], "mitchell_mul; int x", 7)


def test_without_cache(mitchell_c, isolated_cache: Path) -> None:
    mult = approxsim.Multiplier.from_c(mitchell_c[0], "mitchell_mul", 7, cache_results=False)
    assert mult.fingerprint == mitchell_c[1].fingerprint
    section = isolated_cache / "c-models"
    assert not section.exists() or not any(section.iterdir())


def test_products_equal_the_compiled_model(mitchell_c) -> None:
    """Decomposable means: LUT products equal the C model itself on in-range operands."""
    path, mult = mitchell_c
    rng = np.random.default_rng(9)
    a, b = normal_bits(rng, 20000), normal_bits(rng, 20000)
    build = path.parent / "direct-build"
    build.mkdir(exist_ok=True)
    so = compile_model(MITCHELL_C, "mitchell_mul", "c", shutil.which("cc"), build)
    model = CModel(so, "mitchell_mul")
    want = model(a.view(np.float32), b.view(np.float32))
    got = mult(torch.from_numpy(a.view(np.float32)), torch.from_numpy(b.view(np.float32)))
    np.testing.assert_array_equal(as_bits(got), want.view(np.uint32))
