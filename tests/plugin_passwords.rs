//! The password facade against a real database (SQLite, or PostgreSQL with TEST_DATABASE_URL): history,
//! reuse window, minimum age, expiry modes, foreign hashes, staging and erasure.

use crate::support::{spawn_app_with, TestApp};
use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use reclaim_common::settings::{Argon2Settings, ExpiryMode, ProfileSettings, Settings};
use reclaim_plugin::policy::{ChangeContext, LoginStatus, MustChangeReason};
use reclaim_plugin::{CheckOptions, Identity, IdentityId, Password, Passwords};

/// Small argon2 parameters keep these tests quick; `plugin_api` keeps one test on the defaults.
pub fn fast_kdf(settings: &mut Settings) {
    settings.plugin.history.argon2 = Argon2Settings {
        m_kib: 256,
        t: 1,
        p: 1,
    };
    settings.plugin.history.pepper = reclaim_common::Secret::new("x".repeat(32));
}

async fn facade(profile: ProfileSettings) -> (TestApp, Passwords) {
    let app = spawn_app_with(|s| {
        fast_kdf(s);
        s.plugin.policy.profiles.insert("default".into(), profile);
    })
    .await;
    let passwords = Passwords::new(&app.settings, app.db.clone(), &prometheus::Registry::new())
        .expect("facade");
    (app, passwords)
}

fn identity(id: &str) -> Identity {
    Identity::new(IdentityId::parse(id).expect("id"))
}

fn pw(value: &str) -> Password {
    Password::parse(value.to_string()).expect("password")
}

async fn codes(
    passwords: &Passwords,
    who: &Identity,
    candidate: &str,
    context: ChangeContext,
) -> Vec<String> {
    let decision = passwords
        .check(
            who,
            &pw(candidate),
            &CheckOptions {
                context,
                ..CheckOptions::default()
            },
        )
        .await
        .expect("check");
    assert_eq!(decision.allowed, decision.violations.is_empty());
    decision
        .violations
        .iter()
        .map(|v| v.code.as_str().to_string())
        .collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(app: &TestApp, sql: &str, id: &str) -> i64 {
    let mut conn = app.db.get().expect("conn");
    diesel::sql_query(sql)
        .bind::<Text, _>(id)
        .get_result::<Count>(&mut *conn)
        .expect("count")
        .n
}

fn placeholder(app: &TestApp) -> &'static str {
    if app.database.is_postgres() {
        "$1"
    } else {
        "?"
    }
}

#[tokio::test]
async fn any_of_the_last_n_passwords_is_refused_and_the_n_plus_first_is_allowed() {
    let (_app, passwords) = facade(ProfileSettings {
        history_depth: 3,
        ..ProfileSettings::default()
    })
    .await;
    let who = identity("alice");
    for (i, p) in ["one", "two", "three", "four"].iter().enumerate() {
        let at = Utc::now() - Duration::days(40 - i64::try_from(i).expect("small"));
        passwords
            .record(&who, &pw(p), Some(at), ChangeContext::Voluntary)
            .await
            .expect("record");
    }
    // Current is "four"; the last 3 are four, three, two.
    for reused in ["four", "three", "two"] {
        assert_eq!(
            codes(&passwords, &who, reused, ChangeContext::Voluntary).await,
            vec!["password_reused"],
            "{reused}"
        );
    }
    assert!(codes(&passwords, &who, "one", ChangeContext::Voluntary)
        .await
        .is_empty());
    assert!(codes(&passwords, &who, "five", ChangeContext::Voluntary)
        .await
        .is_empty());
    let state = passwords
        .state(&who.id)
        .await
        .expect("state")
        .expect("known");
    assert_eq!(state.history_entries, 3, "pruned to the depth");
}

#[tokio::test]
async fn entries_beyond_a_lowered_depth_no_longer_count_even_before_they_are_pruned() {
    let (app, deep) = facade(ProfileSettings {
        history_depth: 5,
        ..ProfileSettings::default()
    })
    .await;
    let who = identity("lee");
    for (i, p) in ["one", "two", "three", "four"].iter().enumerate() {
        let at = Utc::now() - Duration::days(40 - i64::try_from(i).expect("small"));
        deep.record(&who, &pw(p), Some(at), ChangeContext::Voluntary)
            .await
            .expect("record");
    }
    let mut lowered = app.settings.clone();
    lowered.plugin.policy.profiles.insert(
        "default".into(),
        ProfileSettings {
            history_depth: 3,
            ..ProfileSettings::default()
        },
    );
    let shallow =
        Passwords::new(&lowered, app.db.clone(), &prometheus::Registry::new()).expect("facade");
    assert_eq!(
        codes(&shallow, &who, "two", ChangeContext::Voluntary).await,
        vec!["password_reused"],
        "rank 2 is within the last 3"
    );
    assert!(
        codes(&shallow, &who, "one", ChangeContext::Voluntary)
            .await
            .is_empty(),
        "rank 3 is the 4th latest: allowed with depth 3"
    );
    assert_eq!(
        codes(&deep, &who, "one", ChangeContext::Voluntary).await,
        vec!["password_reused"]
    );
}

