"""The command line's error contract, as one table.

For every command and bad input: exit status 1 (2 for bad usage), exactly one line on
stderr, no traceback, nothing on stdout, and no file written or changed anywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from test_card import make_card_dict

from dcsi.card import Card, write_card_files
from dcsi.cli import main


@pytest.fixture
def ws(tmp_path, rng):
    """A small workspace: a card folder, broken cards, images, targets."""
    from PIL import Image

    card = Card(make_card_dict(rng))
    write_card_files(card, tmp_path / "card", report=False)
    (tmp_path / "card" / "report.html").write_text("<html>REPORT</html>", encoding="utf-8")
    text = card.to_json()

    def bad(name: str, content: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "dcsi.json").write_text(content, encoding="utf-8")

    bad("nan", text.replace('"value": 0.4375', '"value": NaN', 1))
    bad("inf", text.replace('"value": 0.4375', '"value": 1e400', 1))
    bad("dup", text.replace('"value": 0.4375', '"value": 0.4375, "value": 1', 1))
    bad("deep", text.replace('"seed": 0', '"seed": ' + "[" * 100_000 + "]" * 100_000, 1))
    bad("bigint", text.replace('"n_images": ', '"n_images": 1' + "0" * 5000 + ', "x": ', 1))
    d = card.to_dict()
    d["similarity"]["Bad Kind " + "x" * 2000] = d["similarity"]["ssim"]
    bad("kind", json.dumps(d))
    bad("notjson", "{not json")
    d = card.to_dict()
    d["schema_version"] = "9.0.0"
    bad("newer", json.dumps(d))
    d = card.to_dict()
    d["index"]["value"] = 0.9
    (tmp_path / "stale").mkdir()
    for name in ("README.md", "croissant.json", "report.html"):
        (tmp_path / "stale" / name).write_bytes((tmp_path / "card" / name).read_bytes())
    Card(d).save(tmp_path / "stale")  # a run killed after dcsi.json

    for c, base in (("cats", 60), ("dogs", 180)):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(3):
            img = np.clip(base + rng.normal(0, 25, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "images" / c / f"{i}.png")
    (tmp_path / "target").mkdir()
    (tmp_path / "badreadme").mkdir()
    (tmp_path / "badreadme" / "README.md").write_text("---\nlicense: mit\n\tx: 1\n---\n")
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "weights.pth").write_bytes(b"\x80\x04\x95not a state dict")
    return tmp_path


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_test")


def _no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def _hub_unreachable(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def download(*args, **kwargs):
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot "
            "find the requested files in the local cache.\nPlease check your connection."
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "hf_hub_download", download)
    monkeypatch.setenv("HF_TOKEN", "hf_test")


def _upload_fails(monkeypatch):
    from huggingface_hub.errors import EntryNotFoundError

    client = importlib.import_module(huggingface_hub.errors.Response.__module__.split(".")[0])

    def download(*args, **kwargs):
        raise EntryNotFoundError("404: no README")

    def commit(*args, **kwargs):
        raise client.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub.HfApi, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", commit)
    monkeypatch.setenv("HF_TOKEN", "hf_test")


# (id, argv with {ws} for the workspace, exit status, expected text, optional setup)
CASES = [
    # analyze / redundancy / leakage
    ("analyze-missing-source", "analyze {ws}/nope --out {ws}/o", 1, "nope", None),
    (
        "analyze-unknown-backbone",
        "analyze {ws}/images --out {ws}/o --backbone nope --analyzers cnn --no-cache",
        1,
        "'backbone'",
        None,
    ),
    (
        "analyze-pickle-weights",
        "analyze {ws}/images --out {ws}/o --weights {ws}/weights.pth --analyzers cnn --no-cache",
        1,
        "not a plain state dict",
        None,
    ),
    ("analyze-bad-analyzer", "analyze {ws}/images --out {ws}/o --analyzers nope", 1, "nope", None),
    (
        "analyze-ray-address-local-engine",
        "analyze {ws}/images --out {ws}/o --ray-address 127.0.0.1:6379",
        1,
        "applies to engine='ray'",
        None,
    ),
    (
        "analyze-ray-address-unreachable",
        "analyze {ws}/images --out {ws}/o --engine ray --ray-address 127.0.0.1:1",
        1,
        "Cannot reach a Ray cluster at 127.0.0.1:1",
        None,
    ),
    ("redundancy-missing-source", "redundancy {ws}/nope --out {ws}/o", 1, "nope", None),
    (
        "leakage-missing-train",
        "leakage --train {ws}/nope --test {ws}/images --out {ws}/o",
        1,
        "nope",
        None,
    ),
    # card validate / show
    ("validate-missing", "card validate {ws}/nope", 1, "No dcsi card at", None),
    ("validate-not-json", "card validate {ws}/notjson", 1, "is not valid UTF-8 JSON", None),
    ("validate-nan", "card validate {ws}/nan", 1, "NaN, which is not JSON", None),
    ("validate-1e400", "card validate {ws}/inf", 1, "1e400, too large", None),
    (
        "validate-duplicate-key",
        "card validate {ws}/dup",
        1,
        "the key 'value' twice at 'index'",
        None,
    ),
    ("validate-100000-deep", "card validate {ws}/deep", 1, "nested more than 64 levels", None),
    ("validate-5000-digits", "card validate {ws}/bigint", 1, "at 'dataset.n_images'", None),
    ("validate-bad-kind-name", "card validate {ws}/kind", 1, "at 'similarity.Bad Kind", None),
    ("validate-newer-major", "card validate {ws}/newer", 1, "newer major version", None),
    ("validate-stale-views", "card validate {ws}/stale", 1, "made from another dcsi.json", None),
    ("show-missing", "card show {ws}/nope", 1, "No dcsi card at", None),
    ("show-nan", "card show {ws}/nan", 1, "NaN", None),
    ("show-negative-pairs", "card show {ws}/card --pairs -1", 1, "--pairs must be >= 0", None),
    # card attach
    (
        "attach-missing-folder",
        "card attach {ws}/card --to {ws}/nope",
        1,
        "is not an existing folder",
        None,
    ),
    ("attach-bad-readme", "card attach {ws}/card --to {ws}/badreadme", 1, "not valid YAML", None),
    ("attach-bad-card", "card attach {ws}/dup --to {ws}/target", 1, "twice", None),
    (
        "attach-push-to-file",
        "card attach {ws}/card --to {ws}/a_file.txt --push",
        1,
        "is a file",
        None,
    ),
    (
        "attach-push-no-repo-id",
        "card attach {ws}/card --to {ws}/target --push",
        1,
        "needs --repo-id",
        None,
    ),
    (
        "attach-push-offline-env",
        "card attach {ws}/card --to me/ds --push",
        1,
        "HF_HUB_OFFLINE",
        _offline,
    ),
    (
        "attach-push-offline-local",
        "card attach {ws}/card --to {ws}/target --push --repo-id me/ds",
        1,
        "HF_HUB_OFFLINE",
        _offline,
    ),
    (
        "attach-push-no-token",
        "card attach {ws}/card --to {ws}/target --push --repo-id me/ds",
        1,
        "needs a Hugging Face token",
        _no_token,
    ),
    (
        "attach-push-unreachable",
        "card attach {ws}/card --to me/ds --push",
        1,
        "could not reach the Hugging Face Hub",
        _hub_unreachable,
    ),
    (
        "attach-push-upload-fails",
        "card attach {ws}/card --to me/ds --push",
        1,
        "could not be reached",
        _upload_fails,
    ),
    ("index-k-zero", "index {ws}/images --out {ws}/o -k 0", 1, "-k must be at least 1", None),
    ("index-out-file", "index {ws}/images --out {ws}/a_file.txt", 1, "is a file", None),
    ("index-no-head", "index {ws}/images --out {ws}/o --head {ws}/nope", 1, "--head", None),
    ("index-missing-source", "index {ws}/nothing --out {ws}/o", 1, "no such file", None),
    (
        "search-no-index",
        "search {ws}/card {ws}/images/cats/0.png",
        1,
        "No neighbour index",
        None,
    ),
    ("search-k-zero", "search {ws}/card {ws}/images/cats/0.png -k 0", 1, "-k must be", None),
    # bad usage: exit 2
    ("usage-nothing", "", 2, "the following arguments are required: COMMAND", None),
    ("usage-index-bad-method", "index {ws}/images --out {ws}/o --method hnsw", 2, "invalid", None),
    ("usage-search-no-image", "search {ws}/card", 2, "IMAGE", None),
    ("usage-unknown-command", "frobnicate", 2, "invalid choice", None),
    ("usage-card-no-action", "card", 2, "ACTION", None),
    ("usage-attach-no-to", "card attach {ws}/card", 2, "--to", None),
    ("usage-analyze-no-out", "analyze {ws}/images", 2, "--out", None),
    (
        "usage-analyze-bad-device",
        "analyze {ws}/images --out {ws}/o --device tpu",
        2,
        "invalid choice",
        None,
    ),
    ("usage-show-pairs-not-int", "card show {ws}/card --pairs many", 2, "invalid int value", None),
]


@pytest.mark.parametrize(
    ("argv", "status", "expected", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_table(ws, capsys, monkeypatch, argv, status, expected, setup):
    if setup is not None:
        setup(monkeypatch)
    args = [a.replace("{ws}", str(ws)) for a in argv.split()]
    before = _snapshot(ws)
    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == status, captured.err
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    assert captured.err.startswith("dcsi: error: " if status == 1 else "dcsi")
    assert "Traceback" not in captured.err and expected in captured.err
    assert len(captured.err) < 500
    assert captured.out == ""
    assert _snapshot(ws) == before  # no partial output
    assert not (ws / "o").exists()


# -- output that must not break the terminal or the pipe ------------------------------
def test_printable_escapes_control_characters():
    from dcsi.cli import printable

    assert (
        printable("cat\x1b[31mred\x07\x9b\u202e\nnext\tcol")
        == "cat\\x1b[31mred\\x07\\x9b\\u202e\nnext\tcol"
    )
    assert printable("plain Ünïcode 猫") == "plain Ünïcode 猫"


def test_show_escapes_ansi_in_class_names(rng, tmp_path, capsys):
    d = make_card_dict(rng)
    d["dataset"]["classes"][0] = "evil\x1b[2J\x1b]0;title\x07"
    d["dataset"]["name"] = "name\x1b[31m"
    Card(d).save(tmp_path)
    assert main(["card", "show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x1b]0;title\\x07" in out and "name\\x1b[31m" in out


def test_show_into_a_closed_pipe_is_quiet(rng, tmp_path):
    # 120 classes, all 7,140 pairs: far more than a pipe buffer, so `head -1` surely
    # closes the pipe while dcsi is still writing
    d = make_card_dict(rng)
    k = 120
    d["dataset"]["classes"] = [f"c{i}" for i in range(k)]
    d["dataset"]["class_counts"] = [5] * k
    d["dataset"]["n_images"] = 5 * k
    d["similarity"] = {
        "cnn_cosine": {
            "matrix": np.random.default_rng(1).uniform(size=(k, k)),
            "diagonal": "x",
            "params": {},
        }
    }
    d["class_clusters"]["partitions"] = {"2": [0] * 60 + [1] * 60}
    d.pop("features")
    Card(d).save(tmp_path)
    cmd = (
        f"{sys.executable} -m dcsi card show {tmp_path} --pairs 100000 | head -1; "
        'echo "status=${PIPESTATUS[0]}"'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.stdout.startswith("dataset: synthetic")
    assert "status=141" in proc.stdout
    assert proc.stderr == "", proc.stderr


def test_debug_shows_dcsi_debug_lines_not_pil(ws):
    from PIL import Image

    img = ws / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    code = (
        "import logging, sys\n"
        "from PIL import Image\n"
        "from dcsi.cli import main\n"
        f"main(['card', 'show', {str(ws / 'card')!r}])\n"
        f"Image.open({str(img)!r}).load()\n"
        "logging.getLogger('dcsi.test').debug('dcsi debug line')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DCSI_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dcsi debug line" in proc.stderr
    assert "STREAM" not in proc.stderr and "PIL" not in proc.stderr


def test_every_command_output_and_log_line_is_escaped(monkeypatch, capsys):
    import dcsi.cli.card as cli_card

    def fake(args):
        print("class \x1b[2Jname")
        return 0

    monkeypatch.setattr(cli_card, "_cmd_validate", fake)  # any command's print
    assert main(["card", "validate", "x"]) == 0
    assert capsys.readouterr().out == "class \\x1b[2Jname\n"
    code = (
        "import logging\n"
        "import dcsi.cli.card as c\n"
        "from dcsi.cli import main\n"
        "def fake(args):\n"
        "    logging.getLogger('dcsi.test').warning('class \\x1b]0;title\\x07')\n"
        "    return 0\n"
        "c._cmd_validate = fake\n"
        "raise SystemExit(main(['card', 'validate', 'x']))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "dcsi: WARNING: class \\x1b]0;title\\x07\n"


def test_hub_retry_log_lines_are_hidden(ws, monkeypatch, capsys, caplog):
    import logging

    from huggingface_hub.errors import LocalEntryNotFoundError

    def download(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "hf_hub_download", download)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert main(["card", "attach", str(ws / "card"), "--to", "me/ds", "--push"]) == 1
    assert "Retrying" not in caplog.text
    assert capsys.readouterr().err.count("\n") == 1
    assert logging.getLogger("huggingface_hub").level != logging.ERROR  # restored
