"""``dcsi card validate | show | attach``: check, summarise and publish a card.

None of these commands imports torch (``show`` is tested for it in a subprocess).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dcsi._io import atomic_write_bytes, atomic_write_text
from dcsi.cli import printable
from dcsi.exceptions import DcsiError

__all__ = ["attach_card", "register"]

_CARD_FILES = ("dcsi.json", "croissant.json", "report.html", "README.md")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``card`` with its ``validate``, ``show`` and ``attach`` subcommands."""
    parser = subparsers.add_parser(
        "card",
        help="validate, show or attach a dataset card (dcsi.json)",
        description="Work with a dcsi dataset card: a dcsi.json file or a folder holding one.",
    )
    sub = parser.add_subparsers(dest="card_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "validate",
        help="check a card against the schema",
        description="Check dcsi.json against the card schema, and that the "
        "views next to it (croissant.json, README.md, report.html) were made "
        "from it. Exit 0 and 'valid' when it passes; exit 1 with the reason "
        "when it does not.",
    )
    p.add_argument("path", metavar="PATH", help="dcsi.json or a folder containing it")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "show",
        help="print a human summary of a card",
        description="Print the index, the most similar class pairs, the "
        "class clusters and the redundancy counts of a card.",
    )
    p.add_argument("path", metavar="PATH", help="dcsi.json or a folder containing it")
    p.add_argument(
        "--pairs",
        type=int,
        default=5,
        metavar="N",
        help="number of most similar class pairs to list (default: 5)",
    )
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "attach",
        help="copy a card into a dataset folder or Hub dataset repo",
        description="Write dcsi.json, croissant.json and report.html (and the neighbour "
        "index files the card lists, checked against their sha256) into a local dataset "
        "folder (or a cloned Hub repository) and add or replace the 'dcsi:' key of its "
        "README.md, keeping the rest of the README. With --push, upload them to a Hugging "
        "Face dataset repository using your token (hf auth login, or HF_TOKEN).",
    )
    p.add_argument("path", metavar="PATH", help="dcsi.json or a folder containing it")
    p.add_argument(
        "--to",
        required=True,
        metavar="DATASET_DIR_OR_REPO_ID",
        help="an existing local folder, or a Hub dataset repo id with --push",
    )
    p.add_argument(
        "--push",
        action="store_true",
        help="upload to the Hugging Face Hub (a repo id in --to, or --repo-id "
        "when --to is a folder)",
    )
    p.add_argument(
        "--repo-id",
        default=None,
        metavar="OWNER/NAME",
        help="Hub dataset repo to push a local --to folder to",
    )
    p.add_argument(
        "--token", default=None, help="Hugging Face token (default: the saved login or HF_TOKEN)"
    )
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.set_defaults(func=_cmd_attach)


# -- validate / show ---------------------------------------------------------------
def _cmd_validate(args: argparse.Namespace) -> int:
    from dcsi.card.card import load_card, stale_views

    card = load_card(args.path, check_views=False)
    stale = stale_views(args.path)
    if stale:
        raise DcsiError(
            f"{args.path}: {', '.join(stale)} {'was' if len(stale) == 1 else 'were'} made "
            "from another dcsi.json (its recorded sha256 differs; a run stopped between two "
            "files?); re-run the command that wrote the folder, or delete the stale file."
        )
    print(
        printable(
            f"{args.path}: valid dcsi card (schema {card.schema_version}, "
            f"{card.n_images} images, {len(card.classes)} classes)"
        )
    )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from dcsi.card import load_card

    if args.pairs < 0:
        raise DcsiError(f"--pairs must be >= 0. Got {args.pairs} instead.")
    card = load_card(args.path)
    print(printable(card.summary(n_pairs=args.pairs)))
    return 0


