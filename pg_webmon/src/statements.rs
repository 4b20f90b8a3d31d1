//! Statements a background worker runs again and again (the scheduler, several times a
//! second), parsed and planned once per process instead of at every run: `SPI_prepare` and
//! `SPI_keepplan`. A kept plan follows the schema: PostgreSQL plans it again when something it
//! uses changes (an `ALTER EXTENSION … UPDATE` replacing a function), from the statement's text.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{BuiltinOid, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};

/// One statement, prepared on its first run and kept.
pub struct Kept {
    sql: &'static str,
    types: &'static [BuiltinOid],
    plan: Option<OwnedPreparedStatement>,
}

impl Kept {
    /// `types`: the types of `$1`, `$2`, … in `sql`.
    pub const fn new(sql: &'static str, types: &'static [BuiltinOid]) -> Self {
        Kept {
            sql,
            types,
            plan: None,
        }
    }

    /// Runs it; call it inside a transaction. It may write (a kept plan is not read-only).
    pub fn run(&mut self, args: &[DatumWithOid]) -> SpiResult<()> {
        Spi::connect_mut(|client| self.execute(client, args).map(|_| ()))
    }

    /// Runs it and returns the first column of its first row (None: NULL).
    pub fn get_one<A: FromDatum + IntoDatum>(
        &mut self,
        args: &[DatumWithOid],
    ) -> SpiResult<Option<A>> {
        Spi::connect_mut(|client| self.execute(client, args)?.first().get_one::<A>())
    }

    /// Runs it and returns the first two columns of its first row.
    pub fn get_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
        &mut self,
        args: &[DatumWithOid],
    ) -> SpiResult<(Option<A>, Option<B>)> {
        Spi::connect_mut(|client| self.execute(client, args)?.first().get_two::<A, B>())
    }

    fn execute<'conn>(
        &mut self,
        client: &mut SpiClient<'conn>,
        args: &[DatumWithOid],
    ) -> SpiResult<SpiTupleTable<'conn>> {
        if self.plan.is_none() {
            let types: Vec<PgOid> = self.types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
            self.plan = Some(client.prepare_mut(self.sql, &types)?.keep());
        }
        match &self.plan {
            Some(plan) => client.update(plan, None, args),
            None => Err(pgrx::spi::SpiError::NoTupleTable),
        }
    }
}
