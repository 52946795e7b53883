"""The hdlfast command: info, demo, label (outputs, report, and exit code 2 on bad files)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import hdlfast
from hdlfast import cli
from hdlfast.datasets import hypersphere_mixture


def test_info_reports_backends(capsys):
    assert cli.main(["info"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"cuda", "native", "numba", "default_cpu"}
    assert out["numba"]["built"]
    assert out == {**hdlfast.info()}


def test_demo_runs_on_digits(capsys):
    assert cli.main(["demo", "--per-class", "2", "--draws", "2", "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "1797 points" in out and "LabelSpreading" in out
    row = [line for line in out.splitlines() if line.strip().startswith("2 ")][0]
    hdl_acc = float(row.split()[1])
    assert 50 < hdl_acc <= 100


def test_command_is_installed():
    res = subprocess.run([sys.executable, "-m", "hdlfast.cli", "info"], capture_output=True,
                         text=True, check=True)
    assert "native" in res.stdout


@pytest.fixture
def files(tmp_path):
    x, y = hypersphere_mixture(600, 16, n_classes=4, spread=0.8, seed=3)
    labels = np.full(600, -1)
    rng = np.random.default_rng(0)
    for c in range(4):
        labels[rng.choice(np.nonzero(y == c)[0], 5, replace=False)] = c
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "lab.npy", labels)
    np.savetxt(tmp_path / "lab.txt", labels, fmt="%d")
    return tmp_path, x, y, labels


@pytest.mark.parametrize("method", ["hdl", "knn-dv", "tree"])
@pytest.mark.parametrize("k", ["auto", "8"])
def test_label_writes_outputs_and_report(files, method, k):
    d, x, y, labels = files
    out = d / f"out-{method}-{k}.npz"
    assert cli.main(["label", str(d / "emb.npy"), str(d / "lab.txt"), "-o", str(out),
                     "--k", k, "--method", method, "--quiet"]) == 0
    res = np.load(out)
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(res.files) == {"labels", "confidence", "level", "provenance"}
    assert res["labels"].shape == (600,) and (res["labels"] >= 0).all()
    np.testing.assert_array_equal(res["labels"][labels >= 0], labels[labels >= 0])
    assert (res["labels"] == y).mean() > 0.8
    assert report["n_points"] == 600 and report["n_labeled"] == 20
    assert sum(report["provenance_counts"].values()) == 600
    assert report["k_rule"] == ("holdout" if k == "auto" else "given")
    # kNN-DV with a given k searches only against the labeled points: no graph of all points
    assert report["knn"]["built"] == (method != "knn-dv" or k == "auto")
    if k != "auto":
        assert report["k"] == 8
        if method == "knn-dv":
            assert report["knn"]["method"] is None
            np.testing.assert_array_equal(res["labels"], hdlfast.knn_vote(x, labels, 8)[0])
        if method == "hdl":
            expected = hdlfast.hdl(x, labels, 8)
            np.testing.assert_array_equal(res["labels"], expected.labels)
            np.testing.assert_array_equal(res["level"], expected.level)
    assert len(report["clusterability"]["mu"]) == len(report["clusterability"]["k"]) >= 1


def test_label_knn_dv_with_given_k_builds_no_graph_of_all_points(files, monkeypatch):
    """kNN-DV votes each unlabeled point against the labeled points only, so with k given
    (nothing to choose on a graph) no graph of all points is searched."""
    d, x, y, labels = files

    def no_graph(*args, **kwargs):
        raise AssertionError("hdlfast label built a kNN graph of all points")

    monkeypatch.setattr(hdlfast, "knn", no_graph)
    out = d / "out-dv.npz"
    assert cli.main(["label", str(d / "emb.npy"), str(d / "lab.npy"), "-o", str(out),
                     "--k", "8", "--method", "knn-dv", "--quiet"]) == 0
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(out)["labels"], hdlfast.knn_vote(x, labels, 8)[0])


@pytest.mark.parametrize("choice", ["exact", "ivf", "auto"])
def test_label_knn_choice_is_reported(files, choice):
    d, x, y, labels = files
    out = d / f"out-{choice}.npz"
    assert cli.main(["label", str(d / "emb.npy"), str(d / "lab.npy"), "-o", str(out),
                     "--k", "8", "--knn", choice, "--nprobe", "3", "--quiet"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    ran = "ivf" if choice == "ivf" else "exact"  # 600 points: auto searches exactly
    assert report["knn"]["method"] == ran and report["knn"]["k"] == 8
    graph = hdlfast.knn(x, 8, method=ran, nprobe=3)
    assert report["knn"]["recall"] == graph.recall
    assert report["knn"]["nprobe"] == (3 if ran == "ivf" else None)
    assert report["knn"]["target_recall"] == 0.99
    expected = hdlfast.hdl(x, labels, 8, graph=graph)
    np.testing.assert_array_equal(np.load(out)["labels"], expected.labels)


@pytest.mark.parametrize("extra", [["--knn", "hnsw"], ["--nprobe", "0"],
                                   ["--target-recall", "1.5"],
                                   ["--knn", "ivf", "--device", "cuda"]])
def test_label_rejects_bad_knn_options_with_exit_2(files, extra, capsys):
    d, x, y, labels = files
    code = cli.main(["label", str(d / "emb.npy"), str(d / "lab.npy"), "-o", str(d / "o.npz"),
                     "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hdlfast label: error:") and "Traceback" not in err
    assert not (d / "o.npz").exists()


def test_label_plot(files):
    pytest.importorskip("matplotlib")
    d, *_ = files
    assert cli.main(["label", str(d / "emb.npy"), str(d / "lab.npy"), "-o", str(d / "o.npz"),
                     "--k", "6", "--plot", str(d / "curve.png"), "--quiet"]) == 0
    assert (d / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bad(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content) if isinstance(content, bytes) else np.save(p, content)
    return str(p)


@pytest.mark.parametrize("case", ["missing", "garbage_npy", "truncated_npy", "text_emb",
                                  "int_emb", "1d_emb", "length_mismatch", "float_labels",
                                  "no_labeled", "bad_k", "huge_k", "nan_emb", "garbage_txt"])
def test_label_rejects_bad_files_with_exit_2(files, case, capsys):
    d, x, y, labels = files
    emb, lab = str(d / "emb.npy"), str(d / "lab.npy")
    extra = []
    if case == "missing":
        emb = str(d / "nope.npy")
    elif case == "garbage_npy":
        emb = _bad(d, "g.npy", b"\x93NUMPY garbage" * 10)
    elif case == "truncated_npy":
        emb = _bad(d, "t.npy", (d / "emb.npy").read_bytes()[:200])
    elif case == "text_emb":
        emb = _bad(d, "e.txt", b"1 2 3")
    elif case == "int_emb":
        emb = _bad(d, "i.npy", np.ones((600, 4), np.int32))
    elif case == "1d_emb":
        emb = _bad(d, "v.npy", np.ones(600, np.float32))
    elif case == "length_mismatch":
        lab = _bad(d, "short.npy", labels[:-3])
    elif case == "float_labels":
        lab = _bad(d, "f.npy", labels + 0.5)
    elif case == "no_labeled":
        lab = _bad(d, "none.npy", np.full(600, -1))
    elif case == "bad_k":
        extra = ["--k", "zero"]
    elif case == "huge_k":
        extra = ["--k", "600"]
    elif case == "nan_emb":
        bad = x.copy()
        bad[5, 2] = np.nan
        emb = _bad(d, "nan.npy", bad)
    elif case == "garbage_txt":
        lab = _bad(d, "lab.csv", b"1\nfoo\n2\n")
    code = cli.main(["label", emb, lab, "-o", str(d / "o.npz"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hdlfast label: error:") and "Traceback" not in err


def test_label_bad_file_from_the_shell_has_no_traceback(tmp_path):
    emb = tmp_path / "e.npy"
    emb.write_bytes(b"not an array")
    res = subprocess.run([sys.executable, "-m", "hdlfast.cli", "label", str(emb), str(emb),
                          "-o", str(tmp_path / "o.npz")], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "error" in res.stderr


def test_label_device_cuda_without_a_gpu_exits_2(files, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    d, *_ = files
    code = cli.main(["label", str(d / "emb.npy"), str(d / "lab.npy"), "-o", str(d / "o.npz"),
                     "--device", "cuda", "--quiet"])
    assert code == 2 and "--device cuda needs" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["label"], ["nonsense"], ["bench", "--repeats", "x"],
                                  ["demo", "--draws"], []])
def test_usage_errors_are_one_line_and_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err


def test_version_and_python_dash_m():
    res = subprocess.run([sys.executable, "-m", "hdlfast", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"hdlfast {hdlfast.__version__}"
    res = subprocess.run([sys.executable, "-m", "hdlfast", "info"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "native" in json.loads(res.stdout)


def test_package_metadata_has_one_version_and_a_license():
    from importlib import metadata
    from pathlib import Path

    assert metadata.version("hdlfast") == hdlfast.__version__
    assert metadata.metadata("hdlfast")["License"] == "MIT"
    assert (Path(hdlfast.__file__).parent / "py.typed").exists()


def test_every_option_has_help_text():
    import argparse

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"hdlfast {name} {action.option_strings or action.dest}"
    for action in parser._actions:
        assert action.help, action.option_strings
