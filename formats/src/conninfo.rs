//! libpq connection strings, in both forms libpq accepts: `key=value` lists
//! (`host=/tmp dbname='my db'`) and URIs (`postgresql://user:secret@host:5432/db?sslmode=require`).
//!
//! Parsed with libpq's own rules (quoting and backslash escapes in key/value lists,
//! percent-encoding in URIs), so that what is checked here is what libpq will read.

/// One `keyword = value` of a connection string.
pub type Param = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConninfoError(pub String);

impl std::fmt::Display for ConninfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The part after `postgres://` or `postgresql://`, when `conninfo` is a URI.
pub fn uri_rest(conninfo: &str) -> Option<&str> {
    let trimmed = conninfo.trim_start();
    trimmed.strip_prefix("postgresql://").or_else(|| trimmed.strip_prefix("postgres://"))
}

/// Every parameter the string sets, in order (a later one overrides an earlier one
/// of the same keyword, as in libpq).
pub fn params(conninfo: &str) -> Result<Vec<Param>, ConninfoError> {
    match uri_rest(conninfo) {
        Some(rest) => uri_params(rest),
        None => key_value_params(conninfo),
    }
}

/// The value libpq would use for `keyword` (the last one given).
pub fn value_of(conninfo: &str, keyword: &str) -> Result<Option<String>, ConninfoError> {
    Ok(params(conninfo)?.into_iter().rev().find(|(k, _)| k == keyword).map(|(_, v)| v))
}

/// Whether the string carries a password (also when it cannot be parsed and merely
/// looks like it does: callers use this to refuse secrets where they do not belong).
pub fn has_password(conninfo: &str) -> bool {
    match params(conninfo) {
        Ok(params) => params.iter().any(|(k, _)| k == "password"),
        Err(_) => conninfo.to_ascii_lowercase().contains("password") || uri_rest(conninfo).is_some_and(|r| {
            let authority = r.split(['/', '?']).next().unwrap_or("");
            authority.rfind('@').is_some_and(|at| authority[..at].contains(':'))
        }),
    }
}

fn key_value_params(text: &str) -> Result<Vec<Param>, ConninfoError> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut keyword = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            keyword.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConninfoError(format!("missing \"=\" after \"{keyword}\" in connection info string")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(ConninfoError("unterminated quoted string in connection info string".into())),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        params.push((keyword, value));
    }
}

fn uri_params(rest: &str) -> Result<Vec<Param>, ConninfoError> {
    let mut params = Vec::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    params.push(("user".into(), percent_decode(user)?));
                    params.push(("password".into(), percent_decode(password)?));
                }
                None if !userinfo.is_empty() => params.push(("user".into(), percent_decode(userinfo)?)),
                None => {}
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let mut host_list = Vec::new();
        let mut port_list = Vec::new();
        for spec in hosts.split(',') {
            let (host, port) = if let Some(bracketed) = spec.strip_prefix('[') {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| ConninfoError(format!("missing \"]\" in URI host \"{spec}\"")))?;
                (host.to_owned(), after.strip_prefix(':').map(str::to_owned))
            } else {
                match spec.split_once(':') {
                    Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
                    None => (spec.to_owned(), None),
                }
            };
            host_list.push(percent_decode(&host)?);
            port_list.push(port.unwrap_or_default());
        }
        params.push(("host".into(), host_list.join(",")));
        if port_list.iter().any(|p| !p.is_empty()) {
            params.push(("port".into(), port_list.join(",")));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        params.push(("dbname".into(), percent_decode(path)?));
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ConninfoError(format!("missing \"=\" in URI query parameter \"{pair}\"")))?;
        params.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok(params)
}

fn percent_decode(text: &str) -> Result<String, ConninfoError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConninfoError(format!("invalid percent-encoded token in \"{text}\"")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConninfoError(format!("\"{text}\" is not UTF-8 once decoded")))
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A key/value list value: single-quoted, with `\` and `'` escaped.
pub fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `base` with `extra` parameters appended; in both forms a later parameter overrides
/// an earlier one, so these win over what `base` says.
pub fn with_params(base: &str, extra: &[(&str, String)]) -> String {
    let mut out = base.trim_end().to_owned();
    let uri = uri_rest(base).is_some();
    for (key, value) in extra {
        if uri {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(key);
            out.push('=');
            out.push_str(&percent_encode(value));
        } else {
            out.push(' ');
            out.push_str(key);
            out.push('=');
            out.push_str(&quote_value(value));
        }
    }
    out
}

