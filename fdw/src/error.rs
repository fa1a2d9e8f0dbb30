//! The one error type of the extension and its mapping to Postgres errors.
//!
//! Every failure that can be caused by user input ends up here and is raised as an
//! ERROR with a SQLSTATE a client can act on. Messages that may contain connection
//! strings pass through [`scrub_secrets`] first, and every message loses the secrets
//! of this backend's lakes ([`hide_in_messages`]).

use std::cell::RefCell;

use pgrx::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// An option name that is not valid in its context (server, table, column, user mapping).
    #[error("invalid option \"{name}\"")]
    UnknownOption { name: String, valid: String },

    /// An option whose value cannot be used.
    #[error("invalid value for option \"{name}\": {reason}")]
    InvalidOptionValue { name: String, reason: String },

    /// An argument of a SQL function that cannot be used.
    #[error("invalid value for argument \"{name}\": {reason}")]
    InvalidArgument { name: String, reason: String },

    /// A file DuckDB needs (one of its extensions) is not where it should be.
    #[error("DuckDB extension file \"{path}\" is missing")]
    MissingExtensionFile { path: String, hint: String },

    /// The lake could not be attached (catalog unreachable, authentication failed, ...).
    #[error("could not attach DuckLake catalog of server \"{server}\": {message}")]
    AttachFailed { server: String, message: String },

    /// A user that is not a superuser connects to a catalog without a password
    /// that the catalog's server checks.
    #[error("password is required to connect to the catalog of server \"{server}\"{}", .detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    PasswordRequired { server: String, detail: Option<String> },

    /// No DuckLake server has the given name (or catalog name).
    #[error("DuckLake server \"{0}\" does not exist")]
    MissingServer(String),

    /// A lake table referenced by a foreign table does not exist.
    #[error("DuckLake table {table} does not exist on server \"{server}\"")]
    MissingLakeTable { server: String, table: String },

    /// A column a foreign table reads is not (or no longer) in its lake table.
    #[error("DuckLake table {table} on server \"{server}\" has no column \"{column}\"")]
    MissingLakeColumn { server: String, table: String, column: String },

    /// A type with no faithful mapping between DuckLake and Postgres.
    #[error("column \"{column}\" of {table} has type {type_name}, which {direction}")]
    UnsupportedType { table: String, column: String, type_name: String, direction: String },

    /// A value DuckDB returned that does not fit the Postgres column it is read into.
    #[error("value of column \"{column}\" does not fit Postgres type {pg_type}: {reason}")]
    ValueOutOfRange { column: String, pg_type: String, reason: String },

    /// A value written to the lake that its column's DuckLake type refuses.
    #[error("value for column \"{column}\" does not fit DuckLake type {lake_type}: {reason}")]
    ValueRejected { column: String, lake_type: String, reason: String },

    /// A NULL written to a NOT NULL lake column.
    #[error("null value in column \"{column}\" of DuckLake table {table} violates not-null constraint")]
    NullValue { column: String, table: String },

    /// Query cancel or statement timeout interrupted DuckDB.
    #[error("canceling statement due to user request")]
    Canceled,

    /// The caller lacks a privilege the operation needs.
    #[error("{0}")]
    PermissionDenied(String),

    /// Anything DuckDB itself reported.
    #[error("DuckDB: {0}")]
    DuckDb(String),

    /// The lake transaction cannot commit any more.
    #[error("the DuckLake transaction cannot commit: {0}")]
    TransactionDoomed(String),

    /// The lake changed under this transaction in a way it cannot apply its writes
    /// to; retrying the transaction resolves it.
    #[error("{0}")]
    ConcurrentChange(String),

    /// A change feed range DuckLake reports more than one version of a row for (see
    /// `duck::change_feed`).
    #[error("{0}")]
    AmbiguousChanges(String),

    /// Feature not (yet) available.
    #[error("{0}")]
    NotSupported(String),
}

pub type LakeResult<T> = Result<T, LakeError>;

impl From<duckdb::Error> for LakeError {
    fn from(e: duckdb::Error) -> Self {
        let message = ducklake_formats::run_query::without_wrapper_context(e.to_string());
        if message.contains("INTERRUPT Error") || message.contains("Interrupted") {
            return LakeError::Canceled;
        }
        if let Some(start) = message.find(crate::duck::change_feed::AMBIGUOUS) {
            return LakeError::AmbiguousChanges(message[start..].to_owned());
        }
        LakeError::DuckDb(scrub_secrets(&message))
    }
}

