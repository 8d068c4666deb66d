-- Migrations are now recorded by sqlx's migrator (_sqlx_migrations, with
-- checksums). The log of the first hand-written runner is no longer read.
DROP TABLE IF EXISTS rill_migrations;