# -- attach --------------------------------------------------------------------------
def _index_files(card, src: Path) -> list[tuple[str, Path]]:
    """The neighbour-index files the card lists, checked against their sha256.

    Returns ``(path relative to the card folder, file in src)`` pairs; a path leading
    out of the folder, a missing file or one whose sha256 differs stops the command.
    """
    import hashlib
    from pathlib import PurePosixPath

    block = card.data.get("neighbor_index")
    out: list[tuple[str, Path]] = []
    for entry in (block or {}).get("files", ()):
        rel = PurePosixPath(entry["path"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise DcsiError(
                f"The card lists the index file {entry['path']!r}, outside its folder; "
                "rebuild the index with `dcsi index`."
            )
        path = src.joinpath(*rel.parts)
        if not path.is_file():
            raise DcsiError(
                f"{path} is missing (the card's neighbour index lists it); copy the whole "
                "card folder, or rebuild the index with `dcsi index SOURCE --out DIR`."
            )
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
        if sha.hexdigest() != entry["sha256"]:
            raise DcsiError(
                f"{path} does not match the sha256 the card records (changed after the card "
                "was written); rebuild the index with `dcsi index SOURCE --out DIR`."
            )
        out.append((rel.as_posix(), path))
    return out


def _copy_file(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` through a temporary file in the same folder + rename."""
    if dest.exists() and src.resolve() == dest.resolve():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _write_into(card, src: Path, dest: Path) -> list[Path]:
    """Card files into ``dest``: dcsi.json, croissant.json, report.html, README.md, and
    the neighbour-index files the card lists.

    Every input is read and checked first (the target's README, the source's report,
    the index files' sha256), so a README that cannot be updated stops the command
    before any file is written.
    """
    from dcsi.card import write_card_files
    from dcsi.card.hf import read_readme, render_readme

    index_files = _index_files(card, src)
    readme = dest / "README.md"
    readme_text = render_readme(card, read_readme(readme), where=str(readme))
    report = src / "report.html"
    report_bytes = None
    if report.is_file() and report.resolve() != (dest / "report.html").resolve():
        report_bytes = report.read_bytes()
    written = write_card_files(card, dest, readme=False, report=False)
    written["README.md"] = atomic_write_text(readme, readme_text)
    if report_bytes is not None:
        written["report.html"] = atomic_write_bytes(dest / "report.html", report_bytes)
    elif report.is_file():
        written["report.html"] = dest / "report.html"
    else:
        from dcsi.report import write_report

        written["report.html"] = write_report(card, dest / "report.html")
    copied = [_copy_file(path, dest / rel) for rel, path in index_files]
    return [written[name] for name in _CARD_FILES] + copied


def _token(explicit: str | None) -> str:
    from huggingface_hub import get_token

    token = explicit or get_token()
    if not token:
        raise DcsiError(
            "--push needs a Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token."
        )
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    """Errors of an unreachable Hub: ``OSError`` (offline mode, DNS, refused connection)
    and the HTTP client's base error (``HfHubHTTPError`` derives from it)."""
    from huggingface_hub.errors import HfHubHTTPError

    client = tuple(b for b in HfHubHTTPError.__mro__[1:] if b.__name__ == "HTTPError")
    return (OSError, *client)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _check_online() -> None:
    """Refuse ``--push`` at once when huggingface_hub is in offline mode."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise DcsiError(
            "--push needs the network but HF_HUB_OFFLINE is set; unset it, or attach to a "
            "local folder without --push and upload it later."
        )


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Hide huggingface_hub's log lines (one per retry of an unreachable Hub, printed by
    its own handler); the outcome is reported in one line.  Shown with DCSI_DEBUG=1."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    if not logging.getLogger("dcsi").isEnabledFor(logging.DEBUG):
        hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _push(
    card,
    src: Path,
    repo_id: str,
    *,
    token: str | None,
    revision: str | None,
    local_dir: Path | None = None,
) -> str:
    """Upload the card files to a Hub dataset repo; returns the commit URL."""
    import huggingface_hub  # noqa: F401 -- sets up its loggers before _quiet_hub

    with _quiet_hub():
        return _push_quietly(
            card, src, repo_id, token=token, revision=revision, local_dir=local_dir
        )


def _push_quietly(
    card,
    src: Path,
    repo_id: str,
    *,
    token: str | None,
    revision: str | None,
    local_dir: Path | None = None,
) -> str:
    """The upload itself (see :func:`_push`)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    _check_online()
    network = _network_errors()
    api = HfApi(token=_token(token))
    with tempfile.TemporaryDirectory(prefix="dcsi-attach-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        if local_dir is not None:
            for name in _CARD_FILES:
                shutil.copyfile(local_dir / name, stage / name)
        else:
            try:
                readme = api.hf_hub_download(
                    repo_id,
                    "README.md",
                    repo_type="dataset",
                    revision=revision,
                    local_dir=Path(tmp) / "remote",
                )
                shutil.copyfile(readme, stage / "README.md")
            except RepositoryNotFoundError:
                raise DcsiError(
                    f"Hub dataset repo {repo_id!r} not found or not accessible with your "
                    "token; create it first (hf repo create --repo-type dataset) or check the id."
                ) from None
            except LocalEntryNotFoundError:  # the Hub could not be reached: not "no README"
                raise DcsiError(
                    f"could not reach the Hugging Face Hub to read {repo_id!r}; check your "
                    "network (or HF_ENDPOINT) and retry."
                ) from None
            except EntryNotFoundError:
                pass  # no README yet: a new one from the template
            except HfHubHTTPError as exc:
                raise DcsiError(
                    f"could not read {repo_id!r} from the Hub: {_one_line(exc)}"
                ) from None
            except network as exc:
                raise DcsiError(
                    f"could not reach the Hugging Face Hub to read {repo_id!r} "
                    f"({_one_line(exc)}); check your network and retry."
                ) from None
            _write_into(card, src, stage)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=(stage / name).read_bytes())
            for name in _CARD_FILES
        ] + [
            CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path))
            for rel, path in _index_files(card, src)
        ]
        try:
            info = api.create_commit(
                repo_id,
                operations,
                repo_type="dataset",
                revision=revision,
                commit_message=f"Add dcsi card (schema {card.schema_version})",
            )
        except RepositoryNotFoundError:
            raise DcsiError(
                f"Hub dataset repo {repo_id!r} not found or not writable with your token."
            ) from None
        except HfHubHTTPError as exc:
            raise DcsiError(f"upload to {repo_id!r} failed: {_one_line(exc)}") from None
        except network as exc:
            raise DcsiError(
                f"upload to {repo_id!r} failed: the Hugging Face Hub could not be reached "
                f"({_one_line(exc)}); check your network and retry."
            ) from None
    return str(getattr(info, "commit_url", info))


def attach_card(
    path: str | os.PathLike[str],
    to: str,
    *,
    push: bool = False,
    repo_id: str | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> list[str]:
    """Attach a card to a dataset folder and/or a Hub dataset repository.

    Parameters
    ----------
    path : path-like
        ``dcsi.json`` or a card folder.
    to : str
        An existing local dataset folder, or (with ``push=True``) a Hub dataset repo id.
    push : bool, default=False
        Upload the card files to the Hub.
    repo_id : str, default=None
        The Hub repo to push a local folder to.
    token, revision : str, default=None
        Hub token (default: the saved login / ``HF_TOKEN``) and branch.

    Returns
    -------
    list of str
        One line per action, for the command line to print.
    """
    from dcsi.card import load_card

    card = load_card(path)
    src = Path(path)
    src = src if src.is_dir() else src.parent
    dest = Path(to)
    # every check before anything is written or uploaded
    if not dest.is_dir():
        if not push:
            raise DcsiError(
                f"{to!r} is not an existing folder. Give a local dataset folder, or add "
                "--push to upload to the Hub dataset repo of that id."
            )
        if dest.exists():
            raise DcsiError(f"{to!r} is a file, not a dataset folder or a repo id.")
    elif push and not repo_id:
        raise DcsiError(
            f"--push with a local folder needs --repo-id OWNER/NAME (the Hub dataset "
            f"repo {dest} belongs to)."
        )
    if push:
        _check_online()
        token = _token(token)
    out = []
    if dest.is_dir():
        files = _write_into(card, src, dest)
        out.append(
            f"attached to {dest}: "
            + ", ".join(Path(os.path.relpath(f, dest)).as_posix() for f in files)
        )
        if push:
            assert repo_id  # a local folder is pushed only with --repo-id (checked above)
            out.append(
                f"pushed to {repo_id}: "
                + _push(card, src, repo_id, token=token, revision=revision, local_dir=dest)
            )
        return out
    rid = repo_id or to
    out.append(f"pushed to {rid}: " + _push(card, src, rid, token=token, revision=revision))
    return out


def _cmd_attach(args: argparse.Namespace) -> int:
    for line in attach_card(
        args.path,
        args.to,
        push=args.push,
        repo_id=args.repo_id,
        token=args.token,
        revision=args.revision,
    ):
        print(printable(line))
    return 0
