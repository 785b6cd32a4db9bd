"""``dcsi card validate | show | attach`` (push against a mocked Hub API, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import DatasetCard
from test_card import make_card_dict

from dcsi.card import Card, load_card, write_card_files
from dcsi.card.hf import HF_KEY, hf_block
from dcsi.cli import main

EXISTING = "---\nlicense: mit\ntags:\n- vision\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n\n# Dataset\n\nBody text.\n"


@pytest.fixture
def card(rng):
    return Card(make_card_dict(rng))


@pytest.fixture
def card_dir(card, tmp_path):
    out = tmp_path / "card"
    write_card_files(card, out, report=False)
    (out / "report.html").write_text("<html>REPORT</html>", encoding="utf-8")
    return out


# -- validate ----------------------------------------------------------------------
def test_validate_ok(card_dir, capsys):
    assert main(["card", "validate", str(card_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{card_dir}: valid dcsi card (schema 1.0.0")
    assert main(["card", "validate", str(card_dir / "dcsi.json")]) == 0


def test_validate_bad_card_one_line(card_dir, capsys):
    d = json.loads((card_dir / "dcsi.json").read_text())
    d["similarity"]["cnn_cosine"]["matrix"].pop()
    (card_dir / "dcsi.json").write_text(json.dumps(d))
    assert main(["card", "validate", str(card_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "dcsi: error:" in err and "'similarity.cnn_cosine.matrix' is not square" in err


def test_validate_newer_major(card_dir, capsys):
    d = json.loads((card_dir / "dcsi.json").read_text())
    d["schema_version"] = "2.1.0"
    (card_dir / "dcsi.json").write_text(json.dumps(d))
    assert main(["card", "validate", str(card_dir)]) == 1
    assert "newer major version" in capsys.readouterr().err


def test_validate_missing(tmp_path, capsys):
    assert main(["card", "validate", str(tmp_path / "nope")]) == 1
    assert "No dcsi card at" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["card"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["card", "attach", "x"])  # --to is required
    assert exc.value.code == 2


# -- show --------------------------------------------------------------------------
def test_show(card, card_dir, capsys):
    assert main(["card", "show", str(card_dir), "--pairs", "2"]) == 0
    out = capsys.readouterr().out
    assert "index (DCSI): 0.4375" in out
    a, b, v = card.top_pairs(n=1)[0]
    assert f"{a} ~ {b}" in out and f"{v:.4f}" in out
    assert "class clusters (recommended k = 2" in out
    assert "0: class_0, class_1" in out and "1: class_2, class_3" in out
    assert "redundancy (wavelet): 2 groups (1 redundant, 1 conflict)" in out
    assert len([line for line in out.splitlines() if " ~ " in line]) == 2


def test_show_minimal_card(rng, tmp_path, capsys):
    d = make_card_dict(rng)
    for key in ("similarity", "index", "class_clusters", "redundancy", "features"):
        d.pop(key)
    Card(d).save(tmp_path)
    assert main(["card", "show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "index (DCSI): not computed" in out and "redundancy: not run" in out


def test_show_bad_pairs(card_dir, capsys):
    assert main(["card", "show", str(card_dir), "--pairs", "-1"]) == 1
    assert "--pairs must be >= 0. Got -1 instead." in capsys.readouterr().err


def test_show_does_not_import_torch(card_dir):
    code = textwrap.dedent(f"""
        import sys
        from dcsi.cli import main
        rc = main(["card", "show", {str(card_dir)!r}])
        heavy = sorted(m for m in ("torch", "torchvision", "datasets", "matplotlib") if m in sys.modules)
        print("HEAVY", heavy)
        sys.exit(rc)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
    assert "index (DCSI)" in res.stdout


# -- attach (local) --------------------------------------------------------------
def test_attach_to_folder_keeps_readme(card, card_dir, tmp_path, capsys):
    ds = tmp_path / "mydataset"
    ds.mkdir()
    (ds / "README.md").write_text(EXISTING, encoding="utf-8")
    before = DatasetCard.load(ds / "README.md")
    assert main(["card", "attach", str(card_dir), "--to", str(ds)]) == 0
    assert "attached to" in capsys.readouterr().out
    assert load_card(ds) == card
    assert (ds / "croissant.json").is_file()
    assert (ds / "report.html").read_text() == "<html>REPORT</html>"  # copied, not regenerated
    after = DatasetCard.load(ds / "README.md")
    new = after.data.to_dict()
    assert new.pop(HF_KEY) == hf_block(card)
    assert new == before.data.to_dict()
    assert after.text == before.text


def test_attach_not_a_folder_without_push(card_dir, tmp_path, capsys):
    assert main(["card", "attach", str(card_dir), "--to", "someone/some-dataset"]) == 1
    assert "is not an existing folder" in capsys.readouterr().err


