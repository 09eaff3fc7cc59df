-- The audit log: every change to accounts, credentials, plans, roles, limits, credits, signing
-- keys and the admin token, written in the same transaction as the change.
--
-- Append-only: no statement of keygate updates an entry, and the trigger refuses any that tries;
-- entries go only by the retention setting's pruning (DELETE of the oldest).
-- before/after are the compact JSON text of the fields that changed (never a secret).
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor_kind  TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target_kind TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    account_id  TEXT,
    before      TEXT,
    after       TEXT,
    source_ip   TEXT,
    request_id  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_account ON audit_log (account_id, id) WHERE account_id IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor, id);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