impl LakeError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            LakeError::UnknownOption { .. } => ERRCODE_FDW_INVALID_OPTION_NAME,
            LakeError::InvalidOptionValue { .. } => ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE,
            LakeError::InvalidArgument { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            LakeError::MissingExtensionFile { .. } => ERRCODE_UNDEFINED_FILE,
            LakeError::AttachFailed { .. } => ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION,
            LakeError::PasswordRequired { .. } => ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED,
            LakeError::MissingLakeTable { .. } => ERRCODE_FDW_TABLE_NOT_FOUND,
            LakeError::MissingLakeColumn { .. } => ERRCODE_FDW_COLUMN_NAME_NOT_FOUND,
            LakeError::MissingServer(_) => ERRCODE_UNDEFINED_OBJECT,
            LakeError::UnsupportedType { .. } => ERRCODE_FDW_INVALID_DATA_TYPE,
            LakeError::ValueOutOfRange { .. } => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            LakeError::ValueRejected { reason, .. } => match duckdb_sqlstate(reason) {
                ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                _ => ERRCODE_INVALID_TEXT_REPRESENTATION,
            },
            LakeError::NullValue { .. } => ERRCODE_NOT_NULL_VIOLATION,
            LakeError::Canceled => ERRCODE_QUERY_CANCELED,
            LakeError::PermissionDenied(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            LakeError::DuckDb(m) => duckdb_sqlstate(m),
            LakeError::NotSupported(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            LakeError::AmbiguousChanges(_) => ERRCODE_DATA_EXCEPTION,
            LakeError::TransactionDoomed(_) => ERRCODE_IN_FAILED_SQL_TRANSACTION,
            LakeError::ConcurrentChange(_) => ERRCODE_T_R_SERIALIZATION_FAILURE,
        }
    }

    fn hint(&self) -> String {
        match self {
            LakeError::UnknownOption { valid, .. } => {
                format!("Valid options in this context are: {valid}")
            }
            LakeError::MissingExtensionFile { hint, .. } => hint.clone(),
            LakeError::MissingLakeColumn { column, .. } => format!(
                "If the lake column was renamed, point the foreign table's column at its new name: ALTER FOREIGN \
                 TABLE ... ALTER COLUMN \"{column}\" OPTIONS (ADD column_name '<new name>'); if it was dropped, \
                 drop the column from the foreign table."
            ),
            LakeError::PasswordRequired { server, .. } => format!(
                "Users that are not superusers must give a password in their user mapping: CREATE USER MAPPING \
                 FOR CURRENT_USER SERVER {server} OPTIONS (user '...', password '...')"
            ),
            LakeError::AmbiguousChanges(_) => "Run SELECT ducklake.resolve_changes('<foreign table>', <from>, <to>) \
                 in a transaction of its own: this session then reads such snapshots by time travel."
                .into(),
            _ => String::new(),
        }
    }
}

/// DuckDB reports errors as "<Kind> Error: message"; the kind picks the SQLSTATE.
fn duckdb_sqlstate(message: &str) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    // Raised by the SQL the FDW pushes, with Postgres' own message (see query::expr):
    // Postgres' own SQLSTATE.
    if message.contains("Invalid Input Error: division by zero") {
        return ERRCODE_DIVISION_BY_ZERO;
    }
    if message.contains("out of range")
        || message.contains("Could not convert") && message.contains("to DECIMAL")
    {
        return ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE;
    }
    if message.contains("Could not convert") {
        return ERRCODE_INVALID_TEXT_REPRESENTATION;
    }
    if message.contains("No snapshot found") {
        return ERRCODE_INVALID_PARAMETER_VALUE;
    }
    if message.contains("Current transaction is aborted") {
        return ERRCODE_IN_FAILED_SQL_TRANSACTION;
    }
    let kind = message.split(" Error:").next().unwrap_or("");
    match kind.trim_start_matches("DuckDB: ").trim() {
        "Constraint" => ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION,
        "Conversion" | "Invalid Input" => ERRCODE_INVALID_TEXT_REPRESENTATION,
        "Out of Range" => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        "Catalog" => ERRCODE_UNDEFINED_OBJECT,
        "Parser" => ERRCODE_SYNTAX_ERROR,
        "Binder" => ERRCODE_UNDEFINED_COLUMN,
        "Permission" => ERRCODE_INSUFFICIENT_PRIVILEGE,
        "Transaction" | "TransactionContext" => ERRCODE_T_R_SERIALIZATION_FAILURE,
        "Out of Memory" => ERRCODE_OUT_OF_MEMORY,
        "IO" | "HTTP" => ERRCODE_FDW_ERROR,
        _ => ERRCODE_FDW_ERROR,
    }
}

thread_local! {
    /// Secrets of the lakes this backend has opened: catalog passwords, object-store
    /// keys. A store's error may quote them (an S3 error body names the access key),
    /// whichever statement met it.
    static HIDDEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Never show `secrets` in a message of this backend again, nor their SQL-quoted forms
/// (in which a DuckDB parser error would quote them).
pub fn hide_in_messages<'a>(secrets: impl IntoIterator<Item = &'a str>) {
    HIDDEN.with(|hidden| {
        let mut hidden = hidden.borrow_mut();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            for form in [secret.to_owned(), secret.replace('\'', "''")] {
                if !hidden.contains(&form) {
                    hidden.push(form);
                }
            }
        }
        // Longest first, so a secret containing another is hidden whole.
        hidden.sort_by_key(|s| std::cmp::Reverse(s.len()));
    });
}

fn without_hidden(text: &str) -> String {
    HIDDEN.with(|hidden| hidden.borrow().iter().fold(text.to_owned(), |text, secret| text.replace(secret, "********")))
}

impl From<LakeError> for ErrorReport {
    fn from(e: LakeError) -> Self {
        let code = e.sqlstate();
        let hint = e.hint();
        let report = ErrorReport::new(code, scrub_secrets(&without_hidden(&e.to_string())), "");
        if hint.is_empty() { report } else { report.set_hint(hint) }
    }
}

/// Raise `e` as a Postgres ERROR. Never returns.
pub fn raise(e: LakeError) -> ! {
    let report: ErrorReport = e.into();
    report.report(pgrx::PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Unwrap a result or raise its error as a Postgres ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T, E: Into<LakeError>> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e.into()),
        }
    }
}

pub use ducklake_formats::conninfo::scrub_secrets;
