-- Where an interrupted `reclaim import kratos` goes on: the page token of the next page of Kratos's identity
-- list, saved after each page is imported and deleted once the last page is. `source` names the Kratos admin
-- API the token belongs to (`kratos:<admin_url>`), so a token is never sent to another Kratos.
CREATE TABLE import_checkpoints (
    source TEXT PRIMARY KEY NOT NULL,
    page_token TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
