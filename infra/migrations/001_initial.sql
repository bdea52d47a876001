-- Channels we collect, streams we know of, every chat item, scores, model versions.

CREATE TABLE channels (
    platform    text NOT NULL,
    channel_id  text NOT NULL,
    name        text NOT NULL DEFAULT '',
    url         text NOT NULL DEFAULT '',
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, channel_id)
);

CREATE TABLE streams (
    platform        text NOT NULL,
    stream_id       text NOT NULL,
    channel_id      text,
    title           text NOT NULL DEFAULT '',
    url             text NOT NULL DEFAULT '',
    published_at    timestamptz,
    status          text NOT NULL DEFAULT 'unknown',   -- live | upcoming | completed | unknown
    chat_status     text NOT NULL DEFAULT 'pending',   -- pending | partial | complete | failed
    chat_error      text,
    chat_fetched_at timestamptz,
    source          text NOT NULL DEFAULT '',          -- file, reader or collector it came from
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, stream_id)
);
CREATE INDEX streams_channel ON streams (channel_id, published_at);

CREATE TABLE chat_messages (
    id              bigserial PRIMARY KEY,
    platform        text NOT NULL,
    message_id      text NOT NULL,
    stream_id       text NOT NULL,
    author_id       text,
    author_name     text NOT NULL DEFAULT '',
    viewer_id       text NOT NULL,
    text            text NOT NULL DEFAULT '',
    kind            text NOT NULL,
    amount          double precision,
    currency        text,
    amount_text     text,
    badges          text[] NOT NULL DEFAULT '{}',
    is_member       boolean NOT NULL DEFAULT false,
    is_moderator    boolean NOT NULL DEFAULT false,
    is_owner        boolean NOT NULL DEFAULT false,
    truncated       boolean NOT NULL DEFAULT false,
    ts              timestamptz NOT NULL,
    offset_seconds  double precision,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (platform, message_id)
);
CREATE INDEX chat_messages_stream_time ON chat_messages (stream_id, ts);
CREATE INDEX chat_messages_viewer_time ON chat_messages (viewer_id, ts);
CREATE INDEX chat_messages_paid ON chat_messages (viewer_id, ts) WHERE kind <> 'text';

-- Every score ever published (history) ...
CREATE TABLE viewer_scores (
    id              bigserial PRIMARY KEY,
    stream_id       text NOT NULL,
    viewer_id       text NOT NULL,
    viewer_name     text NOT NULL DEFAULT '',
    probability     double precision NOT NULL,
    rank            integer,
    n_messages      integer NOT NULL,
    model_version   text NOT NULL,
    top_message_ids text[] NOT NULL DEFAULT '{}',
    event_time      timestamptz NOT NULL,
    scored_at       timestamptz NOT NULL,
    -- a replayed or re-processed message scores the same (viewer, time, model) again: keep one row
    UNIQUE (stream_id, viewer_id, event_time, n_messages, model_version)
);
CREATE INDEX viewer_scores_stream ON viewer_scores (stream_id, event_time);

-- ... and the newest per viewer, for leaderboards.
CREATE TABLE viewer_scores_latest (
    stream_id       text NOT NULL,
    viewer_id       text NOT NULL,
    viewer_name     text NOT NULL DEFAULT '',
    probability     double precision NOT NULL,
    rank            integer,
    n_messages      integer NOT NULL,
    model_version   text NOT NULL,
    top_message_ids text[] NOT NULL DEFAULT '{}',
    event_time      timestamptz NOT NULL,
    scored_at       timestamptz NOT NULL,
    PRIMARY KEY (stream_id, viewer_id)
);
CREATE INDEX viewer_scores_latest_rank ON viewer_scores_latest (stream_id, probability DESC);

CREATE TABLE model_versions (
    version      text PRIMARY KEY,
    path         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    promoted_at  timestamptz,
    metrics      jsonb NOT NULL DEFAULT '{}'::jsonb,
    note         text NOT NULL DEFAULT ''
);
