//! The Kratos drop-in kit (`config/kratos/`) against Kratos's own configuration schema.

use jsonschema::{Retrieve, Uri};
use serde_json::Value;

/// The only external reference in Kratos's schema is `ory://tracing-config` (the `tracing` key, which the kit
/// does not set). It is served as an open schema; any other reference is an error.
struct OryRefs;

impl Retrieve for OryRefs {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str() == "ory://tracing-config" {
            Ok(serde_json::json!({"type": "object"}))
        } else {
            Err(format!("unexpected schema reference {}", uri.as_str()).into())
        }
    }
}

fn kratos_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("../shared/contracts/kratos/config.schema.json")
        .expect("Kratos schema");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .with_retriever(OryRefs)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

/// The smallest kratos.yml an integrator could have before adding our keys.
fn base_config() -> Value {
    serde_json::json!({
        "dsn": "memory",
        "identity": {"schemas": [{"id": "default", "url": "file:///etc/config/kratos/identity.schema.json"}]},
        "selfservice": {
            "default_browser_return_url": "https://app.example.com/",
            "flows": {
                "registration": {"after": {"password": {"hooks": [{"hook": "session"}]}}}
            }
        }
    })
}

/// Deep merge; hook lists are concatenated, as an integrator adds our hooks next to theirs.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                merge(a.entry(key).or_insert(Value::Null), value);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (slot, value) => *slot = value,
    }
}

fn kit_snippet() -> Value {
    let text = std::fs::read_to_string("config/kratos/kratos.reclaim.yml").expect("kit snippet");
    serde_yaml_ng::from_str(&text).expect("snippet is YAML")
}

#[test]
fn the_kratos_snippet_validates_against_kratos_configuration_schema() {
    let validator = kratos_schema();
    let mut config = base_config();
    merge(&mut config, kit_snippet());
    let errors: Vec<String> = validator
        .iter_errors(&config)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_check_catches_a_broken_hook() {
    let validator = kratos_schema();
    let mut config = base_config();
    let mut snippet = kit_snippet();
    // Kratos refuses a hook that both ignores and parses the response.
    snippet["selfservice"]["flows"]["login"]["after"]["password"]["hooks"][0]["config"]
        ["response"]["ignore"] = Value::Bool(true);
    merge(&mut config, snippet);
    assert!(!validator.is_valid(&config));
}

#[test]
fn every_hook_in_the_snippet_points_at_a_reclaim_route_with_our_template() {
    let snippet = kit_snippet();
    let flows = &snippet["selfservice"]["flows"];
    let hooks: Vec<Value> = [
        &flows["registration"]["after"]["password"]["hooks"],
        &flows["login"]["after"]["password"]["hooks"],
        &flows["recovery"]["after"]["hooks"],
        &flows["settings"]["after"]["password"]["hooks"],
    ]
    .into_iter()
    .flat_map(|list| list.as_array().cloned().unwrap_or_default())
    .collect();
    let mut paths: Vec<String> = hooks
        .iter()
        .map(|hook| {
            let config = &hook["config"];
            assert_eq!(config["body"], "file:///etc/config/kratos/reclaim.jsonnet");
            assert_eq!(config["auth"]["config"]["name"], "X-Reclaim-Key");
            let url = config["url"].as_str().expect("url");
            url.trim_start_matches("http://reclaim:4470").to_string()
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/hooks/kratos/login",
            "/hooks/kratos/recovery",
            "/hooks/kratos/registration",
            "/hooks/kratos/registration/after",
            "/hooks/kratos/settings/password",
            "/hooks/kratos/settings/password/after",
        ]
    );
}

/// The `migrate_hook` snippet the README shows under "Importing existing passwords", as YAML.
fn readme_migration_snippet() -> Value {
    let readme = std::fs::read_to_string("README.md").expect("README");
    let block = readme
        .split("```yaml")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("migrate_hook:"))
        .expect("the README shows a migrate_hook snippet");
    let text: String = block
        .lines()
        .map(|line| line.strip_prefix("   ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    serde_yaml_ng::from_str(&text).expect("the snippet is YAML")
}

#[test]
fn the_readme_password_migration_snippet_validates_and_points_at_our_hook() {
    let validator = kratos_schema();
    let snippet = readme_migration_snippet();
    let hook = &snippet["selfservice"]["methods"]["password"]["config"]["migrate_hook"];
    assert_eq!(hook["enabled"], true);
    assert_eq!(
        hook["config"]["url"],
        "http://reclaim:4470/hooks/kratos/password-migration"
    );
    let mut config = base_config();
    merge(&mut config, snippet.clone());
    let errors: Vec<String> = validator
        .iter_errors(&config)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The check can fail: Kratos's schema allows only POST.
    let mut broken = snippet;
    broken["selfservice"]["methods"]["password"]["config"]["migrate_hook"]["config"]["method"] =
        Value::String("GET".into());
    let mut config = base_config();
    merge(&mut config, broken);
    assert!(!validator.is_valid(&config));
}
