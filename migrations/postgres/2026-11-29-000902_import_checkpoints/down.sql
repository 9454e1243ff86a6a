DROP TABLE import_checkpoints;
