-- Usage a platform can bill from: requests per credential, per outcome (the business code of the
-- answer: 1000 let in, 1005 rate limited, 1006 insufficient credits, 1101 refused credential,
-- 1200 banned account, ...) and the credits spent (only outcome 1000 spends), by UTC hour and by
-- UTC day. Written in batches by the usage flusher (Store::record_usage adds to both tables in
-- one transaction); hourly rows are pruned after 7 days (+1 of margin), daily rows are kept.
CREATE TABLE credential_usage_hourly (
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    hour        INTEGER NOT NULL, -- hours since 1970-01-01T00:00Z
    outcome     INTEGER NOT NULL, -- business code
    requests    INTEGER NOT NULL,
    credits     INTEGER NOT NULL,
    PRIMARY KEY (client_id, hour, outcome)
) WITHOUT ROWID;
-- For the pruning (DELETE ... WHERE hour < ?).
CREATE INDEX credential_usage_hourly_hour ON credential_usage_hourly (hour);

CREATE TABLE credential_usage_daily (
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    day         INTEGER NOT NULL, -- days since 1970-01-01 (UTC)
    outcome     INTEGER NOT NULL, -- business code
    requests    INTEGER NOT NULL,
    credits     INTEGER NOT NULL,
    PRIMARY KEY (client_id, day, outcome)
) WITHOUT ROWID;

-- The per-day counts so far become daily rows (they have no hours: no hourly rows are made up).
INSERT INTO credential_usage_daily (client_id, day, outcome, requests, credits)
    SELECT client_id, day, 1000, requests, 0 FROM credential_usage WHERE requests > 0;
INSERT INTO credential_usage_daily (client_id, day, outcome, requests, credits)
    SELECT client_id, day, 1005, limited, 0 FROM credential_usage WHERE limited > 0;
DROP TABLE credential_usage;