/// Remove passwords from text that may quote a connection string: libpq key/value
/// (`password=...`, quoted or not) and URIs (`scheme://user:secret@host`).
pub fn scrub_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.to_ascii_lowercase().find("password") {
        let after_key = &rest[pos + "password".len()..];
        let trimmed = after_key.trim_start();
        if let Some(value) = trimmed.strip_prefix('=') {
            out.push_str(&rest[..pos]);
            out.push_str("password=********");
            rest = skip_value(value.trim_start());
        } else {
            out.push_str(&rest[..pos + "password".len()]);
            rest = after_key;
        }
    }
    out.push_str(rest);
    scrub_uri_passwords(&out)
}

/// Skip one key/value value (`'quoted \' value'` or `bare`), returning what follows.
fn skip_value(value: &str) -> &str {
    if let Some(quoted) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return &quoted[i + 1..],
                _ => escaped = false,
            }
        }
        ""
    } else {
        let end = value.find(|c: char| c.is_whitespace() || c == '&' || c == '\'' || c == '"').unwrap_or(value.len());
        &value[end..]
    }
}

fn scrub_uri_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":********");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> Param {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn key_value_lists_follow_libpq_quoting() {
        assert_eq!(
            params("host=/tmp  port = 5432 dbname='my db' user=o\\'neil password='it\\'s \\\\ here'").unwrap(),
            vec![p("host", "/tmp"), p("port", "5432"), p("dbname", "my db"), p("user", "o'neil"), p("password", "it's \\ here")]
        );
        assert_eq!(params("").unwrap(), vec![]);
        assert_eq!(params("dbname=").unwrap(), vec![p("dbname", "")]);
        assert!(params("host").is_err());
        assert!(params("host='/tmp").is_err());
    }

    #[test]
    fn uris_are_split_and_decoded() {
        assert_eq!(
            params("postgresql://ann:s%40cret@db.example:6432,other/analytics?sslmode=require&application_name=a%20b").unwrap(),
            vec![
                p("user", "ann"),
                p("password", "s@cret"),
                p("host", "db.example,other"),
                p("port", "6432,"),
                p("dbname", "analytics"),
                p("sslmode", "require"),
                p("application_name", "a b"),
            ]
        );
        assert_eq!(params("postgres://[::1]:5433/db").unwrap(), vec![p("host", "::1"), p("port", "5433"), p("dbname", "db")]);
        assert_eq!(params("postgresql://").unwrap(), vec![]);
        assert!(params("postgresql://h/db?sslmode").is_err());
        assert!(params("postgresql://h/d%zz").is_err());
    }

    #[test]
    fn the_last_value_of_a_keyword_wins() {
        assert_eq!(value_of("user=a user=b", "user").unwrap().as_deref(), Some("b"));
        assert_eq!(value_of("postgresql://a@h/db?user=b", "user").unwrap().as_deref(), Some("b"));
        assert_eq!(value_of("host=h", "user").unwrap(), None);
    }

    #[test]
    fn passwords_are_found_in_every_form() {
        assert!(has_password("host=h password=x"));
        assert!(has_password("host=h password = 'x y'"));
        assert!(has_password("postgresql://u:x@h/db"));
        assert!(has_password("postgresql://u@h/db?password=x"));
        assert!(has_password("host='unterminated password=x"));
        assert!(!has_password("host=h user=passwordless"));
        assert!(!has_password("postgresql://u@h/db?sslmode=disable"));
    }

    #[test]
    fn appended_parameters_override_in_both_forms() {
        let kv = with_params("host=h user=a", &[("user", "b c".into()), ("password", "it's".into())]);
        assert_eq!(kv, "host=h user=a user='b c' password='it\\'s'");
        assert_eq!(value_of(&kv, "user").unwrap().as_deref(), Some("b c"));
        assert_eq!(value_of(&kv, "password").unwrap().as_deref(), Some("it's"));
        let uri = with_params("postgresql://a@h/db", &[("user", "b".into()), ("password", "p&q=r".into())]);
        assert_eq!(uri, "postgresql://a@h/db?user=b&password=p%26q%3Dr");
        assert_eq!(value_of(&uri, "password").unwrap().as_deref(), Some("p&q=r"));
        let uri = with_params("postgresql://h/db?sslmode=disable", &[("connect_timeout", "10".into())]);
        assert_eq!(uri, "postgresql://h/db?sslmode=disable&connect_timeout=10");
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        assert_eq!(scrub_secrets("failed: host=h password=hunter2 user=u"), "failed: host=h password=******** user=u");
        assert_eq!(scrub_secrets("password = 'a b\\' c' x"), "password=******** x");
        assert_eq!(scrub_secrets("PASSWORD=abc"), "password=********");
        assert_eq!(scrub_secrets("see postgresql://ann:hunter2@db/x"), "see postgresql://ann:********@db/x");
        assert_eq!(scrub_secrets("?user=a&password=b&x=1"), "?user=a&password=********&x=1");
        assert_eq!(scrub_secrets("password authentication failed"), "password authentication failed");
        assert_eq!(scrub_secrets("no secrets here: s3://bucket/key"), "no secrets here: s3://bucket/key");
    }
}
