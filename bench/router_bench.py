"""P1 (our side): one routed request on the real request path, with a mocked backend.

The path is the one `switchyard ask` takes for an escalated request: decide (pure) →
state (runtime probes cached, session approval, ledger budget reads) → escalation audit
line → budget reservation → backend call (an in-process mock that answers at once) →
settle → call audit line. The files are real, in a temporary directory on disk, with the
product's settings (the spools, folded into SQLite with WAL and ``synchronous = NORMAL``:
see app/spool.py, app/audit/log.py and app/router/ledger for what that keeps and what a
power cut may lose). The backends are resolved by the product's ``BackendRegistry``
(which cloud models have their key, the runtimes' cached probes, each backend made once),
with every backend a mock; each provider the policy names has a key in this process's
environment (a made-up one when the machine has none), so that every line and outgoing
request is checked for the keys, as a user's are. Until e172a17 a bare resolver stood in
for the registry and no key was set: the same code measured 252-258 µs that way, 271-275
µs this way.

Run: python -m bench.router_bench [--n 10000] [--phases]

``--serve --conversation KB``: each request sends a coding agent's conversation of KB KB
(``bench/conversation.py``, as P1's ``--conversation`` does on both sides), made into the
request the router takes from its messages as dicts, inside the timed part.

``--phases`` times each part of the request on its own as well (the median µs of each
awaited call: decide with its state reads, each audit append, the reservation, the
backend call, the settlement); what is left of the p50 is the glue between them (the
provenance hash, masking, the result). Measured this way on 2 shared cores (issue 20,
load average ~3.5): p50 966 µs = decide + state 148, two audit appends 193 each
(4 statements each: BEGIN, the tail, the line, the head; ~90 µs of Python making the
line), reserve 179, backend 24, settle 101, glue ~130. After the changes below, 7f0926b
and 6b64c29 alternating, twice each, 4000 requests (load average ~2.5): p50 0.92-0.93 →
0.86-0.87 ms; decide + state 141 → 121 µs, an audit append 190 → 172, reserve 168-176
→ 168-173 (its commit, writing the pages of both ledger transactions to the WAL, is
most of it), settle 95 → 96, backend 22.

Instructions (callgrind, independent of the load): ``valgrind --tool=callgrind`` over
``setup()``, 50 warm-up requests, then 100 (and then 400) timed ones, the audit log and the
ledger closed without ``verify()`` (its cost grows with the lines); the difference of the
two runs ÷ 300. At c0a4adc: 2.95 M per request, of which SQLite statements 0.60 M (~15
statements in 3 commits; the WAL commits 0.25 M), the JSON encoder 0.19 M and decoder
0.19 M (the audit lines' canonical text and its plain fields), ``datetime.isoformat``
0.12 M, and the rest Python (pydantic models, decide, the chain). What each change of
issue 20 bought, each commit counted the same way:

====================================================================  =======  ========
change                                                                 commit  M instr.
====================================================================  =======  ========
before                                                                 7f0926b     2.96
the audit values encoded by a C encoder built once (json's Python      665fdde     2.82
wrappers gone) and read back in one scan; ``iso()`` makes each
second's text once (keyed on the fields: ``datetime.replace`` costs
as much as ``isoformat``)
``decide()`` takes the fired triggers the router read already (they    cfadaec     2.74
were evaluated twice, a pydantic ``Reason`` each); the policy's cloud
models listed once; the settlement in one statement (``UPDATE …
RETURNING``, not ``SELECT *`` then ``UPDATE``)
the redaction look uses ``bytes.find``: ``needle in data`` first       6b64c29     2.68
tries the needle as an int and raises and clears a TypeError (~2 k
instructions, 25 times a line)
no ephemeral table in the ledger's statements: SQLite built one for    309be2d     2.45
each IN list it evaluated (the status and scope CHECKs, ~9 a request)
and for the settlement's RETURNING; schema v3 spells the CHECKs with
OR, the sums read is three index lookups, the settlement updates then
reads. Of the 0.24 M, 0.13 M were memset's ``rep stosb`` (callgrind
counts each byte step; cheap in hardware), but the wall time fell
more than the count: p50 1.56/1.35 -> 1.35/1.19 ms alternating trees,
reserve 309/269 -> 256/224 µs, settle 181/159 -> 142/121 µs
====================================================================  =======  ========

Tried and left out: ``AuditLine.model_construct`` for lines whose fields are already
typed is slower than validating them (5.5 µs against 3.2 µs here: construct is Python,
validation is Rust). An in-memory chain tail: the file has writers in several processes
(``switchyard ask``, the TUI, the gateway), so the tail must be read inside the write
transaction; checking that nobody else wrote (``PRAGMA data_version``) is one statement
too, as dear as the indexed tail read it would replace. A regex that would let the plain
values be read back without the sorted-keys hook costs about what it saves. Group commit
is in place, checked with a statement trace: each file commits once per request (the
settlement and the call line join the next request's first write), so the two commits
before the call (the escalation line, the reservation) are the floor while the audit log
and the ledger are two files.

What is left at 2.68 M: SQLite 0.86 M (statements 0.65 M, rows fetched 0.14 M,
the commits 0.17 M and page-cache zeroing 0.16 M among them), the JSON encoder 0.18 M,
reading the values back as plain JSON 0.14 M, the redaction look 0.11 M, SHA-256 0.05 M,
pydantic (10 validations a request: RouterState, Decision, Reservation, two AuditLines,
the mock's three, …), and the interpreter running the chain. The 150 µs goal is ~0.5 M
instructions on this machine: it needs the request path rebuilt (one file, fewer lines
and models per request), not tuning.

``--live`` attaches the live view (a bus the stores publish on, and a reader), as the TUI,
``switchyard run`` and the ACP agent do, and gives the event loop a turn after each
request. Measured so, the budget meter's snapshot was on the request path: ``reserve`` and
``settle`` each read it (the session's calls grouped by role, model, provider; the day's
by provider) on the connection's thread before returning, so a request cost 2.91 / 5.16 /
8.49 ms p50 after 1k / 3k / 6k requests (p99 14.9 ms), growing with the calls on file.
Now the snapshot is read and published off the request path (app/router/ledger/publisher.py,
3d4f187): 0.88 / 0.89 / 0.88 ms, p99 1.5 ms, flat. Later (issue 20, the stop that measured
the interpreter, below), the live view still cost 20-40 µs a request over the goal's
path: each audit line was read back from its text into a dict on the request path, to
be published. Taken out in turn (one process, 30-40 rounds of 1,000): no publishing at
all -30 µs, publishing an event that needs no reading -16. Now the event carries the
line's text and a subscriber reads it when it first asks (``app.bus.AuditAppended``),
between requests: the trees in turn, 10 rounds of 2,000 with the view, 201.7 -> 185.4
µs.

Tried and measured, left out: the ledger's tables in the audit log's file, on one
connection, so that the escalation line and the reservation commit together (one
``BEGIN IMMEDIATE`` and one commit fewer a request): p50 841-845 → 797 µs (−45 µs, 5 %),
for a migration of every existing ledger file and a shared lock between the two stores.
It does not change the verdict on the 150 µs goal, so the two files stay.

``bench/p1_floor.py`` measures that rebuild's floor: both stores in one file, one
transaction per request (the last settlement and call line joining it), no asyncio or
pydantic, nothing but the rows and lines themselves on the product's schemas: ~430 µs
at p50 here against this path's ~900 µs, i.e. 2.9× the goal before any decision is made.
Beside it, the floor of a journal in SQLite's place (one ``os.write`` under ``flock``
per request, folded into the tables later): ~180 µs, 1.2× the goal, of which the two
lines themselves (made as the product makes them, written nowhere) are ~120 µs.

The spools (98d455d): that rebuild. An audit line and a ledger record are appended to a
file under ``flock`` (``app/spool.py``), the chain's tail and the cap totals kept in
memory and caught up with every other writer's records under the lock, and the records
folded into the tables in batches: on the request that brings 512 of them, 0.25 s after a
write (when the loop next runs callbacks), before any read, at close. Measured on 4000
requests in a row (the same script on both trees, alternating, quiet machine), p50 / wall
per request / CPU per request (every thread's): SQLite transactions (07f6071) 544 / 585 /
599 µs; spools folded by a thread of their own (2729142) 590 / 650 / 740 µs, worse: the
folding thread holds the GIL between its statements and each system call of the request
path (a ``flock``, a ``write``) waits for it; folded in the store's own thread (98d455d)
353 / 432 / 432 µs, p99 0.54-0.63 ms, 2,350 req/s. Phases now: decide + state 61 µs, an
audit append 77 (two a request: making and chaining the line is most of it), reserve 46,
backend 13, settle 24. A fold costs about 35 µs of CPU per request for each store, paid
in batches (a few ms on one request in 256) and 0.25 s after a write, between requests.

After the spools (the same script, the three trees in turn, three rounds, quiet machine;
p50 / CPU per request): 1b3cd5b 342-353 / 417-446 µs; 00d6d76 320-324 / 395-413 µs (an
audit line is read from its finished text by pydantic's JSON parser, where its values were
decoded back with a Python hook on every object and then validated: ``prepare`` 20.6 → 12.9
µs alone, ``chain`` 5.9 → 8.6; a key that is not a string is found by one regex over the
encoded values; the C encoder built once for the ledger's records and the input hash
(``app/compact_json.py``); the environment's secrets compared as a dict; a budget read
takes no lock when nothing was appended since this ledger last looked, one ``fstat``;
reservation ids from ``token_hex``, not a ``UUID`` object); b05e33c 316-317 / 402-411 µs
(each role's triggers and chain read once per policy; the session's approvals in one pass).
Phases then: decide + state 55 µs, an audit append 74 (making it 38: the redaction look
18 of that, the encoding and the text 19; chaining it 15, half of that pydantic reading it;
the spool 10), reserve 41, backend 13, settle 22.

Tried and left out then: the redaction look as one Aho-Corasick pass (``pyahocorasick``,
a native dependency): p50 −7 µs; one regex for all the markers instead of two dozen
``bytes.find``: 8× slower (an ignore-case alternation); the garbage collector frozen or
off: no change.

The next stop (the same script, each tree against the one before, three rounds each,
quiet machine; p50): 2ae4b4f 311-314 µs → 7476865 283-284 (an audit line is no longer
read back by pydantic after it is written: ``add()`` returns its seq, hash and text, the
``AuditLine`` is read from the text when asked for, and nothing on the request path asks;
a line the quick way made is vouched for when its fields have the line's types and it is
shallow enough for pydantic's parser, any other is read before it is written, as before)
→ 2950514 259-262 (the redaction look as one regex per first byte: sre scans for that
byte at C speed and tries the markers only there, 11.1 → 5.3 µs on the escalation line,
where a ``bytes.find`` per group stepped through every byte) → 27723da 252-256 (``iso()``
remembers a few seconds' text: a reservation stamps now and its expiry, so a single
remembered second missed on every stamp after it). Phases then: decide + state 52 µs, an
audit append 50, reserve 35, backend 12, settle 19. Measured by taking each part out in
turn (not kept): the redaction look had cost 33 µs a request in place (16 µs a line,
against 11 alone: the request path's other work keeps the caches cold), the masking of
the outgoing request 10 µs (now ~0), the ``flock`` pairs 8 µs, the decision's recorded
inputs 17 µs (their making, and the longer line's encoding, look and hash).

The stop after (with the registry and the keys, as above; each tree against the one
before it, three rounds in turn, quiet machine; p50 before → after): aacdbc4, the signals
copied with the prompt's count by ``Signals.with_estimate``, not pydantic's
``model_copy``: 263.6/263.6/265.2 → 261.0/259.6/260.0; e7476e2, a reservation id from a
per-process prefix and a counter, not ``getrandom``, and its day from its stamp:
261.9/264.4/259.9 → 260.1/255.9/256.0; 1523d8d, ``decide()`` works out each role's runtime
walk and cloud steps once per policy (11.1 → 7.8 µs alone): 259.0/253.6/258.7 →
252.8/252.1/250.5; 6973280, ``unavailable()`` reads the key variables from the
environment's own dict of bytes (2.9 → 0.3 µs alone): median of five rounds 252.3 →
250.3; 85ae5c9, the request's hash reads a message without tool calls as its fields
(``model_dump``'s own dict): 251.0 → 247.1. Each part taken out in turn (not
kept), from ~257 µs: the audit's two appends 110 µs (the redaction look 20 of it, the
``flock`` pairs 6), the decision with its state, triggers and recorded inputs 67, the
ledger's reserve and settle 65, the backend call with its masking 22, the rest 27. Within
them: the request's hash for the provenance 8 µs, the masking of the outgoing request 3-4,
and the three looks at whether the environment changed (a line's redaction look twice,
the masking once: the whole environment compared with what was seen, in C) 8, kept: a
key variable set at any moment is masked from the next line on.

A part costs two to four times in place what it costs alone, and not evenly: Python
code more than C. Tried and left out, measured in place: the router's RouterState and an
escalation's Decision made without validation (``model_construct``'s job done in Python,
a third of its time alone: no change in place, where pydantic-core's Rust is cheap and
the Python replacing it is not); the redaction look as one alternation per group (+12
µs); the asyncio locks taken out altogether (no change); one framed record written
without the list (no change); the hot modules (``decide``, ``prepared``,
``quick_redact``, ``clock``, ``caps``, ``money``) compiled with mypyc: 263 → 270 µs,
slower, as compiled code calls into pydantic models and dicts by the generic paths.

The stop after that measured what is left rather than cut it (quiet machine, in place,
4000 requests after 500): a request makes 17 system calls (per spool write a ``flock``,
an ``fstat``, the ``write`` and the unlock, four writes; one ``fstat`` for the budget
read), about 1 µs each in place as alone (ten more ``fstat`` cost +5 to +13 µs); twenty
more coroutines awaited per request cost nothing measurable, so the 39 a request makes
are not where the time is; the same tree on Python 3.13.0 (the same pydantic, pydantic-core
2.50.5) measured 265-284 µs against 3.11.7's 249. ``bench/p1_floor.py`` then: the
journal floor (two lines made as the product makes them and the budget records, one
append under ``flock``) 65 µs, the two lines alone 44, the router's request path 256: the
design's durable work fits in the goal, and what is not met is the Python around it,
spread over every part (see above). Rejected without building: holding a spool's lock
across requests until the event loop turns (only a loop that never turns, as this
bench's, gains: a server's loop turns during every backend call, so each boundary still
locks once) and a presence lock telling a sole writer it may skip ``flock`` (a
Switchyard from before it would write beside the sole writer unseen). Left for a
rebuild: one spool for the audit lines and the ledger's records, so that each request
boundary is one locked ``write`` (the escalation line with the reservation, the call
line with the settlement): taking the ledger's lock and ``fstat`` away alone bought 8-10
µs here, and the two writes it saves about as much again. Cut in that stop, off the
p50: the ledger's fold inserts a reservation that a later record of the same fold
closes as it ends, so the totals' triggers no longer add its amount and take it back (a
fold of 512 records 7.7 → 5.1 ms; wall per request 322-325 → 300-320 µs in turn).

The tail, the stop after (20,000 requests after 500, the trees in turn, twice each): every
256th request took 12-16 ms, as the audit log and the ledger (two records a request each)
reached their batch of 512 on the same request and folded both (4.4 and 5.7 ms alone, the
rest the caches and the checkpoint their folds asked for). A store whose batch is due now
waits while another store of the process folded one in the last 20 ms (never past two
batches; ``app.spool.FOLD_SPACING_S``): p99.9 11.5-11.6 → 6.0-6.0 ms, max 13.8-16.5 →
7.4-7.6 ms, p50 248-250 → 251-254 µs (the trees in turn: noise). The ledger's fold reads
its records with json's own scanner over one text (``json.loads`` per record set up more
than it parsed): a fold of 512 5.65 → 4.74 ms. Folding 256 records, not 512, would halve
a fold again but put one on 1.6 % of requests: the p99 would be a fold's.

The stop after that (the same script, 915c03d against the new tree in turn, three rounds
of 5,000 requests, quiet machine; p50): 248-253 → 235-240 µs, and 1.98 → 1.80 M
instructions a request (callgrind, counted as above, folds included). The audit line's
values and provenance and the ledger's records are encoded by orjson where it spells
exactly what json's C encoder spells (``app/compact_json.py``: the escalation line's
values 4.7 → 1.7 µs alone, the checks on orjson's text included), and the quick way does
not look for keys that are not strings in a text orjson wrote (orjson refuses them: 1.5
µs a look). What is left, by callgrind: the interpreter's own loop 15 %, dict lookups and
stores ~7 %, allocation ~8 %, the redaction look's 28 regex scans a request ~7 %, SHA-256
3 %, the folds' SQLite (one request in 256) ~5 %. Tried and left out: each line's UTF-8
made once from its pieces' and chained as bytes (an escalation line holds an arrow, so its
text is stored two bytes a character and was encoded to UTF-8 three times): 8 k
instructions fewer of 1.80 M, no change in place, as ``bytes.count`` and ``in`` cost what
their ``str`` forms did; an asyncio lock taken without a coroutine when it is free: no
change.

The stop after that, on another machine (L2 2 MiB a core, L3 480 MiB; the same tree ran
248-295 µs here from one hour to the next, so every figure below is of two trees in turn
or of one process switching between two ways, never of runs apart). Each part taken out in
turn, in one process (16 rounds of 1,000 requests each way): the redaction look's 28
regex scans 16.5 µs a request (the whole look 27), the provenance 16.6 (its hash 4.4, the
rest its making and its text in both lines), the decision's recorded inputs 12.3, the
budget read 9.2, the masking 5.7, the count 3.8. The look is now two Aho-Corasick passes a
line (``ahocorasick-rs``: the case-sensitive markers with the environment's secret values,
then the ignore-case markers in the lowered bytes): 247.7 -> 236.9 µs (e1393b1 against
the tree before, 8 rounds of 3,000 in turn). Tried and left out: the budget read without
its ``Sums`` object and the day's text made once a day (no change in turn); a cache of
looks keyed on the line with its digits and hex digests taken out (the hex runs cost a
regex with a look-behind, 9.4 µs alone, more than the look); the process pinned to one
core (no change).

The stop after that (the same machine kind, noisier hours): each part made once and
reused, in one process switching ways (12-16 rounds of 1,000): the two lines' preparation
35 µs (the look 10), the router's state 17.6 (its RouterState 5.9), ``decide()`` 14-15, the
ledger's spool work 12, the recorded inputs 7.6, the clock reads and stamps 7.2, the fired
triggers 5.3-7.5, the budget read 5.3-8, the masking 5.3. A pydantic model costs per
container it is given (each validated and copied): the router's state is now given only
its non-empty ones (2.4 -> 1.6 µs alone); a reservation with no expiry on its way checks
the caps from the mirror's totals with no ``Sums`` made; the recorded signals are read
from the fields that were set, not ``model_dump(exclude_defaults=True)``; ``iso()``
spells the milliseconds from a table; compact_json's checks use ``find``, as ``in`` tries a
bytes needle as an int first and raises and clears a TypeError. cf5f3b7 against the end
of that stop in turn (separate processes, 2,000 requests after 500): 176.8 -> 164.9 µs
(12 rounds, quiet), 198.4 -> 183.1 (16 rounds, busier). Then the redaction look in one
automaton pass a line over the lowered bytes, each lowered exact needle's match compared
with the bytes (a9615c7): 2.5-2.9 -> 1.6-1.8 µs a line alone, -2.0 µs a request in place
(median of three runs in turn: +0.3, -3.2, -2.0). Measured and left out: the whole
line in one orjson call (its float and NaN checks must then read the whole line: 6.5 ->
6.2 µs alone); the call line without the escalation's provenance repeated (no change: a
line's length costs little); the escalation detail's arrow written in ASCII (-2.6 µs: the
line is then one byte a character, but people read it).

The stop after that tried compiling the request's hot modules (615e630..e83cbc2, then
reverted). Cython 3.3.1 (Python's semantics kept: no annotation typing), the modules
built outside any import path and imported compiled only while a stamp held the SHA-256
of both the source and the compiled file: every test passed on them. The same code as
Python against compiled, in turn (separate processes, 2,000 requests after 500), from one
hour to the next: 18 modules 164.4 -> 153.8 µs, 28-29 modules 159.3 -> 148.1 (quiet
hours); P1 then measured 150 against 3,072 µs (20.5×; as Python 163) and, in the quick
set, 156 against 3,169 (20.3×; as Python 164). An hour later, the machine slower (the
same code as Python 205-227 µs, LiteLLM 3.5-3.7 ms), the compiled modules cost more than
they saved: 222-265 against 210-227 µs as Python in six runs of 4-8 rounds (+7 to +41),
the first design's build no better (+13 to +21). The plain modules alone (the line's text, the
look, the clock, decide, the caps, the counts, the masking) gave 202 against 205 in that
hour, so the coroutine modules (the router, the stores) carried the loss. A gain that
turns into a loss when the machine is busy (a user's machine runs the model beside it)
is no gain: left out, with its build step, its stamp and its import finder. mypyc
bought twice as much in a quiet hour (15 modules: 160.6 -> 135.0 µs) but compiles a
coroutine that awaits in an ``except`` block, after catching what a suspended await
raised, so that the exception stays the thread's current one once the block is left; a
later ``finally`` in any coroutine raised it again (a failed open of one audit log broke
the next one's close). Without the coroutine modules, mypyc bought ~5 µs. Each audit line
chained as bytes again (made once from its pieces' UTF-8): no change, as in the stop
before the last.

The stop after that measured what the ledger's two spool writes cost in place (one
process, the ways in turn, 45 rounds of 1,500): 174.0 µs as it is, 165.7 with no lock
and no ``write`` for the ledger (its records still encoded and framed), 160.5 with
neither: the lock and the ``write`` 8 µs, the encoding 5 (alone 0.8 µs a record). The
two ``flock`` pairs of every spool write, all eight a request, cost 2 µs (no-ops in
their place). So one spool for the audit lines and the ledger's records (the rebuild
above) would buy ~8 µs, not the 150 µs goal. Also measured, and left as it is: the
interpreter. This machine's ``python3`` is pyenv's 3.11.7, built without PGO or LTO and
with a shared libpython; Debian builds its ``/usr/bin/python3.11`` (3.11.2) with both,
libpython linked in (``ldd`` names none). The same tree on each in turn (separate
processes, 16 rounds of 2,000): 169.4 -> 162.9 µs (-3.9 %), and LiteLLM's side on each
(four rounds) 3,031-3,263 -> 2,998-3,124 µs (-1 to -4 %): the ratio unchanged, for an
older patch release. Torch's wheel on this disk is cp311 only, so 3.12 (pyenv has
3.12.1) was not an option.

The stop after that (2026-12-06, afternoon) took each part of the decision out in turn
again, in one process, 40-50 rounds of 1,500 requests each way (a part "taken out" is
made once and its result reused): the router's state -14.9 µs, ``decide()`` -15.7, the
fired triggers -8.0, the recorded inputs -3.3; alone, the same parts cost 7.3, 7.0, 3.4
and 1.3 µs. The fired triggers' in-place cost is not their ``Reason`` model's validation:
the same ``Reason`` made without it (its ``__dict__`` set as ``Signals.with_estimate``
does) bought -0.9 µs; the evaluation done in full with a reused result returned bought
+0.4; the reused list's reasons copied (``model_copy``) bought +0.2. The parts do not add
up to the whole: only reusing the whole result, no evaluation and no new object, bought
the 8 µs, and reusing a result across requests gains only where requests repeat (this
bench's do; a real request's prompt count differs each time): not built. P1 then: 166
against 3,276 µs (19.73x), quiet machine.

The stop after that (2026-12-07, early morning) made a guardrail cost: a cloud reply is
masked of a key's other forms as it streams (upper-cased, escaped, base64), so a piece's
last word is held back until the next piece or the stream's end (this bench's one
delta, ``ok``, is held whole and passed on at the end). Measured in place, the start of
that stop (e9c2e23) against each commit after it in turn (separate processes, 3,000
requests after 500): +15 µs at the commit that added the hold (36ab715), nothing
measurable from the commits after it (ids masked, cut tries charged, the policy
changes, the gateway's), and +6 to +13 µs at the stop's end (1e68585), after the hold
was made cheaper (one pattern for the keys' heads, one clean check a delta, the held
delta passed on as it came): in one process switching ways (10 rounds of 1,000), the
hold ~5 µs and the rest of the reply's masking ~5. P1 at 1e68585: see the closing note.

Since then (2026-12-07, afternoon), on a machine where the same tree measured 193 µs one
session and 249 µs the next (LiteLLM 3.1 and 3.0-3.3 ms: our side's cost moves with the host
more than theirs does), e9c2e23 against the head of four stops later, in turn: 230-232
against 242 µs: the guardrails of those stops (the stream's masking of a key's other
forms, the cut tries charged, the retries' reservations) cost ~10-12 µs, and there is no
larger regression. A cProfile of 3,000 requests: the SQLite statements it shows are the
folds' (one request in 256), the rest spread as above.

``--serve`` answers the P1 harness (``bench/p1_router.py``) over stdin, so that this side
and LiteLLM's run in alternating chunks: ``warm N``, ``run N`` (one line of JSON with the
latencies in µs, and the process's CPU time over the chunk, every thread's, the spools'
folds included: what is not folded when the chunk ends is folded before the reply, so it
never runs while the other side is measured), ``quit`` (the audit chain verified, one
line of JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.audit.log import AuditLog
from app.backends.base import Backend, ChatRequest, ChatResult, Delta, Health, Message, Usage
from app.backends.registry import BackendRegistry
from app.bus import Bus
from app.policy import load_policy
from app.policy.schema import Policy
from app.router.approvals import AllowDecider, ApprovalBroker
from app.router.ledger import BudgetLedger
from app.router.service import Router
from app.router.types import Signals
from bench import conversation


class MockBackend:
    runtime = "cloud"

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta | ChatResult]:
        yield Delta(text="ok")
        yield ChatResult(
            text="ok",
            usage=Usage(tokens_in=200, tokens_out=20),
            finish_reason="stop",
            model=self.model_id,
        )

    async def health(self) -> Health:
        return Health(ok=True)

    async def context_window(self) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


class MockedRegistry(BackendRegistry):
    """The product's resolver (what is reachable: the keys read from the environment on
    every cloud step; the runtimes' cached probes; the windows; each pair's backend made
    once), with every backend a :class:`MockBackend` and every probe answered up."""

    def _make(self, model_id: str, runtime: str) -> Backend:
        return MockBackend(model_id)

    async def _probe(self, runtime: str) -> bool:
        return True


#: A key for each provider the policy names, set in this process's environment when the
#: machine has none (a cloud step needs its key, as LiteLLM's side has its keys): every
#: line and outgoing request is then checked for them, as a user's are.
def _provider_keys(policy: Policy) -> dict[str, str]:
    names = sorted({p.api_key_env for p in policy.providers.values() if p.api_key_env})
    return {name: f"sk-bench-{name.lower()}-0123456789abcdef" for name in names}


class Bench:
    """The router of one session, on real SQLite files in ``workdir``."""

    def __init__(self, router: Router, audit: AuditLog, ledger: BudgetLedger) -> None:
        self.router, self.audit, self.ledger = router, audit, ledger
        self.request = ChatRequest(
            messages=[Message(role="user", content="plan the fix")], max_tokens=64
        )
        self.signals = Signals(confidence=0.5)
        #: the live view's reader task (``setup(live=True)``)
        self.view: asyncio.Task[None] | None = None
        #: ``--conversation``: bench/conversation.py's conversation (None: the goal's request)
        self.conversation: conversation.Conversation | None = None
        self.turn = 0

    async def one(self, messages: list[dict[str, Any]] | None = None) -> None:
        """One routed request: the goal's, or (``messages``, as dicts) a conversation's,
        made into the request the router takes as a face makes it."""
        request = self.request
        if messages is not None:
            request = ChatRequest(messages=[Message(**m) for m in messages], max_tokens=64)
        result = await self.router.complete("architect", request, self.signals)
        assert result.escalated

    async def timed(self, n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            asked = None
            if self.conversation is not None:  # made afresh for each request, untimed
                self.turn += 1
                asked = self.conversation.messages(self.turn)
            t0 = time.perf_counter()
            await self.one(asked)
            latencies.append(time.perf_counter() - t0)
            if self.view is not None:
                await asyncio.sleep(0)  # the view's turn, as between a server's requests
        return latencies

    async def close(self) -> dict[str, Any]:
        if self.view is not None:
            self.view.cancel()
        report = await self.audit.verify()
        await self.audit.close()
        await self.ledger.close()
        from app.audit import log
        from app.router import ledger

        return {
            "audit_lines": report.lines_checked,
            "audit_ok": report.ok,
            "synchronous": {"audit": log.SYNCHRONOUS, "ledger": ledger.SYNCHRONOUS},
        }


async def setup(workdir: Path, *, live: bool = False) -> Bench:
    """``live``: with the live view attached, as in the TUI, ``run`` and the ACP agent (a
    bus the audit log and the ledger publish on, and a subscriber reading it); each
    request then gives the event loop one turn afterwards, as a server's loop would."""
    loaded = load_policy()
    for name, value in _provider_keys(loaded.policy).items():
        os.environ.setdefault(name, value)
    policy = loaded.policy.model_copy(
        update={
            "budget": loaded.policy.budget.model_copy(
                update={"session_usd": 1e6, "day_usd": 1e6, "provider_day_usd": {}}
            )
        }
    )
    bus = Bus() if live else None
    audit = await AuditLog.open(workdir / "audit.db", policy_version=policy.version, bus=bus)
    ledger = await BudgetLedger.open(workdir / "ledger.db", policy.budget, bus=bus)
    broker = ApprovalBroker(AllowDecider(), audit=audit, timeout_s=5)
    router = Router(
        policy,
        session="bench",
        audit=audit,
        ledger=ledger,
        approvals=broker,
        backends=MockedRegistry(policy, local_only=False),
    )
    # the first request is approved for the session; later ones reuse it (as a human
    # pressing `a` would), so the timed path holds no approval prompt
    broker.decider = _SessionAllow()
    bench = Bench(router, audit, ledger)
    if bus is not None:
        bench.view = asyncio.get_running_loop().create_task(_view(bus))
    await bench.one()
    return bench


