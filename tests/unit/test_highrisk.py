"""The High-Risk classifier over realistic unified diffs, with the shipped policy's rules."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import SwitchyardError
from app.policy.highrisk import (
    MAX_LINE_CHARS,
    DiffParseError,
    HighRiskResult,
    _compile_rule,
    classify_diff,
    module_of,
    path_matches,
)
from app.policy.schema import HighRisk, HighRiskRule, Policy
from tests.ci import missing

# ── diffs, one per High-Risk family, plus the ones that must stay low-risk ──────────────

CROSS_MODULE_ASYNC = """\
diff --git a/app/pipeline/session.py b/app/pipeline/session.py
index 1a2b3c4..5d6e7f8 100644
--- a/app/pipeline/session.py
+++ b/app/pipeline/session.py
@@ -10,6 +10,6 @@ class Session:
     def __init__(self, store: Store) -> None:
         self.store = store
-    def step(self, task: str) -> Plan:
-        plan = self.store.load_plan(task)
+    async def step(self, task: str) -> Plan:
+        plan = await self.store.load_plan(task)
         return plan
     def close(self) -> None:
diff --git a/app/stage0/corpus.py b/app/stage0/corpus.py
index 2b3c4d5..6e7f8a9 100644
--- a/app/stage0/corpus.py
+++ b/app/stage0/corpus.py
@@ -40,4 +40,4 @@ class Corpus:
-    def refresh(self) -> None:
-        self._chunks = list(self._walk())
+    async def refresh(self) -> None:
+        self._chunks = [c async for c in self._walk()]
         self._dirty = False
         self._version += 1
diff --git a/app/memory/store.py b/app/memory/store.py
index 3c4d5e6..7f8a9b0 100644
--- a/app/memory/store.py
+++ b/app/memory/store.py
@@ -22,5 +22,5 @@ class Store:
     def __init__(self, db_path: Path) -> None:
         self.db_path = db_path
-    def load_plan(self, task: str) -> Plan:
-        return self._read(task)
+    async def load_plan(self, task: str) -> Plan:
+        return await self._read(task)
         # plans are small; no streaming needed
"""

UNSAFE_CTYPES = """\
diff --git a/app/util/native.py b/app/util/native.py
index 4d5e6f7..8a9b0c1 100644
--- a/app/util/native.py
+++ b/app/util/native.py
@@ -1,4 +1,6 @@
 \"\"\"Load the native helper library.\"\"\"
+import ctypes
 from pathlib import Path
-LIB = Path(__file__).with_name("libhelper.so")
+LIB = ctypes.CDLL(str(Path(__file__).with_name("libhelper.so")))
+LIB.helper_init.restype = ctypes.c_int
 VERSION = "0.3"
"""

UNSAFE_RUST = """\
--- a/crates/arena/src/lib.rs
+++ b/crates/arena/src/lib.rs
@@ -30,3 +30,5 @@ impl Arena {
     pub fn get(&self, i: usize) -> &T {
-        &self.items[i]
+        // bounds are checked by the caller's index table
+        unsafe { self.items.get_unchecked(i) }
     }
+}
"""

SECRETS_LINE = """\
diff --git a/app/util/openai_client.py b/app/util/openai_client.py
index 5e6f7a8..9b0c1d2 100644
--- a/app/util/openai_client.py
+++ b/app/util/openai_client.py
@@ -12,3 +12,4 @@ def make_client(base_url: str) -> OpenAI:
     http = build_http_client(base_url)
+    api_key = os.environ["OPENAI_API_KEY"]
     return OpenAI(base_url=base_url, http_client=http)
 # the client is cached per base URL
"""

AUTH_PATH = """\
diff --git a/src/auth/session.py b/src/auth/session.py
index 6f7a8b9..0c1d2e3 100644
--- a/src/auth/session.py
+++ b/src/auth/session.py
@@ -1,3 +1,3 @@
-\"\"\"Sesion handling.\"\"\"
+\"\"\"Session handling.\"\"\"
 from __future__ import annotations
 import time
"""

MIGRATION_SQL = """\
diff --git a/migrations/0002_drop_legacy.sql b/migrations/0002_drop_legacy.sql
new file mode 100644
index 0000000..3f1c2a9
--- /dev/null
+++ b/migrations/0002_drop_legacy.sql
@@ -0,0 +1,3 @@
+-- nobody has read legacy_runs since 0.4
+DROP TABLE legacy_runs;
+ALTER TABLE runs ADD COLUMN finished_at TEXT;
"""

BUILD_ROUTING = """\
diff --git a/Makefile b/Makefile
index 7a8b9c0..1d2e3f4 100644
--- a/Makefile
+++ b/Makefile
@@ -3,3 +3,3 @@ all: check test
 check:
-\truff check app tests
+\truff check app tests bench
 \tmypy
diff --git a/app/router/decide.py b/app/router/decide.py
index 8b9c0d1..2e3f4a5 100644
--- a/app/router/decide.py
+++ b/app/router/decide.py
@@ -15,2 +15,2 @@ from app.router.types import Decision
 #: Prompt size assumed when the caller gives no context_estimate (route explain).
