//! Statements a background worker runs again and again (the scheduler, several times a
//! second), parsed and planned once per process instead of at every run: `SPI_prepare` and
//! `SPI_keepplan`. A kept plan follows the schema: PostgreSQL plans it again when something it
//! uses changes (an `ALTER EXTENSION … UPDATE` replacing a function), from the statement's text.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};

/// One statement, prepared on its first run and kept. Its parameters `$1`, `$2`, … take the
/// types of the arguments it is run with (prepared again if those ever differ).
pub struct Kept {
    sql: &'static str,
    plan: Option<(Vec<pg_sys::Oid>, OwnedPreparedStatement)>,
}

impl Kept {
    pub const fn new(sql: &'static str) -> Self {
        Kept { sql, plan: None }
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
        let types: Vec<pg_sys::Oid> = args.iter().map(DatumWithOid::oid).collect();
        if !matches!(&self.plan, Some((prepared_for, _)) if *prepared_for == types) {
            let oids: Vec<PgOid> = types.iter().map(|t| PgOid::from_untagged(*t)).collect();
            self.plan = Some((types, client.prepare_mut(self.sql, &oids)?.keep()));
        }
        match &self.plan {
            Some((_, plan)) => client.update(plan, None, args),
            None => Err(pgrx::spi::SpiError::NoTupleTable),
        }
    }
}
