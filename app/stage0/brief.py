"""The task brief: ``TASK_BRIEF.md`` for people and models, ``brief.json`` for machines.

Sections, in order: Project constitution, Spec snapshot, Memories, Code context, Docs,
Risks, Approach, Metadata. Nothing is generated: the constitution and the spec are
copied, memories, risks and approach bullets are what the caller passed in (from the
memory overlay and the playbook), chunks are what retrieval picked. A section with
nothing in it says so with an ``(empty: ...)`` marker, never filler.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from app.audit.masking import mask_value
from app.errors import UsageError
from app.replacing import temp_beside
from app.stage0.context import context_estimate
from app.stage0.result import CorpusInfo, QueryParams, SelectedChunk

if TYPE_CHECKING:
    from app.stage0.engine import Stage0

BRIEF_MD = "TASK_BRIEF.md"
BRIEF_JSON = "brief.json"

SECTIONS = (
    "Project constitution",
    "Spec snapshot",
    "Memories",
    "Code context",
    "Docs",
    "Risks",
    "Approach",
    "Metadata",
)
NO_CONSTITUTION = "(none found)"
EMPTY_SPEC = "(empty: no spec file given)"
EMPTY_MEMORIES = "(empty: no memories given)"
EMPTY_CODE = "(empty: no code chunk matched the task within the budget)"
EMPTY_DOCS = "(empty: no doc chunk matched the task within the budget)"
EMPTY_BULLETS = "(empty: no memories or playbook bullets matched)"

_LANGS = {
    ".py": "python",
    ".pyi": "python",
    ".md": "markdown",
    ".rst": "rst",
    ".toml": "toml",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".sh": "bash",
    ".js": "javascript",
    ".ts": "typescript",
    ".rs": "rust",
    ".go": "go",
    ".c": "c",
    ".h": "c",
    ".cfg": "ini",
    ".ini": "ini",
    ".html": "html",
    ".css": "css",
}


class BriefSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    text: str


class BriefMetadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str
    params: QueryParams
    corpus_hash: str
    corpus: CorpusInfo
    chunk_ids: list[str]
    budget_used: int
    reserved_tokens: int  # what constitution, spec, memories and bullets take


class Brief(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    constitution: BriefSource | None
    spec: BriefSource | None
    memories: list[str]
    code: list[SelectedChunk]
    docs: list[SelectedChunk]
    risks: list[str]
    approach: list[str]
    metadata: BriefMetadata

    @property
    def chunks(self) -> list[SelectedChunk]:
        return [*self.code, *self.docs]

    def chunk(self, chunk_id: str) -> SelectedChunk | None:
        for c in self.chunks:
            if c.id == chunk_id:
                return c
        return None

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        return render_markdown(self)


def make_brief(
    engine: Stage0,
    task: str,
    *,
    spec: Path | None,
    memories: Sequence[str],
    risks: Sequence[str],
    approach: Sequence[str],
    budget_tokens: int | None = None,
    context_window: int | None = None,
) -> Brief:
    constitution = find_constitution(engine)
    spec_src = read_spec(spec) if spec is not None else None
    memories = [m.strip() for m in memories if m.strip()]
    risks = [r.strip() for r in risks if r.strip()]
    approach = [a.strip() for a in approach if a.strip()]
    fixed = [
        constitution.text if constitution else "",
        spec_src.text if spec_src else "",
        *memories,
        *risks,
        *approach,
        task,
    ]
    reserve = context_estimate(fixed)
    result = engine.query(
        task, budget_tokens=budget_tokens, context_window=context_window, reserve=reserve
    )
    selected = result.selected
    code = [c for c in selected if not _is_doc(c.path)]
    docs = [c for c in selected if _is_doc(c.path)]
    return Brief(
        task=task,
        constitution=constitution,
        spec=spec_src,
        memories=memories,
        code=code,
        docs=docs,
        risks=risks,
        approach=approach,
        metadata=BriefMetadata(
            query=task,
            params=result.params,
            corpus_hash=result.corpus.hash,
            corpus=result.corpus,
            # in the order the brief presents them: code context, then docs
            chunk_ids=[c.id for c in [*code, *docs]],
            budget_used=result.budget_used,
            reserved_tokens=reserve,
        ),
    )


def _is_doc(path: str) -> bool:
    from app.stage0.chunker import is_doc_path

    return is_doc_path(path)


def find_constitution(engine: Stage0) -> BriefSource | None:
    """The first of the policy's ``constitution_files`` the repository has, read as the
    corpus reads a file: a regular file of at most ``max_file_bytes``, never a symbolic
    link (nor a path through one), which could bring in any file of the machine."""
    from app.stage0.corpus import decode, read_repo_file

    limit = engine.config.max_file_bytes
    for name in engine.config.constitution_files:
        if engine.rev is None:
            data = read_repo_file(engine.repo, name, limit)
        else:
            data = _committed_file(engine.repo, engine.rev, name, limit)
        if data is not None:
            return BriefSource(path=name, text=decode(data).rstrip())
    return None


def _committed_file(repo: Path, rev: str, name: str, limit: int) -> bytes | None:
    """``name`` in commit ``rev`` when it is a regular file of at most ``limit`` bytes (a
    committed symbolic link is a blob too: its content is the link's target)."""
    from app.stage0.corpus import GitError, read_blobs, run_git

    try:
        out = run_git(repo, "ls-tree", "-l", "-z", "--full-tree", rev, "--", name)
    except GitError:
        return None
    head, _, _ = out.partition(b"\t")
    fields = head.split()
    if len(fields) != 4 or fields[1] != b"blob" or fields[0] not in (b"100644", b"100755"):
        return None
    if int(fields[3]) > limit:
        return None
    blob = fields[2].decode("ascii")
    return read_blobs(repo, [blob]).get(blob)


def read_spec(path: Path) -> BriefSource:
    """The spec a brief quotes, as ``spec lint`` and ``run --spec`` read one: UTF-8 text,
    at most MAX_SPEC_BYTES (random bytes were copied into the brief, which grep then took
    for a binary file)."""
    from app.policy.spec import read_problem, spec_text

    try:
        text = spec_text(path)
    except OSError as exc:
        raise UsageError(f"--spec {path}: cannot read: {read_problem(exc)}") from None
    except ValueError as exc:  # not UTF-8, or larger than a spec
        raise UsageError(f"--spec {path}: {read_problem(exc)}") from None
    return BriefSource(path=str(path), text=text.removeprefix("\ufeff").rstrip())


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _chunk_md(c: SelectedChunk) -> list[str]:
    lang = _LANGS.get(PurePosixPath(c.path).suffix.lower(), "")
    what = f" · {c.kind} `{c.symbol}`" if c.symbol else f" · {c.kind}"
    fence = _fence(c.text)
    return [
        f"### `{c.path}:{c.start}-{c.end}`{what} · id `{c.id}` · relevance {c.relevance:.3f}",
        "",
        f"{fence}{lang}",
        c.text,
        fence,
        "",
    ]


def _bullets(items: Sequence[str], empty: str) -> list[str]:
    if not items:
        return [empty, ""]
    return [*(f"- {' '.join(i.split())}" for i in items), ""]


def render_markdown(brief: Brief) -> str:
    out = ["# Task brief", "", f"**Task:** {' '.join(brief.task.split())}", ""]
    out += ["## Project constitution", ""]
    if brief.constitution is None:
        out += [NO_CONSTITUTION, ""]
    else:
        out += [f"From `{brief.constitution.path}`:", "", brief.constitution.text, ""]
    out += ["## Spec snapshot", ""]
    if brief.spec is None:
        out += [EMPTY_SPEC, ""]
    else:
        out += [f"From `{brief.spec.path}`:", "", brief.spec.text, ""]
    out += ["## Memories", "", *_bullets(brief.memories, EMPTY_MEMORIES)]
    out += ["## Code context", ""]
    out += [line for c in brief.code for line in _chunk_md(c)] or [EMPTY_CODE, ""]
    out += ["## Docs", ""]
    out += [line for c in brief.docs for line in _chunk_md(c)] or [EMPTY_DOCS, ""]
    out += ["## Risks", "", *_bullets(brief.risks, EMPTY_BULLETS)]
    out += ["## Approach", "", *_bullets(brief.approach, EMPTY_BULLETS)]
    meta = json.dumps(
        brief.metadata.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False
    )
    out += ["## Metadata", "", "```json", meta, "```", ""]
    return "\n".join(out)


def masked_brief(brief: Brief) -> Brief:
    """``brief`` with every secret masked: what is written to a file (DESIGN decision 3).

    Code chunks come masked from Stage0's analysis already; the constitution, the spec,
    the task and the memories are read or passed in as they are, and are masked here.
    """
    data, count = mask_value(brief.model_dump(mode="json"))
    return Brief.model_validate(data) if count else brief


class BriefOutError(UsageError):
    """The brief cannot be written where it was asked to go (exit 2)."""


def out_dir_problem(out_dir: Path) -> str | None:
    """Why ``out_dir`` cannot take the brief, found before any work is done; None: it
    looks usable (the write itself may still fail, and says so)."""
    path = out_dir
    while True:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            if path.parent == path:
                return "no such folder"
            path = path.parent
            continue
        except OSError as exc:
            return exc.strerror or str(exc)
        if not stat.S_ISDIR(st.st_mode):
            return "a file is in the way" if path != out_dir else "not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path}: not writable" if path != out_dir else "not writable"
        return None


def write_brief(brief: Brief, out_dir: Path) -> tuple[Path, Path]:
    """Write both files atomically (a reader never sees half a brief), secrets masked.

    A folder that cannot be made or written is a :class:`BriefOutError` naming it."""
    md, js = out_dir / BRIEF_MD, out_dir / BRIEF_JSON
    brief = masked_brief(brief)
    pairs = ((md, brief.to_markdown()), (js, brief.to_json()))
    temps = [temp_beside(path) for path, _ in pairs]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # both written in full, and both places free for a file, before either replaces
        # the old one: a brief.json that could not be written left the new Markdown
        # beside the old JSON
        for (path, text), tmp in zip(pairs, temps, strict=True):
            if path.is_dir() and not path.is_symlink():
                raise IsADirectoryError(errno.EISDIR, f"{path.name} is a folder", str(path))
            tmp.write_text(text, encoding="utf-8")
        for (path, _), tmp in zip(pairs, temps, strict=True):
            os.replace(tmp, path)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError):  # mkdir's word for a file in the way
            why = "not a folder"
        raise BriefOutError(f"{out_dir}: cannot write the brief: {why}") from None
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return md, js
