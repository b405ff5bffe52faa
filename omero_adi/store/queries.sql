-- Every query the daemon runs against the order store, by name.
-- A query named `name.sqlite` replaces `name` on SQLite.

-- name: reconcile_queue
-- Queue Pending orders that no trigger saw (rows written before ADI's migrations ran).
INSERT INTO adi_queue (event_id, uuid)
SELECT i.id, i.uuid FROM imports i
WHERE i.stage = 'Import Pending'
  AND NOT EXISTS (SELECT 1 FROM imports later WHERE later.uuid = i.uuid AND later.id > i.id)
  AND NOT EXISTS (SELECT 1 FROM adi_queue q WHERE q.event_id = i.id)

-- name: next_waiting
-- The oldest queue entry nobody holds; others skip it while we decide.
SELECT event_id, uuid FROM adi_queue
WHERE claimed_by IS NULL AND finished_at IS NULL
ORDER BY event_id
LIMIT 1
FOR UPDATE SKIP LOCKED

-- name: next_waiting.sqlite
SELECT event_id, uuid FROM adi_queue
WHERE claimed_by IS NULL AND finished_at IS NULL
ORDER BY event_id
LIMIT 1

-- name: lock_order
-- Serialise decisions about one order across daemons (held to commit).
SELECT pg_advisory_xact_lock(hashtext(:uuid))

-- name: lock_order.sqlite
-- SQLite runs one writer at a time: nothing to lock.
SELECT 1

-- name: latest_event
-- An order's current state: its newest row, with its preprocessing row, and
-- whether a daemon is running it right now.
SELECT i.id, i.uuid, i.stage, i.group_name, i.user_name, i.destination_id,
       i.destination_type, i.files, i.file_names, i.preprocessing_id,
       p.container, p.input_file, p.output_folder, p.alt_output_folder, p.extra_params,
       EXISTS (SELECT 1 FROM adi_queue q WHERE q.uuid = i.uuid
               AND q.claimed_by IS NOT NULL AND q.finished_at IS NULL) AS running
FROM imports i LEFT JOIN imports_preprocessing p ON p.id = i.preprocessing_id
WHERE i.uuid = :uuid
ORDER BY i.id DESC
LIMIT 1

-- name: drop_entry
-- A queue entry that is no longer its order's newest Pending event.
UPDATE adi_queue SET finished_at = CURRENT_TIMESTAMP, outcome = 'superseded'
WHERE event_id = :event_id AND finished_at IS NULL

-- name: claim
-- Conditional, so a lost race changes nothing (rowcount 0).
UPDATE adi_queue
SET claimed_by = :owner, claimed_at = CURRENT_TIMESTAMP, heartbeat_at = CURRENT_TIMESTAMP
WHERE event_id = :event_id AND claimed_by IS NULL AND finished_at IS NULL

-- name: copy_event
-- A new event of an order: the source row's fields, a new stage and description.
INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid,
                     files, file_names, description, preprocessing_id)
SELECT group_name, user_name, destination_id, destination_type, :stage, uuid,
       files, COALESCE(:file_names, file_names), :description, preprocessing_id
FROM imports WHERE id = :source_id
RETURNING id

-- name: finish_claim
-- Close a claim held by the given owner (the daemon itself, or recovery taking over a
-- dead one); rowcount 0 means someone else closed it first.
UPDATE adi_queue SET finished_at = CURRENT_TIMESTAMP, outcome = :outcome
WHERE event_id = :event_id AND claimed_by = :owner AND finished_at IS NULL

-- name: heartbeat
UPDATE adi_queue SET heartbeat_at = CURRENT_TIMESTAMP
WHERE claimed_by = :owner AND finished_at IS NULL

-- name: running_claims
-- Claims still open, and whether their owner has gone quiet for too long.
SELECT event_id, uuid, claimed_by,
       heartbeat_at < CURRENT_TIMESTAMP - make_interval(secs => :stale_after) AS expired
FROM adi_queue
WHERE claimed_by IS NOT NULL AND finished_at IS NULL
ORDER BY event_id

-- name: running_claims.sqlite
SELECT event_id, uuid, claimed_by,
       heartbeat_at < datetime('now', '-' || CAST(:stale_after AS INTEGER) || ' seconds') AS expired
FROM adi_queue
WHERE claimed_by IS NOT NULL AND finished_at IS NULL
ORDER BY event_id

-- name: queue_waiting
-- Orders nobody has claimed yet (the partial index answers this), for /metrics.
SELECT count(*) FROM adi_queue WHERE claimed_by IS NULL AND finished_at IS NULL

-- name: pickup_seconds
-- From queueing to claim, for the given claimed entries (for /metrics).
SELECT extract(epoch FROM claimed_at - queued_at) AS seconds
FROM adi_queue WHERE event_id IN :event_ids AND claimed_at IS NOT NULL

-- name: pickup_seconds.sqlite
SELECT (julianday(claimed_at) - julianday(queued_at)) * 86400 AS seconds
FROM adi_queue WHERE event_id IN :event_ids AND claimed_at IS NOT NULL

-- name: recent_orders
-- The newest row of each recent order, newest order first (for `omero-adi status`).
SELECT i.id, i.uuid, i.stage, i.group_name, i.user_name, i.destination_type,
       i.destination_id, i.timestamp, i.files, i.description
FROM imports i
WHERE i.id IN (SELECT max(id) FROM imports GROUP BY uuid)
  AND (:uuid IS NULL OR i.uuid = :uuid)
  AND (:user IS NULL OR i.user_name = :user)
  AND (:group IS NULL OR i.group_name = :group)
  AND (:stage IS NULL OR i.stage = :stage)
ORDER BY i.id DESC
LIMIT :limit

-- name: order_history
SELECT id, stage, timestamp, description FROM imports WHERE uuid = :uuid ORDER BY id
