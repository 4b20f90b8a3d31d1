//! Result timelines in SQL (the stored form is `webmon_core::timeline`): the support functions
//! of the aggregate `webmon.result_timeline(bigint, int, real)` declared in `sql/rollups.sql`, and
//! the readers `webmon.timeline_counts` and `webmon.timeline_histogram` that cut an hour where a
//! range starts or ends. The aggregate runs in parallel plans: its state is the stored form,
//! and two parts of an hour join by concatenation.

use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};
use webmon_core::latency::Histogram;
use webmon_core::timeline::{self, InvalidTimeline, Part, Status};

/// The timeline of an aggregate's state, made in the aggregate's memory context the first time.
fn timeline(state: &mut Internal, fcinfo: pg_sys::FunctionCallInfo) -> &mut Vec<u8> {
    if !state.initialized() {
        let mut context = std::ptr::null_mut();
        // SAFETY: fcinfo is this call's; AggCheckCallContext only reads it.
        let in_aggregate = unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } != 0;
        if !in_aggregate || context.is_null() {
            error!("pg_webmon: a result timeline state function was called outside an aggregate");
        }
        // SAFETY: the context is the aggregate's, alive for as long as its state.
        unsafe {
            PgMemoryContexts::For(context).switch_to(|_| {
                state.insert(Vec::<u8>::new());
            })
        };
    }
    // SAFETY: this module is the only one that makes these states, always as a Vec<u8>.
    match unsafe { state.get_mut::<Vec<u8>>() } {
        Some(timeline) => timeline,
        None => error!("pg_webmon: a result timeline state is missing"),
    }
}

fn raise(e: InvalidTimeline) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
        e.to_string()
    );
}

/// Transition of `result_timeline(us, status, response_time_ms)`: one result, `us`
/// microseconds after the start of its hour, `status` 0 good, 1 failed, 2 maintenance,
/// 3 unmonitored.
#[pg_extern(immutable, parallel_safe)]
fn timeline_add(
    mut state: Internal,
    us: Option<i64>,
    status: Option<i32>,
    response_time_ms: Option<f32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(us), Some(status)) = (us.and_then(|us| u64::try_from(us).ok()), status) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid result timeline entry: time {us:?} µs, status {status:?}")
        );
    };
    let Some(status) = Status::from_code(status) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid result timeline status {status}: it must be 0 to 3")
        );
    };
    let latency = response_time_ms.map(f64::from);
    if let Err(e) = timeline::push(timeline(&mut state, fcinfo), us, status, latency) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string()
        );
    }
    state
}

/// Combine function (parallel plans): one part after the other.
#[pg_extern(immutable, parallel_safe)]
fn timeline_combine(
    mut state: Internal,
    other: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    // SAFETY: states of this aggregate are always Vec<u8>.
    if let Some(other) = unsafe { other.get::<Vec<u8>>() } {
        let other = other.clone();
        timeline(&mut state, fcinfo).extend_from_slice(&other);
    }
    state
}

/// Final function: the stored form; NULL when there were no results.
#[pg_extern(immutable, parallel_safe)]
fn timeline_final(state: Internal) -> Option<Vec<u8>> {
    // SAFETY: states of this aggregate are always Vec<u8>.
    unsafe { state.get::<Vec<u8>>() }
        .filter(|timeline| !timeline.is_empty())
        .cloned()
}

/// Serial function (parallel plans): the stored form.
#[pg_extern(immutable, parallel_safe, strict)]
fn timeline_serialize(state: Internal) -> Vec<u8> {
    // SAFETY: states of this aggregate are always Vec<u8>.
    unsafe { state.get::<Vec<u8>>() }
        .cloned()
        .unwrap_or_default()
}

/// Deserial function (parallel plans); the combine function copies it into the aggregate's
/// context.
#[pg_extern(immutable, parallel_safe, strict)]
fn timeline_deserialize(bytes: &[u8], _unused: Internal) -> Internal {
    Internal::new(bytes.to_vec())
}

fn part(timeline: &[u8], before_us: i64) -> Part {
    match timeline::before(timeline, u64::try_from(before_us).unwrap_or(0)) {
        Ok(part) => part,
        Err(e) => raise(e),
    }
}

/// Of the results of a timeline earlier than `before_us` microseconds after its hour's start:
/// how many were good, failed, in maintenance and unmonitored.
#[pg_extern(immutable, parallel_safe, strict)]
fn timeline_counts(timeline: &[u8], before_us: i64) -> Vec<i64> {
    let part = part(timeline, before_us);
    [part.good, part.failed, part.maintenance, part.unmonitored]
        .iter()
        .map(|&n| i64::try_from(n).unwrap_or(i64::MAX))
        .collect()
}

/// The latency histogram of the results of a timeline earlier than `before_us` microseconds
/// after its hour's start, added to `plus` (the running totals before the hour): what the
/// rollups hold before that time. NULL arguments count as empty; NULL when the sum is.
#[pg_extern(immutable, parallel_safe)]
fn timeline_histogram(
    timeline: Option<&[u8]>,
    before_us: Option<i64>,
    plus: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let mut histogram = match timeline {
        Some(timeline) => part(timeline, before_us.unwrap_or(0)).histogram,
        None => Histogram::new(),
    };
    if let Some(bytes) = plus {
        if let Err(e) = histogram.merge_encoded(bytes) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
                e.to_string()
            );
        }
    }
    (histogram.total() > 0).then(|| histogram.encode())
}
