"""The team ledger's tables and functions in PostgreSQL, as versioned migrations.

``ledger_usage`` holds one row per cap scope: a session, the team's day, a user's day, a
provider's day (the team's). A reservation is one conditional ``UPDATE`` of its four rows,
all or none, after they are locked in key order (so reservations, settlements and
expiries never deadlock); ``never_over_cap`` is the backstop no write can get past. Money
is integer nano-dollars (never a float). Days and expiry come from the database's clock,
``now()``, so no laptop's clock can stretch or cut a reservation.

``spent_nusd`` is what settled within reservations; ``unreserved_nusd`` what no
reservation covered (an overrun, a call recorded without one): both count against the
cap, only the first is bound by the CHECK, so a truthful overrun can always be recorded.
"""

from __future__ import annotations

from app.store.postgres import Migration

COMPONENT = "ledger"
SCOPES = ("session", "day", "user_day", "provider_day")

_TODAY = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

# Locks the usage rows of reservations (a set of ids) in key order, then moves each
# one's amount out of reserved: ``cost`` within it to spent, the rest to unreserved.
_MOVES = """
    SELECT r.team, w.scope, w.key, w.day, r.amount_nusd AS amount, c.cost
    FROM unnest(p_ids, p_costs) AS c(id, cost)
    JOIN ledger_reservations r ON r.id = c.id
    CROSS JOIN LATERAL (VALUES ('session', r.session, ''), ('day', '', r.day),
        ('user_day', r.user_name, r.day), ('provider_day', r.provider, r.day))
        AS w(scope, key, day)
"""

_MOVE = f"""
CREATE FUNCTION sy_ledger_move(p_ids text[], p_costs bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ledger_usage u
        WHERE (u.team, u.scope, u.key, u.day) IN (SELECT team, scope, key, day FROM ({_MOVES}) m)
        ORDER BY u.team, u.scope, u.key, u.day FOR UPDATE;
    UPDATE ledger_usage u SET
        reserved_nusd = u.reserved_nusd - m.amount,
        spent_nusd = u.spent_nusd + m.within,
        unreserved_nusd = u.unreserved_nusd + m.over
    FROM (SELECT team, scope, key, day, sum(amount) AS amount,
                 sum(least(cost, amount)) AS within, sum(greatest(cost - amount, 0)) AS over
          FROM ({_MOVES}) x GROUP BY team, scope, key, day) m
    WHERE (u.team, u.scope, u.key, u.day) = (m.team, m.scope, m.key, m.day);
END $$
"""

_STALE_V1 = """EXISTS (SELECT 1 FROM ledger_reservations
                WHERE status = 'live' AND expires_at <= now())"""