-DEFAULT_PROMPT_TOKENS = 2000
+DEFAULT_PROMPT_TOKENS = 4000
diff --git a/pyproject.toml b/pyproject.toml
index 9c0d1e2..3f4a5b6 100644
--- a/pyproject.toml
+++ b/pyproject.toml
@@ -20,3 +20,3 @@ dependencies = [
     "httpx>=0.27,<0.29",
-    "openai>=1.50",
+    "openai>=1.60",
     "anthropic>=0.40",
"""

CLI_ARGUMENT = """\
diff --git a/tools/bench_cmd.py b/tools/bench_cmd.py
index 0d1e2f3..4a5b6c7 100644
--- a/tools/bench_cmd.py
+++ b/tools/bench_cmd.py
@@ -8,2 +8,3 @@ def build_parser() -> argparse.ArgumentParser:
     p = argparse.ArgumentParser(prog="bench")
+    p.add_argument("--repeat", type=int, default=3, help="runs per case")
     return p
"""

DOCSTRING_FIX = """\
diff --git a/app/stage0/tfidf.py b/app/stage0/tfidf.py
index 1e2f3a4..5b6c7d8 100644
--- a/app/stage0/tfidf.py
+++ b/app/stage0/tfidf.py
@@ -21,3 +21,3 @@ from sklearn.feature_extraction.text import TfidfVectorizer
 def weigh(chunks: list[str]) -> list[float]:
-    \"\"\"Weigh each chunk by it's TF-IDF score agianst the corpus.\"\"\"
+    \"\"\"Weigh each chunk by its TF-IDF score against the corpus.\"\"\"
     vec = TfidfVectorizer(sublinear_tf=True)
"""

# Risky words in CONTEXT lines only: context is not part of the change.
RISKY_CONTEXT_ONLY = """\
--- a/app/stage0/loader.py
+++ b/app/stage0/loader.py
@@ -3,3 +3,3 @@
 import ctypes
-# read the corpus in one pass
+# read the corpus in a single pass
 password = read_password()
"""

RENAME_INTO_AUTH = """\
diff --git a/app/util/keys.py b/app/auth/keys.py
similarity index 100%
rename from app/util/keys.py
rename to app/auth/keys.py
"""

RENAME_OUT_OF_AUTH = """\
diff --git a/src/auth/clock.py b/src/session/clock.py
similarity index 80%
rename from src/auth/clock.py
rename to src/session/clock.py
index 2f3a4b5..6c7d8e9 100644
--- a/src/auth/clock.py
+++ b/src/session/clock.py
@@ -1,2 +1,2 @@
-\"\"\"Clock helpers (moved out of the package).\"\"\"
+\"\"\"Clock helpers.\"\"\"
 import time
"""

DELETE_MIGRATION = """\
diff --git a/app/store/migrations/0001_init.sql b/app/store/migrations/0001_init.sql
deleted file mode 100644
index 9a8b7c6..0000000
--- a/app/store/migrations/0001_init.sql
+++ /dev/null
@@ -1,3 +0,0 @@
-CREATE TABLE runs (id TEXT PRIMARY KEY);
-CREATE INDEX runs_id ON runs (id);
-DELETE FROM runs;
"""


def _ids(result: HighRiskResult) -> set[str]:
    return {f.rule_id for f in result.reasons}


# ── the six families ─────────────────────────────────────────────────────────────────────


def test_cross_module_async_refactor_across_three_modules(policy: Policy) -> None:
    r = classify_diff(CROSS_MODULE_ASYNC, policy.high_risk)
    assert r.high_risk
    assert _ids(r) == {"cross_module_refactor"}
    assert r.modules == ["app/memory", "app/pipeline", "app/stage0"]
    assert all(f.source == "cross_module" for f in r.reasons)
    first = r.reasons[0]
    assert (first.path, first.line_no) == ("app/memory/store.py", 24)
    assert first.line == "    async def load_plan(self, task: str) -> Plan:"


def test_async_refactor_within_two_modules_is_not_high_risk(policy: Policy) -> None:
    two_modules = CROSS_MODULE_ASYNC.split("diff --git a/app/memory/")[0]
    r = classify_diff(two_modules, policy.high_risk)
    assert r.modules == ["app/pipeline", "app/stage0"]
    assert not r.high_risk
    assert r.reasons == []


def test_three_modules_without_concurrency_lines_is_not_high_risk(policy: Policy) -> None:
    calm = CROSS_MODULE_ASYNC.replace("async def", "def").replace("await ", "")
    calm = calm.replace("[c async for c in self._walk()]", "list(self._walk())")
    r = classify_diff(calm, policy.high_risk)
    assert len(r.modules) == 3
    assert not r.high_risk


@pytest.mark.parametrize("diff", [UNSAFE_CTYPES, UNSAFE_RUST], ids=["ctypes", "rust-unsafe"])
def test_unsafe_and_ffi_lines(policy: Policy, diff: str) -> None:
    r = classify_diff(diff, policy.high_risk)
    assert _ids(r) == {"unsafe_ffi_sandbox"}
    assert all(f.source == "line" for f in r.reasons)


def test_ctypes_findings_carry_target_line_numbers(policy: Policy) -> None:
    r = classify_diff(UNSAFE_CTYPES, policy.high_risk)
    assert [(f.path, f.line_no) for f in r.reasons] == [
        ("app/util/native.py", 2),
        ("app/util/native.py", 4),
        ("app/util/native.py", 5),
    ]
    assert r.reasons[0].line == "import ctypes"


def test_secret_in_added_line(policy: Policy) -> None:
    r = classify_diff(SECRETS_LINE, policy.high_risk)
    assert _ids(r) == {"auth_crypto_secrets_pii"}
    (finding,) = r.reasons
    assert (finding.source, finding.line_no) == ("line", 13)


def test_auth_path_makes_even_a_typo_fix_high_risk(policy: Policy) -> None:
    r = classify_diff(AUTH_PATH, policy.high_risk)
    assert _ids(r) == {"auth_crypto_secrets_pii"}
    (finding,) = r.reasons
    assert (finding.source, finding.path, finding.line_no) == ("path", "src/auth/session.py", None)
    assert r.modules == ["src/auth"]


def test_migration_sql_added_file(policy: Policy) -> None:
    r = classify_diff(MIGRATION_SQL, policy.high_risk)
    assert _ids(r) == {"persistence_migrations_schema"}
    assert [(f.source, f.line_no) for f in r.reasons] == [("path", None), ("line", 2), ("line", 3)]
    assert r.files == ["migrations/0002_drop_legacy.sql"]


def test_makefile_pyproject_and_router_change(policy: Policy) -> None:
    r = classify_diff(BUILD_ROUTING, policy.high_risk)
    assert _ids(r) == {"build_tooling_routing"}
    # ordered by path within the rule (codepoint order: uppercase first)
    assert [f.path for f in r.reasons] == ["Makefile", "app/router/decide.py", "pyproject.toml"]
    assert r.modules == [".", "app/router"]


def test_cli_add_argument_line(policy: Policy) -> None:
    r = classify_diff(CLI_ARGUMENT, policy.high_risk)
    assert _ids(r) == {"public_api"}
    (finding,) = r.reasons
    assert finding.line is not None and "add_argument(" in finding.line


# ── low-risk, spec, renames, deletions ───────────────────────────────────────────────────


def test_docstring_fix_in_one_module_is_low_risk(policy: Policy) -> None:
    r = classify_diff(DOCSTRING_FIX, policy.high_risk)
    assert not r.high_risk
    assert r.reasons == []
    assert r.files == ["app/stage0/tfidf.py"]
    assert r.modules == ["app/stage0"]


def test_context_lines_are_not_matched(policy: Policy) -> None:
    assert not classify_diff(RISKY_CONTEXT_ONLY, policy.high_risk).high_risk


def test_spec_hr_alone_makes_it_high_risk(policy: Policy) -> None:
    r = classify_diff(DOCSTRING_FIX, policy.high_risk, spec_hr=True)
    assert r.high_risk
    (finding,) = r.reasons
    assert (finding.source, finding.rule_id, finding.path) == ("spec", "spec_hr", None)


def test_spec_hr_on_an_empty_diff(policy: Policy) -> None:
    assert classify_diff("", policy.high_risk, spec_hr=True).high_risk


def test_spec_saying_no_cannot_clear_a_risky_diff(policy: Policy) -> None:
    assert classify_diff(MIGRATION_SQL, policy.high_risk, spec_hr=False).high_risk


def test_spec_finding_comes_first(policy: Policy) -> None:
    r = classify_diff(MIGRATION_SQL, policy.high_risk, spec_hr=True)
    assert r.reasons[0].source == "spec"
    assert r.rule_ids == ["spec_hr", "persistence_migrations_schema"]


@pytest.mark.parametrize("blank", ["", "\n", "  \n\t\n"])
def test_empty_diff_is_not_high_risk(policy: Policy, blank: str) -> None:
    r = classify_diff(blank, policy.high_risk)
    assert (r.high_risk, r.reasons, r.files, r.modules) == (False, [], [], [])


def test_rename_into_auth_matches_the_new_path(policy: Policy) -> None:
    r = classify_diff(RENAME_INTO_AUTH, policy.high_risk)
    assert _ids(r) == {"auth_crypto_secrets_pii"}
    assert [f.path for f in r.reasons] == ["app/auth/keys.py"]
    assert r.files == ["app/auth/keys.py", "app/util/keys.py"]
    assert r.modules == ["app/auth", "app/util"]


def test_rename_out_of_auth_matches_the_old_path(policy: Policy) -> None:
    r = classify_diff(RENAME_OUT_OF_AUTH, policy.high_risk)
    assert [(f.rule_id, f.path) for f in r.reasons] == [
        ("auth_crypto_secrets_pii", "src/auth/clock.py")
    ]


def test_deleted_migration_uses_source_line_numbers(policy: Policy) -> None:
    r = classify_diff(DELETE_MIGRATION, policy.high_risk)
    assert _ids(r) == {"persistence_migrations_schema"}
    path = "app/store/migrations/0001_init.sql"
    assert [(f.source, f.path, f.line_no) for f in r.reasons] == [
        ("path", path, None),
        ("line", path, 1),
        ("line", path, 3),
    ]


def test_findings_follow_rule_order_then_path_then_line(policy: Policy) -> None:
    diff = CLI_ARGUMENT + MIGRATION_SQL + UNSAFE_CTYPES + BUILD_ROUTING
    r = classify_diff(diff, policy.high_risk)
    rule_order = [rule.id for rule in policy.high_risk.rules]
    ranks = [rule_order.index(f.rule_id) for f in r.reasons]
    assert ranks == sorted(ranks)
    assert r.rule_ids == [
        "unsafe_ffi_sandbox",
        "persistence_migrations_schema",
        "build_tooling_routing",
        "public_api",
    ]
    # the same input always gives the same output
    assert classify_diff(diff, policy.high_risk) == r


def test_long_lines_are_truncated(policy: Policy) -> None:
    long = "+    password = '" + "x" * 500 + "'\n"
    diff = f"--- a/app/x.py\n+++ b/app/x.py\n@@ -1,0 +1,1 @@\n{long}"
    (finding,) = classify_diff(diff, policy.high_risk).reasons
    assert finding.line is not None
    assert len(finding.line) == MAX_LINE_CHARS
    assert finding.line.endswith("…")


def test_regexes_are_compiled_once(policy: Policy) -> None:
    classify_diff(CROSS_MODULE_ASYNC, policy.high_risk)
    before = _compile_rule.cache_info()
    classify_diff(CROSS_MODULE_ASYNC, policy.high_risk)
    after = _compile_rule.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + len(policy.high_risk.rules)


# ── a real `git diff` ────────────────────────────────────────────────────────────────────


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def test_real_git_diff_with_rename_delete_and_async_refactor(
    tmp_path: Path, policy: Policy
) -> None:
    if shutil.which("git") is None:
        missing("needs the git binary")
    repo = tmp_path / "repo"
    files = {
        "app/pipeline/session.py": "def step(store, task):\n    return store.load(task)\n",
        "app/stage0/corpus.py": "def refresh(walk):\n    return list(walk())\n",
        "app/memory/store.py": "def load(task):\n    return task\n",
        "app/memory/old_cache.py": "CACHE = {}\n",
        "docs/notes.md": "# Notes\n\nTeh router.\n",
        "tools/helper.py": "\n".join(f"HELPER_{i} = {i}" for i in range(20)) + "\n",
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")

    # The typo fix alone is low-risk.
    (repo / "docs/notes.md").write_text("# Notes\n\nThe router.\n")
    assert not classify_diff(_git(repo, "diff"), policy.high_risk).high_risk

    (repo / "app/pipeline/session.py").write_text(
        "async def step(store, task):\n    return await store.load(task)\n"
    )
    (repo / "app/stage0/corpus.py").write_text(
        "async def refresh(walk):\n    return list(walk())\n"
    )
    (repo / "app/memory/store.py").write_text("async def load(task):\n    return task\n")
    (repo / "app/memory/old_cache.py").unlink()
    (repo / "tools").rename(repo / "scripts")
    _git(repo, "add", "-A")
    diff = _git(repo, "diff", "--cached", "-M")
    assert "rename from tools/helper.py" in diff

    r = classify_diff(diff, policy.high_risk)
    assert r.high_risk
    assert r.rule_ids == ["cross_module_refactor"]
    assert {"tools/helper.py", "scripts/helper.py", "app/memory/old_cache.py"} <= set(r.files)
    assert r.modules == ["app/memory", "app/pipeline", "app/stage0", "docs", "scripts", "tools"]
    assert ("app/pipeline/session.py", 2) in {(f.path, f.line_no) for f in r.reasons}


# ── malformed input ──────────────────────────────────────────────────────────────────────

SHORT_HUNK = """\
--- a/app/x.py
+++ b/app/x.py
@@ -1,3 +1,3 @@
-a = 1
+a = 2
"""

BAD_BODY = """\
--- a/app/x.py
+++ b/app/x.py
@@ -1,2 +1,2 @@
*a = 1
"""


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SHORT_HUNK, "malformed unified diff"),
        (BAD_BODY, "malformed unified diff"),
        ("please fix the parser, thanks\n", "not a unified diff"),
        ("+++ b/app/x.py\n@@ -1 +1 @@\n-a\n+b\n", "malformed unified diff"),
    ],
    ids=["short-hunk", "bad-body-line", "prose", "target-without-source"],
)
def test_malformed_diff_raises_diff_parse_error(policy: Policy, text: str, needle: str) -> None:
    with pytest.raises(DiffParseError) as info:
        classify_diff(text, policy.high_risk)
    assert isinstance(info.value, SwitchyardError)
    assert info.value.exit_code == 2
    assert needle in str(info.value)
    assert info.value.__cause__ is None  # no unidiff traceback rides along


_PIECES = [
    "diff --git a/app/x.py b/app/x.py\n",
    "--- a/app/x.py\n",
    "+++ b/app/x.py\n",
    "--- /dev/null\n",
    "+++ /dev/null\n",
    "@@ -1,2 +1,2 @@\n",
    "@@ -0,0 +1 @@\n",
    " context\n",
    "+import ctypes\n",
    "-DROP TABLE t;\n",
    "\\ No newline at end of file\n",
    "\n",
    "new file mode 100644\n",
    "deleted file mode 100644\n",
    "Binary files a/x and b/x differ\n",
    "rename from a\n",
    "garbage\n",
]


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(_PIECES), max_size=10), st.text(max_size=20))
def test_any_text_gives_a_result_or_a_diff_parse_error(
    policy: Policy, pieces: list[str], tail: str
) -> None:
    try:
        r = classify_diff("".join(pieces) + tail, policy.high_risk)
    except DiffParseError:
        return
    assert r.high_risk == bool(r.reasons)


# ── the pieces: globs, modules, rule semantics ───────────────────────────────────────────


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("**/auth/**", "auth/x.py", True),
        ("**/auth/**", "src/auth/x.py", True),
        ("**/auth/**", "src/auth/deep/x.py", True),
        ("**/auth/**", "src/oauth/x.py", False),
        ("**/Makefile", "Makefile", True),
        ("**/Makefile", "sub/dir/Makefile", True),
        ("**/Makefile", "NotAMakefile", False),
        ("Makefile", "sub/Makefile", False),
        ("**/*.sql", "schema.sql", True),
        ("**/a/**/b.py", "a/b.py", True),
        ("**/a/**/b.py", "x/a/y/z/b.py", True),
        (".github/**", ".github/workflows/ci.yml", True),
        ("**/*.pem", "certs/Server.PEM", False),  # case-sensitive, like the file system
    ],
)
def test_path_globs(glob: str, path: str, expected: bool) -> None:
    assert path_matches(glob, path) is expected


@pytest.mark.parametrize(
    ("path", "module"),
    [
        ("app/router/decide.py", "app/router"),
        ("app/config.py", "app"),
        ("src/pkg/a.py", "src/pkg"),
        ("crates/arena/src/lib.rs", "crates/arena"),
        ("packages/web/package.json", "packages/web"),
        ("lib/x.py", "lib"),
        ("tests/unit/test_x.py", "tests"),
        ("docs/a/b/c.md", "docs"),
        ("Makefile", "."),
    ],
)
def test_module_of(path: str, module: str) -> None:
    assert module_of(path) == module


def test_cross_module_rule_without_patterns_fires_on_the_span_alone() -> None:
    rules = HighRisk(
        cross_module_min_modules=3,
        rules=[HighRiskRule(id="wide", title="Wide change", requires_cross_module=True)],
    )
    r = classify_diff(CROSS_MODULE_ASYNC, rules)
    assert r.high_risk
    (finding,) = r.reasons
    assert (finding.rule_id, finding.source, finding.path) == ("wide", "cross_module", None)
    assert not classify_diff(DOCSTRING_FIX, rules).high_risk


def test_bad_regex_in_a_policy_built_in_code_is_a_policy_error() -> None:
    from app.errors import PolicyError

    rules = HighRisk(
        cross_module_min_modules=3,
        rules=[HighRiskRule(id="broken", title="Broken", lines=["(unclosed"])],
    )
    with pytest.raises(PolicyError, match="broken"):
        classify_diff(DOCSTRING_FIX, rules)


def test_crlf_diff(policy: Policy) -> None:
    r = classify_diff(MIGRATION_SQL.replace("\n", "\r\n"), policy.high_risk)
    assert r.high_risk
    assert r.files == ["migrations/0002_drop_legacy.sql"]
    assert r.reasons[1].line == "DROP TABLE legacy_runs;"


# git C-quotes a path with non-ASCII bytes (core.quotePath, the default).
QUOTED_PATH = r"""diff --git "a/src/auth/cl\303\251.py" "b/src/auth/cl\303\251.py"
index 1a2b3c4..5d6e7f8 100644
--- "a/src/auth/cl\303\251.py"
+++ "b/src/auth/cl\303\251.py"
@@ -1 +1 @@
-KEY_LEN = 16
+KEY_LEN = 32
"""


def test_git_quoted_path_is_decoded(policy: Policy) -> None:
    r = classify_diff(QUOTED_PATH, policy.high_risk)
    assert r.files == ["src/auth/clé.py"]
    assert r.modules == ["src/auth"]
    assert r.rule_ids == ["auth_crypto_secrets_pii"]


# ── the agent must not vouch for itself: its tests and its test command ─────────────────

LOOSENED_ASSERT = """\
diff --git a/tests/test_calc.py b/tests/test_calc.py
index 1111111..2222222 100644
--- a/tests/test_calc.py
+++ b/tests/test_calc.py
@@ -3,4 +3,4 @@ import calc
{blank}
{blank}
 def test_add():
-    assert calc.add(2, 3) == 5
+    assert calc.add(2, 3) == -1
""".format(blank=" ")  # a blank context line is one space

NEW_TEST_FILE = """\
diff --git a/tests/test_more.py b/tests/test_more.py
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ b/tests/test_more.py
@@ -0,0 +1,2 @@
+def test_mul():
+    assert 2 * 3 == 6
"""

CHECK_SCRIPT = """\
diff --git a/check.sh b/check.sh
index 4444444..5555555 100755
--- a/check.sh
+++ b/check.sh
@@ -1,2 +1,2 @@
 #!/bin/sh
-python3 -c 'import calc,sys; sys.exit(0 if calc.add(2,3)==5 else 1)'
+echo PASS
"""


def test_a_loosened_assertion_in_an_existing_test_is_high_risk(policy: Policy) -> None:
    """A run ended merge_ready, tests green and not High-Risk, after its Implementer
    changed the assertion the tests checked."""
    hr = classify_diff(LOOSENED_ASSERT, policy.high_risk)
    assert hr.high_risk
    (finding,) = [r for r in hr.reasons if r.rule_id == "tests_rewritten"]
    assert (finding.path, finding.line_no) == ("tests/test_calc.py", 6)
    assert finding.line == "    assert calc.add(2, 3) == 5"


def test_adding_tests_is_not_high_risk(policy: Policy) -> None:
    assert not classify_diff(NEW_TEST_FILE, policy.high_risk).high_risk


def test_a_change_to_the_test_commands_own_script_is_high_risk(policy: Policy) -> None:
    """``--test-command ./check.sh`` and a change that makes check.sh print PASS."""
    assert not classify_diff(CHECK_SCRIPT, policy.high_risk).high_risk
    hr = classify_diff(CHECK_SCRIPT, policy.high_risk, checks=["check.sh"])
    assert [(r.rule_id, r.path) for r in hr.reasons] == [("test_command", "check.sh")]


def test_the_files_a_test_command_names(tmp_path: Path) -> None:
    from app.pipeline.command_files import command_files

    (tmp_path / "check.sh").write_text("#!/bin/sh\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "test.sh").write_text("#!/bin/sh\n")
    (tmp_path / "tests").mkdir()
    outside = tmp_path.parent / "elsewhere.sh"
    assert command_files(["./check.sh"], tmp_path) == ["check.sh"]
    assert command_files(["bash", "scripts/test.sh", "-x"], tmp_path) == ["scripts/test.sh"]
    assert command_files(["python3", "-m", "pytest", "tests"], tmp_path) == []
    assert command_files(["sh", str(outside), "../elsewhere.sh"], tmp_path) == []


def _new_file(path: str, text: str) -> str:
    lines = text.splitlines()
    body = "".join(f"+{ln}\n" for ln in lines)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


@pytest.mark.parametrize(
    ("path", "text", "line_no"),
    [
        # turns every failure into a pass: pytest then exits 0
        (
            "conftest.py",
            "import pytest\n\n@pytest.hookimpl(hookwrapper=True)\n"
            "def pytest_runtest_makereport(item, call):\n    outcome = yield\n",
            None,
        ),
        ("pytest.ini", "[pytest]\naddopts = --collect-only\n", None),
        ("tox.ini", "[pytest]\naddopts = -p no:python\n", 1),
        ("setup.cfg", "[metadata]\nname = x\n\n[tool:pytest]\ntestpaths = nowhere\n", 4),
        ("pyproject.toml", '[project]\nname = "x"\n\n[tool.pytest.ini_options]\n', 4),
        ("src/sitecustomize.py", "import sys\n", None),
        ("jest.config.js", "module.exports = {testMatch: []}\n", None),
        # a test file that ends the run before the failures are counted
        ("tests/test_zz.py", "import os\n\n\ndef test_a():\n    os._exit(0)\n", 5),
        ("pkg/plugin.py", "def pytest_collection_modifyitems(items):\n    items.clear()\n", 1),
        # found by a later audit, each checked with python or pytest
        ("tests/test_zz.py", "from os import _exit\n\n_exit(0)\n", 1),
        ("tests/test_zz.py", "import os\n\ngetattr(os, '_exit')(0)\n", 3),
        ("calc.py", "import atexit, os\n\natexit.register(os._exit, 0)\n", 3),
        ("calc.py", "import unittest\n\nunittest.TestCase.run = lambda self, r=None: r\n", 3),
        ("pytest.toml", "[pytest]\naddopts = ['--collect-only']\n", None),
    ],
)
def test_what_configures_or_hooks_the_test_run_is_high_risk(
    policy: Policy, path: str, text: str, line_no: int | None
) -> None:
    """Each of these made a red pytest run green with no test touched; the first two
    and the os._exit were found by an audit, checked with pytest."""
    hr = classify_diff(_new_file(path, text), policy.high_risk)
    harness = [r for r in hr.reasons if r.rule_id == "test_harness"]
    assert hr.high_risk and len(harness) == 1, hr.reasons
    assert harness[0].path == path and harness[0].line_no == line_no


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("tox.ini", "[flake8]\nmax-line-length = 100\n"),  # not the test run's
        ("pyproject.toml", "[tool.ruff]\nline-length = 100\n"),
        ("models/weights.pth", "not python\n"),  # a PyTorch checkpoint, not a site .pth
        ("app/daemon.py", "import os\n\n\ndef child():\n    os._exit(0)\n"),  # a fork's exit
        ("app/cleanup.py", "import atexit\n\natexit.register(shutil.rmtree, TMP)\n"),
        ("tests/test_calc.py", "def test_a(case):\n    assert case.TestCase == 1\n"),
    ],
)
def test_what_only_looks_like_the_test_harness_is_not(policy: Policy, path: str, text: str) -> None:
    """A review: each of these made an ordinary change High-Risk (and, under local_only,
    one that could never merge)."""
    hr = classify_diff(_new_file(path, text), policy.high_risk)
    assert not [r for r in hr.reasons if r.rule_id == "test_harness"], hr.reasons


def test_a_new_plain_test_is_still_not_high_risk(policy: Policy) -> None:
    plain = _new_file(
        "tests/test_more.py", "import calc\n\n\ndef test_add():\n    assert calc.add(1, 1) == 2\n"
    )
    assert not classify_diff(plain, policy.high_risk).high_risk


def _added_to(path: str, before: list[str], added: list[str], after: list[str]) -> str:
    """An existing file's diff: ``added`` put between context lines, nothing removed."""
    old = len(before) + len(after)
    body = "".join(f" {ln}\n" for ln in before)
    body += "".join(f"+{ln}\n" for ln in added)
    body += "".join(f" {ln}\n" for ln in after)
    return (
        f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n"
        f"+++ b/{path}\n@@ -1,{old} +1,{old + len(added)} @@\n{body}"
    )


@pytest.mark.parametrize(
    "added",
    [
        ["import pytest", "@pytest.mark.skip(reason='flaky')"],
        ["@pytest.mark.xfail"],
        ["@unittest.skip('later')"],
        ["    pytest.skip('later')"],
        ["    self.skipTest('later')"],
        ["    return"],
        ["    return  # for now"],
    ],
)
def test_a_skip_or_an_early_return_added_to_an_existing_test_is_high_risk(
    policy: Policy, added: list[str]
) -> None:
    """Lines only added, none removed: ``@pytest.mark.skip`` over a failing ``test_add``
    made the run green ("1 skipped"), not High-Risk, and it merged with no cloud Judge
    (a user audit)."""
    if added[0].startswith("    "):  # inside the test
        diff = _added_to("tests/test_calc.py", ["def test_add():"], added, ["    assert 0"])
    else:
        diff = _added_to("tests/test_calc.py", ["import calc", ""], added, ["def test_add():"])
    hr = classify_diff(diff, policy.high_risk)
    (finding,) = [r for r in hr.reasons if r.rule_id == "tests_rewritten"]
    assert hr.high_risk and finding.path == "tests/test_calc.py"
    assert finding.line == added[-1] and "Skips existing tests" in finding.title


def test_a_skip_in_a_new_test_file_or_outside_tests_is_not_high_risk(policy: Policy) -> None:
    """A new test skipped on a platform weakens no existing one; code that returns early
    is not a test."""
    new = _new_file(
        "tests/test_win.py",
        "import pytest, sys\n\n@pytest.mark.skipif(sys.platform != 'win32', reason='x')\n"
        "def test_w():\n    return\n",
    )
    assert not classify_diff(new, policy.high_risk).high_risk
    code = _added_to("calc.py", ["def add(a, b):"], ["    if a is None:", "        return"], [])
    assert not classify_diff(code, policy.high_risk).high_risk
    # a helper under tests/ is no test (a review)
    helper = _added_to(
        "tests/helpers.py", ["def load(x):"], ["    if x is None:", "        return"], []
    )
    assert not classify_diff(helper, policy.high_risk).high_risk


@pytest.mark.parametrize(
    ("path", "new"),
    [
        ("pytest.py", True),  # python -m pytest runs it: raise SystemExit(0)
        ("src/pytest.py", True),
        ("_pytest/__init__.py", True),
        ("pluggy.py", True),
        ("unittest/__init__.py", True),
        ("pytest.py", False),  # there before, changed now: still runs instead of pytest
        ("json.py", True),  # the standard library's, made at the root
        ("src/subprocess/__init__.py", True),
    ],
)
def test_a_module_named_as_one_the_test_run_imports_is_high_risk(
    policy: Policy, path: str, new: bool
) -> None:
    """A one-line ``pytest.py`` (``raise SystemExit(0)``) made the red run green with no
    test run at all; it merged with no cloud Judge (a user audit)."""
    text = ["raise SystemExit(0)"]
    diff = _new_file(path, "\n".join(text) + "\n") if new else _added_to(path, ["x = 1"], text, [])
    hr = classify_diff(diff, policy.high_risk)
    harness = [r for r in hr.reasons if r.rule_id == "test_harness"]
    assert hr.high_risk and [r.path for r in harness] == [path], hr.reasons
    assert "a module named as one the test run imports" in harness[0].title


@pytest.mark.parametrize(
    ("path", "new"),
    [
        ("json.py", False),  # there when the baseline ran: a fix to it is no new shadow
        ("src/pkg/json.py", True),  # inside a package: pkg.json shadows nothing
        ("app/types.py", True),
        ("pytest_helpers.py", True),
        ("docs/pytest.md", True),
        # a folder named so is no root module (a review: each was High-Risk)
        ("py/app.py", False),
        ("src/mypkg/py/util.py", True),
        ("tests/unittest/test_b.py", True),
    ],
)
def test_a_module_that_shadows_nothing_is_not_high_risk(
    policy: Policy, path: str, new: bool
) -> None:
    text = "x = 2\n"
    diff = _new_file(path, text) if new else _added_to(path, ["x = 1"], ["x = 2"], [])
    assert not [
        r for r in classify_diff(diff, policy.high_risk).reasons if r.rule_id == "test_harness"
    ]


def test_a_file_renamed_to_a_standard_module_name_is_high_risk(policy: Policy) -> None:
    diff = (
        "diff --git a/helpers.py b/json.py\nsimilarity index 100%\n"
        "rename from helpers.py\nrename to json.py\n"
    )
    hr = classify_diff(diff, policy.high_risk)
    assert [r.path for r in hr.reasons if r.rule_id == "test_harness"] == ["json.py"]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("pkg/calc_test.go", '\tt.Skip("later")'),
        ("pkg/calc_test.go", "\tt.SkipNow()"),
        ("web/calc.test.ts", "it.skip('adds', () => {"),
        ("web/calc.spec.js", "xit('adds', () => {"),
        ("web/calc.test.js", "describe.skip('calc', () => {"),
    ],
)
def test_go_and_javascript_skips_added_to_existing_tests_are_high_risk(
    policy: Policy, path: str, line: str
) -> None:
    """Only Python's skips were read (a review)."""
    hr = classify_diff(_added_to(path, ["// the tests"], [line], []), policy.high_risk)
    assert [r.line for r in hr.reasons if r.rule_id == "tests_rewritten"] == [line]


