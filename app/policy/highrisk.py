"""The High-Risk classifier (GR-002, §7): the policy's ``[high_risk]`` rules over a unified diff.

Pure: text and rules in, a :class:`HighRiskResult` out. No clock, no I/O.

Semantics (the policy file's ``[high_risk]`` comment is the short version):

* ``paths`` are globs matched on each changed file's path, old and new (renames, added and
  deleted files). fnmatch semantics (``*`` also crosses ``/``), plus ``**/`` matching zero
  directories, so ``**/auth/**`` matches ``auth/x.py`` as well as ``src/auth/x.py``.
* ``lines`` are regexes searched in ADDED and REMOVED lines, never in context lines.
* A rule fires when any of its path or line patterns matches. A rule with
  ``requires_cross_module`` also needs the changed files to span at least
  ``cross_module_min_modules`` modules (see :func:`module_of`); without patterns, the span
  alone fires it.
* A spec declaring HR = YES makes the change High-Risk on its own; ``spec_hr=False`` (HR = NO)
  cannot clear a diff that a rule flags: either source is enough.
"""

from __future__ import annotations

import codecs
import fnmatch
import functools
import itertools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict
from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

from app.errors import PolicyError, SwitchyardError
from app.policy.schema import HighRisk, HighRiskRule

FindingSource = Literal["path", "line", "cross_module", "spec"]

#: Top-level directories that hold modules rather than being one (``src/pkg/a.py`` → ``src/pkg``).
CONTAINER_DIRS = frozenset({"src", "lib", "crates", "packages", "app"})
#: The module of a file at the repository root.
ROOT_MODULE = "."
#: Longest line text a finding carries.
MAX_LINE_CHARS = 200
SPEC_RULE_ID = "spec_hr"

_DEV_NULL = "/dev/null"
# git's "a/", "b/" (and other tools' "c/", "i/", "o/", "w/", "1/", "2/") path prefixes,
# the same set unidiff strips.
_VCS_PREFIX = re.compile(r"^[abciow12]/")


class DiffParseError(SwitchyardError):
    """The text is not a unified diff that can be read."""

    exit_code = 2


class HighRiskFinding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str
    title: str
    #: the changed file; None for a spec finding or a span-only cross-module finding
    path: str | None = None
    #: target line for an added line, source line for a removed one, None for a path match
    line_no: int | None = None
    #: the line's text without its newline, at most MAX_LINE_CHARS characters
    line: str | None = None
    source: FindingSource


class HighRiskResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    high_risk: bool
    reasons: list[HighRiskFinding]
    #: modules the diff touches (sorted); len() is the ``modules_touched`` signal
    modules: list[str]
    #: changed paths, old and new names of renames included (sorted)
    files: list[str]

    @property
    def rule_ids(self) -> list[str]:
        """Ids of the rules that fired (and ``spec_hr``), in policy order, once each."""
        return list(dict.fromkeys(f.rule_id for f in self.reasons))


# ── paths and modules ────────────────────────────────────────────────────────────────────


def _clean_path(raw: str | None) -> str | None:
    """A repository-relative path from a diff header, or None for /dev/null."""
    if raw is None:
        return None
    path = raw.strip()
    if len(path) >= 2 and path.startswith('"') and path.endswith('"'):
        # git C-quotes unusual names ("a/t\303\251st.py"): undo the escapes, then UTF-8.
        inner = path[1:-1].encode("latin-1", "backslashreplace")
        path = codecs.escape_decode(inner)[0].decode("utf-8", "replace")
    if path in ("", _DEV_NULL):
        return None
    path = _VCS_PREFIX.sub("", path, count=1)
    while path.startswith("./"):
        path = path[2:]
    return path or None


