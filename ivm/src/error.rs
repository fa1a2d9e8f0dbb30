//! Errors of the stream-table engine, each with the SQLSTATE a client can act on.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

#[derive(Debug, Clone)]
pub struct IvmError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type IvmResult<T> = Result<T, IvmError>;

impl IvmError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        IvmError { code, message: message.into(), detail: None, hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A query construct that differential maintenance cannot handle.
    pub fn unsupported(construct: impl std::fmt::Display) -> Self {
        IvmError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{construct} is not supported in a DIFFERENTIAL stream table"),
        )
        .with_hint("Use refresh_mode => 'FULL' to rebuild the result on every refresh instead.")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        IvmError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    pub fn no_such_stream_table(name: &str) -> Self {
        IvmError::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("stream table \"{name}\" does not exist"))
            .with_hint("Stream tables are listed in pgtrickle.pgt_stream_tables.")
    }

    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// SPI's own failures (a result of an unexpected type, no connection); SQL errors
/// inside SPI are Postgres ERRORs and propagate as such.
impl From<pgrx::spi::Error> for IvmError {
    fn from(e: pgrx::spi::Error) -> Self {
        IvmError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string())
    }
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for IvmResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