def test_a_go_or_javascript_return_is_no_skip(policy: Policy) -> None:
    for path, line in (("pkg/calc_test.go", "\t\treturn"), ("web/calc.test.js", "  return")):
        hr = classify_diff(_added_to(path, ["// the tests"], [line], []), policy.high_risk)
        assert not [r for r in hr.reasons if r.rule_id == "tests_rewritten"], hr.reasons


@pytest.mark.parametrize(
    ("path", "added"),
    [
        ("tests/test_calc.py", ["@pytest.mark.skipif(sys.platform == 'win32', reason='posix')"]),
        ("tests/test_calc.py", ["    np = pytest.importorskip('numpy')"]),
        ("tests/test_calc.py", ["class FakeFile:", "    def close(self):", "        return"]),
        ("pkg/calc_test.go", ["\tif testing.Short() {", '\t\tt.Skip("long")', "\t}"]),
    ],
)
def test_a_conditional_skip_or_a_methods_return_added_is_not_high_risk(
    policy: Policy, path: str, added: list[str]
) -> None:
    """Each made an ordinary change (a new platform test, a fake) High-Risk, and under
    local_only never mergeable (a review): a run whose every test is skipped is no pass
    anyway."""
    hr = classify_diff(_added_to(path, ["# the tests"], added, []), policy.high_risk)
    assert not [r for r in hr.reasons if r.rule_id == "tests_rewritten"], hr.reasons


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("tox.ini", "    --deselect tests/test_calc.py::test_add"),
        ("setup.cfg", "norecursedirs = tests"),
        ("pyproject.toml", '  "--deselect=tests/test_calc.py::test_add",'),
    ],
)
def test_a_test_runs_option_on_a_continuation_line_is_high_risk(
    policy: Policy, path: str, line: str
) -> None:
    """A ``--deselect`` added under an existing multi-line ``addopts =`` made the run
    green ("1 passed, 1 deselected") and merge_ready (a user audit): only ``key =`` lines
    were read."""
    hr = classify_diff(_added_to(path, ["addopts ="], [line], []), policy.high_risk)
    assert [r.line for r in hr.reasons if r.rule_id == "test_harness"] == [line]