def module_of(path: str) -> str:
    """The top-level module a path belongs to.

    The first path component, or the first two when the first is a container directory
    (src, lib, crates, packages, app) and the file sits below one more directory:
    ``app/router/x.py`` → ``app/router``, ``app/config.py`` → ``app``,
    ``tests/unit/t.py`` → ``tests``, ``Makefile`` → ``.`` (the root).
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) <= 1:
        return ROOT_MODULE
    if parts[0] in CONTAINER_DIRS and len(parts) >= 3:
        return f"{parts[0]}/{parts[1]}"
    return parts[0]


def _glob_variants(glob: str) -> list[str]:
    """``glob`` with every subset of its ``**/`` removed: fnmatch's ``**/`` needs a directory."""
    while "**/**/" in glob:  # equivalent, and keeps the 2^n variants few
        glob = glob.replace("**/**/", "**/")
    pieces = glob.split("**/")
    variants = []
    for keep in itertools.product((True, False), repeat=len(pieces) - 1):
        out = pieces[0]
        for k, piece in zip(keep, pieces[1:], strict=True):
            out += ("**/" if k else "") + piece
        variants.append(out)
    return variants


@functools.lru_cache(maxsize=512)
def _glob_regex(glob: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(v)})" for v in _glob_variants(glob)))


def path_matches(glob: str, path: str) -> bool:
    """fnmatch (case-sensitive) where ``**/`` also matches zero directories."""
    return _glob_regex(glob).match(path) is not None


# ── the diff, reduced to what the rules read ─────────────────────────────────────────────


@dataclass(frozen=True)
class _ChangedLine:
    path: str
    line_no: int
    text: str
    removed: bool = False
    #: the function the line is in, as far as its hunk tells (the last ``def`` above it,
    #: else git's hunk header), "" when it does not
    scope: str = ""


@dataclass(frozen=True)
class _ChangedFile:
    paths: tuple[str, ...]  # new name first (when there is one), then the old name if different
    lines: tuple[_ChangedLine, ...]
    #: the change creates it (it was not there before)
    new: bool = False


def _parse(diff_text: str) -> list[_ChangedFile]:
    try:
        patch = PatchSet(diff_text)
    except (UnidiffParseError, ValueError, IndexError) as exc:
        # unidiff only raises UnidiffParseError in practice; the others guard against a
        # header it half-reads. Either way the caller gets our error, not a library trace.
        raise DiffParseError(f"malformed unified diff: {exc}") from None
    if not patch:
        raise DiffParseError(
            "not a unified diff: no file header ('diff --git', or '---'/'+++') found"
        )
    files: list[_ChangedFile] = []
    for pf in patch:
        source = _clean_path(pf.source_file)
        target = _clean_path(pf.target_file)
        paths = tuple(dict.fromkeys(p for p in (target, source) if p is not None))
        if not paths:
            raise DiffParseError(f"malformed unified diff: file entry without a path: {pf!r}")
        lines: list[_ChangedLine] = []
        for hunk in pf:
            scope = _scope_of_header(hunk.section_header or "")
            for ln in hunk:
                # One diff line is several to Python, pytest's ini reader and configparser
                # when it holds a lone CR, a form feed or another break of theirs: each
                # piece is a line to every rule (`max = 1\r[pytest]\raddopts = --co` was
                # one line no anchored rule matched, and pytest obeyed it: a review).
                for piece in _text(ln.value).splitlines() or [""]:
                    if not ln.is_removed and (name := _def_name(piece)):
                        scope = name
                    if ln.is_added and target is not None and ln.target_line_no is not None:
                        lines.append(_ChangedLine(target, ln.target_line_no, piece, scope=scope))
                    elif ln.is_removed and source is not None and ln.source_line_no is not None:
                        lines.append(_ChangedLine(source, ln.source_line_no, piece, removed=True))
        files.append(_ChangedFile(paths, tuple(lines), new=source is None))
    return files


_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)")


def _def_name(line: str) -> str:
    """The function a ``def`` line opens, else ""."""
    m = _DEF.match(line)
    return m[1] if m else ""


_TEST_CLASS = re.compile(r"^\s*class\s+Test\w*")


def _scope_of_header(header: str) -> str:
    """Whose a hunk's lines are, from git's hunk header: a ``def`` it names, or, for a
    ``class Test…`` (git's default header for a method deep in a test class), its
    methods' ("test…": a return placed far below a test method's ``def`` is one)."""
    return _def_name(header) or ("test_methods" if _TEST_CLASS.match(header) else "")


