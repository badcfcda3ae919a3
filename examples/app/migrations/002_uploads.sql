-- Expand: a new table. An app that does not know it keeps storing files without rows; the app
-- after it records every upload here (server.js, PUT /upload/NAME) and serves only recorded
-- ones. user_id is nullable (an upload need not name its user) and loses its user with the
-- user (ON DELETE SET NULL): deleting a user never deletes files. docs/app.md, Migrations.
CREATE TABLE uploads (
  name       text PRIMARY KEY CHECK (name <> '' AND name NOT IN ('.', '..') AND strpos(name, '/') = 0),
  bytes      bigint NOT NULL CHECK (bytes >= 0),
  sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  user_id    bigint REFERENCES users (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- user-stats: uploads of the last 7 days, bytes by user.
CREATE INDEX uploads_created_at ON uploads (created_at);
CREATE INDEX uploads_user_id ON uploads (user_id);
