-- Projects: what a room `project_<id>` belongs to (Socket.IO's join_project,
-- the native join frame, the publish API). Owned like conversations: a
-- client-chosen id unknown to the server is created for the caller.
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
