//! Both services' OpenAPI documents are complete: every route the services mount is in its service's
//! document with its method, and every error answer names a body schema. The mounted routes are read from
//! the source that mounts them (actix has no public route table): every `.route("…", web::<method>()…)` in
//! the services' crates, under the `web::scope("…")` that encloses it. CI also runs schemathesis against
//! both documents (`.ci/schemathesis`).

use crate::support::spawn_app;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Routes mounted in one crate's sources, as `(method, path)` with actix's `{name}` segments.
fn mounted_routes(crate_dir: &Path) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut stack = vec![crate_dir.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).expect("read source");
                routes.extend(routes_in(&source));
            }
        }
    }
    routes
}

/// The `.route(…)` calls of one file, each under the scopes that enclose it.
fn routes_in(source: &str) -> Vec<(String, String)> {
    // Comments could mention `.route(`; drop them first.
    let code: String = source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    // (prefix, depth at which the scope's `.service(` argument closes)
    let mut scopes: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        // Not at a character boundary (inside a multi-byte character): nothing starts here.
        let rest = code.get(i..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix("web::scope(\"") {
            let prefix = after.split('"').next().unwrap_or_default().to_string();
            // The scope is the argument of the call whose `(` was opened last: it ends when that closes.
            scopes.push((prefix, depth - 1));
        }
        if let Some(after) = rest.strip_prefix(".route(") {
            let after = after.trim_start();
            if let Some(literal) = after.strip_prefix('"') {
                let path = literal.split('"').next().unwrap_or_default();
                let method = literal[path.len() + 1..]
                    .trim_start_matches([',', ' ', '\n'])
                    .strip_prefix("web::")
                    .and_then(|m| m.split('(').next())
                    .unwrap_or_default()
                    .to_string();
                let prefix: String = scopes.iter().map(|(p, _)| p.as_str()).collect();
                found.push((method, format!("{prefix}{path}")));
            }
        }
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                while scopes.last().is_some_and(|(_, d)| *d >= depth) {
                    scopes.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The `(method, path)` pairs of a document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            pairs.insert((method.clone(), path.clone()));
        }
    }
    pairs
}

async fn document(app: &crate::support::TestApp, base: &str) -> Value {
    app.client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

#[test]
fn the_route_reader_finds_scoped_and_plain_routes() {
    let source = r#"
        cfg.service(
            web::scope("/v1")
                .wrap(x())
                .route("/a/{id}", web::get().to(a)),
        )
        .service(web::scope("/admin").route("/b", web::post().to(b)))
        // .route("/commented", web::get().to(c))
        .route("/hooks/c", web::post().to(c));
    "#;
    assert_eq!(
        routes_in(source),
        vec![
            ("get".to_string(), "/v1/a/{id}".to_string()),
            ("post".to_string(), "/admin/b".to_string()),
            ("post".to_string(), "/hooks/c".to_string()),
        ]
    );
}

#[tokio::test]
async fn every_mounted_route_is_documented() {
    let app = spawn_app().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let common = mounted_routes(&root.join("common"));
    for (service, base) in [("plugin", &app.plugin), ("gateway", &app.gateway)] {
        let mounted: BTreeSet<_> = mounted_routes(&root.join(service))
            .into_iter()
            .chain(common.iter().cloned())
            .collect();
        assert!(
            mounted.len() > 8,
            "{service}: the route reader found too few routes: {mounted:?}"
        );
        let doc = document(&app, base).await;
        let listed = documented(&doc);
        let missing: Vec<_> = mounted.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "{service}: mounted but not in /openapi.json: {missing:?}"
        );
        let stale: Vec<_> = listed.difference(&mounted).collect();
        assert!(
            stale.is_empty(),
            "{service}: in /openapi.json but not mounted: {stale:?}"
        );
    }
}

#[tokio::test]
async fn every_error_answer_has_a_body_schema_and_the_shared_answers() {
    let app = spawn_app().await;
    for base in [&app.plugin, &app.gateway] {
        let doc = document(&app, base).await;
        assert!(doc["components"]["schemas"]["Error"]["properties"]["error"].is_object());
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("item") {
                let responses = operation["responses"].as_object().expect("responses");
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["content"]["application/json"]["schema"].is_object(),
                            "{method} {path}: {status} has no body schema"
                        );
                    }
                }
                assert!(responses.contains_key("500"), "{method} {path}: no 500");
                if operation.get("requestBody").is_some() {
                    assert!(responses.contains_key("413"), "{method} {path}: no 413");
                }
                if path.contains('{') {
                    assert!(responses.contains_key("404"), "{method} {path}: no 404");
                }
            }
        }
    }
}

