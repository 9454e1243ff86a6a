DROP TABLE legacy_passwords;