def _text(value: str) -> str:
    return value.rstrip("\r\n")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


# ── rules ────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _CompiledRule:
    paths: tuple[re.Pattern[str], ...]
    lines: tuple[re.Pattern[str], ...]


@functools.lru_cache(maxsize=256)
def _compile_rule(rule_id: str, paths: tuple[str, ...], lines: tuple[str, ...]) -> _CompiledRule:
    # Cached by the rule's tuple: one compile per distinct rule per process.
    try:
        line_res = tuple(re.compile(p) for p in lines)
    except re.error as exc:
        # The loader validates these; a Policy built in code may not have been.
        raise PolicyError([f"high_risk rule {rule_id!r}: bad regex: {exc}"]) from None
    return _CompiledRule(tuple(_glob_regex(g) for g in paths), line_res)


def _compiled(rule: HighRiskRule) -> _CompiledRule:
    return _compile_rule(rule.id, tuple(rule.paths), tuple(rule.lines))


def _rule_findings(
    rule: HighRiskRule, files: list[_ChangedFile], *, cross_module: bool
) -> list[HighRiskFinding]:
    compiled = _compiled(rule)
    path_source: FindingSource = "cross_module" if cross_module else "path"
    line_source: FindingSource = "cross_module" if cross_module else "line"
    found: list[HighRiskFinding] = []
    for f in files:
        if compiled.paths:
            for path in f.paths:
                if any(rx.match(path) for rx in compiled.paths):
                    found.append(
                        HighRiskFinding(
                            rule_id=rule.id, title=rule.title, path=path, source=path_source
                        )
                    )
        if compiled.lines:
            for ln in f.lines:
                if any(rx.search(ln.text) for rx in compiled.lines):
                    found.append(
                        HighRiskFinding(
                            rule_id=rule.id,
                            title=rule.title,
                            path=ln.path,
                            line_no=ln.line_no,
                            line=_clip(ln.text),
                            source=line_source,
                        )
                    )
    return found


def _order(findings: list[HighRiskFinding]) -> list[HighRiskFinding]:
    # Within one rule: by path, path match before its lines, then by line number; a removed
    # and an added line with the same number keep a stable order by their text.
    return sorted(
        findings,
        key=lambda f: (f.path or "", f.line_no is not None, f.line_no or 0, f.line or ""),
    )


#: what a test run takes its verdict from. A change that removes lines of an existing one
#: (an assertion loosened, a case deleted) or edits the test command's own files makes
#: "tests green" prove less: the agent would be vouching for itself, so it is High-Risk
#: (GR-002's cloud Judge reads it). Adding tests is not.
TEST_FILE_GLOBS = (
    "**/tests/**",
    "**/test/**",
    "**/__tests__/**",
    "**/test_*.py",
    "**/*_test.py",
    "**/conftest.py",
    "**/*_test.go",
    "**/*.test.*",
    "**/*.spec.*",
)
TESTS_REWRITTEN = "tests_rewritten"
TEST_COMMAND = "test_command"
TEST_HARNESS = "test_harness"

