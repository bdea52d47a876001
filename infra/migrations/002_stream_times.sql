-- When a stream actually went live and ended (YouTube Data API liveStreamingDetails), beside the
-- publication time: a stream's duration, and "how far into the stream" for analyses, need them.
ALTER TABLE streams ADD COLUMN actual_start timestamptz;
ALTER TABLE streams ADD COLUMN actual_end timestamptz;
