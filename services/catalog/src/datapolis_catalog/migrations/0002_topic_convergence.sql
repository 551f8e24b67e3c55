-- A dataset's partitions and retention may change after registration, so a
-- dataset_topics row is what its topic should be, and provisioned_at says
-- Kafka confirmed it (the topic exists with these partitions and
-- retention.ms). A change resets provisioned_at; desired_at says since when
-- the current description is owed, for readiness.
ALTER TABLE dataset_topics ADD COLUMN desired_at TIMESTAMPTZ;
UPDATE dataset_topics SET desired_at = created_at;
ALTER TABLE dataset_topics
    ALTER COLUMN desired_at SET NOT NULL,
    ALTER COLUMN desired_at SET DEFAULT now();

DROP INDEX dataset_topics_pending;
CREATE INDEX dataset_topics_pending ON dataset_topics (desired_at) WHERE provisioned_at IS NULL;
-- The topics of one dataset: changed together, converged after the commit.
CREATE INDEX dataset_topics_dataset ON dataset_topics (dataset_id);
