"""Integer C models written for these tests in EvoApproxLib's file format, and an independent
way to evaluate them.

The header metrics below were computed for these tests from the models' exact definitions
(numpy over all 65,536 operand pairs, EvoApproxLib's metric definitions) and printed at
EvoApproxLib's usual precision; the PDK45 lines are invented values that only exercise the
parser. None of these circuits is EvoApproxLib's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

_LICENSE = """/***
* A test model for approxsim, written in EvoApproxLib's file format.
* This file contains a circuit written for approxsim's tests.
***/
"""

# 8-bit unsigned exact multiplier, shift-and-add, EvoApproxLib's newer (B, A) signature.
EXACT_U8 = (
    _LICENSE
    + """// MAE% = 0.00 %
// MAE = 0
// WCE% = 0.00 %
// WCE = 0
// WCRE% = 0.00 %
// EP% = 0.00 %
// MRE% = 0.00 %
// MSE = 0
// PDK45_PWR = 0.391 mW
// PDK45_AREA = 710.0 um2
// PDK45_DELAY = 1.40 ns
#include <stdint.h>
#include <stdlib.h>

uint64_t mul8u_TEXA(const uint64_t B,const uint64_t A)
{
  uint64_t O = 0;
  for (int k = 0; k < 8; k++)
    if ((A >> k) & 1) O += B << k;
  return O;
}
"""
)

# Drops every partial-product bit a_i b_j with i + j < 6 (truncated columns).
TRUNC6_HEADER = """// MAE% = 0.1225 %
// MAE = 80.25
// WCE% = 0.4898 %
// WCE = 321
// WCRE% = 100.00 %
// EP% = 93.75 %
// MRE% = 2.638 %
// MSE = 9158.25
// PDK45_PWR = 0.301 mW
// PDK45_AREA = 598.3 um2
// PDK45_DELAY = 1.33 ns
"""

TRUNC6_BODY = """#include <stdint.h>
#include <stdlib.h>

uint16_t mul8u_TTR6(uint8_t a, uint8_t b)
{
  uint16_t p = 0;
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++)
      if (i + j >= 6)
        p += (uint16_t)((((a >> i) & 1) & ((b >> j) & 1)) << (i + j));
  return p;
}
"""

TRUNC6_U8 = _LICENSE + TRUNC6_HEADER + TRUNC6_BODY

# Asymmetric: the first operand (parameter B) is used whole, the second (A) loses its two
# lowest bits. Reading the parameters by name instead of order would transpose the table.
ASYM_U8 = (
    _LICENSE
    + """// MAE% = 0.2918 %
// MAE = 191.25
// WCE% = 1.1673 %
// WCE = 765
// WCRE% = 100.00 %
// EP% = 74.71 %
// MRE% = 3.566 %
// MSE = 76011.25
#include <stdint.h>
#include <stdlib.h>

uint64_t mul8u_TASY(const uint64_t B,const uint64_t A)
{
  return B * (A & 0xFCu);
}
"""
)

# Signed, typed uint8_t/uint16_t as some signed EvoApproxLib files are: the exact two's
# complement product with its four lowest bits cleared.
SIGNED_BODY = """#include <stdint.h>
#include <stdlib.h>

uint16_t {name}(uint8_t A, uint8_t B)
{{
  int16_t p = (int16_t)((int8_t)A * (int8_t)B);
  return (uint16_t)(p & ~15);
}}
"""
SIGNED_HEADER = """// MAE% = 0.0099 %
// MAE = 6.5
// WCE% = 0.0229 %
// WCE = 15
// WCRE% = 1500.00 %
// EP% = 81.25 %
// MRE% = 1.294 %
// MSE = 65.25
"""
SIGNED_S8 = _LICENSE + SIGNED_HEADER + SIGNED_BODY.format(name="mul8s_TSGN")


def operand_values(signed: bool) -> np.ndarray:
    """All 8-bit operand values in table order."""
    return np.arange(-128, 128) if signed else np.arange(256)


def trunc6_reference() -> np.ndarray:
    """The truncated-columns model in numpy, bit by bit."""
    v = np.arange(256, dtype=np.int64)
    out = np.zeros((256, 256), dtype=np.int64)
    for i in range(8):
        for j in range(8):
            if i + j >= 6:
                out += (((v[:, None] >> i) & 1) & ((v[None, :] >> j) & 1)) << (i + j)
    return out


def run_standalone(tmp: Path, source: str, function: str, call: str) -> np.ndarray:
    """Evaluate a model on all 65,536 8-bit pairs with a separately compiled program.

    Args:
        tmp: A scratch folder.
        source: The model's C source.
        function: Its function name.
        call: A C expression of ``int a, int b`` (operand values) giving the product as a
            ``long long``, e.g. ``(long long)(int16_t)f((uint8_t)a, (uint8_t)b)``.

    Returns:
        int64 ``(256, 256)``: row = a, ascending operand values (unsigned 0..255 or signed
        -128..127 as the call's loop bounds say, see ``signed`` in the program).
    """
    (tmp / "model_under_test.c").write_text(source)
    signed = "s" in function.split("_")[0]
    lo, hi = (-128, 127) if signed else (0, 255)
    main = f"""#include <stdio.h>
#include <stdint.h>
#include "model_under_test.c"
int main(void) {{
  for (int a = {lo}; a <= {hi}; a++)
    for (int b = {lo}; b <= {hi}; b++) {{
      long long p = {call};
      fwrite(&p, sizeof p, 1, stdout);
    }}
  return 0;
}}
"""
    (tmp / "standalone.c").write_text(main)
    exe = tmp / "standalone"
    subprocess.run(["cc", "-O1", "-o", str(exe), str(tmp / "standalone.c")], check=True)
    raw = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.int64).reshape(256, 256).copy()