#: what configures or hooks the test run itself, new or changed: a conftest.py that turns
#: failures into passes, a pytest.ini whose ``addopts = --collect-only`` runs nothing, a
#: ``sitecustomize.py`` or ``.pth`` file every interpreter loads, a runner's config. Each
#: made a red run green with no test touched (an audit found the first two).
TEST_HARNESS_GLOBS = (
    "**/conftest.py",
    "**/pytest.ini",
    "**/.pytest.ini",
    "**/pytest.toml",  # pytest 9 reads its settings from these too
    "**/.pytest.toml",
    "**/noxfile.py",
    "**/sitecustomize.py",
    "**/usercustomize.py",
    "**/jest.config.*",
    "**/vitest.config.*",
    "**/vitest.workspace.*",
    "**/karma.conf.*",
    "**/.mocharc*",
    "**/phpunit.xml*",
    "**/.rspec",
)
#: added lines that take over a test run from any Python file: a pytest hook or plugin;
#: an exit hook that ends the process with a code of its own (``atexit.register(os._exit,
#: 0)`` turned a failing run's exit 1 into 0); unittest's machinery patched
#: (``TestCase.run = ...``)
_HARNESS_LINE = re.compile(
    r"^\s*(?:async\s+)?def\s+pytest_\w+\s*\(|^\s*pytest_plugins\s*=|"
    r"\batexit\b.*\b_exit\b|"
    r"\b(?:TestCase|TestResult|TextTestResult|TestLoader|TestSuite|TextTestRunner)"
    r"\.\w+\s*=(?!=)"
)
#: in a test file, also an exit that ends the run before its failures are counted
#: (``os._exit(0)``, ``from os import _exit``, ``getattr(os, "_exit")``; elsewhere a
#: daemon's fork may rightly call it)
_TEST_EXIT = re.compile(r"\b_exit\b")
#: a shared config file's lines that configure the test run (``tox.ini`` and
#: ``setup.cfg`` hold flake8's and others' settings too: those are not the harness)
_SHARED_CONFIGS = ("**/tox.ini", "**/setup.cfg", "**/pyproject.toml")
_HARNESS_CONFIG_LINE = re.compile(
    r"^\s*\[(?:pytest|tool:pytest|tool\.pytest\.ini_options|testenv[^\]]*)\]|"
    r"^\s*(?:addopts|testpaths|python_files|python_classes|python_functions|commands|"
    r"norecursedirs|pythonpath|confcutdir|filterwarnings|usefixtures|xfail_strict)\s*=|"
    # a test run's option on a continuation line or in a TOML array (``--deselect
    # tests/test_calc.py::test_add`` under a multi-line addopts deselected the failing
    # test: a user audit); pytest's own options, not pip's ``-r``/``-c`` under ``deps``
    r"^\s*[\"']?(?:--(?:deselect|ignore|ignore-glob|co|collect-only|lf|last-failed|ff|"
    r"sw|stepwise|maxfail|runxfail|noconftest|confcutdir|rootdir|pyargs|import-mode|"
    r"override-ini|disable-warnings|continue-on-collection-errors)\b|-[kmpxo]\b)"
)


#: an added line that skips a test, expects it to fail or leaves it before its asserts:
#: a failing test made "green" with only lines added (a user audit: ``@pytest.mark.skip``
#: over ``test_add`` merged with no cloud Judge, as only removed lines were read)
#: Unconditional only: a platform's ``skipif`` or an ``importorskip`` on a new test is an
#: ordinary addition (a review: each made a fix High-Risk, and under local_only never
#: mergeable); a run whose every test is skipped is no pass anyway
#: (app/workspace/pytest_summary.py). A bare ``return`` counts at a function's own level
#: (four spaces): a method's, a fake's ``close()``, is no test's.
_SKIP_LINE = re.compile(
    r"\bmark\.(?:skip|xfail)\b(?!if)|\bpytest\.(?:skip|xfail)\s*\(|"
    r"\bunittest\.(?:skip|expectedFailure)\b(?![IU])|\.skipTest\s*\(|"
    r"\braise\s+(?:unittest\.)?SkipTest\b|^\s*@\s*(?:skip|expectedFailure|xfail)\b(?![IU])|"
    # a condition that always holds is no condition; a module's own importorskip skips it
    # whole (a review: both were ways round the unconditional rule)
    r"\b(?:skipif|skipIf|xfail)\s*\(\s*(?:True|1|not\s+False)\b|"
    r"\bskipUnless\s*\(\s*(?:False|0|not\s+True)\b|^\S.*\bimportorskip\s*\("
)
#: a bare return: a skip in a test function (any depth: a test method's is at eight
#: spaces, a review), and, where the hunk does not say whose it is, at a function's
#: own level (a fake's ``close()`` is no test's)
_BARE_RETURN = re.compile(r"^(?P<indent>\s+)return\s*(?:None\s*)?(?:#.*)?$")


