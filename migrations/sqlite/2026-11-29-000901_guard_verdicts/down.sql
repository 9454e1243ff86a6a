DROP TABLE guard_verdicts;