#[tokio::test]
async fn an_unknown_identity_is_allowed_with_no_history() {
    let (_app, passwords) = facade(ProfileSettings::default()).await;
    assert!(codes(
        &passwords,
        &identity("nobody"),
        "anything",
        ChangeContext::Voluntary
    )
    .await
    .is_empty());
    assert!(passwords
        .state(&IdentityId::parse("nobody").expect("id"))
        .await
        .expect("state")
        .is_none());
}

#[tokio::test]
async fn the_reuse_window_refuses_a_password_used_recently_whatever_the_depth() {
    let (app, passwords) = facade(ProfileSettings {
        history_depth: 1,
        reuse_window_days: 30,
        ..ProfileSettings::default()
    })
    .await;
    let who = identity("bob");
    for (password, days_ago) in [("a", 100), ("b", 50), ("c", 10), ("d", 0)] {
        passwords
            .record(
                &who,
                &pw(password),
                Some(Utc::now() - Duration::days(days_ago)),
                ChangeContext::Voluntary,
            )
            .await
            .expect("record");
    }
    // "c" stopped being current just now, "b" 10 days ago: both in the window; "a" 50 days ago: out.
    assert_eq!(
        codes(&passwords, &who, "c", ChangeContext::Voluntary).await,
        vec!["password_reused"]
    );
    assert_eq!(
        codes(&passwords, &who, "b", ChangeContext::Voluntary).await,
        vec!["password_reused"]
    );
    assert!(codes(&passwords, &who, "a", ChangeContext::Voluntary)
        .await
        .is_empty());
    let sql = format!(
        "SELECT COUNT(*) AS n FROM password_history WHERE identity_id = {}",
        placeholder(&app)
    );
    assert_eq!(count(&app, &sql, "bob"), 3, "a was pruned, d c b kept");
}

#[tokio::test]
async fn the_minimum_age_refuses_a_quick_change_but_not_after_recovery() {
    let (_app, passwords) = facade(ProfileSettings {
        min_age_minutes: 60,
        ..ProfileSettings::default()
    })
    .await;
    let who = identity("carol");
    passwords
        .record(&who, &pw("first"), None, ChangeContext::Voluntary)
        .await
        .expect("record");
    let decision = passwords
        .check(&who, &pw("second"), &CheckOptions::default())
        .await
        .expect("check");
    assert_eq!(decision.violations.len(), 1);
    assert_eq!(decision.violations[0].code.as_str(), "password_too_young");
    assert!(decision.violations[0].available_at.is_some());
    assert!(codes(&passwords, &who, "second", ChangeContext::Recovery)
        .await
        .is_empty());

    let state = passwords.mark_recovered(&who.id).await.expect("recovered");
    assert!(state.must_change);
    assert_eq!(state.must_change_reason, Some(MustChangeReason::Recovery));
    // With the recovery mark pending, even a change sent as voluntary is not held to the minimum age.
    assert!(codes(&passwords, &who, "second", ChangeContext::Voluntary)
        .await
        .is_empty());
    let state = passwords
        .record(&who, &pw("second"), None, ChangeContext::Recovery)
        .await
        .expect("record");
    assert!(!state.must_change);
}

