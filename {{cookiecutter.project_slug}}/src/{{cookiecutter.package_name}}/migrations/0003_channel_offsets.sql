-- Per-channel positions for the delivery contract. Every message gets an offset that grows by
-- exactly 1 within its channel; publishing bumps `last_offset` in the statement that stores the
-- message, so concurrent publishers on one channel, on any instance, queue on the channel's row.
-- The epoch names one unbroken run of a channel's history: it changes whenever stored messages
-- are deleted, so a client resuming across the hole learns that it cannot recover.
CREATE FUNCTION new_epoch() RETURNS text
    LANGUAGE sql VOLATILE
    RETURN left(md5(gen_random_uuid()::text), 16);

CREATE TABLE channels (
    name text PRIMARY KEY,
    epoch text NOT NULL DEFAULT new_epoch(),
    last_offset bigint NOT NULL DEFAULT 0
);

ALTER TABLE messages ADD COLUMN channel_offset bigint;

UPDATE messages
SET channel_offset = numbered.n
FROM (SELECT id, row_number() OVER (PARTITION BY channel ORDER BY id) AS n FROM messages) AS numbered
WHERE messages.id = numbered.id;

INSERT INTO channels (name, last_offset)
SELECT channel, max(channel_offset) FROM messages GROUP BY channel;

ALTER TABLE messages ALTER COLUMN channel_offset SET NOT NULL;

DROP INDEX messages_channel_id;
CREATE UNIQUE INDEX messages_channel_offset ON messages (channel, channel_offset);

CREATE FUNCTION new_epoch_after_deletion() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE channels SET epoch = new_epoch()
    WHERE name IN (SELECT DISTINCT channel FROM deleted);
    RETURN NULL;
END
$$;

-- Statement-level, so deleting a user's thousands of messages renews each channel's epoch once.
CREATE TRIGGER messages_deleted AFTER DELETE ON messages
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION new_epoch_after_deletion();
