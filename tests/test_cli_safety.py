"""The command line never loses the user's data and never blows up on small hostile files.

- It refuses to write over any of its inputs (resolved paths: symlinks and hard links
  included), refuses to replace an existing output unless ``--force``, writes exactly the
  names it was given (``-o run.v2`` -> run.v2.npz + run.v2.json) and writes atomically (a
  temporary file renamed into place: a failed write leaves the old file; a symlink at the
  output is replaced, its target untouched).
- Sizes and row counts come from the file headers before anything is allocated, with a
  limit the user can raise (``--max-gib``); every failure is one line and exit code 2,
  MemoryError included.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from hdlfast import cli

N = 120


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 6)).astype(np.float32)
    y = np.full(N, -1)
    y[:6] = np.arange(6) % 3
    np.save(tmp_path / "emb.npy", x)
    np.savez(tmp_path / "emb.npz", embeddings=x)
    np.save(tmp_path / "lab.npy", y)
    np.savetxt(tmp_path / "lab.json", y, fmt="%d")  # text labels, whatever the suffix
    return tmp_path


def run(capsys, *argv):
    code = cli.main(["label", *map(str, argv), "--quiet", "--k", "3"])
    err = capsys.readouterr().err.strip()
    return code, err


def refused(capsys, *argv, words=()):
    code, err = run(capsys, *argv)
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    for w in words:
        assert w in err, err
    return err


def snapshot(*paths):
    return {p: p.read_bytes() for p in paths}


def test_output_is_an_input(files, capsys):
    d = files
    before = snapshot(d / "emb.npz", d / "emb.npy", d / "lab.npy", d / "lab.json")
    refused(capsys, d / "emb.npz", d / "lab.npy", "-o", d / "emb.npz", "--force",
            words=["input"])
    # the report of -o lab is lab.json: the labels file
    refused(capsys, d / "emb.npy", d / "lab.json", "-o", d / "lab", "--force", words=["input"])
    # through a symlink and through a hard link
    os.symlink(d / "emb.npy", d / "link.npz")
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "link.npz", "--force",
            words=["input"])
    os.link(d / "lab.npy", d / "hard.npz")
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "hard.npz", "--force",
            words=["input"])
    # --plot onto an input, and two outputs onto one file
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "o.npz", "--plot", d / "emb.npy",
            "--force", words=["input"])
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "o.npz", "--plot", d / "o.json",
            words=["also"])
    assert snapshot(*before) == before
    assert not (d / "o.npz").exists()


def test_existing_outputs_need_force(files, capsys):
    d = files
    (d / "out.npz").write_bytes(b"keep me")
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "out.npz", words=["--force"])
    assert (d / "out.npz").read_bytes() == b"keep me"
    (d / "new.json").write_bytes(b"keep me too")  # the report counts as an output
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "new.npz", words=["new.json"])
    assert not (d / "new.npz").exists()
    assert run(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "out.npz", "--force")[0] == 0
    assert set(np.load(d / "out.npz").files) == {"labels", "confidence", "level",
                                                 "provenance"}


def test_a_symlinked_output_is_replaced_not_followed(files, capsys):
    d = files
    target = d / "precious.bin"
    target.write_bytes(b"precious")
    os.symlink(target, d / "o.npz")
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "o.npz", words=["exists"])
    assert run(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "o.npz", "--force")[0] == 0
    assert target.read_bytes() == b"precious"
    assert not (d / "o.npz").is_symlink() and "labels" in np.load(d / "o.npz").files


def test_exact_output_names(files, capsys):
    d = files
    assert run(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "run.v2")[0] == 0
    assert (d / "run.v2.npz").is_file() and (d / "run.v2.json").is_file()
    assert not (d / "run.npz").exists()
    assert run(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "plain.npz")[0] == 0
    assert (d / "plain.npz").is_file() and (d / "plain.json").is_file()
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_a_failed_write_leaves_the_old_output(files, capsys, monkeypatch):
    d = files
    (d / "out.npz").write_bytes(b"old")

    def broken(fh, **arrays):
        fh.write(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken)
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "out.npz", "--force",
            words=["No space left"])
    assert (d / "out.npz").read_bytes() == b"old"
    assert [p.name for p in d.iterdir() if p.name.endswith(".tmp")] == []


def _npy_header_only(path, shape, dtype="<f4"):
    """A .npy file whose header claims ``shape`` but holds almost no data."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)


def test_sizes_are_checked_from_headers(files, capsys):
    d = files
    _npy_header_only(d / "huge.npy", (10**9, 512))  # 2 TB claimed, 100 bytes on disk
    refused(capsys, d / "huge.npy", d / "lab.npy", "-o", d / "o.npz", words=["limit", "GiB"])
    _npy_header_only(d / "rows.npy", (10**6, 4))  # fits, but not the labels' length
    refused(capsys, d / "rows.npy", d / "lab.npy", "-o", d / "o.npz", words=[f"{N} labels"])
    # the limit can be lowered and raised
    refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "o.npz", "--max-gib", "1e-7",
            words=["--max-gib"])
    assert run(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "o.npz", "--max-gib", "1")[0] == 0
    for bad in ("inf", "nan", "-1", "0", "x"):
        refused(capsys, d / "emb.npy", d / "lab.npy", "-o", d / "p.npz", "--max-gib", bad,
                words=["--max-gib"])


def test_npz_members_are_checked_before_inflating(files, capsys, tmp_path):
    big = np.zeros((200_000, 256), np.float32)  # 200 MB of zeros: about 200 KB compressed
    np.savez_compressed(tmp_path / "bomb.npz", embeddings=big)
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 20
    refused(capsys, tmp_path / "bomb.npz", files / "lab.npy", "-o", tmp_path / "o.npz",
            words=[f"{N} labels"])
    refused(capsys, tmp_path / "bomb.npz", files / "lab.npy", "-o", tmp_path / "o.npz",
            "--max-gib", "0.05", words=["limit"])


def test_expanded_torch_views_are_checked_before_copying(files, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    view = torch.ones(1, 4).expand(200_000_000, 4)  # 3.2 GB as float32, 16 bytes stored
    torch.save({"embeddings": view}, tmp_path / "view.pt")
    assert (tmp_path / "view.pt").stat().st_size < 1 << 16
    refused(capsys, tmp_path / "view.pt", files / "lab.npy", "-o", tmp_path / "o.npz",
            words=[f"{N} labels"])
    # and without ever materialising it: peak memory of a fresh process well below 3.2 GB
    script = ("import resource, sys; from hdlfast import cli; "
              f"code = cli.main(['label', {str(tmp_path / 'view.pt')!r}, "
              f"{str(files / 'lab.npy')!r}, '-o', {str(tmp_path / 'o2.npz')!r}, '--quiet']); "
              "print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd="/", check=True).stdout.split()
    assert out[0] == "2" and int(out[1]) < 1_000_000, out  # ru_maxrss in KiB


def test_memory_errors_are_one_line(files, capsys, monkeypatch):
    import hdlfast

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(hdlfast, "knn", no_memory)
    refused(capsys, files / "emb.npy", files / "lab.npy", "-o", files / "o.npz",
            words=["out of memory"])
