-- How sure routing was of the persona it chose for a reply (`persona_id:
-- "auto"`), 0 to 1; NULL for replies whose persona was asked for by name.
ALTER TABLE messages ADD COLUMN confidence DOUBLE PRECISION;
