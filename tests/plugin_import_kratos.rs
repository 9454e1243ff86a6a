//! `reclaim import kratos` against a stand-in for Kratos's admin API: identities shaped like Kratos's own
//! fixture (`admin-identity-with-credentials.json`), listed with Kratos's keyset pagination (`page_size`,
//! `page_token`, the `Link` header Kratos writes), `include_credential=password` honoured.

use crate::support::kratos::contract;
use crate::support::plugin::{changed_days_ago, check_password, new_id, password_state};
use crate::support::{spawn_app, TestApp};
use reclaim_plugin::import::kratos::{KratosImport, KratosImportOptions, KratosImportSummary};
use reclaim_plugin::Passwords;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const ADMIN_TOKEN: &str = "kratos-admin-token-for-tests";
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// The stand-in: identities by id (Kratos lists them ordered by id), a log of the `page_token` of every list
/// request (`None` for the first page), and a switch that makes every page after the first answer 500.
struct KratosAdmin {
    url: String,
    requests: Arc<Mutex<Vec<Option<String>>>>,
    fail_later_pages: Arc<AtomicBool>,
}

impl KratosAdmin {
    async fn start(identities: Vec<Value>) -> Self {
        use actix_web::{web, App, HttpRequest, HttpServer};
        let identities: Arc<BTreeMap<String, Value>> = Arc::new(
            identities
                .into_iter()
                .map(|i| (i["id"].as_str().expect("id").to_string(), i))
                .collect(),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let fail_later_pages = Arc::new(AtomicBool::new(false));
        let (logged, failing) = (requests.clone(), fail_later_pages.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            let identities = identities.clone();
            let logged = logged.clone();
            let failing = failing.clone();
            App::new().route(
                "/admin/identities",
                web::get().to(move |req: HttpRequest| {
                    let answer = list(&req, &identities, &logged, &failing);
                    async move { answer }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self {
            url,
            requests,
            fail_later_pages,
        }
    }

    fn requests(&self) -> Vec<Option<String>> {
        self.requests.lock().expect("lock").clone()
    }
}

/// `GET /admin/identities` as Kratos answers it: ids after `page_token` (the nil UUID by default), `page_size`
/// of them (250 by default, at most 500), a `Link` header with `first` and, when more follow, `next`, written
/// relative to the request with its query keys sorted (Go's `url.Values.Encode`).
fn list(
    req: &actix_web::HttpRequest,
    identities: &BTreeMap<String, Value>,
    logged: &Mutex<Vec<Option<String>>>,
    failing: &AtomicBool,
) -> actix_web::HttpResponse {
    use actix_web::HttpResponse;
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {ADMIN_TOKEN}")) {
        return HttpResponse::Unauthorized()
            .json(json!({"error": {"code": 401, "status": "Unauthorized"}}));
    }
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.clone())
    };
    let token = param("page_token");
    logged.lock().expect("lock").push(token.clone());
    if token.is_some() && failing.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError()
            .json(json!({"error": {"code": 500, "status": "Internal Server Error"}}));
    }
    let size = param("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(250)
        .clamp(1, 500);
    let after = token.clone().unwrap_or_else(|| NIL.to_string());
    let password = param("include_credential").as_deref() == Some("password");
    let mut page: Vec<Value> = identities
        .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        .take(size + 1)
        .map(|(_, identity)| shown(identity, password))
        .collect();
    let link = |rel: &str, token: &str| {
        let mut keys: BTreeMap<String, String> = query.iter().cloned().collect();
        keys.insert("page_token".into(), token.to_string());
        keys.insert("page_size".into(), size.to_string());
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(keys)
            .finish();
        format!("<{}?{encoded}>; rel=\"{rel}\"", req.path())
    };
    let mut links = vec![link("first", NIL)];
    if page.len() > size {
        page.truncate(size);
        let last = page[size - 1]["id"].as_str().expect("id").to_string();
        links.push(link("next", &last));
    }
    HttpResponse::Ok()
        .insert_header(("Link", links.join(",")))
        .json(page)
}

/// Without `include_credential=password` Kratos leaves out every credential's `config`.
fn shown(identity: &Value, password: bool) -> Value {
    let mut shown = identity.clone();
    if let Some(credentials) = shown["credentials"].as_object_mut() {
        for (kind, credential) in credentials.iter_mut() {
            if !(password && kind == "password") {
                if let Some(map) = credential.as_object_mut() {
                    map.remove("config");
                }
            }
        }
    }
    shown
}

/// An identity like Kratos's fixture, with `id` and a password credential holding `hash` (none when `None`).
fn identity(id: &str, hash: Option<&str>) -> Value {
    let mut identity = contract("admin-identity-with-credentials.json");
    identity["id"] = json!(id);
    identity["traits"]["email"] = json!(format!("user-{}@example.org", &id[..8]));
    identity["created_at"] = json!("2024-01-02T03:04:05.123456Z");
    identity["updated_at"] = json!("2024-06-07T08:09:10.654321Z");
    match hash {
        Some(hash) => {
            identity["credentials"]["password"]["config"]["hashed_password"] = json!(hash);
            identity["credentials"]["password"]["updated_at"] =
                json!("2024-02-03T04:05:06.000001Z");
        }
        None => {
            if let Some(map) = identity.as_object_mut() {
                map.remove("credentials");
            }
        }
    }
    identity
}

fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"kratos-test-salt").expect("salt");
    let params = argon2::Params::new(8_192, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

/// Ids in ascending order, so the test knows which page each identity is on.
fn sorted_ids(n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|_| new_id()).collect();
    ids.sort();
    ids
}

/// The seven identities of the tests, on four pages of two, and the passwords behind the two hashes.
struct Scenario {
    /// argon2id hash, `metadata_public.password_changed_at` stamped by Reclaim.
    argon2: String,
    /// bcrypt hash; the change time comes from the password credential's `updated_at`.
    bcrypt: String,
    /// Known to the plugin with history before the import.
    known: String,
    /// A hash Reclaim cannot verify.
    unsupported: String,
    identities: Vec<Value>,
}

fn scenario() -> Scenario {
    let ids = sorted_ids(7);
    let mut argon2 = identity(&ids[0], Some(&argon2_hash("kratos passphrase one")));
    argon2["metadata_public"] = json!({"password_changed_at": "2025-05-01T10:00:00Z"});
    let bcrypt = identity(&ids[1], Some(&bcrypt_hash("kratos passphrase two")));
    // Social sign-in only: an oidc credential, no password.
    let mut social = identity(&ids[2], None);
    social["credentials"] = json!({"oidc": {
        "type": "oidc", "identifiers": ["google:1234"], "version": 0,
        "config": {"providers": [{"provider": "google", "subject": "1234"}]},
        "created_at": "2024-01-02T03:04:05Z", "updated_at": "2024-01-02T03:04:05Z"
    }});
    // A password credential marked for Kratos's password migration hook holds no hash.
    let mut marked = identity(&ids[3], Some("x"));
    marked["credentials"]["password"]["config"] = json!({"use_password_migration_hook": true});
    let known = identity(&ids[4], Some(&argon2_hash("kratos passphrase three")));
    let unsupported = identity(&ids[5], Some("{SSHA}c2VjcmV0LWhhc2gtYnl0ZXM="));
    let bare = identity(&ids[6], None);
    Scenario {
        argon2: ids[0].clone(),
        bcrypt: ids[1].clone(),
        known: ids[4].clone(),
        unsupported: ids[5].clone(),
        identities: vec![argon2, bcrypt, social, marked, known, unsupported, bare],
    }
}

fn passwords(app: &TestApp) -> Passwords {
    Passwords::new(&app.settings, app.db.clone(), &prometheus::Registry::new()).expect("passwords")
}

/// One run through the library function the CLI wraps.
async fn import(
    app: &TestApp,
    admin: &KratosAdmin,
    options: KratosImportOptions,
) -> (KratosImportSummary, Result<(), String>) {
    let mut settings = app.settings.plugin.kratos.clone();
    settings.admin_url = admin.url.clone();
    settings.admin_token = reclaim_common::Secret::new(ADMIN_TOKEN);
    let mut import = KratosImport::new(passwords(app), &settings, options).expect("import");
    let result = import.run(|_| {}).await.map_err(|e| e.to_string());
    (import.summary().clone(), result)
}

fn pages_of_two() -> KratosImportOptions {
    KratosImportOptions {
        page_size: 2,
        restart: false,
    }
}

async fn checkpoints(app: &TestApp) -> i64 {
    app.db
        .run(|conn| {
            use diesel::prelude::*;
            use reclaim_plugin::schema::import_checkpoints::dsl as c;
            Ok(c::import_checkpoints.count().get_result(conn)?)
        })
        .await
        .expect("count")
}

#[tokio::test]
async fn every_page_is_imported_once_and_a_rerun_imports_nothing_new() {
    let app = spawn_app().await;
    let s = scenario();
    changed_days_ago(&app, &s.known, 10).await;
    let admin = KratosAdmin::start(s.identities.clone()).await;

    let (summary, result) = import(&app, &admin, pages_of_two()).await;
    assert_eq!(result, Ok(()));
    assert_eq!(summary.pages, 4, "{summary:?}");
    assert_eq!(
        summary.to_string(),
        "imported 2, already known 1, without password 3, failed 1"
    );
    assert_eq!(summary.failed[0].id, s.unsupported);
    assert!(
        summary.failed[0].problem.starts_with("hashed_password"),
        "{summary:?}"
    );
    assert!(
        !summary.failed[0].problem.contains("SSHA"),
        "no hash in the report"
    );
    assert_eq!(
        checkpoints(&app).await,
        0,
        "no checkpoint after the last page"
    );

    for (id, password) in [
        (&s.argon2, "kratos passphrase one"),
        (&s.bcrypt, "kratos passphrase two"),
    ] {
        let reused = check_password(&app, id, password).await;
        assert_eq!(reused["allowed"], false, "{reused}");
        assert_eq!(
            reused["violations"][0]["code"], "password_reused",
            "{reused}"
        );
        let fresh = check_password(&app, id, "an entirely new passphrase").await;
        assert_eq!(fresh["allowed"], true, "{fresh}");
    }
    let stamped = password_state(&app, &s.argon2).await;
    assert_eq!(stamped["changed_at"], "2025-05-01T10:00:00Z", "{stamped}");
    let credential = password_state(&app, &s.bcrypt).await;
    assert_eq!(
        credential["changed_at"], "2024-02-03T04:05:06.000001Z",
        "the password credential's updated_at: {credential}"
    );
    let known = password_state(&app, &s.known).await;
    assert_eq!(
        known["history_entries"], 1,
        "nothing added to a known identity: {known}"
    );
    // Kratos's hash of that identity's current password was not imported.
    let allowed = check_password(&app, &s.known, "kratos passphrase three").await;
    assert_eq!(allowed["allowed"], true, "{allowed}");

    let (again, result) = import(&app, &admin, pages_of_two()).await;
    assert_eq!(result, Ok(()));
    assert_eq!(
        again.to_string(),
        "imported 0, already known 3, without password 3, failed 1"
    );
    for id in [&s.argon2, &s.bcrypt] {
        let state = password_state(&app, id).await;
        assert_eq!(state["history_entries"], 1, "{state}");
    }
}

#[tokio::test]
async fn imported_hashes_are_stored_sealed() {
    let app = spawn_app().await;
    let id = new_id();
    let hash = bcrypt_hash("kratos passphrase four");
    let admin = KratosAdmin::start(vec![identity(&id, Some(&hash))]).await;
    let (summary, result) = import(&app, &admin, KratosImportOptions::default()).await;
    assert_eq!((summary.imported, result), (1, Ok(())));
    let stored: Vec<Option<String>> = app
        .db
        .run(move |conn| {
            use diesel::prelude::*;
            use reclaim_plugin::schema::password_history::dsl as h;
            Ok(h::password_history
                .filter(h::identity_id.eq(&id))
                .select(h::foreign_hash)
                .load(conn)?)
        })
        .await
        .expect("history");
    let [Some(sealed)] = stored.as_slice() else {
        panic!("one foreign entry: {stored:?}");
    };
    assert!(
        !sealed.contains(&hash[7..]),
        "sealed, not the hash: {sealed}"
    );
    assert!(!sealed.starts_with("$2"), "{sealed}");
}

fn reclaim() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reclaim"));
    command.env_remove("RECLAIM_CONFIG");
    for (key, _) in std::env::vars() {
        if key.starts_with("RECLAIM__") {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `reclaim import kratos ARGS` with a configuration for `app`'s database and the given admin API;
/// answers the exit code, stdout and stderr. The binary runs off the test's runtime, which serves the
/// stand-in.
async fn run_import(
    app: &TestApp,
    admin_url: &str,
    token: &str,
    args: &[&str],
) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("reclaim.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n\n[plugin.kratos]\nadmin_url = \"{admin_url}\"\nadmin_token = \"{token}\"\n",
            app.database.url
        ),
    )
    .expect("write config");
    let mut command = reclaim();
    command
        .arg("--config")
        .arg(&config)
        .args(["import", "kratos"])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run reclaim");
    (
        output.status.code().expect("exited"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_interrupted_run_goes_on_from_its_checkpoint_without_fetching_the_first_page_again() {
    let app = spawn_app().await;
    let s = scenario();
    changed_days_ago(&app, &s.known, 10).await;
    let admin = KratosAdmin::start(s.identities.clone()).await;
    admin.fail_later_pages.store(true, Ordering::SeqCst);

    let (code, stdout, stderr) =
        run_import(&app, &admin.url, ADMIN_TOKEN, &["--page-size", "2"]).await;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("answered 500"), "{stderr}");
    assert!(
        stdout.contains("imported 2, already known 0, without password 0, failed 0"),
        "what the first page did: {stdout}"
    );
    assert_eq!(admin.requests().len(), 2, "page 1, then page 2 failed");
    assert_eq!(admin.requests()[0], None);
    let second_page = admin.requests()[1].clone().expect("a token for page 2");
    assert_eq!(
        second_page, s.bcrypt,
        "Kratos's token is the page's last id"
    );
    assert_eq!(checkpoints(&app).await, 1);

    admin.fail_later_pages.store(false, Ordering::SeqCst);
    let (code, stdout, stderr) =
        run_import(&app, &admin.url, ADMIN_TOKEN, &["--page-size", "2"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("going on from where an earlier run stopped"),
        "{stderr}"
    );
    assert!(
        stdout.contains("imported 0, already known 1, without password 3, failed 1"),
        "pages 2 to 4 only: {stdout}"
    );
    assert!(
        stderr.contains(&s.unsupported),
        "the failed id is named: {stderr}"
    );
    assert!(!stderr.contains("SSHA"), "never the hash: {stderr}");
    assert!(
        !stderr.contains("identities:"),
        "no progress line off a terminal: {stderr}"
    );
    let requests = admin.requests();
    assert_eq!(
        requests.iter().filter(|t| t.is_none()).count(),
        1,
        "the first page was not fetched again: {requests:?}"
    );
    assert_eq!(requests[2].as_deref(), Some(second_page.as_str()));
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert_eq!(checkpoints(&app).await, 0);
    for (id, password) in [
        (&s.argon2, "kratos passphrase one"),
        (&s.bcrypt, "kratos passphrase two"),
    ] {
        let reused = check_password(&app, id, password).await;
        assert_eq!(
            reused["violations"][0]["code"], "password_reused",
            "{reused}"
        );
    }

    // --restart starts from the first page (and imports nothing new).
    admin.fail_later_pages.store(true, Ordering::SeqCst);
    let (code, _, stderr) = run_import(&app, &admin.url, ADMIN_TOKEN, &["--page-size", "2"]).await;
    assert_eq!(code, 1, "{stderr}");
    admin.fail_later_pages.store(false, Ordering::SeqCst);
    let before = admin.requests().len();
    let (code, stdout, stderr) = run_import(
        &app,
        &admin.url,
        ADMIN_TOKEN,
        &["--page-size", "2", "--restart"],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        admin.requests()[before],
        None,
        "started from the first page"
    );
    assert!(!stderr.contains("going on from"), "{stderr}");
    assert!(
        stdout.contains("imported 0, already known 3, without password 3, failed 1"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_unreachable_kratos_or_a_refused_token_fails_naming_the_setting() {
    let app = spawn_app().await;
    let admin = KratosAdmin::start(vec![identity(&new_id(), Some(&bcrypt_hash("p")))]).await;

    let (code, _, stderr) = run_import(&app, &admin.url, "a-wrong-admin-token", &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("plugin.kratos.admin_token"), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("a-wrong-admin-token"),
        "the token is never shown: {stderr}"
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let (code, _, stderr) = run_import(&app, &closed, ADMIN_TOKEN, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("plugin.kratos.admin_url"), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");

    let (code, _, stderr) = run_import(&app, "", ADMIN_TOKEN, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("plugin.kratos.admin_url is not set"),
        "{stderr}"
    );

    let (code, _, stderr) =
        run_import(&app, &admin.url, ADMIN_TOKEN, &["--page-size", "501"]).await;
    assert_eq!(code, 2, "a usage error: {stderr}");
    assert!(stderr.contains("--page-size"), "{stderr}");
    assert_eq!(checkpoints(&app).await, 0);
}
