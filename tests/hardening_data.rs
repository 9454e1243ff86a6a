//! Data safety of the shared database layer: a connection that comes back to the pool in a broken state
//! (an open transaction after a panic) is discarded, so later writes through the same pool are durable.

use crate::support::TestDatabase;
use chrono::Utc;
use diesel::prelude::*;
use reclaim_common::db::{write_transaction, AnyConnection, Db, DbError};
use reclaim_common::schema::idempotency_keys::dsl;
use reclaim_common::settings::{DatabaseSettings, DatabaseUrl};

/// One connection, so every write after the panic reuses whatever the pool kept.
fn connect(url: &str) -> Db {
    let settings = DatabaseSettings {
        url: DatabaseUrl::new(url),
        pool_size: 1,
        ..DatabaseSettings::default()
    };
    Db::connect(&settings).expect("connect")
}

fn insert(conn: &mut AnyConnection, key: &str) -> Result<(), DbError> {
    diesel::insert_into(dsl::idempotency_keys)
        .values((
            dsl::scope.eq("durability"),
            dsl::key.eq(key),
            dsl::request_digest.eq(vec![0u8]),
            dsl::status_code.eq(200),
            dsl::response_body.eq(""),
            dsl::created_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

#[tokio::test]
async fn after_a_panic_inside_a_write_transaction_fifty_writes_through_the_same_pool_survive_a_restart(
) {
    let database = TestDatabase::fresh();
    let db = connect(&database.url);
    {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.migrate())
            .await
            .expect("join")
            .expect("migrate");
    }
    let panicked: Result<(), DbError> = db
        .run(|conn| {
            write_transaction(conn, |c| {
                insert(c, "panicked")?;
                panic!("a bug inside a write transaction");
            })
        })
        .await;
    assert!(matches!(panicked, Err(DbError::Task(_))), "{panicked:?}");
    for i in 0..50 {
        db.run(move |conn| write_transaction(conn, |c| insert(c, &format!("write-{i}"))))
            .await
            .expect("write answered");
    }
    drop(db);

    let restarted = connect(&database.url);
    let mut keys: Vec<String> = restarted
        .run(|conn| {
            Ok(dsl::idempotency_keys
                .filter(dsl::scope.eq("durability"))
                .select(dsl::key)
                .load(conn)?)
        })
        .await
        .expect("read");
    keys.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("write-{i}")).collect();
    expected.sort();
    assert_eq!(keys, expected);
}
