//! Reading the layers and collecting every problem with its key path.

use super::Settings;
use serde_json::{Map, Value};
use std::path::Path;

/// Keys whose children are names chosen by the admin (profiles, templates, ...). Their entries are checked
/// against the first default entry, if any, and otherwise by the entry type's own `deny_unknown_fields`.
const OPEN_MAPS: &[&str] = &["plugin.policy.profiles", "plugin.messages"];

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.key,
            env_var_for(&self.key),
            self.message
        )
    }
}

/// The configuration could not be used; every problem found is listed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// The environment variable that sets a key: `plugin.api.tokens` → `RECLAIM__PLUGIN__API__TOKENS`.
pub fn env_var_for(key: &str) -> String {
    format!("RECLAIM__{}", key.replace('.', "__").to_uppercase())
}

/// Loads defaults, then `path` (required only when `explicit`), then `RECLAIM__*` environment variables.
pub fn load(path: &Path, explicit: bool) -> Result<Settings, ConfigError> {
    let fail = |key: &str, message: String| ConfigError {
        problems: vec![Problem::new(key, message)],
    };
    if explicit && !path.exists() {
        return Err(fail(
            "config",
            format!("file {} does not exist", path.display()),
        ));
    }
    let layered = config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(explicit),
        )
        .add_source(
            config::Environment::with_prefix("RECLAIM")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .map_err(|e| fail("config", format!("{}: {e}", path.display())))?;
    let raw: Value = layered
        .try_deserialize()
        .map_err(|e| fail("config", format!("{}: {e}", path.display())))?;
    from_value(raw)
}

/// Validates an already layered value (also used by tests with inline TOML).
pub fn from_value(mut raw: Value) -> Result<Settings, ConfigError> {
    let schema = serde_json::to_value(Settings::default()).unwrap_or(Value::Null);
    let mut problems = Vec::new();
    if raw.is_null() {
        raw = Value::Object(Map::new());
    }
    normalise(&mut raw, &schema, "", &mut problems);

    let mut settings = None;
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, Settings>(raw.clone()) {
            Ok(parsed) => {
                settings = Some(parsed);
                break;
            }
            Err(error) => {
                let key = error.path().to_string();
                let message = error.inner().to_string();
                if !remove_path(&mut raw, &key) {
                    problems.push(Problem::new(key, message));
                    break;
                }
                problems.push(Problem::new(key, message));
            }
        }
    }
    match settings {
        Some(settings) if problems.is_empty() => {
            let semantic = settings.validate();
            if semantic.is_empty() {
                Ok(settings)
            } else {
                Err(ConfigError { problems: semantic })
            }
        }
        _ => Err(ConfigError { problems }),
    }
}

/// Resolves `<key>_file`, reports and drops unknown keys, and turns strings from the environment into the
/// number, boolean or list the key expects.
fn normalise(raw: &mut Value, schema: &Value, prefix: &str, problems: &mut Vec<Problem>) {
    let (Value::Object(map), Value::Object(schema_map)) = (&mut *raw, schema) else {
        return;
    };
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let path = join(prefix, &key);
        if let Some(base) = key.strip_suffix("_file") {
            if !schema_map.contains_key(&key) && schema_map.contains_key(base) {
                let file = map.remove(&key).unwrap_or(Value::Null);
                match read_secret_file(&file, &schema_map[base]) {
                    Ok(value) => {
                        map.insert(base.to_string(), value);
                    }
                    Err(message) => problems.push(Problem::new(path, message)),
                }
                continue;
            }
        }
        let Some(expected) = schema_map.get(&key) else {
            problems.push(Problem::new(path, "unknown key"));
            map.remove(&key);
            continue;
        };
        let Some(value) = map.get_mut(&key) else {
            continue;
        };
        coerce(value, expected);
        if OPEN_MAPS.contains(&path.as_str()) {
            if let (Value::Object(entries), Some(template)) =
                (value, expected.as_object().and_then(|m| m.values().next()))
            {
                for (name, entry) in entries.iter_mut() {
                    normalise(entry, template, &join(&path, name), problems);
                }
            }
        } else {
            normalise(value, expected, &path, problems);
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn read_secret_file(file: &Value, expected: &Value) -> Result<Value, String> {
    let Some(path) = file.as_str() else {
        return Err("must be a file path".into());
    };
    let content = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(if expected.is_array() {
        Value::Array(
            content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| Value::String(l.to_string()))
                .collect(),
        )
    } else {
        Value::String(content.trim().to_string())
    })
}

/// Environment variables arrive as strings; give them the type the default has.
fn coerce(value: &mut Value, expected: &Value) {
    let Value::String(text) = value else { return };
    let text = text.trim().to_string();
    let converted = match expected {
        Value::Bool(_) => text.parse::<bool>().ok().map(Value::Bool),
        Value::Number(n) if n.is_f64() => text
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number)),
        Value::Number(_) => text
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| text.parse::<i64>().map(Value::from))
            .ok(),
        Value::Array(_) => Some(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        _ => None,
    };
    if let Some(converted) = converted {
        *value = converted;
    }
}

/// Removes the value at a dotted path (as serde_path_to_error prints it); false if nothing was removed.
fn remove_path(raw: &mut Value, path: &str) -> bool {
    let segments: Vec<&str> = path
        .split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = raw;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(*segment),
            Value::Array(items) => segment
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match current {
        Value::Object(map) => map.remove(*last).is_some(),
        Value::Array(items) => match last.trim_matches(|c| c == '[' || c == ']').parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_and_bad_values_are_all_reported_with_their_env_var() {
        let err = from_value(json!({
            "database": {"pool_size": "many", "colour": "blue"},
            "telemetry": {"format": "xml"},
        }))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("database.colour (RECLAIM__DATABASE__COLOUR): unknown key"),
            "{err}"
        );
        assert!(
            err.contains("database.pool_size (RECLAIM__DATABASE__POOL_SIZE)"),
            "{err}"
        );
        assert!(
            err.contains("telemetry.format (RECLAIM__TELEMETRY__FORMAT)"),
            "{err}"
        );
    }

    #[test]
    fn strings_from_the_environment_take_the_type_of_the_key() {
        let settings = from_value(json!({
            "database": {"pool_size": "3"},
            "plugin": {"api": {"tokens": "a, b"}},
        }))
        .ok();
        let settings = settings.as_ref();
        assert_eq!(settings.map(|s| s.database.pool_size), Some(3));
        assert_eq!(settings.map(|s| s.plugin.api.tokens.len()), Some(2));
    }

    #[test]
    fn secret_keys_accept_a_file() {
        let dir = tempfile::tempdir().ok();
        let path = dir
            .as_ref()
            .map(|d| d.path().join("tokens"))
            .unwrap_or_default();
        std::fs::write(&path, "one\ntwo\n").ok();
        let settings =
            from_value(json!({"gateway": {"api": {"tokens_file": path.to_string_lossy()}}})).ok();
        let tokens = settings.map(|s| s.gateway.api.tokens).unwrap_or_default();
        assert_eq!(tokens.len(), 2);
        assert!(tokens[1].matches(b"two"));
    }

    #[test]
    fn semantic_problems_are_reported() {
        let err =
            from_value(json!({"database": {"url": "mysql://x"}, "plugin": {"listen": "nowhere"}}))
                .err()
                .map(|e| e.problems.into_iter().map(|p| p.key).collect::<Vec<_>>())
                .unwrap_or_default();
        assert_eq!(
            err,
            vec!["database.url".to_string(), "plugin.listen".to_string()]
        );
    }
}
