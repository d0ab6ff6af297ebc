-- TraceHub schema. Applied at every start; each statement is idempotent.

CREATE TABLE IF NOT EXISTS logs (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    service     text        NOT NULL,
    seq         bigint      NOT NULL,
    level       text        NOT NULL,
    message     text        NOT NULL,
    request_id  text,
    ts          timestamptz NOT NULL,
    attrs       jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT logs_service_seq_key UNIQUE (service, seq)
);

-- Newest-first listing and time ranges, with id as the tie-breaker of the cursor.
CREATE INDEX IF NOT EXISTS logs_ts_id_idx ON logs (ts DESC, id DESC);
-- Listing filtered by service (and level, applied as a filter on this index).
CREATE INDEX IF NOT EXISTS logs_service_ts_id_idx ON logs (service, ts DESC, id DESC);

CREATE TABLE IF NOT EXISTS ack_state (
    service      text PRIMARY KEY,
    base         bigint      NOT NULL,
    ack_till     bigint      NOT NULL,
    durable_till bigint      NOT NULL,
    lost         bigint      NOT NULL DEFAULT 0,
    epoch        text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS replay_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service      text        NOT NULL,
    from_seq     bigint      NOT NULL,
    to_seq       bigint      NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'completed', 'lost')),
    reason       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    filled       bigint      NOT NULL DEFAULT 0,
    CONSTRAINT replay_requests_range_key UNIQUE (service, from_seq, to_seq),
    CHECK (from_seq <= to_seq)
);

CREATE INDEX IF NOT EXISTS replay_requests_pending_idx
    ON replay_requests (service, from_seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS replay_requests_created_idx ON replay_requests (created_at DESC, id DESC);