#[tokio::test]
async fn expiry_is_computed_for_each_mode() {
    let app = spawn_app_with(|s| {
        fast_kdf(s);
        let profiles = &mut s.plugin.policy.profiles;
        profiles.insert(
            "aging".into(),
            ProfileSettings {
                expiry: ExpiryMode::MaxAge,
                max_age_days: 30,
                warn_before_days: 5,
                grace_logins: 1,
                ..ProfileSettings::default()
            },
        );
        profiles.insert(
            "never".into(),
            ProfileSettings {
                expiry: ExpiryMode::Off,
                ..ProfileSettings::default()
            },
        );
        s.plugin
            .policy
            .select
            .push(reclaim_common::settings::SelectRule {
                profile: "aging".into(),
                schema_id: "aging".into(),
                ..Default::default()
            });
        s.plugin
            .policy
            .select
            .push(reclaim_common::settings::SelectRule {
                profile: "never".into(),
                schema_id: "never".into(),
                ..Default::default()
            });
    })
    .await;
    let passwords = Passwords::new(&app.settings, app.db.clone(), &prometheus::Registry::new())
        .expect("facade");
    let with_schema = |id: &str, schema: &str| {
        let mut who = identity(id);
        who.schema_id = Some(schema.into());
        who
    };
    let now = Utc::now();
    let login = |who: Identity| {
        let passwords = passwords.clone();
        async move { passwords.on_login(&who, now, None).await.expect("login") }
    };

    // max_age: fresh, warned, grace, expired.
    let aging = with_schema("dave", "aging");
    passwords
        .record(
            &aging,
            &pw("p"),
            Some(now - Duration::days(27)),
            ChangeContext::Voluntary,
        )
        .await
        .expect("record");
    let warned = login(aging.clone()).await;
    assert_eq!(warned.status, LoginStatus::Warn);
    assert_eq!(warned.notice.and_then(|n| n.days_left), Some(3));
    passwords
        .record(
            &aging,
            &pw("q"),
            Some(now - Duration::days(31)),
            ChangeContext::Voluntary,
        )
        .await
        .expect("record");
    let state = passwords
        .state(&aging.id)
        .await
        .expect("state")
        .expect("known");
    assert!(state.expired);
    assert_eq!(state.profile, "aging");
    assert_eq!(login(aging.clone()).await.status, LoginStatus::Grace);
    let expired = login(aging.clone()).await;
    assert_eq!(expired.status, LoginStatus::Expired);
    assert!(!expired.allowed);

    // on_compromise: never expires by age; a compromise mark forces a change.
    let ordinary = identity("erin");
    passwords
        .record(
            &ordinary,
            &pw("p"),
            Some(now - Duration::days(3000)),
            ChangeContext::Voluntary,
        )
        .await
        .expect("record");
    assert_eq!(login(ordinary.clone()).await.status, LoginStatus::Allowed);
    passwords
        .force_change(&ordinary.id, MustChangeReason::Compromised)
        .await
        .expect("mark");
    let must = login(ordinary.clone()).await;
    assert_eq!(must.status, LoginStatus::MustChange);
    assert_eq!(
        must.notice.map(|n| n.code.as_str()),
        Some("password_change_required")
    );

    // off: neither age nor a compromise mark forces anything.
    let relaxed = with_schema("frank", "never");
    passwords
        .record(
            &relaxed,
            &pw("p"),
            Some(now - Duration::days(3000)),
            ChangeContext::Voluntary,
        )
        .await
        .expect("record");
    passwords
        .force_change(&relaxed.id, MustChangeReason::Compromised)
        .await
        .expect("mark");
    assert_eq!(login(relaxed).await.status, LoginStatus::Allowed);
}

/// Hashes of "correct horse battery" from other systems (pbkdf2 and scrypt cross-checked with Python's
/// hashlib).
const FOREIGN: &[&str] = &[
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$/ur5fLELUb1eXkT9oKHqq6gHGZ9Phwgbj4qyIcCNaYc",
    "$argon2i$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$W43H5hMwW3Ahb7uPZqZcYDaE53l4B32azoH2b4AQhOE",
    "$2b$04$KBCwKxOzLha2MUDgW0PjXeOnqNNq3deK4NrdZyiBfE/Q2Z/7EruyW",
    "$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZg$BVALGMmC/K/8ELErc5VgJxyPFApArIZRCQsqjEgZWJ4",
    "$scrypt$ln=4,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$LYtM8Mh+uD5qDLQWvjcUOTNEVL2STXzMHwI4lieKYvI",
];

