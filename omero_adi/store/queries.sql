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
       i.destination_type, i.files, i.file_names, i.import_options, i.preprocessing_id,
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
-- A new event of an order: the source row's fields (ImportOptions included), a new
-- stage and description.
INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid,
                     files, file_names, description, preprocessing_id, import_options)
SELECT group_name, user_name, destination_id, destination_type, :stage, uuid,
       files, COALESCE(:file_names, file_names), :description, preprocessing_id, import_options
FROM imports WHERE id = :source_id
RETURNING id

-- name: finish_claim
-- Close a claim held by the given owner (the daemon itself, or recovery taking over a
-- dead one); rowcount 0 means someone else closed it first.
UPDATE adi_queue SET finished_at = CURRENT_TIMESTAMP, outcome = :outcome
WHERE event_id = :event_id AND claimed_by = :owner AND finished_at IS NULL

-- name: record_progress
-- How far a running order is: one row per order, replaced on every write.
INSERT INTO adi_progress (uuid, event_id, step, filesets_done, filesets_total, updated_at)
VALUES (:uuid, :event_id, :step, :filesets_done, :filesets_total, CURRENT_TIMESTAMP)
ON CONFLICT (uuid) DO UPDATE SET event_id = excluded.event_id, step = excluded.step,
    filesets_done = excluded.filesets_done, filesets_total = excluded.filesets_total,
    updated_at = excluded.updated_at

-- name: order_progress
-- The progress of an order's run under way (none once it finished).
SELECT p.step, p.filesets_done, p.filesets_total
FROM adi_progress p
JOIN adi_queue q ON q.event_id = p.event_id AND q.claimed_by IS NOT NULL AND q.finished_at IS NULL
WHERE p.uuid = :uuid

-- name: forget_progress
-- A finished order's progress: gone with its claim, so the table holds running orders only.
DELETE FROM adi_progress WHERE event_id = :event_id

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
-- The newest row of each recent order, newest order first (for `omero-adi status`),
-- with the progress of the run under way, if any.
SELECT i.id, i.uuid, i.stage, i.group_name, i.user_name, i.destination_type,
       i.destination_id, i.timestamp, i.files, i.description,
       p.step, p.filesets_done, p.filesets_total
FROM imports i
LEFT JOIN adi_queue q ON q.uuid = i.uuid AND q.claimed_by IS NOT NULL AND q.finished_at IS NULL
LEFT JOIN adi_progress p ON p.uuid = i.uuid AND p.event_id = q.event_id
WHERE i.id IN (SELECT max(id) FROM imports GROUP BY uuid)
  AND (:uuid IS NULL OR i.uuid = :uuid)
  AND (:user IS NULL OR i.user_name = :user)
  AND (:group IS NULL OR i.group_name = :group)
  AND (:stage IS NULL OR i.stage = :stage)
ORDER BY i.id DESC
LIMIT :limit

-- name: order_history
SELECT id, stage, timestamp, description FROM imports WHERE uuid = :uuid ORDER BY id

-- Notifications (omero_adi/notify): the outbox, one row per message and channel.

-- name: outbox_add_event
-- A message about an order's event, written in the transaction that records the event.
INSERT INTO adi_notify_outbox (uuid, event_id, kind, channel)
SELECT uuid, id, stage, :channel FROM imports WHERE id = :event_id