async def _view(bus: Bus) -> None:
    """What a live view does with the bus: reads every event as it comes."""
    sub = bus.subscribe(name="bench view")
    while True:
        await sub.get()


def _time_phases(bench: Bench) -> dict[str, list[int]]:
    """Wrap each part of the request so that every call of it is timed (ns)."""
    spent: dict[str, list[int]] = {}
    parts = {
        "decide+state": (bench.router, "_decide_recorded"),
        "audit.add": (bench.audit, "add"),
        "ledger.reserve": (bench.ledger, "reserve"),
        "backend call": (bench.router, "call"),
        "ledger.settle": (bench.ledger, "settle"),
    }
    for name, (obj, attr) in parts.items():
        inner = getattr(obj, attr)

        async def timed(*a: Any, _inner: Any = inner, _name: str = name, **k: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return await _inner(*a, **k)
            finally:
                spent.setdefault(_name, []).append(time.perf_counter_ns() - t0)

        setattr(obj, attr, timed)
    return spent


async def run(n: int, workdir: Path, *, phases: bool = False, live: bool = False) -> dict[str, Any]:
    bench = await setup(workdir, live=live)
    spent = _time_phases(bench) if phases else {}
    start = time.perf_counter()
    latencies = await bench.timed(n)
    wall = time.perf_counter() - start
    closing = await bench.close()
    latencies.sort()
    if phases:
        closing["phases_us"] = {
            name: {"per_request": len(v) / n, "p50_us": statistics.median(v) / 1000}
            for name, v in spent.items()
        }
    return {
        "requests": n,
        "rps": n / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * (n - 1))] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        **closing,
    }