def test_a_shared_configs_other_lines_are_not_the_harness(policy: Policy) -> None:
    for path, line in (
        ("setup.cfg", "    E203,"),
        ("pyproject.toml", '  "requests>=2",'),
        ("tox.ini", "max-line-length = 100"),
    ):
        hr = classify_diff(_added_to(path, ["[flake8]"], [line], []), policy.high_risk)
        assert not [r for r in hr.reasons if r.rule_id == "test_harness"], (path, hr.reasons)


@pytest.mark.parametrize(
    ("path", "before", "added"),
    [
        # a test method's return, eight spaces in (a review: only four were read)
        ("tests/test_calc.py", ["class TestCalc:", "    def test_add(self):"], ["        return"]),
        # a condition that always holds is no condition
        ("tests/test_calc.py", ["import pytest"], ["@pytest.mark.skipif(True, reason='x')"]),
        # a module's own importorskip of what is not there skips it whole
        ("tests/test_calc.py", ["import pytest"], ["pytest.importorskip('nope_mod')"]),
        # `if !testing.Short()` skips every normal run
        (
            "pkg/calc_test.go",
            ["func TestAdd(t *testing.T) {"],
            ["\tif !testing.Short() {", '\t\tt.Skip("x")', "\t}"],
        ),
    ],
)
def test_skips_written_round_the_unconditional_rule_are_high_risk(
    policy: Policy, path: str, before: list[str], added: list[str]
) -> None:
    hr = classify_diff(_added_to(path, before, added, []), policy.high_risk)
    assert [r for r in hr.reasons if r.rule_id == "tests_rewritten"], hr.reasons