-- name: outbox_add
-- A message that is not about one event (the guard's findings, watch-folder units).
INSERT INTO adi_notify_outbox (uuid, kind, channel, payload)
VALUES (:uuid, :kind, :channel, :payload)

-- name: outbox_claim
-- Hold up to :limit due messages that no sender holds, in one statement: each gets
-- the lease and one more attempt. SKIP LOCKED passes over the messages another sender
-- is claiming at this moment; a message another sender claimed and committed meanwhile
-- is leased, and the re-check of the conditions on the locked row leaves it out.
-- Returned with all a notice needs: the event it is about and, for an order's event,
-- what its import created (`[fileset, images, plates]` per fileset, as JSON text).
WITH due AS MATERIALIZED (
    SELECT id FROM adi_notify_outbox
    WHERE sent_at IS NULL AND refused_at IS NULL AND due_at <= CURRENT_TIMESTAMP
      AND (lease_until IS NULL OR lease_until < CURRENT_TIMESTAMP)
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), held AS (
    UPDATE adi_notify_outbox o
    SET lease_owner = :owner, lease_until = CURRENT_TIMESTAMP + make_interval(secs => :lease),
        attempts = o.attempts + 1
    FROM due WHERE o.id = due.id
    RETURNING o.id, o.uuid, o.event_id, o.kind, o.channel, o.payload, o.attempts
)
SELECT h.id, h.uuid, h.kind, h.channel, h.payload, h.attempts,
       i.group_name, i.user_name, i.destination_type, i.destination_id, i.files, i.description,
       (SELECT CAST(json_agg(json_build_array(g.fileset_id, CAST(g.image_ids AS json),
                                              CAST(g.plate_ids AS json))) AS text)
        FROM (SELECT DISTINCT fileset_id, image_ids, plate_ids FROM adi_guard_files
              WHERE uuid = h.uuid AND h.event_id IS NOT NULL) g) AS created
FROM held h LEFT JOIN imports i ON i.id = h.event_id
ORDER BY h.id

-- name: outbox_claim.sqlite
-- SQLite runs one writer at a time, and an UPDATE takes the write lock before it reads.
-- RETURNING may not join, so the event's fields come by subqueries (and in no order).
UPDATE adi_notify_outbox
SET lease_owner = :owner, lease_until = datetime('now', '+' || :lease || ' seconds'),
    attempts = attempts + 1
WHERE id IN (SELECT id FROM adi_notify_outbox
             WHERE sent_at IS NULL AND refused_at IS NULL AND due_at <= CURRENT_TIMESTAMP
               AND (lease_until IS NULL OR lease_until < CURRENT_TIMESTAMP)
             ORDER BY id
             LIMIT :limit)
RETURNING id, uuid, kind, channel, payload, attempts,
    (SELECT group_name FROM imports WHERE imports.id = event_id) AS group_name,
    (SELECT user_name FROM imports WHERE imports.id = event_id) AS user_name,
    (SELECT destination_type FROM imports WHERE imports.id = event_id) AS destination_type,
    (SELECT destination_id FROM imports WHERE imports.id = event_id) AS destination_id,
    (SELECT files FROM imports WHERE imports.id = event_id) AS files,
    (SELECT description FROM imports WHERE imports.id = event_id) AS description,
    (SELECT json_group_array(json_array(g.fileset_id, json(g.image_ids), json(g.plate_ids)))
     FROM (SELECT DISTINCT fileset_id, image_ids, plate_ids FROM adi_guard_files
           WHERE adi_guard_files.uuid = adi_notify_outbox.uuid
             AND adi_notify_outbox.event_id IS NOT NULL) g) AS created

-- name: outbox_record
-- What became of a batch of held messages, in one statement. :outcomes is a JSON list
-- of {id, outcome, note, delay}; outcome `sent`, `refused` (for good, or after too many
-- attempts), `later` (due again in `delay` seconds) or `released` (not attempted: its
-- attempt is taken back). Only messages this sender still holds, not sent, change.
UPDATE adi_notify_outbox o
SET sent_at = CASE WHEN r.outcome = 'sent' THEN CURRENT_TIMESTAMP ELSE o.sent_at END,
    refused_at = CASE WHEN r.outcome = 'refused' THEN CURRENT_TIMESTAMP ELSE o.refused_at END,
    due_at = CASE WHEN r.outcome = 'later'
                  THEN CURRENT_TIMESTAMP + make_interval(secs => r.delay) ELSE o.due_at END,
    attempts = CASE WHEN r.outcome = 'released' THEN o.attempts - 1 ELSE o.attempts END,
    detail = CASE WHEN r.outcome = 'released' THEN o.detail ELSE r.note END,
    lease_until = NULL
FROM json_to_recordset(CAST(:outcomes AS json))
     AS r(id integer, outcome text, note text, delay double precision)
WHERE o.id = r.id AND o.lease_owner = :owner AND o.sent_at IS NULL

-- name: outbox_record.sqlite
UPDATE adi_notify_outbox
SET sent_at = CASE WHEN r.outcome = 'sent' THEN CURRENT_TIMESTAMP ELSE sent_at END,
    refused_at = CASE WHEN r.outcome = 'refused' THEN CURRENT_TIMESTAMP ELSE refused_at END,
    due_at = CASE WHEN r.outcome = 'later'
                  THEN datetime('now', '+' || r.delay || ' seconds') ELSE due_at END,
    attempts = CASE WHEN r.outcome = 'released' THEN attempts - 1 ELSE attempts END,
    detail = CASE WHEN r.outcome = 'released' THEN detail ELSE r.note END,
    lease_until = NULL
FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.outcome') AS outcome,
             json_extract(value, '$.note') AS note, json_extract(value, '$.delay') AS delay
      FROM json_each(:outcomes)) AS r
WHERE adi_notify_outbox.id = r.id AND lease_owner = :owner AND sent_at IS NULL

-- name: outbox_seconds_to_next
-- Seconds until the next unsent message is due (NULL when none waits).
SELECT extract(epoch FROM min(GREATEST(due_at, COALESCE(lease_until, due_at)))
                          - CURRENT_TIMESTAMP)
FROM adi_notify_outbox WHERE sent_at IS NULL AND refused_at IS NULL

-- name: outbox_seconds_to_next.sqlite
SELECT (julianday(min(max(due_at, COALESCE(lease_until, due_at)))) - julianday('now')) * 86400
FROM adi_notify_outbox WHERE sent_at IS NULL AND refused_at IS NULL

-- name: outbox_summary
-- Messages by channel and state, for `omero-adi notify`.
SELECT channel,
       CASE WHEN sent_at IS NOT NULL THEN 'sent' WHEN refused_at IS NOT NULL THEN 'refused'
            ELSE 'waiting' END AS state,
       count(*) AS messages
FROM adi_notify_outbox GROUP BY 1, 2 ORDER BY 1, 2

