//! Errors of the SQL functions, each reported with an explicit SQLSTATE.

use pgrx::prelude::*;
use thiserror::Error;
use webmon_core::import::ImportError;
use webmon_core::validate::ValidationError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{0}")]
    Setting(String),
    #[error("pg_webmon: SPI error: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl ApiError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            ApiError::Validation(e) if e.is_regex() => {
                PgSqlErrorCode::ERRCODE_INVALID_REGULAR_EXPRESSION
            }
            ApiError::Validation(_) | ApiError::Import(_) => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
            ApiError::Setting(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            ApiError::Spi(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raises this error as a Postgres ERROR (does not return).
    pub fn raise(self) -> ! {
        let code = self.sqlstate();
        ereport!(ERROR, code, self.to_string());
    }
}

/// Unwraps a result of a SQL function, raising its error with its SQLSTATE.
pub fn or_raise<T, E: Into<ApiError>>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => e.into().raise(),
    }
}
