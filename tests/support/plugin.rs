//! The plugin's generic API as tests call it: fresh identity ids, requests with the token of the path's
//! scope, the password state, back-dated changes, and the plugin's tables taken away.

use super::{TestApp, ADMIN_TOKEN, API_TOKEN};
use serde_json::{json, Value};

/// A fresh identity id (also a fresh Kratos trigger id), so tests never share state by accident.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// POST with the token of the path's scope: the admin token on `/admin`, the API token elsewhere.
pub async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    let token = if path.starts_with("/admin/") {
        ADMIN_TOKEN
    } else {
        API_TOKEN
    };
    app.client
        .post(app.plugin_url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// [`post`], answering the status and the JSON body (`null` when the body is not JSON).
pub async fn post_json(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = post(app, path, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The identity's password state from `GET /v1/identities/{id}/password`.
pub async fn password_state(app: &TestApp, id: &str) -> Value {
    app.client
        .get(app.plugin_url(&format!("/v1/identities/{id}/password")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("state request")
        .json()
        .await
        .expect("state json")
}

/// The body of a password check for `id` (whatever its status).
pub async fn check_password(app: &TestApp, id: &str, password: &str) -> Value {
    post(
        app,
        "/v1/passwords/check",
        json!({"identity_id": id, "password": password}),
    )
    .await
    .json()
    .await
    .expect("json")
}

/// Records a password change `days_ago` through the generic API, as an import would.
pub async fn changed_days_ago(app: &TestApp, id: &str, days_ago: i64) {
    let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
    let (status, body) = post_json(
        app,
        "/v1/passwords/record",
        json!({"identity_id": id, "password": "an old password 1", "changed_at": at}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Takes the plugin's tables away: every query now fails as it would with the database unreachable.
pub async fn drop_password_tables(app: &TestApp) {
    app.db
        .run(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("DROP TABLE password_history; DROP TABLE password_states;")?;
            Ok(())
        })
        .await
        .expect("drop tables");
}
