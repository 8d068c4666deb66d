-- What a reply's figures need beyond its token counts: whether rill
-- estimated the counts (the provider reported none; 1 = estimated), and how
-- long the reply took from its stream's start to its first and last token,
-- in milliseconds. NULL for replies stored before this migration, and for
-- questions.
ALTER TABLE messages ADD COLUMN usage_estimated BIGINT;
ALTER TABLE messages ADD COLUMN first_token_ms BIGINT;
ALTER TABLE messages ADD COLUMN total_ms BIGINT;