async def serve(
    workdir: Path, *, live: bool = False, conversation_kb: int = 0, turn_chars: int = 4000
) -> None:
    """The stdin protocol of the module docstring (``conversation_kb``: each request sends
    that much of bench/conversation.py's conversation)."""
    bench = await setup(workdir, live=live)
    if conversation_kb:
        bench.conversation = conversation.Conversation(conversation_kb, turn_chars)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd, _, arg = line.strip().partition(" ")
        if cmd in ("quit", ""):
            print(json.dumps(await bench.close()), flush=True)
            return
        cpu0 = time.process_time()  # every thread's
        latencies = await bench.timed(int(arg or 0))
        # What is not folded yet is folded now, in this chunk, and the checkpoints those
        # folds asked for are let finish: never left to run while the other side is
        # measured. Then both sides give their background work the same 50 ms.
        await bench.audit.flush()
        await bench.ledger.flush()
        for runner in (bench.audit._runner, bench.ledger._runner):
            for _ in range(200):
                if runner.checkpointer.caught_up():
                    break
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        cpu_us = (time.process_time() - cpu0) * 1e6
        if cmd == "run":
            lat = [round(x * 1e6) for x in latencies]
            print(json.dumps({"lat_us": lat, "cpu_us": cpu_us}), flush=True)
        else:
            print(json.dumps({"warmed": len(latencies)}), flush=True)


