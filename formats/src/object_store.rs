//! How a DuckDB instance reaches a lake whose data path is an object-store prefix
//! (`s3://bucket/prefix/`, `gs://...`, `az://container/prefix/`): where the store is (a
//! server's options) and with which credentials (a user mapping's, or the server's own
//! credential chain). Everything that names a host is a server option, so only a
//! server's owner decides where an instance sends requests.
//!
//! The credentials become one DuckDB secret scoped to the lake's prefix; DuckDB never
//! prints a secret's values, and `secrets` lists them for scrubbing messages.

use std::collections::HashMap;

use crate::{duck_sql as sql, paths};

/// Server options that say where the store is.
pub const SERVER_OPTIONS: &[&str] = &["region", "endpoint", "url_style", "use_ssl", "credential_chain", "account_name"];
/// User-mapping options: the credentials, which never go in server options.
pub const CREDENTIAL_OPTIONS: &[&str] = &["key_id", "secret", "session_token", "account_key"];

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
    /// Azure: the storage account, and its key.
    account_name: Option<String>,
    account_key: Option<String>,
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
            account_name: text(server, "account_name"),
            account_key: text(mapping, "account_key"),
        }
    }

    /// The statement that creates the lake's secret, scoped to its data path.
    pub fn secret_statement(&self, data_path: &str) -> Result<String, String> {
        let scheme = paths::url_scheme(data_path).unwrap_or_default();
        let body = match scheme.as_str() {
            "az" | "abfss" => self.azure(&scheme)?,
            _ => self.s3_compatible(&scheme)?,
        };
        Ok(format!("CREATE SECRET ducklake_data ({body}, SCOPE {})", sql::literal(data_path)))
    }

    /// S3 itself, or GCS through its S3-compatible API (HMAC keys).
    fn s3_compatible(&self, scheme: &str) -> Result<String, String> {
        if self.account_name.is_some() || self.account_key.is_some() {
            return Err(format!("account_name and account_key are for az:// lakes, not {scheme}://"));
        }
        let kind = if scheme == "s3" { "s3" } else { "gcs" };
        let mut parts = vec![format!("TYPE {kind}")];
        if self.credential_chain {
            if kind != "s3" {
                return Err(format!("credential_chain is available for s3:// and az:// lakes, not {scheme}://"));
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
        Ok(parts.join(", "))
    }

    /// Azure Blob Storage: an account key becomes a connection string built from the
    /// server's options (account, endpoint, TLS), so a user mapping names no host.
    fn azure(&self, scheme: &str) -> Result<String, String> {
        let s3_only = [("key_id", &self.key_id), ("secret", &self.secret), ("session_token", &self.session_token)]
            .into_iter()
            .chain([("region", &self.region), ("url_style", &self.url_style)])
            .find(|(_, value)| value.is_some());
        if let Some((name, _)) = s3_only {
            return Err(format!("{name} is for s3:// and gs:// lakes; an {scheme}:// lake uses account_name and account_key"));
        }
        let Some(account) = &self.account_name else {
            return Err(format!("an {scheme}:// lake needs the server option account_name (the storage account)"));
        };
        if self.credential_chain {
            return Ok(format!("TYPE azure, PROVIDER credential_chain, ACCOUNT_NAME {}", sql::literal(account)));
        }
        let Some(key) = &self.account_key else {
            // Public containers only.
            return Ok(format!("TYPE azure, PROVIDER config, ACCOUNT_NAME {}", sql::literal(account)));
        };
        let protocol = if self.use_ssl == Some(false) { "http" } else { "https" };
        let mut connection = format!("DefaultEndpointsProtocol={protocol};AccountName={account};AccountKey={key};");
        if let Some(endpoint) = &self.endpoint {
            connection.push_str(&format!("BlobEndpoint={protocol}://{endpoint}/{account};"));
        }
        Ok(format!("TYPE azure, CONNECTION_STRING {}", sql::literal(&connection)))
    }

    /// The values no message may show.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        [&self.key_id, &self.secret, &self.session_token, &self.account_key].into_iter().flatten().map(String::as_str)
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
        // Parts of an Azure connection string, which ';' and '=' would extend.
        "account_name" if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) => {
            invalid("must be a storage account name (letters and digits)")
        }
        "account_key" if value.is_empty() || value.contains(';') => invalid("must be a storage account key"),
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
    fn azure_keys_become_a_connection_string_of_the_servers_endpoint() {
        let server = options(&[("account_name", "dev1"), ("endpoint", "127.0.0.1:10000"), ("use_ssl", "false")]);
        let store = ObjectStore::from_options(&server, &options(&[("account_key", "a2V5")]));
        assert_eq!(
            store.secret_statement("az://lake/data/").unwrap(),
            "CREATE SECRET ducklake_data (TYPE azure, CONNECTION_STRING 'DefaultEndpointsProtocol=http;\
             AccountName=dev1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/dev1;', SCOPE 'az://lake/data/')"
        );
        assert_eq!(store.secrets().collect::<Vec<_>>(), ["a2V5"]);
        let wrong = ObjectStore::from_options(&server, &options(&[("key_id", "k")]));
        assert!(wrong.secret_statement("az://lake/").unwrap_err().starts_with("key_id is for s3://"));
        let no_account = ObjectStore::from_options(&options(&[]), &options(&[]));
        assert!(no_account.secret_statement("az://lake/").unwrap_err().contains("needs the server option account_name"));
        assert!(store.secret_statement("s3://lake/").unwrap_err().contains("are for az:// lakes"));
        assert!(validate_value("account_name", "a;b").is_err());
        assert!(validate_value("account_key", "k;BlobEndpoint=x").is_err());
    }

    #[test]
    fn gcs_prefixes_get_a_gcs_secret() {
        let store = ObjectStore::from_options(&options(&[]), &options(&[("key_id", "k"), ("secret", "s")]));
        assert!(store.secret_statement("gs://b/").unwrap().starts_with("CREATE SECRET ducklake_data (TYPE gcs, "));
    }
}
