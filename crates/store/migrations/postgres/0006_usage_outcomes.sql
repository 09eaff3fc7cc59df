-- Usage by outcome, by hour and by day. Same shape and rules as
-- migrations/sqlite/0006_usage_outcomes.sql (see there).
CREATE TABLE credential_usage_hourly (
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    hour        BIGINT  NOT NULL, -- hours since 1970-01-01T00:00Z
    outcome     INTEGER NOT NULL, -- business code
    requests    BIGINT  NOT NULL,
    credits     BIGINT  NOT NULL,
    PRIMARY KEY (client_id, hour, outcome)
);
CREATE INDEX credential_usage_hourly_hour ON credential_usage_hourly (hour);

CREATE TABLE credential_usage_daily (
    client_id   TEXT    NOT NULL REFERENCES credentials (client_id),
    day         BIGINT  NOT NULL, -- days since 1970-01-01 (UTC)
    outcome     INTEGER NOT NULL, -- business code
    requests    BIGINT  NOT NULL,
    credits     BIGINT  NOT NULL,
    PRIMARY KEY (client_id, day, outcome)
);

INSERT INTO credential_usage_daily (client_id, day, outcome, requests, credits)
    SELECT client_id, day, 1000, requests, 0 FROM credential_usage WHERE requests > 0;
INSERT INTO credential_usage_daily (client_id, day, outcome, requests, credits)
    SELECT client_id, day, 1005, limited, 0 FROM credential_usage WHERE limited > 0;
DROP TABLE credential_usage;