_RESERVE = f"""
CREATE FUNCTION sy_ledger_reserve(
    p_id text, p_team text, p_user text, p_host text, p_session text, p_run text,
    p_provider text, p_role text, p_model text, p_amount bigint, p_ttl_s double precision,
    p_caps bigint[]
) RETURNS TABLE (refused text, cap bigint, spent bigint, reserved bigint, day text,
                 created timestamptz, expires timestamptz, stale boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_day text := {_TODAY};
    v_keys text[] := ARRAY[p_session, '', p_user, p_provider];
    v_days text[] := ARRAY['', v_day, v_day, v_day];
    v_scopes text[] := ARRAY['session', 'day', 'user_day', 'provider_day'];
    v_n int := 0;
BEGIN
    INSERT INTO ledger_usage (team, scope, key, day)
        SELECT p_team, s, k, d FROM unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
        ON CONFLICT DO NOTHING;
    IF p_amount > 0 THEN
        -- key order, the same in every function: no two writers wait on each other
        PERFORM 1 FROM ledger_usage u, unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            WHERE u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d
            ORDER BY u.team, u.scope, u.key, u.day FOR UPDATE OF u;
        -- the reservation: one conditional statement over the four caps, all or none
        WITH w AS (SELECT * FROM unnest(v_scopes, v_keys, v_days, p_caps) AS w(s, k, d, c))
        UPDATE ledger_usage u
            SET reserved_nusd = u.reserved_nusd + p_amount, cap_nusd = w.c
            FROM w
            WHERE u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d
              AND NOT EXISTS (
                  SELECT 1 FROM ledger_usage o JOIN w x
                      ON o.scope = x.s AND o.key = x.k AND o.day = x.d
                  WHERE o.team = p_team AND x.c IS NOT NULL
                    AND o.spent_nusd + o.unreserved_nusd + o.reserved_nusd + p_amount > x.c);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n = 0 THEN
            RETURN QUERY
                SELECT w.s, w.c, o.spent_nusd + o.unreserved_nusd, o.reserved_nusd, v_day,
                       NULL::timestamptz, NULL::timestamptz, false
                FROM unnest(v_scopes, v_keys, v_days, p_caps) WITH ORDINALITY AS w(s, k, d, c, i)
                JOIN ledger_usage o
                    ON o.team = p_team AND o.scope = w.s AND o.key = w.k AND o.day = w.d
                WHERE w.c IS NOT NULL
                  AND o.spent_nusd + o.unreserved_nusd + o.reserved_nusd + p_amount > w.c
                ORDER BY w.i LIMIT 1;
            RETURN;
        END IF;
        IF v_n <> 4 THEN
            RAISE EXCEPTION 'ledger: reservation % updated % cap rows, not 4', p_id, v_n;
        END IF;
    END IF;
    INSERT INTO ledger_reservations (id, team, user_name, host, session, run, provider, role,
            model, amount_nusd, day, created, expires_at, status)
        VALUES (p_id, p_team, p_user, p_host, p_session, p_run, p_provider, p_role, p_model,
                p_amount, v_day, now(), now() + make_interval(secs => p_ttl_s), 'live');
    RETURN QUERY SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, v_day, now(),
        now() + make_interval(secs => p_ttl_s),
        EXISTS (SELECT 1 FROM ledger_reservations
                WHERE status = 'live' AND expires_at <= now());
END $$
"""

_CLOSE = """
CREATE FUNCTION sy_ledger_close(
    p_id text, p_status text, p_cost bigint, p_outcome text, p_tokens_in integer,
    p_tokens_out integer, p_latency_ms double precision
) RETURNS TABLE (session text, was text)
LANGUAGE plpgsql AS $$
DECLARE r ledger_reservations%ROWTYPE;
BEGIN
    SELECT * INTO r FROM ledger_reservations WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.status <> 'live' THEN
        RETURN QUERY SELECT r.session, r.status;
        RETURN;
    END IF;
    PERFORM sy_ledger_move(ARRAY[p_id], ARRAY[p_cost]);
    UPDATE ledger_reservations SET status = p_status, closed = now() WHERE id = p_id;
    INSERT INTO ledger_calls (day, team, user_name, host, session, run, role, model, provider,
            tokens_in, tokens_out, latency_ms, cost_nusd, outcome, reservation_id)
        VALUES (r.day, r.team, r.user_name, r.host, r.session, r.run, r.role, r.model,
                r.provider, p_tokens_in, p_tokens_out, p_latency_ms, p_cost, p_outcome, r.id);
    RETURN QUERY SELECT r.session, 'live'::text;
END $$
"""

_EXPIRE = """
CREATE FUNCTION sy_ledger_expire() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE v_ids text[]; v_amounts bigint[];
BEGIN
    -- SKIP LOCKED: a reservation being settled right now is not stale for long
    SELECT array_agg(id ORDER BY id), array_agg(amount_nusd ORDER BY id)
        INTO v_ids, v_amounts
        FROM (SELECT id, amount_nusd FROM ledger_reservations
              WHERE status = 'live' AND expires_at <= now()
              ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) s;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- its holder may have made the call and died: charged in full, never freed
    PERFORM sy_ledger_move(v_ids, v_amounts);
    UPDATE ledger_reservations SET status = 'expired', closed = now() WHERE id = ANY (v_ids);
    INSERT INTO ledger_calls (day, team, user_name, host, session, run, role, model, provider,
            tokens_in, tokens_out, latency_ms, cost_nusd, outcome, reservation_id)
        SELECT day, team, user_name, host, session, run, role, model, provider, 0, 0, 0,
               amount_nusd, 'expired', id
        FROM ledger_reservations WHERE id = ANY (v_ids);
    RETURN array_length(v_ids, 1);
END $$
"""