#[tokio::test]
async fn imported_bcrypt_argon2_pbkdf2_and_scrypt_hashes_are_matched_and_rekeyed() {
    let (app, passwords) = facade(ProfileSettings::default()).await;
    let keyed_sql = format!(
        "SELECT COUNT(*) AS n FROM password_history WHERE identity_id = {} AND kind = 'keyed' AND foreign_hash IS NULL",
        placeholder(&app)
    );
    for (i, hash) in FOREIGN.iter().enumerate() {
        let who = identity(&format!("imported-{i}"));
        passwords
            .import_foreign_hash(&who, hash, Utc::now() - Duration::days(1))
            .await
            .unwrap_or_else(|e| panic!("import {hash}: {e}"));
        assert!(codes(
            &passwords,
            &who,
            "correct horse battery wrong",
            ChangeContext::Voluntary
        )
        .await
        .is_empty());
        assert_eq!(count(&app, &keyed_sql, who.id.as_str()), 0);
        assert_eq!(
            codes(
                &passwords,
                &who,
                "correct horse battery",
                ChangeContext::Voluntary
            )
            .await,
            vec!["password_reused"],
            "{hash}"
        );
        assert_eq!(
            count(&app, &keyed_sql, who.id.as_str()),
            1,
            "re-keyed: {hash}"
        );
        // Still refused once re-keyed, now through the keyed group.
        assert_eq!(
            codes(
                &passwords,
                &who,
                "correct horse battery",
                ChangeContext::Voluntary
            )
            .await,
            vec!["password_reused"]
        );
    }
    let refused = passwords
        .import_foreign_hash(&identity("md5"), "$1$salt$hash", Utc::now())
        .await;
    assert!(matches!(
        refused,
        Err(reclaim_plugin::PasswordsError::UnsupportedHash(_))
    ));
}

#[tokio::test]
async fn registration_starts_the_clock_without_history() {
    let (_app, passwords) = facade(ProfileSettings::default()).await;
    let mut who = identity("hank");
    who.schema_id = Some("staff".into());
    who.email = Some("hank@example.com".into());
    let at = Utc::now() - Duration::days(80);
    let state = passwords.initialise(&who, at).await.expect("initialise");
    assert_eq!(state.profile, "staff");
    assert_eq!(state.history_entries, 0);
    assert_eq!(state.expires_at, Some(at + Duration::days(90)));
    assert_eq!(state.days_left, Some(10));
    assert_eq!(state.email.as_deref(), Some("hank@example.com"));
    // A later lookup without traits keeps the stored profile.
    let again = passwords
        .state(&who.id)
        .await
        .expect("state")
        .expect("known");
    assert_eq!(again.profile, "staff");
}

#[tokio::test]
async fn erasure_leaves_no_row_behind() {
    let (app, passwords) = facade(ProfileSettings::default()).await;
    let who = identity("ivy");
    passwords
        .record(&who, &pw("one"), None, ChangeContext::Voluntary)
        .await
        .expect("record");
    passwords
        .import_foreign_hash(&who, FOREIGN[2], Utc::now() - Duration::days(9))
        .await
        .expect("import");
    {
        let mut conn = app.db.get().expect("conn");
        // An answer remembered before answers named their identity: found by its scope.
        use reclaim_common::idempotency::{self, IdempotencyKey, Request};
        let request = Request::new(
            Passwords::record_scope(&who.id),
            IdempotencyKey::parse("key-1").expect("key"),
            b"body",
        );
        idempotency::claim(&mut conn, &request, Utc::now().naive_utc()).expect("claim");
        idempotency::complete(&mut conn, &request, 200, "{}").expect("complete");
    }
    // A verdict the edge guard staged for one of its settings flows.
    let submitted = passwords
        .check_submission(&who, &pw("two"), ChangeContext::Voluntary, None)
        .await
        .expect("check");
    let flow =
        reclaim_plugin::verdicts::FlowId::parse(&uuid::Uuid::new_v4().to_string()).expect("flow");
    passwords
        .stage_settings_verdict(
            &flow,
            &who.id,
            reclaim_plugin::verdicts::Verdict::Allowed(submitted.staged),
            Duration::hours(1),
        )
        .await
        .expect("stage");
    assert!(passwords.erase(&who.id).await.expect("erase"));
    let p = placeholder(&app);
    for sql in [
        format!("SELECT COUNT(*) AS n FROM password_history WHERE identity_id = {p}"),
        format!("SELECT COUNT(*) AS n FROM password_states WHERE identity_id = {p}"),
        format!("SELECT COUNT(*) AS n FROM guard_verdicts WHERE identity_id = {p}"),
        format!("SELECT COUNT(*) AS n FROM idempotency_keys WHERE scope = 'plugin.record:' || {p}"),
    ] {
        assert_eq!(count(&app, &sql, "ivy"), 0, "{sql}");
    }
    assert!(!passwords.erase(&who.id).await.expect("erase"));
}