def _check_findings(files: list[_ChangedFile], checks: Sequence[str]) -> list[HighRiskFinding]:
    """The test command's own files changed, existing tests' lines removed, and existing
    test files given a skip, an expected failure or an early return."""
    found: list[HighRiskFinding] = []
    guarded = set(checks)
    for f in files:
        for path in f.paths:
            if path in guarded:
                found.append(
                    HighRiskFinding(
                        rule_id=TEST_COMMAND,
                        title="Changes a file the test command runs (its verdict would be "
                        "the change's own)",
                        path=path,
                        source="path",
                    )
                )
        found.extend(_harness_findings(f))
        gone = next(
            (
                ln
                for ln in f.lines
                if ln.removed
                and ln.text.strip()
                and any(path_matches(g, ln.path) for g in TEST_FILE_GLOBS)
            ),
            None,
        )
        if gone is not None:
            found.append(
                HighRiskFinding(
                    rule_id=TESTS_REWRITTEN,
                    title="Removes or rewrites lines of existing tests",
                    path=gone.path,
                    line_no=gone.line_no,
                    line=_clip(gone.text),
                    source="line",
                )
            )
        skip = None if f.new else next((ln for ln in _unguarded(f.lines) if _skips(ln)), None)
        if skip is not None:
            found.append(
                HighRiskFinding(
                    rule_id=TESTS_REWRITTEN,
                    title="Skips existing tests, expects them to fail or returns before "
                    "their checks",
                    path=skip.path,
                    line_no=skip.line_no,
                    line=_clip(skip.text),
                    source="line",
                )
            )
    return found


#: Go's and the JavaScript runners' skips, in their test files (a review)
_GO_SKIP = re.compile(r"\bt\.Skip(?:Now|f)?\s*\(")
#: Go's ``-short`` guard, as written (``if !testing.Short()`` skips every normal run)
_SHORT = re.compile(r"^\s*if\s+testing\.Short\(\)\s*\{\s*$")
_JS_SKIP = re.compile(r"\b(?:it|test|describe)\.skip\s*\(|\bx(?:it|test|describe)\s*\(")


def _unguarded(lines: tuple[_ChangedLine, ...]) -> list[_ChangedLine]:
    """The lines, but for one right below an added ``if testing.Short()`` (Go's ``-short``
    skip of a long test, not a skip of the failing one: a review)."""
    out: list[_ChangedLine] = []
    above: _ChangedLine | None = None
    for ln in lines:
        guarded = (
            above is not None
            and not above.removed
            and above.line_no == ln.line_no - 1
            and _SHORT.search(above.text) is not None
        )
        if not guarded:
            out.append(ln)
        above = ln
    return out


def _skips(ln: _ChangedLine) -> bool:
    """An added line that skips a test in a test module: :data:`_SKIP_LINE` in
    ``test_*.py`` / ``*_test.py`` (a bare ``return`` in a helper under tests/ is no
    test's, a review), Go's ``t.Skip`` in ``*_test.go``, ``it.skip``/``xit`` in a
    ``*.test.*`` or ``*.spec.*``."""
    if ln.removed:
        return False
    name = ln.path.rsplit("/", 1)[-1]
    if name.endswith(".py"):
        if not (name.startswith("test_") or name.endswith("_test.py")):
            return False
        if _SKIP_LINE.search(ln.text):
            return True
        bare = _BARE_RETURN.match(ln.text)
        if bare is None:
            return False
        return ln.scope.startswith("test") if ln.scope else bare["indent"] == "    "
    if name.endswith("_test.go"):
        return bool(_GO_SKIP.search(ln.text))
    if ".test." in name or ".spec." in name:
        return bool(_JS_SKIP.search(ln.text))
    return False


#: what a Python test run imports before any test: a module of the repository's named so
#: runs instead (``python -m pytest`` puts the working folder first on the path: a
#: one-line ``pytest.py`` of ``raise SystemExit(0)`` made a red run green with no test
#: run at all, and it merged with no cloud Judge: a user audit)
_RUNNER_MODULES = frozenset(
    {"pytest", "_pytest", "py", "pluggy", "iniconfig", "unittest", "nose", "nose2"}
)


