"""The command line never shows a traceback for a bad file: corrupt, truncated, lying or
mismatched inputs of ``hdlfast label`` (and ``hdlfast bench --sizes FILE``) exit with code 2
and exactly one line on stderr, ``hdlfast <command>: error: ...``.

Random inputs come from seeded numpy generators, so every run checks the same few hundred
files. ``hdlfast.cli.main`` is called in-process (it must never raise); warnings count as
output too, since from a shell they would print extra lines on stderr.
"""
import io
import pickle
import subprocess
import sys
import traceback
import warnings
import zipfile

import numpy as np
import pytest

from hdlfast import cli

N, D = 40, 4


def _run(argv, capsys):
    """(exit code, stdout, stderr, warnings) of cli.main(argv); fails on any exception."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main([str(a) for a in argv])
        except BaseException:  # noqa: BLE001 - SystemExit included: main returns its code
            pytest.fail(f"cli.main({argv!r}) raised:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    return code, out, err, [f"{w.category.__name__}: {w.message}" for w in caught]


def _assert_usage_error(result, command="label", what=""):
    code, out, err, caught = result
    lines = err.splitlines()
    context = f"{what}: exit {code}, stderr {err!r}, warnings {caught}"
    assert code == 2, context
    assert len(lines) == 1 and err.endswith("\n"), context
    assert lines[0].startswith(f"hdlfast {command}: error: "), context
    assert "Traceback" not in err, context
    assert not caught, context
    assert out == "", context
    return lines[0]


def _assert_clean(result, what=""):
    """Either accepted (exit 0, nothing on stderr) or a clean one-line usage error."""
    code, out, err, caught = result
    if code == 0:
        assert err == "" and not caught, f"{what}: stderr {err!r}, warnings {caught}"
    else:
        _assert_usage_error(result, what=what)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A small valid problem (two clusters, four labeled points) in every file format."""
    d = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(7)
    centres = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    x = (centres[np.arange(N) % 2] + 0.1 * rng.normal(size=(N, D))).astype(np.float32)
    y = np.full(N, -1, np.int64)
    y[:4] = [0, 1, 0, 1]
    np.save(d / "emb.npy", x)
    np.savez(d / "emb.npz", embeddings=x)
    np.save(d / "lab.npy", y)
    np.savetxt(d / "lab.txt", y, fmt="%d")
    return d, x, y


def _label(tmp_path, emb, lab, *extra):
    """A label command writing out.npz (replaced run after run: --force)."""
    return ["label", emb, lab, "-o", tmp_path / "out.npz", "--force", "--quiet", "--k", "3",
            "--method", "knn-dv", *extra]


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def _npy(shape, descr="<f4", data=b"", fortran=False, header=None):
    """A version-1.0 .npy file with the given header (``header`` bytes: verbatim)."""
    h = header if header is not None else repr(
        {"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_the_valid_files_are_accepted(valid, tmp_path, capsys):
    d, *_ = valid
    for emb in ("emb.npy", "emb.npz"):
        for lab in ("lab.npy", "lab.txt"):
            code, _, err, caught = _run(_label(tmp_path, d / emb, d / lab), capsys)
            assert code == 0 and err == "" and not caught, (emb, lab, err, caught)
    assert set(np.load(tmp_path / "out.npz").files) == {"labels", "confidence", "level",
                                                        "provenance"}


# --- random bytes ---------------------------------------------------------------------------

_PREFIXES = [b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"PK\x03\x04",
             b"PK\x05\x06", b"\x80\x02", b"{", b"-1\n"]


def _random_files(rng, count):
    """Random byte strings of varied length, some behind a real magic number so that the
    parsers get past their first check."""
    for i in range(count):
        size = int(rng.choice([0, 1, 7, 64, 200, 1000, 5000]))
        body = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        yield i, _PREFIXES[i % len(_PREFIXES)] + body


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".txt", ".bin"])
def test_random_bytes_as_embeddings(valid, tmp_path, capsys, suffix):
    d, *_ = valid
    rng = np.random.default_rng(1000 + len(suffix) + ord(suffix[1]))
    for i, content in _random_files(rng, 45):
        emb = _write(tmp_path / f"r{i}{suffix}", content)
        _assert_usage_error(_run(_label(tmp_path, emb, d / "lab.npy"), capsys),
                            what=f"{emb.name} {content[:16]!r}")


