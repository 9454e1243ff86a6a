//! Where an interrupted import goes on: one row per source (`import_checkpoints`), holding the page token of
//! the next page to import.

use crate::schema::import_checkpoints::dsl as c;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use reclaim_common::db::{AnyConnection, DbError};

/// The saved page token of `source`, if an earlier run stopped before its last page.
pub fn load(conn: &mut AnyConnection, source: &str) -> Result<Option<String>, DbError> {
    Ok(c::import_checkpoints
        .find(source)
        .select(c::page_token)
        .first::<String>(conn)
        .optional()?)
}

/// Saves `page_token` as the page `source` goes on from.
pub fn save(
    conn: &mut AnyConnection,
    source: &str,
    page_token: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let row = (
        c::source.eq(source),
        c::page_token.eq(page_token),
        c::updated_at.eq(now.naive_utc()),
    );
    reclaim_common::per_backend!(conn, |conn| diesel::insert_into(c::import_checkpoints)
        .values(row)
        .on_conflict(c::source)
        .do_update()
        .set((
            c::page_token.eq(page_token),
            c::updated_at.eq(now.naive_utc())
        ))
        .execute(conn))?;
    Ok(())
}

/// Forgets `source`'s checkpoint: its last page was imported, or a restart was asked for.
pub fn clear(conn: &mut AnyConnection, source: &str) -> Result<(), DbError> {
    diesel::delete(c::import_checkpoints.find(source)).execute(conn)?;
    Ok(())
}