_RECORD = f"""
CREATE FUNCTION sy_ledger_record(
    p_team text, p_user text, p_host text, p_session text, p_run text, p_role text,
    p_model text, p_provider text, p_tokens_in integer, p_tokens_out integer,
    p_latency_ms double precision, p_cost bigint, p_outcome text
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_day text := {_TODAY};
    v_keys text[] := ARRAY[p_session, '', p_user, p_provider];
    v_days text[] := ARRAY['', v_day, v_day, v_day];
    v_scopes text[] := ARRAY['session', 'day', 'user_day', 'provider_day'];
BEGIN
    INSERT INTO ledger_calls (day, team, user_name, host, session, run, role, model, provider,
            tokens_in, tokens_out, latency_ms, cost_nusd, outcome)
        VALUES (v_day, p_team, p_user, p_host, p_session, p_run, p_role, p_model, p_provider,
                p_tokens_in, p_tokens_out, p_latency_ms, p_cost, p_outcome);
    IF p_cost > 0 THEN
        INSERT INTO ledger_usage (team, scope, key, day)
            SELECT p_team, s, k, d FROM unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            ON CONFLICT DO NOTHING;
        PERFORM 1 FROM ledger_usage u, unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            WHERE u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d
            ORDER BY u.team, u.scope, u.key, u.day FOR UPDATE OF u;
        UPDATE ledger_usage u SET unreserved_nusd = u.unreserved_nusd + p_cost
            FROM unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            WHERE u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d;
    END IF;
END $$
"""

# v2: expiry per team, returning what it charged (the instance that charges a reservation
# audits it, in its own team's chain: v1's charged every team's and said only how many),
# and a reservation's "stale" hint counts its own team's alone (another team's dead
# reservation sent every reservation of this one to an expiry that found nothing).
_EXPIRE_TEAM = """
CREATE FUNCTION sy_ledger_expire(p_team text)
RETURNS TABLE (r_id text, r_session text, r_run text, r_provider text, r_role text,
               r_model text, r_amount bigint, r_created timestamptz, r_expires timestamptz)
LANGUAGE plpgsql AS $$
DECLARE v_ids text[]; v_amounts bigint[];
BEGIN
    -- SKIP LOCKED: a reservation being settled right now is not stale for long
    SELECT array_agg(s.id ORDER BY s.id), array_agg(s.amount_nusd ORDER BY s.id)
        INTO v_ids, v_amounts
        FROM (SELECT l.id, l.amount_nusd FROM ledger_reservations l
              WHERE l.team = p_team AND l.status = 'live' AND l.expires_at <= now()
              ORDER BY l.id LIMIT 1000 FOR UPDATE SKIP LOCKED) s;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    -- its holder may have made the call and died: charged in full, never freed
    PERFORM sy_ledger_move(v_ids, v_amounts);
    UPDATE ledger_reservations l SET status = 'expired', closed = now()
        WHERE l.id = ANY (v_ids);
    INSERT INTO ledger_calls (day, team, user_name, host, session, run, role, model, provider,
            tokens_in, tokens_out, latency_ms, cost_nusd, outcome, reservation_id)
        SELECT l.day, l.team, l.user_name, l.host, l.session, l.run, l.role, l.model,
               l.provider, 0, 0, 0, l.amount_nusd, 'expired', l.id
        FROM ledger_reservations l WHERE l.id = ANY (v_ids);
    RETURN QUERY SELECT l.id, l.session, l.run, l.provider, l.role, l.model, l.amount_nusd,
                        l.created, l.expires_at
        FROM ledger_reservations l WHERE l.id = ANY (v_ids) ORDER BY l.id;
END $$
"""


