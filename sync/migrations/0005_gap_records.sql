-- kdelta store schema v5: gap records (change kind 6, body CBOR in `changes.manifest`), written
-- when the disk budget's hard limit drops readings no upstream peer had acknowledged. This
-- index lets a hub list them (`GET /v1/readings/gaps`) without scanning the change log.
CREATE INDEX changes_gaps ON changes (id) WHERE kind = 6;