#[tokio::test]
async fn the_minimum_age_counts_from_registration_before_any_history_exists() {
    let (_app, passwords) = facade(ProfileSettings {
        min_age_minutes: 60,
        ..ProfileSettings::default()
    })
    .await;
    let who = identity("jade");
    passwords
        .initialise(&who, Utc::now())
        .await
        .expect("initialise");
    assert_eq!(
        codes(&passwords, &who, "anything", ChangeContext::Voluntary).await,
        vec!["password_too_young"]
    );
}

#[tokio::test]
async fn a_check_runs_argon2_once_per_parameter_group_whatever_the_depth() {
    let (app, _) = facade(ProfileSettings {
        history_depth: 24,
        ..ProfileSettings::default()
    })
    .await;
    let registry = prometheus::Registry::new();
    let passwords = Passwords::new(&app.settings, app.db.clone(), &registry).expect("facade");
    let who = identity("kim");
    for i in 0..24 {
        passwords
            .record(
                &who,
                &pw(&format!("old {i}")),
                Some(Utc::now() - Duration::days(30 - i)),
                ChangeContext::Voluntary,
            )
            .await
            .expect("record");
    }
    let runs = |p: &Passwords| p.metrics().kdf_duration.get_sample_count();
    let before = runs(&passwords);
    assert!(codes(&passwords, &who, "new", ChangeContext::Voluntary)
        .await
        .is_empty());
    assert_eq!(
        runs(&passwords) - before,
        1,
        "24 entries, one group, one run"
    );

    // New argon2 parameters: old entries keep theirs and still match; a check now costs one run per group.
    let mut stronger = app.settings.clone();
    stronger.plugin.history.argon2.m_kib = 512;
    let upgraded =
        Passwords::new(&stronger, app.db.clone(), &prometheus::Registry::new()).expect("facade");
    upgraded
        .record(&who, &pw("newest"), None, ChangeContext::Voluntary)
        .await
        .expect("record");
    let before = runs(&upgraded);
    assert_eq!(
        codes(&upgraded, &who, "old 20", ChangeContext::Voluntary).await,
        vec!["password_reused"]
    );
    assert_eq!(
        codes(&upgraded, &who, "newest", ChangeContext::Voluntary).await,
        vec!["password_reused"]
    );
    assert_eq!(runs(&upgraded) - before, 4, "two groups, two checks");
}

#[tokio::test]
async fn a_hundred_concurrent_mixed_changes_to_one_identity_end_in_the_state_their_serial_order_implies(
) {
    // Recovery is recorded but not enforced here, so every login of the expired password keeps consuming
    // grace logins while recovery marks and registrations rewrite the same row.
    let (_app, passwords) = facade(ProfileSettings {
        expiry: ExpiryMode::MaxAge,
        max_age_days: 30,
        grace_logins: 40,
        on_expired: reclaim_common::settings::OnExpired::Warn,
        change_after_recovery: false,
        ..ProfileSettings::default()
    })
    .await;
    let who = identity("rosa");
    passwords
        .record(
            &who,
            &pw("old"),
            Some(Utc::now() - Duration::days(60)),
            ChangeContext::Voluntary,
        )
        .await
        .expect("record");
    let mut contactable = who.clone();
    contactable.email = Some("rosa@example.com".into());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let passwords = passwords.clone();
            let who = who.clone();
            let contactable = contactable.clone();
            tokio::spawn(async move {
                match i % 5 {
                    0 => {
                        passwords.mark_recovered(&who.id).await.expect("recovered");
                        false
                    }
                    1 => {
                        passwords
                            .initialise(&contactable, Utc::now())
                            .await
                            .expect("initialise");
                        false
                    }
                    _ => {
                        let outcome = passwords
                            .on_login(&who, Utc::now(), None)
                            .await
                            .expect("login");
                        outcome.status == LoginStatus::Grace
                    }
                }
            })
        })
        .collect();
    let mut grace_answered = 0;
    for task in futures_util::future::join_all(tasks).await {
        if task.expect("join") {
            grace_answered += 1;
        }
    }
    let state = passwords
        .state(&who.id)
        .await
        .expect("state")
        .expect("known");
    // 60 logins of an expired password with 40 grace logins: in any serial order exactly 40 are grace logins.
    assert_eq!(grace_answered, 40);
    assert_eq!(state.grace_logins_used, 40);
    assert_eq!(state.must_change_reason, Some(MustChangeReason::Recovery));
    assert_eq!(state.email.as_deref(), Some("rosa@example.com"));
    assert_eq!(state.history_entries, 1);
}