def test_pips_options_under_deps_are_not_the_harness_and_a_toml_items_option_is(
    policy: Policy,
) -> None:
    for line in ("    -rrequirements-dev.txt", "    -c constraints.txt"):
        hr = classify_diff(_added_to("tox.ini", ["deps ="], [line], []), policy.high_risk)
        assert not [r for r in hr.reasons if r.rule_id == "test_harness"], (line, hr.reasons)
    line = '"--deselect=tests/test_calc.py::test_add",'
    hr = classify_diff(_added_to("pyproject.toml", ["addopts = ["], [line], []), policy.high_risk)
    assert [r.line for r in hr.reasons if r.rule_id == "test_harness"] == [line]


def test_a_return_deep_in_a_test_class_method_is_high_risk_and_in_a_fake_class_not(
    policy: Policy,
) -> None:
    """git's default hunk header for a line far below its method's ``def`` names the
    class: a ``class Test…`` says the line is a test method's (a reread)."""

    def deep(header: str) -> str:
        return (
            "diff --git a/tests/test_calc.py b/tests/test_calc.py\n"
            "index 1111111..2222222 100644\n--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n"
            f"@@ -21,2 +21,3 @@ {header}\n         x = 1\n+        return\n"
            "         assert add(1, 2) == 3\n"
        )

    hr = classify_diff(deep("class TestCalc:"), policy.high_risk)
    assert [r.line_no for r in hr.reasons if r.rule_id == "tests_rewritten"] == [22]
    hr = classify_diff(deep("class FakeFile:"), policy.high_risk)
    assert not [r for r in hr.reasons if r.rule_id == "tests_rewritten"]


@pytest.mark.parametrize("brk", ["\r", "\x0c", "\u2028", "\x0b"])
def test_a_line_break_inside_a_changed_line_hides_nothing(policy: Policy, brk: str) -> None:
    """A changed line that holds a lone CR, a form feed or another break Python and
    pytest's ini reader split at is several lines to them: `max-line-length = 100\\r
    [pytest]\\raddopts = --co` was one line to the classifier, no rule matched, and pytest
    obeyed the new section (a review, once the diff kept git's bytes)."""
    config = brk.join(["max-line-length = 100", "[pytest]", "addopts = -p no:cacheprovider --co"])
    hr = classify_diff(_added_to("tox.ini", ["[flake8]"], [config], []), policy.high_risk)
    assert hr.high_risk and [r.rule_id for r in hr.reasons if r.rule_id == "test_harness"]
    skipped = brk.join(["    x = 1", "    return"])
    path = "tests/test_calc.py"
    hr = classify_diff(_added_to(path, ["def test_add():"], [skipped], []), policy.high_risk)
    assert [r for r in hr.reasons if r.rule_id == "tests_rewritten"], hr.reasons
