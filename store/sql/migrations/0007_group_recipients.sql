-- Group sends (issue 4): how many members a message went to, so its status is the least
-- advanced across them. 0 for a message to one person.
ALTER TABLE messages ADD COLUMN recipients INTEGER NOT NULL DEFAULT 0;