@pytest.mark.parametrize("suffix", [".npy", ".txt", ".csv", ".npz"])
def test_random_bytes_as_labels(valid, tmp_path, capsys, suffix):
    d, *_ = valid
    rng = np.random.default_rng(2000 + ord(suffix[1]))
    for i, content in _random_files(rng, 45):
        lab = _write(tmp_path / f"r{i}{suffix}", content)
        _assert_usage_error(_run(_label(tmp_path, d / "emb.npy", lab), capsys),
                            what=f"{lab.name} {content[:16]!r}")


def test_random_text_as_labels(valid, tmp_path, capsys):
    """Text made of the characters of numbers: parses sometimes, never as 40 good labels."""
    d, *_ = valid
    rng = np.random.default_rng(3)
    alphabet = np.array(list("0123456789-+.eE \t\n,#;naifNAIF\r"))
    for i in range(60):
        text = "".join(rng.choice(alphabet, int(rng.integers(0, 300))))
        lab = _write(tmp_path / f"t{i}.txt", text.encode())
        _assert_usage_error(_run(_label(tmp_path, d / "emb.npy", lab), capsys),
                            what=f"{text[:40]!r}")


def test_byte_flips_in_valid_files(valid, tmp_path, capsys):
    """A few random bytes of a valid file replaced: loads (changed data) or exits 2."""
    d, *_ = valid
    rng = np.random.default_rng(11)
    sources = {"emb.npy": "emb", "emb.npz": "emb", "lab.npy": "lab", "lab.txt": "lab"}
    for name, role in sources.items():
        raw = bytearray((d / name).read_bytes())
        for i in range(12):
            bad = bytearray(raw)
            # half the flips hit the header, where they matter most
            limit = 128 if i % 2 else len(bad)
            for pos in rng.integers(0, min(limit, len(bad)), int(rng.integers(1, 9))):
                bad[pos] = int(rng.integers(0, 256))
            f = _write(tmp_path / f"flip{i}_{name}", bytes(bad))
            emb, lab = (f, d / "lab.npy") if role == "emb" else (d / "emb.npy", f)
            _assert_clean(_run(_label(tmp_path, emb, lab), capsys), what=f.name)


# --- truncated files ------------------------------------------------------------------------


@pytest.mark.parametrize("name,role", [("emb.npy", "emb"), ("emb.npz", "emb"),
                                       ("lab.npy", "lab"), ("lab.txt", "lab")])
def test_truncated_files(valid, tmp_path, capsys, name, role):
    d, *_ = valid
    raw = (d / name).read_bytes()
    cuts = sorted({*range(0, 160), *np.linspace(0, len(raw) - 1, 40).astype(int).tolist()})
    cuts = [c for c in cuts if c < len(raw) - (1 if name.endswith(".txt") else 0)]
    for cut in cuts[::2] if len(cuts) > 100 else cuts:
        f = _write(tmp_path / f"cut{cut}_{name}", raw[:cut])
        emb, lab = (f, d / "lab.npy") if role == "emb" else (d / "emb.npy", f)
        _assert_usage_error(_run(_label(tmp_path, emb, lab), capsys), what=f"cut at {cut}")


