"""``switchyard memory add|search|harvest``: the local memory overlay from the shell."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from app.audit.masking import mask_text
from app.cli.common import (
    absolute,
    add_json_arg,
    add_policy_arg,
    console,
    policy_from,
    print_json,
    settings_from,
    whole_number,
)
from app.cli.progress import StderrProgress
from app.counted import counted

if TYPE_CHECKING:  # the store pulls in aiosqlite and numpy: imported when a command runs
    from app.memory.embeddings import Embedder
    from app.memory.store import MemoryStore

T = TypeVar("T")

#: memories to embed from which a bar shows on a terminal (~2.5 s of MiniLM on 2 cores)
EMBED_PROGRESS_MIN = 100


def _no_embed_arg(
    p: argparse.ArgumentParser,
    text: str = "do not load an embedding model (TF-IDF and the dynamic score only)",
) -> None:
    p.add_argument("--no-embed", action="store_true", help=text)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "memory",
        help="the local memory overlay: add, search, harvest",
        description="What sessions learn, in one SQLite file in the user data dir.",
    )
    msub = p.add_subparsers(dest="memory_command", metavar="ACTION", required=True)

    add = msub.add_parser("add", help="keep a memory", description="Add one memory.")
    add.add_argument("text", metavar="TEXT")
    add.add_argument("--kind", default="note", help="note (default), commit, outcome, playbook …")
    add.add_argument(
        "--tag", action="append", default=[], metavar="T", help="a tag (repeat for more)"
    )
    add.add_argument(
        "--priority", type=whole_number(0, 10), default=0, metavar="N", help="0 (default)…10"
    )
    _no_embed_arg(add)
    add_policy_arg(add)
    add_json_arg(add)
    add.set_defaults(handler=_add)

    search = msub.add_parser(
        "search",
        help="find memories",
        description="Search memories by TF-IDF, embedding and dynamic score. Read-only: "
        "it does not mark anything as used.",
    )
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--k", type=whole_number(1), default=10, metavar="N", help="hits (10)")
    search.add_argument(
        "--kind", action="append", default=[], metavar="K", help="only this kind (repeatable)"
    )
    _no_embed_arg(search)
    add_policy_arg(search)
    add_json_arg(search)
    search.set_defaults(handler=_search)

    harvest = msub.add_parser(
        "harvest",
        help="turn commits and recorded outcomes into memories (idempotent)",
        description="Each commit (message, files, diff stats) becomes one memory, once.",
    )
    harvest.add_argument(
        "--repo", type=Path, default=Path("."), metavar="PATH", help="git repository (.)"
    )
    harvest.add_argument("--since", metavar="REF", help="only commits after REF (REF..HEAD)")
    harvest.add_argument(
        "--max", type=whole_number(1), metavar="N", dest="limit", help="at most the N newest"
    )
    _no_embed_arg(
        harvest,
        "keep the commits without loading a model: the next search that loads one embeds "
        "them (~25 ms a commit on 2 cores)",
    )
    add_policy_arg(harvest)
    add_json_arg(harvest)
    harvest.set_defaults(handler=_harvest)


# ── shared ───────────────────────────────────────────────────────────────────────────────


async def _with_store(
    args: argparse.Namespace,
    work: Callable[[MemoryStore, dict[str, Any]], Awaitable[T]],
) -> T:
    """Open the memory DB (and, unless --no-embed, the audited embedder) and run ``work``."""
    from app.clock import SystemClock
    from app.memory.embeddings import load_embedder
    from app.memory.store import MemoryStore
    from app.paths import ensure_dir
    from app.router.stores import open_audit, store_privacy

    settings = settings_from(args)
    loaded = policy_from(args, settings)
    policy = loaded.policy
    clock = SystemClock()
    ensure_dir(settings.memory_db.parent)
    embedder: Embedder | None = None
    progress: StderrProgress | None = None
    async with contextlib.AsyncExitStack() as stack:
        if not args.no_embed:
            audit = await open_audit(
                settings, clock=clock, policy_version=policy.version, **store_privacy(settings)
            )
            stack.push_async_callback(audit.close)
            embedder = await load_embedder(policy, audit=audit, session=uuid.uuid4().hex[:12])
        if embedder is not None and sys.stderr.isatty():
            # the first search after `harvest --no-embed` embeds every memory: minutes
            progress = StderrProgress("memory", {"embed": "embedding"}, minimum=EMBED_PROGRESS_MIN)
            stack.callback(progress.close)
        info = _embedding_info(args, policy.resolve(policy.embeddings.default), embedder)
        store = await stack.enter_async_context(
            MemoryStore.open(
                settings.memory_db,
                clock=clock,
                embedder=embedder,
                weights=policy.memory,
                progress=progress,
            )
        )
        return await work(store, info)
    raise AssertionError("unreachable")  # pragma: no cover - mypy: the stack may swallow


def _embedding_info(
    args: argparse.Namespace, default: str, embedder: Embedder | None
) -> dict[str, Any]:
    if embedder is None:
        return {
            "state": "off" if args.no_embed else "unavailable",
            "model": None,
            "fallback": False,
        }
    return {
        "state": "on",
        "model": embedder.key.label(),
        "model_id": embedder.key.model_id,
        "dim": embedder.key.dim,
        "fallback": embedder.key.model_id != default,
    }


def _print_embedding_line(out: Any, info: dict[str, Any]) -> None:
    from rich.text import Text

    out.print(Text(_embedding_line(info), style="dim"))  # a model id is not markup


def _embedding_line(info: dict[str, Any]) -> str:
    if info["state"] == "off":
        return "embeddings: off (--no-embed)"
    if info["state"] == "unavailable":
        return "embeddings: unavailable (audited); TF-IDF and dynamic score only"
    note = " · local fallback (audited)" if info["fallback"] else ""
    return f"embeddings: {info['model_id']} ({info['dim']}-dim){note}"


# ── add ──────────────────────────────────────────────────────────────────────────────────


def _add(args: argparse.Namespace) -> int:
    async def work(store: MemoryStore, info: dict[str, Any]) -> dict[str, Any]:
        memory_id = await store.add(
            args.text, kind=args.kind, tags=args.tag, priority=args.priority, source="cli"
        )
        memory = await store.get(memory_id)
        assert memory is not None
        return {"memory": memory.to_json(), "embeddings": info, "memory_db": str(store.path)}

    result = asyncio.run(_with_store(args, work))
    if args.json:
        print_json(result)
    else:
        m = result["memory"]
        tags = f" [{', '.join(m['tags'])}]" if m["tags"] else ""
        out = console()
        line = f"added memory {m['id']} ({m['kind']}, priority {m['priority']}){tags}"
        out.print(line, markup=False)  # the tags are the user's words
        _print_embedding_line(out, result["embeddings"])
    return 0


# ── search ───────────────────────────────────────────────────────────────────────────────


def _search(args: argparse.Namespace) -> int:
    async def work(store: MemoryStore, info: dict[str, Any]) -> dict[str, Any]:
        hits = await store.search(args.query, args.k, kinds=args.kind or None)
        return {
            "query": mask_text(args.query)[0],  # as the search read it
            "k": args.k,
            "kinds": sorted(set(args.kind)),
            "embeddings": info,
            "weights": {
                "tfidf": store.weights.weight_tfidf,
                "embedding": store.weights.weight_embedding,
                "dynamic": store.weights.weight_dynamic,
                "recency_half_life_days": store.weights.recency_half_life_days,
            },
            "hits": [h.to_json() for h in hits],
        }

    result = asyncio.run(_with_store(args, work))
    if args.json:
        print_json(result)
        return 0
    from rich.table import Table
    from rich.text import Text

    out = console()
    _print_embedding_line(out, result["embeddings"])
    if not result["hits"]:
        out.print("no matching memories")
        return 0
    # The query, kinds and texts are anyone's words (a harvested "[ci skip]", a "[/]"):
    # Text objects are shown as they are, never parsed as markup.
    table = Table(title=Text(f"Memories for {result['query']!r}"), title_justify="left")
    for col in ("#", "id", "score", "tfidf", "embed", "dyn", "kind", "text"):
        table.add_column(col, justify="left" if col in ("kind", "text") else "right")
    for rank, hit in enumerate(result["hits"], 1):
        c = hit["components"]
        embed = f"{c['embedding']:.3f}" if hit["embedding_used"] else "—"
        first = hit["text"].splitlines()[0] if hit["text"] else ""
        table.add_row(
            str(rank),
            str(hit["id"]),
            f"{hit['score']:.3f}",
            f"{c['tfidf']:.3f}",
            embed,
            f"{c['dynamic']:.3f}",
            Text(hit["kind"]),
            Text(first if len(first) <= 80 else first[:79] + "…"),
        )
    out.print(table)
    return 0


# ── harvest ──────────────────────────────────────────────────────────────────────────────


def _harvest(args: argparse.Namespace) -> int:
    from app.memory.harvest import HarvestError, harvest, has_head, repo_root, resolve_since

    args.repo = args.repo.expanduser()  # --repo=~/proj: the shell leaves that ~ alone
    absolute(args.repo)  # a deleted current folder is said as that, not as git's words

    async def precheck() -> None:  # a bad --repo or --since fails before any model loads
        try:
            top = await repo_root(args.repo)
        except HarvestError as exc:
            raise HarvestError(f"--repo {exc}") from None
        if await has_head(top):
            await resolve_since(top, args.since)
        elif args.since is not None:  # it said "since bogus" and harvested nothing, exit 0
            raise HarvestError(f"--since {args.since!r}: {top} has no commit yet")

    asyncio.run(precheck())

    async def work(store: MemoryStore, info: dict[str, Any]) -> dict[str, Any]:
        report = await harvest(store, args.repo, since=args.since, limit=args.limit)
        return {**report.to_json(), "embeddings": info}

    result = asyncio.run(_with_store(args, work))
    if args.json:
        print_json(result)
    else:
        out = console()
        out.print(
            f"harvested {counted(result['commits_added'], 'new commit')} "
            f"({result['commits_skipped']} already kept) and "
            f"{counted(result['outcomes_added'], 'outcome')} from {result['repo']}"
            + (f" since {result['since']}" if result["since"] else ""),
            markup=False,  # a path is any name, "[x]" too
        )
        _print_embedding_line(out, result["embeddings"])
    return 0