def _shadows(path: str, new: bool) -> bool:
    """A Python file that would be imported in place of the test runner's own modules
    (any change, anywhere), or, created by the change at the repository's root or in
    ``src/``, in place of a standard library module (an existing one was there when the
    baseline ran: editing it is no new shadow)."""
    if not path.endswith(".py"):
        return False
    parts = path.split("/")
    top = parts[1:] if parts[0] == "src" and len(parts) > 1 else parts
    # the module a file makes importable at a root (``py/app.py`` is ``py.app``, which is
    # no runner's: only a root module or package shadows, a review)
    if len(top) == 1:
        name = top[0].removesuffix(".py")
    elif len(top) == 2 and top[1] == "__init__.py":
        name = top[0]
    else:
        return False
    return name in _RUNNER_MODULES or (new and name in sys.stdlib_module_names)


def _takes_over(ln: _ChangedLine) -> bool:
    """A changed line that takes over the test run (see :data:`TEST_HARNESS_GLOBS`)."""
    if any(path_matches(g, ln.path) for g in _SHARED_CONFIGS):
        return bool(_HARNESS_CONFIG_LINE.search(ln.text))  # added or removed
    if ln.removed or not ln.path.endswith(".py"):
        return False
    if _HARNESS_LINE.search(ln.text):
        return True
    return bool(_TEST_EXIT.search(ln.text)) and any(
        path_matches(g, ln.path) for g in TEST_FILE_GLOBS
    )


def _harness_findings(f: _ChangedFile) -> list[HighRiskFinding]:
    """The test run's own configuration or hooks, changed (one finding a file)."""
    title = "Changes what configures or hooks the test run (its verdict: the change's own)"
    for path in f.paths:
        if any(path_matches(g, path) for g in TEST_HARNESS_GLOBS):
            return [HighRiskFinding(rule_id=TEST_HARNESS, title=title, path=path, source="path")]
        if _shadows(path, f.new or (len(f.paths) > 1 and path == f.paths[0])):  # (renamed to)
            shadow = "Adds or changes a module named as one the test run imports (it runs instead)"
            return [HighRiskFinding(rule_id=TEST_HARNESS, title=shadow, path=path, source="path")]
    hook = next((ln for ln in f.lines if _takes_over(ln)), None)
    if hook is None:
        return []
    return [
        HighRiskFinding(
            rule_id=TEST_HARNESS,
            title=title,
            path=hook.path,
            line_no=hook.line_no,
            line=_clip(hook.text),
            source="line",
        )
    ]


def classify_diff(
    diff_text: str,
    rules: HighRisk,
    *,
    spec_hr: bool | None = None,
    checks: Sequence[str] = (),
) -> HighRiskResult:
    """Classify a unified diff against the policy's High-Risk rules.

    ``spec_hr`` is the spec's HR field: True (YES) makes the change High-Risk by itself;
    False (NO) and None (not stated) leave the verdict to the rules. ``checks``: the
    repository files the run's test command runs (its script); a change to one, or one
    that removes lines of existing tests, is High-Risk whatever the rules say.
    Raises :class:`DiffParseError` when the text is not a readable unified diff. Blank
    text is an empty diff: nothing changed, nothing High-Risk (unless the spec says so).
    """
    files = _parse(diff_text) if diff_text.strip() else []
    all_paths = sorted({p for f in files for p in f.paths})
    modules = sorted({module_of(p) for p in all_paths})

    findings: list[HighRiskFinding] = []
    if spec_hr is True:
        findings.append(
            HighRiskFinding(rule_id=SPEC_RULE_ID, title="The spec declares HR = YES", source="spec")
        )
    spans = len(modules) >= rules.cross_module_min_modules
    for rule in rules.rules:
        if rule.requires_cross_module:
            if not spans:
                continue
            if not rule.paths and not rule.lines:
                findings.append(
                    HighRiskFinding(rule_id=rule.id, title=rule.title, source="cross_module")
                )
                continue
        findings.extend(
            _order(_rule_findings(rule, files, cross_module=rule.requires_cross_module))
        )
    findings.extend(_check_findings(files, checks))

    return HighRiskResult(
        high_risk=bool(findings), reasons=findings, modules=modules, files=all_paths
    )


__all__ = [
    "CONTAINER_DIRS",
    "DiffParseError",
    "HighRiskFinding",
    "HighRiskResult",
    "classify_diff",
    "module_of",
    "path_matches",
]
