"""Drop-in replacements named and shaped like the functions of the SSL codebases hdlfast
accelerates: same names, argument names, defaults and outputs, so switching is an import
line. One module per codebase: :mod:`hdlfast.compat.usl`, :mod:`hdlfast.compat.scan`,
:mod:`hdlfast.compat.sela`, :mod:`hdlfast.compat.swav` and :mod:`hdlfast.compat.ncl` (all but
usl need torch)."""
