//! How a DuckDB instance reaches a lake whose data path is an object-store prefix
//! (`s3://bucket/prefix/`, `gs://...`): where the store is (a server's options) and
//! with which credentials (a user mapping's, or the server's own credential chain).
//!
//! The credentials become one DuckDB secret scoped to the lake's prefix; DuckDB never
//! prints a secret's values, and `secrets` lists them for scrubbing messages.

use std::collections::HashMap;

use crate::{duck_sql as sql, paths};

/// Server options that say where the store is.
pub const SERVER_OPTIONS: &[&str] = &["region", "endpoint", "url_style", "use_ssl", "credential_chain"];
/// User-mapping options: the credentials, which never go in server options.
pub const CREDENTIAL_OPTIONS: &[&str] = &["key_id", "secret", "session_token"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStore {
    region: Option<String>,
    pub endpoint: Option<String>,
    url_style: Option<String>,
    use_ssl: Option<bool>,
    /// Credentials from the server's environment or instance role (aws extension).
    pub credential_chain: bool,
    key_id: Option<String>,
    secret: Option<String>,
    session_token: Option<String>,
}

impl ObjectStore {
    pub fn from_options(server: &HashMap<String, String>, mapping: &HashMap<String, String>) -> ObjectStore {
        let text = |options: &HashMap<String, String>, name: &str| options.get(name).filter(|v| !v.is_empty()).cloned();
        ObjectStore {
            region: text(server, "region"),
            endpoint: text(server, "endpoint"),
            url_style: text(server, "url_style"),
            use_ssl: server.get("use_ssl").map(|v| v == "true"),
            credential_chain: server.get("credential_chain").is_some_and(|v| v == "true"),
            key_id: text(mapping, "key_id"),
            secret: text(mapping, "secret"),
            session_token: text(mapping, "session_token"),
        }
    }

    /// The statement that creates the lake's secret, scoped to its data path.
    pub fn secret_statement(&self, data_path: &str) -> Result<String, String> {
        let scheme = paths::url_scheme(data_path).unwrap_or_default();
        let kind = if scheme == "s3" { "s3" } else { "gcs" };
        let mut parts = vec![format!("TYPE {kind}")];
        if self.credential_chain {
            if kind != "s3" {
                return Err(format!("credential_chain is available for s3:// data paths only, not {scheme}://"));
            }
            parts.push("PROVIDER credential_chain".into());
        }
        let mut text = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                parts.push(format!("{name} {}", sql::literal(value)));
            }
        };
        text("KEY_ID", &self.key_id);
        text("SECRET", &self.secret);
        text("SESSION_TOKEN", &self.session_token);
        text("REGION", &self.region);
        text("ENDPOINT", &self.endpoint);
        text("URL_STYLE", &self.url_style);
        if let Some(ssl) = self.use_ssl {
            parts.push(format!("USE_SSL {ssl}"));
        }
        parts.push(format!("SCOPE {}", sql::literal(data_path)));
        Ok(format!("CREATE SECRET ducklake_data ({})", parts.join(", ")))
    }

    /// The values no message may show.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        [&self.key_id, &self.secret, &self.session_token].into_iter().flatten().map(String::as_str)
    }
}

/// Checks one store option's value; the reason it is invalid otherwise.
pub fn validate_value(name: &str, value: &str) -> Result<(), String> {
    let invalid = |reason: &str| Err(reason.to_owned());
    match name {
        "url_style" if value != "path" && value != "vhost" => invalid("must be 'path' or 'vhost'"),
        "use_ssl" | "credential_chain" if value != "true" && value != "false" => invalid("must be 'true' or 'false'"),
        "endpoint" if value.is_empty() || value.contains("://") || value.contains('/') || value.contains(' ') => {
            invalid("must be a host with an optional port, e.g. 's3.eu-west-1.amazonaws.com' or '127.0.0.1:9000'")
        }
        "region" | "key_id" | "secret" if value.is_empty() => invalid("must not be empty"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_secret_is_scoped_to_the_data_path() {
        let store = ObjectStore::from_options(
            &options(&[("endpoint", "127.0.0.1:9000"), ("url_style", "path"), ("use_ssl", "false")]),
            &options(&[("key_id", "k"), ("secret", "it's")]),
        );
        assert_eq!(
            store.secret_statement("s3://lake/data/").unwrap(),
            "CREATE SECRET ducklake_data (TYPE s3, KEY_ID 'k', SECRET 'it''s', ENDPOINT '127.0.0.1:9000', \
             URL_STYLE 'path', USE_SSL false, SCOPE 's3://lake/data/')"
        );
        assert_eq!(store.secrets().collect::<Vec<_>>(), ["k", "it's"]);
    }

    #[test]
    fn gcs_prefixes_get_a_gcs_secret() {
        let store = ObjectStore::from_options(&options(&[]), &options(&[("key_id", "k"), ("secret", "s")]));
        assert!(store.secret_statement("gs://b/").unwrap().starts_with("CREATE SECRET ducklake_data (TYPE gcs, "));
    }
}