class _SessionAllow:
    name = "bench:allow-session"

    async def decide(self, req: Any) -> Any:
        from app.router.approvals import ApprovalDecision

        return ApprovalDecision(decision="allow_session", decided_by=self.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--serve", action="store_true", help="answer the P1 harness on stdin")
    parser.add_argument("--phases", action="store_true", help="time each part of the request")
    parser.add_argument(
        "--live", action="store_true", help="with the live view attached (a bus and a reader)"
    )
    parser.add_argument(
        "--conversation", type=int, default=0, help="with --serve: KB of conversation sent"
    )
    parser.add_argument("--turn-chars", type=int, default=4000, help="its turns' size")
    args = parser.parse_args()
    from bench._common import machine_info, write_result

    if args.serve:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(
                serve(
                    Path(tmp),
                    live=args.live,
                    conversation_kb=args.conversation,
                    turn_chars=args.turn_chars,
                )
            )
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = asyncio.run(run(args.n, Path(tmp), phases=args.phases, live=args.live))
    data["live_view"] = args.live
    data["machine"] = machine_info()
    write_result("router_live" if args.live else "router", data)
    print(
        f"router: {data['requests']} routed requests (mock backend): {data['rps']:.0f} req/s, "
        f"p50 {data['p50_ms']:.2f} ms, p99 {data['p99_ms']:.2f} ms, "
        f"{data['audit_lines']} audit lines verified={data['audit_ok']}"
    )
    for name, part in data.get("phases_us", {}).items():
        print(f"  {name}: {part['per_request']:g} per request, p50 {part['p50_us']:.0f} µs")


if __name__ == "__main__":
    main()