_UNTOLD = """CREATE TABLE ledger_untold (
    reservation_id TEXT PRIMARY KEY REFERENCES ledger_reservations (id),
    team TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


def _expire_v5() -> str:
    text = _EXPIRE_TEAM.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    told = "    RETURN QUERY SELECT l.id, l.session"
    assert text.count(told) == 1
    return text.replace(
        told,
        "    INSERT INTO ledger_untold (reservation_id, team)\n"
        "        SELECT l.id, l.team FROM ledger_reservations l WHERE l.id = ANY (v_ids);\n" + told,
    )


def _reserve_v2() -> str:
    text = _RESERVE.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    stale = _STALE_V1.replace("WHERE status", "WHERE team = p_team AND status")
    assert _STALE_V1 in text and stale != _STALE_V1
    return text.replace(_STALE_V1, stale)


# v3: a shared cap is the lowest any member's policy declared that day. A reservation
# wrote its own policy's cap over the row's, so a laptop with another policy file (or
# none: the shipped $20 day) reserved past the team's $0.005 day cap unseen. Now a looser
# policy cannot raise a cap, and a tighter one lowers it for everyone until the next
# UTC day. A session's cap is its own policy's alone, as before (its row has no day: a
# resumed session with a raised cap was held to the first one's for good).
_SHARED = "CASE WHEN {w}.s = 'session' THEN {w}.c ELSE LEAST({o}.cap_nusd, {w}.c) END"
_CAP_PIECES = (
    ("cap_nusd = w.c", "cap_nusd = " + _SHARED.format(w="w", o="u")),
    ("AND x.c IS NOT NULL", "AND " + _SHARED.format(w="x", o="o") + " IS NOT NULL"),
    ("+ p_amount > x.c", "+ p_amount > " + _SHARED.format(w="x", o="o")),
    ("SELECT w.s, w.c,", "SELECT w.s, " + _SHARED.format(w="w", o="o") + ","),
    ("WHERE w.c IS NOT NULL", "WHERE " + _SHARED.format(w="w", o="o") + " IS NOT NULL"),
    ("+ p_amount > w.c", "+ p_amount > " + _SHARED.format(w="w", o="o")),
)


def _reserve_v3() -> str:
    text = _reserve_v2()
    for old, new in _CAP_PIECES:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# v7: a settlement, a release and a call recorded return the totals of the cap rows they
# counted against as they left them, with each row's cap: the rows are still locked by
# the write (just before it, each was the cost less), so the caller decides from its own
# write whether it carried the spend past a cap. It read a snapshot after the write
# instead, which also held other processes' writes that landed meanwhile: each found the
# cap crossed before its own, and no GR011_CAP_CROSSED line was written (a user's audit:
# 4 processes). The return types change, so each function is dropped and made again, in
# the migration's one transaction; the close's columns of before come first, as they were.
_CLOSE_V7 = """
CREATE FUNCTION sy_ledger_close(
    p_id text, p_status text, p_cost bigint, p_outcome text, p_tokens_in integer,
    p_tokens_out integer, p_latency_ms double precision
) RETURNS TABLE (session text, was text, provider text, caps bigint[], spent bigint[])
LANGUAGE plpgsql AS $$
DECLARE r ledger_reservations%ROWTYPE; v_caps bigint[]; v_spent bigint[];
BEGIN
    SELECT * INTO r FROM ledger_reservations WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.status <> 'live' THEN
        RETURN QUERY SELECT r.session, r.status, r.provider, NULL::bigint[], NULL::bigint[];
        RETURN;
    END IF;
    PERFORM sy_ledger_move(ARRAY[p_id], ARRAY[p_cost]);
    UPDATE ledger_reservations SET status = p_status, closed = now() WHERE id = p_id;
    INSERT INTO ledger_calls (day, team, user_name, host, session, run, role, model, provider,
            tokens_in, tokens_out, latency_ms, cost_nusd, outcome, reservation_id)
        VALUES (r.day, r.team, r.user_name, r.host, r.session, r.run, r.role, r.model,
                r.provider, p_tokens_in, p_tokens_out, p_latency_ms, p_cost, p_outcome, r.id);
    IF p_cost > 0 THEN
        -- the cap rows the move locked, in the order of SCOPES
        SELECT array_agg(u.cap_nusd ORDER BY w.i),
               array_agg(u.spent_nusd + u.unreserved_nusd ORDER BY w.i)
            INTO v_caps, v_spent
            FROM unnest(ARRAY['session', 'day', 'user_day', 'provider_day'],
                        ARRAY[r.session, '', r.user_name, r.provider],
                        ARRAY['', r.day, r.day, r.day]) WITH ORDINALITY AS w(s, k, d, i)
            JOIN ledger_usage u
                ON u.team = r.team AND u.scope = w.s AND u.key = w.k AND u.day = w.d;
    END IF;
    RETURN QUERY SELECT r.session, 'live'::text, r.provider, v_caps, v_spent;