def test_attach_to_a_file(card_dir, tmp_path, capsys, monkeypatch):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["card", "attach", str(card_dir), "--to", str(f), "--push"]) == 1
    assert "is a file, not a dataset folder" in capsys.readouterr().err


def test_attach_local_push_needs_repo_id(card_dir, tmp_path, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    assert main(["card", "attach", str(card_dir), "--to", str(ds), "--push"]) == 1
    assert "needs --repo-id OWNER/NAME" in capsys.readouterr().err


# -- attach --push (mocked Hub) --------------------------------------------------
class _FakeHub:
    """Stands in for the Hub's HTTP API: records commits, serves a README."""

    def __init__(self, readme: str | None = EXISTING, missing_repo: bool = False):
        self.readme = readme
        self.missing_repo = missing_repo
        self.commits: list[dict] = []
        self.tokens: list = []

    def install(self, monkeypatch):
        hub = self
        real_init = huggingface_hub.HfApi.__init__

        def init(api, *args, **kwargs):
            hub.tokens.append(kwargs.get("token"))
            real_init(api, *args, **kwargs)

        def download(
            api, repo_id, filename, *, repo_type=None, revision=None, local_dir=None, **kw
        ):
            from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

            assert repo_type == "dataset"
            if hub.missing_repo:
                import huggingface_hub.errors as hf_errors

                resp_cls = hf_errors.Response  # the HTTP library's Response class
                url = f"https://huggingface.co/datasets/{repo_id}/resolve/main/{filename}"
                response = resp_cls(
                    404, request=__import__(resp_cls.__module__).Request("GET", url)
                )
                raise RepositoryNotFoundError(
                    "404 Client Error: Repository Not Found", response=response
                )
            if hub.readme is None:
                raise EntryNotFoundError("404 Client Error: Entry Not Found")
            path = local_dir / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(hub.readme, encoding="utf-8")
            return str(path)

        def create_commit(
            api, repo_id, operations, *, commit_message, repo_type=None, revision=None, **kw
        ):
            files = {op.path_in_repo: op.path_or_fileobj for op in operations}
            hub.commits.append(
                {
                    "repo_id": repo_id,
                    "repo_type": repo_type,
                    "revision": revision,
                    "message": commit_message,
                    "files": files,
                }
            )
            return f"https://huggingface.co/datasets/{repo_id}/commit/abc123"

        monkeypatch.setattr(huggingface_hub.HfApi, "__init__", init)
        monkeypatch.setattr(huggingface_hub.HfApi, "hf_hub_download", download)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
        return self


@pytest.fixture
def no_saved_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def test_push_without_token_is_one_line(card_dir, capsys, no_saved_token, monkeypatch):
    hub = _FakeHub().install(monkeypatch)
    assert main(["card", "attach", str(card_dir), "--to", "me/ds", "--push"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--push needs a Hugging Face token" in err
    assert hub.commits == []


def test_push_to_repo(card, card_dir, capsys, no_saved_token, monkeypatch):
    hub = _FakeHub().install(monkeypatch)
    rc = main(["card", "attach", str(card_dir), "--to", "me/ds", "--push", "--token", "hf_test"])
    assert rc == 0, capsys.readouterr().err
    assert (
        "pushed to me/ds: https://huggingface.co/datasets/me/ds/commit/abc123"
        in capsys.readouterr().out
    )
    assert hub.tokens == ["hf_test"]
    (commit,) = hub.commits
    assert commit["repo_type"] == "dataset" and commit["repo_id"] == "me/ds"
    files = commit["files"]
    assert sorted(files) == ["README.md", "croissant.json", "dcsi.json", "report.html"]
    assert Card(json.loads(files["dcsi.json"])) == card
    readme = DatasetCard(files["README.md"].decode())
    assert readme.data["license"] == "mit" and readme.data["tags"] == ["vision"]
    assert readme.data["configs"] == [{"config_name": "default", "data_files": "data/*.parquet"}]
    assert readme.data[HF_KEY] == hf_block(card)
    assert readme.text == DatasetCard(EXISTING).text


def test_push_uses_saved_token_and_new_readme(card, card_dir, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")
    hub = _FakeHub(readme=None).install(monkeypatch)
    assert main(["card", "attach", str(card_dir), "--to", "me/new", "--push"]) == 0
    assert hub.tokens == ["hf_saved"]
    readme = DatasetCard(hub.commits[0]["files"]["README.md"].decode())
    assert "How to read these numbers" in readme.text


def test_push_missing_repo(card_dir, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")
    _FakeHub(missing_repo=True).install(monkeypatch)
    assert main(["card", "attach", str(card_dir), "--to", "me/none", "--push"]) == 1
    assert "Hub dataset repo 'me/none' not found" in capsys.readouterr().err


def test_push_local_folder_with_repo_id(card, card_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")
    hub = _FakeHub().install(monkeypatch)
    ds = tmp_path / "clone"
    ds.mkdir()
    (ds / "README.md").write_text(EXISTING)
    assert (
        main(
            [
                "card",
                "attach",
                str(card_dir),
                "--to",
                str(ds),
                "--push",
                "--repo-id",
                "me/ds",
                "--revision",
                "dev",
            ]
        )
        == 0
    )
    (commit,) = hub.commits
    assert commit["revision"] == "dev"
    assert commit["files"]["README.md"] == (ds / "README.md").read_bytes()
    assert np.isclose(json.loads(commit["files"]["dcsi.json"])["index"]["value"], card.index)


def test_attach_from_bare_json_generates_views(card, tmp_path, capsys):
    src = tmp_path / "only"
    card.save(src)  # dcsi.json alone: README, croissant and report are generated
    ds = tmp_path / "target"
    ds.mkdir()
    assert main(["card", "attach", str(src / "dcsi.json"), "--to", str(ds)]) == 0
    assert sorted(p.name for p in ds.iterdir()) == [
        "README.md",
        "croissant.json",
        "dcsi.json",
        "report.html",
    ]
    assert 'id="fig-heatmap"' in (ds / "report.html").read_text()
    assert DatasetCard.load(ds / "README.md").data[HF_KEY] == hf_block(card)


# -- hardening: an unreadable README stops attach before anything is copied ---------
@pytest.mark.parametrize(
    "content",
    [
        b"---\nlicense: mit\n\ttabbed: 1\n---\nbody\n",
        b"---\nx: !!python/object:os.system ls\n---\nbody\n",
        b"\xff\xfe\x00binary",
    ],
)
def test_attach_bad_readme_copies_nothing(card_dir, tmp_path, capsys, content):
    ds = tmp_path / "target"
    ds.mkdir()
    (ds / "README.md").write_bytes(content)
    assert main(["card", "attach", str(card_dir), "--to", str(ds)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("dcsi: error: ")
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(p.name for p in ds.iterdir()) == ["README.md"]
    assert (ds / "README.md").read_bytes() == content


def test_attach_keeps_user_yaml_byte_for_byte(card, card_dir, tmp_path, capsys):
    ds = tmp_path / "target"
    ds.mkdir()
    original = (
        "---\nversion: 1.10\nzip: 012345\nflag: yes\npretty_name:\nnote: ~\n"
        "base: &b  # anchor\n  x: 1\nother: *b\n---\n\n# Body\n"
    )
    (ds / "README.md").write_text(original, encoding="utf-8")
    assert main(["card", "attach", str(card_dir), "--to", str(ds)]) == 0
    raw = (ds / "README.md").read_text(encoding="utf-8")
    head, dcsi_and_rest = raw.split("other: *b\n", 1)
    assert head + "other: *b\n" == original.split("---\n\n# Body")[0]
    assert dcsi_and_rest.startswith("dcsi:\n") and raw.endswith("---\n\n# Body\n")


# -- hardening: a folder mixing a new dcsi.json with old views is detected ------------
def test_readme_block_records_card_sha256(card, tmp_path):
    import hashlib

    written = write_card_files(card, tmp_path, report=False)
    sha = hashlib.sha256(written["dcsi.json"].read_bytes()).hexdigest()
    assert DatasetCard.load(tmp_path / "README.md").data[HF_KEY]["card_sha256"] == sha
    assert json.loads((tmp_path / "croissant.json").read_text())["distribution"][0]["sha256"] == sha


def test_validate_reports_views_of_another_card(rng, card_dir, capsys, caplog):
    d = make_card_dict(rng)
    d["index"]["value"] = 0.9
    Card(d).save(card_dir)  # a run killed after dcsi.json: the other views are older
    assert main(["card", "validate", str(card_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert "croissant.json, README.md were made from another dcsi.json" in captured.err
    load_card(card_dir)  # loading still works (dcsi.json is the source of truth), with a warning
    assert "croissant.json was made from another dcsi.json" in caplog.text


def test_validate_passes_after_rewrite(card, card_dir, capsys):
    write_card_files(card, card_dir, report=False)
    assert main(["card", "validate", str(card_dir)]) == 0


@pytest.mark.parametrize("name", ["README.md", "dcsi.json"])
def test_attach_never_reads_or_writes_through_a_link(card_dir, tmp_path, capsys, name):
    target = tmp_path / "ds"
    target.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    (target / name).symlink_to(secret)
    rc = main(["card", "attach", str(card_dir), "--to", str(target)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "symbolic link" in err, err
    assert secret.read_text() == "top secret\n"
    assert (target / name).is_symlink()
    assert "top secret" not in "".join(
        p.read_text() for p in target.iterdir() if p.is_file() and not p.is_symlink()
    )
