"""The team audit log's tables in PostgreSQL, as versioned migrations.

One hash chain per Switchyard instance: ``audit_chains`` holds who writes it (team, user,
host), when it started, and its head; ``audit_lines`` the lines, keyed by (chain, seq),
stored as the canonical text that is hashed, exported and verified, exactly as in the
SQLite file. A chain's id is a hash of its owner record, so editing who wrote a chain
is found by ``audit verify`` like editing a line. Appends to one chain are serialised
by an advisory lock on it, whoever writes; the lines are append-only by trigger.
"""

from __future__ import annotations

from app.audit.canonical import GENESIS_HASH
from app.store.postgres import Migration

COMPONENT = "audit"

_APPEND = """
CREATE FUNCTION sy_audit_append(
    p_chain text, p_seq bigint, p_prev text, p_hash text, p_ts text, p_session text,
    p_run text, p_kind text, p_line text
) RETURNS TABLE (ok boolean, head_seq bigint, head_hash text)
LANGUAGE plpgsql AS $$
DECLARE v_seq bigint; v_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('switchyard-audit:' || p_chain, 0));
    SELECT c.head_seq, c.head_hash INTO v_seq, v_hash FROM audit_chains c
        WHERE c.chain = p_chain;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown audit chain %', p_chain;
    END IF;
    IF v_seq <> p_seq - 1 OR v_hash <> p_prev THEN
        -- someone else extended this chain: the writer re-reads the head and tries again
        RETURN QUERY SELECT false, v_seq, v_hash;
        RETURN;
    END IF;
    INSERT INTO audit_lines (chain, seq, ts, session, run, kind, hash, line)
        VALUES (p_chain, p_seq, p_ts, p_session, p_run, p_kind, p_hash, p_line);
    UPDATE audit_chains SET head_seq = p_seq, head_hash = p_hash WHERE chain = p_chain;
    RETURN QUERY SELECT true, p_seq, p_hash;
END $$
"""

MIGRATIONS: tuple[Migration, ...] = (
    (
        f"""CREATE TABLE audit_chains (
            chain TEXT PRIMARY KEY,
            team TEXT NOT NULL,
            user_name TEXT NOT NULL,
            host TEXT NOT NULL,
            started TEXT NOT NULL,
            nonce TEXT NOT NULL,
            head_seq BIGINT NOT NULL DEFAULT 0,
            head_hash TEXT NOT NULL DEFAULT '{GENESIS_HASH}'
        )""",
        """CREATE TABLE audit_lines (
            chain TEXT NOT NULL REFERENCES audit_chains (chain),
            seq BIGINT NOT NULL,
            ts TEXT NOT NULL,
            session TEXT NOT NULL,
            run TEXT,
            kind TEXT NOT NULL,
            hash TEXT NOT NULL,
            line TEXT NOT NULL,
            PRIMARY KEY (chain, seq)
        )""",
        "CREATE INDEX audit_lines_ts ON audit_lines (ts)",
        "CREATE INDEX audit_lines_session ON audit_lines (session, chain, seq)",
        "CREATE INDEX audit_lines_run ON audit_lines (run, chain, seq)",
        """CREATE FUNCTION sy_audit_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit lines are append-only'; END $$""",
        "CREATE TRIGGER audit_lines_append_only BEFORE UPDATE OR DELETE ON audit_lines"
        " FOR EACH ROW EXECUTE FUNCTION sy_audit_append_only()",
        _APPEND,
    ),
    # v2: when the database received each line, by its own clock (at the insert, not the
    # transaction's start, which waits for the chain's lock): a laptop's clock a day
    # ahead put its lines after everyone's newer ones in `audit tail --team`, which
    # ordered by the lines' own stamps (a team-store audit)
    # (nullable, its default set apart: with a volatile default the ADD rewrote the
    # whole table under an exclusive lock, 2 s for 300k lines with every append waiting,
    # past the statement timeout on a large log: a review; older lines stay null)
    (
        "ALTER TABLE audit_lines ADD COLUMN received TIMESTAMPTZ",
        "ALTER TABLE audit_lines ALTER COLUMN received SET DEFAULT clock_timestamp()",
        "CREATE INDEX audit_lines_received ON audit_lines (received)",
    ),
    # v3: TRUNCATE fires no row trigger, so `TRUNCATE audit_lines` (or the chains', with
    # CASCADE) emptied the log past the append-only rule; `audit verify` then found no
    # chain to fail. A statement trigger refuses it on both tables, as the row one refuses
    # UPDATE and DELETE (the tables' owner can still drop either: that is the database's
    # own trust boundary, and `verify` against an export is the outside anchor).
    (
        "CREATE TRIGGER audit_lines_no_truncate BEFORE TRUNCATE ON audit_lines"
        " FOR EACH STATEMENT EXECUTE FUNCTION sy_audit_append_only()",
        "CREATE TRIGGER audit_chains_no_truncate BEFORE TRUNCATE ON audit_chains"
        " FOR EACH STATEMENT EXECUTE FUNCTION sy_audit_append_only()",
    ),
    # v4: where a range read of a chain starts (`policy simulate --since`): its lines by
    # ts in byte order, as the SQLite file and the simulation compare it (the database's
    # own collation may order "2026-12-05T…" otherwise)
    ('CREATE INDEX audit_lines_chain_ts ON audit_lines (chain, ts COLLATE "C")',),
)
