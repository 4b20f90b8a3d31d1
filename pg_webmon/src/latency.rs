//! Latency histograms in SQL (the buckets and the stored form are `webmon_core::latency`):
//! the support functions of the aggregates `webmon.latency_histogram(real)` (response times
//! into a histogram) and `webmon.latency_merge(bytea)` (histograms added up), declared in
//! `sql/rollups.sql`, and the readers `webmon.latency_percentile` and `webmon.latency_buckets`.
//! Both aggregates run in parallel plans: their state is serialized in the stored form.

use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};
use webmon_core::latency::{bounds, Histogram, InvalidHistogram};

/// The histogram of an aggregate's state, made in the aggregate's memory context the first
/// time (dropped with it).
fn histogram(state: &mut Internal, fcinfo: pg_sys::FunctionCallInfo) -> &mut Histogram {
    if !state.initialized() {
        let mut context = std::ptr::null_mut();
        // SAFETY: fcinfo is this call's; AggCheckCallContext only reads it.
        let in_aggregate = unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } != 0;
        if !in_aggregate || context.is_null() {
            error!("pg_webmon: a latency histogram state function was called outside an aggregate");
        }
        // SAFETY: the context is the aggregate's, alive for as long as its state.
        unsafe {
            PgMemoryContexts::For(context).switch_to(|_| {
                state.insert(Histogram::new());
            })
        };
    }
    // SAFETY: this module is the only one that makes these states, always as a Histogram.
    match unsafe { state.get_mut::<Histogram>() } {
        Some(histogram) => histogram,
        None => error!("pg_webmon: a latency histogram state is missing"),
    }
}

fn raise(e: InvalidHistogram) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
        e.to_string()
    );
}

/// Transition of `latency_histogram(real)`: counts one response time (NULL: nothing).
#[pg_extern(immutable, parallel_safe)]
fn latency_add(
    mut state: Internal,
    response_time_ms: Option<f32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    if let Some(ms) = response_time_ms {
        histogram(&mut state, fcinfo).record(f64::from(ms));
    }
    state
}

/// Transition of `latency_merge(bytea)`: adds a stored histogram (NULL: nothing).
#[pg_extern(immutable, parallel_safe)]
fn latency_merge_add(
    mut state: Internal,
    histogram_bytes: Option<&[u8]>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    if let Some(bytes) = histogram_bytes {
        if let Err(e) = histogram(&mut state, fcinfo).merge_encoded(bytes) {
            raise(e);
        }
    }
    state
}

/// Combine function of both aggregates (parallel plans).
#[pg_extern(immutable, parallel_safe)]
fn latency_combine(
    mut state: Internal,
    other: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    // SAFETY: states of these aggregates are always Histograms.
    if let Some(other) = unsafe { other.get::<Histogram>() } {
        let other = other.clone();
        histogram(&mut state, fcinfo).merge(&other);
    }
    state
}

/// Final function of both aggregates: the stored form; NULL when nothing was counted.
#[pg_extern(immutable, parallel_safe)]
fn latency_final(state: Internal) -> Option<Vec<u8>> {
    // SAFETY: states of these aggregates are always Histograms.
    unsafe { state.get::<Histogram>() }
        .filter(|histogram| histogram.total() > 0)
        .map(Histogram::encode)
}

/// Serial function of both aggregates (parallel plans): the stored form.
#[pg_extern(immutable, parallel_safe, strict)]
fn latency_serialize(state: Internal) -> Vec<u8> {
    // SAFETY: states of these aggregates are always Histograms.
    unsafe { state.get::<Histogram>() }
        .map(Histogram::encode)
        .unwrap_or_default()
}

/// Deserial function of both aggregates (parallel plans). The state lives in the caller's
/// short-lived context; the combine function copies it into the aggregate's.
#[pg_extern(immutable, parallel_safe, strict)]
fn latency_deserialize(bytes: &[u8], _unused: Internal) -> Internal {
    match Histogram::decode(bytes) {
        Ok(histogram) => Internal::new(histogram),
        Err(e) => raise(e),
    }
}

/// The `fraction` percentile (0 to 1) of a stored histogram, by nearest rank like
/// `percentile_disc`, within 4.4 % of the exact value; NULL when the histogram is empty.
#[pg_extern(immutable, parallel_safe, strict)]
fn latency_percentile(histogram: &[u8], fraction: f64) -> Option<f32> {
    if !(0.0..=1.0).contains(&fraction) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid fraction {fraction}: it must be from 0 to 1")
        );
    }
    match Histogram::decode(histogram) {
        Ok(histogram) => histogram.percentile(fraction).map(|ms| ms as f32),
        Err(e) => raise(e),
    }
}

fn decoded(bytes: Option<&[u8]>) -> Histogram {
    match bytes.map(Histogram::decode) {
        None => Histogram::new(),
        Some(Ok(histogram)) => histogram,
        Some(Err(e)) => raise(e),
    }
}

fn stored(histogram: &Histogram) -> Option<Vec<u8>> {
    (histogram.total() > 0).then(|| histogram.encode())
}

/// Two stored histograms added up (NULL counts as empty; NULL when the sum is).
#[pg_extern(immutable, parallel_safe)]
fn latency_sum(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut sum = decoded(a);
    if let Some(b) = b {
        if let Err(e) = sum.merge_encoded(b) {
            raise(e);
        }
    }
    stored(&sum)
}

/// A stored histogram less another, bucket by bucket and never below zero: what running totals
/// held between two times (NULL counts as empty; NULL when nothing is left).
#[pg_extern(immutable, parallel_safe)]
fn latency_subtract(total: Option<&[u8]>, earlier: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut rest = decoded(total);
    rest.subtract(&decoded(earlier));
    stored(&rest)
}

/// The buckets of a stored histogram that counted something: [lower_ms, upper_ms) and count.
#[pg_extern(immutable, parallel_safe, strict)]
fn latency_buckets(
    histogram: &[u8],
) -> TableIterator<
    'static,
    (
        name!(lower_ms, f64),
        name!(upper_ms, f64),
        name!(count, i64),
    ),
> {
    let histogram = match Histogram::decode(histogram) {
        Ok(histogram) => histogram,
        Err(e) => raise(e),
    };
    let rows: Vec<(f64, f64, i64)> = histogram
        .buckets()
        .iter()
        .map(|&(bucket, count)| {
            let (lower, upper) = bounds(bucket);
            (lower, upper, i64::try_from(count).unwrap_or(i64::MAX))
        })
        .collect();
    TableIterator::new(rows)
}