END $$
"""

_RECORD_V7 = f"""
CREATE FUNCTION sy_ledger_record(
    p_team text, p_user text, p_host text, p_session text, p_run text, p_role text,
    p_model text, p_provider text, p_tokens_in integer, p_tokens_out integer,
    p_latency_ms double precision, p_cost bigint, p_outcome text
) RETURNS TABLE (caps bigint[], spent bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    v_day text := {_TODAY};
    v_keys text[] := ARRAY[p_session, '', p_user, p_provider];
    v_days text[] := ARRAY['', v_day, v_day, v_day];
    v_scopes text[] := ARRAY['session', 'day', 'user_day', 'provider_day'];
BEGIN
    INSERT INTO ledger_calls (day, team, user_name, host, session, run, role, model, provider,
            tokens_in, tokens_out, latency_ms, cost_nusd, outcome)
        VALUES (v_day, p_team, p_user, p_host, p_session, p_run, p_role, p_model, p_provider,
                p_tokens_in, p_tokens_out, p_latency_ms, p_cost, p_outcome);
    IF p_cost > 0 THEN
        INSERT INTO ledger_usage (team, scope, key, day)
            SELECT p_team, s, k, d FROM unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            ON CONFLICT DO NOTHING;
        PERFORM 1 FROM ledger_usage u, unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            WHERE u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d
            ORDER BY u.team, u.scope, u.key, u.day FOR UPDATE OF u;
        UPDATE ledger_usage u SET unreserved_nusd = u.unreserved_nusd + p_cost
            FROM unnest(v_scopes, v_keys, v_days) AS w(s, k, d)
            WHERE u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d;
        -- the cap rows locked above, in the order of SCOPES
        RETURN QUERY
            SELECT array_agg(u.cap_nusd ORDER BY w.i),
                   array_agg(u.spent_nusd + u.unreserved_nusd ORDER BY w.i)
            FROM unnest(v_scopes, v_keys, v_days) WITH ORDINALITY AS w(s, k, d, i)
            JOIN ledger_usage u
                ON u.team = p_team AND u.scope = w.s AND u.key = w.k AND u.day = w.d;
    END IF;
END $$
"""

_DROP_V6 = (
    "DROP FUNCTION sy_ledger_close(text, text, bigint, text, integer, integer, double precision)",
    "DROP FUNCTION sy_ledger_record(text, text, text, text, text, text, text, text, integer,"
    " integer, double precision, bigint, text)",
)


# v8: the row past an expired reservation's estimate (a close written late, after an
# expiry charged the estimate: app.router.ledger.pg_ledger) is written once per
# reservation, by the database. It was a call recorded (``sy_ledger_record``) and a flag
# in the writing process, set after the answer: a cancel that came once the row had
# committed, or a connection the database broke before answering, left the flag unset
# and the close resumed wrote the row again (a review). The note is made in the row's
# own transaction, keyed on the reservation (a second writer waits for the first and
# finds it), and keeps the totals that write left, so a writer that lost its answer
# still decides from its own write which caps it crossed. The row itself is as before:
# a call recorded, with no reservation (pg_history: a cost past its estimate has none).
# No foreign key: the function notes only a reservation it read, and one would add a
# check to every settlement's update of its reservation (the measured path).
_LATE_EXCESS = """CREATE TABLE ledger_late_excess (
    reservation_id TEXT PRIMARY KEY,
    cost_nusd BIGINT NOT NULL CHECK (cost_nusd > 0),
    caps BIGINT[],
    spent BIGINT[]
)"""

_LATE_EXCESS_FN = """
CREATE FUNCTION sy_ledger_late_excess(p_id text, p_cost bigint, p_user text, p_host text)
RETURNS TABLE (written boolean, caps bigint[], spent bigint[])
LANGUAGE plpgsql AS $$
DECLARE r ledger_reservations%ROWTYPE; v_excess bigint; v_n int;
    v_caps bigint[]; v_spent bigint[];
BEGIN
    SELECT * INTO r FROM ledger_reservations WHERE id = p_id;
    IF NOT FOUND OR r.status <> 'expired' OR p_cost <= r.amount_nusd THEN
        RETURN;
    END IF;
    v_excess := p_cost - r.amount_nusd;
    INSERT INTO ledger_late_excess (reservation_id, cost_nusd) VALUES (p_id, v_excess)
        ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n = 0 THEN
        -- written already (its note committed with it): its totals, as that write left them
        RETURN QUERY SELECT false, e.caps, e.spent FROM ledger_late_excess e
            WHERE e.reservation_id = p_id;
        RETURN;
    END IF;
    SELECT x.caps, x.spent INTO v_caps, v_spent
        FROM sy_ledger_record(r.team, p_user, p_host, r.session, r.run, r.role, r.model,
                              r.provider, 0, 0, 0, v_excess, 'ok') x;
    UPDATE ledger_late_excess SET caps = v_caps, spent = v_spent WHERE reservation_id = p_id;
    RETURN QUERY SELECT true, v_caps, v_spent;
END $$
"""


# v9: of a call's tokens_in, those the provider read from its prompt cache, in each call
# row (priced at the cache's rate: the spend report says what a cost came from). The
# column is added with a constant default (no row rewritten; the rows on file read 0). The
# close and the record take the count as one more argument: each is made again beside
# the one of before (another arity: PostgreSQL tells them apart), which is kept for the
# late excess's record of no tokens and changes nothing it wrote.
_CACHED_PIECES = (
    ("p_tokens_out integer,", "p_tokens_out integer, p_tokens_cached integer,"),
    (
        "tokens_in, tokens_out, latency_ms, cost_nusd, outcome",
        "tokens_in, tokens_out, tokens_cached, latency_ms, cost_nusd, outcome",
    ),
    (
        "p_tokens_in, p_tokens_out, p_latency_ms",
        "p_tokens_in, p_tokens_out, p_tokens_cached, p_latency_ms",
    ),
)


def _with_cached(text: str) -> str:
    """``text`` (a v7 function) taking and writing the cached tokens (v9)."""
    for old, new in _CACHED_PIECES:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


_CACHED_COLUMN = (
    "ALTER TABLE ledger_calls ADD COLUMN tokens_cached INTEGER NOT NULL DEFAULT 0"
    " CHECK (tokens_cached >= 0)"
)


# v10: a close written late (app.router.ledger.pg_ledger: the database missed it when the
# call ended) is written by its own function, which keeps that close's totals keyed on
# the reservation, with the close's own id (one per close kept in the process that owes
# it). The close committed and its answer was lost (the database broke the connection
# then): the round tried again found the reservation settled and told nothing, the spend
# counted with no SETTLED_LATE line and no GR011 one (a review). Taken again by the same
# close, it is answered as it was the first time (``live``, with the totals it left), and
# its lines are told from them; any other close of a reservation settled is answered as
# before. The close made at once (the measured path) is ``sy_ledger_close`` as ever.
_LATE_CLOSE = """CREATE TABLE ledger_late_close (
    reservation_id TEXT PRIMARY KEY,
    closer TEXT NOT NULL,
    caps BIGINT[],
    spent BIGINT[]
)"""

_LATE_CLOSE_FN = """
CREATE FUNCTION sy_ledger_close_late(
    p_closer text, p_id text, p_status text, p_cost bigint, p_outcome text,
    p_tokens_in integer, p_tokens_out integer, p_tokens_cached integer,
    p_latency_ms double precision
) RETURNS TABLE (session text, was text, provider text, caps bigint[], spent bigint[])
LANGUAGE plpgsql AS $$
DECLARE v record;
BEGIN
    -- (the close locks the reservation: a second close of it waits for this one)
    SELECT x.* INTO v FROM sy_ledger_close(p_id, p_status, p_cost, p_outcome, p_tokens_in,
        p_tokens_out, p_tokens_cached, p_latency_ms) x;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v.was = 'live' THEN
        INSERT INTO ledger_late_close (reservation_id, closer, caps, spent)
            VALUES (p_id, p_closer, v.caps, v.spent);
        RETURN QUERY SELECT v.session, v.was, v.provider, v.caps, v.spent;
        RETURN;
    END IF;
    -- closed already by this close (its answer lost): as it answered, with its totals
    RETURN QUERY SELECT v.session, 'live'::text, v.provider, e.caps, e.spent
        FROM ledger_late_close e WHERE e.reservation_id = p_id AND e.closer = p_closer;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v.session, v.was, v.provider, v.caps, v.spent;
    END IF;
END $$
"""


MIGRATIONS: tuple[Migration, ...] = (
    (
        """CREATE TABLE ledger_usage (
            team TEXT NOT NULL,
            scope TEXT NOT NULL
                CHECK (scope IN ('session', 'day', 'user_day', 'provider_day')),
            key TEXT NOT NULL,
            day TEXT NOT NULL,
            cap_nusd BIGINT CHECK (cap_nusd >= 0),
            spent_nusd BIGINT NOT NULL DEFAULT 0 CHECK (spent_nusd >= 0),
            unreserved_nusd BIGINT NOT NULL DEFAULT 0 CHECK (unreserved_nusd >= 0),
            reserved_nusd BIGINT NOT NULL DEFAULT 0 CHECK (reserved_nusd >= 0),
            PRIMARY KEY (team, scope, key, day),
            CONSTRAINT never_over_cap
                CHECK (cap_nusd IS NULL OR spent_nusd + reserved_nusd <= cap_nusd)
        )""",
        """CREATE TABLE ledger_reservations (
            id TEXT PRIMARY KEY,
            team TEXT NOT NULL,
            user_name TEXT NOT NULL,
            host TEXT NOT NULL,
            session TEXT NOT NULL,
            run TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            amount_nusd BIGINT NOT NULL CHECK (amount_nusd >= 0),
            day TEXT NOT NULL,
            created TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('live', 'settled', 'released', 'expired')),
            closed TIMESTAMPTZ
        )""",
        "CREATE INDEX ledger_reservations_live ON ledger_reservations (expires_at)"
        " WHERE status = 'live'",
        "CREATE INDEX ledger_reservations_session ON ledger_reservations (session)",
        """CREATE TABLE ledger_calls (
            id BIGSERIAL PRIMARY KEY,
            ts TIMESTAMPTZ NOT NULL DEFAULT now(),
            day TEXT NOT NULL,
            team TEXT NOT NULL,
            user_name TEXT NOT NULL,
            host TEXT NOT NULL,
            session TEXT NOT NULL,
            run TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            tokens_in INTEGER NOT NULL CHECK (tokens_in >= 0),
            tokens_out INTEGER NOT NULL CHECK (tokens_out >= 0),
            latency_ms DOUBLE PRECISION NOT NULL,
            cost_nusd BIGINT NOT NULL CHECK (cost_nusd >= 0),
            outcome TEXT NOT NULL,
            reservation_id TEXT
        )""",
        "CREATE INDEX ledger_calls_day ON ledger_calls (team, day, provider)",
        "CREATE INDEX ledger_calls_session ON ledger_calls (session)",
        _MOVE,
        _RESERVE,
        _CLOSE,
        _EXPIRE,
        _RECORD,
    ),
    (_EXPIRE_TEAM, _reserve_v2()),
    (_reserve_v3(),),
    # v4: v3's function again. v3 was changed after it had shipped (a session's cap its
    # own policy's), and a database migrated to v3 before that change kept the older
    # function for good: ``budget`` showed the raised cap, the reservation refused it
    # (an upgrade audit). A released migration is never edited again: it gets a next
    # one (tests/unit/test_migrations_pinned.py holds each one's digest).
    (_reserve_v3(),),
    # v5: an expiry's charge and a note that its audit line is owed, in one transaction;
    # the note goes when the line is written, and a note left (the audit's database did
    # not answer, the process was killed) is told by the next writer that expires (the
    # charge stood with no line, for good: a chaos audit).
    (_UNTOLD, _expire_v5()),
    # v6: each call row names the transaction that wrote it, so the live meter's snapshot
    # adds only the calls written since its last one (pg_reports.call_groups): it read
    # every call of its session at each publish, 151 ms at 150k calls. The column is
    # added empty, then given its default (one statement would rewrite the table); the
    # default holds for every writer, these functions and an older Switchyard's alike.
    # The index on (session, tx) replaces the one on session: as many to keep per call.
    (
        "ALTER TABLE ledger_calls ADD COLUMN tx xid8",
        "ALTER TABLE ledger_calls ALTER COLUMN tx SET DEFAULT pg_current_xact_id()",
        "CREATE INDEX ledger_calls_session_tx ON ledger_calls (session, tx)",
        "DROP INDEX ledger_calls_session",
    ),
    (*_DROP_V6, _CLOSE_V7, _RECORD_V7),
    (_LATE_EXCESS, _LATE_EXCESS_FN),
    (_CACHED_COLUMN, _with_cached(_CLOSE_V7), _with_cached(_RECORD_V7)),
    (_LATE_CLOSE, _LATE_CLOSE_FN),
)