-- name: outbox_problems
-- The newest refused or retried messages, with the reason.
SELECT id, uuid, kind, channel, attempts, detail, refused_at IS NOT NULL AS refused
FROM adi_notify_outbox
WHERE sent_at IS NULL AND detail IS NOT NULL
ORDER BY id DESC
LIMIT :limit

-- The in-place guard (omero_adi/notify/guard.py): ADI's record of imported files.

-- name: guard_record
-- All of an order's files in one statement: :rows is a JSON list of {uuid, path,
-- fileset_id, images, plates, size, mtime_ns, inode}. (A list of parameter sets for a
-- textual statement is executed once per set: one round trip per file.)
INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, size, mtime_ns, inode)
SELECT r.uuid, r.path, r.fileset_id, r.images, r.plates, r.size, r.mtime_ns, r.inode
FROM json_to_recordset(CAST(:rows AS json)) AS r(uuid text, path text, fileset_id bigint,
     images text, plates text, size bigint, mtime_ns bigint, inode bigint)
ON CONFLICT (fileset_id, path) DO NOTHING

-- name: guard_record.sqlite
-- (the WHERE is for SQLite's parser, which needs one before ON CONFLICT after a SELECT)
INSERT INTO adi_guard_files (uuid, path, fileset_id, image_ids, plate_ids, size, mtime_ns, inode)
SELECT json_extract(value, '$.uuid'), json_extract(value, '$.path'),
       json_extract(value, '$.fileset_id'), json_extract(value, '$.images'),
       json_extract(value, '$.plates'), json_extract(value, '$.size'),
       json_extract(value, '$.mtime_ns'), json_extract(value, '$.inode')
FROM json_each(:rows) WHERE true
ON CONFLICT (fileset_id, path) DO NOTHING

-- name: guard_count
SELECT count(*) FROM adi_guard_files

-- name: guard_batch
-- The next files to check, in id order, optionally of one order or recorded since a moment.
SELECT id, uuid, path, size, mtime_ns, inode, state, image_ids, plate_ids
FROM adi_guard_files
WHERE id > :after
  AND (:uuid IS NULL OR uuid = :uuid)
  AND (:since IS NULL OR recorded_at >= :since)
ORDER BY id
LIMIT :limit

-- name: guard_checked
UPDATE adi_guard_files SET checked_at = CURRENT_TIMESTAMP WHERE id IN :file_ids

-- name: guard_set_state
-- Only from the state the check started from: of two checks of one file at once (a pass
-- and `verify`, or a pass that lost its lease), one records a change and tells of it.
UPDATE adi_guard_files SET state = :state, detail = :detail, checked_at = CURRENT_TIMESTAMP
WHERE id = :id AND state = :was

-- name: guard_problems
-- Files whose last check found them missing, moved or changed.
SELECT uuid, path, state, detail, image_ids, plate_ids, checked_at
FROM adi_guard_files
WHERE state <> 'ok' AND (:uuid IS NULL OR uuid = :uuid)
ORDER BY id
LIMIT :limit

-- name: guard_state_counts
SELECT state, count(*) AS files FROM adi_guard_files GROUP BY state

-- name: order_people
SELECT user_name, group_name FROM imports WHERE uuid = :uuid ORDER BY id DESC LIMIT 1

-- name: outbox_lease_holders
-- Senders holding messages now (a restarted daemon frees those of dead ones).
SELECT DISTINCT lease_owner FROM adi_notify_outbox
WHERE sent_at IS NULL AND refused_at IS NULL AND lease_until >= CURRENT_TIMESTAMP

-- name: outbox_release
UPDATE adi_notify_outbox SET lease_until = NULL
WHERE lease_owner = :owner AND sent_at IS NULL AND refused_at IS NULL

-- Leases (omero_adi/store/lease.py): work one daemon at a time may do, by the database's clock.

-- name: lease_take
-- Take the lease, or renew it: only when it is free, ours already, or its holder's time
-- has run out (rowcount 0: another daemon holds it).
INSERT INTO adi_leases (name, holder, expires_at)
VALUES (:lease, :holder, CURRENT_TIMESTAMP + make_interval(secs => :seconds))
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE adi_leases.holder = excluded.holder OR adi_leases.expires_at < CURRENT_TIMESTAMP

-- name: lease_take.sqlite
INSERT INTO adi_leases (name, holder, expires_at)
VALUES (:lease, :holder, datetime('now', :seconds || ' seconds'))
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE adi_leases.holder = excluded.holder OR adi_leases.expires_at < CURRENT_TIMESTAMP

-- name: lease_give_up
DELETE FROM adi_leases WHERE name = :lease AND holder = :holder

-- name: outbox_purge
-- Forget messages delivered or refused longer ago than the retention.
DELETE FROM adi_notify_outbox
WHERE COALESCE(sent_at, refused_at) < CURRENT_TIMESTAMP - make_interval(days => :days)

-- name: outbox_purge.sqlite
DELETE FROM adi_notify_outbox
WHERE COALESCE(sent_at, refused_at) < datetime('now', '-' || :days || ' days')
