-- Where the scheduled self-check stopped (docs/operating.md, "The scheduled self-check"):
-- each run checks until its time budget, and the next one goes on from here. One row.
CREATE TABLE mirror_check_progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    follows BOOLEAN NOT NULL,
    after_a TEXT NOT NULL,
    after_b TEXT NOT NULL,
    pass_started_at TEXT NOT NULL
);