def test_truncated_torch_file(valid, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    d, x, _ = valid
    torch.save(torch.from_numpy(x), tmp_path / "full.pt")
    raw = (tmp_path / "full.pt").read_bytes()
    for cut in np.linspace(0, len(raw) - 1, 25).astype(int):
        f = _write(tmp_path / f"cut{cut}.pt", raw[:cut])
        _assert_usage_error(_run(_label(tmp_path, f, d / "lab.npy"), capsys),
                            what=f"cut at {cut}")


# --- lying headers, pickles, wrong dtypes and shapes ----------------------------------------


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_npy_header_that_lies(valid, tmp_path, capsys, container):
    d, x, _ = valid
    data = x.tobytes()
    cases = {
        "more_rows": _npy((N + 1, D), data=data),
        "more_cols": _npy((N, D + 1), data=data),
        "million_rows": _npy((10**6, D), data=data),
        "exabytes": _npy((10**10, 10**8), data=data),
        "overflowing": _npy((2**62, 2**62), data=data),
        "negative": _npy((-1, D), data=data),
        "fewer_rows": _npy((N - 1, D), data=data),  # loads: the lengths then disagree
        "float64_descr": _npy((N, D), descr="<f8", data=data),
        "int_descr": _npy((N, D), descr="<i4", data=data),
        "object_descr": _npy((N, D), descr="|O", data=data),
        "void_descr": _npy((N, D), descr="|V4", data=data),
        "bogus_descr": _npy((N, D), descr="<q9", data=data),
        "fortran_lie": _npy((N + 1, D), fortran=True, data=data),
        "header_not_dict": _npy(None, header=b"[1, 2, 3]", data=data),
        "header_code": _npy(None, header=b"__import__('os').getcwd()", data=data),
        "header_missing_key": _npy(None, header=b"{'descr': '<f4', 'shape': (40, 4)}",
                                   data=data),
        "header_extra_key": _npy(None, header=b"{'descr': '<f4', 'fortran_order': False, "
                                 b"'shape': (40, 4), 'x': 1}", data=data),
        "shape_not_ints": _npy(None, header=b"{'descr': '<f4', 'fortran_order': False, "
                               b"'shape': (40.5, 4)}", data=data),
        "header_len_too_big": b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f4'" + data[:64],
        "bad_version": b"\x93NUMPY\x09\x00" + _npy((N, D), data=data)[8:],
    }
    for name, content in cases.items():
        if container == "npz":
            content = _zip({"embeddings.npy": content})
        f = _write(tmp_path / f"{name}.{container}", content)
        _assert_usage_error(_run(_label(tmp_path, f, d / "lab.npy"), capsys), what=name)
    # the same lies in a labels file
    y = np.zeros(N, np.int64)
    y[5:] = -1
    for name, shape in {"more": (N + 1,), "huge": (10**10,), "neg": (-5,)}.items():
        f = _write(tmp_path / f"lab_{name}.npy", _npy(shape, descr="<i8", data=y.tobytes()))
        _assert_usage_error(_run(_label(tmp_path, d / "emb.npy", f), capsys), what=name)


class _Boom:
    """Unpickling this would create the marker file: loading must never unpickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_arrays_and_pickles_are_never_loaded(valid, tmp_path, capsys):
    d, x, y = valid
    marker = tmp_path / "PWNED"
    evil = pickle.dumps([_Boom(marker)])
    obj = np.empty((N, D), dtype=object)
    obj[...] = 1.0
    obj[0, 0] = _Boom(marker)
    files = {}
    np.save(tmp_path / "obj_emb.npy", obj, allow_pickle=True)
    np.save(tmp_path / "obj_lab.npy", np.array([_Boom(marker)] * N, dtype=object),
            allow_pickle=True)
    np.savez(tmp_path / "obj_emb.npz", embeddings=obj)
    files["obj_emb.npy"] = "emb"
    files["obj_lab.npy"] = "lab"
    files["obj_emb.npz"] = "emb"
    for suffix, role in ((".npy", "emb"), (".npz", "emb"), (".pt", "emb"), (".pth", "emb"),
                         (".npy", "lab"), (".txt", "lab")):
        name = f"pickle_{role}{suffix}"
        _write(tmp_path / name, evil)
        files[name] = role
    _write(tmp_path / "pickle_member.npz", _zip({"embeddings.npy": evil}))
    files["pickle_member.npz"] = "emb"
    have_torch = True
    try:
        import torch

        torch.save({"embeddings": torch.from_numpy(x), "boom": _Boom(marker)},
                   tmp_path / "evil.pt")
        files["evil.pt"] = "emb"
    except ImportError:
        have_torch = False
    for name, role in files.items():
        if name.endswith((".pt", ".pth")) and not have_torch:
            continue
        f = tmp_path / name
        emb, lab = (f, d / "lab.npy") if role == "emb" else (d / "emb.npy", f)
        _assert_usage_error(_run(_label(tmp_path, emb, lab), capsys), what=name)
        assert not marker.exists(), f"{name} was unpickled"


_BAD_EMB = {
    "int32": np.ones((N, D), np.int32), "int64": np.ones((N, D), np.int64),
    "uint8": np.ones((N, D), np.uint8), "bool": np.ones((N, D), bool),
    "complex64": np.ones((N, D), np.complex64), "complex128": np.ones((N, D), np.complex128),
    "str": np.full((N, D), "1.0"), "bytes": np.full((N, D), b"1.0"),
    "longdouble": np.ones((N, D), np.longdouble),
    "datetime": np.zeros((N, D), "datetime64[s]"), "timedelta": np.zeros((N, D), "m8[s]"),
    "structured": np.zeros((N, D), [("a", "<f4")]),
    "0d": np.float32(1.0), "1d": np.ones(N, np.float32), "3d": np.ones((N, 2, 2), np.float32),
    "no_rows": np.ones((0, D), np.float32), "no_cols": np.ones((N, 0), np.float32),
    "one_row": np.ones((1, D), np.float32),
}


@pytest.mark.parametrize("case", sorted(_BAD_EMB))
def test_wrong_embedding_dtypes_and_shapes(valid, tmp_path, capsys, case):
    d, *_ = valid
    arr = np.asarray(_BAD_EMB[case])
    labels = d / "lab.npy"
    if arr.ndim >= 1 and arr.shape[0] != N:  # lengths agree: the shape itself is at fault
        lab = np.full(arr.shape[0], -1)
        lab[:1] = 0
        np.save(tmp_path / "lab.npy", lab)
        labels = tmp_path / "lab.npy"
    np.save(tmp_path / "e.npy", arr)
    np.savez(tmp_path / "e.npz", embeddings=arr)
    for f in ("e.npy", "e.npz"):
        _assert_usage_error(_run(_label(tmp_path, tmp_path / f, labels), capsys),
                            what=f"{case} {f}")


_BAD_LAB = {
    "fractional": np.where(np.arange(N) < 4, 0.5, -1.0),
    "nan": np.where(np.arange(N) < 4, np.nan, -1.0), "inf": np.full(N, np.inf),
    "complex": np.zeros(N, np.complex64), "bool": np.ones(N, bool),
    "str": np.full(N, "1"), "datetime": np.zeros(N, "datetime64[s]"),
    "structured": np.zeros(N, [("a", "<i8")]),
    "0d": np.int64(3), "2d": np.zeros((N, 2), np.int64), "3d": np.zeros((N, 1, 1), np.int64),
    "empty": np.zeros(0, np.int64),
    "shorter": np.zeros(N - 1, np.int64), "longer": np.zeros(N + 1, np.int64),
    "all_unlabeled": np.full(N, -1), "below_minus_one": np.r_[[0, 1], np.full(N - 2, -2)],
    "too_large": np.r_[[2**31 - 1], np.full(N - 1, -1)],
    "int64_max": np.r_[[np.iinfo(np.int64).max], np.full(N - 1, -1)],
    "uint64_huge": np.full(N, 2**64 - 1, np.uint64),
    "float_huge": np.r_[[1e300], np.full(N - 1, -1.0)],
}


@pytest.mark.parametrize("case", sorted(_BAD_LAB))
def test_wrong_label_dtypes_shapes_and_values(valid, tmp_path, capsys, case):
    d, *_ = valid
    np.save(tmp_path / "l.npy", np.asarray(_BAD_LAB[case]))
    _assert_usage_error(_run(_label(tmp_path, d / "emb.npy", tmp_path / "l.npy"), capsys),
                        what=case)


@pytest.mark.parametrize("case", ["nan", "inf", "-inf", "zero_row", "nan_float16", "all_nan"])
def test_non_finite_and_zero_rows(valid, tmp_path, capsys, case):
    d, x, _ = valid
    bad = x.astype(np.float16 if case == "nan_float16" else np.float32)
    row = 17
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "zero_row": 0.0,
             "nan_float16": np.nan, "all_nan": np.nan}[case]
    if case == "zero_row":
        bad[row] = 0.0
    elif case == "all_nan":
        bad[:] = np.nan
        row = 0
    else:
        bad[row, 2] = value
    np.save(tmp_path / "e.npy", bad)
    line = _assert_usage_error(_run(_label(tmp_path, tmp_path / "e.npy", d / "lab.npy"),
                                    capsys), what=case)
    assert "e.npy" in line and f"row {row}" in line


@pytest.mark.parametrize("content", [
    b"0\n1\nfoo\n" + b"0\n" * N, b"0,1\n-1,-1\n", b"0 1\n2\n", b"\x00\n" * N,
    b"# only a comment\n", b"\n\n\n", b"0.5\n" * N, b"nan\n" * N, b"1e999\n" * N,
    b"99999999999999999999999\n" * N, b"-7\n" * N, b"[0, 1]\n", b"0\n" * (N - 1),
    b"0\n" * (N + 1), b"-1\n" * N, b"0 1 2 3\n" * (N // 4 + 1), b"0\n\xff\xfe\n" * 20,
    b"0;1\n" * N, b"1.0000001\n" * N, b"-1.5\n" * N,
])
def test_labels_text_with_garbage_lines(valid, tmp_path, capsys, content):
    d, *_ = valid
    lab = _write(tmp_path / "lab.txt", content)
    _assert_usage_error(_run(_label(tmp_path, d / "emb.npy", lab), capsys),
                        what=repr(content[:30]))


@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbf0\n" + b"0\n" * (N - 1), b"0\r" * N, b"0\r\n" * N, b"0x1\n" * N,
    b"1_0\n" * N, "\u0661\n".encode() * N, "\u00a0 1\n".encode() * N, b"+1\n" * N,
    b"1.\n" * N, b" 1 \n" * N, b"1 # note\n" * N, b"1e0\n" * N, b"0\n\n\n" * N,
])
def test_labels_text_in_odd_spellings(valid, tmp_path, capsys, content):
    """Spellings a parser may or may not accept: a clean result either way."""
    d, *_ = valid
    lab = _write(tmp_path / "lab.txt", content)
    _assert_clean(_run(_label(tmp_path, d / "emb.npy", lab), capsys), what=repr(content[:30]))


# --- paths ----------------------------------------------------------------------------------


def test_missing_empty_and_directory_paths(valid, tmp_path, capsys):
    d, *_ = valid
    good_emb, good_lab = d / "emb.npy", d / "lab.npy"
    (tmp_path / "adir.npy").mkdir()
    bad_embs = [tmp_path / "nope.npy", tmp_path / "adir.npy", tmp_path, tmp_path / ("x" * 300),
                "a" * 5000 + ".npy"]
    for suffix in (".npy", ".npz", ".pt", ".txt", ""):
        bad_embs.append(_write(tmp_path / f"empty{suffix}", b""))
    bad_embs += [_write(tmp_path / "e.csv", b"1,2,3,4\n" * N), good_emb.with_suffix("")]
    for emb in bad_embs:  # (.pt without torch: exits 2 too, asking for torch)
        _assert_usage_error(_run(_label(tmp_path, emb, good_lab), capsys), what=str(emb)[:80])
    bad_labs = [tmp_path / "nope.txt", tmp_path / "adir.npy", tmp_path, "a" * 5000,
                tmp_path / "empty.npy", tmp_path / "empty.txt", tmp_path / "empty",
                d / "emb.npz", d / "emb.npy"]
    for lab in bad_labs:
        _assert_usage_error(_run(_label(tmp_path, good_emb, lab), capsys), what=str(lab)[:80])


def test_unwritable_outputs(valid, tmp_path, capsys):
    d, *_ = valid
    (tmp_path / "taken.npz").mkdir()
    (tmp_path / "taken2.json").mkdir()
    base = ["label", d / "emb.npy", d / "lab.npy", "--quiet", "--k", "3"]
    for extra in (["-o", tmp_path / "no" / "such" / "dir.npz"], ["-o", tmp_path / "taken.npz"],
                  ["-o", tmp_path / "taken2"], ["-o", "a" * 5000],
                  ["-o", tmp_path / "o.npz", "--plot", tmp_path / "no" / "p.png"],
                  ["-o", tmp_path / "o.npz", "--plot", tmp_path]):
        _assert_usage_error(_run([*base, *extra], capsys), what=str(extra)[:80])


def test_bad_options_exit_2(valid, tmp_path, capsys):
    d, *_ = valid
    base = ["label", d / "emb.npy", d / "lab.npy", "-o", tmp_path / "o.npz", "--quiet"]
    for extra in (["--k", "0"], ["--k", "-3"], ["--k", "x"], ["--k", "\u00b2"], ["--k", "40"],
                  ["--max-visits", "0"], ["--max-visits", "-1"]):
        _assert_usage_error(_run([*base, *extra], capsys), what=str(extra))


# --- .npz archives and torch files ----------------------------------------------------------


def test_npz_archives(valid, tmp_path, capsys):
    d, x, _ = valid
    lab = d / "lab.npy"
    np.savez(tmp_path / "several.npz", a=x, b=x)
    np.savez(tmp_path / "none.npz")
    np.savez(tmp_path / "bad_named.npz", embeddings=x.astype(np.int32), other=x)
    np.savez(tmp_path / "X_1d.npz", X=x[:, 0])
    _write(tmp_path / "not_npy_member.npz", _zip({"embeddings.npy": b"hello"}))
    _write(tmp_path / "txt_member.npz", _zip({"embeddings.txt": b"1 2 3 4\n" * N}))
    np.save(tmp_path / "npy_inside.npz", x)  # a .npy under a .npz name
    np.savez(tmp_path / "zip_inside.npy", embeddings=x)
    import shutil

    shutil.move(tmp_path / "zip_inside.npy.npz", tmp_path / "zip_inside.npy")
    for name in ("several.npz", "none.npz", "bad_named.npz", "X_1d.npz",
                 "not_npy_member.npz", "txt_member.npz", "npy_inside.npz", "zip_inside.npy"):
        _assert_usage_error(_run(_label(tmp_path, tmp_path / name, lab), capsys), what=name)
    # and what is accepted: the array named 'embeddings' (or 'X'), or the only one
    np.save(tmp_path / "big_endian.npy", x.astype(">f4"))
    np.savez(tmp_path / "named.npz", embeddings=x, other=x[:3])
    np.savez(tmp_path / "only.npz", whatever=x)
    np.savez(tmp_path / "x.npz", X=x, junk=np.ones(3))
    for name in ("named.npz", "only.npz", "x.npz", "big_endian.npy"):
        code, _, err, caught = _run(_label(tmp_path, tmp_path / name, lab), capsys)
        assert code == 0 and err == "" and not caught, (name, err, caught)


def test_torch_files(valid, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    d, x, _ = valid
    t = torch.from_numpy(x)
    bad = {
        "int": t.to(torch.int32), "complex": t.to(torch.complex64), "bool": t > 0,
        "sparse": t.to_sparse(), "list": [t], "dict_no_key": {"feats": t},
        "dict_not_tensor": {"embeddings": x.tolist()}, "1d": t[:, 0], "3d": t.reshape(N, 2, 2),
        "nan": torch.where(torch.arange(N)[:, None] == 3, torch.nan, t), "none": None,
        "number": 3.0, "empty": torch.ones(0, D),
    }
    for name, obj in bad.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        _assert_usage_error(_run(_label(tmp_path, tmp_path / f"{name}.pt", d / "lab.npy"),
                                 capsys), what=name)
    for name, obj in {"bf16": t.to(torch.bfloat16), "dict": {"embeddings": t.double()},
                      "strided": {"X": torch.cat([t, t], 1)[:, ::2]}}.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        code, _, err, caught = _run(_label(tmp_path, tmp_path / f"{name}.pth", d / "lab.npy"),
                                    capsys)
        assert code == 0 and err == "" and not caught, (name, err, caught)


# --- hdlfast bench --sizes FILE -------------------------------------------------------------


def test_bench_sizes_file_rejects_garbage(tmp_path, capsys):
    """Every case fails before any measurement starts (no floors, no timings)."""
    rng = np.random.default_rng(5)
    files = [_write(tmp_path / f"r{i}.json", content)
             for i, content in _random_files(rng, 30)]
    texts = ["", " ", "null", "true", "3", '"knn"', "[]", "[1, 2]", '{"knn": ', "{'knn': {}}",
             '{"nonsense": {}}', '{"knn": {"bogus": 1}}', '{"knn": {"n": -1}}',
             '{"knn": {"n": 1e999}}', '{"knn": [1, 2]}', '{"knn": {"n": "10"}}',
             '{"knn": {"n": NaN}}', '{"knn": {"n": 10, "k": 20}}', "[" * 100_000,
             '{"a":' * 100_000, "9" * 10_000, "\ufeff{}"]
    files += [_write(tmp_path / f"t{i}.json", s.encode()) for i, s in enumerate(texts)]
    (tmp_path / "adir").mkdir()
    files += [tmp_path / "missing.json", tmp_path / "adir", "b" * 5000]
    for f in files:
        _assert_usage_error(_run(["bench", "--quick", "--repeats", "1", "--only", "knn",
                                  "--sizes", f], capsys), command="bench", what=str(f)[:60])
    for out in (tmp_path / "no" / "r.json", tmp_path / "adir", "c" * 5000):
        line = _assert_usage_error(_run(["bench", "--quick", "--only", "knn", "--repeats", "1",
                                         "--out", out], capsys), command="bench",
                                   what=str(out)[:60])
        assert "--out" in line


# --- from a shell ---------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [b"", b"nan\n", b"\x93NUMPY\x01\x00\xff\xff"])
def test_from_the_shell_one_line_and_no_warnings(valid, tmp_path, labels):
    """The same from a real shell: nothing else (warnings, progress) reaches stderr."""
    d, *_ = valid
    lab = _write(tmp_path / ("lab.npy" if labels.startswith(b"\x93") else "lab.txt"), labels)
    res = subprocess.run([sys.executable, "-m", "hdlfast.cli", "label", str(d / "emb.npy"),
                          str(lab), "-o", str(tmp_path / "o.npz")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("hdlfast label: error: ") and res.stdout == ""


def test_main_reports_multi_line_library_errors_on_one_line(capsys, monkeypatch):
    def fail(args):
        raise ValueError("first line\nsecond line\n\n  third")

    monkeypatch.setattr(cli, "_info", fail)
    line = _assert_usage_error(_run(["info"], capsys), command="info")
    assert line == "hdlfast info: error: first line second line third"