#[tokio::test]
async fn request_schemas_are_as_strict_as_the_validation() {
    let app = spawn_app().await;
    let plugin = document(&app, &app.plugin).await;
    let check = &plugin["components"]["schemas"]["CheckBody"];
    assert_eq!(check["additionalProperties"], false, "{check}");
    assert_eq!(check["properties"]["identity_id"]["maxLength"], 255);
    assert_eq!(check["properties"]["password"]["maxLength"], 1024);
    assert_eq!(check["properties"]["password"]["minLength"], 1);
    assert_eq!(
        check["properties"]["profile"]["enum"],
        serde_json::json!(["default", "staff", null]),
        "the deployment's profiles"
    );
    let record = &plugin["components"]["schemas"]["RecordBody"];
    assert_eq!(record["additionalProperties"], false, "{record}");
    assert_eq!(record["properties"]["identity_id"]["minLength"], 1);
    let state = &plugin["paths"]["/v1/identities/{id}/password"]["get"];
    assert!(state["responses"]["400"].is_object(), "{state}");

    let gateway = document(&app, &app.gateway).await;
    let branches = gateway["components"]["schemas"]["MessageRequest"]["oneOf"]
        .as_array()
        .expect("one branch per template and channel");
    let recovery_sms = branches
        .iter()
        .find(|b| b["title"] == "recovery_code by sms")
        .expect("recovery_code by sms");
    assert_eq!(recovery_sms["additionalProperties"], false);
    assert_eq!(
        recovery_sms["properties"]["data"]["required"],
        serde_json::json!(["code"])
    );
    assert_eq!(recovery_sms["properties"]["to"]["format"], "e164");
    assert_eq!(
        recovery_sms["properties"]["expires_in"]["maximum"],
        app.settings.gateway.messages.max_expires_in_seconds
    );
    assert!(
        !branches
            .iter()
            .any(|b| b["title"] == "idp/rendered by email"),
        "the pass-through template is not the API's to pick"
    );
}

// Answers schemathesis found at odds with the documents.

#[tokio::test]
async fn a_method_a_documented_path_does_not_take_is_405_with_allow() {
    let app = spawn_app().await;
    for (base, path, allow) in [
        (&app.plugin, "/v1/passwords/check", "POST"),
        (&app.plugin, "/health/alive", "GET"),
        (
            &app.gateway,
            "/v1/verifications/0190b9e4-0000-7000-8000-000000000000",
            "GET",
        ),
    ] {
        let response = app
            .client
            .request(reqwest::Method::PUT, format!("{base}{path}"))
            .bearer_auth(crate::support::API_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 405, "PUT {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "PUT {path}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    let unknown = app
        .client
        .put(app.plugin_url("/v1/nothing-here"))
        .bearer_auth(crate::support::API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_null_body_takes_the_defaults_like_no_body() {
    let app = spawn_app().await;
    let forced: Value = app
        .client
        .post(app.plugin_url("/admin/identities/null-body/force-change"))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(forced["must_change_reason"], "admin", "{forced}");
}

#[tokio::test]
async fn expires_in_takes_a_whole_number_written_with_a_fraction() {
    let app = spawn_app().await;
    let send = |expires_in: Value| {
        app.client
            .post(app.gateway_url("/v1/messages"))
            .bearer_auth(crate::support::API_TOKEN)
            .json(&serde_json::json!({
                "channel": "email", "to": "jane@example.com", "template": "recovery_code",
                "data": {"code": "123456"}, "expires_in": expires_in
            }))
            .send()
    };
    let whole = send(serde_json::json!(900.0)).await.expect("request");
    assert_eq!(whole.status(), 202);
    let view: Value = whole.json().await.expect("json");
    assert!(view["expires_at"].is_string(), "{view}");
    let fraction = send(serde_json::json!(900.5)).await.expect("request");
    assert_eq!(fraction.status(), 400);
    let error: Value = fraction.json().await.expect("json");
    assert_eq!(error["error"]["field"], "expires_in", "{error}");
}
