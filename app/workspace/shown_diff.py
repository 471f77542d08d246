"""The run's change as people, the High-Risk classifier and the Judge read it (pure).

``git diff`` lets the repository decide what it shows: a ``.gitattributes`` line such as
``*.py -diff`` (which a model's edit can write) turns a source file's change into "Binary
files differ", or with ``--binary`` into a base85 blob that no masker, classifier or
reviewer can read. A High-Risk change then classified as nothing, and a key inside it
went unmasked to the cloud Judge and into the evidence. So the diff is taken with
``--text --no-textconv --no-ext-diff`` (every file as its own bytes, whatever the
attributes say), and only a file whose shown lines hold a NUL byte, which is what git
itself calls binary, is reduced here to git's one line for it: its bytes are never
shown, sent or stored.

Nor does the user's git configuration decide how it reads: the output flags are fixed
(``diff.noprefix`` dropped the ``a/``/``b/`` the classifier strips, so a file under ``c/``
or ``w/`` lost its folder; ``color.diff=always`` and ``diff.external`` are overridden
too). And it is read as bytes (:func:`diff_text`): read as text, a change that only
turned LF into CRLF showed as equal ``-``/``+`` lines, and a CR inside a line was lost.

A submodule shows as its commit pointer only (``Subproject commit …``), whatever
``diff.submodule`` and a ``.gitmodules`` say: ``diff.submodule=diff`` had git run
``git diff`` inside the submodule, found through its ``.git`` file, which a test can
rewrite (GR-010), and ``ignore = all`` in a ``.gitmodules`` hid a new pointer.
"""

from __future__ import annotations

import re

#: how ``git diff`` is asked for the run's change (after ``diff``, before the revisions);
#: the prefixes given outright win over diff.noprefix and diff.mnemonicPrefix
DIFF_ARGS = (
    "--text",
    "--no-textconv",
    "--no-ext-diff",
    "--no-color",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=short",
    "--ignore-submodules=dirty",
)

_SECTION = re.compile(r"^diff --git ", re.M)


def diff_text(raw: bytes) -> str:
    """``git diff``'s bytes as the text everyone reads: every byte kept as it came (a CR
    too, which :func:`app.shown.clean_row` shows as ␍ on a screen), except a byte that is
    not UTF-8 (a Latin-1 file's é): that reads as U+FFFD, the replacement character, so a
    reader sees that something was there and could not be shown (the commit, which the
    merge takes, keeps the byte). ``surrogateescape`` would keep it as a lone surrogate,
    which is no character: strict UTF-8 cannot encode it, and the JSON sent to the Judge
    would carry it as an escape that no reader turns back into the byte."""
    return raw.decode("utf-8", "replace")


def shown_diff(text: str) -> str:
    """``text`` (a ``git diff --text`` of commits) with each binary file's hunks replaced
    by ``Binary files A and B differ``, as plain ``git diff`` writes it."""
    if "\x00" not in text:
        return text
    starts = [m.start() for m in _SECTION.finditer(text)]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    out: list[str] = []
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        section = text[begin:end]
        out.append(_binary(section) if "\x00" in section else section)
    return "".join(out)


def _binary(section: str) -> str:
    """A file's section with its ``---``/``+++`` lines and hunks as git's binary line."""
    lines = section.splitlines(keepends=True)
    head: list[str] = []
    old = new = None
    for line in lines:
        if line.startswith("--- "):
            old = line[4:].rstrip("\n")
        elif line.startswith("+++ "):
            new = line[4:].rstrip("\n")
            break
        else:
            head.append(line)
    if old is None or new is None:  # no hunks to replace: keep git's header only
        return "".join(line for line in head if "\x00" not in line)
    return "".join(head) + f"Binary files {old} and {new} differ\n"
