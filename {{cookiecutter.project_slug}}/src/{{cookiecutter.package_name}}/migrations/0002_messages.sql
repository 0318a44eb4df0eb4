-- Every published message, in publication order per channel (for history and replay).
CREATE TABLE messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text NOT NULL,
    sender_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    data jsonb NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX messages_channel_id ON messages (channel, id);

-- Deleting a user cascades here: without this index each delete scans the table.
CREATE INDEX messages_sender_id ON messages (sender_id);
