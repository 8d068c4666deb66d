-- Nothing to do on PostgreSQL: its search index (0005) is a GIN index on an
-- expression, kept by PostgreSQL itself (the SQLite half moves indexing out
-- of the commit).
SELECT 1;
